//! Receipts and transcripts as a verifier reads them: JSON and JSON lines
//! from anyone. A receipt that parses round-trips; a transcript is accepted
//! only under its own root.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tally_receipt::{Receipt, Transcript};

fuzz_target!(|text: &str| {
    if let Ok(r) = Receipt::from_json(text) {
        let back = Receipt::from_json(&r.to_json()).expect("a receipt round-trips");
        assert_eq!(back, r);
        let _ = r.claim.digest();
    }
    let root = tally_digest::Digest::of(text.as_bytes());
    let _ = Transcript::from_jsonl(text, &root);
    // Under its own root, whatever parses must re-hash to it.
    let calls: Vec<_> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<tally_receipt::HostCall>(l).ok())
        .collect();
    let mut t = Transcript::new();
    for c in calls {
        t.push(c);
    }
    let text = t.to_jsonl();
    let back = Transcript::from_jsonl(&text, &t.root()).expect("a transcript round-trips");
    assert_eq!(back.root(), t.root());
});
