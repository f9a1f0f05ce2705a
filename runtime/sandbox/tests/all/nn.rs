//! Inference through wasi-nn with real models: silero VAD on speech
//! synthesised by espeak-ng, on every backend, replayed across backends;
//! and a guest abusing the wasi-nn ABI.

use std::process::Command;
use std::sync::OnceLock;

use tally_package::Package;
use tally_receipt::Outcome;
use tally_sandbox::profile::{NN_MAX_CONTEXTS, NN_MAX_GRAPHS};
use tally_sandbox::{BackendKind, OrtConfig, RunRequest, RunResult, Sandbox, SandboxConfig};
use tally_test_artifacts::pkg::{asset, assets_dir, Pkg};

use crate::util::{assert_limit, text};

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

fn vad_package() -> Package {
    Pkg::new()
        .limit("fuel = 5000000000")
        .graph(
            "vad",
            "silero_vad_openvino_16k.onnx",
            asset("silero_vad_openvino_16k.onnx"),
            "tolerance = { abs = 1e-4, rel = 1e-3 }",
        )
        .guest_stage("vad-probs", "graphs = [\"vad\"]")
        .guest_stage("vad-segments", "")
        .build()
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
        assert_eq!(r.claim.fuel_consumed, runs[0].claim.fuel_consumed);
        assert_eq!(r.claim.output, runs[0].claim.output);
    }
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
        let recorded: Vec<Vec<u8>> = original
            .computes
            .iter()
            .map(|c| c.encoded.clone())
            .collect();
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

#[test]
fn tampered_recorded_outputs_are_out_of_tolerance_and_change_the_transcript() {
    let (input, _) = speech_sample();
    let pkg = vad_package();
    let host = sandbox(BackendKind::Tract);
    let original = host.run(&pkg, &RunRequest::new(input)).unwrap();
    let mut recorded: Vec<Vec<u8>> = original
        .computes
        .iter()
        .map(|c| c.encoded.clone())
        .collect();
    // Compute #5 is in the leading silence: claim it heard speech.
    let mut t = tally_nn::decode_tensors(&recorded[5], 1 << 20).unwrap();
    let p = tally_nn::Tensor::new(
        t[0].ty(),
        t[0].dims().to_vec(),
        1f32.to_le_bytes().to_vec(),
        1 << 20,
    )
    .unwrap();
    t[0] = p;
    recorded[5] = tally_nn::encode_tensors(&t);
    let replay = sandbox(BackendKind::Portable)
        .replay(&pkg, &original.claim, input, Some(&recorded))
        .unwrap();
    let probs = replay.inference.iter().find(|c| c.output == 0).unwrap();
    assert!(!probs.within);
    assert_eq!(probs.first_failure.as_ref().unwrap().0, 5);
    assert_ne!(replay.transcript.root(), original.transcript.root());
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
    assert_limit(&r, "fuel");
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
