//! Diagnostics of a flows file: what went wrong, where, and what was expected.
//!
//! The first line of a rendered diagnostic is exactly `FILE:LINE:COL: error: MESSAGE` (or
//! `warning:`), so tools and tests can read it; codespan-reporting's snippet follows, with the
//! offending line and a caret under the token labelled with what was expected.

use std::fmt;

use codespan_reporting::diagnostic::{Diagnostic as CsDiagnostic, Label};
use codespan_reporting::files::Files;
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

/// Diagnostics rendered at most by [`render`]; the others are counted in one last line.
pub const MAX_RENDERED: usize = 100;

/// Bytes of a long source line shown around a diagnostic's place (`...` marks the cuts).
pub const WINDOW: usize = 120;

/// Where the lines of a source start, for line and column look-ups in `O(log lines)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineIndex {
    starts: Vec<usize>,
    len: usize,
}

impl LineIndex {
    pub fn new(src: &str) -> LineIndex {
        let starts = std::iter::once(0)
            .chain(src.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex {
            starts,
            len: src.len(),
        }
    }

    /// The 0-based line of a byte offset (clamped to the source).
    pub fn line(&self, offset: usize) -> usize {
        let offset = offset.min(self.len);
        self.starts
            .partition_point(|&s| s <= offset)
            .saturating_sub(1)
    }

    /// The byte range of a 0-based line, without its line break.
    pub fn line_range(&self, src: &str, line: usize) -> std::ops::Range<usize> {
        let start = self.starts.get(line).copied().unwrap_or(self.len);
        let end = self.starts.get(line + 1).map_or(self.len, |n| n - 1);
        let end = end.max(start);
        let end = if src.as_bytes().get(end.wrapping_sub(1)) == Some(&b'\r') && end > start {
            end - 1
        } else {
            end
        };
        start..end
    }

    /// 1-based line and column (in characters, as codespan counts them) of a byte offset.
    pub fn line_col(&self, src: &str, offset: usize) -> (usize, usize) {
        let offset = offset.min(src.len());
        let line = self.line(offset);
        let start = self.starts.get(line).copied().unwrap_or(0);
        (line + 1, chars(&src.as_bytes()[start..offset]) + 1)
    }
}

/// Characters in UTF-8 bytes (continuation bytes not counted).
fn chars(bytes: &[u8]) -> usize {
    bytes.iter().filter(|b| (**b & 0xC0) != 0x80).count()
}

/// 1-based line and column (in characters) of a byte offset, as codespan counts them.
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let start = src.as_bytes()[..offset]
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    let line = src.as_bytes()[..start]
        .iter()
        .filter(|b| **b == b'\n')
        .count();
    (line + 1, chars(&src.as_bytes()[start..offset]) + 1)
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
///
/// Bounded whatever the input: at most [`MAX_RENDERED`] diagnostics (then one line counting
/// the rest), each quoting at most [`WINDOW`] bytes of each line it shows.
pub fn render(path: &str, src: &str, diags: &[Diagnostic], color: bool) -> String {
    let index = LineIndex::new(src);
    let mut out = String::new();
    for d in diags.iter().take(MAX_RENDERED) {
        out.push_str(&render_one(path, src, &index, d, color));
    }
    if let Some(rest) = diags.get(MAX_RENDERED..).filter(|r| !r.is_empty()) {
        let errors = rest.iter().filter(|d| d.is_error()).count();
        out.push_str(&format!(
            "{path}: {} more not shown ({errors} errors, {} warnings)\n",
            rest.len(),
            rest.len() - errors
        ));
    }
    out
}

/// Quotes a word of the source in a message: long ones are cut (`...`), so a message stays
/// short whatever the file holds.
pub fn quote(word: &str) -> std::borrow::Cow<'_, str> {
    const MAX: usize = 40;
    if word.len() <= MAX {
        return word.into();
    }
    let mut end = MAX;
    while !word.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &word[..end]).into()
}

/// One line of an [`Excerpt`]: where it is in the excerpt, which source line it shows, and
/// how many characters of that line were cut before it.
#[derive(Debug)]
struct ExcerptLine {
    start: usize,
    number: usize,
    cut_chars: usize,
    marker: usize,
}

/// The lines a diagnostic shows, each cut to a window around its labels; codespan reads it
/// as the file and reports the source's line and column numbers.
#[derive(Debug)]
struct Excerpt<'a> {
    name: &'a str,
    text: String,
    lines: Vec<ExcerptLine>,
}

impl<'a> Files<'a> for Excerpt<'a> {
    type FileId = ();
    type Name = &'a str;
    type Source = &'a str;

    fn name(&'a self, (): ()) -> Result<&'a str, codespan_reporting::files::Error> {
        Ok(self.name)
    }

    fn source(&'a self, (): ()) -> Result<&'a str, codespan_reporting::files::Error> {
        Ok(&self.text)
    }

    fn line_index(
        &'a self,
        (): (),
        byte: usize,
    ) -> Result<usize, codespan_reporting::files::Error> {
        Ok(self
            .lines
            .partition_point(|l| l.start <= byte)
            .saturating_sub(1))
    }

    fn line_number(
        &'a self,
        (): (),
        line: usize,
    ) -> Result<usize, codespan_reporting::files::Error> {
        Ok(self.lines.get(line).map_or(line + 1, |l| l.number))
    }

    fn column_number(
        &'a self,
        (): (),
        line: usize,
        byte: usize,
    ) -> Result<usize, codespan_reporting::files::Error> {
        let Some(l) = self.lines.get(line) else {
            return Ok(1);
        };
        let from = (l.start + l.marker).min(byte);
        let byte = byte.min(self.text.len());
        Ok(l.cut_chars + chars(&self.text.as_bytes()[from..byte]) + 1)
    }

    fn line_range(
        &'a self,
        (): (),
        line: usize,
    ) -> Result<std::ops::Range<usize>, codespan_reporting::files::Error> {
        let l = self
            .lines
            .get(line)
            .ok_or(codespan_reporting::files::Error::LineTooLarge {
                given: line,
                max: self.lines.len(),
            })?;
        let end = self
            .lines
            .get(line + 1)
            .map_or(self.text.len(), |n| n.start);
        Ok(l.start..end)
    }
}

/// The largest char boundary of `s` at or below `i`.
fn floor_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The excerpt of `d`'s labels (each cut to the line it starts on) and the labels' ranges in it.
fn excerpt<'a>(
    path: &'a str,
    src: &str,
    index: &LineIndex,
    spans: &[Span],
) -> (Excerpt<'a>, Vec<std::ops::Range<usize>>) {
    // each label: its line, and its range cut to that line
    let cut: Vec<(usize, usize, usize)> = spans
        .iter()
        .map(|s| {
            let start = s.start.min(src.len());
            let line = index.line(start);
            let range = index.line_range(src, line);
            let start = start.clamp(range.start, range.end);
            let end = s.end.clamp(start, range.end);
            (line, start, end)
        })
        .collect();
    let mut lines: Vec<usize> = cut.iter().map(|c| c.0).collect();
    lines.sort_unstable();
    lines.dedup();
    let mut ex = Excerpt {
        name: path,
        text: String::new(),
        lines: Vec::new(),
    };
    // per excerpt line: the window [a, b) of the source and where it starts in the excerpt
    let mut windows = Vec::new();
    for &line in &lines {
        let range = index.line_range(src, line);
        let (a, b) = if range.len() <= WINDOW {
            (range.start, range.end)
        } else {
            let on_line = cut.iter().filter(|c| c.0 == line);
            let lo = on_line.clone().map(|c| c.1).min().unwrap_or(range.start);
            let hi = on_line.map(|c| c.2).max().unwrap_or(lo);
            // the primary label (the first span) decides when the labels do not fit
            let (lo, hi) = if hi - lo <= WINDOW {
                (lo, hi)
            } else {
                // (when it is on this line: another line's offset says nothing of this one)
                let p = cut
                    .first()
                    .filter(|c| c.0 == line)
                    .map_or(lo, |c| c.1)
                    .clamp(range.start, range.end);
                (p, (p + WINDOW / 2).clamp(p, range.end))
            };
            let room = WINDOW.saturating_sub(hi - lo);
            let a = lo.saturating_sub(room / 2).max(range.start);
            let b = (a + WINDOW).min(range.end).max(hi);
            let a = b.saturating_sub(WINDOW).max(range.start).min(a);
            (floor_boundary(src, a), floor_boundary(src, b))
        };
        let start = ex.text.len();
        let marker = if a > range.start { 3 } else { 0 };
        if marker > 0 {
            ex.text.push_str("...");
        }
        ex.text.push_str(&src[a..b]);
        if b < range.end {
            ex.text.push_str("...");
        }
        ex.text.push('\n');
        ex.lines.push(ExcerptLine {
            start,
            number: line + 1,
            cut_chars: chars(&src.as_bytes()[range.start..a]),
            marker,
        });
        windows.push((line, a, b, start + marker));
    }
    let ranges = cut
        .iter()
        .map(|&(line, s, e)| {
            let Some(&(_, a, b, at)) = windows.iter().find(|w| w.0 == line) else {
                return 0..0;
            };
            let map = |p: usize| at + p.clamp(a, b) - a;
            map(s)..map(e)
        })
        .collect();
    (ex, ranges)
}

fn render_one(path: &str, src: &str, index: &LineIndex, d: &Diagnostic, color: bool) -> String {
    let spans: Vec<Span> = std::iter::once(d.span)
        .chain(d.secondary.iter().map(|(s, _)| *s))
        .collect();
    let (file, ranges) = excerpt(path, src, index, &spans);
    let mut labels = Vec::new();
    for (i, range) in ranges.into_iter().enumerate() {
        labels.push(match i {
            0 => Label::primary((), range).with_message(&d.label),
            _ => Label::secondary((), range).with_message(&d.secondary[i - 1].1),
        });
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
    let (line, col) = index.line_col(src, d.span.start);
    let mut out = format!("{path}:{line}:{col}: {}: {}", d.severity, d.message);
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

    #[test]
    fn long_lines_are_quoted_in_a_window_with_the_caret_right() {
        let mut src = String::from("flow a permit\n  match");
        for _ in 0..3000 {
            src.push_str(" src 10.0.0.1");
        }
        src.push_str(" proto tcpp\n");
        let at = src.find("tcpp").expect("tcpp");
        let d = Diagnostic::error(
            Span::new(at, at + 4),
            "unknown protocol `tcpp`",
            "expected tcp",
        )
        .with_secondary(Span::new(16, 21), "rule starts here");
        let out = render("x.flows", &src, &[d], false);
        let (_, col) = line_col(&src, at);
        assert!(
            out.starts_with(&format!(
                "x.flows:2:{col}: error: unknown protocol `tcpp`\n"
            )),
            "{out}"
        );
        assert!(out.len() < 4 * WINDOW + 400, "{} bytes:\n{out}", out.len());
        // the caret sits under `tcpp` in the quoted window
        let lines: Vec<&str> = out.lines().collect();
        let quoted = lines
            .iter()
            .position(|l| l.contains("proto tcpp"))
            .expect("the window shows the token");
        let text_col = lines[quoted].find("tcpp").expect("tcpp");
        let caret_col = lines[quoted + 1].find('^').expect("caret");
        assert_eq!(text_col, caret_col, "{out}");
        assert!(lines[quoted].contains("..."), "{out}");
        assert!(
            out.contains(&format!("x.flows:2:{col}")),
            "codespan's own header: {out}"
        );
    }

    #[test]
    fn at_most_max_rendered_diagnostics_then_a_count() {
        let src = "x\n".repeat(500);
        let diags: Vec<Diagnostic> = (0..500)
            .map(|i| Diagnostic::error(Span::new(2 * i, 2 * i + 1), "bad", "here"))
            .collect();
        let out = render("f", &src, &diags, false);
        assert_eq!(out.matches(": error: bad").count(), MAX_RENDERED);
        assert!(
            out.ends_with(&format!(
                "f: {} more not shown ({} errors, 0 warnings)\n",
                400, 400
            )),
            "{}",
            &out[out.len() - 100..]
        );
    }

    #[test]
    fn line_index_agrees_with_line_col() {
        let src = "ab\nçd\r\n\nxyz";
        let index = LineIndex::new(src);
        for offset in 0..=src.len() {
            if src.is_char_boundary(offset) {
                assert_eq!(
                    index.line_col(src, offset),
                    line_col(src, offset),
                    "{offset}"
                );
            }
        }
    }

    /// Found by the `control_request` fuzz target: labels on several long lines, the primary
    /// one on another line than the window being cut, made `hi - lo` underflow.
    #[test]
    fn fuzz_regression_labels_on_several_long_lines() {
        let src = "msrcoutf\n  [ mwstport 2mitx.h flow ply[ta0zpe1mitx.h flow ply[ta5zpermit\ntpzprmepi\n  [ rooutflowstport 2mitx.h flow plnnnnnnnnnnnnnnnghtnnjnnnnnnnnstatsnnnnnnnnnnnnnnnnnnnnnnnnnnnnndirennnnnnnnnnnnnnnghtnnjnnnnnnnnstatsnnnnnnnnnnnnnnnnnnnnnnnnnnnnndirectflow ply 2mitx.h flow ply[ta0zper[ta1zpermit\n  t 2mitx.h flow plnnnnnnnnnnnnnnnghtnnjnnnnnnnnstatsnnnnnnnnnnnnnnnnnnnnnnnnnnnnndirennnnnnnnnnnnnnnghtnnjnnnnnnnnstatsnnnnnnnnnnnnnnnnnnnnnnnnnnnnndirectflow ply 2mitx.h flow ply[ta0zper[ta1zpermit\n    iprooutflowstport 2mitx.h flctor_weightnnnnnnnnnnnnnnnnnnnnnnnntpzprmepi\n  [ rooutflowstport 2mitx.h flow plnnnnnnnnnnnnnnnghtnnjnnnnnnnnstatsnnnnnnnnnnnnnnnn  iprooutflowstport 2mitx.h flctor_weightnnnnnnnnnnnnnnnnnnnnnnnntpzprmepi\n  [ rooutflowstport 2mitx.h flow plnnnnnnnnnnnnnnnghtnnjnnnnnnnnstatsnnnnnnnnnnnnnnnnnnnnnnnnnnnnndirectflow ply 2mitx.h flow ply[ta0zper[ta1zpermit\n    iprooutflowstport 2mitx.h flow ply[ta0zpermit\n    flows";
        let r = crate::flows::load("request", src, None).expect_err("not a flows file");
        let text = render(&r.path, &r.source, &r.diagnostics, false);
        assert!(text.contains("error"), "{text}");
    }
}
