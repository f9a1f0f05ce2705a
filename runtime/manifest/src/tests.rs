use super::*;

const PUB: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const D1: &str = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262";

fn good() -> String {
    format!(
        r#"# a comment
[package]
name = "demo"
version = "1.0.0"
publisher = "{PUB}"

[limits]
fuel = 5000

[modules.pre]
path = "pre.wasm"
digest = "{D1}"

[[files]]
path = "data/labels.txt"
digest = "{D1}"

[[stages]]
name = "pre"
module = "pre"
args = ["--size", "32"]
env = {{ MODE = "fast" }}
read = ["data/labels.txt"]
"#
    )
}

fn err(text: &str) -> ManifestError {
    Manifest::parse(text, "tally.toml").unwrap_err()
}

#[test]
fn a_good_manifest_parses() {
    let m = Manifest::parse(&good(), "tally.toml").unwrap();
    assert_eq!(m.package.name, "demo");
    assert_eq!(m.limits.fuel, Some(5000));
    assert_eq!(
        m.limits.resolve().memory_bytes,
        Limits::DEFAULT_MEMORY_BYTES
    );
    assert_eq!(m.stages[0].env["MODE"], "fast");
    assert_eq!(m.file("data/labels.txt").unwrap().path, "data/labels.txt");
}

#[test]
fn the_id_ignores_formatting_but_not_content() {
    let a = Manifest::parse(&good(), "a").unwrap();
    let reformatted = good()
        .replace("# a comment\n", "")
        .replace("fuel = 5000", "fuel = 5_000");
    let b = Manifest::parse(&reformatted, "b").unwrap();
    assert_eq!(a.id(), b.id());
    let c = Manifest::parse(&good().replace("--size", "--sizes"), "c").unwrap();
    assert_ne!(a.id(), c.id());
}

#[test]
fn unknown_fields_are_errors_with_a_line() {
    let e = err(&good().replace("fuel = 5000", "fuel = 5000\nfule = 1"));
    assert_eq!(e.line, Some(9), "{e}");
    assert!(e.to_string().contains("unknown field `fule`"), "{e}");
}

#[test]
fn dangling_module_reference_names_field_and_line() {
    let e = err(&good().replace("module = \"pre\"", "module = \"post\""));
    assert_eq!(e.field, "stages[0].module");
    assert_eq!(e.line, Some(20));
    assert!(matches!(
        e.kind,
        ManifestErrorKind::Dangling { what: "module", .. }
    ));
    assert!(
        e.to_string()
            .starts_with("tally.toml:20: field `stages[0].module`"),
        "{e}"
    );
}

#[test]
fn reading_an_undeclared_file_is_an_error() {
    let e = err(&good().replace("read = [\"data/labels.txt\"]", "read = [\"secret.txt\"]"));
    assert_eq!(e.field, "stages[0].read[0]");
}

#[test]
fn unsafe_paths_are_rejected() {
    for bad in [
        "../etc/passwd",
        "/etc/passwd",
        "a//b",
        "a/./b",
        "a\\\\b",
        "c:x",
    ] {
        let e = err(&good().replace("data/labels.txt", bad));
        assert!(
            matches!(e.kind, ManifestErrorKind::Invalid(_)),
            "{bad}: {e}"
        );
        assert!(e.to_string().contains("unsafe path"), "{bad}: {e}");
    }
}

#[test]
fn bad_digest_and_publisher_say_how_to_fix() {
    let e = err(&good().replace(D1, "abc"));
    assert!(e.to_string().contains("64 hex digits"), "{e}");
    let e = err(&good().replace(PUB, "zz"));
    assert_eq!(e.field, "package.publisher");
    assert!(e.to_string().contains("tally keygen"), "{e}");
}

#[test]
fn zero_limits_duplicates_and_empty_pipelines_are_rejected() {
    assert_eq!(
        err(&good().replace("fuel = 5000", "fuel = 0")).field,
        "limits.fuel"
    );
    let dup = good() + "\n[[stages]]\nname = \"pre\"\nmodule = \"pre\"\n";
    assert!(matches!(err(&dup).kind, ManifestErrorKind::Duplicate(_)));
    let no_stages = good().split("[[stages]]").next().unwrap().to_string();
    assert_eq!(err(&no_stages).field, "stages");
}

#[test]
fn syntax_errors_carry_the_parser_message() {
    let e = err("[package\nname = 1");
    assert!(matches!(e.kind, ManifestErrorKind::Syntax(_)));
    assert_eq!(e.line, Some(1));
}

fn with_graph(table: &str, stage_graphs: &str) -> String {
    let d2 = "bf1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262";
    good().replace(
        "[[stages]]",
        &format!("[graphs.vad]\npath = \"vad.onnx\"\ndigest = \"{d2}\"\n{table}\n\n[[stages]]\ngraphs = {stage_graphs}\n"),
    )
}

#[test]
fn graphs_parse_with_defaults_and_overrides() {
    let m = Manifest::parse(
        &with_graph(
            "tolerance = { abs = 1e-3 }\noutputs = [{ index = 1, argmax = true }]",
            "[\"vad\"]",
        ),
        "tally.toml",
    )
    .unwrap();
    let g = &m.graphs["vad"];
    assert_eq!(g.encoding, GraphEncoding::Onnx);
    assert_eq!(g.targets, vec![ExecutionTarget::Cpu]);
    assert_eq!(
        (g.tolerance.abs, g.tolerance.rel, g.tolerance.argmax),
        (1e-3, 1e-3, false)
    );
    let o1 = g.tolerance_of(1);
    assert_eq!(
        (o1.abs, o1.argmax),
        (1e-3, true),
        "an override inherits the graph's tolerance"
    );
    assert_eq!(g.tolerance_of(0), g.tolerance);
    assert_eq!(m.stages[0].graphs, vec!["vad".to_string()]);
    assert!(m.all_files().any(|f| f.path == "vad.onnx"));
    // The tolerance is part of the package id.
    let other =
        Manifest::parse(&with_graph("tolerance = { abs = 1e-2 }", "[\"vad\"]"), "t").unwrap();
    assert_ne!(m.id(), other.id());
}

#[test]
fn bad_graphs_name_the_field() {
    for (table, graphs, field, says) in [
        (
            "encoding = \"tflite\"",
            "[\"vad\"]",
            "graphs.vad.encoding",
            "use \"onnx\"",
        ),
        (
            "targets = [\"tpu\"]",
            "[\"vad\"]",
            "graphs.vad.targets",
            "\"cpu\" or \"gpu\"",
        ),
        (
            "targets = [\"cpu\", \"cpu\"]",
            "[\"vad\"]",
            "graphs.vad.targets",
            "cpu",
        ),
        (
            "tolerance = { abs = -1.0 }",
            "[\"vad\"]",
            "graphs.vad.tolerance",
            "not negative",
        ),
        (
            "outputs = [{ index = 0 }, { index = 0 }]",
            "[\"vad\"]",
            "graphs.vad.outputs[1]",
            "output 0",
        ),
        ("", "[\"nope\"]", "stages[0].graphs[0]", "nope"),
        ("", "[\"vad\", \"vad\"]", "stages[0].graphs[1]", "vad"),
    ] {
        let e = err(&with_graph(table, graphs));
        assert_eq!(e.field, field, "{e}");
        assert!(e.to_string().contains(says), "{e}");
    }
}

/// A manifest that sets every field the package id encodes.
fn every_field() -> Manifest {
    let text = format!(
        r#"
[package]
name = "golden"
version = "1.2.3"
description = "every field"
publisher = "{PUB}"

[limits]
fuel = 5000
memory_bytes = 65536
host_calls = 77

[modules.pre]
path = "pre.wasm"
digest = "{D1}"

[[files]]
path = "data/labels.txt"
digest = "{D1}"

[graphs.det]
path = "det.onnx"
digest = "{D1}"
targets = ["cpu", "gpu"]
tolerance = {{ abs = 0.5, rel = 0.25, argmax = true }}
outputs = [{{ index = 1, abs = 0.125, rel = 0.0, argmax = false }}]

[[stages]]
name = "pre"
module = "pre"
args = ["--size", "32"]
env = {{ MODE = "fast", Z = "" }}
read = ["data/labels.txt"]
graphs = ["det"]
"#
    );
    Manifest::parse(&text, "tally.toml").unwrap()
}

#[test]
fn package_id_is_pinned() {
    // Changing the manifest encoding changes every package id: bump
    // MANIFEST_TAG and say so in the changelog.
    assert_eq!(
        every_field().id().to_string(),
        "ce72062e41ed7bfb8e09fef2300bde32ca00ab93ed093fa25fee5875f5970999"
    );
}

#[test]
fn each_limit_is_named_as_its_manifest_field() {
    let fields = toml::Value::try_from(Limits::default().resolve()).unwrap();
    for limit in Limit::ALL {
        assert!(
            fields.get(limit.name()).is_some(),
            "{limit} is not a field of [limits]"
        );
        let json = toml::Value::try_from(std::collections::BTreeMap::from([("l", limit)])).unwrap();
        assert_eq!(
            json["l"].as_str(),
            Some(limit.name()),
            "serde name of {limit:?}"
        );
    }
}

/// A manifest with thousands of files read by a stage is checked in linear
/// time (it was quadratic: 484 s of CPU for a 14.7 MB manifest), and lists
/// beyond [`MAX_ENTRIES`] are refused before any check.
#[test]
fn large_manifests_are_checked_in_linear_time_and_capped() {
    let n = MAX_ENTRIES;
    let mut text = format!(
        "[package]\nname = \"big\"\nversion = \"1\"\npublisher = \"{PUB}\"\n\n[modules.m]\npath = \"m.wasm\"\ndigest = \"{D1}\"\n\n"
    );
    for i in 0..n {
        text.push_str(&format!("[[files]]\npath = \"f/{i}\"\ndigest = \"{D1}\"\n"));
    }
    let reads: Vec<String> = (0..n).map(|i| format!("\"f/{i}\"")).collect();
    text.push_str(&format!(
        "[[stages]]\nname = \"s\"\nmodule = \"m\"\nread = [{}]\n",
        reads.join(", ")
    ));
    let started = std::time::Instant::now();
    let m = Manifest::parse(&text, "tally.toml").unwrap();
    assert_eq!(m.stages[0].read.len(), n);
    // Not a timing threshold: a report for the curious (`--nocapture`).
    eprintln!("{n} files, {n} reads: {:?}", started.elapsed());
    let over = text.replacen(
        "[[stages]]",
        &format!("[[files]]\npath = \"f/{n}\"\ndigest = \"{D1}\"\n[[stages]]"),
        1,
    );
    let e = Manifest::parse(&over, "tally.toml").unwrap_err();
    assert_eq!(e.field, "files");
}
