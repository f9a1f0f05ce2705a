//! The routes and their handlers (admission lives in `admission.rs`).

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use tally_api::ErrorBody;
use tally_api::{
    FieldError, PackageList, PackageSummary, RunBody, RunPending, RunReport, RunState, Uploaded,
    VerifyBody,
};
use tally_digest::Digest;
use tally_host::VerifyError;
use tally_package::{Package, PackageError};
use tally_receipt::{Receipt, Transcript, Verdict};
use tally_sandbox::{RunRequest, SandboxError};
use utoipa::OpenApi as _;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::admission::{admit, admit_transfer, blocking_held, held, pipe_in, streamed, Admission};
use crate::conn::Peer;
use crate::metrics::{ResultLabel, RunLabels};
use crate::{ApiError, AppState};

type ApiResult<T> = Result<T, ApiError>;
type AppS = State<Arc<AppState>>;

pub(crate) fn router(state: Arc<AppState>, local: std::net::SocketAddr) -> Router {
    let limit = state.config.max_request_bytes;
    let body_timeout = state.config.body_timeout;
    let (routes, document) = OpenApiRouter::with_openapi(crate::openapi::ApiDoc::openapi())
        .routes(routes!(health))
        .routes(routes!(metrics))
        .routes(routes!(upload, list_packages))
        .routes(routes!(get_package))
        .routes(routes!(get_bundle))
        .routes(routes!(submit_run))
        .routes(routes!(get_run))
        .routes(routes!(get_receipt))
        .routes(routes!(get_transcript))
        .routes(routes!(get_tensors))
        .routes(routes!(verify))
        .split_for_parts();
    let document = Arc::new(document);
    routes
        .route(
            "/v1/openapi.json",
            get(move || async move { Json(document.as_ref().clone()) }),
        )
        .fallback(|| async {
            ApiError::not_found("no_such_route", "no such endpoint; see /v1/openapi.json")
        })
        .layer(DefaultBodyLimit::max(limit))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            body_timeout,
        ))
        .layer(tower_http::timeout::ResponseBodyTimeoutLayer::new(
            body_timeout,
        ))
        .layer(axum::middleware::map_response(json_errors))
        .layer(axum::middleware::from_fn(bounded_heads))
        .layer(axum::middleware::from_fn(move |req, next| {
            only_local_names(local, req, next)
        }))
        .with_state(state)
}

/// The response every admitted route may give: shed (503).
#[derive(utoipa::IntoResponses)]
enum Shed {
    /// The pool or the client's share is full, or the buffer budget is
    /// spent (`queue_full`, `client_busy`, `memory_busy`); retry after
    /// `Retry-After`.
    #[response(status = 503)]
    #[allow(dead_code)]
    Busy(ErrorBody),
}

/// The response any route may give: a host fault (500).
#[derive(utoipa::IntoResponses)]
enum HostFault {
    /// A host fault.
    #[response(status = 500)]
    #[allow(dead_code)]
    Internal(ErrorBody),
}

/// `{id}`: a package id.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct PackageId {
    /// The package id: 64 hex digits.
    #[param(pattern = "^[0-9a-f]{64}$")]
    id: String,
}

/// `{id}`: a receipt's claim digest.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct ClaimId {
    /// The receipt's claim digest: 64 hex digits.
    #[param(pattern = "^[0-9a-f]{64}$")]
    id: String,
}

/// Liveness.
#[utoipa::path(get, path = "/healthz", tag = "service",
    responses((status = 200, description = "The service is up.", body = tally_api::Health)))]
async fn health() -> Json<tally_api::Health> {
    Json(tally_api::Health {
        status: "ok".into(),
    })
}

/// The longest request target (path and query) the API answers; longer
/// ones get a JSON 414. No route needs a tenth of it.
pub(crate) const MAX_URI_BYTES: usize = 8 << 10;

/// The most header bytes (names and values) a request may carry; more get
/// a JSON 431. Heads beyond [`crate::conn::MAX_HEADER_BYTES`] never reach
/// here: hyper refuses them with a bare 431 and closes.
pub(crate) const MAX_HEADERS_BYTES: usize = 16 << 10;

/// Refuses over-long request targets and headers with JSON errors, before
/// any handler runs.
async fn bounded_heads(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let uri = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if uri > MAX_URI_BYTES {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!("the request target is {uri} bytes; at most {MAX_URI_BYTES} are accepted"),
        )
        .into_response();
    }
    let headers: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if headers > MAX_HEADERS_BYTES {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!("the request's headers are {headers} bytes; at most {MAX_HEADERS_BYTES} are accepted"),
        )
        .into_response();
    }
    next.run(req).await
}

/// On a loopback address, answers only requests addressed to a loopback
/// name: a web page whose domain an attacker re-points at 127.0.0.1 (DNS
/// rebinding) sends its own domain as `Host`, and is refused (421).
async fn only_local_names(
    local: std::net::SocketAddr,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if local.ip().is_loopback() {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok());
        if let Some(host) = host {
            let name = match host.rsplit_once(':') {
                Some((name, port))
                    if !name.ends_with(':') && port.bytes().all(|b| b.is_ascii_digit()) =>
                {
                    name
                }
                _ => host,
            };
            let local_name = matches!(
                name.to_ascii_lowercase().as_str(),
                "localhost" | "127.0.0.1" | "[::1]"
            ) || name
                .parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| ip.is_loopback());
            if !local_name {
                return ApiError::new(
                    StatusCode::MISDIRECTED_REQUEST,
                    "misdirected_request",
                    format!(
                        "this host serves loopback only; `Host: {host}` is not a loopback name"
                    ),
                )
                .into_response();
            }
        }
    }
    next.run(req).await
}

/// Gives every error the server sends a JSON body with a stable code,
/// those of axum's own routing and extractors (405, a bad query string)
/// included.
async fn json_errors(r: Response) -> Response {
    let status = r.status();
    let json = r
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || json {
        return r;
    }
    let code = match status {
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::URI_TOO_LONG => "uri_too_long",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers_too_large",
        s if s.is_client_error() => "bad_request",
        _ => "internal",
    };
    // `Allow` tells a client which methods a route takes (405).
    let allow = r.headers().get(header::ALLOW).cloned();
    // axum's own messages are short; more is never read.
    let text = axum::body::to_bytes(r.into_body(), 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let mut resp = ApiError::new(status, code, message).into_response();
    if let Some(allow) = allow {
        resp.headers_mut().insert(header::ALLOW, allow);
    }
    resp
}

#[utoipa::path(get, path = "/metrics", tag = "service",
    responses((status = 200, description = "Prometheus metrics, text exposition format.", body = String, content_type = "text/plain")))]
async fn metrics(State(s): AppS) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
}

fn parse_id(what: &'static str, id: &str) -> ApiResult<Digest> {
    id.parse()
        .map_err(|e| ApiError::bad_request("bad_id", format!("`{id}` is not a {what} id: {e}")))
}

/// Runs blocking store or sandbox work off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)?
}

/// 415 unless the request says its body is `wanted` (one of them). A
/// browser page can post `text/plain` or a form to a loopback server
/// without asking; it cannot post these without a CORS preflight, which
/// this server never grants.
fn require_content_type(headers: &HeaderMap, wanted: &[&str]) -> ApiResult<()> {
    let given = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    match given {
        Some(t) if wanted.contains(&t.as_str()) => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("send the body as {} (Content-Type)", wanted.join(" or ")),
        )),
    }
}

/// The request's `Content-Length`, which every request with a body must
/// send (411 otherwise), at most `cap` (413 otherwise): the server reserves
/// memory for a body before reading it.
fn content_length(headers: &HeaderMap, cap: u64) -> ApiResult<u64> {
    let len = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::LENGTH_REQUIRED,
                "length_required",
                "send the body with a Content-Length (not chunked): the host reserves memory for it before reading it",
            )
        })?;
    if len > cap {
        return Err(too_large(cap));
    }
    Ok(len)
}

fn too_large(cap: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("the request body exceeds the size cap of {cap} bytes"),
    )
}

/// Reads and parses a JSON body, at most `max_request_bytes`, turning every
/// failure into a JSON error. Called after the token check and admission:
/// an anonymous client never makes the server buffer a body, and the
/// memory it takes is reserved first. The parse runs off the async
/// threads.
async fn json_body<T: serde::de::DeserializeOwned + Send + 'static>(
    s: &AppState,
    admission: &Admission,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<T> {
    require_content_type(headers, &["application/json"])?;
    let len = content_length(headers, s.config.max_request_bytes as u64)?;
    admission.reserve(len.saturating_mul(crate::JSON_RESERVE_FACTOR))?;
    let deadline = s.config.body_deadline(len);
    let bytes = tokio::time::timeout_at(
        deadline,
        axum::body::to_bytes(body, s.config.max_request_bytes),
    )
    .await
    .map_err(|_| {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!(
                "the {len}-byte body did not arrive in time (at least {} bytes a second)",
                crate::MIN_BODY_RATE
            ),
        )
    })?
    .map_err(|e| {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        let mut too_large = false;
        while let Some(c) = cause {
            too_large |= c.is::<http_body_util::LengthLimitError>();
            cause = c.source();
        }
        if too_large {
            self::too_large(s.config.max_request_bytes as u64)
        } else {
            ApiError::bad_request("bad_body", format!("reading the request body: {e}"))
        }
    })?;
    blocking_held(admission, move || {
        serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad_request("bad_json", format!("invalid request JSON: {e}")))
    })
    .await
}

/// 400 for a request field that does not parse, with a code per field.
fn bad_field(e: FieldError) -> ApiError {
    let code = match e.field {
        "package_id" => "bad_id",
        "input" => "bad_input",
        "seed" => "bad_seed",
        _ => "bad_request",
    };
    ApiError::bad_request(code, e.to_string())
}

// ---- packages ----

/// An upload is admitted as a transfer and its bytes reserved as they
/// arrive (the reader holds at most the declared length); the bundle is checked as it streams in (`pipe_in`), so a
/// publisher off the allowlist is refused after the first two entries
/// (manifest and signature), without the rest being read.
#[utoipa::path(post, path = "/v1/packages", tag = "packages",
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "A bundle (`.tally` file), with its Content-Length."),
    responses(
        (status = 201, description = "Stored.", body = Uploaded),
        (status = 200, description = "Already stored (uploads are idempotent).", body = Uploaded),
        (status = 400, description = "The body could not be read.", body = ErrorBody),
        (status = 403, description = "The publisher is not on this host's allowlist.", body = ErrorBody),
        (status = 408, description = "The body did not arrive in time (`body_timeout`, at least 256 KiB a second after the body timeout).", body = ErrorBody),
        (status = 411, description = "No Content-Length.", body = ErrorBody),
        (status = 413, description = "Larger than the upload cap.", body = ErrorBody),
        (status = 415, description = "Not sent as `application/octet-stream` or `application/x-tar`.", body = ErrorBody),
        (status = 422, description = "Not a valid, signed bundle.", body = ErrorBody),
        HostFault,
        Shed,
    ))]
async fn upload(State(s): AppS, peer: Peer, headers: HeaderMap, body: Body) -> ApiResult<Response> {
    require_content_type(&headers, &["application/octet-stream", "application/x-tar"])?;
    let cap = s.config.max_upload_bytes;
    let rejected = |s: &AppState| {
        s.metrics
            .uploads
            .get_or_create(&ResultLabel {
                result: "rejected".into(),
            })
            .inc();
    };
    let len = content_length(&headers, cap).inspect_err(|_| rejected(&s))?;
    let admission = admit_transfer(&s, &peer)?;
    let st = s.clone();
    let deadline = s.config.body_deadline(len);
    let result = pipe_in(&admission, body, deadline, move |reader| {
        // The publisher is accepted (or not) before any blob is read.
        let allowed = st.config.publishers.as_deref();
        let allow = |p: &[u8; 32]| match allowed {
            Some(keys) if !keys.contains(p) => Err(PackageError::PublisherNotAllowed {
                publisher: hex::encode(p),
            }),
            _ => Ok(()),
        };
        let package = Package::from_bundle_by(reader, len, &allow).map_err(|e| match e {
            PackageError::PublisherNotAllowed { publisher } => ApiError::new(
                StatusCode::FORBIDDEN,
                "publisher_not_allowed",
                format!("publisher {publisher} is not on this host's allowlist"),
            ),
            PackageError::TooLarge { .. } => ApiError::bad_request(
                "bad_body",
                format!("the bundle's entries exceed its declared length ({len} bytes)"),
            ),
            e => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_package",
                e.to_string(),
            ),
        })?;
        let info = &package.manifest().package;
        let created = st.store.package_record(&package.id()).is_err();
        let id = st.store.put_package(&package)?;
        Ok(Uploaded {
            id,
            name: info.name.clone(),
            version: info.version.clone(),
            publisher: hex::encode(info.publisher),
            created,
        })
    })
    .await;
    let label = match &result {
        Ok(u) if u.created => "stored",
        Ok(_) => "existing",
        Err(_) => "rejected",
    };
    s.metrics
        .uploads
        .get_or_create(&ResultLabel {
            result: label.into(),
        })
        .inc();
    let up = result?;
    let status = if up.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(up)).into_response())
}

#[utoipa::path(get, path = "/v1/packages", tag = "packages",
    responses((status = 200, description = "Every stored package.", body = PackageList),
        HostFault,
    ))]
async fn list_packages(State(s): AppS, peer: Peer) -> ApiResult<Json<PackageList>> {
    let admission = admit_transfer(&s, &peer)?;
    let st = s.clone();
    let records = blocking_held(&admission, move || Ok(st.store.packages()?)).await?;
    let packages = records
        .into_iter()
        .map(|r| PackageSummary {
            id: r.id,
            name: r.name,
            version: r.version,
            publisher: r.publisher,
        })
        .collect();
    Ok(Json(PackageList { packages }))
}

/// Package `id`, checked: from the sandbox's caches (within its byte
/// budget), or loaded (and re-verified) from the store. Packages are
/// immutable, so a cached one never goes stale.
///
/// A load runs for `admission`'s job and reserves the package's bytes
/// first; it completes (into the cache) even if the client goes away, so
/// the work is never wasted and never unaccounted.
async fn load_package(
    s: &Arc<AppState>,
    id: Digest,
    admission: &Admission,
) -> ApiResult<Arc<Package>> {
    if let Some(p) = s.sandbox.cached_package(&id) {
        return Ok(p);
    }
    let st = s.clone();
    let job = admission.clone();
    blocking_held(admission, move || {
        let not_found = |e| match e {
            tally_store::StoreError::NotFound(_) => ApiError::not_found(
                "package_not_found",
                format!("no package {id} on this host; upload it first"),
            ),
            other => ApiError::internal(other),
        };
        let bytes = st.store.package_bytes(&id).map_err(not_found)?;
        job.reserve(bytes)?;
        let package = Arc::new(st.store.get_package(&id).map_err(not_found)?);
        st.sandbox.keep_package(package.clone());
        // Once the cache holds it, its budget accounts for it; a package
        // the cache did not keep stays reserved by the job.
        if st.sandbox.cached_package(&id).is_some() {
            job.release(bytes);
        }
        Ok(package)
    })
    .await
}

#[utoipa::path(get, path = "/v1/packages/{id}", tag = "packages",
    params(PackageId),
    responses(
        (status = 200, description = "The package id, its manifest and its signature.", body = Object),
        (status = 400, description = "Not a package id.", body = ErrorBody),
        (status = 404, description = "No such package on this host.", body = ErrorBody),
        HostFault,
        Shed,
    ))]
async fn get_package(
    State(s): AppS,
    peer: Peer,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let id = parse_id("package", &id)?;
    // Loading a package not in the cache reads and re-checks all of it.
    let admission = admit_transfer(&s, &peer)?;
    let p = load_package(&s, id, &admission).await?;
    Ok(Json(
        serde_json::json!({ "id": p.id(), "manifest": p.manifest(), "signature": p.signature() }),
    ))
}

/// The bundle is written from the checked package as the client reads it,
/// never whole in memory a second time.
#[utoipa::path(get, path = "/v1/packages/{id}/bundle", tag = "packages",
    params(PackageId),
    responses(
        (status = 200, description = "The package as a bundle, streamed.", body = Vec<u8>, content_type = "application/x-tar"),
        (status = 400, description = "Not a package id.", body = ErrorBody),
        (status = 404, description = "No such package on this host.", body = ErrorBody),
        HostFault,
        Shed,
    ))]
async fn get_bundle(State(s): AppS, peer: Peer, Path(id): Path<String>) -> ApiResult<Response> {
    let id = parse_id("package", &id)?;
    let admission = admit_transfer(&s, &peer)?;
    let p = load_package(&s, id, &admission).await?;
    Ok(streamed(admission, "application/x-tar", move |out| {
        p.write_bundle(out)
            .map_err(|e| format!("writing bundle {id}: {e}"))
    }))
}

// ---- runs ----

/// Refuses an inference backend other than the one this host serves.
fn check_backend(s: &AppState, backend: &Option<String>) -> ApiResult<()> {
    let serves = &s.sandbox.backend_info().kind;
    match backend {
        Some(b) if b != serves => Err(ApiError::bad_request(
            "unsupported_backend",
            format!("backend `{b}` is not available on this host, which serves `{serves}`; leave `backend` out or ask for `{serves}`"),
        )),
        _ => Ok(()),
    }
}

#[derive(Deserialize)]
struct RunQuery {
    wait: Option<bool>,
}

/// Where a submitted run is.
#[derive(Debug, Clone)]
pub(crate) enum RunStatus {
    Queued,
    Running,
    /// Sealed: the receipt's claim digest. The receipt and the output are
    /// in the store; the table holds only digests, so finished runs cost
    /// no memory whatever their output size.
    Done(Digest),
    Failed(String),
}

fn check_token(s: &AppState, headers: &HeaderMap) -> ApiResult<()> {
    let Some(token) = &s.config.token else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match given.and_then(|v| v.strip_prefix("Bearer ")) {
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "runs and verifications need `Authorization: Bearer <token>`",
        )),
        // Compared as blake3 hashes, whose equality is constant-time.
        Some(t) if blake3::hash(t.trim().as_bytes()) == blake3::hash(token.trim().as_bytes()) => {
            Ok(())
        }
        Some(_) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the bearer token is not accepted",
        )),
    }
}

/// How many runs `GET /v1/runs/{id}` remembers; older ones are forgotten
/// (their receipts stay in the store).
const REMEMBERED_RUNS: usize = 1024;

fn set_status(s: &AppState, id: &str, status: RunStatus) {
    let mut runs = s.runs.lock().unwrap();
    if runs.map.insert(id.to_string(), status).is_none() {
        runs.order.push_back(id.to_string());
        while runs.order.len() > REMEMBERED_RUNS {
            if let Some(old) = runs.order.pop_front() {
                runs.map.remove(&old);
            }
        }
    }
}

/// Recent runs by id, oldest first in `order`.
#[derive(Default)]
pub(crate) struct RunTable {
    map: std::collections::HashMap<String, RunStatus>,
    order: std::collections::VecDeque<String>,
}

#[utoipa::path(post, path = "/v1/runs", tag = "runs",
    params(("wait" = Option<bool>, Query, description = "Wait for the receipt (default `true`); `false` answers 202 at once with where to poll.")),
    request_body(content = RunBody, description = "What to run, with its Content-Length."),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Sealed: the output and the receipt.", body = RunReport),
        (status = 202, description = "Accepted (`wait=false`).", body = RunPending),
        (status = 400, description = "A field or the body does not parse (`bad_id`, `bad_input`, `bad_seed`, `bad_json`, `unsupported_backend`).", body = ErrorBody),
        (status = 401, description = "No bearer token.", body = ErrorBody),
        (status = 403, description = "The bearer token is not accepted.", body = ErrorBody),
        (status = 404, description = "No such package on this host.", body = ErrorBody),
        (status = 408, description = "The body did not arrive in time (`body_timeout`, at least 256 KiB a second after the body timeout).", body = ErrorBody),
        (status = 411, description = "No Content-Length.", body = ErrorBody),
        (status = 413, description = "Larger than the request cap.", body = ErrorBody),
        (status = 415, description = "Not sent as `application/json`.", body = ErrorBody),
        (status = 422, description = "The host's policy refuses the run.", body = ErrorBody),
        HostFault,
        Shed,
    ))]
async fn submit_run(
    State(s): AppS,
    peer: Peer,
    headers: HeaderMap,
    Query(q): Query<RunQuery>,
    body: Body,
) -> ApiResult<Response> {
    check_token(&s, &headers)?;
    // Admitted before its body is read: at most `workers + queue` bodies
    // are held at once.
    let admission = admit(&s, &peer)?;
    let req: RunBody = json_body(&s, &admission, &headers, body).await?;
    check_backend(&s, &req.backend)?;
    let package_id = req.package_id().map_err(bad_field)?;
    let input = req.input().map_err(bad_field)?;
    let seed = req.seed_digest().map_err(bad_field)?;
    let fuel = req.fuel;
    // From here the job holds the decoded input only.
    drop(req);
    admission.keep(input.len() as u64);
    let package = load_package(&s, package_id, &admission).await?;
    let run_id = hex::encode(rand_bytes());
    set_status(&s, &run_id, RunStatus::Queued);
    let (st, id) = (s.clone(), run_id.clone());
    let job = tokio::spawn(async move {
        let started = Instant::now();
        let job = admission.worker().await;
        set_status(&st, &id, RunStatus::Running);
        let (st2, id2) = (st.clone(), id.clone());
        let result = blocking(move || {
            let _job = job;
            execute_run(&st2, &id2, &package, &input, fuel, seed)
        })
        .await;
        st.metrics
            .run_seconds
            .observe(started.elapsed().as_secs_f64());
        match &result {
            Ok(report) => set_status(&st, &id, RunStatus::Done(report.claim_digest)),
            Err(e) => set_status(&st, &id, RunStatus::Failed(e.message.clone())),
        }
        result
    });
    if q.wait == Some(false) {
        let body = RunPending {
            status: Some(format!("/v1/runs/{run_id}")),
            run_id,
            state: RunState::Queued,
            error: None,
        };
        return Ok((StatusCode::ACCEPTED, Json(body)).into_response());
    }
    let report = job.await.map_err(ApiError::internal)??;
    Ok(Json(report).into_response())
}

fn rand_bytes() -> [u8; 16] {
    let mut b = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    b
}

/// Runs, seals and stores ([`tally_host::Host::run_and_seal`]): the
/// receipt, transcript and output are durable before this returns.
fn execute_run(
    s: &AppState,
    run_id: &str,
    package: &Package,
    input: &[u8],
    fuel: Option<u64>,
    seed: Option<Digest>,
) -> ApiResult<RunReport> {
    let sealed = s
        .host
        .run_and_seal(package, &RunRequest::new(input).fuel(fuel).seed(seed))
        .map_err(|e| {
            if e.is_request_error() {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "run_refused",
                    e.to_string(),
                )
            } else {
                ApiError::internal(e)
            }
        })?;
    if let Some(Err(e)) = sealed.stored {
        return Err(ApiError::internal(e));
    }
    let claim = &sealed.receipt.claim;
    let outcome = claim.outcome.clone();
    let kind = serde_json::to_value(&outcome)
        .ok()
        .and_then(|v| v["kind"].as_str().map(String::from));
    s.metrics
        .runs
        .get_or_create(&RunLabels {
            outcome: kind.unwrap_or_default(),
            backend: s.sandbox.backend_info().kind.clone(),
        })
        .inc();
    s.metrics.fuel.inc_by(claim.fuel_consumed);
    Ok(RunReport {
        run_id: run_id.to_string(),
        state: RunState::Done,
        claim_digest: sealed.receipt.seal.claim_digest,
        outcome,
        output: RunReport::encode_output(&sealed.output),
        receipt: sealed.receipt,
    })
}

#[utoipa::path(get, path = "/v1/runs/{id}", tag = "runs",
    params(("id" = String, Path, description = "The run id `POST /v1/runs` answered.")),
    responses(
        (status = 200, description = "The run: a `RunReport` once done, else a `RunPending`.", body = RunReport),
        (status = 404, description = "No such run (or forgotten: the host remembers the last 1024).", body = ErrorBody),
        HostFault,
        Shed,
    ))]
async fn get_run(State(s): AppS, peer: Peer, Path(id): Path<String>) -> ApiResult<Response> {
    let status = s.runs.lock().unwrap().map.get(&id).cloned();
    let pending = |state, error| {
        Json(RunPending {
            run_id: id.clone(),
            state,
            status: None,
            error,
        })
        .into_response()
    };
    Ok(match status {
        None => {
            return Err(ApiError::not_found(
                "run_not_found",
                format!("no run {id} on this host"),
            ))
        }
        Some(RunStatus::Queued) => pending(RunState::Queued, None),
        Some(RunStatus::Running) => pending(RunState::Running, None),
        Some(RunStatus::Failed(m)) => pending(RunState::Failed, Some(m)),
        Some(RunStatus::Done(claim)) => {
            // The output is read back from the store (up to the output
            // limit): admitted, reserved and held like any large download.
            let admission = admit_transfer(&s, &peer)?;
            let st = s.clone();
            let job = admission.clone();
            let json = blocking_held(&admission, move || {
                let receipt = st.store.get_receipt(&claim)?;
                // The output, its base64 text, and the report around it.
                job.reserve(receipt.claim.output_len.saturating_mul(3) + (1 << 20))?;
                let output = match receipt.claim.output_len {
                    0 => Vec::new(),
                    _ => st.store.get_blob(&receipt.claim.output)?,
                };
                let report = RunReport {
                    run_id: id,
                    state: RunState::Done,
                    claim_digest: claim,
                    outcome: receipt.claim.outcome.clone(),
                    output: RunReport::encode_output(&output),
                    receipt,
                };
                serde_json::to_vec(&report).map_err(ApiError::internal)
            })
            .await?;
            held(admission, "application/json", json)
        }
    })
}

// ---- receipts ----

async fn load_receipt(s: &Arc<AppState>, id: &str) -> ApiResult<Receipt> {
    let claim = parse_id("receipt (claim digest)", id)?;
    let st = s.clone();
    blocking(move || {
        st.store.get_receipt(&claim).map_err(|e| match e {
            tally_store::StoreError::NotFound(_) => ApiError::not_found(
                "receipt_not_found",
                format!("no receipt {claim} on this host"),
            ),
            other => ApiError::internal(other),
        })
    })
    .await
}

#[utoipa::path(get, path = "/v1/receipts/{id}", tag = "receipts",
    params(ClaimId),
    responses(
        (status = 200, description = "The sealed receipt.", body = Object),
        (status = 400, description = "Not a claim digest.", body = ErrorBody),
        (status = 404, description = "No such receipt on this host.", body = ErrorBody),
        HostFault,
    ))]
async fn get_receipt(State(s): AppS, Path(id): Path<String>) -> ApiResult<Json<Receipt>> {
    Ok(Json(load_receipt(&s, &id).await?))
}

/// The stored transcript file, streamed as it is (not parsed and
/// re-serialised): a run may make millions of host calls.
#[utoipa::path(get, path = "/v1/receipts/{id}/transcript", tag = "receipts",
    params(ClaimId),
    responses(
        (status = 200, description = "The transcript, one host call per JSON line, streamed as stored.", body = String, content_type = "application/x-ndjson"),
        (status = 400, description = "Not a claim digest.", body = ErrorBody),
        (status = 404, description = "No such receipt on this host.", body = ErrorBody),
        HostFault,
        Shed,
    ))]
async fn get_transcript(State(s): AppS, peer: Peer, Path(id): Path<String>) -> ApiResult<Response> {
    let receipt = load_receipt(&s, &id).await?;
    let admission = admit_transfer(&s, &peer)?;
    let st = s.clone();
    let blob = blocking_held(&admission, move || {
        let digest = st.store.transcript_blob(&receipt.claim.transcript_root)?;
        Ok(st.store.open_blob(&digest)?)
    })
    .await?;
    Ok(streamed(admission, "application/x-ndjson", move |out| {
        blob.copy_to(out).map_err(|e| e.to_string())
    }))
}

/// The recorded inference outputs of a receipt (`RECEIPT.tensors` format),
/// for verifiers replaying on another backend: streamed compute by
/// compute as the transcript is read line by line.
#[utoipa::path(get, path = "/v1/receipts/{id}/tensors", tag = "receipts",
    params(ClaimId),
    responses(
        (status = 200, description = "The recorded inference outputs: per successful compute, its length (u64, little-endian) then its bytes, each bound by the transcript.", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 400, description = "Not a claim digest.", body = ErrorBody),
        (status = 404, description = "No such receipt on this host.", body = ErrorBody),
        HostFault,
        Shed,
    ))]
async fn get_tensors(State(s): AppS, peer: Peer, Path(id): Path<String>) -> ApiResult<Response> {
    let receipt = load_receipt(&s, &id).await?;
    let admission = admit_transfer(&s, &peer)?;
    let st = s.clone();
    let blob = blocking_held(&admission, move || {
        let digest = st.store.transcript_blob(&receipt.claim.transcript_root)?;
        Ok(st.store.open_blob(&digest)?)
    })
    .await?;
    let st = s.clone();
    Ok(streamed(
        admission,
        "application/octet-stream",
        move |out| {
            let mut computes = ComputeFrames {
                store: &st.store,
                out,
                line: Vec::new(),
            };
            blob.copy_to(&mut computes).map_err(|e| e.to_string())?;
            // The last line, if it did not end with a newline.
            std::io::Write::flush(&mut computes).map_err(|e| e.to_string())
        },
    ))
}

/// Reads a transcript's JSON lines as they stream by and writes, for each
/// successful compute, its recorded outputs from the store, framed as
/// `tally_receipt::encode_recorded` frames them.
struct ComputeFrames<'a, W: std::io::Write> {
    store: &'a tally_store::Store,
    out: W,
    line: Vec<u8>,
}

impl<W: std::io::Write> ComputeFrames<'_, W> {
    fn on_line(&mut self) -> std::io::Result<()> {
        let line = std::mem::take(&mut self.line);
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let call: tally_receipt::HostCall =
            serde_json::from_slice(&line).map_err(std::io::Error::other)?;
        if let Some(digest) = call.recorded_output() {
            let blob = self
                .store
                .open_blob(&digest)
                .map_err(std::io::Error::other)?;
            self.out
                .write_all(&tally_receipt::recorded_frame(blob.len()))?;
            blob.copy_to(&mut self.out).map_err(std::io::Error::other)?;
            // Sent now: a long stretch without computes must not leave a
            // reader waiting on a part-filled chunk.
            self.out.flush()?;
        }
        Ok(())
    }
}

impl<W: std::io::Write> std::io::Write for ComputeFrames<'_, W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let mut rest = data;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            self.line.extend_from_slice(&rest[..end]);
            self.on_line()?;
            rest = &rest[end + 1..];
        }
        self.line.extend_from_slice(rest);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        if !self.line.is_empty() {
            self.on_line()?;
        }
        self.out.flush()
    }
}

/// What a verify request brings: the package (loaded by id), and maybe the
/// transcript.
struct RequestSources {
    package: Arc<Package>,
    transcript: Option<String>,
}

impl tally_host::Sources for RequestSources {
    fn package(&self, id: &Digest) -> Result<Arc<Package>, tally_host::SourceError> {
        match self.package.id() == *id {
            true => Ok(self.package.clone()),
            false => Err(tally_host::SourceError::NotFound(format!("package {id}"))),
        }
    }
    fn transcript(&self, receipt: &Receipt) -> Result<Transcript, tally_host::SourceError> {
        match &self.transcript {
            Some(text) => Transcript::from_jsonl(text, &receipt.claim.transcript_root)
                .map_err(|e| tally_host::SourceError::Invalid(e.to_string())),
            None => Err(tally_host::SourceError::NotFound(
                "no transcript in the request".into(),
            )),
        }
    }
}

/// The HTTP answer to a receipt that cannot be replayed: 422 with a code
/// per reason when the request is at fault, 500 when the host is.
fn verify_error(e: VerifyError) -> ApiError {
    let code = match &e {
        VerifyError::Seal(_) => "bad_seal",
        VerifyError::NotReplayable(_) => "not_replayable",
        VerifyError::InputMismatch { .. } => "input_mismatch",
        VerifyError::Replay(SandboxError::PolicyForbids { .. }) => "replay_refused",
        e if e.is_request_error() => "not_verifiable",
        _ => return ApiError::internal(e),
    };
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, e.to_string())
}

#[utoipa::path(post, path = "/v1/verify", tag = "receipts",
    request_body(content = VerifyBody, description = "The receipt, the input, and perhaps the transcript, with the Content-Length."),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The verdict: `verified`, and where a replay diverged.", body = Object),
        (status = 400, description = "A field or the body does not parse.", body = ErrorBody),
        (status = 401, description = "No bearer token.", body = ErrorBody),
        (status = 403, description = "The bearer token is not accepted.", body = ErrorBody),
        (status = 404, description = "The receipt's package is not on this host.", body = ErrorBody),
        (status = 408, description = "The body did not arrive in time (`body_timeout`, at least 256 KiB a second after the body timeout).", body = ErrorBody),
        (status = 411, description = "No Content-Length.", body = ErrorBody),
        (status = 413, description = "Larger than the request cap.", body = ErrorBody),
        (status = 415, description = "Not sent as `application/json`.", body = ErrorBody),
        (status = 422, description = "Not replayable: a bad seal, another input, a refused policy (`bad_seal`, `input_mismatch`, `not_replayable`, `replay_refused`, `not_verifiable`).", body = ErrorBody),
        HostFault,
        Shed,
    ))]
async fn verify(
    State(s): AppS,
    peer: Peer,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Verdict>> {
    // A replay costs what a run costs: the same token admits it.
    check_token(&s, &headers)?;
    let admission = admit(&s, &peer)?;
    let req: VerifyBody = json_body(&s, &admission, &headers, body).await?;
    check_backend(&s, &req.backend)?;
    req.receipt
        .check_format()
        .map_err(|e| ApiError::bad_request("bad_receipt", e.to_string()))?;
    let input = req.input().map_err(bad_field)?;
    let VerifyBody {
        receipt,
        transcript,
        ..
    } = req;
    // From here the job holds the input, the transcript and the receipt.
    admission
        .keep(input.len() as u64 + transcript.as_ref().map_or(0, |t| t.len() as u64) + (64 << 10));
    // The cheap checks first, before any package is loaded or any work
    // admitted (`tally_host::verify` makes them again: they are cheap).
    tally_host::check(&receipt, &[], &input).map_err(verify_error)?;
    let claim = receipt.claim.clone();
    // The package is checked before a worker is taken: an unknown one is a
    // 404, not a queued replay.
    let package = load_package(&s, claim.package_id, &admission).await?;
    let job = admission.worker().await;
    let st = s.clone();
    let verdict = blocking(move || {
        let _job = job;
        let sources = RequestSources {
            package,
            transcript,
        };
        let store = tally_host::StoreSources(&st.store);
        tally_host::verify(
            &st.sandbox,
            &receipt,
            &[],
            &input,
            &tally_host::FirstOf(vec![&sources, &store]),
        )
        .map_err(verify_error)
    })
    .await?;
    let label = if verdict.verified {
        "verified"
    } else {
        "failed"
    };
    s.metrics
        .verifications
        .get_or_create(&ResultLabel {
            result: label.into(),
        })
        .inc();
    Ok(Json(verdict))
}
