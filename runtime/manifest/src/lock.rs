//! `tally.lock`: the digest of every file a package names, for publishers
//! who want those digests reviewed in version control (as `Cargo.lock` or
//! npm's `integrity` fields are). `tally pack --lock` writes it beside the
//! manifest; `tally pack --locked` refuses to pack when a file's digest is
//! not the one the lock records, naming each difference.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tally_digest::Digest;

use crate::Manifest;

/// The lock's file name, beside the manifest.
pub const LOCK_FILE: &str = "tally.lock";

/// The lock format version this crate reads and writes.
pub const LOCK_VERSION: u32 = 1;

/// A lock: package path → digest, for every module, file and graph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    /// [`LOCK_VERSION`].
    pub version: u32,
    /// Every file of the package, by its path in the package.
    pub files: BTreeMap<String, Digest>,
}

/// One way a package differs from its lock.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LockDiff {
    /// The file's digest is not the locked one.
    Changed {
        /// Its path in the package.
        path: String,
        /// The locked digest.
        locked: Digest,
        /// The file's digest now.
        found: Digest,
    },
    /// The package names a file the lock does not.
    Added(String),
    /// The lock names a file the package does not.
    Removed(String),
}

impl std::fmt::Display for LockDiff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockDiff::Changed {
                path,
                locked,
                found,
            } => write!(f, "{path}: locked {locked}, found {found}"),
            LockDiff::Added(p) => write!(f, "{p}: not in the lock"),
            LockDiff::Removed(p) => write!(f, "{p}: locked, but the package no longer names it"),
        }
    }
}

impl Lock {
    /// The lock of `manifest`'s files.
    pub fn of(manifest: &Manifest) -> Lock {
        Lock {
            version: LOCK_VERSION,
            files: manifest
                .all_files()
                .map(|f| (f.path.clone(), f.digest))
                .collect(),
        }
    }

    /// Parses a lock file.
    pub fn parse(text: &str) -> Result<Lock, String> {
        let lock: Lock = toml::from_str(text).map_err(|e| e.to_string())?;
        if lock.version != LOCK_VERSION {
            return Err(format!(
                "lock version {} is not supported (this build reads {LOCK_VERSION})",
                lock.version
            ));
        }
        Ok(lock)
    }

    /// The lock as its file's text.
    pub fn to_text(&self) -> String {
        format!(
            "# The digest of every file the package names, written by `tally pack --lock`.\n# Review changes like code; `tally pack --locked` refuses a package that differs.\n{}",
            toml::to_string(self).expect("locks serialize")
        )
    }

    /// How `manifest` differs from this lock (empty: it matches).
    pub fn diff(&self, manifest: &Manifest) -> Vec<LockDiff> {
        let now = Lock::of(manifest).files;
        let mut out = Vec::new();
        for (path, found) in &now {
            match self.files.get(path) {
                None => out.push(LockDiff::Added(path.clone())),
                Some(locked) if locked != found => out.push(LockDiff::Changed {
                    path: path.clone(),
                    locked: *locked,
                    found: *found,
                }),
                Some(_) => {}
            }
        }
        for path in self.files.keys().filter(|p| !now.contains_key(*p)) {
            out.push(LockDiff::Removed(path.clone()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_round_trips_and_names_each_difference() {
        let text = format!(
            "[package]\nname = \"l\"\nversion = \"1\"\npublisher = \"{}\"\n\n[modules.m]\npath = \"m.wasm\"\ndigest = \"{}\"\n\n[[files]]\npath = \"a.txt\"\ndigest = \"{}\"\n\n[[stages]]\nname = \"s\"\nmodule = \"m\"\n",
            "11".repeat(32),
            Digest::of(b"m"),
            Digest::of(b"a"),
        );
        let m = Manifest::parse(&text, "tally.toml").unwrap();
        let lock = Lock::of(&m);
        assert_eq!(Lock::parse(&lock.to_text()).unwrap(), lock);
        assert!(lock.diff(&m).is_empty());
        let changed = text.replace(&Digest::of(b"a").to_string(), &Digest::of(b"b").to_string());
        let diff = lock.diff(&Manifest::parse(&changed, "tally.toml").unwrap());
        assert_eq!(
            diff,
            [LockDiff::Changed {
                path: "a.txt".into(),
                locked: Digest::of(b"a"),
                found: Digest::of(b"b"),
            }]
        );
        let mut stale = lock.clone();
        stale.files.insert("gone.bin".into(), Digest::of(b"g"));
        stale.files.remove("m.wasm");
        let diff = stale.diff(&m);
        assert_eq!(
            diff,
            [
                LockDiff::Added("m.wasm".into()),
                LockDiff::Removed("gone.bin".into())
            ]
        );
        assert!(Lock::parse("version = 2\n[files]\n").is_err());
    }
}
