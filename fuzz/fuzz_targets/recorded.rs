//! Recorded inference outputs (`RECEIPT.tensors`, checked tensors): any
//! bytes decode or fail cleanly, and what decodes re-encodes to itself.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tally_nn_tract::{decode_tensors, encode_tensors};
use tally_receipt::{decode_recorded, RecordedComputes, Transcript};

fuzz_target!(|bytes: &[u8]| {
    if let Ok(ts) = decode_tensors(bytes, 1 << 20) {
        assert_eq!(encode_tensors(&ts), bytes);
    }
    let t = Transcript::new();
    let _ = decode_recorded(bytes, &t);
    let _ = RecordedComputes::decode(bytes, &t);
});
