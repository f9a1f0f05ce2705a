//! Paths to the guest programs of `guests/`, compiled for `wasm32-wasip1` by
//! this crate's build script (like wasmtime's test-programs artifacts), so
//! that tests and benchmarks run real WebAssembly built from source rather
//! than committed binaries.
//!
//! Each guest binary `NAME` becomes a constant `NAME` (uppercase, `-` as
//! `_`) holding the absolute path of its `.wasm` file, and
//! [`foreach_guest!`] calls a macro once per guest, so a test suite can check
//! that every guest has a test. [`pkg::Pkg`] builds signed packages of
//! guests in memory. [`text::render`] draws known text with a real
//! TrueType font, for the OCR tests and benchmark.

include!(concat!(env!("OUT_DIR"), "/guests.rs"));

pub mod onnx;
pub mod pkg;
pub mod text;
