//! The compiled flows classifier: the same answer as `flowgate_config::flows::decide`, fast.
//!
//! [`Classifier::new`] compiles one list (flows or outflows) into an immutable, `Send + Sync`
//! value; [`Classifier::classify`] and [`Classifier::classify_batch`] answer a [`Verdict`] per
//! [`Key`], and [`Classifier::decision`] turns a verdict into the reference's `Decision`.
//!
//! Lowering (see `lower.rs`): every rule of every non-`skip` flow, in file order, becomes one
//! or more boxes over the lanes iface / proto / L4 kind / src / dst / sport / dport-or-type,
//! numbered in that order (the number is the priority). IPv4 and IPv6 get separate engines
//! (an address condition of the other family never holds, so a rule lands in one engine or
//! both). Skip flows contribute nothing.
//!
//! `ignore` rules are kept as entries that say "leave this flow" and are resolved at lookup
//! time: the engine returns the first box that holds; when it is an ignore of flow F, every
//! later entry of F is dead for this packet and no earlier entry held, so the search restarts
//! from the first entry of the flow after F (`Engine::first_from`). Each restart passes one
//! flow, so a packet costs at most one search per `ignore` that holds, and a rule set without
//! ignores costs one search. Pruning of rules shadowed by a region-covering rule is only
//! enabled in engines without ignore entries (it would break restarts).

pub mod classbench;
pub mod engine;
pub mod kernel;
pub mod key;
pub mod live;
mod lower;

use std::collections::HashMap;
use std::fmt;

use flowgate_config::flows::{Action, Decision, Family, Flow, Packet, RuleKind};

pub use engine::{Shape, Word};
pub use kernel::Kernel;
pub use key::{Key, L4Kind};

use engine::{Bounds, Engine, NONE};

/// Keys per batch in [`Classifier::classify_batch`].
pub const BATCH: usize = engine::BATCH;

/// The outcome of a lookup: indexes into the classifier's action and flow tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Verdict {
    /// Index of the action ([`Classifier::action`]).
    pub action: u16,
    /// Index of the deciding flow in the list, or [`Verdict::NO_FLOW`] for the default.
    pub flow: u16,
    /// 1-based index of the deciding `match` among all rules of the flow; 0 for the default.
    pub rule: u32,
}

impl Verdict {
    pub const NO_FLOW: u16 = u16::MAX;

    /// Whether the list's default policy decided.
    pub fn is_default(&self) -> bool {
        self.flow == Verdict::NO_FLOW
    }
}

/// Why a list could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error("too many flows in one list: {0} (at most 65534)")]
    TooManyFlows(usize),
    #[error("too many distinct interfaces: {0} (at most 65534)")]
    TooManyIfaces(usize),
    #[error("too many distinct actions: {0} (at most 65535)")]
    TooManyActions(usize),
    #[error("too many compiled entries: {0} (at most 2^31)")]
    TooManyEntries(usize),
    #[error("routing tables: {0}")]
    Routes(#[from] crate::route::lpm::LpmError),
}

/// What an engine entry stands for.
#[derive(Debug, Clone, Copy)]
struct Entry {
    verdict: Verdict,
    ignore: bool,
    /// First entry number of the next flow (where a search restarts after this ignore).
    next: u32,
}

/// One family's engine and its entry table.
#[derive(Debug, Clone)]
struct Part<W: Word> {
    engine: Engine<W>,
    entries: Vec<Entry>,
    /// Any ignore entry (restarts possible).
    restarts: bool,
    /// Batches walk the engine together (`Engine::first_batch_isa`); else a per-key loop.
    interleave: bool,
    /// First entry of each flow of the list (by flow index), and the entry count at the end:
    /// where [`Classifier::classify_after`] starts.
    flow_start: Vec<u32>,
}

impl<W: Word> Part<W> {
    /// `restartable`: [`Classifier::classify_after`] must answer exactly (no pruning).
    fn build(
        bounds: &[Bounds<W>],
        mut entries: Vec<Entry>,
        flow_start: Vec<u32>,
        restartable: bool,
    ) -> Self {
        entries.shrink_to_fit();
        let restarts = entries.iter().any(|e| e.ignore);
        let engine = Engine::build(bounds, !restarts && !restartable);
        Part {
            engine,
            entries,
            restarts,
            interleave: true,
            flow_start,
        }
    }

    #[inline(always)]
    fn lookup(&self, lanes: &[W; engine::LANES], default: Verdict) -> Verdict {
        let r = self.engine.first(lanes);
        match self.entries.get(r as usize) {
            None => default,
            Some(e) if !e.ignore => e.verdict,
            Some(e) => self.restart(lanes, e.next, default),
        }
    }

    /// The verdict of engine answer `r` for `lanes` (restarting after an ignore entry).
    #[inline(always)]
    fn verdict(&self, r: u32, lanes: &[W; engine::LANES], default: Verdict) -> Verdict {
        match self.entries.get(r as usize) {
            None => default,
            Some(e) if !e.ignore => e.verdict,
            Some(e) => self.restart(lanes, e.next, default),
        }
    }

    #[cold]
    fn restart(&self, lanes: &[W; engine::LANES], mut from: u32, default: Verdict) -> Verdict {
        loop {
            let r = self.engine.first_from(lanes, from);
            match self.entries.get(r as usize) {
                None => return default,
                Some(e) if !e.ignore => return e.verdict,
                Some(e) => from = e.next,
            }
        }
    }

    fn memory_bytes(&self) -> usize {
        self.engine.memory_bytes() + self.entries.capacity() * std::mem::size_of::<Entry>()
    }
}

/// A compiled flows (or outflows) list. Immutable; share it between workers.
#[derive(Debug, Clone)]
pub struct Classifier {
    ifaces: Vec<String>,
    iface_ids: HashMap<String, u16>,
    actions: Vec<Action>,
    flows: Vec<String>,
    default: Verdict,
    v4: Part<u32>,
    v6: Part<u128>,
    /// The compiled variant of the IPv4 lookup that runs ([`Kernel::detect`] by default).
    kernel: Kernel,
}

impl Classifier {
    /// Compile `list` (one list, in file order) with `default_policy` for undecided packets.
    pub fn new<'a>(
        list: impl IntoIterator<Item = &'a Flow>,
        default_policy: &Action,
    ) -> Result<Classifier, CompileError> {
        Self::build(list, default_policy, false)
    }

    /// As [`Classifier::new`], for a list that incremental updates may remove flows from:
    /// [`Classifier::classify_after`] is exact (the engines skip the pruning of rules behind
    /// region-covering ones, which a restart past the covering rule's flow would miss).
    pub fn new_restartable<'a>(
        list: impl IntoIterator<Item = &'a Flow>,
        default_policy: &Action,
    ) -> Result<Classifier, CompileError> {
        Self::build(list, default_policy, true)
    }

    fn build<'a>(
        list: impl IntoIterator<Item = &'a Flow>,
        default_policy: &Action,
        restartable: bool,
    ) -> Result<Classifier, CompileError> {
        let flows: Vec<&Flow> = list.into_iter().collect();
        if flows.len() >= usize::from(Verdict::NO_FLOW) {
            return Err(CompileError::TooManyFlows(flows.len()));
        }
        let mut ifaces = Vec::new();
        let mut iface_ids = HashMap::new();
        for f in &flows {
            for r in &f.rules {
                for c in &r.conds {
                    if let flowgate_config::flows::Test::Iface(n) = &c.test {
                        if !iface_ids.contains_key(n) {
                            iface_ids.insert(n.clone(), ifaces.len() as u16);
                            ifaces.push(n.clone());
                        }
                    }
                }
            }
        }
        if ifaces.len() >= usize::from(u16::MAX) {
            return Err(CompileError::TooManyIfaces(ifaces.len()));
        }
        let mut actions: Vec<Action> = Vec::new();
        let mut action_index = |a: &Action| -> usize {
            match actions.iter().position(|x| x == a) {
                Some(i) => i,
                None => {
                    actions.push(a.clone());
                    actions.len() - 1
                }
            }
        };
        let default_action = action_index(default_policy);
        let mut flow_actions = Vec::with_capacity(flows.len());
        for f in &flows {
            flow_actions.push(Action::of_policy(&f.policy).map(|a| action_index(&a)));
        }
        if actions.len() > usize::from(u16::MAX) {
            return Err(CompileError::TooManyActions(actions.len()));
        }
        let default = Verdict {
            action: default_action as u16,
            flow: Verdict::NO_FLOW,
            rule: 0,
        };
        let id = |n: &str| iface_ids.get(n).copied().unwrap_or(ifaces.len() as u16);
        let v4 = lower_list::<u32>(&flows, &flow_actions, Family::V4, &id, restartable)?;
        let v6 = lower_list::<u128>(&flows, &flow_actions, Family::V6, &id, restartable)?;
        Ok(Classifier {
            flows: flows.iter().map(|f| f.name.clone()).collect(),
            ifaces,
            iface_ids,
            actions,
            default,
            v4,
            v6,
            kernel: Kernel::detect(),
        })
    }

    /// A classifier straight from IPv4 boxes in priority order: one flow named `name` whose
    /// rule `i + 1` is `boxes[i]`, with `action`; the default is `default`.
    pub(crate) fn from_v4_boxes(
        name: &str,
        boxes: &[Bounds<u32>],
        action: Action,
        default: Action,
    ) -> Result<Classifier, CompileError> {
        if boxes.len() >= (1 << 31) {
            return Err(CompileError::TooManyEntries(boxes.len()));
        }
        let entries = (0..boxes.len())
            .map(|i| Entry {
                verdict: Verdict {
                    action: 0,
                    flow: 0,
                    rule: i as u32 + 1,
                },
                ignore: false,
                next: boxes.len() as u32,
            })
            .collect();
        Ok(Classifier {
            ifaces: Vec::new(),
            iface_ids: HashMap::new(),
            actions: vec![action, default],
            flows: vec![name.to_string()],
            default: Verdict {
                action: 1,
                flow: Verdict::NO_FLOW,
                rule: 0,
            },
            v4: Part::build(boxes, entries, vec![0, boxes.len() as u32], false),
            v6: Part::build(&[], Vec::new(), vec![0, 0], false),
            kernel: Kernel::detect(),
        })
    }

    /// The interface id of a port name; names no rule mentions share one "other" id.
    pub fn iface_id(&self, name: &str) -> u16 {
        self.iface_ids
            .get(name)
            .copied()
            .unwrap_or(self.ifaces.len() as u16)
    }

    /// The key of a packet.
    pub fn key(&self, pkt: &Packet) -> Key {
        let (l4, sport, dport, icmptype) = match (pkt.ports(), pkt.icmp_type()) {
            (Some((s, d)), _) => (L4Kind::Ports, s, d, 0),
            (None, Some(t)) => (L4Kind::Icmp, 0, 0, t),
            (None, None) => (L4Kind::None, 0, 0, 0),
        };
        let (src, dst, v6) = match (pkt.src, pkt.dst) {
            (std::net::IpAddr::V4(s), std::net::IpAddr::V4(d)) => {
                (u128::from(u32::from(s)), u128::from(u32::from(d)), false)
            }
            (s, d) => (
                key::addr_u128(s),
                key::addr_u128(d),
                pkt.family() == Family::V6,
            ),
        };
        Key {
            src,
            dst,
            iface: self.iface_id(&pkt.iface),
            sport,
            dport,
            proto: pkt.proto,
            icmptype,
            v6,
            l4,
        }
    }

    /// Classify one key.
    #[inline]
    pub fn classify(&self, key: &Key) -> Verdict {
        if key.v6 {
            self.v6.lookup(&key.lanes_v6(), self.default)
        } else {
            let lanes = key.lanes_v4();
            let r = kernel::first(self.kernel, &self.v4.engine, &lanes);
            self.v4.verdict(r, &lanes, self.default)
        }
    }

    /// The first flow after `flow` (by list index) that decides `key`, as [`Classifier::classify`]
    /// would answer were the flows up to `flow` absent; the default if none does. The live
    /// classifier uses it to step over flows an incremental update removed. Exact for a
    /// classifier built with [`Classifier::new_restartable`] (or with `ignore` rules).
    pub fn classify_after(&self, key: &Key, flow: u16) -> Verdict {
        let next = usize::from(flow) + 1;
        if key.v6 {
            match self.v6.flow_start.get(next) {
                Some(&from) => self.v6.restart(&key.lanes_v6(), from, self.default),
                None => self.default,
            }
        } else {
            match self.v4.flow_start.get(next) {
                Some(&from) => self.v4.restart(&key.lanes_v4(), from, self.default),
                None => self.default,
            }
        }
    }

    /// The interface names rules mention, by id (any other name has id `ifaces().len()`).
    pub fn ifaces(&self) -> &[String] {
        &self.ifaces
    }

    /// How many flows the list has (skip flows included).
    pub fn flow_count(&self) -> usize {
        self.flows.len()
    }

    /// Classify `keys` into `out` (the shorter length wins), [`BATCH`] keys at a time: the
    /// IPv4 keys of a batch walk the engine together, without data-dependent branches (see
    /// `Engine::first_batch_isa`), with the classifier's [`Kernel`].
    pub fn classify_batch(&self, keys: &[Key], out: &mut [Verdict]) {
        if !self.v4.interleave {
            for (k, o) in keys.iter().zip(out.iter_mut()) {
                *o = self.classify(k);
            }
            return;
        }
        for (k, o) in keys.chunks(BATCH).zip(out.chunks_mut(BATCH)) {
            self.classify_chunk(k, o);
        }
    }

    fn classify_chunk(&self, keys: &[Key], out: &mut [Verdict]) {
        let n = keys.len().min(out.len());
        let mut lanes = [[0u32; engine::LANES]; BATCH];
        for (l, k) in lanes.iter_mut().zip(keys) {
            *l = k.lanes_v4();
        }
        let mut best = [NONE; BATCH];
        kernel::first_batch(self.kernel, &self.v4.engine, &lanes[..n], &mut best[..n]);
        for i in 0..n {
            let key = &keys[i];
            out[i] = if key.v6 {
                self.v6.lookup(&key.lanes_v6(), self.default)
            } else {
                self.v4.verdict(best[i], &lanes[i], self.default)
            };
        }
    }

    /// Run kernel `k` instead of the detected one (for tests and measurements); `None` if
    /// this CPU cannot run it. Answers are the same with every kernel.
    pub fn with_kernel(mut self, k: Kernel) -> Option<Self> {
        if !k.supported() {
            return None;
        }
        self.kernel = k;
        Some(self)
    }

    /// The kernel the IPv4 lookups run.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// Force the batch strategy (interleaved walk or per-key loop) whatever the size: for
    /// tests and measurements; answers are the same either way.
    pub fn with_interleaved_batches(mut self, on: bool) -> Self {
        self.v4.interleave = on;
        self
    }

    /// Whether `classify_batch` uses the interleaved walk.
    pub fn interleaved_batches(&self) -> bool {
        self.v4.interleave
    }

    /// Every distinct action, by [`Verdict::action`].
    pub fn actions(&self) -> &[Action] {
        &self.actions
    }

    /// The action of a verdict.
    pub fn action(&self, v: Verdict) -> Option<&Action> {
        self.actions.get(usize::from(v.action))
    }

    /// The name of the deciding flow (None for the default).
    pub fn flow_name(&self, v: Verdict) -> Option<&str> {
        self.flows.get(usize::from(v.flow)).map(String::as_str)
    }

    /// The reference `Decision` of a verdict.
    pub fn decision(&self, v: Verdict) -> Decision {
        let action = self.action(v).cloned().unwrap_or(Action::Permit);
        let by = self.flow_name(v).map(|n| (n.to_string(), v.rule as usize));
        Decision { action, by }
    }

    /// Classify a packet and answer as `decide` does (slow path: builds the key).
    pub fn decide(&self, pkt: &Packet) -> Decision {
        self.decision(self.classify(&self.key(pkt)))
    }

    /// Heap bytes of the compiled structure (engines, entry tables, name tables).
    pub fn memory_bytes(&self) -> usize {
        let strings: usize = self
            .ifaces
            .iter()
            .chain(&self.flows)
            .map(|s| s.capacity())
            .sum();
        self.v4.memory_bytes()
            + self.v6.memory_bytes()
            + strings * 2
            + self.ifaces.capacity() * std::mem::size_of::<String>()
            + self.flows.capacity() * std::mem::size_of::<String>()
            + self.iface_ids.capacity() * (std::mem::size_of::<(String, u16)>() + 1)
            + self.actions.capacity() * std::mem::size_of::<Action>()
    }

    /// Shape of the IPv4 and IPv6 engines.
    pub fn shape(&self) -> (Shape, Shape) {
        (self.v4.engine.shape(), self.v6.engine.shape())
    }

    /// Work the IPv4 engine does for `key` (trees, nodes, rules checked), ignoring restarts.
    pub fn cost(&self, key: &Key) -> (u32, u32, u32) {
        self.v4.engine.cost(&key.lanes_v4())
    }

    /// Whether lookups may restart after `ignore` entries (per family: IPv4, IPv6).
    pub fn has_restarts(&self) -> (bool, bool) {
        (self.v4.restarts, self.v6.restarts)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_default() {
            write!(f, "action#{} - -", self.action)
        } else {
            write!(f, "action#{} flow#{} {}", self.action, self.flow, self.rule)
        }
    }
}

fn lower_list<W: Word>(
    flows: &[&Flow],
    flow_actions: &[Option<usize>],
    family: Family,
    id: &impl Fn(&str) -> u16,
    restartable: bool,
) -> Result<Part<W>, CompileError> {
    let mut bounds = Vec::new();
    let mut entries: Vec<Entry> = Vec::new();
    let mut flow_start = Vec::with_capacity(flows.len() + 1);
    for (fi, (f, action)) in flows.iter().zip(flow_actions).enumerate() {
        flow_start.push(entries.len() as u32);
        let Some(action) = action else {
            continue; // skip: disabled
        };
        let first = entries.len();
        for (ri, rule) in f.rules.iter().enumerate() {
            let boxes = lower::lower_rule::<W>(rule, family, id);
            for b in boxes {
                bounds.push(b);
                entries.push(Entry {
                    verdict: Verdict {
                        action: *action as u16,
                        flow: fi as u16,
                        rule: ri as u32 + 1,
                    },
                    ignore: rule.kind == RuleKind::Ignore,
                    next: 0,
                });
            }
        }
        let next = entries.len();
        if next >= (1 << 31) {
            return Err(CompileError::TooManyEntries(next));
        }
        for e in &mut entries[first..] {
            e.next = next as u32;
        }
    }
    debug_assert!(entries.len() < NONE as usize);
    flow_start.push(entries.len() as u32);
    Ok(Part::build(&bounds, entries, flow_start, restartable))
}
