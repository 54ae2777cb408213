//! The egress stage: the outflows decide every packet about to leave through a port (its
//! key carries that port's iface): `permit` lets it go, `deny` drops it, `table T` re-routes
//! it once (the iface condition was evaluated with the port chosen before; a transit
//! packet's TTL is taken unless it was already, the kernel's own packets keep theirs).

use crate::counters::{DropReason, VerdictKind};

use super::batch::{Batch, To};
use super::decide::{count, table_of};
use super::forward::{self, dst_of, link_scoped};
use super::frames::Frames;
use super::Env;

/// Run the outflows on every packet of the batch headed for them.
// a stage per function in profiles (one call per burst)
#[inline(never)]
pub fn outflows<F: Frames>(b: &mut Batch, frames: &mut F, env: &Env<'_>) {
    let list = &env.rules.outflows;
    let rc = env.rc;
    if list.is_empty() {
        // no outflows: the default decides every packet; classified and counted once
        let len = b.len();
        let leaving = |m: &super::batch::PacketMeta| m.egress && is_leaving(m.to);
        let Some(first) = b.meta[..len].iter().position(leaving) else {
            return;
        };
        let v = list.classifier.classify(&b.keys[first]);
        let kind = count(list, v, &rc.outflow_rules, &rc.outflow_verdicts);
        let deny = kind != Some(VerdictKind::Permit);
        let mut n = 0u64;
        for m in b.meta[first..len].iter_mut().filter(|m| leaving(m)) {
            m.egress = false;
            n += 1;
            if deny {
                m.to = To::Drop(DropReason::OutflowDeny);
            }
        }
        if let Some(c) = rc.outflow_rules.get(list.slot(v)) {
            c.add(n - 1);
        }
        if let Some(k) = kind {
            rc.outflow_verdicts[k as usize].add(n - 1);
        }
        return;
    }
    let n = b.classify(&list.classifier, |m| m.egress && is_leaving(m.to));
    for j in 0..n {
        let (i, v) = b.verdict(j);
        let kind = count(list, v, &rc.outflow_rules, &rc.outflow_verdicts);
        let meta = &mut b.meta[i];
        meta.egress = false;
        match kind {
            Some(VerdictKind::Permit) => {}
            Some(VerdictKind::Table) => {
                let dst = dst_of(&b.keys[i]);
                if link_scoped(dst) {
                    // stays on the link it was sent to (Linux: the local table, rule 0)
                    continue;
                }
                let table = table_of(list, v);
                forward::forward(
                    frames,
                    i,
                    meta,
                    &mut b.keys[i],
                    env.rules,
                    rc,
                    env.roles,
                    table,
                    dst,
                );
                // re-routed once: no second pass through the outflows
                meta.egress = false;
            }
            _ => meta.to = To::Drop(DropReason::OutflowDeny),
        }
    }
}

/// A packet that still leaves (not dropped or handed over on the way).
#[inline]
fn is_leaving(to: To) -> bool {
    matches!(to, To::Port(_) | To::Hop { .. })
}
