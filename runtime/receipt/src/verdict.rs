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
    /// The fields that differ.
    pub mismatches: Vec<Mismatch>,
    /// The first host call where the transcripts differ, when known.
    pub divergence: Option<Divergence>,
    /// Why a divergence could not be localised, if it could not.
    pub note: Option<String>,
}

impl Verdict {
    /// Compares `receipt` with a replay (its claim and transcript).
    /// `original` loads the receipt's own transcript; it is only called when
    /// the transcript roots differ.
    pub fn new(
        receipt: &Receipt,
        replay: &Claim,
        replay_transcript: &Transcript,
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
            verified: mismatches.is_empty(),
            claim: receipt.seal.claim_digest,
            host_key: receipt.seal.host_key.clone(),
            cross_target: claim.engine.target != replay.engine.target,
            mismatches,
            divergence,
            note,
        }
    }

    /// The verdict as text for people, one finding per line.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        if self.verified {
            let _ = writeln!(
                s,
                "verified: claim {} (sealed by host {})",
                self.claim, self.host_key
            );
            if self.cross_target {
                let _ = writeln!(
                    s,
                    "  replayed on a different compilation target: every bound field agrees"
                );
            }
            return s;
        }
        let _ = writeln!(
            s,
            "NOT verified: claim {} (sealed by host {})",
            self.claim, self.host_key
        );
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
