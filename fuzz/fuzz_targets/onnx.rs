//! The ONNX policy check and metadata reader on arbitrary bytes: accepted
//! or refused with a reason, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let _ = tally_nn_tract::check_onnx(bytes);
    let _ = tally_nn_tract::onnx_metadata(bytes);
});
