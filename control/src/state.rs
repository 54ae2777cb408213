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
use flowgate_config::flows::print::rule_text;
use flowgate_config::flows::{Flow, FlowsFile, ListKind};
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
    /// The connection sync's counters (`docs/sync.md`); empty when the sync is off.
    fn sync(&self) -> Vec<(String, u64)> {
        Vec::new()
    }
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

/// The identity of a rule across pushes: its list, its flow's name, its canonical text
/// (`print::rule_text`) and which occurrence of that text in the flow it is (1 for the first).
/// A list's default is flow `-`, text `default`. A push that leaves a rule's identity in the
/// set keeps its counters, wherever the rule moved.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuleIdentity {
    pub list: ListKind,
    pub flow: Arc<str>,
    pub text: Arc<str>,
    pub occurrence: u32,
}

/// Counts of one identity folded from generations no worker counts into any more.
#[derive(Debug)]
struct Tally {
    ident: RuleIdentity,
    packets: u64,
    bytes: u64,
    /// The newest generation whose slots include it.
    last_gen: u64,
}

/// Totals of rules that left the set (deleted, or changed into another identity) are kept
/// for the most recent this many; older ones are dropped (see docs/control.md).
pub const RETIRED_MAX: usize = 10_000;

/// A published set and the identity (tally id) of each of its counter slots, per list.
#[derive(Debug)]
struct Gen {
    set: Arc<RuleSet>,
    ids: [Vec<u32>; 2],
}

/// Per-rule totals of one identity: this generation's and every generation's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleTotal {
    pub ident: RuleIdentity,
    /// 1-based rule number in the current set; 0 for the default and for retired rules.
    pub rule: usize,
    /// Whether the rule is in the current set.
    pub live: bool,
    pub packets: u64,
    pub bytes: u64,
    pub total_packets: u64,
    pub total_bytes: u64,
}

/// The rule sets the control thread remembers, and the counts of those it forgot, by rule
/// identity.
#[derive(Debug, Default)]
pub struct Generations {
    /// Every published set not yet folded (the current one last).
    live: Vec<Gen>,
    index: HashMap<RuleIdentity, u32>,
    tallies: Vec<Option<Tally>>,
    free: Vec<u32>,
    folded_verdicts: [[u64; 4]; 2],
    /// Retired identities dropped (past [`RETIRED_MAX`]).
    dropped: u64,
    /// [`RETIRED_MAX`], unless set otherwise (tests).
    retired_max: Option<usize>,
}

/// How many past generations stay unfolded (their own counters readable).
const KEEP_LIVE: usize = 8;

fn list_index(kind: ListKind) -> usize {
    match kind {
        ListKind::Flow => 0,
        ListKind::Outflow => 1,
    }
}

impl Generations {
    /// Remember a newly published set: give its slots their identities (unchanged flows
    /// take their previous slots' ids), retire what left, fold what no worker holds.
    pub fn push(&mut self, set: Arc<RuleSet>) {
        let g = set.generation;
        let ids = [ListKind::Flow, ListKind::Outflow].map(|kind| self.slot_ids(&set, kind));
        for list in &ids {
            for &id in list {
                if let Some(Some(t)) = self.tallies.get_mut(id as usize) {
                    t.last_gen = t.last_gen.max(g);
                }
            }
        }
        self.live.push(Gen { set, ids });
        self.fold();
        self.drop_retired();
    }

    /// The tally ids of `set`'s slots of one list, reusing the previous generation's for
    /// flows that are the same `Arc` (an incremental update shares every untouched flow).
    fn slot_ids(&mut self, set: &RuleSet, kind: ListKind) -> Vec<u32> {
        let li = list_index(kind);
        let mut out = Vec::with_capacity(set.list(kind).slots());
        let live = std::mem::take(&mut self.live);
        let prev = live.last().map(|p| {
            let flows: Vec<&Arc<Flow>> = p
                .set
                .source
                .items
                .iter()
                .filter(|f| f.kind == kind)
                .collect();
            let mut starts = Vec::with_capacity(flows.len() + 1);
            let mut n = 0;
            for f in &flows {
                starts.push(n);
                n += f.rules.len();
            }
            (flows, starts, &p.ids[li])
        });
        let new: Vec<&Arc<Flow>> = set.source.items.iter().filter(|f| f.kind == kind).collect();
        let mut j = 0;
        let mut i = 0;
        while i < new.len() {
            let f = new[i];
            if let Some((old, starts, ids)) = &prev {
                if j < old.len() && Arc::ptr_eq(f, old[j]) {
                    out.extend_from_slice(&ids[starts[j]..starts[j] + f.rules.len()]);
                    i += 1;
                    j += 1;
                    continue;
                }
                if j + 1 < old.len() && Arc::ptr_eq(f, old[j + 1]) {
                    j += 1; // old[j] was removed
                    continue;
                }
            }
            self.fresh_ids(kind, f, &mut out);
            i += 1;
            // a replacement consumes the old flow; an insertion does not
            if let Some((old, _, _)) = &prev {
                let inserted = i < new.len() && j < old.len() && Arc::ptr_eq(new[i], old[j]);
                if !inserted {
                    j += 1;
                }
            }
        }
        let default = RuleIdentity {
            list: kind,
            flow: Arc::from("-"),
            text: Arc::from("default"),
            occurrence: 1,
        };
        out.push(self.id_of(default));
        drop(prev);
        self.live = live;
        out
    }

    fn fresh_ids(&mut self, kind: ListKind, f: &Flow, out: &mut Vec<u32>) {
        let flow: Arc<str> = Arc::from(f.name.as_str());
        let mut seen: HashMap<String, u32> = HashMap::new();
        for r in &f.rules {
            let text = rule_text(r);
            let n = seen.entry(text.clone()).or_default();
            *n += 1;
            let occurrence = *n;
            out.push(self.id_of(RuleIdentity {
                list: kind,
                flow: Arc::clone(&flow),
                text: Arc::from(text),
                occurrence,
            }));
        }
    }

    fn id_of(&mut self, ident: RuleIdentity) -> u32 {
        if let Some(&id) = self.index.get(&ident) {
            return id;
        }
        let tally = Tally {
            ident: ident.clone(),
            packets: 0,
            bytes: 0,
            last_gen: 0,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.tallies[id as usize] = Some(tally);
                id
            }
            None => {
                self.tallies.push(Some(tally));
                (self.tallies.len() - 1) as u32
            }
        };
        self.index.insert(ident, id);
        id
    }

    /// Fold the counts of old generations that no worker can still count into.
    pub fn fold(&mut self) {
        while self.live.len() > KEEP_LIVE {
            // the oldest; only folded once no worker holds it (strong count: ours alone)
            if Arc::strong_count(&self.live[0].set) > 1 {
                break;
            }
            // pairs with the Release of the workers' last `Arc` drop: their counts are final
            std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
            let old = self.live.remove(0);
            let t: RuleTotals = old.set.totals();
            for (li, (packets, bytes)) in [
                (&t.flow_rules, &t.flow_bytes),
                (&t.outflow_rules, &t.outflow_bytes),
            ]
            .into_iter()
            .enumerate()
            {
                for (slot, &id) in old.ids[li].iter().enumerate() {
                    if let Some(Some(tally)) = self.tallies.get_mut(id as usize) {
                        tally.packets += packets.get(slot).copied().unwrap_or(0);
                        tally.bytes += bytes.get(slot).copied().unwrap_or(0);
                    }
                }
            }
            for (acc, v) in self
                .folded_verdicts
                .iter_mut()
                .zip([t.flow_verdicts, t.outflow_verdicts])
            {
                for (a, x) in acc.iter_mut().zip(v) {
                    *a += x;
                }
            }
        }
    }

    /// Drops the oldest retired identities (those no unfolded generation has) past
    /// [`RETIRED_MAX`] (at each push: identities only retire at pushes).
    fn drop_retired(&mut self) {
        let (Some(oldest), Some(current)) = (self.live.first(), self.live.last()) else {
            return;
        };
        let (oldest, current) = (oldest.set.generation, current.set.generation);
        let retired = self
            .index
            .len()
            .saturating_sub(current_slots(self.live.last().map(|g| &g.ids)));
        let max = self.retired_max.unwrap_or(RETIRED_MAX);
        if retired <= max {
            return;
        }
        let mut evictable: Vec<(u64, u32)> = self
            .tallies
            .iter()
            .enumerate()
            .filter_map(|(id, t)| {
                let t = t.as_ref()?;
                (t.last_gen < oldest.min(current)).then_some((t.last_gen, id as u32))
            })
            .collect();
        // the `retired - max` oldest, unordered: a selection, not a sort of every candidate
        // (with 100K rules loaded a sort cost ~15M instructions at each push)
        let k = (retired - max).min(evictable.len());
        if k == 0 {
            return;
        }
        if k < evictable.len() {
            evictable.select_nth_unstable(k - 1);
        }
        for &(_, id) in &evictable[..k] {
            if let Some(t) = self.tallies[id as usize].take() {
                self.index.remove(&t.ident);
                self.free.push(id);
                self.dropped += 1;
            }
        }
    }

    /// Every rule of the current set (in slot order, with this generation's counts), then
    /// every retired identity kept, with totals since start; and the verdicts per list over
    /// every generation.
    pub fn totals(&self) -> (Vec<RuleTotal>, [[u64; 4]; 2]) {
        let mut packets: Vec<u64> = self
            .tallies
            .iter()
            .map(|t| t.as_ref().map_or(0, |t| t.packets))
            .collect();
        let mut bytes: Vec<u64> = self
            .tallies
            .iter()
            .map(|t| t.as_ref().map_or(0, |t| t.bytes))
            .collect();
        let mut verdicts = self.folded_verdicts;
        let mut current = None;
        for g in &self.live {
            let t = g.set.totals();
            for (li, (p, b)) in [
                (&t.flow_rules, &t.flow_bytes),
                (&t.outflow_rules, &t.outflow_bytes),
            ]
            .into_iter()
            .enumerate()
            {
                for (slot, &id) in g.ids[li].iter().enumerate() {
                    if let Some(x) = packets.get_mut(id as usize) {
                        *x += p.get(slot).copied().unwrap_or(0);
                    }
                    if let Some(x) = bytes.get_mut(id as usize) {
                        *x += b.get(slot).copied().unwrap_or(0);
                    }
                }
            }
            for (acc, v) in verdicts
                .iter_mut()
                .zip([t.flow_verdicts, t.outflow_verdicts])
            {
                for (a, x) in acc.iter_mut().zip(v) {
                    *a += x;
                }
            }
            current = Some((g, t));
        }
        let mut out = Vec::new();
        let mut in_current = vec![false; self.tallies.len()];
        if let Some((g, t)) = current {
            for kind in [ListKind::Flow, ListKind::Outflow] {
                let li = list_index(kind);
                let (p, b) = match kind {
                    ListKind::Flow => (&t.flow_rules, &t.flow_bytes),
                    ListKind::Outflow => (&t.outflow_rules, &t.outflow_bytes),
                };
                let numbers = g.set.list(kind).slot_names(&g.set.source, kind);
                for (slot, &id) in g.ids[li].iter().enumerate() {
                    let Some(Some(tally)) = self.tallies.get(id as usize) else {
                        continue;
                    };
                    in_current[id as usize] = true;
                    out.push(RuleTotal {
                        ident: tally.ident.clone(),
                        rule: numbers.get(slot).map_or(0, |(_, r)| *r),
                        live: true,
                        packets: p.get(slot).copied().unwrap_or(0),
                        bytes: b.get(slot).copied().unwrap_or(0),
                        total_packets: packets[id as usize],
                        total_bytes: bytes[id as usize],
                    });
                }
            }
        }
        for (id, t) in self.tallies.iter().enumerate() {
            if let Some(t) = t {
                if !in_current[id] {
                    out.push(RuleTotal {
                        ident: t.ident.clone(),
                        rule: 0,
                        live: false,
                        packets: 0,
                        bytes: 0,
                        total_packets: packets[id],
                        total_bytes: bytes[id],
                    });
                }
            }
        }
        (out, verdicts)
    }

    /// Generations keeping at most `max` retired identities (instead of [`RETIRED_MAX`]).
    pub fn with_retired_max(max: usize) -> Generations {
        Generations {
            retired_max: Some(max),
            ..Generations::default()
        }
    }

    /// Sets remembered (live, unfolded).
    pub fn live(&self) -> usize {
        self.live.len()
    }

    /// Identities with a tally (current and retired ones kept).
    pub fn identities(&self) -> usize {
        self.index.len()
    }

    /// Retired identities dropped past [`RETIRED_MAX`] since start.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// Distinct ids among the current generation's slots.
fn current_slots(ids: Option<&[Vec<u32>; 2]>) -> usize {
    let Some(ids) = ids else {
        return 0;
    };
    let mut v: Vec<u32> = ids.iter().flatten().copied().collect();
    v.sort_unstable();
    v.dedup();
    v.len()
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

#[cfg(test)]
mod tests {
    use super::*;
    use flowgate_config::flows::{parse, Action};

    fn set(text: &str, generation: u64) -> Arc<RuleSet> {
        let file = parse(text).expect("parses").file;
        let ports = vec!["eth0".to_string()];
        Arc::new(
            RuleSet::compile_for(
                file,
                &ports,
                &Action::Permit,
                &Action::Permit,
                generation,
                1,
            )
            .expect("compiles"),
        )
    }

    /// Pushes of sets with ever new rules: the identities kept stay bounded (live + retired
    /// bound + the unfolded generations'), the oldest retired go first, totals survive.
    #[test]
    fn retired_identities_are_bounded_and_totals_kept() {
        let mut g = Generations::with_retired_max(6);
        let keep = set("flow keep permit match proto tcp", 1);
        keep.counters[0].hit_flow(0, 100);
        g.push(keep);
        for n in 2..40u64 {
            let s = set(
                &format!(
                    "flow keep permit match proto tcp\nflow f{n} deny match dstport {n} proto udp match proto udp srcport {n}"
                ),
                n,
            );
            s.counters[0].hit_flow(0, 10); // keep's rule
            g.push(s);
            // live: 2 defaults + keep + 2 rules; retired: at most 6 + the unfolded sets'
            assert!(
                g.identities() <= 5 + 6 + 2 * KEEP_LIVE,
                "{}",
                g.identities()
            );
        }
        assert!(g.dropped() > 0);
        let (rules, _) = g.totals();
        let keep = rules
            .iter()
            .find(|r| &*r.ident.flow == "keep")
            .expect("keep");
        assert_eq!(keep.total_packets, 39);
        assert_eq!(keep.total_bytes, 100 + 38 * 10);
        assert!(keep.live);
        // the newest retired are kept, the oldest dropped
        assert!(rules.iter().any(|r| &*r.ident.flow == "f38" && !r.live));
        assert!(!rules.iter().any(|r| &*r.ident.flow == "f2"));
    }
}
