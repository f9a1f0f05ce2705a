//! Signed packages built in memory from the guests, for tests and benches.

use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;
use tally_digest::Digest;
use tally_package::{Package, PackageSignature};

/// A package under construction.
pub struct Pkg {
    publisher: u8,
    limits: String,
    modules: Vec<(String, Vec<u8>)>,
    files: Vec<(String, Vec<u8>)>,
    graphs: Vec<(String, String, Vec<u8>, String)>,
    stages: Vec<String>,
}

/// The bytes of guest `name`'s `.wasm` (file stem, e.g. `cat-file`).
pub fn guest(name: &str) -> Vec<u8> {
    let (_, path) = crate::ALL
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no guest {name}"));
    std::fs::read(path).unwrap()
}

impl Pkg {
    /// An empty package, signed by publisher key `[7; 32]`.
    pub fn new() -> Self {
        Pkg {
            publisher: 7,
            limits: String::new(),
            modules: Vec::new(),
            files: Vec::new(),
            graphs: Vec::new(),
            stages: Vec::new(),
        }
    }

    /// Signs with the publisher key `[seed; 32]` instead.
    pub fn publisher(mut self, seed: u8) -> Self {
        self.publisher = seed;
        self
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

    /// Adds a data file.
    pub fn file(mut self, path: &str, bytes: &[u8]) -> Self {
        self.files.push((path.into(), bytes.to_vec()));
        self
    }

    /// Adds graph `name` from file `path` with `bytes`, and extra TOML lines
    /// for its table (e.g. `tolerance = { abs = 1e-3 }`).
    pub fn graph(mut self, name: &str, path: &str, bytes: Vec<u8>, extra: &str) -> Self {
        self.graphs
            .push((name.into(), path.into(), bytes, extra.into()));
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

    /// Adds a stage `{stage}{index}` running `module`, with extra TOML lines.
    pub fn stage(mut self, stage: &str, module: &str, extra: &str) -> Self {
        let n = self.stages.len();
        self.stages.push(format!(
            "[[stages]]\nname = \"{stage}{n}\"\nmodule = \"{module}\"\n{extra}\n"
        ));
        self
    }

    /// Writes the manifest, signs it and checks the package.
    pub fn build(self) -> Package {
        let key = SigningKey::from_bytes(&[self.publisher; 32]);
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
        for (name, path, bytes, extra) in &self.graphs {
            let d = Digest::of(bytes);
            text.push_str(&format!(
                "[graphs.{name}]\npath = \"{path}\"\ndigest = \"{d}\"\n{extra}\n\n"
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

impl Default for Pkg {
    fn default() -> Self {
        Self::new()
    }
}

/// The package as a bundle file's bytes.
pub fn bundle_bytes(p: &Package) -> Vec<u8> {
    let mut v = Vec::new();
    p.write_bundle(&mut v).expect("writing to memory");
    v
}

/// The directory of fetched model assets: `$TALLY_ASSETS`, else `.assets/`
/// at the checkout root (`scripts/fetch-assets.sh` fills it).
pub fn assets_dir() -> std::path::PathBuf {
    std::env::var_os("TALLY_ASSETS")
        .map(Into::into)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.assets"))
}

/// The bytes of asset `name`; panics with how to fetch it when missing.
pub fn asset(name: &str) -> Vec<u8> {
    let path = assets_dir().join(name);
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/fetch-assets.sh first", path.display()))
}

/// The PP-OCRv4 recogniser's character list: its `character` metadata.
pub fn ocr_charset() -> String {
    let meta = tally_nn_tract::onnx_metadata(&asset("ch_PP-OCRv4_rec_infer.onnx"))
        .expect("the recogniser is an ONNX model");
    meta.into_iter()
        .find(|(k, _)| k == "character")
        .map(|(_, v)| v)
        .expect("the PP-OCRv4 recogniser carries its character list")
}

/// The directory the guests are built into.
pub fn guest_dir() -> &'static std::path::Path {
    std::path::Path::new(crate::ALL[0].1)
        .parent()
        .expect("guests are files in a directory")
}

/// Files derived from the assets, for the manifests that ship them: the
/// PP-OCRv4 recogniser's character list (`ppocr_keys.txt`, as `tally
/// graph-meta rec.onnx character` prints it). Written once, beside the
/// assets.
pub fn derived_dir() -> std::path::PathBuf {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(write_derived).clone()
}

fn write_derived() -> std::path::PathBuf {
    let dir = assets_dir().join("derived");
    let keys = dir.join("ppocr_keys.txt");
    let charset = ocr_charset();
    if std::fs::read(&keys).ok().as_deref() != Some(charset.as_bytes()) {
        std::fs::create_dir_all(&dir).unwrap();
        let tmp = dir.join(format!("ppocr_keys.txt.{}", std::process::id()));
        std::fs::write(&tmp, &charset).unwrap();
        std::fs::rename(&tmp, &keys).unwrap();
    }
    dir
}

/// The committed manifest `manifests/NAME/tally.toml`, packed as a
/// publisher would (`tally pack --search` the guests, the assets and the
/// derived files), signed by the publisher key `[7; 32]`.
pub fn manifest_package(name: &str) -> Package {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../manifests")
        .join(name)
        .join("tally.toml");
    let (assets, derived) = (assets_dir(), derived_dir());
    tally_package::pack(
        &manifest,
        &[guest_dir(), &assets, &derived],
        &SigningKey::from_bytes(&[7; 32]),
        &mut |_, _, _| {},
    )
    .unwrap_or_else(|e| panic!("{}: {e}", manifest.display()))
}

/// The OCR package of `manifests/ocr`.
pub fn ocr_package() -> Package {
    manifest_package("ocr")
}

/// The voice activity detection package of `manifests/vad`.
pub fn vad_package() -> Package {
    manifest_package("vad")
}
