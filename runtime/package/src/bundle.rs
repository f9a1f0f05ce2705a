//! The bundle file format: writing ([`pack`], [`write`]) and strict reading
//! ([`read`]).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use tally_digest::Digest;
use tally_manifest::{Manifest, MANIFEST_FILE};

use crate::{Package, PackageError, PackageSignature};

const SIG_FILE: &str = "tally.sig";
const BLOB_DIR: &str = "blobs/";

/// Called by [`pack`] after each file is read and checked, with the file's
/// path, its size, and the total size of all files.
pub type PackProgress<'a> = dyn FnMut(&str, u64, u64) + 'a;

/// Packs the manifest at `manifest_path` and the files it names into a
/// signed [`Package`].
///
/// The manifest may be *authored* ([`tally_manifest::authored`]): digests
/// and the publisher left out are filled in (the publisher from `key`), and
/// the bundle carries the completed text. Each file is read from its
/// `source` (default: its `path`), looked up in the manifest's directory,
/// then in each of `search` in order. A digest the manifest states is
/// checked against the file; `key` must be the publisher's.
pub fn pack(
    manifest_path: &Path,
    search: &[&Path],
    key: &SigningKey,
    progress: &mut PackProgress<'_>,
) -> Result<Package, PackageError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| PackageError::Io { path, source }
    };
    let origin = manifest_path.display().to_string();
    let authored = std::fs::read_to_string(manifest_path).map_err(io(manifest_path))?;
    let dir = manifest_path.parent().unwrap_or(Path::new("."));
    let dirs: Vec<&Path> = std::iter::once(dir).chain(search.iter().copied()).collect();
    let find = |source: &str| -> Result<PathBuf, PackageError> {
        dirs.iter()
            .map(|d| d.join(source))
            .find(|p| p.is_file())
            .ok_or_else(|| PackageError::Io {
                path: source.to_string(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!(
                        "not found in {}; build or fetch it, or add a search directory",
                        dirs.iter()
                            .map(|d| d.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ),
            })
    };
    // Read each file once: its bytes give the digest the manifest lacks
    // and become the blob.
    let mut read: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut total = 0u64;
    let mut read_error = None;
    let public = key.verifying_key().to_bytes();
    let text = tally_manifest::authored::resolve(&authored, &origin, &public, &mut |src| {
        let bytes = find(src.source)
            .and_then(|p| std::fs::read(&p).map_err(io(&p)))
            .map_err(|e| {
                let message = e.to_string();
                read_error.get_or_insert(e);
                message
            })?;
        let digest = Digest::of(&bytes);
        total += bytes.len() as u64;
        read.insert(src.path.to_string(), bytes);
        Ok(digest)
    });
    let text = match (text, read_error) {
        (Err(_), Some(e)) => return Err(e),
        (text, _) => text?,
    };
    let manifest = Manifest::parse(&text, &origin)?;
    if public != manifest.package.publisher {
        return Err(PackageError::WrongPublisherKey {
            key: hex::encode(public),
            manifest: hex::encode(manifest.package.publisher),
        });
    }
    let fields: Vec<(String, &tally_manifest::FileRef)> = manifest
        .modules
        .iter()
        .map(|(name, f)| (format!("modules.{name}"), f))
        .chain(
            manifest
                .files
                .iter()
                .enumerate()
                .map(|(i, f)| (format!("files[{i}]"), f)),
        )
        .chain(
            manifest
                .graphs
                .iter()
                .map(|(name, g)| (format!("graphs.{name}"), &g.file)),
        )
        .collect();
    let mut blobs = BTreeMap::new();
    for (field, f) in fields {
        // `resolve` read every file the manifest names, written digest or
        // not, so each is checked against what was read.
        let bytes = read.remove(&f.path).expect("resolve read every file");
        let found = Digest::of(&bytes);
        if found != f.digest {
            return Err(PackageError::DigestMismatch {
                field,
                path: f.path.clone(),
                expected: f.digest,
                found,
            });
        }
        progress(&f.path, bytes.len() as u64, total);
        blobs.insert(found, bytes);
    }
    let signature = PackageSignature::sign(&manifest.id(), key);
    Package::new(text, signature, blobs)
}

pub(crate) fn header(path: &str, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_path(path)
        .expect("bundle entry names are short ASCII");
    h.set_size(size);
    h.set_mode(0o444);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    h
}

/// Writes `package` as a bundle. The bytes depend only on the package: no
/// timestamps, owners or host paths.
pub(crate) fn write(package: &Package, writer: impl Write) -> std::io::Result<()> {
    let mut b = tar::Builder::new(writer);
    let text = package.manifest_text.as_bytes();
    b.append(&header(MANIFEST_FILE, text.len() as u64), text)?;
    let sig = serde_json::to_vec_pretty(&package.signature).expect("signature serializes");
    b.append(&header(SIG_FILE, sig.len() as u64), sig.as_slice())?;
    for (digest, bytes) in &package.blobs {
        b.append(
            &header(&format!("{BLOB_DIR}{digest}"), bytes.len() as u64),
            bytes.as_slice(),
        )?;
    }
    b.into_inner()?.flush()
}

/// The largest manifest or signature entry a bundle may hold: far more
/// than a manifest of `MAX_ENTRIES` files needs.
pub const MAX_HEAD_ENTRY_BYTES: u64 = 4 << 20;

/// Reads a bundle strictly (see the crate docs).
pub(crate) fn read(
    reader: impl Read,
    max_bytes: u64,
    allow: &crate::PublisherCheck<'_>,
) -> Result<Package, PackageError> {
    let corrupt = |m: String| PackageError::Corrupt(m);
    // The sum of entry sizes is the real cap (checked below); this bound on
    // raw bytes also covers headers and padding.
    let mut archive =
        tar::Archive::new(reader.take(max_bytes.saturating_mul(2).saturating_add(1 << 20)));
    // The manifest (entry 0) and its signature (entry 1) are checked, and
    // the publisher accepted, before any blob is read.
    let mut text: Option<(String, Manifest)> = None;
    let mut sig: Option<PackageSignature> = None;
    let mut blobs = BTreeMap::new();
    // The digests the manifest names, gathered once (at the first blob).
    let mut names: Option<std::collections::BTreeSet<Digest>> = None;
    let mut total = 0u64;
    // Raw: extended headers (PAX, GNU long names) are entries of their own,
    // refused below as not regular files, before their data is read (tar
    // would otherwise read them whole, and a PAX size would override the
    // size checked here). Bundle names fit plain ustar headers.
    let entries = archive
        .entries()
        .map_err(|e| corrupt(format!("not a tar archive: {e}")))?
        .raw(true);
    for (index, entry) in entries.enumerate() {
        let mut entry =
            entry.map_err(|e| corrupt(format!("entry {index}: unreadable header: {e}")))?;
        let name = String::from_utf8(entry.path_bytes().into_owned())
            .map_err(|_| corrupt(format!("entry {index}: the name is not UTF-8")))?;
        let kind = entry.header().entry_type();
        if kind != tar::EntryType::Regular {
            return Err(corrupt(format!("entry {index} `{name}`: is a {kind:?}, only regular files are allowed (no links or directories)")));
        }
        let size = entry
            .header()
            .size()
            .map_err(|e| corrupt(format!("entry `{name}`: bad size: {e}")))?;
        total = total.saturating_add(size);
        if total > max_bytes {
            return Err(PackageError::TooLarge { cap: max_bytes });
        }
        // Checked from the header, before the entry is read: the manifest
        // and signature are small, and a blob must be one the signed
        // manifest names (so replaying a real manifest and signature does
        // not make a host read junk).
        match index {
            0 | 1 if size > MAX_HEAD_ENTRY_BYTES => {
                return Err(corrupt(format!(
                    "entry {index} `{name}` is {size} bytes; a manifest or signature is at most {MAX_HEAD_ENTRY_BYTES}"
                )));
            }
            i if i >= 2 => {
                let (_, manifest) = text.as_ref().expect("entry 0 is the manifest");
                let digest: Digest = name
                    .strip_prefix(BLOB_DIR)
                    .ok_or_else(|| {
                        corrupt(format!("entry {i} is `{name}`, expected `{BLOB_DIR}<digest>` (absolute paths, `..` and other names are rejected)"))
                    })?
                    .parse()
                    .map_err(|e| {
                        corrupt(format!("entry `{name}`: a blob is named by its digest: {e}"))
                    })?;
                let named = names.get_or_insert_with(|| {
                    manifest
                        .all_files()
                        .map(|f| f.digest)
                        .collect::<std::collections::BTreeSet<_>>()
                });
                if !named.contains(&digest) {
                    return Err(corrupt(format!(
                        "entry {i} `{name}` is a blob the manifest does not name"
                    )));
                }
            }
            _ => {}
        }
        let mut bytes = Vec::with_capacity(size.min(1 << 26) as usize);
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| corrupt(format!("entry `{name}`: truncated or unreadable: {e}")))?;
        if bytes.len() as u64 != size {
            return Err(corrupt(format!(
                "entry `{name}`: truncated ({} of {size} bytes)",
                bytes.len()
            )));
        }
        match (index, name.as_str()) {
            (0, MANIFEST_FILE) => {
                let t = String::from_utf8(bytes)
                    .map_err(|_| corrupt(format!("{MANIFEST_FILE} is not UTF-8")))?;
                let manifest = Manifest::parse(&t, MANIFEST_FILE)?;
                text = Some((t, manifest));
            }
            (1, SIG_FILE) => {
                let s: PackageSignature = serde_json::from_slice(&bytes)
                    .map_err(|e| corrupt(format!("{SIG_FILE}: {e}")))?;
                let (_, manifest) = text.as_ref().expect("entry 0 is the manifest");
                s.verify(&manifest.id(), &manifest.package.publisher)?;
                allow(&manifest.package.publisher)?;
                sig = Some(s);
            }
            (i, n) if i >= 2 && n.starts_with(BLOB_DIR) => {
                let digest: Digest = n[BLOB_DIR.len()..].parse().map_err(|e| {
                    corrupt(format!("entry `{n}`: a blob is named by its digest: {e}"))
                })?;
                if blobs.insert(digest, bytes).is_some() {
                    return Err(corrupt(format!("entry `{n}` appears twice")));
                }
            }
            (i, n) => {
                let expected = match i {
                    0 => MANIFEST_FILE.to_string(),
                    1 => SIG_FILE.to_string(),
                    _ => format!("{BLOB_DIR}<digest>"),
                };
                return Err(corrupt(format!("entry {i} is `{n}`, expected `{expected}` (absolute paths, `..` and other names are rejected)")));
            }
        }
    }
    let text =
        text.ok_or_else(|| corrupt(format!("no {MANIFEST_FILE}: this is not a Tally bundle")))?;
    let sig = sig.ok_or_else(|| corrupt(format!("no {SIG_FILE}: the bundle is not signed")))?;
    let referenced: usize = blobs.len();
    let (text, manifest) = text;
    let package = Package::assemble(manifest, text, sig, blobs)?;
    if package.blobs.len() != referenced {
        return Err(corrupt(
            "the bundle holds blobs the manifest does not name".into(),
        ));
    }
    Ok(package)
}
