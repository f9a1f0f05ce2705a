//! Builds WebAssembly guests for `wasm32-wasip1` from a build script, the
//! same way everywhere: the portable backend (`tally-portable-module`) and
//! the guests of `guests/` (`tally-test-artifacts`) use it.
//!
//! **Reproducible:** rustc writes source paths into a module (panic
//! locations); a dependency's path is absolute, under the checkout or the
//! cargo home, so two checkouts would build different bytes. The build
//! remaps both prefixes to fixed names (`/tally`, `/cargo`), so a package's
//! module digests can be checked by anyone who rebuilds from the same source
//! with the same toolchain (`scripts/check-reproducible.sh` compares two
//! checkouts). `scripts/demo.sh` sets the same flags ([`rustflags`]).
//!
//! Needs the target: `rustup target add wasm32-wasip1`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The target features of every guest: 128-bit SIMD (the sandbox enables
/// it).
pub const GUEST_FEATURES: &str = "+simd128";

/// The target features of the portable backend (tract in wasm): SIMD and
/// relaxed SIMD, which tract's wasm kernels use for fused multiply-adds.
/// The sandbox's profile lowers relaxed SIMD deterministically (a relaxed
/// multiply-add is fused on every host, under Pulley too), so these
/// kernels compute the same bits everywhere.
pub const PORTABLE_FEATURES: &str = "+simd128,+relaxed-simd";

/// The rustc flags of every guest build, `\x1f`-separated as
/// `CARGO_ENCODED_RUSTFLAGS` takes them: [`GUEST_FEATURES`] and the two
/// path remappings. `root` is the checkout.
pub fn rustflags(root: &Path) -> String {
    rustflags_for(root, GUEST_FEATURES)
}

/// [`rustflags`] with other target `features` (as `-Ctarget-feature`
/// takes them).
pub fn rustflags_for(root: &Path, features: &str) -> String {
    [
        format!("-Ctarget-feature={features}"),
        format!("--remap-path-prefix={}=/tally", root.display()),
        format!("--remap-path-prefix={}=/cargo", cargo_home().display()),
    ]
    .join("\x1f")
}

/// The cargo home: `$CARGO_HOME`, else `~/.cargo`.
pub fn cargo_home() -> PathBuf {
    std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo"))
}

/// Builds the crate or workspace in `dir` (release, locked) into
/// `target_dir` with [`GUEST_FEATURES`] and returns the directory holding
/// its `.wasm` files. Flags meant for the host build never leak into the
/// guests.
///
/// # Panics
///
/// When cargo fails, with a message saying what to install.
pub fn build(root: &Path, dir: &Path, target_dir: &Path) -> PathBuf {
    build_for(root, dir, target_dir, GUEST_FEATURES)
}

/// [`build`] with other target `features`.
///
/// # Panics
///
/// As [`build`].
pub fn build_for(root: &Path, dir: &Path, target_dir: &Path, features: &str) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(dir)
        .args(["build", "--release", "--locked", "--target=wasm32-wasip1"])
        .arg("--manifest-path")
        .arg(dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags_for(root, features))
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_PROFILE_RELEASE_DEBUG")
        .status()
        .expect("failed to run cargo for the guests");
    assert!(
        status.success(),
        "building {} for wasm32-wasip1 failed; is the target installed? (`rustup target add wasm32-wasip1`)",
        dir.display()
    );
    target_dir.join("wasm32-wasip1/release")
}
