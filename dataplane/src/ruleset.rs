//! The rule set the workers run: flows and outflows compiled, with the port-to-interface map
//! and the layout of the per-rule counters. Immutable once built; the control thread publishes
//! a new one as a whole (RCU), and each burst is decided by exactly one.

use std::sync::Arc;

use flowgate_config::appliance::{Appliance, DefaultPolicy};
use flowgate_config::flows::{Action, Flow, FlowsFile, ListKind};

use crate::classify::live::{ListEdit, LiveClassifier};
use crate::classify::{CompileError, Verdict};
use crate::counters::{RuleCounters, RuleTotals, VerdictKind};
use crate::route::Routes;

/// One compiled list (flows or outflows) and where its per-rule counters live.
#[derive(Debug)]
pub struct CompiledList {
    /// The compiled list: a base and, after incremental updates, a delta (`classify::live`).
    pub classifier: LiveClassifier,
    /// Interface id of each port (by port index) in this list's classifier.
    pub port_iface: Vec<u16>,
    /// Counter slot of rule 1 of each flow; a flow's rule `r` is slot `base[flow] + r - 1`.
    rule_base: Vec<u32>,
    /// Number of per-rule counter slots, plus one for the default at the end.
    slots: usize,
    /// The list's default policy.
    default: Action,
    /// The kind of each of the classifier's actions (by action index), so that the data
    /// path reads a verdict's kind without matching on its action.
    kinds: Vec<VerdictKind>,
}

impl CompiledList {
    fn new(
        file: &FlowsFile,
        kind: ListKind,
        ports: &[String],
        default: &Action,
    ) -> Result<CompiledList, CompileError> {
        let classifier = LiveClassifier::compile(file.list(kind), default)?;
        Ok(Self::around(classifier, file, kind, ports, default))
    }

    fn around(
        classifier: LiveClassifier,
        file: &FlowsFile,
        kind: ListKind,
        ports: &[String],
        default: &Action,
    ) -> CompiledList {
        let port_iface = ports.iter().map(|p| classifier.iface_id(p)).collect();
        let mut rule_base = Vec::new();
        let mut next = 0u32;
        for flow in file.list(kind) {
            rule_base.push(next);
            next += flow.rules.len() as u32;
        }
        let kinds = classifier.actions().iter().map(VerdictKind::of).collect();
        CompiledList {
            classifier,
            port_iface,
            rule_base,
            slots: next as usize + 1,
            default: default.clone(),
            kinds,
        }
    }

    /// The list after one edit (see [`LiveClassifier::edit`]): the delta is recompiled, or
    /// the whole list when the delta is past its bounds.
    fn edited(
        &self,
        file: &FlowsFile,
        kind: ListKind,
        ports: &[String],
        edit: ListEdit,
    ) -> Result<CompiledList, CompileError> {
        let list: Vec<&Flow> = file.list(kind).collect();
        let classifier = match self.classifier.edit(&list, edit, &self.default)? {
            Some(c) => c,
            None => LiveClassifier::compile(list.iter().copied(), &self.default)?,
        };
        Ok(Self::around(classifier, file, kind, ports, &self.default))
    }

    /// The list of `file` expressed against this one (see [`LiveClassifier::diffed`]): flows
    /// equal to ones of this list are shared.
    fn diffed(
        &self,
        old: &FlowsFile,
        file: &FlowsFile,
        kind: ListKind,
        ports: &[String],
    ) -> Result<CompiledList, CompileError> {
        let old_list: Vec<&Flow> = old.list(kind).collect();
        let by_name: std::collections::HashMap<&str, usize> = old_list
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.as_str(), i))
            .collect();
        let list: Vec<&Flow> = file.list(kind).collect();
        let same: Vec<Option<usize>> = list
            .iter()
            .map(|f| {
                by_name
                    .get(f.name.as_str())
                    .copied()
                    .filter(|&j| old_list[j] == *f)
            })
            .collect();
        let classifier = match self.classifier.diffed(&list, &same, &self.default)? {
            Some(c) => c,
            None => LiveClassifier::compile(list.iter().copied(), &self.default)?,
        };
        Ok(Self::around(classifier, file, kind, ports, &self.default))
    }

    /// The slot of `rule` (1-based) of the flow at `flow` (index in the list); the default's
    /// slot for rule 0.
    pub fn rule_slot(&self, flow: usize, rule: usize) -> Option<usize> {
        if rule == 0 {
            return Some(self.slots - 1);
        }
        let base = *self.rule_base.get(flow)? as usize;
        Some(base + rule - 1)
    }

    /// The kind of a verdict's action (`None` for an action the list does not have).
    #[inline(always)]
    pub fn kind(&self, v: Verdict) -> Option<VerdictKind> {
        self.kinds.get(usize::from(v.action)).copied()
    }

    /// The counter slot of a verdict: its rule's, or the default's (the last slot).
    #[inline]
    pub fn slot(&self, v: Verdict) -> usize {
        if v.is_default() {
            return self.slots - 1;
        }
        match self.rule_base.get(usize::from(v.flow)) {
            Some(base) => (*base + v.rule - 1) as usize,
            None => self.slots - 1,
        }
    }

    /// Whether the list has no rules at all: its default decides every packet.
    pub fn is_empty(&self) -> bool {
        self.slots == 1
    }

    /// How many counter slots a worker keeps for this list.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// (flow name, rule number) of every slot but the default, in slot order.
    pub fn slot_names<'a>(&self, file: &'a FlowsFile, kind: ListKind) -> Vec<(&'a str, usize)> {
        file.list(kind)
            .flat_map(|f| (1..=f.rules.len()).map(move |r| (f.name.as_str(), r)))
            .collect()
    }
}

/// Everything a worker needs to decide packets, built off the data path.
#[derive(Debug)]
pub struct RuleSet {
    /// Publication number: 1 for the rule set loaded at start, +1 per applied change.
    pub generation: u64,
    /// The flows file it was compiled from (for counters' names, `show flows`, `diff`).
    pub source: FlowsFile,
    pub flows: CompiledList,
    pub outflows: CompiledList,
    /// Every routing table of the config, for `table T` verdicts (flows and outflows):
    /// published with the lists, so one swap changes both (shared by incremental updates).
    pub routes: Arc<Routes>,
    /// One set of verdict and per-rule counters per worker, for this generation.
    pub counters: Vec<RuleCounters>,
    /// For each flow action (by [`Verdict::action`]): the index of the director an
    /// `Action::Director` names in the appliance's `directors` (and `DirectorSet`), or
    /// [`NO_DIRECTOR`] (so the packet path never compares names).
    pub flow_directors: Vec<u16>,
}

/// The director index of each flow action of `flows` (see [`RuleSet::flow_directors`]).
fn directors_of(flows: &CompiledList, appliance: &Appliance) -> Vec<u16> {
    flows
        .classifier
        .actions()
        .iter()
        .map(|a| match a {
            Action::Director(name) => appliance
                .directors
                .iter()
                .position(|d| &d.name == name)
                .and_then(|i| u16::try_from(i).ok())
                .unwrap_or(NO_DIRECTOR),
            _ => NO_DIRECTOR,
        })
        .collect()
}

/// In [`RuleSet::flow_directors`]: not a director action, or a director not configured.
pub const NO_DIRECTOR: u16 = u16::MAX;

/// The action of a default policy.
pub fn default_action(p: DefaultPolicy) -> Action {
    match p {
        DefaultPolicy::Permit => Action::Permit,
        DefaultPolicy::Deny => Action::Deny,
    }
}

impl RuleSet {
    /// Compile `file` for the ports and defaults of `appliance`.
    pub fn compile(
        file: FlowsFile,
        appliance: &Appliance,
        generation: u64,
    ) -> Result<RuleSet, CompileError> {
        let workers = appliance.dataplane.workers.len().max(1);
        let ports: Vec<String> = appliance.ports.iter().map(|p| p.name.clone()).collect();
        let dp = &appliance.dataplane;
        let routes = Routes::build(appliance)?;
        let mut rs = Self::compile_for(
            file,
            &ports,
            &default_action(dp.default_flow),
            &default_action(dp.default_outflow),
            generation,
            workers,
        )?;
        rs.counters = (0..workers)
            .map(|_| RuleCounters::new(rs.flows.slots(), rs.outflows.slots(), routes.count()))
            .collect();
        rs.routes = Arc::new(routes);
        rs.flow_directors = directors_of(&rs.flows, appliance);
        Ok(rs)
    }

    /// The next generation for a whole new file (`apply`), compiled against this set: flows
    /// equal (by name and content) to flows of this set keep their place in its compiled base
    /// and share its `Arc`s (so their counters' identities are found without a pass over their
    /// rules); the others go to the delta (`classify::live`), or the list is compiled whole
    /// when they are too many. Same answers as [`RuleSet::compile`].
    pub fn update(
        &self,
        mut file: FlowsFile,
        appliance: &Appliance,
        generation: u64,
    ) -> Result<RuleSet, CompileError> {
        // share the Arcs of equal items
        let by_name: std::collections::HashMap<&str, &Arc<Flow>> = self
            .source
            .items
            .iter()
            .map(|f| (f.name.as_str(), f))
            .collect();
        for item in &mut file.items {
            if let Some(old) = by_name.get(item.name.as_str()) {
                if **old == *item {
                    *item = Arc::clone(old);
                }
            }
        }
        let ports: Vec<String> = appliance.ports.iter().map(|p| p.name.clone()).collect();
        let flows = self
            .flows
            .diffed(&self.source, &file, ListKind::Flow, &ports)?;
        let outflows = self
            .outflows
            .diffed(&self.source, &file, ListKind::Outflow, &ports)?;
        Ok(self.next(file, flows, outflows, appliance, generation))
    }

    /// A set around new lists, sharing this one's routing tables, with zeroed counters.
    fn next(
        &self,
        file: FlowsFile,
        flows: CompiledList,
        outflows: CompiledList,
        appliance: &Appliance,
        generation: u64,
    ) -> RuleSet {
        let workers = self.counters.len().max(1);
        let tables = self.routes.count();
        let counters = (0..workers)
            .map(|_| RuleCounters::new(flows.slots(), outflows.slots(), tables))
            .collect();
        let flow_directors = directors_of(&flows, appliance);
        RuleSet {
            generation,
            source: file,
            flows,
            outflows,
            routes: Arc::clone(&self.routes),
            counters,
            flow_directors,
        }
    }

    /// The next generation: `file` is this set's source with one item of list `kind` removed
    /// (`edit.removed`, its index in the old list) and/or one inserted (`edit.inserted`, its
    /// index in the new list); the other list is shared. Routing tables are shared; counters
    /// start at zero (totals across generations are the control side's, by rule identity).
    pub fn edit(
        &self,
        file: FlowsFile,
        kind: ListKind,
        edit: ListEdit,
        appliance: &Appliance,
        generation: u64,
    ) -> Result<RuleSet, CompileError> {
        let ports: Vec<String> = appliance.ports.iter().map(|p| p.name.clone()).collect();
        let remake = |list: &CompiledList, k: ListKind| {
            if k == kind {
                list.edited(&file, k, &ports, edit)
            } else {
                Ok(CompiledList::around(
                    list.classifier.clone(),
                    &file,
                    k,
                    &ports,
                    &list.default,
                ))
            }
        };
        let flows = remake(&self.flows, ListKind::Flow)?;
        let outflows = remake(&self.outflows, ListKind::Outflow)?;
        Ok(self.next(file, flows, outflows, appliance, generation))
    }

    /// Compile `file` for explicit port names and default actions, without routing tables
    /// (every `table` verdict finds no route).
    pub fn compile_for(
        file: FlowsFile,
        ports: &[String],
        default_flow: &Action,
        default_outflow: &Action,
        generation: u64,
        workers: usize,
    ) -> Result<RuleSet, CompileError> {
        let flows = CompiledList::new(&file, ListKind::Flow, ports, default_flow)?;
        let outflows = CompiledList::new(&file, ListKind::Outflow, ports, default_outflow)?;
        let counters = (0..workers.max(1))
            .map(|_| RuleCounters::new(flows.slots(), outflows.slots(), 0))
            .collect();
        Ok(RuleSet {
            generation,
            source: file,
            flows,
            outflows,
            routes: Arc::new(Routes::empty()),
            counters,
            flow_directors: Vec::new(),
        })
    }

    /// The director index of a flow verdict's action ([`NO_DIRECTOR`] if none).
    #[inline]
    pub fn director_of(&self, v: Verdict) -> u16 {
        self.flow_directors
            .get(usize::from(v.action))
            .copied()
            .unwrap_or(NO_DIRECTOR)
    }

    /// The counters of this generation, summed over workers.
    pub fn totals(&self) -> RuleTotals {
        RuleTotals::sum(&self.counters)
    }

    /// The list of one kind.
    pub fn list(&self, kind: ListKind) -> &CompiledList {
        match kind {
            ListKind::Flow => &self.flows,
            ListKind::Outflow => &self.outflows,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowgate_config::flows::{parse, parse_packet_line};

    #[test]
    fn slots_follow_rules_and_default_is_last() {
        let src = "flow a permit match proto tcp ignore src 10.0.0.0/8 match \
                   flow b skip match \
                   outflow o deny match iface eth1 \
                   flow c deny match proto udp";
        let file = parse(src).expect("parses").file;
        let ports = vec!["eth0".to_string(), "eth1".to_string()];
        let rs = RuleSet::compile_for(file, &ports, &Action::Permit, &Action::Permit, 1, 2)
            .expect("compiles");
        // flows a (3 rules), b (1), c (1) + default
        assert_eq!(rs.flows.slots(), 6);
        assert_eq!(rs.outflows.slots(), 2);
        let names = rs.flows.slot_names(&rs.source, ListKind::Flow);
        assert_eq!(
            names,
            vec![("a", 1), ("a", 2), ("a", 3), ("b", 1), ("c", 1)]
        );

        let udp =
            parse_packet_line("iface=eth0 proto=udp src=10.1.1.1 dst=2.2.2.2 sport=1 dport=2")
                .expect("packet");
        let c = &rs.flows.classifier;
        let v = c.classify(&c.key(&udp));
        assert_eq!(rs.flows.slot(v), 4, "flow c rule 1");
        let icmp = parse_packet_line("iface=eth0 proto=icmp src=10.1.1.1 dst=2.2.2.2 icmptype=8")
            .expect("packet");
        let v = c.classify(&c.key(&icmp));
        assert!(v.is_default());
        assert_eq!(rs.flows.slot(v), 5);
        // port ids map to the outflows' interface ids
        let o = &rs.outflows.classifier;
        assert_eq!(rs.outflows.port_iface[1], o.iface_id("eth1"));
        assert_ne!(rs.outflows.port_iface[0], rs.outflows.port_iface[1]);
    }

    /// A flow's `director NAME` maps to the director's index in the config; an unknown
    /// name and the other actions to `NO_DIRECTOR`.
    #[test]
    fn director_actions_map_to_director_indexes() {
        let config = r#"
flows = "f.flows"
[dataplane]
workers = [0]
[[port]]
name = "eth0"
device = "net_null0"
addresses = ["192.168.0.1/24"]
[[director]]
name = "web"
scheduler = "rr"
mode = "nat"
servers = [{ name = "w1", address = "10.0.0.11" }]
[[director]]
name = "mail"
scheduler = "wrr"
mode = "nat"
servers = [{ name = "m1", address = "10.0.0.21" }]
"#;
        let app = flowgate_config::appliance::parse_with_cpus("t.toml", config, 1).expect("config");
        let file = parse(
            "flow m director mail match proto tcp dstport 25 \
             flow w director web match proto tcp dstport 80 \
             flow p permit match",
        )
        .expect("flows")
        .file;
        let rs = RuleSet::compile(file, &app, 1).expect("compiles");
        let c = &rs.flows.classifier;
        let of = |line: &str| {
            let pkt = parse_packet_line(line).expect("packet");
            rs.director_of(c.classify(&c.key(&pkt)))
        };
        let tcp =
            |d: u16| format!("iface=eth0 proto=tcp src=1.1.1.1 dst=2.2.2.2 sport=9 dport={d}");
        assert_eq!(of(&tcp(25)), 1);
        assert_eq!(of(&tcp(80)), 0);
        assert_eq!(of(&tcp(22)), NO_DIRECTOR);
    }
}
