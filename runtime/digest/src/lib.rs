//! Digests and canonical encoding for every structure Tally signs or compares.
//!
//! Core types:
//!
//! * [`Digest`]: a 32-byte blake3 digest, written as 64 lowercase hex digits
//!   everywhere a human or a JSON document sees it.
//! * [`Canon`]: a canonical, length-prefixed binary encoder. Every structure
//!   that is hashed (a manifest, a receipt claim, a transcript entry) is
//!   encoded with it under a *domain tag*, so two different kinds of structure
//!   never share a digest even if their bytes happen to agree.
//!
//! The encoding is deliberately simple so that it can be re-implemented from
//! its description: integers are little-endian and fixed-width, byte strings
//! and strings are prefixed by their length as a `u64`, optional values by a
//! one-byte presence flag, sequences by their element count. A structure's
//! digest is `blake3::derive_key(tag)`-keyed hash of its encoding, where the
//! tag names the structure and its format version (for example
//! `"tally.ReceiptClaim.v1"`).
//!
//! ```
//! use tally_digest::{Canon, Digest};
//!
//! let mut c = Canon::new("tally.Example.v1");
//! c.str("hello").u64(42);
//! let d: Digest = c.finish();
//! assert_eq!(d.to_string().len(), 64);
//! ```

use std::fmt;
use std::str::FromStr;

/// A 32-byte blake3 digest.
///
/// Displayed and serialized as 64 lowercase hexadecimal digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The digest of `bytes` (plain blake3, no domain tag): what a content
    /// address is.
    pub fn of(bytes: &[u8]) -> Self {
        Digest(*blake3::hash(bytes).as_bytes())
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first 12 hex digits, for messages meant for humans.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }
}

impl From<blake3::Hash> for Digest {
    fn from(h: blake3::Hash) -> Self {
        Digest(*h.as_bytes())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

/// Why a string is not a [`Digest`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseDigestError {
    /// The string does not have 64 characters.
    #[error("a digest has 64 hex digits, found {0} characters")]
    Length(usize),
    /// The string has a character that is not a lowercase hex digit.
    #[error("a digest has only lowercase hex digits (0-9, a-f)")]
    NotHex,
}

impl FromStr for Digest {
    type Err = ParseDigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 64 {
            return Err(ParseDigestError::Length(s.len()));
        }
        if !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(ParseDigestError::NotHex);
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| ParseDigestError::NotHex)?;
        Ok(Digest(out))
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An incremental hasher for content digests of streamed data.
#[derive(Default, Clone)]
pub struct Hasher(blake3::Hasher);

impl Hasher {
    /// A fresh hasher.
    pub fn new() -> Self {
        Self::default()
    }
    /// Feeds `bytes`.
    pub fn update(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.update(bytes);
        self
    }
    /// The digest of everything fed so far.
    pub fn finish(&self) -> Digest {
        self.0.finalize().into()
    }
}

impl std::io::Write for Hasher {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The canonical encoder: writes fields in a fixed order into a domain-tagged
/// blake3 hash, and optionally keeps the encoded bytes.
///
/// See the crate documentation for the encoding rules.
pub struct Canon {
    hasher: blake3::Hasher,
}

impl Canon {
    /// Starts encoding a structure named by `tag` (for example
    /// `"tally.ReceiptClaim.v1"`). The tag is the blake3 `derive_key`
    /// context, so it must be a fixed string, never data.
    pub fn new(tag: &'static str) -> Self {
        Canon {
            hasher: blake3::Hasher::new_derive_key(tag),
        }
    }

    fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.hasher.update(bytes);
        self
    }

    /// Writes one byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.raw(&[v])
    }

    /// Writes a `u32`, little-endian.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.raw(&v.to_le_bytes())
    }

    /// Writes a `u64`, little-endian.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.raw(&v.to_le_bytes())
    }

    /// Writes an `i64`, little-endian two's complement.
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.raw(&v.to_le_bytes())
    }

    /// Writes a boolean as one byte, 0 or 1.
    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.u8(v as u8)
    }

    /// Writes a byte string, prefixed by its length.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.u64(v.len() as u64).raw(v)
    }

    /// Writes a UTF-8 string, prefixed by its length in bytes.
    pub fn str(&mut self, v: &str) -> &mut Self {
        self.bytes(v.as_bytes())
    }

    /// Writes a digest (32 bytes, no prefix: its length is fixed).
    pub fn digest(&mut self, v: &Digest) -> &mut Self {
        self.raw(&v.0)
    }

    /// Writes an optional value: a presence byte, then the value if present.
    pub fn opt<T>(&mut self, v: Option<&T>, f: impl FnOnce(&mut Self, &T)) -> &mut Self {
        match v {
            None => self.u8(0),
            Some(x) => {
                self.u8(1);
                f(self, x);
                self
            }
        }
    }

    /// Writes a sequence: its element count, then each element.
    pub fn seq<T>(&mut self, items: &[T], mut f: impl FnMut(&mut Self, &T)) -> &mut Self {
        self.u64(items.len() as u64);
        for item in items {
            f(self, item);
        }
        self
    }

    /// Writes a value's canonical encoding ([`Encode`]).
    pub fn put<T: Encode + ?Sized>(&mut self, v: &T) -> &mut Self {
        v.encode(self);
        self
    }

    /// The digest of everything written.
    pub fn finish(&self) -> Digest {
        self.hasher.finalize().into()
    }
}

/// A structure with a canonical encoding: what a digest of it seals.
///
/// Implementations destructure `self` **without `..`**, so that a field
/// added to the structure does not compile until it is either encoded or
/// explicitly left out (with a comment saying why). That is what makes a
/// sealed structure complete by construction; a golden test per structure
/// then pins the encoding itself.
pub trait Encode {
    /// Writes every field, in a fixed order.
    fn encode(&self, c: &mut Canon);
}

impl Encode for str {
    fn encode(&self, c: &mut Canon) {
        c.str(self);
    }
}

impl Encode for String {
    fn encode(&self, c: &mut Canon) {
        c.str(self);
    }
}

impl Encode for u32 {
    fn encode(&self, c: &mut Canon) {
        c.u32(*self);
    }
}

impl Encode for u64 {
    fn encode(&self, c: &mut Canon) {
        c.u64(*self);
    }
}

impl Encode for i64 {
    fn encode(&self, c: &mut Canon) {
        c.i64(*self);
    }
}

impl Encode for Digest {
    fn encode(&self, c: &mut Canon) {
        c.digest(self);
    }
}

/// A presence byte, then the value if present (as [`Canon::opt`]).
impl<T: Encode> Encode for Option<T> {
    fn encode(&self, c: &mut Canon) {
        c.opt(self.as_ref(), |c, v| {
            c.put(v);
        });
    }
}

/// The element count, then each element (as [`Canon::seq`]).
impl<T: Encode> Encode for [T] {
    fn encode(&self, c: &mut Canon) {
        c.seq(self, |c, v| {
            c.put(v);
        });
    }
}

impl<T: Encode> Encode for Vec<T> {
    fn encode(&self, c: &mut Canon) {
        c.put(self.as_slice());
    }
}

/// The entry count, then each key and value in key order.
impl<K: Encode, V: Encode> Encode for std::collections::BTreeMap<K, V> {
    fn encode(&self, c: &mut Canon) {
        c.u64(self.len() as u64);
        for (k, v) in self {
            c.put(k).put(v);
        }
    }
}

/// Adapts [`std::hash::Hash`] values (such as wasmtime's engine compatibility
/// hash) into a [`Digest`] under a domain tag.
///
/// Integers are fed in native byte order, so the result is only stable on one
/// architecture: use it for host-specific values.
pub fn digest_hash<T: std::hash::Hash + ?Sized>(tag: &'static str, value: &T) -> Digest {
    struct H(blake3::Hasher);
    impl std::hash::Hasher for H {
        fn finish(&self) -> u64 {
            0
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
    }
    let mut h = H(blake3::Hasher::new_derive_key(tag));
    value.hash(&mut h);
    h.0.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_round_trips_through_text_and_json() {
        let d = Digest::of(b"tally");
        let s = d.to_string();
        assert_eq!(s.parse::<Digest>().unwrap(), d);
        let j = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<Digest>(&j).unwrap(), d);
    }

    #[test]
    fn bad_digests_are_rejected_with_a_reason() {
        assert_eq!("ab".parse::<Digest>(), Err(ParseDigestError::Length(2)));
        let upper = "A".repeat(64);
        assert_eq!(upper.parse::<Digest>(), Err(ParseDigestError::NotHex));
    }

    #[test]
    fn domain_tags_separate_equal_bytes() {
        let a = Canon::new("tally.A.v1").str("x").finish();
        let b = Canon::new("tally.B.v1").str("x").finish();
        assert_ne!(a, b);
    }

    #[test]
    fn length_prefixes_prevent_concatenation_ambiguity() {
        let a = Canon::new("t").str("ab").str("c").finish();
        let b = Canon::new("t").str("a").str("bc").finish();
        assert_ne!(a, b);
    }

    #[test]
    fn encoding_is_stable() {
        // A golden value: changing the encoding changes every receipt, so it
        // must be a deliberate, versioned change.
        let d = Canon::new("tally.Golden.v1")
            .str("tally")
            .u64(7)
            .opt(Some(&1u32), |c, v| {
                c.u32(*v);
            })
            .finish();
        assert_eq!(
            d.to_string(),
            "01cb1a1e444c4b8ab8c1321a0a5149d81b11a6d363b9e0631054fad8a10a3671",
            "canonical encoding changed"
        );
    }
}
