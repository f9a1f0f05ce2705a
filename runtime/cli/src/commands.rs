//! One function per subcommand.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use clap::{Args, ValueEnum};
use ed25519_dalek::SigningKey;
use indicatif::{ProgressBar, ProgressStyle};
use tally_digest::Digest;
use tally_host::{FirstOf, Host, SourceError, Sources, StoreSources, VerifyError};
use tally_package::{Package, DEFAULT_MAX_BUNDLE_BYTES};
use tally_receipt::{decode_recorded, encode_recorded, Receipt, Transcript};
use tally_sandbox::{BackendKind, OrtConfig, RunRequest, Sandbox, SandboxConfig, Target};
use tally_store::Store;

use crate::Failure;

type Result<T> = std::result::Result<T, Failure>;

fn fail(error: anyhow::Error) -> Failure {
    Failure { code: 1, error }
}

/// `tally keygen`
#[derive(Args)]
pub struct KeygenArgs {
    /// Where to write the secret key; the public key goes to KEY.pub.
    #[arg(long, value_name = "KEY")]
    out: PathBuf,
    /// Overwrite existing files.
    #[arg(long)]
    force: bool,
}

/// `tally pack`
#[derive(Args)]
pub struct PackArgs {
    /// The manifest (tally.toml); files are relative to its directory.
    manifest: PathBuf,
    /// The publisher's secret key (from `tally keygen`).
    #[arg(long, value_name = "KEY")]
    key: PathBuf,
    /// Where to write the bundle.
    #[arg(long, value_name = "FILE.tally")]
    out: PathBuf,
}

/// `tally publish`
#[derive(Args)]
pub struct PublishArgs {
    /// The bundle to add to the store.
    bundle: PathBuf,
    /// Talk to a `tally serve` host at this URL instead of working locally.
    #[arg(long, value_name = "URL")]
    host: Option<String>,
}

/// Where compiled code runs.
#[derive(Clone, Copy, ValueEnum)]
enum TargetArg {
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
    backend: BackendKind,
    /// With `--backend tract`: force generic kernels (the same on every
    /// host of an architecture) instead of the CPU's best.
    #[arg(long)]
    tract_generic: bool,
    /// With `--backend onnxruntime`: the library (default: $ORT_DYLIB_PATH,
    /// else .assets/libonnxruntime.so.1.31.1; scripts/fetch-assets.sh gets it).
    #[arg(long, value_name = "FILE")]
    ort_lib: Option<PathBuf>,
}

/// `tally run`
#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    nn: BackendArgs,
    /// A bundle path, or a package id in the store.
    package: String,
    /// The run input.
    #[arg(long, value_name = "FILE")]
    input: PathBuf,
    /// Where to write the output.
    #[arg(long, value_name = "FILE")]
    output: PathBuf,
    /// Where to write the receipt (JSON); the transcript goes next to it as
    /// RECEIPT.transcript.
    #[arg(long, value_name = "FILE")]
    receipt: PathBuf,
    /// Fuel for the run (default: the manifest's, capped by host policy).
    #[arg(long, value_name = "N")]
    fuel: Option<u64>,
    /// Seed for the guests' randomness, 64 hex digits (default: derived
    /// from the package id and the input digest).
    #[arg(long, value_name = "HEX")]
    seed: Option<String>,
    /// The host's secret key (default: STORE/host.key, created on first use).
    #[arg(long, value_name = "HOSTKEY")]
    key: Option<PathBuf>,
    /// Where compiled code runs.
    #[arg(long, value_enum, default_value = "native")]
    target: TargetArg,
    /// Run on a `tally serve` host at this URL (a bundle path is uploaded
    /// first); the token comes from $TALLY_TOKEN.
    #[arg(long, value_name = "URL")]
    host: Option<String>,
}

/// `tally verify`
#[derive(Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    nn: BackendArgs,
    /// The receipt to verify.
    receipt: PathBuf,
    /// The run input the receipt is about.
    #[arg(long, value_name = "FILE")]
    input: PathBuf,
    /// A bundle path or package id (default: the receipt's package, from the store).
    #[arg(long, value_name = "PACKAGE")]
    package: Option<String>,
    /// The receipt's transcript (default: RECEIPT.transcript, else the store).
    #[arg(long, value_name = "FILE")]
    transcript: Option<PathBuf>,
    /// Accept only receipts sealed by these host public keys (KEY.pub files).
    #[arg(long, value_name = "KEY.pub")]
    trust: Vec<PathBuf>,
    /// Where the replay's compiled code runs.
    #[arg(long, value_enum, default_value = "native")]
    target: TargetArg,
    /// Print the verdict as JSON.
    #[arg(long)]
    json: bool,
    /// Fetch the package and transcript from this `tally serve` host when
    /// they are not local; the replay still runs here.
    #[arg(long, value_name = "URL")]
    host: Option<String>,
}

/// `tally hash`
#[derive(Args)]
pub struct HashArgs {
    /// Files to hash.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

/// `tally graph-meta`
#[derive(Args)]
pub struct GraphMetaArgs {
    /// An ONNX model file.
    model: PathBuf,
    /// Print only this key's value, exactly as stored (e.g. `character`,
    /// the character set of a PP-OCR recogniser).
    key: Option<String>,
}

/// `tally inspect`
#[derive(Args)]
pub struct InspectArgs {
    /// A bundle (.tally) or a receipt (.json).
    file: PathBuf,
    /// Print JSON for machines.
    #[arg(long)]
    json: bool,
}

fn read(path: &Path) -> Result<Vec<u8>> {
    Ok(std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?)
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    Ok(std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))?)
}

fn read_key(path: &Path) -> Result<SigningKey> {
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

fn write_keypair(out: &Path, key: &SigningKey) -> Result<()> {
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

pub fn keygen(a: KeygenArgs) -> Result<()> {
    if !a.force && a.out.exists() {
        return Err(anyhow!("{} exists; pass --force to overwrite it", a.out.display()).into());
    }
    let key = SigningKey::generate(&mut rand_core::OsRng);
    write_keypair(&a.out, &key)?;
    println!("{}", hex::encode(key.verifying_key().as_bytes()));
    Ok(())
}

fn progress_bar(len: u64) -> ProgressBar {
    // indicatif draws only when stderr is a terminal: quiet when piped.
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg:30!} [{bar:30}] {bytes}/{total_bytes}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}

pub fn pack(a: PackArgs) -> Result<()> {
    let key = read_key(&a.key)?;
    let mut bar: Option<ProgressBar> = None;
    let package = tally_package::pack(&a.manifest, &key, &mut |path, size, total| {
        let b = bar.get_or_insert_with(|| progress_bar(total));
        b.set_message(path.to_string());
        b.inc(size);
    })?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    // Graphs meet the ONNX policy before they are signed.
    for (name, g) in &package.manifest().graphs {
        let bytes = package
            .blob(&g.file.digest)
            .expect("a packed package has every graph");
        tally_nn_tract::check_onnx(bytes).map_err(|e| {
            anyhow!(
                "{}: graph `{name}` ({}): {e}",
                a.manifest.display(),
                g.file.path
            )
        })?;
    }
    let mut bytes = Vec::new();
    package
        .write_bundle(&mut bytes)
        .context("encoding the bundle")?;
    write(&a.out, &bytes)?;
    eprintln!(
        "packed {} {} ({} files, {} bytes)",
        package.manifest().package.name,
        package.manifest().package.version,
        package.blobs().len(),
        bytes.len()
    );
    println!("{}", package.id());
    Ok(())
}

pub fn publish(a: PublishArgs, store: &Path) -> Result<()> {
    if let Some(url) = &a.host {
        let id = crate::client::Host::new(url).publish(&crate::client::read_bundle(&a.bundle)?)?;
        eprintln!("published to {url}");
        println!("{id}");
        return Ok(());
    }
    let package = Package::from_bundle_file(&a.bundle, DEFAULT_MAX_BUNDLE_BYTES)
        .with_context(|| format!("{} is not a valid bundle", a.bundle.display()))?;
    let store = Store::open(store)?;
    let id = store.put_package(&package)?;
    eprintln!(
        "published {} {} to {}",
        package.manifest().package.name,
        package.manifest().package.version,
        store.root().display()
    );
    println!("{id}");
    Ok(())
}

/// A bundle path, or a package id in the store.
fn load_package(spec: &str, store: &Path) -> Result<Package> {
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

fn sandbox(store: &Path, target: TargetArg, nn: &BackendArgs) -> Result<Sandbox> {
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
        .ort(ort);
    Ok(Sandbox::new(config)?)
}

/// `RECEIPT.tensors`: the recorded inference outputs beside a receipt.
fn tensors_path(receipt: &Path) -> PathBuf {
    let mut p = receipt.as_os_str().to_owned();
    p.push(".tensors");
    PathBuf::from(p)
}

pub(crate) fn host_key(arg: Option<&PathBuf>, store: &Path) -> Result<SigningKey> {
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

fn spinner(msg: &'static str) -> ProgressBar {
    let s = ProgressBar::new_spinner();
    s.set_message(msg);
    s.enable_steady_tick(std::time::Duration::from_millis(100));
    s
}

fn transcript_path(receipt: &Path) -> PathBuf {
    let mut s = receipt.as_os_str().to_owned();
    s.push(".transcript");
    PathBuf::from(s)
}

pub fn run(a: RunArgs, store_dir: &Path) -> Result<()> {
    let input = read(&a.input)?;
    let seed = match &a.seed {
        Some(s) => Some(s.parse::<Digest>().map_err(|e| anyhow!("--seed: {e}"))?),
        None => None,
    };
    let (output, receipt, transcript, computes) = match &a.host {
        Some(url) => {
            let host = crate::client::Host::new(url);
            let id = if Path::new(&a.package).exists() {
                host.publish(&crate::client::read_bundle(Path::new(&a.package))?)?
            } else {
                a.package.parse::<Digest>().map_err(|e| {
                    anyhow!(
                        "`{}` is neither a bundle file nor a package id ({e})",
                        a.package
                    )
                })?
            };
            let (output, receipt, transcript) = host.run(&id, &input, a.fuel, seed)?;
            let computes = if transcript.compute_outputs().is_empty() {
                Vec::new()
            } else {
                host.tensors(&receipt, &transcript)?
            };
            (output, receipt, transcript, computes)
        }
        None => run_locally(&a, store_dir, &input, seed)?,
    };
    write(&a.output, &output)?;
    write(&a.receipt, receipt.to_json().as_bytes())?;
    if !computes.is_empty() {
        write(&tensors_path(&a.receipt), &encode_recorded(&computes))?;
    }
    write(
        &transcript_path(&a.receipt),
        transcript.to_jsonl().as_bytes(),
    )?;
    let c = &receipt.claim;
    eprintln!(
        "outcome: {}\nfuel: {} of {}\noutput: {} ({} bytes)\nreceipt: {} (claim {})",
        c.outcome,
        c.fuel_consumed,
        c.limits.fuel,
        c.output,
        c.output_len,
        a.receipt.display(),
        receipt.seal.claim_digest
    );
    if !c.outcome.is_ok() {
        return Err(fail(anyhow!("the run did not succeed: {}", c.outcome)));
    }
    Ok(())
}

/// A run's output, receipt, transcript and recorded inference outputs.
type RunOutput = (Vec<u8>, Receipt, Transcript, Vec<Vec<u8>>);

/// Runs in this process, seals with the host key, stores the package
/// (so that a `tally verify` here needs no flags) and the receipt.
fn run_locally(
    a: &RunArgs,
    store_dir: &Path,
    input: &[u8],
    seed: Option<Digest>,
) -> Result<RunOutput> {
    let package = load_package(&a.package, store_dir)?;
    let key = host_key(a.key.as_ref(), store_dir)?;
    let sandbox = sandbox(store_dir, a.target, &a.nn)?;
    let mut host = Host::new(
        std::sync::Arc::new(sandbox),
        key,
        std::env::var("HOSTNAME").unwrap_or_default(),
    );
    // A bundle's package is stored too (one from the store already is).
    let from_bundle = Path::new(&a.package).exists();
    match Store::open(store_dir).and_then(|s| {
        if from_bundle {
            s.put_package(&package)?;
        }
        Ok(s)
    }) {
        Ok(store) => host = host.with_store(std::sync::Arc::new(store)),
        Err(e) => tracing::warn!("the run is not stored in {}: {e}", store_dir.display()),
    }
    let spin = spinner("running (compiling modules on first use)…");
    let sealed = host.run_and_seal(&package, &RunRequest::new(input).fuel(a.fuel).seed(seed))?;
    spin.finish_and_clear();
    if let Some(Err(e)) = &sealed.stored {
        tracing::warn!(
            "the receipt is written to {} but not stored: {e}",
            a.receipt.display()
        );
    }
    for (stage, err) in &sealed.stderr {
        if !err.is_empty() {
            eprintln!("[{stage}] {}", String::from_utf8_lossy(err).trim_end());
        }
    }
    Ok((
        sealed.output,
        sealed.receipt,
        sealed.transcript,
        sealed.computes,
    ))
}

pub fn verify(a: VerifyArgs, store_dir: &Path) -> Result<()> {
    let text = String::from_utf8(read(&a.receipt)?)
        .map_err(|_| anyhow!("{}: not UTF-8", a.receipt.display()))?;
    let receipt = Receipt::from_json(&text).with_context(|| format!("{}", a.receipt.display()))?;
    let mut trusted = Vec::new();
    for t in &a.trust {
        trusted.push(
            String::from_utf8(read(t)?)
                .unwrap_or_default()
                .trim()
                .to_string(),
        );
    }
    let input = read(&a.input)?;
    let sandbox = sandbox(store_dir, a.target, &a.nn)?;
    // Files beside the receipt (or named by flags), then the store, then
    // the --host: the first that has a thing provides it.
    let files = FileSources {
        package: a.package.clone(),
        store_dir,
        transcript: a
            .transcript
            .clone()
            .unwrap_or_else(|| transcript_path(&a.receipt)),
        tensors: tensors_path(&a.receipt),
    };
    let store = Store::open(store_dir).ok();
    let store = store.as_ref().map(StoreSources);
    let remote = a
        .host
        .as_deref()
        .map(|url| RemoteSources(crate::client::Host::new(url)));
    // `--package` is never passed over: `files` gives it, or fails.
    let mut sources: Vec<&dyn Sources> = vec![&files];
    if let Some(s) = &store {
        sources.push(s);
    }
    if let Some(r) = &remote {
        sources.push(r);
    }
    let spin = spinner("replaying…");
    let verdict = tally_host::verify(&sandbox, &receipt, &trusted, &input, &FirstOf(sources));
    spin.finish_and_clear();
    let verdict = verdict.map_err(|e| {
        // A receipt that does not hold is a failed verification (1); a
        // package or replay the verifier cannot provide is usage (2).
        let usage = matches!(
            e,
            VerifyError::Package { .. } | VerifyError::Recorded(_) | VerifyError::Replay(_)
        );
        let e = anyhow!("{}: {e}", a.receipt.display());
        if usage {
            Failure::from(e)
        } else {
            fail(e)
        }
    })?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&verdict).expect("verdicts serialize")
        );
    } else {
        print!("{}", verdict.render());
    }
    if !verdict.verified {
        return Err(fail(anyhow!(
            "verification failed: {} field(s) differ, {} inference output(s) out of tolerance",
            verdict.mismatches.len(),
            verdict.inference.iter().filter(|c| !c.within).count()
        )));
    }
    Ok(())
}

/// What a verifier has at hand: `--package` (a bundle or an id in the
/// store), and the transcript and recorded outputs beside the receipt.
struct FileSources<'a> {
    package: Option<String>,
    store_dir: &'a Path,
    transcript: PathBuf,
    tensors: PathBuf,
}

fn invalid(e: impl std::fmt::Display) -> SourceError {
    SourceError::Invalid(format!("{e:#}"))
}

impl Sources for FileSources<'_> {
    fn package(&self, id: &Digest) -> std::result::Result<std::sync::Arc<Package>, SourceError> {
        match &self.package {
            Some(spec) => load_package(spec, self.store_dir)
                .map(std::sync::Arc::new)
                .map_err(|f| invalid(f.error)),
            None => Err(SourceError::NotFound(format!("package {id}"))),
        }
    }
    fn transcript(&self, receipt: &Receipt) -> std::result::Result<Transcript, SourceError> {
        let path = &self.transcript;
        if !path.exists() {
            return Err(SourceError::NotFound(path.display().to_string()));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid(format!("reading {}: {e}", path.display())))?;
        Transcript::from_jsonl(&text, &receipt.claim.transcript_root)
            .map_err(|e| invalid(format!("{}: {e}", path.display())))
    }
    fn recorded(
        &self,
        _: &Receipt,
        t: &Transcript,
    ) -> std::result::Result<Vec<Vec<u8>>, SourceError> {
        let path = &self.tensors;
        let Ok(meta) = std::fs::metadata(path) else {
            return Err(SourceError::NotFound(path.display().to_string()));
        };
        if meta.len() > tally_host::MAX_RECORDED_FILE_BYTES {
            return Err(invalid(format!(
                "{} is {} bytes, larger than any run records ({} at most)",
                path.display(),
                meta.len(),
                tally_host::MAX_RECORDED_FILE_BYTES
            )));
        }
        let bytes =
            std::fs::read(path).map_err(|e| invalid(format!("reading {}: {e}", path.display())))?;
        decode_recorded(&bytes, t).map_err(|e| invalid(format!("{}: {e}", path.display())))
    }
}

/// The host that ran the receipt (`--host`).
struct RemoteSources(crate::client::Host);

impl Sources for RemoteSources {
    fn package(&self, id: &Digest) -> std::result::Result<std::sync::Arc<Package>, SourceError> {
        self.0.package(id).map(std::sync::Arc::new).map_err(invalid)
    }
    fn transcript(&self, receipt: &Receipt) -> std::result::Result<Transcript, SourceError> {
        self.0.transcript(receipt).map_err(invalid)
    }
    fn recorded(
        &self,
        receipt: &Receipt,
        t: &Transcript,
    ) -> std::result::Result<Vec<Vec<u8>>, SourceError> {
        self.0.tensors(receipt, t).map_err(invalid)
    }
}

pub fn inspect(a: InspectArgs) -> Result<()> {
    let bytes = read(&a.file)?;
    if bytes.first() == Some(&b'{') {
        let text =
            String::from_utf8(bytes).map_err(|_| anyhow!("{}: not UTF-8", a.file.display()))?;
        let receipt = Receipt::from_json(&text).with_context(|| format!("{}", a.file.display()))?;
        let seal = receipt
            .check_seal(&[])
            .map(|_| "valid".to_string())
            .unwrap_or_else(|e| e.to_string());
        if a.json {
            let mut v = serde_json::to_value(&receipt).expect("receipts serialize");
            v["seal_check"] = serde_json::Value::String(seal);
            println!("{}", serde_json::to_string_pretty(&v).expect("json"));
            return Ok(());
        }
        let c = &receipt.claim;
        println!("receipt {} (seal: {seal})", receipt.seal.claim_digest);
        println!("  package   {}", c.package_id);
        println!("  outcome   {}", c.outcome);
        println!("  input     {}", c.input);
        println!("  output    {} ({} bytes)", c.output, c.output_len);
        println!("  fuel      {} of {}", c.fuel_consumed, c.limits.fuel);
        println!("  seed      {}", c.seed);
        println!(
            "  engine    wasmtime {} profile {}",
            c.engine.wasmtime_version,
            c.engine.profile.short()
        );
        println!(
            "  transcript {} ({} host calls)",
            c.transcript_root, c.host_calls
        );
        for s in &c.stages {
            println!(
                "  stage {:<16} fuel {:>12}  module {}  stdout {}",
                s.name,
                s.fuel_consumed,
                s.module.short(),
                s.stdout.short()
            );
        }
        println!("  host key  {}", receipt.seal.host_key);
        return Ok(());
    }
    let package =
        Package::from_bundle(bytes.as_slice(), DEFAULT_MAX_BUNDLE_BYTES).with_context(|| {
            format!(
                "{} is neither a receipt nor a valid bundle",
                a.file.display()
            )
        })?;
    let m = package.manifest();
    if a.json {
        let v = serde_json::json!({ "id": package.id(), "manifest": m, "signature": package.signature() });
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
        return Ok(());
    }
    println!(
        "package {} {} — {}",
        m.package.name,
        m.package.version,
        package.id()
    );
    if !m.package.description.is_empty() {
        println!("  {}", m.package.description);
    }
    println!(
        "  publisher {} (signature valid)",
        hex::encode(m.package.publisher)
    );
    for (name, f) in &m.modules {
        println!("  module {name:<16} {} {}", f.digest.short(), f.path);
    }
    for f in &m.files {
        println!("  file   {:<16} {} ", f.path, f.digest.short());
    }
    for (i, s) in m.stages.iter().enumerate() {
        println!(
            "  stage {i}: {} (module {}, args {:?}, reads {:?})",
            s.name, s.module, s.args, s.read
        );
    }
    let l = m.limits.resolve();
    println!(
        "  limits: fuel {}, memory {} bytes, output {} bytes, wall {} ms",
        l.fuel, l.memory_bytes, l.output_bytes, l.wall_time_ms
    );
    Ok(())
}

pub fn hash(a: HashArgs) -> Result<()> {
    for f in &a.files {
        println!("{}  {}", Digest::of(&read(f)?), f.display());
    }
    Ok(())
}

pub fn graph_meta(a: GraphMetaArgs) -> Result<()> {
    let meta = tally_nn_tract::onnx_metadata(&read(&a.model)?)
        .with_context(|| format!("reading {}", a.model.display()))?;
    match a.key {
        Some(key) => {
            let (_, value) = meta.iter().find(|(k, _)| *k == key).ok_or_else(|| {
                let keys: Vec<&str> = meta.iter().map(|(k, _)| k.as_str()).collect();
                anyhow!(
                    "{} has no metadata key `{key}` (it has: {})",
                    a.model.display(),
                    if keys.is_empty() {
                        "none".into()
                    } else {
                        keys.join(", ")
                    }
                )
            })?;
            print!("{value}");
        }
        None => {
            for (k, v) in &meta {
                println!("{k}\t{} bytes", v.len());
            }
        }
    }
    Ok(())
}

pub fn fsck(store: &Path) -> Result<()> {
    let swept = Sandbox::sweep_stale_runs();
    if swept > 0 {
        eprintln!("removed {swept} file views left by killed runs");
    }
    let report = Store::open(store)?.fsck()?;
    println!(
        "{}",
        serde_json::to_string_pretty(&report).expect("reports serialize")
    );
    if !report.is_clean() {
        return Err(fail(anyhow!(
            "the store at {} has problems (listed above)",
            store.display()
        )));
    }
    Ok(())
}
