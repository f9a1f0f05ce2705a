//! Hostile guests: each ends in its expected, deterministic outcome (or a
//! clearly non-deterministic abort) without harming the host.

use tally_receipt::{AbortReason, Limit, Outcome};
use tally_sandbox::RunRequest;

use crate::util::{assert_limit, run, run_with, text, Pkg};

#[test]
pub fn spin() {
    let pkg = Pkg::new()
        .limit("fuel = 5_000_000")
        .guest_stage("spin", "")
        .build();
    let r = run(&pkg, b"");
    assert_limit(&r, Limit::Fuel);
    assert_eq!(
        r.claim.fuel_consumed, 5_000_000,
        "a trapped stage is charged its whole budget"
    );
    assert_eq!(run(&pkg, b"").claim, r.claim);
}

#[test]
fn wall_clock_backstop_aborts_as_not_deterministic() {
    let pkg = Pkg::new()
        .limit("fuel = 100_000_000_000\nwall_time_ms = 200")
        .guest_stage("spin", "")
        .build();
    let r = run(&pkg, b"");
    assert_eq!(
        r.claim.outcome,
        Outcome::Aborted {
            stage: "spin0".into(),
            reason: AbortReason::WallTime,
            detail: String::new(),
        }
    );
    assert!(!r.claim.outcome.is_deterministic());
}

#[test]
pub fn membomb() {
    let pkg = Pkg::new()
        .limit("memory_bytes = 67_108_864")
        .guest_stage("membomb", "")
        .build();
    let r = run(&pkg, b"");
    assert_limit(&r, Limit::MemoryBytes);
    assert_eq!(run(&pkg, b"").claim, r.claim);
}

#[test]
pub fn recurse() {
    let pkg = Pkg::new().guest_stage("recurse", "").build();
    let r = run(&pkg, b"");
    assert_eq!(
        r.claim.outcome,
        Outcome::Aborted {
            stage: "recurse0".into(),
            reason: AbortReason::StackOverflow,
            detail: String::new(),
        }
    );
}

#[test]
pub fn flood() {
    let pkg = Pkg::new()
        .limit("output_bytes = 1_000_000")
        .guest_stage("flood", "")
        .build();
    let r = run(&pkg, b"");
    assert_limit(&r, Limit::OutputBytes);
    assert!(r.output.is_empty());
}

#[test]
fn a_refused_write_is_the_limit_even_if_the_stage_exits_0() {
    // One 64 KiB write against a 1000-byte limit, refused; the guest then
    // exits 0. Not `ok` with 1000 bytes: the limit, last stage or middle.
    for (stream, limit) in [
        ("stdout", Limit::OutputBytes),
        ("stderr", Limit::StderrBytes),
    ] {
        let args = format!("args = [\"once\", \"{stream}\"]");
        let alone = Pkg::new()
            .limit("output_bytes = 1000\nstderr_bytes = 1000")
            .guest_stage("flood", &args)
            .build();
        let r = run(&alone, b"");
        assert_limit(&r, limit);
        assert!(r.output.is_empty());
        // The accepted bytes are what the stage claim digests.
        if stream == "stdout" {
            assert_eq!(
                r.claim.stages[0].stdout,
                tally_digest::Digest::of(&[b'x'; 1000])
            );
        }
        let middle = Pkg::new()
            .limit("output_bytes = 1000\nstderr_bytes = 1000")
            .guest_stage("flood", &args)
            .guest_stage("upper", "")
            .build();
        let r = run(&middle, b"");
        assert_limit(&r, limit);
        assert_eq!(r.claim.stages.len(), 1, "the next stage never ran");
    }
    // Exactly at the limit is fine.
    let exact = Pkg::new()
        .limit("output_bytes = 65536")
        .guest_stage("flood", "args = [\"once\"]")
        .build();
    let r = run(&exact, b"");
    assert_eq!(r.claim.outcome, Outcome::Ok);
    assert_eq!(r.output.len(), 65536);
}

#[test]
pub fn trap() {
    let pkg = Pkg::new().guest_stage("trap", "").build();
    let r = run(&pkg, b"");
    assert_eq!(
        r.claim.outcome,
        Outcome::Trap {
            stage: "trap0".into(),
            trap: "unreachable_code_reached".into()
        }
    );
    assert_eq!(
        r.claim.stages[0].stdout,
        tally_digest::Digest::of(b"before the trap\n")
    );
}

#[test]
pub fn chatter() {
    let pkg = Pkg::new()
        .limit("host_calls = 500")
        .guest_stage("chatter", "")
        .build();
    let r = run(&pkg, b"");
    assert_limit(&r, Limit::HostCalls);
    assert_eq!(r.claim.stages[0].host_calls, 500);
    // Host calls cost fuel too: with little fuel, fuel runs out first.
    let pkg = Pkg::new()
        .limit("fuel = 200_000")
        .guest_stage("chatter", "")
        .build();
    assert_limit(&run(&pkg, b""), Limit::Fuel);
}

#[test]
pub fn escape() {
    let pkg = Pkg::new()
        .file("granted.txt", b"you may read this")
        .file("secret.txt", b"not granted to this stage")
        .guest_stage("escape", "read = [\"granted.txt\"]")
        .build();
    let r = run(&pkg, b"");
    assert_eq!(r.claim.outcome, Outcome::Ok);
    let out = text(&r);
    let lines: Vec<&str> = out.lines().collect();
    for line in &lines[..6] {
        assert!(line.contains("denied"), "{out}");
    }
    assert!(lines[6].contains("write denied"), "{out}");
    assert_eq!(lines[7], "/pkg/granted.txt: READ 17 bytes", "{out}");
    assert_eq!(lines[8], "entries in /: 0");
}

#[test]
pub fn sockets() {
    let pkg = Pkg::new().guest_stage("sockets", "").build();
    let r = run(&pkg, b"");
    let out = text(&r);
    assert!(
        !out.contains("CONNECTED") && !out.contains("BOUND"),
        "{out}"
    );
    for fd in 0..8 {
        assert!(out.contains(&format!("sock_accept({fd}): errno")), "{out}");
        assert!(
            !out.contains(&format!("sock_accept({fd}): errno 0\n")),
            "{out}"
        );
    }
}

#[test]
fn fuel_override_is_capped_by_policy_and_replays_need_policy() {
    let pkg = Pkg::new().guest_stage("echo", "").build();
    let r = run_with(&pkg, &RunRequest::new(b"x").fuel(Some(u64::MAX)));
    assert_eq!(
        r.claim.limits.fuel,
        tally_sandbox::Policy::default().caps.fuel
    );
    let mut too_much = r.claim.limits;
    too_much.memory_bytes = u64::MAX;
    let s = tally_sandbox::Sandbox::new(tally_sandbox::SandboxConfig::default()).unwrap();
    let e = s
        .run(&pkg, &RunRequest::new(b"x").limits(Some(too_much)))
        .unwrap_err();
    assert!(e.to_string().contains("exceeds this host's policy"), "{e}");
}

#[test]
fn a_full_stderr_is_the_stderr_limit() {
    // `exit` writes "exiting with 7\n" (15 bytes) to stderr; Rust aborts when
    // the write is refused.
    let pkg = Pkg::new()
        .limit("stderr_bytes = 5")
        .guest_stage("exit", "")
        .build();
    assert_limit(&run(&pkg, b""), Limit::StderrBytes);
}

#[test]
fn growing_a_table_past_the_limit_is_the_table_limit() {
    let wat = r#"(module
        (table $t 1 funcref)
        (func (export "_start")
            (drop (table.grow $t (ref.null func) (i32.const 100)))))"#;
    let pkg = Pkg::new()
        .limit("table_elements = 10")
        .module("m", wat.as_bytes().to_vec())
        .stage("s", "m", "")
        .build();
    assert_limit(&run(&pkg, b""), Limit::TableElements);
}

/// A module that calls one WASI function and exits with its errno.
fn errno_of(call: &str, import: &str) -> i32 {
    let wat = format!(
        r#"(module
            (import "wasi_snapshot_preview1" {import})
            (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
            (memory (export "memory") 1)
            (func (export "_start") (call $exit {call})))"#
    );
    let pkg = Pkg::new()
        .module("m", wat.into_bytes())
        .stage("s", "m", "")
        .build();
    match run(&pkg, b"").claim.outcome {
        Outcome::Exit { code, .. } => code,
        Outcome::Ok => 0,
        o => panic!("{o:?}"),
    }
}

#[test]
fn oversized_random_requests_and_cpu_clocks_are_refused_with_errno() {
    let random = r#""random_get" (func $f (param i32 i32) (result i32))"#;
    assert_eq!(
        errno_of("(call $f (i32.const 0) (i32.const 16))", random),
        0
    );
    // More than MAX_RANDOM_BYTES (1 MiB): EINVAL.
    assert_eq!(
        errno_of("(call $f (i32.const 0) (i32.const 2000000))", random),
        28
    );
    // Out of bounds of memory: EFAULT.
    assert_eq!(
        errno_of("(call $f (i32.const 65530) (i32.const 16))", random),
        21
    );
    let clock = r#""clock_time_get" (func $f (param i32 i64 i32) (result i32))"#;
    assert_eq!(
        errno_of("(call $f (i32.const 1) (i64.const 1) (i32.const 0))", clock),
        0
    );
    // Process and thread CPU clocks would leak timing: ENOTSUP.
    assert_eq!(
        errno_of("(call $f (i32.const 2) (i64.const 1) (i32.const 0))", clock),
        58
    );
    assert_eq!(
        errno_of("(call $f (i32.const 9) (i64.const 1) (i32.const 0))", clock),
        28
    );
}

#[test]
fn file_views_left_by_killed_runs_are_swept() {
    // A run killed with SIGKILL leaves its `tally-run-PID-…` view behind;
    // the next sandbox (and `tally fsck`) removes it. A live process's view
    // is never touched. (4294967290 is above any Linux pid_max.)
    let tmp = std::env::temp_dir();
    let dead = tmp.join("tally-run-4294967290-swept");
    let live = tmp.join(format!("tally-run-{}-kept", std::process::id()));
    for d in [&dead, &live] {
        std::fs::create_dir_all(d.join("stage-0")).unwrap();
        std::fs::write(d.join("stage-0/f"), b"x").unwrap();
    }
    assert!(tally_sandbox::Sandbox::sweep_stale_runs() >= 1);
    assert!(!dead.exists(), "the dead run's view is removed");
    assert!(live.exists(), "a live process's view is kept");
    std::fs::remove_dir_all(&live).unwrap();
}

#[test]
fn many_stages_granted_one_file_share_one_copy() {
    // Twenty stages read the same granted file: each sees it, and the run
    // writes it once (its views link to one read-only copy).
    let mut pkg = Pkg::new().file("data/big.bin", &vec![7u8; 1 << 20]);
    for _ in 0..20 {
        pkg = pkg.guest_stage(
            "cat-file",
            "args = [\"/pkg/data/big.bin\"]\nread = [\"data/big.bin\"]",
        );
    }
    let pkg = pkg.build();
    let r = run(&pkg, b"");
    assert_eq!(r.claim.outcome, Outcome::Ok, "{:?}", r.stderr);
    assert_eq!(r.output.len(), 1 << 20);
}
