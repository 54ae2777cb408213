//! The reference interpreter: `decide` and `holds`, written to mirror flows.md line by line.
//!
//! Slow and obviously correct. It is the oracle the compiled classifier is tested against;
//! nothing on the packet path calls it.

use std::fmt;

use super::ast::{Cond, Flow, Policy, RuleKind, Test};
use super::packet::Packet;

/// The verdict of a list: what happens to the packet.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Action {
    Permit,
    Deny,
    Director(String),
    Table(u32),
}

impl Action {
    /// The action of a deciding policy (`skip` never decides).
    pub fn of_policy(policy: &Policy) -> Option<Action> {
        match policy {
            Policy::Permit => Some(Action::Permit),
            Policy::Deny => Some(Action::Deny),
            Policy::Skip => None,
            Policy::Director(d) => Some(Action::Director(d.clone())),
            Policy::Table(t) => Some(Action::Table(*t)),
        }
    }
}

impl fmt::Display for Action {
    /// The verdict word of a `flowgate classify` line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Permit => f.write_str("permit"),
            Action::Deny => f.write_str("deny"),
            Action::Director(d) => write!(f, "director:{d}"),
            Action::Table(t) => write!(f, "table:{t}"),
        }
    }
}

/// The outcome of `decide`: the action and, unless the default decided, the deciding flow and
/// the 1-based index of the deciding `match` among all rules of that flow.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Decision {
    pub action: Action,
    pub by: Option<(String, usize)>,
}

impl fmt::Display for Decision {
    /// Exactly the `flowgate classify` verdict line (without the newline).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.by {
            Some((flow, rule)) => write!(f, "{} {} {}", self.action, flow, rule),
            None => write!(f, "{} - -", self.action),
        }
    }
}

/// flows.md `decide(list, pkt)`.
pub fn decide<'a>(
    list: impl IntoIterator<Item = &'a Flow>,
    pkt: &Packet,
    default_policy: &Action,
) -> Decision {
    for flow in list {
        // if flow.policy == skip: continue
        let Some(action) = Action::of_policy(&flow.policy) else {
            continue;
        };
        for (i, rule) in flow.rules.iter().enumerate() {
            let i = i + 1;
            if rule.conds.iter().all(|c| holds(c, pkt)) {
                match rule.kind {
                    RuleKind::Match => {
                        return Decision {
                            action,
                            by: Some((flow.name.clone(), i)),
                        };
                    }
                    RuleKind::Ignore => break,
                }
            }
        }
    }
    Decision {
        action: default_policy.clone(),
        by: None,
    }
}

/// flows.md `holds(c, pkt)`, the table row by row.
pub fn holds(cond: &Cond, pkt: &Packet) -> bool {
    let not = cond.negated;
    match &cond.test {
        // port is N / port is not N
        Test::Iface(name) => (pkt.iface == *name) != not,
        // protocol equals P / differs
        Test::Proto(p) => (pkt.proto == p.number_for(pkt.family())) != not,
        // packet is of A's family and the address is inside / outside A
        Test::Src(a) => a.family() == pkt.family() && a.contains(pkt.src) != not,
        Test::Dst(a) => a.family() == pkt.family() && a.contains(pkt.dst) != not,
        // packet carries L4 ports and the port is inside / outside R
        Test::SrcPort(r) => pkt.ports().is_some_and(|(s, _)| r.contains(s) != not),
        Test::DstPort(r) => pkt.ports().is_some_and(|(_, d)| r.contains(d) != not),
        // packet is ICMP of its family, not a non-first fragment, type is / is not T
        Test::IcmpType(t) => pkt.icmp_type().is_some_and(|ty| (ty == *t) != not),
    }
}
