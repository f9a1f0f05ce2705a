//! Inference through wasi-nn with real models: silero VAD on speech
//! synthesised by espeak-ng, on every backend, replayed across backends;
//! and a guest abusing the wasi-nn ABI.

use std::process::Command;
use std::sync::OnceLock;

use tally_nn::{decode_tensors, encode_tensors, ElemType, Tensor};
use tally_package::Package;
use tally_receipt::{
    AbortReason, HostCall, Limit, Outcome, RecordedComputes, Transcript, NN_COMPUTE,
};
use tally_sandbox::profile::{NN_MAX_CONTEXTS, NN_MAX_GRAPHS};
use tally_sandbox::{
    BackendKind, CacheKind, OrtConfig, RunRequest, RunResult, Sandbox, SandboxConfig,
};
use tally_test_artifacts::pkg::{asset, assets_dir, Pkg};

use crate::util::{assert_limit, last_nn_call, text};

const RATE: usize = 16_000;

/// Speech rendered by espeak-ng, resampled to 16 kHz.
fn speak(words: &str) -> Vec<f32> {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("s.wav");
    let status = Command::new("espeak-ng")
        .args(["-v", "en", "-s", "150", "-w"])
        .arg(&wav)
        .arg(words)
        .status()
        .expect("espeak-ng runs (apt install espeak-ng; .ci/run installs it)");
    assert!(status.success());
    let bytes = std::fs::read(&wav).unwrap();
    // espeak-ng writes 16-bit mono PCM; find the `data` chunk.
    let rate = u32::from_le_bytes(bytes[24..28].try_into().unwrap()) as usize;
    let at = bytes.windows(4).position(|w| w == b"data").unwrap() + 8;
    let src: Vec<f32> = bytes[at..]
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]) as f32 / 32768.0)
        .collect();
    let n = src.len() * RATE / rate;
    (0..n)
        .map(|i| {
            let x = i as f64 * rate as f64 / RATE as f64;
            let (j, f) = (x as usize, (x - x.floor()) as f32);
            let a = src[j.min(src.len() - 1)];
            let b = src[(j + 1).min(src.len() - 1)];
            a + (b - a) * f
        })
        .collect()
}

/// 16 kHz mono 16-bit WAV bytes.
fn wav(samples: &[f32]) -> Vec<u8> {
    let data: Vec<u8> = samples
        .iter()
        .flat_map(|s| ((s.clamp(-1.0, 1.0) * 32767.0) as i16).to_le_bytes())
        .collect();
    let mut w = Vec::new();
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes()); // PCM
    w.extend_from_slice(&1u16.to_le_bytes()); // mono
    w.extend_from_slice(&(RATE as u32).to_le_bytes());
    w.extend_from_slice(&(RATE as u32 * 2).to_le_bytes());
    w.extend_from_slice(&2u16.to_le_bytes());
    w.extend_from_slice(&16u16.to_le_bytes());
    w.extend_from_slice(b"data");
    w.extend_from_slice(&(data.len() as u32).to_le_bytes());
    w.extend_from_slice(&data);
    w
}

/// A WAV file and where speech truly is in it, `(start, end)` in ms.
type Sample = (Vec<u8>, Vec<(u64, u64)>);

/// Two utterances around known silences, and where speech truly is (ms).
fn speech_sample() -> &'static Sample {
    static SAMPLE: OnceLock<Sample> = OnceLock::new();
    SAMPLE.get_or_init(|| {
        let mut audio = vec![0.0f32; RATE * 7 / 10];
        let mut truth = Vec::new();
        for words in [
            "Verifiable inference for everyone.",
            "Receipts can be replayed anywhere.",
        ] {
            let s = speak(words);
            // Truth: first and last sample louder than -60 dBFS (espeak-ng
            // writes exact silence around an utterance).
            let loud = |x: &f32| x.abs() > 0.001;
            let first = s.iter().position(loud).unwrap();
            let last = s.iter().rposition(loud).unwrap();
            let ms = |i: usize| (i * 1000 / RATE) as u64;
            truth.push((ms(audio.len() + first), ms(audio.len() + last)));
            audio.extend_from_slice(&s);
            audio.extend(std::iter::repeat_n(0.0, RATE * 12 / 10));
        }
        (wav(&audio), truth)
    })
}

/// `manifests/vad`, packed as a publisher would.
fn vad_package() -> Package {
    tally_test_artifacts::pkg::vad_package()
}

pub fn sandbox(kind: BackendKind) -> Sandbox {
    let mut ort = OrtConfig::default();
    ort.library = assets_dir().join("libonnxruntime.so.1.31.1");
    Sandbox::new(SandboxConfig::default().backend(kind).ort(ort)).unwrap_or_else(|e| panic!("{e}"))
}

fn segments(r: &RunResult) -> Vec<(u64, u64)> {
    assert_eq!(r.claim.outcome, Outcome::Ok, "{:?}", r.stderr);
    text(r)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["start_ms"].as_u64().unwrap(),
                v["end_ms"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn assert_segments_match_truth(found: &[(u64, u64)], truth: &[(u64, u64)]) {
    assert_eq!(found.len(), truth.len(), "found {found:?}, truth {truth:?}");
    for (f, t) in found.iter().zip(truth) {
        assert!(
            f.0.abs_diff(t.0) <= 100 && f.1.abs_diff(t.1) <= 100,
            "segment {f:?} is not within 100 ms of {t:?}"
        );
    }
}

#[test]
pub fn vad_probs() {
    // The whole pipeline on the default (portable) backend.
    let (input, truth) = speech_sample();
    let r = sandbox(BackendKind::Portable)
        .run(&vad_package(), &RunRequest::new(input))
        .unwrap();
    assert_segments_match_truth(&segments(&r), truth);
    assert_eq!(r.claim.backend.kind, "portable");
    // Every window is an inference, each in the transcript and recorded.
    let computes = r.transcript.compute_outputs();
    assert!(computes.len() > 100);
    assert_eq!(computes.len(), r.computes.len());
    // Inference is charged: the probabilities stage costs more than its
    // compute calls' static cost alone would leave for instructions.
    assert!(r.claim.stages[0].fuel_consumed > r.claim.stages[1].fuel_consumed);
}

#[test]
pub fn vad_segments() {
    // The same audio on every backend: the same segments, the same fuel
    // (the cost model does not depend on the backend).
    let (input, truth) = speech_sample();
    let pkg = vad_package();
    let runs: Vec<RunResult> = BACKENDS
        .into_iter()
        .map(|k| sandbox(k).run(&pkg, &RunRequest::new(input)).unwrap())
        .collect();
    let first = segments(&runs[0]);
    assert_segments_match_truth(&first, truth);
    for r in &runs[1..] {
        assert_eq!(segments(r), first, "{}", r.claim.backend.kind);
        // Per stage: `vad-probs` writes its probabilities in one host
        // call whatever their bytes (a line-buffered stdout once split
        // them at newline bytes, so its fuel followed the backend's bits).
        let fuel = |r: &RunResult| {
            r.claim
                .stages
                .iter()
                .map(|s| s.fuel_consumed)
                .collect::<Vec<_>>()
        };
        assert_eq!(fuel(r), fuel(&runs[0]), "{}", r.claim.backend.kind);
        assert_eq!(r.claim.output, runs[0].claim.output);
    }
}

/// The recorded compute calls of `run`, as a verifier binds them.
pub fn recorded_of(run: &RunResult) -> RecordedComputes {
    let outputs = run.computes.iter().map(|c| c.encoded.clone()).collect();
    RecordedComputes::new(&run.transcript, outputs).unwrap()
}

/// The backends, in the order the helpers use.
pub const BACKENDS: [BackendKind; 3] = [
    BackendKind::Portable,
    BackendKind::Tract,
    BackendKind::OnnxRuntime,
];

/// Runs `pkg` on `input` on every backend and replays each run on every
/// backend with its recorded outputs: every replay must match its claim
/// and transcript, with every compared output within tolerance, and
/// compare outputs exactly when the backends differ. `more` checks each
/// (host, verifier, replay) further. Returns the original runs.
pub fn assert_replays_across_backends(
    pkg: &Package,
    input: &[u8],
    mut more: impl FnMut(usize, usize, &RunResult),
) -> Vec<RunResult> {
    let boxes: Vec<Sandbox> = BACKENDS.iter().map(|&k| sandbox(k)).collect();
    let runs: Vec<RunResult> = boxes
        .iter()
        .map(|b| b.run(pkg, &RunRequest::new(input)).unwrap())
        .collect();
    for (i, original) in runs.iter().enumerate() {
        let recorded = recorded_of(original);
        for (j, verifier) in boxes.iter().enumerate() {
            let replay = verifier
                .replay(pkg, &original.claim, input, Some(&recorded))
                .unwrap();
            let mismatches = tally_receipt::compare(&original.claim, &replay.claim);
            let pair = format!("{:?} on {:?}", BACKENDS[i], BACKENDS[j]);
            assert!(mismatches.is_empty(), "{pair}: {mismatches:?}");
            assert_eq!(
                replay.transcript.root(),
                original.transcript.root(),
                "{pair}"
            );
            // Same backend: bit-exact, nothing to compare.
            assert_eq!(replay.inference.is_empty(), i == j, "{pair}");
            for c in &replay.inference {
                assert!(c.within, "{pair}: {}", c.render());
            }
            more(i, j, &replay);
        }
    }
    runs
}

#[test]
fn receipts_replay_across_backends_within_tolerance() {
    let (input, _) = speech_sample();
    assert_replays_across_backends(&vad_package(), input, |i, j, replay| {
        if i != j {
            assert_eq!(replay.inference.len(), 2, "two outputs compared");
            assert!(replay.inference.iter().all(|c| c.calls > 100));
        }
    });
}

/// One way a host re-sealing a receipt could forge the outputs it recorded
/// for compute call `k`: edits the decoded tensors, or the list of calls.
enum Forgery {
    /// Edits element `i` of output `o`: from the honest value to another.
    Element(usize, usize, fn(f32) -> f32),
    /// Edits the tensors of the compute.
    Tensors(fn(&mut Vec<Tensor>)),
    /// Removes the compute call from transcript and recording.
    Drop,
    /// Records the previous compute call again in its place.
    Duplicate,
}

fn f32s(t: &Tensor) -> Vec<f32> {
    t.data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn with_f32s(t: &Tensor, v: &[f32]) -> Tensor {
    let data = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    Tensor::new(t.ty(), t.dims().to_vec(), data, 1 << 20).unwrap()
}

/// Applies `forgery` to compute call `k` of `run`: the recorded outputs and
/// the transcript that binds them, re-chained as a forging host would
/// (its re-sealed claim then carries the new root).
fn forge(run: &RunResult, k: usize, forgery: &Forgery) -> RecordedComputes {
    let mut outputs: Vec<Vec<u8>> = run.computes.iter().map(|c| c.encoded.clone()).collect();
    let mut calls: Vec<HostCall> = run.transcript.calls().to_vec();
    let at = calls
        .iter()
        .enumerate()
        .filter(|(_, c)| c.func == NN_COMPUTE)
        .nth(k)
        .unwrap()
        .0;
    match forgery {
        Forgery::Element(o, i, f) => {
            let mut t = decode_tensors(&outputs[k], 1 << 20).unwrap();
            let mut v = f32s(&t[*o]);
            v[*i] = f(v[*i]);
            t[*o] = with_f32s(&t[*o], &v);
            outputs[k] = encode_tensors(&t);
        }
        Forgery::Tensors(f) => {
            let mut t = decode_tensors(&outputs[k], 1 << 20).unwrap();
            f(&mut t);
            outputs[k] = encode_tensors(&t);
        }
        Forgery::Drop => {
            outputs.remove(k);
            calls.remove(at);
        }
        Forgery::Duplicate => {
            // Call k - 1 recorded again, as call k.
            let prev = calls[..at]
                .iter()
                .rposition(|c| c.func == NN_COMPUTE)
                .unwrap();
            outputs.insert(k, outputs[k - 1].clone());
            calls.insert(at, calls[prev].clone());
        }
    }
    if matches!(forgery, Forgery::Element(..) | Forgery::Tensors(_)) {
        calls[at].data = Some(tally_receipt::Digest::of(&outputs[k]));
    }
    let mut transcript = Transcript::new();
    for c in calls {
        transcript.push(c);
    }
    RecordedComputes::new(&transcript, outputs).unwrap()
}

#[test]
fn forged_recorded_outputs_are_refused_with_the_compute_named() {
    // A host re-seals an honest ONNX Runtime receipt with forged recorded
    // outputs; a verifier on native tract replays it. Every forgery must
    // leave an out-of-tolerance check whose first failure is call `k`, the
    // speech onset (where consecutive states differ).
    let (input, _) = speech_sample();
    let pkg = vad_package();
    let original = sandbox(BackendKind::OnnxRuntime)
        .run(&pkg, &RunRequest::new(input))
        .unwrap();
    let prob =
        |k: usize| f32s(&decode_tensors(&original.computes[k].encoded, 1 << 20).unwrap()[0])[0];
    let k = (0..original.computes.len())
        .find(|&k| prob(k) > 0.5)
        .unwrap();
    let verifier = sandbox(BackendKind::Tract);
    let honest = verifier
        .replay(&pkg, &original.claim, input, Some(&recorded_of(&original)))
        .unwrap();
    assert!(honest.inference.iter().all(|c| c.within));
    let state = f32s(&decode_tensors(&original.computes[k].encoded, 1 << 20).unwrap()[1]);
    // An element of the recurrent state well above the absolute bound.
    let big = state.iter().position(|v| v.abs() > 0.01).unwrap();
    let forgeries: Vec<(&str, Forgery)> = vec![
        ("probability NaN", Forgery::Element(0, 0, |_| f32::NAN)),
        (
            "probability +inf",
            Forgery::Element(0, 0, |_| f32::INFINITY),
        ),
        (
            "probability -inf",
            Forgery::Element(0, 0, |_| f32::NEG_INFINITY),
        ),
        ("probability flipped", Forgery::Element(0, 0, |v| 1.0 - v)),
        ("state -0.0", Forgery::Element(1, big, |_| -0.0)),
        (
            "state subnormal",
            Forgery::Element(1, big, |_| f32::MIN_POSITIVE / 8.0),
        ),
        ("state NaN", Forgery::Element(1, big, |_| f32::NAN)),
        ("state negated", Forgery::Element(1, big, |v| -v)),
        (
            "state just beyond tolerance",
            Forgery::Element(1, big, |v| v + 3.0 * (1e-4 + 1e-3 * v.abs())),
        ),
        (
            "shape edited",
            Forgery::Tensors(|t| {
                let d: Vec<u32> = t[1].dims().iter().rev().copied().collect();
                t[1] = Tensor::new(t[1].ty(), d, t[1].data().to_vec(), 1 << 20).unwrap();
            }),
        ),
        (
            "dtype edited",
            Forgery::Tensors(|t| {
                t[0] = Tensor::new(
                    ElemType::I32,
                    t[0].dims().to_vec(),
                    t[0].data().to_vec(),
                    1 << 20,
                )
                .unwrap();
            }),
        ),
        (
            "output missing",
            Forgery::Tensors(|t| {
                t.pop();
            }),
        ),
        ("output added", Forgery::Tensors(|t| t.push(t[0].clone()))),
        ("compute dropped", Forgery::Drop),
        ("compute duplicated", Forgery::Duplicate),
    ];
    for (what, forgery) in &forgeries {
        let recorded = forge(&original, k, forgery);
        let replay = verifier
            .replay(&pkg, &original.claim, input, Some(&recorded))
            .unwrap();
        let failed: Vec<_> = replay.inference.iter().filter(|c| !c.within).collect();
        assert!(!failed.is_empty(), "{what}: accepted");
        let first = failed
            .iter()
            .map(|c| c.first_failure.as_ref().unwrap().0)
            .min()
            .unwrap();
        assert_eq!(first, k as u64, "{what}: {}", failed[0].render());
    }
    // Within tolerance is, by definition, a sound substitute: accepted.
    for (what, forgery) in [
        (
            "state just within tolerance",
            Forgery::Element(1, big, |v| v + 0.5 * (1e-4 + 1e-3 * v.abs())),
        ),
        (
            "probability within abs",
            Forgery::Element(0, 0, |v| v + 5e-5),
        ),
    ] {
        let replay = verifier
            .replay(
                &pkg,
                &original.claim,
                input,
                Some(&forge(&original, k, &forgery)),
            )
            .unwrap();
        for c in &replay.inference {
            assert!(c.within, "{what}: {}", c.render());
        }
    }
}

#[test]
fn inference_fuel_is_charged_before_the_call_and_exhaustion_is_receipted() {
    let (input, _) = speech_sample();
    let pkg = vad_package();
    let sb = sandbox(BackendKind::Portable);
    let full = sb.run(&pkg, &RunRequest::new(input)).unwrap();
    let computes = full.computes.len() as u64;
    // Enough for the guest's instructions but not for all its inferences.
    let r = sb
        .run(
            &pkg,
            &RunRequest::new(input).fuel(Some(full.claim.fuel_consumed / 2)),
        )
        .unwrap();
    assert_limit(&r, Limit::Fuel);
    assert!((r.computes.len() as u64) < computes);
    let refused = r.transcript.calls().last().unwrap();
    assert!(
        r.transcript
            .calls()
            .iter()
            .any(|c| c.func == "wasi_ephemeral_nn.compute"
                && c.detail.as_deref().is_some_and(|d| d.contains("left"))),
        "the unaffordable compute is in the transcript; last call {refused:?}"
    );
}

#[test]
pub fn nn_abuse() {
    let pkg = Pkg::new()
        .graph("vad", "vad.onnx", asset("silero_vad_openvino_16k.onnx"), "")
        .graph(
            "other",
            "other.onnx",
            asset("silero_vad_openvino_16k.onnx"),
            "",
        )
        .guest_stage("nn-abuse", "graphs = [\"vad\"]")
        .build();
    let r = sandbox(BackendKind::Tract)
        .run(&pkg, &RunRequest::new(b""))
        .unwrap();
    assert_eq!(r.claim.outcome, Outcome::Ok, "{:?}", r.stderr);
    let got: std::collections::BTreeMap<String, i32> = text(&r)
        .lines()
        .map(|l| {
            let (k, v) = l.split_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect();
    let want = [
        ("raw_load", 2),
        ("name_out_of_bounds", 1),
        ("ungranted", 8),
        ("handle_out_of_bounds", 1),
        ("load_vad", 0),
        ("bad_graph_handle", 1),
        ("context", 0),
        ("descriptor_out_of_bounds", 1),
        ("lying_length", 1),
        ("overflowing_dims", 7),
        ("unknown_type", 1),
        ("data_out_of_bounds", 1),
        ("bad_context", 1),
        ("output_before_compute", 1),
        ("missing_inputs", 1),
        ("input", 0),
        ("wrong_shape_state", 0),
        ("compute_rejects_shapes", 5),
        ("state", 0),
        ("compute", 0),
        ("output_too_small", 7),
        ("output_out_of_bounds", 1),
        ("output", 0),
        ("graph_cap", 4),
        ("context_cap", 4),
    ];
    for (case, errno) in want {
        assert_eq!(got.get(case), Some(&errno), "{case}: {got:?}");
    }
    // The caps in the profile, exactly.
    let caps = (got["graphs_loaded"], got["contexts_created"]);
    assert_eq!(caps, (NN_MAX_GRAPHS as i32, NN_MAX_CONTEXTS as i32));
    // Every call is in the transcript, failures with their reason.
    let nn_calls = r
        .transcript
        .calls()
        .iter()
        .filter(|c| c.func.starts_with("wasi_ephemeral_nn."))
        .count();
    let cap_probes = (caps.0 - 1) + (caps.1 - 1); // successful loads/contexts in the loops
    assert_eq!(nn_calls, want.len() + cap_probes as usize);
}

#[test]
fn graphs_break_the_onnx_policy_at_load() {
    // Not ONNX at all: the stage gets an error, the host lives.
    let pkg = Pkg::new()
        .graph("vad", "vad.onnx", b"not a model".to_vec(), "")
        .guest_stage("vad-probs", "graphs = [\"vad\"]")
        .build();
    let (input, _) = speech_sample();
    let r = sandbox(BackendKind::Portable)
        .run(&pkg, &RunRequest::new(input))
        .unwrap();
    assert!(
        matches!(r.claim.outcome, Outcome::Exit { code: 4, .. }),
        "{:?}",
        r.claim.outcome
    );
}

/// A package whose one stage runs `nn-run ARGS` on graph `g` = `graph`.
fn nn_run_package(graph: Vec<u8>, limits: &str, args: &[&str]) -> Package {
    let args: Vec<String> = args.iter().map(|a| format!("\"{a}\"")).collect();
    Pkg::new()
        .limit(limits)
        .graph("g", "g.onnx", graph, "")
        .guest_stage(
            "nn-run",
            &format!("graphs = [\"g\"]\nargs = [{}]", args.join(", ")),
        )
        .build()
}

fn f32_zeros(n: usize) -> Vec<u8> {
    vec![0u8; n * 4]
}

#[test]
pub fn nn_run() {
    // A Scan's body is paid for: 300 steps of a 256-unit LSTM (tract's
    // Scan) are charged at least 300 × 4 × 256 × 512 fuel (before, the
    // recurrent half was free), identically on every backend.
    let pkg = nn_run_package(
        tally_test_artifacts::onnx::lstm(256, 256),
        "fuel = 1_000_000_000",
        &["g", "300", "1", "256"],
    );
    let input = f32_zeros(300 * 256);
    let mut fuel = Vec::new();
    for kind in BACKENDS {
        let r = sandbox(kind).run(&pkg, &RunRequest::new(&input)).unwrap();
        assert_eq!(r.claim.outcome, Outcome::Ok, "{kind:?}: {:?}", r.stderr);
        assert_eq!(r.output.len(), 300 * 256 * 4);
        let compute = r
            .transcript
            .calls()
            .iter()
            .find(|c| c.func == NN_COMPUTE)
            .unwrap();
        let cost: u64 = compute
            .detail
            .as_deref()
            .unwrap()
            .rsplit("cost=")
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            cost >= 300 * 4 * 256 * 512,
            "{kind:?}: the scan cost only {cost}"
        );
        fuel.push(r.claim.fuel_consumed);
    }
    assert!(fuel.windows(2).all(|w| w[0] == w[1]), "{fuel:?}");
    // And a guest that cannot pay for the body is refused before it runs.
    let poor = nn_run_package(
        tally_test_artifacts::onnx::lstm(256, 256),
        "fuel = 100_000_000",
        &["g", "300", "1", "256"],
    );
    let r = sandbox(BackendKind::Tract)
        .run(&poor, &RunRequest::new(&input))
        .unwrap();
    assert_limit(&r, Limit::Fuel);
}

#[test]
fn onnx_runtime_stops_at_the_wall_clock_deadline() {
    // 6,000 steps of a 1024-unit LSTM on one input feature (2.5·10^10
    // multiply-adds over 16 MB of weights, from 24 KB of input) take far
    // longer than the run's
    // 3 s on ONNX Runtime. The compute itself is stopped
    // (RunOptions::terminate), not left to finish and trip the guest's
    // epoch afterwards.
    let pkg = nn_run_package(
        tally_test_artifacts::onnx::lstm(1, 1024),
        "fuel = 99_000_000_000\nwall_time_ms = 3000",
        &["g", "6000", "1", "1"],
    );
    let input = f32_zeros(6_000);
    let r = sandbox(BackendKind::OnnxRuntime)
        .run(&pkg, &RunRequest::new(&input))
        .unwrap();
    assert!(
        matches!(
            &r.claim.outcome,
            Outcome::Aborted {
                reason: AbortReason::WallTime,
                ..
            }
        ),
        "{:?} {:?}",
        r.claim.outcome,
        r.transcript.calls().last()
    );
    let compute = r
        .transcript
        .calls()
        .iter()
        .find(|c| c.func == NN_COMPUTE)
        .expect("the interrupted compute is in the transcript");
    assert!(
        compute
            .detail
            .as_deref()
            .unwrap_or_default()
            .contains("interrupted at the wall-clock deadline"),
        "{compute:?}"
    );
}

#[test]
fn tensor_bytes_a_stage_holds_are_capped_and_paid_per_byte() {
    // One 64 MiB guest buffer set into 16 contexts would be 1 GiB of host
    // copies; the stage may hold 512 MiB, so the 9th set_input is
    // `too_large` (exit 10 + 7), and each copy was paid for in fuel first.
    let rows = (64 << 20) / (4 * 64);
    let pkg = nn_run_package(
        tally_test_artifacts::onnx::lstm(64, 64),
        "fuel = 20_000_000_000\nmemory_bytes = 536_870_912",
        &["--contexts", "16", "g", &rows.to_string(), "1", "64"],
    );
    let input = f32_zeros(rows * 64);
    let r = sandbox(BackendKind::Tract)
        .run(&pkg, &RunRequest::new(&input))
        .unwrap();
    assert_eq!(
        r.claim.outcome,
        Outcome::Exit {
            stage: "nn_run0".into(),
            code: 17
        }
    );
    let sets: Vec<_> = r
        .transcript
        .calls()
        .iter()
        .filter(|c| c.func == "wasi_ephemeral_nn.set_input")
        .collect();
    assert_eq!(sets.len(), 9);
    assert!(sets[..8].iter().all(|c| c.results == [0]));
    assert_eq!(sets[8].results, [7]);
    // 8 × 64 MiB copied at one fuel per byte, at least.
    assert!(r.claim.fuel_consumed > 8 * (64 << 20));
    // Without fuel for the copies, the first one is refused before it runs.
    let poor = nn_run_package(
        tally_test_artifacts::onnx::lstm(64, 64),
        "fuel = 30_000_000\nmemory_bytes = 536_870_912",
        &["g", &rows.to_string(), "1", "64"],
    );
    let r = sandbox(BackendKind::Tract)
        .run(&poor, &RunRequest::new(&input))
        .unwrap();
    assert_limit(&r, Limit::Fuel);
}

#[test]
fn a_graph_tract_never_finishes_analysing_stops_at_the_deadline() {
    // tract's optimiser loops forever on this stateless Scan. Analysed
    // natively, the host thread never came back; analysed in the portable
    // engine, the run ends `aborted: wall_time` at its deadline.
    let pkg = nn_run_package(
        tally_test_artifacts::onnx::endless_scan(8),
        "wall_time_ms = 2000",
        &["g", "4", "8"],
    );
    let r = sandbox(BackendKind::Tract)
        .run(&pkg, &RunRequest::new(&f32_zeros(4 * 8)))
        .unwrap();
    assert!(
        matches!(
            &r.claim.outcome,
            Outcome::Aborted {
                reason: AbortReason::WallTime,
                ..
            }
        ),
        "{:?}",
        r.claim.outcome
    );
}

#[test]
fn a_failed_compute_forged_into_an_empty_success_is_refused() {
    // An honest run whose compute fails: eight 64 MiB inputs fill the
    // stage's 512 MiB, so the 64 MiB output is `too_large` (nn-run exits
    // 10 + 7). A forger rewrites that call as a success with no outputs
    // (an empty tensor list); the verifier's own compute fails, so the
    // call must fail the check even with nothing to compare.
    let n = (64 << 20) / 4;
    let pkg = nn_run_package(
        tally_test_artifacts::onnx::identity(),
        "fuel = 20_000_000_000\nmemory_bytes = 536_870_912",
        &["--contexts", "8", "g", &n.to_string()],
    );
    let input = f32_zeros(n);
    let original = sandbox(BackendKind::OnnxRuntime)
        .run(&pkg, &RunRequest::new(&input))
        .unwrap();
    assert_eq!(
        original.claim.outcome,
        Outcome::Exit {
            stage: "nn_run0".into(),
            code: 17
        }
    );
    let verifier = sandbox(BackendKind::Tract);
    // Honest: the failure replays as a failure, and verifies.
    let honest = verifier
        .replay(&pkg, &original.claim, &input, Some(&recorded_of(&original)))
        .unwrap();
    assert!(
        honest.inference.iter().all(|c| c.within),
        "{:?}",
        honest.inference
    );
    assert_eq!(honest.transcript.root(), original.transcript.root());
    // Forged: the failed call recorded as a success with no outputs.
    let empty = encode_tensors(&[]);
    let mut transcript = Transcript::new();
    for mut c in original.transcript.calls().iter().cloned() {
        if c.func == NN_COMPUTE {
            c.results = vec![0];
            c.data = Some(tally_receipt::Digest::of(&empty));
        }
        transcript.push(c);
    }
    let forged = RecordedComputes::new(&transcript, vec![empty]).unwrap();
    let replay = verifier
        .replay(&pkg, &original.claim, &input, Some(&forged))
        .unwrap();
    let failed: Vec<_> = replay.inference.iter().filter(|c| !c.within).collect();
    assert!(!failed.is_empty(), "the forged success was accepted");
    assert_eq!(failed[0].first_failure.as_ref().unwrap().0, 0);
}

#[test]
fn new_input_shapes_are_paid_for_whether_or_not_the_host_has_analysed_them() {
    // The first compute of a run on a (graph, shapes) pair pays
    // NN_SIGNATURE_FUEL: a host with the analysis cached charges the same
    // fuel as a cold one, and a guest that cannot pay is refused first.
    let pkg = nn_run_package(tally_test_artifacts::onnx::identity(), "", &["g", "4"]);
    let input = f32_zeros(4);
    let sb = sandbox(BackendKind::Tract);
    let cold = sb.run(&pkg, &RunRequest::new(&input)).unwrap();
    let warm = sb.run(&pkg, &RunRequest::new(&input)).unwrap();
    assert_eq!(cold.claim.outcome, Outcome::Ok, "{:?}", cold.stderr);
    assert_eq!(cold.claim.fuel_consumed, warm.claim.fuel_consumed);
    assert!(cold.claim.fuel_consumed > tally_sandbox::profile::NN_SIGNATURE_FUEL);
    let poor = sb
        .run(
            &pkg,
            &RunRequest::new(&input).fuel(Some(tally_sandbox::profile::NN_SIGNATURE_FUEL)),
        )
        .unwrap();
    assert_limit(&poor, Limit::Fuel);
    let refused = poor
        .transcript
        .calls()
        .iter()
        .rev()
        .find(|c| c.func == NN_COMPUTE)
        .unwrap();
    assert!(
        refused
            .detail
            .as_deref()
            .unwrap_or_default()
            .contains("new input shapes"),
        "{refused:?}"
    );
}

#[test]
fn caches_stay_within_their_byte_budget_and_evictions_change_no_claim() {
    // Each distinct graph used to stay resident for the life of the process
    // (a portable graph with its whole instance memory). Now everything
    // the sandbox keeps is in one byte budget, least recently used first:
    // a host cycling through packages stays within it, and a run on a
    // host that evicted everything seals the same claim as on one that
    // evicted nothing.
    let packages: Vec<(Package, Vec<u8>)> = [(8, 8), (8, 16), (16, 8), (16, 16)]
        .into_iter()
        .map(|(input, hidden)| {
            let graph = tally_test_artifacts::onnx::lstm(input, hidden);
            let pkg = nn_run_package(graph, "", &["g", "4", "1", &input.to_string()]);
            (pkg, f32_zeros(4 * input as usize))
        })
        .collect();
    let roomy = Sandbox::new(SandboxConfig::default()).unwrap();
    let want: Vec<_> = packages
        .iter()
        .map(|(p, input)| roomy.run(p, &RunRequest::new(input)).unwrap().claim)
        .collect();
    let one = roomy.cache_stats().total_bytes() / packages.len() as u64;
    assert_eq!(roomy.cache_stats().kind(CacheKind::Graphs).evictions, 0);

    // Room for about two packages' modules, graphs and costs.
    let budget = 2 * one + one / 2;
    let tight = Sandbox::new(SandboxConfig::default().cache_bytes(budget)).unwrap();
    // Each package twice in a row (the second run finds its graph warm),
    // then the cycle again (by then evicted: loaded afresh).
    for round in 0..4 {
        for ((p, input), want) in packages.iter().zip(&want).flat_map(|x| [x, x]) {
            if round % 2 == 1 {
                continue;
            }
            let got = tight.run(p, &RunRequest::new(input)).unwrap().claim;
            assert_eq!(&got, want, "round {round}");
            let stats = tight.cache_stats();
            assert!(
                stats.total_bytes() <= budget,
                "{} bytes held, budget {budget}: {stats:?}",
                stats.total_bytes()
            );
        }
    }
    let stats = tight.cache_stats();
    assert!(stats.kind(CacheKind::Graphs).evictions > 0, "{stats:?}");
    let graphs = stats.kind(CacheKind::Graphs);
    assert!(graphs.entries < packages.len() as u64);
    assert!(graphs.hits >= packages.len() as u64, "{graphs:?}");
    // A portable graph is weighed with its instance's memory (megabytes),
    // not its few kilobytes of ONNX.
    assert!(graphs.bytes / graphs.entries > 1 << 20, "{graphs:?}");
}

/// Programs the wasi-nn ABI fuzz harness runs per backend.
const FUZZ_PROGRAMS: u32 = 64;

/// The wasi-nn ABI fuzz harness: every call is answered, every run replays
/// to the same claim, and the backends agree.
#[test]
pub fn nn_fuzz() {
    // The `nn-fuzz` guest turns bytes into raw wasi-nn calls with made-up
    // handles, pointers anywhere (its own memory included), lying lengths,
    // any rank, dimensions and type. For generated programs: the host
    // never fails (no `Err`, no `aborted`), a replay seals the same claim,
    // and the backends agree on everything the guest saw.
    let pkg = Pkg::new()
        .limit("fuel = 5_000_000_000\nwall_time_ms = 120_000")
        .graph("g", "g.onnx", tally_test_artifacts::onnx::identity(), "")
        .graph("h", "h.onnx", tally_test_artifacts::onnx::lstm(4, 4), "")
        .guest_stage("nn-fuzz", "graphs = [\"g\", \"h\"]")
        .build();
    let backends = [BackendKind::Portable, BackendKind::Tract];
    let sandboxes: Vec<Sandbox> = backends.into_iter().map(sandbox).collect();
    let (mut answered, mut computed, mut read) = (0, 0, 0);
    for i in 0..FUZZ_PROGRAMS {
        let mut program = vec![0u8; 64 + (i as usize * 97) % 1024];
        let mut xof = blake3::Hasher::new();
        xof.update(b"tally nn-fuzz program")
            .update(&i.to_le_bytes());
        xof.finalize_xof().fill(&mut program);
        let runs: Vec<RunResult> = sandboxes
            .iter()
            .map(|sb| {
                let r = sb
                    .run(&pkg, &RunRequest::new(&program))
                    .unwrap_or_else(|e| panic!("program {i}: the host failed: {e}"));
                assert!(
                    !matches!(r.claim.outcome, Outcome::Aborted { .. }),
                    "program {i}: {:?} {:?}",
                    r.claim.outcome,
                    r.stderr
                );
                let again = sb.replay(&pkg, &r.claim, &program, None).unwrap();
                assert_eq!(again.claim, r.claim, "program {i}: the replay differs");
                r
            })
            .collect();
        let seen = |r: &RunResult| {
            let c = &r.claim;
            (
                c.output,
                c.fuel_consumed,
                c.outcome.clone(),
                c.stages.clone(),
            )
        };
        assert_eq!(
            seen(&runs[0]),
            seen(&runs[1]),
            "program {i}: backends disagree\n{}\n{}",
            text(&runs[0]),
            text(&runs[1])
        );
        let calls = text(&runs[0]);
        answered += calls.lines().count();
        computed += calls.lines().filter(|l| *l == "3 0").count();
        read += calls.lines().filter(|l| *l == "4 0").count();
    }
    // The programs reach deep enough to matter: calls get answered, and
    // some computes and outputs succeed.
    assert!(
        answered > FUZZ_PROGRAMS as usize * 20,
        "{answered} calls answered"
    );
    assert!(
        computed >= 10 && read >= 3,
        "{computed} computes, {read} outputs"
    );
}

#[test]
fn only_graphs_a_stage_is_granted_are_prepared() {
    // A graph no stage may load is never worth the host's time: before a
    // run, the host prepares (checks and loads) only granted graphs.
    let pkg = Pkg::new()
        .graph(
            "unused",
            "unused.onnx",
            tally_test_artifacts::onnx::lstm(64, 64),
            "",
        )
        .guest_stage("upper", "")
        .build();
    for kind in [BackendKind::Portable, BackendKind::Tract] {
        let sb = sandbox(kind);
        let r = sb.run(&pkg, &RunRequest::new(b"hi")).unwrap();
        assert_eq!(r.claim.outcome, Outcome::Ok, "{kind:?}");
        let stats = sb.cache_stats();
        assert_eq!(
            stats.kind(CacheKind::Graphs).misses,
            0,
            "{kind:?}: {stats:?}"
        );
        assert_eq!(
            stats.kind(CacheKind::LoadChecks).misses,
            0,
            "{kind:?}: {stats:?}"
        );
    }
}

#[test]
fn a_loaded_graph_is_weighed_again_as_it_grows() {
    // A portable graph's instance memory grows with the inputs it runs on,
    // native tract keeps a plan per input shape: the cache weighs the
    // graph again after each compute, so what it holds stays measured.
    let pkg = |n: u32| {
        let n = n.to_string();
        nn_run_package(tally_test_artifacts::onnx::identity(), "", &["g", &n])
    };
    for kind in [BackendKind::Portable, BackendKind::Tract] {
        let sb = sandbox(kind);
        let weight = |sb: &Sandbox| sb.cache_stats().kind(CacheKind::Graphs).bytes;
        let small = 16;
        sb.run(&pkg(small), &RunRequest::new(&f32_zeros(small as usize)))
            .unwrap();
        let before = weight(&sb);
        let large = 4 << 20;
        let r = sb
            .run(&pkg(large), &RunRequest::new(&f32_zeros(large as usize)))
            .unwrap();
        assert_eq!(r.claim.outcome, Outcome::Ok, "{kind:?}: {:?}", r.stderr);
        assert!(weight(&sb) > before, "{kind:?}: {before} → {}", weight(&sb));
    }
}

#[test]
fn output_copies_are_paid_per_byte_before_they_are_made() {
    // `get_output` pays NN_FUEL_PER_BYTE for every byte it copies into the
    // guest, first: there is a window of fuel budgets (as wide as the copy)
    // in which the run gets through `compute` and is stopped at
    // `get_output`, with a refusal that names the copy. Found by bisection
    // on the budget.
    let n: usize = 1 << 18;
    let pkg = nn_run_package(
        tally_test_artifacts::onnx::identity(),
        "",
        &["g", &n.to_string()],
    );
    let input = f32_zeros(n);
    let sb = sandbox(BackendKind::Tract);
    let (mut lo, mut hi) = (
        0,
        sb.run(&pkg, &RunRequest::new(&input))
            .unwrap()
            .claim
            .fuel_consumed,
    );
    let want = format!("copying {} bytes", 4 * n);
    while hi - lo > 1 {
        let fuel = lo + (hi - lo) / 2;
        let r = sb
            .run(&pkg, &RunRequest::new(&input).fuel(Some(fuel)))
            .unwrap();
        match last_nn_call(&r).cloned() {
            Some(c) if c.func.ends_with(".get_output") => {
                if c.detail.as_deref().unwrap_or_default().contains(&want) {
                    assert_limit(&r, Limit::Fuel);
                    return;
                }
                // The copy was made: the budget ran out after it.
                hi = fuel;
            }
            _ => lo = fuel,
        }
    }
    panic!("no budget stops the run at get_output for lack of fuel for the copy");
}

/// A sandbox on `kind` with its cache in `dir`.
fn cached_sandbox(kind: BackendKind, dir: &std::path::Path) -> Sandbox {
    let mut ort = OrtConfig::default();
    ort.library = assets_dir().join("libonnxruntime.so.1.31.1");
    Sandbox::new(
        SandboxConfig::default()
            .backend(kind)
            .ort(ort)
            .cache_dir(dir),
    )
    .unwrap()
}

#[test]
fn analyses_are_kept_on_disk_and_a_fresh_sandbox_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let pkg = vad_package();
    let input = &speech_sample().0;
    let first = cached_sandbox(BackendKind::Tract, dir.path())
        .run(&pkg, &RunRequest::new(input))
        .unwrap();
    assert_eq!(first.claim.outcome, Outcome::Ok, "{:?}", first.stderr);
    let kept: Vec<std::path::PathBuf> = std::fs::read_dir(dir.path().join("analyses"))
        .unwrap()
        .flat_map(|m| std::fs::read_dir(m.unwrap().path()).unwrap())
        .map(|f| f.unwrap().path())
        .collect();
    let named = |prefix: &str| {
        kept.iter()
            .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with(prefix))
            .cloned()
            .collect::<Vec<_>>()
    };
    // One graph, one input signature.
    let (costs, loads) = (named("cost-"), named("load-"));
    assert_eq!((costs.len(), loads.len()), (1, 1), "{kept:?}");
    // A fresh sandbox takes the cost from disk rather than analysing
    // again: a kept cost raised by 1000 raises every compute's price.
    let bytes = std::fs::read(&costs[0]).unwrap();
    assert_eq!(bytes[0], b'O');
    let cost = u64::from_le_bytes(bytes[1..].try_into().unwrap());
    std::fs::write(
        &costs[0],
        [&b"O"[..], &(cost + 1000).to_le_bytes()].concat(),
    )
    .unwrap();
    let second = cached_sandbox(BackendKind::Tract, dir.path())
        .run(&pkg, &RunRequest::new(input))
        .unwrap();
    let computes = input.len().saturating_sub(44).div_ceil(2 * 512) as u64;
    assert_eq!(
        second.claim.fuel_consumed,
        first.claim.fuel_consumed + 1000 * computes
    );
    // A file that does not parse is no result: the graph is analysed again.
    std::fs::write(&costs[0], b"junk").unwrap();
    let third = cached_sandbox(BackendKind::Tract, dir.path())
        .run(&pkg, &RunRequest::new(input))
        .unwrap();
    assert_eq!(third.claim, first.claim);
}
