//! `tally keygen`: an ed25519 key pair.

use std::path::PathBuf;

use anyhow::anyhow;
use clap::Args;
use ed25519_dalek::SigningKey;

use super::{write_keypair, Result};

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

pub fn keygen(a: KeygenArgs) -> Result<()> {
    if !a.force && a.out.exists() {
        return Err(anyhow!("{} exists; pass --force to overwrite it", a.out.display()).into());
    }
    let key = SigningKey::generate(&mut rand_core::OsRng);
    write_keypair(&a.out, &key)?;
    println!("{}", hex::encode(key.verifying_key().as_bytes()));
    Ok(())
}
