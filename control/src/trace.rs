//! `trace`: why a packet gets its verdict, flow by flow, with the reference interpreter's
//! `holds`, checked against the compiled classifier's answer.

use flowgate_config::flows::{decide, holds, print::cond_text, Action, ListKind, Packet, RuleKind};
use flowgate_dataplane::ruleset::{default_action, RuleSet};

use crate::protocol::{TraceReply, TraceStep};

/// Traces `pkt` through one list of `set`.
pub fn trace(set: &RuleSet, kind: ListKind, pkt: &Packet, default: &Action) -> TraceReply {
    let mut steps = Vec::new();
    for flow in set.source.list(kind) {
        let mut step = TraceStep {
            flow: flow.name.clone(),
            policy: flow.policy.to_string(),
            outcome: "no-match".into(),
            rules: Vec::new(),
        };
        if Action::of_policy(&flow.policy).is_none() {
            step.outcome = "skipped".into();
            step.rules.push("policy skip: the flow is disabled".into());
            steps.push(step);
            continue;
        }
        let mut decided = false;
        for (i, rule) in flow.rules.iter().enumerate() {
            let n = i + 1;
            let kw = rule.kind.keyword();
            match rule.conds.iter().find(|c| !holds(c, pkt)) {
                Some(c) => step
                    .rules
                    .push(format!("rule {n} ({kw}): `{}` does not hold", cond_text(c))),
                None => {
                    match rule.kind {
                        RuleKind::Match => {
                            step.rules
                                .push(format!("rule {n} (match) holds: {} decides", flow.policy));
                            step.outcome = "decided".into();
                            decided = true;
                        }
                        RuleKind::Ignore => {
                            step.rules
                                .push(format!("rule {n} (ignore) holds: leaves the flow"));
                            step.outcome = "ignored".into();
                        }
                    }
                    break;
                }
            }
        }
        if flow.rules.is_empty() {
            step.rules.push("no rules: never matches".into());
        }
        steps.push(step);
        if decided {
            break;
        }
    }
    let decision = decide(set.source.list(kind), pkt, default).to_string();
    let c = &set.list(kind).classifier;
    let classifier = c.decision(c.classify(&c.key(pkt))).to_string();
    TraceReply {
        generation: set.generation,
        list: kind.keyword().into(),
        steps,
        agree: decision == classifier,
        decision,
        classifier,
    }
}

/// The default action of a list under `appliance`.
pub fn list_default(appliance: &flowgate_config::appliance::Appliance, kind: ListKind) -> Action {
    match kind {
        ListKind::Flow => default_action(appliance.dataplane.default_flow),
        ListKind::Outflow => default_action(appliance.dataplane.default_outflow),
    }
}
