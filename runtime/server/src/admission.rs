//! Admission: every job that costs CPU or holds memory (a run, a
//! verification, a large download) is counted against `workers + queue`
//! before it starts, and shed with 503 beyond it. The count and the worker
//! permit belong to the job, not to the connection: they are moved into the
//! blocking task that does the work ([`Job`]) or into the response body
//! that holds the bytes ([`held`]), so a client that goes away frees
//! nothing the work still uses.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use crate::{ApiError, AppState};

/// Counts a job in, or sheds it when workers and queue are full. The job
/// counts out when the returned guard drops.
pub(crate) fn admit(s: &Arc<AppState>) -> Result<Admission, ApiError> {
    let cap = s.config.workers.max(1) + s.config.queue;
    let before = s.inflight.fetch_add(1, Ordering::SeqCst);
    if before >= cap {
        s.inflight.fetch_sub(1, Ordering::SeqCst);
        s.metrics.shed.inc();
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "queue_full",
            format!("{cap} jobs (runs, verifications, large downloads) are queued or running; retry later"),
        ));
    }
    s.metrics.queue_depth.set(before as i64 + 1);
    Ok(Admission(s.clone()))
}

/// A job counted in [`AppState::inflight`].
pub(crate) struct Admission(Arc<AppState>);

/// An admitted job holding its worker: moved into the blocking task that
/// does the work, so it is released when the work ends, not when the
/// client goes away.
pub(crate) struct Job {
    _admission: Admission,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Admission {
    /// Waits for a worker.
    pub(crate) async fn worker(self) -> Job {
        let permit = self
            .0
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
        let now = self.0.inflight.fetch_sub(1, Ordering::SeqCst) - 1;
        self.0.metrics.queue_depth.set(now as i64);
    }
}

/// A large response body that keeps its admission until the client has
/// read it all (or gone): however slowly clients read, at most `workers +
/// queue` large bodies are held at once.
pub(crate) fn held(
    admission: Admission,
    content_type: &'static str,
    bytes: impl Into<Bytes>,
) -> Response {
    const CHUNK: usize = 1 << 16;
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
