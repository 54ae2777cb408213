//! The worker's side of one director: its connection table, its `rr`/`wrr` cursor and its
//! counters, all owned by the worker (no locks, no atomics), and the calls the packet path
//! makes: [`DirectorWorker::forward`] for client-to-VIP packets, [`DirectorWorker::reply`]
//! for server-to-client packets in NAT mode, and [`DirectorWorker::icmp`] for ICMP errors
//! about NAT connections (either way). Both take the director's current snapshot
//! ([`DirectorState`], loaded once per burst), the frame and its parsed facts, and the time in
//! milliseconds of the caller's monotonic clock.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use flowgate_config::appliance::Mode;
use flowgate_config::flows::{Family, L4};

use super::conntrack::{
    Conn, ConnId, ConnState, ConnTable, Dir, PROTO_TEMPLATE, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN,
};
use super::counters::{DirectorCounters, DropReason};
use super::hash::Seed;
use super::icmp;
use super::rewrite::{self, End};
use super::schedule::{pick, Cursor, SchedKey};
use super::state::{addr16, DirectorState};
use super::sync::{refresh_due, stamp, Export, SyncEntry, LOG};
use crate::classify::{Key, L4Kind};
use crate::wire::proto::{TCP as PROTO_TCP, UDP as PROTO_UDP};
use crate::wire::{IpFacts, TcpPacket};

/// Packets [`DirectorWorker::forward_burst`] prefetches for at once (a DPDK burst).
pub const BURST: usize = 32;

/// How a worker's table for a director is sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerOptions {
    /// Connections (and persistence templates) the table holds.
    pub capacity: usize,
    /// Seed of the table's hash (a random per-boot one against hostile clients).
    pub seed: Seed,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            capacity: 1 << 16,
            seed: 0x636f_6e6e_7472_6b31,
        }
    }
}

/// What to do with a director packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send it on (after [`rewrite`] for gateway/tunnel, done already for NAT).
    Forward {
        /// The server's index in the director.
        server: u16,
        /// Where the packet goes next: the server (forward), or the client (reply).
        to: IpAddr,
        /// A connection was created by this packet.
        new: bool,
    },
    /// Drop it (already counted).
    Drop(DropReason),
}

/// The two stages of a burst prefetch ([`DirectorWorker::prefetch_key`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefetch {
    /// The index slot where the key's lookup starts.
    Slot,
    /// The connection that slot points at (reads the slot: run it once the burst's `Slot`
    /// prefetches had time to land).
    Conn,
}

/// A classifier key's address (IPv4 in the low 32 bits) in the table's 16-byte form.
#[inline]
fn key_addr(a: u128, v6: bool) -> [u8; 16] {
    if v6 {
        a.to_be_bytes()
    } else {
        Ipv4Addr::from(a as u32).to_ipv6_mapped().octets()
    }
}

/// One worker's state for one director.
#[derive(Debug)]
pub struct DirectorWorker {
    conns: ConnTable,
    cursor: Cursor,
    counters: DirectorCounters,
    /// The connection sync's export log (`None`: sync off).
    sync: Option<SyncLog>,
}

/// What a [`DirectorWorker`] exported during the current burst (`super::sync`).
#[derive(Debug)]
struct SyncLog {
    /// The director's index (in the `DirectorSet`).
    director: u16,
    /// Preallocated ([`LOG`] entries); moved out once per burst.
    entries: Vec<SyncEntry>,
    /// Entries that did not fit this burst.
    dropped: u64,
}

/// The flags of the TCP header of a parsed packet.
#[inline]
fn tcp_flags(frame: &[u8], facts: &IpFacts) -> Option<u8> {
    let tcp = TcpPacket::new_checked(frame.get(facts.l4_offset..)?).ok()?;
    Some(tcp.flags())
}

pub(super) fn ip_of(a: &[u8; 16], family: Family) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::new(a[12], a[13], a[14], a[15])),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(*a)),
    }
}

/// `addr` with all but the first `len` bits of its family's form cleared.
fn masked(addr: &[u8; 16], len: u8, family: Family) -> [u8; 16] {
    let bits = match family {
        Family::V4 => 96 + u32::from(len.min(32)),
        Family::V6 => u32::from(len.min(128)),
    };
    let mut out = *addr;
    for (i, b) in out.iter_mut().enumerate() {
        let start = i as u32 * 8;
        if start >= bits {
            *b = 0;
        } else if start + 8 > bits {
            *b &= 0xffu8 << (8 - (bits - start));
        }
    }
    out
}

impl DirectorWorker {
    /// Allocate the table (all the memory this worker will use for the director).
    pub fn new(state: &DirectorState, opts: WorkerOptions) -> Self {
        DirectorWorker {
            conns: ConnTable::new(opts.capacity, state.servers.len(), opts.seed),
            cursor: Cursor::default(),
            counters: DirectorCounters::new(state.servers.len()),
            sync: None,
        }
    }

    /// Export this director's (index `director`) new and changed connections and templates
    /// to the connection sync, from now on.
    pub fn enable_sync(&mut self, director: u16) {
        self.sync = Some(SyncLog {
            director,
            entries: Vec::with_capacity(LOG),
            dropped: 0,
        });
    }

    /// Move what this burst exported into the worker's batch (once per burst).
    pub fn drain_sync(&mut self, ex: &mut Export) {
        if let Some(log) = &mut self.sync {
            if !log.entries.is_empty() {
                ex.extend(&log.entries);
                log.entries.clear();
            }
            ex.dropped += std::mem::take(&mut log.dropped);
        }
    }

    /// Record connection `id` for the sync (when on), and stamp it.
    #[inline]
    fn export(&mut self, id: ConnId, now: u64) {
        let Some(log) = &mut self.sync else { return };
        if log.entries.len() < LOG {
            log.entries
                .push(SyncEntry::of(log.director, self.conns.get(id), now));
        } else {
            log.dropped += 1;
        }
        self.conns.set_synced(id, stamp(now));
    }

    /// After a packet moved connection `id` (before: `was`, then promoted from backup or
    /// not): export it when it is new to the peers, changed state, or is due a refresh.
    #[inline]
    fn export_change(&mut self, id: ConnId, was: &Conn, fresh: bool, st: &DirectorState, now: u64) {
        if self.sync.is_none() {
            return;
        }
        let c = self.conns.get(id);
        if fresh || c.state != was.state || refresh_due(was.synced, now, st.timeouts.of(c.state)) {
            self.export(id, now);
        }
    }

    /// Apply a peer's synced entry (`super::sync`) as a backup entry of this table: a new
    /// one, or an update of the state and expiry of the one there (replaced if its server
    /// differs). False when it cannot be: its server is not the director's any more, its
    /// mode differs, or the table is full.
    pub fn apply(&mut self, st: &DirectorState, e: &SyncEntry, now: u64) -> bool {
        let template = e.proto == PROTO_TEMPLATE;
        let fits = st
            .servers
            .get(usize::from(e.server))
            .is_some_and(|s| s.addr16 == e.real);
        if !fits
            || (!template && e.nat != (st.mode == Mode::Nat))
            || template != e.state.is_template()
        {
            return false;
        }
        let expires = now.saturating_add(u64::from(e.timeout_ms));
        let hit = self.conns.lookup(
            Dir::Forward,
            e.proto,
            &e.client,
            e.cport,
            &e.vip,
            e.vport,
            now,
        );
        if let Some(id) = hit {
            let c = self.conns.get(id);
            if c.server == e.server && c.real == e.real && c.rport == e.rport && c.nat == e.nat {
                self.conns.sync_update(id, e.state, e.fins, expires);
                return true;
            }
            self.conns.remove(id);
        }
        self.conns.insert(e.conn(now), now).is_ok()
    }

    /// The sync's full dump: export the live entries of slab indexes `from..` into `ex`,
    /// visiting at most `budget` and stopping when the batch is full. Returns where to go on
    /// next time (`None` when the table is done) and how many entries were visited.
    pub fn dump(
        &mut self,
        from: usize,
        budget: usize,
        ex: &mut Export,
        now: u64,
    ) -> (Option<usize>, usize) {
        let director = self.sync.as_ref().map_or(0, |l| l.director);
        let cap = self.conns.capacity();
        let mut i = from;
        while i < cap && i - from < budget && ex.room() > 0 {
            if let Some(c) = self.conns.live_entry(i) {
                if c.expires > now {
                    ex.batch.push(SyncEntry::of(director, c, now));
                }
            }
            i += 1;
        }
        ((i < cap).then_some(i), i - from)
    }

    /// The connection table (read-only: stats, tests).
    pub fn table(&self) -> &ConnTable {
        &self.conns
    }

    /// A copy of the counters with the active/inactive gauges filled in (control side).
    pub fn counters(&self) -> DirectorCounters {
        let mut c = self.counters.clone();
        for (s, l) in c.servers.iter_mut().zip(self.conns.loads()) {
            s.active = u64::from(l.active);
            s.inactive = u64::from(l.inactive);
        }
        let t = self.conns.stats();
        c.half_open_evicted = t.half_open_evicted;
        c.defense_entered = t.defense_entered;
        c.half_open = self.conns.half_open() as u64;
        c.defense_active = u64::from(self.conns.in_defense());
        c.backup = self.conns.backups() as u64;
        c
    }

    /// Sweep up to `budget` entries for expired connections (call once per burst).
    pub fn expire(&mut self, now: u64, budget: usize) -> usize {
        self.conns.expire(now, budget)
    }

    fn drop(&mut self, r: DropReason) -> Verdict {
        self.counters.drop(r);
        Verdict::Drop(r)
    }

    /// A client-to-VIP packet: find its connection or schedule a new one, track the TCP state,
    /// and in NAT mode rewrite the destination to the server.
    ///
    /// A connection keeps its server through weight changes (drain included) and other
    /// servers' failures. If its own server is down, the connection is expired at once (IPVS
    /// `expire_nodest_conn = 1`): a packet that can open a connection (TCP SYN, UDP) is
    /// scheduled anew, any other is dropped (`server_down`), so the client's stack resets.
    pub fn forward(
        &mut self,
        st: &DirectorState,
        frame: &mut [u8],
        facts: &IpFacts,
        now: u64,
    ) -> Verdict {
        self.forward_hashed(st, frame, facts, now, None)
    }

    /// The hash of the forward key of `facts`, when it is a packet [`DirectorWorker::forward`]
    /// looks up (TCP or UDP with ports).
    #[inline]
    pub(super) fn forward_hash(&self, facts: &IpFacts) -> Option<u64> {
        let proto = facts.proto;
        match facts.l4 {
            L4::Ports { sport, dport } if proto == PROTO_TCP || proto == PROTO_UDP => {
                let (client, vip) = (addr16(facts.src), addr16(facts.dst));
                Some(self.conns.hash(proto, &client, sport, &vip, dport))
            }
            _ => None,
        }
    }

    /// [`DirectorWorker::forward_hash`] from the packet's classifier key.
    #[inline]
    pub(super) fn forward_hash_key(&self, key: &Key) -> Option<u64> {
        if key.l4 != L4Kind::Ports || (key.proto != PROTO_TCP && key.proto != PROTO_UDP) {
            return None;
        }
        let (src, dst) = (key_addr(key.src, key.v6), key_addr(key.dst, key.v6));
        Some(self.conns.hash(key.proto, &src, key.sport, &dst, key.dport))
    }

    /// [`DirectorWorker::reply_hash`] from the packet's classifier key.
    #[inline]
    pub(super) fn reply_hash_key(&self, st: &DirectorState, key: &Key) -> Option<u64> {
        if key.l4 != L4Kind::Ports || st.mode != Mode::Nat {
            return None;
        }
        let (src, dst) = (key_addr(key.src, key.v6), key_addr(key.dst, key.v6));
        Some(self.conns.hash(key.proto, &src, key.sport, &dst, key.dport))
    }

    /// The worker's burst prefetch, from the classifier keys: `stage` [`Prefetch::Slot`] for
    /// every packet of the burst going to this director, then [`Prefetch::Conn`] for every
    /// one, then `forward` each. A hint only: nothing changes, whatever the key.
    #[inline]
    pub fn prefetch_key(&self, stage: Prefetch, key: &Key) {
        if let Some(h) = self.forward_hash_key(key) {
            self.prefetch_stage(stage, h, Dir::Forward);
        }
    }

    /// [`DirectorWorker::prefetch_key`] for packets about to go to [`DirectorWorker::reply`]
    /// (NAT only; a no-op otherwise).
    #[inline]
    pub fn prefetch_reply_key(&self, st: &DirectorState, stage: Prefetch, key: &Key) {
        if let Some(h) = self.reply_hash_key(st, key) {
            self.prefetch_stage(stage, h, Dir::Reply);
        }
    }

    #[inline]
    fn prefetch_stage(&self, stage: Prefetch, h: u64, dir: Dir) {
        match stage {
            Prefetch::Slot => self.conns.prefetch_slot(h),
            Prefetch::Conn => self.conns.prefetch_entry(h, dir),
        }
    }

    /// The hash of the reply key of `facts`, when [`DirectorWorker::reply`] would look it up.
    #[inline]
    pub(super) fn reply_hash(&self, st: &DirectorState, facts: &IpFacts) -> Option<u64> {
        match facts.l4 {
            L4::Ports { sport, dport } if st.mode == Mode::Nat => {
                let (src, dst) = (addr16(facts.src), addr16(facts.dst));
                Some(self.conns.hash(facts.proto, &src, sport, &dst, dport))
            }
            _ => None,
        }
    }

    /// Burst stage 1 for a packet about to go to [`DirectorWorker::forward`]: prefetch the
    /// index slot of its connection. A hint only: nothing changes, whatever the packet.
    #[inline]
    pub fn prefetch(&self, facts: &IpFacts) {
        if let Some(h) = self.forward_hash(facts) {
            self.conns.prefetch_slot(h);
        }
    }

    /// Burst stage 2, once the stage-1 prefetches of the burst had time to land: prefetch the
    /// connection the index slot points at (reads the index slot, so it stalls if that is not
    /// in cache yet).
    #[inline]
    pub fn prefetch_conn(&self, facts: &IpFacts) {
        if let Some(h) = self.forward_hash(facts) {
            self.conns.prefetch_entry(h, Dir::Forward);
        }
    }

    /// [`DirectorWorker::prefetch`] for a packet about to go to [`DirectorWorker::reply`]
    /// (NAT directors only; a no-op otherwise).
    #[inline]
    pub fn prefetch_reply(&self, st: &DirectorState, facts: &IpFacts) {
        if let Some(h) = self.reply_hash(st, facts) {
            self.conns.prefetch_slot(h);
        }
    }

    /// [`DirectorWorker::prefetch_conn`] for a packet about to go to
    /// [`DirectorWorker::reply`].
    #[inline]
    pub fn prefetch_reply_conn(&self, st: &DirectorState, facts: &IpFacts) {
        if let Some(h) = self.reply_hash(st, facts) {
            self.conns.prefetch_entry(h, Dir::Reply);
        }
    }

    /// [`DirectorWorker::forward`] over a burst of packets, in order: the same verdicts,
    /// rewrites, counters and table as calling `forward` on each in turn. Per group of
    /// [`BURST`] packets it hashes every forward key once, prefetches the index slots, then
    /// the connections they point at, then does the work; with a table far beyond the
    /// cache the DRAM misses of the group overlap instead of being paid one after another.
    ///
    /// `frames`, `facts` and `out` (the verdicts) must have the same length.
    pub fn forward_burst(
        &mut self,
        st: &DirectorState,
        frames: &mut [&mut [u8]],
        facts: &[IpFacts],
        now: u64,
        out: &mut [Verdict],
    ) {
        assert!(
            frames.len() == facts.len() && out.len() == facts.len(),
            "forward_burst: frames, facts and verdicts differ in length"
        );
        for ((frames, facts), out) in frames
            .chunks_mut(BURST)
            .zip(facts.chunks(BURST))
            .zip(out.chunks_mut(BURST))
        {
            let mut hs = [None; BURST];
            for (h, f) in hs.iter_mut().zip(facts) {
                *h = self.forward_hash(f);
                if let Some(h) = *h {
                    self.conns.prefetch_slot(h);
                }
            }
            for &h in hs[..facts.len()].iter().flatten() {
                self.conns.prefetch_entry(h, Dir::Forward);
            }
            for (((frame, f), v), &h) in frames.iter_mut().zip(facts).zip(out).zip(&hs) {
                *v = self.forward_hashed(st, frame, f, now, h);
            }
        }
    }

    /// [`DirectorWorker::forward`], with the forward key's hash computed already
    /// (`forward_hash(facts)`) or not (`None`).
    #[inline]
    fn forward_hashed(
        &mut self,
        st: &DirectorState,
        frame: &mut [u8],
        facts: &IpFacts,
        now: u64,
        hash: Option<u64>,
    ) -> Verdict {
        let proto = facts.proto;
        let (sport, dport) = match facts.l4 {
            L4::Ports { sport, dport } if proto == PROTO_TCP || proto == PROTO_UDP => {
                (sport, dport)
            }
            _ => return self.drop(DropReason::Unsupported),
        };
        // NAT cannot cross families: servers are all of one family (config rule).
        if st.mode == Mode::Nat
            && st
                .servers
                .first()
                .is_some_and(|s| s.address.is_ipv4() != (facts.family == Family::V4))
        {
            return self.drop(DropReason::BadPacket);
        }
        let tcp = proto == PROTO_TCP;
        let flags = if tcp {
            match tcp_flags(frame, facts) {
                Some(f) => f,
                None => return self.drop(DropReason::BadPacket),
            }
        } else {
            0
        };
        let opens = !tcp || flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN) == TCP_SYN;
        let client = addr16(facts.src);
        let vip = addr16(facts.dst);

        let h = hash.unwrap_or_else(|| self.conns.hash(proto, &client, sport, &vip, dport));
        let mut hit =
            self.conns
                .lookup_hashed(h, Dir::Forward, proto, &client, sport, &vip, dport, now);
        if let Some(id) = hit {
            let c = self.conns.get(id);
            let up = st.servers.get(usize::from(c.server)).is_some_and(|s| s.up);
            let reuse = tcp && opens && matches!(c.state, ConnState::TimeWait | ConnState::Close);
            if !up {
                self.conns.remove(id);
                self.counters.nodest_expired += 1;
                if !opens {
                    return self.drop(DropReason::ServerDown);
                }
                hit = None;
            } else if reuse {
                // A new SYN on a closing connection's tuple: a new connection (IPVS conn_reuse).
                self.conns.remove(id);
                hit = None;
            }
        }
        let (id, new) = match hit {
            Some(id) => (id, false),
            None if !opens => return self.drop(DropReason::NotSyn),
            None => match self.open(st, facts.family, proto, &client, sport, &vip, dport, now) {
                Ok(id) => (id, true),
                Err(r) => return self.drop(r),
            },
        };
        let c = *self.conns.get(id);
        let promoted = self.conns.promote(id);
        let (state, mut fins) = (c.state, c.fins);
        let state = if tcp {
            state.next_tcp(Dir::Forward, flags, &mut fins)
        } else {
            ConnState::Udp
        };
        self.conns.touch(id, state, fins, now, &st.timeouts);
        self.export_change(id, &c, new || promoted, st, now);
        if c.state == ConnState::SynRecv && state == ConnState::Established {
            self.confirm_template(st, facts.family, &client, &vip, now);
        }

        let server = c.server;
        let Some(srv) = st.servers.get(usize::from(server)) else {
            return self.drop(DropReason::NoServer);
        };
        if st.mode == Mode::Nat
            && rewrite::nat_forward(frame, facts, srv.address, srv.port).is_err()
        {
            return self.drop(DropReason::BadPacket);
        }
        let len = frame.len() as u64;
        self.counters.packets_in += 1;
        self.counters.bytes_in += len;
        if let Some(s) = self.counters.servers.get_mut(usize::from(server)) {
            s.packets_in += 1;
            s.bytes_in += len;
        }
        Verdict::Forward {
            server,
            to: srv.address,
            new,
        }
    }

    /// Schedule (or find the persistent server of) a new connection and track it.
    #[allow(clippy::too_many_arguments)]
    fn open(
        &mut self,
        st: &DirectorState,
        family: Family,
        proto: u8,
        client: &[u8; 16],
        sport: u16,
        vip: &[u8; 16],
        dport: u16,
        now: u64,
    ) -> Result<ConnId, DropReason> {
        let server = match st.persistence {
            Some(p) => {
                let key = masked(client, p.netmask_len, family);
                let ttl = p.timeout.as_millis().min(u128::from(u64::MAX)) as u64;
                let tpl = self
                    .conns
                    .lookup(Dir::Forward, PROTO_TEMPLATE, &key, 0, vip, 0, now);
                // a template only half-open connections made lives as long as they do
                let pending_ttl = ttl.min(self.conns.half_open_timeout(&st.timeouts));
                let kept = tpl.and_then(|t| {
                    let tc = self.conns.get(t);
                    let s = tc.server;
                    if st
                        .servers
                        .get(usize::from(s))
                        .is_some_and(|x| x.available())
                    {
                        let keep = match tc.state {
                            ConnState::PendingTemplate => pending_ttl,
                            _ => ttl,
                        };
                        let due = refresh_due(tc.synced, now, keep);
                        self.conns.set_expiry(t, now.saturating_add(keep));
                        if self.conns.promote(t) || due {
                            self.export(t, now);
                        }
                        Some(s)
                    } else {
                        // Its server is down or drained: forget the affinity.
                        self.conns.remove(t);
                        None
                    }
                });
                match kept {
                    Some(s) => s,
                    None => {
                        let s = self.schedule(st, client, vip)?;
                        // A TCP connection starts half-open: so does its template, until a
                        // connection of the client is established (`confirm_template`).
                        let pending = if proto == PROTO_TCP {
                            (ConnState::PendingTemplate, pending_ttl)
                        } else {
                            (ConnState::Template, ttl)
                        };
                        if st.servers[usize::from(s)].available() {
                            let t = Conn {
                                proto: PROTO_TEMPLATE,
                                client: key,
                                cport: 0,
                                vip: *vip,
                                vport: 0,
                                real: st.servers[usize::from(s)].addr16,
                                rport: 0,
                                server: s,
                                state: pending.0,
                                fins: 0,
                                nat: false,
                                expires: now.saturating_add(pending.1),
                                backup: false,
                                synced: 0,
                            };
                            // A full table refuses the template; the connection below will
                            // be refused and counted the same way.
                            if let Ok(id) = self.conns.insert(t, now) {
                                self.export(id, now);
                            }
                        }
                        s
                    }
                }
            }
            None => self.schedule(st, client, vip)?,
        };
        let srv = &st.servers[usize::from(server)];
        let conn = Conn {
            proto,
            client: *client,
            cport: sport,
            vip: *vip,
            vport: dport,
            real: srv.addr16,
            rport: srv.port.unwrap_or(dport),
            server,
            state: if proto == PROTO_TCP {
                ConnState::SynRecv
            } else {
                ConnState::Udp
            },
            fins: 0,
            nat: st.mode == Mode::Nat,
            expires: now,
            backup: false,
            synced: 0,
        };
        let id = self
            .conns
            .insert(conn, now)
            .map_err(|_| DropReason::ConntrackFull)?;
        self.counters.conns += 1;
        if srv.sorry {
            self.counters.sorry_conns += 1;
        }
        if let Some(s) = self.counters.servers.get_mut(usize::from(server)) {
            s.conns += 1;
        }
        Ok(id)
    }

    /// A connection of `client` got established: its persistence template, if pending, is
    /// confirmed and lives the persistence timeout from now on.
    fn confirm_template(
        &mut self,
        st: &DirectorState,
        family: Family,
        client: &[u8; 16],
        vip: &[u8; 16],
        now: u64,
    ) {
        let Some(p) = st.persistence else { return };
        let key = masked(client, p.netmask_len, family);
        let ttl = p.timeout.as_millis().min(u128::from(u64::MAX)) as u64;
        if let Some(t) = self
            .conns
            .lookup(Dir::Forward, PROTO_TEMPLATE, &key, 0, vip, 0, now)
        {
            let pending = self.conns.get(t).state == ConnState::PendingTemplate;
            self.conns.confirm_template(t, now.saturating_add(ttl));
            if pending {
                self.export(t, now);
            }
        }
    }

    fn schedule(
        &mut self,
        st: &DirectorState,
        client: &[u8; 16],
        vip: &[u8; 16],
    ) -> Result<u16, DropReason> {
        let key = SchedKey { client, dest: vip };
        pick(st, &mut self.cursor, self.conns.loads(), key).ok_or(DropReason::NoServer)
    }

    /// A packet that may be a NAT reply (server to client): if it belongs to a tracked
    /// connection, track the TCP state and rewrite its source back to the VIP and port the
    /// client used. `None` when it is not a reply of this director (the caller goes on with
    /// it), or the director is not in NAT mode.
    pub fn reply(
        &mut self,
        st: &DirectorState,
        frame: &mut [u8],
        facts: &IpFacts,
        now: u64,
    ) -> Option<Verdict> {
        if st.mode != Mode::Nat {
            return None;
        }
        let L4::Ports { sport, dport } = facts.l4 else {
            return None;
        };
        let proto = facts.proto;
        let src = addr16(facts.src);
        let dst = addr16(facts.dst);
        let id = self
            .conns
            .lookup(Dir::Reply, proto, &src, sport, &dst, dport, now)?;
        let c = *self.conns.get(id);
        let (mut state, mut fins) = (c.state, c.fins);
        if proto == PROTO_TCP {
            let flags = tcp_flags(frame, facts)?;
            state = state.next_tcp(Dir::Reply, flags, &mut fins);
        }
        let promoted = self.conns.promote(id);
        self.conns.touch(id, state, fins, now, &st.timeouts);
        self.export_change(id, &c, promoted, st, now);
        if rewrite::nat_reply(frame, facts, ip_of(&c.vip, facts.family), c.vport).is_err() {
            return Some(self.drop(DropReason::BadPacket));
        }
        let len = frame.len() as u64;
        self.counters.packets_out += 1;
        self.counters.bytes_out += len;
        if let Some(s) = self.counters.servers.get_mut(usize::from(c.server)) {
            s.packets_out += 1;
            s.bytes_out += len;
        }
        Some(Verdict::Forward {
            server: c.server,
            to: facts.dst,
            new: false,
        })
    }

    /// An ICMP/ICMPv6 error (`icmp::is_error`) that may be about a NAT connection of this
    /// director (IPVS `ip_vs_out_icmp` / `ip_vs_in_icmp`). The quoted packet is looked up with
    /// its tuple swapped:
    ///
    /// - as a reply key (it quotes a forwarded packet, `client:cport -> server:sport`; the
    ///   error comes from the server or a router on its side and goes to the client): the
    ///   quoted destination becomes `VIP:vport` and the outer source, when it is the server,
    ///   the VIP. `to` is the client (the outer destination).
    /// - as a forward key (it quotes a reply, `VIP:vport -> client:cport`; the error comes
    ///   from the client's side and goes to the VIP): the quoted source becomes
    ///   `server:sport` and the outer destination the server. `to` is the server.
    ///
    /// Checksums are fixed (`icmp` says how). The connection is neither created nor changed:
    /// its state and its timer stay (an error is no sign of life; IPVS restarts the timer).
    /// `None` when it is no such error (the caller goes on with it): another director's or no
    /// connection's, not NAT mode, not an error type, a quoted header that cannot be read, an
    /// ICMP checksum that does not verify.
    pub fn icmp(
        &mut self,
        st: &DirectorState,
        frame: &mut [u8],
        facts: &IpFacts,
        now: u64,
    ) -> Option<Verdict> {
        let emb = icmp::embedded(frame, facts)?;
        // an error goes to the quoted packet's source
        if emb.src != addr16(facts.dst) || !icmp::checksum_ok(frame, facts, &emb) {
            return None;
        }
        if st.mode != Mode::Nat {
            return self.icmp_direct(&emb, facts, now);
        }
        let p = emb.proto;
        if let Some(id) =
            self.conns
                .lookup(Dir::Reply, p, &emb.dst, emb.dport, &emb.src, emb.sport, now)
        {
            // server side, to the client
            let c = *self.conns.get(id);
            let outer = (addr16(facts.src) == c.real).then_some((End::Src, &c.vip));
            if icmp::translate(frame, facts, &emb, End::Dst, &c.vip, c.vport, outer).is_err() {
                return Some(self.drop(DropReason::BadPacket));
            }
            self.counters.icmp_out += 1;
            return Some(Verdict::Forward {
                server: c.server,
                to: facts.dst,
                new: false,
            });
        }
        let id = self.conns.lookup(
            Dir::Forward,
            p,
            &emb.dst,
            emb.dport,
            &emb.src,
            emb.sport,
            now,
        )?;
        let c = *self.conns.get(id);
        if !c.nat {
            return None;
        }
        // client side, to the server
        let outer = Some((End::Dst, &c.real));
        if icmp::translate(frame, facts, &emb, End::Src, &c.real, c.rport, outer).is_err() {
            return Some(self.drop(DropReason::BadPacket));
        }
        self.counters.icmp_in += 1;
        Some(Verdict::Forward {
            server: c.server,
            to: ip_of(&c.real, facts.family),
            new: false,
        })
    }

    /// Gateway and tunnel modes (IPVS `ip_vs_icmp_xmit`): an ICMP error from the client's
    /// side about a server's answer (quoting `VIP:vport -> client:cport`, sent to the VIP,
    /// which routes to the appliance) goes, unchanged, to the connection's server, which
    /// owns the VIP and sent the answer (its path MTU discovery needs it). Errors from the
    /// servers' side go to the clients directly, never through us.
    fn icmp_direct(&mut self, emb: &icmp::Embedded, facts: &IpFacts, now: u64) -> Option<Verdict> {
        let id = self.conns.lookup(
            Dir::Forward,
            emb.proto,
            &emb.dst,
            emb.dport,
            &emb.src,
            emb.sport,
            now,
        )?;
        let c = *self.conns.get(id);
        self.counters.icmp_in += 1;
        Some(Verdict::Forward {
            server: c.server,
            to: ip_of(&c.real, facts.family),
            new: false,
        })
    }
}
