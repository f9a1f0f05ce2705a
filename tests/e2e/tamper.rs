//! Forged, truncated, edited and re-sealed receipts; corrupted bundles.

use crate::util::{Dir, Ran};

fn setup() -> Dir {
    let d = Dir::new();
    d.package("entropy", &[("entropy", "")], "");
    d.write("in", b"");
    d.run("entropy.tally", &[]).expect(0);
    d
}

/// `tally verify RECEIPT --input in --package entropy.tally EXTRA…`,
/// expecting exit code `code`.
fn verify(d: &Dir, receipt: &str, extra: &[&str], code: i32) -> Ran {
    let mut args = vec![
        "verify",
        receipt,
        "--input",
        "in",
        "--package",
        "entropy.tally",
    ];
    args.extend_from_slice(extra);
    d.tally(&args).expect(code)
}

fn edit(d: &Dir, from: &str, to: &str, f: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value = serde_json::from_str(&d.read_string(from)).unwrap();
    f(&mut v);
    d.write(to, serde_json::to_string_pretty(&v).unwrap().as_bytes());
}

#[test]
fn an_edited_claim_fails_the_seal() {
    let d = setup();
    edit(&d, "r.json", "edited.json", |v| {
        v["claim"]["fuel_consumed"] = 1.into()
    });
    let e = verify(&d, "edited.json", &[], 1);
    assert!(
        e.stderr.contains("bad seal: the claim was edited"),
        "{}",
        e.stderr
    );
}

#[test]
fn a_forged_signature_fails() {
    let d = setup();
    edit(&d, "r.json", "forged.json", |v| {
        let sig = v["seal"]["signature"].as_str().unwrap().to_string();
        let first = if sig.as_bytes()[0] == b'0' { '1' } else { '0' };
        let flipped = format!("{first}{}", &sig[1..]);
        v["seal"]["signature"] = flipped.into();
    });
    let e = verify(&d, "forged.json", &[], 1);
    assert!(e.stderr.contains("forged or re-sealed"), "{}", e.stderr);
}

#[test]
fn truncated_and_unknown_receipts_are_bad_input() {
    let d = setup();
    let text = d.read_string("r.json");
    d.write("short.json", &text.as_bytes()[..text.len() / 3]);
    let e = d
        .tally(&["verify", "short.json", "--input", "in"])
        .expect(2);
    assert!(e.stderr.contains("malformed receipt"), "{}", e.stderr);
}

/// Re-seals `r.json` with a new key after `f` edits the claim.
fn reseal(d: &Dir, f: impl FnOnce(&mut serde_json::Value)) {
    edit(d, "r.json", "resealed.json", f);
    // Use the library to seal the edited claim with a fresh "attacker" key.
    let receipt: tally_receipt::Receipt =
        serde_json::from_str(&d.read_string("resealed.json")).unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
    let forged = tally_receipt::Receipt::seal(receipt.claim, &key, receipt.metadata);
    d.write("resealed.json", forged.to_json().as_bytes());
}

#[test]
fn a_resealed_lie_is_caught_by_replay_with_the_field_named() {
    let d = setup();
    reseal(&d, |v| {
        v["claim"]["output"] = tally_digest::Digest::of(b"a lie").to_string().into()
    });
    let e = verify(&d, "resealed.json", &[], 1);
    assert!(e.stdout.contains("NOT verified"), "{}", e.stdout);
    assert!(e.stdout.contains("output: receipt says"), "{}", e.stdout);
    // And with a trust list, the new key is refused outright.
    let e = verify(&d, "resealed.json", &["--trust", "home/host.key.pub"], 1);
    assert!(
        e.stderr.contains("not among the trusted keys"),
        "{}",
        e.stderr
    );
}

#[test]
fn a_changed_seed_is_localised_to_the_first_divergent_host_call() {
    let d = setup();
    reseal(&d, |v| {
        v["claim"]["seed"] = tally_digest::Digest::of(b"other").to_string().into()
    });
    std::fs::copy(
        d.path("r.json.transcript"),
        d.path("resealed.json.transcript"),
    )
    .unwrap();
    let e = verify(&d, "resealed.json", &[], 1);
    assert!(
        e.stdout.contains("transcripts diverge at host call #"),
        "{}",
        e.stdout
    );
    assert!(e.stdout.contains("random_get"), "{}", e.stdout);
    // The replay used the receipt's seed, so what differs is what it caused.
    assert!(e.stdout.contains("output: receipt says"), "{}", e.stdout);
}

#[test]
fn corrupted_bundles_are_rejected_before_anything_runs() {
    let d = setup();
    let mut bytes = d.read("entropy.tally");
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    d.write("corrupt.tally", &bytes);
    let e = d.tally(&["publish", "corrupt.tally"]).expect(2);
    assert!(e.stderr.contains("not a valid bundle"), "{}", e.stderr);
    d.write("short.tally", &d.read("entropy.tally")[..700]);
    let e = d
        .tally(&[
            "run",
            "short.tally",
            "--input",
            "in",
            "--output",
            "o",
            "--receipt",
            "x.json",
        ])
        .expect(2);
    assert!(e.stderr.contains("corrupt bundle"), "{}", e.stderr);
    assert!(!d.path("x.json").exists());
}
