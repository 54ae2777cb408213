//! Lowering of flows rules to engine boxes, one address family at a time.
//!
//! Each condition becomes a set of positive intervals on one lane (a negated condition is the
//! complement: up to two intervals), plus for port and ICMP-type conditions the requirement
//! "the packet carries ports" / "the packet is ICMP of its family and not a non-first
//! fragment" on the L4-kind lane, which `not` never negates. An address condition of the
//! other family never holds, so the rule contributes nothing to this family's engine. The
//! rule is the conjunction: lane sets are intersected, and the rule becomes the cross product
//! of its lanes' intervals (at most 2^7 boxes, in practice one or two), all with the rule's
//! priority.

use flowgate_config::flows::{mask128, mask32, Family, Prefix, Rule, Test};

use super::engine::{lane_max, Bounds, Word, LANES};
use super::key::{lane, L4Kind};

type Set = Vec<(u128, u128)>;

fn one(lo: u128, hi: u128, negated: bool, max: u128) -> Set {
    if !negated {
        return vec![(lo, hi)];
    }
    let mut v = Vec::with_capacity(2);
    if lo > 0 {
        v.push((0, lo - 1));
    }
    if hi < max {
        v.push((hi + 1, max));
    }
    v
}

fn intersect(a: &[(u128, u128)], b: &[(u128, u128)]) -> Set {
    let mut v = Vec::new();
    for &(alo, ahi) in a {
        for &(blo, bhi) in b {
            let (lo, hi) = (alo.max(blo), ahi.min(bhi));
            if lo <= hi {
                v.push((lo, hi));
            }
        }
    }
    v
}

/// The inclusive address range of a prefix, if it is of `family`.
fn range(p: &Prefix, family: Family) -> Option<(u128, u128)> {
    match (p, family) {
        (Prefix::V4 { addr, len }, Family::V4) => {
            let net = u32::from(*addr);
            Some((u128::from(net), u128::from(net | !mask32(*len))))
        }
        (Prefix::V6 { addr, len }, Family::V6) => {
            let net = u128::from(*addr);
            Some((net, net | !mask128(*len)))
        }
        _ => None,
    }
}

/// The boxes of `rule` in the engine of `family` (empty: the rule never holds there).
pub fn lower_rule<W: Word>(
    rule: &Rule,
    family: Family,
    iface_id: impl Fn(&str) -> u16,
) -> Vec<Bounds<W>> {
    let maxes: [u128; LANES] = std::array::from_fn(|l| lane_max::<W>(l).to_u128());
    let mut lanes: [Set; LANES] = std::array::from_fn(|l| vec![(0, maxes[l])]);
    for c in &rule.conds {
        let (ln, lo, hi, kind) = match &c.test {
            Test::Iface(name) => {
                let id = u128::from(iface_id(name));
                (lane::IFACE, id, id, None)
            }
            Test::Proto(p) => {
                let n = u128::from(p.number_for(family));
                (lane::PROTO, n, n, None)
            }
            Test::Src(p) => match range(p, family) {
                Some((lo, hi)) => (lane::SRC, lo, hi, None),
                None => return Vec::new(),
            },
            Test::Dst(p) => match range(p, family) {
                Some((lo, hi)) => (lane::DST, lo, hi, None),
                None => return Vec::new(),
            },
            Test::SrcPort(r) => (
                lane::SPORT,
                u128::from(r.lo),
                u128::from(r.hi),
                Some(L4Kind::Ports),
            ),
            Test::DstPort(r) => (
                lane::DPORT,
                u128::from(r.lo),
                u128::from(r.hi),
                Some(L4Kind::Ports),
            ),
            Test::IcmpType(t) => (
                lane::DPORT,
                u128::from(*t),
                u128::from(*t),
                Some(L4Kind::Icmp),
            ),
        };
        lanes[ln] = intersect(&lanes[ln], &one(lo, hi, c.negated, maxes[ln]));
        if let Some(k) = kind {
            let k = u128::from(k as u8);
            lanes[lane::KIND] = intersect(&lanes[lane::KIND], &[(k, k)]);
        }
    }
    let mut out = vec![Bounds::<W>::any()];
    for (ln, set) in lanes.iter().enumerate() {
        if set.is_empty() {
            return Vec::new();
        }
        if set.len() == 1 && set[0] == (0, maxes[ln]) {
            continue;
        }
        let mut next = Vec::with_capacity(out.len() * set.len());
        for b in &out {
            for &(lo, hi) in set {
                let mut nb = *b;
                nb.lo[ln] = W::from_u128(lo);
                nb.hi[ln] = W::from_u128(hi);
                next.push(nb);
            }
        }
        out = next;
    }
    out
}
