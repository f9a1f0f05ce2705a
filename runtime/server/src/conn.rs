//! Connections: the accept loop under the API.
//!
//! `axum::serve` sets no timer, so hyper would wait forever for a request's
//! headers; this loop serves HTTP/1.1 itself (hyper's connection builder)
//! and bounds what a connection can hold before any handler runs:
//!
//! * **Headers** must arrive whole within `header_timeout`; an idle
//!   keep-alive connection waiting for its next request counts as reading
//!   headers, so it is closed after the same time. Headers are capped at
//!   [`MAX_HEADER_BYTES`] (hyper answers 431 beyond).
//! * **Open connections** are capped in total (`max_connections`: the loop
//!   stops accepting until one closes) and per client address
//!   (`max_client_connections`: more are closed at once, so one client
//!   cannot take every slot).
//! * Each request carries its peer address (`ConnectInfo`), which
//!   admission uses for per-client job limits.
//!
//! On shutdown the loop stops accepting, asks every connection to finish
//! its request and close, and returns when all have, or after
//! `body_timeout + header_timeout` at most.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tower::ServiceExt;

use crate::AppState;

/// The largest request head (request line and headers) hyper buffers.
pub(crate) const MAX_HEADER_BYTES: usize = 64 << 10;

/// Accepts and serves connections until `shutdown` resolves, then drains
/// them.
pub(crate) async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: Router,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let max = state.config.max_connections.max(1);
    let slots = Arc::new(tokio::sync::Semaphore::new(max));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            _ = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, say: back off instead of
                    // spinning.
                    tracing::warn!("accepting a connection: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(client) = state.clients.connect(&state, peer.ip()) else {
            state.metrics.refused_connections.inc();
            tracing::debug!("{peer}: too many connections from this client; closed");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone().map_request(
            move |mut req: axum::http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req.map(axum::body::Body::new)
            },
        ));
        let header_timeout = state.config.header_timeout;
        let mut stop = stop_rx.clone();
        let metrics = state.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _client = client;
            metrics.metrics.connections.inc();
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(MAX_HEADER_BYTES)
                .serve_connection(TokioIo::new(tcp), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!("{peer}: connection ended: {e}");
            }
            metrics.metrics.connections.dec();
        });
    }
    drop(stop_tx);
    // Every connection holds a slot until it closes. A client reading a
    // response a byte at a time would hold its connection for ever, so the
    // wait is bounded: what is still open after it is dropped with the
    // runtime (jobs are waited for separately, by `serve`).
    let grace = state.config.body_timeout + state.config.header_timeout;
    if tokio::time::timeout(grace, slots.acquire_many(max as u32))
        .await
        .is_err()
    {
        tracing::warn!(
            "{} connections still open {grace:?} after shutdown began; dropping them",
            max - slots.available_permits()
        );
    }
}

/// The peer address of a request, as the accept loop recorded it.
pub(crate) type Peer = ConnectInfo<SocketAddr>;
