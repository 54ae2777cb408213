//! The workers' side of the connection sync between appliances (`docs/sync.md`): what a
//! worker exports (new connections, TCP state changes, persistence templates, periodic
//! refreshes of long-lived ones, full dumps for a new peer) and what it applies (entries a
//! peer exported, as *backup* entries of its tables).
//!
//! Nothing here locks or makes a syscall on the packet path. A [`DirectorWorker`] records
//! into its own preallocated log while it handles a burst; once per burst the worker's
//! director stage moves the logs into its current batch (a preallocated `Vec`) and hands the
//! batch to the control side through a lock-free bounded queue ([`Lane::out`]), taking an
//! empty one back from [`Lane::spare`]. When there is no empty batch (the control side is
//! behind) the batch fills up and further entries are counted as dropped. The other way,
//! the control side pushes decoded entries into the owning worker's [`Lane::inbound`] queue;
//! the worker applies at most [`APPLY_BUDGET`] of them per polling round.
//!
//! [`DirectorWorker`]: super::DirectorWorker

use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_queue::ArrayQueue;

use super::conntrack::{Conn, ConnState};

/// Entries of one batch (a worker's export of one burst or dump chunk).
pub const BATCH: usize = 256;
/// Batches per worker: the spare pool and the queue to the control side.
pub const BATCHES: usize = 16;
/// Entries a worker's inbound queue holds (the control side counts a drop beyond).
pub const INBOUND: usize = 8192;
/// Inbound entries a worker applies per polling round.
pub const APPLY_BUDGET: usize = 256;
/// Table entries a worker's full dump visits per polling round.
pub const DUMP_CHUNK: usize = 256;
/// Entries a director's log holds per burst (a burst of 32 makes at most 64: connections
/// and templates).
pub const LOG: usize = 128;

/// One synced connection or persistence template. `director` and `server` say whose it is:
/// in this appliance's terms, indexes of its [`super::DirectorSet`] ([`SyncEntry`]), or as
/// sent between appliances (the control side's wire entry: a director id and no server, the
/// receiver finds its own by address and port).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<D, S> {
    pub director: D,
    pub server: S,
    /// IP protocol; 0 for a persistence template.
    pub proto: u8,
    pub state: ConnState,
    pub fins: u8,
    /// Indexed by its reply key too (NAT).
    pub nat: bool,
    pub client: [u8; 16],
    pub cport: u16,
    pub vip: [u8; 16],
    pub vport: u16,
    pub real: [u8; 16],
    pub rport: u16,
    /// Milliseconds the entry has left to live on the sender.
    pub timeout_ms: u32,
}

/// An entry in the local director's terms.
pub type SyncEntry = Entry<u16, u16>;

impl<D, S> Entry<D, S> {
    /// The same connection under other director and server ids.
    pub fn with_ids<D2, S2>(&self, director: D2, server: S2) -> Entry<D2, S2> {
        Entry {
            director,
            server,
            proto: self.proto,
            state: self.state,
            fins: self.fins,
            nat: self.nat,
            client: self.client,
            cport: self.cport,
            vip: self.vip,
            vport: self.vport,
            real: self.real,
            rport: self.rport,
            timeout_ms: self.timeout_ms,
        }
    }
}

impl SyncEntry {
    /// The entry of connection `c` of director `director`, at `now`.
    pub fn of(director: u16, c: &Conn, now: u64) -> SyncEntry {
        SyncEntry {
            director,
            server: c.server,
            proto: c.proto,
            state: c.state,
            fins: c.fins,
            nat: c.nat,
            client: c.client,
            cport: c.cport,
            vip: c.vip,
            vport: c.vport,
            real: c.real,
            rport: c.rport,
            timeout_ms: c.expires.saturating_sub(now).min(u64::from(u32::MAX)) as u32,
        }
    }

    /// The backup table entry it makes at `now`.
    pub fn conn(&self, now: u64) -> Conn {
        Conn {
            proto: self.proto,
            client: self.client,
            cport: self.cport,
            vip: self.vip,
            vport: self.vport,
            real: self.real,
            rport: self.rport,
            server: self.server,
            state: self.state,
            fins: self.fins,
            nat: self.nat,
            expires: now.saturating_add(u64::from(self.timeout_ms)),
            backup: true,
            synced: stamp(now),
        }
    }
}

/// The sync clock of a connection ([`Conn::synced`]): milliseconds in units of 1024,
/// wrapping every 18 hours.
#[inline]
pub fn stamp(now_ms: u64) -> u16 {
    (now_ms >> 10) as u16
}

/// Whether a connection last exported at `synced` is due for a refresh at `now_ms`, with
/// `timeout_ms` its state's idle timeout: after half of it (IPVS's `sync_refresh_period`),
/// so that the peer's copy, which lives `timeout_ms` from the last export, never runs out
/// while the connection is in use. Half a timeout beyond 9 hours counts as 9 hours (the
/// stamp wraps); a connection idle for more than 18 hours may miss one refresh.
#[inline]
pub fn refresh_due(synced: u16, now_ms: u64, timeout_ms: u64) -> bool {
    let half = ((timeout_ms / 2) >> 10).clamp(1, u64::from(u16::MAX / 2));
    u64::from(stamp(now_ms).wrapping_sub(synced)) >= half
}

/// A worker's counters of the sync (written by that worker only, read by the control side).
#[derive(Debug, Default)]
pub struct LaneStats {
    /// Entries handed to the control side.
    pub exported: AtomicU64,
    /// Entries lost because the batch was full and the control side had no empty one.
    pub export_dropped: AtomicU64,
    /// Entries applied into the tables.
    pub applied: AtomicU64,
    /// Entries not applied: the table was full, or they no longer matched the director.
    pub apply_failed: AtomicU64,
    /// Full dumps finished.
    pub dumps: AtomicU64,
}

impl LaneStats {
    fn add(c: &AtomicU64, n: u64) {
        if n > 0 {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// What one worker and the control side's sync thread share.
#[derive(Debug)]
pub struct Lane {
    /// Full batches, worker to control side.
    pub out: ArrayQueue<Vec<SyncEntry>>,
    /// Empty batches, control side back to the worker.
    pub spare: ArrayQueue<Vec<SyncEntry>>,
    /// Entries to apply, control side to worker.
    pub inbound: ArrayQueue<SyncEntry>,
    /// The full dump last asked for (the worker dumps its tables when this passes the one it
    /// did last).
    pub dump: AtomicU64,
    pub stats: LaneStats,
}

impl Lane {
    fn new() -> Lane {
        let spare = ArrayQueue::new(BATCHES);
        for _ in 0..BATCHES - 1 {
            let _ = spare.push(Vec::with_capacity(BATCH));
        }
        Lane {
            out: ArrayQueue::new(BATCHES),
            spare,
            inbound: ArrayQueue::new(INBOUND),
            dump: AtomicU64::new(0),
            stats: LaneStats::default(),
        }
    }

    /// The control side is done with `batch`: it goes back to the worker, emptied.
    pub fn recycle(&self, mut batch: Vec<SyncEntry>) {
        batch.clear();
        let _ = self.spare.push(batch);
    }
}

/// The sync's queues, one [`Lane`] per worker.
#[derive(Debug)]
pub struct SyncLanes {
    pub lanes: Vec<Lane>,
}

impl SyncLanes {
    /// Lanes for `workers` workers (all memory allocated here).
    pub fn new(workers: usize) -> SyncLanes {
        SyncLanes {
            lanes: (0..workers.max(1)).map(|_| Lane::new()).collect(),
        }
    }

    /// Ask every worker for a full dump of its tables.
    pub fn request_dump(&self) {
        for l in &self.lanes {
            l.dump.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A worker's export side: its current batch, and where a full dump stands.
#[derive(Debug)]
pub struct Export {
    /// The batch being filled (handed over once per burst when not empty).
    pub batch: Vec<SyncEntry>,
    /// Entries dropped since last counted (batch full).
    pub dropped: u64,
    /// The dump generation done (or under way).
    pub dumped: u64,
    /// The dump under way: (director, next slab index).
    pub dumping: Option<(usize, usize)>,
}

impl Default for Export {
    fn default() -> Self {
        Export {
            batch: Vec::with_capacity(BATCH),
            dropped: 0,
            dumped: 0,
            dumping: None,
        }
    }
}

impl Export {
    /// Room left in the batch.
    #[inline]
    pub fn room(&self) -> usize {
        BATCH - self.batch.len().min(BATCH)
    }

    /// Add `entries` (as many as fit; the rest are counted as dropped).
    pub fn extend(&mut self, entries: &[SyncEntry]) {
        let n = entries.len().min(self.room());
        self.batch.extend_from_slice(&entries[..n]);
        self.dropped += (entries.len() - n) as u64;
    }

    /// Hand the batch to the control side when it has something and an empty batch is
    /// there to take its place (else it stays and fills up).
    pub fn flush(&mut self, lane: &Lane) {
        LaneStats::add(
            &lane.stats.export_dropped,
            std::mem::take(&mut self.dropped),
        );
        if self.batch.is_empty() {
            return;
        }
        let Some(next) = lane.spare.pop() else { return };
        let full = std::mem::replace(&mut self.batch, next);
        let n = full.len() as u64;
        match lane.out.push(full) {
            Ok(()) => LaneStats::add(&lane.stats.exported, n),
            // never (as many slots as batches); were it, the entries are lost, not the batch
            Err(full) => {
                LaneStats::add(&lane.stats.export_dropped, n);
                lane.recycle(full);
            }
        }
    }
}

/// Count `n` applied and `failed` refused entries of a polling round.
pub fn count_applied(lane: &Lane, n: u64, failed: u64) {
    LaneStats::add(&lane.stats.applied, n);
    LaneStats::add(&lane.stats.apply_failed, failed);
}

/// Count a finished dump.
pub fn count_dump(lane: &Lane) {
    LaneStats::add(&lane.stats.dumps, 1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(cport: u16) -> SyncEntry {
        SyncEntry {
            director: 0,
            server: 1,
            proto: 6,
            state: ConnState::Established,
            fins: 0,
            nat: true,
            client: [1; 16],
            cport,
            vip: [2; 16],
            vport: 80,
            real: [3; 16],
            rport: 8080,
            timeout_ms: 1000,
        }
    }

    #[test]
    fn batches_go_out_and_come_back_and_a_full_batch_counts_drops() {
        let lanes = SyncLanes::new(1);
        let lane = &lanes.lanes[0];
        let mut ex = Export::default();
        ex.extend(&[entry(1), entry(2)]);
        ex.flush(lane);
        assert!(ex.batch.is_empty());
        assert_eq!(lane.stats.exported.load(Ordering::Relaxed), 2);
        // the control side holds every batch: the worker's fills up, then drops
        let mut held = Vec::new();
        while let Some(b) = lane.out.pop() {
            held.push(b);
        }
        while let Some(b) = lane.spare.pop() {
            held.push(b);
        }
        for p in 0..(BATCH as u16 + 10) {
            ex.extend(&[entry(p)]);
            ex.flush(lane);
        }
        assert_eq!(ex.batch.len(), BATCH);
        assert_eq!(lane.stats.export_dropped.load(Ordering::Relaxed), 10);
        // one batch back: the full one goes out
        lane.recycle(held.pop().expect("a batch"));
        ex.flush(lane);
        assert!(ex.batch.is_empty());
        assert_eq!(
            lane.stats.exported.load(Ordering::Relaxed),
            2 + BATCH as u64
        );
    }

    #[test]
    fn a_connection_stays_72_bytes() {
        assert_eq!(std::mem::size_of::<Conn>(), 72);
    }

    #[test]
    fn refresh_after_half_the_timeout() {
        let t = 900_000;
        assert!(!refresh_due(stamp(0), 1000, t));
        assert!(!refresh_due(stamp(0), 400_000, t));
        assert!(refresh_due(stamp(0), 460_000, t));
        // a short timeout still waits a tick
        assert!(!refresh_due(stamp(5000), 5000, 100));
    }

    #[test]
    fn entry_round_trips_through_a_backup_conn() {
        let e = entry(7);
        let c = e.conn(500);
        assert!(c.backup);
        assert_eq!(c.expires, 1500);
        assert_eq!(SyncEntry::of(0, &c, 500), e);
    }
}
