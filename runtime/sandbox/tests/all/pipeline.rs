//! Well-behaved guests: the pipeline plumbing, args, env, files, exits.

use tally_receipt::Outcome;

use crate::util::{run, text, Pkg};

const SAMPLE_PNG: &[u8] = include_bytes!("../../../../manifests/image-stats/sample.png");

#[test]
pub fn echo() {
    let pkg = Pkg::new().guest_stage("echo", "").build();
    let r = run(&pkg, b"hello tally");
    assert_eq!(r.claim.outcome, Outcome::Ok);
    assert_eq!(r.output, b"hello tally");
    assert_eq!(r.claim.output, tally_digest::Digest::of(b"hello tally"));
    assert_eq!(r.claim.stages.len(), 1);
    assert!(r.claim.fuel_consumed > 0);
    assert_eq!(r.claim.fuel_consumed, r.claim.stages[0].fuel_consumed);
    assert!(
        r.claim.host_calls > 0,
        "reading stdin and writing stdout are host calls"
    );
}

#[test]
pub fn upper() {
    let pkg = Pkg::new()
        .guest_stage("echo", "")
        .guest_stage(
            "upper",
            "args = [\"--flag\", \"two words\"]\nenv = { MODE = \"loud\", B = \"2\" }",
        )
        .build();
    let r = run(&pkg, b"quiet");
    assert_eq!(r.claim.outcome, Outcome::Ok);
    let out = text(&r);
    assert!(out.starts_with("QUIET\n"), "{out}");
    assert!(
        out.contains("args=[\"upper1\", \"--flag\", \"two words\"]"),
        "{out}"
    );
    // Exactly the manifest's environment, nothing of the host's.
    assert!(out.contains("env=[\"B=2\", \"MODE=loud\"]"), "{out}");
    assert_eq!(r.claim.stages[1].stdin, r.claim.stages[0].stdout);
}

#[test]
pub fn cat_file() {
    let pkg = Pkg::new()
        .file("data/greeting.txt", b"hi from the package")
        .guest_stage(
            "cat-file",
            "args = [\"/pkg/data/greeting.txt\"]\nread = [\"data/greeting.txt\"]",
        )
        .build();
    let r = run(&pkg, b"");
    assert_eq!(r.claim.outcome, Outcome::Ok);
    assert_eq!(r.output, b"hi from the package");
    let grant = r
        .transcript
        .calls()
        .iter()
        .find(|c| c.func == "tally.grant")
        .expect("the grant is in the transcript");
    assert_eq!(grant.detail.as_deref(), Some("/pkg/data/greeting.txt"));
    assert_eq!(
        grant.data,
        Some(tally_digest::Digest::of(b"hi from the package"))
    );
}

#[test]
pub fn exit() {
    let pkg = Pkg::new()
        .guest_stage("exit", "args = [\"7\"]")
        .guest_stage("echo", "")
        .build();
    let r = run(&pkg, b"");
    assert_eq!(
        r.claim.outcome,
        Outcome::Exit {
            stage: "exit0".into(),
            code: 7
        }
    );
    assert_eq!(
        r.claim.stages.len(),
        1,
        "the pipeline stops at the failing stage"
    );
    assert_eq!(r.stderr[0].1, b"exiting with 7\n");
    assert!(
        r.claim.fuel_consumed < r.claim.limits.fuel,
        "an exit is a clean stop: fuel is exact"
    );
    assert!(r.output.is_empty());
}

#[test]
pub fn preprocess() {
    let pkg = Pkg::new()
        .guest_stage(
            "preprocess",
            "args = [\"--width\", \"32\", \"--height\", \"16\"]",
        )
        .build();
    let r = run(&pkg, SAMPLE_PNG);
    assert_eq!(
        r.claim.outcome,
        Outcome::Ok,
        "{:?}",
        String::from_utf8_lossy(&r.stderr[0].1)
    );
    // safetensors: 8-byte header length, JSON header, 1*3*16*32 f32 values.
    let header_len = u64::from_le_bytes(r.output[..8].try_into().unwrap()) as usize;
    assert_eq!(r.output.len(), 8 + header_len + 3 * 16 * 32 * 4);
    let header = std::str::from_utf8(&r.output[8..8 + header_len]).unwrap();
    assert!(header.contains("\"shape\":[1,3,16,32]"), "{header}");

    let bad = run(&pkg, b"not an image");
    assert_eq!(
        bad.claim.outcome,
        Outcome::Exit {
            stage: "preprocess0".into(),
            code: 1
        }
    );
    assert!(String::from_utf8_lossy(&bad.stderr[0].1).contains("not a PNG or JPEG"));
}

#[test]
fn preprocess_reads_jpeg_too() {
    let png = image::load_from_memory(SAMPLE_PNG).unwrap();
    let mut jpeg = Vec::new();
    png.write_to(
        &mut std::io::Cursor::new(&mut jpeg),
        image::ImageFormat::Jpeg,
    )
    .unwrap();
    assert_eq!(&jpeg[..2], b"\xff\xd8");
    let pkg = Pkg::new()
        .guest_stage(
            "preprocess",
            "args = [\"--width\", \"8\", \"--height\", \"8\"]",
        )
        .build();
    let r = run(&pkg, &jpeg);
    assert_eq!(
        r.claim.outcome,
        Outcome::Ok,
        "{}",
        String::from_utf8_lossy(&r.stderr[0].1)
    );
    assert_eq!(r.output.len() as u64, r.claim.output_len);
    assert!(r.output.len() > 3 * 8 * 8 * 4);
}

#[test]
pub fn tensor_stats() {
    let pkg = Pkg::new()
        .guest_stage("preprocess", "args = [\"--width\", \"8\", \"--height\", \"8\", \"--mean\", \"0,0,0\", \"--std\", \"1,1,1\"]")
        .guest_stage("tensor-stats", "")
        .build();
    let r = run(&pkg, SAMPLE_PNG);
    assert_eq!(r.claim.outcome, Outcome::Ok);
    let out = text(&r);
    assert!(
        out.starts_with("{\"tensor\":\"input\",\"shape\":[1,3,8,8],\"channels\":[{\"mean\":"),
        "{out}"
    );
    // With mean 0 and std 1 every value is a pixel / 255, in [0, 1].
    assert!(!out.contains("-"), "{out}");
}

#[test]
fn modules_that_are_not_wasm_or_import_outside_wasi_are_rejected() {
    let cases = [
        (b"definitely not wasm".to_vec(), "not a valid WebAssembly module"),
        (b"(module (import \"env\" \"f\" (func)) (func (export \"_start\")))".to_vec(), "only `wasi_snapshot_preview1`"),
        (b"(module (import \"wasi_snapshot_preview1\" \"nope\" (func)) (func (export \"_start\")))".to_vec(), "do not define"),
        (b"(module (import \"wasi_snapshot_preview1\" \"proc_exit\" (func (param i64))) (func (export \"_start\")))".to_vec(), "wrong type"),
        (b"(module (func (export \"main\")))".to_vec(), "no `_start`"),
    ];
    for (bytes, want) in cases {
        let pkg = Pkg::new().module("m", bytes).stage("s", "m", "").build();
        match run(&pkg, b"").claim.outcome {
            Outcome::Rejected { reason, .. } => assert!(reason.contains(want), "{reason}"),
            o => panic!("expected a rejection containing {want:?}, got {o:?}"),
        }
    }
}

#[test]
fn a_module_over_the_size_limit_is_refused_before_compiling() {
    let pkg = Pkg::new()
        .limit("module_bytes = 1000")
        .guest_stage("echo", "")
        .build();
    crate::util::assert_limit(&run(&pkg, b""), tally_manifest::Limit::ModuleBytes);
}
