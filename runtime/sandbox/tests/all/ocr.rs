//! OCR with PP-OCRv4 through wasi-nn: images of known multi-line text,
//! rendered with a real TrueType font (DejaVu Sans), read back exactly on
//! every backend, and receipts replayed across backends.

use std::sync::OnceLock;

use tally_package::Package;
use tally_receipt::{AbortReason, Limit, Outcome};
use tally_sandbox::{BackendKind, RunRequest, RunResult};
use tally_test_artifacts::pkg::{self, asset, Pkg};
use tally_test_artifacts::text;

use crate::nn::{assert_replays_across_backends, sandbox, BACKENDS};
use crate::util::{assert_limit, text as output_text};

/// The text the images hold, one entry per line.
pub const LINES: [&str; 3] = text::OCR_LINES;

pub fn ocr_package() -> &'static Package {
    static PKG: OnceLock<Package> = OnceLock::new();
    PKG.get_or_init(pkg::ocr_package)
}

fn image() -> &'static [u8] {
    static PNG: OnceLock<Vec<u8>> = OnceLock::new();
    PNG.get_or_init(|| text::render_png(&LINES, 32.0))
}

/// The recognised lines: text and box.
fn read(r: &RunResult) -> Vec<(String, [u32; 4])> {
    assert_eq!(r.claim.outcome, Outcome::Ok, "{:?}", r.stderr);
    output_text(r)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let b: Vec<u32> = v["box"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect();
            (
                v["text"].as_str().unwrap().to_string(),
                b.try_into().unwrap(),
            )
        })
        .collect()
}

fn texts(r: &RunResult) -> Vec<String> {
    read(r).into_iter().map(|(t, _)| t).collect()
}

#[test]
pub fn ocr_detect() {
    // Every line is found where the renderer inked it: the detected box
    // holds the inked box (unclip grows it), and not by much more.
    let (_, truth) = text::render(&LINES, 32.0);
    let r = sandbox(BackendKind::Tract)
        .run(ocr_package(), &RunRequest::new(image()))
        .unwrap();
    let found = read(&r);
    assert_eq!(found.len(), truth.len(), "{found:?}");
    for ((_, b), t) in found.iter().zip(&truth) {
        assert!(
            b[0] <= t.0 && b[1] <= t.1 && b[2] >= t.2 && b[3] >= t.3,
            "box {b:?} does not hold the inked {t:?}"
        );
        assert!(
            t.0 - b[0] < 24 && t.1 - b[1] < 24 && b[2] - t.2 < 24 && b[3] - t.3 < 24,
            "box {b:?} is far larger than the inked {t:?}"
        );
    }
    // One detection, then one recognition per line.
    assert_eq!(r.computes.len(), 1 + LINES.len());
}

#[test]
pub fn ocr_recognize() {
    // The text is read back exactly on the default (portable) backend.
    let r = sandbox(BackendKind::Portable)
        .run(ocr_package(), &RunRequest::new(image()))
        .unwrap();
    assert_eq!(texts(&r), LINES);
    assert_eq!(r.claim.backend.kind, "portable");
}

#[test]
fn ocr_agrees_on_every_backend_and_replays_across_them() {
    let runs = assert_replays_across_backends(ocr_package(), image(), |_, _, _| {});
    for (r, k) in runs.iter().zip(BACKENDS) {
        assert_eq!(texts(r), LINES, "{k:?}");
        // The static cost model: the same fuel whichever backend ran.
        assert_eq!(r.claim.fuel_consumed, runs[0].claim.fuel_consumed, "{k:?}");
    }
}

#[test]
fn ocr_without_enough_fuel_for_detection_is_a_receipted_fuel_limit() {
    // Detection alone costs billions: a budget of 10⁸ pays for decoding but
    // not for the first compute, which is refused before it runs.
    let r = sandbox(BackendKind::Portable)
        .run(
            ocr_package(),
            &RunRequest::new(image()).fuel(Some(100_000_000)),
        )
        .unwrap();
    assert_limit(&r, Limit::Fuel);
    assert!(r.computes.is_empty());
}

#[test]
fn ocr_rejects_what_is_not_an_image() {
    let r = sandbox(BackendKind::Tract)
        .run(ocr_package(), &RunRequest::new(b"not a picture"))
        .unwrap();
    assert!(
        matches!(r.claim.outcome, Outcome::Exit { code: 1, .. }),
        "{:?}",
        r.claim.outcome
    );
}

#[test]
fn the_wall_clock_backstop_stops_a_running_portable_inference() {
    // Neither fuel nor epochs in the guest can stop a host call; the
    // portable backend's own epoch deadline can. An 800×960 detection whose
    // plan is not built yet takes seconds in wasm; the run allows 200 ms.
    let pkg = |limits: &str| {
        Pkg::new()
            .limit(limits)
            .graph("det", "det.onnx", asset("ch_PP-OCRv4_det_infer.onnx"), "")
            .guest_stage("ocr-detect", "graphs = [\"det\"]")
            .build()
    };
    let sb = sandbox(BackendKind::Portable);
    // Warm, under the default wall time: the guest compiled, the graph
    // loaded and planned for the small image's shape (one sandbox shares
    // them across packages, by digest).
    let warm = sb
        .run(&pkg("fuel = 50_000_000_000"), &RunRequest::new(image()))
        .unwrap();
    assert_eq!(warm.claim.outcome, Outcome::Ok, "{:?}", warm.stderr);
    let pkg = pkg("fuel = 50_000_000_000\nwall_time_ms = 200");
    // 928 px high: padded to a 960-high input, with no resizing in the guest.
    let big = text::render_png(&["a line long enough to need a wide input"; 14], 32.0);
    let r = sb.run(&pkg, &RunRequest::new(&big)).unwrap();
    match &r.claim.outcome {
        Outcome::Aborted {
            reason: AbortReason::WallTime,
            ..
        } => {}
        o => panic!("expected the wall-clock backstop, got {o:?}"),
    }
    assert!(r.computes.is_empty());
    // The interrupted call is the stage's last wasi-nn call in the transcript.
    let last = crate::util::last_nn_call(&r).unwrap();
    assert_eq!(last.func, "wasi_ephemeral_nn.compute");
    assert!(
        last.detail
            .as_deref()
            .unwrap_or("")
            .contains("wall-clock deadline"),
        "{last:?}"
    );
    // The backend recovers: the next run computes.
    let ok = sb.run(ocr_package(), &RunRequest::new(image())).unwrap();
    assert_eq!(texts(&ok), LINES);
}
