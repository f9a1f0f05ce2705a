//! Builds `guests/portable-backend` for `wasm32-wasip1` (with simd128) into
//! `OUT_DIR` so that `lib.rs` can embed it. Source paths are remapped, so
//! the module's bytes, and its digest in every claim, do not depend on where
//! the checkout or the cargo home lives.
//!
//! Needs the target: `rustup target add wasm32-wasip1`.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir
        .join("../..")
        .canonicalize()
        .expect("checkout root");
    let crate_dir = root.join("guests/portable-backend");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
    let target_dir = out_dir.join("portable");
    let cargo_home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo")
        });
    let flags = [
        "-Ctarget-feature=+simd128".to_string(),
        format!("--remap-path-prefix={}=/tally", root.display()),
        format!("--remap-path-prefix={}=/cargo", cargo_home.display()),
    ]
    .join("\x1f");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&crate_dir)
        .args(["build", "--release", "--locked", "--target=wasm32-wasip1"])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", flags)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_PROFILE_RELEASE_DEBUG")
        .status()
        .expect("failed to run cargo for the portable backend");
    assert!(
        status.success(),
        "building guests/portable-backend for wasm32-wasip1 failed; is the target installed? (`rustup target add wasm32-wasip1`)"
    );
    let wasm = target_dir.join("wasm32-wasip1/release/tally_portable_backend.wasm");
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
