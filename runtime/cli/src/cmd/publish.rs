//! `tally publish`: a bundle into the local store, or onto a host.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use tally_package::{Package, DEFAULT_MAX_BUNDLE_BYTES};
use tally_store::Store;

use super::Result;

/// `tally publish`
#[derive(Args)]
pub struct PublishArgs {
    /// The bundle to add to the store.
    bundle: PathBuf,
    /// Talk to a `tally serve` host at this URL instead of working locally.
    #[arg(long, value_name = "URL")]
    host: Option<String>,
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
