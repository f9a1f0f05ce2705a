//! The Tally host as an HTTP service (`tally serve`).
//!
//! Core types:
//!
//! * [`ServerConfig`]: listen address, store, host key, worker and queue
//!   sizes, publisher allowlist, bearer token, size caps. Readable from a
//!   TOML file with the same names as the command-line flags.
//! * [`AppState`]: the shared store, sandbox, metrics and run table.
//! * [`serve`]: runs the API on a listener the caller bound (tests bind
//!   `127.0.0.1:0`) until `shutdown` resolves, then waits for in-flight runs.
//!
//! The API lives under `/v1` (documented by `/v1/openapi.json`), plus
//! `/healthz` and `/metrics`. Errors are JSON with a stable `code`. Runs and
//! verifications execute on a bounded pool of blocking workers; when the
//! queue is full the service answers 503 with `Retry-After` instead of
//! growing. A run's receipt, transcript and output are durably in the store
//! before the response says it succeeded.
//!
//! **Invariant:** this is the only crate (with the CLI's client) that knows
//! HTTP.

mod admission;
mod api;
mod conn;
mod error;
pub mod metrics;
mod openapi;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ed25519_dalek::SigningKey;
pub use error::ApiError;
use serde::Deserialize;
use tally_sandbox::{Sandbox, SandboxConfig};
use tally_store::Store;

/// Service configuration. Every field has a default except the key.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Store directory. Default: `$TALLY_HOME`, else `~/.tally`.
    pub store: PathBuf,
    /// Runs executing at once. Default: the number of CPUs, at most
    /// [`tally_sandbox::POOL_INSTANCES`].
    pub workers: usize,
    /// Intra-op threads of a native backend (see
    /// [`SandboxConfig::threads`]): native tract splits matrix products
    /// over one pool of this many threads, shared by all workers; ONNX
    /// Runtime gives each loaded graph a pool of this size. For a host with
    /// more cores than workers. Default: 1.
    pub threads: usize,
    /// Runs waiting beyond the workers before requests are shed. Default: 64.
    pub queue: usize,
    /// Publisher keys allowed to upload; `None` (default) is open mode.
    pub publishers: Option<Vec<[u8; 32]>>,
    /// Bearer token required to submit runs; `None` (default): no token.
    pub token: Option<String>,
    /// Largest upload in bytes. Default: 256 MiB.
    pub max_upload_bytes: u64,
    /// Largest JSON request (a run input is base64 inside it). Default: 64 MiB.
    pub max_request_bytes: usize,
    /// The inference backend runs and verifications use. Default:
    /// `portable`. The ONNX Runtime library comes from `$ORT_DYLIB_PATH`.
    pub backend: tally_sandbox::BackendKind,
    /// Compile the inference backend in the background at start. Default:
    /// `true`. Runs never pay for it in wall time either way.
    pub warm_up: bool,
    /// What the host keeps in memory between requests (checked packages,
    /// compiled modules, loaded graphs, costs), in bytes, evicted least
    /// recently used first; exported in `/metrics` as `tally_cache_*`.
    /// Default: [`tally_sandbox::DEFAULT_CACHE_BYTES`] (2 GiB).
    pub cache_bytes: u64,
    /// Longest a request or response body may stall (no bytes received
    /// from, or taken by, the client) before the connection is dropped.
    /// Default: 30 s. A slow client holds its admission at most this long
    /// per stall.
    pub body_timeout: std::time::Duration,
    /// Longest a client may take to send a request's headers, and longest
    /// an idle keep-alive connection stays open. Default: 10 s.
    pub header_timeout: std::time::Duration,
    /// Uploads and large downloads (bundles, transcripts, recorded
    /// tensors, finished runs' reports) in progress at once, beside the
    /// runs; beyond it they get 503. Default: 32.
    pub max_transfers: usize,
    /// Connections open at once; beyond it the server stops accepting
    /// until one closes. Default: 512.
    pub max_connections: usize,
    /// Connections one client address may hold open; more are closed at
    /// once. Default: 64.
    pub max_client_connections: usize,
    /// Runs and verifications one client (an IPv4 address or an IPv6 /64)
    /// may have queued or running. Default: `None`, half of `workers +
    /// queue`, rounded up. A client's uploads and large downloads are
    /// capped at a quarter of `max_transfers`.
    pub max_client_jobs: Option<usize>,
    /// Bytes of request and response bodies the host holds in memory at
    /// once (uploads being checked, JSON requests, finished runs' reports);
    /// each is reserved before it is read or built, and a request that
    /// does not fit now is shed with 503. Default: 1 GiB.
    pub max_buffered_bytes: u64,
}

/// The slowest a request body may arrive on average, in bytes per second
/// (see [`ServerConfig::body_deadline`]): 256 KiB/s, so a largest upload
/// (256 MiB) holds its transfer slot at most about 17 minutes.
pub(crate) const MIN_BODY_RATE: u64 = 256 << 10;

/// How many bytes of memory a JSON request body reserves per byte: the
/// bytes, their parsed form, and a decoded input.
pub(crate) const JSON_RESERVE_FACTOR: u64 = 3;

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            store: Store::default_root(),
            workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
                .min(tally_sandbox::POOL_INSTANCES),
            threads: 1,
            queue: 64,
            publishers: None,
            token: None,
            max_upload_bytes: 256 << 20,
            max_request_bytes: 64 << 20,
            backend: tally_sandbox::BackendKind::Portable,
            warm_up: true,
            cache_bytes: tally_sandbox::DEFAULT_CACHE_BYTES,
            body_timeout: std::time::Duration::from_secs(30),
            header_timeout: std::time::Duration::from_secs(10),
            max_transfers: 32,
            max_connections: 512,
            max_client_connections: 64,
            max_client_jobs: None,
            max_buffered_bytes: 1 << 30,
        }
    }
}

/// The `[serve]`-style TOML file `tally serve --config` reads: the same names
/// as the flags; relative paths are relative to the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--store`.
    pub store: Option<PathBuf>,
    /// `--key`.
    pub key: Option<PathBuf>,
    /// `--workers`.
    pub workers: Option<usize>,
    /// `--threads`.
    pub threads: Option<usize>,
    /// `--queue`.
    pub queue: Option<usize>,
    /// `--publishers`.
    pub publishers: Option<PathBuf>,
    /// `--token-file`.
    pub token_file: Option<PathBuf>,
    /// `--backend`: `portable`, `tract` or `onnxruntime`.
    pub backend: Option<String>,
    /// `warm_up = false` is `--no-warm-up`.
    pub warm_up: Option<bool>,
    /// `--cache-mib`.
    pub cache_mib: Option<u64>,
    /// `--header-timeout-secs`.
    pub header_timeout_secs: Option<u64>,
    /// `--body-timeout-secs`.
    pub body_timeout_secs: Option<u64>,
    /// `--max-connections`.
    pub max_connections: Option<usize>,
    /// `--max-client-connections`.
    pub max_client_connections: Option<usize>,
    /// `--max-client-jobs`.
    pub max_client_jobs: Option<usize>,
    /// `--max-buffered-mib`.
    pub max_buffered_mib: Option<u64>,
}

/// Reads a publisher allowlist: one hex public key per line; `#` comments
/// and blank lines are ignored.
pub fn parse_publishers(text: &str) -> Result<Vec<[u8; 32]>, String> {
    let mut keys = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut key = [0u8; 32];
        hex::decode_to_slice(line, &mut key)
            .map_err(|_| format!("line {}: expected a publisher key as 64 hex digits", i + 1))?;
        keys.push(key);
    }
    Ok(keys)
}

/// What the service shares between requests.
pub struct AppState {
    pub(crate) config: ServerConfig,
    pub(crate) store: Arc<Store>,
    pub(crate) sandbox: Arc<Sandbox>,
    /// Runs and seals into the store (`tally_host`).
    pub(crate) host: tally_host::Host,
    pub(crate) metrics: metrics::Metrics,
    pub(crate) workers: Arc<tokio::sync::Semaphore>,
    /// Runs and verifications queued or running.
    pub(crate) inflight: AtomicUsize,
    /// Uploads and large downloads in progress.
    pub(crate) transfers: AtomicUsize,
    pub(crate) runs: Mutex<api::RunTable>,
    /// Connections and jobs per client address.
    pub(crate) clients: admission::Clients,
    /// The buffer budget, in KiB ([`ServerConfig::max_buffered_bytes`]).
    pub(crate) memory: Arc<tokio::sync::Semaphore>,
}

/// A host-side start-up failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The store could not be opened.
    #[error("opening the store")]
    Store(#[from] tally_store::StoreError),
    /// The sandbox could not be built.
    #[error("building the sandbox")]
    Sandbox(#[from] tally_sandbox::SandboxError),
    /// Serving failed.
    #[error("serving: {0}")]
    Io(#[from] std::io::Error),
    /// A setting that cannot work.
    #[error("configuration: {0}")]
    Config(String),
}

impl ServerConfig {
    /// Refuses settings that would start a server that cannot work: an
    /// empty token (every client refused), more workers than the sandbox's
    /// instance pool holds (runs would fail as host errors under load).
    pub fn check(&self) -> Result<(), ServerError> {
        if self.token.as_deref().is_some_and(|t| t.trim().is_empty()) {
            return Err(ServerError::Config(
                "the bearer token is empty, so every run and verification would be refused; put a token in the token file".into(),
            ));
        }
        if self.workers > tally_sandbox::POOL_INSTANCES {
            return Err(ServerError::Config(format!(
                "{} workers, but the sandbox's instance pool holds {}; use --workers {} or fewer",
                self.workers,
                tally_sandbox::POOL_INSTANCES,
                tally_sandbox::POOL_INSTANCES
            )));
        }
        let need = (self.max_request_bytes as u64)
            .saturating_mul(JSON_RESERVE_FACTOR)
            .max(self.max_upload_bytes);
        if need.div_ceil(1024) > self.max_buffered_bytes / 1024 {
            return Err(ServerError::Config(format!(
                "the buffer budget ({} bytes) cannot hold one largest request ({need} bytes: an upload of max_upload_bytes, or {JSON_RESERVE_FACTOR}× max_request_bytes for JSON); raise max_buffered_bytes or lower the caps",
                self.max_buffered_bytes
            )));
        }
        Ok(())
    }

    /// The uploads and large downloads one client may have in progress: a
    /// quarter of `max_transfers`, so one client cannot hold them all.
    pub(crate) fn client_transfers(&self) -> usize {
        (self.max_transfers / 4).max(1)
    }

    /// When a request body of `len` bytes must have arrived, from now:
    /// `body_timeout`, plus its length at [`MIN_BODY_RATE`]. A client
    /// trickling a body holds its admission and reservation no longer.
    pub(crate) fn body_deadline(&self, len: u64) -> tokio::time::Instant {
        tokio::time::Instant::now()
            + self.body_timeout
            + std::time::Duration::from_secs(len / MIN_BODY_RATE)
    }

    /// The jobs one client may have queued or running.
    pub(crate) fn client_jobs(&self) -> usize {
        self.max_client_jobs
            .unwrap_or((self.workers.max(1) + self.queue).div_ceil(2))
            .max(1)
    }
}

impl AppState {
    /// Opens the store and builds the sandbox (pooling, disk module cache).
    pub fn new(config: ServerConfig, key: SigningKey) -> Result<Arc<AppState>, ServerError> {
        config.check()?;
        let store = Arc::new(Store::open(&config.store)?);
        let sandbox = Sandbox::new(
            SandboxConfig::default()
                .pooling(true)
                .cache_dir(config.store.join("cache"))
                .cache_bytes(config.cache_bytes)
                .backend(config.backend)
                .threads(config.threads),
        )?;
        let sandbox = Arc::new(sandbox);
        Ok(Arc::new(AppState {
            workers: Arc::new(tokio::sync::Semaphore::new(config.workers.max(1))),
            memory: Arc::new(tokio::sync::Semaphore::new(
                usize::try_from(config.max_buffered_bytes / 1024)
                    .unwrap_or(usize::MAX)
                    .min(tokio::sync::Semaphore::MAX_PERMITS),
            )),
            clients: admission::Clients::default(),
            config,
            metrics: metrics::Metrics::with_caches(sandbox.clone()),
            host: tally_host::Host::new(sandbox.clone(), key, "tally serve")
                .with_store(store.clone()),
            store,
            sandbox,
            inflight: AtomicUsize::new(0),
            transfers: AtomicUsize::new(0),
            runs: Mutex::new(api::RunTable::default()),
        }))
    }

    /// The metrics, for tests and embedding.
    pub fn metrics(&self) -> &metrics::Metrics {
        &self.metrics
    }

    /// Runs and verifications queued or running now.
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::SeqCst)
    }

    /// Uploads and large downloads in progress now.
    pub fn transfers(&self) -> usize {
        self.transfers.load(Ordering::SeqCst)
    }
}

/// Serves the API on `listener` until `shutdown` resolves; then stops
/// accepting, lets open requests finish, and waits for queued and running
/// jobs (whose results are stored) before returning. Connections are
/// bounded in number, per client, and in how long their headers may take
/// (see `conn.rs`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    // The backend's one-time set-up (the portable engine's compilation)
    // starts at once, beside serving; runs never pay for it in wall time
    // either way (the sandbox prepares before a run's clock starts).
    if state.config.warm_up {
        let warm = state.sandbox.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = warm.warm_up() {
                tracing::warn!("warming the inference backend: {e}");
            }
        });
    }
    let app = api::router(state.clone(), listener.local_addr()?);
    conn::accept_loop(listener, app, state.clone(), shutdown).await;
    while state.inflight() > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests and runs");
}
