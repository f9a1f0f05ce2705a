//! The `portable` inference backend's module: tract compiled to
//! `wasm32-wasip1` with simd128 (`guests/portable-backend`), embedded.
//!
//! [`WASM`] is what `tally-sandbox` instantiates behind wasi-nn when a run
//! selects the portable backend; its digest is part of the backend detail
//! every such claim records.

/// The module's bytes.
pub static WASM: &[u8] = include_bytes!(env!("TALLY_PORTABLE_WASM"));
