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
//! * **Writes** may not stall longer than `body_timeout`: a client that
//!   stops reading is cut off ([`WriteDeadline`]).
//! * **Open connections** are capped in total (`max_connections`: the loop
//!   stops accepting until one closes) and per client address
//!   (`max_client_connections`: more are closed at once, so one client
//!   cannot take every slot).
//! * Each request carries its peer address (`ConnectInfo`), which
//!   admission uses for per-client job limits.
//!
//! On shutdown the loop stops accepting (and closes the listener), asks
//! every connection to finish its request and close, and returns when all
//! have, or after `body_timeout + header_timeout`, aborting the rest.

use std::future::Future;
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
    let max = state.config.max_connections.clamp(1, u32::MAX as usize);
    let slots = Arc::new(tokio::sync::Semaphore::new(max));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(());
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // Finished connection tasks are reaped as we go.
        while connections.try_join_next().is_some() {}
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
        let (drain_limit, drain_time) = (
            state
                .config
                .max_upload_bytes
                .max(state.config.max_request_bytes as u64),
            state.config.body_timeout,
        );
        let service = TowerToHyperService::new(app.clone().map_request(
            move |mut req: axum::http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req.map(|body| {
                    axum::body::Body::new(DrainOnDrop {
                        body: Some(body),
                        limit: drain_limit,
                        time: drain_time,
                    })
                })
            },
        ));
        let io = TokioIo::new(WriteDeadline::new(tcp, state.config.body_timeout));
        let header_timeout = state.config.header_timeout;
        let mut stop = stop_rx.clone();
        let metrics = state.clone();
        connections.spawn(async move {
            let _slot = slot;
            let _client = client;
            metrics.metrics.connections.inc();
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(MAX_HEADER_BYTES)
                .serve_connection(io, service);
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
    // No new connections from here on.
    drop(listener);
    drop(stop_tx);
    // Connections finish their requests and close. A client trickling a
    // body or reading a byte at a time could hold its connection (and the
    // job admitted for it) for long, so the wait is bounded; what is
    // still open after it is aborted, releasing what its handler held.
    // (Runs already handed to a worker finish regardless: `serve` waits
    // for them.)
    let grace = state.config.body_timeout + state.config.header_timeout;
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(grace, drained).await.is_err() {
        tracing::warn!(
            "{} connections still open {grace:?} after shutdown began; closing them",
            connections.len()
        );
        connections.shutdown().await;
    }
}

/// A request body that, when dropped unfinished (the handler answered
/// without reading it all: a refusal), is read to its end and discarded in
/// the background, at most `limit` bytes for at most `time`. Nothing is
/// kept; but an HTTP client that writes its whole body before reading the
/// answer then sees the answer (401, 413, 403…) instead of a broken pipe.
struct DrainOnDrop {
    body: Option<hyper::body::Incoming>,
    limit: u64,
    time: std::time::Duration,
}

impl hyper::body::Body for DrainOnDrop {
    type Data = axum::body::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        match self.body.as_mut() {
            Some(body) => std::pin::Pin::new(body).poll_frame(cx),
            None => std::task::Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body
            .as_ref()
            .map(|b| b.size_hint())
            .unwrap_or_else(|| hyper::body::SizeHint::with_exact(0))
    }
}

impl Drop for DrainOnDrop {
    fn drop(&mut self) {
        use http_body_util::BodyExt;
        use hyper::body::Body as _;
        let Some(mut body) = self.body.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // A body declared larger than the limit is drained up to it too:
        // a client told 413 most often sent just over the cap, and should
        // read the answer rather than a broken pipe.
        if body.is_end_stream() {
            return;
        }
        let (limit, time) = (self.limit, self.time);
        runtime.spawn(async move {
            let drain = async {
                let mut read = 0u64;
                while let Some(Ok(frame)) = body.frame().await {
                    read += frame.data_ref().map_or(0, |d| d.len() as u64);
                    if read > limit {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(time, drain).await;
        });
    }
}

/// A connection's socket whose writes may not stall longer than `limit`:
/// a client that stops reading (a full receive window) is cut off, even
/// while hyper is not polling the response body (which is what the body
/// timeout watches).
struct WriteDeadline {
    tcp: tokio::net::TcpStream,
    limit: std::time::Duration,
    stalled: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl WriteDeadline {
    fn new(tcp: tokio::net::TcpStream, limit: std::time::Duration) -> Self {
        WriteDeadline {
            tcp,
            limit,
            stalled: None,
        }
    }

    /// Passes a write's readiness through, failing it once it has been
    /// pending for `limit`.
    fn watch<T>(
        &mut self,
        cx: &mut std::task::Context<'_>,
        polled: std::task::Poll<std::io::Result<T>>,
    ) -> std::task::Poll<std::io::Result<T>> {
        use std::task::Poll;
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let limit = self.limit;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client stopped reading",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl tokio::io::AsyncRead for WriteDeadline {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for WriteDeadline {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.tcp).poll_write(cx, data);
        self.watch(cx, polled)
    }
    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.tcp).poll_write_vectored(cx, data);
        self.watch(cx, polled)
    }
    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let polled = std::pin::Pin::new(&mut self.tcp).poll_flush(cx);
        self.watch(cx, polled)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// The peer address of a request, as the accept loop recorded it.
pub(crate) type Peer = ConnectInfo<SocketAddr>;
