//! Neighbour resolution for next hops: the table of (port, address) -> MAC with its states, and
//! the ARP (IPv4) and Neighbour Discovery (IPv6) frames that fill it.
//!
//! States, as Linux's neighbour table, reduced:
//! - `Incomplete`: a request went out; up to [`NeighbourConfig::hold`] packets wait in a hold
//!   queue (on overflow the oldest is dropped and counted, as Linux's `arp_queue`); the request
//!   is retried every [`NeighbourConfig::retrans`], [`NeighbourConfig::probes`] times, then the
//!   entry fails: held packets are dropped and counted.
//! - `Reachable`: a reply was seen within [`NeighbourConfig::reachable`]: packets go out.
//! - `Stale`: older than that. Packets still go out, and the caller is asked to send one more
//!   request to refresh it; an entry stale for [`NeighbourConfig::gc`] is removed.
//!
//! Time is passed in (`now: Instant`), so the table is tested without sleeping. Frames: ARP
//! request/reply (42 bytes), NS/NA (ICMPv6 135/136 with a link-layer option, 86 bytes) sent to
//! the solicited-node multicast group and its `33:33:ff:xx:xx:xx` MAC.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use flowgate_config::appliance::MacAddr;

use crate::wire::arp::{self, ArpPacket};
use crate::wire::ndisc::{self, NdOptions, NeighborPacket};
use crate::wire::{ethernet, ethertype, icmpv6, ipv6, proto, EthernetFrame, Ipv6Packet};

/// Timers and bounds of a [`NeighbourTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighbourConfig {
    /// Packets held per unresolved entry.
    pub hold: usize,
    /// How long a confirmed entry is used without asking again (Linux: 30 s).
    pub reachable: Duration,
    /// How long a stale entry is kept before removal (Linux `gc_stale_time`: 60 s).
    pub gc: Duration,
    /// Time between two requests of an unresolved entry (Linux: 1 s).
    pub retrans: Duration,
    /// Requests sent before an unresolved entry fails (Linux `mcast_solicit`: 3).
    pub probes: u32,
    /// Entries at most; a new resolution beyond it is refused.
    pub max_entries: usize,
}

impl Default for NeighbourConfig {
    fn default() -> Self {
        NeighbourConfig {
            hold: 4,
            reachable: Duration::from_secs(30),
            gc: Duration::from_secs(60),
            retrans: Duration::from_secs(1),
            probes: 3,
            max_entries: 4096,
        }
    }
}

/// The state of one neighbour.
#[derive(Debug)]
enum State<T> {
    Incomplete {
        held: VecDeque<T>,
        sent: u32,
        last_sent: Instant,
    },
    Reachable {
        mac: MacAddr,
        confirmed: Instant,
    },
    Stale {
        mac: MacAddr,
        since: Instant,
        /// A refresh request is out (ask once per stale period).
        asked: bool,
    },
}

/// What to do with a packet for a neighbour.
#[derive(Debug, PartialEq, Eq)]
pub enum Resolution<T> {
    /// Send `item` to `mac`. `solicit`: the entry is stale, also send a request to refresh it.
    Ready {
        mac: MacAddr,
        item: T,
        solicit: bool,
    },
    /// Held until the neighbour answers. `solicit`: send a request now (a new entry).
    /// `dropped`: the hold queue was full, this oldest item was dropped (free it; counted).
    Held { solicit: bool, dropped: Option<T> },
    /// The table is full: not held (free it; counted).
    Refused(T),
}

/// Counters of a neighbour table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NeighbourCounters {
    /// Items dropped because a hold queue was full.
    pub hold_overflow: u64,
    /// Items dropped because their neighbour never answered.
    pub unresolved: u64,
    /// Items refused because the table was full.
    pub table_full: u64,
    /// Requests the caller was asked to send.
    pub solicits: u64,
    /// Entries that failed (no answer after every probe).
    pub failed: u64,
}

/// Timer work for the caller: requests to send, items to free.
#[derive(Debug)]
pub struct Tick<T> {
    /// (port, address) to send a request for.
    pub solicit: Vec<(usize, IpAddr)>,
    /// Items whose neighbour never answered.
    pub dropped: Vec<T>,
}

/// Neighbours keyed by (output port, address), with a bounded hold queue of `T` (a packet
/// handle) per unresolved entry.
#[derive(Debug)]
pub struct NeighbourTable<T> {
    config: NeighbourConfig,
    entries: HashMap<(usize, IpAddr), State<T>>,
    pub counters: NeighbourCounters,
}

impl<T> NeighbourTable<T> {
    pub fn new(config: NeighbourConfig) -> NeighbourTable<T> {
        NeighbourTable {
            config,
            entries: HashMap::new(),
            counters: NeighbourCounters::default(),
        }
    }

    /// The MAC of a neighbour, if known (reachable or stale); does not change the table.
    pub fn lookup(&self, port: usize, ip: IpAddr) -> Option<MacAddr> {
        match self.entries.get(&(port, ip))? {
            State::Reachable { mac, .. } | State::Stale { mac, .. } => Some(*mac),
            State::Incomplete { .. } => None,
        }
    }

    /// Whether `ip` on `port` has an entry (in any state).
    pub fn contains(&self, port: usize, ip: IpAddr) -> bool {
        self.entries.contains_key(&(port, ip))
    }

    /// The neighbours with a MAC (reachable or stale), with it.
    pub fn known(&self) -> impl Iterator<Item = (usize, IpAddr, MacAddr)> + '_ {
        self.entries.iter().filter_map(|(k, s)| match s {
            State::Reachable { mac, .. } | State::Stale { mac, .. } => Some((k.0, k.1, *mac)),
            State::Incomplete { .. } => None,
        })
    }

    /// The neighbours being resolved (a request is out, packets may be held).
    pub fn unresolved(&self) -> impl Iterator<Item = (usize, IpAddr)> + '_ {
        self.entries
            .iter()
            .filter(|(_, s)| matches!(s, State::Incomplete { .. }))
            .map(|(k, _)| *k)
    }

    /// Entries in the table.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Routes `item` to neighbour `ip` on `port`: send, hold, or refuse.
    pub fn resolve(&mut self, port: usize, ip: IpAddr, item: T, now: Instant) -> Resolution<T> {
        let cfg = self.config;
        let full = self.entries.len() >= cfg.max_entries;
        let entry = match self.entries.get_mut(&(port, ip)) {
            Some(e) => e,
            None if full => {
                self.counters.table_full += 1;
                return Resolution::Refused(item);
            }
            None => {
                self.counters.solicits += 1;
                let mut held = VecDeque::with_capacity(cfg.hold);
                let mut dropped = None;
                if cfg.hold == 0 {
                    self.counters.hold_overflow += 1;
                    dropped = Some(item);
                } else {
                    held.push_back(item);
                }
                self.entries.insert(
                    (port, ip),
                    State::Incomplete {
                        held,
                        sent: 1,
                        last_sent: now,
                    },
                );
                return Resolution::Held {
                    solicit: true,
                    dropped,
                };
            }
        };
        if let State::Reachable { mac, confirmed } = *entry {
            if now.saturating_duration_since(confirmed) < cfg.reachable {
                return Resolution::Ready {
                    mac,
                    item,
                    solicit: false,
                };
            }
            *entry = State::Stale {
                mac,
                since: confirmed + cfg.reachable,
                asked: false,
            };
        }
        match entry {
            State::Stale { mac, asked, .. } => {
                let solicit = !*asked;
                *asked = true;
                if solicit {
                    self.counters.solicits += 1;
                }
                Resolution::Ready {
                    mac: *mac,
                    item,
                    solicit,
                }
            }
            State::Incomplete { held, .. } => {
                let mut dropped = None;
                if held.len() >= cfg.hold {
                    self.counters.hold_overflow += 1;
                    dropped = held.pop_front();
                }
                if cfg.hold == 0 {
                    dropped = Some(item);
                } else {
                    held.push_back(item);
                }
                Resolution::Held {
                    solicit: false,
                    dropped,
                }
            }
            State::Reachable { .. } => Resolution::Refused(item), // replaced above
        }
    }

    /// Records that `ip` on `port` has `mac` (an ARP reply or request from it, an NA, or an NS
    /// with a source link-layer option): the entry becomes reachable. Returns the items that
    /// were held for it, to send to `mac` now, oldest first. A new neighbour is not recorded
    /// when the table is full.
    pub fn learn(&mut self, port: usize, ip: IpAddr, mac: MacAddr, now: Instant) -> Vec<T> {
        if self.entries.len() >= self.config.max_entries && !self.contains(port, ip) {
            self.counters.table_full += 1;
            return Vec::new();
        }
        let fresh = State::Reachable {
            mac,
            confirmed: now,
        };
        match self.entries.insert((port, ip), fresh) {
            Some(State::Incomplete { held, .. }) => held.into(),
            _ => Vec::new(),
        }
    }

    /// Timer work, to call every few hundred milliseconds: retries requests of unresolved
    /// entries, fails those out of probes (their items are returned, to free), ages reachable
    /// entries to stale and removes entries stale for longer than [`NeighbourConfig::gc`].
    pub fn tick(&mut self, now: Instant) -> Tick<T> {
        let cfg = self.config;
        let mut out = Tick {
            solicit: Vec::new(),
            dropped: Vec::new(),
        };
        let mut failed: Vec<(usize, IpAddr)> = Vec::new();
        let mut gone: Vec<(usize, IpAddr)> = Vec::new();
        for (key, state) in self.entries.iter_mut() {
            match state {
                State::Incomplete {
                    sent, last_sent, ..
                } => {
                    if now.saturating_duration_since(*last_sent) >= cfg.retrans {
                        if *sent >= cfg.probes {
                            failed.push(*key);
                        } else {
                            *sent += 1;
                            *last_sent = now;
                            out.solicit.push(*key);
                        }
                    }
                }
                State::Reachable { mac, confirmed } => {
                    if now.saturating_duration_since(*confirmed) >= cfg.reachable {
                        *state = State::Stale {
                            mac: *mac,
                            since: *confirmed + cfg.reachable,
                            asked: false,
                        };
                    }
                }
                State::Stale { since, .. } => {
                    if now.saturating_duration_since(*since) >= cfg.gc {
                        gone.push(*key);
                    }
                }
            }
        }
        self.counters.solicits += out.solicit.len() as u64;
        for key in failed {
            if let Some(State::Incomplete { held, .. }) = self.entries.remove(&key) {
                self.counters.failed += 1;
                self.counters.unresolved += held.len() as u64;
                out.dropped.extend(held);
            }
        }
        for key in gone {
            self.entries.remove(&key);
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Shared between workers

/// What the workers learned, for one another: `(port, address) -> (MAC, learned at)`.
///
/// An ARP reply or neighbour advertisement lands on whichever worker's RX queue RSS picks
/// (usually queue 0 for non-IP frames), not necessarily the worker holding packets for that
/// neighbour. Every worker that sees one learns it in its own [`NeighbourTable`] and
/// publishes it here; a worker with unresolved entries looks here before (re)sending a
/// request, and every polling round while it holds packets. Read-mostly: readers take one
/// `arc_swap` load; a write (copy, insert, swap) happens only when a MAC changes, a new
/// neighbour appears, or an entry is older than `refresh`, so ARP traffic cannot turn it into
/// a per-packet cost. Entries older than `max_age` are not answered and are pruned on writes.
///
/// Static neighbours (the config's per-port `neighbours`, [`SharedNeighbours::with_static`])
/// are answered first, whatever their age, and are never replaced by what a worker learns: a
/// worker that learned another MAC for one takes the static MAC back on its next neighbour
/// tick (a changed MAC in the shared table).
#[derive(Debug)]
pub struct SharedNeighbours {
    map: ArcSwap<HashMap<(usize, IpAddr), (MacAddr, Instant)>>,
    /// Fixed at start, read-only afterwards.
    statics: HashMap<(usize, IpAddr), MacAddr>,
    /// Republish an unchanged entry only when older than this.
    refresh: Duration,
    /// Entries older than this are stale for everyone (not returned, pruned).
    max_age: Duration,
    max_entries: usize,
}

impl Default for SharedNeighbours {
    fn default() -> Self {
        let c = NeighbourConfig::default();
        SharedNeighbours::new(c.reachable / 2, c.reachable, c.max_entries)
    }
}

impl SharedNeighbours {
    pub fn new(refresh: Duration, max_age: Duration, max_entries: usize) -> SharedNeighbours {
        SharedNeighbours {
            map: ArcSwap::from_pointee(HashMap::new()),
            statics: HashMap::new(),
            refresh,
            max_age,
            max_entries,
        }
    }

    /// With these static neighbours `(port, address, MAC)` (a later entry for the same port
    /// and address replaces an earlier one).
    pub fn with_static(
        mut self,
        entries: impl IntoIterator<Item = (usize, IpAddr, MacAddr)>,
    ) -> SharedNeighbours {
        self.statics
            .extend(entries.into_iter().map(|(p, ip, mac)| ((p, ip), mac)));
        self
    }

    /// Whether `ip` on `port` is a static neighbour.
    pub fn is_static(&self, port: usize, ip: IpAddr) -> bool {
        self.statics.contains_key(&(port, ip))
    }

    /// Static neighbours.
    pub fn static_len(&self) -> usize {
        self.statics.len()
    }

    /// The MAC of `ip` on `port`: its static entry, else a fresh one some worker learned less
    /// than `max_age` ago.
    pub fn get(&self, port: usize, ip: IpAddr, now: Instant) -> Option<MacAddr> {
        if let Some(mac) = self.statics.get(&(port, ip)) {
            return Some(*mac);
        }
        let map = self.map.load();
        let (mac, at) = map.get(&(port, ip))?;
        (now.saturating_duration_since(*at) < self.max_age).then_some(*mac)
    }

    /// Publishes what a worker learned. Returns whether the shared table was written.
    pub fn publish(&self, port: usize, ip: IpAddr, mac: MacAddr, now: Instant) -> bool {
        if self.is_static(port, ip) {
            return false; // the config's word stands
        }
        {
            let map = self.map.load();
            if let Some((m, at)) = map.get(&(port, ip)) {
                if *m == mac && now.saturating_duration_since(*at) < self.refresh {
                    return false;
                }
            }
        }
        let (refresh, max_age, max) = (self.refresh, self.max_age, self.max_entries);
        let mut wrote = false;
        self.map.rcu(|old| {
            let mut map: HashMap<_, _> = old
                .iter()
                .filter(|(_, (_, at))| now.saturating_duration_since(*at) < max_age)
                .map(|(k, v)| (*k, *v))
                .collect();
            wrote = match map.get(&(port, ip)) {
                Some((m, at)) => *m != mac || now.saturating_duration_since(*at) >= refresh,
                None => map.len() < max,
            };
            if wrote {
                map.insert((port, ip), (mac, now));
            }
            map
        });
        wrote
    }

    /// Entries (fresh or not).
    pub fn len(&self) -> usize {
        self.map.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

// ---------------------------------------------------------------------------------------------
// Frames

/// The broadcast MAC.
pub const BROADCAST: MacAddr = ethernet::BROADCAST;
/// An Ethernet + ARP frame for IPv4 over Ethernet.
pub const ARP_FRAME_LEN: usize = ethernet::field::HEADER_LEN + arp::field::PACKET_LEN;
/// An Ethernet + IPv6 + NS/NA with one link-layer option.
pub const ND_FRAME_LEN: usize = ethernet::field::HEADER_LEN + ipv6::field::HEADER_LEN + ND_LEN;
/// An NS/NA with one link-layer address option.
const ND_LEN: usize = ndisc::field::MIN_LEN + ndisc::option::LL_ADDR_LEN;
/// The hop limit of every ND message (RFC 4861: a receiver checks it is 255).
const ND_HOP_LIMIT: u8 = 255;

/// An ARP operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArpOp {
    Request,
    Reply,
}

/// An IPv4-over-Ethernet ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Arp {
    pub op: ArpOp,
    pub sender_mac: MacAddr,
    pub sender_ip: Ipv4Addr,
    pub target_mac: MacAddr,
    pub target_ip: Ipv4Addr,
}

impl Arp {
    /// A request: who has `target`? Tell `ip` at `mac`.
    pub fn request(mac: MacAddr, ip: Ipv4Addr, target: Ipv4Addr) -> Arp {
        Arp {
            op: ArpOp::Request,
            sender_mac: mac,
            sender_ip: ip,
            target_mac: MacAddr([0; 6]),
            target_ip: target,
        }
    }

    /// The reply to `req` from the owner of its target address, at `mac`.
    pub fn reply_to(req: &Arp, mac: MacAddr) -> Arp {
        Arp {
            op: ArpOp::Reply,
            sender_mac: mac,
            sender_ip: req.target_ip,
            target_mac: req.sender_mac,
            target_ip: req.sender_ip,
        }
    }

    /// The 42-byte frame: broadcast for a request, unicast to the target for a reply.
    pub fn frame(&self) -> [u8; ARP_FRAME_LEN] {
        let mut f = [0u8; ARP_FRAME_LEN];
        let dst = match self.op {
            ArpOp::Request => BROADCAST,
            ArpOp::Reply => self.target_mac,
        };
        let mut eth = EthernetFrame::new_unchecked(&mut f[..]);
        eth.set_dst_addr(dst);
        eth.set_src_addr(self.sender_mac);
        eth.set_ethertype(ethertype::ARP);
        let mut a = ArpPacket::new_unchecked(eth.payload_mut());
        a.set_ethernet_ipv4();
        a.set_operation(match self.op {
            ArpOp::Request => arp::OP_REQUEST,
            ArpOp::Reply => arp::OP_REPLY,
        });
        a.set_sender_hardware_addr(self.sender_mac);
        a.set_sender_protocol_addr(self.sender_ip);
        a.set_target_hardware_addr(self.target_mac);
        a.set_target_protocol_addr(self.target_ip);
        f
    }

    /// Reads the ARP payload (the bytes after the Ethernet header and any VLAN tags). `None`
    /// for anything but a 28-byte-or-longer IPv4-over-Ethernet request or reply.
    pub fn parse(payload: &[u8]) -> Option<Arp> {
        let a = ArpPacket::new_checked(payload).ok()?;
        if !a.is_ethernet_ipv4() {
            return None;
        }
        let op = match a.operation() {
            arp::OP_REQUEST => ArpOp::Request,
            arp::OP_REPLY => ArpOp::Reply,
            _ => return None,
        };
        Some(Arp {
            op,
            sender_mac: a.sender_hardware_addr(),
            sender_ip: a.sender_protocol_addr(),
            target_mac: a.target_hardware_addr(),
            target_ip: a.target_protocol_addr(),
        })
    }

    /// Reads an untagged Ethernet frame carrying ARP.
    pub fn parse_frame(frame: &[u8]) -> Option<Arp> {
        let eth = EthernetFrame::new_checked(frame).ok()?;
        if eth.ethertype() != ethertype::ARP {
            return None;
        }
        Arp::parse(eth.payload())
    }
}

pub use crate::wire::ndisc::{multicast_mac, solicited_node};

/// A Neighbour Solicitation or Advertisement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NdKind {
    Solicit,
    Advert {
        router: bool,
        solicited: bool,
        override_: bool,
    },
}

/// An NS or NA with its addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Nd {
    pub kind: NdKind,
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    /// The address being resolved (NS) or advertised (NA).
    pub target: Ipv6Addr,
    /// The source (NS) or target (NA) link-layer address option.
    pub lladdr: Option<MacAddr>,
}

impl Nd {
    /// A multicast solicitation for `target`, from `src` at `mac`.
    pub fn solicit(mac: MacAddr, src: Ipv6Addr, target: Ipv6Addr) -> Nd {
        Nd {
            kind: NdKind::Solicit,
            src,
            dst: solicited_node(target),
            target,
            lladdr: Some(mac),
        }
    }

    /// The solicited advertisement answering `ns`, from the owner of its target at `mac`.
    pub fn advert_to(ns: &Nd, mac: MacAddr) -> Nd {
        Nd {
            kind: NdKind::Advert {
                router: false,
                solicited: true,
                override_: true,
            },
            src: ns.target,
            dst: ns.src,
            target: ns.target,
            lladdr: Some(mac),
        }
    }

    /// The 86-byte frame from `src_mac` to `dst_mac` (for an NS, [`multicast_mac`] of the
    /// solicited-node group; for an NA, the soliciting node's MAC). Hop limit 255, correct
    /// ICMPv6 checksum. Without `lladdr`, the option is left out (78 bytes).
    pub fn frame(&self, src_mac: MacAddr, dst_mac: MacAddr) -> Vec<u8> {
        let icmp_len = if self.lladdr.is_some() {
            ND_LEN
        } else {
            ndisc::field::MIN_LEN
        };
        let mut f = vec![0u8; ND_FRAME_LEN - ND_LEN + icmp_len];
        let mut eth = EthernetFrame::new_unchecked(&mut f[..]);
        eth.set_dst_addr(dst_mac);
        eth.set_src_addr(src_mac);
        eth.set_ethertype(ethertype::IPV6);
        let mut ip = Ipv6Packet::new_unchecked(eth.payload_mut());
        ip.set_version_traffic_class(0);
        ip.set_payload_len(icmp_len as u16);
        ip.set_next_header(proto::ICMPV6);
        ip.set_hop_limit(ND_HOP_LIMIT);
        ip.set_src_addr(self.src);
        ip.set_dst_addr(self.dst);
        let (ty, flags, opt) = match self.kind {
            NdKind::Solicit => (
                icmpv6::msg::NEIGHBOR_SOLICIT,
                0,
                ndisc::option::SOURCE_LL_ADDR,
            ),
            NdKind::Advert {
                router,
                solicited,
                override_,
            } => (
                icmpv6::msg::NEIGHBOR_ADVERT,
                if router { ndisc::flags::ROUTER } else { 0 }
                    | if solicited {
                        ndisc::flags::SOLICITED
                    } else {
                        0
                    }
                    | if override_ { ndisc::flags::OVERRIDE } else { 0 },
                ndisc::option::TARGET_LL_ADDR,
            ),
        };
        let mut nd = NeighborPacket::new_unchecked(ip.payload_mut());
        nd.set_msg_type(ty);
        nd.set_msg_code(0);
        nd.set_flags(flags);
        nd.set_target_addr(self.target);
        if let Some(mac) = self.lladdr {
            ndisc::emit_link_layer_option(nd.options_mut(), opt, mac);
        }
        nd.fill_checksum(&self.src, &self.dst);
        f
    }

    /// Reads an NS or NA from an IPv6 packet (starting at its header; no extension headers).
    /// `None` unless: next header ICMPv6, hop limit 255, code 0, valid checksum, type 135/136,
    /// a non-multicast target, and well-formed options (RFC 4861 7.1.1/7.1.2).
    pub fn parse(ip: &[u8]) -> Option<Nd> {
        let p = Ipv6Packet::new_checked(ip).ok()?;
        if p.version() != 6 || p.next_header() != proto::ICMPV6 || p.hop_limit() != ND_HOP_LIMIT {
            return None;
        }
        let (src, dst) = (p.src_addr(), p.dst_addr());
        let nd = NeighborPacket::new_checked(p.payload()).ok()?;
        if nd.msg_code() != 0 || !nd.verify_checksum(&src, &dst) {
            return None;
        }
        let flags = nd.flags();
        let (kind, want_opt) = match nd.msg_type() {
            icmpv6::msg::NEIGHBOR_SOLICIT => (NdKind::Solicit, ndisc::option::SOURCE_LL_ADDR),
            icmpv6::msg::NEIGHBOR_ADVERT => (
                NdKind::Advert {
                    router: flags & ndisc::flags::ROUTER != 0,
                    solicited: flags & ndisc::flags::SOLICITED != 0,
                    override_: flags & ndisc::flags::OVERRIDE != 0,
                },
                ndisc::option::TARGET_LL_ADDR,
            ),
            _ => return None,
        };
        let target = nd.target_addr();
        if target.is_multicast() {
            return None;
        }
        let mut lladdr = None;
        for opt in NdOptions::new(nd.options()) {
            let opt = opt.ok()?;
            if opt.option_type() == want_opt {
                lladdr = opt.link_layer_addr().or(lladdr);
            }
        }
        Some(Nd {
            kind,
            src,
            dst,
            target,
            lladdr,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MAC_A: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0xa]);
    const MAC_B: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0xb]);

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn table() -> NeighbourTable<u32> {
        NeighbourTable::new(NeighbourConfig::default())
    }

    #[test]
    fn resolve_hold_learn_release() {
        let mut t = table();
        let t0 = Instant::now();
        let gw = ip("192.168.0.1");
        assert_eq!(
            t.resolve(0, gw, 1, t0),
            Resolution::Held {
                solicit: true,
                dropped: None
            }
        );
        for i in 2..=4 {
            assert_eq!(
                t.resolve(0, gw, i, t0),
                Resolution::Held {
                    solicit: false,
                    dropped: None
                }
            );
        }
        // the fifth pushes out the oldest
        assert_eq!(
            t.resolve(0, gw, 5, t0),
            Resolution::Held {
                solicit: false,
                dropped: Some(1)
            }
        );
        assert_eq!(t.counters.hold_overflow, 1);
        assert_eq!(t.lookup(0, gw), None);
        // the same address on another port is another neighbour
        assert_eq!(
            t.resolve(1, gw, 9, t0),
            Resolution::Held {
                solicit: true,
                dropped: None
            }
        );
        let released = t.learn(0, gw, MAC_A, t0 + Duration::from_millis(3));
        assert_eq!(released, vec![2, 3, 4, 5]);
        assert_eq!(t.lookup(0, gw), Some(MAC_A));
        assert_eq!(
            t.resolve(0, gw, 6, t0 + Duration::from_secs(1)),
            Resolution::Ready {
                mac: MAC_A,
                item: 6,
                solicit: false
            }
        );
    }

    #[test]
    fn stale_refresh_and_gc() {
        let mut t = table();
        let t0 = Instant::now();
        let n = ip("2001:db8::1");
        assert!(t.learn(2, n, MAC_B, t0).is_empty());
        let t1 = t0 + Duration::from_secs(31);
        // stale: still used, one refresh request asked for, once
        assert_eq!(
            t.resolve(2, n, 1, t1),
            Resolution::Ready {
                mac: MAC_B,
                item: 1,
                solicit: true
            }
        );
        assert_eq!(
            t.resolve(2, n, 2, t1),
            Resolution::Ready {
                mac: MAC_B,
                item: 2,
                solicit: false
            }
        );
        // the answer refreshes it
        t.learn(2, n, MAC_A, t1);
        assert_eq!(
            t.resolve(2, n, 3, t1),
            Resolution::Ready {
                mac: MAC_A,
                item: 3,
                solicit: false
            }
        );
        // ages to stale in tick, then is removed after gc
        let tick = t.tick(t1 + Duration::from_secs(30));
        assert!(tick.solicit.is_empty() && tick.dropped.is_empty());
        assert_eq!(t.lookup(2, n), Some(MAC_A));
        t.tick(t1 + Duration::from_secs(30 + 60));
        assert_eq!(t.lookup(2, n), None);
        assert!(t.is_empty());
    }

    #[test]
    fn retries_then_fails() {
        let mut t = table();
        let t0 = Instant::now();
        let n = ip("10.0.0.9");
        t.resolve(0, n, 7, t0);
        t.resolve(0, n, 8, t0);
        let s = Duration::from_secs(1);
        assert!(t.tick(t0 + s / 2).solicit.is_empty());
        assert_eq!(t.tick(t0 + s).solicit, vec![(0, n)]);
        assert_eq!(t.tick(t0 + 2 * s).solicit, vec![(0, n)]);
        let last = t.tick(t0 + 3 * s);
        assert!(last.solicit.is_empty());
        assert_eq!(last.dropped, vec![7, 8]);
        assert_eq!(t.counters.unresolved, 2);
        assert_eq!(t.counters.failed, 1);
        assert_eq!(t.counters.solicits, 3);
        assert!(t.is_empty());
    }

    #[test]
    fn unresolved_lists_incomplete_only() {
        let mut t = table();
        let t0 = Instant::now();
        t.resolve(0, ip("10.0.0.1"), 1, t0);
        t.learn(0, ip("10.0.0.2"), MAC_A, t0);
        assert_eq!(
            t.unresolved().collect::<Vec<_>>(),
            vec![(0, ip("10.0.0.1"))]
        );
        t.learn(0, ip("10.0.0.1"), MAC_B, t0);
        assert_eq!(t.unresolved().count(), 0);
    }

    #[test]
    fn shared_publish_get_refresh_and_age() {
        let s = SharedNeighbours::new(Duration::from_secs(15), Duration::from_secs(30), 2);
        let t0 = Instant::now();
        let a = ip("192.168.0.1");
        assert_eq!(s.get(0, a, t0), None);
        assert!(s.publish(0, a, MAC_A, t0));
        assert_eq!(s.get(0, a, t0), Some(MAC_A));
        assert_eq!(s.get(1, a, t0), None, "per port");
        // unchanged and recent: no write
        assert!(!s.publish(0, a, MAC_A, t0 + Duration::from_secs(1)));
        // changed: written at once
        assert!(s.publish(0, a, MAC_B, t0 + Duration::from_secs(2)));
        assert_eq!(s.get(0, a, t0 + Duration::from_secs(2)), Some(MAC_B));
        // unchanged but old: refreshed
        assert!(s.publish(0, a, MAC_B, t0 + Duration::from_secs(20)));
        // too old: not answered
        assert_eq!(s.get(0, a, t0 + Duration::from_secs(51)), None);
        // bounded; old entries pruned by a write
        assert!(s.publish(0, ip("10.0.0.1"), MAC_A, t0 + Duration::from_secs(20)));
        assert!(!s.publish(0, ip("10.0.0.2"), MAC_A, t0 + Duration::from_secs(20)));
        assert_eq!(s.len(), 2);
        assert!(s.publish(0, ip("10.0.0.2"), MAC_A, t0 + Duration::from_secs(60)));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn static_neighbours_are_answered_forever_and_never_replaced() {
        let s = SharedNeighbours::new(Duration::from_secs(15), Duration::from_secs(30), 2)
            .with_static([(1, ip("10.0.0.2"), MAC_A)]);
        let t0 = Instant::now();
        assert!(s.is_static(1, ip("10.0.0.2")));
        assert!(!s.is_static(0, ip("10.0.0.2")), "per port");
        assert_eq!(s.static_len(), 1);
        assert_eq!(s.get(1, ip("10.0.0.2"), t0), Some(MAC_A));
        // a day later: still there
        let later = t0 + Duration::from_secs(86_400);
        assert_eq!(s.get(1, ip("10.0.0.2"), later), Some(MAC_A));
        // what a worker learns does not replace it, nor take room in the learned table
        assert!(!s.publish(1, ip("10.0.0.2"), MAC_B, t0));
        assert_eq!(s.get(1, ip("10.0.0.2"), t0), Some(MAC_A));
        assert!(s.is_empty());
        // other neighbours are learned as before
        assert!(s.publish(1, ip("10.0.0.3"), MAC_B, t0));
        assert_eq!(s.get(1, ip("10.0.0.3"), t0), Some(MAC_B));
        assert_eq!(s.get(1, ip("10.0.0.3"), later), None);
    }

    #[test]
    fn table_full_refuses() {
        let mut t = NeighbourTable::new(NeighbourConfig {
            max_entries: 1,
            hold: 0,
            ..NeighbourConfig::default()
        });
        let t0 = Instant::now();
        assert_eq!(
            t.resolve(0, ip("10.0.0.1"), 1, t0),
            Resolution::Held {
                solicit: true,
                dropped: Some(1)
            }
        );
        assert_eq!(t.resolve(0, ip("10.0.0.2"), 2, t0), Resolution::Refused(2));
        assert_eq!(t.counters.table_full, 1);
        // learning is bounded too, but an existing entry is still updated
        assert!(t.learn(0, ip("10.0.0.3"), MAC_A, t0).is_empty());
        assert!(!t.contains(0, ip("10.0.0.3")));
        assert_eq!(t.counters.table_full, 2);
        t.learn(0, ip("10.0.0.1"), MAC_A, t0);
        assert_eq!(t.lookup(0, ip("10.0.0.1")), Some(MAC_A));
    }

    #[test]
    fn arp_request_reply_bytes() {
        let req = Arp::request(
            MAC_A,
            "192.168.0.10".parse().unwrap(),
            "192.168.0.1".parse().unwrap(),
        );
        let f = req.frame();
        let want: [u8; 42] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 0xa, 0x08, 0x06, // ethernet
            0, 1, 0x08, 0, 6, 4, 0, 1, // htype ptype hlen plen op
            2, 0, 0, 0, 0, 0xa, 192, 168, 0, 10, // sender
            0, 0, 0, 0, 0, 0, 192, 168, 0, 1, // target
        ];
        assert_eq!(f, want);
        assert_eq!(Arp::parse_frame(&f), Some(req));
        let rep = Arp::reply_to(&req, MAC_B);
        let g = rep.frame();
        assert_eq!(&g[0..6], &MAC_A.0);
        assert_eq!(&g[6..12], &MAC_B.0);
        assert_eq!(&g[20..22], &[0, 2]);
        let back = Arp::parse_frame(&g).unwrap();
        assert_eq!(back, rep);
        assert_eq!(back.sender_ip, "192.168.0.1".parse::<Ipv4Addr>().unwrap());
        // not ARP / truncated / wrong hardware
        assert_eq!(Arp::parse_frame(&g[..41]), None);
        let mut bad = g;
        bad[15] = 6;
        assert_eq!(Arp::parse_frame(&bad), None);
        bad = g;
        bad[12] = 0x86;
        assert_eq!(Arp::parse_frame(&bad), None);
    }

    #[test]
    fn solicited_node_and_mac() {
        let a: Ipv6Addr = "2001:db8::12:3456:789a".parse().unwrap();
        assert_eq!(
            solicited_node(a),
            "ff02::1:ff56:789a".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            multicast_mac(solicited_node(a)),
            MacAddr([0x33, 0x33, 0xff, 0x56, 0x78, 0x9a])
        );
    }

    #[test]
    fn ns_na_bytes_and_checksum() {
        let me: Ipv6Addr = "fe80::1".parse().unwrap();
        let target: Ipv6Addr = "fe80::2".parse().unwrap();
        let ns = Nd::solicit(MAC_A, me, target);
        let f = ns.frame(MAC_A, multicast_mac(ns.dst));
        assert_eq!(f.len(), ND_FRAME_LEN);
        assert_eq!(&f[0..6], &[0x33, 0x33, 0xff, 0, 0, 2]);
        assert_eq!(&f[12..14], &[0x86, 0xdd]);
        assert_eq!(f[14 + 6], 58);
        assert_eq!(f[14 + 7], 255);
        assert_eq!(&f[14 + 24..14 + 40], &solicited_node(target).octets());
        let icmp = &f[54..];
        assert_eq!(icmp[0], 135);
        assert_eq!(&icmp[24..32], &[1, 1, 2, 0, 0, 0, 0, 0xa]);
        // The checksum, recomputed from scratch over pseudo-header + message, verifies.
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&me.octets());
        pseudo.extend_from_slice(&solicited_node(target).octets());
        pseudo.extend_from_slice(&[0, 0, 0, 32, 0, 0, 0, 58]);
        pseudo.extend_from_slice(icmp);
        assert_eq!(crate::wire::checksum::checksum(&pseudo), 0);
        let parsed = Nd::parse(&f[14..]).unwrap();
        assert_eq!(parsed, ns);

        let na = Nd::advert_to(&parsed, MAC_B);
        let g = na.frame(MAC_B, MAC_A);
        assert_eq!(g.len(), ND_FRAME_LEN);
        assert_eq!(g[54], 136);
        assert_eq!(&g[58..62], &[0x60, 0, 0, 0]); // solicited + override
        assert_eq!(&g[78..86], &[2, 1, 2, 0, 0, 0, 0, 0xb]);
        let back = Nd::parse(&g[14..]).unwrap();
        assert_eq!(back, na);
        assert_eq!(back.dst, me);
        assert_eq!(back.lladdr, Some(MAC_B));

        // Corruptions are refused: a flipped bit, a hop limit below 255, a zero-length option.
        let mut bad = g.clone();
        bad[70] ^= 1;
        assert_eq!(Nd::parse(&bad[14..]), None);
        let mut bad = g.clone();
        bad[14 + 7] = 64;
        assert_eq!(Nd::parse(&bad[14..]), None);
        let mut bad = g.clone();
        bad[79] = 0;
        assert_eq!(Nd::parse(&bad[14..]), None);
        assert_eq!(Nd::parse(&g[14..60]), None);
    }

    #[test]
    fn ns_without_option() {
        let ns = Nd {
            lladdr: None,
            ..Nd::solicit(MAC_A, "::".parse().unwrap(), "2001:db8::5".parse().unwrap())
        };
        let f = ns.frame(MAC_A, multicast_mac(ns.dst));
        assert_eq!(f.len(), ND_FRAME_LEN - 8);
        assert_eq!(Nd::parse(&f[14..]), Some(ns));
    }

    proptest::proptest! {
        /// Whatever the addresses and operation, an ARP packet built then read is itself.
        #[test]
        fn arp_round_trip(op in proptest::bool::ANY, sm in proptest::array::uniform6(0u8..), si in proptest::prelude::any::<u32>(),
                          tm in proptest::array::uniform6(0u8..), ti in proptest::prelude::any::<u32>()) {
            let a = Arp {
                op: if op { ArpOp::Request } else { ArpOp::Reply },
                sender_mac: MacAddr(sm),
                sender_ip: si.into(),
                target_mac: MacAddr(tm),
                target_ip: ti.into(),
            };
            proptest::prop_assert_eq!(Arp::parse_frame(&a.frame()), Some(a));
        }

        /// Whatever the addresses and flags, an NS or NA built then read is itself (a
        /// multicast target is refused, as RFC 4861 says).
        #[test]
        fn nd_round_trip(src in proptest::prelude::any::<u128>(), dst in proptest::prelude::any::<u128>(),
                         target in proptest::prelude::any::<u128>(), kind in 0u8..9,
                         mac in proptest::option::of(proptest::array::uniform6(0u8..))) {
            let nd = Nd {
                kind: if kind == 8 {
                    NdKind::Solicit
                } else {
                    NdKind::Advert { router: kind & 1 != 0, solicited: kind & 2 != 0, override_: kind & 4 != 0 }
                },
                src: src.into(),
                dst: dst.into(),
                target: target.into(),
                lladdr: mac.map(MacAddr),
            };
            let f = nd.frame(MAC_A, MAC_B);
            let want = (!nd.target.is_multicast()).then_some(nd);
            proptest::prop_assert_eq!(Nd::parse(&f[14..]), want);
        }
    }
}
