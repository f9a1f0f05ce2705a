//! `tally`: the command-line front end. A thin layer over the library
//! crates: it parses flags (clap), calls `tally-package`, `tally-store`,
//! `tally-sandbox` and `tally-receipt`, and maps failures to exit codes:
//! 0 success, 1 a verification failure or a run that did not succeed,
//! 2 bad usage or bad input.

mod client;
mod commands;
mod serve;

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
    Keygen(commands::KeygenArgs),
    /// Pack a manifest and its files into a signed bundle.
    Pack(commands::PackArgs),
    /// Add a bundle to the local store; prints the package id.
    Publish(commands::PublishArgs),
    /// Run a package on an input; writes the output and a signed receipt.
    Run(commands::RunArgs),
    /// Check a receipt's seal and replay it; report every difference.
    Verify(commands::VerifyArgs),
    /// Show a bundle or a receipt.
    Inspect(commands::InspectArgs),
    /// Print the blake3 digest of files, as manifests write them.
    Hash(commands::HashArgs),
    /// Print an ONNX model's metadata keys, or one key's value (for
    /// publishers: e.g. the character set a recogniser carries).
    GraphMeta(commands::GraphMetaArgs),
    /// Serve the host API over HTTP (publishers, runners, verifiers).
    Serve(serve::ServeArgs),
    /// Check the store: every blob, package, receipt and transcript.
    Fsck,
}

/// A failure with its exit code.
pub struct Failure {
    /// 1: a run or verification that did not succeed; 2: bad usage or input.
    pub code: u8,
    /// What went wrong.
    pub error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure {
            code: 2,
            error: e.into(),
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
        Command::Keygen(a) => commands::keygen(a),
        Command::Pack(a) => commands::pack(a),
        Command::Publish(a) => commands::publish(a, &store),
        Command::Run(a) => commands::run(a, &store),
        Command::Verify(a) => commands::verify(a, &store),
        Command::Inspect(a) => commands::inspect(a),
        Command::Hash(a) => commands::hash(a),
        Command::GraphMeta(a) => commands::graph_meta(a),
        Command::Serve(a) => serve::serve(a, cli.store.as_deref()),
        Command::Fsck => commands::fsck(&store),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {:#}", f.error);
            ExitCode::from(f.code)
        }
    }
}
