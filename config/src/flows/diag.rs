//! Diagnostics of a flows file: what went wrong, where, and what was expected.
//!
//! The first line of a rendered diagnostic is exactly `FILE:LINE:COL: error: MESSAGE` (or
//! `warning:`), so tools and tests can read it; codespan-reporting's snippet follows, with the
//! offending line and a caret under the token labelled with what was expected.

use std::fmt;

use codespan_reporting::diagnostic::{Diagnostic as CsDiagnostic, Label};
use codespan_reporting::files::{Files, SimpleFile};
use codespan_reporting::term::{self, termcolor};

/// A byte range in a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }

    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }
}

/// How bad a diagnostic is: an error refuses the file, a warning does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Severity {
    Error,
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One error or warning about a flows file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub message: String,
    /// The offending token.
    pub span: Span,
    /// What was expected there (shown under the caret).
    pub label: String,
    /// Other places involved (e.g. the first definition of a duplicate name).
    pub secondary: Vec<(Span, String)>,
}

impl Diagnostic {
    pub fn error(span: Span, message: impl Into<String>, label: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            message: message.into(),
            span,
            label: label.into(),
            secondary: Vec::new(),
        }
    }

    pub fn warning(span: Span, message: impl Into<String>, label: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(span, message, label)
        }
    }

    /// Adds another place to show.
    pub fn with_secondary(mut self, span: Span, label: impl Into<String>) -> Self {
        self.secondary.push((span, label.into()));
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// 1-based line and column (in characters) of a byte offset, as codespan counts them.
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let file = SimpleFile::new("", src);
    match file.location((), offset.min(src.len())) {
        Ok(loc) => (loc.line_number, loc.column_number),
        Err(_) => (1, 1),
    }
}

/// The 1-based line of a byte offset.
pub fn line_of(src: &str, offset: usize) -> usize {
    line_col(src, offset).0
}

/// The first line of a rendered diagnostic: `FILE:LINE:COL: error: MESSAGE`.
pub fn headline(path: &str, src: &str, d: &Diagnostic) -> String {
    let (line, col) = line_col(src, d.span.start);
    format!("{path}:{line}:{col}: {}: {}", d.severity, d.message)
}

/// Renders diagnostics, one after the other; `color` adds ANSI colours (use it on a tty only).
pub fn render(path: &str, src: &str, diags: &[Diagnostic], color: bool) -> String {
    let mut out = String::new();
    for d in diags {
        out.push_str(&render_one(path, src, d, color));
    }
    out
}

fn render_one(path: &str, src: &str, d: &Diagnostic, color: bool) -> String {
    let file = SimpleFile::new(path, src);
    let clamp = |s: Span| {
        let start = s.start.min(src.len());
        start..s.end.clamp(start, src.len())
    };
    let mut labels = vec![Label::primary((), clamp(d.span)).with_message(&d.label)];
    for (span, label) in &d.secondary {
        labels.push(Label::secondary((), clamp(*span)).with_message(label));
    }
    let cs = match d.severity {
        Severity::Error => CsDiagnostic::error(),
        Severity::Warning => CsDiagnostic::warning(),
    }
    .with_message(&d.message)
    .with_labels(labels);
    let config = term::Config::default();
    let snippet = if color {
        let mut buf = termcolor::Buffer::ansi();
        term::emit(&mut buf, &config, &file, &cs).map(|()| buf.into_inner())
    } else {
        let mut buf = termcolor::Buffer::no_color();
        term::emit(&mut buf, &config, &file, &cs).map(|()| buf.into_inner())
    };
    let snippet = snippet
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    // codespan's own header (`error: MESSAGE`) is replaced by ours, which carries the place.
    let body = snippet.split_once('\n').map_or("", |(_, rest)| rest);
    let mut out = headline(path, src, d);
    out.push('\n');
    out.push_str(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_line_is_file_line_col() {
        let src = "flow a permit\n  match proto tcpp\n";
        let d = Diagnostic::error(Span::new(28, 32), "unknown protocol `tcpp`", "expected tcp");
        let out = render("x.flows", src, &[d], false);
        let mut lines = out.lines();
        assert_eq!(
            lines.next(),
            Some("x.flows:2:15: error: unknown protocol `tcpp`")
        );
        assert!(out.contains("match proto tcpp"), "{out}");
        assert!(out.contains("^^^^ expected tcp"), "{out}");
    }

    #[test]
    fn end_of_file_span_renders() {
        let src = "flow";
        let d = Diagnostic::error(Span::new(4, 4), "missing name", "expected a name");
        let out = render("f", src, &[d], true);
        assert!(out.starts_with("f:1:5: error: missing name\n"), "{out}");
    }
}
