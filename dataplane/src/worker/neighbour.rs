//! Next-hop MACs for routed packets: resolve from this worker's [`NeighbourTable`], hold
//! (at most a few packets) while an ARP request / neighbour solicitation goes out, learn
//! from the ARP / NS / NA frames the ports bring (they still go to the kernel), and share
//! what is learned with the other workers ([`SharedNeighbours`]). Only an unresolved next
//! hop leaves the fast path. `docs/routing.md`, "Neighbours".

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use flowgate_config::appliance::MacAddr;
use flowgate_config::flows::{Family, L4};

use crate::counters::{DropReason, WorkerCounters};
use crate::route::forward::rewrite_macs;
use crate::route::neigh::{multicast_mac, ArpOp, NdKind};
use crate::route::{Arp, Nd, NeighbourConfig, NeighbourTable, Resolution, SharedNeighbours};
use crate::ruleset::RuleSet;
use crate::wire::ethernet::{ethertype, EthernetFrame};
use crate::wire::icmpv6::msg::{NEIGHBOR_ADVERT, NEIGHBOR_SOLICIT};
use crate::wire::{proto, IpFacts};

use super::frames::{Frame, Frames, Io, Out};
use super::PortRole;

/// How often the neighbour table's timers run (retransmits, failures, ageing).
pub const NEIGHBOUR_TICK: Duration = Duration::from_millis(100);
/// While this worker waits for a next hop, how often it looks for it in the shared table
/// (a walk over its own table: not every polling round).
pub const SHARED_POLL: Duration = Duration::from_millis(1);

/// This worker's next hops, with the packets held while one is resolved.
#[derive(Debug)]
pub struct NeighbourStage<'p, B> {
    table: NeighbourTable<B>,
    shared: &'p SharedNeighbours,
    /// Some neighbour is being resolved: look at the shared table every [`SHARED_POLL`].
    pending: bool,
    last_shared: Instant,
    last_tick: Instant,
}

/// What the neighbour stage needs of the worker around it.
#[derive(Debug)]
pub struct Around<'a, I> {
    pub io: &'a mut I,
    pub roles: &'a [PortRole],
    pub counters: &'a WorkerCounters,
    pub now: Instant,
}

impl<'p, B: Frame> NeighbourStage<'p, B> {
    pub fn new(shared: &'p SharedNeighbours, now: Instant) -> Self {
        NeighbourStage {
            table: NeighbourTable::new(NeighbourConfig::default()),
            shared,
            pending: false,
            last_shared: now,
            last_tick: now,
        }
    }

    /// A routed packet: to its next hop's MAC out `port`, or held while `via` is resolved.
    #[inline]
    pub fn hop<I: Io<Frame = B>>(
        &mut self,
        w: &mut Around<'_, I>,
        port: u16,
        via: IpAddr,
        f: B,
        rules: &RuleSet,
    ) {
        let p = usize::from(port);
        match self.table.resolve(p, via, f, w.now) {
            Resolution::Ready { mac, item, solicit } => {
                send_routed(w, port, mac, item);
                if solicit {
                    // a static neighbour is refreshed from the config, not by asking it
                    match self.shared.is_static(p, via) {
                        true => self.learned(w, port, via, mac),
                        false => solicit_for(w, port, via, rules),
                    }
                }
            }
            Resolution::Held { solicit, dropped } => {
                if let Some(d) = dropped {
                    w.counters.dropped(DropReason::NeighbourHoldOverflow);
                    drop(d);
                }
                if solicit {
                    // another worker may know it already
                    match self.shared.get(p, via, w.now) {
                        Some(mac) => {
                            w.counters.neighbours.from_shared.add(1);
                            self.learned(w, port, via, mac);
                        }
                        None => {
                            self.pending = true;
                            solicit_for(w, port, via, rules);
                        }
                    }
                }
            }
            Resolution::Refused(f) => {
                w.counters.dropped(DropReason::NeighbourTableFull);
                drop(f);
            }
        }
    }

    /// `ip` on `port` is at `mac` (this worker saw it, or another did): learn it and send
    /// what was held for it.
    fn learned<I: Io<Frame = B>>(
        &mut self,
        w: &mut Around<'_, I>,
        port: u16,
        ip: IpAddr,
        mac: MacAddr,
    ) {
        let held = self.table.learn(usize::from(port), ip, mac, w.now);
        for f in held {
            send_routed(w, port, mac, f);
        }
    }

    /// Learn from the ARP / NS / NA frames `which` of the burst from `port` (they still go to
    /// the kernel), and tell the other workers. As Linux: replies and advertisements teach; a
    /// request teaches its sender when it asks for one of our addresses, or refreshes a
    /// neighbour already known (so the broadcast chatter of a LAN does not fill the tables).
    pub fn learn_from<F: Frames, I: Io<Frame = B>>(
        &mut self,
        w: &mut Around<'_, I>,
        port: u16,
        frames: &F,
        which: &[(u8, u16)],
        rules: &RuleSet,
    ) {
        let p = usize::from(port);
        for &(i, l3) in which {
            let Some(t) = frames
                .packet(usize::from(i))
                .and_then(|f| neighbour_in(f, usize::from(l3)))
            else {
                continue;
            };
            if w.roles.get(p).is_some_and(|r| r.mac == t.mac) {
                continue; // our own (the kernel's) frames looped back
            }
            let teaches = match t.asked {
                None => true,
                Some(asked) => {
                    rules.routes.owns(p, asked)
                        || self.table.contains(p, t.ip)
                        || self.shared.get(p, t.ip, w.now).is_some()
                }
            };
            if !teaches {
                continue;
            }
            w.counters.neighbours.learned.add(1);
            self.learned(w, port, t.ip, t.mac);
            self.shared.publish(p, t.ip, t.mac, w.now);
        }
    }

    /// The timers, once per polling round: every [`SHARED_POLL`] while waiting, what another
    /// worker resolved; every [`NEIGHBOUR_TICK`], changed MACs, retransmits and failures.
    pub fn round<I: Io<Frame = B>>(
        &mut self,
        w: &mut Around<'_, I>,
        rules: impl FnOnce() -> std::sync::Arc<RuleSet>,
    ) {
        if self.pending && w.now.saturating_duration_since(self.last_shared) >= SHARED_POLL {
            self.last_shared = w.now;
            self.resolve_from_shared(w);
        }
        if w.now.saturating_duration_since(self.last_tick) >= NEIGHBOUR_TICK {
            self.last_tick = w.now;
            self.tick(w, rules);
        }
    }

    /// Resolve from the shared table what this worker still waits for.
    fn resolve_from_shared<I: Io<Frame = B>>(&mut self, w: &mut Around<'_, I>) {
        let mut found = [(0u16, IpAddr::V4(Ipv4Addr::UNSPECIFIED), MacAddr([0; 6])); 8];
        let mut n = 0;
        let mut waiting = 0usize;
        for (port, ip) in self.table.unresolved() {
            waiting += 1;
            if let Some(mac) = self.shared.get(port, ip, w.now) {
                if n < found.len() {
                    found[n] = (port as u16, ip, mac);
                    n += 1;
                }
            }
        }
        for &(port, ip, mac) in &found[..n] {
            w.counters.neighbours.from_shared.add(1);
            self.learned(w, port, ip, mac);
        }
        // still waiting for some (or more found than this round takes: look again)
        self.pending = waiting > n;
    }

    /// Neighbour timers: MACs changed in the shared table, re-send requests (unless another
    /// worker learned the answer), free what waited in vain.
    fn tick<I: Io<Frame = B>>(
        &mut self,
        w: &mut Around<'_, I>,
        rules: impl FnOnce() -> std::sync::Arc<RuleSet>,
    ) {
        // a MAC another worker saw change (a gratuitous ARP after a failover): take it
        let mut changed = [(0u16, IpAddr::V4(Ipv4Addr::UNSPECIFIED), MacAddr([0; 6])); 8];
        let mut n = 0;
        for (port, ip, mac) in self.table.known() {
            if n == changed.len() {
                break; // the rest next tick
            }
            match self.shared.get(port, ip, w.now) {
                Some(shared) if shared != mac => {
                    changed[n] = (port as u16, ip, shared);
                    n += 1;
                }
                _ => {}
            }
        }
        for &(port, ip, mac) in &changed[..n] {
            w.counters.neighbours.from_shared.add(1);
            self.learned(w, port, ip, mac);
        }
        let tick = self.table.tick(w.now);
        for _ in &tick.dropped {
            w.counters.dropped(DropReason::NeighbourUnresolved);
        }
        drop(tick.dropped);
        if tick.solicit.is_empty() {
            return;
        }
        let rules = rules();
        for (port, ip) in tick.solicit {
            let port = port as u16;
            match self.shared.get(usize::from(port), ip, w.now) {
                Some(mac) => {
                    w.counters.neighbours.from_shared.add(1);
                    self.learned(w, port, ip, mac);
                }
                None => solicit_for(w, port, ip, &rules),
            }
        }
    }
}

/// Ethernet addresses of a routed frame (source: the port's, destination: the next hop's),
/// then out the port.
#[inline]
fn send_routed<B: Frame, I: Io<Frame = B>>(
    w: &mut Around<'_, I>,
    port: u16,
    mac: MacAddr,
    mut f: B,
) {
    let Some(role) = w.roles.get(usize::from(port)) else {
        w.counters.dropped(DropReason::RouteTruncated);
        return;
    };
    if rewrite_macs(f.data_mut(), role.mac, mac).is_ok() {
        w.io.send(Out::Port(port), f);
    } else {
        w.counters.dropped(DropReason::RouteTruncated);
    }
}

/// Send an ARP request (IPv4) or a neighbour solicitation (IPv6) for `target` out `port`.
fn solicit_for<I: Io>(w: &mut Around<'_, I>, port: u16, target: IpAddr, rules: &RuleSet) {
    let Some(role) = w.roles.get(usize::from(port)) else {
        return;
    };
    let src = rules.routes.source_for(usize::from(port), target);
    let frame = solicitation(role.mac, src, target);
    let Some(f) = w.io.alloc(&frame) else {
        return;
    };
    w.counters.neighbours.solicits.add(1);
    w.io.send(Out::Port(port), f);
}

/// Whether an IP packet is a neighbour solicitation or advertisement.
#[inline]
pub fn is_nd(f: &IpFacts) -> bool {
    f.family == Family::V6
        && f.proto == proto::ICMPV6
        && matches!(f.l4, L4::Icmp { icmptype } if icmptype == NEIGHBOR_SOLICIT || icmptype == NEIGHBOR_ADVERT)
}

/// Whether a non-IP frame is ARP.
#[inline]
pub fn is_arp(kind: u16) -> bool {
    kind == ethertype::ARP
}

/// What an ARP or ND frame says of its sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taught {
    pub ip: IpAddr,
    pub mac: MacAddr,
    /// For a request (ARP request, NS): the address it asks for.
    pub asked: Option<IpAddr>,
}

/// The (address, MAC) a frame teaches: the sender of an ARP request or reply, the target of
/// a neighbour advertisement, the source of a solicitation with its link-layer option.
/// `l3`: the IPv6 header's offset (ND frames).
pub fn neighbour_in(frame: &[u8], l3: usize) -> Option<Taught> {
    if EthernetFrame::new_checked(frame).ok()?.ethertype() == ethertype::ARP {
        let arp = Arp::parse_frame(frame)?;
        if arp.sender_ip.is_unspecified() {
            return None; // a probe teaches nothing
        }
        return Some(Taught {
            ip: IpAddr::V4(arp.sender_ip),
            mac: arp.sender_mac,
            asked: (arp.op == ArpOp::Request).then_some(IpAddr::V4(arp.target_ip)),
        });
    }
    let nd = Nd::parse(frame.get(l3..)?)?;
    let mac = nd.lladdr?;
    match nd.kind {
        NdKind::Advert { .. } => Some(Taught {
            ip: IpAddr::V6(nd.target),
            mac,
            asked: None,
        }),
        NdKind::Solicit if !nd.src.is_unspecified() => Some(Taught {
            ip: IpAddr::V6(nd.src),
            mac,
            asked: Some(IpAddr::V6(nd.target)),
        }),
        NdKind::Solicit => None,
    }
}

/// The request for `target` sent out a port at `mac`, from its address `src`: an ARP request
/// (from 0.0.0.0 when the port has no IPv4 address), or a neighbour solicitation to the
/// target's solicited-node group (from `::` without a link-layer option when it has no IPv6
/// address).
pub fn solicitation(mac: MacAddr, src: Option<IpAddr>, target: IpAddr) -> Vec<u8> {
    match target {
        IpAddr::V4(t) => {
            let from = match src {
                Some(IpAddr::V4(a)) => a,
                _ => Ipv4Addr::UNSPECIFIED,
            };
            Arp::request(mac, from, t).frame().to_vec()
        }
        IpAddr::V6(t) => {
            let ns = match src {
                Some(IpAddr::V6(a)) => Nd::solicit(mac, a, t),
                _ => Nd {
                    lladdr: None,
                    ..Nd::solicit(mac, Ipv6Addr::UNSPECIFIED, t)
                },
            };
            ns.frame(mac, multicast_mac(ns.dst))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{facts, ip};
    use super::*;
    use crate::build::{frame, FrameSpec};

    const MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x0a]);
    const OTHER: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x0b]);

    /// ARP requests and replies teach their sender; probes (sender 0.0.0.0) teach nothing.
    #[test]
    fn arp_teaches_the_sender() {
        let req = solicitation(MAC, Some(ip("192.168.0.1")), ip("192.168.0.254"));
        assert_eq!(req.len(), 42);
        let taught =
            |ip: IpAddr, mac: MacAddr, asked: Option<IpAddr>| Some(Taught { ip, mac, asked });
        assert_eq!(
            neighbour_in(&req, 14),
            taught(ip("192.168.0.1"), MAC, Some(ip("192.168.0.254")))
        );
        let parsed = Arp::parse_frame(&req).expect("arp");
        assert_eq!(
            parsed.target_ip,
            "192.168.0.254".parse::<Ipv4Addr>().expect("v4")
        );
        let reply = Arp::reply_to(&parsed, OTHER).frame();
        assert_eq!(
            neighbour_in(&reply, 14),
            taught(ip("192.168.0.254"), OTHER, None)
        );
        let probe = solicitation(MAC, None, ip("192.168.0.254"));
        assert_eq!(
            Arp::parse_frame(&probe).map(|a| a.sender_ip.is_unspecified()),
            Some(true)
        );
        assert_eq!(neighbour_in(&probe, 14), None);
        // an IPv6 source for an IPv4 target is not used
        let p = solicitation(MAC, Some(ip("2001:db8::1")), ip("192.168.0.254"));
        assert_eq!(neighbour_in(&p, 14), None);
    }

    /// A solicitation teaches its source (with its option), an advertisement its target; the
    /// worker notes both as ND, and not an echo request.
    #[test]
    fn nd_teaches_source_or_target() {
        let ns = solicitation(MAC, Some(ip("2001:db8::1")), ip("2001:db8::fe"));
        let f = facts(&ns);
        assert!(is_nd(&f));
        assert_eq!(
            neighbour_in(&ns, f.l3_offset),
            Some(Taught {
                ip: ip("2001:db8::1"),
                mac: MAC,
                asked: Some(ip("2001:db8::fe"))
            })
        );
        let parsed = Nd::parse(&ns[14..]).expect("ns");
        assert_eq!(parsed.dst, ip_v6("ff02::1:ff00:fe"));
        let na = Nd::advert_to(&parsed, OTHER).frame(OTHER, MAC);
        let f = facts(&na);
        assert!(is_nd(&f));
        assert_eq!(
            neighbour_in(&na, f.l3_offset),
            Some(Taught {
                ip: ip("2001:db8::fe"),
                mac: OTHER,
                asked: None
            })
        );
        // DAD-style: from ::, no option: teaches nothing
        let dad = solicitation(MAC, None, ip("2001:db8::fe"));
        assert_eq!(neighbour_in(&dad, facts(&dad).l3_offset), None);
        let echo = frame(&FrameSpec::new(
            ip("2001:db8::1"),
            ip("2001:db8::2"),
            58,
            128,
            0,
        ));
        assert!(!is_nd(&facts(&echo)));
        assert_eq!(neighbour_in(&echo, 14), None);
    }

    fn ip_v6(s: &str) -> Ipv6Addr {
        s.parse().expect("v6")
    }
}
