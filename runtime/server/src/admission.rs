//! Admission: every job that costs CPU or holds memory is counted before it
//! starts, against its pool (runs and verifications: `workers + queue`;
//! uploads and large downloads: `max_transfers`) and against its client's
//! share of that pool, and shed with 503 beyond either. What it will hold
//! in memory is reserved from the host's buffer budget
//! (`max_buffered_bytes`) before it is read or built, and shed with 503
//! when the budget is spent.
//!
//! The count, the reservation and the worker permit belong to the job, not
//! to the connection: an [`Admission`] is shared (cloned) into every
//! blocking task that does the job's work ([`Job`], [`blocking_held`]) and
//! into the response body that streams its answer ([`held`], [`streamed`]),
//! and is released when the last of them ends. A client that goes away
//! (its handler dropped mid-await) frees nothing the work still uses.
//!
//! A client is an IPv4 address, or an IPv6 /64 (one host's usual
//! allocation).

use std::collections::HashMap;
use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use tokio::sync::OwnedSemaphorePermit;

use crate::conn::Peer;
use crate::{ApiError, AppState};

/// What each client has open: connections, and admitted jobs per pool.
#[derive(Default)]
pub(crate) struct Clients(Mutex<HashMap<IpAddr, Counts>>);

#[derive(Default, Clone, Copy)]
struct Counts {
    connections: usize,
    jobs: usize,
    transfers: usize,
}

/// The key per-client limits count under: an IPv4 address (IPv4-mapped
/// IPv6 included), or an IPv6 address's /64.
pub(crate) fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !((1u128 << 64) - 1),
            )),
        },
        v4 => v4,
    }
}

impl Clients {
    fn update(&self, ip: IpAddr, f: impl FnOnce(&mut Counts) -> bool) -> bool {
        let mut map = self.0.lock().unwrap();
        let counts = map.entry(ip).or_default();
        let ok = f(counts);
        if counts.connections == 0 && counts.jobs == 0 && counts.transfers == 0 {
            map.remove(&ip);
        }
        ok
    }

    /// Counts a connection from `ip` in, or `None` when the client already
    /// has `max_client_connections` open.
    pub(crate) fn connect(&self, s: &Arc<AppState>, ip: IpAddr) -> Option<ClientConnection> {
        let cap = s.config.max_client_connections.max(1);
        let key = client_key(ip);
        self.update(key, |c| {
            let ok = c.connections < cap;
            c.connections += ok as usize;
            ok
        })
        .then(|| ClientConnection(s.clone(), key))
    }
}

/// A connection counted against its client; counted out on drop.
pub(crate) struct ClientConnection(Arc<AppState>, IpAddr);

impl Drop for ClientConnection {
    fn drop(&mut self) {
        self.0.clients.update(self.1, |c| {
            c.connections -= 1;
            true
        });
    }
}

/// 503 with a code, saying what is full.
fn busy(code: &'static str, message: String) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
}

/// What an admission counts against.
#[derive(Clone, Copy)]
pub(crate) enum Pool {
    /// Runs and verifications: `workers + queue`.
    Jobs,
    /// Uploads and large downloads: `max_transfers`. They hold memory
    /// (reserved separately) and a connection, but little CPU, so a flood
    /// of slow downloads never sheds a run.
    Transfers,
}

impl Pool {
    fn counter(self, s: &AppState) -> &std::sync::atomic::AtomicUsize {
        match self {
            Pool::Jobs => &s.inflight,
            Pool::Transfers => &s.transfers,
        }
    }

    fn count(self, c: &mut Counts) -> &mut usize {
        match self {
            Pool::Jobs => &mut c.jobs,
            Pool::Transfers => &mut c.transfers,
        }
    }
}

/// Counts a run or verification in, or sheds it when workers and queue
/// are full or its client already has its share. It counts out when the
/// returned guard drops.
pub(crate) fn admit(s: &Arc<AppState>, peer: &Peer) -> Result<Admission, ApiError> {
    admit_to(s, peer, Pool::Jobs)
}

/// [`admit`] for an upload or a large download.
pub(crate) fn admit_transfer(s: &Arc<AppState>, peer: &Peer) -> Result<Admission, ApiError> {
    admit_to(s, peer, Pool::Transfers)
}

fn admit_to(s: &Arc<AppState>, peer: &Peer, pool: Pool) -> Result<Admission, ApiError> {
    let (cap, share, what) = match pool {
        Pool::Jobs => (
            s.config.workers.max(1) + s.config.queue,
            s.config.client_jobs(),
            "runs and verifications",
        ),
        Pool::Transfers => (
            s.config.max_transfers.max(1),
            s.config.client_transfers(),
            "uploads and large downloads",
        ),
    };
    let counter = pool.counter(s);
    let before = counter.fetch_add(1, Ordering::SeqCst);
    if before >= cap {
        counter.fetch_sub(1, Ordering::SeqCst);
        s.metrics.shed.inc();
        return Err(busy(
            "queue_full",
            format!("{cap} {what} are queued or running; retry later"),
        ));
    }
    let ip = client_key(peer.0.ip());
    if !s.clients.update(ip, |c| {
        let n = pool.count(c);
        let ok = *n < share;
        *n += ok as usize;
        ok
    }) {
        counter.fetch_sub(1, Ordering::SeqCst);
        s.metrics.shed.inc();
        return Err(busy(
            "client_busy",
            format!("this client already has {share} {what} in progress; wait for one to finish"),
        ));
    }
    if let Pool::Jobs = pool {
        s.metrics.queue_depth.set(before as i64 + 1);
    }
    Ok(Admission(Arc::new(Admitted {
        state: s.clone(),
        pool,
        ip,
        memory: Mutex::new(None),
    })))
}

/// A job counted in its pool and against its client, with the buffer
/// bytes it reserved; shared by everything doing the job's work, released
/// when the last clone drops.
#[derive(Clone)]
pub(crate) struct Admission(Arc<Admitted>);

pub(crate) struct Admitted {
    state: Arc<AppState>,
    pool: Pool,
    ip: IpAddr,
    memory: Mutex<Option<OwnedSemaphorePermit>>,
}

/// An admitted job holding its worker: moved into the blocking task that
/// does the work, so it is released when the work ends, not when the
/// client goes away.
pub(crate) struct Job {
    _admission: Admission,
    _permit: OwnedSemaphorePermit,
}

impl Admission {
    /// Reserves `bytes` more of the host's buffer budget for this job, or
    /// sheds it (503) when the budget cannot cover them now. More than the
    /// whole budget is a host misconfiguration (500), not worth a retry.
    pub(crate) fn reserve(&self, bytes: u64) -> Result<(), ApiError> {
        let s = &self.0.state;
        let kib = bytes.div_ceil(1024);
        let budget = s.config.max_buffered_bytes;
        if kib > budget / 1024 {
            return Err(ApiError::internal(format!(
                "{bytes} bytes would have to be held in memory, more than the host's whole buffer budget ({budget} bytes); raise --max-buffered-mib"
            )));
        }
        let kib = u32::try_from(kib).map_err(|_| {
            ApiError::internal(format!(
                "{bytes} bytes is more than one reservation can take"
            ))
        })?;
        let permit = s
            .memory
            .clone()
            .try_acquire_many_owned(kib)
            .map_err(|_| {
                s.metrics.shed.inc();
                busy(
                    "memory_busy",
                    format!("the host's buffers ({budget} bytes for requests and responses held in memory) cannot take {bytes} more bytes now; retry later"),
                )
            })?;
        let mut held = self.0.memory.lock().unwrap();
        match held.as_mut() {
            Some(held) => held.merge(permit),
            None => *held = Some(permit),
        }
        Ok(())
    }

    /// Shrinks this job's reservation to `bytes` (what it still holds once
    /// a request is parsed), handing the rest back to the budget.
    pub(crate) fn keep(&self, bytes: u64) {
        let keep = usize::try_from(bytes.div_ceil(1024)).unwrap_or(usize::MAX);
        let mut held = self.0.memory.lock().unwrap();
        if let Some(permit) = held.as_mut() {
            if let Some(extra) = permit.num_permits().checked_sub(keep) {
                drop(permit.split(extra));
            }
        }
    }

    /// Hands `bytes` of this job's reservation back to the budget (what
    /// [`Admission::reserve`] took for something the job no longer holds).
    pub(crate) fn release(&self, bytes: u64) {
        let n = usize::try_from(bytes.div_ceil(1024)).unwrap_or(usize::MAX);
        let mut held = self.0.memory.lock().unwrap();
        if let Some(permit) = held.as_mut() {
            drop(permit.split(n.min(permit.num_permits())));
        }
    }

    /// Waits for a worker.
    pub(crate) async fn worker(self) -> Job {
        let permit = self
            .0
            .state
            .workers
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        Job {
            _admission: self,
            _permit: permit,
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let now = self
            .pool
            .counter(&self.state)
            .fetch_sub(1, Ordering::SeqCst)
            - 1;
        if let Pool::Jobs = self.pool {
            self.state.metrics.queue_depth.set(now as i64);
        }
        let pool = self.pool;
        self.state.clients.update(self.ip, |c| {
            *pool.count(c) -= 1;
            true
        });
    }
}

/// Runs blocking work `f` for the job `admission` counts: the work holds
/// (a share of) the admission, so it stays counted even if the handler
/// awaiting it is dropped because its client went away.
pub(crate) async fn blocking_held<T: Send + 'static>(
    admission: &Admission,
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let held = admission.clone();
    tokio::task::spawn_blocking(move || {
        let _held = held;
        f()
    })
    .await
    .map_err(ApiError::internal)?
}

/// The chunk size of streamed bodies.
const CHUNK: usize = 1 << 16;

/// A response body already in memory (reserved by `admission`), which
/// keeps its admission until the client has read it all (or gone).
pub(crate) fn held(
    admission: Admission,
    content_type: &'static str,
    bytes: impl Into<Bytes>,
) -> Response {
    let bytes: Bytes = bytes.into();
    let chunks: Vec<Bytes> = (0..bytes.len())
        .step_by(CHUNK)
        .map(|at| bytes.slice(at..(at + CHUNK).min(bytes.len())))
        .collect();
    let stream = futures_util::stream::iter(chunks).map(move |c| {
        let _held = &admission;
        Ok::<_, std::convert::Infallible>(c)
    });
    (
        [(header::CONTENT_TYPE, content_type)],
        Body::from_stream(stream),
    )
        .into_response()
}

/// A response body that blocking code `write`s as the client reads it: at
/// most a few chunks are in memory at once, whatever the body's size. The
/// writer (and the admission it holds) ends when `write` returns, or as
/// soon as the client goes away or stops reading for the body timeout.
/// Check what can fail before calling this: once the status is sent, a
/// failure can only cut the body short (the client sees an incomplete
/// response, never a wrong complete one).
pub(crate) fn streamed(
    admission: Admission,
    content_type: &'static str,
    write: impl FnOnce(&mut PipeWriter) -> Result<(), String> + Send + 'static,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let _held = admission;
        let mut out = PipeWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        // A panic must cut the body short too: a clean end would look like
        // a complete answer.
        let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            write(&mut out).and_then(|()| out.flush().map_err(|e| e.to_string()))
        }))
        .unwrap_or_else(|_| Err("the writer panicked".into()));
        if let Err(e) = done {
            tracing::debug!("streaming a response: {e}");
            let _ = tx.blocking_send(Err(std::io::Error::other(e)));
        }
    });
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async { rx.recv().await.map(|c| (c, rx)) });
    (
        [(header::CONTENT_TYPE, content_type)],
        Body::from_stream(stream),
    )
        .into_response()
}

/// The blocking end of a [`streamed`] body.
pub(crate) struct PipeWriter {
    tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl PipeWriter {
    fn send(&mut self) -> std::io::Result<()> {
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
        })
    }
}

impl Write for PipeWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.send()
    }
}

/// The blocking end of a request body streamed in by the handler
/// ([`pipe_in`]): reads block until the client sends more, and fail if the
/// client's body fails (a reset, the body timeout).
pub(crate) struct PipeReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    cur: Bytes,
}

impl std::io::Read for PipeReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.cur = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len());
        out[..n].copy_from_slice(&self.cur[..n]);
        self.cur = self.cur.slice(n..);
        Ok(n)
    }
}

/// Streams `body` into blocking code `read`, which may stop early (say, on
/// a refused publisher): the answer then goes out at once. `read` runs
/// holding the admission. What arrives is reserved from the buffer budget
/// as it arrives (rounded to KiB over the running total, so small chunks
/// cost what they hold): a stalled or refused client holds only what it
/// sent. The whole body must arrive by `deadline`.
///
/// When the budget cannot take the next chunk, the reader sees the body
/// fail and the answer is the budget's 503, not the reader's error. An
/// unfinished body is drained by the connection (`conn::DrainOnDrop`), not
/// kept, hashed or admitted.
pub(crate) async fn pipe_in<T: Send + 'static>(
    admission: &Admission,
    body: Body,
    deadline: tokio::time::Instant,
    read: impl FnOnce(PipeReader) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    let held = admission.clone();
    let reader = tokio::task::spawn_blocking(move || {
        let _held = held;
        read(PipeReader {
            rx,
            cur: Bytes::new(),
        })
    });
    tokio::pin!(reader);
    let mut frames = body.into_data_stream();
    let stream = &mut frames;
    let mut refused: Option<ApiError> = None;
    let over_budget = &mut refused;
    let mut late = false;
    let timed_out = &mut late;
    let pump = async move {
        let (mut arrived, mut reserved_kib) = (0u64, 0u64);
        loop {
            let frame = match tokio::time::timeout_at(deadline, stream.next()).await {
                Ok(Some(Ok(chunk))) => {
                    arrived += chunk.len() as u64;
                    let kib = arrived.div_ceil(1024);
                    match admission.reserve((kib - reserved_kib) * 1024) {
                        Ok(()) => {
                            reserved_kib = kib;
                            Ok(chunk)
                        }
                        Err(e) => {
                            *over_budget = Some(e);
                            Err(std::io::Error::other("the host's buffers are full"))
                        }
                    }
                }
                Ok(Some(Err(e))) => Err(std::io::Error::other(e)),
                Ok(None) => break,
                Err(_) => {
                    *timed_out = true;
                    Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the body did not arrive in time",
                    ))
                }
            };
            let failed = frame.is_err();
            if tx.send(frame).await.is_err() || failed {
                break;
            }
        }
    };
    let done = tokio::select! {
        done = &mut reader => done,
        () = pump => reader.await,
    };
    drop(frames);
    // When the reader failed because the body did, the body's fault is the
    // answer (503 for the budget, 408 for the deadline), not the reader's
    // view of a cut-off body.
    match (done.map_err(ApiError::internal)?, refused, late) {
        (Ok(v), _, _) => Ok(v),
        (Err(_), Some(budget), _) => Err(budget),
        (Err(_), None, true) => Err(ApiError::new(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!(
                "the body did not arrive in time (at least {} bytes a second)",
                crate::MIN_BODY_RATE
            ),
        )),
        (Err(e), None, false) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::client_key;

    #[test]
    fn clients_are_ipv4_addresses_and_ipv6_slash_64s() {
        let key = |s: &str| client_key(s.parse().unwrap());
        assert_eq!(key("10.0.0.7"), key("10.0.0.7"));
        assert_ne!(key("10.0.0.7"), key("10.0.0.8"));
        // One host's /64 is one client, however many addresses it uses.
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        // An IPv4-mapped IPv6 address is its IPv4 client.
        assert_eq!(key("::ffff:10.0.0.7"), key("10.0.0.7"));
    }
}
