//! Authored manifests: what a publisher writes before `tally pack` fills in
//! what can be computed.
//!
//! A publisher names each module, file and graph by its package `path` and
//! may leave out its `digest` and the `[package] publisher`: [`resolve`]
//! fills them in (the digest of the file's bytes, the packing key), keeping
//! every comment and the layout of the text, and drops the authoring-only
//! `source` key (where on the publisher's disk the file is, when that is not
//! `path`). The result is an ordinary, complete manifest: it is what the
//! bundle carries and the package id is its digest.

use tally_digest::Digest;
use toml_edit::{DocumentMut, Item, Table, Value};

use crate::{ManifestError, ManifestErrorKind};

/// The authoring-only key naming where a file is read from, relative to the
/// manifest's directory or a search directory (default: its `path`).
pub const SOURCE_KEY: &str = "source";

/// One file an authored manifest names: the field that names it, its
/// package path, and where to read it from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source<'a> {
    /// The field, e.g. `modules.detect` or `files[0]`.
    pub field: &'a str,
    /// Its path in the package.
    pub path: &'a str,
    /// Where to read it: `source`, else `path`.
    pub source: &'a str,
}

/// Fills in what `tally pack` can compute: each missing `digest` from
/// `digest_of` (given the file's [`Source`]), and a missing `publisher`
/// from `publisher`; removes every `source` key. A digest that is present
/// is kept (pack checks it against the file). Returns the complete
/// manifest text, to be parsed strictly with [`crate::Manifest::parse`].
pub fn resolve(
    text: &str,
    origin: &str,
    publisher: &[u8; 32],
    digest_of: &mut dyn FnMut(&Source<'_>) -> Result<Digest, String>,
) -> Result<String, ManifestError> {
    let err = |field: &str, kind| ManifestError {
        file: origin.to_string(),
        line: None,
        field: field.to_string(),
        kind,
    };
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| err("", ManifestErrorKind::Syntax(e.to_string())))?;
    if let Some(package) = doc.get_mut("package").and_then(Item::as_table_like_mut) {
        if package.get("publisher").is_none() {
            package.insert("publisher", toml_edit::value(hex::encode(publisher)));
        }
    }
    let mut fill = |field: String, table: &mut dyn toml_edit::TableLike| {
        let source = match table.remove(SOURCE_KEY) {
            None => None,
            Some(item) => Some(
                item.as_str()
                    .filter(|s| is_relative_inside(s))
                    .map(String::from)
                    .ok_or_else(|| {
                        err(
                            &format!("{field}.{SOURCE_KEY}"),
                            ManifestErrorKind::Invalid(
                                "expected a relative path without `..` (it is looked up in the manifest's directory and the --search directories)".into(),
                            ),
                        )
                    })?,
            ),
        };
        let Some(path) = table.get("path").and_then(Item::as_str).map(String::from) else {
            // The strict parse names the missing path.
            return Ok(());
        };
        // Read through `source` even when the digest is written: pack
        // checks it against what it reads.
        let from = source.as_deref().unwrap_or(&path);
        let digest = digest_of(&Source {
            field: &field,
            path: &path,
            source: from,
        })
        .map_err(|e| err(&field, ManifestErrorKind::Invalid(e)))?;
        if table.get("digest").is_none() {
            table.insert("digest", toml_edit::value(digest.to_string()));
        }
        Ok(())
    };
    for section in ["modules", "graphs"] {
        if let Some(t) = doc.get_mut(section).and_then(Item::as_table_like_mut) {
            for (name, item) in t.iter_mut() {
                if let Some(entry) = item.as_table_like_mut() {
                    fill(format!("{section}.{name}"), entry)?;
                }
            }
        }
    }
    if let Some(files) = doc.get_mut("files") {
        match files {
            Item::ArrayOfTables(a) => {
                for (i, t) in a.iter_mut().enumerate() {
                    fill(format!("files[{i}]"), t as &mut Table)?;
                }
            }
            Item::Value(Value::Array(a)) => {
                for (i, v) in a.iter_mut().enumerate() {
                    if let Some(t) = v.as_inline_table_mut() {
                        fill(format!("files[{i}]"), t)?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(doc.to_string())
}

/// A relative path of normal components: no root, no `..`, no `.`, no
/// backslash, so it names a file under the directory it is joined to.
fn is_relative_inside(path: &str) -> bool {
    !path.is_empty()
        && !path.contains('\\')
        && !path.starts_with('/')
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Manifest;

    #[test]
    fn resolving_fills_digests_and_the_publisher_and_keeps_comments() {
        let authored = r#"# a comment that stays
[package]
name = "demo"
version = "1.0.0"

[modules.main]
path = "main.wasm"          # computed
source = "build/out/main.wasm"

[[files]]
path = "data.txt"
digest = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"

[graphs.g]
path = "g.onnx"

[[stages]]
name = "main"
module = "main"
read = ["data.txt"]
graphs = ["g"]
"#;
        let mut asked = Vec::new();
        let text = resolve(authored, "tally.toml", &[7; 32], &mut |s| {
            asked.push((
                s.field.to_string(),
                s.path.to_string(),
                s.source.to_string(),
            ));
            Ok(Digest::of(s.path.as_bytes()))
        })
        .unwrap();
        assert_eq!(
            asked,
            [
                (
                    "modules.main".into(),
                    "main.wasm".into(),
                    "build/out/main.wasm".into()
                ),
                ("graphs.g".into(), "g.onnx".into(), "g.onnx".into()),
                // Written digests are read too: pack checks them.
                ("files[0]".into(), "data.txt".into(), "data.txt".into()),
            ]
        );
        assert!(text.starts_with("# a comment that stays"), "{text}");
        assert!(!text.contains("source"), "{text}");
        let m = Manifest::parse(&text, "resolved").unwrap();
        assert_eq!(m.package.publisher, [7; 32]);
        assert_eq!(m.modules["main"].digest, Digest::of(b"main.wasm"));
        assert_eq!(m.graphs["g"].file.digest, Digest::of(b"g.onnx"));
        assert_eq!(
            m.files[0].digest.to_string(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
        // What cannot be computed is reported with its field.
        let e = resolve(authored, "tally.toml", &[7; 32], &mut |_| {
            Err("no such file".into())
        })
        .unwrap_err();
        assert_eq!(e.field, "modules.main");
        // A complete manifest resolves to itself.
        let again = resolve(&text, "x", &[9; 32], &mut |s| {
            Ok(Digest::of(s.path.as_bytes()))
        })
        .unwrap();
        assert_eq!(again, text);
        // A source outside the search directories is refused: pack would
        // sign whatever file it names.
        for bad in [
            "/etc/hostname",
            "../secret",
            "a/../../b",
            "./x",
            r"a\\b",
            "",
        ] {
            let text = authored.replace("build/out/main.wasm", bad);
            let e = resolve(&text, "tally.toml", &[7; 32], &mut |_| unreachable!()).unwrap_err();
            assert_eq!(e.field, "modules.main.source", "{bad}");
        }
    }
}
