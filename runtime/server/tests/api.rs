//! The real server, in-process on 127.0.0.1:0, driven by a real HTTP client.

use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use serde_json::{json, Value};
use tally_digest::Digest;
use tally_server::{AppState, ServerConfig};
use tally_test_artifacts::pkg::{bundle_bytes, Pkg};

use tally_api::b64;

/// A one-stage package of guest `name`, signed by publisher `[seed; 32]`.
fn bundle(name: &str, limits: &str, seed: u8) -> (Digest, Vec<u8>) {
    let p = Pkg::new()
        .publisher(seed)
        .limit(limits)
        .guest_stage(name, "")
        .build();
    (p.id(), bundle_bytes(&p))
}

struct Server {
    url: String,
    state: Arc<AppState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
    http: reqwest::Client,
}

async fn start(tune: impl FnOnce(&mut ServerConfig)) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::default();
    config.store = dir.path().join("store");
    // No background compilation of the portable engine: it would take a
    // core from tests that do not use it.
    config.warm_up = false;
    tune(&mut config);
    let state = AppState::new(config, SigningKey::from_bytes(&[42; 32])).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let st = state.clone();
    let task = tokio::spawn(async move {
        tally_server::serve(listener, st, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    Server {
        url,
        state,
        stop: Some(tx),
        task,
        _dir: dir,
        http: reqwest::Client::new(),
    }
}

/// An upload that declares 100000 bytes and sends two.
const STALLED_UPLOAD: &[u8] = b"POST /v1/packages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\nxx";

/// The head of a run submission declaring a 1000-byte body.
const RUN_HEAD_1000: &[u8] = b"POST /v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n";

impl Server {
    /// A raw connection that has sent `bytes`: for requests a client
    /// library will not make (stalled, trickled, half-sent).
    async fn sent(&self, bytes: &[u8]) -> tokio::net::TcpStream {
        use tokio::io::AsyncWriteExt;
        let mut tcp = tokio::net::TcpStream::connect(self.url.trim_start_matches("http://"))
            .await
            .unwrap();
        tcp.write_all(bytes).await.unwrap();
        tcp
    }
    async fn upload(&self, bytes: &[u8]) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/v1/packages", self.url))
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }
    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }
    async fn get(&self, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }
    /// Waits (at most a minute) until no job is queued or running.
    async fn idle(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while self.state.inflight() > 0 {
            assert!(std::time::Instant::now() < deadline, "the jobs end");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        self.task.await.unwrap();
    }
}

fn code(v: &Value) -> &str {
    v["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error body: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_list_fetch_run_receipt_verify_metrics() {
    let s = start(|_| {}).await;
    let (id, bytes) = bundle("echo", "", 1);
    let (status, up) = s.upload(&bytes).await;
    assert_eq!(status, 201, "{up}");
    assert_eq!(up["id"], id.to_string());
    let (status, again) = s.upload(&bytes).await;
    assert_eq!(
        (status, again["created"].clone()),
        (200, json!(false)),
        "re-upload is idempotent"
    );

    let (status, list) = s.get("/v1/packages").await;
    assert_eq!(status, 200);
    assert!(list.contains(&id.to_string()));
    let (status, manifest) = s.get(&format!("/v1/packages/{id}")).await;
    assert_eq!(status, 200);
    assert!(manifest.contains("\"stages\""), "{manifest}");
    let r = s
        .http
        .get(format!("{}/v1/packages/{id}/bundle", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.bytes().await.unwrap().to_vec(),
        bytes,
        "bundles are deterministic bytes"
    );

    let (status, run) = s
        .post(
            "/v1/runs",
            serde_json::to_value(tally_api::RunBody::new(&id, b"hello")).unwrap(),
        )
        .await;
    assert_eq!(status, 200, "{run}");
    let report: tally_api::RunReport = serde_json::from_value(run.clone()).unwrap();
    assert_eq!(report.output().unwrap(), b"hello");
    assert!(report.outcome.is_ok());
    let receipt = report.receipt;
    receipt
        .check_seal(&[hex::encode(
            SigningKey::from_bytes(&[42; 32]).verifying_key().as_bytes(),
        )])
        .unwrap();
    let claim = run["claim_digest"].as_str().unwrap();

    let (status, stored) = s.get(&format!("/v1/receipts/{claim}")).await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<tally_receipt::Receipt>(&stored).unwrap(),
        receipt
    );
    let (status, transcript) = s.get(&format!("/v1/receipts/{claim}/transcript")).await;
    assert_eq!(status, 200);
    tally_receipt::Transcript::from_jsonl(&transcript, &receipt.claim.transcript_root).unwrap();

    let (status, verdict) = s
        .post(
            "/v1/verify",
            serde_json::to_value(tally_api::VerifyBody::new(receipt.clone(), b"hello")).unwrap(),
        )
        .await;
    assert_eq!(status, 200, "{verdict}");
    assert_eq!(verdict["verified"], true);

    let (_, metrics) = s.get("/metrics").await;
    assert!(
        metrics.contains("tally_runs_total{outcome=\"ok\",backend=\"portable\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tally_uploads_total{result=\"stored\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tally_verifications_total{result=\"verified\"} 1"),
        "{metrics}"
    );
    // What the host keeps between requests, against its budget: the
    // package (kept by the run, found again by the verification) and its
    // compiled module.
    let gauge = |name: &str| -> u64 {
        let line = metrics
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {metrics}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(gauge("tally_cache_budget_bytes "), 2 << 30);
    assert_eq!(gauge("tally_cache_entries{cache=\"packages\"}"), 1);
    assert!(gauge("tally_cache_bytes{cache=\"modules\"}") > 0);
    assert!(gauge("tally_cache_hits_total{cache=\"packages\"}") >= 1);
    assert_eq!(gauge("tally_cache_evictions_total{cache=\"graphs\"}"), 0);
    let (status, health) = s.get("/healthz").await;
    assert_eq!((status, health.contains("ok")), (200, true));
    let (_, openapi) = s.get("/v1/openapi.json").await;
    let doc: Value = serde_json::from_str(&openapi).unwrap();
    // Generated from the handlers: every route, every body field.
    let mut paths: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "/healthz",
            "/metrics",
            "/v1/packages",
            "/v1/packages/{id}",
            "/v1/packages/{id}/bundle",
            "/v1/receipts/{id}",
            "/v1/receipts/{id}/tensors",
            "/v1/receipts/{id}/transcript",
            "/v1/runs",
            "/v1/runs/{id}",
            "/v1/verify",
        ]
    );
    let schemas = &doc["components"]["schemas"];
    for field in ["package_id", "input", "fuel", "seed", "backend"] {
        assert!(
            schemas["RunBody"]["properties"][field].is_object(),
            "RunBody.{field}"
        );
    }
    assert!(schemas["VerifyBody"]["properties"]["backend"].is_object());
    assert_eq!(
        doc["paths"]["/v1/verify"]["post"]["security"][0]["bearer"],
        json!([])
    );
    assert!(doc["paths"]["/v1/runs"]["post"]["responses"]["503"].is_object());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_runs_report_their_state_and_result() {
    let s = start(|_| {}).await;
    let (id, bytes) = bundle("echo", "", 1);
    s.upload(&bytes).await;
    let (status, accepted) = s
        .post(
            "/v1/runs?wait=false",
            json!({ "package_id": id.to_string(), "input": b64::encode("x") }),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    let run_id = accepted["run_id"].as_str().unwrap().to_string();
    let mut state = String::new();
    for _ in 0..500 {
        let (_, body) = s.get(&format!("/v1/runs/{run_id}")).await;
        let v: Value = serde_json::from_str(&body).unwrap();
        state = v["state"].as_str().unwrap().to_string();
        if state == "done" {
            // Read back from the store: the run table keeps only digests.
            let report: tally_api::RunReport = serde_json::from_value(v).unwrap();
            assert!(report.outcome.is_ok());
            assert_eq!(report.output().unwrap(), b"x");
            assert_eq!(report.claim_digest, report.receipt.seal.claim_digest);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(state, "done");
    let (status, body) = s.get("/v1/runs/nope").await;
    assert_eq!(status, 404);
    assert!(body.contains("run_not_found"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_class_has_its_status_and_code() {
    let allowed = SigningKey::from_bytes(&[1; 32]).verifying_key().to_bytes();
    let s = start(|c| {
        c.publishers = Some(vec![allowed]);
        c.token = Some("secret".into());
        c.max_upload_bytes = 2 << 20;
        c.max_request_bytes = 1 << 20;
    })
    .await;
    let (id, bytes) = bundle("echo", "", 1);
    assert_eq!(s.upload(&bytes).await.0, 201);
    // 403: a publisher off the allowlist.
    let (status, e) = s.upload(&bundle("echo", "", 2).1).await;
    assert_eq!((status, code(&e)), (403, "publisher_not_allowed"));
    // 422: not a bundle; 413: too large.
    let (status, e) = s.upload(b"garbage").await;
    assert_eq!((status, code(&e)), (422, "invalid_package"));
    // One byte over the cap: the server reads (and drops) what a client
    // just over the cap sends, so the client reads its 413 rather than a
    // broken pipe. (Far over the cap, the server closes the connection
    // after draining the cap: the client may see the broken pipe first;
    // sending 3 MiB here made this test flaky.)
    let (status, e) = s.upload(&vec![0u8; (2 << 20) + 1]).await;
    assert_eq!((status, code(&e)), (413, "too_large"));
    // 401 / 403: run submission needs the token.
    let body = json!({ "package_id": id.to_string(), "input": "" });
    let (status, e) = s.post("/v1/runs", body.clone()).await;
    assert_eq!((status, code(&e)), (401, "unauthorized"));
    let r = s
        .http
        .post(format!("{}/v1/runs", s.url))
        .bearer_auth("wrong")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let authed = |b: Value| {
        s.http
            .post(format!("{}/v1/runs", s.url))
            .bearer_auth("secret")
            .json(&b)
            .send()
    };
    let r = authed(body.clone()).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // 400: bad JSON, bad id, bad base64, unknown fields.
    for (b, want) in [
        (json!({ "package_id": "xyz", "input": "" }), "bad_id"),
        (
            json!({ "package_id": id.to_string(), "input": "!!" }),
            "bad_input",
        ),
        (
            json!({ "package_id": id.to_string(), "input": "", "extra": 1 }),
            "bad_json",
        ),
    ] {
        let r = authed(b).await.unwrap();
        assert_eq!(r.status().as_u16(), 400);
        assert_eq!(code(&r.json().await.unwrap()), want);
    }
    // 413: a JSON request over the cap.
    let big = json!({ "package_id": id.to_string(), "input": b64::encode(vec![0u8; 1 << 20]) });
    let r = authed(big).await.unwrap();
    assert_eq!(r.status().as_u16(), 413);
    // The unread rest of the body makes the connection unusable; a client
    // that reused it would fail its next request.
    assert_eq!(r.headers()["connection"], "close");
    assert_eq!(code(&r.json().await.unwrap()), "too_large");
    // 404: unknown package, receipt and route, all as JSON.
    let r = authed(json!({ "package_id": Digest::of(b"none").to_string(), "input": "" }))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(code(&r.json().await.unwrap()), "package_not_found");
    let (status, body) = s
        .get(&format!("/v1/receipts/{}", Digest::of(b"none")))
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = s.get("/v2/anything").await;
    assert_eq!((status, body.contains("no_such_route")), (404, true));
    // 422: a receipt whose seal does not verify.
    let r = authed(json!({ "package_id": id.to_string(), "input": b64::encode("x") }))
        .await
        .unwrap();
    let run: Value = r.json().await.unwrap();
    let mut forged = run["receipt"].clone();
    forged["claim"]["fuel_consumed"] = json!(1);
    let (http, url) = (&s.http, &s.url);
    let verify = |b: Value| async move {
        let r = http
            .post(format!("{url}/v1/verify"))
            .bearer_auth("secret")
            .json(&b)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    let (status, e) = verify(json!({ "receipt": forged, "input": b64::encode("x") })).await;
    assert_eq!((status, code(&e)), (422, "bad_seal"));
    let (status, e) = verify(json!({ "receipt": run["receipt"], "input": b64::encode("y") })).await;
    assert_eq!((status, code(&e)), (422, "input_mismatch"));
    // 400: a receipt in a format this host does not read.
    let mut future = run["receipt"].clone();
    future["claim"]["format_version"] = json!(9);
    let (status, e) = verify(json!({ "receipt": future, "input": b64::encode("x") })).await;
    assert_eq!((status, code(&e)), (400, "bad_receipt"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_sheds_with_503_and_retry_after() {
    let s = start(|c| {
        c.workers = 1;
        c.queue = 0;
    })
    .await;
    let (id, bytes) = bundle("spin", "fuel = 3_000_000_000", 1);
    s.upload(&bytes).await;
    let body = json!({ "package_id": id.to_string(), "input": "" });
    let (status, _) = s.post("/v1/runs?wait=false", body.clone()).await;
    assert_eq!(status, 202);
    let r = s
        .http
        .post(format!("{}/v1/runs", s.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(code(&r.json().await.unwrap()), "queue_full");
    let (_, metrics) = s.get("/metrics").await;
    assert!(metrics.contains("tally_shed_requests_total 1"), "{metrics}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_in_flight_runs_and_keeps_their_receipts() {
    let s = start(|_| {}).await;
    let (id, bytes) = bundle("spin", "fuel = 500_000_000", 1);
    s.upload(&bytes).await;
    let (status, accepted) = s
        .post(
            "/v1/runs?wait=false",
            json!({ "package_id": id.to_string(), "input": "" }),
        )
        .await;
    assert_eq!(status, 202);
    let state = s.state.clone();
    assert_eq!(state.inflight(), 1);
    s.stop().await;
    assert_eq!(
        state.inflight(),
        0,
        "serve returned only after the run finished"
    );
    let run_id = accepted["run_id"].as_str().unwrap();
    let _ = run_id;
    let (_, metrics) = (0, state.metrics().render());
    assert!(
        metrics.contains("tally_runs_total{outcome=\"limit_exceeded\",backend=\"portable\"} 1"),
        "{metrics}"
    );
}

/// Replays cost as much as runs: a verify needs the token, and a verifier
/// that disconnects does not free the slot its replay still uses (before,
/// the admission and the worker permit were the handler's locals: dropped
/// with the connection while the replay ran on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_is_authenticated_and_a_disconnected_verifier_keeps_its_slot() {
    let s = start(|c| {
        c.token = Some("secret".into());
        c.workers = 1;
        c.queue = 0;
    })
    .await;
    let (spin, bytes) = bundle("spin", "fuel = 3_000_000_000", 1);
    s.upload(&bytes).await;
    let (echo, bytes) = bundle("echo", "", 1);
    s.upload(&bytes).await;
    let authed = |path: &str, body: Value| {
        s.http
            .post(format!("{}{path}", s.url))
            .bearer_auth("secret")
            .json(&body)
            .send()
    };
    let run = |id: &Digest| serde_json::to_value(tally_api::RunBody::new(id, b"")).unwrap();
    let r = authed("/v1/runs", run(&spin)).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let report: tally_api::RunReport = r.json().await.unwrap();
    let verify = serde_json::to_value(tally_api::VerifyBody::new(report.receipt, b"")).unwrap();

    // Anonymous: 401, before any work.
    let (status, e) = s.post("/v1/verify", verify.clone()).await;
    assert_eq!((status, code(&e)), (401, "unauthorized"));
    // JSON only as JSON: a browser's text/plain post is refused.
    let r = s
        .http
        .post(format!("{}/v1/verify", s.url))
        .bearer_auth("secret")
        .header("content-type", "text/plain")
        .body(verify.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 415);
    assert_eq!(code(&r.json().await.unwrap()), "unsupported_media_type");

    // A verifier that gives up after 300 ms.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let gone = impatient
        .post(format!("{}/v1/verify", s.url))
        .bearer_auth("secret")
        .json(&verify)
        .send()
        .await;
    assert!(gone.is_err(), "the replay takes longer than 300 ms");
    // Its replay still runs, in the only slot: the next job is shed.
    assert_eq!(s.state.inflight(), 1);
    let r = authed("/v1/runs", run(&echo)).await.unwrap();
    assert_eq!(r.status().as_u16(), 503);
    // Once the replay is done, the slot is free again.
    s.idle().await;
    let r = authed("/v1/runs", run(&echo)).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    s.stop().await;
}

/// Every status the server sends has a JSON error body, the routing's own
/// (405, unknown query parameters) included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_json() {
    let s = start(|_| {}).await;
    let r = s
        .http
        .get(format!("{}/v1/verify", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    assert_eq!(code(&r.json().await.unwrap()), "method_not_allowed");
    // A bundle only as a bundle: a form or text post is refused unread.
    let r = s
        .http
        .post(format!("{}/v1/packages", s.url))
        .body(vec![0u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 415);
    assert_eq!(code(&r.json().await.unwrap()), "unsupported_media_type");
    let r = s
        .http
        .post(format!("{}/v1/runs?wait=maybe", s.url))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(code(&r.json().await.unwrap()), "bad_request");
    // Over-long targets and headers: JSON too, before any handler.
    let r = s
        .http
        .get(format!("{}/v1/packages/{}", s.url, "a".repeat(10 << 10)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 414);
    assert_eq!(code(&r.json().await.unwrap()), "uri_too_long");
    let r = s
        .http
        .get(format!("{}/healthz", s.url))
        .header("x-padding", "p".repeat(20 << 10))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 431);
    assert_eq!(code(&r.json().await.unwrap()), "headers_too_large");
    // A body without a Content-Length (chunked) is refused unread: memory
    // is reserved from the declared length.
    let answer = raw(
        &s,
        "POST /v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 411"), "{answer}");
    assert!(answer.contains("length_required"), "{answer}");
    s.stop().await;
}

/// Sends `request` as it is and reads the answer until the server closes.
async fn raw(s: &Server, request: &str) -> String {
    use tokio::io::AsyncReadExt;
    let mut tcp = s.sent(request.as_bytes()).await;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer))
        .await
        .expect("the server answers and closes")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// Uploads and large downloads count against their own pool
/// (`max_transfers`), not the runs': a busy worker does not hold them up,
/// and a stalled upload holding the last transfer slot sheds downloads
/// until it is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_downloads_are_admitted_as_transfers() {
    let s = start(|c| {
        c.workers = 1;
        c.queue = 0;
        c.max_transfers = 1;
        c.max_client_jobs = Some(8);
    })
    .await;
    let (echo, bytes) = bundle("echo", "", 1);
    s.upload(&bytes).await;
    let (spin, bytes) = bundle("spin", "fuel = 3_000_000_000", 1);
    s.upload(&bytes).await;
    let (_, run) = s
        .post(
            "/v1/runs",
            serde_json::to_value(tally_api::RunBody::new(&echo, b"x")).unwrap(),
        )
        .await;
    let claim = run["claim_digest"].as_str().unwrap().to_string();
    let echo_run = run["run_id"].as_str().unwrap().to_string();
    let (status, _) = s
        .post(
            "/v1/runs?wait=false",
            serde_json::to_value(tally_api::RunBody::new(&spin, b"")).unwrap(),
        )
        .await;
    assert_eq!(status, 202);
    let paths = [
        format!("/v1/receipts/{claim}/transcript"),
        format!("/v1/receipts/{claim}/tensors"),
        format!("/v1/packages/{echo}/bundle"),
        format!("/v1/packages/{echo}"),
        format!("/v1/runs/{echo_run}"),
    ];
    // The worker is busy with `spin`; downloads go on.
    for path in &paths {
        let (status, body) = s.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    // (A download's writer may still be letting go of its slot.)
    while s.state.transfers() > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // An upload that declares its size and stalls holds the one slot.
    let stalled = s.sent(STALLED_UPLOAD).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = s.get(&paths[0]).await;
        if status == 503 {
            assert!(body.contains("queue_full"), "{body}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the upload is admitted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for path in &paths {
        let (status, body) = s.get(path).await;
        assert_eq!(status, 503, "{path}: {body}");
    }
    drop(stalled);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while s.get(&paths[0]).await.0 != 200 {
        assert!(std::time::Instant::now() < deadline, "the slot is freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.idle().await;
    s.stop().await;
}

/// A publisher off the allowlist is refused once the manifest and the
/// signature (the bundle's first two entries) are in: the server answers
/// while the client has sent a fraction of what it declared, and reads no
/// more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_publisher_is_answered_before_its_blobs_arrive() {
    use tokio::io::AsyncReadExt;
    let allowed = SigningKey::from_bytes(&[1; 32]).verifying_key().to_bytes();
    let s = start(|c| c.publishers = Some(vec![allowed])).await;
    let (_, bytes) = bundle("echo", "", 2);
    // Manifest and signature entries: the first 4 KiB hold both of a
    // one-stage package's (headers, text, padding) but not its guest.
    let head = &bytes[..4096];
    let request = format!(
        "POST /v1/packages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        bytes.len()
    );
    let mut tcp = s.sent(&[request.as_bytes(), head].concat()).await;
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut answer))
        .await
        .expect("answered without the rest of the body")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains("publisher_not_allowed"), "{answer}");
    drop(tcp);
    s.stop().await;
}

/// A loopback server answers only loopback names: a rebound domain is
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loopback_server_refuses_other_host_names() {
    let s = start(|_| {}).await;
    let r = s
        .http
        .get(format!("{}/healthz", s.url))
        .header("host", "attacker.example:8750")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 421);
    assert_eq!(code(&r.json().await.unwrap()), "misdirected_request");
    for host in ["localhost:8750", "127.0.0.1", "[::1]:1"] {
        let r = s
            .http
            .get(format!("{}/healthz", s.url))
            .header("host", host)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{host}");
    }
    s.stop().await;
}

/// A client that sends headers and then stalls its body (slowloris) holds
/// its admission only until the body timeout, not forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_times_out_and_frees_its_slot() {
    use tokio::io::AsyncReadExt;
    let s = start(|c| {
        c.workers = 1;
        c.queue = 0;
        c.body_timeout = Duration::from_millis(500);
    })
    .await;
    let mut sock = s
        .sent(&[RUN_HEAD_1000, &b"{\"package_id\":"[..]].concat())
        .await;
    // The stalled request holds the only slot...
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(s.state.inflight(), 1);
    // ...until its body times out: then it is answered and the slot freed.
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), sock.read_to_end(&mut answer)).await;
    assert!(
        read.is_ok(),
        "the server answers or closes within the timeout"
    );
    s.idle().await;
    s.stop().await;
}

/// A body trickled a byte at a time never stalls long enough for the
/// per-stall timeout, but must still arrive whole by its deadline
/// (`body_timeout` plus its length at 64 KiB/s): 408, slot freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_meets_its_deadline() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = start(|c| {
        c.workers = 1;
        c.queue = 0;
        c.body_timeout = Duration::from_secs(1);
    })
    .await;
    let sock = s.sent(RUN_HEAD_1000).await;
    let started = std::time::Instant::now();
    let (mut rd, mut wr) = sock.into_split();
    let trickle = tokio::spawn(async move {
        while wr.write_all(b" ").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), rd.read(&mut answer))
        .await
        .expect("answered by the deadline")
        .unwrap();
    trickle.abort();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5));
    s.idle().await;
    s.stop().await;
}

/// A client that asks for a large download and never reads it is cut off
/// once its socket has been full for `body_timeout` (hyper stops polling
/// the body then, so the body timeout alone would never fire), and its
/// transfer slot is freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off() {
    use tokio::io::AsyncWriteExt;
    let s = start(|c| c.body_timeout = Duration::from_secs(1)).await;
    // A transcript far larger than the socket buffers.
    let (chatter, bytes) = bundle("chatter", "host_calls = 300_000", 1);
    s.upload(&bytes).await;
    let (_, run) = s
        .post(
            "/v1/runs",
            serde_json::to_value(tally_api::RunBody::new(&chatter, b"")).unwrap(),
        )
        .await;
    let claim = run["claim_digest"].as_str().unwrap().to_string();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut sock = socket
        .connect(s.url.trim_start_matches("http://").parse().unwrap())
        .await
        .unwrap();
    sock.write_all(
        format!("GET /v1/receipts/{claim}/transcript HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while s.state.transfers() == 0 {
        assert!(std::time::Instant::now() < deadline, "the download starts");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Never read: the slot is freed within the write deadline.
    while s.state.transfers() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "a client that stops reading keeps its transfer slot"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(sock);
    s.stop().await;
}

/// A JSON request reserves three times its length while it is read and
/// parsed, then only what its job still holds (the input): a queued run
/// with a padded body does not keep the budget from the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parsed_request_hands_back_what_it_no_longer_holds() {
    let s = start(|c| {
        c.workers = 1;
        c.queue = 2;
        c.max_request_bytes = 1 << 20;
        c.max_upload_bytes = 1 << 20;
        c.max_buffered_bytes = 4 << 20;
    })
    .await;
    let (spin, bytes) = bundle("spin", "fuel = 3_000_000_000", 1);
    s.upload(&bytes).await;
    let padded = |id: &Digest| {
        let mut body = serde_json::to_string(&tally_api::RunBody::new(id, b"")).unwrap();
        // Whitespace is valid JSON: a 900 KiB body with an empty input.
        body.insert_str(1, &" ".repeat(900 << 10));
        body
    };
    let post = |body: String| {
        s.http
            .post(format!("{}/v1/runs?wait=false", s.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    // 2.7 MiB reserved while parsing each, then a few KiB kept: both
    // runs are accepted although the two together would need 5.4 MiB.
    for _ in 0..2 {
        let r = post(padded(&spin)).await.unwrap();
        let status = r.status().as_u16();
        assert_eq!(status, 202, "{}", r.text().await.unwrap());
    }
    s.idle().await;
    s.stop().await;
}

/// One client gets only its share of each pool: beyond it 503
/// `client_busy`, while the pool itself still has room for others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gets_only_its_share() {
    let s = start(|c| {
        c.workers = 1;
        c.queue = 4;
        c.max_client_jobs = Some(1);
        c.max_transfers = 8;
    })
    .await;
    let (spin, bytes) = bundle("spin", "fuel = 3_000_000_000", 1);
    s.upload(&bytes).await;
    let body = serde_json::to_value(tally_api::RunBody::new(&spin, b"")).unwrap();
    let (status, _) = s.post("/v1/runs?wait=false", body.clone()).await;
    assert_eq!(status, 202);
    let (status, e) = s.post("/v1/runs?wait=false", body).await;
    assert_eq!((status, code(&e)), (503, "client_busy"));
    // Transfers: a quarter of `max_transfers` (2) per client. Two stalled
    // uploads hold them; the third transfer is refused.
    let mut stalled = Vec::new();
    for _ in 0..2 {
        stalled.push(s.sent(STALLED_UPLOAD).await);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while s.state.transfers() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the uploads are admitted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, body) = s.get("/v1/packages").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("client_busy"), "{body}");
    drop(stalled);
    s.idle().await;
    s.stop().await;
}

/// What could never fit the buffer budget is a host misconfiguration
/// (500, naming the flag), not a 503 a client would retry for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_larger_than_the_budget_names_the_flag() {
    let s = start(|c| {
        c.max_upload_bytes = 1 << 20;
        c.max_request_bytes = 256 << 10;
        c.max_buffered_bytes = 1 << 20;
    })
    .await;
    let (echo, bytes) = bundle("echo", "", 1);
    s.upload(&bytes).await;
    let (_, run) = s
        .post(
            "/v1/runs",
            serde_json::to_value(tally_api::RunBody::new(&echo, b"x")).unwrap(),
        )
        .await;
    // A finished run's report reserves 3× its output and 1 MiB more.
    let (status, body) = s
        .get(&format!("/v1/runs/{}", run["run_id"].as_str().unwrap()))
        .await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("raise --max-buffered-mib"), "{body}");
    s.stop().await;
}
