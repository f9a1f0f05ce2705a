//! `tally inspect`: show a bundle or a receipt.

use std::path::PathBuf;

use anyhow::{anyhow, Context};
use clap::Args;
use tally_package::{Package, DEFAULT_MAX_BUNDLE_BYTES};
use tally_receipt::Receipt;

use super::{read, Result};

/// `tally inspect`
#[derive(Args)]
pub struct InspectArgs {
    /// A bundle (.tally) or a receipt (.json).
    file: PathBuf,
    /// Print JSON for machines.
    #[arg(long)]
    json: bool,
}

pub fn inspect(a: InspectArgs) -> Result<()> {
    let bytes = read(&a.file)?;
    if bytes.first() == Some(&b'{') {
        let text =
            String::from_utf8(bytes).map_err(|_| anyhow!("{}: not UTF-8", a.file.display()))?;
        let receipt = Receipt::from_json(&text).with_context(|| format!("{}", a.file.display()))?;
        let seal = receipt
            .check_seal(&[])
            .map(|_| "valid".to_string())
            .unwrap_or_else(|e| e.to_string());
        if a.json {
            let mut v = serde_json::to_value(&receipt).expect("receipts serialize");
            v["seal_check"] = serde_json::Value::String(seal);
            println!("{}", serde_json::to_string_pretty(&v).expect("json"));
            return Ok(());
        }
        let c = &receipt.claim;
        println!("receipt {} (seal: {seal})", receipt.seal.claim_digest);
        println!("  package   {}", c.package_id);
        println!("  outcome   {}", c.outcome);
        println!("  input     {}", c.input);
        println!("  output    {} ({} bytes)", c.output, c.output_len);
        println!("  fuel      {} of {}", c.fuel_consumed, c.limits.fuel);
        println!("  seed      {}", c.seed);
        println!(
            "  engine    wasmtime {} profile {}",
            c.engine.wasmtime_version,
            c.engine.profile.short()
        );
        println!(
            "  transcript {} ({} host calls)",
            c.transcript_root, c.host_calls
        );
        for s in &c.stages {
            println!(
                "  stage {:<16} fuel {:>12}  module {}  stdout {}",
                s.name,
                s.fuel_consumed,
                s.module.short(),
                s.stdout.short()
            );
        }
        println!("  host key  {}", receipt.seal.host_key);
        return Ok(());
    }
    let package =
        Package::from_bundle(bytes.as_slice(), DEFAULT_MAX_BUNDLE_BYTES).with_context(|| {
            format!(
                "{} is neither a receipt nor a valid bundle",
                a.file.display()
            )
        })?;
    let m = package.manifest();
    if a.json {
        let v = serde_json::json!({ "id": package.id(), "manifest": m, "signature": package.signature() });
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
        return Ok(());
    }
    println!(
        "package {} {} — {}",
        m.package.name,
        m.package.version,
        package.id()
    );
    if !m.package.description.is_empty() {
        println!("  {}", m.package.description);
    }
    println!(
        "  publisher {} (signature valid)",
        hex::encode(m.package.publisher)
    );
    for (name, f) in &m.modules {
        println!("  module {name:<16} {} {}", f.digest.short(), f.path);
    }
    for f in &m.files {
        println!("  file   {:<16} {} ", f.path, f.digest.short());
    }
    for (name, g) in &m.graphs {
        let targets: Vec<&str> = g
            .targets
            .iter()
            .map(|t| match t {
                tally_manifest::ExecutionTarget::Cpu => "cpu",
                _ => "gpu",
            })
            .collect();
        let tol = |t: &tally_manifest::Tolerance| {
            format!(
                "abs {:e} / rel {:e}{}",
                t.abs,
                t.rel,
                if t.argmax { " + argmax" } else { "" }
            )
        };
        println!(
            "  graph  {name:<16} {} {} ({} bytes, targets {}, tolerance {})",
            g.file.digest.short(),
            g.file.path,
            package.blob(&g.file.digest).map_or(0, <[u8]>::len),
            targets.join(","),
            tol(&g.tolerance)
        );
        for (i, t) in &g.outputs {
            println!("         output {i}: tolerance {}", tol(t));
        }
    }
    for (i, s) in m.stages.iter().enumerate() {
        println!(
            "  stage {i}: {} (module {}, args {:?}, reads {:?}, graphs {:?})",
            s.name, s.module, s.args, s.read, s.graphs
        );
    }
    let l = m.limits.resolve();
    println!(
        "  limits: fuel {}, memory {} bytes, output {} bytes, wall {} ms",
        l.fuel, l.memory_bytes, l.output_bytes, l.wall_time_ms
    );
    Ok(())
}
