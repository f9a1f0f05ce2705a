//! What inference costs in the sandbox, per backend, measured in one run:
//!
//! 1. silero VAD over 10 s of audio (313 inferences): the `vad-probs` stage
//!    in the sandbox against the same loop written in Rust calling the same
//!    engine directly (the sandbox's own backend object), per backend.
//! 2. OCR with PP-OCRv4 on a rendered three-line image (one detection,
//!    three recognitions): the two-stage pipeline in the sandbox against
//!    the same pipeline code (`tally-ocr`, compiled natively) calling the
//!    same engine directly, per backend.
//! 3. Backends against each other (the native loops).
//! 4. Fuel charged per inference against wall time: PP-OCRv4 detection at
//!    three input sizes on native tract. The cost model should track work.
//!
//! Run: `cargo bench -p tally-sandbox --bench inference --profile dev`
//! after `scripts/fetch-assets.sh`. Prints medians and ratios.

use std::time::{Duration, Instant};

use tally_manifest::ExecutionTarget;
use tally_nn::{ElemType, LoadedGraph, Tensor};
use tally_ocr::{detect, recognize, Charset, DetParams};
use tally_package::Package;
use tally_sandbox::{BackendKind, OrtConfig, RunRequest, Sandbox, SandboxConfig};
use tally_test_artifacts::pkg::{asset, assets_dir, Pkg};

const RATE: usize = 16_000;

fn median(mut f: impl FnMut(), iters: usize) -> Duration {
    f(); // warm-up
    let mut t: Vec<Duration> = (0..iters)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed()
        })
        .collect();
    t.sort();
    t[iters / 2]
}

/// 10 s of a deterministic signal (tone bursts and noise).
fn audio() -> Vec<f32> {
    let mut x = 0x2545f491u32;
    (0..RATE * 10)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let noise = (x as f32 / u32::MAX as f32 - 0.5) * 0.05;
            let burst = if (i / RATE).is_multiple_of(2) {
                (i as f32 * 0.07).sin() * 0.3
            } else {
                0.0
            };
            noise + burst
        })
        .collect()
}

fn wav(samples: &[f32]) -> Vec<u8> {
    let data: Vec<u8> = samples
        .iter()
        .flat_map(|s| ((s * 32767.0) as i16).to_le_bytes())
        .collect();
    let mut w = b"RIFF".to_vec();
    w.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes());
    for v in [1u16, 1] {
        w.extend_from_slice(&v.to_le_bytes());
    }
    for v in [RATE as u32, RATE as u32 * 2] {
        w.extend_from_slice(&v.to_le_bytes());
    }
    for v in [2u16, 16] {
        w.extend_from_slice(&v.to_le_bytes());
    }
    w.extend_from_slice(b"data");
    w.extend_from_slice(&(data.len() as u32).to_le_bytes());
    w.extend_from_slice(&data);
    w
}

fn f32s(ty_dims: &[u32], v: &[f32]) -> Tensor {
    Tensor::new(
        ElemType::F32,
        ty_dims.to_vec(),
        v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        1 << 30,
    )
    .unwrap()
}

/// The `vad-probs` loop, natively, on `backend`'s engine.
fn native_vad(sb: &Sandbox, graph: &[u8], samples: &[f32]) {
    let g = sb.backend().load(graph, ExecutionTarget::Cpu).unwrap();
    let mut state = f32s(&[2, 1, 128], &[0.0; 256]);
    let mut input = vec![0f32; 576];
    for chunk in samples.chunks(512) {
        input.copy_within(512.., 0);
        input[64..].fill(0.0);
        input[64..64 + chunk.len()].copy_from_slice(chunk);
        let out = g
            .run(&[f32s(&[1, 576], &input), state.clone()], 1 << 20)
            .unwrap();
        state = out[1].clone();
        std::hint::black_box(&out[0]);
    }
}

/// Runs `g` on one f32 input, returning its first output's values.
fn infer(
    g: &dyn LoadedGraph,
    data: &[f32],
    shape: [usize; 4],
) -> Result<Vec<f32>, tally_nn::NnError> {
    let dims: Vec<u32> = shape.iter().map(|&d| d as u32).collect();
    let out = g.run(&[f32s(&dims, data)], 1 << 30)?;
    Ok(out[0]
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// The OCR pipeline, natively: the stages' library on `backend`'s engine.
fn native_ocr(
    det: &dyn LoadedGraph,
    rec: &dyn LoadedGraph,
    png: &[u8],
    charset: &Charset,
) -> usize {
    let img = tally_image_preprocess::decode_rgb(png, 4096).unwrap();
    let lines = detect(&img, &DetParams::default(), &mut |d, s| infer(det, d, s)).unwrap();
    let mut rec = |d: &[f32], s| infer(rec, d, s);
    lines
        .into_iter()
        .map(|l| {
            let line = recognize(&l.data, l.shape, l.bbox, charset, &mut rec)
                .unwrap_or_else(|_| panic!("recognition"));
            std::hint::black_box(line.to_json()).len()
        })
        .sum()
}

/// OCR in the sandbox against the same pipeline natively, per backend.
fn ocr(iters: usize, ort: &OrtConfig) {
    let png = tally_test_artifacts::text::render_png(&tally_test_artifacts::text::OCR_LINES, 32.0);
    let (det, rec) = (
        asset("ch_PP-OCRv4_det_infer.onnx"),
        asset("ch_PP-OCRv4_rec_infer.onnx"),
    );
    let charset = Charset::parse(&tally_test_artifacts::pkg::ocr_charset()).unwrap();
    let pkg = tally_test_artifacts::pkg::ocr_package();
    println!(
        "\nPP-OCRv4 OCR, three rendered lines (1 detection + 3 recognitions); median of {iters}"
    );
    per_backend(ort, iters, &pkg, &png, |sb| {
        let d = sb.backend().load(&det, ExecutionTarget::Cpu).unwrap();
        let r = sb.backend().load(&rec, ExecutionTarget::Cpu).unwrap();
        median(
            || {
                std::hint::black_box(native_ocr(&*d, &*r, &png, &charset));
            },
            iters,
        )
    });
}

/// Per backend: `native(sandbox)` (the same work calling that sandbox's
/// engine directly) against `pkg` run on `input` in the sandbox; prints a
/// row each, then the backends' native times against native tract's.
fn per_backend(
    ort: &OrtConfig,
    iters: usize,
    pkg: &Package,
    input: &[u8],
    mut native: impl FnMut(&Sandbox) -> Duration,
) {
    println!(
        "{:<12} {:>12} {:>12} {:>8} {:>14}",
        "backend", "native", "sandbox", "ratio", "fuel"
    );
    let mut natives = Vec::new();
    for kind in [
        BackendKind::Portable,
        BackendKind::Tract,
        BackendKind::OnnxRuntime,
    ] {
        let sb = Sandbox::new(
            SandboxConfig::default()
                .pooling(true)
                .backend(kind)
                .ort(ort.clone()),
        )
        .unwrap();
        let native = native(&sb);
        let mut fuel = 0;
        let sandboxed = median(
            || {
                let r = sb.run(pkg, &RunRequest::new(input)).unwrap();
                assert!(r.claim.outcome.is_ok(), "{:?}", r.stderr);
                fuel = r.claim.fuel_consumed;
            },
            iters,
        );
        println!(
            "{:<12} {:>9.1} ms {:>9.1} ms {:>7.3}x {:>14}",
            kind.name(),
            native.as_secs_f64() * 1e3,
            sandboxed.as_secs_f64() * 1e3,
            sandboxed.as_secs_f64() / native.as_secs_f64(),
            fuel
        );
        natives.push((kind, native));
    }
    compare_backends(&natives);
}

/// Prints each backend's native time against native tract's.
fn compare_backends(natives: &[(BackendKind, Duration)]) {
    let tract = natives[1].1.as_secs_f64();
    for (kind, t) in natives {
        println!(
            "{:<12} native {:.2}x native tract",
            kind.name(),
            t.as_secs_f64() / tract
        );
    }
}

fn main() {
    let iters: usize = std::env::var("TALLY_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let graph = asset("silero_vad_openvino_16k.onnx");
    let samples = audio();
    let input = wav(&samples);
    let pkg = Pkg::new()
        .limit("fuel = 100000000000")
        .graph("vad", "vad.onnx", graph.clone(), "")
        .guest_stage("vad-probs", "graphs = [\"vad\"]")
        .build();
    let mut ort = OrtConfig::default();
    ort.library = assets_dir().join("libonnxruntime.so.1.31.1");

    println!(
        "silero VAD, 10 s of audio, {} inferences; median of {iters}",
        samples.len().div_ceil(512)
    );
    per_backend(&ort, iters, &pkg, &input, |sb| {
        median(|| native_vad(sb, &graph, &samples), iters)
    });
    ocr(iters, &ort);

    println!("\nPP-OCRv4 det on native tract: fuel charged vs wall time");
    let det = asset("ch_PP-OCRv4_det_infer.onnx");
    let sb = Sandbox::new(SandboxConfig::default().backend(BackendKind::Tract)).unwrap();
    let g = sb.backend().load(&det, ExecutionTarget::Cpu).unwrap();
    let costs = tally_nn::CostModel::new();
    let digest = tally_digest::Digest::of(&det);
    println!(
        "{:<10} {:>14} {:>10} {:>14}",
        "input", "fuel", "ms", "fuel per µs"
    );
    for side in [320u32, 480, 640] {
        let dims = [1, 3, side, side];
        let x = f32s(&dims, &vec![0.5; (3 * side * side) as usize]);
        let cost = costs
            .cost(&digest, &det, &vec![(ElemType::F32, dims.to_vec())])
            .unwrap();
        let t = median(
            || drop(g.run(std::slice::from_ref(&x), 1 << 30).unwrap()),
            iters.min(5),
        );
        println!(
            "{:<10} {:>14} {:>10.1} {:>14.0}",
            format!("{side}x{side}"),
            cost,
            t.as_secs_f64() * 1e3,
            cost as f64 / (t.as_secs_f64() * 1e6)
        );
    }
}
