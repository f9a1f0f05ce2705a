//! Compiled modules, cached in memory (with their pre-linked `InstancePre`,
//! within the sandbox's byte budget: see [`Caches`]) and optionally on disk.
//!
//! The disk key is `H[tally.ModuleCacheKey.v1](module digest ‖ target
//! digest)`: the target digest covers the determinism profile and wasmtime's
//! precompile compatibility hash, because wasmtime will deserialize an
//! artifact built with different settings without complaint, so the key must
//! change whenever a setting does. Artifacts are written
//! atomically (temp file + rename). The cache directory is trusted: it is the
//! host's own, never a guest's or a publisher's.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tally_digest::{Canon, Digest};
use wasmtime::{Engine, InstancePre, Module};

use crate::budget::{Caches, Key, Value};
use crate::host::{self, StoreData};

/// A compiled, linked module.
pub(crate) struct Compiled {
    pub(crate) pre: InstancePre<StoreData>,
}

pub(crate) struct ModuleCache {
    dir: Option<PathBuf>,
    target: Digest,
    mem: Arc<Caches>,
    compiled: AtomicU64,
}

impl ModuleCache {
    pub(crate) fn new(dir: Option<PathBuf>, target: Digest, mem: Arc<Caches>) -> Self {
        ModuleCache {
            dir,
            target,
            mem,
            compiled: AtomicU64::new(0),
        }
    }

    pub(crate) fn compiled_count(&self) -> u64 {
        self.compiled.load(Ordering::Relaxed)
    }

    /// The compiled module for `bytes` (whose digest is `digest`), or why
    /// it is rejected (a deterministic reason: invalid wasm or bad imports).
    pub(crate) fn get(
        &self,
        base: &wasmtime::Linker<StoreData>,
        digest: &Digest,
        bytes: &[u8],
    ) -> Result<Arc<Compiled>, String> {
        let key = Key::Module(*digest);
        if let Some(Value::Module(c)) = self.mem.get(&key) {
            return Ok(c);
        }
        let module = self.load_or_compile(base.engine(), digest, bytes)?;
        let pre = host::link(base, &module)?;
        let compiled = Arc::new(Compiled { pre });
        self.mem.insert(key, Value::Module(compiled.clone()));
        Ok(compiled)
    }

    fn load_or_compile(
        &self,
        engine: &Engine,
        digest: &Digest,
        bytes: &[u8],
    ) -> Result<Module, String> {
        let path = self.dir.as_ref().map(|d| {
            let key = Canon::new("tally.ModuleCacheKey.v1")
                .digest(digest)
                .digest(&self.target)
                .finish();
            d.join(format!("{key}.cwasm"))
        });
        if let Some(path) = &path {
            if path.exists() {
                // SAFETY: the cache directory is the host's own and its
                // artifacts were written by `Module::serialize` of an engine
                // with the same target digest (the file name binds it).
                match unsafe { Module::deserialize_file(engine, path) } {
                    Ok(m) => return Ok(m),
                    Err(e) => {
                        tracing::warn!(path = %path.display(), "discarding unusable cached module: {e:#}");
                        let _ = std::fs::remove_file(path);
                    }
                }
            }
        }
        self.compiled.fetch_add(1, Ordering::Relaxed);
        let module = Module::new(engine, bytes)
            .map_err(|e| format!("not a valid WebAssembly module: {e:#}"))?;
        if let Some(path) = &path {
            if let Err(e) = write_atomically(path, &module) {
                tracing::warn!(path = %path.display(), "cannot cache compiled module: {e:#}");
            }
        }
        Ok(module)
    }
}

fn write_atomically(
    path: &std::path::Path,
    module: &Module,
) -> Result<(), Box<dyn std::error::Error>> {
    let dir = path.parent().ok_or("cache path has no parent")?;
    std::fs::create_dir_all(dir)?;
    let bytes = module.serialize()?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, &bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)?;
    Ok(())
}
