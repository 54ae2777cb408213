//! The flows parser: words to a [`FlowsFile`], with source spans kept beside the tree.
//!
//! Hand-written recursive descent over the token stream of [`super::lexer`]. Position decides
//! what a word is (`flow match permit match` is a flow named `match`), so names may be keywords.
//! On an error the parser records it and resumes at the next `match`, `ignore`, `flow` or
//! `outflow`, so one run reports every error of a file.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::ast::{
    Cond, Family, Flow, FlowsFile, ListKind, Policy, PortRange, Prefix, Proto, Rule, RuleKind, Test,
};
use super::diag::{quote, Diagnostic, LineIndex, Span};
use super::lexer::{tokenize, Token};
use super::Names;

/// Longest flow, director or interface name.
pub const NAME_MAX: usize = 27;

/// Errors recorded at most: past them the parser stops (one last error says so), so a hostile
/// file cannot make the diagnostics grow with its size.
pub const MAX_ERRORS: usize = 1000;

/// Warnings recorded at most while parsing; one last warning counts the others.
pub const MAX_WARNINGS: usize = 1000;

/// Where the parts of one item are in the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemSpans {
    /// The `flow` or `outflow` keyword.
    pub keyword: Span,
    pub name: Span,
    /// The whole policy (`table 200`), if written.
    pub policy: Option<Span>,
    pub rules: Vec<RuleSpans>,
}

/// Where one rule is in the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSpans {
    /// From the `match`/`ignore` keyword to the end of its last condition.
    pub span: Span,
    pub keyword: Span,
    pub conds: Vec<CondSpans>,
}

/// Where one condition is in the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CondSpans {
    /// From `not` (or the key) to the end of the value.
    pub span: Span,
    pub key: Span,
    pub value: Span,
}

/// Source positions of a parsed file, parallel to `FlowsFile::items` and their rules/conds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Spans {
    pub items: Vec<ItemSpans>,
}

/// A file that parsed: the tree, where its parts are, and the warnings found while parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub file: FlowsFile,
    pub spans: Spans,
    pub warnings: Vec<Diagnostic>,
}

/// Parses a flows file without checking references against an appliance config.
///
/// On failure, returns every diagnostic of the file (errors and warnings) in source order.
pub fn parse(src: &str) -> Result<Parsed, Vec<Diagnostic>> {
    parse_with(src, None)
}

/// Parses a flows file; with `names`, every `iface`, `director` and `table` must be defined.
pub fn parse_with(src: &str, names: Option<&dyn Names>) -> Result<Parsed, Vec<Diagnostic>> {
    let mut p = Parser {
        src,
        toks: tokenize(src),
        pos: 0,
        diags: Vec::new(),
        errors: 0,
        warnings: 0,
        names,
    };
    let (file, spans) = p.file();
    if p.warnings > MAX_WARNINGS {
        p.diags.push(Diagnostic::warning(
            p.eof(),
            format!(
                "{} more warnings like the ones above are not listed",
                p.warnings - MAX_WARNINGS
            ),
            "end of file",
        ));
    }
    let mut diags = p.diags;
    diags.sort_by_key(|d| (d.span.start, d.span.end));
    if diags.iter().any(Diagnostic::is_error) {
        Err(diags)
    } else {
        Ok(Parsed {
            file,
            spans,
            warnings: diags,
        })
    }
}

const COND_KEYS: [&str; 7] = [
    "iface", "proto", "src", "dst", "srcport", "dstport", "icmptype",
];
const POLICIES: [&str; 5] = ["permit", "deny", "skip", "director", "table"];
/// Words that end a rule or an item wherever they appear outside a name position.
const STRUCTURE: [&str; 4] = ["flow", "outflow", "match", "ignore"];

/// A value error: the message and what was expected (the label under the caret).
type ValueError = (String, String);

struct Parser<'s, 'n> {
    src: &'s str,
    toks: Vec<Token<'s>>,
    pos: usize,
    diags: Vec<Diagnostic>,
    /// Errors and warnings seen (recorded up to [`MAX_ERRORS`], [`MAX_WARNINGS`]).
    errors: usize,
    warnings: usize,
    names: Option<&'n dyn Names>,
}

/// An `icmptype` whose name waits for the rule's family to be known.
struct PendingIcmp<'s> {
    cond: usize,
    token: Token<'s>,
}

impl<'s> Parser<'s, '_> {
    fn peek(&self) -> Option<Token<'s>> {
        self.toks.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<Token<'s>> {
        let t = self.peek();
        if t.is_some() {
            self.pos += 1;
        }
        t
    }

    /// Where "end of file" is shown: just after the last word (not on a trailing empty line).
    fn eof(&self) -> Span {
        let end = self.toks.last().map_or(0, |t| t.span.end);
        Span::new(end, end)
    }

    fn error(&mut self, span: Span, message: impl Into<String>, label: impl Into<String>) {
        self.push(Diagnostic::error(span, message, label));
    }

    /// Records a diagnostic, up to [`MAX_ERRORS`] errors and [`MAX_WARNINGS`] warnings, its
    /// message and label cut to [`MAX_MESSAGE`] bytes (a message may quote a huge word).
    fn push(&mut self, mut d: Diagnostic) {
        cut(&mut d.message);
        cut(&mut d.label);
        if d.is_error() {
            self.errors += 1;
            if self.errors <= MAX_ERRORS {
                self.diags.push(d);
            }
        } else {
            self.warnings += 1;
            if self.warnings <= MAX_WARNINGS {
                self.diags.push(d);
            }
        }
    }

    /// Past [`MAX_ERRORS`]: the rest of the file is not read.
    fn gave_up(&self) -> bool {
        self.errors > MAX_ERRORS
    }

    /// Skips words until one of `stops` (or the end).
    fn recover(&mut self, stops: &[&str]) {
        while let Some(t) = self.peek() {
            if stops.contains(&t.text) {
                return;
            }
            self.pos += 1;
        }
    }

    fn file(&mut self) -> (FlowsFile, Spans) {
        let mut file = FlowsFile::default();
        let mut spans = Spans::default();
        let mut seen: HashMap<String, Span> = HashMap::new();
        let lines = LineIndex::new(self.src);
        while let Some(t) = self.peek() {
            if self.gave_up() {
                break;
            }
            let kind = match t.text {
                "flow" => ListKind::Flow,
                "outflow" => ListKind::Outflow,
                other => {
                    self.error(
                        t.span,
                        format!("unexpected `{other}`: expected `flow` or `outflow`"),
                        "expected `flow` or `outflow`",
                    );
                    self.pos += 1;
                    self.recover(&["flow", "outflow"]);
                    continue;
                }
            };
            self.pos += 1;
            if let Some((flow, item)) = self.item(kind, t.span) {
                match seen.get(&flow.name) {
                    Some(first) => {
                        let (l1, l2) =
                            (lines.line(first.start) + 1, lines.line(item.name.start) + 1);
                        let d = Diagnostic::error(
                            item.name,
                            format!(
                                "duplicate name `{}`: defined on line {l1} and again on line {l2}",
                                flow.name
                            ),
                            "expected a name not used before",
                        )
                        .with_secondary(*first, "first defined here");
                        self.push(d);
                    }
                    None => {
                        seen.insert(flow.name.clone(), item.name);
                    }
                }
                file.items.push(flow);
                spans.items.push(item);
            }
        }
        if self.gave_up() {
            let at = self.peek().map_or(self.eof(), |t| t.span);
            self.diags.push(Diagnostic::error(
                at,
                format!(
                    "too many errors: stopped after {MAX_ERRORS}; the rest of the file is not checked"
                ),
                "not checked from here on",
            ));
        }
        (file, spans)
    }

    /// `("flow" | "outflow") NAME [policy] rule*`, after the keyword.
    fn item(&mut self, kind: ListKind, keyword: Span) -> Option<(Flow, ItemSpans)> {
        let kw = kind.keyword();
        let Some(name_tok) = self.bump() else {
            self.error(
                self.eof(),
                format!("missing name after `{kw}`"),
                "expected a name",
            );
            return None;
        };
        self.check_name(name_tok, "name");
        let mut policy = Policy::Skip;
        let mut policy_span = None;
        if let Some(t) = self.peek().filter(|t| POLICIES.contains(&t.text)) {
            self.pos += 1;
            let (p, span) = self.policy(kind, t);
            policy = p;
            policy_span = Some(span);
        }
        let mut rules = Vec::new();
        let mut rule_spans = Vec::new();
        while let Some(t) = self.peek() {
            if self.gave_up() {
                break;
            }
            let rule_kind = match t.text {
                "match" => RuleKind::Match,
                "ignore" => RuleKind::Ignore,
                "flow" | "outflow" => break,
                other => {
                    let expected = if policy_span.is_none() && rules.is_empty() {
                        "expected a policy (`permit`, `deny`, `skip`, `director`, `table`), `match`, `ignore`, `flow` or `outflow`"
                    } else if rules.is_empty() {
                        "expected `match`, `ignore`, `flow` or `outflow`"
                    } else {
                        "expected a condition, `match`, `ignore`, `flow` or `outflow`"
                    };
                    let what = if COND_KEYS.contains(&other) || other == "not" {
                        format!("condition `{other}` outside a rule: {expected}")
                    } else if other.bytes().all(|b| b.is_ascii_lowercase() || b == b'-') {
                        format!("unknown keyword `{other}`: {expected}")
                    } else {
                        format!("unexpected `{other}`: {expected}")
                    };
                    self.error(t.span, what, expected);
                    self.pos += 1;
                    self.recover(&STRUCTURE);
                    continue;
                }
            };
            self.pos += 1;
            let (rule, spans) = self.rule(rule_kind, t.span);
            rules.push(rule);
            rule_spans.push(spans);
        }
        let flow = Flow {
            kind,
            name: name_tok.text.to_string(),
            policy,
            rules,
        };
        let spans = ItemSpans {
            keyword,
            name: name_tok.span,
            policy: policy_span,
            rules: rule_spans,
        };
        Some((flow, spans))
    }

    /// Checks a NAME: `[A-Za-z0-9_-]{1,27}`.
    fn check_name(&mut self, t: Token<'_>, what: &str) -> bool {
        if let Some(c) = t
            .text
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            self.error(
                t.span,
                format!("invalid character `{c}` in {what} `{}`", t.text),
                "expected letters, digits, `-` or `_`",
            );
            false
        } else if t.text.len() > NAME_MAX {
            self.error(
                t.span,
                format!(
                    "{what} `{}` is {} characters long, at most {NAME_MAX} are allowed",
                    t.text,
                    t.text.len()
                ),
                format!("expected at most {NAME_MAX} characters"),
            );
            false
        } else {
            true
        }
    }

    /// `"permit" | "deny" | "skip" | "director" NAME | "table" ID`, after the first word.
    fn policy(&mut self, kind: ListKind, t: Token<'s>) -> (Policy, Span) {
        match t.text {
            "permit" => (Policy::Permit, t.span),
            "deny" => (Policy::Deny, t.span),
            "skip" => (Policy::Skip, t.span),
            "director" => {
                if kind == ListKind::Outflow {
                    self.error(
                        t.span,
                        "`director` policy on an outflow: directors are available for flows only",
                        "expected `permit`, `deny`, `skip` or `table`",
                    );
                }
                let Some(arg) = self.value("a director name", true) else {
                    return (Policy::Skip, t.span);
                };
                if self.check_name(arg, "director name") {
                    if let Some(names) = self.names {
                        if !names.has_director(arg.text) {
                            self.error(
                                arg.span,
                                format!("unknown director `{}`: the appliance config does not define it", arg.text),
                                "expected a director of the appliance config",
                            );
                        }
                    }
                }
                (Policy::Director(arg.text.to_string()), t.span.to(arg.span))
            }
            _ => {
                let Some(arg) = self.value("a routing table id", false) else {
                    return (Policy::Skip, t.span);
                };
                match table_id(arg.text) {
                    Ok(id) => {
                        if let Some(names) = self.names {
                            if !names.has_table(id) {
                                self.error(
                                    arg.span,
                                    format!("unknown routing table {id}: the appliance config does not define it"),
                                    "expected a table of the appliance config",
                                );
                            }
                        }
                        (Policy::Table(id), t.span.to(arg.span))
                    }
                    Err((m, l)) => {
                        self.error(arg.span, m, l);
                        (Policy::Skip, t.span.to(arg.span))
                    }
                }
            }
        }
    }

    /// The value word after a key. A structural keyword is not taken unless `any` (names).
    fn value(&mut self, what: &str, any: bool) -> Option<Token<'s>> {
        let prev = self
            .pos
            .checked_sub(1)
            .and_then(|i| self.toks.get(i))
            .map(|t| t.text)
            .unwrap_or("");
        match self.peek() {
            None => {
                self.error(
                    self.eof(),
                    format!("missing {what} after `{prev}` at end of file"),
                    format!("expected {what}"),
                );
                None
            }
            Some(t) if !any && STRUCTURE.contains(&t.text) => {
                self.error(
                    t.span,
                    format!("missing {what} after `{prev}`, found `{}`", t.text),
                    format!("expected {what}"),
                );
                None
            }
            Some(t) => {
                self.pos += 1;
                Some(t)
            }
        }
    }

    /// `("match" | "ignore") cond*`, after the keyword, with the per-rule checks.
    fn rule(&mut self, kind: RuleKind, keyword: Span) -> (Rule, RuleSpans) {
        let mut conds: Vec<Cond> = Vec::new();
        let mut spans: Vec<CondSpans> = Vec::new();
        let mut keys: Vec<(&'s str, Span)> = Vec::new();
        let mut pending: Vec<PendingIcmp<'s>> = Vec::new();
        // A key whose value failed to parse: no follow-up errors about what it would allow.
        let mut broken: Vec<&'s str> = Vec::new();
        let mut end = keyword;
        while let Some(t) = self.peek() {
            let (negated, start) = if t.text == "not" {
                self.pos += 1;
                end = t.span;
                match self.peek() {
                    Some(k) if COND_KEYS.contains(&k.text) => (true, t.span),
                    other => {
                        let found =
                            other.map_or("end of file".to_string(), |k| format!("`{}`", k.text));
                        let span = other.map_or(self.eof(), |k| k.span);
                        self.error(
                            span,
                            format!("expected a condition after `not`, found {found}"),
                            "expected `iface`, `proto`, `src`, `dst`, `srcport`, `dstport` or `icmptype`",
                        );
                        if other.is_some_and(|k| !STRUCTURE.contains(&k.text)) {
                            self.pos += 1;
                            self.recover(&STRUCTURE);
                        }
                        break;
                    }
                }
            } else if COND_KEYS.contains(&t.text) {
                (false, t.span)
            } else {
                break;
            };
            let Some(key) = self.bump() else { break };
            keys.push((key.text, key.span));
            end = key.span;
            let what = match key.text {
                "iface" => "an interface name",
                "proto" => "a protocol",
                "src" | "dst" => "an address",
                "srcport" | "dstport" => "a port or port range",
                _ => "an ICMP type",
            };
            let Some(v) = self.value(what, key.text == "iface") else {
                broken.push(key.text);
                continue;
            };
            end = v.span;
            let test = match key.text {
                "iface" => {
                    if self.check_name(v, "interface name") {
                        if let Some(names) = self.names {
                            if !names.has_port(v.text) {
                                self.error(
                                    v.span,
                                    format!("unknown interface `{}`: the appliance config does not define it", v.text),
                                    "expected a port of the appliance config",
                                );
                            }
                        }
                    }
                    Ok(Test::Iface(v.text.to_string()))
                }
                "proto" => proto(v.text).map(Test::Proto),
                "src" | "dst" => prefix(v.text).map(|(p, cleared)| {
                    if cleared {
                        self.push(Diagnostic::warning(
                            v.span,
                            format!("host bits set in `{}`: using {p}", quote(v.text)),
                            format!("host bits cleared: {p}"),
                        ));
                    }
                    if key.text == "src" {
                        Test::Src(p)
                    } else {
                        Test::Dst(p)
                    }
                }),
                "srcport" => ports(v.text).map(Test::SrcPort),
                "dstport" => ports(v.text).map(Test::DstPort),
                _ => match dec(v.text) {
                    Some(n) => u8::try_from(n).map(Test::IcmpType).map_err(|_| {
                        (
                            format!("ICMP type {} out of range", v.text),
                            "expected 0..=255 or an ICMP type name".to_string(),
                        )
                    }),
                    None => {
                        pending.push(PendingIcmp {
                            cond: conds.len(),
                            token: v,
                        });
                        Ok(Test::IcmpType(0))
                    }
                },
            };
            match test {
                Ok(test) => {
                    conds.push(Cond { negated, test });
                    spans.push(CondSpans {
                        span: start.to(v.span),
                        key: key.span,
                        value: v.span,
                    });
                }
                Err((m, l)) => {
                    self.error(v.span, m, l);
                    broken.push(key.text);
                }
            }
        }
        self.check_rule(&mut conds, &spans, &keys, &broken, pending);
        let rule = Rule { kind, conds };
        (
            rule,
            RuleSpans {
                span: keyword.to(end),
                keyword,
                conds: spans,
            },
        )
    }

    /// Duplicate keys, mixed families, ports/icmptype without their protocol, ICMP names.
    fn check_rule(
        &mut self,
        conds: &mut [Cond],
        spans: &[CondSpans],
        keys: &[(&str, Span)],
        broken: &[&str],
        pending: Vec<PendingIcmp<'_>>,
    ) {
        // the first place of each key (a handful of keys: a short list, linear overall)
        let mut firsts: Vec<(&str, Span)> = Vec::new();
        for (key, span) in keys {
            let first = firsts.iter().find(|(k, _)| k == key).map(|(_, s)| s);
            let Some(first) = first else {
                firsts.push((key, *span));
                continue;
            };
            {
                let d = Diagnostic::error(
                    *span,
                    format!("condition `{key}` given twice in one rule"),
                    "expected each condition key at most once per rule".to_string(),
                )
                .with_secondary(*first, format!("first `{key}` here"));
                self.push(d);
            }
        }
        let mut family: Option<(Family, Span)> = None;
        for (c, s) in conds.iter().zip(spans) {
            if let Test::Src(p) | Test::Dst(p) = &c.test {
                match family {
                    None => family = Some((p.family(), s.value)),
                    Some((f, first)) if f != p.family() => {
                        let d = Diagnostic::error(
                            s.value,
                            "IPv4 and IPv6 addresses mixed in one rule",
                            format!(
                                "expected an {} address like the first one",
                                if f == Family::V4 { "IPv4" } else { "IPv6" }
                            ),
                        )
                        .with_secondary(first, "first address here");
                        self.push(d);
                    }
                    Some(_) => {}
                }
            }
        }
        let proto_known = !broken.contains(&"proto");
        let has_ports = conds
            .iter()
            .any(|c| !c.negated && matches!(c.test, Test::Proto(p) if p.has_ports()));
        let has_icmp = conds
            .iter()
            .any(|c| !c.negated && c.test == Test::Proto(Proto::Icmp));
        for (c, s) in conds.iter().zip(spans) {
            let key = c.test.keyword();
            match c.test {
                Test::SrcPort(_) | Test::DstPort(_) if proto_known && !has_ports => self.error(
                    s.key,
                    format!(
                        "`{key}` needs a non-negated `proto tcp` or `proto udp` in the same rule"
                    ),
                    "ports are only available for tcp and udp",
                ),
                Test::IcmpType(_) if proto_known && !has_icmp => self.error(
                    s.key,
                    "`icmptype` needs a non-negated `proto icmp` in the same rule",
                    "icmptype is only available for `proto icmp`",
                ),
                _ => {}
            }
        }
        let family = family.map_or(Family::V4, |(f, _)| f);
        for p in pending {
            match icmp_type_name(p.token.text, family) {
                Some(n) => {
                    if let Some(c) = conds.get_mut(p.cond) {
                        c.test = Test::IcmpType(n);
                    }
                }
                None => {
                    let (fam, list) = match family {
                        Family::V4 => ("ICMPv4", ICMP4_NAMES),
                        Family::V6 => ("ICMPv6", ICMP6_NAMES),
                    };
                    let names: Vec<&str> = list.iter().map(|(n, _)| *n).collect();
                    self.error(
                        p.token.span,
                        format!("unknown {fam} type `{}`", p.token.text),
                        format!("expected 0..=255 or one of {}", names.join(", ")),
                    );
                }
            }
        }
    }
}

/// The longest message or label of a diagnostic, in bytes (then `...`).
pub const MAX_MESSAGE: usize = 300;

fn cut(s: &mut String) {
    if s.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
}

/// ICMPv4 type names and numbers.
pub const ICMP4_NAMES: &[(&str, u8)] = &[
    ("echo-reply", 0),
    ("destination-unreachable", 3),
    ("redirect", 5),
    ("echo-request", 8),
    ("time-exceeded", 11),
    ("parameter-problem", 12),
    ("timestamp-request", 13),
    ("timestamp-reply", 14),
];

/// ICMPv6 type names and numbers.
pub const ICMP6_NAMES: &[(&str, u8)] = &[
    ("destination-unreachable", 1),
    ("packet-too-big", 2),
    ("time-exceeded", 3),
    ("parameter-problem", 4),
    ("echo-request", 128),
    ("echo-reply", 129),
];

/// The ICMP type a name stands for in a rule of the given family.
pub fn icmp_type_name(name: &str, family: Family) -> Option<u8> {
    let list = match family {
        Family::V4 => ICMP4_NAMES,
        Family::V6 => ICMP6_NAMES,
    };
    list.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// A decimal number made of ASCII digits only; `u64::MAX` when it does not fit.
pub(crate) fn dec(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.parse::<u64>().unwrap_or(u64::MAX))
}

/// A routing table id: 1..=4294967295 except 253, 254, 255.
fn table_id(text: &str) -> Result<u32, ValueError> {
    const EXPECTED: &str = "expected a table id 1..=4294967295 except 253, 254, 255";
    let Some(n) = dec(text) else {
        return Err((
            format!("malformed routing table id `{text}`"),
            EXPECTED.to_string(),
        ));
    };
    match n {
        253 => Err((
            "routing table 253 is reserved (default)".to_string(),
            EXPECTED.to_string(),
        )),
        254 => Err((
            "routing table 254 is reserved (main)".to_string(),
            EXPECTED.to_string(),
        )),
        255 => Err((
            "routing table 255 is reserved (local)".to_string(),
            EXPECTED.to_string(),
        )),
        _ => match u32::try_from(n) {
            Ok(id) if id >= 1 => Ok(id),
            _ => Err((
                format!("routing table id {text} out of range"),
                EXPECTED.to_string(),
            )),
        },
    }
}

/// `tcp | udp | icmp | 0..=255`.
pub(crate) fn proto(text: &str) -> Result<Proto, ValueError> {
    const EXPECTED: &str = "expected `tcp`, `udp`, `icmp` or a protocol number 0..=255";
    match text {
        "tcp" => Ok(Proto::TCP),
        "udp" => Ok(Proto::UDP),
        "icmp" => Ok(Proto::Icmp),
        _ => match dec(text) {
            Some(n) => u8::try_from(n).map(Proto::Number).map_err(|_| {
                (
                    format!("protocol number {text} out of range"),
                    EXPECTED.to_string(),
                )
            }),
            None => Err((format!("unknown protocol `{text}`"), EXPECTED.to_string())),
        },
    }
}

/// An address with optional `/len` or (IPv4) `/netmask`; `true` when host bits were cleared.
pub(crate) fn prefix(text: &str) -> Result<(Prefix, bool), ValueError> {
    let (addr_s, mask_s) = match text.split_once('/') {
        Some((a, m)) => (a, Some(m)),
        None => (text, None),
    };
    let (addr, len) = if addr_s.contains(':') {
        const EXPECTED: &str = "expected an IPv6 address x::y with an optional /0..=128";
        let addr: Ipv6Addr = addr_s.parse().map_err(|_| {
            (
                format!("malformed IPv6 address `{addr_s}`"),
                EXPECTED.to_string(),
            )
        })?;
        let len = match mask_s {
            None => 128,
            Some(m) => match dec(m) {
                Some(n) if n <= 128 => n as u8,
                Some(_) => {
                    return Err((
                        format!("IPv6 prefix length /{m} out of range"),
                        EXPECTED.to_string(),
                    ))
                }
                None => {
                    return Err((
                        format!("malformed IPv6 prefix length `/{m}`"),
                        EXPECTED.to_string(),
                    ))
                }
            },
        };
        (IpAddr::V6(addr), len)
    } else {
        const EXPECTED: &str =
            "expected an IPv4 address a.b.c.d with an optional /0..=32 or /netmask";
        let addr: Ipv4Addr = addr_s.parse().map_err(|_| {
            (
                format!("malformed IPv4 address `{addr_s}`"),
                EXPECTED.to_string(),
            )
        })?;
        let len = match mask_s {
            None => 32,
            Some(m) => match dec(m) {
                Some(n) if n <= 32 => n as u8,
                Some(_) => {
                    return Err((
                        format!("IPv4 prefix length /{m} out of range"),
                        EXPECTED.to_string(),
                    ))
                }
                None => {
                    let mask: Ipv4Addr = m.parse().map_err(|_| {
                        (format!("malformed IPv4 mask `/{m}`"), EXPECTED.to_string())
                    })?;
                    let bits = u32::from(mask);
                    if bits.leading_ones() + bits.trailing_zeros() != 32 {
                        return Err((
                            format!("netmask {m} is not contiguous"),
                            "expected a contiguous netmask such as 255.255.255.0".to_string(),
                        ));
                    }
                    bits.leading_ones() as u8
                }
            },
        };
        (IpAddr::V4(addr), len)
    };
    let p = Prefix::new(addr, len);
    let cleared = match p {
        Prefix::V4 { addr: a, .. } => IpAddr::V4(a) != addr,
        Prefix::V6 { addr: a, .. } => IpAddr::V6(a) != addr,
    };
    Ok((p, cleared))
}

/// `p` or `lo:hi`, 0..=65535, `lo <= hi`.
pub(crate) fn ports(text: &str) -> Result<PortRange, ValueError> {
    const EXPECTED: &str = "expected a port 0..=65535 or a range lo:hi";
    let port = |s: &str| match dec(s) {
        Some(n) => {
            u16::try_from(n).map_err(|_| (format!("port {s} out of range"), EXPECTED.to_string()))
        }
        None => Err((
            format!("malformed port `{s}` in `{text}`"),
            EXPECTED.to_string(),
        )),
    };
    match text.split_once(':') {
        None => port(text).map(|p| PortRange { lo: p, hi: p }),
        Some((lo, hi)) => {
            let (lo, hi) = (port(lo)?, port(hi)?);
            if lo > hi {
                Err((
                    format!("empty port range `{text}`"),
                    "expected lo <= hi".to_string(),
                ))
            } else {
                Ok(PortRange { lo, hi })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_numbers() {
        assert_eq!(dec("0"), Some(0));
        assert_eq!(dec("007"), Some(7));
        assert_eq!(dec("99999999999999999999999"), Some(u64::MAX));
        for bad in ["", "+1", "-1", "0x10", "1 ", "١"] {
            assert_eq!(dec(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn table_ids() {
        assert_eq!(table_id("1"), Ok(1));
        assert_eq!(table_id("252"), Ok(252));
        assert_eq!(table_id("256"), Ok(256));
        assert_eq!(table_id("4294967295"), Ok(u32::MAX));
        for bad in ["0", "253", "254", "255", "4294967296", "x", "-5"] {
            assert!(table_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prefixes() {
        let v4 = |s: &str| prefix(s).map(|(p, c)| (p.to_string(), c));
        assert_eq!(v4("1.2.3.4"), Ok(("1.2.3.4".into(), false)));
        assert_eq!(v4("1.2.3.4/32"), Ok(("1.2.3.4".into(), false)));
        assert_eq!(v4("1.2.3.4/0"), Ok(("0.0.0.0/0".into(), true)));
        assert_eq!(
            v4("1.2.3.0/255.255.255.128"),
            Ok(("1.2.3.0/25".into(), false))
        );
        assert_eq!(v4("1.2.3.0/0.0.0.0"), Ok(("0.0.0.0/0".into(), true)));
        assert_eq!(v4("2001:db8::1/64"), Ok(("2001:db8::/64".into(), true)));
        assert_eq!(v4("::/0"), Ok(("::/0".into(), false)));
        assert_eq!(v4("::1"), Ok(("::1".into(), false)));
        for bad in [
            "1.2.3",
            "1.2.3.4/",
            "1.2.3.4/33",
            "1.2.3.4/0.255.0.0",
            "1.2.3.4/255.255.255.1",
            "01.2.3.4",
            "1.2.3.4/8/8",
            "::/129",
            "::/64/1",
            "1::2::3",
            "",
            "/8",
            "fe80::1%eth0",
        ] {
            assert!(prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn port_ranges() {
        assert_eq!(ports("0"), Ok(PortRange { lo: 0, hi: 0 }));
        assert_eq!(
            ports("65535"),
            Ok(PortRange {
                lo: 65535,
                hi: 65535
            })
        );
        assert_eq!(ports("5:5"), Ok(PortRange { lo: 5, hi: 5 }));
        assert_eq!(ports("0:65535"), Ok(PortRange { lo: 0, hi: 65535 }));
        for bad in [
            "", ":", "1:", ":2", "2:1", "65536", "1:65536", "1:2:3", "a", "-1",
        ] {
            assert!(ports(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn protocols() {
        assert_eq!(proto("tcp"), Ok(Proto::TCP));
        assert_eq!(proto("6"), Ok(Proto::TCP));
        assert_eq!(proto("17"), Ok(Proto::UDP));
        assert_eq!(proto("icmp"), Ok(Proto::Icmp));
        assert_eq!(proto("1"), Ok(Proto::Number(1)));
        assert_eq!(proto("255"), Ok(Proto::Number(255)));
        for bad in ["256", "TCP", "icmpv6", ""] {
            assert!(proto(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn icmp_names() {
        assert_eq!(icmp_type_name("echo-request", Family::V4), Some(8));
        assert_eq!(icmp_type_name("echo-request", Family::V6), Some(128));
        assert_eq!(
            icmp_type_name("destination-unreachable", Family::V6),
            Some(1)
        );
        assert_eq!(icmp_type_name("redirect", Family::V6), None);
        assert_eq!(icmp_type_name("packet-too-big", Family::V4), None);
        assert_eq!(icmp_type_name("timestamp-reply", Family::V4), Some(14));
    }
}
