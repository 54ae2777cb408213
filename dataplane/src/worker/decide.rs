//! The decide stage: the flows classify the burst's undecided packets with one rule set, and
//! each verdict says where the packet goes next: `permit` to the input port's kernel (or out
//! its inline peer, through the outflows), `deny` dropped, `table T` routed, `director D` to
//! the director stage. Every verdict is counted for its rule.

use flowgate_config::flows::Action;

use crate::classify::Verdict;
use crate::counters::{Counter, DropReason, VerdictKind};
use crate::ruleset::CompiledList;

use super::batch::{Batch, To};
use super::forward::{self, dst_of};
use super::frames::Frames;
use super::{Env, PortRole};

/// Classify with the flows every packet still `To::Flows` (from a port whose role is `role`)
/// and decide where each goes. Returns whether some packet goes to a director.
// a stage per function in profiles (one call per burst)
#[inline(never)]
pub fn decide<F: Frames>(
    b: &mut Batch,
    frames: &mut F,
    env: &Env<'_>,
    input: u16,
    role: PortRole,
) -> bool {
    let list = &env.rules.flows;
    let n = b.classify(&list.classifier, |m| m.to == To::Flows);
    // what a permit means for this port, once per burst
    let kernel = match role.kernel {
        true => To::Kernel(input),
        false => To::Drop(DropReason::NoKernel),
    };
    let (permit, peer_iface) = match role.peer {
        // leaves through the peer: the outflows decide, with its iface
        Some(peer) => (
            To::Port(peer),
            env.rules
                .outflows
                .port_iface
                .get(usize::from(peer))
                .copied(),
        ),
        None => (kernel, None),
    };
    // verdicts by kind, added to the counters once per burst
    let mut tally = [0u64; 4];
    for j in 0..n {
        let (i, v) = b.verdict(j);
        let meta = &mut b.meta[i];
        // untouched since the parse: its length is the one read there
        env.rc.hit_flow(list.slot(v), u64::from(meta.rx_len));
        let kind = list.kind(v);
        if let Some(k) = kind {
            tally[k as usize] += 1;
        }
        meta.to = match kind {
            Some(VerdictKind::Permit) => {
                if let Some(iface) = peer_iface {
                    b.keys[i].iface = iface;
                    meta.egress = true;
                }
                permit
            }
            Some(VerdictKind::Deny) | None => To::Drop(DropReason::FlowDeny),
            Some(VerdictKind::Director) => To::Director(env.rules.director_of(v)),
            Some(VerdictKind::Table) => {
                let dst = dst_of(&b.keys[i]);
                // for the appliance itself: delivered, as Linux's rule 0 (`lookup local`)
                // would before any policy table
                if env.rules.routes.is_local(dst) {
                    kernel
                } else {
                    let table = table_of(list, v);
                    forward::forward(
                        frames,
                        i,
                        meta,
                        &mut b.keys[i],
                        env.rules,
                        env.rc,
                        env.roles,
                        table,
                        dst,
                    );
                    meta.to
                }
            }
        };
    }
    for (c, n) in env.rc.flow_verdicts.iter().zip(tally) {
        if n != 0 {
            c.add(n);
        }
    }
    b.meta[..b.len()]
        .iter()
        .any(|m| matches!(m.to, To::Director(_)))
}

/// Count a verdict of `list` by its kind (the rule's own hit is counted by the caller, with
/// the packet's bytes); its verdict kind.
#[inline]
pub fn count(list: &CompiledList, v: Verdict, verdicts: &[Counter; 4]) -> Option<VerdictKind> {
    let kind = list.kind(v)?;
    verdicts[kind as usize].add(1);
    Some(kind)
}

/// The table of a `table` verdict.
#[inline]
pub fn table_of(list: &CompiledList, v: Verdict) -> u32 {
    match list.classifier.action(v) {
        Some(Action::Table(t)) => *t,
        _ => 0,
    }
}
