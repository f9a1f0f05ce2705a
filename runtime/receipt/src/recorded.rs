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

use crate::{Transcript, NN_COMPUTE};

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
        out.extend_from_slice(&recorded_frame(c.len() as u64));
        out.extend_from_slice(c);
    }
    out
}

/// What precedes each compute's `len` bytes in [`encode_recorded`]'s
/// format, for writers that stream the computes instead of joining them.
pub fn recorded_frame(len: u64) -> [u8; 8] {
    len.to_le_bytes()
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

/// One `compute` call of the original run, as a cross-backend replay needs
/// it: what the original host handed the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordedCompute {
    /// The call succeeded: its encoded outputs, bound by the transcript.
    Computed(Vec<u8>),
    /// The call failed: the errno the guest saw and the host's detail.
    Failed {
        /// The call's results (the errno first).
        results: Vec<i64>,
        /// The detail the transcript records.
        detail: Option<String>,
    },
}

/// Every `compute` call of a run, in transcript order, with the outputs of
/// the successful ones: what a cross-backend replay consumes, call by call.
///
/// Indexing by *call* (not by successful compute) keeps an honest receipt
/// whose run had a failed compute replayable: the replay's `k`-th compute
/// call is matched with the original's `k`-th, whatever its fate.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecordedComputes {
    calls: Vec<RecordedCompute>,
}

impl RecordedComputes {
    /// Binds the outputs of the successful computes of `transcript` (as
    /// [`decode_recorded`] returns them, or a store has them) to its
    /// `compute` calls, checking their number and digests again.
    pub fn new(transcript: &Transcript, outputs: Vec<Vec<u8>>) -> Result<Self, RecordedError> {
        let expected = transcript.compute_outputs();
        if expected.len() != outputs.len() {
            return Err(RecordedError::Count {
                expected: expected.len(),
                found: outputs.len(),
            });
        }
        let mut outputs = outputs.into_iter().zip(expected).enumerate();
        let mut calls = Vec::new();
        for c in transcript.calls().iter().filter(|c| c.func == NN_COMPUTE) {
            if c.results.first() == Some(&0) && c.data.is_some() {
                let (index, (bytes, expected)) = outputs.next().expect("counted above");
                let found = Digest::of(&bytes);
                if found != expected {
                    return Err(RecordedError::DigestMismatch {
                        index,
                        expected,
                        found,
                    });
                }
                calls.push(RecordedCompute::Computed(bytes));
            } else {
                calls.push(RecordedCompute::Failed {
                    results: c.results.clone(),
                    detail: c.detail.clone(),
                });
            }
        }
        Ok(RecordedComputes { calls })
    }

    /// Unframes `bytes` ([`decode_recorded`]) and binds them to
    /// `transcript` ([`RecordedComputes::new`]).
    pub fn decode(bytes: &[u8], transcript: &Transcript) -> Result<Self, RecordedError> {
        Self::new(transcript, decode_recorded(bytes, transcript)?)
    }

    /// The calls, in order.
    pub fn calls(&self) -> &[RecordedCompute] {
        &self.calls
    }
}
