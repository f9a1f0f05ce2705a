//! The Tally local store: content-addressed blobs and an embedded index.
//!
//! Core types:
//!
//! * [`Store`]: a directory (by default `$TALLY_HOME`, else `~/.tally`) with
//!   `blobs/` (files named by their blake3 digest, fanned out by the first
//!   two hex digits), `tmp/` (where writes start) and `index.redb` (a
//!   [redb](https://docs.rs/redb) database of packages, publishers,
//!   receipts and transcripts).
//! * [`PackageRecord`], [`ReceiptRecord`]: what the index says.
//! * [`StoreError`]: what went wrong, naming the digest or path.
//!
//! **Invariants:** a blob is written to `tmp/`, fsynced, then renamed into
//! place, so a blob file is either absent or complete; every read re-hashes
//! the bytes, so a corrupt or truncated blob is reported
//! ([`StoreError::CorruptBlob`]), never served; the index is written only
//! after the blobs it names are durable, in one redb transaction.

use std::io::Write;
use std::path::{Path, PathBuf};

use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tally_digest::Digest;
use tally_package::{Package, PackageSignature};
use tally_receipt::{Receipt, Transcript};

const PACKAGES: TableDefinition<&[u8; 32], &str> = TableDefinition::new("packages");
const PUBLISHERS: TableDefinition<&[u8; 32], u64> = TableDefinition::new("publishers");
const RECEIPTS: TableDefinition<&[u8; 32], &str> = TableDefinition::new("receipts");
const TRANSCRIPTS: TableDefinition<&[u8; 32], &[u8; 32]> = TableDefinition::new("transcripts");

/// A store directory and its index.
pub struct Store {
    root: PathBuf,
    db: redb::Database,
}

/// A stored package, as the index records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageRecord {
    /// The package id.
    pub id: Digest,
    /// `package.name`.
    pub name: String,
    /// `package.version`.
    pub version: String,
    /// The publisher key, hex.
    pub publisher: String,
    /// Blob holding the manifest text.
    pub manifest: Digest,
    /// Blob holding the signature JSON.
    pub signature: Digest,
    /// Every file blob of the package.
    pub blobs: Vec<Digest>,
}

/// A stored receipt, as the index records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptRecord {
    /// The claim digest (the receipt's id).
    pub claim: Digest,
    /// The package it is about.
    pub package_id: Digest,
    /// Blob holding the receipt JSON.
    pub receipt: Digest,
    /// Blob holding the transcript (JSON lines).
    pub transcript: Digest,
}

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The index database failed.
    #[error("store index: {0}")]
    Index(String),
    /// A blob's bytes do not match its digest (corrupt or truncated).
    #[error("blob {digest} at {path} is corrupt: its bytes hash to {found}; remove it and publish again")]
    CorruptBlob {
        /// The digest it should have.
        digest: Digest,
        /// Where it is.
        path: PathBuf,
        /// The digest of what is there.
        found: Digest,
    },
    /// Another process (a running `tally serve`, say) has the store open.
    #[error("the store at {0} is in use by another process (is `tally serve` running on it?); stop it or use another --store")]
    Locked(PathBuf),
    /// A blob or index entry is missing.
    #[error("not in the store: {0}")]
    NotFound(String),
    /// A stored package no longer checks out.
    #[error("stored package {id} is invalid: {source}")]
    Package {
        /// The package id.
        id: Digest,
        /// Why.
        source: Box<tally_package::PackageError>,
    },
}

/// A blob file that cannot be read: absent (`NotFound`) or failing.
fn blob_io_error(digest: &Digest, path: &Path, source: std::io::Error) -> StoreError {
    match source.kind() {
        std::io::ErrorKind::NotFound => StoreError::NotFound(format!("blob {digest}")),
        _ => StoreError::Io {
            path: path.to_path_buf(),
            source,
        },
    }
}

fn index_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Index(e.to_string())
}

impl Store {
    /// The default store directory: `$TALLY_HOME`, else `~/.tally`.
    pub fn default_root() -> PathBuf {
        if let Some(home) = std::env::var_os("TALLY_HOME") {
            return PathBuf::from(home);
        }
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        home.join(".tally")
    }

    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store, StoreError> {
        let root = root.into();
        for dir in [root.join("blobs"), root.join("tmp")] {
            std::fs::create_dir_all(&dir).map_err(|source| StoreError::Io {
                path: dir.clone(),
                source,
            })?;
        }
        let db = redb::Database::create(root.join("index.redb")).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked(root.clone()),
            other => index_err(other),
        })?;
        let tx = db.begin_write().map_err(index_err)?;
        tx.open_table(PACKAGES).map_err(index_err)?;
        tx.open_table(PUBLISHERS).map_err(index_err)?;
        tx.open_table(RECEIPTS).map_err(index_err)?;
        tx.open_table(TRANSCRIPTS).map_err(index_err)?;
        tx.commit().map_err(index_err)?;
        Ok(Store { root, db })
    }

    /// The store directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        let hex = d.to_string();
        self.root.join("blobs").join(&hex[..2]).join(&hex)
    }

    /// Stores `bytes` (atomically, durably) and returns their digest. A blob
    /// already present and intact is not rewritten; a corrupt one is replaced.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<Digest, StoreError> {
        let digest = Digest::of(bytes);
        let path = self.blob_path(&digest);
        if let Ok(existing) = std::fs::read(&path) {
            if Digest::of(&existing) == digest {
                return Ok(digest);
            }
        }
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io { path, source }
        };
        let dir = path.parent().expect("blob paths have a parent");
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let tmp_dir = self.root.join("tmp");
        let mut tmp = tempfile::NamedTempFile::new_in(&tmp_dir).map_err(io(&tmp_dir))?;
        tmp.write_all(bytes).map_err(io(tmp.path()))?;
        tmp.as_file().sync_all().map_err(io(&path))?;
        tmp.persist(&path).map_err(|e| StoreError::Io {
            path: path.clone(),
            source: e.error,
        })?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(digest)
    }

    /// The bytes of blob `digest`, verified.
    pub fn get_blob(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let path = self.blob_path(digest);
        let bytes = std::fs::read(&path).map_err(|e| blob_io_error(digest, &path, e))?;
        let found = Digest::of(&bytes);
        if found != *digest {
            return Err(StoreError::CorruptBlob {
                digest: *digest,
                path,
                found,
            });
        }
        Ok(bytes)
    }

    /// Opens blob `digest` for streaming: its length now, its bytes (checked
    /// against the digest) by [`BlobReader::copy_to`]. Nothing is read
    /// into memory beyond one chunk.
    pub fn open_blob(&self, digest: &Digest) -> Result<BlobReader, StoreError> {
        let path = self.blob_path(digest);
        let io = |source| blob_io_error(digest, &path, source);
        let file = std::fs::File::open(&path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        Ok(BlobReader {
            file,
            len,
            digest: *digest,
            path,
        })
    }

    /// Stores a checked package; idempotent. Returns its id.
    pub fn put_package(&self, package: &Package) -> Result<Digest, StoreError> {
        let id = package.id();
        let mut blobs = Vec::new();
        for bytes in package.blobs().values() {
            blobs.push(self.put_blob(bytes)?);
        }
        let manifest = self.put_blob(package.manifest_text().as_bytes())?;
        let signature = self.put_blob(
            &serde_json::to_vec_pretty(package.signature()).expect("signatures serialize"),
        )?;
        let info = &package.manifest().package;
        let record = PackageRecord {
            id,
            name: info.name.clone(),
            version: info.version.clone(),
            publisher: hex::encode(info.publisher),
            manifest,
            signature,
            blobs,
        };
        let json = serde_json::to_string(&record).expect("records serialize");
        let tx = self.db.begin_write().map_err(index_err)?;
        {
            let mut packages = tx.open_table(PACKAGES).map_err(index_err)?;
            let fresh = packages
                .insert(id.as_bytes(), json.as_str())
                .map_err(index_err)?
                .is_none();
            if fresh {
                let mut publishers = tx.open_table(PUBLISHERS).map_err(index_err)?;
                let n = publishers
                    .get(&info.publisher)
                    .map_err(index_err)?
                    .map(|v| v.value())
                    .unwrap_or(0);
                publishers
                    .insert(&info.publisher, n + 1)
                    .map_err(index_err)?;
            }
        }
        tx.commit().map_err(index_err)?;
        Ok(id)
    }

    /// The index record of package `id`.
    pub fn package_record(&self, id: &Digest) -> Result<PackageRecord, StoreError> {
        let tx = self.db.begin_read().map_err(index_err)?;
        let table = tx.open_table(PACKAGES).map_err(index_err)?;
        let json = table
            .get(id.as_bytes())
            .map_err(index_err)?
            .ok_or_else(|| StoreError::NotFound(format!("package {id}")))?;
        serde_json::from_str(json.value()).map_err(index_err)
    }

    /// The bytes package `id` takes in memory once loaded (its files, from
    /// their blob files' sizes), for reserving them before
    /// [`Store::get_package`] reads them.
    pub fn package_bytes(&self, id: &Digest) -> Result<u64, StoreError> {
        let record = self.package_record(id)?;
        let mut total = 0u64;
        for d in [record.manifest, record.signature]
            .iter()
            .chain(&record.blobs)
        {
            // The file's size (a stat, not an open): the load re-checks it.
            let path = self.blob_path(d);
            let meta = std::fs::metadata(&path).map_err(|e| blob_io_error(d, &path, e))?;
            total = total.saturating_add(meta.len());
        }
        Ok(total)
    }

    /// Loads package `id`, re-verifying every blob, digest and signature.
    pub fn get_package(&self, id: &Digest) -> Result<Package, StoreError> {
        let record = self.package_record(id)?;
        let text = String::from_utf8(self.get_blob(&record.manifest)?).map_err(index_err)?;
        let sig: PackageSignature =
            serde_json::from_slice(&self.get_blob(&record.signature)?).map_err(index_err)?;
        let mut blobs = std::collections::BTreeMap::new();
        for d in &record.blobs {
            blobs.insert(*d, self.get_blob(d)?);
        }
        let package = Package::new(text, sig, blobs).map_err(|e| StoreError::Package {
            id: *id,
            source: Box::new(e),
        })?;
        if package.id() != *id {
            return Err(StoreError::Index(format!(
                "index entry {id} holds package {}",
                package.id()
            )));
        }
        Ok(package)
    }

    /// Every stored package, by id.
    pub fn packages(&self) -> Result<Vec<PackageRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(index_err)?;
        let table = tx.open_table(PACKAGES).map_err(index_err)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(index_err)? {
            let (_, v) = row.map_err(index_err)?;
            out.push(serde_json::from_str(v.value()).map_err(index_err)?);
        }
        Ok(out)
    }

    /// How many packages each publisher (hex key) has stored.
    pub fn publishers(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let tx = self.db.begin_read().map_err(index_err)?;
        let table = tx.open_table(PUBLISHERS).map_err(index_err)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(index_err)? {
            let (k, v) = row.map_err(index_err)?;
            out.push((hex::encode(k.value()), v.value()));
        }
        Ok(out)
    }

    /// Stores a receipt, its transcript and its inference outputs (each an
    /// encoded tensor list, named by digest in the transcript); idempotent.
    /// Returns the record.
    pub fn put_receipt(
        &self,
        receipt: &Receipt,
        transcript: &Transcript,
        computes: &[&[u8]],
    ) -> Result<ReceiptRecord, StoreError> {
        for c in computes {
            self.put_blob(c)?;
        }
        let record = ReceiptRecord {
            claim: receipt.seal.claim_digest,
            package_id: receipt.claim.package_id,
            receipt: self.put_blob(receipt.to_json().as_bytes())?,
            transcript: self.put_blob(transcript.to_jsonl().as_bytes())?,
        };
        let json = serde_json::to_string(&record).expect("records serialize");
        let tx = self.db.begin_write().map_err(index_err)?;
        {
            let mut receipts = tx.open_table(RECEIPTS).map_err(index_err)?;
            receipts
                .insert(record.claim.as_bytes(), json.as_str())
                .map_err(index_err)?;
            let mut transcripts = tx.open_table(TRANSCRIPTS).map_err(index_err)?;
            transcripts
                .insert(transcript.root().as_bytes(), record.transcript.as_bytes())
                .map_err(index_err)?;
        }
        tx.commit().map_err(index_err)?;
        Ok(record)
    }

    /// The receipt whose claim digest is `claim`.
    pub fn get_receipt(&self, claim: &Digest) -> Result<Receipt, StoreError> {
        let tx = self.db.begin_read().map_err(index_err)?;
        let table = tx.open_table(RECEIPTS).map_err(index_err)?;
        let json = table
            .get(claim.as_bytes())
            .map_err(index_err)?
            .ok_or_else(|| StoreError::NotFound(format!("receipt {claim}")))?;
        let record: ReceiptRecord = serde_json::from_str(json.value()).map_err(index_err)?;
        let text = String::from_utf8(self.get_blob(&record.receipt)?).map_err(index_err)?;
        Receipt::from_json(&text).map_err(index_err)
    }

    /// The recorded inference outputs of a run, in compute order, from the
    /// digests its transcript names.
    pub fn get_computes(&self, transcript: &Transcript) -> Result<Vec<Vec<u8>>, StoreError> {
        transcript
            .compute_outputs()
            .iter()
            .map(|d| self.get_blob(d))
            .collect()
    }

    /// The blob holding the transcript whose root is `root` (JSON lines),
    /// for streaming it without parsing ([`Store::open_blob`]).
    pub fn transcript_blob(&self, root: &Digest) -> Result<Digest, StoreError> {
        let tx = self.db.begin_read().map_err(index_err)?;
        let table = tx.open_table(TRANSCRIPTS).map_err(index_err)?;
        let blob = table
            .get(root.as_bytes())
            .map_err(index_err)?
            .ok_or_else(|| StoreError::NotFound(format!("transcript {root}")))?;
        Ok(Digest(*blob.value()))
    }

    /// The transcript whose root is `root`, checked against it.
    pub fn get_transcript(&self, root: &Digest) -> Result<Transcript, StoreError> {
        let blob = self.transcript_blob(root)?;
        let text = String::from_utf8(self.get_blob(&blob)?).map_err(index_err)?;
        Transcript::from_jsonl(&text, root).map_err(index_err)
    }
}

/// A blob opened for streaming ([`Store::open_blob`]).
#[derive(Debug)]
pub struct BlobReader {
    file: std::fs::File,
    len: u64,
    digest: Digest,
    path: PathBuf,
}

impl BlobReader {
    /// The blob's length in bytes (its file's, before it is checked).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the blob is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies the blob to `out` in chunks, hashing as it goes. The last
    /// chunk is written only once the whole blob has matched its digest,
    /// so a corrupt or truncated blob is never delivered whole: the copy
    /// fails with [`StoreError::CorruptBlob`] instead.
    pub fn copy_to(mut self, out: &mut dyn Write) -> Result<(), StoreError> {
        use std::io::Read;
        const CHUNK: usize = 1 << 16;
        let mut hasher = tally_digest::Hasher::new();
        let mut held: Vec<u8> = Vec::new();
        let mut buf = vec![0u8; CHUNK];
        let mut read = 0u64;
        loop {
            let n = match self.file.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(StoreError::Io {
                        path: self.path,
                        source,
                    })
                }
            };
            if n == 0 || read >= self.len {
                break;
            }
            let n = n.min((self.len - read) as usize);
            read += n as u64;
            hasher.update(&buf[..n]);
            if !held.is_empty() {
                out.write_all(&held).map_err(|source| StoreError::Io {
                    path: self.path.clone(),
                    source,
                })?;
            }
            held.clear();
            held.extend_from_slice(&buf[..n]);
        }
        let found = hasher.finish();
        if found != self.digest || read != self.len {
            return Err(StoreError::CorruptBlob {
                digest: self.digest,
                path: self.path,
                found,
            });
        }
        out.write_all(&held).map_err(|source| StoreError::Io {
            path: self.path,
            source,
        })
    }
}

/// What [`Store::fsck`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct FsckReport {
    /// Blob files re-hashed.
    pub blobs: u64,
    /// Blob files whose bytes do not match their name.
    pub corrupt: Vec<String>,
    /// Index entries naming blobs that are absent or corrupt.
    pub dangling: Vec<String>,
    /// Packages whose blobs and signature check out.
    pub packages: u64,
    /// Receipts whose seal and transcript check out.
    pub receipts: u64,
    /// Receipts that do not check out.
    pub bad_receipts: Vec<String>,
    /// Leftover temporary files (interrupted writes) removed from `tmp/`.
    pub tmp_removed: u64,
}

impl FsckReport {
    /// Nothing corrupt, dangling or bad.
    pub fn is_clean(&self) -> bool {
        self.corrupt.is_empty() && self.dangling.is_empty() && self.bad_receipts.is_empty()
    }
}

impl Store {
    /// Checks the whole store: re-hashes every blob, checks that every index
    /// entry's blobs are present and intact, re-verifies every package and
    /// every receipt (seal and transcript root), and removes the temporary
    /// files an interrupted write left in `tmp/` (they were never visible).
    pub fn fsck(&self) -> Result<FsckReport, StoreError> {
        let mut r = FsckReport::default();
        let tmp = self.root.join("tmp");
        for entry in std::fs::read_dir(&tmp).map_err(|source| StoreError::Io {
            path: tmp.clone(),
            source,
        })? {
            let path = entry
                .map_err(|source| StoreError::Io {
                    path: tmp.clone(),
                    source,
                })?
                .path();
            if std::fs::remove_file(&path).is_ok() {
                r.tmp_removed += 1;
            }
        }
        let blobs = self.root.join("blobs");
        for fan in std::fs::read_dir(&blobs).map_err(|source| StoreError::Io {
            path: blobs.clone(),
            source,
        })? {
            let fan = fan
                .map_err(|source| StoreError::Io {
                    path: blobs.clone(),
                    source,
                })?
                .path();
            for file in std::fs::read_dir(&fan).map_err(|source| StoreError::Io {
                path: fan.clone(),
                source,
            })? {
                let path = file
                    .map_err(|source| StoreError::Io {
                        path: fan.clone(),
                        source,
                    })?
                    .path();
                r.blobs += 1;
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let ok = match (name.parse::<Digest>(), std::fs::read(&path)) {
                    (Ok(d), Ok(bytes)) => Digest::of(&bytes) == d,
                    _ => false,
                };
                if !ok {
                    r.corrupt.push(path.display().to_string());
                }
            }
        }
        for record in self.packages()? {
            match self.get_package(&record.id) {
                Ok(_) => r.packages += 1,
                Err(e) => r.dangling.push(format!("package {}: {e}", record.id)),
            }
        }
        let records: Vec<ReceiptRecord> = {
            let tx = self.db.begin_read().map_err(index_err)?;
            let table = tx.open_table(RECEIPTS).map_err(index_err)?;
            let mut v = Vec::new();
            for row in table.iter().map_err(index_err)? {
                let (_, json) = row.map_err(index_err)?;
                v.push(serde_json::from_str(json.value()).map_err(index_err)?);
            }
            v
        };
        for rec in records {
            let check = self.get_receipt(&rec.claim).and_then(|receipt| {
                receipt.check_seal(&[]).map_err(index_err)?;
                self.get_transcript(&receipt.claim.transcript_root)
                    .map(|_| ())
            });
            match check {
                Ok(()) => r.receipts += 1,
                Err(e) => r.bad_receipts.push(format!("receipt {}: {e}", rec.claim)),
            }
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path().join("store")).unwrap();
        (dir, s)
    }

    #[test]
    fn fsck_finds_corruption_and_clears_interrupted_writes() {
        let (_d, s) = store();
        let a = s.put_blob(b"one").unwrap();
        s.put_blob(b"two").unwrap();
        std::fs::write(s.root().join("tmp/.tmpXYZ"), b"half a blob").unwrap();
        let r = s.fsck().unwrap();
        assert!(r.is_clean(), "{r:?}");
        assert_eq!((r.blobs, r.tmp_removed), (2, 1));
        std::fs::write(s.blob_path(&a), b"on").unwrap();
        let r = s.fsck().unwrap();
        assert_eq!(r.corrupt.len(), 1, "{r:?}");
    }

    #[test]
    fn a_store_in_use_says_so() {
        let (_d, s) = store();
        let e = Store::open(s.root()).err().expect("a second open fails");
        assert!(matches!(e, StoreError::Locked(_)), "{e}");
        assert!(e.to_string().contains("in use by another process"), "{e}");
    }

    #[test]
    fn blobs_round_trip_and_are_idempotent() {
        let (_d, s) = store();
        let a = s.put_blob(b"hello").unwrap();
        assert_eq!(s.put_blob(b"hello").unwrap(), a);
        assert_eq!(s.get_blob(&a).unwrap(), b"hello");
        assert!(matches!(
            s.get_blob(&Digest::of(b"absent")),
            Err(StoreError::NotFound(_))
        ));
    }

    #[test]
    fn corrupt_and_truncated_blobs_are_reported_not_served() {
        let (_d, s) = store();
        let a = s.put_blob(b"precious bytes").unwrap();
        let path = s.blob_path(&a);
        std::fs::write(&path, b"precious").unwrap();
        assert!(matches!(
            s.get_blob(&a),
            Err(StoreError::CorruptBlob { .. })
        ));
        // Publishing again repairs it.
        s.put_blob(b"precious bytes").unwrap();
        assert_eq!(s.get_blob(&a).unwrap(), b"precious bytes");
    }

    #[test]
    fn packages_round_trip_through_the_index() {
        let (_d, s) = store();
        let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let module = b"module".to_vec();
        let text = format!(
            "[package]\nname = \"p\"\nversion = \"1\"\npublisher = \"{}\"\n[modules.m]\npath = \"m.wasm\"\ndigest = \"{}\"\n[[stages]]\nname = \"s\"\nmodule = \"m\"\n",
            hex::encode(key.verifying_key().as_bytes()),
            Digest::of(&module)
        );
        let m = tally_package::Package::new(
            text.clone(),
            PackageSignature::sign(&tally_manifest_id(&text), &key),
            [(Digest::of(&module), module.clone())].into(),
        )
        .unwrap();
        let id = s.put_package(&m).unwrap();
        assert_eq!(s.put_package(&m).unwrap(), id, "idempotent");
        assert_eq!(s.get_package(&id).unwrap().id(), id);
        assert_eq!(s.packages().unwrap().len(), 1);
        assert_eq!(
            s.publishers().unwrap(),
            vec![(hex::encode(key.verifying_key().as_bytes()), 1)]
        );
        // Corrupting a module blob makes the package unloadable, with a reason.
        std::fs::write(s.blob_path(&Digest::of(&module)), b"modulf").unwrap();
        assert!(matches!(
            s.get_package(&id),
            Err(StoreError::CorruptBlob { .. })
        ));
    }

    fn tally_manifest_id(text: &str) -> Digest {
        tally_manifest::Manifest::parse(text, "tally.toml")
            .unwrap()
            .id()
    }
}
