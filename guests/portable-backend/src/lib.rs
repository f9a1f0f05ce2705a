//! The `portable` inference backend: tract, compiled to WebAssembly.
//!
//! The host instantiates this module in its own metered wasmtime store and
//! drives it through a small ABI of exported functions; results are the
//! same on every host because wasm arithmetic is (NaN canonicalisation on).
//!
//! ABI (all integers are wasm `i32` unless said otherwise):
//! - `tally_alloc(len) -> ptr` / `tally_free(ptr, len)`: buffers the host
//!   fills or reads.
//! - `tally_load(ptr, len) -> handle`: parses and checks an ONNX graph;
//!   `-1` on error.
//! - `tally_run(handle, ptr, len, max_output_bytes) -> status`: runs the
//!   graph on tensors encoded with `tally_nn_tract::encode_tensors`; `0`
//!   on success.
//! - `tally_cost(handle, ptr, len) -> status`: the static cost of the graph
//!   for the input signature encoded with `tally_nn_tract::encode_signature`
//!   (u64 little-endian as the result); `0` on success. The host runs it
//!   under a memory cap: analysing a graph folds its constants, and this is
//!   where a hostile graph's folding is bounded.
//! - `tally_fold(handle) -> status`: types and declutters the graph with its
//!   declared inputs (folding its input-independent constants) and drops
//!   the result; run under a memory cap before a native engine loads it.
//!   `0` when done, `1` with the message when tract could not.
//! - `tally_result_ptr()` / `tally_result_len()`: the encoded outputs of
//!   the last successful run, or the message of the last error.

use std::cell::RefCell;

use tally_nn_tract::{decode_signature, decode_tensors, encode_tensors, Model};

/// Distinct input signatures planned per graph.
const MAX_PLANS: usize = 8;

thread_local! {
    static MODELS: RefCell<Vec<Model>> = const { RefCell::new(Vec::new()) };
    static RESULT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn set_result(bytes: Vec<u8>) {
    RESULT.with(|r| *r.borrow_mut() = bytes);
}

/// Allocates `len` bytes for the host to fill.
#[no_mangle]
pub extern "C" fn tally_alloc(len: u32) -> *mut u8 {
    let mut v = Vec::<u8>::with_capacity(len as usize);
    let p = v.as_mut_ptr();
    std::mem::forget(v);
    p
}

/// Frees a buffer from [`tally_alloc`].
///
/// # Safety
/// `ptr` and `len` come from one `tally_alloc` call, freed once.
#[no_mangle]
pub unsafe extern "C" fn tally_free(ptr: *mut u8, len: u32) {
    // SAFETY: per the contract above.
    drop(unsafe { Vec::from_raw_parts(ptr, 0, len as usize) });
}

/// # Safety
/// `ptr..ptr+len` is a live allocation from [`tally_alloc`].
unsafe fn bytes<'a>(ptr: *const u8, len: u32) -> &'a [u8] {
    // SAFETY: per the contract above.
    unsafe { std::slice::from_raw_parts(ptr, len as usize) }
}

/// Loads an ONNX graph; returns its handle, or -1 with the error as result.
///
/// # Safety
/// `ptr..ptr+len` is a live allocation from [`tally_alloc`].
#[no_mangle]
pub unsafe extern "C" fn tally_load(ptr: *const u8, len: u32) -> i32 {
    // SAFETY: per the contract above.
    match Model::load(unsafe { bytes(ptr, len) }, MAX_PLANS) {
        Ok(m) => MODELS.with(|ms| {
            let mut ms = ms.borrow_mut();
            ms.push(m);
            (ms.len() - 1) as i32
        }),
        Err(e) => {
            set_result(e.to_string().into_bytes());
            -1
        }
    }
}

/// Applies `f` to graph `handle`.
fn with_model<T>(handle: i32, f: impl FnOnce(&mut Model) -> Result<T, String>) -> Result<T, String> {
    MODELS.with(|ms| {
        let mut ms = ms.borrow_mut();
        let model = ms
            .get_mut(handle as usize)
            .ok_or_else(|| format!("no graph with handle {handle}"))?;
        f(model)
    })
}

/// The status an entry point returns: `0` with `ok`'s bytes as the result,
/// or `1` with the error message.
fn answer(outcome: Result<Vec<u8>, String>) -> i32 {
    let (status, result) = match outcome {
        Ok(bytes) => (0, bytes),
        Err(e) => (1, e.into_bytes()),
    };
    set_result(result);
    status
}

/// Runs graph `handle` on the encoded input tensors.
///
/// # Safety
/// `ptr..ptr+len` is a live allocation from [`tally_alloc`].
#[no_mangle]
pub unsafe extern "C" fn tally_run(
    handle: i32,
    ptr: *const u8,
    len: u32,
    max_output_bytes: u32,
) -> i32 {
    let max = max_output_bytes as usize;
    // SAFETY: per the contract above.
    let input = unsafe { bytes(ptr, len) };
    answer(with_model(handle, |model| {
        let inputs = decode_tensors(input, max).map_err(|e| e.to_string())?;
        let sig = inputs.iter().map(|t| (t.ty(), t.dims().to_vec())).collect();
        let plan = model.plan(&sig).map_err(|e| e.to_string())?;
        let outputs = plan.run(&inputs, max).map_err(|e| e.to_string())?;
        Ok(encode_tensors(&outputs))
    }))
}

/// The static cost of graph `handle` for an encoded input signature.
///
/// # Safety
/// `ptr..ptr+len` is a live allocation from [`tally_alloc`].
#[no_mangle]
pub unsafe extern "C" fn tally_cost(handle: i32, ptr: *const u8, len: u32) -> i32 {
    // SAFETY: per the contract above.
    let input = unsafe { bytes(ptr, len) };
    answer(with_model(handle, |model| {
        let sig = decode_signature(input).map_err(|e| e.to_string())?;
        let cost = model.cost(&sig).map_err(|e| e.to_string())?;
        Ok(cost.to_le_bytes().to_vec())
    }))
}

/// Folds the constants of graph `handle` (see the crate docs).
#[no_mangle]
pub extern "C" fn tally_fold(handle: i32) -> i32 {
    answer(with_model(handle, |model| {
        model.fold_constants().map_err(|e| e.to_string())?;
        Ok(Vec::new())
    }))
}

/// Address of the last result.
#[no_mangle]
pub extern "C" fn tally_result_ptr() -> *const u8 {
    RESULT.with(|r| r.borrow().as_ptr())
}

/// Length of the last result.
#[no_mangle]
pub extern "C" fn tally_result_len() -> u32 {
    RESULT.with(|r| r.borrow().len() as u32)
}
