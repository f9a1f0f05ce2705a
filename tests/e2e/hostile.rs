//! `tally serve` under hostile clients, all at once, while an honest client
//! keeps running and verifying: slowloris headers, a connection flood from
//! one address, anonymous heavy requests, deeply nested JSON, an upload
//! flood from a publisher off the allowlist, and slow readers of a large
//! transcript. Attackers connect from other loopback addresses
//! (127.0.0.2 and up), so per-client limits apply to them and not to the
//! honest client on 127.0.0.1. Bounded: about 20 s, loopback only.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::serve::{percentile, Serve};
use crate::util::Dir;

/// The server's resident set, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

async fn connect_from(client: u8, server: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::from(([127, 0, 0, client], 0)))
        .unwrap();
    socket.connect(server).await.unwrap()
}

/// Reads an answer with a JSON body (until its last `}`, or the server
/// closes the connection).
async fn read_answer(tcp: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let text = String::from_utf8_lossy(&all).into_owned();
        if text.contains("\r\n\r\n") && text.ends_with('}') {
            return Some(text);
        }
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(text),
            Ok(Ok(n)) => all.extend_from_slice(&buf[..n]),
        }
    }
}

/// Headers that never end, one line every 300 ms: closed at the header
/// timeout (2 s) whatever the client keeps sending.
async fn slowloris(client: u8, server: SocketAddr) -> Duration {
    let started = Instant::now();
    let mut tcp = connect_from(client, server).await;
    tcp.write_all(b"POST /v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let (mut rd, mut wr) = tcp.into_split();
    let drip = tokio::spawn(async move {
        while wr.write_all(b"X-Slow: 1\r\n").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let mut buf = [0u8; 1024];
    while matches!(
        tokio::time::timeout(Duration::from_secs(15), rd.read(&mut buf)).await,
        Ok(Ok(n)) if n > 0
    ) {}
    drip.abort();
    started.elapsed()
}

/// Opens `n` idle connections from one address; returns how many the
/// server closed within half a second (those beyond the client's share).
async fn connection_flood(client: u8, server: SocketAddr, n: usize) -> usize {
    let mut conns = Vec::new();
    for _ in 0..n {
        conns.push(connect_from(client, server).await);
    }
    let mut closed = 0;
    for c in &mut conns {
        let mut b = [0u8; 16];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(500), c.read(&mut b)).await
        {
            closed += 1;
        }
    }
    closed
}

/// Sends the head of a request (and `body` of what it declares), reads the
/// answer without sending the rest.
async fn half_request(client: u8, server: SocketAddr, head: String, body: &[u8]) -> String {
    let mut tcp = connect_from(client, server).await;
    tcp.write_all(head.as_bytes()).await.unwrap();
    let _ = tcp.write_all(body).await;
    read_answer(&mut tcp, Duration::from_secs(10))
        .await
        .expect("answered without the rest of the body")
}

/// Asks for the transcript and reads only its first bytes, then stalls.
async fn slow_reader(client: u8, server: SocketAddr, claim: String) -> String {
    let mut tcp = connect_from(client, server).await;
    let head = format!("GET /v1/receipts/{claim}/transcript HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tcp.read(&mut buf).await.unwrap();
    // Holds the response unread past the body timeout (2 s).
    tokio::time::sleep(Duration::from_secs(4)).await;
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

#[test]
fn hostile_clients_neither_starve_nor_bloat_the_host() {
    let d = Dir::new();
    d.package("echo", &[("echo", "")], "");
    d.package(
        "chatter",
        &[("chatter", "")],
        "[limits]\nhost_calls = 400_000",
    );
    let stranger = Dir::new();
    stranger.package("echo", &[("echo", "")], "");
    d.write("allow", format!("{}\n", d.publisher()).as_bytes());
    d.write("token", b"s3cret\n");
    let s = Serve::start(
        &d,
        &[
            "--backend",
            "tract",
            "--workers",
            "2",
            "--queue",
            "4",
            "--token-file",
            "token",
            "--publishers",
            "allow",
            "--header-timeout-secs",
            "2",
            "--body-timeout-secs",
            "2",
            "--max-client-connections",
            "8",
        ],
    );
    let pid = s.child.id();
    let server: SocketAddr = s.url.trim_start_matches("http://").parse().unwrap();
    let publish = |name: &str| {
        d.tally(&["publish", &format!("{name}.tally"), "--host", &s.url])
            .expect(0)
            .stdout
            .trim()
            .to_string()
    };
    let (echo, chatter) = (publish("echo"), publish("chatter"));
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let run = |package: &str| {
        http.post(format!("{}/v1/runs", s.url))
            .bearer_auth("s3cret")
            .json(&tally_api::RunBody::new(
                &package.parse::<tally_digest::Digest>().unwrap(),
                b"hello",
            ))
            .send()
            .unwrap()
    };
    // A large transcript: `chatter` makes host calls up to its limit.
    let big: Value = run(&chatter).json().unwrap();
    assert_eq!(big["outcome"]["kind"], "limit_exceeded", "{big}");
    let claim = big["claim_digest"].as_str().unwrap().to_string();
    let transcript = http
        .get(format!("{}/v1/receipts/{claim}/transcript", s.url))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    assert!(transcript.len() > 40 << 20, "{} bytes", transcript.len());
    let honest: Value = run(&echo).json().unwrap();
    let honest_claim = honest["claim_digest"].as_str().unwrap().to_string();

    // The honest client's latency with no attack, for comparison.
    let mut quiet = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(1) {
        let t = Instant::now();
        assert_eq!(run(&echo).status().as_u16(), 200);
        quiet.push(t.elapsed());
    }
    quiet.sort();
    std::thread::sleep(Duration::from_millis(500));
    let baseline = rss_kib(pid);
    let peak = Arc::new(AtomicU64::new(baseline));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        std::thread::spawn(move || {
            while sampling.load(Ordering::SeqCst) {
                peak.fetch_max(rss_kib(pid), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let foreign = std::fs::read(stranger.path("echo.tally")).unwrap();
    let target = claim.clone();
    let attacks = rt.spawn(async move {
        let mut tasks = tokio::task::JoinSet::new();
        // Slowloris: 40 connections from 4 addresses.
        for client in 2..6u8 {
            for _ in 0..10 {
                tasks.spawn(async move {
                    let alive = slowloris(client, server).await;
                    assert!(alive < Duration::from_secs(6), "slowloris lived {alive:?}");
                    format!("slowloris: closed after {alive:?}")
                });
            }
        }
        // 30 idle connections from one address: all but its 8 closed.
        tasks.spawn(async move {
            let closed = connection_flood(6, server, 30).await;
            assert!(closed >= 22, "{closed} of 30 closed at once");
            format!("flood: {closed} of 30 closed at once")
        });
        // Anonymous verifications declaring 60 MiB: 401 from the head.
        for i in 0..10u8 {
            tasks.spawn(async move {
                let head = format!("POST /v1/verify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", 60 << 20);
                let answer = half_request(7 + i % 2, server, head, &[b'{'; 1024]).await;
                assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
                "anonymous verify: 401".to_string()
            });
        }
        // Deeply nested JSON, with the token: 400, not a stack overflow.
        tasks.spawn(async move {
            let body = "[".repeat(1 << 20);
            let head = format!("POST /v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer s3cret\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            let answer = half_request(9, server, head, body.as_bytes()).await;
            assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
            assert!(answer.contains("bad_json"), "{answer}");
            "nested JSON: 400".to_string()
        });
        // An upload flood from a publisher off the allowlist, each
        // declaring 200 MiB and sending only the first entries.
        for i in 0..6u8 {
            let head_bytes = foreign[..4096].to_vec();
            tasks.spawn(async move {
                let head = format!("POST /v1/packages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n", 200 << 20);
                let answer = half_request(10 + i % 3, server, head, &head_bytes).await;
                assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
                "foreign upload: 403".to_string()
            });
        }
        // Slow readers of the large transcript from four addresses.
        for i in 0..8u8 {
            let claim = target.clone();
            tasks.spawn(async move {
                let status = slow_reader(13 + i % 4, server, claim).await;
                assert!(
                    status.starts_with("HTTP/1.1 200") || status.starts_with("HTTP/1.1 503"),
                    "{status}"
                );
                format!("slow reader: {status}")
            });
        }
        let mut seen = Vec::new();
        while let Some(r) = tasks.join_next().await {
            seen.push(r.expect("every attack met its defence"));
        }
        seen
    });

    // The honest client keeps running while the attacks last.
    let mut latencies = Vec::new();
    let mut shed = 0;
    let started = Instant::now();
    while !attacks.is_finished() && started.elapsed() < Duration::from_secs(30) {
        let t = Instant::now();
        let r = run(&echo);
        if r.status().as_u16() == 503 {
            shed += 1;
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        let v: Value = r.json().unwrap();
        assert_eq!(v["claim_digest"], honest_claim.as_str(), "{v}");
        latencies.push(t.elapsed());
    }
    let seen = rt.block_on(attacks).expect("the attacks end");
    sampling.store(false, Ordering::SeqCst);
    sampler.join().unwrap();
    let peak = peak.load(Ordering::SeqCst);

    // The host still serves the large transcript whole, and a receipt
    // verifies from it.
    let again = http
        .get(format!("{}/v1/receipts/{claim}/transcript", s.url))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    assert_eq!(again, transcript);
    d.write("in", b"hello");
    d.write(
        "r.json",
        serde_json::to_string(&honest["receipt"])
            .unwrap()
            .as_bytes(),
    );
    d.tally_env(
        &["verify", "r.json", "--input", "in", "--host", &s.url],
        &[("TALLY_TOKEN", "s3cret")],
    )
    .expect(0);

    latencies.sort();
    let mut kinds = std::collections::BTreeMap::<&str, usize>::new();
    for s in &seen {
        *kinds.entry(s.split(':').next().unwrap()).or_default() += 1;
    }
    eprintln!(
        "hostile: attacks {kinds:?}\n\
         hostile: honest runs {} ok, {shed} shed; p50 {:?}, p99 {:?} (quiet: p50 {:?}, p99 {:?})\n\
         hostile: server RSS idle {} MiB, peak under attack {} MiB (the transcript read slowly is {} MiB)",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        percentile(&quiet, 0.5),
        percentile(&quiet, 0.99),
        baseline >> 10,
        peak >> 10,
        transcript.len() >> 20,
    );
    assert!(!latencies.is_empty(), "the honest client got runs through");
    // Eight slow readers of a 40+ MiB transcript, an upload flood and the
    // rest stay within a fixed margin over the idle server.
    assert!(
        peak < baseline + (64 << 10),
        "server RSS grew from {baseline} KiB to {peak} KiB under attack"
    );
    s.stop();
}
