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
        // earlier rules of this flow, indexed (see `Implied`): linear for the usual shapes
        let mut earlier_rules = Implied::default();
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
                earlier_rules.add(k, rule);
                continue;
            }
            let earlier = earlier_rules.first_implied_by(rule);
            earlier_rules.add(k, rule);
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
    // the deciding rules of the flows before the current one, indexed by list position
    let mut earlier = Implied::default();
    for (n, &(fi, flow)) in list.iter().enumerate() {
        if n > 0 {
            for r in deciding_rules(list[n - 1].1) {
                earlier.add(n - 1, r);
            }
        }
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
            let cover = earlier.first_implied_by(m).map(|e| &list[e]);
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

/// Rules indexed by what [`rule_implies`] needs of them, so that "the first of these rules
/// that rule `m` implies" is found without comparing `m` with every one (the lint was
/// quadratic: 2.9 s at 10K one-rule flows).
///
/// `rule_implies(m, r)` needs, for each condition of `r`, a condition of `m` with the same key
/// and negation (the parser allows one condition per key in a rule): `r`'s *signature* (its
/// set of key/negation pairs) is a subset of `m`'s. Keys other than addresses and ports
/// (`iface`, `proto`, `icmptype`) imply only when equal; a non-negated `src` (else `dst`)
/// prefix of `r` must contain `m`'s, so it is one of `m`'s prefix's ancestors. Rules are
/// grouped by (signature, those equal values, that prefix); a query visits the groups of
/// the subsets of `m`'s signature that exist, at the prefix lengths that exist in them, and
/// checks `rule_implies` on their rules in order. Rules with a repeated key (not from the
/// parser) go to a list checked always.
#[derive(Debug, Default)]
struct Implied<'a> {
    groups: std::collections::HashMap<GroupKey, Vec<(usize, &'a Rule)>>,
    /// Per signature: the address prefix lengths keyed (the key's address lane).
    sigs: std::collections::HashMap<u16, SigInfo>,
    irregular: Vec<(usize, &'a Rule)>,
}

#[derive(Debug, Default)]
struct SigInfo {
    lens: std::collections::BTreeSet<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct GroupKey {
    sig: u16,
    /// `iface`, `proto`, `icmptype` conditions, in key order.
    equal: Vec<Cond>,
    /// The keyed prefix: (src?, v6?, network, length).
    prefix: Option<(bool, bool, u128, u8)>,
}

fn key_bit(c: &Cond) -> u16 {
    let k = match c.test {
        Test::Iface(_) => 0,
        Test::Proto(_) => 1,
        Test::Src(_) => 2,
        Test::Dst(_) => 3,
        Test::SrcPort(_) => 4,
        Test::DstPort(_) => 5,
        Test::IcmpType(_) => 6,
    };
    1 << (k * 2 + u16::from(c.negated))
}

/// The signature of a rule, `None` if a key/negation pair repeats.
fn signature(r: &Rule) -> Option<u16> {
    let mut sig = 0u16;
    for c in &r.conds {
        let b = key_bit(c);
        if sig & b != 0 {
            return None;
        }
        sig |= b;
    }
    Some(sig)
}

const SRC_BIT: u16 = 1 << 4;
const DST_BIT: u16 = 1 << 6;

fn is_equality(t: &Test) -> bool {
    matches!(t, Test::Iface(_) | Test::Proto(_) | Test::IcmpType(_))
}

/// The keyed address lane of a signature: non-negated src, else non-negated dst.
fn keyed_lane(sig: u16) -> Option<bool> {
    if sig & SRC_BIT != 0 {
        Some(true)
    } else if sig & DST_BIT != 0 {
        Some(false)
    } else {
        None
    }
}

fn prefix_parts(p: &Prefix) -> (bool, u128, u8) {
    match p {
        Prefix::V4 { addr, len } => (false, u128::from(u32::from(*addr)), *len),
        Prefix::V6 { addr, len } => (true, u128::from(*addr), *len),
    }
}

/// `p`'s network cut to `len` bits.
fn ancestor(v6: bool, net: u128, len: u8) -> u128 {
    let width = if v6 { 128 } else { 32 };
    if len == 0 {
        0
    } else {
        let host = width - u32::from(len);
        if host >= 128 {
            0
        } else {
            net >> host << host
        }
    }
}

fn keyed_prefix(r: &Rule, src: bool) -> Option<&Prefix> {
    r.conds
        .iter()
        .find_map(|c| match (&c.test, c.negated, src) {
            (Test::Src(p), false, true) | (Test::Dst(p), false, false) => Some(p),
            _ => None,
        })
}

impl<'a> Implied<'a> {
    /// Index rule `r` at position `at` (positions must be added in increasing order).
    fn add(&mut self, at: usize, r: &'a Rule) {
        let Some(sig) = signature(r) else {
            self.irregular.push((at, r));
            return;
        };
        let mut equal: Vec<Cond> = r
            .conds
            .iter()
            .filter(|c| is_equality(&c.test))
            .cloned()
            .collect();
        equal.sort_by_key(key_bit);
        let prefix = keyed_lane(sig).and_then(|src| {
            let (v6, net, len) = prefix_parts(keyed_prefix(r, src)?);
            Some((src, v6, ancestor(v6, net, len), len))
        });
        let info = self.sigs.entry(sig).or_default();
        if let Some((_, _, _, len)) = prefix {
            info.lens.insert(len);
        }
        self.groups
            .entry(GroupKey { sig, equal, prefix })
            .or_default()
            .push((at, r));
    }

    /// The position of the first indexed rule that `m` implies.
    fn first_implied_by(&self, m: &Rule) -> Option<usize> {
        let mut best: Option<usize> = None;
        let mut consider = |list: &[(usize, &Rule)]| {
            for &(at, r) in list {
                if best.is_some_and(|b| at >= b) {
                    break;
                }
                if rule_implies(m, r) {
                    best = Some(at);
                    break;
                }
            }
        };
        consider(&self.irregular);
        let Some(msig) = signature(m) else {
            // a repeated key in `m`: compare with everything (not from the parser)
            let mut all: Vec<(usize, &Rule)> = self.groups.values().flatten().copied().collect();
            all.sort_by_key(|(at, _)| *at);
            consider(&all);
            return best;
        };
        for (&sig, info) in &self.sigs {
            if sig & !msig != 0 {
                continue;
            }
            let mut equal: Vec<Cond> = m
                .conds
                .iter()
                .filter(|c| is_equality(&c.test) && key_bit(c) & sig != 0)
                .cloned()
                .collect();
            equal.sort_by_key(key_bit);
            match keyed_lane(sig) {
                None => {
                    let key = GroupKey {
                        sig,
                        equal,
                        prefix: None,
                    };
                    if let Some(g) = self.groups.get(&key) {
                        consider(g);
                    }
                }
                Some(src) => {
                    let Some(p) = keyed_prefix(m, src) else {
                        continue;
                    };
                    let (v6, net, mlen) = prefix_parts(p);
                    for &len in info.lens.range(..=mlen) {
                        let key = GroupKey {
                            sig,
                            equal: equal.clone(),
                            prefix: Some((src, v6, ancestor(v6, net, len), len)),
                        };
                        if let Some(g) = self.groups.get(&key) {
                            consider(g);
                        }
                    }
                }
            }
        }
        best
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

    /// The index answers what comparing with every earlier rule answers.
    #[test]
    fn index_equals_linear_search() {
        let conds = [
            "",
            "proto tcp",
            "proto udp",
            "not proto tcp",
            "iface eth0",
            "not iface eth0",
            "src 10.0.0.0/8",
            "src 10.1.0.0/16",
            "src 10.1.2.0/24",
            "src 0.0.0.0/0",
            "not src 10.0.0.0/8",
            "dst 192.168.0.0/16",
            "dst 192.168.1.1",
            "dst 192.0.0.0/2",
            "src 10.1.2.3",
            "dstport 22",
            "dstport 0:1023",
            "srcport 1024:65535",
            "dst 10.1.2.3",
            "not dstport 80",
        ];
        fn keys(c: &str) -> &str {
            c.split_whitespace().find(|w| *w != "not").unwrap_or("")
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..40 {
            let rules: Vec<Rule> = (0..120)
                .map(|_| {
                    let mut text = String::new();
                    let mut used = Vec::new();
                    for _ in 0..(next() % 4) {
                        let c = conds[(next() % conds.len() as u64) as usize];
                        let k = keys(c);
                        // ports need tcp/udp; keep one condition per key
                        if c.is_empty() || used.contains(&k) || k.ends_with("port") {
                            continue;
                        }
                        used.push(k);
                        text.push(' ');
                        text.push_str(c);
                    }
                    if next() % 3 == 0 && !used.contains(&"proto") {
                        let c = conds[15 + (next() % 3) as usize];
                        text.push_str(" proto tcp ");
                        text.push_str(c);
                    }
                    rule(text.trim())
                })
                .collect();
            let mut idx = Implied::default();
            for (k, r) in rules.iter().enumerate() {
                let want = rules[..k].iter().position(|e| rule_implies(r, e));
                assert_eq!(idx.first_implied_by(r), want, "rule {k}: {r:?}");
                idx.add(k, r);
            }
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
