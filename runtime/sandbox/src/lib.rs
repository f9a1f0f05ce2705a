//! The Tally sandbox: runs a package's pipeline in wasmtime, deterministically,
//! metered and bounded, and returns the claim a receipt seals.
//!
//! Core types:
//!
//! * [`Sandbox`]: an engine configured with the determinism [`profile`], a
//!   host [`Policy`] (caps on every limit), a pooling allocator, an epoch
//!   ticker for the wall-clock backstop, and caches of compiled modules
//!   (memory, and disk when [`SandboxConfig::cache_dir`] is set), loaded
//!   graphs and costs, all in one byte budget
//!   ([`SandboxConfig::cache_bytes`], LRU, see [`CacheStats`]). Build one
//!   per process and reuse it: a warm run neither recompiles nor re-links.
//! * [`RunRequest`]: input, optional fuel override, optional seed, optional
//!   exact limits (a verifier replays with the limits the claim records).
//! * [`RunResult`]: the unsigned [`tally_receipt::Claim`], the
//!   [`tally_receipt::Transcript`] of host calls, the output and each
//!   stage's stderr.
//! * [`Target`]: native Cranelift code or the Pulley interpreter; both give
//!   the same claim except `engine.target`.
//!
//! Guest behaviour never becomes a Rust error: traps, exits, limits and
//! rejected modules are [`tally_receipt::Outcome`]s. [`SandboxError`] is
//! kept for host problems (engine configuration, temp files, policy).
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use tally_sandbox::{RunRequest, Sandbox, SandboxConfig};
//! let sandbox = Sandbox::new(SandboxConfig::default())?;
//! let package = tally_package::Package::from_bundle_file("demo.tally".as_ref(), 1 << 30)?;
//! let result = sandbox.run(&package, &RunRequest::new(b"input"))?;
//! println!("{} in {} fuel", result.claim.outcome, result.claim.fuel_consumed);
//! # Ok(()) }
//! ```
//!
//! **Invariant:** this is the only crate that knows wasmtime.

mod budget;
mod cache;
mod host;
mod nn;
mod portable;
pub mod profile;
mod run;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use budget::{CacheKind, CacheStats, KindStats};
pub use nn::ComputeRecord;
pub use run::{RunRequest, RunResult};
use tally_manifest::{Limits, ResolvedLimits};
pub use tally_nn::{BackendKind, OrtConfig};

/// Where compiled code runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Target {
    /// Cranelift machine code for this host (default).
    #[default]
    Native,
    /// wasmtime's portable Pulley bytecode interpreter (`pulley64`): slower,
    /// but a different code path, which makes it a cross-architecture
    /// determinism check on one machine.
    Pulley,
}

impl Target {
    /// `native` or `pulley64`.
    pub fn name(&self) -> &'static str {
        match self {
            Target::Native => std::env::consts::ARCH,
            Target::Pulley => "pulley64",
        }
    }
}

/// The host's caps. A run's limits are the manifest's limits (with their
/// defaults), each capped by the policy's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The caps.
    pub caps: ResolvedLimits,
}

impl Default for Policy {
    /// Defaults: fuel 10¹¹, memory 1 GiB, 1 000 000 table elements, module
    /// 64 MiB, output 256 MiB, stderr 1 MiB, 10 000 000 host calls, 10 minutes.
    fn default() -> Self {
        let mut l = Limits::default();
        l.fuel = Some(100_000_000_000);
        l.memory_bytes = Some(1 << 30);
        l.table_elements = Some(1_000_000);
        l.module_bytes = Some(64 << 20);
        l.output_bytes = Some(256 << 20);
        l.stderr_bytes = Some(1 << 20);
        l.host_calls = Some(10_000_000);
        l.wall_time_ms = Some(600_000);
        Policy { caps: l.resolve() }
    }
}

/// The default [`SandboxConfig::cache_bytes`]: 2 GiB.
pub const DEFAULT_CACHE_BYTES: u64 = 2 << 30;

/// Guest instances the pooling allocator holds ([`SandboxConfig::pooling`]):
/// one per run executing at once (a run's stages run one after another), so
/// a host runs at most this many at once.
pub const POOL_INSTANCES: usize = 16;

/// How to build a [`Sandbox`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SandboxConfig {
    /// Native code or Pulley. Default: [`Target::Native`].
    pub target: Target,
    /// The host's caps. Default: [`Policy::default`].
    pub policy: Policy,
    /// Directory for compiled modules. Default: `None` (memory cache only).
    pub cache_dir: Option<PathBuf>,
    /// Use the pooling instance allocator. Default: `false`; `true` costs
    /// address-space reservations up front and makes instantiation ~5× faster.
    pub pooling: bool,
    /// Turn fuel metering off. Default: `false`. Only for measuring what
    /// metering costs: claims from such a sandbox record zero fuel and carry
    /// a different profile digest, so they never verify against metered ones.
    pub unmetered: bool,
    /// The inference backend serving wasi-nn. Default: [`BackendKind::Portable`].
    pub backend: BackendKind,
    /// For the `tract` backend: force generic kernels, the same on every
    /// host of an architecture. Default: `false` (the CPU's best kernels).
    pub tract_generic: bool,
    /// Intra-op threads of a native backend (`tract`: matrix products over
    /// a pool; `onnxruntime`: its intra-op pool), at least 1, recorded in
    /// the backend detail. The portable backend is single-threaded: wasm
    /// threads are off in the profile. Default: 1.
    pub threads: usize,
    /// For the `onnxruntime` backend: where the library is. Default:
    /// [`OrtConfig::default`].
    pub ort: OrtConfig,
    /// Load graphs for the GPU execution target where the manifest allows
    /// it and the backend has one (ONNX Runtime's CUDA provider). Default:
    /// `false`.
    pub gpu: bool,
    /// What the sandbox may keep between runs, in bytes: compiled modules,
    /// graph bytes, loaded graphs, costs and load checks, evicted least
    /// recently used first (see [`CacheStats`]). It should hold at least
    /// one package's modules and graphs, or every run reloads them.
    /// Default: [`DEFAULT_CACHE_BYTES`].
    pub cache_bytes: u64,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            target: Target::default(),
            policy: Policy::default(),
            cache_dir: None,
            pooling: false,
            unmetered: false,
            backend: BackendKind::default(),
            tract_generic: false,
            threads: 1,
            ort: OrtConfig::default(),
            gpu: false,
            cache_bytes: DEFAULT_CACHE_BYTES,
        }
    }
}

impl SandboxConfig {
    /// Sets [`SandboxConfig::target`].
    pub fn target(mut self, t: Target) -> Self {
        self.target = t;
        self
    }
    /// Sets [`SandboxConfig::policy`].
    pub fn policy(mut self, p: Policy) -> Self {
        self.policy = p;
        self
    }
    /// Sets [`SandboxConfig::cache_dir`].
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }
    /// Sets [`SandboxConfig::unmetered`].
    pub fn unmetered(mut self, on: bool) -> Self {
        self.unmetered = on;
        self
    }
    /// Sets [`SandboxConfig::backend`].
    pub fn backend(mut self, b: BackendKind) -> Self {
        self.backend = b;
        self
    }
    /// Sets [`SandboxConfig::threads`].
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = n.max(1);
        self
    }
    /// Sets [`SandboxConfig::tract_generic`].
    pub fn tract_generic(mut self, on: bool) -> Self {
        self.tract_generic = on;
        self
    }
    /// Sets [`SandboxConfig::ort`].
    pub fn ort(mut self, o: OrtConfig) -> Self {
        self.ort = o;
        self
    }
    /// Sets [`SandboxConfig::pooling`].
    pub fn pooling(mut self, on: bool) -> Self {
        self.pooling = on;
        self
    }
    /// Sets [`SandboxConfig::cache_bytes`].
    pub fn cache_bytes(mut self, bytes: u64) -> Self {
        self.cache_bytes = bytes;
        self
    }
}

/// A host-side failure (never a guest's doing).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// wasmtime refused the configuration.
    #[error("engine configuration: {0}")]
    Engine(String),
    /// A host file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The inference backend could not start (e.g. the ONNX Runtime library
    /// is missing).
    #[error("inference backend `{backend}`: {reason}")]
    Backend {
        /// Which backend.
        backend: BackendKind,
        /// Why, and how to fix it.
        reason: String,
    },
    /// Recorded inference outputs given for a replay do not decode.
    #[error("recorded inference outputs: {0}")]
    Recorded(String),
    /// A replay asks for more than this host's policy allows.
    #[error("the requested {limit} limit ({requested}) exceeds this host's policy ({cap})")]
    PolicyForbids {
        /// Which limit.
        limit: &'static str,
        /// What was asked.
        requested: u64,
        /// The host's cap.
        cap: u64,
    },
}

/// The epoch tick, the wall-clock backstop's resolution.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// A configured engine with its caches. Cheap to share by reference across
/// threads; runs are independent.
pub struct Sandbox {
    engine: wasmtime::Engine,
    config: SandboxConfig,
    profile: tally_receipt::EngineInfo,
    cache: cache::ModuleCache,
    base: wasmtime::Linker<host::StoreData>,
    ticker_stop: Arc<AtomicBool>,
    nn: Arc<nn::NnShared>,
    backend_info: tally_receipt::BackendInfo,
    caches: Arc<budget::Caches>,
}

impl Sandbox {
    /// Builds the engine (see [`profile`] for every setting) and starts the
    /// epoch ticker. Removes the file views that runs of dead processes
    /// left behind (see [`Sandbox::sweep_stale_runs`]).
    pub fn new(config: SandboxConfig) -> Result<Sandbox, SandboxError> {
        Self::sweep_stale_runs();
        let wconfig = profile::wasmtime_config(&config)?;
        let engine =
            wasmtime::Engine::new(&wconfig).map_err(|e| SandboxError::Engine(format!("{e:#}")))?;
        let profile = profile::engine_info(&engine, config.unmetered);
        let caches = Arc::new(budget::Caches::new(config.cache_bytes));
        let cache =
            cache::ModuleCache::new(config.cache_dir.clone(), profile.target, caches.clone());
        let ticker_stop = Arc::new(AtomicBool::new(false));
        let (weak, stop) = (engine.weak(), ticker_stop.clone());
        std::thread::Builder::new()
            .name("tally-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map_err(|source| SandboxError::Io {
                what: "starting the epoch thread".into(),
                source,
            })?;
        let base = host::base_linker(&engine);
        let fail = |reason: String| SandboxError::Backend {
            backend: config.backend,
            reason,
        };
        let backend: Arc<dyn tally_nn::Backend> = match config.backend {
            BackendKind::Portable => {
                Arc::new(portable::PortableBackend::new(config.cache_dir.as_deref()).map_err(fail)?)
            }
            BackendKind::Tract => Arc::new(
                tally_nn::TractBackend::new(config.tract_generic, config.threads)
                    .map_err(|e| fail(e.to_string()))?,
            ),
            BackendKind::OnnxRuntime => {
                let mut ort = config.ort.clone();
                ort.threads = config.threads;
                Arc::new(tally_nn::OrtBackend::new(&ort).map_err(|e| fail(e.to_string()))?)
            }
            other => return Err(fail(format!("`{other}` is not built into this host"))),
        };
        let backend_info = tally_receipt::BackendInfo {
            kind: backend.kind().name().into(),
            detail: backend.detail(),
        };
        let nn = Arc::new(nn::NnShared {
            backend,
            costs: portable::BoundedCosts::new(config.cache_dir.as_deref(), caches.clone()),
            caches: caches.clone(),
        });
        Ok(Sandbox {
            engine,
            config,
            profile,
            cache,
            base,
            ticker_stop,
            nn,
            backend_info,
            caches,
        })
    }

    /// The engine description every claim from this sandbox carries.
    pub fn engine_info(&self) -> &tally_receipt::EngineInfo {
        &self.profile
    }

    /// The inference backend itself (benchmarks call it directly, to compare
    /// the sandbox with native code using the same engine).
    pub fn backend(&self) -> Arc<dyn tally_nn::Backend> {
        self.nn.backend.clone()
    }

    /// The inference backend every claim from this sandbox records.
    pub fn backend_info(&self) -> &tally_receipt::BackendInfo {
        &self.backend_info
    }

    /// The configuration this sandbox was built with.
    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    /// Does the backend's one-time set-up now (the portable backend
    /// compiles its engine: tens of seconds on a cold host), so that no
    /// request waits for it. `tally serve` calls it at start.
    pub fn warm_up(&self) -> Result<(), SandboxError> {
        self.nn.backend.warm().map_err(|e| SandboxError::Backend {
            backend: self.config.backend,
            reason: e.to_string(),
        })
    }

    /// Removes the per-run file views (`tally-run-PID-…` in the system's
    /// temporary directory) whose process is no longer alive, as a run
    /// killed with SIGKILL leaves them. Returns how many were removed.
    pub fn sweep_stale_runs() -> usize {
        run::sweep_stale_run_dirs(&std::env::temp_dir())
    }

    /// How many modules were compiled (not found in a cache) so far.
    pub fn compiled_count(&self) -> u64 {
        self.cache.compiled_count()
    }

    /// What the caches hold now, per kind, against
    /// [`SandboxConfig::cache_bytes`] (`tally serve` exports it in
    /// `/metrics`).
    pub fn cache_stats(&self) -> CacheStats {
        self.caches.stats()
    }

    /// The checked package `id`, if this sandbox's caches hold it (a host
    /// that serves many requests keeps packages here, with
    /// [`Sandbox::keep_package`], within the same byte budget).
    pub fn cached_package(&self, id: &tally_digest::Digest) -> Option<Arc<tally_package::Package>> {
        match self.caches.get(&budget::Key::Package(*id)) {
            Some(budget::Value::Package(p)) => Some(p),
            _ => None,
        }
    }

    /// Keeps a checked package for [`Sandbox::cached_package`], weighed at
    /// its bytes (one bigger than the whole budget is not kept).
    pub fn keep_package(&self, package: Arc<tally_package::Package>) {
        self.caches.insert(
            budget::Key::Package(package.id()),
            budget::Value::Package(package),
        );
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}
