//! The CLI as a client of `tally serve` (`--host URL`).

use std::path::Path;

use anyhow::{anyhow, Context};
use reqwest::blocking::{Client, Response};
use tally_api::{ErrorBody, RunBody, RunReport, Uploaded};
use tally_digest::Digest;
use tally_package::{Package, DEFAULT_MAX_BUNDLE_BYTES};
use tally_receipt::{Receipt, Transcript};

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
                .timeout(None)
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
        Err(match r.json::<ErrorBody>() {
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
        let up: Uploaded = r.json().context("the host's answer to the upload")?;
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
        let report: RunReport = self
            .check("run", req.send())?
            .json()
            .context("the host's run report")?;
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
        let text = self
            .check("transcript", self.http.get(url).send())?
            .text()?;
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
        let bytes = self.check("tensors", self.http.get(url).send())?.bytes()?;
        tally_receipt::decode_recorded(&bytes, transcript)
            .context("the host's recorded inference outputs")
    }

    /// Package `id`'s bundle, checked (digests and publisher signature).
    pub fn package(&self, id: &Digest) -> anyhow::Result<Package> {
        let bytes = self
            .check(
                "package",
                self.http
                    .get(format!("{}/v1/packages/{id}/bundle", self.url))
                    .send(),
            )?
            .bytes()?;
        let package = Package::from_bundle(bytes.as_ref(), DEFAULT_MAX_BUNDLE_BYTES)?;
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
