//! Warnings about a flows file that loads: rules and flows that can never take a packet.
//!
//! Every check here is sound (it never warns about something that can happen) and simple: it
//! compares conditions key by key, so it misses some dead rules but never invents one.

use super::ast::{
    Cond, Flow, FlowsFile, ListKind, Policy, PortRange, Prefix, Rule, RuleKind, Test,
};
use super::diag::{line_of, Diagnostic};
use super::parser::Spans;
use super::print::cond_text;

/// The warnings of a parsed file (`spans` parallel to `file`, `src` for line numbers).
pub fn lint(file: &FlowsFile, spans: &Spans, src: &str) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for (flow, fs) in file.items.iter().zip(&spans.items) {
        if flow.rules.is_empty() {
            out.push(Diagnostic::warning(
                fs.name,
                format!(
                    "{} `{}` has no rules and never matches",
                    flow.kind.keyword(),
                    flow.name
                ),
                "expected at least one `match` rule",
            ));
            continue;
        }
        for (k, (rule, rs)) in flow.rules.iter().zip(&fs.rules).enumerate() {
            if let Some((c, cs)) = rule
                .conds
                .iter()
                .zip(&rs.conds)
                .find(|(c, _)| never_holds(c))
            {
                out.push(Diagnostic::warning(
                    cs.span,
                    format!(
                        "rule {} of `{}` can never match: `{}` never holds",
                        k + 1,
                        flow.name,
                        cond_text(c)
                    ),
                    "this condition never holds",
                ));
                continue;
            }
            let earlier = flow.rules[..k].iter().position(|e| rule_implies(rule, e));
            if let Some(i) = earlier {
                let es = &fs.rules[i];
                out.push(
                    Diagnostic::warning(
                        rs.keyword,
                        format!(
                            "rule {} of `{}` can never match: rule {} (line {}) takes every packet it could match",
                            k + 1,
                            flow.name,
                            i + 1,
                            line_of(src, es.keyword.start)
                        ),
                        format!("shadowed by rule {}", i + 1),
                    )
                    .with_secondary(es.span, "this rule takes those packets first"),
                );
            }
        }
        if flow.policy != Policy::Skip && flow.rules.iter().all(|r| r.kind == RuleKind::Ignore) {
            out.push(Diagnostic::warning(
                fs.name,
                format!(
                    "{} `{}` has only `ignore` rules and never decides",
                    flow.kind.keyword(),
                    flow.name
                ),
                "expected a `match` rule",
            ));
        }
    }
    for kind in [ListKind::Flow, ListKind::Outflow] {
        dead_flows(file, spans, src, kind, &mut out);
    }
    out.sort_by_key(|d| (d.span.start, d.span.end));
    out
}

/// Flows that can never decide because earlier flows of the list decide all their packets.
fn dead_flows(
    file: &FlowsFile,
    spans: &Spans,
    src: &str,
    kind: ListKind,
    out: &mut Vec<Diagnostic>,
) {
    let list: Vec<(usize, &Flow)> = file
        .items
        .iter()
        .map(|f| f.as_ref())
        .enumerate()
        .filter(|(_, f)| f.kind == kind && f.policy != Policy::Skip)
        .collect();
    for (n, &(fi, flow)) in list.iter().enumerate() {
        let matches: Vec<&Rule> = flow
            .rules
            .iter()
            .filter(|r| r.kind == RuleKind::Match && !r.conds.iter().any(never_holds))
            .collect();
        if matches.is_empty() {
            continue;
        }
        // For each match rule, the first earlier flow that decides every packet it holds for.
        let mut by: Vec<usize> = Vec::new();
        let all_covered = matches.iter().all(|m| {
            let cover = list[..n]
                .iter()
                .find(|(_, e)| deciding_rules(e).any(|r| rule_implies(m, r)));
            if let Some(&(ei, _)) = cover {
                if !by.contains(&ei) {
                    by.push(ei);
                }
            }
            cover.is_some()
        });
        if !all_covered {
            continue;
        }
        let Some(fs) = spans.items.get(fi) else {
            continue;
        };
        let names: Vec<String> = by
            .iter()
            .filter_map(|&ei| {
                let s = spans.items.get(ei)?;
                Some(format!(
                    "`{}` (line {})",
                    file.items[ei].name,
                    line_of(src, s.name.start)
                ))
            })
            .collect();
        let (noun, verb) = if by.len() == 1 {
            ("flow", "decides")
        } else {
            ("flows", "decide")
        };
        let mut d = Diagnostic::warning(
            fs.name,
            format!(
                "{} `{}` can never decide: earlier {noun} {} {verb} every packet it could match",
                kind.keyword(),
                flow.name,
                names.join(", ")
            ),
            "never reached",
        );
        for &ei in &by {
            if let Some(s) = spans.items.get(ei) {
                d = d.with_secondary(s.name, format!("`{}` decides first", file.items[ei].name));
            }
        }
        out.push(d);
    }
}

/// The match rules of a flow that decide whenever they hold: those before its first ignore.
fn deciding_rules(flow: &Flow) -> impl Iterator<Item = &Rule> {
    flow.rules.iter().take_while(|r| r.kind == RuleKind::Match)
}

/// Whether a condition holds for no packet at all.
pub fn never_holds(c: &Cond) -> bool {
    c.negated
        && match &c.test {
            Test::Src(p) | Test::Dst(p) => p.len() == 0,
            Test::SrcPort(r) | Test::DstPort(r) => r.lo == 0 && r.hi == u16::MAX,
            _ => false,
        }
}

/// Whether every packet for which rule `a` holds also makes rule `b` hold.
pub fn rule_implies(a: &Rule, b: &Rule) -> bool {
    b.conds
        .iter()
        .all(|cb| a.conds.iter().any(|ca| implies(ca, cb)))
}

/// Whether every packet for which `a` holds also makes `b` hold (sound, not complete).
pub fn implies(a: &Cond, b: &Cond) -> bool {
    if a == b {
        return true;
    }
    if a.negated != b.negated {
        return false;
    }
    // Not negated: a's set inside b's. Negated: the complement, so b's set inside a's.
    let (inner, outer) = if a.negated {
        (&b.test, &a.test)
    } else {
        (&a.test, &b.test)
    };
    match (inner, outer) {
        (Test::Src(i), Test::Src(o)) | (Test::Dst(i), Test::Dst(o)) => prefix_within(i, o),
        (Test::SrcPort(i), Test::SrcPort(o)) | (Test::DstPort(i), Test::DstPort(o)) => {
            range_within(i, o)
        }
        _ => false,
    }
}

fn prefix_within(inner: &Prefix, outer: &Prefix) -> bool {
    let addr = match inner {
        Prefix::V4 { addr, .. } => std::net::IpAddr::V4(*addr),
        Prefix::V6 { addr, .. } => std::net::IpAddr::V6(*addr),
    };
    inner.family() == outer.family() && outer.len() <= inner.len() && outer.contains(addr)
}

fn range_within(inner: &PortRange, outer: &PortRange) -> bool {
    outer.lo <= inner.lo && inner.hi <= outer.hi
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::parse;

    fn rule(conds: &str) -> Rule {
        match parse(&format!("flow t permit match {conds}")) {
            Ok(p) => p.file.items[0].rules[0].clone(),
            Err(e) => panic!("{e:?}"),
        }
    }

    #[test]
    fn implication_between_rules() {
        let yes = [
            ("proto tcp dstport 22", ""),
            ("proto tcp dstport 22", "proto tcp"),
            ("src 10.1.0.0/16 iface a", "src 10.0.0.0/8"),
            ("not src 10.0.0.0/8", "not src 10.1.0.0/16"),
            ("proto udp srcport 5:6", "proto 17 srcport 0:10"),
            ("proto tcp not dstport 0:100", "proto tcp not dstport 10:20"),
            ("dst ::1", "dst ::/0"),
        ];
        for (a, b) in yes {
            assert!(rule_implies(&rule(a), &rule(b)), "{a} => {b}");
        }
        let no = [
            ("", "proto tcp"),
            ("src 10.0.0.0/8", "src 10.1.0.0/16"),
            ("src 10.0.0.0/8", "src ::/0"),
            ("not src 10.1.0.0/16", "not src 10.0.0.0/8"),
            ("proto 1", "proto icmp"),
            ("proto tcp dstport 0:100", "proto tcp dstport 10:20"),
        ];
        for (a, b) in no {
            assert!(!rule_implies(&rule(a), &rule(b)), "{a} =/=> {b}");
        }
    }

    #[test]
    fn conditions_that_never_hold() {
        let never = |c: &str| rule(c).conds.iter().any(never_holds);
        assert!(never("not src 0.0.0.0/0"));
        assert!(never("not dst ::/0"));
        assert!(never("proto udp not srcport 0:65535"));
        assert!(!never("src 0.0.0.0/0"));
        assert!(!never("proto udp not srcport 1:65535"));
        assert!(!never("not proto tcp"));
    }
}
