//! The Tally package manifest (`tally.toml`): schema, validation and the
//! package id.
//!
//! Core types:
//!
//! * [`Manifest`]: a validated manifest. It can only be obtained through
//!   [`Manifest::parse`], which rejects unknown fields, dangling references,
//!   unsafe paths and malformed digests, so holding one means every invariant
//!   below is true.
//! * [`Limits`]: what a package asks of the host (fuel, memory, output…).
//!   Every field is optional; [`Limits::resolve`] applies the defaults listed
//!   on each field.
//! * [`ManifestError`]: what was wrong, in which file, on which line and in
//!   which field, and how to fix it.
//!
//! The **package id** ([`Manifest::id`]) is the digest of the manifest's
//! canonical encoding (domain tag `tally.Manifest.v1`). Since the manifest
//! pins the blake3 digest of every module and file, the id pins the whole
//! package. Formatting, comments and key order in the TOML text do not change
//! it; limits are encoded as written (absent stays absent), so a change of a
//! default in a later Tally does not change existing ids.
//!
//! **Invariant:** this crate knows nothing of wasmtime, bundles or storage.
//!
//! ```
//! let text = r#"
//! [package]
//! name = "hello"
//! version = "0.1.0"
//! publisher = "0000000000000000000000000000000000000000000000000000000000000000"
//!
//! [modules.main]
//! path = "main.wasm"
//! digest = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
//!
//! [[stages]]
//! name = "main"
//! module = "main"
//! "#;
//! let m = tally_manifest::Manifest::parse(text, "tally.toml").unwrap();
//! assert_eq!(m.stages[0].module, "main");
//! ```

pub mod authored;
mod error;
pub mod lock;
mod raw;

use std::collections::BTreeMap;

pub use error::{ManifestError, ManifestErrorKind};
use serde::Serialize;
pub use tally_digest::Digest;
use tally_digest::{Canon, Encode};

/// The domain tag of the manifest's canonical encoding.
pub const MANIFEST_TAG: &str = "tally.Manifest.v1";

/// Most entries in any list of a manifest (modules, files, graphs, stages,
/// and each stage's args, env, read and graphs): 4096.
pub const MAX_ENTRIES: usize = 4096;

/// The conventional file name of a manifest.
pub const MANIFEST_FILE: &str = "tally.toml";

/// A validated package manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Manifest {
    /// Name, version, description and publisher.
    pub package: PackageInfo,
    /// What the package asks of the host; defaults apply to absent fields.
    pub limits: Limits,
    /// WebAssembly modules by name.
    pub modules: BTreeMap<String, FileRef>,
    /// Data files the stages may read, sorted by path.
    pub files: Vec<FileRef>,
    /// Inference graphs by name (default: none). Guests open them with
    /// wasi-nn's `load_by_name`.
    pub graphs: BTreeMap<String, Graph>,
    /// The pipeline, in order: the run input is stdin of the first stage,
    /// each stage's stdout is the next stage's stdin, and the last stage's
    /// stdout is the run output.
    pub stages: Vec<Stage>,
}

/// The `[package]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PackageInfo {
    /// Lowercase ASCII letters, digits and `-`, 1 to 64 characters.
    pub name: String,
    /// Free-form version string, 1 to 64 printable characters.
    pub version: String,
    /// Free-form description (default: empty).
    pub description: String,
    /// The publisher's ed25519 public key, 32 bytes.
    #[serde(serialize_with = "ser_hex")]
    pub publisher: [u8; 32],
}

fn ser_hex<S: serde::Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&hex::encode(v))
}

/// A file of the package: its path relative to the manifest and its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct FileRef {
    /// A relative path of normal components separated by `/`.
    pub path: String,
    /// blake3 digest of the file's bytes.
    pub digest: Digest,
}

/// One stage of the pipeline: a module run as a WASI command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Stage {
    /// Unique stage name; also the guest's `argv[0]`.
    pub name: String,
    /// The name of a module in [`Manifest::modules`].
    pub module: String,
    /// Arguments after `argv[0]` (default: none).
    pub args: Vec<String>,
    /// Environment variables, sorted by name (default: none). The guest sees
    /// exactly these and nothing of the host's environment.
    pub env: BTreeMap<String, String>,
    /// Paths of [`Manifest::files`] this stage may read, read-only, under
    /// the guest directory `/pkg` (default: none).
    pub read: Vec<String>,
    /// Names of [`Manifest::graphs`] this stage may load (default: none).
    pub graphs: Vec<String>,
}

/// Graph encodings a package may declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum GraphEncoding {
    /// ONNX protobuf, every weight embedded.
    Onnx,
}

/// wasi-nn execution targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ExecutionTarget {
    /// The CPU.
    Cpu,
    /// A GPU, where the backend has one.
    Gpu,
}

/// How far an inference output recomputed on another backend may be from
/// the recorded one and still count as the same.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Tolerance {
    /// Largest absolute difference allowed per element (default `1e-4`).
    pub abs: f64,
    /// Largest difference relative to the magnitude of the verifier's own
    /// recomputed value (default `1e-3`). An element passes if it is within
    /// `abs` *or* within `rel`. Integer outputs are compared exactly.
    pub rel: f64,
    /// In addition to the values, require the index of the largest element
    /// along the last axis to agree (default `false`): classifications
    /// agree. Never instead of the values.
    pub argmax: bool,
}

impl Eq for Tolerance {}

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance {
            abs: 1e-4,
            rel: 1e-3,
            argmax: false,
        }
    }
}

/// A `[graphs.NAME]` table: an inference graph shipped in the package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Graph {
    /// The graph file and its digest.
    pub file: FileRef,
    /// Its encoding (default and only value: `onnx`).
    pub encoding: GraphEncoding,
    /// Execution targets a guest may ask for (default: `["cpu"]`).
    pub targets: Vec<ExecutionTarget>,
    /// Tolerance for every output without its own (default: [`Tolerance::default`]).
    pub tolerance: Tolerance,
    /// Per-output tolerances by output index (default: none).
    pub outputs: BTreeMap<u32, Tolerance>,
}

impl Graph {
    /// The tolerance of output `index`.
    pub fn tolerance_of(&self, index: u32) -> Tolerance {
        self.outputs.get(&index).copied().unwrap_or(self.tolerance)
    }
}

/// The `[limits]` table: what a package asks of the host. A host caps each
/// value by its own policy, and the receipt records the values in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[non_exhaustive]
pub struct Limits {
    /// Fuel for the whole run, shared by the stages in order.
    /// Default: [`Limits::DEFAULT_FUEL`].
    pub fuel: Option<u64>,
    /// Largest linear memory of any instance, in bytes.
    /// Default: [`Limits::DEFAULT_MEMORY_BYTES`].
    pub memory_bytes: Option<u64>,
    /// Most table elements of any table. Default: [`Limits::DEFAULT_TABLE_ELEMENTS`].
    pub table_elements: Option<u64>,
    /// Largest module, in bytes. Default: [`Limits::DEFAULT_MODULE_BYTES`].
    pub module_bytes: Option<u64>,
    /// Largest stdout of any stage (and so the output), in bytes.
    /// Default: [`Limits::DEFAULT_OUTPUT_BYTES`].
    pub output_bytes: Option<u64>,
    /// Largest stderr of any stage, in bytes; a stage that fails after
    /// filling it ends with the `stderr_bytes` limit. Default:
    /// [`Limits::DEFAULT_STDERR_BYTES`].
    pub stderr_bytes: Option<u64>,
    /// Most host calls in a run (the transcript length).
    /// Default: [`Limits::DEFAULT_HOST_CALLS`].
    pub host_calls: Option<u64>,
    /// Wall-clock backstop for the whole run, in milliseconds. Hitting it is
    /// not a deterministic outcome. Default: [`Limits::DEFAULT_WALL_TIME_MS`].
    pub wall_time_ms: Option<u64>,
}

/// A deterministic limit a run can hit (a `limit_exceeded` outcome), named
/// exactly as its field of `[limits]` and [`ResolvedLimits`]. The wall-time
/// backstop is not one: hitting it is not deterministic, so it aborts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Limit {
    /// [`Limits::fuel`].
    Fuel,
    /// [`Limits::memory_bytes`].
    MemoryBytes,
    /// [`Limits::table_elements`].
    TableElements,
    /// [`Limits::module_bytes`].
    ModuleBytes,
    /// [`Limits::output_bytes`].
    OutputBytes,
    /// [`Limits::stderr_bytes`].
    StderrBytes,
    /// [`Limits::host_calls`].
    HostCalls,
}

impl Limit {
    /// Every limit.
    pub const ALL: [Limit; 7] = [
        Limit::Fuel,
        Limit::MemoryBytes,
        Limit::TableElements,
        Limit::ModuleBytes,
        Limit::OutputBytes,
        Limit::StderrBytes,
        Limit::HostCalls,
    ];

    /// Its name: the manifest field, and what claims record.
    pub fn name(self) -> &'static str {
        match self {
            Limit::Fuel => "fuel",
            Limit::MemoryBytes => "memory_bytes",
            Limit::TableElements => "table_elements",
            Limit::ModuleBytes => "module_bytes",
            Limit::OutputBytes => "output_bytes",
            Limit::StderrBytes => "stderr_bytes",
            Limit::HostCalls => "host_calls",
        }
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// [`Limits`] with every default applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct ResolvedLimits {
    /// See [`Limits::fuel`].
    pub fuel: u64,
    /// See [`Limits::memory_bytes`].
    pub memory_bytes: u64,
    /// See [`Limits::table_elements`].
    pub table_elements: u64,
    /// See [`Limits::module_bytes`].
    pub module_bytes: u64,
    /// See [`Limits::output_bytes`].
    pub output_bytes: u64,
    /// See [`Limits::stderr_bytes`].
    pub stderr_bytes: u64,
    /// See [`Limits::host_calls`].
    pub host_calls: u64,
    /// See [`Limits::wall_time_ms`].
    pub wall_time_ms: u64,
}

impl Limits {
    /// Default fuel: 10⁹ units.
    pub const DEFAULT_FUEL: u64 = 1_000_000_000;
    /// Default memory: 256 MiB.
    pub const DEFAULT_MEMORY_BYTES: u64 = 256 << 20;
    /// Default table elements: 100 000.
    pub const DEFAULT_TABLE_ELEMENTS: u64 = 100_000;
    /// Default module size: 32 MiB.
    pub const DEFAULT_MODULE_BYTES: u64 = 32 << 20;
    /// Default output size: 16 MiB.
    pub const DEFAULT_OUTPUT_BYTES: u64 = 16 << 20;
    /// Default stderr size: 64 KiB.
    pub const DEFAULT_STDERR_BYTES: u64 = 64 << 10;
    /// Default host calls: 1 000 000.
    pub const DEFAULT_HOST_CALLS: u64 = 1_000_000;
    /// Default wall time: 60 s.
    pub const DEFAULT_WALL_TIME_MS: u64 = 60_000;

    /// Applies the defaults.
    pub fn resolve(&self) -> ResolvedLimits {
        ResolvedLimits {
            fuel: self.fuel.unwrap_or(Self::DEFAULT_FUEL),
            memory_bytes: self.memory_bytes.unwrap_or(Self::DEFAULT_MEMORY_BYTES),
            table_elements: self.table_elements.unwrap_or(Self::DEFAULT_TABLE_ELEMENTS),
            module_bytes: self.module_bytes.unwrap_or(Self::DEFAULT_MODULE_BYTES),
            output_bytes: self.output_bytes.unwrap_or(Self::DEFAULT_OUTPUT_BYTES),
            stderr_bytes: self.stderr_bytes.unwrap_or(Self::DEFAULT_STDERR_BYTES),
            host_calls: self.host_calls.unwrap_or(Self::DEFAULT_HOST_CALLS),
            wall_time_ms: self.wall_time_ms.unwrap_or(Self::DEFAULT_WALL_TIME_MS),
        }
    }
}

/// Limits are encoded as written: absent stays absent, so a later change of
/// a default does not change existing package ids.
impl Encode for Limits {
    fn encode(&self, c: &mut Canon) {
        let Limits {
            fuel,
            memory_bytes,
            table_elements,
            module_bytes,
            output_bytes,
            stderr_bytes,
            host_calls,
            wall_time_ms,
        } = self;
        c.put(fuel)
            .put(memory_bytes)
            .put(table_elements)
            .put(module_bytes)
            .put(output_bytes)
            .put(stderr_bytes)
            .put(host_calls)
            .put(wall_time_ms);
    }
}

impl ResolvedLimits {
    /// Each limit capped by the same limit of `policy`: the smaller wins.
    pub fn capped_by(&self, policy: &ResolvedLimits) -> ResolvedLimits {
        ResolvedLimits {
            fuel: self.fuel.min(policy.fuel),
            memory_bytes: self.memory_bytes.min(policy.memory_bytes),
            table_elements: self.table_elements.min(policy.table_elements),
            module_bytes: self.module_bytes.min(policy.module_bytes),
            output_bytes: self.output_bytes.min(policy.output_bytes),
            stderr_bytes: self.stderr_bytes.min(policy.stderr_bytes),
            host_calls: self.host_calls.min(policy.host_calls),
            wall_time_ms: self.wall_time_ms.min(policy.wall_time_ms),
        }
    }
}

/// The limits in force, in canonical order (receipt claims seal them).
impl Encode for ResolvedLimits {
    fn encode(&self, c: &mut Canon) {
        let ResolvedLimits {
            fuel,
            memory_bytes,
            table_elements,
            module_bytes,
            output_bytes,
            stderr_bytes,
            host_calls,
            wall_time_ms,
        } = self;
        c.u64(*fuel)
            .u64(*memory_bytes)
            .u64(*table_elements)
            .u64(*module_bytes)
            .u64(*output_bytes)
            .u64(*stderr_bytes)
            .u64(*host_calls)
            .u64(*wall_time_ms);
    }
}

impl Manifest {
    /// Parses and validates manifest text. `origin` names the file in error
    /// messages.
    pub fn parse(text: &str, origin: &str) -> Result<Manifest, ManifestError> {
        raw::parse(text, origin)
    }

    /// Reads, parses and validates the manifest at `path`.
    pub fn from_path(path: &std::path::Path) -> Result<Manifest, ManifestError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ManifestError {
            file: origin.clone(),
            line: None,
            field: String::new(),
            kind: ManifestErrorKind::Io(e.to_string()),
        })?;
        Self::parse(&text, &origin)
    }

    /// The package id: the digest of the canonical encoding.
    pub fn id(&self) -> Digest {
        Canon::new(MANIFEST_TAG).put(self).finish()
    }

    /// Every file of the package (modules first, by name; then data files;
    /// then graphs, by name),
    /// each once.
    pub fn all_files(&self) -> impl Iterator<Item = &FileRef> {
        self.modules
            .values()
            .chain(self.files.iter())
            .chain(self.graphs.values().map(|g| &g.file))
    }

    /// The data file declared at `path`, if any.
    pub fn file(&self, path: &str) -> Option<&FileRef> {
        self.files.iter().find(|f| f.path == path)
    }
}

/// Checks that `path` is a safe relative package path: normal components
/// separated by `/`, no `.`/`..`, no leading `/`, no backslashes or control
/// characters, at most 255 bytes. Returns why not.
pub fn check_relative_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("the path is empty");
    }
    if path.len() > 255 {
        return Err("the path is longer than 255 bytes");
    }
    if path.starts_with('/') {
        return Err("the path is absolute; write it relative to the manifest");
    }
    if path.contains('\\') {
        return Err("the path contains a backslash; separate components with '/'");
    }
    if path.chars().any(|c| c.is_control()) {
        return Err("the path contains a control character");
    }
    if path.contains(':') {
        return Err("the path contains ':'");
    }
    for comp in path.split('/') {
        match comp {
            "" => return Err("the path has an empty component ('//' or a trailing '/')"),
            "." | ".." => return Err("the path has a '.' or '..' component"),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;

impl Encode for Manifest {
    fn encode(&self, c: &mut Canon) {
        let Manifest {
            package,
            limits,
            modules,
            files,
            graphs,
            stages,
        } = self;
        c.put(package)
            .put(limits)
            .put(modules)
            .put(files)
            .put(stages)
            .put(graphs);
    }
}

impl Encode for PackageInfo {
    fn encode(&self, c: &mut Canon) {
        let PackageInfo {
            name,
            version,
            description,
            publisher,
        } = self;
        c.str(name).str(version).str(description).bytes(publisher);
    }
}

impl Encode for FileRef {
    fn encode(&self, c: &mut Canon) {
        let FileRef { path, digest } = self;
        c.str(path).digest(digest);
    }
}

impl Encode for Stage {
    fn encode(&self, c: &mut Canon) {
        let Stage {
            name,
            module,
            args,
            env,
            read,
            graphs,
        } = self;
        c.str(name)
            .str(module)
            .put(args)
            .put(env)
            .put(read)
            .put(graphs);
    }
}

impl Encode for Graph {
    fn encode(&self, c: &mut Canon) {
        let Graph {
            file,
            encoding,
            targets,
            tolerance,
            outputs,
        } = self;
        c.put(file)
            .str(match encoding {
                GraphEncoding::Onnx => "onnx",
            })
            .seq(targets, |c, t| {
                c.str(match t {
                    ExecutionTarget::Cpu => "cpu",
                    ExecutionTarget::Gpu => "gpu",
                });
            })
            .put(tolerance)
            .put(outputs);
    }
}

impl Encode for Tolerance {
    fn encode(&self, c: &mut Canon) {
        let Tolerance { abs, rel, argmax } = self;
        c.u64(abs.to_bits()).u64(rel.to_bits()).u64(*argmax as u64);
    }
}
