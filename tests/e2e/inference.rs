//! Inference from the command line: `--backend` on run and verify, a
//! receipt made on one backend verified on the others, and a clear error
//! when the ONNX Runtime library is missing.

use tally_test_artifacts::pkg::{asset, assets_dir};

use crate::util::Dir;

pub(crate) fn nn_package(d: &Dir) {
    nn_package_with(d, "");
}

/// `nn.tally`: the `nn-abuse` guest on silero VAD, with extra manifest
/// lines before the graph table (e.g. `[limits]`).
fn nn_package_with(d: &Dir, extra: &str) {
    d.write("nn/vad.onnx", &asset("silero_vad_openvino_16k.onnx"));
    let digest = tally_digest::Digest::of(&asset("silero_vad_openvino_16k.onnx"));
    let graph = format!("{extra}\n[graphs.vad]\npath = \"vad.onnx\"\ndigest = \"{digest}\"\ntolerance = {{ abs = 1e-4, rel = 1e-3 }}\n");
    d.package("nn", &[("nn-abuse", "graphs = [\"vad\"]")], &graph);
}

#[test]
fn a_receipt_from_one_backend_verifies_on_the_others() {
    let d = Dir::new();
    nn_package(&d);
    d.write("in", b"");
    let ort = assets_dir().join("libonnxruntime.so.1.31.1");
    let ort = ort.to_str().unwrap();
    d.run("nn.tally", &["--backend", "tract"]).expect(0);
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
    let on_portable = || {
        d.tally(&[
            "verify",
            "r.json",
            "--input",
            "in",
            "--package",
            "nn.tally",
            "--backend",
            "portable",
        ])
    };
    let v = on_portable().expect(0);
    assert!(v.stdout.contains("vad output 0: 1 calls"), "{}", v.stdout);
    assert!(
        v.stdout.contains("another inference backend"),
        "{}",
        v.stdout
    );
    // Recorded outputs larger than any run records are refused before a
    // byte is read (a sparse file: no disk is used).
    std::fs::File::options()
        .write(true)
        .open(d.path("r.json.tensors"))
        .unwrap()
        .set_len(3 << 30)
        .unwrap();
    let r = on_portable().expect(2);
    assert!(
        r.stderr.contains("larger than any run records"),
        "{}",
        r.stderr
    );
    // Likewise a transcript larger than any run writes: unread, so the
    // replay cannot be confirmed (nor its divergence localised).
    std::fs::File::options()
        .write(true)
        .open(d.path("r.json.transcript"))
        .unwrap()
        .set_len(3 << 30)
        .unwrap();
    let r = on_portable().expect(1);
    assert!(
        r.stdout.contains("larger than any run's transcript"),
        "{}",
        r.stdout
    );
}

#[test]
fn a_missing_onnxruntime_library_is_a_clear_startup_error() {
    let d = Dir::new();
    nn_package(&d);
    d.write("in", b"");
    let r = d.run(
        "nn.tally",
        &[
            "--backend",
            "onnxruntime",
            "--ort-lib",
            "nowhere/libonnxruntime.so",
        ],
    );
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

/// The OCR package exactly as `scripts/demo.sh` builds it: the committed
/// manifest packed with `tally pack --search` over the guests, the models
/// and the character list taken out of the recogniser with `tally
/// graph-meta`.
fn ocr_package(d: &Dir) {
    d.publisher();
    let assets = assets_dir();
    let rec = assets.join("ch_PP-OCRv4_rec_infer.onnx");
    let keys = d
        .tally(&["graph-meta", rec.to_str().unwrap(), "character"])
        .expect(0);
    assert!(
        keys.stdout.lines().count() > 6000,
        "the PP-OCR character list"
    );
    d.write("keys/ppocr_keys.txt", keys.stdout.as_bytes());
    let manifest = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../manifests/ocr/tally.toml"
    );
    d.tally(&[
        "pack",
        manifest,
        "--key",
        "publisher.key",
        "--out",
        "ocr.tally",
        "--search",
        tally_test_artifacts::pkg::guest_dir().to_str().unwrap(),
        "--search",
        assets.to_str().unwrap(),
        "--search",
        "keys",
    ])
    .expect(0);
}

#[test]
fn the_demo_ocr_package_reads_its_sample_and_verifies() {
    let d = Dir::new();
    ocr_package(&d);
    let sample = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../manifests/ocr/sample.png"
    );
    d.tally(&[
        "run",
        "ocr.tally",
        "--input",
        sample,
        "--output",
        "out.jsonl",
        "--receipt",
        "r.json",
    ])
    .expect(0);
    let text: Vec<String> = d
        .read_string("out.jsonl")
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(text, crate::util::OCR_SAMPLE_LINES);
    d.tally(&[
        "verify",
        "r.json",
        "--input",
        sample,
        "--package",
        "ocr.tally",
    ])
    .expect(0);
}

#[test]
fn graph_meta_names_the_keys_a_model_has() {
    let d = Dir::new();
    d.write("rec.onnx", &asset("ch_PP-OCRv4_rec_infer.onnx"));
    let all = d.tally(&["graph-meta", "rec.onnx"]).expect(0);
    assert!(all.stdout.starts_with("character\t"), "{}", all.stdout);
    let r = d.tally(&["graph-meta", "rec.onnx", "labels"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("no metadata key `labels` (it has: character"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_cold_host_does_not_charge_its_set_up_to_the_run() {
    // A fresh store: this process compiles the portable engine (tens of
    // seconds on two cores) before the run's clock starts, so a 5 s wall
    // time is the same outcome on a cold host as on a warm one.
    let d = Dir::new();
    nn_package_with(&d, "[limits]\nwall_time_ms = 5000\n");
    d.write("in", b"");
    d.run("nn.tally", &["--backend", "portable"]).expect(0);
    let receipt: serde_json::Value = serde_json::from_str(&d.read_string("r.json")).unwrap();
    assert_eq!(receipt["claim"]["outcome"]["kind"], "ok", "{receipt}");
}

/// The committed manifests pack as they are (no template step): `tally
/// pack` fills in digests and publisher; `inspect` shows the graphs with
/// their targets and tolerances; a local run then verifies with no flags.
#[test]
fn the_committed_manifests_pack_run_and_verify_as_they_are() {
    let d = Dir::new();
    let publisher = d.publisher();
    let assets = assets_dir();
    let guests = tally_test_artifacts::pkg::guest_dir();
    for name in ["image-stats", "vad"] {
        let manifest = format!(
            "{}/../../manifests/{name}/tally.toml",
            env!("CARGO_MANIFEST_DIR")
        );
        let bundle = format!("{name}.tally");
        d.tally(&[
            "pack",
            &manifest,
            "--key",
            "publisher.key",
            "--out",
            &bundle,
            "--search",
            guests.to_str().unwrap(),
            "--search",
            assets.to_str().unwrap(),
        ])
        .expect(0);
        let shown = d.tally(&["inspect", &bundle]).expect(0).stdout;
        assert!(shown.contains(&publisher), "{shown}");
        if name == "vad" {
            assert!(
                shown.contains("graph  vad") && shown.contains("targets cpu, tolerance abs 1e-4"),
                "{shown}"
            );
        }
    }
    std::fs::copy(crate::util::SAMPLE_PNG, d.path("in")).unwrap();
    d.run("image-stats.tally", &[]).expect(0);
    let v = d.tally(&["verify", "r.json", "--input", "in"]).expect(0);
    assert!(v.stdout.starts_with("verified"), "{}", v.stdout);
}
