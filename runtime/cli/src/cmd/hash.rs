//! `tally hash`: the blake3 digest of files, as manifests write them.

use std::path::PathBuf;

use clap::Args;
use tally_digest::Digest;

use super::{read, Result};

/// `tally hash`
#[derive(Args)]
pub struct HashArgs {
    /// Files to hash.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

pub fn hash(a: HashArgs) -> Result<()> {
    for f in &a.files {
        println!("{}  {}", Digest::of(&read(f)?), f.display());
    }
    Ok(())
}
