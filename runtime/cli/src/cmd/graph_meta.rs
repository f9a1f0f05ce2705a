//! `tally graph-meta`: an ONNX model's metadata.

use std::path::PathBuf;

use anyhow::{anyhow, Context};
use clap::Args;

use super::{read, Result};

/// `tally graph-meta`
#[derive(Args)]
pub struct GraphMetaArgs {
    /// An ONNX model file.
    model: PathBuf,
    /// Print only this key's value, exactly as stored (e.g. `character`,
    /// the character set of a PP-OCR recogniser).
    key: Option<String>,
}

pub fn graph_meta(a: GraphMetaArgs) -> Result<()> {
    let meta = tally_nn_tract::onnx_metadata(&read(&a.model)?)
        .with_context(|| format!("reading {}", a.model.display()))?;
    match a.key {
        Some(key) => {
            let (_, value) = meta.iter().find(|(k, _)| *k == key).ok_or_else(|| {
                let keys: Vec<&str> = meta.iter().map(|(k, _)| k.as_str()).collect();
                anyhow!(
                    "{} has no metadata key `{key}` (it has: {})",
                    a.model.display(),
                    if keys.is_empty() {
                        "none".into()
                    } else {
                        keys.join(", ")
                    }
                )
            })?;
            print!("{value}");
        }
        None => {
            for (k, v) in &meta {
                println!("{k}\t{} bytes", v.len());
            }
        }
    }
    Ok(())
}
