//! `tally`: the command-line front end. A thin layer over the library
//! crates: it parses flags (clap), calls `tally-host`, `tally-package`,
//! `tally-store` and `tally-receipt` (one module per subcommand under
//! `cmd/`), and maps failures to exit codes: 0 success, 1 a verification
//! failure or a run that did not succeed, 2 bad usage or bad input, 3 a
//! fault of this host (the engine, the store, the disk), which the caller
//! cannot fix by changing the request.

mod client;
mod cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Verifiable, sandboxed model execution.
#[derive(Parser)]
#[command(name = "tally", version, about, propagate_version = true)]
pub struct Cli {
    /// Store directory (default: $TALLY_HOME, else ~/.tally).
    #[arg(long, global = true, value_name = "DIR")]
    store: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate an ed25519 key pair: KEY (secret, hex) and KEY.pub (public, hex).
    Keygen(cmd::keygen::KeygenArgs),
    /// Create a package: a guest crate on the SDK and its manifest.
    New(cmd::new::NewArgs),
    /// Pack a manifest and its files into a signed bundle.
    Pack(cmd::pack::PackArgs),
    /// Add a bundle to the local store; prints the package id.
    Publish(cmd::publish::PublishArgs),
    /// Run a package on an input; writes the output and a signed receipt.
    Run(cmd::run::RunArgs),
    /// Check a receipt's seal and replay it; report every difference.
    Verify(cmd::verify::VerifyArgs),
    /// Show a bundle or a receipt.
    Inspect(cmd::inspect::InspectArgs),
    /// Print the blake3 digest of files, as manifests write them.
    Hash(cmd::hash::HashArgs),
    /// Print an ONNX model's metadata keys, or one key's value (for
    /// publishers: e.g. the character set a recogniser carries).
    GraphMeta(cmd::graph_meta::GraphMetaArgs),
    /// Serve the host API over HTTP (publishers, runners, verifiers).
    Serve(cmd::serve::ServeArgs),
    /// Check the store: every blob, package, receipt and transcript.
    Fsck,
}

/// A failure with its exit code.
pub struct Failure {
    /// [`Failure::FAILED`], [`Failure::BAD_INPUT`] or [`Failure::HOST_FAULT`].
    pub code: u8,
    /// What went wrong.
    pub error: anyhow::Error,
}

impl Failure {
    /// A run or a verification that did not succeed.
    pub const FAILED: u8 = 1;
    /// Bad usage or bad input: the caller can fix it.
    pub const BAD_INPUT: u8 = 2;
    /// A fault of this host (engine, store, disk): the operator can.
    pub const HOST_FAULT: u8 = 3;

    /// A run or verification that did not succeed (exit 1).
    pub fn failed(error: anyhow::Error) -> Failure {
        Failure {
            code: Self::FAILED,
            error,
        }
    }
}

/// Errors are bad input (2) unless a typed cause in their chain says the
/// host is at fault (3): the engine, the inference backend, or the store's
/// disk and index.
impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        let error = e.into();
        let host_fault = error.chain().any(|cause| {
            if let Some(e) = cause.downcast_ref::<tally_host::RunError>() {
                return !e.is_request_error();
            }
            if let Some(e) = cause.downcast_ref::<tally_host::VerifyError>() {
                return !e.is_request_error();
            }
            if let Some(e) = cause.downcast_ref::<tally_sandbox::SandboxError>() {
                return !matches!(
                    e,
                    tally_sandbox::SandboxError::PolicyForbids { .. }
                        | tally_sandbox::SandboxError::Recorded(_)
                );
            }
            matches!(
                cause.downcast_ref::<tally_store::StoreError>(),
                Some(
                    tally_store::StoreError::Io { .. }
                        | tally_store::StoreError::Index(_)
                        | tally_store::StoreError::CorruptBlob { .. }
                        | tally_store::StoreError::Package { .. }
                        | tally_store::StoreError::Locked(_)
                )
            )
        });
        Failure {
            code: if host_fault {
                Self::HOST_FAULT
            } else {
                Self::BAD_INPUT
            },
            error,
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("TALLY_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let store = cli
        .store
        .clone()
        .unwrap_or_else(tally_store::Store::default_root);
    let result = match cli.command {
        Command::Keygen(a) => cmd::keygen::keygen(a),
        Command::New(a) => cmd::new::new(a),
        Command::Pack(a) => cmd::pack::pack(a),
        Command::Publish(a) => cmd::publish::publish(a, &store),
        Command::Run(a) => cmd::run::run(a, &store),
        Command::Verify(a) => cmd::verify::verify(a, &store),
        Command::Inspect(a) => cmd::inspect::inspect(a),
        Command::Hash(a) => cmd::hash::hash(a),
        Command::GraphMeta(a) => cmd::graph_meta::graph_meta(a),
        Command::Serve(a) => cmd::serve::serve(a, cli.store.as_deref()),
        Command::Fsck => cmd::fsck::fsck(&store),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {:#}", f.error);
            ExitCode::from(f.code)
        }
    }
}
