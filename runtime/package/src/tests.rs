use std::collections::BTreeMap;
use std::io::Write;

use super::*;

struct Fixture {
    dir: tempfile::TempDir,
    key: SigningKey,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate(&mut rand_core::OsRng);
    std::fs::write(dir.path().join("m.wasm"), b"\0asm module bytes").unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/a.txt"), b"hello").unwrap();
    let text = format!(
        "[package]\nname = \"t\"\nversion = \"1\"\npublisher = \"{}\"\n\n[modules.m]\npath = \"m.wasm\"\ndigest = \"{}\"\n\n[[files]]\npath = \"data/a.txt\"\ndigest = \"{}\"\n\n[[stages]]\nname = \"s\"\nmodule = \"m\"\nread = [\"data/a.txt\"]\n",
        hex::encode(key.verifying_key().as_bytes()),
        Digest::of(b"\0asm module bytes"),
        Digest::of(b"hello"),
    );
    std::fs::write(dir.path().join("tally.toml"), text).unwrap();
    Fixture { dir, key }
}

fn packed(f: &Fixture) -> Package {
    pack(
        &f.dir.path().join("tally.toml"),
        &[],
        &f.key,
        &mut |_, _, _| {},
    )
    .unwrap()
}

fn bundle_bytes(p: &Package) -> Vec<u8> {
    let mut v = Vec::new();
    p.write_bundle(&mut v).unwrap();
    v
}

#[test]
fn pack_write_read_round_trip() {
    let f = fixture();
    let p = packed(&f);
    let bytes = bundle_bytes(&p);
    let back = Package::from_bundle(bytes.as_slice(), DEFAULT_MAX_BUNDLE_BYTES).unwrap();
    assert_eq!(back.id(), p.id());
    assert_eq!(back.module("m").unwrap(), b"\0asm module bytes");
    // Deterministic bytes: packing twice gives the same bundle.
    assert_eq!(bundle_bytes(&packed(&f)), bytes);
}

#[test]
fn pack_rejects_a_changed_file() {
    let f = fixture();
    std::fs::write(f.dir.path().join("data/a.txt"), b"HELLO").unwrap();
    let e = pack(
        &f.dir.path().join("tally.toml"),
        &[],
        &f.key,
        &mut |_, _, _| {},
    )
    .unwrap_err();
    assert!(
        matches!(e, PackageError::DigestMismatch { ref field, .. } if field == "files[0]"),
        "{e}"
    );
}

#[test]
fn pack_rejects_a_key_that_is_not_the_publisher() {
    let f = fixture();
    let other = SigningKey::generate(&mut rand_core::OsRng);
    let e = pack(
        &f.dir.path().join("tally.toml"),
        &[],
        &other,
        &mut |_, _, _| {},
    )
    .unwrap_err();
    assert!(matches!(e, PackageError::WrongPublisherKey { .. }), "{e}");
}

#[test]
fn a_flipped_byte_anywhere_is_detected() {
    let f = fixture();
    let bytes = bundle_bytes(&packed(&f));
    // Flip one byte in each 512-byte block that carries data (skip padding).
    let mut detected = 0;
    for pos in (0..bytes.len()).step_by(97) {
        let mut b = bytes.clone();
        b[pos] ^= 0x40;
        if Package::from_bundle(b.as_slice(), DEFAULT_MAX_BUNDLE_BYTES).is_err() {
            detected += 1;
        } else {
            // An accepted bundle must be the very same package.
            let p = Package::from_bundle(b.as_slice(), DEFAULT_MAX_BUNDLE_BYTES).unwrap();
            assert_eq!(p.id(), packed(&f).id());
            assert_eq!(p.blobs(), packed(&f).blobs());
        }
    }
    assert!(detected > 5);
}

#[test]
fn truncation_is_detected() {
    let f = fixture();
    let bytes = bundle_bytes(&packed(&f));
    for cut in [10, 600, 1100, bytes.len() / 2] {
        assert!(
            Package::from_bundle(&bytes[..cut], DEFAULT_MAX_BUNDLE_BYTES).is_err(),
            "cut at {cut}"
        );
    }
}

/// One raw tar entry: name, type, data.
type Entry<'a> = (&'a str, tar::EntryType, &'a [u8]);

fn raw_tar(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, data) in entries {
        let mut h = tar::Header::new_gnu();
        // Write the name bytes directly, bypassing the builder's own checks,
        // as a hostile packer would.
        let raw = &mut h.as_old_mut().name;
        raw[..name.len()].copy_from_slice(name.as_bytes());
        h.set_size(data.len() as u64);
        h.set_entry_type(*kind);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn traversal_links_and_strange_entries_are_rejected() {
    let f = fixture();
    let p = packed(&f);
    let sig = serde_json::to_vec(p.signature()).unwrap();
    let text = p.manifest_text().as_bytes();
    let reg = tar::EntryType::Regular;
    let cases: Vec<(Vec<Entry<'_>>, &str)> = vec![
        (vec![("../tally.toml", reg, text)], "expected `tally.toml`"),
        (vec![("/etc/passwd", reg, b"x")], "expected `tally.toml`"),
        (
            vec![("tally.toml", tar::EntryType::Symlink, b"")],
            "only regular files",
        ),
        (
            vec![
                ("tally.toml", reg, text),
                ("tally.sig", reg, &sig),
                ("blobs/../../x", reg, b"x"),
            ],
            "named by its digest",
        ),
        (
            vec![
                ("tally.toml", reg, text),
                ("tally.sig", reg, &sig),
                ("blobs/x", tar::EntryType::Link, b""),
            ],
            "only regular files",
        ),
        (
            vec![("tally.toml", reg, text), ("tally.sig", reg, &sig)],
            "has no such blob",
        ),
        (vec![("tally.toml", reg, text)], "not signed"),
        // An extended header is an entry of its own, refused before its
        // data is read or applied (a PAX record would rename or resize
        // the entry after it).
        (
            vec![
                ("pax", tar::EntryType::XHeader, b"18 path=tally.toml\n"),
                ("x", reg, text),
                ("tally.sig", reg, &sig),
            ],
            "only regular files",
        ),
        (
            vec![
                (
                    "././@LongLink",
                    tar::EntryType::GNULongName,
                    b"tally.toml\0",
                ),
                ("x", reg, text),
            ],
            "only regular files",
        ),
    ];
    for (entries, want) in cases {
        let e = Package::from_bundle(raw_tar(&entries).as_slice(), DEFAULT_MAX_BUNDLE_BYTES)
            .unwrap_err();
        assert!(
            e.to_string().contains(want),
            "{entries:?}: got `{e}`, wanted `{want}`",
            entries = entries.iter().map(|e| e.0).collect::<Vec<_>>()
        );
    }
}

#[test]
fn extra_blobs_and_oversized_bundles_are_rejected() {
    let f = fixture();
    let p = packed(&f);
    let mut blobs: BTreeMap<Digest, Vec<u8>> = p.blobs().clone();
    blobs.insert(Digest::of(b"extra"), b"extra".to_vec());
    let mut b = tar::Builder::new(Vec::new());
    let sig = serde_json::to_vec(p.signature()).unwrap();
    b.append(
        &super::bundle_header_for_tests("tally.toml", p.manifest_text().len() as u64),
        p.manifest_text().as_bytes(),
    )
    .unwrap();
    b.append(
        &super::bundle_header_for_tests("tally.sig", sig.len() as u64),
        sig.as_slice(),
    )
    .unwrap();
    for (d, bytes) in &blobs {
        b.append(
            &super::bundle_header_for_tests(&format!("blobs/{d}"), bytes.len() as u64),
            bytes.as_slice(),
        )
        .unwrap();
    }
    let bytes = b.into_inner().unwrap();
    let e = Package::from_bundle(bytes.as_slice(), DEFAULT_MAX_BUNDLE_BYTES).unwrap_err();
    assert!(e.to_string().contains("does not name"), "{e}");
    let e = Package::from_bundle(bundle_bytes(&p).as_slice(), 100).unwrap_err();
    assert!(matches!(e, PackageError::TooLarge { cap: 100 }), "{e}");
}

#[test]
fn a_forged_signature_is_rejected() {
    let f = fixture();
    let p = packed(&f);
    let mut sig = p.signature().clone();
    let other = SigningKey::generate(&mut rand_core::OsRng);
    sig.signature = PackageSignature::sign(&p.id(), &other).signature;
    let e = Package::new(p.manifest_text().to_string(), sig, p.blobs().clone()).unwrap_err();
    assert!(matches!(e, PackageError::BadSignature(_)), "{e}");
    let _ = std::io::sink().write(b"");
}

#[test]
fn an_authored_manifest_packs_with_digests_and_publisher_filled_in() {
    let f = fixture();
    let build = tempfile::tempdir().unwrap();
    std::fs::write(build.path().join("out.wasm"), b"\0asm built elsewhere").unwrap();
    let authored = "# authored\n[package]\nname = \"t\"\nversion = \"1\"\n\n[modules.m]\npath = \"m.wasm\"\nsource = \"out.wasm\"\n\n[[files]]\npath = \"data/a.txt\"\n\n[[stages]]\nname = \"s\"\nmodule = \"m\"\nread = [\"data/a.txt\"]\n";
    let manifest = f.dir.path().join("authored.toml");
    std::fs::write(&manifest, authored).unwrap();
    let p = pack(&manifest, &[build.path()], &f.key, &mut |_, _, _| {}).unwrap();
    let m = p.manifest();
    assert_eq!(m.package.publisher, f.key.verifying_key().to_bytes());
    assert_eq!(m.modules["m"].digest, Digest::of(b"\0asm built elsewhere"));
    assert_eq!(m.files[0].digest, Digest::of(b"hello"));
    assert!(p.manifest_text().starts_with("# authored"));
    // The bundle reads back as the same package.
    let back = Package::from_bundle(bundle_bytes(&p).as_slice(), 1 << 20).unwrap();
    assert_eq!(back.id(), p.id());
    // Without the search directory, the error names where it looked.
    let e = pack(&manifest, &[], &f.key, &mut |_, _, _| {}).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("out.wasm") && msg.contains("not found in"),
        "{msg}"
    );
}

/// A host that accepts only some publishers refuses the others after the
/// manifest and signature, before any blob is read: the blob here is
/// corrupt, and the refusal, not the corruption, is what is reported.
#[test]
fn a_refused_publisher_is_refused_before_any_blob_is_read() {
    let f = fixture();
    let p = packed(&f);
    let mut b = tar::Builder::new(Vec::new());
    let sig = serde_json::to_vec(p.signature()).unwrap();
    let text = p.manifest_text().as_bytes();
    b.append(
        &super::bundle_header_for_tests("tally.toml", text.len() as u64),
        text,
    )
    .unwrap();
    b.append(
        &super::bundle_header_for_tests("tally.sig", sig.len() as u64),
        sig.as_slice(),
    )
    .unwrap();
    for d in p.blobs().keys() {
        let junk = b"not the bytes the digest names";
        b.append(
            &super::bundle_header_for_tests(&format!("blobs/{d}"), junk.len() as u64),
            junk.as_slice(),
        )
        .unwrap();
    }
    let bytes = b.into_inner().unwrap();
    let path = f.dir.path().join("corrupt.tally");
    std::fs::write(&path, &bytes).unwrap();
    let e = Package::from_bundle_file(&path, DEFAULT_MAX_BUNDLE_BYTES).unwrap_err();
    assert!(e.to_string().contains("holds bytes with digest"), "{e}");
    let refuse = |k: &[u8; 32]| {
        Err(PackageError::PublisherNotAllowed {
            publisher: hex::encode(k),
        })
    };
    let e = Package::from_bundle_file_by(&path, DEFAULT_MAX_BUNDLE_BYTES, &refuse).unwrap_err();
    assert!(matches!(e, PackageError::PublisherNotAllowed { .. }), "{e}");
}

/// A digest written by hand is checked against the file read through its
/// `source`, not a file of the same name beside the manifest.
#[test]
fn a_written_digest_is_checked_through_its_source() {
    let f = fixture();
    let build = tempfile::tempdir().unwrap();
    std::fs::write(build.path().join("built.wasm"), b"\0asm built").unwrap();
    let authored = format!(
        "[package]\nname = \"t\"\nversion = \"1\"\n\n[modules.m]\npath = \"m.wasm\"\nsource = \"built.wasm\"\ndigest = \"{}\"\n\n[[stages]]\nname = \"s\"\nmodule = \"m\"\n",
        Digest::of(b"\0asm built")
    );
    let manifest = f.dir.path().join("written.toml");
    std::fs::write(&manifest, &authored).unwrap();
    // `m.wasm` beside the manifest holds other bytes: it is not read.
    let p = pack(&manifest, &[build.path()], &f.key, &mut |_, _, _| {}).unwrap();
    assert_eq!(p.manifest().modules["m"].digest, Digest::of(b"\0asm built"));
    // A wrong written digest is caught on the file `source` names.
    std::fs::write(build.path().join("built.wasm"), b"\0asm changed").unwrap();
    let e = pack(&manifest, &[build.path()], &f.key, &mut |_, _, _| {}).unwrap_err();
    assert!(matches!(e, PackageError::DigestMismatch { .. }), "{e}");
}

#[test]
fn an_oversized_manifest_entry_is_refused_from_its_header() {
    // The header declares 5 MiB; nothing after it is needed (or sent).
    let header = super::bundle_header_for_tests("tally.toml", 5 << 20);
    let e =
        Package::from_bundle(header.as_bytes().as_slice(), DEFAULT_MAX_BUNDLE_BYTES).unwrap_err();
    assert!(
        e.to_string().contains("a manifest or signature is at most"),
        "{e}"
    );
}
