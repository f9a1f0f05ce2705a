//! `tally run`: run a package here (or on a host), write the output, the
//! receipt and what a verifier needs beside it.

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use clap::Args;
use tally_digest::Digest;
use tally_host::Host;
use tally_receipt::{encode_recorded, tensors_path, transcript_path, Receipt, Transcript};
use tally_sandbox::RunRequest;
use tally_store::Store;

use super::{
    host_key, load_package, read, sandbox, spinner, write, BackendArgs, Result, TargetArg,
};
use crate::Failure;

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
        return Err(Failure::failed(anyhow!(
            "the run did not succeed: {}",
            c.outcome
        )));
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
