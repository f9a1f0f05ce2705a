//! Inference from the command line: `--backend` on run and verify, a
//! receipt made on one backend verified on the others, and a clear error
//! when the ONNX Runtime library is missing.

use tally_test_artifacts::pkg::{asset, assets_dir};

use crate::util::Dir;

fn nn_package(d: &Dir) {
    d.write("nn/vad.onnx", &asset("silero_vad_openvino_16k.onnx"));
    let digest = tally_digest::Digest::of(&asset("silero_vad_openvino_16k.onnx"));
    let graph = format!("\n[graphs.vad]\npath = \"vad.onnx\"\ndigest = \"{digest}\"\ntolerance = {{ abs = 1e-4, rel = 1e-3 }}\n");
    d.package("nn", &[("nn-abuse", "graphs = [\"vad\"]")], &graph);
}

#[test]
fn a_receipt_from_one_backend_verifies_on_the_others() {
    let d = Dir::new();
    nn_package(&d);
    d.write("in", b"");
    let ort = assets_dir().join("libonnxruntime.so.1.31.1");
    let ort = ort.to_str().unwrap();
    d.tally(&[
        "run",
        "nn.tally",
        "--input",
        "in",
        "--output",
        "o",
        "--receipt",
        "r.json",
        "--backend",
        "tract",
    ])
    .expect(0);
    assert!(
        d.path("r.json.tensors").exists(),
        "the recorded inference outputs are written beside the receipt"
    );
    let receipt: serde_json::Value = serde_json::from_str(&d.read_string("r.json")).unwrap();
    assert_eq!(receipt["claim"]["backend"]["kind"], "tract");
    for backend in [
        &["--backend", "portable"][..],
        &["--backend", "onnxruntime", "--ort-lib", ort],
        &["--backend", "tract"],
    ] {
        let mut args = vec![
            "verify",
            "r.json",
            "--input",
            "in",
            "--package",
            "nn.tally",
            "--json",
        ];
        args.extend_from_slice(backend);
        let v = d.tally(&args).expect(0);
        let verdict: serde_json::Value = serde_json::from_str(&v.stdout).unwrap();
        assert_eq!(verdict["verified"], true, "{}", v.stdout);
        let cross = backend[1] != "tract";
        assert_eq!(verdict["cross_backend"], cross);
        assert_eq!(
            verdict["inference"].as_array().unwrap().is_empty(),
            !cross,
            "{}",
            v.stdout
        );
    }
    // The readable verdict names each compared output.
    let v = d
        .tally(&[
            "verify",
            "r.json",
            "--input",
            "in",
            "--package",
            "nn.tally",
            "--backend",
            "portable",
        ])
        .expect(0);
    assert!(v.stdout.contains("vad output 0: 1 calls"), "{}", v.stdout);
    assert!(
        v.stdout.contains("another inference backend"),
        "{}",
        v.stdout
    );
}

#[test]
fn a_missing_onnxruntime_library_is_a_clear_startup_error() {
    let d = Dir::new();
    nn_package(&d);
    d.write("in", b"");
    let r = d.tally(&[
        "run",
        "nn.tally",
        "--input",
        "in",
        "--output",
        "o",
        "--receipt",
        "r.json",
        "--backend",
        "onnxruntime",
        "--ort-lib",
        "nowhere/libonnxruntime.so",
    ]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("scripts/fetch-assets.sh"), "{}", r.stderr);
}

#[test]
fn pack_rejects_a_graph_that_is_not_onnx() {
    let d = Dir::new();
    d.write("bad/vad.onnx", b"not a model");
    let digest = tally_digest::Digest::of(b"not a model");
    let toml = format!(
        "[package]\nname = \"bad\"\nversion = \"1\"\npublisher = \"{}\"\n\n[graphs.vad]\npath = \"vad.onnx\"\ndigest = \"{digest}\"\n\n[modules.m]\npath = \"m.wasm\"\ndigest = \"{}\"\n\n[[stages]]\nname = \"s\"\nmodule = \"m\"\ngraphs = [\"vad\"]\n",
        d.publisher(),
        tally_digest::Digest::of(&crate::util::guest("echo"))
    );
    d.write("bad/m.wasm", &crate::util::guest("echo"));
    d.write("bad/tally.toml", toml.as_bytes());
    let r = d.tally(&[
        "pack",
        "bad/tally.toml",
        "--key",
        "publisher.key",
        "--out",
        "bad.tally",
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("graph `vad`") && r.stderr.contains("not an ONNX model"),
        "{}",
        r.stderr
    );
}
