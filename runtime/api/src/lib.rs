//! The bodies of the Tally host API (`tally serve`): every JSON request and
//! response, defined once and used by the server (`tally-server`) and its
//! clients (`tally … --host`, tests) alike.
//!
//! Binary values travel as standard base64 strings; ids and digests as 64
//! hex digits. Request fields a client may get wrong are kept as text and
//! parsed with the accessors here ([`RunBody::package_id`], …), so that a
//! server can say which field was wrong ([`FieldError`]) instead of failing
//! the whole body.
//!
//! With the `openapi` feature every body also describes itself as an
//! OpenAPI schema (`utoipa::ToSchema`), for the server's generated document.
//!
//! **Invariant:** a format crate: serde and base64 (and, optionally, the
//! schema description), no HTTP, no wasmtime.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tally_digest::Digest;
use tally_receipt::{Outcome, Receipt};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The API's one byte codec: standard base64 with padding.
pub mod b64 {
    use base64::Engine as _;

    /// `bytes` as the API writes them.
    pub fn encode(bytes: impl AsRef<[u8]>) -> String {
        super::B64.encode(bytes)
    }

    /// Bytes the API wrote.
    pub fn decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
        super::B64.decode(text)
    }
}

/// One field of a request or response that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}`: {message}")]
pub struct FieldError {
    /// The field, e.g. `input`.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

fn digest(field: &'static str, text: &str) -> Result<Digest, FieldError> {
    text.parse().map_err(|e| FieldError {
        field,
        message: format!("`{text}` is not 64 hex digits: {e}"),
    })
}

fn bytes(field: &'static str, b64: &str) -> Result<Vec<u8>, FieldError> {
    B64.decode(b64).map_err(|e| FieldError {
        field,
        message: format!("not base64: {e}"),
    })
}

/// `POST /v1/runs`: run a package on an input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RunBody {
    /// The package id (64 hex digits); see [`RunBody::package_id`].
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9a-f]{64}$"))]
    pub package_id: String,
    /// The input, base64; see [`RunBody::input`].
    #[cfg_attr(feature = "openapi", schema(format = Byte))]
    pub input: String,
    /// Fuel for the run (default: the manifest's, capped by host policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    /// The seed, 64 hex digits (default: derived from the package id and
    /// the input digest); see [`RunBody::seed`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9a-f]{64}$"))]
    pub seed: Option<String>,
    /// Inference backend: must be the one the host serves, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
}

impl RunBody {
    /// A run of `package_id` on `input`, with the host's defaults.
    pub fn new(package_id: &Digest, input: &[u8]) -> RunBody {
        RunBody {
            package_id: package_id.to_string(),
            input: B64.encode(input),
            fuel: None,
            seed: None,
            backend: None,
        }
    }

    /// Sets the fuel (default: the manifest's).
    pub fn fuel(mut self, fuel: Option<u64>) -> RunBody {
        self.fuel = fuel;
        self
    }

    /// Sets the seed (default: derived).
    pub fn seed(mut self, seed: Option<Digest>) -> RunBody {
        self.seed = seed.map(|s| s.to_string());
        self
    }

    /// The package id.
    pub fn package_id(&self) -> Result<Digest, FieldError> {
        digest("package_id", &self.package_id)
    }

    /// The input bytes.
    pub fn input(&self) -> Result<Vec<u8>, FieldError> {
        bytes("input", &self.input)
    }

    /// The seed, if one was given.
    pub fn seed_digest(&self) -> Result<Option<Digest>, FieldError> {
        self.seed.as_deref().map(|s| digest("seed", s)).transpose()
    }
}

/// A finished run: `POST /v1/runs` (waiting) and `GET /v1/runs/{id}` once
/// done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RunReport {
    /// The run id (for `GET /v1/runs/{id}`).
    pub run_id: String,
    /// Always `done`.
    pub state: RunState,
    /// The receipt's claim digest (for `GET /v1/receipts/{id}`).
    #[cfg_attr(feature = "openapi", schema(value_type = String, pattern = "^[0-9a-f]{64}$"))]
    pub claim_digest: Digest,
    /// How the run ended (also in the receipt).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub outcome: Outcome,
    /// The output, base64; see [`RunReport::output`].
    pub output: String,
    /// The sealed receipt.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub receipt: Receipt,
}

impl RunReport {
    /// The output bytes.
    pub fn output(&self) -> Result<Vec<u8>, FieldError> {
        bytes("output", &self.output)
    }

    /// Encodes `output` for [`RunReport::output`].
    pub fn encode_output(output: &[u8]) -> String {
        B64.encode(output)
    }
}

/// Where a submitted run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Admitted, waiting for a worker.
    Queued,
    /// Running.
    Running,
    /// Sealed (the body is a [`RunReport`]).
    Done,
    /// Failed before a receipt could be sealed (a host fault or a refused
    /// request); `error` says why.
    Failed,
}

/// A run that is not done: `POST /v1/runs?wait=false` (202) and
/// `GET /v1/runs/{id}` before it finishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RunPending {
    /// The run id.
    pub run_id: String,
    /// `queued`, `running` or `failed`.
    pub state: RunState,
    /// Where to poll (`/v1/runs/{id}`), on submission.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Why it failed, when `state` is `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `POST /v1/packages`: the package a bundle upload stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Uploaded {
    /// The package id.
    #[cfg_attr(feature = "openapi", schema(value_type = String, pattern = "^[0-9a-f]{64}$"))]
    pub id: Digest,
    /// The package name.
    pub name: String,
    /// The package version.
    pub version: String,
    /// The publisher's public key, 64 hex digits.
    pub publisher: String,
    /// Whether this upload stored it (201), or it was already there (200).
    pub created: bool,
}

/// One package of `GET /v1/packages`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PackageSummary {
    /// The package id.
    #[cfg_attr(feature = "openapi", schema(value_type = String, pattern = "^[0-9a-f]{64}$"))]
    pub id: Digest,
    /// The package name.
    pub name: String,
    /// The package version.
    pub version: String,
    /// The publisher's public key, 64 hex digits.
    pub publisher: String,
}

/// `GET /v1/packages`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PackageList {
    /// Every stored package.
    pub packages: Vec<PackageSummary>,
}

/// `POST /v1/verify`: replay a receipt on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct VerifyBody {
    /// The receipt (its format version is checked by the server).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub receipt: Receipt,
    /// The run input, base64; see [`VerifyBody::input`].
    #[cfg_attr(feature = "openapi", schema(format = Byte))]
    pub input: String,
    /// The receipt's transcript (JSON lines), if the host does not hold it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcript: Option<String>,
    /// Inference backend for the replay: must be the one the host serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
}

impl VerifyBody {
    /// A replay of `receipt` on `input`.
    pub fn new(receipt: Receipt, input: &[u8]) -> VerifyBody {
        VerifyBody {
            receipt,
            input: B64.encode(input),
            transcript: None,
            backend: None,
        }
    }

    /// The input bytes.
    pub fn input(&self) -> Result<Vec<u8>, FieldError> {
        bytes("input", &self.input)
    }
}

/// Every error response: `{"error": {"code": …, "message": …}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// An error's stable code and its message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// Stable, machine-readable, e.g. `package_not_found`.
    pub code: String,
    /// What was wrong and how to fix it, for people.
    pub message: String,
}

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    /// Always `ok`.
    pub status: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_bodies_round_trip_and_name_the_bad_field() {
        let id = Digest::of(b"p");
        let body = RunBody::new(&id, b"\x00hi").fuel(Some(7));
        let json = serde_json::to_string(&body).unwrap();
        assert_eq!(
            json,
            format!(r#"{{"package_id":"{id}","input":"AGhp","fuel":7}}"#)
        );
        let back: RunBody = serde_json::from_str(&json).unwrap();
        assert_eq!(back.package_id().unwrap(), id);
        assert_eq!(back.input().unwrap(), b"\x00hi");
        assert_eq!(back.seed_digest().unwrap(), None);
        let bad = RunBody {
            input: "!!".into(),
            ..back
        };
        assert_eq!(bad.input().unwrap_err().field, "input");
        assert!(serde_json::from_str::<RunBody>(r#"{"package_id":"","input":"","x":1}"#).is_err());
    }
}
