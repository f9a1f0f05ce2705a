//! `tally verify`: check a receipt's seal and replay it.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use clap::Args;
use tally_digest::Digest;
use tally_host::{FirstOf, SourceError, Sources, StoreSources, VerifyError};
use tally_package::Package;
use tally_receipt::{decode_recorded, tensors_path, transcript_path, Receipt, Transcript};
use tally_store::Store;

use super::{load_package, read, sandbox, spinner, BackendArgs, Result, TargetArg};
use crate::Failure;

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
    // The store is one source among others: unusable, it is skipped, and
    // said so (a `tally serve` may hold it).
    let store = Store::open(store_dir)
        .inspect_err(|e| eprintln!("warning: the store is not consulted: {e}"))
        .ok();
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
        // package or replay the verifier cannot provide is usage (2); a
        // fault of this machine is neither (3).
        let code = if !e.is_request_error() {
            Failure::HOST_FAULT
        } else if matches!(
            e,
            VerifyError::Package { .. } | VerifyError::Recorded(_) | VerifyError::Replay(_)
        ) {
            Failure::BAD_INPUT
        } else {
            Failure::FAILED
        };
        Failure {
            code,
            error: anyhow::Error::new(e).context(a.receipt.display().to_string()),
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
        return Err(Failure::failed(anyhow!(
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
        let Ok(meta) = std::fs::metadata(path) else {
            return Err(SourceError::NotFound(path.display().to_string()));
        };
        if meta.len() > tally_host::MAX_TRANSCRIPT_FILE_BYTES {
            return Err(invalid(format!(
                "{} is {} bytes, larger than any run's transcript ({} at most)",
                path.display(),
                meta.len(),
                tally_host::MAX_TRANSCRIPT_FILE_BYTES
            )));
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
