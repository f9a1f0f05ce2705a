//! `tally serve`: the host as an HTTP service.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use clap::Args;
use tally_server::{AppState, ConfigFile, ServerConfig};

use crate::Failure;

/// `tally serve`
#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on (default 127.0.0.1:8750: loopback only).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// The host's secret key (default: STORE/host.key, created on first use).
    #[arg(long, value_name = "HOSTKEY")]
    key: Option<PathBuf>,
    /// Runs executing at once (default: the number of CPUs).
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// Intra-op threads per inference of a native backend (tract,
    /// onnxruntime), recorded in each receipt's backend detail (default 1).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Inference backend: portable (default), tract or onnxruntime (library
    /// from $ORT_DYLIB_PATH).
    #[arg(long, value_name = "NAME")]
    backend: Option<tally_sandbox::BackendKind>,
    /// Runs waiting beyond the workers before requests get 503 (default 64).
    #[arg(long, value_name = "N")]
    queue: Option<usize>,
    /// Allowed publisher keys, one hex key per line (default: open mode).
    #[arg(long, value_name = "FILE")]
    publishers: Option<PathBuf>,
    /// A file holding the bearer token run submissions must present.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Do not compile the inference backend at start (by default the
    /// portable engine is compiled in the background as the server starts,
    /// so the first request does not wait for it).
    #[arg(long)]
    no_warm_up: bool,
    /// What the host keeps in memory between requests (packages, compiled
    /// modules, loaded graphs, costs), in MiB, least recently used evicted
    /// first (default 2048).
    #[arg(long, value_name = "MIB")]
    cache_mib: Option<u64>,
    /// Seconds a client may take to send a request's headers; also how
    /// long an idle keep-alive connection stays open (default 10).
    #[arg(long, value_name = "SECS")]
    header_timeout_secs: Option<u64>,
    /// Seconds a request or response body may stall before the connection
    /// is dropped (default 30).
    #[arg(long, value_name = "SECS")]
    body_timeout_secs: Option<u64>,
    /// Connections open at once (default 512).
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Connections one client address may hold open (default 64).
    #[arg(long, value_name = "N")]
    max_client_connections: Option<usize>,
    /// Jobs (runs, verifications, uploads, large downloads) one client
    /// address may have queued or running (default: half of workers +
    /// queue).
    #[arg(long, value_name = "N")]
    max_client_jobs: Option<usize>,
    /// Request and response bodies held in memory at once, in MiB
    /// (default 1024).
    #[arg(long, value_name = "MIB")]
    max_buffered_mib: Option<u64>,
    /// A TOML file with any of the settings above (same names; flags win).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

fn relative_to(base: &Path, p: PathBuf) -> PathBuf {
    if p.is_absolute() {
        p
    } else {
        base.join(p)
    }
}

pub fn serve(a: ServeArgs, store_flag: Option<&Path>) -> Result<(), Failure> {
    let file: ConfigFile = match &a.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            toml::from_str(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?
        }
        None => ConfigFile::default(),
    };
    let base = a
        .config
        .as_deref()
        .and_then(Path::parent)
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let store = store_flag
        .map(Path::to_path_buf)
        .or(file.store.map(|p| relative_to(&base, p)))
        .unwrap_or_else(tally_store::Store::default_root);
    let listen = a
        .listen
        .or(file.listen)
        .unwrap_or_else(|| "127.0.0.1:8750".parse().expect("valid address"));
    let key_path = a.key.or(file.key.map(|p| relative_to(&base, p)));
    let key = super::host_key(key_path.as_ref(), &store)?;

    let mut config = ServerConfig::default();
    config.store = store;
    let file_backend = file
        .backend
        .as_deref()
        .map(str::parse::<tally_sandbox::BackendKind>)
        .transpose()
        .map_err(|e| {
            let path = a.config.as_deref().unwrap_or(Path::new("?"));
            anyhow!("{}: backend: {e}", path.display())
        })?;
    if let Some(b) = a.backend.or(file_backend) {
        config.backend = b;
    }
    if let Some(n) = a.workers.or(file.workers) {
        config.workers = n.max(1);
    }
    if let Some(n) = a.threads.or(file.threads) {
        config.threads = n.clamp(1, 256);
    }
    config.warm_up = !a.no_warm_up && file.warm_up.unwrap_or(true);
    if let Some(mib) = a.cache_mib.or(file.cache_mib) {
        config.cache_bytes = mib.saturating_mul(1 << 20);
    }
    if let Some(n) = a.queue.or(file.queue) {
        config.queue = n;
    }
    if let Some(secs) = a.header_timeout_secs.or(file.header_timeout_secs) {
        config.header_timeout = std::time::Duration::from_secs(secs.max(1));
    }
    if let Some(secs) = a.body_timeout_secs.or(file.body_timeout_secs) {
        config.body_timeout = std::time::Duration::from_secs(secs.max(1));
    }
    if let Some(n) = a.max_connections.or(file.max_connections) {
        config.max_connections = n.max(1);
    }
    if let Some(n) = a.max_client_connections.or(file.max_client_connections) {
        config.max_client_connections = n.max(1);
    }
    if let Some(n) = a.max_client_jobs.or(file.max_client_jobs) {
        config.max_client_jobs = Some(n.max(1));
    }
    if let Some(mib) = a.max_buffered_mib.or(file.max_buffered_mib) {
        config.max_buffered_bytes = mib.saturating_mul(1 << 20);
    }
    if let Some(path) = a
        .publishers
        .or(file.publishers.map(|p| relative_to(&base, p)))
    {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let keys = tally_server::parse_publishers(&text)
            .map_err(|e| anyhow!("{}: {e}", path.display()))?;
        if keys.is_empty() {
            // A read-only host is a choice, but say so.
            eprintln!(
                "warning: {} names no publisher key: every upload will be refused",
                path.display()
            );
        }
        config.publishers = Some(keys);
    }
    if let Some(path) = a
        .token_file
        .or(file.token_file.map(|p| relative_to(&base, p)))
    {
        let token = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        config.token = Some(token.trim().to_string());
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        let state = AppState::new(config, key)?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        eprintln!("listening on http://{}", listener.local_addr()?);
        tally_server::serve(listener, state, tally_server::shutdown_signal()).await?;
        eprintln!("stopped");
        Ok::<(), anyhow::Error>(())
    })?;
    Ok(())
}
