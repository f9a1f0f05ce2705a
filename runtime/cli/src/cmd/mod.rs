//! One module per subcommand (flags and the function that runs it), and
//! what several of them share: reading files and keys, the sandbox the
//! flags describe, progress display.

pub mod fsck;
pub mod graph_meta;
pub mod hash;
pub mod inspect;
pub mod keygen;
pub mod new;
pub mod pack;
pub mod publish;
pub mod run;
pub mod serve;
pub mod verify;

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use clap::{Args, ValueEnum};
use ed25519_dalek::SigningKey;
use indicatif::{ProgressBar, ProgressStyle};
use tally_digest::Digest;
use tally_package::{Package, DEFAULT_MAX_BUNDLE_BYTES};
use tally_sandbox::{BackendKind, OrtConfig, Sandbox, SandboxConfig, Target};
use tally_store::Store;

use crate::Failure;

/// A subcommand's result.
pub type Result<T> = std::result::Result<T, Failure>;

/// Where compiled code runs.
#[derive(Clone, Copy, ValueEnum)]
pub enum TargetArg {
    /// Cranelift machine code for this host.
    Native,
    /// wasmtime's Pulley interpreter (same results, slower).
    Pulley,
}

/// Which inference backend serves wasi-nn.
#[derive(Args, Clone)]
pub struct BackendArgs {
    /// Inference backend: portable (tract in wasm, the same bits on every
    /// host), tract (native) or onnxruntime.
    #[arg(long, value_name = "NAME", default_value = "portable")]
    pub backend: BackendKind,
    /// With `--backend tract`: force generic kernels (the same on every
    /// host of an architecture) instead of the CPU's best.
    #[arg(long)]
    pub tract_generic: bool,
    /// With a native backend (tract, onnxruntime): intra-op threads per
    /// inference. Recorded in the receipt's backend detail; a replay with
    /// another count checks within the manifest's tolerances.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: u16,
    /// With `--backend onnxruntime`: the library (default: $ORT_DYLIB_PATH,
    /// else .assets/libonnxruntime.so.1.31.1; scripts/fetch-assets.sh gets it).
    #[arg(long, value_name = "FILE")]
    pub ort_lib: Option<PathBuf>,
}

pub fn read(path: &Path) -> Result<Vec<u8>> {
    Ok(std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?)
}

pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    Ok(std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))?)
}

pub fn read_key(path: &Path) -> Result<SigningKey> {
    let text = String::from_utf8(read(path)?)
        .map_err(|_| anyhow!("{}: not a key file", path.display()))?;
    Ok(tally_package::parse_signing_key(&text).ok_or_else(|| {
        anyhow!(
            "{}: expected 64 hex digits (a secret key from `tally keygen`)",
            path.display()
        )
    })?)
}

/// Writes a secret atomically: a new file created with mode 0600 beside
/// `path` (never readable by others, not even for a moment), synced, then
/// renamed over `path`. A reader that had the old file open keeps reading
/// the old file.
fn write_secret(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = secret_builder()
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a key file in {}", dir.display()))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("cannot write {}", tmp.path().display()))?;
    tmp.persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(unix)]
fn secret_builder() -> tempfile::Builder<'static, 'static> {
    use std::os::unix::fs::PermissionsExt;
    let mut b = tempfile::Builder::new();
    b.prefix(".tally-key")
        .permissions(std::fs::Permissions::from_mode(0o600));
    b
}

#[cfg(not(unix))]
fn secret_builder() -> tempfile::Builder<'static, 'static> {
    let mut b = tempfile::Builder::new();
    b.prefix(".tally-key");
    b
}

pub fn write_keypair(out: &Path, key: &SigningKey) -> Result<()> {
    let public = out.with_extension(match out.extension() {
        Some(e) => format!("{}.pub", e.to_string_lossy()),
        None => "pub".into(),
    });
    write_secret(out, format!("{}\n", hex::encode(key.to_bytes())).as_bytes())?;
    write(
        &public,
        format!("{}\n", hex::encode(key.verifying_key().as_bytes())).as_bytes(),
    )
}

pub fn progress_bar(len: u64) -> ProgressBar {
    // indicatif draws only when stderr is a terminal: quiet when piped.
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg:30!} [{bar:30}] {bytes}/{total_bytes}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}

/// A bundle path, or a package id in the store.
pub fn load_package(spec: &str, store: &Path) -> Result<Package> {
    let path = Path::new(spec);
    if path.exists() {
        return Ok(Package::from_bundle_file(path, DEFAULT_MAX_BUNDLE_BYTES)
            .with_context(|| format!("{spec} is not a valid bundle"))?);
    }
    let id: Digest = spec
        .parse()
        .map_err(|e| anyhow!("`{spec}` is neither a bundle file nor a package id ({e})"))?;
    let store = Store::open(store)?;
    Ok(store
        .get_package(&id)
        .with_context(|| format!("loading package {id} from {}", store.root().display()))?)
}

pub fn sandbox(store: &Path, target: TargetArg, nn: &BackendArgs) -> Result<Sandbox> {
    let target = match target {
        TargetArg::Native => Target::Native,
        TargetArg::Pulley => Target::Pulley,
    };
    let mut ort = OrtConfig::default();
    if let Some(lib) = &nn.ort_lib {
        ort.library = lib.clone();
    }
    let config = SandboxConfig::default()
        .target(target)
        .pooling(true)
        .cache_dir(store.join("cache"))
        .backend(nn.backend)
        .tract_generic(nn.tract_generic)
        .threads(nn.threads.into())
        .ort(ort);
    Ok(Sandbox::new(config)?)
}

pub fn host_key(arg: Option<&PathBuf>, store: &Path) -> Result<SigningKey> {
    if let Some(path) = arg {
        return read_key(path);
    }
    let path = store.join("host.key");
    if path.exists() {
        return read_key(&path);
    }
    std::fs::create_dir_all(store).with_context(|| format!("creating {}", store.display()))?;
    let key = SigningKey::generate(&mut rand_core::OsRng);
    write_keypair(&path, &key)?;
    eprintln!("created host key {}", path.display());
    Ok(key)
}

pub fn spinner(msg: &'static str) -> ProgressBar {
    let s = ProgressBar::new_spinner();
    s.set_message(msg);
    s.enable_steady_tick(std::time::Duration::from_millis(100));
    s
}
