//! Admission: every job that costs CPU or holds memory is counted before it
//! starts, against its pool (runs and verifications: `workers + queue`;
//! uploads and large downloads: `max_transfers`) and against its client's
//! share (`max_client_jobs`), and shed with 503 beyond either. What it will hold in memory is
//! reserved from the host's buffer budget (`max_buffered_bytes`) before it
//! is read or built, and shed with 503 when the budget is spent.
//!
//! The count, the reservation and the worker permit belong to the job, not
//! to the connection: they are moved into the blocking task that does the
//! work ([`Job`]) or into the response body that holds the bytes
//! ([`held`], [`streamed`]), so a client that goes away frees nothing the
//! work still uses.

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

/// What each client address has open: connections and admitted jobs.
#[derive(Default)]
pub(crate) struct Clients(Mutex<HashMap<IpAddr, Counts>>);

#[derive(Default, Clone, Copy)]
struct Counts {
    connections: usize,
    jobs: usize,
}

impl Clients {
    fn update(&self, ip: IpAddr, f: impl FnOnce(&mut Counts) -> bool) -> bool {
        let mut map = self.0.lock().unwrap();
        let counts = map.entry(ip).or_default();
        let ok = f(counts);
        if counts.connections == 0 && counts.jobs == 0 {
            map.remove(&ip);
        }
        ok
    }

    /// Counts a connection from `ip` in, or `None` when the client already
    /// has `max_client_connections` open.
    pub(crate) fn connect(&self, s: &Arc<AppState>, ip: IpAddr) -> Option<ClientConnection> {
        let cap = s.config.max_client_connections.max(1);
        self.update(ip, |c| {
            let ok = c.connections < cap;
            c.connections += ok as usize;
            ok
        })
        .then(|| ClientConnection(s.clone(), ip))
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
    let (cap, what) = match pool {
        Pool::Jobs => (
            s.config.workers.max(1) + s.config.queue,
            "runs and verifications",
        ),
        Pool::Transfers => (s.config.max_transfers.max(1), "uploads and large downloads"),
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
    let ip = peer.0.ip();
    let share = s.config.client_jobs();
    if !s.clients.update(ip, |c| {
        let ok = c.jobs < share;
        c.jobs += ok as usize;
        ok
    }) {
        counter.fetch_sub(1, Ordering::SeqCst);
        s.metrics.shed.inc();
        return Err(busy(
            "client_busy",
            format!("this client already has {share} requests (runs, verifications, uploads, large downloads) in progress; wait for one to finish"),
        ));
    }
    if let Pool::Jobs = pool {
        s.metrics.queue_depth.set(before as i64 + 1);
    }
    Ok(Admission {
        state: s.clone(),
        pool,
        ip,
        memory: None,
    })
}

/// A job counted in its pool and against its client, with
/// the buffer bytes it reserved.
pub(crate) struct Admission {
    state: Arc<AppState>,
    pool: Pool,
    ip: IpAddr,
    memory: Option<OwnedSemaphorePermit>,
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
    /// sheds it (503) when the budget cannot cover them now.
    pub(crate) fn reserve(&mut self, bytes: u64) -> Result<(), ApiError> {
        let kib = u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX);
        let budget = self.state.config.max_buffered_bytes;
        let permit = self
            .state
            .memory
            .clone()
            .try_acquire_many_owned(kib)
            .map_err(|_| {
                self.state.metrics.shed.inc();
                busy(
                    "memory_busy",
                    format!("the host's buffers ({budget} bytes for requests and responses held in memory) cannot take {bytes} more bytes now; retry later"),
                )
            })?;
        match &mut self.memory {
            Some(held) => held.merge(permit),
            None => self.memory = Some(permit),
        }
        Ok(())
    }

    /// Waits for a worker.
    pub(crate) async fn worker(self) -> Job {
        let permit = self
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

impl Drop for Admission {
    fn drop(&mut self) {
        let now = self
            .pool
            .counter(&self.state)
            .fetch_sub(1, Ordering::SeqCst)
            - 1;
        if let Pool::Jobs = self.pool {
            self.state.metrics.queue_depth.set(now as i64);
        }
        self.state.clients.update(self.ip, |c| {
            c.jobs -= 1;
            true
        });
    }
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
        let done = write(&mut out).and_then(|()| out.flush().map_err(|e| e.to_string()));
        if let Err(e) = done {
            tracing::warn!("streaming a response: {e}");
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
/// a refused publisher): the answer then goes out at once. Each chunk is
/// reserved from the buffer budget on `admission` before it is passed on
/// (a stalled client holds only what it sent); the admission is released
/// when `read` returns. Returns what `read` returns.
///
/// After an early answer the rest of the body is read and discarded (not
/// kept, hashed or admitted; still under the body timeout and at most the
/// declared length): HTTP clients that write a whole body before reading
/// the answer would otherwise see a broken pipe instead of the refusal.
pub(crate) async fn pipe_in<T: Send + 'static>(
    mut admission: Admission,
    body: Body,
    read: impl FnOnce(PipeReader) -> T + Send + 'static,
) -> Result<T, ApiError> {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    let reader = tokio::task::spawn_blocking(move || {
        read(PipeReader {
            rx,
            cur: Bytes::new(),
        })
    });
    tokio::pin!(reader);
    let mut frames = body.into_data_stream();
    let (stream, held) = (&mut frames, &mut admission);
    let pump = async move {
        while let Some(frame) = stream.next().await {
            let frame = match frame {
                Ok(chunk) => match held.reserve(chunk.len() as u64) {
                    Ok(()) => Ok(chunk),
                    Err(e) => Err(std::io::Error::other(e.message)),
                },
                Err(e) => Err(std::io::Error::other(e)),
            };
            let failed = frame.is_err();
            if tx.send(frame).await.is_err() || failed {
                break;
            }
        }
    };
    let (done, early) = tokio::select! {
        done = &mut reader => (done, true),
        () = pump => (reader.await, false),
    };
    drop(admission);
    if early {
        tokio::spawn(async move { while let Some(Ok(_)) = frames.next().await {} });
    }
    done.map_err(ApiError::internal)
}
