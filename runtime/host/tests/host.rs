//! The host library end to end, with real guests and a real store: run →
//! seal → store, then verify from the store, on the same backend and on
//! another; and what a verifier without the package, or with the wrong
//! input or key, is told.

use std::sync::Arc;

use ed25519_dalek::SigningKey;
use tally_host::{verify, FirstOf, Host, Sources, StoreSources, VerifyError};
use tally_package::Package;
use tally_sandbox::{BackendKind, RunRequest, Sandbox, SandboxConfig};
use tally_store::Store;
use tally_test_artifacts::pkg::Pkg;

fn sandbox(kind: BackendKind) -> Arc<Sandbox> {
    Arc::new(Sandbox::new(SandboxConfig::default().backend(kind)).unwrap())
}

/// One LSTM step sequence through `nn-run`, with a tolerance for replays on
/// other backends.
fn nn_package() -> Package {
    Pkg::new()
        .graph(
            "g",
            "g.onnx",
            tally_test_artifacts::onnx::lstm(8, 8),
            "tolerance = { abs = 1e-4, rel = 1e-3 }",
        )
        .guest_stage(
            "nn-run",
            "graphs = [\"g\"]\nargs = [\"g\", \"4\", \"1\", \"8\"]",
        )
        .build()
}

fn input() -> Vec<u8> {
    (0..32u32)
        .flat_map(|i| (i as f32 / 32.0).to_le_bytes())
        .collect()
}

#[test]
fn a_sealed_run_verifies_from_the_store_on_its_backend_and_on_another() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let package = nn_package();
    store.put_package(&package).unwrap();
    let key = SigningKey::from_bytes(&[7; 32]);
    let host =
        Host::new(sandbox(BackendKind::Tract), key.clone(), "test").with_store(store.clone());
    let sealed = host
        .run_and_seal(&package, &RunRequest::new(&input()))
        .unwrap();
    assert!(sealed.receipt.claim.outcome.is_ok(), "{:?}", sealed.stderr);
    assert!(matches!(sealed.stored, Some(Ok(()))));
    assert_eq!(sealed.computes.len(), 1);
    let trusted = [hex(&key)];
    let sources = StoreSources(&store);

    // Same backend: replayed bit for bit.
    let v = verify(
        host.sandbox(),
        &sealed.receipt,
        &trusted,
        &input(),
        &sources,
    )
    .unwrap();
    assert!(v.verified, "{}", v.render());
    // Another backend: fed the recorded outputs the store kept, and each
    // checked within the declared tolerance.
    let portable = sandbox(BackendKind::Portable);
    let v = verify(&portable, &sealed.receipt, &trusted, &input(), &sources).unwrap();
    assert!(v.verified, "{}", v.render());
    assert_eq!(v.inference.len(), 1);
    assert!(v.inference[0].within && v.inference[0].calls == 1);
}

#[test]
fn a_verifier_is_told_what_is_missing_or_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let package = Pkg::new().guest_stage("upper", "").build();
    let key = SigningKey::from_bytes(&[9; 32]);
    let sb = sandbox(BackendKind::Portable);
    let host = Host::new(sb.clone(), key.clone(), "test").with_store(store.clone());
    let sealed = host
        .run_and_seal(&package, &RunRequest::new(b"hi"))
        .unwrap();
    let trusted = [hex(&key)];

    // No source has the package (the store has the receipt, not the package).
    let err = verify(&sb, &sealed.receipt, &trusted, b"hi", &StoreSources(&store)).unwrap_err();
    assert!(matches!(err, VerifyError::Package { .. }), "{err}");
    assert!(err.to_string().contains("give the bundle"), "{err}");
    store.put_package(&package).unwrap();
    let in_store = StoreSources(&store);
    let sources = FirstOf(vec![&Nothing as &dyn Sources, &in_store]);
    assert!(
        verify(&sb, &sealed.receipt, &trusted, b"hi", &sources)
            .unwrap()
            .verified
    );

    let err = verify(&sb, &sealed.receipt, &trusted, b"ho", &sources).unwrap_err();
    assert!(matches!(err, VerifyError::InputMismatch { .. }), "{err}");
    assert!(err.is_request_error());
    let stranger = [hex(&SigningKey::from_bytes(&[1; 32]))];
    let err = verify(&sb, &sealed.receipt, &stranger, b"hi", &sources).unwrap_err();
    assert!(matches!(err, VerifyError::Seal(_)), "{err}");
    // A claim edited after sealing never reaches a replay.
    let mut edited = sealed.receipt.clone();
    edited.claim.output_len += 1;
    let err = verify(&sb, &edited, &trusted, b"hi", &sources).unwrap_err();
    assert!(matches!(err, VerifyError::Seal(_)), "{err}");
}

#[test]
fn limits_above_the_hosts_policy_are_the_requests_fault() {
    let package = Pkg::new().guest_stage("upper", "").build();
    let host = Host::new(
        sandbox(BackendKind::Portable),
        SigningKey::from_bytes(&[3; 32]),
        "t",
    );
    let sealed = host
        .run_and_seal(&package, &RunRequest::new(b"hi"))
        .unwrap();
    let mut limits = sealed.receipt.claim.limits;
    limits.fuel = u64::MAX;
    let err = host
        .run_and_seal(&package, &RunRequest::new(b"hi").limits(Some(limits)))
        .unwrap_err();
    assert!(err.is_request_error(), "{err}");
    assert!(err.to_string().contains("policy"), "{err}");
}

/// A source that has nothing.
struct Nothing;
impl Sources for Nothing {}

fn hex(key: &SigningKey) -> String {
    key.verifying_key()
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
