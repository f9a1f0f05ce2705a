//! `tally fsck`: check the store.

use std::path::Path;

use anyhow::anyhow;
use tally_sandbox::Sandbox;
use tally_store::Store;

use super::Result;
use crate::Failure;

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
        return Err(Failure::failed(anyhow!(
            "the store at {} has problems (listed above)",
            store.display()
        )));
    }
    Ok(())
}
