//! Manifest errors: what, where (file, line, field) and how to fix.

use std::fmt;

/// A manifest that could not be read or is invalid.
///
/// Displays as `FILE:LINE: field FIELD: MESSAGE`, with the parts that are
/// known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub struct ManifestError {
    /// The manifest's file name (or other origin).
    pub file: String,
    /// 1-based line of the offending value, when known.
    pub line: Option<usize>,
    /// Dotted path of the offending field (`stages[1].module`), or empty.
    pub field: String,
    /// What was wrong.
    pub kind: ManifestErrorKind,
}

/// What was wrong with a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ManifestErrorKind {
    /// The file could not be read.
    Io(String),
    /// Not valid TOML, an unknown field, a missing field or a value of the
    /// wrong type (the TOML parser's own message).
    Syntax(String),
    /// A value that is well-formed TOML but not allowed.
    Invalid(String),
    /// A reference to a module, file or stage that is not declared.
    Dangling {
        /// What kind of thing is referenced ("module", "file").
        what: &'static str,
        /// The name used.
        name: String,
    },
    /// A name or path declared twice.
    Duplicate(String),
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": ")?;
        if !self.field.is_empty() {
            write!(f, "field `{}`: ", self.field)?;
        }
        match &self.kind {
            ManifestErrorKind::Io(e) => write!(f, "cannot read the manifest: {e}"),
            ManifestErrorKind::Syntax(e) => write!(f, "{e}"),
            ManifestErrorKind::Invalid(e) => write!(f, "{e}"),
            ManifestErrorKind::Dangling { what, name } => write!(
                f,
                "no {what} named `{name}` is declared; declare it (see `A manifest` in README.md) or fix the name"
            ),
            ManifestErrorKind::Duplicate(name) => {
                write!(f, "`{name}` is declared twice; names and paths must be unique")
            }
        }
    }
}
