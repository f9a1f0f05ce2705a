//! The main loop: keygen → pack → publish → run → verify, and inspect.

use crate::util::{Dir, SAMPLE_PNG};

const IMAGE_STAGES: &[(&str, &str)] = &[
    (
        "preprocess",
        "args = [\"--width\", \"32\", \"--height\", \"32\"]",
    ),
    ("tensor-stats", ""),
];

#[test]
fn pack_publish_run_verify_by_package_id() {
    let d = Dir::new();
    d.package("images", IMAGE_STAGES, "");
    let id = d
        .tally(&["publish", "images.tally"])
        .expect(0)
        .stdout
        .trim()
        .to_string();
    assert_eq!(id.len(), 64);
    std::fs::copy(SAMPLE_PNG, d.path("in.png")).unwrap();
    let run = d
        .tally(&[
            "run",
            &id,
            "--input",
            "in.png",
            "--output",
            "out.jsonl",
            "--receipt",
            "r.json",
        ])
        .expect(0);
    assert!(run.stderr.contains("outcome: ok"), "{}", run.stderr);
    let out = d.read_string("out.jsonl");
    assert!(
        out.starts_with("{\"tensor\":\"input\",\"shape\":[1,3,32,32]"),
        "{out}"
    );
    let verify = d
        .tally(&["verify", "r.json", "--input", "in.png"])
        .expect(0);
    assert!(
        verify.stdout.starts_with("verified: claim "),
        "{}",
        verify.stdout
    );

    // A second run on the same input: a byte-identical claim.
    d.tally(&[
        "run",
        "images.tally",
        "--input",
        "in.png",
        "--output",
        "out2.jsonl",
        "--receipt",
        "r2.json",
    ])
    .expect(0);
    let claim = |f: &str| {
        serde_json::from_str::<serde_json::Value>(&d.read_string(f)).unwrap()["claim"].to_string()
    };
    assert_eq!(claim("r.json"), claim("r2.json"));
    assert_eq!(d.read("out.jsonl"), d.read("out2.jsonl"));
}

#[test]
fn a_receipt_made_natively_verifies_on_pulley() {
    let d = Dir::new();
    d.package("entropy", &[("entropy", ""), ("echo", "")], "");
    d.write("in.txt", b"");
    d.tally(&[
        "run",
        "entropy.tally",
        "--input",
        "in.txt",
        "--output",
        "o",
        "--receipt",
        "r.json",
    ])
    .expect(0);
    let v = d
        .tally(&[
            "verify",
            "r.json",
            "--input",
            "in.txt",
            "--package",
            "entropy.tally",
            "--target",
            "pulley",
            "--json",
        ])
        .expect(0);
    let verdict: serde_json::Value = serde_json::from_str(&v.stdout).unwrap();
    assert_eq!(verdict["verified"], true);
    assert_eq!(verdict["cross_target"], true);
}

#[test]
fn inspect_shows_bundles_and_receipts() {
    let d = Dir::new();
    d.package("images", IMAGE_STAGES, "");
    let human = d.tally(&["inspect", "images.tally"]).expect(0).stdout;
    assert!(human.contains("package images 0.1.0"), "{human}");
    assert!(
        human.contains("stage 1: s1 (module tensor_stats"),
        "{human}"
    );
    let json: serde_json::Value = serde_json::from_str(
        &d.tally(&["inspect", "images.tally", "--json"])
            .expect(0)
            .stdout,
    )
    .unwrap();
    assert_eq!(json["manifest"]["package"]["name"], "images");

    std::fs::copy(SAMPLE_PNG, d.path("in.png")).unwrap();
    d.tally(&[
        "run",
        "images.tally",
        "--input",
        "in.png",
        "--output",
        "o",
        "--receipt",
        "r.json",
    ])
    .expect(0);
    let r = d.tally(&["inspect", "r.json"]).expect(0).stdout;
    assert!(
        r.contains("(seal: valid)") && r.contains("outcome   ok"),
        "{r}"
    );
    let j: serde_json::Value =
        serde_json::from_str(&d.tally(&["inspect", "r.json", "--json"]).expect(0).stdout).unwrap();
    assert_eq!(j["seal_check"], "valid");
}

#[test]
fn bad_usage_and_bad_manifests_exit_2_with_a_reason() {
    let d = Dir::new();
    assert_eq!(d.tally(&["run"]).code, 2);
    d.publisher();
    d.write(
        "bad/tally.toml",
        b"[package]\nname = \"x\"\nversion = \"1\"\npublisher = \"00\"\n",
    );
    let e = d
        .tally(&[
            "pack",
            "bad/tally.toml",
            "--key",
            "publisher.key",
            "--out",
            "x.tally",
        ])
        .expect(2);
    assert!(
        e.stderr
            .contains("bad/tally.toml:4: field `package.publisher`"),
        "{}",
        e.stderr
    );
    d.write("x", b"input");
    let e = d
        .tally(&[
            "run",
            "nope",
            "--input",
            "x",
            "--output",
            "y",
            "--receipt",
            "z",
        ])
        .expect(2);
    assert!(
        e.stderr.contains("neither a bundle file nor a package id"),
        "{}",
        e.stderr
    );
}

#[test]
fn a_local_run_of_a_bundle_verifies_with_no_flags() {
    // `tally run BUNDLE` stores the package (with the receipt, transcript
    // and output), so the verification that follows needs no --package.
    let d = Dir::new();
    d.package("entropy", &[("entropy", "")], "");
    d.write("in", b"");
    d.run("entropy.tally", &[]).expect(0);
    let v = d.tally(&["verify", "r.json", "--input", "in"]).expect(0);
    assert!(v.stdout.contains("verified"), "{}", v.stdout);
}

/// A new publisher's path, as the README walks it: `tally new`, build the
/// guest, pack the authored manifest, run, verify with no flags.
#[test]
fn tally_new_to_a_verified_receipt() {
    let d = Dir::new();
    let sdk = concat!(env!("CARGO_MANIFEST_DIR"), "/../../guests/sdk");
    d.tally(&["new", "hello", "--sdk", sdk]).expect(0);
    // The scaffold refuses to overwrite, and refuses a bad name.
    d.tally(&["new", "hello", "--sdk", sdk]).expect(2);
    d.tally(&["new", "Hello"]).expect(2);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = std::process::Command::new(cargo)
        .args(["build", "--release", "--quiet"])
        .current_dir(d.path("hello"))
        // The test's own build settings are not the guest's.
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .status()
        .unwrap();
    assert!(built.success(), "the scaffold builds");
    d.publisher();
    d.tally(&[
        "pack",
        "hello/tally.toml",
        "--key",
        "publisher.key",
        "--out",
        "hello.tally",
    ])
    .expect(0);
    d.write("in", b"three small words");
    d.run("hello.tally", &[]).expect(0);
    assert_eq!(d.read_string("o"), "{\"bytes\":17,\"words\":3}\n");
    let v = d.tally(&["verify", "r.json", "--input", "in"]).expect(0);
    assert!(v.stdout.starts_with("verified"), "{}", v.stdout);
}

/// `tally.lock`: `--lock` records every file's digest; `--locked` packs
/// while they hold and names the file that changed when one does.
#[test]
fn a_locked_pack_names_the_file_that_changed() {
    let d = Dir::new();
    d.publisher();
    d.write("pkg/m.wasm", &crate::util::guest("echo"));
    d.write("pkg/data.txt", b"one");
    d.write(
        "pkg/tally.toml",
        b"[package]\nname = \"locked\"\nversion = \"1\"\n\n[modules.m]\npath = \"m.wasm\"\n\n[[files]]\npath = \"data.txt\"\n\n[[stages]]\nname = \"s\"\nmodule = \"m\"\nread = [\"data.txt\"]\n",
    );
    let pack = |extra: &str| {
        d.tally(&[
            "pack",
            "pkg/tally.toml",
            "--key",
            "publisher.key",
            "--out",
            "p.tally",
            extra,
        ])
    };
    // No lock yet.
    let e = pack("--locked").expect(2);
    assert!(e.stderr.contains("tally pack --lock"), "{}", e.stderr);
    pack("--lock").expect(0);
    let lock = d.read_string("pkg/tally.lock");
    assert!(
        lock.contains("data.txt") && lock.contains("m.wasm"),
        "{lock}"
    );
    pack("--locked").expect(0);
    d.write("pkg/data.txt", b"two");
    let e = pack("--locked").expect(2);
    assert!(
        e.stderr.contains("data.txt: locked") && !e.stderr.contains("m.wasm"),
        "{}",
        e.stderr
    );
}

/// A verifier whose own store is corrupt has a host fault (exit 3), not a
/// bad receipt or bad input: no change to the request would fix it.
#[test]
fn a_corrupt_local_store_is_a_host_fault() {
    let d = Dir::new();
    d.package("images", IMAGE_STAGES, "");
    std::fs::copy(SAMPLE_PNG, d.path("in")).unwrap();
    d.run("images.tally", &[]).expect(0);
    // Flip a byte of every stored blob (the run stored the package).
    let mut flipped = 0;
    let mut dirs = vec![d.path("home/blobs")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                let mut bytes = std::fs::read(&path).unwrap();
                if let Some(b) = bytes.last_mut() {
                    *b ^= 0xff;
                    std::fs::write(&path, &bytes).unwrap();
                    flipped += 1;
                }
            }
        }
    }
    assert!(flipped > 0);
    let v = d.tally(&["verify", "r.json", "--input", "in"]);
    assert_eq!(v.code, 3, "{}", v.stderr);
    assert!(v.stderr.contains("corrupt"), "{}", v.stderr);
}
