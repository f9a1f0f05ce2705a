//! Test helpers that read like prose: a scratch directory with a publisher,
//! packages built from the guest artifacts, and `tally` invocations.

use std::path::PathBuf;
use std::process::{Command, Output};

use tally_digest::Digest;

/// A scratch directory with its own store (`TALLY_HOME`).
pub struct Dir {
    pub tmp: tempfile::TempDir,
}

/// What `tally` did.
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    fn from(o: Output) -> Ran {
        Ran {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Panics unless the exit code is `code`.
    #[track_caller]
    pub fn expect(self, code: i32) -> Ran {
        assert_eq!(
            self.code, code,
            "exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// The bytes of guest `name`.
pub fn guest(name: &str) -> Vec<u8> {
    let (_, path) = tally_test_artifacts::ALL
        .iter()
        .find(|(n, _)| *n == name)
        .expect("known guest");
    std::fs::read(path).unwrap()
}

/// The lines `manifests/ocr/sample.png` shows (rendered with
/// `cargo run -p tally-test-artifacts --example render-text`).
pub const OCR_SAMPLE_LINES: [&str; 3] = [
    "Tally runs models in a sandbox",
    "Every run yields a signed receipt",
    "Verifiers replay it anywhere",
];

pub const SAMPLE_PNG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../manifests/image-stats/sample.png"
);

impl Dir {
    pub fn new() -> Dir {
        Dir {
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// Runs `tally ARGS` with this directory as working directory and store.
    pub fn tally(&self, args: &[&str]) -> Ran {
        self.tally_env(args, &[])
    }

    /// `tally run PACKAGE --input in --output o --receipt r.json EXTRA…`.
    pub fn run(&self, package: &str, extra: &[&str]) -> Ran {
        let mut args = vec![
            "run",
            package,
            "--input",
            "in",
            "--output",
            "o",
            "--receipt",
            "r.json",
        ];
        args.extend_from_slice(extra);
        self.tally(&args)
    }

    /// [`Dir::tally`] with extra environment variables.
    pub fn tally_env(&self, args: &[&str], env: &[(&str, &str)]) -> Ran {
        let out = Command::new(env!("CARGO_BIN_EXE_tally"))
            .args(args)
            .current_dir(self.tmp.path())
            .env("TALLY_HOME", self.path("home"))
            .env_remove("TALLY_LOG")
            .envs(env.iter().copied())
            .output()
            .expect("tally runs");
        Ran::from(out)
    }

    pub fn write(&self, rel: &str, bytes: &[u8]) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }

    pub fn read(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    pub fn read_string(&self, rel: &str) -> String {
        String::from_utf8(self.read(rel)).unwrap()
    }

    /// Creates `publisher.key` once and returns the public key.
    pub fn publisher(&self) -> String {
        if !self.path("publisher.key").exists() {
            self.tally(&["keygen", "--out", "publisher.key"]).expect(0);
        }
        self.read_string("publisher.key.pub").trim().to_string()
    }

    /// Writes package directory `name/` with the given guest stages
    /// (`(guest, extra stage TOML)`) and packs it into `name.tally`.
    pub fn package(&self, name: &str, stages: &[(&str, &str)], extra: &str) -> PathBuf {
        let publisher = self.publisher();
        let mut toml = format!("[package]\nname = \"{name}\"\nversion = \"0.1.0\"\npublisher = \"{publisher}\"\n{extra}\n");
        let mut seen = Vec::new();
        for (guest_name, _) in stages {
            if seen.contains(guest_name) {
                continue;
            }
            seen.push(*guest_name);
            let bytes = guest(guest_name);
            let module = guest_name.replace('-', "_");
            self.write(&format!("{name}/{module}.wasm"), &bytes);
            toml.push_str(&format!(
                "\n[modules.{module}]\npath = \"{module}.wasm\"\ndigest = \"{}\"\n",
                Digest::of(&bytes)
            ));
        }
        for (i, (guest_name, stage)) in stages.iter().enumerate() {
            toml.push_str(&format!(
                "\n[[stages]]\nname = \"s{i}\"\nmodule = \"{}\"\n{stage}\n",
                guest_name.replace('-', "_")
            ));
        }
        self.write(&format!("{name}/tally.toml"), toml.as_bytes());
        let out = format!("{name}.tally");
        self.tally(&[
            "pack",
            &format!("{name}/tally.toml"),
            "--key",
            "publisher.key",
            "--out",
            &out,
        ])
        .expect(0);
        self.path(&out)
    }
}
