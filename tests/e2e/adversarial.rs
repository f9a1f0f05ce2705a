//! Hostile guests through the CLI: a receipted outcome, exit code 1, a host
//! that survives, and receipts of deterministic failures that verify.

use crate::util::Dir;

fn outcome(d: &Dir, receipt: &str) -> serde_json::Value {
    serde_json::from_str::<serde_json::Value>(&d.read_string(receipt)).unwrap()["claim"]["outcome"]
        .clone()
}

#[test]
fn every_adversarial_guest_ends_in_its_receipted_outcome() {
    let d = Dir::new();
    d.write("empty", b"");
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "spin",
            "[limits]\nfuel = 2_000_000",
            "limit_exceeded",
            "fuel",
        ),
        (
            "membomb",
            "[limits]\nmemory_bytes = 33_554_432",
            "limit_exceeded",
            "memory_bytes",
        ),
        (
            "flood",
            "[limits]\noutput_bytes = 100_000",
            "limit_exceeded",
            "output_bytes",
        ),
        (
            "chatter",
            "[limits]\nhost_calls = 100",
            "limit_exceeded",
            "host_calls",
        ),
        ("trap", "", "trap", "unreachable_code_reached"),
        ("recurse", "", "aborted", "stack_overflow"),
    ];
    for (guest, limits, kind, detail) in cases {
        d.package(guest, &[(guest, "")], limits);
        let receipt = format!("{guest}.json");
        let r = d
            .tally(&[
                "run",
                &format!("{guest}.tally"),
                "--input",
                "empty",
                "--output",
                "o",
                "--receipt",
                &receipt,
            ])
            .expect(1);
        assert!(r.stderr.contains("the run did not succeed"), "{}", r.stderr);
        let o = outcome(&d, &receipt);
        assert_eq!(o["kind"], *kind, "{guest}: {o}");
        assert!(o.to_string().contains(detail), "{guest}: {o}");
        let v = d.tally(&[
            "verify",
            &receipt,
            "--input",
            "empty",
            "--package",
            &format!("{guest}.tally"),
        ]);
        if *kind == "aborted" {
            assert_eq!(v.code, 1);
            assert!(
                v.stderr.contains("cannot be verified by replay"),
                "{}",
                v.stderr
            );
        } else {
            assert_eq!(
                v.code, 0,
                "{guest}: a deterministic failure verifies\n{}{}",
                v.stdout, v.stderr
            );
        }
    }
}

#[test]
fn guests_cannot_escape_or_reach_the_network() {
    let d = Dir::new();
    d.write("empty", b"");
    d.package("escape", &[("escape", ""), ("sockets", "")], "");
    let r = d.tally(&[
        "run",
        "escape.tally",
        "--input",
        "empty",
        "--output",
        "o",
        "--receipt",
        "r.json",
    ]);
    // The escape stage's output is the sockets stage's (ignored) stdin: check each.
    assert_eq!(r.code, 0, "{}", r.stderr);
    let out = d.read_string("o");
    assert!(
        !out.contains("CONNECTED") && !out.contains("BOUND"),
        "{out}"
    );
    let transcript = d.read_string("r.json.transcript");
    assert!(!transcript.contains("tally.grant"), "no files were granted");
}

#[cfg(unix)]
#[test]
fn keygen_never_shows_the_secret_to_a_reader_of_the_old_file() {
    // The key file is written as a new 0600 file and renamed into place:
    // a reader that opened the old (world-readable) file never sees the
    // new secret, and the new file is never readable by others.
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let d = Dir::new();
    d.write("k.key", b"old\n");
    std::fs::set_permissions(d.path("k.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut early = std::fs::File::open(d.path("k.key")).unwrap();
    d.tally(&["keygen", "--out", "k.key", "--force"]).expect(0);
    let mut seen = String::new();
    early.read_to_string(&mut seen).unwrap();
    assert_eq!(seen, "old\n", "the old file's reader saw the new secret");
    let mode = std::fs::metadata(d.path("k.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(d.read_string("k.key").trim().len(), 64);
}

/// The largest resident set (bytes) any child of this test process has
/// had so far: an upper bound on each `tally` run's peak.
fn children_peak_rss() -> u64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) }, 0);
    u.ru_maxrss as u64 * 1024
}

#[test]
fn a_graph_that_folds_into_gigabytes_is_refused_within_the_analysis_cap() {
    // A few hundred bytes of ONNX: ConstantOfShape([rows, cols]) summed.
    // Typing or loading it natively folds the whole constant (8 GiB and
    // 1 GiB here); the host must refuse it on every backend at load, before
    // any engine folds it, and stay far below that: the check runs in the
    // portable engine, capped at 1 GiB (tract in wasm32 also refuses a
    // constant it cannot address).
    let d = Dir::new();
    d.write("in", &[0u8; 4]);
    let ort = tally_test_artifacts::pkg::assets_dir().join("libonnxruntime.so.1.31.1");
    let mut kept = Vec::new();
    for (rows, cols) in [(65536, 32768), (16384, 16384)] {
        let graph = tally_test_artifacts::onnx::constant_of_shape_sum(rows, cols);
        kept.push(format!("load-{}", tally_digest::Digest::of(&graph)));
        d.write("fold/g.onnx", &graph);
        let extra = format!(
            "[graphs.g]\npath = \"g.onnx\"\ndigest = \"{}\"\n",
            tally_digest::Digest::of(&graph)
        );
        d.package(
            "fold",
            &[("nn-run", "graphs = [\"g\"]\nargs = [\"g\", \"1\"]")],
            &extra,
        );
        for backend in [
            &["--backend", "tract"][..],
            &["--backend", "portable"],
            &[
                "--backend",
                "onnxruntime",
                "--ort-lib",
                ort.to_str().unwrap(),
            ],
        ] {
            d.run("fold.tally", backend).expect(1);
            let o = outcome(&d, "r.json");
            // nn-run exits 10 + errno: load_by_name answered runtime_error.
            assert_eq!(o["kind"], "exit", "{rows}×{cols} {backend:?}: {o}");
            assert_eq!(o["code"], 15, "{rows}×{cols} {backend:?}: {o}");
            let transcript = d.read_string("r.json.transcript");
            let load = transcript
                .lines()
                .find(|l| l.contains("load_by_name"))
                .unwrap();
            assert!(
                load.contains(r#""results":[5]"#)
                    && (load.contains("within its 1024 MiB") || load.contains("too large")),
                "{rows}×{cols} {backend:?}: {load}"
            );
        }
    }
    // The refusal tract decided (a constant it will not materialise) is
    // kept on disk for the next process; the one the memory cap trapped is
    // not (a trap is not always the graph's doing).
    let on_disk: Vec<String> = std::fs::read_dir(d.path("home/cache/analyses"))
        .unwrap()
        .flat_map(|m| std::fs::read_dir(m.unwrap().path()).unwrap())
        .map(|f| f.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("load-"))
        .collect();
    assert_eq!(on_disk, &kept[..1], "{on_disk:?}");
    let peak = children_peak_rss();
    assert!(
        peak < 3 << 30,
        "a tally process peaked at {} MiB",
        peak >> 20
    );
}
