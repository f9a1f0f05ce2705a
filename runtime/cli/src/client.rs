//! The CLI as a client of `tally serve` (`--host URL`).
//!
//! A host is not trusted: everything it sends is checked (bundles against
//! their ids and signatures, transcripts against receipts' roots, recorded
//! outputs against transcripts), every answer is read with a size cap
//! before it is parsed, and every request has a deadline.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Context};
use reqwest::blocking::{Client, Response};
use tally_api::{ErrorBody, RunBody, RunReport, Uploaded};
use tally_digest::Digest;
use tally_package::{Package, DEFAULT_MAX_BUNDLE_BYTES};
use tally_receipt::{Receipt, Transcript};

/// How long connecting to a host may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one request may take, its answer included: longer than the
/// longest run a host policy allows (10 minutes of wall time).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// The largest error body read.
const MAX_ERROR_BYTES: u64 = 64 << 10;

/// The largest run report read: an output at its largest limit (256 MiB),
/// in base64, and the receipt.
const MAX_REPORT_BYTES: u64 = 512 << 20;

/// Reads at most `cap` bytes of `r`'s body, refusing a longer one before
/// it is all in memory.
fn read_capped(what: &str, r: Response, cap: u64) -> anyhow::Result<Vec<u8>> {
    if r.content_length().is_some_and(|n| n > cap) {
        return Err(anyhow!(
            "{what}: the host announced {} bytes, more than the {cap} this client reads",
            r.content_length().unwrap_or_default()
        ));
    }
    let mut bytes = Vec::new();
    r.take(cap + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("{what}: reading the host's answer"))?;
    if bytes.len() as u64 > cap {
        return Err(anyhow!(
            "{what}: the host's answer is longer than the {cap} bytes this client reads"
        ));
    }
    Ok(bytes)
}

/// A connection to a host.
pub struct Host {
    url: String,
    http: Client,
    token: Option<String>,
}

impl Host {
    /// `url` like `http://127.0.0.1:8750`; the token comes from `$TALLY_TOKEN`.
    pub fn new(url: &str) -> Host {
        Host {
            url: url.trim_end_matches('/').to_string(),
            http: Client::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .timeout(REQUEST_TIMEOUT)
                .build()
                .expect("an HTTP client"),
            token: std::env::var("TALLY_TOKEN").ok(),
        }
    }

    fn check(&self, what: &str, r: reqwest::Result<Response>) -> anyhow::Result<Response> {
        let r = r.with_context(|| format!("{what}: cannot reach {}", self.url))?;
        if r.status().is_success() {
            return Ok(r);
        }
        let status = r.status();
        let body = read_capped(what, r, MAX_ERROR_BYTES).unwrap_or_default();
        Err(match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(ErrorBody { error }) => anyhow!(
                "{what}: the host answered {status}: {} ({})",
                error.message,
                error.code
            ),
            Err(_) => anyhow!("{what}: the host answered {status}, without an error body"),
        })
    }

    /// Uploads a bundle; returns the package id.
    pub fn publish(&self, bundle: &[u8]) -> anyhow::Result<Digest> {
        let r = self.check(
            "upload",
            self.http
                .post(format!("{}/v1/packages", self.url))
                .header("content-type", "application/octet-stream")
                .body(bundle.to_vec())
                .send(),
        )?;
        let up: Uploaded = serde_json::from_slice(&read_capped("upload", r, MAX_ERROR_BYTES)?)
            .context("the host's answer to the upload")?;
        Ok(up.id)
    }

    /// Runs package `id` on `input`; returns the output, the receipt and its
    /// transcript.
    pub fn run(
        &self,
        id: &Digest,
        input: &[u8],
        fuel: Option<u64>,
        seed: Option<Digest>,
    ) -> anyhow::Result<(Vec<u8>, Receipt, Transcript)> {
        let body = RunBody::new(id, input).fuel(fuel).seed(seed);
        let mut req = self.http.post(format!("{}/v1/runs", self.url)).json(&body);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let report = read_capped("run", self.check("run", req.send())?, MAX_REPORT_BYTES)?;
        let report: RunReport = serde_json::from_slice(&report).context("the host's run report")?;
        report.receipt.check_format()?;
        let output = report.output()?;
        let transcript = self.transcript(&report.receipt)?;
        Ok((output, report.receipt, transcript))
    }

    /// The transcript of `receipt`, checked against its root.
    pub fn transcript(&self, receipt: &Receipt) -> anyhow::Result<Transcript> {
        let url = format!(
            "{}/v1/receipts/{}/transcript",
            self.url, receipt.seal.claim_digest
        );
        let r = self.check("transcript", self.http.get(url).send())?;
        let text = String::from_utf8(read_capped(
            "transcript",
            r,
            tally_host::MAX_TRANSCRIPT_FILE_BYTES,
        )?)
        .context("the host's transcript is not UTF-8")?;
        Ok(Transcript::from_jsonl(
            &text,
            &receipt.claim.transcript_root,
        )?)
    }

    /// The recorded inference outputs of `receipt`, checked against its
    /// `transcript`.
    pub fn tensors(
        &self,
        receipt: &Receipt,
        transcript: &Transcript,
    ) -> anyhow::Result<Vec<Vec<u8>>> {
        let url = format!(
            "{}/v1/receipts/{}/tensors",
            self.url, receipt.seal.claim_digest
        );
        let r = self.check("tensors", self.http.get(url).send())?;
        let bytes = read_capped("tensors", r, tally_host::MAX_RECORDED_FILE_BYTES)?;
        tally_receipt::decode_recorded(&bytes, transcript)
            .context("the host's recorded inference outputs")
    }

    /// Package `id`'s bundle, checked (digests and publisher signature).
    pub fn package(&self, id: &Digest) -> anyhow::Result<Package> {
        let r = self.check(
            "package",
            self.http
                .get(format!("{}/v1/packages/{id}/bundle", self.url))
                .send(),
        )?;
        // Read as it arrives: the bundle reader caps entries at the
        // default bundle size (and raw bytes at twice that).
        let package = Package::from_bundle(r, DEFAULT_MAX_BUNDLE_BYTES)?;
        if package.id() != *id {
            return Err(anyhow!(
                "the host sent package {} when asked for {id}",
                package.id()
            ));
        }
        Ok(package)
    }
}

/// Reads a bundle file for upload.
pub fn read_bundle(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}
