//! Tally receipts: what a host claims about a run, sealed with its key.
//!
//! Core types (modelled on risc0's `ReceiptClaim` / `Receipt`):
//!
//! * [`Claim`]: everything the run determined: versions, the engine profile,
//!   the package id, per-stage module/stdout/stderr digests and fuel, the
//!   input and output digests, the seed, the limits in force, the
//!   [`Outcome`], the inference [`BackendInfo`], and the root of the
//!   [`Transcript`] of host calls. Its
//!   digest ([`Claim::digest`]) is blake3 under the domain tag
//!   `tally.ReceiptClaim.v1` over the canonical encoding (`tally-digest`).
//! * [`Seal`]: the host's ed25519 signature over the claim digest.
//! * [`Metadata`]: wall time, host name, timestamps. **Not bound** by the
//!   seal: informative only, never a basis for a security decision.
//! * [`Receipt`]: claim + seal + metadata, stored as human-readable JSON.
//! * [`Transcript`]: the ordered host calls of a run and their hash-chain
//!   root; [`Transcript::first_divergence`] localises where two runs split.
//! * [`compare`]: the field-by-field comparison a verifier makes between a
//!   receipt's claim and the claim of its own replay; [`Verdict`] wraps it
//!   with the transcript divergence and renders it for people.
//! * [`encode_recorded`] / [`decode_recorded`]: the recorded inference
//!   outputs of a run (`RECEIPT.tensors`), checked against the transcript;
//!   [`RecordedComputes`] aligns them with every `compute` call for a
//!   cross-backend replay.
//!
//! **Invariant:** this crate knows nothing of wasmtime; it defines the wire
//! format and can be used by a verifier that never runs a guest.
//!
//! **Stability:** [`FORMAT_VERSION`] and the domain tags name the format.
//! Any change to the fields or their encoding bumps them; golden tests pin
//! the current encoding.

mod claim;
mod recorded;
mod transcript;
mod verdict;

pub use claim::{
    compare, AbortReason, BackendInfo, Claim, EngineInfo, Mismatch, Outcome, StageClaim,
};
pub use recorded::{
    decode_recorded, encode_recorded, recorded_frame, RecordedCompute, RecordedComputes,
    RecordedError,
};
pub use tally_digest::Digest;
pub use tally_manifest::{Limit, ResolvedLimits};
pub use transcript::{Divergence, HostCall, Transcript, TranscriptError, NN_COMPUTE};
pub use verdict::{InferenceCheck, Verdict};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use tally_digest::Canon;

/// Where the transcript of the receipt file `receipt` is kept:
/// `RECEIPT.transcript` beside it (JSON lines, [`Transcript::to_jsonl`]).
pub fn transcript_path(receipt: &std::path::Path) -> std::path::PathBuf {
    beside(receipt, ".transcript")
}

/// Where the recorded inference outputs of the receipt file `receipt` are
/// kept: `RECEIPT.tensors` beside it ([`encode_recorded`]).
pub fn tensors_path(receipt: &std::path::Path) -> std::path::PathBuf {
    beside(receipt, ".tensors")
}

fn beside(receipt: &std::path::Path, suffix: &str) -> std::path::PathBuf {
    let mut p = receipt.as_os_str().to_owned();
    p.push(suffix);
    p.into()
}

/// The receipt format version this crate reads and writes.
///
/// 3: `limit_exceeded.limit` names the manifest field (`output_bytes`, not
/// `output`); `aborted.reason` is one of three names, the host's message
/// moved to `aborted.detail`.
pub const FORMAT_VERSION: u32 = 3;

/// The domain tag of the message a host signs.
pub const SEAL_TAG: &str = "tally.Seal.v1";

/// A sealed claim plus unbound metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    /// What the host claims.
    pub claim: Claim,
    /// The host's signature over [`Claim::digest`].
    pub seal: Seal,
    /// Informative, NOT covered by the seal.
    pub metadata: Metadata,
}

/// The host's signature over a claim digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seal {
    /// Always `"ed25519"`.
    pub algorithm: String,
    /// The host's public key, 64 hex digits.
    pub host_key: String,
    /// The claim digest this seal is over (redundant, for humans; checked).
    pub claim_digest: Digest,
    /// The signature, 128 hex digits.
    pub signature: String,
}

/// Facts about the run that are not bound by the seal: they may differ
/// between honest runs and must not be used for security decisions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// A note stating that this section is not bound.
    pub note: String,
    /// The host's name, if it chose to give one.
    pub host: String,
    /// When the run started, seconds since the Unix epoch.
    pub started_at_unix: u64,
    /// How long the run took, in milliseconds.
    pub wall_time_ms: u64,
    /// The compilation target the host ran on (e.g. `x86_64` or `pulley64`).
    pub target: String,
}

/// Why a receipt is not acceptable before any replay.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptError {
    /// Not parseable as a receipt.
    #[error("malformed receipt: {0}")]
    Malformed(String),
    /// A format version this build does not know.
    #[error("receipt format version {found} is not supported (this build reads version {FORMAT_VERSION})")]
    UnsupportedVersion {
        /// The version in the receipt.
        found: u32,
    },
    /// The seal does not verify.
    #[error("bad seal: {0}")]
    BadSeal(String),
    /// The seal is valid, but by a host key the verifier does not trust.
    #[error("the receipt is sealed by host key {found}, which is not among the trusted keys")]
    UntrustedHost {
        /// The key that sealed it.
        found: String,
    },
}

impl Seal {
    fn message(claim_digest: &Digest) -> Digest {
        Canon::new(SEAL_TAG).digest(claim_digest).finish()
    }
}

impl Receipt {
    /// Seals `claim` with the host `key`.
    pub fn seal(claim: Claim, key: &SigningKey, metadata: Metadata) -> Receipt {
        let digest = claim.digest();
        let sig = key.sign(Seal::message(&digest).as_bytes());
        Receipt {
            claim,
            seal: Seal {
                algorithm: "ed25519".into(),
                host_key: hex::encode(key.verifying_key().as_bytes()),
                claim_digest: digest,
                signature: hex::encode(sig.to_bytes()),
            },
            metadata,
        }
    }

    /// Parses a receipt from JSON, checking the format version.
    pub fn from_json(text: &str) -> Result<Receipt, ReceiptError> {
        let r: Receipt =
            serde_json::from_str(text).map_err(|e| ReceiptError::Malformed(e.to_string()))?;
        r.check_format()?;
        Ok(r)
    }

    /// Checks that the receipt is in the format this crate reads
    /// ([`FORMAT_VERSION`]): what [`Receipt::from_json`] does after parsing,
    /// for receipts deserialized inside another document.
    pub fn check_format(&self) -> Result<(), ReceiptError> {
        if self.claim.format_version != FORMAT_VERSION {
            return Err(ReceiptError::UnsupportedVersion {
                found: self.claim.format_version,
            });
        }
        Ok(())
    }

    /// The receipt as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("receipts serialize")
    }

    /// Checks the seal: the claim digest recomputed from the claim, and the
    /// signature over it by the stated host key. With `trusted` non-empty,
    /// also that the host key is one of them (hex public keys).
    pub fn check_seal(&self, trusted: &[String]) -> Result<(), ReceiptError> {
        let bad = |m: &str| ReceiptError::BadSeal(m.to_string());
        if self.seal.algorithm != "ed25519" {
            return Err(bad("unsupported algorithm (expected ed25519)"));
        }
        let digest = self.claim.digest();
        if digest != self.seal.claim_digest {
            return Err(ReceiptError::BadSeal(format!(
                "the claim was edited: its digest is {digest}, but the seal is over {}",
                self.seal.claim_digest
            )));
        }
        let mut key = [0u8; 32];
        hex::decode_to_slice(&self.seal.host_key, &mut key)
            .map_err(|_| bad("host_key is not 64 hex digits"))?;
        let key = VerifyingKey::from_bytes(&key)
            .map_err(|_| bad("host_key is not a valid ed25519 key"))?;
        let mut sig = [0u8; 64];
        hex::decode_to_slice(&self.seal.signature, &mut sig)
            .map_err(|_| bad("signature is not 128 hex digits"))?;
        key.verify(
            Seal::message(&digest).as_bytes(),
            &Signature::from_bytes(&sig),
        )
        .map_err(|_| {
            bad("the signature does not verify for this claim and host key (forged or re-sealed)")
        })?;
        if !trusted.is_empty() && !trusted.iter().any(|t| t.trim() == self.seal.host_key) {
            return Err(ReceiptError::UntrustedHost {
                found: self.seal.host_key.clone(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
