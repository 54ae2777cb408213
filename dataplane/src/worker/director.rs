//! The director stage: NAT replies offered to the directors before the flows see them, then
//! the packets the flows sent to a director: scheduled (NAT: rewritten), routed with the main
//! table towards the server, and in tunnel mode wrapped in an outer IP header (or answered
//! with "too big"). Every rewrite updates the packet's metadata and key.
//!
//! Directors are described in `docs/director.md` ("In the dataplane"); with several workers
//! a NAT director's packets are finished by the worker owning their connection
//! ([`crate::handoff`]): this stage says which packets go there.

use std::net::IpAddr;
use std::time::Instant;

use flowgate_config::appliance::Mode;
use flowgate_config::flows::{Family, L4};

use crate::classify::{Key, L4Kind};
use crate::counters::DropReason;
use crate::director::icmp;
use crate::director::rewrite::{encapsulate, tunnel_overhead};
use crate::director::shared::STATS_EVERY_MS;
use crate::director::sync::{self, Export, Lane, APPLY_BUDGET, DUMP_CHUNK};
use crate::director::{
    DirectorSet, DirectorWorker, Prefetch, SharedDirectors, Verdict as DirVerdict, WorkerOptions,
};
use crate::handoff::{NatServers, Owners, Tag};
use crate::ruleset::NO_DIRECTOR;
use crate::wire::ipv4::Ipv4Packet;
use crate::wire::{self, proto, Frame, IpFacts};

use super::batch::{family, Batch, PacketMeta, To};
use super::forward::{self, head_for, route, take_ttl};
use super::frames::Frames;
use super::{Env, DEFAULT_MTU, EXPIRE_BUDGET, MAIN_TABLE};

/// This worker's directors: their connection tables, the clock, the hand-over policy.
#[derive(Debug)]
pub struct DirectorStage<'p> {
    index: usize,
    /// The directors' published snapshot (`None`: no director wired in).
    shared: Option<&'p SharedDirectors>,
    /// This worker's tables and counters, one per director (index as in the `DirectorSet`).
    dws: Vec<DirectorWorker>,
    /// The NAT directors' servers: only their TCP/UDP packets can be replies.
    nat_servers: NatServers,
    /// Which worker owns a NAT connection (`None`: one worker, or no NAT director).
    owners: Option<&'p Owners>,
    /// The directors' clock: milliseconds since `epoch`, read once per polling round.
    epoch: Instant,
    now_ms: u64,
    last_stats: u64,
    /// This worker's lane of the connection sync (`None`: sync off) and its export batch.
    sync: Option<&'p Lane>,
    export: Export,
}

impl<'p> DirectorStage<'p> {
    pub fn new(index: usize, now: Instant) -> Self {
        DirectorStage {
            index,
            shared: None,
            dws: Vec::new(),
            nat_servers: NatServers::default(),
            owners: None,
            epoch: now,
            now_ms: 0,
            last_stats: 0,
            sync: None,
            export: Export::default(),
        }
    }

    /// Runs the directors of `shared`: this worker's connection tables are allocated now (from
    /// the current snapshot) and live as long as the worker, across rule swaps. Each table
    /// holds this worker's share of its director's `max_connections` (connections are spread
    /// over the workers by their client endpoint), with a little slack for an uneven spread.
    pub fn wire_in(&mut self, shared: &'p SharedDirectors, opts: WorkerOptions) {
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
        self.shared = Some(shared);
        self.sync = shared.sync.as_ref().and_then(|s| s.lanes.get(self.index));
        if self.sync.is_some() {
            for (d, dw) in self.dws.iter_mut().enumerate() {
                dw.enable_sync(d as u16);
            }
        }
    }

    /// Once per burst with the sync on: hand what the directors exported to the control side.
    #[inline]
    pub fn flush_sync(&mut self) {
        let Some(lane) = self.sync else { return };
        for dw in &mut self.dws {
            dw.drain_sync(&mut self.export);
        }
        self.export.flush(lane);
    }

    /// Once per polling round with the sync on: apply what peers sent (bounded), go on with
    /// a full dump of the tables when one is asked for (bounded), and hand it all over.
    fn sync_round(&mut self, lane: &Lane) {
        let Some(set) = self.snapshot() else { return };
        let (mut applied, mut failed) = (0, 0);
        for _ in 0..APPLY_BUDGET {
            let Some(e) = lane.inbound.pop() else { break };
            let d = usize::from(e.director);
            let done = match (self.dws.get_mut(d), set.get(d)) {
                (Some(dw), Some(st)) => dw.apply(st, &e, self.now_ms),
                _ => false,
            };
            if done {
                applied += 1;
            } else {
                failed += 1;
            }
        }
        sync::count_applied(lane, applied, failed);
        let asked = lane.dump.load(std::sync::atomic::Ordering::Relaxed);
        if self.export.dumping.is_none() && asked != self.export.dumped {
            self.export.dumped = asked;
            self.export.dumping = Some((0, 0));
        }
        let mut budget = DUMP_CHUNK;
        while let Some((d, from)) = self.export.dumping {
            if budget == 0 || self.export.room() == 0 {
                break;
            }
            let Some(dw) = self.dws.get_mut(d) else {
                self.export.dumping = None;
                sync::count_dump(lane);
                break;
            };
            let (next, visited) = dw.dump(from, budget, &mut self.export, self.now_ms);
            budget = budget.saturating_sub(visited);
            self.export.dumping = Some(match next {
                Some(i) => (d, i),
                None => (d + 1, 0),
            });
        }
        self.flush_sync();
    }

    /// NAT connections are owned by the workers as `owners` says.
    pub fn with_owners(&mut self, owners: &'p Owners) {
        self.owners = Some(owners);
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.dws.is_empty()
    }

    /// This worker's tables of director `d`.
    pub fn table(&self, d: usize) -> Option<&DirectorWorker> {
        self.dws.get(d)
    }

    /// The current snapshot of the directors.
    #[inline]
    pub fn snapshot(&self) -> Option<arc_swap::Guard<std::sync::Arc<DirectorSet>>> {
        self.shared.map(|d| d.set.load())
    }

    /// Once per polling round: expire connections (bounded), and every [`STATS_EVERY_MS`]
    /// copy the counters out for the control side.
    pub fn round(&mut self, now: Instant) {
        self.now_ms = now.saturating_duration_since(self.epoch).as_millis() as u64;
        for dw in &mut self.dws {
            dw.expire(self.now_ms, EXPIRE_BUDGET);
        }
        if let Some(lane) = self.sync {
            self.sync_round(lane);
        }
        if self.now_ms.saturating_sub(self.last_stats) < STATS_EVERY_MS {
            return;
        }
        self.last_stats = self.now_ms;
        self.publish_stats(false);
    }

    /// Copy the director counters out for the control side; unless `wait`, only if the
    /// reader does not hold them (next time otherwise).
    pub fn publish_stats(&mut self, wait: bool) {
        let Some(slot) = self.shared.and_then(|d| d.stats.get(self.index)) else {
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

    /// NAT replies first (as IPVS does for its established connections): every IP packet the
    /// flows would decide that comes from a NAT server (or is an ICMP error) is offered to the
    /// directors. A reply is rewritten (source back to the VIP), routed with the main table
    /// towards the client and heads for the outflows; one owned by another worker is handed
    /// to it. In a handed burst, packets a flow of the handing worker sent to a director go to
    /// it directly. Returns whether something is handed over.
    // a stage per function in profiles (one call per burst)
    #[inline(never)]
    pub fn replies<F: Frames>(
        &mut self,
        b: &mut Batch,
        frames: &mut F,
        env: &Env<'_>,
        set: &DirectorSet,
        handed: bool,
    ) -> bool {
        // the burst's reply lookups: index slots, then connections, prefetched for all the
        // keys before the first lookup, so their cache misses overlap
        for stage in [Prefetch::Slot, Prefetch::Conn] {
            for i in 0..b.len() {
                let key = &b.keys[i];
                if b.meta[i].to != To::Flows || !self.nat_servers.sent(key) {
                    continue;
                }
                for (dw, st) in self.dws.iter().zip(set.iter()) {
                    dw.prefetch_reply_key(st, stage, key);
                }
            }
        }
        let mut handing = false;
        for i in 0..b.len() {
            if b.meta[i].to != To::Flows {
                continue;
            }
            if handed {
                if let Tag::Forward(d) = Tag::decode(frames.tag(i)) {
                    // a flow of the handing worker chose the director already
                    b.meta[i].to = To::Director(d);
                    continue;
                }
            }
            let key = b.keys[i];
            // a NAT reply comes from a NAT server; no other TCP/UDP is looked up
            let from_server = key.l4 == L4Kind::Ports && self.nat_servers.sent(&key);
            let icmp_error = is_icmp_error(&key);
            if !from_server && !icmp_error {
                continue;
            }
            if self.reply(b, frames, i, env, set) {
                continue;
            }
            let owner = match (self.owners, handed) {
                (Some(o), false) if from_server => o.reply_owner(self.index, &key),
                (Some(o), false) => frames
                    .packet(i)
                    .and_then(|f| o.icmp_error_owner(self.index, f, &b.meta[i].facts(&key))),
                _ => None,
            };
            if let Some(o) = owner {
                frames.set_tag(i, Tag::Reply.encode());
                b.meta[i].to = To::Handoff(o);
                handing = true;
            }
        }
        handing
    }

    /// Packet `i`: a NAT reply (or an ICMP error about a connection) of one of the directors?
    /// Then it is rewritten, routed with the main table towards the client (an error from
    /// the client's side: towards the server, wrapped in tunnel mode) and true is returned;
    /// false when it is none (it goes on to the flows).
    fn reply<F: Frames>(
        &mut self,
        b: &mut Batch,
        frames: &mut F,
        i: usize,
        env: &Env<'_>,
        set: &DirectorSet,
    ) -> bool {
        let Some(frame) = frames.packet_mut(i) else {
            return false;
        };
        let facts = b.meta[i].facts(&b.keys[i]);
        let mut found = None;
        for (d, dw) in self.dws.iter_mut().enumerate() {
            let Some(st) = set.get(d) else { continue };
            let v = match facts.l4 {
                L4::Icmp { .. } => dw.icmp(st, frame, &facts, self.now_ms),
                _ => dw.reply(st, frame, &facts, self.now_ms),
            };
            if let Some(v) = v {
                found = Some((v, st.mode));
                break;
            }
        }
        let Some((verdict, mode)) = found else {
            return false;
        };
        let meta = &mut b.meta[i];
        let to = match verdict {
            DirVerdict::Drop(_) => {
                meta.to = To::Drop(DropReason::DirectorDrop);
                return true;
            }
            DirVerdict::Forward { to, .. } => to,
        };
        // the rewrite changed addresses / ports: the metadata follows it
        let iface = b.keys[i].iface;
        if !refresh(frames, i, meta, &mut b.keys[i], iface) {
            meta.to = To::Drop(DropReason::DirectorDrop);
            return true;
        }
        forward::forward(
            frames,
            i,
            meta,
            &mut b.keys[i],
            env.rules,
            env.rc,
            env.roles,
            MAIN_TABLE,
            to,
        );
        // a tunnel director's ICMP error for a server goes to it wrapped, as its packets do
        if let (Mode::Tunnel, To::Hop { port, .. }) = (mode, meta.to) {
            tunnel(frames, i, meta, &mut b.keys[i], env, usize::from(port), to);
        }
        true
    }

    /// Every packet for a director (`To::Director`): scheduled (NAT: rewritten), routed with
    /// the main table towards its server, its TTL taken, wrapped in tunnel mode; or handed to
    /// the worker owning its NAT connection. Returns whether something is handed over.
    // a stage per function in profiles (one call per burst)
    #[inline(never)]
    pub fn forward<F: Frames>(
        &mut self,
        b: &mut Batch,
        frames: &mut F,
        env: &Env<'_>,
        set: Option<&DirectorSet>,
        handed: bool,
    ) -> bool {
        let mut handing = false;
        // the hand-over first: a NAT connection is finished by its owner
        if let (Some(o), false) = (self.owners, handed) {
            for i in 0..b.len() {
                if let To::Director(d) = b.meta[i].to {
                    if let Some(w) = o.forward_owner(self.index, d, &b.keys[i]) {
                        frames.set_tag(i, Tag::Forward(d).encode());
                        b.meta[i].to = To::Handoff(w);
                        handing = true;
                    }
                }
            }
        }
        // the burst's lookups, prefetched as the replies' above
        for stage in [Prefetch::Slot, Prefetch::Conn] {
            for i in 0..b.len() {
                if let To::Director(d) = b.meta[i].to {
                    if let Some(dw) = self.dws.get(usize::from(d)) {
                        dw.prefetch_key(stage, &b.keys[i]);
                    }
                }
            }
        }
        for i in 0..b.len() {
            if let To::Director(d) = b.meta[i].to {
                self.forward_one(b, frames, i, d, env, set);
            }
        }
        handing
    }

    fn forward_one<F: Frames>(
        &mut self,
        b: &mut Batch,
        frames: &mut F,
        i: usize,
        d: u16,
        env: &Env<'_>,
        set: Option<&DirectorSet>,
    ) {
        let meta = &mut b.meta[i];
        let key = &mut b.keys[i];
        let unavailable = To::Drop(DropReason::DirectorUnavailable);
        let found = (d != NO_DIRECTOR)
            .then_some(())
            .and_then(|()| Some((set?.get(usize::from(d))?, self.dws.get_mut(usize::from(d))?)));
        let Some((st, dw)) = found else {
            meta.to = unavailable;
            return;
        };
        let Some(frame) = frames.packet_mut(i) else {
            meta.to = To::Drop(DropReason::RouteTruncated);
            return;
        };
        let server = match dw.forward(st, frame, &meta.facts(key), self.now_ms) {
            DirVerdict::Drop(_) => {
                meta.to = To::Drop(DropReason::DirectorDrop);
                return;
            }
            DirVerdict::Forward { to, .. } => to,
        };
        if st.mode == Mode::Nat {
            // the destination is the server's now
            let iface = key.iface;
            if !refresh(frames, i, meta, key, iface) {
                meta.to = To::Drop(DropReason::DirectorDrop);
                return;
            }
        }
        let Some(hop) = route(env.rules, env.rc, MAIN_TABLE, server) else {
            meta.to = To::Drop(DropReason::NoRoute);
            return;
        };
        if st.mode == Mode::Tunnel {
            if let Some(mtu) = tunnel_too_big(frames, i, meta, key, env, hop.port, server) {
                too_big(frames, i, meta, key, env, mtu);
                return;
            }
        }
        if !take_ttl(frames, i, meta, key, env.roles) {
            return;
        }
        head_for(meta, key, env.rules, &hop, server);
        if st.mode == Mode::Tunnel {
            tunnel(frames, i, meta, key, env, hop.port, server);
        }
    }
}

/// Re-reads packet `i`'s facts after a director rewrote it, and its key (with `iface`).
#[inline]
fn refresh<F: Frames>(
    frames: &F,
    i: usize,
    meta: &mut PacketMeta,
    key: &mut Key,
    iface: u16,
) -> bool {
    match frames.packet(i).map(wire::parse) {
        Some(Frame::Ip(facts)) => {
            meta.set_facts(&facts);
            *key = Key::from_facts(&facts, iface);
            true
        }
        _ => false,
    }
}

/// Tunnel mode: the MTU to announce (the output port's, less the outer header) when packet
/// `i` would not fit in the output port's MTU once wrapped for `server`.
fn tunnel_too_big<F: Frames>(
    frames: &F,
    i: usize,
    meta: &PacketMeta,
    key: &Key,
    env: &Env<'_>,
    port: usize,
    server: IpAddr,
) -> Option<u32> {
    let ip_len = wire::ip_len(frames.packet(i)?, usize::from(meta.l3), family(key))?;
    let mtu = env.roles.get(port).map_or(DEFAULT_MTU, |r| r.mtu);
    (!tunnel_fits(ip_len, server, mtu))
        .then(|| u32::from(mtu).saturating_sub(tunnel_overhead(server) as u32))
}

/// Packet `i` does not fit the tunnel: as IPVS, an IPv4 packet that may not be fragmented
/// (DF) and any IPv6 packet become an ICMP "fragmentation needed" / "packet too big"
/// announcing `mtu`, sent back out the input port to the packet's sender through the
/// outflows; an IPv4 packet without DF is dropped (flowgate does not fragment). Either way
/// the packet counts as `tunnel-too-big`.
fn too_big<F: Frames>(
    frames: &mut F,
    i: usize,
    meta: &mut PacketMeta,
    key: &mut Key,
    env: &Env<'_>,
    mtu: u32,
) {
    let drop = To::Drop(DropReason::TunnelTooBig);
    meta.to = drop;
    let (l3, family, input) = (usize::from(meta.l3), family(key), meta.input);
    if family == Family::V4 {
        let df = frames
            .packet(i)
            .and_then(|f| f.get(l3..))
            .and_then(|ip| Ipv4Packet::new_checked_header(ip).ok())
            .is_some_and(|ip| ip.dont_frag());
        if !df {
            return;
        }
    }
    let Some(role) = env.roles.get(usize::from(input)) else {
        return;
    };
    let Some(buf) = frames.prepend(i, icmp::too_big_overhead(family) as u16) else {
        return;
    };
    let total = buf.len();
    let Ok(len) = icmp::too_big(buf, l3, family, mtu, role.mac.0) else {
        return;
    };
    if !frames.trim(i, (total - len) as u16) {
        return;
    }
    // the error is a new packet: read it, it leaves through the outflows of the input port
    let iface = env.rules.outflows.port_iface[usize::from(input)];
    if !refresh(frames, i, meta, key, iface) {
        return;
    }
    // the packet itself was not forwarded (the error that replaces it is not a drop)
    env.counters.dropped(DropReason::TunnelTooBig);
    meta.to = To::Port(input);
    meta.egress = true;
    meta.routed = true;
}

/// Tunnel mode: packet `i` (scheduled, its TTL taken off, routed out `port` towards `server`)
/// gets an outer IP header from the port's address to the server in front of it. Its facts
/// and key (outflows iface kept) now describe the outer packet.
fn tunnel<F: Frames>(
    frames: &mut F,
    i: usize,
    meta: &mut PacketMeta,
    key: &mut Key,
    env: &Env<'_>,
    port: usize,
    server: IpAddr,
) {
    let local = env.rules.routes.source_for(port, server);
    let mtu = env.roles.get(port).map_or(DEFAULT_MTU, |r| r.mtu);
    let over = tunnel_overhead(server) as u16;
    let inner = meta.facts(key);
    let Some(buf) = frames.prepend(i, over) else {
        meta.to = To::Drop(DropReason::RouteTruncated);
        return;
    };
    let total = buf.len();
    let (outer, len) = match wrap(buf, &inner, local, server, mtu) {
        Ok(w) => w,
        Err(why) => {
            meta.to = To::Drop(why);
            return;
        }
    };
    // the inner frame's Ethernet padding, if any, is not carried
    if len < total && !frames.trim(i, (total - len) as u16) {
        meta.to = To::Drop(DropReason::RouteTruncated);
        return;
    }
    meta.set_facts(&outer);
    *key = Key::from_facts(&outer, key.iface);
}

/// Tunnel mode on a frame lying at `buf[tunnel_overhead(server)..]` (facts `inner`), with that
/// room in front of it: the inner packet (TTL already taken off) goes into an outer IPv4 /
/// IPv6 header from `local` (the output port's address of the server's family; `None`: it
/// has none) to `server`, provided the outer packet fits in `mtu` bytes. Returns the outer
/// packet's facts and the new frame's length (from `buf[0]`; shorter than `buf` when the inner
/// frame had Ethernet padding), or why it is dropped.
pub fn wrap(
    buf: &mut [u8],
    inner: &IpFacts,
    local: Option<IpAddr>,
    server: IpAddr,
    mtu: u16,
) -> Result<(IpFacts, usize), DropReason> {
    let over = tunnel_overhead(server);
    let local = local
        .filter(|l| l.is_ipv4() == server.is_ipv4())
        .ok_or(DropReason::TunnelNoSource)?;
    // the inner packet's IP length (the parser checked it lies within the frame)
    let ip_len = buf
        .get(over..)
        .and_then(|f| wire::ip_len(f, inner.l3_offset, inner.family))
        .ok_or(DropReason::RouteTruncated)?;
    if !tunnel_fits(ip_len, server, mtu) {
        return Err(DropReason::TunnelTooBig);
    }
    let total = buf.len();
    let range = encapsulate(buf, over..total, inner, local, server)
        .map_err(|_| DropReason::RouteTruncated)?;
    if range.start != 0 {
        return Err(DropReason::RouteTruncated);
    }
    let outer = IpFacts {
        family: if server.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        },
        proto: match inner.family {
            Family::V4 => proto::IPIP,
            Family::V6 => proto::IPV6,
        },
        src: local,
        dst: server,
        l4: L4::Other,
        l3_offset: inner.l3_offset,
        l4_offset: inner.l3_offset + over,
        vlan_tags: inner.vlan_tags,
    };
    Ok((outer, range.end))
}

/// [`wrap`] for a frame whose facts are not known yet (it is parsed first).
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
    wrap(buf, &inner, local, server, mtu)
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

/// The packet of `key` is an ICMP (ICMPv6) error, which may be about a NAT connection.
#[inline]
pub fn is_icmp_error(key: &Key) -> bool {
    let family = if key.v6 { Family::V6 } else { Family::V4 };
    key.l4 == L4Kind::Icmp && icmp::is_error(family, key.icmptype)
}

/// The director snapshot a guard holds.
pub fn set_of(
    guard: &Option<arc_swap::Guard<std::sync::Arc<DirectorSet>>>,
) -> Option<&DirectorSet> {
    guard.as_deref().map(|a| a.as_ref())
}

#[cfg(test)]
mod tests {
    use super::super::forward::dst_of;
    use super::super::test_support::{facts, ip};
    use super::*;
    use crate::build::{frame, FrameSpec};

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
            let ip = Ipv4Packet::new_checked(&out[l3..]).expect("outer header");
            assert_eq!((ip.version(), ip.header_len()), (4, 20));
            assert_eq!(usize::from(ip.total_len()), f.len() - l3 + 20);
            assert_eq!(ip.ttl(), 64);
            assert!(ip.verify_checksum(), "outer header checksum");
            // the inner packet, byte for byte
            assert_eq!(&out[l3 + 20..], &f[l3..]);
            // what the outflows see: the outer packet
            let k = Key::from_facts(&outer, 3);
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
        let outer_ip = wire::Ipv6Packet::new_checked(&buf[14..len]).expect("outer header");
        assert_eq!(outer_ip.hop_limit(), 64);
        assert_eq!(usize::from(outer_ip.payload_len()), f.len() - 14);
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

    /// The outer packet's facts `wrap` gives without parsing are those a parse of the
    /// wrapped frame reads, for every family pair and with VLAN tags.
    #[test]
    fn wrap_gives_the_outer_facts_a_parse_reads() {
        let cases = [
            (
                "192.168.0.100",
                "192.168.0.2",
                "10.0.0.1",
                "10.0.0.11",
                None,
            ),
            (
                "192.168.0.100",
                "192.168.0.2",
                "10.0.0.1",
                "10.0.0.11",
                Some(7u16),
            ),
            (
                "2001:db8::100",
                "2001:db8::2",
                "2001:db8:1::1",
                "2001:db8:1::11",
                None,
            ),
            (
                "192.168.0.100",
                "192.168.0.2",
                "2001:db8:1::1",
                "2001:db8:1::11",
                Some(9),
            ),
            (
                "2001:db8::100",
                "2001:db8::2",
                "10.0.0.1",
                "10.0.0.11",
                None,
            ),
        ];
        for (cli, vip, local, server, vlan) in cases {
            let mut spec = FrameSpec::new(ip(cli), ip(vip), 6, 40000, 25);
            spec.vlan = vlan;
            let f = frame(&spec);
            let inner = facts(&f);
            let room = tunnel_overhead(ip(server));
            let mut buf = with_room(room, &f);
            let (outer, len) =
                wrap(&mut buf, &inner, Some(ip(local)), ip(server), 1500).expect("wrapped");
            assert_eq!(outer, facts(&buf[..len]), "{cli} in {server}");
        }
    }
}
