//! `tally pack`: a manifest and its files into a signed bundle.

use std::path::PathBuf;

use anyhow::{anyhow, Context};
use clap::Args;
use indicatif::ProgressBar;
use tally_manifest::lock::{Lock, LOCK_FILE};

use super::{progress_bar, read_key, write, Result};

/// `tally pack`
#[derive(Args)]
pub struct PackArgs {
    /// The manifest (tally.toml). Digests and the publisher it leaves out
    /// are filled in; each file is read from its `source` (default: its
    /// `path`) in the manifest's directory, then in each --search directory.
    manifest: PathBuf,
    /// Another directory to look for the manifest's files in (repeatable,
    /// in order), e.g. the guests' build output or $TALLY_ASSETS.
    #[arg(long, value_name = "DIR")]
    search: Vec<PathBuf>,
    /// The publisher's secret key (from `tally keygen`).
    #[arg(long, value_name = "KEY")]
    key: PathBuf,
    /// Where to write the bundle.
    #[arg(long, value_name = "FILE.tally")]
    out: PathBuf,
    /// Write (or refresh) `tally.lock` beside the manifest: the digest of
    /// every file, for review in version control.
    #[arg(long, conflicts_with = "locked")]
    lock: bool,
    /// Refuse to pack unless every file's digest is the one `tally.lock`
    /// records (each difference is named).
    #[arg(long)]
    locked: bool,
}

pub fn pack(a: PackArgs) -> Result<()> {
    let key = read_key(&a.key)?;
    let mut bar: Option<ProgressBar> = None;
    let search: Vec<&std::path::Path> = a.search.iter().map(PathBuf::as_path).collect();
    let package = tally_package::pack(&a.manifest, &search, &key, &mut |path, size, total| {
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
    let lock_path = a
        .manifest
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .join(LOCK_FILE);
    if a.locked {
        let text = std::fs::read_to_string(&lock_path).with_context(|| {
            format!(
                "--locked: reading {} (write it with `tally pack --lock`)",
                lock_path.display()
            )
        })?;
        let lock = Lock::parse(&text).map_err(|e| anyhow!("{}: {e}", lock_path.display()))?;
        let diff = lock.diff(package.manifest());
        if !diff.is_empty() {
            let lines: Vec<String> = diff.iter().map(|d| format!("  {d}")).collect();
            return Err(anyhow!(
                "--locked: the package differs from {}:\n{}\nreview the change, then `tally pack --lock` to accept it",
                lock_path.display(),
                lines.join("\n")
            )
            .into());
        }
    }
    if a.lock {
        write(
            &lock_path,
            Lock::of(package.manifest()).to_text().as_bytes(),
        )?;
        eprintln!("wrote {}", lock_path.display());
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
