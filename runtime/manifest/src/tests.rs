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
