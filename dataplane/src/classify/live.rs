//! The classifier a rule set runs: a compiled base and, after incremental updates, a small
//! delta beside it, so one added, removed or replaced flow is published without recompiling
//! the whole list.
//!
//! An update is an edit of the list: at most one flow removed and at most one flow inserted
//! (replacing a flow, or a rule of it, is both, at the same place). The new
//! [`LiveClassifier`] keeps the base (`Arc`, shared with the previous generation) and
//! recompiles only the delta: every flow of the list that is not a base flow, in list order,
//! each remembering the base flow it precedes. Base flows the edits removed are *dead*.
//!
//! Lookup: the base answers its first deciding flow `b`; a dead `b` is stepped over with
//! [`Classifier::classify_after`] (the base is built with [`Classifier::new_restartable`] so
//! this is exact). The delta answers its first deciding flow `d`, which sits before base flow
//! `before[d]`. The list's first deciding flow is `d` if `before[d] <= b`, else `b`: the
//! merged order of two ordered lists. Flow and action numbers are mapped to the current
//! list's. Without a delta, a lookup is the base's, plus one branch.
//!
//! The delta is bounded ([`DELTA_MAX_EDITS`] updates or dead flows, [`DELTA_MAX_RULES`] rules
//! and an eighth of the list): past that an update recompiles the whole list into a new base
//! (as a fresh `apply` does).

use std::collections::HashMap;
use std::sync::Arc;

use flowgate_config::flows::{Action, Decision, Flow, Packet};

use super::{Classifier, CompileError, Key, Verdict};

/// Edits a delta takes before the list is recompiled whole.
pub const DELTA_MAX_EDITS: u32 = 256;
/// Rules the delta's flows may hold before the list is recompiled whole: at most this many,
/// and at most an eighth of the list's rules unless under [`DELTA_MIN_RULES`].
pub const DELTA_MAX_RULES: usize = 4096;
/// A delta of up to this many rules is always allowed (small lists).
pub const DELTA_MIN_RULES: usize = 64;

/// Marks a base flow removed by an edit in [`Delta::base_current`].
const DEAD: u16 = u16::MAX;
/// In [`LiveClassifier::origin`]: a delta flow (else the base flow index).
const FROM_DELTA: u32 = 1 << 31;

/// The flows added since the base was compiled.
#[derive(Debug)]
struct Delta {
    classifier: Classifier,
    /// For each delta flow: the base flow it sits before (`base flow count`: at the end).
    before: Vec<u16>,
    /// For each delta flow: its index in the current list.
    current: Vec<u16>,
    /// For each delta action: the current action index.
    actions: Vec<u16>,
    /// For each live interface id: the delta's id.
    iface: Vec<u16>,
    /// For each base flow: its index in the current list, or [`DEAD`].
    base_current: Vec<u16>,
    /// Any base flow dead (restarts possible).
    any_dead: bool,
    edits: u32,
}

/// A compiled list (see the module doc). Cloning shares the base and the delta.
#[derive(Debug, Clone)]
pub struct LiveClassifier {
    base: Arc<Classifier>,
    delta: Option<Arc<Delta>>,
    /// For each flow of the current list: its base index, or [`FROM_DELTA`] | delta index.
    origin: Arc<Vec<u32>>,
    /// Base actions followed by the delta's new ones.
    actions: Arc<Vec<Action>>,
    /// Interface names only delta rules mention (ids after the base's "other" id).
    extra_ifaces: Arc<HashMap<String, u16>>,
}

/// What an edit does to a list: the index (in the old list) of the flow it removes, and
/// the index (in the new list) of the flow it inserts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListEdit {
    pub removed: Option<usize>,
    pub inserted: Option<usize>,
}

impl LiveClassifier {
    /// Compile a whole list as a new base (no delta).
    pub fn compile<'a>(
        list: impl IntoIterator<Item = &'a Flow>,
        default_policy: &Action,
    ) -> Result<LiveClassifier, CompileError> {
        let base = Classifier::new_restartable(list, default_policy)?;
        Ok(Self::from_base(base))
    }

    /// A live classifier with `base` alone.
    pub fn from_base(base: Classifier) -> LiveClassifier {
        let origin = (0..base.flow_count() as u32).collect();
        LiveClassifier {
            actions: Arc::new(base.actions().to_vec()),
            base: Arc::new(base),
            delta: None,
            origin: Arc::new(origin),
            extra_ifaces: Arc::new(HashMap::new()),
        }
    }

    /// The list after `edit`: `list` is the whole new list in order. `None` when the delta
    /// would exceed its bounds (the caller recompiles the list whole).
    pub fn edit(
        &self,
        list: &[&Flow],
        edit: ListEdit,
        default_policy: &Action,
    ) -> Result<Option<LiveClassifier>, CompileError> {
        let edits = self.delta.as_ref().map_or(0, |d| d.edits) + 1;
        if edits > DELTA_MAX_EDITS {
            return Ok(None);
        }
        let mut origin: Vec<u32> = self.origin.as_ref().clone();
        if let Some(r) = edit.removed {
            if r >= origin.len() {
                return Ok(None);
            }
            origin.remove(r);
        }
        if let Some(i) = edit.inserted {
            if i > origin.len() {
                return Ok(None);
            }
            origin.insert(i, FROM_DELTA);
        }
        self.with_origin(list, origin, edits, default_policy)
    }

    /// The list `list` (a whole new list, as `apply` brings) expressed against this one:
    /// `same[k]` is the index in the current list of a flow equal to new flow `k`, if any.
    /// Flows equal to base flows, in base order, stay base flows; every other flow goes to
    /// the delta. `None` when the delta would exceed its bounds (compile the list whole).
    pub fn diffed(
        &self,
        list: &[&Flow],
        same: &[Option<usize>],
        default_policy: &Action,
    ) -> Result<Option<LiveClassifier>, CompileError> {
        let edits = self.delta.as_ref().map_or(0, |d| d.edits) + 1;
        if edits > DELTA_MAX_EDITS || same.len() != list.len() {
            return Ok(None);
        }
        let mut last_base: Option<u32> = None;
        let origin = same
            .iter()
            .map(|s| {
                let o = s.and_then(|j| self.origin.get(j).copied());
                match o {
                    Some(b) if b & FROM_DELTA == 0 && last_base.is_none_or(|l| b > l) => {
                        last_base = Some(b);
                        b
                    }
                    _ => FROM_DELTA,
                }
            })
            .collect();
        self.with_origin(list, origin, edits, default_policy)
    }

    /// The classifier of `list` whose flows come from the base or the delta as `origin`
    /// says (base indexes increasing; [`FROM_DELTA`] for the others).
    fn with_origin(
        &self,
        list: &[&Flow],
        mut origin: Vec<u32>,
        edits: u32,
        default_policy: &Action,
    ) -> Result<Option<LiveClassifier>, CompileError> {
        if origin.len() != list.len() || list.len() >= usize::from(Verdict::NO_FLOW) {
            return Ok(None);
        }
        // the delta: every non-base flow, in list order
        let base_flows = self.base.flow_count();
        let mut delta_flows: Vec<&Flow> = Vec::new();
        let mut current = Vec::new();
        let mut base_current = vec![DEAD; base_flows];
        for (i, o) in origin.iter_mut().enumerate() {
            if *o & FROM_DELTA != 0 {
                *o = FROM_DELTA | delta_flows.len() as u32;
                delta_flows.push(list[i]);
                current.push(i as u16);
            } else if let Some(b) = base_current.get_mut(*o as usize) {
                *b = i as u16;
            }
        }
        // a delta larger than an eighth of the list (past a floor), or too many dead base
        // flows: compile whole (a delta that size costs its own compile and lookups)
        let rules: usize = delta_flows.iter().map(|f| f.rules.len()).sum();
        let total: usize = list.iter().map(|f| f.rules.len()).sum();
        let dead = base_current.iter().filter(|&&b| b == DEAD).count();
        if rules > DELTA_MAX_RULES.min((total / 8).max(DELTA_MIN_RULES))
            || dead > DELTA_MAX_EDITS as usize
        {
            return Ok(None);
        }
        let any_dead = dead > 0;
        if delta_flows.is_empty() && !any_dead {
            return Ok(Some(LiveClassifier {
                delta: None,
                origin: Arc::new(origin),
                ..self.clone()
            }));
        }
        // before[d]: the base index of the next base flow after delta flow d
        let mut before = vec![base_flows as u16; delta_flows.len()];
        let mut next_base = base_flows as u16;
        for o in origin.iter().rev() {
            if o & FROM_DELTA != 0 {
                before[(o & !FROM_DELTA) as usize] = next_base;
            } else {
                next_base = *o as u16;
            }
        }
        let classifier = Classifier::new(delta_flows.iter().copied(), default_policy)?;
        let mut actions = self.base.actions().to_vec();
        let delta_actions = classifier
            .actions()
            .iter()
            .map(|a| match actions.iter().position(|x| x == a) {
                Some(i) => i as u16,
                None => {
                    actions.push(a.clone());
                    (actions.len() - 1) as u16
                }
            })
            .collect();
        if actions.len() > usize::from(u16::MAX) {
            return Err(CompileError::TooManyActions(actions.len()));
        }
        let base_other = self.base.ifaces().len();
        let mut extra_ifaces = HashMap::new();
        for name in classifier.ifaces() {
            if !self.base.ifaces().contains(name) {
                let id = base_other + 1 + extra_ifaces.len();
                if id >= usize::from(u16::MAX) {
                    return Err(CompileError::TooManyIfaces(id));
                }
                extra_ifaces.insert(name.clone(), id as u16);
            }
        }
        let mut iface = vec![0u16; base_other + 1 + extra_ifaces.len()];
        for (id, name) in self.base.ifaces().iter().enumerate() {
            iface[id] = classifier.iface_id(name);
        }
        iface[base_other] = classifier.ifaces().len() as u16;
        for (name, id) in &extra_ifaces {
            iface[usize::from(*id)] = classifier.iface_id(name);
        }
        Ok(Some(LiveClassifier {
            base: Arc::clone(&self.base),
            delta: Some(Arc::new(Delta {
                classifier,
                before,
                current,
                actions: delta_actions,
                iface,
                base_current,
                any_dead,
                edits,
            })),
            origin: Arc::new(origin),
            actions: Arc::new(actions),
            extra_ifaces: Arc::new(extra_ifaces),
        }))
    }

    /// The compiled base (shape, memory, cost figures).
    pub fn base(&self) -> &Classifier {
        &self.base
    }

    /// Edits since the base was compiled (0: no delta).
    pub fn delta_edits(&self) -> u32 {
        self.delta.as_ref().map_or(0, |d| d.edits)
    }

    /// The interface id of a port name (see [`Classifier::iface_id`]).
    pub fn iface_id(&self, name: &str) -> u16 {
        let id = self.base.iface_id(name);
        if usize::from(id) < self.base.ifaces().len() {
            return id;
        }
        self.extra_ifaces.get(name).copied().unwrap_or(id)
    }

    /// The key of a packet (slow path).
    pub fn key(&self, pkt: &Packet) -> Key {
        let mut k = self.base.key(pkt);
        k.iface = self.iface_id(&pkt.iface);
        k
    }

    /// Classify one key.
    #[inline]
    pub fn classify(&self, key: &Key) -> Verdict {
        let b = self.base.classify(key);
        match &self.delta {
            None => b,
            Some(d) => self.merge(d, key, b),
        }
    }

    /// Classify `keys` into `out` (the shorter length wins).
    pub fn classify_batch(&self, keys: &[Key], out: &mut [Verdict]) {
        self.base.classify_batch(keys, out);
        if let Some(d) = &self.delta {
            for (k, o) in keys.iter().zip(out.iter_mut()) {
                *o = self.merge(d, k, *o);
            }
        }
    }

    /// The list's answer from the base's answer `b` and the delta.
    #[inline]
    fn merge(&self, d: &Delta, key: &Key, mut b: Verdict) -> Verdict {
        if d.any_dead {
            while !b.is_default() && d.base_current.get(usize::from(b.flow)) == Some(&DEAD) {
                b = self.base.classify_after(key, b.flow);
            }
        }
        let mut dk = *key;
        dk.iface = d
            .iface
            .get(usize::from(key.iface))
            .copied()
            .unwrap_or(d.classifier.ifaces().len() as u16);
        let dv = d.classifier.classify(&dk);
        let df = usize::from(dv.flow);
        if !dv.is_default() && (b.is_default() || d.before.get(df).is_some_and(|&p| p <= b.flow)) {
            return Verdict {
                action: d.actions.get(usize::from(dv.action)).copied().unwrap_or(0),
                flow: d.current.get(df).copied().unwrap_or(Verdict::NO_FLOW),
                rule: dv.rule,
            };
        }
        if b.is_default() {
            return b;
        }
        Verdict {
            flow: d
                .base_current
                .get(usize::from(b.flow))
                .copied()
                .unwrap_or(Verdict::NO_FLOW),
            ..b
        }
    }

    /// Every distinct action, by [`Verdict::action`].
    pub fn actions(&self) -> &[Action] {
        &self.actions
    }

    /// The action of a verdict.
    #[inline]
    pub fn action(&self, v: Verdict) -> Option<&Action> {
        self.actions.get(usize::from(v.action))
    }

    /// The name of the deciding flow (None for the default).
    pub fn flow_name(&self, v: Verdict) -> Option<&str> {
        if v.is_default() {
            return None;
        }
        let o = *self.origin.get(usize::from(v.flow))?;
        if o & FROM_DELTA == 0 {
            return self.base.flow_name(Verdict {
                flow: o as u16,
                ..v
            });
        }
        let d = self.delta.as_ref()?;
        d.classifier.flow_name(Verdict {
            flow: (o & !FROM_DELTA) as u16,
            ..v
        })
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

    /// Heap bytes of the compiled structures (base and delta).
    pub fn memory_bytes(&self) -> usize {
        self.base.memory_bytes()
            + self
                .delta
                .as_ref()
                .map_or(0, |d| d.classifier.memory_bytes())
            + self.origin.capacity() * 4
    }
}
