//! Builds `guests/portable-backend` for `wasm32-wasip1` (with simd128 and
//! relaxed-simd: `tally_guest_build::PORTABLE_FEATURES`) into
//! `OUT_DIR` so that `lib.rs` can embed it. Source paths are remapped, so
//! the module's bytes, and its digest in every claim, do not depend on where
//! the checkout or the cargo home lives.
//!
//! Needs the target: `rustup target add wasm32-wasip1`.

use std::path::PathBuf;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir
        .join("../..")
        .canonicalize()
        .expect("checkout root");
    let crate_dir = root.join("guests/portable-backend");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
    let target_dir = out_dir.join("portable");
    let release = tally_guest_build::build_for(
        &root,
        &crate_dir,
        &target_dir,
        tally_guest_build::PORTABLE_FEATURES,
    );
    let wasm = release.join("tally_portable_backend.wasm");
    println!("cargo:rustc-env=TALLY_PORTABLE_WASM={}", wasm.display());
    for dep in [
        crate_dir.join("src"),
        crate_dir.join("Cargo.toml"),
        crate_dir.join("Cargo.lock"),
        root.join("runtime/nn-tract/src"),
        root.join("runtime/nn-tract/Cargo.toml"),
    ] {
        println!("cargo:rerun-if-changed={}", dep.display());
    }
}
