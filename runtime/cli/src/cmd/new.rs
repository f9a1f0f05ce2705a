//! `tally new`: a publisher's first package, one command away: a guest
//! crate on the SDK and its authored manifest.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use clap::Args;

use super::{write, Result};

/// `tally new`
#[derive(Args)]
pub struct NewArgs {
    /// The package name: lowercase ASCII letters, digits and `-`.
    name: String,
    /// Where to create it (default: ./NAME).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// The guest SDK (`guests/sdk` of a Tally checkout); default: the
    /// Tally repository on GitHub.
    #[arg(long, value_name = "DIR")]
    sdk: Option<PathBuf>,
}

pub fn new(a: NewArgs) -> Result<()> {
    let name = &a.name;
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.as_bytes()[0].is_ascii_lowercase();
    if !valid {
        return Err(anyhow!(
            "`{name}` is not a package name: use lowercase ASCII letters, digits and `-`, starting with a letter"
        )
        .into());
    }
    let dir = a.dir.clone().unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() {
        return Err(anyhow!("{} exists; choose another name or --dir", dir.display()).into());
    }
    let sdk = match &a.sdk {
        Some(p) => {
            let p = p
                .canonicalize()
                .with_context(|| format!("--sdk {}", p.display()))?;
            if !p.join("Cargo.toml").is_file() {
                return Err(anyhow!("--sdk {}: no Cargo.toml there", p.display()).into());
            }
            format!("path = {}", toml_string(&p))
        }
        None => "git = \"https://github.com/tally-rt/tally\"".to_string(),
    };
    std::fs::create_dir_all(dir.join("src"))
        .with_context(|| format!("creating {}", dir.display()))?;
    std::fs::create_dir_all(dir.join(".cargo"))?;
    let files = [
        ("Cargo.toml", cargo_toml(name, &sdk)),
        (".cargo/config.toml", CARGO_CONFIG.to_string()),
        ("src/main.rs", MAIN_RS.to_string()),
        ("tally.toml", manifest(name)),
        (".gitignore", "/target\n*.tally\n*.key\n".to_string()),
    ];
    for (path, text) in &files {
        write(&dir.join(path), text.as_bytes())?;
    }
    eprintln!(
        "created {}: build with `cargo build --release` there, then `tally pack tally.toml --key KEY --out {name}.tally`",
        dir.display()
    );
    Ok(())
}

fn toml_string(p: &Path) -> String {
    toml::Value::String(p.display().to_string()).to_string()
}

fn cargo_toml(name: &str, sdk: &str) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2021"

[dependencies]
tally-guest = {{ {sdk} }}

# Its own workspace: built for wasm32-wasip1 (see .cargo/config.toml).
[workspace]

# Small, deterministic modules: no unwinding, one codegen unit.
[profile.release]
opt-level = 3
lto = true
codegen-units = 1
panic = "abort"
strip = true
"#
    )
}

const CARGO_CONFIG: &str = r#"# A Tally stage is a WASI command. 128-bit SIMD is enabled by the sandbox.
[build]
target = "wasm32-wasip1"

[target.wasm32-wasip1]
rustflags = ["-C", "target-feature=+simd128"]
"#;

const MAIN_RS: &str = r#"//! A Tally stage: the run input on stdin, the output on stdout. It may
//! read only what its manifest grants; clocks and randomness are virtual and
//! fixed, so the same input always gives the same output.

fn main() {
    let input = tally_guest::read_input();
    let text = String::from_utf8_lossy(&input);
    let words = text.split_whitespace().count();
    let out = format!("{{\"bytes\":{},\"words\":{words}}}\n", input.len());
    tally_guest::write_output(out.as_bytes());
}
"#;

fn manifest(name: &str) -> String {
    format!(
        r#"# Authored: `tally pack` fills in the module's digest and the publisher
# (from --key).
[package]
name = "{name}"
version = "0.1.0"
description = "Counts the bytes and words of its input."

[limits]
fuel = 100_000_000

[modules.main]
path = "{name}.wasm"
source = "target/wasm32-wasip1/release/{name}.wasm"

[[stages]]
name = "count"
module = "main"
"#
    )
}
