//! Tally packages: a manifest, the files it pins, and the publisher's
//! signature, in one file.
//!
//! Core types:
//!
//! * [`Package`]: a package in memory, checked: its manifest is valid, every
//!   file the manifest names is present with the digest it declares, and the
//!   publisher's signature over the package id is valid for the key the
//!   manifest declares. [`Package::from_bundle`] and [`pack`] are the only
//!   ways to get one.
//! * [`PackageSignature`]: the publisher's ed25519 signature over the
//!   package id (domain tag `tally.PackageSignature.v1`).
//! * [`PackageError`]: what was wrong, naming the entry, file or field.
//!
//! # Bundle format (`.tally`)
//!
//! A POSIX tar archive with exactly these regular-file entries, in this
//! order:
//!
//! 1. `tally.toml`: the manifest text;
//! 2. `tally.sig`: the [`PackageSignature`] as JSON;
//! 3. `blobs/<64 hex digits>`: each distinct file of the package, named by
//!    its blake3 digest.
//!
//! A reader rejects anything else: other names, `..` or absolute paths,
//! links, directories, devices, duplicates, blobs nobody references, blobs
//! whose bytes do not match their name, and archives over the size cap. The
//! tar layer only frames bytes; every byte is bound by a digest.
//!
//! **Invariant:** this crate knows nothing of wasmtime or of the store.

mod bundle;

use std::collections::BTreeMap;

pub use bundle::{pack, PackProgress, MAX_HEAD_ENTRY_BYTES};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use tally_digest::{Canon, Digest};
use tally_manifest::{Manifest, ManifestError};

/// The domain tag of the message a publisher signs.
pub const SIGNATURE_TAG: &str = "tally.PackageSignature.v1";

/// Default cap on a bundle's total size: 1 GiB.
pub const DEFAULT_MAX_BUNDLE_BYTES: u64 = 1 << 30;

/// A checked package held in memory.
#[derive(Debug, Clone)]
pub struct Package {
    manifest: Manifest,
    manifest_text: String,
    signature: PackageSignature,
    blobs: BTreeMap<Digest, Vec<u8>>,
}

/// The publisher's signature over a package id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageSignature {
    /// Always `"ed25519"`.
    pub algorithm: String,
    /// The publisher's public key, 64 hex digits.
    pub publisher: String,
    /// The signature, 128 hex digits.
    pub signature: String,
}

/// What was wrong with a package or bundle.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PackageError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The manifest is invalid.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A file's bytes do not match the digest the manifest declares.
    #[error("{field} ({path}): the manifest says digest {expected} but the file has {found}; update the manifest or restore the file")]
    DigestMismatch {
        /// The manifest field (`modules.pre`, `files[0]`).
        field: String,
        /// The file path.
        path: String,
        /// The digest in the manifest.
        expected: Digest,
        /// The digest of the bytes.
        found: Digest,
    },
    /// The signing key is not the publisher key the manifest declares.
    #[error("the key signs as publisher {key}, but the manifest declares publisher {manifest}; set `package.publisher` to the contents of your KEY.pub")]
    WrongPublisherKey {
        /// The signing key's public half.
        key: String,
        /// `package.publisher`.
        manifest: String,
    },
    /// The publisher signature does not verify.
    #[error("bad publisher signature: {0}")]
    BadSignature(String),
    /// The bundle is structurally invalid (names the entry).
    #[error("corrupt bundle: {0}")]
    Corrupt(String),
    /// The host does not accept this publisher.
    #[error("publisher {publisher} is not accepted by this host")]
    PublisherNotAllowed {
        /// The publisher key, hex.
        publisher: String,
    },
    /// The bundle is larger than allowed.
    #[error("bundle exceeds the size cap of {cap} bytes")]
    TooLarge {
        /// The cap.
        cap: u64,
    },
    /// A file the manifest names is absent from the bundle.
    #[error("corrupt bundle: the manifest names {path} (digest {digest}) but the bundle has no such blob")]
    MissingBlob {
        /// The file path in the manifest.
        path: String,
        /// Its digest.
        digest: Digest,
    },
}

impl PackageSignature {
    fn message(id: &Digest) -> Digest {
        Canon::new(SIGNATURE_TAG).digest(id).finish()
    }

    /// Signs package `id` with `key`.
    pub fn sign(id: &Digest, key: &SigningKey) -> Self {
        let sig = key.sign(Self::message(id).as_bytes());
        PackageSignature {
            algorithm: "ed25519".into(),
            publisher: hex::encode(key.verifying_key().as_bytes()),
            signature: hex::encode(sig.to_bytes()),
        }
    }

    /// Checks that this is `publisher`'s valid signature over `id`.
    pub fn verify(&self, id: &Digest, publisher: &[u8; 32]) -> Result<(), PackageError> {
        let bad = |m: &str| PackageError::BadSignature(m.to_string());
        if self.algorithm != "ed25519" {
            return Err(bad("unsupported algorithm (expected ed25519)"));
        }
        if self.publisher != hex::encode(publisher) {
            return Err(bad("signed by a key other than the manifest's publisher"));
        }
        let key = VerifyingKey::from_bytes(publisher)
            .map_err(|_| bad("the publisher key is not a valid ed25519 point"))?;
        let mut sig = [0u8; 64];
        hex::decode_to_slice(&self.signature, &mut sig)
            .map_err(|_| bad("the signature is not 128 hex digits"))?;
        key.verify(Self::message(id).as_bytes(), &Signature::from_bytes(&sig))
            .map_err(|_| bad("the signature does not match the package id (the package was altered or signed by another key)"))
    }
}

/// Decides whether a host accepts a publisher (its ed25519 key); see
/// [`Package::from_bundle_file_by`].
pub type PublisherCheck<'a> = dyn Fn(&[u8; 32]) -> Result<(), PackageError> + 'a;

impl Package {
    /// Builds a package from parts, checking digests and the signature.
    pub fn new(
        manifest_text: String,
        signature: PackageSignature,
        blobs: BTreeMap<Digest, Vec<u8>>,
    ) -> Result<Package, PackageError> {
        let manifest = Manifest::parse(&manifest_text, tally_manifest::MANIFEST_FILE)?;
        signature.verify(&manifest.id(), &manifest.package.publisher)?;
        Self::assemble(manifest, manifest_text, signature, blobs)
    }

    /// A package from a manifest whose signature is already checked, and
    /// its blobs: every blob's digest checked, every file present, blobs the
    /// manifest does not name dropped.
    pub(crate) fn assemble(
        manifest: Manifest,
        manifest_text: String,
        signature: PackageSignature,
        mut blobs: BTreeMap<Digest, Vec<u8>>,
    ) -> Result<Package, PackageError> {
        for (digest, bytes) in &blobs {
            let found = Digest::of(bytes);
            if found != *digest {
                return Err(PackageError::Corrupt(format!(
                    "blob {digest} holds bytes with digest {found}"
                )));
            }
        }
        for f in manifest.all_files() {
            if !blobs.contains_key(&f.digest) {
                return Err(PackageError::MissingBlob {
                    path: f.path.clone(),
                    digest: f.digest,
                });
            }
        }
        let referenced: std::collections::BTreeSet<Digest> =
            manifest.all_files().map(|f| f.digest).collect();
        blobs.retain(|d, _| referenced.contains(d));
        Ok(Package {
            manifest,
            manifest_text,
            signature,
            blobs,
        })
    }

    /// Reads and checks a bundle (see the crate docs for the format),
    /// refusing more than `max_bytes`.
    pub fn from_bundle(
        reader: impl std::io::Read,
        max_bytes: u64,
    ) -> Result<Package, PackageError> {
        Self::from_bundle_by(reader, max_bytes, &|_| Ok(()))
    }

    /// [`Package::from_bundle`] for a host that accepts only some
    /// publishers: `allow` is asked about the publisher once the manifest
    /// (entry 0) and its signature (entry 1) check out, before any blob is
    /// read or hashed, so a refused publisher costs the manifest, one
    /// signature check, and nothing read beyond the first two entries.
    pub fn from_bundle_by(
        reader: impl std::io::Read,
        max_bytes: u64,
        allow: &PublisherCheck<'_>,
    ) -> Result<Package, PackageError> {
        bundle::read(reader, max_bytes, allow)
    }

    /// Reads and checks the bundle file at `path`.
    pub fn from_bundle_file(
        path: &std::path::Path,
        max_bytes: u64,
    ) -> Result<Package, PackageError> {
        Self::from_bundle_file_by(path, max_bytes, &|_| Ok(()))
    }

    /// [`Package::from_bundle_file`] for a host that accepts only some
    /// publishers ([`Package::from_bundle_by`]).
    pub fn from_bundle_file_by(
        path: &std::path::Path,
        max_bytes: u64,
        allow: &PublisherCheck<'_>,
    ) -> Result<Package, PackageError> {
        let file = std::fs::File::open(path).map_err(|source| PackageError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_bundle_by(std::io::BufReader::new(file), max_bytes, allow)
    }

    /// Writes this package as a bundle.
    pub fn write_bundle(&self, writer: impl std::io::Write) -> std::io::Result<()> {
        bundle::write(self, writer)
    }

    /// The package id (the manifest's canonical digest).
    pub fn id(&self) -> Digest {
        self.manifest.id()
    }

    /// The validated manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The manifest exactly as the publisher wrote it.
    pub fn manifest_text(&self) -> &str {
        &self.manifest_text
    }

    /// The publisher signature.
    pub fn signature(&self) -> &PackageSignature {
        &self.signature
    }

    /// The bytes of the file with `digest`, if the package has it.
    pub fn blob(&self, digest: &Digest) -> Option<&[u8]> {
        self.blobs.get(digest).map(Vec::as_slice)
    }

    /// Every blob, by digest.
    pub fn blobs(&self) -> &BTreeMap<Digest, Vec<u8>> {
        &self.blobs
    }

    /// The bytes of module `name`.
    pub fn module(&self, name: &str) -> Option<&[u8]> {
        self.manifest
            .modules
            .get(name)
            .and_then(|f| self.blob(&f.digest))
    }
}

/// Parses the 32-byte secret key written by `tally keygen` (64 hex digits,
/// surrounding whitespace ignored).
pub fn parse_signing_key(text: &str) -> Option<SigningKey> {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut bytes).ok()?;
    Some(SigningKey::from_bytes(&bytes))
}

#[cfg(test)]
mod tests;

#[cfg(test)]
fn bundle_header_for_tests(path: &str, size: u64) -> tar::Header {
    bundle::header(path, size)
}
