//! The canonical printer: a [`FlowsFile`] back to source, so that `parse(print(x)) == x`.
//!
//! One block per item: `flow NAME POLICY` (the policy always written, `skip` included), then
//! each rule on its own indented line with canonical spellings (`tcp` for 6, `/24` for a
//! netmask, a bare address for a host prefix, ICMP types as numbers). Items are separated by a
//! blank line.

use std::fmt::Write;

use super::ast::{Cond, Flow, FlowsFile, Rule, Test};

/// The canonical text of a whole file.
pub fn print(file: &FlowsFile) -> String {
    let mut out = String::new();
    for (i, flow) in file.items.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        print_flow(&mut out, flow);
    }
    out
}

/// The canonical text of one item (header line and rule lines, each ending in a newline).
pub fn print_flow(out: &mut String, flow: &Flow) {
    let _ = writeln!(out, "{} {} {}", flow.kind.keyword(), flow.name, flow.policy);
    for rule in &flow.rules {
        let _ = writeln!(out, "    {}", rule_text(rule));
    }
}

/// One rule on one line: `match proto tcp dstport 22`.
pub fn rule_text(rule: &Rule) -> String {
    let mut s = rule.kind.keyword().to_string();
    for c in &rule.conds {
        s.push(' ');
        s.push_str(&cond_text(c));
    }
    s
}

/// One condition: `not src 10.0.0.0/8`.
pub fn cond_text(c: &Cond) -> String {
    let not = if c.negated { "not " } else { "" };
    let key = c.test.keyword();
    match &c.test {
        Test::Iface(n) => format!("{not}{key} {n}"),
        Test::Proto(p) => format!("{not}{key} {p}"),
        Test::Src(a) | Test::Dst(a) => format!("{not}{key} {a}"),
        Test::SrcPort(r) | Test::DstPort(r) => format!("{not}{key} {r}"),
        Test::IcmpType(t) => format!("{not}{key} {t}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::parse;

    #[test]
    fn canonical_spellings() {
        let f = match parse("flow a match proto 6 src 10.1.2.0/255.255.255.0 dstport 1:2\noutflow b table 7 ignore proto icmp icmptype echo-request") {
            Ok(p) => p.file,
            Err(e) => panic!("{e:?}"),
        };
        assert_eq!(
            print(&f),
            "flow a skip\n    match proto tcp src 10.1.2.0/24 dstport 1:2\n\noutflow b table 7\n    ignore proto icmp icmptype 8\n"
        );
    }
}
