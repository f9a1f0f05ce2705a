//! The Tally host library: what a host does with a package and what a
//! verifier does with a receipt, written once, under both front ends
//! (`tally run` / `tally verify` and `tally serve`).
//!
//! * [`Host::run_and_seal`]: run a package in the sandbox, seal the claim
//!   with the host key, and store the receipt, its transcript, the recorded
//!   inference outputs and the output — one call, one order of effects.
//! * [`verify`]: check a receipt's seal, its input and package, fetch its
//!   transcript and (for a replay on another backend) its recorded
//!   inference outputs from [`Sources`], replay it, and return the
//!   [`Verdict`]. risc0's `Receipt::verify` is the model: one function, the
//!   whole decision.
//! * [`Sources`]: where a verifier finds what a receipt refers to: files
//!   beside it, the local store ([`StoreSources`]), a request body or a
//!   remote host (implemented by the front ends), tried in order
//!   ([`FirstOf`]).
//!
//! Errors are [`RunError`] and [`VerifyError`]: each says whether it is the
//! caller's input (a bad receipt, a wrong input) or the host's own fault,
//! so that front ends map them to exit codes and HTTP statuses alike.

use std::sync::Arc;

use ed25519_dalek::SigningKey;
use tally_digest::Digest;
use tally_package::Package;
use tally_receipt::{Metadata, Receipt, RecordedComputes, Transcript, Verdict};
use tally_sandbox::{RunRequest, Sandbox, SandboxError};
use tally_store::{Store, StoreError};

/// A host: a sandbox, the key it seals with, and optionally a store that
/// keeps what it seals.
pub struct Host {
    sandbox: Arc<Sandbox>,
    key: SigningKey,
    store: Option<Arc<Store>>,
    name: String,
}

/// A sealed run: what the guest produced and what the host signed.
#[derive(Debug)]
#[non_exhaustive]
pub struct Sealed {
    /// The receipt: the claim and the host's seal over it.
    pub receipt: Receipt,
    /// The pipeline's output.
    pub output: Vec<u8>,
    /// The transcript of host calls (its root is in the claim).
    pub transcript: Transcript,
    /// Each successful inference's outputs, as the transcript binds them
    /// (the recorded outputs a verifier on another backend needs).
    pub computes: Vec<Vec<u8>>,
    /// Each stage's stderr, by stage name.
    pub stderr: Vec<(String, Vec<u8>)>,
    /// Whether the store kept it: `None` without a store.
    pub stored: Option<Result<(), StoreError>>,
}

/// Why a run could not be sealed. Guest behaviour is never an error (it is
/// the claim's outcome); these are the request's or the host's.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The sandbox refused the request (a limit above the host's policy) or
    /// failed (a host fault).
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
}

impl RunError {
    /// Whether the caller can fix it (exit 2, HTTP 422) rather than the
    /// host's operator (exit 3, HTTP 500).
    pub fn is_request_error(&self) -> bool {
        matches!(
            self,
            RunError::Sandbox(SandboxError::PolicyForbids { .. } | SandboxError::Recorded(_))
        )
    }
}

impl Host {
    /// A host sealing with `key`; `name` goes into each receipt's
    /// (unsealed) metadata.
    pub fn new(sandbox: Arc<Sandbox>, key: SigningKey, name: impl Into<String>) -> Host {
        Host {
            sandbox,
            key,
            store: None,
            name: name.into(),
        }
    }

    /// Keeps every sealed run in `store` (receipt, transcript, recorded
    /// inference outputs, output).
    pub fn with_store(mut self, store: Arc<Store>) -> Host {
        self.store = Some(store);
        self
    }

    /// The sandbox runs use.
    pub fn sandbox(&self) -> &Arc<Sandbox> {
        &self.sandbox
    }

    /// The store, if any.
    pub fn store(&self) -> Option<&Arc<Store>> {
        self.store.as_ref()
    }

    /// Runs `package` on `req`, seals the claim, and stores it all (see
    /// [`Sealed::stored`]). A guest failure is a sealed outcome, not an
    /// error.
    pub fn run_and_seal(
        &self,
        package: &Package,
        req: &RunRequest<'_>,
    ) -> Result<Sealed, RunError> {
        let started_at_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let result = self.sandbox.run(package, req)?;
        let metadata = Metadata {
            note: "metadata is not covered by the seal".into(),
            host: self.name.clone(),
            started_at_unix,
            wall_time_ms: result.wall_time.as_millis() as u64,
            target: self.sandbox.config().target.name().into(),
        };
        let receipt = Receipt::seal(result.claim, &self.key, metadata);
        let computes: Vec<Vec<u8>> = result.computes.into_iter().map(|c| c.encoded).collect();
        let stored = self.store.as_ref().map(|store| {
            let framed: Vec<&[u8]> = computes.iter().map(Vec::as_slice).collect();
            store.put_blob(&result.output)?;
            store
                .put_receipt(&receipt, &result.transcript, &framed)
                .map(drop)
        });
        Ok(Sealed {
            receipt,
            output: result.output,
            transcript: result.transcript,
            computes,
            stderr: result.stderr,
            stored,
        })
    }
}

/// The largest recorded-outputs file a source reads: twice what a run may
/// record ([`NN_MAX_RECORDED_BYTES`](tally_sandbox::profile::NN_MAX_RECORDED_BYTES)),
/// room for the framing of any number of calls. A larger one is refused
/// before a byte of it is read.
pub const MAX_RECORDED_FILE_BYTES: u64 = 2 * tally_sandbox::profile::NN_MAX_RECORDED_BYTES as u64;

/// The largest transcript file a source reads: ten million host calls (the
/// most a host policy allows) of about 200 bytes each. A larger one is
/// refused before a byte of it is read.
pub const MAX_TRANSCRIPT_FILE_BYTES: u64 = 2 << 30;

/// Why a source could not provide something.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// This source does not have it; the next one may.
    #[error("{0}")]
    NotFound(String),
    /// It has it, but it is unusable (corrupt, or not what the receipt
    /// binds): reported, not skipped.
    #[error("{0}")]
    Invalid(String),
    /// This machine could not read it (its store's disk or index): a fault
    /// of the verifier's host, not of the receipt. Reported, not skipped.
    #[error("{0}")]
    Host(String),
}

/// Where a verifier finds what a receipt refers to. Every method has a
/// default of "not here", so a source implements only what it holds.
pub trait Sources {
    /// Package `id`, checked (its signature verified).
    fn package(&self, id: &Digest) -> Result<Arc<Package>, SourceError> {
        Err(SourceError::NotFound(format!("package {id}")))
    }
    /// The transcript whose root is `receipt.claim.transcript_root`.
    fn transcript(&self, receipt: &Receipt) -> Result<Transcript, SourceError> {
        Err(SourceError::NotFound(format!(
            "transcript {}",
            receipt.claim.transcript_root
        )))
    }
    /// The recorded inference outputs `transcript` binds, one per
    /// successful compute.
    fn recorded(
        &self,
        receipt: &Receipt,
        transcript: &Transcript,
    ) -> Result<Vec<Vec<u8>>, SourceError> {
        let _ = (receipt, transcript);
        Err(SourceError::NotFound("recorded inference outputs".into()))
    }
}

/// The local store as a source.
pub struct StoreSources<'a>(pub &'a Store);

fn from_store(e: StoreError) -> SourceError {
    match e {
        StoreError::NotFound(what) => SourceError::NotFound(what),
        // The local store failing is this machine's fault, whatever the
        // receipt says.
        other => SourceError::Host(other.to_string()),
    }
}

impl Sources for StoreSources<'_> {
    fn package(&self, id: &Digest) -> Result<Arc<Package>, SourceError> {
        self.0.get_package(id).map(Arc::new).map_err(from_store)
    }
    fn transcript(&self, receipt: &Receipt) -> Result<Transcript, SourceError> {
        self.0
            .get_transcript(&receipt.claim.transcript_root)
            .map_err(from_store)
    }
    fn recorded(&self, _: &Receipt, transcript: &Transcript) -> Result<Vec<Vec<u8>>, SourceError> {
        self.0.get_computes(transcript).map_err(from_store)
    }
}

/// Sources tried in order: the first that has a thing provides it; an
/// invalid one is reported at once.
pub struct FirstOf<'a>(pub Vec<&'a dyn Sources>);

impl FirstOf<'_> {
    fn first<T>(
        &self,
        what: impl Fn() -> String,
        get: impl Fn(&dyn Sources) -> Result<T, SourceError>,
    ) -> Result<T, SourceError> {
        for s in &self.0 {
            match get(*s) {
                Err(SourceError::NotFound(_)) => continue,
                other => return other,
            }
        }
        Err(SourceError::NotFound(what()))
    }
}

impl Sources for FirstOf<'_> {
    fn package(&self, id: &Digest) -> Result<Arc<Package>, SourceError> {
        self.first(|| format!("package {id}"), |s| s.package(id))
    }
    fn transcript(&self, receipt: &Receipt) -> Result<Transcript, SourceError> {
        self.first(
            || format!("transcript {}", receipt.claim.transcript_root),
            |s| s.transcript(receipt),
        )
    }
    fn recorded(&self, receipt: &Receipt, t: &Transcript) -> Result<Vec<Vec<u8>>, SourceError> {
        self.first(
            || "recorded inference outputs".into(),
            |s| s.recorded(receipt, t),
        )
    }
}

/// Why a receipt could not be replayed. A replay that disagrees is not an
/// error: it is a [`Verdict`] with `verified: false`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The seal does not hold, or its key is not trusted.
    #[error("{0}")]
    Seal(tally_receipt::ReceiptError),
    /// The outcome depends on the host (wall time, a host fault): there is
    /// nothing to replay to.
    #[error(
        "the receipt records a non-deterministic outcome ({0}); it cannot be verified by replay"
    )]
    NotReplayable(String),
    /// The input given is not the one the receipt is about.
    #[error("the input has digest {found}, but the receipt is about input {expected}")]
    InputMismatch {
        /// The receipt's input digest.
        expected: Digest,
        /// The given input's.
        found: Digest,
    },
    /// The package is nowhere to be found, or unusable.
    #[error("package {id}: {source}; give the bundle or fetch it from the host that ran it")]
    Package {
        /// The receipt's package id.
        id: Digest,
        /// Why.
        source: SourceError,
    },
    /// The package found has another id than the receipt's.
    #[error("the package given has id {found}, but the receipt is about package {expected}")]
    WrongPackage {
        /// The receipt's package id.
        expected: Digest,
        /// The given package's.
        found: Digest,
    },
    /// The recorded inference outputs are not those the transcript binds.
    #[error("the recorded inference outputs: {0}")]
    Recorded(String),
    /// The sandbox refused the replay (limits above this host's policy) or
    /// failed.
    #[error(transparent)]
    Replay(#[from] SandboxError),
    /// This machine could not read what the receipt refers to (its store).
    #[error("this host could not read what the receipt refers to: {0}")]
    HostFault(String),
}

impl VerifyError {
    /// Whether the caller can fix it (a wrong receipt, input or package)
    /// rather than the host's operator.
    pub fn is_request_error(&self) -> bool {
        !matches!(
            self,
            VerifyError::Replay(SandboxError::Engine(_) | SandboxError::Io { .. })
                | VerifyError::HostFault(_)
                | VerifyError::Package {
                    source: SourceError::Host(_),
                    ..
                }
        )
    }
}

/// The checks that need no package and no replay: the seal (by a key in
/// `trusted`; any key when empty), a deterministic outcome, and `input`'s
/// digest. [`verify`] makes them first; a service makes them before it
/// admits a replay.
pub fn check(receipt: &Receipt, trusted: &[String], input: &[u8]) -> Result<(), VerifyError> {
    receipt.check_seal(trusted).map_err(VerifyError::Seal)?;
    let claim = &receipt.claim;
    if !claim.outcome.is_deterministic() {
        return Err(VerifyError::NotReplayable(claim.outcome.to_string()));
    }
    let found = Digest::of(input);
    if found != claim.input {
        return Err(VerifyError::InputMismatch {
            expected: claim.input,
            found,
        });
    }
    Ok(())
}

/// Verifies `receipt` by replay in `sandbox`: [`check`], the package's
/// id; then a replay with the receipt's seed and limits, fed the recorded
/// inference outputs when `sandbox`'s backend is not the receipt's, and
/// compared field by field, and call by call with the original transcript
/// when a source has it.
pub fn verify(
    sandbox: &Sandbox,
    receipt: &Receipt,
    trusted: &[String],
    input: &[u8],
    sources: &dyn Sources,
) -> Result<Verdict, VerifyError> {
    check(receipt, trusted, input)?;
    let claim = &receipt.claim;
    let package = sources
        .package(&claim.package_id)
        .map_err(|source| VerifyError::Package {
            id: claim.package_id,
            source,
        })?;
    if package.id() != claim.package_id {
        return Err(VerifyError::WrongPackage {
            expected: claim.package_id,
            found: package.id(),
        });
    }
    let original = sources.transcript(receipt).map_err(|e| e.to_string());
    let recorded = match &original {
        Ok(t) if claim.backend != *sandbox.backend_info() => match sources.recorded(receipt, t) {
            Ok(outputs) => Some(
                RecordedComputes::new(t, outputs)
                    .map_err(|e| VerifyError::Recorded(e.to_string()))?,
            ),
            Err(SourceError::NotFound(_)) => None,
            Err(e @ SourceError::Invalid(_)) => return Err(VerifyError::Recorded(e.to_string())),
            Err(SourceError::Host(e)) => return Err(VerifyError::HostFault(e)),
        },
        _ => None,
    };
    let replay = sandbox.replay(&package, claim, input, recorded.as_ref())?;
    Ok(Verdict::new(
        receipt,
        &replay.claim,
        &replay.transcript,
        replay.inference,
        || original,
    ))
}
