//! Per-worker counters: plain `u64`s owned by one worker (single writer, relaxed atomics so
//! the control thread can read them without locks or contention), summed on demand.

use std::sync::atomic::{AtomicU64, Ordering};

use flowgate_config::flows::Action;

use crate::wire::Malformed;

/// A counter with one writer. `add` is a load and a store, not a locked read-modify-write.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline(always)]
    pub fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    #[inline(always)]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    Malformed(Malformed),
    /// A flow denied it.
    FlowDeny,
    /// An outflow denied it.
    OutflowDeny,
    /// `director` verdict naming no director the worker runs (none configured or wired).
    DirectorUnavailable,
    /// The director dropped it (its own counters say why: `no_server`, `not_syn`, ...).
    DirectorDrop,
    /// Tunnel-mode director: the output port has no address of the server's family to be
    /// the outer header's source.
    TunnelNoSource,
    /// Tunnel-mode director: the packet with its outer header would exceed the output
    /// port's MTU (no fragmentation, no ICMP "fragmentation needed" sent).
    TunnelTooBig,
    /// `table` verdict: no route in the table nor in the main table.
    NoRoute,
    /// Routed, TTL / hop limit exhausted, and the input port has no TAP to let the kernel
    /// answer ICMP time exceeded.
    TtlExpired,
    /// Held for an unresolved next hop, pushed out by newer packets (hold queue full).
    NeighbourHoldOverflow,
    /// Held for a next hop that never answered ARP / neighbour solicitation.
    NeighbourUnresolved,
    /// The neighbour table is full: a new next hop could not be resolved.
    NeighbourTableFull,
    /// Routed, but the frame is too short to rewrite.
    RouteTruncated,
    /// Permitted, but the port has no TAP (`kernel = false`) and no peer.
    NoKernel,
    /// The TX queue was full.
    TxFull,
    /// From the kernel, but not a frame we can read.
    KernelMalformed,
    /// For a NAT connection another worker owns, but that worker's ring was full.
    HandoffFull,
}

impl DropReason {
    pub const COUNT: usize = Malformed::ALL.len() + 16;

    pub fn index(self) -> usize {
        let m = Malformed::ALL.len();
        match self {
            DropReason::Malformed(r) => r.index(),
            DropReason::FlowDeny => m,
            DropReason::OutflowDeny => m + 1,
            DropReason::DirectorUnavailable => m + 2,
            DropReason::NoRoute => m + 3,
            DropReason::NoKernel => m + 4,
            DropReason::TxFull => m + 5,
            DropReason::KernelMalformed => m + 6,
            DropReason::TtlExpired => m + 7,
            DropReason::NeighbourHoldOverflow => m + 8,
            DropReason::NeighbourUnresolved => m + 9,
            DropReason::NeighbourTableFull => m + 10,
            DropReason::RouteTruncated => m + 11,
            DropReason::DirectorDrop => m + 12,
            DropReason::HandoffFull => m + 13,
            DropReason::TunnelNoSource => m + 14,
            DropReason::TunnelTooBig => m + 15,
        }
    }

    pub fn all() -> impl Iterator<Item = DropReason> {
        Malformed::ALL
            .into_iter()
            .map(DropReason::Malformed)
            .chain([
                DropReason::FlowDeny,
                DropReason::OutflowDeny,
                DropReason::DirectorUnavailable,
                DropReason::NoRoute,
                DropReason::NoKernel,
                DropReason::TxFull,
                DropReason::KernelMalformed,
                DropReason::TtlExpired,
                DropReason::NeighbourHoldOverflow,
                DropReason::NeighbourUnresolved,
                DropReason::NeighbourTableFull,
                DropReason::RouteTruncated,
                DropReason::DirectorDrop,
                DropReason::HandoffFull,
                DropReason::TunnelNoSource,
                DropReason::TunnelTooBig,
            ])
    }

    pub fn name(self) -> &'static str {
        match self {
            DropReason::Malformed(r) => r.name(),
            DropReason::FlowDeny => "flow-deny",
            DropReason::OutflowDeny => "outflow-deny",
            DropReason::DirectorUnavailable => "director-unavailable",
            DropReason::DirectorDrop => "director-drop",
            DropReason::TunnelNoSource => "tunnel-no-source",
            DropReason::TunnelTooBig => "tunnel-too-big",
            DropReason::NoRoute => "no-route",
            DropReason::TtlExpired => "ttl-expired",
            DropReason::NeighbourHoldOverflow => "neighbour-hold-overflow",
            DropReason::NeighbourUnresolved => "neighbour-unresolved",
            DropReason::NeighbourTableFull => "neighbour-table-full",
            DropReason::RouteTruncated => "route-truncated",
            DropReason::NoKernel => "no-kernel-port",
            DropReason::TxFull => "tx-full",
            DropReason::KernelMalformed => "kernel-malformed",
            DropReason::HandoffFull => "handoff-full",
        }
    }
}

/// The verdicts counted per list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VerdictKind {
    Permit,
    Deny,
    Director,
    Table,
}

impl VerdictKind {
    /// The kind of an action.
    pub fn of(a: &Action) -> VerdictKind {
        match a {
            Action::Permit => VerdictKind::Permit,
            Action::Deny => VerdictKind::Deny,
            Action::Director(_) => VerdictKind::Director,
            Action::Table(_) => VerdictKind::Table,
        }
    }

    pub const ALL: [VerdictKind; 4] = [
        VerdictKind::Permit,
        VerdictKind::Deny,
        VerdictKind::Director,
        VerdictKind::Table,
    ];

    pub fn name(self) -> &'static str {
        match self {
            VerdictKind::Permit => "permit",
            VerdictKind::Deny => "deny",
            VerdictKind::Director => "director",
            VerdictKind::Table => "table",
        }
    }
}

/// Per-port traffic seen by one worker.
#[derive(Debug, Default)]
pub struct PortCounters {
    /// Frames received from the port.
    pub rx: Counter,
    pub rx_bytes: Counter,
    /// Frames sent out the port.
    pub tx: Counter,
    pub tx_bytes: Counter,
    /// Frames handed to the kernel through the port's TAP.
    pub to_kernel: Counter,
    /// Frames the kernel sent out through the port's TAP.
    pub from_kernel: Counter,
    /// Non-IP frames passed between the port and its TAP (both ways).
    pub non_ip: Counter,
}

/// Next-hop resolution by one worker.
#[derive(Debug, Default)]
pub struct NeighbourCounters {
    /// ARP requests / neighbour solicitations sent.
    pub solicits: Counter,
    /// Neighbours learned from frames this worker received.
    pub learned: Counter,
    /// Pending next hops resolved from what another worker learned (shared table).
    pub from_shared: Counter,
}

/// Names of the [`Totals::neighbours`] columns.
pub const NEIGHBOUR_COLUMNS: [&str; 3] = ["solicits", "learned", "from_shared"];

/// NAT director packets moved between workers (`crate::handoff`).
#[derive(Debug, Default)]
pub struct HandoffCounters {
    /// Handed by this worker to the worker owning their connection.
    pub handed_out: Counter,
    /// Received by this worker from the others.
    pub handed_in: Counter,
}

/// Names of the [`Totals::handoff`] columns.
pub const HANDOFF_COLUMNS: [&str; 2] = ["handed_out", "handed_in"];

/// What one worker counts for the whole run (ports, drops).
#[derive(Debug)]
pub struct WorkerCounters {
    pub ports: Vec<PortCounters>,
    pub drops: Vec<Counter>,
    pub neighbours: NeighbourCounters,
    pub handoff: HandoffCounters,
    /// Bursts polled that carried at least one frame.
    pub busy_polls: Counter,
}

impl WorkerCounters {
    pub fn new(ports: usize) -> WorkerCounters {
        WorkerCounters {
            ports: (0..ports).map(|_| PortCounters::default()).collect(),
            drops: (0..DropReason::COUNT).map(|_| Counter::default()).collect(),
            neighbours: NeighbourCounters::default(),
            handoff: HandoffCounters::default(),
            busy_polls: Counter::default(),
        }
    }

    #[inline(always)]
    pub fn dropped(&self, why: DropReason) {
        if let Some(c) = self.drops.get(why.index()) {
            c.add(1);
        }
    }
}

/// What one worker counts for one rule set (one generation): verdicts and per-rule hits.
/// It lives in the rule set, so every packet is counted by the generation that decided it.
#[derive(Debug)]
pub struct RuleCounters {
    /// Verdicts of the flows (ingress) and outflows (egress), by [`VerdictKind`].
    pub flow_verdicts: [Counter; 4],
    pub outflow_verdicts: [Counter; 4],
    /// Per-rule hits (layout: `CompiledList::slot`, the default last).
    pub flow_rules: Vec<Counter>,
    pub outflow_rules: Vec<Counter>,
    /// Per-rule bytes (frame lengths), same layout.
    pub flow_bytes: Vec<Counter>,
    pub outflow_bytes: Vec<Counter>,
    /// Per routing table (by `Routes` index, 0 = main): lookups asked of it by `table`
    /// verdicts, and those it had no route for, answered by the main table (fallbacks).
    pub route_lookups: Vec<Counter>,
    pub route_fallbacks: Vec<Counter>,
}

impl RuleCounters {
    pub fn new(flow_slots: usize, outflow_slots: usize, tables: usize) -> RuleCounters {
        let counters = |n: usize| (0..n).map(|_| Counter::default()).collect();
        RuleCounters {
            flow_verdicts: Default::default(),
            outflow_verdicts: Default::default(),
            flow_rules: counters(flow_slots),
            outflow_rules: counters(outflow_slots),
            flow_bytes: counters(flow_slots),
            outflow_bytes: counters(outflow_slots),
            route_lookups: counters(tables),
            route_fallbacks: counters(tables),
        }
    }

    /// One packet of `bytes` decided by the flows rule at `slot` (`CompiledList::slot`):
    /// two plain adds into this worker's own counters (single writer, no atomic RMW).
    #[inline(always)]
    pub fn hit_flow(&self, slot: usize, bytes: u64) {
        if let (Some(p), Some(b)) = (self.flow_rules.get(slot), self.flow_bytes.get(slot)) {
            p.add(1);
            b.add(bytes);
        }
    }

    /// As [`RuleCounters::hit_flow`], for the outflows.
    #[inline(always)]
    pub fn hit_outflow(&self, slot: usize, bytes: u64) {
        if let (Some(p), Some(b)) = (self.outflow_rules.get(slot), self.outflow_bytes.get(slot)) {
            p.add(1);
            b.add(bytes);
        }
    }

    /// `packets` packets of `bytes` bytes in all, decided by the same flows rule (a batch
    /// the default decided whole).
    #[inline(always)]
    pub fn hit_flow_n(&self, slot: usize, packets: u64, bytes: u64) {
        if let (Some(p), Some(b)) = (self.flow_rules.get(slot), self.flow_bytes.get(slot)) {
            p.add(packets);
            b.add(bytes);
        }
    }

    /// As [`RuleCounters::hit_flow_n`], for the outflows.
    #[inline(always)]
    pub fn hit_outflow_n(&self, slot: usize, packets: u64, bytes: u64) {
        if let (Some(p), Some(b)) = (self.outflow_rules.get(slot), self.outflow_bytes.get(slot)) {
            p.add(packets);
            b.add(bytes);
        }
    }
}

/// A sum of several workers' counters, plain numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    pub ports: Vec<[u64; 7]>,
    pub drops: Vec<u64>,
    /// [`NEIGHBOUR_COLUMNS`].
    pub neighbours: [u64; 3],
    /// [`HANDOFF_COLUMNS`].
    pub handoff: [u64; 2],
}

/// A sum of several workers' rule counters of one generation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleTotals {
    pub flow_verdicts: [u64; 4],
    pub outflow_verdicts: [u64; 4],
    pub flow_rules: Vec<u64>,
    pub outflow_rules: Vec<u64>,
    pub flow_bytes: Vec<u64>,
    pub outflow_bytes: Vec<u64>,
    pub route_lookups: Vec<u64>,
    pub route_fallbacks: Vec<u64>,
}

impl RuleTotals {
    pub fn sum<'a>(workers: impl IntoIterator<Item = &'a RuleCounters>) -> RuleTotals {
        let mut t = RuleTotals::default();
        for w in workers {
            add_all(&mut t.flow_verdicts, &w.flow_verdicts);
            add_all(&mut t.outflow_verdicts, &w.outflow_verdicts);
            add_vec(&mut t.flow_rules, &w.flow_rules);
            add_vec(&mut t.outflow_rules, &w.outflow_rules);
            add_vec(&mut t.flow_bytes, &w.flow_bytes);
            add_vec(&mut t.outflow_bytes, &w.outflow_bytes);
            add_vec(&mut t.route_lookups, &w.route_lookups);
            add_vec(&mut t.route_fallbacks, &w.route_fallbacks);
        }
        t
    }
}

impl Totals {
    pub fn sum<'a>(workers: impl IntoIterator<Item = &'a WorkerCounters>) -> Totals {
        let mut t = Totals::default();
        for w in workers {
            if t.ports.len() < w.ports.len() {
                t.ports.resize(w.ports.len(), [0; 7]);
            }
            for (acc, p) in t.ports.iter_mut().zip(&w.ports) {
                let v = [
                    p.rx.get(),
                    p.rx_bytes.get(),
                    p.tx.get(),
                    p.tx_bytes.get(),
                    p.to_kernel.get(),
                    p.from_kernel.get(),
                    p.non_ip.get(),
                ];
                for (a, x) in acc.iter_mut().zip(v) {
                    *a += x;
                }
            }
            add_vec(&mut t.drops, &w.drops);
            let n = &w.neighbours;
            for (a, c) in t
                .neighbours
                .iter_mut()
                .zip([&n.solicits, &n.learned, &n.from_shared])
            {
                *a += c.get();
            }
            let h = &w.handoff;
            for (a, c) in t.handoff.iter_mut().zip([&h.handed_out, &h.handed_in]) {
                *a += c.get();
            }
        }
        t
    }

    pub fn drop_count(&self, why: DropReason) -> u64 {
        self.drops.get(why.index()).copied().unwrap_or(0)
    }
}

fn add_all(acc: &mut [u64], cs: &[Counter]) {
    for (a, c) in acc.iter_mut().zip(cs) {
        *a += c.get();
    }
}

fn add_vec(acc: &mut Vec<u64>, cs: &[Counter]) {
    if acc.len() < cs.len() {
        acc.resize(cs.len(), 0);
    }
    add_all(acc, cs);
}

/// Names of the [`Totals::ports`] columns.
pub const PORT_COLUMNS: [&str; 7] = [
    "rx",
    "rx_bytes",
    "tx",
    "tx_bytes",
    "to_kernel",
    "from_kernel",
    "non_ip",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_indexes_are_distinct_and_dense() {
        let mut seen = [false; DropReason::COUNT];
        for d in DropReason::all() {
            assert!(!seen[d.index()], "{d:?}");
            seen[d.index()] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn totals_sum_workers() {
        let a = WorkerCounters::new(2);
        let b = WorkerCounters::new(2);
        a.ports[1].rx.add(5);
        b.ports[1].rx.add(7);
        b.dropped(DropReason::FlowDeny);
        b.dropped(DropReason::FlowDeny);
        a.neighbours.from_shared.add(1);
        b.neighbours.solicits.add(2);
        a.handoff.handed_out.add(3);
        b.handoff.handed_in.add(2);
        b.handoff.handed_out.add(1);
        let t = Totals::sum([&a, &b]);
        assert_eq!(t.neighbours, [2, 0, 1]);
        assert_eq!(t.handoff, [4, 2]);
        assert_eq!(t.ports[1][0], 12);
        assert_eq!(t.ports[0][0], 0);
        let ra = RuleCounters::new(3, 1, 2);
        let rb = RuleCounters::new(3, 1, 2);
        rb.route_fallbacks[1].add(3);
        ra.flow_rules[2].add(1);
        rb.flow_rules[2].add(2);
        rb.outflow_verdicts[1].add(4);
        ra.hit_flow(1, 60);
        rb.hit_flow(1, 1500);
        rb.hit_outflow_n(0, 3, 300);
        ra.hit_flow(9, 1); // no such slot: ignored
        let r = RuleTotals::sum([&ra, &rb]);
        assert_eq!(r.flow_rules, vec![0, 2, 3]);
        assert_eq!(r.flow_bytes, vec![0, 1560, 0]);
        assert_eq!(r.outflow_bytes, vec![300]);
        assert_eq!(r.outflow_rules, vec![3]);
        assert_eq!(r.outflow_verdicts, [0, 4, 0, 0]);
        assert_eq!(r.route_fallbacks, vec![0, 3]);
        assert_eq!(t.drop_count(DropReason::FlowDeny), 2);
        assert_eq!(t.drop_count(DropReason::TxFull), 0);
    }
}
