//! The flows language as data: what a flows file means, without source positions.
//!
//! Two files that differ only in layout, comments or spelling (`proto 6` vs `proto tcp`,
//! `/255.255.255.0` vs `/24`) parse to equal values. Source positions live beside the tree
//! (see `parse`), so `parse(print(x)) == x` compares meaning only.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// A whole flows file: flows and outflows in file order (they share one name space).
///
/// Items are shared (`Arc`), so a file that differs from another by one item (an incremental
/// update) is built by copying pointers, not rules.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FlowsFile {
    pub items: Vec<Arc<Flow>>,
}

impl FlowsFile {
    /// The ingress list (`flow` items), in file order.
    pub fn flows(&self) -> impl Iterator<Item = &Flow> {
        self.list(ListKind::Flow)
    }

    /// The egress list (`outflow` items), in file order.
    pub fn outflows(&self) -> impl Iterator<Item = &Flow> {
        self.list(ListKind::Outflow)
    }

    /// The items of one list, in file order.
    pub fn list(&self, kind: ListKind) -> impl Iterator<Item = &Flow> {
        self.items
            .iter()
            .map(|f| f.as_ref())
            .filter(move |f| f.kind == kind)
    }

    /// A file of these items (in file order).
    pub fn from_flows(items: impl IntoIterator<Item = Flow>) -> FlowsFile {
        FlowsFile {
            items: items.into_iter().map(Arc::new).collect(),
        }
    }
}

/// Which list an item belongs to: ingress (`flow`) or egress (`outflow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListKind {
    Flow,
    Outflow,
}

impl ListKind {
    pub fn keyword(self) -> &'static str {
        match self {
            ListKind::Flow => "flow",
            ListKind::Outflow => "outflow",
        }
    }
}

/// One `flow` or `outflow` item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    pub kind: ListKind,
    pub name: String,
    pub policy: Policy,
    pub rules: Vec<Rule>,
}

/// What a flow does with the packets its `match` rules take.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Policy {
    Permit,
    Deny,
    /// The flow is disabled (also the policy of a flow written without one).
    Skip,
    Director(String),
    Table(u32),
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Policy::Permit => f.write_str("permit"),
            Policy::Deny => f.write_str("deny"),
            Policy::Skip => f.write_str("skip"),
            Policy::Director(d) => write!(f, "director {d}"),
            Policy::Table(t) => write!(f, "table {t}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleKind {
    Match,
    Ignore,
}

impl RuleKind {
    pub fn keyword(self) -> &'static str {
        match self {
            RuleKind::Match => "match",
            RuleKind::Ignore => "ignore",
        }
    }
}

/// A `match` or `ignore` rule: holds when every condition holds (no conditions: always).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    pub kind: RuleKind,
    pub conds: Vec<Cond>,
}

/// One condition, possibly negated with `not`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Cond {
    pub negated: bool,
    pub test: Test,
}

/// The condition keys of the language.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Test {
    Iface(String),
    Proto(Proto),
    Src(Prefix),
    Dst(Prefix),
    SrcPort(PortRange),
    DstPort(PortRange),
    IcmpType(u8),
}

impl Test {
    /// The keyword that introduces this condition in a file.
    pub fn keyword(&self) -> &'static str {
        match self {
            Test::Iface(_) => "iface",
            Test::Proto(_) => "proto",
            Test::Src(_) => "src",
            Test::Dst(_) => "dst",
            Test::SrcPort(_) => "srcport",
            Test::DstPort(_) => "dstport",
            Test::IcmpType(_) => "icmptype",
        }
    }
}

/// An IP protocol as a rule names it.
///
/// `tcp` is `Number(6)` and `udp` is `Number(17)`; `icmp` is family-dependent (1 in IPv4
/// packets, 58 in IPv6 packets) and so is its own variant. `proto 1` is `Number(1)`: IPv4
/// ICMP only, and it does not allow `icmptype`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Icmp,
    Number(u8),
}

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;

impl Proto {
    pub const TCP: Proto = Proto::Number(PROTO_TCP);
    pub const UDP: Proto = Proto::Number(PROTO_UDP);

    /// Whether `srcport`/`dstport` may follow this (non-negated) protocol.
    pub fn has_ports(self) -> bool {
        matches!(self, Proto::Number(PROTO_TCP) | Proto::Number(PROTO_UDP))
    }

    /// The protocol number this condition requires in a packet of the given family.
    pub fn number_for(self, family: Family) -> u8 {
        match (self, family) {
            (Proto::Icmp, Family::V4) => PROTO_ICMP,
            (Proto::Icmp, Family::V6) => PROTO_ICMPV6,
            (Proto::Number(n), _) => n,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Proto::Icmp => f.write_str("icmp"),
            Proto::Number(PROTO_TCP) => f.write_str("tcp"),
            Proto::Number(PROTO_UDP) => f.write_str("udp"),
            Proto::Number(n) => write!(f, "{n}"),
        }
    }
}

/// IPv4 or IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

/// An address prefix with its host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Prefix {
    V4 { addr: Ipv4Addr, len: u8 },
    V6 { addr: Ipv6Addr, len: u8 },
}

impl Prefix {
    pub fn family(&self) -> Family {
        match self {
            Prefix::V4 { .. } => Family::V4,
            Prefix::V6 { .. } => Family::V6,
        }
    }

    /// The prefix length (a prefix is never "empty": /0 holds every address of its family).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u8 {
        match self {
            Prefix::V4 { len, .. } | Prefix::V6 { len, .. } => *len,
        }
    }

    /// A prefix from an address and length (clamped to the family's width), host bits cleared.
    pub fn new(addr: std::net::IpAddr, len: u8) -> Prefix {
        match addr {
            std::net::IpAddr::V4(a) => {
                let len = len.min(32);
                Prefix::V4 {
                    addr: Ipv4Addr::from(u32::from(a) & mask32(len)),
                    len,
                }
            }
            std::net::IpAddr::V6(a) => {
                let len = len.min(128);
                Prefix::V6 {
                    addr: Ipv6Addr::from(u128::from(a) & mask128(len)),
                    len,
                }
            }
        }
    }

    /// Whether `addr` is inside this prefix (false when the families differ).
    pub fn contains(&self, addr: std::net::IpAddr) -> bool {
        match (self, addr) {
            (Prefix::V4 { addr: p, len }, std::net::IpAddr::V4(a)) => {
                u32::from(a) & mask32(*len) == u32::from(*p)
            }
            (Prefix::V6 { addr: p, len }, std::net::IpAddr::V6(a)) => {
                u128::from(a) & mask128(*len) == u128::from(*p)
            }
            _ => false,
        }
    }
}

/// The network mask of a /len IPv4 prefix.
pub fn mask32(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    }
}

/// The network mask of a /len IPv6 prefix.
pub fn mask128(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len.min(128)))
    }
}

impl fmt::Display for Prefix {
    /// Canonical form: a host prefix prints as a bare address, others as `addr/len`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Prefix::V4 { addr, len: 32 } => write!(f, "{addr}"),
            Prefix::V4 { addr, len } => write!(f, "{addr}/{len}"),
            Prefix::V6 { addr, len: 128 } => write!(f, "{addr}"),
            Prefix::V6 { addr, len } => write!(f, "{addr}/{len}"),
        }
    }
}

/// An inclusive port range, `lo <= hi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    pub fn contains(&self, port: u16) -> bool {
        self.lo <= port && port <= self.hi
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}:{}", self.lo, self.hi)
        }
    }
}
