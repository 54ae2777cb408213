//! A worker's bounded connection table for one director: a preallocated slab of connections
//! and an open-addressing index (linear probing, backward-shift deletion, at most 50% full), so
//! nothing is allocated per packet and lookups touch one or two cache lines of index.
//!
//! Each connection is indexed by its forward key (proto, client addr/port, VIP addr/port) and,
//! in NAT mode, by its reply key (proto, server addr/port, client addr/port) pointing at the
//! same entry, so a reply finds it. Persistence templates live in the same table under
//! proto 0 with the client address masked and ports 0.
//!
//! Expiry is lazy: a lookup that finds an expired entry removes it, [`ConnTable::expire`]
//! sweeps a bounded number of entries per call (the worker calls it once per burst), and an
//! insert into a full table first sweeps a bounded window for expired entries.
//!
//! SYN floods (IPVS `drop_entry` and `secure_tcp`, see `docs/director.md`): half-open entries
//! (connections in SYN_RECV and the persistence templates only they use,
//! [`ConnState::PendingTemplate`]) are bounded to [`HALF_OPEN_SHARE`] of the table and are
//! the ones evicted when the table is full: a new half-open entry beyond the bound, or any new
//! entry in a full table, evicts a half-open one found in a bounded scan. Established
//! connections and confirmed templates are never evicted for new ones; when the table is full
//! of them the new connection is refused ([`Full`]) and the worker counts a `conntrack_full`
//! drop. While half-open entries exceed [`DEFENSE_ON`] of the table the table is in
//! *defense* (IPVS's `vs_timeout_table_dos`): SYN_RECV and pending templates get
//! [`DEFENSE_SYN_RECV_MS`] instead of the normal SYN_RECV timeout, until they fall below
//! [`DEFENSE_OFF`].
//!
//! TCP states follow IPVS's simplification: SYN_RECV on the client's SYN, ESTABLISHED on the
//! first ACK, FIN_WAIT on a FIN, TIME_WAIT once both sides sent one, CLOSE on a RST, each with
//! its own idle timeout ([`ConnTimeouts`]); UDP has one idle timeout.

use flowgate_config::appliance::Timeouts;

use super::hash::{hash2, split, Seed};
use super::schedule::ServerLoad;
use crate::dpdk::prefetch;

/// The TCP flags the state machine follows (wire's, under the names the tracker reads).
pub use crate::wire::tcp::flags::{ACK as TCP_ACK, FIN as TCP_FIN, RST as TCP_RST, SYN as TCP_SYN};

/// Proto value of persistence templates (no real connection uses IP protocol 0 here).
pub const PROTO_TEMPLATE: u8 = 0;

/// Idle timeouts per state, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnTimeouts {
    pub syn_recv: u64,
    pub established: u64,
    pub fin_wait: u64,
    pub time_wait: u64,
    pub close: u64,
    pub udp: u64,
}

impl ConnTimeouts {
    /// The config's `tcp`, `tcp_fin` and `udp` (as `ipvsadm --set`), IPVS's defaults for the
    /// rest: SYN_RECV 60 s, CLOSE 10 s.
    pub fn from_config(t: &Timeouts) -> Self {
        let ms = |d: std::time::Duration| d.as_millis().min(u128::from(u64::MAX)) as u64;
        ConnTimeouts {
            syn_recv: 60_000,
            established: ms(t.tcp),
            fin_wait: ms(t.tcp_fin),
            time_wait: ms(t.tcp_fin),
            close: 10_000,
            udp: ms(t.udp),
        }
    }

    /// The idle timeout of state `s` (0 for templates: they carry their own).
    pub fn of(&self, s: ConnState) -> u64 {
        match s {
            ConnState::SynRecv => self.syn_recv,
            ConnState::Established => self.established,
            ConnState::FinWait => self.fin_wait,
            ConnState::TimeWait => self.time_wait,
            ConnState::Close => self.close,
            ConnState::Udp => self.udp,
            // templates carry their own timeout
            ConnState::Template | ConnState::PendingTemplate => 0,
        }
    }
}

/// The state of a tracked connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    SynRecv,
    Established,
    FinWait,
    TimeWait,
    Close,
    Udp,
    /// A persistence template, not a connection.
    Template,
    /// A persistence template made by a connection still in SYN_RECV: it becomes a
    /// [`ConnState::Template`] when a connection of its client is established; until then it
    /// is half-open (short-lived, evictable), so spoofed SYNs cannot pin the table with
    /// templates.
    PendingTemplate,
}

/// Which way a packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Client to VIP.
    Forward,
    /// Server to client (NAT replies).
    Reply,
}

impl ConnState {
    /// The next TCP state after a packet with `flags` going `dir`; `fins` remembers which
    /// sides sent a FIN (bit 0 forward, bit 1 reply).
    pub fn next_tcp(self, dir: Dir, flags: u8, fins: &mut u8) -> ConnState {
        if flags & TCP_RST != 0 {
            return ConnState::Close;
        }
        if flags & TCP_FIN != 0 {
            *fins |= match dir {
                Dir::Forward => 1,
                Dir::Reply => 2,
            };
            return if *fins == 3 {
                ConnState::TimeWait
            } else {
                ConnState::FinWait
            };
        }
        match self {
            ConnState::SynRecv if flags & TCP_ACK != 0 && flags & TCP_SYN == 0 => {
                ConnState::Established
            }
            s => s,
        }
    }

    /// Counted as active by the least-connection schedulers.
    pub fn is_active(self) -> bool {
        self == ConnState::Established
    }

    /// A half-open entry: bounded, evicted first, shorter-lived in defense.
    pub fn is_half_open(self) -> bool {
        matches!(self, ConnState::SynRecv | ConnState::PendingTemplate)
    }

    /// A persistence template (pending or not), not a connection.
    pub fn is_template(self) -> bool {
        matches!(self, ConnState::Template | ConnState::PendingTemplate)
    }
}

/// One tracked connection (or persistence template).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conn {
    pub proto: u8,
    pub client: [u8; 16],
    pub cport: u16,
    pub vip: [u8; 16],
    pub vport: u16,
    /// The server's address and port (the reply key's source).
    pub real: [u8; 16],
    pub rport: u16,
    /// The server's index in its director (config order).
    pub server: u16,
    pub state: ConnState,
    /// FIN seen: bit 0 from the client, bit 1 from the server.
    pub fins: u8,
    /// Indexed by its reply key too (NAT).
    pub nat: bool,
    /// When it expires (ms, the caller's clock).
    pub expires: u64,
    /// Applied from a peer's sync (`docs/sync.md`) and not used by a packet since: not
    /// counted as active or inactive for the least-connection schedulers (IPVS's
    /// `IP_VS_CONN_F_INACTIVE` backup connections).
    pub backup: bool,
    /// When it was last exported to the sync (the caller's clock in units of 1024 ms,
    /// wrapping: 16 bits keep the entry at 72 bytes), for the periodic refresh of
    /// long-lived connections.
    pub synced: u16,
}

impl Conn {
    fn forward_hash(&self, seed: Seed) -> u64 {
        tuple_hash(
            seed,
            self.proto,
            &self.client,
            self.cport,
            &self.vip,
            self.vport,
        )
    }

    fn reply_hash(&self, seed: Seed) -> u64 {
        tuple_hash(
            seed,
            self.proto,
            &self.real,
            self.rport,
            &self.client,
            self.cport,
        )
    }

    fn matches(
        &self,
        dir: Dir,
        proto: u8,
        src: &[u8; 16],
        sport: u16,
        dst: &[u8; 16],
        dport: u16,
    ) -> bool {
        self.proto == proto
            && match dir {
                Dir::Forward => {
                    self.cport == sport
                        && self.vport == dport
                        && self.client == *src
                        && self.vip == *dst
                }
                Dir::Reply => {
                    self.nat
                        && self.rport == sport
                        && self.cport == dport
                        && self.real == *src
                        && self.client == *dst
                }
            }
    }
}

/// The hash of a (proto, src, sport, dst, dport) tuple.
#[inline]
pub fn tuple_hash(
    seed: Seed,
    proto: u8,
    src: &[u8; 16],
    sport: u16,
    dst: &[u8; 16],
    dport: u16,
) -> u64 {
    let (s0, s1) = split(src);
    let (d0, d1) = split(dst);
    let ports = (u64::from(proto) << 32) | (u64::from(sport) << 16) | u64::from(dport);
    hash2(hash2(hash2(seed, s0, s1), d0, d1), ports, 0)
}

/// The table is full and nothing in the swept window had expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// A handle on a live connection, valid until the next mutating table call.
pub type ConnId = u32;

const EMPTY: u64 = u64::MAX;
/// Entries looked at for expired ones when an insert finds the table full.
pub const FULL_SWEEP: usize = 64;
/// Index slots [`ConnTable::prefetch_entry`] looks at (at most 50% full, runs are short).
pub const PREFETCH_PROBE: usize = 4;
/// Entries looked at for a half-open one to evict when the table is full: in a table full of
/// established connections it costs this many reads per refused SYN. (At the half-open bound
/// the scan goes on until it finds one: there are at least `HALF_OPEN_SHARE`/4 of the table,
/// and the cursor only moves forward, so the cost per eviction stays small on average.)
pub const EVICT_SCAN: usize = 256;
/// Half-open entries are bounded to this share of the table (numerator over 4): the rest is
/// kept for established connections and their templates.
pub const HALF_OPEN_SHARE: usize = 3;
/// Defense starts when half-open entries exceed 1/`DEFENSE_ON` of the table...
pub const DEFENSE_ON: usize = 8;
/// ...and ends when they fall below 1/`DEFENSE_OFF` of it.
pub const DEFENSE_OFF: usize = 16;
/// SYN_RECV timeout in defense (IPVS `vs_timeout_table_dos`: 10 s instead of 60 s).
pub const DEFENSE_SYN_RECV_MS: u64 = 10_000;

/// Index slot: hash low 32 bits | entry index (31 bits) | reply bit.
fn slot(hash: u64, entry: u32, dir: Dir) -> u64 {
    (hash & 0xffff_ffff) << 32 | u64::from(entry) << 1 | u64::from(dir == Dir::Reply)
}

fn slot_entry(s: u64) -> u32 {
    ((s >> 1) & 0x7fff_ffff) as u32
}

/// A bounded connection table, owned by one worker.
#[derive(Debug)]
pub struct ConnTable {
    entries: Vec<Conn>,
    live: Vec<bool>,
    free: Vec<u32>,
    index: Vec<u64>,
    mask: usize,
    seed: Seed,
    sweep: usize,
    /// Per-server counts for the least-connection schedulers (templates not counted).
    loads: Vec<ServerLoad>,
    /// Live half-open entries ([`ConnState::is_half_open`]).
    half_open: usize,
    /// Where the next eviction scan starts.
    evict_cursor: usize,
    /// In defense (shorter half-open timeouts).
    defense: bool,
    /// Live backup entries ([`Conn::backup`]).
    backups: usize,
    stats: TableStats,
}

/// What the table did against floods, for the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Half-open entries evicted to make room (bound reached or table full).
    pub half_open_evicted: u64,
    /// Times the table went into defense.
    pub defense_entered: u64,
}

const BLANK: Conn = Conn {
    proto: 0,
    client: [0; 16],
    cport: 0,
    vip: [0; 16],
    vport: 0,
    real: [0; 16],
    rport: 0,
    server: 0,
    state: ConnState::Close,
    fins: 0,
    nat: false,
    expires: 0,
    backup: false,
    synced: 0,
};

impl ConnTable {
    /// A table for `capacity` connections (and templates) of a director with `servers` servers.
    /// All memory is allocated here.
    pub fn new(capacity: usize, servers: usize, seed: Seed) -> ConnTable {
        let capacity = capacity.clamp(1, 1 << 30);
        let slots = (capacity * 4).next_power_of_two();
        ConnTable {
            entries: vec![BLANK; capacity],
            live: vec![false; capacity],
            free: (0..capacity as u32).rev().collect(),
            index: vec![EMPTY; slots],
            mask: slots - 1,
            seed,
            sweep: 0,
            loads: vec![ServerLoad::default(); servers],
            half_open: 0,
            evict_cursor: 0,
            defense: false,
            backups: 0,
            stats: TableStats::default(),
        }
    }

    /// Live half-open entries (connections in SYN_RECV, pending templates).
    pub fn half_open(&self) -> usize {
        self.half_open
    }

    /// The most half-open entries the table keeps before evicting one for a new one.
    pub fn half_open_max(&self) -> usize {
        (self.entries.len() * HALF_OPEN_SHARE / 4).max(1)
    }

    /// In defense: half-open entries get [`DEFENSE_SYN_RECV_MS`].
    pub fn in_defense(&self) -> bool {
        self.defense
    }

    pub fn stats(&self) -> TableStats {
        self.stats
    }

    /// The SYN_RECV timeout now (shorter in defense).
    pub fn half_open_timeout(&self, t: &ConnTimeouts) -> u64 {
        if self.defense {
            t.syn_recv.min(DEFENSE_SYN_RECV_MS)
        } else {
            t.syn_recv
        }
    }

    /// Enter or leave defense by the half-open count (with hysteresis).
    fn update_defense(&mut self) {
        let n = self.entries.len();
        if !self.defense && self.half_open > n / DEFENSE_ON {
            self.defense = true;
            self.stats.defense_entered += 1;
        } else if self.defense && self.half_open < n / DEFENSE_OFF {
            self.defense = false;
        }
    }

    /// Remove one half-open entry found in a scan of at most `scan` entries, continuing where
    /// the last scan stopped (IPVS `ip_vs_random_dropentry` drops SYN_RECV entries the same
    /// way, at random). False if the scan found none.
    fn evict_half_open(&mut self, scan: usize) -> bool {
        if self.half_open == 0 {
            return false;
        }
        let n = self.entries.len();
        for _ in 0..scan.min(n) {
            let e = self.evict_cursor;
            self.evict_cursor = (self.evict_cursor + 1) % n;
            if self.live[e] && self.entries[e].state.is_half_open() {
                self.remove(e as u32);
                self.stats.half_open_evicted += 1;
                return true;
            }
        }
        false
    }

    pub fn capacity(&self) -> usize {
        self.entries.len()
    }

    /// Live entries (connections and templates, expired or not yet swept).
    pub fn len(&self) -> usize {
        self.entries.len() - self.free.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The per-server active/inactive counts.
    pub fn loads(&self) -> &[ServerLoad] {
        &self.loads
    }

    pub fn get(&self, id: ConnId) -> &Conn {
        &self.entries[id as usize]
    }

    /// Look a packet up going `dir`. An expired entry found on the way is removed.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub fn lookup(
        &mut self,
        dir: Dir,
        proto: u8,
        src: &[u8; 16],
        sport: u16,
        dst: &[u8; 16],
        dport: u16,
        now: u64,
    ) -> Option<ConnId> {
        let h = self.hash(proto, src, sport, dst, dport);
        self.lookup_hashed(h, dir, proto, src, sport, dst, dport, now)
    }

    /// The table's hash of a key (forward or reply), for [`ConnTable::lookup_hashed`] and the
    /// prefetches.
    #[inline]
    pub fn hash(&self, proto: u8, src: &[u8; 16], sport: u16, dst: &[u8; 16], dport: u16) -> u64 {
        tuple_hash(self.seed, proto, src, sport, dst, dport)
    }

    /// Burst stage 1: prefetch the index slot where the lookup of hash `h` starts.
    #[inline]
    pub fn prefetch_slot(&self, h: u64) {
        prefetch(&self.index[(h as usize) & self.mask]);
    }

    /// Burst stage 2 (after [`ConnTable::prefetch_slot`] had time to land): prefetch the
    /// connection of the first index slot whose hash tag matches `h` going `dir`, looking at
    /// most [`PREFETCH_PROBE`] slots. No key comparison (that would miss on the slab): a tag
    /// collision prefetches a wrong entry, which costs nothing but the bandwidth.
    #[inline]
    pub fn prefetch_entry(&self, h: u64, dir: Dir) {
        let tag = (h & 0xffff_ffff) << 32;
        let want_reply = u64::from(dir == Dir::Reply);
        let mut i = (h as usize) & self.mask;
        for _ in 0..PREFETCH_PROBE {
            let s = self.index[i];
            if s == EMPTY {
                return;
            }
            if s & 0xffff_ffff_0000_0000 == tag && s & 1 == want_reply {
                prefetch(&self.entries[slot_entry(s) as usize]);
                return;
            }
            i = (i + 1) & self.mask;
        }
    }

    /// [`ConnTable::lookup`] with the key's hash computed already: `h` must be
    /// [`ConnTable::hash`] of the same key (another value makes the lookup miss).
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn lookup_hashed(
        &mut self,
        h: u64,
        dir: Dir,
        proto: u8,
        src: &[u8; 16],
        sport: u16,
        dst: &[u8; 16],
        dport: u16,
        now: u64,
    ) -> Option<ConnId> {
        let tag = (h & 0xffff_ffff) << 32;
        let want_reply = u64::from(dir == Dir::Reply);
        let mut i = (h as usize) & self.mask;
        loop {
            let s = self.index[i];
            if s == EMPTY {
                return None;
            }
            if s & 0xffff_ffff_0000_0000 == tag && s & 1 == want_reply {
                let e = slot_entry(s);
                if self.entries[e as usize].matches(dir, proto, src, sport, dst, dport) {
                    if self.entries[e as usize].expires <= now {
                        self.remove(e);
                        return None;
                    }
                    return Some(e);
                }
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Track a new connection (or template). A half-open one beyond the half-open bound
    /// evicts another half-open one. When the table is full, a bounded window is swept for
    /// expired entries, then for a half-open entry to evict; `Err(Full)` if neither.
    pub fn insert(&mut self, conn: Conn, now: u64) -> Result<ConnId, Full> {
        let half_open = conn.state.is_half_open();
        if half_open && self.half_open >= self.half_open_max() {
            self.evict_half_open(self.entries.len());
        }
        if self.free.is_empty() {
            self.expire(now, FULL_SWEEP);
        }
        if self.free.is_empty() {
            self.evict_half_open(EVICT_SCAN);
        }
        let e = self.free.pop().ok_or(Full)?;
        self.entries[e as usize] = conn;
        self.live[e as usize] = true;
        self.place(conn.forward_hash(self.seed), e, Dir::Forward);
        if conn.nat {
            self.place(conn.reply_hash(self.seed), e, Dir::Reply);
        }
        if !conn.backup {
            self.count(conn.server, conn.state, 1);
        } else {
            self.backups += 1;
        }
        if half_open {
            self.half_open += 1;
            self.update_defense();
        }
        Ok(e)
    }

    fn place(&mut self, h: u64, e: u32, dir: Dir) {
        let mut i = (h as usize) & self.mask;
        while self.index[i] != EMPTY {
            i = (i + 1) & self.mask;
        }
        self.index[i] = slot(h, e, dir);
    }

    fn count(&mut self, server: u16, state: ConnState, delta: i32) {
        if state.is_template() {
            return;
        }
        if let Some(l) = self.loads.get_mut(usize::from(server)) {
            let c = if state.is_active() {
                &mut l.active
            } else {
                &mut l.inactive
            };
            *c = c.saturating_add_signed(delta);
        }
    }

    /// Move connection `id` to `state` and push its expiry to `now` + the state's timeout
    /// (SYN_RECV's shorter in defense).
    pub fn touch(&mut self, id: ConnId, state: ConnState, fins: u8, now: u64, t: &ConnTimeouts) {
        let timeout = if state == ConnState::SynRecv {
            self.half_open_timeout(t)
        } else {
            t.of(state)
        };
        self.set_state(id, state, fins, now.saturating_add(timeout));
    }

    /// Entry `id`'s state, FIN bits and expiry, with the schedulers' counts (not for a
    /// backup entry) and the half-open count following the state.
    fn set_state(&mut self, id: ConnId, state: ConnState, fins: u8, expires: u64) {
        let c = self.entries[id as usize];
        if c.state != state {
            if !c.backup {
                self.count(c.server, c.state, -1);
                self.count(c.server, state, 1);
            }
            self.half_open_change(c.state, state);
        }
        let e = &mut self.entries[id as usize];
        e.state = state;
        e.fins = fins;
        e.expires = expires;
    }

    fn half_open_change(&mut self, from: ConnState, to: ConnState) {
        match (from.is_half_open(), to.is_half_open()) {
            (true, false) => self.half_open -= 1,
            (false, true) => self.half_open += 1,
            _ => {}
        }
    }

    /// Live backup entries (applied from a peer's sync, unused since).
    pub fn backups(&self) -> usize {
        self.backups
    }

    /// A backup entry used by a packet: a normal one from now on (counted for the
    /// schedulers). Returns whether it was a backup entry.
    pub fn promote(&mut self, id: ConnId) -> bool {
        let c = self.entries[id as usize];
        if !c.backup || !self.live[id as usize] {
            return false;
        }
        self.entries[id as usize].backup = false;
        self.backups -= 1;
        self.count(c.server, c.state, 1);
        true
    }

    /// A synced update of entry `id` (same server): its state, FIN bits and expiry, as the
    /// peer has them. Its backup flag stays.
    pub fn sync_update(&mut self, id: ConnId, state: ConnState, fins: u8, expires: u64) {
        self.set_state(id, state, fins, expires);
    }

    /// Stamp entry `id` as exported to the sync at `stamp` ([`Conn::synced`]).
    pub fn set_synced(&mut self, id: ConnId, stamp: u16) {
        self.entries[id as usize].synced = stamp;
    }

    /// Entry `i` of the slab when it is live (a connection or a template): the sync's full
    /// dump walks `0..capacity()`.
    pub fn live_entry(&self, i: usize) -> Option<&Conn> {
        self.live
            .get(i)
            .copied()
            .unwrap_or(false)
            .then(|| &self.entries[i])
    }

    /// Set an entry's expiry directly (templates).
    pub fn set_expiry(&mut self, id: ConnId, expires: u64) {
        self.entries[id as usize].expires = expires;
    }

    /// A pending template whose client got a connection established: a template like any
    /// other from now on, expiring at `expires`. No-op on anything else.
    pub fn confirm_template(&mut self, id: ConnId, expires: u64) {
        if self.entries[id as usize].state == ConnState::PendingTemplate {
            self.half_open_change(ConnState::PendingTemplate, ConnState::Template);
            let e = &mut self.entries[id as usize];
            e.state = ConnState::Template;
            e.expires = expires;
        }
    }

    /// Forget connection `id`.
    pub fn remove(&mut self, id: ConnId) {
        let c = self.entries[id as usize];
        if !self.live[id as usize] {
            return;
        }
        self.unplace(c.forward_hash(self.seed), id, Dir::Forward);
        if c.nat {
            self.unplace(c.reply_hash(self.seed), id, Dir::Reply);
        }
        if c.backup {
            self.backups -= 1;
        } else {
            self.count(c.server, c.state, -1);
        }
        if c.state.is_half_open() {
            self.half_open -= 1;
        }
        self.live[id as usize] = false;
        self.free.push(id);
    }

    fn unplace(&mut self, h: u64, e: u32, dir: Dir) {
        let want = slot(h, e, dir);
        let mut i = (h as usize) & self.mask;
        loop {
            match self.index[i] {
                EMPTY => return,
                s if s == want => break,
                _ => i = (i + 1) & self.mask,
            }
        }
        // Backward-shift deletion: pull later members of the run into the hole when their
        // home position allows it.
        let mut j = i;
        loop {
            j = (j + 1) & self.mask;
            let s = self.index[j];
            if s == EMPTY {
                break;
            }
            let home = ((s >> 32) as usize) & self.mask;
            // `s` may move to `i` unless its home lies cyclically in (i, j].
            let stays = if i <= j {
                i < home && home <= j
            } else {
                i < home || home <= j
            };
            if !stays {
                self.index[i] = s;
                i = j;
            }
        }
        self.index[i] = EMPTY;
    }

    /// Remove up to `budget` entries' worth of expired ones, continuing where the last sweep
    /// stopped, and leave defense if the half-open entries fell low enough. Returns how many
    /// were removed.
    pub fn expire(&mut self, now: u64, budget: usize) -> usize {
        let n = self.entries.len();
        let mut removed = 0;
        for _ in 0..budget.min(n) {
            let e = self.sweep;
            self.sweep = (self.sweep + 1) % n;
            if self.live[e] && self.entries[e].expires <= now {
                self.remove(e as u32);
                removed += 1;
            }
        }
        self.update_defense();
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(n: u8) -> [u8; 16] {
        let mut x = [0u8; 16];
        x[10] = 0xff;
        x[11] = 0xff;
        x[12..].copy_from_slice(&[10, 0, 0, n]);
        x
    }

    fn conn(client: u8, cport: u16, server: u16) -> Conn {
        Conn {
            proto: 6,
            client: a(client),
            cport,
            vip: a(200),
            vport: 80,
            real: a(100 + server as u8),
            rport: 8080,
            server,
            state: ConnState::SynRecv,
            fins: 0,
            nat: true,
            expires: 1000,
            backup: false,
            synced: 0,
        }
    }

    #[test]
    fn insert_lookup_both_ways_remove() {
        let mut t = ConnTable::new(16, 2, 7);
        let id = t.insert(conn(1, 1000, 1), 0).expect("room");
        assert_eq!(
            t.lookup(Dir::Forward, 6, &a(1), 1000, &a(200), 80, 0),
            Some(id)
        );
        assert_eq!(
            t.lookup(Dir::Reply, 6, &a(101), 8080, &a(1), 1000, 0),
            Some(id)
        );
        assert_eq!(
            t.lookup(Dir::Forward, 17, &a(1), 1000, &a(200), 80, 0),
            None
        );
        assert_eq!(t.lookup(Dir::Reply, 6, &a(1), 1000, &a(200), 80, 0), None);
        assert_eq!(
            t.loads()[1],
            ServerLoad {
                active: 0,
                inactive: 1
            }
        );
        t.remove(id);
        assert_eq!(t.lookup(Dir::Forward, 6, &a(1), 1000, &a(200), 80, 0), None);
        assert_eq!(t.lookup(Dir::Reply, 6, &a(101), 8080, &a(1), 1000, 0), None);
        assert_eq!(t.loads()[1], ServerLoad::default());
        assert!(t.is_empty());
    }

    #[test]
    fn full_table_refuses_then_reuses_expired() {
        let mut t = ConnTable::new(4, 1, 7);
        for p in 0..4 {
            let mut c = conn(1, p, 0);
            c.state = ConnState::Established;
            t.insert(c, 0).expect("room");
        }
        assert_eq!(t.insert(conn(1, 99, 0), 10), Err(Full));
        // at 1000 they have all expired: the insert sweeps and succeeds
        let mut c = conn(1, 99, 0);
        c.expires = 5000;
        let id = t.insert(c, 1000).expect("reclaimed");
        assert_eq!(
            t.lookup(Dir::Forward, 6, &a(1), 99, &a(200), 80, 1000),
            Some(id)
        );
    }

    #[test]
    fn expired_entries_are_not_found() {
        let mut t = ConnTable::new(4, 1, 7);
        t.insert(conn(1, 5, 0), 0).expect("room");
        assert!(t
            .lookup(Dir::Forward, 6, &a(1), 5, &a(200), 80, 999)
            .is_some());
        assert!(t
            .lookup(Dir::Forward, 6, &a(1), 5, &a(200), 80, 1000)
            .is_none());
        assert!(t.is_empty());
    }

    #[test]
    fn many_inserts_and_removes_keep_the_index_consistent() {
        let mut t = ConnTable::new(512, 4, 3);
        let mut ids = Vec::new();
        let mut x: u64 = 1;
        for round in 0..20u16 {
            for k in 0..400u16 {
                let mut c = conn(
                    (k % 200) as u8,
                    k.wrapping_mul(7).wrapping_add(round),
                    k % 4,
                );
                // not half-open: none is evicted behind the test's back
                c.state = ConnState::Established;
                if t.lookup(Dir::Forward, 6, &c.client, c.cport, &c.vip, c.vport, 0)
                    .is_none()
                {
                    if let Ok(id) = t.insert(c, 0) {
                        ids.push((id, c));
                    }
                }
            }
            // remove a pseudo-random half
            let mut keep = Vec::new();
            for (id, c) in ids.drain(..) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if x & 1 == 0 {
                    t.remove(id);
                } else {
                    keep.push((id, c));
                }
            }
            ids = keep;
            for &(id, c) in &ids {
                assert_eq!(
                    t.lookup(Dir::Forward, 6, &c.client, c.cport, &c.vip, c.vport, 0),
                    Some(id)
                );
                assert_eq!(
                    t.lookup(Dir::Reply, 6, &c.real, c.rport, &c.client, c.cport, 0),
                    Some(id)
                );
            }
            assert_eq!(t.len(), ids.len());
        }
    }

    fn timeouts() -> ConnTimeouts {
        ConnTimeouts {
            syn_recv: 60_000,
            established: 900_000,
            fin_wait: 120_000,
            time_wait: 120_000,
            close: 10_000,
            udp: 300_000,
        }
    }

    #[test]
    fn half_open_entries_are_bounded_and_evicted_first() {
        let t = timeouts();
        let mut tb = ConnTable::new(16, 1, 5);
        assert_eq!(tb.half_open_max(), 12);
        // four established connections
        let mut est = Vec::new();
        for p in 0..4 {
            let id = tb.insert(conn(1, p, 0), 0).expect("room");
            tb.touch(id, ConnState::Established, 0, 0, &t);
            est.push(p);
        }
        assert_eq!(tb.half_open(), 0);
        // twenty SYNs: all get in, the half-open ones never exceed the bound
        for p in 100..120 {
            assert!(tb.insert(conn(2, p, 0), 1).is_ok());
            assert!(tb.half_open() <= 12);
        }
        assert_eq!(tb.half_open(), 12);
        assert_eq!(tb.stats().half_open_evicted, 8);
        assert_eq!(tb.len(), 16, "full");
        // the established ones are all still there
        for &p in &est {
            assert!(tb
                .lookup(Dir::Forward, 6, &a(1), p, &a(200), 80, 2)
                .is_some());
        }
        // a pending template is half-open too; a confirmed one is not
        let mut tpl = conn(3, 0, 0);
        tpl.proto = PROTO_TEMPLATE;
        tpl.state = ConnState::PendingTemplate;
        tpl.nat = false;
        let id = tb.insert(tpl, 2).expect("evicts a SYN_RECV");
        assert_eq!(tb.half_open(), 12);
        tb.confirm_template(id, 500_000);
        assert_eq!(tb.half_open(), 11);
        assert_eq!(tb.get(id).state, ConnState::Template);
        // a table full of established connections and templates refuses
        let mut tb = ConnTable::new(4, 1, 5);
        for p in 0..4 {
            let id = tb.insert(conn(1, p, 0), 0).expect("room");
            tb.touch(id, ConnState::Established, 0, 0, &t);
        }
        assert_eq!(tb.insert(conn(2, 9, 0), 1), Err(Full));
        assert_eq!(tb.stats().half_open_evicted, 0);
    }

    #[test]
    fn defense_shortens_half_open_timeouts_with_hysteresis() {
        let t = timeouts();
        let mut tb = ConnTable::new(160, 1, 9);
        let mut ids = Vec::new();
        // up to 160/8 = 20 half-open entries: no defense, SYN_RECV lives 60 s
        for p in 0..20 {
            let id = tb.insert(conn(1, p, 0), 0).expect("room");
            tb.touch(id, ConnState::SynRecv, 0, 0, &t);
            ids.push(id);
        }
        assert!(!tb.in_defense());
        assert_eq!(tb.get(ids[0]).expires, 60_000);
        // the 21st: defense, new and touched SYN_RECV entries live 10 s
        let id = tb.insert(conn(1, 20, 0), 0).expect("room");
        tb.touch(id, ConnState::SynRecv, 0, 0, &t);
        ids.push(id);
        assert!(tb.in_defense());
        assert_eq!(tb.stats().defense_entered, 1);
        assert_eq!(tb.get(id).expires, DEFENSE_SYN_RECV_MS);
        tb.touch(ids[0], ConnState::SynRecv, 0, 5, &t);
        assert_eq!(tb.get(ids[0]).expires, 5 + DEFENSE_SYN_RECV_MS);
        // established connections keep their timeout
        tb.touch(ids[1], ConnState::Established, 0, 5, &t);
        assert_eq!(tb.get(ids[1]).expires, 5 + 900_000);
        assert_eq!(tb.half_open(), 20);
        // down to 10 (160/16): still in defense; below: out
        for &id in &ids[2..12] {
            tb.remove(id);
        }
        tb.expire(6, 0);
        assert_eq!(tb.half_open(), 10);
        assert!(tb.in_defense());
        tb.remove(ids[12]);
        tb.expire(6, 0);
        assert!(!tb.in_defense());
        assert_eq!(tb.stats().defense_entered, 1);
        tb.touch(ids[13], ConnState::SynRecv, 0, 7, &t);
        assert_eq!(tb.get(ids[13]).expires, 7 + 60_000);
    }

    #[test]
    fn tcp_states() {
        use ConnState::*;
        let mut f = 0;
        let s = SynRecv.next_tcp(Dir::Reply, TCP_SYN | TCP_ACK, &mut f);
        assert_eq!(s, SynRecv);
        let s = s.next_tcp(Dir::Forward, TCP_ACK, &mut f);
        assert_eq!(s, Established);
        let s = s.next_tcp(Dir::Forward, TCP_FIN | TCP_ACK, &mut f);
        assert_eq!(s, FinWait);
        let s = s.next_tcp(Dir::Forward, TCP_ACK, &mut f);
        assert_eq!(s, FinWait);
        let s = s.next_tcp(Dir::Reply, TCP_FIN | TCP_ACK, &mut f);
        assert_eq!(s, TimeWait);
        let mut f = 0;
        assert_eq!(Established.next_tcp(Dir::Reply, TCP_RST, &mut f), Close);
        assert_eq!(
            SynRecv.next_tcp(Dir::Forward, TCP_RST | TCP_ACK, &mut f),
            Close
        );
    }
}
