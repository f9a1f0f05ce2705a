//! Bundles: any bytes are a checked package or an error, within the size
//! cap, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let _ = tally_package::Package::from_bundle(bytes, 1 << 20);
});
