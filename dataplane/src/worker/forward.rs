//! Route and take the TTL: the one forwarding step every caller uses (a flow's `table T`, a
//! director's packet towards its server, a NAT reply towards its client, an outflow's re-route).
//!
//! A flow verdict `table T` looks T up for the destination (falling back to main); the packet
//! loses one from its TTL / hop limit (an expired packet goes to the kernel through the input
//! port's TAP, for ICMP time exceeded) and heads for the outflows with the chosen port's iface.
//! Its next hop's MAC is resolved at dispatch (`neighbour.rs`).

use std::net::IpAddr;

use crate::classify::Key;
use crate::counters::{DropReason, RuleCounters};
use crate::route::forward::{decrement_ttl, NotForwarded};
use crate::route::NextHop;
use crate::ruleset::RuleSet;

use super::batch::{family, PacketMeta, To};
use super::frames::Frames;
use super::PortRole;

/// Looks `dst` up in `table` (main when it has no route), counting the lookup and the
/// fallback for the table asked.
#[inline]
pub fn route(rules: &RuleSet, rc: &RuleCounters, table: u32, dst: IpAddr) -> Option<NextHop> {
    let idx = rules.routes.index_of(table);
    if let Some(c) = idx.and_then(|i| rc.route_lookups.get(i)) {
        c.add(1);
    }
    let m = rules.routes.lookup(table, dst)?;
    if m.fell_back(table) {
        if let Some(c) = idx.and_then(|i| rc.route_fallbacks.get(i)) {
            c.add(1);
        }
    }
    Some(m.hop)
}

/// Takes one off the TTL / hop limit of packet `i` (a transit packet being routed). When it
/// cannot go on, `meta.to` says where it goes instead (the input port's kernel for ICMP time
/// exceeded, or a drop) and the answer is false.
#[inline]
pub fn take_ttl<F: Frames>(
    frames: &mut F,
    i: usize,
    meta: &mut PacketMeta,
    key: &Key,
    roles: &[PortRole],
) -> bool {
    let (l3, family) = (usize::from(meta.l3), family(key));
    let expired_to = match roles.get(usize::from(meta.input)) {
        Some(r) if r.kernel => To::Kernel(meta.input),
        _ => To::Drop(DropReason::TtlExpired),
    };
    match frames.packet_mut(i).map(|fr| decrement_ttl(fr, l3, family)) {
        Some(Ok(())) => {
            meta.routed = true;
            true
        }
        Some(Err(NotForwarded::Expired)) => {
            meta.to = expired_to;
            false
        }
        _ => {
            meta.to = To::Drop(DropReason::RouteTruncated);
            false
        }
    }
}

/// The next hop is `hop` (for `dst`): packet `i` leaves through its port, after the outflows
/// (its key now carries that port's outflows iface).
#[inline]
pub fn head_for(meta: &mut PacketMeta, key: &mut Key, rules: &RuleSet, hop: &NextHop, dst: IpAddr) {
    key.iface = rules.outflows.port_iface[hop.port];
    meta.egress = true;
    meta.to = To::Hop {
        port: hop.port as u16,
        via: hop.neighbour(dst),
    };
}

/// Routes packet `i` with `table` towards `dst` and takes its TTL (unless `meta.routed`:
/// taken already, or the kernel's own packet): it heads for the chosen port through the
/// outflows, or `meta.to` says where it goes instead (no route, TTL expired).
#[allow(clippy::too_many_arguments)]
#[inline]
pub fn forward<F: Frames>(
    frames: &mut F,
    i: usize,
    meta: &mut PacketMeta,
    key: &mut Key,
    rules: &RuleSet,
    rc: &RuleCounters,
    roles: &[PortRole],
    table: u32,
    dst: IpAddr,
) {
    let Some(hop) = route(rules, rc, table, dst) else {
        meta.to = To::Drop(DropReason::NoRoute);
        return;
    };
    if meta.routed || take_ttl(frames, i, meta, key, roles) {
        head_for(meta, key, rules, &hop, dst);
    }
}

/// The destination address of a key.
#[inline]
pub fn dst_of(k: &Key) -> IpAddr {
    if k.v6 {
        IpAddr::V6(std::net::Ipv6Addr::from(k.dst))
    } else {
        IpAddr::V4(std::net::Ipv4Addr::from(k.dst as u32))
    }
}

/// Destinations bound to a link: broadcast, multicast, link-local. An outflow `table` verdict
/// leaves them on the port they were sent to, as Linux's rule 0 (`lookup local`, which holds
/// the broadcast and multicast routes of each interface) would before any policy rule, and
/// as no gateway could carry link-local traffic anyway.
#[inline]
pub fn link_scoped(dst: IpAddr) -> bool {
    match dst {
        IpAddr::V4(a) => a.is_broadcast() || a.is_multicast() || a.is_link_local(),
        IpAddr::V6(a) => a.is_multicast() || (a.segments()[0] & 0xffc0) == 0xfe80,
    }
}

#[cfg(test)]
mod tests {
    use super::super::decide::table_of;
    use super::super::test_support::{facts, ip};
    use super::*;
    use crate::build::{frame, FrameSpec};
    use flowgate_config::flows::{parse, parse_packet_line};

    #[test]
    fn link_scoped_destinations() {
        for d in [
            "255.255.255.255",
            "224.0.0.251",
            "169.254.1.1",
            "ff02::1",
            "fe80::1",
        ] {
            assert!(link_scoped(ip(d)), "{d}");
        }
        for d in [
            "10.1.1.1",
            "192.168.161.255",
            "2001:db8::1",
            "fec0::1",
            "::1",
        ] {
            assert!(!link_scoped(ip(d)), "{d}");
        }
    }

    #[test]
    fn key_destination_round_trips() {
        for d in ["10.2.3.4", "2001:db8::7", "255.255.255.255", "::"] {
            let f = frame(&FrameSpec::new(
                if d.contains(':') {
                    ip("::1")
                } else {
                    ip("1.1.1.1")
                },
                ip(d),
                17,
                1,
                2,
            ));
            assert_eq!(dst_of(&Key::from_facts(&facts(&f), 0)), ip(d));
        }
    }

    /// The table of a `table` verdict, and the route lookup with its counters: lookups and
    /// fallbacks counted for the table asked, no route gives `None`.
    #[test]
    fn route_counts_lookups_and_fallbacks() {
        let config = r#"
flows = "f.flows"
[dataplane]
workers = [0]
[[port]]
name = "eth0"
device = "net_null0"
addresses = ["192.168.0.1/24"]
[[port]]
name = "eth1"
device = "net_null1"
addresses = ["192.168.161.10/24"]
[routes]
default = "192.168.0.254"
[[table]]
id = 200
routes = { "10.0.0.0/8" = "192.168.161.1" }
"#;
        let app = flowgate_config::appliance::parse_with_cpus("t.toml", config, 1).expect("config");
        let file = parse("flow r table 200 match dst 10.0.0.0/8")
            .expect("flows")
            .file;
        let rs = RuleSet::compile(file, &app, 1).expect("compiles");
        let rc = &rs.counters[0];
        let c = &rs.flows.classifier;
        let pkt =
            parse_packet_line("iface=eth0 proto=udp src=1.1.1.1 dst=10.1.1.1 sport=1 dport=2")
                .expect("packet");
        assert_eq!(table_of(&rs.flows, c.classify(&c.key(&pkt))), 200);
        let hop = route(&rs, rc, 200, ip("10.1.1.1")).expect("route");
        assert_eq!((hop.port, hop.gateway), (1, Some(ip("192.168.161.1"))));
        // not in table 200: main answers (a fallback)
        let hop = route(&rs, rc, 200, ip("8.8.8.8")).expect("main default");
        assert_eq!((hop.port, hop.gateway), (0, Some(ip("192.168.0.254"))));
        let hop = route(&rs, rc, 200, ip("192.168.0.77")).expect("connected");
        assert_eq!((hop.port, hop.gateway), (0, None));
        // no IPv6 route anywhere: no route (a lookup, not a fallback)
        assert_eq!(route(&rs, rc, 200, ip("2001:db8::1")), None);
        // main asked directly
        assert!(route(&rs, rc, 254, ip("8.8.8.8")).is_some());
        let t = rs.totals();
        assert_eq!(t.route_lookups, vec![1, 4]);
        assert_eq!(t.route_fallbacks, vec![0, 2]);
    }
}
