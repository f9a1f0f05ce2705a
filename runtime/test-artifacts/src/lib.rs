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

#[cfg(test)]
mod tests {
    /// Every guest, and the portable backend, carries no path of this
    /// checkout or of the cargo home: built from the same source anywhere
    /// else, it has the same bytes, and so the same digest in a package.
    #[test]
    fn guests_carry_no_host_paths() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .canonicalize()
            .unwrap();
        let home = tally_guest_build::cargo_home();
        let prefixes = [root.display().to_string(), home.display().to_string()];
        let mut modules: Vec<(&str, Vec<u8>)> = crate::ALL
            .iter()
            .map(|(name, path)| (*name, std::fs::read(path).unwrap()))
            .collect();
        modules.push(("portable backend", tally_portable_module::WASM.to_vec()));
        for (name, bytes) in &modules {
            for prefix in &prefixes {
                assert!(
                    !bytes.windows(prefix.len()).any(|w| w == prefix.as_bytes()),
                    "{name} contains the host path {prefix}"
                );
            }
        }
    }
}
