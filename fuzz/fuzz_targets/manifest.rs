//! `tally.toml`: any text parses to a manifest or a located error, never a
//! panic; a manifest's id is stable under re-parsing its own text.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(m) = tally_manifest::Manifest::parse(text, "fuzz") {
        let again = tally_manifest::Manifest::parse(text, "fuzz").expect("parses twice");
        assert_eq!(m.id(), again.id());
    }
});
