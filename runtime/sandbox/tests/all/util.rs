//! Building packages from guest artifacts in memory.

use tally_package::Package;
use tally_receipt::Outcome;
use tally_sandbox::{RunRequest, RunResult, Sandbox, SandboxConfig};
pub use tally_test_artifacts::pkg::Pkg;

thread_local! {
    static SANDBOX: Sandbox = Sandbox::new(SandboxConfig::default()).unwrap();
}

/// Runs `pkg` on `input` in a per-thread default sandbox.
pub fn run(pkg: &Package, input: &[u8]) -> RunResult {
    SANDBOX.with(|s| s.run(pkg, &RunRequest::new(input)).unwrap())
}

pub fn run_with(pkg: &Package, req: &RunRequest<'_>) -> RunResult {
    SANDBOX.with(|s| s.run(pkg, req).unwrap())
}

/// Asserts the run ended with `LimitExceeded { limit }`.
pub fn assert_limit(r: &RunResult, limit: tally_manifest::Limit) {
    match &r.claim.outcome {
        Outcome::LimitExceeded { limit: l, .. } if *l == limit => {}
        o => panic!("expected the {limit} limit, got {o:?}"),
    }
}

pub fn text(r: &RunResult) -> String {
    String::from_utf8_lossy(&r.output).into_owned()
}

/// The last wasi-nn call in `r`'s transcript.
pub fn last_nn_call(r: &RunResult) -> Option<&tally_receipt::HostCall> {
    r.transcript
        .calls()
        .iter()
        .rev()
        .find(|c| c.func.starts_with("wasi_ephemeral_nn."))
}
