//! Same package + input + seed ⇒ same claim, on native code and on Pulley.

use tally_digest::Digest;
use tally_receipt::{compare, Outcome};
use tally_sandbox::{RunRequest, Sandbox, SandboxConfig, Target};

use crate::util::{run, run_with, text, Pkg};

#[test]
pub fn entropy() {
    let pkg = Pkg::new().guest_stage("entropy", "").build();
    let a = run(&pkg, b"");
    let b = run(&pkg, b"");
    assert_eq!(a.claim.outcome, Outcome::Ok);
    assert_eq!(a.claim, b.claim);
    assert_eq!(a.output, b.output);
    let out = text(&a);
    assert!(out.contains("wall=946684800000000000\n"), "{out}");
    assert!(
        out.contains("elapsed=0\n"),
        "the monotonic clock does not advance: {out}"
    );
    // Another seed, other random bytes; and the seed is in the claim.
    let seed = Digest::of(b"another seed");
    let c = run_with(&pkg, &RunRequest::new(b"").seed(Some(seed)));
    assert_eq!(c.claim.seed, seed);
    assert_ne!(c.output, a.output);
    let random = |o: &str| {
        o.lines()
            .find(|l| l.starts_with("random="))
            .unwrap()
            .to_string()
    };
    assert_ne!(random(&text(&c)), random(&out));
    assert!(a
        .transcript
        .calls()
        .iter()
        .any(|c| c.func.ends_with("random_get")));
}

#[test]
fn native_and_pulley_agree_on_everything_but_the_target() {
    let png = include_bytes!("../../../../manifests/image-stats/sample.png");
    let pkg = Pkg::new()
        .guest_stage("entropy", "")
        .guest_stage("echo", "")
        .build();
    let images = Pkg::new()
        .guest_stage(
            "preprocess",
            "args = [\"--width\", \"16\", \"--height\", \"16\"]",
        )
        .guest_stage("tensor-stats", "")
        .build();
    let native = Sandbox::new(SandboxConfig::default()).unwrap();
    let pulley = Sandbox::new(SandboxConfig::default().target(Target::Pulley)).unwrap();
    assert_eq!(native.engine_info().profile, pulley.engine_info().profile);
    assert_ne!(native.engine_info().target, pulley.engine_info().target);
    for (p, input) in [(&pkg, &b""[..]), (&images, &png[..])] {
        let a = native.run(p, &RunRequest::new(input)).unwrap();
        let b = pulley.run(p, &RunRequest::new(input)).unwrap();
        assert_eq!(a.claim.outcome, Outcome::Ok);
        assert_eq!(a.claim.output, b.claim.output);
        assert_eq!(a.claim.fuel_consumed, b.claim.fuel_consumed);
        assert_eq!(a.claim.transcript_root, b.claim.transcript_root);
        assert!(
            compare(&a.claim, &b.claim).is_empty(),
            "{:?}",
            compare(&a.claim, &b.claim)
        );
    }
}

#[test]
fn pooling_and_disk_cache_change_nothing_but_speed() {
    let dir = tempfile::tempdir().unwrap();
    let pkg = Pkg::new()
        .guest_stage("entropy", "")
        .guest_stage("upper", "")
        .build();
    let plain = Sandbox::new(SandboxConfig::default()).unwrap();
    let pooled =
        Sandbox::new(SandboxConfig::default().pooling(true).cache_dir(dir.path())).unwrap();
    let a = plain.run(&pkg, &RunRequest::new(b"x")).unwrap();
    let b = pooled.run(&pkg, &RunRequest::new(b"x")).unwrap();
    assert_eq!(a.claim, b.claim);
    assert_eq!(pooled.compiled_count(), 2);
    // A new sandbox on the same cache directory compiles nothing.
    let warm = Sandbox::new(SandboxConfig::default().pooling(true).cache_dir(dir.path())).unwrap();
    let c = warm.run(&pkg, &RunRequest::new(b"x")).unwrap();
    assert_eq!(warm.compiled_count(), 0);
    assert_eq!(c.claim, a.claim);
    // A second run in the same sandbox neither compiles nor differs.
    pooled.run(&pkg, &RunRequest::new(b"x")).unwrap();
    assert_eq!(pooled.compiled_count(), 2);
}

#[test]
fn different_input_changes_input_and_output_digests_only_where_it_should() {
    let pkg = Pkg::new().guest_stage("echo", "").build();
    let a = run(&pkg, b"one");
    let b = run(&pkg, b"two");
    let fields: Vec<String> = compare(&a.claim, &b.claim)
        .into_iter()
        .map(|m| m.field)
        .collect();
    assert!(fields.contains(&"input".to_string()));
    assert!(fields.contains(&"output".to_string()));
    assert!(fields.contains(&"stages[0].stdin".to_string()));
    assert!(!fields.contains(&"fuel_consumed".to_string()), "{fields:?}");
}

#[test]
fn generated_programs_claim_the_same_on_cranelift_and_pulley() {
    // The determinism promise on programs nobody here wrote: wasm-smith
    // modules (within the profile's features) run as one-stage packages
    // under native code and under Pulley must claim the same outcome,
    // output, fuel and transcript. Stack overflow is `aborted` by design
    // (its depth differs between compilers) and is not compared.
    let native = Sandbox::new(SandboxConfig::default()).unwrap();
    let pulley = Sandbox::new(SandboxConfig::default().target(Target::Pulley)).unwrap();
    let exports = wat::parse_str(r#"(module (func (export "_start")))"#).unwrap();
    let mut compared = 0;
    for seed in 0u64..48 {
        let mut data = vec![0u8; 16 << 10];
        blake3::Hasher::new()
            .update(b"tally.wasm-smith.v1")
            .update(&seed.to_le_bytes())
            .finalize_xof()
            .fill(&mut data);
        let mut u = arbitrary::Unstructured::new(&data);
        let cfg = wasm_smith::Config {
            exports: Some(exports.clone()),
            max_imports: 0,
            threads_enabled: false,
            shared_everything_threads_enabled: false,
            gc_enabled: false,
            exceptions_enabled: false,
            memory64_enabled: false,
            tail_call_enabled: false,
            custom_page_sizes_enabled: false,
            wide_arithmetic_enabled: false,
            max_memory32_bytes: 64 << 20,
            ..Default::default()
        };
        let Ok(module) = wasm_smith::Module::new(cfg, &mut u) else {
            continue;
        };
        let pkg = Pkg::new()
            .limit("fuel = 5_000_000\nmemory_bytes = 67_108_864")
            .module("gen", module.to_bytes())
            .stage("gen", "gen", "")
            .build();
        let a = native.run(&pkg, &RunRequest::new(b"")).unwrap();
        let b = pulley.run(&pkg, &RunRequest::new(b"")).unwrap();
        if matches!(a.claim.outcome, Outcome::Aborted { .. })
            || matches!(b.claim.outcome, Outcome::Aborted { .. })
        {
            continue;
        }
        let diff = compare(&a.claim, &b.claim);
        assert!(
            diff.is_empty(),
            "seed {seed}: {diff:?}\nnative: {:?}\npulley: {:?}",
            a.claim.outcome,
            b.claim.outcome
        );
        compared += 1;
    }
    assert!(
        compared >= 24,
        "only {compared} generated programs compared"
    );
}

#[test]
pub fn stat_files() {
    // What WASI says about a granted file or directory must not depend on
    // the host: its times, link count, inode number and a directory's size
    // are the host's own unless pinned. Two stages are granted the file (on
    // the host, two links to one copy), and the run is repeated a second
    // later by another sandbox (new copies, new times).
    let stage = "args = [\"data/a.bin\", \"data\"]\nread = [\"data/a.bin\"]";
    let pkg = Pkg::new()
        .file("data/a.bin", &[7u8; 1000])
        .guest_stage("stat-files", stage)
        .guest_stage("stat-files", stage)
        .build();
    let first = run(&pkg, b"");
    assert_eq!(first.claim.outcome, Outcome::Ok, "{:?}", first.stderr);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = Sandbox::new(SandboxConfig::default())
        .unwrap()
        .run(&pkg, &RunRequest::new(b""))
        .unwrap();
    assert_eq!(
        first.claim,
        second.claim,
        "{}\n{}",
        text(&first),
        text(&second)
    );
    // `via dev ino filetype nlink size atim mtim ctim`: inodes numbered by
    // first sight, one link, no times, directories of size 0.
    let out = text(&first);
    for want in [
        "data/a.bin path 1 1 4 1 1000 0 0 0",
        "data/a.bin fd 1 1 4 1 1000 0 0 0",
        "data path 1 2 3 1 0 0 0 0",
        "/pkg fd 1 3 3 1 0 0 0 0",
    ] {
        assert!(out.lines().any(|l| l == want), "no `{want}` in\n{out}");
    }
}
