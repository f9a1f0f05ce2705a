//! The recorded inference outputs of a run, as one byte string: the
//! `RECEIPT.tensors` file beside a receipt and the body of
//! `GET /v1/receipts/{claim}/tensors`.
//!
//! Format: for each successful `compute` of the transcript, in order, its
//! encoded outputs' length (u64, little-endian) then the bytes. The bytes
//! are bound by the transcript (each `compute` records their blake3), so
//! [`decode_recorded`] checks them against it: outputs from an untrusted
//! source are used only if they are exactly the ones the receipt claims.

use tally_digest::Digest;

use crate::Transcript;

/// Why bytes are not the recorded outputs of a transcript.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordedError {
    /// The bytes end inside a length or a body.
    #[error("recorded outputs are truncated in compute #{index}")]
    Truncated {
        /// The compute whose length or body is cut short.
        index: usize,
    },
    /// The number of computes differs from the transcript's.
    #[error("{found} recorded computes, but the transcript has {expected}")]
    Count {
        /// Successful computes in the transcript.
        expected: usize,
        /// Computes in the bytes.
        found: usize,
    },
    /// A compute's bytes are not those the transcript binds.
    #[error("recorded compute #{index} has digest {found}, but the transcript records {expected}")]
    DigestMismatch {
        /// Its position.
        index: usize,
        /// The digest in the transcript.
        expected: Digest,
        /// The digest of the bytes given.
        found: Digest,
    },
}

/// Frames the encoded outputs of each compute, in order.
pub fn encode_recorded<B: AsRef<[u8]>>(computes: &[B]) -> Vec<u8> {
    let mut out = Vec::with_capacity(computes.iter().map(|c| 8 + c.as_ref().len()).sum());
    for c in computes {
        let c = c.as_ref();
        out.extend_from_slice(&(c.len() as u64).to_le_bytes());
        out.extend_from_slice(c);
    }
    out
}

/// Unframes recorded outputs and checks them, one by one, against the
/// `compute` digests of `transcript`.
pub fn decode_recorded(
    mut bytes: &[u8],
    transcript: &Transcript,
) -> Result<Vec<Vec<u8>>, RecordedError> {
    let expected = transcript.compute_outputs();
    let mut out = Vec::with_capacity(expected.len());
    while !bytes.is_empty() {
        let index = out.len();
        let len = bytes
            .get(..8)
            .map(|l| u64::from_le_bytes(l.try_into().expect("8 bytes")))
            .and_then(|l| usize::try_from(l).ok())
            .ok_or(RecordedError::Truncated { index })?;
        let body = bytes
            .get(8..)
            .and_then(|rest| rest.get(..len))
            .ok_or(RecordedError::Truncated { index })?;
        let found = Digest::of(body);
        match expected.get(index) {
            Some(&e) if e != found => {
                return Err(RecordedError::DigestMismatch {
                    index,
                    expected: e,
                    found,
                })
            }
            Some(_) => {}
            None => {
                return Err(RecordedError::Count {
                    expected: expected.len(),
                    found: index + 1,
                })
            }
        }
        out.push(body.to_vec());
        bytes = &bytes[8 + len..];
    }
    if out.len() != expected.len() {
        return Err(RecordedError::Count {
            expected: expected.len(),
            found: out.len(),
        });
    }
    Ok(out)
}
