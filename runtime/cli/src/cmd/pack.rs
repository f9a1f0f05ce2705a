//! `tally pack`: a manifest and its files into a signed bundle.

use std::path::PathBuf;

use anyhow::{anyhow, Context};
use clap::Args;
use indicatif::ProgressBar;

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
