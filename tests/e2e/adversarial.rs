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
            "memory",
        ),
        (
            "flood",
            "[limits]\noutput_bytes = 100_000",
            "limit_exceeded",
            "output",
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
