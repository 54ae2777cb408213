//! The poll-mode worker: one per configured lcore, pinned, polling its share of the ports'
//! RX queues and its queue of every TAP, in bursts of 32.
//!
//! Per burst, top to bottom: rx -> parse to keys -> classify the batch with one snapshot of
//! the rule set -> dispatch (kernel TAP, peer port, routed next hop, drop) -> outflows for
//! what leaves -> tx. No allocation, lock or syscall on this path: scratch arrays live in the
//! worker, counters are single-writer, the rule set (with the routing tables) is one
//! `arc_swap` load per burst.
//!
//! Routing (`table T`, `docs/routing.md`): a flow verdict `table T` looks T up for the
//! destination (falling back to main), takes one off the TTL / hop limit (an expired packet
//! goes to the kernel through the input port's TAP, for ICMP time exceeded), runs the
//! outflows with iface = the chosen port, then resolves the next hop's MAC in this worker's
//! [`NeighbourTable`] and rewrites the Ethernet addresses. An outflow verdict `table T`
//! re-routes the leaving packet once with T (the kernel's own packets keep their TTL).
//! Only an unresolved next hop leaves the fast path: its packets are held (at most 4) while
//! an ARP request / neighbour solicitation goes out.
//!
//! Directors (`docs/director.md`, "In the dataplane"): a flow verdict `director D` goes to
//! this worker's [`DirectorWorker`] for D (schedule, NAT rewrite), then is routed with the
//! main table towards the server as above; in tunnel mode it then gets an outer IP header
//! (port address -> server) in its headroom, and the outflows see that outer packet. With a
//! NAT director, packets from the ports are first offered to the directors as replies
//! (rewritten back to the VIP, routed to the client) before the flows see them. With several
//! workers, a NAT director's packets are finished by the worker owning their connection
//! ([`crate::handoff`]): a worker hands the others theirs over rings, and polls its own rings
//! like RX queues.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use flowgate_config::appliance::{MacAddr, Mode};
use flowgate_config::flows::{Action, Family, L4};

use crate::classify::{Key, L4Kind, Verdict, BATCH};
use crate::counters::{DropReason, RuleCounters, VerdictKind, WorkerCounters};
use crate::director::icmp;
use crate::director::rewrite::{encapsulate, tunnel_overhead};
use crate::director::shared::STATS_EVERY_MS;
use crate::director::{
    DirectorSet, DirectorWorker, SharedDirectors, Verdict as DirVerdict, WorkerOptions,
};
use crate::dpdk::{Burst, Mbuf, Mempool, RingReader, RxQueue, TxQueue};
use crate::handoff::{Handoff, NatServers, Tag};
use crate::route::forward::{decrement_ttl, rewrite_macs, NotForwarded};
use crate::route::neigh::{multicast_mac, ArpOp, NdKind};
use crate::route::{
    Arp, Nd, NeighbourConfig, NeighbourTable, NextHop, Resolution, SharedNeighbours,
};
use crate::ruleset::{CompiledList, RuleSet, NO_DIRECTOR};
use crate::wire::{self, field, Frame, IpFacts};

/// After this many consecutive empty polling rounds the worker naps briefly (see
/// [`IDLE_NAP`]), so an idle appliance does not burn its cores; under load it never naps.
pub const IDLE_ROUNDS: u32 = 1024;
pub const IDLE_NAP: Duration = Duration::from_micros(50);
/// How often the neighbour table's timers run (retransmits, failures, ageing).
pub const NEIGHBOUR_TICK: Duration = Duration::from_millis(100);
/// While this worker waits for a next hop, how often it looks for it in the shared table
/// (a walk over its own table: not every polling round).
pub const SHARED_POLL: Duration = Duration::from_millis(1);

/// Connection-table entries each director's expiry sweep visits per polling round.
pub const EXPIRE_BUDGET: usize = 64;
/// The main routing table: director output (to servers, NAT replies to clients) uses it.
pub const MAIN_TABLE: u32 = 254;

const ICMPV6: u8 = 58;
const ND_SOLICIT: u8 = 135;
const ND_ADVERT: u8 = 136;

/// Where a packet goes after the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum To {
    /// The kernel, through the TAP of this port.
    Kernel(u16),
    /// Out this physical port, as it is.
    Port(u16),
    /// Routed: out this port to the MAC of neighbour `via` (resolved at dispatch).
    Hop {
        port: u16,
        via: IpAddr,
    },
    Drop(DropReason),
    /// To the worker owning its NAT connection (the mbuf's tag says what it is).
    Handoff(u8),
}

/// What the worker knows of one port.
#[derive(Debug, Clone, Copy)]
pub struct PortRole {
    /// The port has a TAP (the kernel sees it).
    pub kernel: bool,
    /// Inline mode: permitted packets leave through this port instead of the kernel.
    pub peer: Option<u16>,
    /// The port's MAC (its TAP's too): the source of routed frames and of ARP / ND requests.
    pub mac: MacAddr,
    /// The port's MTU (bytes of IP packet): what a tunnel-mode director's packets, outer
    /// header included, may not exceed ([`DEFAULT_MTU`] when the device does not say).
    pub mtu: u16,
}

/// The MTU assumed for a port whose device does not tell its own.
pub const DEFAULT_MTU: u16 = 1500;

/// The queues one worker owns.
#[derive(Debug)]
pub struct Queues<'p> {
    /// (port index, RX queue) of the physical ports this worker polls.
    pub port_rx: Vec<(u16, RxQueue<'p>)>,
    /// (port index, RX queue) of the TAPs this worker polls (kernel output).
    pub tap_rx: Vec<(u16, RxQueue<'p>)>,
    /// This worker's TX queue on every physical port, by port index.
    pub port_tx: Vec<TxQueue<'p>>,
    /// This worker's TX queue on every TAP, by port index (`None`: no TAP).
    pub tap_tx: Vec<Option<TxQueue<'p>>>,
    /// Where the ARP requests and neighbour solicitations this worker sends are allocated.
    pub pool: Mempool,
    /// Next hops learned by any worker (`docs/routing.md`, "Neighbours").
    pub neighbours: &'p SharedNeighbours,
}

/// One poll-mode worker.
#[derive(Debug)]
pub struct Worker<'p> {
    /// Worker index: selects this worker's rule counters in every rule set.
    index: usize,
    queues: Queues<'p>,
    roles: Vec<PortRole>,
    port_out: Vec<Burst>,
    tap_out: Vec<Burst>,
    counters: Arc<WorkerCounters>,
    rules: &'p ArcSwap<RuleSet>,
    stop: &'p AtomicBool,
    /// Next hops of routed packets, with the packets held while one is resolved.
    neigh: NeighbourTable<Mbuf>,
    /// Read once per polling round.
    now: Instant,
    last_tick: Instant,
    /// Some neighbour is being resolved: look at the shared table every [`SHARED_POLL`].
    pending: bool,
    last_shared: Instant,
    // scratch, reused for every burst
    keys: [Key; BATCH],
    verdicts: [Verdict; BATCH],
    /// For key j, the packet index in the burst.
    key_pkt: [u8; BATCH],
    /// For key j (egress keys): the TTL was already taken off (routed by a flow).
    routed: [bool; BATCH],
    /// For packet i: offset of its IP header.
    l3: [u16; BATCH],
    /// Packets (indexes) that may teach a neighbour (ARP, NS, NA from a port).
    learn: [u8; BATCH],
    n_learn: usize,
    /// Bytes of the frames the last `parse` read.
    parsed_bytes: u64,
    to: [To; BATCH],
    /// The directors' published snapshot (`None`: no director wired in).
    directors: Option<&'p SharedDirectors>,
    /// This worker's tables and counters, one per director (index as in the `DirectorSet`).
    dws: Vec<DirectorWorker>,
    /// The NAT directors' servers: only their TCP/UDP packets can be replies.
    nat_servers: NatServers,
    /// The directors' clock: milliseconds since `epoch`, read once per polling round.
    epoch: Instant,
    now_ms: u64,
    last_dstats: u64,
    /// Packets (indexes) of the burst taken as NAT replies, and their output port.
    reply_pkt: [u8; BATCH],
    reply_port: [u16; BATCH],
    /// Hand-over of NAT director packets between workers (`None`: one worker, no NAT).
    handoff: Option<&'p Handoff>,
    /// This worker's hand-over rings, one per input port, polled like RX queues.
    ho_rx: Vec<(u16, RingReader<'p>)>,
    /// By owner worker: what the current burst hands over.
    ho_out: Vec<Burst>,
    /// The burst being handled came from a hand-over ring (its tags are meaningful).
    handed: bool,
    /// Packets of a handed burst that a flow already sent to a director, and which.
    fwd_pkt: [u8; BATCH],
    fwd_dir: [u16; BATCH],
}

impl<'p> Worker<'p> {
    pub fn new(
        index: usize,
        queues: Queues<'p>,
        roles: Vec<PortRole>,
        counters: Arc<WorkerCounters>,
        rules: &'p ArcSwap<RuleSet>,
        stop: &'p AtomicBool,
    ) -> Worker<'p> {
        let n = roles.len();
        let now = Instant::now();
        Worker {
            index,
            queues,
            roles,
            port_out: (0..n).map(|_| Burst::new()).collect(),
            tap_out: (0..n).map(|_| Burst::new()).collect(),
            counters,
            rules,
            stop,
            neigh: NeighbourTable::new(NeighbourConfig::default()),
            now,
            last_tick: now,
            pending: false,
            last_shared: now,
            keys: [Key::default(); BATCH],
            verdicts: [Verdict::default(); BATCH],
            key_pkt: [0; BATCH],
            routed: [false; BATCH],
            l3: [0; BATCH],
            learn: [0; BATCH],
            n_learn: 0,
            parsed_bytes: 0,
            to: [To::Drop(DropReason::TxFull); BATCH],
            directors: None,
            dws: Vec::new(),
            nat_servers: NatServers::default(),
            epoch: now,
            now_ms: 0,
            last_dstats: 0,
            reply_pkt: [0; BATCH],
            reply_port: [0; BATCH],
            handoff: None,
            ho_rx: Vec::new(),
            ho_out: Vec::new(),
            handed: false,
            fwd_pkt: [0; BATCH],
            fwd_dir: [0; BATCH],
        }
    }

    /// Hand NAT director packets to the worker owning their connection, and finish those
    /// the others hand to this one (`crate::handoff`). Takes this worker's ring readers: an
    /// error if another worker object took them already.
    pub fn with_handoff(mut self, handoff: &'p Handoff) -> Result<Self, String> {
        if self.index >= handoff.workers() || handoff.workers() > usize::from(u8::MAX) {
            return Err(format!(
                "worker {} is not one of the hand-over's {} workers",
                self.index,
                handoff.workers()
            ));
        }
        for p in 0..handoff.ports() {
            let reader = handoff
                .ring(self.index, p)
                .and_then(|r| r.reader())
                .ok_or_else(|| {
                    format!("worker {}: hand-over ring {p} already taken", self.index)
                })?;
            self.ho_rx.push((p as u16, reader));
        }
        self.ho_out = (0..handoff.workers()).map(|_| Burst::new()).collect();
        self.handoff = Some(handoff);
        Ok(self)
    }

    /// The worker to hand packet `key`, sent to director `d` by a flow, to: its owner when
    /// that is another worker and `d` is a NAT director.
    #[inline]
    fn forward_owner(&self, d: u16, key: &Key) -> Option<u8> {
        let h = self.handoff?.owners();
        if self.handed || key.l4 != L4Kind::Ports || !h.is_nat(d) {
            return None;
        }
        let o = h.owner(key.v6, key.src, key.sport);
        (o != self.index).then_some(o as u8)
    }

    /// The worker to hand TCP/UDP packet `key`, from a NAT server but no reply of this
    /// worker's connections, to as a possible NAT reply: its client endpoint's owner, when
    /// that is another worker.
    #[inline]
    fn reply_owner(&self, key: &Key) -> Option<u8> {
        let h = self.handoff?.owners();
        if self.handed {
            return None;
        }
        let o = h.owner(key.v6, key.dst, key.dport);
        (o != self.index).then_some(o as u8)
    }

    /// The worker to hand ICMP error `p` (key `key`) to, when it is about none of this
    /// worker's NAT connections: the owner of the client endpoint of the packet it quotes
    /// ([`crate::handoff::Owners::icmp_owner`]), when that is another worker.
    fn icmp_owner(&self, burst: &Burst, p: usize, key: &Key) -> Option<u8> {
        let h = self.handoff?.owners();
        if self.handed || !is_icmp_error(key) {
            return None;
        }
        let frame = burst.packet(p)?;
        let Frame::Ip(facts) = wire::parse(frame) else {
            return None;
        };
        let o = h.icmp_owner(&icmp::embedded(frame, &facts)?);
        (o != self.index).then_some(o as u8)
    }

    /// Put what this burst handed over into the owners' rings for `port`; what does not fit
    /// is dropped and counted.
    fn flush_handoff(&mut self, port: u16) {
        let Some(h) = self.handoff else { return };
        for w in 0..self.ho_out.len() {
            let out = &mut self.ho_out[w];
            if out.is_empty() {
                continue;
            }
            let n = out.len();
            let sent = h.ring(w, usize::from(port)).map_or(0, |r| r.enqueue(out));
            out.clear();
            self.counters.handoff.handed_out.add(sent as u64);
            for _ in sent..n {
                self.counters.dropped(DropReason::HandoffFull);
            }
        }
    }

    /// Run the directors of `shared`: this worker's connection tables are allocated now (from
    /// the current snapshot) and live as long as the worker, across rule swaps. Each table
    /// holds this worker's share of its director's `max_connections` (connections are spread
    /// over the workers by their client endpoint), with a little slack for an uneven spread;
    /// `opts.capacity` is not used.
    pub fn with_directors(mut self, shared: &'p SharedDirectors, opts: WorkerOptions) -> Self {
        let set = shared.set.load();
        let workers = shared.stats.len().max(1);
        self.dws = set
            .iter()
            .map(|st| {
                let capacity = worker_share(st.max_connections, workers);
                DirectorWorker::new(st, WorkerOptions { capacity, ..opts })
            })
            .collect();
        self.nat_servers = NatServers::new(&set);
        self.directors = Some(shared);
        self
    }

    /// Once per polling round: expire connections (bounded), and every
    /// [`STATS_EVERY_MS`] copy the counters out for the control side.
    fn director_round(&mut self) {
        self.now_ms = self.now.saturating_duration_since(self.epoch).as_millis() as u64;
        for dw in &mut self.dws {
            dw.expire(self.now_ms, EXPIRE_BUDGET);
        }
        if self.now_ms.saturating_sub(self.last_dstats) < STATS_EVERY_MS {
            return;
        }
        self.last_dstats = self.now_ms;
        self.publish_director_stats(false);
    }

    /// Copy the director counters out for the control side; unless `wait`, only if the
    /// reader does not hold them (next time otherwise).
    fn publish_director_stats(&mut self, wait: bool) {
        let Some(slot) = self.directors.and_then(|d| d.stats.get(self.index)) else {
            return;
        };
        let guard = if wait {
            slot.lock().ok()
        } else {
            slot.try_lock().ok()
        };
        if let Some(mut out) = guard {
            for (o, dw) in out.iter_mut().zip(&self.dws) {
                *o = dw.counters();
            }
        }
    }

    /// Packet `p`, classified `director d`: the director schedules it (and in NAT mode
    /// rewrites its destination to the server). Where it goes (the server), its new key
    /// (iface to be set by the caller) and whether the director is in tunnel mode (the
    /// caller encapsulates it with [`Worker::tunnel`] once routed), or where it goes instead.
    fn director_forward(
        &mut self,
        burst: &mut Burst,
        p: usize,
        d: u16,
        set: Option<&DirectorSet>,
    ) -> Result<(IpAddr, Key, bool), To> {
        let unavailable = To::Drop(DropReason::DirectorUnavailable);
        if d == NO_DIRECTOR {
            return Err(unavailable);
        }
        let (Some(set), Some(dw)) = (set, self.dws.get_mut(usize::from(d))) else {
            return Err(unavailable);
        };
        let Some(st) = set.get(usize::from(d)) else {
            return Err(unavailable);
        };
        let Some(frame) = burst.packet_mut(p) else {
            return Err(To::Drop(DropReason::RouteTruncated));
        };
        let Frame::Ip(facts) = wire::parse(frame) else {
            return Err(unavailable);
        };
        match dw.forward(st, frame, &facts, self.now_ms) {
            DirVerdict::Drop(_) => Err(To::Drop(DropReason::DirectorDrop)),
            DirVerdict::Forward { to, .. } => match wire::parse(frame) {
                Frame::Ip(after) => Ok((to, key_of(&after, 0), st.mode == Mode::Tunnel)),
                _ => Err(To::Drop(DropReason::DirectorDrop)),
            },
        }
    }

    /// Director packet `p` (key `key`, from port `input`) routed out port `out.0` towards
    /// server `out.1`: one off its TTL / hop limit, then, for a tunnel-mode director
    /// (`out.2`), into its tunnel. The key of what leaves, or where it goes instead.
    #[inline]
    fn director_ttl(
        &mut self,
        burst: &mut Burst,
        p: usize,
        key: Key,
        input: u16,
        out: (usize, IpAddr, bool),
        rules: &RuleSet,
    ) -> Result<Key, To> {
        if let (port, server, true) = out {
            if let Some(mtu) = self.tunnel_too_big(burst, p, &key, port, server) {
                return Err(self.too_big(burst, p, &key, input, mtu));
            }
        }
        self.take_ttl(burst, p, &key, input)?;
        match out {
            (port, server, true) => self.tunnel(burst, p, port, server, rules),
            _ => Ok(key),
        }
    }

    /// Tunnel mode: the MTU to announce (the output port's, less the outer header) when
    /// packet `p` would not fit in the output port's MTU once wrapped for `server`.
    fn tunnel_too_big(
        &self,
        burst: &Burst,
        p: usize,
        key: &Key,
        port: usize,
        server: IpAddr,
    ) -> Option<u32> {
        let family = if key.v6 { Family::V6 } else { Family::V4 };
        let ip_len = wire::ip_len(burst.packet(p)?, usize::from(self.l3[p]), family)?;
        let mtu = self.roles.get(port).map_or(DEFAULT_MTU, |r| r.mtu);
        (!tunnel_fits(ip_len, server, mtu))
            .then(|| u32::from(mtu).saturating_sub(tunnel_overhead(server) as u32))
    }

    /// Packet `p` (from `input`) does not fit the tunnel: as IPVS, an IPv4 packet that may
    /// not be fragmented (DF) and any IPv6 packet become an ICMP "fragmentation needed" /
    /// "packet too big" announcing `mtu`, sent back out `input` to the packet's sender (the
    /// caller runs the outflows on it: `To::Port(input)`); an IPv4 packet without DF is
    /// dropped (flowgate does not fragment). Either way the packet counts as `tunnel-too-big`.
    fn too_big(&mut self, burst: &mut Burst, p: usize, key: &Key, input: u16, mtu: u32) -> To {
        let drop = To::Drop(DropReason::TunnelTooBig);
        let l3 = usize::from(self.l3[p]);
        let family = if key.v6 { Family::V6 } else { Family::V4 };
        if family == Family::V4 {
            let df = burst
                .packet(p)
                .and_then(|f| f.get(l3 + field::IPV4_FRAG))
                .is_some_and(|b| b & 0x40 != 0);
            if !df {
                return drop;
            }
        }
        let mac = self.roles[usize::from(input)].mac.0;
        let Some(buf) = burst.prepend(p, icmp::too_big_overhead(family) as u16) else {
            return drop;
        };
        let total = buf.len();
        match icmp::too_big(buf, l3, family, mtu, mac) {
            Ok(len) if burst.trim(p, (total - len) as u16) => {
                // the packet itself was not forwarded (the error that replaces it is not a drop)
                self.counters.dropped(DropReason::TunnelTooBig);
                To::Port(input)
            }
            _ => drop,
        }
    }

    /// Tunnel mode: packet `p` (scheduled, its TTL taken off, routed out `port` towards
    /// `server`) gets an outer IP header from the port's address to the server in front of
    /// it (`docs/director.md`, "In the dataplane"). Its offsets now describe the outer
    /// packet; returns the outer packet's key (iface to be set by the caller).
    fn tunnel(
        &mut self,
        burst: &mut Burst,
        p: usize,
        port: usize,
        server: IpAddr,
        rules: &RuleSet,
    ) -> Result<Key, To> {
        let local = rules.routes.source_for(port, server);
        let mtu = self.roles.get(port).map_or(DEFAULT_MTU, |r| r.mtu);
        let over = tunnel_overhead(server) as u16;
        let buf = burst
            .prepend(p, over)
            .ok_or(To::Drop(DropReason::RouteTruncated))?;
        let total = buf.len();
        let (outer, len) = wrap_for_tunnel(buf, local, server, mtu).map_err(To::Drop)?;
        // the inner frame's Ethernet padding, if any, is not carried
        if len < total && !burst.trim(p, (total - len) as u16) {
            return Err(To::Drop(DropReason::RouteTruncated));
        }
        self.l3[p] = outer.l3_offset as u16;
        Ok(key_of(&outer, 0))
    }

    /// Packet `p` (key `j`) from `port`: a NAT reply of one of the directors? Then it is
    /// rewritten (source back to the VIP), routed with the main table towards the client,
    /// and `Some(output port)` (or `None` with its drop set in `to`) is returned in the
    /// outer `Some`; `None` when it is no reply (it goes on to the flows). An ICMP error
    /// about a NAT connection is translated (`DirectorWorker::icmp`) and routed the same
    /// way, towards the client or, for an error from the client's side, the server.
    fn director_reply(
        &mut self,
        burst: &mut Burst,
        p: usize,
        j: usize,
        port: u16,
        set: &DirectorSet,
        rules: &RuleSet,
    ) -> Option<Option<u16>> {
        let frame = burst.packet_mut(p)?;
        let Frame::Ip(facts) = wire::parse(frame) else {
            return None;
        };
        let mut verdict = None;
        for (i, dw) in self.dws.iter_mut().enumerate() {
            let Some(st) = set.get(i) else { continue };
            let v = match facts.l4 {
                L4::Icmp { .. } => dw.icmp(st, frame, &facts, self.now_ms),
                _ => dw.reply(st, frame, &facts, self.now_ms),
            };
            if let Some(v) = v {
                verdict = Some((v, st.mode));
                break;
            }
        }
        let (verdict, mode) = verdict?;
        let to = match verdict {
            DirVerdict::Drop(_) => {
                self.to[p] = To::Drop(DropReason::DirectorDrop);
                return Some(None);
            }
            DirVerdict::Forward { to, .. } => to,
        };
        let rc = &rules.counters[self.index.min(rules.counters.len() - 1)];
        let Some(hop) = route(rules, rc, MAIN_TABLE, to) else {
            self.to[p] = To::Drop(DropReason::NoRoute);
            return Some(None);
        };
        let ttl = self.take_ttl(burst, p, &self.keys[j], port);
        // a tunnel director's ICMP error for a server goes to it wrapped, as its packets do
        let wrapped = match (ttl, mode) {
            (Ok(()), Mode::Tunnel) => self.tunnel(burst, p, hop.port, to, rules).map(|_| ()),
            (ttl, _) => ttl,
        };
        match wrapped {
            Err(t) => {
                self.to[p] = t;
                Some(None)
            }
            Ok(()) => {
                self.to[p] = To::Hop {
                    port: hop.port as u16,
                    via: hop.neighbour(to),
                };
                Some(Some(hop.port as u16))
            }
        }
    }

    /// Poll until `stop` is set, then flush and return.
    pub fn run(mut self) {
        let mut idle = 0u32;
        let mut burst = Burst::new();
        while !self.stop.load(Ordering::Relaxed) {
            self.now = Instant::now();
            if !self.dws.is_empty() {
                self.director_round();
            }
            if self.pending && self.now.saturating_duration_since(self.last_shared) >= SHARED_POLL {
                self.last_shared = self.now;
                self.resolve_from_shared();
            }
            if self.now.saturating_duration_since(self.last_tick) >= NEIGHBOUR_TICK {
                self.last_tick = self.now;
                self.neighbour_tick();
            }
            let mut work = 0usize;
            for i in 0..self.queues.port_rx.len() {
                let port = self.queues.port_rx[i].0;
                if burst.rx(&mut self.queues.port_rx[i].1) > 0 {
                    work += burst.len();
                    self.ingress(port, &mut burst);
                }
            }
            for i in 0..self.ho_rx.len() {
                let port = self.ho_rx[i].0;
                if burst.rx_ring(&mut self.ho_rx[i].1) > 0 {
                    work += burst.len();
                    self.handed = true;
                    self.ingress(port, &mut burst);
                    self.handed = false;
                }
            }
            for i in 0..self.queues.tap_rx.len() {
                let port = self.queues.tap_rx[i].0;
                if burst.rx(&mut self.queues.tap_rx[i].1) > 0 {
                    work += burst.len();
                    self.kernel_egress(port, &mut burst);
                }
            }
            self.flush_all();
            if work == 0 {
                idle += 1;
                if idle >= IDLE_ROUNDS {
                    std::thread::sleep(IDLE_NAP);
                }
            } else {
                idle = 0;
                self.counters.busy_polls.add(1);
            }
        }
        self.flush_all();
        self.publish_director_stats(true);
    }

    /// Frames from physical port `port` (or handed over by another worker, received from
    /// that port): flows, then kernel / peer (through the outflows) / drop.
    fn ingress(&mut self, port: u16, burst: &mut Burst) {
        let handed = self.handed;
        if handed {
            self.counters.handoff.handed_in.add(burst.len() as u64);
        } else {
            self.counters.ports[usize::from(port)]
                .rx
                .add(burst.len() as u64);
        }
        let rules = self.rules.load();
        let role = self.roles[usize::from(port)];
        let iface = rules.flows.port_iface[usize::from(port)];
        let non_ip = role.kernel.then_some(To::Kernel(port));
        let mut n = self.parse(burst, iface, non_ip, !handed);
        if !handed {
            self.counters.ports[usize::from(port)]
                .rx_bytes
                .add(self.parsed_bytes);
        }
        let rc = &rules.counters[self.index.min(rules.counters.len() - 1)];
        let mut handing = false;
        if self.n_learn > 0 {
            self.learn_from(port, burst, &rules);
        }
        let dset = self.directors.map(|d| d.set.load());
        let dset: Option<&DirectorSet> = dset.as_deref().map(|a| a.as_ref());
        // NAT replies first (as IPVS does for its established connections): they leave the
        // key list, which keeps only what the flows decide
        let mut replies = 0usize;
        let mut forwards = 0usize;
        if !self.dws.is_empty() && n > 0 {
            if let Some(set) = dset {
                // the burst's reply lookups: index slots, then connections, prefetched for
                // all the keys before the first lookup, so their cache misses overlap
                use crate::director::Prefetch as DirPrefetch;
                for stage in [DirPrefetch::Slot, DirPrefetch::Conn] {
                    for key in &self.keys[..n] {
                        if !self.nat_servers.sent(key) {
                            continue;
                        }
                        for (dw, st) in self.dws.iter().zip(set.iter()) {
                            dw.prefetch_reply_key(st, stage, key);
                        }
                    }
                }
                let mut kept = 0usize;
                for j in 0..n {
                    let p = usize::from(self.key_pkt[j]);
                    if handed {
                        if let Tag::Forward(d) = Tag::decode(burst.tag(p).unwrap_or(0)) {
                            // a flow of the handing worker chose the director already
                            self.fwd_pkt[forwards] = p as u8;
                            self.fwd_dir[forwards] = d;
                            forwards += 1;
                            continue;
                        }
                    }
                    // a NAT reply comes from a NAT server; no other TCP/UDP is looked up
                    let from_server =
                        self.keys[j].l4 == L4Kind::Ports && self.nat_servers.sent(&self.keys[j]);
                    let is_reply = if from_server || is_icmp_error(&self.keys[j]) {
                        self.director_reply(burst, p, j, port, set, &rules)
                    } else {
                        None
                    };
                    match is_reply {
                        None => {
                            let owner = match from_server {
                                true => self.reply_owner(&self.keys[j]),
                                false => self.icmp_owner(burst, p, &self.keys[j]),
                            };
                            if let Some(o) = owner {
                                burst.set_tag(p, Tag::Reply.encode());
                                self.to[p] = To::Handoff(o);
                                handing = true;
                                continue;
                            }
                            self.keys[kept] = self.keys[j];
                            self.key_pkt[kept] = self.key_pkt[j];
                            kept += 1;
                        }
                        Some(out) => {
                            if let Some(out) = out {
                                self.reply_pkt[replies] = p as u8;
                                self.reply_port[replies] = out;
                                replies += 1;
                            }
                        }
                    }
                }
                n = kept;
            }
        }
        let mut egress = 0usize;
        if n > 0 {
            let list = &rules.flows;
            list.classifier
                .classify_batch(&self.keys[..n], &mut self.verdicts[..n]);
            // the burst's director lookups, prefetched as the replies' above
            if !self.dws.is_empty() {
                use crate::director::Prefetch as DirPrefetch;
                for stage in [DirPrefetch::Slot, DirPrefetch::Conn] {
                    for (key, &v) in self.keys[..n].iter().zip(&self.verdicts[..n]) {
                        if let Some(dw) = self.dws.get(usize::from(rules.director_of(v))) {
                            dw.prefetch_key(stage, key);
                        }
                    }
                }
            }
            for j in 0..n {
                let v = self.verdicts[j];
                let kind = count(list, v, &rc.flow_rules, &rc.flow_verdicts);
                let p = usize::from(self.key_pkt[j]);
                self.to[p] = match kind {
                    Some(VerdictKind::Permit) => match role.peer {
                        Some(peer) => {
                            // leaves through the peer: the outflows decide, with its iface
                            self.keys[egress] = self.keys[j];
                            self.keys[egress].iface = rules.outflows.port_iface[usize::from(peer)];
                            self.key_pkt[egress] = p as u8;
                            self.routed[egress] = false;
                            egress += 1;
                            To::Port(peer)
                        }
                        None if role.kernel => To::Kernel(port),
                        None => To::Drop(DropReason::NoKernel),
                    },
                    Some(VerdictKind::Deny) => To::Drop(DropReason::FlowDeny),
                    Some(VerdictKind::Director) => {
                        let d = rules.director_of(v);
                        match self.forward_owner(d, &self.keys[j]) {
                            Some(o) => {
                                burst.set_tag(p, Tag::Forward(d).encode());
                                handing = true;
                                To::Handoff(o)
                            }
                            None => self.direct(burst, p, d, dset, &rules, port, &mut egress),
                        }
                    }
                    Some(VerdictKind::Table) => {
                        let table = table_of(list, v);
                        let dst = dst_of(&self.keys[j]);
                        // for the appliance itself: delivered, as Linux's rule 0
                        // (`lookup local`) would before any policy table
                        let hop = match rules.routes.is_local(dst) {
                            true => Err(if role.kernel {
                                To::Kernel(port)
                            } else {
                                To::Drop(DropReason::NoKernel)
                            }),
                            false => {
                                route(&rules, rc, table, dst).ok_or(To::Drop(DropReason::NoRoute))
                            }
                        };
                        match hop {
                            Err(to) => to,
                            Ok(hop) => match self.take_ttl(burst, p, &self.keys[j], port) {
                                Err(to) => to,
                                Ok(()) => {
                                    let out = hop.port as u16;
                                    self.keys[egress] = self.keys[j];
                                    self.keys[egress].iface = rules.outflows.port_iface[hop.port];
                                    self.key_pkt[egress] = p as u8;
                                    self.routed[egress] = true;
                                    egress += 1;
                                    To::Hop {
                                        port: out,
                                        via: hop.neighbour(dst),
                                    }
                                }
                            },
                        }
                    }
                    None => To::Drop(DropReason::FlowDeny),
                };
            }
        }
        // what other workers' flows sent to a director of this worker's connections
        for k in 0..forwards {
            let p = usize::from(self.fwd_pkt[k]);
            let d = self.fwd_dir[k];
            self.to[p] = self.direct(burst, p, d, dset, &rules, port, &mut egress);
        }
        // the NAT replies join the outflows with their rewritten keys
        for r in 0..replies {
            let p = usize::from(self.reply_pkt[r]);
            let Some(Frame::Ip(facts)) = burst.packet(p).map(wire::parse) else {
                continue;
            };
            self.keys[egress] = key_of(
                &facts,
                rules.outflows.port_iface[usize::from(self.reply_port[r])],
            );
            self.key_pkt[egress] = p as u8;
            self.routed[egress] = true;
            egress += 1;
        }
        if egress > 0 {
            self.outflows(&rules, egress, Some(port), burst);
        }
        self.dispatch(burst, &rules);
        if handing {
            self.flush_handoff(port);
        }
    }

    /// Packet `p`, sent to director `d` by a flow: scheduled (NAT: rewritten), routed with the
    /// main table towards the server, its new key queued for the outflows (`egress`).
    #[allow(clippy::too_many_arguments)]
    fn direct(
        &mut self,
        burst: &mut Burst,
        p: usize,
        d: u16,
        dset: Option<&DirectorSet>,
        rules: &RuleSet,
        port: u16,
        egress: &mut usize,
    ) -> To {
        let rc = &rules.counters[self.index.min(rules.counters.len() - 1)];
        match self.director_forward(burst, p, d, dset) {
            Err(to) => to,
            Ok((server, key, t)) => match route(rules, rc, MAIN_TABLE, server) {
                None => To::Drop(DropReason::NoRoute),
                Some(hop) => {
                    match self.director_ttl(burst, p, key, port, (hop.port, server, t), rules) {
                        // a tunnel's "too big" error, back out the input port: the outflows
                        // decide whether it leaves, as for anything else leaving
                        Err(To::Port(back)) => {
                            let Some(Frame::Ip(facts)) = burst.packet(p).map(wire::parse) else {
                                return To::Drop(DropReason::TunnelTooBig);
                            };
                            let e = *egress;
                            self.keys[e] =
                                key_of(&facts, rules.outflows.port_iface[usize::from(back)]);
                            self.key_pkt[e] = p as u8;
                            self.routed[e] = true;
                            *egress += 1;
                            To::Port(back)
                        }
                        Err(to) => to,
                        Ok(key) => {
                            let e = *egress;
                            self.keys[e] = key;
                            self.keys[e].iface = rules.outflows.port_iface[hop.port];
                            self.key_pkt[e] = p as u8;
                            self.routed[e] = true;
                            *egress += 1;
                            To::Hop {
                                port: hop.port as u16,
                                via: hop.neighbour(server),
                            }
                        }
                    }
                }
            },
        }
    }

    /// Takes one off the TTL / hop limit of packet `p` (a transit packet being routed). When
    /// it cannot go on: where it goes instead (the input port's kernel for ICMP time
    /// exceeded, or a drop).
    #[inline]
    fn take_ttl(&self, burst: &mut Burst, p: usize, key: &Key, input: u16) -> Result<(), To> {
        let family = if key.v6 { Family::V6 } else { Family::V4 };
        let l3 = usize::from(self.l3[p]);
        match burst.packet_mut(p).map(|f| decrement_ttl(f, l3, family)) {
            Some(Ok(())) => Ok(()),
            Some(Err(NotForwarded::Expired)) if self.roles[usize::from(input)].kernel => {
                Err(To::Kernel(input))
            }
            Some(Err(NotForwarded::Expired)) => Err(To::Drop(DropReason::TtlExpired)),
            _ => Err(To::Drop(DropReason::RouteTruncated)),
        }
    }

    /// Frames the kernel sent out of port `port`'s TAP: outflows, then out the port.
    fn kernel_egress(&mut self, port: u16, burst: &mut Burst) {
        let pc = &self.counters.ports[usize::from(port)];
        pc.from_kernel.add(burst.len() as u64);
        let rules = self.rules.load();
        let iface = rules.outflows.port_iface[usize::from(port)];
        let n = self.parse(burst, iface, Some(To::Port(port)), false);
        for j in 0..n {
            self.to[usize::from(self.key_pkt[j])] = To::Port(port);
            // locally originated: a re-route by an outflow keeps the TTL
            self.routed[j] = true;
        }
        // kernel output the parser cannot read is dropped, not sent blindly
        for t in self.to[..burst.len()].iter_mut() {
            if let To::Drop(DropReason::Malformed(_)) = t {
                *t = To::Drop(DropReason::KernelMalformed);
            }
        }
        if n > 0 {
            self.outflows(&rules, n, None, burst);
        }
        self.dispatch(burst, &rules);
    }

    /// Parse every frame of the burst: IP frames get a key (with `iface`) in `keys[..n]`;
    /// non-IP frames go to `non_ip` (or are dropped when it is `None`); malformed ones are
    /// dropped. With `learn`, the frames that may teach a neighbour (ARP, NS, NA) are noted
    /// in `learn[..n_learn]`. Returns n.
    fn parse(&mut self, burst: &Burst, iface: u16, non_ip: Option<To>, learn: bool) -> usize {
        let mut n = 0;
        self.n_learn = 0;
        self.parsed_bytes = 0;
        for (i, frame) in burst.iter().enumerate() {
            self.parsed_bytes += frame.len() as u64;
            self.to[i] = match wire::parse(frame) {
                Frame::Ip(facts) => {
                    self.keys[n] = key_of(&facts, iface);
                    self.key_pkt[n] = i as u8;
                    self.l3[i] = facts.l3_offset as u16;
                    if learn && is_nd(&facts) {
                        self.learn[self.n_learn] = i as u8;
                        self.n_learn += 1;
                    }
                    n += 1;
                    continue;
                }
                Frame::NonIp { ethertype } => match non_ip {
                    Some(to) => {
                        let port = match to {
                            To::Kernel(p) | To::Port(p) | To::Hop { port: p, .. } => usize::from(p),
                            To::Drop(_) | To::Handoff(_) => 0,
                        };
                        self.counters.ports[port].non_ip.add(1);
                        if learn && ethertype == field::ETHERTYPE_ARP {
                            self.learn[self.n_learn] = i as u8;
                            self.n_learn += 1;
                        }
                        to
                    }
                    None => To::Drop(DropReason::NoKernel),
                },
                Frame::Malformed(why) => To::Drop(DropReason::Malformed(why)),
            };
        }
        n
    }

    /// Classify `keys[..n]` (already carrying the output port's iface) with the outflows,
    /// and turn the destinations of those packets into drops where denied, or into a new
    /// next hop where an outflow says `table T` (once; the iface condition was evaluated with
    /// the port chosen before). `input`: the port transit packets came from (`None`: the
    /// kernel's own packets, whose TTL a re-route does not touch).
    fn outflows(&mut self, rules: &RuleSet, n: usize, input: Option<u16>, burst: &mut Burst) {
        let list = &rules.outflows;
        if list.is_empty() && n > 0 {
            // no outflows: the default decides every packet; count it once for the batch
            let rc = &rules.counters[self.index.min(rules.counters.len() - 1)];
            let v = list.classifier.classify(&self.keys[0]);
            let kind = count(list, v, &rc.outflow_rules, &rc.outflow_verdicts);
            let more = n as u64 - 1;
            if let Some(c) = rc.outflow_rules.get(list.slot(v)) {
                c.add(more);
            }
            if let Some(k) = kind {
                rc.outflow_verdicts[k as usize].add(more);
            }
            if kind != Some(VerdictKind::Permit) {
                for j in 0..n {
                    self.to[usize::from(self.key_pkt[j])] = To::Drop(DropReason::OutflowDeny);
                }
            }
            return;
        }
        list.classifier
            .classify_batch(&self.keys[..n], &mut self.verdicts[..n]);
        let rc = &rules.counters[self.index.min(rules.counters.len() - 1)];
        for j in 0..n {
            let kind = count(
                list,
                self.verdicts[j],
                &rc.outflow_rules,
                &rc.outflow_verdicts,
            );
            let p = usize::from(self.key_pkt[j]);
            match kind {
                Some(VerdictKind::Permit) => {}
                Some(VerdictKind::Table) => {
                    let table = table_of(list, self.verdicts[j]);
                    let dst = dst_of(&self.keys[j]);
                    if link_scoped(dst) {
                        // stays on the link it was sent to (Linux: the local table, rule 0)
                        continue;
                    }
                    self.to[p] = match route(rules, rc, table, dst) {
                        None => To::Drop(DropReason::NoRoute),
                        Some(hop) => {
                            let ttl = match input {
                                Some(inp) if !self.routed[j] => {
                                    self.take_ttl(burst, p, &self.keys[j], inp)
                                }
                                _ => Ok(()),
                            };
                            match ttl {
                                Ok(()) => To::Hop {
                                    port: hop.port as u16,
                                    via: hop.neighbour(dst),
                                },
                                Err(to) => to,
                            }
                        }
                    };
                }
                _ => self.to[p] = To::Drop(DropReason::OutflowDeny),
            }
        }
    }

    /// Move every mbuf of the burst to its destination.
    fn dispatch(&mut self, burst: &mut Burst, rules: &RuleSet) {
        let to = self.to;
        let counters = Arc::clone(&self.counters);
        burst.drain_each(|i, m| match to[i] {
            To::Kernel(p) => {
                counters.ports[usize::from(p)].to_kernel.add(1);
                self.send(true, p, m);
            }
            To::Port(p) => self.send(false, p, m),
            To::Hop { port, via } => self.hop(port, via, m, rules),
            To::Drop(why) => {
                counters.dropped(why);
                drop(m);
            }
            To::Handoff(w) => match self.ho_out.get_mut(usize::from(w)) {
                Some(out) => {
                    if let Err(m) = out.push(m) {
                        counters.dropped(DropReason::HandoffFull);
                        drop(m);
                    }
                }
                None => counters.dropped(DropReason::HandoffFull),
            },
        });
    }

    /// A routed packet: to its next hop's MAC out `port`, or held while `via` is resolved.
    #[inline]
    fn hop(&mut self, port: u16, via: IpAddr, m: Mbuf, rules: &RuleSet) {
        let p = usize::from(port);
        match self.neigh.resolve(p, via, m, self.now) {
            Resolution::Ready { mac, item, solicit } => {
                self.send_routed(port, mac, item);
                if solicit {
                    self.solicit(port, via, rules);
                }
            }
            Resolution::Held { solicit, dropped } => {
                if let Some(d) = dropped {
                    self.counters.dropped(DropReason::NeighbourHoldOverflow);
                    drop(d);
                }
                if solicit {
                    // another worker may know it already
                    match self.queues.neighbours.get(p, via, self.now) {
                        Some(mac) => {
                            self.counters.neighbours.from_shared.add(1);
                            self.learned(port, via, mac);
                        }
                        None => {
                            self.pending = true;
                            self.solicit(port, via, rules);
                        }
                    }
                }
            }
            Resolution::Refused(m) => {
                self.counters.dropped(DropReason::NeighbourTableFull);
                drop(m);
            }
        }
    }

    /// Ethernet addresses of a routed frame (source: the port's, destination: the next
    /// hop's), then out the port.
    #[inline]
    fn send_routed(&mut self, port: u16, mac: MacAddr, mut m: Mbuf) {
        let src = self.roles[usize::from(port)].mac;
        if rewrite_macs(m.data_mut(), src, mac).is_ok() {
            self.send(false, port, m);
        } else {
            self.counters.dropped(DropReason::RouteTruncated);
        }
    }

    /// `ip` on `port` is at `mac` (this worker saw it, or another did): learn it and send
    /// what was held for it.
    fn learned(&mut self, port: u16, ip: IpAddr, mac: MacAddr) {
        let held = self.neigh.learn(usize::from(port), ip, mac, self.now);
        for m in held {
            self.send_routed(port, mac, m);
        }
    }

    /// Learn from the ARP / NS / NA frames noted by `parse` (they still go to the kernel),
    /// and tell the other workers. As Linux: replies and advertisements teach; a request
    /// teaches its sender when it asks for one of our addresses, or refreshes a neighbour
    /// already known (so the broadcast chatter of a LAN does not fill the tables).
    fn learn_from(&mut self, port: u16, burst: &Burst, rules: &RuleSet) {
        for k in 0..self.n_learn {
            let i = usize::from(self.learn[k]);
            let l3 = usize::from(self.l3[i]);
            let Some(t) = burst.packet(i).and_then(|f| neighbour_in(f, l3)) else {
                continue;
            };
            let (ip, mac) = (t.ip, t.mac);
            if mac == self.roles[usize::from(port)].mac {
                continue; // our own (the kernel's) frames looped back
            }
            let p = usize::from(port);
            let teaches = match t.asked {
                None => true,
                Some(asked) => {
                    rules.routes.owns(p, asked)
                        || self.neigh.contains(p, ip)
                        || self.queues.neighbours.get(p, ip, self.now).is_some()
                }
            };
            if !teaches {
                continue;
            }
            self.counters.neighbours.learned.add(1);
            self.learned(port, ip, mac);
            self.queues
                .neighbours
                .publish(usize::from(port), ip, mac, self.now);
        }
        self.n_learn = 0;
    }

    /// Resolve from the shared table what this worker still waits for.
    fn resolve_from_shared(&mut self) {
        let mut found = [(0u16, IpAddr::V4(Ipv4Addr::UNSPECIFIED), MacAddr([0; 6])); 8];
        let mut n = 0;
        let mut waiting = 0usize;
        for (port, ip) in self.neigh.unresolved() {
            waiting += 1;
            if let Some(mac) = self.queues.neighbours.get(port, ip, self.now) {
                if n < found.len() {
                    found[n] = (port as u16, ip, mac);
                    n += 1;
                }
            }
        }
        for &(port, ip, mac) in &found[..n] {
            self.counters.neighbours.from_shared.add(1);
            self.learned(port, ip, mac);
        }
        // still waiting for some (or more found than this round takes: look again)
        self.pending = waiting > n;
    }

    /// Neighbour timers: MACs changed in the shared table, re-send requests (unless another
    /// worker learned the answer), free what waited in vain.
    fn neighbour_tick(&mut self) {
        // a MAC another worker saw change (a gratuitous ARP after a failover): take it
        let mut changed = [(0u16, IpAddr::V4(Ipv4Addr::UNSPECIFIED), MacAddr([0; 6])); 8];
        let mut n = 0;
        for (port, ip, mac) in self.neigh.known() {
            if n == changed.len() {
                break; // the rest next tick
            }
            match self.queues.neighbours.get(port, ip, self.now) {
                Some(shared) if shared != mac => {
                    changed[n] = (port as u16, ip, shared);
                    n += 1;
                }
                _ => {}
            }
        }
        for &(port, ip, mac) in &changed[..n] {
            self.counters.neighbours.from_shared.add(1);
            self.learned(port, ip, mac);
        }
        let tick = self.neigh.tick(self.now);
        for _ in &tick.dropped {
            self.counters.dropped(DropReason::NeighbourUnresolved);
        }
        drop(tick.dropped);
        if tick.solicit.is_empty() {
            return;
        }
        let rules = self.rules.load();
        for (port, ip) in tick.solicit {
            let port = port as u16;
            match self.queues.neighbours.get(usize::from(port), ip, self.now) {
                Some(mac) => {
                    self.counters.neighbours.from_shared.add(1);
                    self.learned(port, ip, mac);
                }
                None => self.solicit(port, ip, &rules),
            }
        }
    }

    /// Send an ARP request (IPv4) or a neighbour solicitation (IPv6) for `target` out `port`.
    fn solicit(&mut self, port: u16, target: IpAddr, rules: &RuleSet) {
        let mac = self.roles[usize::from(port)].mac;
        let src = rules.routes.source_for(usize::from(port), target);
        let frame = solicitation(mac, src, target);
        let Some(mut m) = self.queues.pool.alloc() else {
            return;
        };
        match m.append(frame.len() as u16) {
            Some(buf) => buf.copy_from_slice(&frame),
            None => return,
        }
        self.counters.neighbours.solicits.add(1);
        self.send(false, port, m);
    }

    /// Queue `m` for port `p` (or its TAP), flushing the burst first when it is full.
    #[inline]
    fn send(&mut self, tap: bool, p: u16, m: Mbuf) {
        let i = usize::from(p);
        let out = if tap {
            &mut self.tap_out[i]
        } else {
            &mut self.port_out[i]
        };
        if let Err(m) = out.push(m) {
            self.flush(tap, i);
            let out = if tap {
                &mut self.tap_out[i]
            } else {
                &mut self.port_out[i]
            };
            if let Err(m) = out.push(m) {
                self.counters.dropped(DropReason::TxFull);
                drop(m);
            }
        }
    }

    fn flush_all(&mut self) {
        for i in 0..self.port_out.len() {
            if !self.port_out[i].is_empty() {
                self.flush(false, i);
            }
            if !self.tap_out[i].is_empty() {
                self.flush(true, i);
            }
        }
    }

    /// Transmit the pending burst of port `i` (or its TAP); what the queue refuses is dropped
    /// and counted.
    fn flush(&mut self, tap: bool, i: usize) {
        let (out, queue) = if tap {
            (&mut self.tap_out[i], self.queues.tap_tx[i].as_mut())
        } else {
            (&mut self.port_out[i], self.queues.port_tx.get_mut(i))
        };
        let Some(queue) = queue else {
            for _ in 0..out.len() {
                self.counters.dropped(DropReason::NoKernel);
            }
            out.clear();
            return;
        };
        let bytes = out.bytes();
        let before = out.len();
        out.tx(queue);
        let unsent = out.len();
        if !tap {
            let pc = &self.counters.ports[i];
            pc.tx.add((before - unsent) as u64);
            pc.tx_bytes.add(bytes.saturating_sub(out.bytes()));
        }
        for _ in 0..unsent {
            self.counters.dropped(DropReason::TxFull);
        }
        out.clear();
    }
}

/// Count a verdict of `list` into a generation's counters; its verdict kind.
#[inline]
fn count(
    list: &CompiledList,
    v: Verdict,
    rules: &[crate::counters::Counter],
    verdicts: &[crate::counters::Counter; 4],
) -> Option<VerdictKind> {
    if let Some(c) = rules.get(list.slot(v)) {
        c.add(1);
    }
    let kind = match list.classifier.action(v)? {
        Action::Permit => VerdictKind::Permit,
        Action::Deny => VerdictKind::Deny,
        Action::Director(_) => VerdictKind::Director,
        Action::Table(_) => VerdictKind::Table,
    };
    verdicts[kind as usize].add(1);
    Some(kind)
}

/// The table of a `table` verdict.
#[inline]
fn table_of(list: &CompiledList, v: Verdict) -> u32 {
    match list.classifier.action(v) {
        Some(Action::Table(t)) => *t,
        _ => 0,
    }
}

/// Looks `dst` up in `table` (main when it has no route), counting the lookup and the
/// fallback for the table asked.
#[inline]
fn route(rules: &RuleSet, rc: &RuleCounters, table: u32, dst: IpAddr) -> Option<NextHop> {
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

/// Tunnel mode on a frame lying at `buf[tunnel_overhead(server)..]`, with that room in front
/// of it: the inner packet (TTL already taken off) goes into an outer IPv4 / IPv6 header from
/// `local` (the output port's address of the server's family; `None`: it has none) to
/// `server`, provided the outer packet fits in `mtu` bytes. Returns the outer packet's facts
/// and the new frame's length (from `buf[0]`; shorter than `buf` when the inner frame had
/// Ethernet padding), or why it is dropped.
pub fn wrap_for_tunnel(
    buf: &mut [u8],
    local: Option<IpAddr>,
    server: IpAddr,
    mtu: u16,
) -> Result<(IpFacts, usize), DropReason> {
    let over = tunnel_overhead(server);
    let Some(Frame::Ip(inner)) = buf.get(over..).map(wire::parse) else {
        return Err(DropReason::RouteTruncated);
    };
    let local = local
        .filter(|l| l.is_ipv4() == server.is_ipv4())
        .ok_or(DropReason::TunnelNoSource)?;
    // the inner packet's IP length (the parser checked it lies within the frame)
    let ip_len = wire::ip_len(buf, over + inner.l3_offset, inner.family)
        .ok_or(DropReason::RouteTruncated)?;
    if !tunnel_fits(ip_len, server, mtu) {
        return Err(DropReason::TunnelTooBig);
    }
    let total = buf.len();
    let range = encapsulate(buf, over..total, &inner, local, server)
        .map_err(|_| DropReason::RouteTruncated)?;
    match buf.get(range.clone()).map(wire::parse) {
        Some(Frame::Ip(outer)) if range.start == 0 => Ok((outer, range.end)),
        _ => Err(DropReason::RouteTruncated),
    }
}

/// One worker's table size for a director limited to `max` connections over `workers`
/// workers: its even share, plus 1/8 for an uneven spread (one worker alone takes it all).
pub fn worker_share(max: u32, workers: usize) -> usize {
    let max = max as usize;
    if workers <= 1 {
        return max.max(1);
    }
    let share = max.div_ceil(workers);
    (share + share / 8).clamp(1, max.max(1))
}

/// Whether an IP packet of `ip_len` bytes still fits in `mtu` once tunnelled to `server`.
#[inline]
pub fn tunnel_fits(ip_len: usize, server: IpAddr, mtu: u16) -> bool {
    ip_len + tunnel_overhead(server) <= usize::from(mtu)
}

/// The destination address of a key.
#[inline]
fn dst_of(k: &Key) -> IpAddr {
    if k.v6 {
        IpAddr::V6(Ipv6Addr::from(k.dst))
    } else {
        IpAddr::V4(Ipv4Addr::from(k.dst as u32))
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

/// Whether an IP packet is a neighbour solicitation or advertisement.
#[inline]
fn is_nd(f: &IpFacts) -> bool {
    f.family == Family::V6
        && f.proto == ICMPV6
        && matches!(f.l4, L4::Icmp { icmptype } if icmptype == ND_SOLICIT || icmptype == ND_ADVERT)
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
    if frame.get(field::ETH_TYPE..field::ETH_HDR)? == field::ETHERTYPE_ARP.to_be_bytes() {
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

/// The packet of `key` is an ICMP (ICMPv6) error, which may be about a NAT connection.
#[inline]
fn is_icmp_error(key: &Key) -> bool {
    let family = if key.v6 { Family::V6 } else { Family::V4 };
    key.l4 == L4Kind::Icmp && icmp::is_error(family, key.icmptype)
}

/// The classifier key of a parsed IP packet arriving on (or leaving by) `iface`.
#[inline]
pub fn key_of(f: &IpFacts, iface: u16) -> Key {
    let (l4, sport, dport, icmptype) = match f.l4 {
        L4::Ports { sport, dport } => (L4Kind::Ports, sport, dport, 0),
        L4::Icmp { icmptype } => (L4Kind::Icmp, 0, 0, icmptype),
        L4::Fragment | L4::Other => (L4Kind::None, 0, 0, 0),
    };
    let (src, dst, v6) = match (f.src, f.dst) {
        (std::net::IpAddr::V4(s), std::net::IpAddr::V4(d)) => {
            (u128::from(u32::from(s)), u128::from(u32::from(d)), false)
        }
        (s, d) => (ip128(s), ip128(d), true),
    };
    Key {
        src,
        dst,
        iface,
        sport,
        dport,
        proto: f.proto,
        icmptype,
        v6,
        l4,
    }
}

fn ip128(a: std::net::IpAddr) -> u128 {
    match a {
        std::net::IpAddr::V4(a) => u128::from(u32::from(a)),
        std::net::IpAddr::V6(a) => u128::from(a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::{frame, FrameSpec};
    use flowgate_config::flows::{parse, parse_packet_line};

    /// The key the worker builds from real bytes equals the key `classify` builds from the
    /// equivalent packet line: the dataplane and `flowgate classify` decide alike.
    #[test]
    fn key_from_frame_equals_key_from_packet_line() {
        let file = parse("flow a permit match iface eth0 proto tcp dstport 22")
            .expect("ok")
            .file;
        let c = crate::classify::Classifier::new(file.flows(), &Action::Deny).expect("compiles");
        let cases = [
            (
                "10.0.0.1",
                "10.0.0.2",
                6,
                1234,
                22,
                "proto=tcp sport=1234 dport=22",
                false,
            ),
            (
                "10.0.0.1",
                "10.0.0.2",
                17,
                53,
                53,
                "proto=udp sport=53 dport=53",
                false,
            ),
            (
                "10.0.0.1",
                "10.0.0.2",
                1,
                8,
                0,
                "proto=icmp icmptype=8",
                false,
            ),
            ("10.0.0.1", "10.0.0.2", 47, 0, 0, "proto=47", false),
            ("10.0.0.1", "10.0.0.2", 6, 1, 2, "proto=tcp frag=1", true),
            (
                "2001:db8::1",
                "2001:db8::2",
                58,
                128,
                0,
                "proto=icmp icmptype=128",
                false,
            ),
            (
                "2001:db8::1",
                "2001:db8::2",
                6,
                9,
                22,
                "proto=tcp sport=9 dport=22",
                false,
            ),
            (
                "2001:db8::1",
                "2001:db8::2",
                17,
                9,
                22,
                "proto=udp frag=1",
                true,
            ),
        ];
        for (s, d, proto, sp, dp, line, frag) in cases {
            let mut spec = FrameSpec::new(
                s.parse().expect("addr"),
                d.parse().expect("addr"),
                proto,
                sp,
                dp,
            );
            spec.non_first_fragment = frag;
            let Frame::Ip(facts) = wire::parse(&frame(&spec)) else {
                panic!("{line}: not IP");
            };
            let pkt = parse_packet_line(&format!("iface=eth0 src={s} dst={d} {line}"))
                .expect("packet line");
            assert_eq!(key_of(&facts, c.iface_id("eth0")), c.key(&pkt), "{line}");
        }
    }

    const MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x0a]);
    const OTHER: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x0b]);

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    fn facts(f: &[u8]) -> IpFacts {
        match wire::parse(f) {
            Frame::Ip(facts) => facts,
            other => panic!("not IP: {other:?}"),
        }
    }

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

    #[test]
    fn a_directors_limit_is_shared_by_the_workers() {
        assert_eq!(worker_share(65536, 1), 65536);
        // an even share plus 1/8 for an uneven spread, never more than the whole
        assert_eq!(worker_share(65536, 2), 32768 + 4096);
        assert_eq!(worker_share(1_000_000, 3), 333_334 + 41_666);
        assert_eq!(worker_share(10, 16), 1);
        assert_eq!(worker_share(1, 4), 1);
        let total: usize = (0..4).map(|_| worker_share(1 << 20, 4)).sum();
        assert!(
            ((1 << 20)..=(1 << 20) * 9 / 8 + 4).contains(&total),
            "{total}"
        );
    }

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
            assert_eq!(dst_of(&key_of(&facts(&f), 0)), ip(d));
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

    /// A frame in a buffer with `room` bytes in front of it, as after `Burst::prepend`.
    fn with_room(room: usize, f: &[u8]) -> Vec<u8> {
        let mut buf = vec![0xee; room];
        buf.extend_from_slice(f);
        buf
    }

    #[test]
    fn tunnel_wraps_an_ipv4_packet_from_the_port_address_to_the_server() {
        let (cli, vip) = (ip("192.168.0.100"), ip("192.168.0.2"));
        let (local, server): (IpAddr, IpAddr) = (ip("10.0.0.1"), ip("10.0.0.11"));
        for (proto, vlan) in [(6u8, None), (17, Some(100u16))] {
            let mut spec = FrameSpec::new(cli, vip, proto, 40000, 25);
            spec.ttl = 63;
            spec.vlan = vlan;
            spec.payload = 10;
            let f = frame(&spec);
            let l3 = if vlan.is_some() { 18 } else { 14 };
            let mut buf = with_room(20, &f);
            let (outer, len) =
                wrap_for_tunnel(&mut buf, Some(local), server, 1500).expect("wrapped");
            assert_eq!(len, f.len() + 20);
            let out = &buf[..len];
            // Ethernet header (and tag) moved to the front, untouched
            assert_eq!(&out[..l3], &f[..l3]);
            assert_eq!(outer.l3_offset, l3);
            assert_eq!((outer.src, outer.dst, outer.proto), (local, server, 4));
            let ip = &out[l3..l3 + 20];
            assert_eq!(ip[0], 0x45);
            assert_eq!(
                u16::from_be_bytes([ip[2], ip[3]]) as usize,
                f.len() - l3 + 20
            );
            assert_eq!(ip[field::IPV4_TTL], 64);
            assert_eq!(crate::build::checksum(ip), 0, "outer header checksum");
            // the inner packet, byte for byte
            assert_eq!(&out[l3 + 20..], &f[l3..]);
            // what the outflows see: the outer packet
            let k = key_of(&outer, 3);
            assert_eq!((k.proto, k.l4, k.iface), (4, L4Kind::None, 3));
            assert_eq!(dst_of(&k), server);
        }
    }

    #[test]
    fn tunnel_wraps_an_ipv6_packet_in_ipv6() {
        let (cli, vip) = (ip("2001:db8::100"), ip("2001:db8::2"));
        let (local, server): (IpAddr, IpAddr) = (ip("2001:db8:1::1"), ip("2001:db8:1::11"));
        let f = frame(&FrameSpec::new(cli, vip, 17, 5353, 53));
        let mut buf = with_room(40, &f);
        let (outer, len) = wrap_for_tunnel(&mut buf, Some(local), server, 1500).expect("wrapped");
        assert_eq!(len, f.len() + 40);
        assert_eq!((outer.src, outer.dst, outer.proto), (local, server, 41));
        assert_eq!(buf[14 + field::IPV6_HOP_LIMIT], 64);
        let payload = u16::from_be_bytes([buf[14 + 4], buf[14 + 5]]) as usize;
        assert_eq!(payload, f.len() - 14);
        assert_eq!(&buf[14 + 40..len], &f[14..]);
    }

    #[test]
    fn tunnel_drops_ethernet_padding_of_the_inner_frame() {
        let spec = FrameSpec::new(ip("192.168.0.100"), ip("192.168.0.2"), 17, 1, 2);
        let mut f = frame(&spec);
        let ip_end = f.len();
        f.resize(60, 0); // a minimum-size frame, padded
        let mut buf = with_room(20, &f);
        let (_, len) = wrap_for_tunnel(&mut buf, Some(ip("10.0.0.1")), ip("10.0.0.12"), 1500)
            .expect("wrapped");
        assert_eq!(len, ip_end + 20, "the padding is left out");
    }

    #[test]
    fn tunnel_needs_a_source_of_the_servers_family() {
        let f = frame(&FrameSpec::new(
            ip("192.168.0.100"),
            ip("192.168.0.2"),
            6,
            1,
            25,
        ));
        let server: IpAddr = ip("10.0.0.11");
        for local in [None, Some(ip("2001:db8::1"))] {
            let mut buf = with_room(20, &f);
            assert_eq!(
                wrap_for_tunnel(&mut buf, local, server, 1500).err(),
                Some(DropReason::TunnelNoSource)
            );
        }
    }

    #[test]
    fn tunnel_refuses_what_would_exceed_the_mtu() {
        let server: IpAddr = ip("10.0.0.11");
        assert!(tunnel_fits(1480, server, 1500));
        assert!(!tunnel_fits(1481, server, 1500));
        assert!(tunnel_fits(1460, ip("2001:db8::1"), 1500));
        assert!(!tunnel_fits(1461, ip("2001:db8::1"), 1500));
        let mut spec = FrameSpec::new(ip("192.168.0.100"), ip("192.168.0.2"), 17, 1, 53);
        for (payload, mtu, fits) in [
            (1452, 1500, true),
            (1453, 1500, false),
            (1000, 1048, true),
            (1000, 1047, false),
        ] {
            spec.payload = payload; // IP length = 28 + payload
            let f = frame(&spec);
            let mut buf = with_room(20, &f);
            let r = wrap_for_tunnel(&mut buf, Some(ip("10.0.0.1")), server, mtu);
            match fits {
                true => assert_eq!(r.map(|(_, len)| len).ok(), Some(f.len() + 20)),
                false => assert_eq!(r.err(), Some(DropReason::TunnelTooBig)),
            }
        }
    }
}
