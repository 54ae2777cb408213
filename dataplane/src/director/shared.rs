//! What the control side and the workers share for the directors: the current
//! [`DirectorSet`] snapshot (RCU by `ArcSwap`: health checks publish a new one, workers load
//! it once per burst) and each worker's latest copy of its director counters.
//!
//! The per-worker connection tables are not here: each worker owns its [`DirectorWorker`]s
//! (created at worker start), so connections survive rule swaps and health changes.
//!
//! [`DirectorWorker`]: super::DirectorWorker

use std::sync::Mutex;

use arc_swap::ArcSwap;

use super::counters::DirectorCounters;
use super::state::DirectorSet;
use super::sync::SyncLanes;

/// How often a worker copies its director counters out (off the packet path).
pub const STATS_EVERY_MS: u64 = 100;

/// The directors as published to the workers.
#[derive(Debug)]
pub struct SharedDirectors {
    /// The current snapshot: servers, weights, health.
    pub set: ArcSwap<DirectorSet>,
    /// By worker: a copy of its counters, one entry per director, refreshed every
    /// [`STATS_EVERY_MS`] (a `try_lock` by the worker: it never waits for the reader).
    pub stats: Vec<Mutex<Vec<DirectorCounters>>>,
    /// The connection sync's queues, by worker (`None`: sync off).
    pub sync: Option<SyncLanes>,
}

impl SharedDirectors {
    pub fn new(set: DirectorSet, workers: usize) -> SharedDirectors {
        let empty: Vec<DirectorCounters> = set
            .iter()
            .map(|d| DirectorCounters::new(d.servers.len()))
            .collect();
        SharedDirectors {
            set: ArcSwap::from_pointee(set),
            stats: (0..workers.max(1))
                .map(|_| Mutex::new(empty.clone()))
                .collect(),
            sync: None,
        }
    }

    /// With the connection sync on: the workers export to and apply from `lanes` (one per
    /// worker).
    pub fn with_sync(mut self, lanes: SyncLanes) -> SharedDirectors {
        self.sync = Some(lanes);
        self
    }

    /// Every director's counters summed over the workers (control side).
    pub fn totals(&self) -> Vec<DirectorCounters> {
        let mut out: Vec<DirectorCounters> = self
            .set
            .load()
            .iter()
            .map(|d| DirectorCounters::new(d.servers.len()))
            .collect();
        for w in &self.stats {
            let Ok(w) = w.lock() else { continue };
            for (a, b) in out.iter_mut().zip(w.iter()) {
                a.add(b);
            }
        }
        out
    }
}
