//! The published state: what the workers read (one snapshot per burst) and what the control
//! thread keeps beside it (earlier generations, for rollback and for counters).
//!
//! RCU: [`Shared::rules`] is an `ArcSwap<RuleSet>`. A worker calls `shared.rules.load()` once
//! per burst and decides the whole burst with that guard, so every packet is decided (and
//! counted, in that generation's `RuleSet::counters`) by exactly one whole rule set. The
//! control thread publishes with `store`; the old set is freed when the last guard drops.
//! [`Generations`] keeps the sets the workers may still count into until their counts are
//! final, then folds them into a running sum, so totals cover every generation ever published.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use flowgate_config::appliance::Appliance;
use flowgate_config::flows::{FlowsFile, ListKind};
use flowgate_dataplane::counters::{RuleTotals, WorkerCounters};
use flowgate_dataplane::ruleset::RuleSet;

use crate::protocol::{DirectorStatus, NicStats};

/// Per-port NIC statistics, by port index (provided by the daemon, which owns the ports).
pub type NicStatsFn = Box<dyn Fn() -> Vec<NicStats> + Send + Sync>;

/// The director state's control surface. The director owner implements it and hands it to
/// [`crate::control::ControlOptions::director`]; without one, director requests are refused.
pub trait DirectorControl: Send {
    fn list(&self) -> Vec<DirectorStatus>;
    /// Enable (or disable) a server: a disabled server takes no new connections.
    fn set_enabled(&mut self, director: &str, server: &str, enabled: bool) -> Result<(), String>;
    /// Set a server's weight (0 drains it).
    fn set_weight(&mut self, director: &str, server: &str, weight: u32) -> Result<(), String>;
}

/// What the workers and the control thread share.
pub struct Shared {
    /// The published rule set. Workers: `let rules = shared.rules.load();` once per burst,
    /// count into `rules.counters[worker_index]`.
    pub rules: ArcSwap<RuleSet>,
    /// Per-worker counters for the whole run (ports, drops), by worker index.
    pub workers: Vec<Arc<WorkerCounters>>,
    pub appliance: Appliance,
    pub started: Instant,
    nic_stats: Option<NicStatsFn>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("generation", &self.rules.load().generation)
            .field("workers", &self.workers.len())
            .field("nic_stats", &self.nic_stats.is_some())
            .finish()
    }
}

impl Shared {
    /// Shared state around the first rule set (generation 1, usually [`crate::initial_rules`]),
    /// with one [`WorkerCounters`] per configured worker.
    pub fn new(appliance: Appliance, rules: RuleSet, nic_stats: Option<NicStatsFn>) -> Shared {
        let n = appliance.dataplane.workers.len().max(1);
        let workers = (0..n)
            .map(|_| Arc::new(WorkerCounters::new(appliance.ports.len())))
            .collect();
        Shared {
            rules: ArcSwap::from_pointee(rules),
            workers,
            appliance,
            started: Instant::now(),
            nic_stats,
        }
    }

    /// The NIC statistics, if the daemon provided a source.
    pub fn nic_stats(&self) -> Option<Vec<NicStats>> {
        self.nic_stats.as_ref().map(|f| f())
    }
}

/// Hits of one (list, flow name, rule) summed over generations; rule 0 is the default.
pub type RuleKey = (ListKind, String, usize);

/// The rule sets the control thread remembers, and the counts of those it forgot.
#[derive(Debug, Default)]
pub struct Generations {
    /// Every published set not yet folded (the current one last).
    live: Vec<Arc<RuleSet>>,
    /// Counts of folded generations, by flow name and rule.
    folded_rules: HashMap<RuleKey, u64>,
    folded_verdicts: [[u64; 4]; 2],
}

/// How many past generations stay unfolded (their own counters readable).
const KEEP_LIVE: usize = 8;

impl Generations {
    /// Remember a newly published set.
    pub fn push(&mut self, set: Arc<RuleSet>) {
        self.live.push(set);
        self.fold();
    }

    /// Fold the counts of old generations that no worker can still count into.
    pub fn fold(&mut self) {
        while self.live.len() > KEEP_LIVE {
            // the oldest; only folded once no worker holds it (strong count: ours alone)
            if Arc::strong_count(&self.live[0]) > 1 {
                break;
            }
            // pairs with the Release of the workers' last `Arc` drop: their counts are final
            std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
            let old = self.live.remove(0);
            let (rules, verdicts) = per_rule(&old);
            for (k, v) in rules {
                *self.folded_rules.entry(k).or_default() += v;
            }
            for (acc, v) in self.folded_verdicts.iter_mut().zip(verdicts) {
                for (a, x) in acc.iter_mut().zip(v) {
                    *a += x;
                }
            }
        }
    }

    /// Per (list, flow, rule) hits and per-list verdicts summed over every generation.
    pub fn totals(&self) -> (HashMap<RuleKey, u64>, [[u64; 4]; 2]) {
        let mut rules = self.folded_rules.clone();
        let mut verdicts = self.folded_verdicts;
        for set in &self.live {
            let (r, v) = per_rule(set);
            for (k, x) in r {
                *rules.entry(k).or_default() += x;
            }
            for (acc, v) in verdicts.iter_mut().zip(v) {
                for (a, x) in acc.iter_mut().zip(v) {
                    *a += x;
                }
            }
        }
        (rules, verdicts)
    }

    /// Sets remembered (live, unfolded).
    pub fn live(&self) -> usize {
        self.live.len()
    }
}

/// The hits of one generation by (list, flow name, rule), and its verdicts per list.
pub fn per_rule(set: &RuleSet) -> (Vec<(RuleKey, u64)>, [[u64; 4]; 2]) {
    let t: RuleTotals = set.totals();
    let mut out = Vec::new();
    for (kind, hits) in [
        (ListKind::Flow, &t.flow_rules),
        (ListKind::Outflow, &t.outflow_rules),
    ] {
        let names = set.list(kind).slot_names(&set.source, kind);
        for (slot, h) in hits.iter().enumerate() {
            let key = match names.get(slot) {
                Some((flow, rule)) => (kind, (*flow).to_string(), *rule),
                None => (kind, "-".to_string(), 0),
            };
            out.push((key, *h));
        }
    }
    (out, [t.flow_verdicts, t.outflow_verdicts])
}

/// Number of items and rules of a file: (flows, outflows, rules).
pub fn sizes(file: &FlowsFile) -> (usize, usize, usize) {
    (
        file.flows().count(),
        file.outflows().count(),
        file.items.iter().map(|f| f.rules.len()).sum(),
    )
}

impl From<flowgate_dataplane::dpdk::PortStats> for NicStats {
    /// The ethdev counters as the control side reports them (`Plant::nic_stats`).
    fn from(s: flowgate_dataplane::dpdk::PortStats) -> NicStats {
        NicStats {
            ipackets: s.ipackets,
            opackets: s.opackets,
            ibytes: s.ibytes,
            obytes: s.obytes,
            imissed: s.imissed,
            ierrors: s.ierrors,
            oerrors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
            tx_shared_bursts: s.tx_shared_bursts,
            tx_lock_contended: s.tx_lock_contended,
        }
    }
}
