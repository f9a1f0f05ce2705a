//! `tally serve` as a real process: the CLI as its client, a bounded load
//! test, and a crash test (SIGKILL during uploads and runs).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::{Dir, SAMPLE_PNG};

use tally_api::b64;

/// A `tally serve` child process on an ephemeral loopback port.
pub(crate) struct Serve {
    pub(crate) child: Child,
    pub(crate) url: String,
}

impl Serve {
    pub(crate) fn start(d: &Dir, extra: &[&str]) -> Serve {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tally"))
            // Compiling the portable engine in the background would take
            // a core from these tests for tens of seconds; none needs it.
            .args(["serve", "--listen", "127.0.0.1:0", "--no-warm-up"])
            .args(extra)
            .current_dir(d.tmp.path())
            .env("TALLY_HOME", d.path("home"))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let url = loop {
            let line = lines.next().expect("serve printed its address").unwrap();
            if let Some(addr) = line.strip_prefix("listening on ") {
                break addr.to_string();
            }
        };
        // Keep draining stderr so the server never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        Serve { child, url }
    }

    /// SIGTERM, then wait for a clean exit.
    pub(crate) fn stop(mut self) {
        signal(self.child.id(), "TERM");
        let status = self.child.wait().unwrap();
        assert!(status.success(), "serve exits cleanly on SIGTERM: {status}");
    }

    /// SIGKILL: no chance to clean up.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Serve {
    /// A failing test must not leave a server behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

fn signal(pid: u32, signal: &str) {
    Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .unwrap();
}

const IMAGES: &[(&str, &str)] = &[
    (
        "preprocess",
        "args = [\"--width\", \"32\", \"--height\", \"32\"]",
    ),
    ("tensor-stats", ""),
];

#[test]
fn the_cli_publishes_runs_and_verifies_through_a_host() {
    let host = Dir::new();
    let s = Serve::start(&host, &[]);
    let publisher = Dir::new();
    publisher.package("images", IMAGES, "");
    let id = publisher
        .tally(&["publish", "images.tally", "--host", &s.url])
        .expect(0)
        .stdout
        .trim()
        .to_string();
    std::fs::copy(SAMPLE_PNG, publisher.path("in.png")).unwrap();
    let run = publisher
        .tally(&[
            "run",
            &id,
            "--host",
            &s.url,
            "--input",
            "in.png",
            "--output",
            "o.jsonl",
            "--receipt",
            "r.json",
        ])
        .expect(0);
    assert!(run.stderr.contains("outcome: ok"), "{}", run.stderr);
    assert!(publisher
        .read_string("o.jsonl")
        .contains("\"shape\":[1,3,32,32]"));
    // A verifier with an empty store fetches package and transcript from the
    // host and replays locally.
    let verifier = Dir::new();
    std::fs::copy(publisher.path("r.json"), verifier.path("r.json")).unwrap();
    std::fs::copy(SAMPLE_PNG, verifier.path("in.png")).unwrap();
    let v = verifier
        .tally(&["verify", "r.json", "--input", "in.png", "--host", &s.url])
        .expect(0);
    assert!(v.stdout.starts_with("verified"), "{}", v.stdout);
    s.stop();
}

/// The CLI and the server run and verify through the same library calls:
/// on one fixture, with one host key, they seal the same claim under the
/// same seal, and each one's verdict on either receipt is the same.
#[test]
fn the_cli_and_the_server_seal_and_judge_alike() {
    let d = Dir::new();
    d.package("images", IMAGES, "");
    std::fs::copy(SAMPLE_PNG, d.path("in")).unwrap();
    d.tally(&["keygen", "--out", "hk"]).expect(0);
    let host = Dir::new();
    std::fs::copy(d.path("hk"), host.path("hk")).unwrap();
    let s = Serve::start(&host, &["--key", "hk"]);
    d.run("images.tally", &["--key", "hk"]).expect(0);
    std::fs::rename(d.path("r.json"), d.path("local.json")).unwrap();
    std::fs::rename(d.path("r.json.transcript"), d.path("local.json.transcript")).unwrap();
    d.run("images.tally", &["--host", &s.url]).expect(0);
    std::fs::rename(d.path("r.json"), d.path("served.json")).unwrap();
    let receipt = |name: &str| tally_receipt::Receipt::from_json(&d.read_string(name)).unwrap();
    let (local, served) = (receipt("local.json"), receipt("served.json"));
    assert_eq!(local.claim, served.claim);
    assert_eq!(local.seal, served.seal);

    let http = reqwest::blocking::Client::new();
    let input = d.read("in");
    for r in [&local, &served] {
        std::fs::write(d.path("v.json"), r.to_json()).unwrap();
        std::fs::copy(d.path("local.json.transcript"), d.path("v.json.transcript")).unwrap();
        let cli: Value = serde_json::from_str(
            &d.tally(&["verify", "v.json", "--input", "in", "--json"])
                .expect(0)
                .stdout,
        )
        .unwrap();
        let server: Value = http
            .post(format!("{}/v1/verify", s.url))
            .json(&tally_api::VerifyBody::new(r.clone(), &input))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(cli["verified"], true, "{cli}");
        assert_eq!(cli, server);
    }
    s.stop();
}

#[test]
fn serve_reads_a_config_file_and_enforces_its_token() {
    let d = Dir::new();
    d.package("echo", &[("echo", "")], "");
    d.write("token", b"s3cret\n");
    d.write(
        "serve.toml",
        b"workers = 1\nqueue = 4\ntoken_file = \"token\"\nbackend = \"tract\"\n",
    );
    let s = Serve::start(&d, &["--config", "serve.toml"]);
    let id = d
        .tally(&["publish", "echo.tally", "--host", &s.url])
        .expect(0)
        .stdout
        .trim()
        .to_string();
    d.write("in", b"x");
    let args = [
        "run",
        &id,
        "--host",
        &s.url,
        "--input",
        "in",
        "--output",
        "o",
        "--receipt",
        "r.json",
    ];
    let e = d.tally(&args).expect(2);
    assert!(e.stderr.contains("401"), "{}", e.stderr);
    d.tally_env(&args, &[("TALLY_TOKEN", "s3cret")]).expect(0);
    // The backend came from the file, and the claim names it.
    let receipt: Value = serde_json::from_str(&d.read_string("r.json")).unwrap();
    assert_eq!(receipt["claim"]["backend"]["kind"], "tract");
    s.stop();
}

#[test]
fn serve_names_a_bad_backend_in_its_config_file() {
    let d = Dir::new();
    d.write("serve.toml", b"backend = \"cuda\"\n");
    let r = d.tally(&["serve", "--config", "serve.toml", "--listen", "127.0.0.1:0"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("serve.toml: backend: unknown backend `cuda`"),
        "{}",
        r.stderr
    );
}

/// Settings that cannot work stop `serve` at start, not at the first
/// client: an empty token file would refuse everyone.
#[test]
fn serve_refuses_an_empty_token_file_and_too_many_workers() {
    let d = Dir::new();
    d.write("token", b"\n");
    let r = d.tally(&["serve", "--token-file", "token", "--listen", "127.0.0.1:0"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("the bearer token is empty"),
        "{}",
        r.stderr
    );
    let r = d.tally(&["serve", "--workers", "17", "--listen", "127.0.0.1:0"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--workers 16 or fewer"), "{}", r.stderr);
}

/// A store another server holds is a host fault at start (exit 3, the
/// store's error named), not bad usage: the cause stays in the chain.
#[test]
fn serve_on_a_store_in_use_is_a_host_fault() {
    let d = Dir::new();
    let s = Serve::start(&d, &[]);
    let r = d.tally(&["serve", "--listen", "127.0.0.1:0"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("in use by another process"),
        "{}",
        r.stderr
    );
    s.stop();
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[test]
fn load_many_concurrent_clients_lose_nothing() {
    let d = Dir::new();
    d.package("images", IMAGES, "");
    let s = Serve::start(&d, &["--workers", "2", "--queue", "4"]);
    let http = reqwest::blocking::Client::new();
    let bundle = d.read("images.tally");
    let up: Value = http
        .post(format!("{}/v1/packages", s.url))
        .header("content-type", "application/octet-stream")
        .body(bundle)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = up["id"].as_str().unwrap().to_string();
    let input = std::fs::read(SAMPLE_PNG).unwrap();
    let body = json!({ "package_id": id, "input": b64::encode(&input) });
    // Warm up (compile the modules) outside the measurement.
    assert_eq!(
        http.post(format!("{}/v1/runs", s.url))
            .json(&body)
            .send()
            .unwrap()
            .status()
            .as_u16(),
        200
    );

    let (clients, per_client) = (8, 12);
    let receipts = Arc::new(Mutex::new(Vec::new()));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let shed = Arc::new(Mutex::new(0u32));
    let started = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (url, body, receipts, latencies, shed) = (
                s.url.clone(),
                body.clone(),
                receipts.clone(),
                latencies.clone(),
                shed.clone(),
            );
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::new();
                let mut done = 0;
                while done < per_client {
                    let t = Instant::now();
                    let r = http
                        .post(format!("{url}/v1/runs"))
                        .json(&body)
                        .send()
                        .unwrap();
                    match r.status().as_u16() {
                        200 => {
                            latencies.lock().unwrap().push(t.elapsed());
                            let v: Value = r.json().unwrap();
                            receipts.lock().unwrap().push(v["receipt"].clone());
                            done += 1;
                        }
                        503 => {
                            assert_eq!(r.headers()["retry-after"], "1");
                            *shed.lock().unwrap() += 1;
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        other => panic!("unexpected status {other}: {}", r.text().unwrap()),
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let elapsed = started.elapsed();
    let receipts = receipts.lock().unwrap().clone();
    let total = clients * per_client;
    assert_eq!(receipts.len(), total);

    // Every receipt verifies (each is replayed by the host).
    for r in receipts.iter().step_by(1) {
        let v: Value = http
            .post(format!("{}/v1/verify", s.url))
            .json(&json!({ "receipt": r, "input": b64::encode(&input) }))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(v["verified"], true, "{v}");
    }
    // The metrics agree with what the clients saw.
    let metrics = http
        .get(format!("{}/metrics", s.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let runs = total + 1; // and the warm-up
    assert!(
        metrics.contains(&format!(
            "tally_runs_total{{outcome=\"ok\",backend=\"portable\"}} {runs}"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "tally_verifications_total{{result=\"verified\"}} {total}"
        )),
        "{metrics}"
    );
    let shed = *shed.lock().unwrap();
    assert!(
        metrics.contains(&format!("tally_shed_requests_total {shed}")),
        "{metrics}"
    );

    // The same package run by the CLI in a loop, for comparison.
    d.write("in.png", &input);
    let cli_runs = 8;
    let t = Instant::now();
    for i in 0..cli_runs {
        // Its own store: the server holds the index of the other one.
        let receipt = format!("r{i}.json");
        d.tally(&[
            "--store",
            "cli-home",
            "run",
            "images.tally",
            "--input",
            "in.png",
            "--output",
            "o",
            "--receipt",
            &receipt,
        ])
        .expect(0);
    }
    let cli = t.elapsed();
    let mut lat = latencies.lock().unwrap().clone();
    lat.sort();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    let served = total as f64 / elapsed.as_secs_f64();
    let looped = cli_runs as f64 / cli.as_secs_f64();
    println!(
        "load: {total} runs from {clients} clients in {:.2}s: {served:.1} runs/s ({:.1}/core), p50 {:?} p90 {:?} p99 {:?}, {shed} shed (503)\n\
         cli loop: {looped:.1} runs/s ({:.1}/core); service/cli = {:.1}x",
        elapsed.as_secs_f64(),
        served / cores,
        percentile(&lat, 0.5),
        percentile(&lat, 0.9),
        percentile(&lat, 0.99),
        looped / cores,
        served / looped
    );
    s.stop();
}

#[test]
fn a_killed_server_leaves_a_consistent_store_and_every_reported_receipt() {
    let d = Dir::new();
    d.package("images", IMAGES, "");
    d.package("echo", &[("echo", "")], "");
    let s = Serve::start(&d, &["--workers", "2", "--queue", "16"]);
    let url = s.url.clone();
    let input = std::fs::read(SAMPLE_PNG).unwrap();
    let http = reqwest::blocking::Client::new();
    let up: Value = http
        .post(format!("{url}/v1/packages"))
        .header("content-type", "application/octet-stream")
        .body(d.read("images.tally"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = up["id"].as_str().unwrap().to_string();
    let up: Value = http
        .post(format!("{url}/v1/packages"))
        .header("content-type", "application/octet-stream")
        .body(d.read("echo.tally"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let echo_id = up["id"].as_str().unwrap().to_string();

    let reported = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for k in 0..4 {
        let (url, input, reported, stop) =
            (url.clone(), input.clone(), reported.clone(), stop.clone());
        let (id, echo_id) = (id.clone(), echo_id.clone());
        let echo = d.read("echo.tally");
        threads.push(std::thread::spawn(move || {
            let http = reqwest::blocking::Client::new();
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                if k == 0 {
                    // Uploads, over and over (idempotent).
                    let _ = http
                        .post(format!("{url}/v1/packages"))
                        .header("content-type", "application/octet-stream")
                        .body(echo.clone())
                        .send();
                    continue;
                }
                // Runs of the image pipeline (equal claims) and of `echo` on
                // inputs unique to each request (distinct receipts).
                n += 1;
                let body = if k == 1 {
                    json!({ "package_id": id, "input": b64::encode(&input) })
                } else {
                    json!({ "package_id": echo_id, "input": b64::encode(format!("{k}-{n}")) })
                };
                if let Ok(r) = http.post(format!("{url}/v1/runs")).json(&body).send() {
                    if r.status().as_u16() == 200 {
                        if let Ok(v) = r.json::<Value>() {
                            let claim = v["claim_digest"].as_str().unwrap().to_string();
                            reported
                                .lock()
                                .unwrap()
                                .push((claim, body["input"].as_str().unwrap().to_string()));
                        }
                    }
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while reported.lock().unwrap().len() < 6 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    s.kill();
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    let mut reported = reported.lock().unwrap().clone();
    reported.sort();
    reported.dedup();
    assert!(
        reported.len() >= 6,
        "only {} distinct receipts before the kill",
        reported.len()
    );

    // Offline check: no corrupt blob, the index agrees with the blobs, every
    // stored receipt's seal and transcript check out.
    let fsck = d.tally(&["fsck"]).expect(0);
    let report: Value = serde_json::from_str(&fsck.stdout).unwrap();
    assert!(
        report["receipts"].as_u64().unwrap() >= reported.len() as u64,
        "{report}"
    );

    // Restarted, the host serves and verifies every receipt it reported.
    let s = Serve::start(&d, &[]);
    for (claim, input_b64) in &reported {
        let r = http
            .get(format!("{}/v1/receipts/{claim}", s.url))
            .send()
            .unwrap();
        assert_eq!(
            r.status().as_u16(),
            200,
            "receipt {claim} was reported stored"
        );
        let receipt: Value = r.json().unwrap();
        let v: Value = http
            .post(format!("{}/v1/verify", s.url))
            .json(&json!({ "receipt": receipt, "input": input_b64 }))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(v["verified"], true, "{v}");
    }
    s.stop();
}

#[test]
fn a_verifier_on_another_backend_fetches_the_recorded_outputs_from_the_host() {
    let d = Dir::new();
    crate::inference::nn_package(&d);
    let s = Serve::start(&d, &["--backend", "tract"]);
    d.write("in", b"");
    d.run("nn.tally", &["--host", &s.url]).expect(0);
    assert!(
        d.path("r.json.tensors").exists(),
        "run --host writes the recorded outputs too"
    );
    // A verifier with nothing but the receipt and the input.
    let verifier = Dir::new();
    std::fs::copy(d.path("r.json"), verifier.path("r.json")).unwrap();
    verifier.write("in", b"");
    let v = verifier
        .tally(&[
            "verify",
            "r.json",
            "--input",
            "in",
            "--host",
            &s.url,
            "--backend",
            "portable",
            "--json",
        ])
        .expect(0);
    let verdict: Value = serde_json::from_str(&v.stdout).unwrap();
    assert_eq!(verdict["verified"], true, "{}", v.stdout);
    assert_eq!(verdict["cross_backend"], true);
    assert!(
        !verdict["inference"].as_array().unwrap().is_empty(),
        "{}",
        v.stdout
    );
    // Outputs that are not the ones the transcript binds are refused.
    let mut forged = d.read("r.json.tensors");
    let last = forged.len() - 1;
    forged[last] ^= 1;
    verifier.write("r.json.tensors", &forged);
    let r = verifier.tally(&[
        "verify",
        "r.json",
        "--input",
        "in",
        "--host",
        &s.url,
        "--backend",
        "portable",
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("recorded compute #0 has digest"),
        "{}",
        r.stderr
    );
    s.stop();
}

/// A host that answers every request with `answer` (a raw HTTP response),
/// for `n` connections.
fn lying_host(answer: &'static str, n: usize) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming().take(n) {
            let mut conn = conn.unwrap();
            let mut head = [0u8; 65536];
            let _ = conn.read(&mut head);
            let _ = conn.write_all(answer.as_bytes());
        }
    });
    url
}

/// The `--host` client does not trust the host: an answer announced
/// larger than the client reads is refused before it is read, and an
/// error without a JSON body is reported as such (not as a parse error).
#[test]
fn the_host_client_caps_what_a_host_sends() {
    let d = Dir::new();
    d.write("in", b"x");
    let id = "0".repeat(64);
    let args = [
        "run",
        id.as_str(),
        "--input",
        "in",
        "--output",
        "o",
        "--receipt",
        "r.json",
        "--host",
    ];
    let huge = lying_host(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 3221225472\r\n\r\n{",
        1,
    );
    let mut a = args.to_vec();
    a.push(&huge);
    let r = d.tally(&a);
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("the host announced 3221225472 bytes"),
        "{}",
        r.stderr
    );
    let bare = lying_host(
        "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\nContent-Length: 4\r\nConnection: close\r\n\r\noops",
        1,
    );
    let mut a = args.to_vec();
    a.push(&bare);
    let r = d.tally(&a);
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("run: the host answered 500 Internal Server Error, without an error body"),
        "{}",
        r.stderr
    );
}
