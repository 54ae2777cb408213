//! ClassBench rules as an nftables ruleset, for the kernel comparison: the same rules the
//! flowgate side classifies with (`classbench_flows`), on a Linux router's forward hook.
//!
//! Two forms, both ending in `policy drop` as the flows file ends in a deny:
//!
//! - **linear**: one rule per ClassBench rule, in order (`ip saddr P ip daddr Q meta l4proto
//!   tcp th sport A-B th dport C-D accept`), what a naive translation gives; the kernel
//!   evaluates rules one by one until the first match.
//! - **sets**: the idiomatic form: a verdict map on the protocol sends TCP and UDP to a chain
//!   with one lookup in a concatenated interval map `saddr . daddr . l4proto . sport . dport`,
//!   and everything else to a map `saddr . daddr . l4proto`. Map lookups do not keep rule
//!   order, which is faithful only while overlapping rules agree on the verdict: true here,
//!   every ClassBench rule maps to `accept` as the flows side permits every rule. The
//!   kernel's interval maps refuse an element whose first or last point falls inside an
//!   earlier element: those rules follow the lookups as linear rules ([`Converted::fallback`]).
//!   The maps are filled by `add element` commands of [`ELEMENTS_PER_CHUNK`] elements, one
//!   `nft -f` call each ([`Converted::chunks`]).
//!
//! As in `classbench_flows`: a wildcard-protocol rule with ports matches TCP and UDP with
//! those ports (`meta l4proto { tcp, udp }`); a rule for another protocol with ports keeps the
//! protocol and drops the ports (ports mean nothing there), counted in [`Converted::approximated`].

use std::collections::HashSet;
use std::fmt::Write;
use std::net::Ipv4Addr;

use flowgate_dataplane::classify::classbench::CbRule;

/// The two forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Linear,
    Sets,
}

impl std::str::FromStr for Form {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "linear" => Ok(Form::Linear),
            "sets" => Ok(Form::Sets),
            _ => Err(format!("nftables form {s:?}: expected linear or sets")),
        }
    }
}

/// A converted ruleset.
#[derive(Debug, Clone)]
pub struct Converted {
    /// The `nft -f` input: the table, its chains and (empty) maps.
    pub text: String,
    /// `add element` commands filling the maps, each for its own `nft -f` call, in order.
    pub chunks: Vec<String>,
    /// Rules (linear) or map elements (sets) written.
    pub entries: usize,
    /// Rules written as linear rules after the map lookups, because the interval maps refuse
    /// an element overlapping an earlier one that way (sets form).
    pub fallback: usize,
    /// Rules whose ports were dropped (another protocol than TCP/UDP with ports).
    pub approximated: usize,
}

fn prefix((addr, len): (u32, u8)) -> String {
    let len = len.min(32);
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    format!("{}/{len}", Ipv4Addr::from(addr & mask))
}

fn range((lo, hi): (u16, u16)) -> String {
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}-{hi}")
    }
}

fn any_port(r: (u16, u16)) -> bool {
    r == (0, 65535)
}

/// The protocol of a rule: `None` for any.
fn proto(r: &CbRule) -> Option<u8> {
    (r.proto.1 == 0xff).then_some(r.proto.0)
}

fn has_ports(r: &CbRule) -> bool {
    !any_port(r.sport) || !any_port(r.dport)
}

/// Converts `rules` into an nftables table named `table` of the given form.
pub fn convert(rules: &[CbRule], form: Form, table: &str) -> Converted {
    match form {
        Form::Linear => linear(rules, table),
        Form::Sets => sets(rules, table),
    }
}

/// One ClassBench rule as an nftables rule; true when its ports were dropped.
fn linear_rule(r: &CbRule) -> (String, bool) {
    let mut m = Vec::new();
    let mut approximated = false;
    if r.src.1 > 0 {
        m.push(format!("ip saddr {}", prefix(r.src)));
    }
    if r.dst.1 > 0 {
        m.push(format!("ip daddr {}", prefix(r.dst)));
    }
    let ports = has_ports(r);
    match proto(r) {
        Some(p @ (6 | 17)) => m.push(format!("meta l4proto {p}")),
        Some(p) => {
            m.push(format!("meta l4proto {p}"));
            approximated = ports;
        }
        None if ports => m.push("meta l4proto { 6, 17 }".into()),
        None => {}
    }
    if ports && matches!(proto(r), None | Some(6 | 17)) {
        if !any_port(r.sport) {
            m.push(format!("th sport {}", range(r.sport)));
        }
        if !any_port(r.dport) {
            m.push(format!("th dport {}", range(r.dport)));
        }
    }
    m.push("accept".into());
    (m.join(" "), approximated)
}

fn linear(rules: &[CbRule], table: &str) -> Converted {
    let mut body = String::new();
    let mut approximated = 0;
    for r in rules {
        let (rule, approx) = linear_rule(r);
        approximated += usize::from(approx);
        let _ = writeln!(body, "\t\t{rule}");
    }
    let text = format!(
        "table ip {table} {{\n\tchain forward {{\n\t\ttype filter hook forward priority filter; policy drop;\n{body}\t}}\n}}\n"
    );
    Converted {
        text,
        chunks: Vec::new(),
        entries: rules.len(),
        fallback: 0,
        approximated,
    }
}

/// Elements added per `nft -f` call: one transaction of a 10K-element interval map is more
/// than the netlink socket takes ("No buffer space available").
pub const ELEMENTS_PER_CHUNK: usize = 1000;

/// An element of an interval map as a box: (low, high) per field.
type Box = Vec<(u32, u32)>;

fn contains(b: &Box, point: &[u32]) -> bool {
    b.iter()
        .zip(point)
        .all(|(&(lo, hi), &p)| lo <= p && p <= hi)
}

/// The interval maps refuse (EEXIST) an element whose first or last point lies inside an
/// element already there (the kernel's pipapo set backend). Such rules are kept in order and
/// written as linear rules after the map lookups instead: with every verdict `accept`, that
/// is the same ruleset.
fn conflicts(accepted: &[Box], b: &Box) -> bool {
    let first: Vec<u32> = b.iter().map(|r| r.0).collect();
    let last: Vec<u32> = b.iter().map(|r| r.1).collect();
    accepted
        .iter()
        .any(|a| contains(a, &first) || contains(a, &last))
}

fn bounds((addr, len): (u32, u8)) -> (u32, u32) {
    let len = len.min(32);
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    (addr & mask, addr | !mask)
}

fn sets(rules: &[CbRule], table: &str) -> Converted {
    let (mut l4, mut l3) = (Vec::new(), Vec::new());
    let (mut boxes4, mut boxes3): (Vec<Box>, Vec<Box>) = (Vec::new(), Vec::new());
    let (mut seen4, mut seen3) = (HashSet::new(), HashSet::new());
    let mut fallback: Vec<CbRule> = Vec::new();
    let mut approximated = 0;
    for r in rules {
        let (s, d) = (prefix(r.src), prefix(r.dst));
        let p = proto(r);
        let proto_box = p.map_or((0, 255), |p| (u32::from(p), u32::from(p)));
        let mut needs_fallback = false;
        if matches!(p, None | Some(6 | 17)) {
            let pr = p.map_or("0-255".to_string(), |p| p.to_string());
            let e = format!("{s} . {d} . {pr} . {} . {}", range(r.sport), range(r.dport));
            let b: Box = vec![
                bounds(r.src),
                bounds(r.dst),
                proto_box,
                (r.sport.0.into(), r.sport.1.into()),
                (r.dport.0.into(), r.dport.1.into()),
            ];
            if !seen4.contains(&e) {
                if conflicts(&boxes4, &b) {
                    needs_fallback = true;
                } else {
                    seen4.insert(e.clone());
                    boxes4.push(b);
                    l4.push(e);
                }
            }
        }
        // what non-TCP/UDP packets can match: wildcard-protocol rules without ports, and
        // other protocols (ports dropped)
        let other = match p {
            None => (!has_ports(r)).then(|| "0-255".to_string()),
            Some(6 | 17) => None,
            Some(p) => {
                if has_ports(r) {
                    approximated += 1;
                }
                Some(p.to_string())
            }
        };
        if let Some(pr) = other {
            let e = format!("{s} . {d} . {pr}");
            let b: Box = vec![bounds(r.src), bounds(r.dst), proto_box];
            if !seen3.contains(&e) {
                if conflicts(&boxes3, &b) {
                    needs_fallback = true;
                } else {
                    seen3.insert(e.clone());
                    boxes3.push(b);
                    l3.push(e);
                }
            }
        }
        if needs_fallback {
            fallback.push(*r);
        }
    }
    let mut fallback_rules = String::new();
    for r in &fallback {
        let _ = writeln!(fallback_rules, "\t\t{}", linear_rule(r).0);
    }
    let text = format!(
        "table ip {table} {{\n\
         \tmap ports {{\n\t\ttype ipv4_addr . ipv4_addr . inet_proto . inet_service . inet_service : verdict\n\t\tflags interval\n\t}}\n\
         \tmap addrs {{\n\t\ttype ipv4_addr . ipv4_addr . inet_proto : verdict\n\t\tflags interval\n\t}}\n\
         \tchain forward {{\n\t\ttype filter hook forward priority filter; policy drop;\n\
         \t\tmeta l4proto vmap {{ tcp : jump l4, udp : jump l4 }}\n\
         \t\tip saddr . ip daddr . meta l4proto vmap @addrs\n{fallback_rules}\t}}\n\
         \tchain l4 {{\n\t\tip saddr . ip daddr . meta l4proto . th sport . th dport vmap @ports\n\t}}\n}}\n",
    );
    let mut chunks = Vec::new();
    for (map, elems) in [("ports", &l4), ("addrs", &l3)] {
        for c in elems.chunks(ELEMENTS_PER_CHUNK) {
            chunks.push(format!(
                "add element ip {table} {map} {{ {} }}\n",
                c.iter()
                    .map(|e| format!("{e} : accept"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    Converted {
        text,
        chunks,
        entries: l4.len() + l3.len(),
        fallback: fallback.len(),
        approximated,
    }
}
