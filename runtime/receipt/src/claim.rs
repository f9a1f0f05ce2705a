//! The claim: what a run determined, and how two claims are compared.

use serde::{Deserialize, Serialize};
use tally_digest::{Canon, Digest, Encode};
use tally_manifest::{Limit, ResolvedLimits};

/// The domain tag of the claim's canonical encoding.
pub const CLAIM_TAG: &str = "tally.ReceiptClaim.v1";

/// Everything a run determined. Two honest hosts running the same package
/// on the same input with the same seed and limits produce equal claims,
/// except [`EngineInfo::target`] (see there).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claim {
    /// [`crate::FORMAT_VERSION`].
    pub format_version: u32,
    /// The Tally version that ran.
    pub tally_version: String,
    /// The engine and its determinism profile.
    pub engine: EngineInfo,
    /// The inference backend that served wasi-nn calls.
    pub backend: BackendInfo,
    /// The package id (canonical manifest digest).
    pub package_id: Digest,
    /// Digest of the run input.
    pub input: Digest,
    /// Digest of the run output: the last stage's stdout when the outcome is
    /// `ok`, otherwise of the empty string.
    pub output: Digest,
    /// Length of the output in bytes.
    pub output_len: u64,
    /// The seed of every random stream the guests read.
    pub seed: Digest,
    /// The limits in force (manifest, capped by host policy and `--fuel`).
    pub limits: ResolvedLimits,
    /// The stages that ran, in order (a failed stage is the last one).
    pub stages: Vec<StageClaim>,
    /// Fuel consumed by the whole run.
    pub fuel_consumed: u64,
    /// How the run ended.
    pub outcome: Outcome,
    /// Root of the hash chain over every host call ([`crate::Transcript`]).
    pub transcript_root: Digest,
    /// Number of host calls in the transcript.
    pub host_calls: u64,
}

/// The engine that ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineInfo {
    /// The wasmtime version (fuel costs differ between versions).
    pub wasmtime_version: String,
    /// Digest of the determinism profile: every engine setting that can
    /// change a result (NaN canonicalisation, enabled proposals, fuel cost
    /// table, stack size, virtual clocks, random stream, host-call costs).
    /// Host-independent: must match for a replay to verify.
    pub profile: Digest,
    /// The profile digest combined with wasmtime's precompile compatibility
    /// hash, which also covers the compilation target and CPU features.
    /// Differs between hosts of different architectures by design; a
    /// verifier reports a difference here as a cross-target replay, not a
    /// mismatch.
    pub target: Digest,
}

/// The inference backend of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendInfo {
    /// `portable`, `tract` or `onnxruntime`.
    pub kind: String,
    /// What exactly computed: engine version, kernels, library digest. Two
    /// runs with equal kind and detail give bit-identical inference outputs;
    /// a replay on another backend (or detail) compares inference outputs
    /// under the manifest's tolerances instead (see `Verdict`).
    pub detail: String,
}

/// One stage that ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageClaim {
    /// The stage name.
    pub name: String,
    /// Digest of its module.
    pub module: Digest,
    /// Digest of its stdin.
    pub stdin: Digest,
    /// Digest of its stdout (as far as it got).
    pub stdout: Digest,
    /// Digest of its stderr (capped).
    pub stderr: Digest,
    /// Fuel it consumed (the whole remaining budget if it trapped).
    pub fuel_consumed: u64,
    /// Host calls it made.
    pub host_calls: u64,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Outcome {
    /// Every stage exited with status 0.
    Ok,
    /// A stage exited with a non-zero status. Deterministic.
    Exit {
        /// The stage.
        stage: String,
        /// Its exit status.
        code: i32,
    },
    /// A stage trapped (`unreachable`, out-of-bounds access, division by
    /// zero…). Deterministic.
    Trap {
        /// The stage.
        stage: String,
        /// wasmtime's trap code, e.g. `unreachable`.
        trap: String,
    },
    /// A stage hit a limit. Deterministic.
    LimitExceeded {
        /// The stage.
        stage: String,
        /// Which limit, named as in the manifest's `[limits]`.
        limit: Limit,
    },
    /// A stage's module was rejected before it ran (not valid WebAssembly,
    /// imports outside the allowed set). Deterministic.
    Rejected {
        /// The stage.
        stage: String,
        /// Why.
        reason: String,
    },
    /// The run was stopped for a reason that is NOT deterministic across
    /// hosts: the wall-clock backstop, or a stack overflow (whose depth
    /// differs between compilers and targets). Such a receipt records what
    /// happened but cannot be verified by replay.
    Aborted {
        /// The stage.
        stage: String,
        /// Why.
        reason: AbortReason,
        /// What the host knows more (a host error's message), or empty.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        detail: String,
    },
}

/// Why a run was stopped without a deterministic outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AbortReason {
    /// The wall-clock backstop (`wall_time_ms`).
    WallTime,
    /// The wasm stack overflowed: its depth differs between compilers and
    /// targets.
    StackOverflow,
    /// The host failed (an engine or resource error that is not the
    /// guest's doing); `detail` says what.
    HostError,
}

impl AbortReason {
    /// Its name in claims.
    pub fn name(self) -> &'static str {
        match self {
            AbortReason::WallTime => "wall_time",
            AbortReason::StackOverflow => "stack_overflow",
            AbortReason::HostError => "host_error",
        }
    }
}

impl Outcome {
    /// Whether the run completed successfully.
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok)
    }

    /// Whether another honest host must reach the same outcome.
    pub fn is_deterministic(&self) -> bool {
        !matches!(self, Outcome::Aborted { .. })
    }
}

impl Encode for Outcome {
    fn encode(&self, c: &mut Canon) {
        match self {
            Outcome::Ok => {
                c.u8(0);
            }
            Outcome::Exit { stage, code } => {
                c.u8(1).str(stage).i64(*code as i64);
            }
            Outcome::Trap { stage, trap } => {
                c.u8(2).str(stage).str(trap);
            }
            Outcome::LimitExceeded { stage, limit } => {
                c.u8(3).str(stage).str(limit.name());
            }
            Outcome::Rejected { stage, reason } => {
                c.u8(4).str(stage).str(reason);
            }
            Outcome::Aborted {
                stage,
                reason,
                detail,
            } => {
                c.u8(5).str(stage).str(reason.name()).str(detail);
            }
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Ok => write!(f, "ok"),
            Outcome::Exit { stage, code } => write!(f, "stage `{stage}` exited with status {code}"),
            Outcome::Trap { stage, trap } => write!(f, "stage `{stage}` trapped: {trap}"),
            Outcome::LimitExceeded { stage, limit } => {
                write!(f, "stage `{stage}` exceeded the {limit} limit")
            }
            Outcome::Rejected { stage, reason } => {
                write!(f, "stage `{stage}` was rejected: {reason}")
            }
            Outcome::Aborted {
                stage,
                reason,
                detail,
            } => {
                let reason = reason.name();
                let detail = if detail.is_empty() {
                    String::new()
                } else {
                    format!(": {detail}")
                };
                write!(f, "stage `{stage}` was aborted ({reason}{detail}; not deterministic, cannot be verified by replay)")
            }
        }
    }
}

impl Claim {
    /// The claim digest: blake3 under [`CLAIM_TAG`] over the canonical
    /// encoding of every field, in declaration order.
    pub fn digest(&self) -> Digest {
        Canon::new(CLAIM_TAG).put(self).finish()
    }
}

impl Encode for Claim {
    fn encode(&self, c: &mut Canon) {
        let Claim {
            format_version,
            tally_version,
            engine,
            backend,
            package_id,
            input,
            output,
            output_len,
            seed,
            limits,
            stages,
            fuel_consumed,
            outcome,
            transcript_root,
            host_calls,
        } = self;
        c.u32(*format_version)
            .str(tally_version)
            .put(engine)
            .put(backend)
            .digest(package_id)
            .digest(input)
            .digest(output)
            .u64(*output_len)
            .digest(seed)
            .put(limits)
            .put(stages)
            .u64(*fuel_consumed)
            .put(outcome)
            .digest(transcript_root)
            .u64(*host_calls);
    }
}

impl Encode for EngineInfo {
    fn encode(&self, c: &mut Canon) {
        let EngineInfo {
            wasmtime_version,
            profile,
            target,
        } = self;
        c.str(wasmtime_version).digest(profile).digest(target);
    }
}

impl Encode for BackendInfo {
    fn encode(&self, c: &mut Canon) {
        let BackendInfo { kind, detail } = self;
        c.str(kind).str(detail);
    }
}

impl Encode for StageClaim {
    fn encode(&self, c: &mut Canon) {
        let StageClaim {
            name,
            module,
            stdin,
            stdout,
            stderr,
            fuel_consumed,
            host_calls,
        } = self;
        c.str(name)
            .digest(module)
            .digest(stdin)
            .digest(stdout)
            .digest(stderr)
            .u64(*fuel_consumed)
            .u64(*host_calls);
    }
}

/// One claim field that differs between a receipt and its replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mismatch {
    /// The field's path, e.g. `stages[1].fuel_consumed`.
    pub field: String,
    /// The receipt's value (JSON).
    pub expected: String,
    /// The replay's value (JSON).
    pub found: String,
}

/// Compares a receipt's claim (`expected`) with a replay's (`found`) field
/// by field. `engine.target` and `backend` are skipped: they legitimately
/// differ between hosts (see [`EngineInfo::target`], [`BackendInfo`]); the
/// [`crate::Verdict`] reports them.
pub fn compare(expected: &Claim, found: &Claim) -> Vec<Mismatch> {
    let a = serde_json::to_value(expected).expect("claims serialize");
    let b = serde_json::to_value(found).expect("claims serialize");
    let mut out = Vec::new();
    diff("", &a, &b, &mut out);
    out.retain(|m| {
        !(m.field == "engine.target" || m.field == "backend" || m.field.starts_with("backend."))
    });
    out
}

fn diff(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<Mismatch>) {
    use serde_json::Value;
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match (a, b) {
        (Value::Object(x), Value::Object(y))
            if x.get("kind").is_none() || x.get("kind") == y.get("kind") =>
        {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                diff(
                    &join(k),
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            if x.len() != y.len() {
                out.push(Mismatch {
                    field: format!("{path}.len"),
                    expected: x.len().to_string(),
                    found: y.len().to_string(),
                });
            }
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                diff(&format!("{path}[{i}]"), p, q, out);
            }
        }
        _ if a != b => out.push(Mismatch {
            field: path.to_string(),
            expected: a.to_string(),
            found: b.to_string(),
        }),
        _ => {}
    }
}
