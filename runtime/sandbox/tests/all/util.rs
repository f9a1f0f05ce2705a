//! Building packages from guest artifacts in memory.

use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;
use tally_digest::Digest;
use tally_package::{Package, PackageSignature};
use tally_receipt::Outcome;
use tally_sandbox::{RunRequest, RunResult, Sandbox, SandboxConfig};

/// A package under construction.
pub struct Pkg {
    limits: String,
    modules: Vec<(String, Vec<u8>)>,
    files: Vec<(String, Vec<u8>)>,
    stages: Vec<String>,
}

/// The bytes of guest `name`'s `.wasm` (file stem, e.g. `cat-file`).
pub fn guest(name: &str) -> Vec<u8> {
    let (_, path) = tally_test_artifacts::ALL
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no guest {name}"));
    std::fs::read(path).unwrap()
}

impl Pkg {
    pub fn new() -> Self {
        Pkg {
            limits: String::new(),
            modules: Vec::new(),
            files: Vec::new(),
            stages: Vec::new(),
        }
    }

    /// Adds `[limits]` lines, e.g. `"fuel = 100"`.
    pub fn limit(mut self, line: &str) -> Self {
        self.limits.push_str(line);
        self.limits.push('\n');
        self
    }

    /// Adds a module from raw bytes (or WAT text).
    pub fn module(mut self, name: &str, bytes: Vec<u8>) -> Self {
        self.modules.push((name.into(), bytes));
        self
    }

    pub fn file(mut self, path: &str, bytes: &[u8]) -> Self {
        self.files.push((path.into(), bytes.to_vec()));
        self
    }

    /// Adds a stage running guest `name` (also added as a module), with
    /// extra TOML lines for the stage table.
    pub fn guest_stage(self, name: &str, extra: &str) -> Self {
        let module = name.replace('-', "_");
        let this = if self.modules.iter().any(|(m, _)| *m == module) {
            self
        } else {
            self.module(&module, guest(name))
        };
        this.stage(&module, &module, extra)
    }

    pub fn stage(mut self, stage: &str, module: &str, extra: &str) -> Self {
        let n = self.stages.len();
        self.stages.push(format!(
            "[[stages]]\nname = \"{stage}{n}\"\nmodule = \"{module}\"\n{extra}\n"
        ));
        self
    }

    pub fn build(self) -> Package {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let mut text = format!(
            "[package]\nname = \"test\"\nversion = \"1\"\npublisher = \"{}\"\n\n[limits]\n{}\n",
            hex::encode(key.verifying_key().as_bytes()),
            self.limits
        );
        let mut blobs = BTreeMap::new();
        for (name, bytes) in &self.modules {
            let d = Digest::of(bytes);
            text.push_str(&format!(
                "[modules.{name}]\npath = \"{name}.wasm\"\ndigest = \"{d}\"\n\n"
            ));
            blobs.insert(d, bytes.clone());
        }
        for (path, bytes) in &self.files {
            let d = Digest::of(bytes);
            text.push_str(&format!(
                "[[files]]\npath = \"{path}\"\ndigest = \"{d}\"\n\n"
            ));
            blobs.insert(d, bytes.clone());
        }
        for s in &self.stages {
            text.push_str(s);
        }
        let manifest = tally_manifest::Manifest::parse(&text, "test.toml")
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        let sig = PackageSignature::sign(&manifest.id(), &key);
        Package::new(text, sig, blobs).unwrap()
    }
}

thread_local! {
    static SANDBOX: Sandbox = Sandbox::new(SandboxConfig::default()).unwrap();
}

/// Runs `pkg` on `input` in a per-thread default sandbox.
pub fn run(pkg: &Package, input: &[u8]) -> RunResult {
    SANDBOX.with(|s| s.run(pkg, &RunRequest::new(input)).unwrap())
}

pub fn run_with(pkg: &Package, req: &RunRequest<'_>) -> RunResult {
    SANDBOX.with(|s| s.run(pkg, req).unwrap())
}

/// Asserts the run ended with `LimitExceeded { limit }`.
pub fn assert_limit(r: &RunResult, limit: &str) {
    match &r.claim.outcome {
        Outcome::LimitExceeded { limit: l, .. } if l == limit => {}
        o => panic!("expected the {limit} limit, got {o:?}"),
    }
}

pub fn text(r: &RunResult) -> String {
    String::from_utf8_lossy(&r.output).into_owned()
}
