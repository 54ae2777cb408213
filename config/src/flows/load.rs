//! Loading a flows file as `check` and `classify` do: parse, check references, lint.
//!
//! A file with any error is refused whole ([`Report`] holds every diagnostic); a file that
//! loads comes with its warnings ([`Loaded`]). Both can render themselves for a person.

use std::fmt;
use std::path::Path;

use super::ast::FlowsFile;
use super::diag::{render, Diagnostic};
use super::lint::lint;
use super::parser::{parse_with, Spans};
use super::Names;

/// A flows file that loaded, with its source positions and warnings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The file name as shown in diagnostics.
    pub path: String,
    pub source: String,
    pub file: FlowsFile,
    pub spans: Spans,
    /// Warnings in source order (host bits cleared, dead rules and flows).
    pub warnings: Vec<Diagnostic>,
}

impl Loaded {
    /// The warnings rendered like errors (`FILE:LINE:COL: warning: ...` and a snippet).
    pub fn render_warnings(&self, color: bool) -> String {
        render(&self.path, &self.source, &self.warnings, color)
    }
}

/// Why a flows file was refused: every error (and warning) found in it, in source order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub path: String,
    pub source: String,
    pub diagnostics: Vec<Diagnostic>,
}

impl Report {
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.is_error())
    }

    /// All diagnostics rendered (`FILE:LINE:COL: error: ...` and a snippet each).
    pub fn render(&self, color: bool) -> String {
        render(&self.path, &self.source, &self.diagnostics, color)
    }
}

impl fmt::Display for Report {
    /// The rendered diagnostics, without colour.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(false))
    }
}

impl std::error::Error for Report {}

/// Why `load_file` failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(Report),
}

/// Loads flows source; with `names`, every `iface`, `director` and `table` must be defined.
///
/// `path_display` is the file name diagnostics show.
pub fn load(path_display: &str, src: &str, names: Option<&dyn Names>) -> Result<Loaded, Report> {
    match parse_with(src, names) {
        Ok(parsed) => {
            let mut warnings = parsed.warnings;
            warnings.extend(lint(&parsed.file, &parsed.spans, src));
            warnings.sort_by_key(|d| (d.span.start, d.span.end));
            Ok(Loaded {
                path: path_display.to_string(),
                source: src.to_string(),
                file: parsed.file,
                spans: parsed.spans,
                warnings,
            })
        }
        Err(diagnostics) => Err(Report {
            path: path_display.to_string(),
            source: src.to_string(),
            diagnostics,
        }),
    }
}

/// Reads and loads a flows file from disk (a regular file of at most
/// [`crate::source::MAX_FLOWS_FILE`] bytes).
pub fn load_file(path: &Path, names: Option<&dyn Names>) -> Result<Loaded, LoadError> {
    let shown = path.display().to_string();
    let src =
        crate::source::read_regular(path, crate::source::MAX_FLOWS_FILE).map_err(|source| {
            LoadError::Io {
                path: shown.clone(),
                source,
            }
        })?;
    load(&shown, &src, names).map_err(LoadError::Invalid)
}
