//! The transcript: every host call a run made, in order, hash-chained.

use serde::{Deserialize, Serialize};
use tally_digest::{Canon, Digest, Encode};

/// Domain tag of the empty transcript's root.
pub const TRANSCRIPT_TAG: &str = "tally.Transcript.v1";
/// Domain tag of one link of the chain.
pub const STEP_TAG: &str = "tally.TranscriptStep.v1";

/// One host call: which function, with which arguments, returning what, and
/// a digest of the data that crossed the boundary when that data can
/// influence the guest (bytes read, random bytes, clock values, paths).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostCall {
    /// Index of the stage that made the call.
    pub stage: u32,
    /// `module.function`, e.g. `wasi_snapshot_preview1.fd_read`.
    pub func: String,
    /// Arguments (i32 and i64 values, sign-extended).
    pub params: Vec<i64>,
    /// Results, or empty if the call did not return (exit, trap).
    pub results: Vec<i64>,
    /// Digest of the data the call gave the guest, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Digest>,
    /// A human-readable detail, e.g. the path opened. Bound like the rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl HostCall {
    /// The digest of the inference outputs this call recorded: a
    /// successful `compute`'s, else `None`. Its bytes are one entry of the
    /// receipt's recorded outputs ([`crate::encode_recorded`]).
    pub fn recorded_output(&self) -> Option<Digest> {
        match self.func == NN_COMPUTE && self.results.first() == Some(&0) {
            true => self.data,
            false => None,
        }
    }
}

impl Encode for HostCall {
    fn encode(&self, c: &mut Canon) {
        let HostCall {
            stage,
            func,
            params,
            results,
            data,
            detail,
        } = self;
        c.u32(*stage)
            .str(func)
            .put(params)
            .put(results)
            .put(data)
            .put(detail);
    }
}

/// An ordered list of host calls and the root of their hash chain:
/// `root₀ = H[Transcript](ε)`, `rootᵢ = H[TranscriptStep](rootᵢ₋₁ ‖ callᵢ)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transcript {
    calls: Vec<HostCall>,
    root: Digest,
}

impl Default for Transcript {
    fn default() -> Self {
        Transcript {
            calls: Vec::new(),
            root: Canon::new(TRANSCRIPT_TAG).finish(),
        }
    }
}

/// Where two transcripts first differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Divergence {
    /// Index of the first differing call.
    pub index: usize,
    /// The call in the receipt's transcript, if it has one there.
    pub expected: Option<HostCall>,
    /// The call in the replay, if it has one there.
    pub found: Option<HostCall>,
}

/// A transcript file that cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TranscriptError {
    /// A line is not a host call.
    #[error("transcript line {line}: {message}")]
    Malformed {
        /// 1-based line.
        line: usize,
        /// The parser's message.
        message: String,
    },
    /// The calls do not hash to the expected root.
    #[error("transcript root is {found}, but the claim binds {expected}: the transcript file does not belong to this receipt")]
    RootMismatch {
        /// Root in the claim.
        expected: Digest,
        /// Root of the file's calls.
        found: Digest,
    },
}

impl Transcript {
    /// An empty transcript.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a call and advances the root.
    pub fn push(&mut self, call: HostCall) {
        let mut c = Canon::new(STEP_TAG);
        c.digest(&self.root).put(&call);
        self.root = c.finish();
        self.calls.push(call);
    }

    /// The root over every call so far.
    pub fn root(&self) -> Digest {
        self.root
    }

    /// The calls.
    pub fn calls(&self) -> &[HostCall] {
        &self.calls
    }

    /// Number of calls.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// Whether there are no calls.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// One JSON object per line.
    pub fn to_jsonl(&self) -> String {
        let mut s = String::new();
        for call in &self.calls {
            s.push_str(&serde_json::to_string(call).expect("host calls serialize"));
            s.push('\n');
        }
        s
    }

    /// Parses [`Transcript::to_jsonl`] output and checks it against the
    /// root a claim binds.
    pub fn from_jsonl(text: &str, expected_root: &Digest) -> Result<Transcript, TranscriptError> {
        let mut t = Transcript::new();
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let call = serde_json::from_str(line).map_err(|e| TranscriptError::Malformed {
                line: i + 1,
                message: e.to_string(),
            })?;
            t.push(call);
        }
        if t.root != *expected_root {
            return Err(TranscriptError::RootMismatch {
                expected: *expected_root,
                found: t.root,
            });
        }
        Ok(t)
    }

    /// The first call where `expected` and `found` differ, if any.
    pub fn first_divergence(expected: &Transcript, found: &Transcript) -> Option<Divergence> {
        let n = expected.calls.len().max(found.calls.len());
        (0..n)
            .find(|&i| expected.calls.get(i) != found.calls.get(i))
            .map(|index| Divergence {
                index,
                expected: expected.calls.get(index).cloned(),
                found: found.calls.get(index).cloned(),
            })
    }
}

/// The transcript name of a wasi-nn `compute` call.
pub const NN_COMPUTE: &str = "wasi_ephemeral_nn.compute";

impl Transcript {
    /// The digests of the inference outputs of every successful `compute`,
    /// in order: what a host stores with the receipt and a verifier on
    /// another backend replays against.
    pub fn compute_outputs(&self) -> Vec<Digest> {
        self.calls()
            .iter()
            .filter_map(HostCall::recorded_output)
            .collect()
    }
}
