//! The verifier's verdict: a receipt compared with its replay.

use serde::{Deserialize, Serialize};
use tally_digest::Digest;

use crate::{compare, Claim, Divergence, HostCall, Mismatch, Receipt, Transcript};

/// What a verifier concluded about a receipt after replaying it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Verdict {
    /// Every bound field of the replay equals the receipt's.
    pub verified: bool,
    /// The receipt's claim digest.
    pub claim: Digest,
    /// The host key that sealed it (hex).
    pub host_key: String,
    /// The replay ran on a different compilation target (see
    /// [`crate::EngineInfo::target`]); not a failure.
    pub cross_target: bool,
    /// The replay used another inference backend (kind or detail): the
    /// guests were fed the recorded inference outputs, and each was
    /// compared with this host's recomputation under the manifest's
    /// tolerance ([`Verdict::inference`]).
    pub cross_backend: bool,
    /// Per graph output, how the recomputed inference outputs compare with
    /// the recorded ones (cross-backend replays only).
    pub inference: Vec<InferenceCheck>,
    /// The fields that differ.
    pub mismatches: Vec<Mismatch>,
    /// The first host call where the transcripts differ, when known.
    pub divergence: Option<Divergence>,
    /// Why a divergence could not be localised, if it could not.
    pub note: Option<String>,
}

impl Verdict {
    /// Compares `receipt` with a replay (its claim and transcript, and the
    /// inference checks of a cross-backend replay). `original` loads the
    /// receipt's own transcript; it is only called when the transcript
    /// roots differ.
    pub fn new(
        receipt: &Receipt,
        replay: &Claim,
        replay_transcript: &Transcript,
        inference: Vec<InferenceCheck>,
        original: impl FnOnce() -> Result<Transcript, String>,
    ) -> Verdict {
        let claim = &receipt.claim;
        let mismatches = compare(claim, replay);
        let (mut divergence, mut note) = (None, None);
        if claim.transcript_root != replay.transcript_root {
            match original() {
                Ok(t) => divergence = Transcript::first_divergence(&t, replay_transcript),
                Err(e) => {
                    note = Some(format!(
                        "the receipt's transcript is unavailable, so the divergence cannot be localised: {e}"
                    ))
                }
            }
        }
        Verdict {
            verified: mismatches.is_empty() && inference.iter().all(|c| c.within),
            claim: receipt.seal.claim_digest,
            host_key: receipt.seal.host_key.clone(),
            cross_target: claim.engine.target != replay.engine.target,
            cross_backend: claim.backend != replay.backend,
            inference,
            mismatches,
            divergence,
            note,
        }
    }

    /// The verdict as text for people, one finding per line.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{}: claim {} (sealed by host {})",
            if self.verified {
                "verified"
            } else {
                "NOT verified"
            },
            self.claim,
            self.host_key
        );
        if self.cross_target {
            let _ = writeln!(s, "  replayed on a different compilation target");
        }
        if self.cross_backend {
            let _ = writeln!(
                s,
                "  replayed on another inference backend: guests ran on the recorded inference outputs"
            );
        }
        for c in &self.inference {
            let _ = writeln!(s, "  {}", c.render());
        }
        if self.verified {
            return s;
        }
        for m in &self.mismatches {
            let _ = writeln!(
                s,
                "  {}: receipt says {}, replay found {}",
                m.field, m.expected, m.found
            );
        }
        if let Some(d) = &self.divergence {
            let show = |c: &Option<HostCall>| match c {
                Some(c) => serde_json::to_string(c).expect("host calls serialize"),
                None => "(no call)".into(),
            };
            let _ = writeln!(s, "  transcripts diverge at host call #{}:", d.index);
            let _ = writeln!(s, "    receipt: {}", show(&d.expected));
            let _ = writeln!(s, "    replay:  {}", show(&d.found));
        }
        if let Some(n) = &self.note {
            let _ = writeln!(s, "  note: {n}");
        }
        s
    }
}

/// How the recomputed outputs of one graph output compare with the
/// recorded ones over a run (a cross-backend replay).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct InferenceCheck {
    /// The graph's name in the manifest.
    pub graph: String,
    /// The output index.
    pub output: u32,
    /// The declared tolerance: absolute error.
    pub abs: f64,
    /// The declared tolerance: relative error.
    pub rel: f64,
    /// The declared tolerance: argmax agreement instead of values.
    pub argmax: bool,
    /// How many computes of the graph were compared.
    pub calls: u64,
    /// Largest absolute error seen.
    pub max_abs: f64,
    /// Largest relative error seen (over elements beyond `abs`).
    pub max_rel: f64,
    /// Every compared call is within tolerance.
    pub within: bool,
    /// The first compute call out of tolerance (0-based, over the
    /// transcript's `compute` calls, failed ones included), and why.
    pub first_failure: Option<(u64, String)>,
}

impl Eq for InferenceCheck {}

impl InferenceCheck {
    /// An empty check of `graph` output `output` under a tolerance.
    pub fn new(graph: &str, output: u32, abs: f64, rel: f64, argmax: bool) -> Self {
        InferenceCheck {
            graph: graph.into(),
            output,
            abs,
            rel,
            argmax,
            calls: 0,
            max_abs: 0.0,
            max_rel: 0.0,
            within: true,
            first_failure: None,
        }
    }

    /// Adds the comparison of compute number `call`.
    pub fn add(
        &mut self,
        call: u64,
        max_abs: f64,
        max_rel: f64,
        within: bool,
        reason: Option<String>,
    ) {
        self.calls += 1;
        self.max_abs = self.max_abs.max(max_abs);
        self.max_rel = self.max_rel.max(max_rel);
        if !within && self.within {
            self.within = false;
            self.first_failure = Some((call, reason.unwrap_or_default()));
        }
    }

    /// One line for people.
    pub fn render(&self) -> String {
        let bound = if self.argmax {
            "argmax".to_string()
        } else {
            format!("abs {:.0e} / rel {:.0e}", self.abs, self.rel)
        };
        let mut s = format!(
            "{} output {}: {} calls, max abs error {:.3e}, max rel error {:.3e} ({bound}): {}",
            self.graph,
            self.output,
            self.calls,
            self.max_abs,
            self.max_rel,
            if self.within {
                "within tolerance"
            } else {
                "OUT OF TOLERANCE"
            }
        );
        if let Some((call, why)) = &self.first_failure {
            s.push_str(&format!("; first at compute #{call}: {why}"));
        }
        s
    }
}
