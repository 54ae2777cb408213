//! The poll-mode worker: one per configured lcore, pinned, polling its share of the ports'
//! RX queues and its queue of every TAP, in bursts of 32.
//!
//! Per burst, top to bottom: rx -> parse to keys -> classify the batch with one snapshot of
//! the rule set -> dispatch (kernel TAP, peer port, drop) -> outflows for what leaves -> tx.
//! No allocation, lock or syscall on this path: scratch arrays live in the worker, counters
//! are single-writer, the rule set is one `arc_swap` load per burst.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use flowgate_config::flows::{Action, L4};

use crate::classify::{Key, L4Kind, Verdict, BATCH};
use crate::counters::{DropReason, VerdictKind, WorkerCounters};
use crate::dpdk::{Burst, Mbuf, RxQueue, TxQueue};
use crate::ruleset::{CompiledList, RuleSet};
use crate::wire::{self, Frame, IpFacts};

/// After this many consecutive empty polling rounds the worker naps briefly (see
/// [`IDLE_NAP`]), so an idle appliance does not burn its cores; under load it never naps.
pub const IDLE_ROUNDS: u32 = 1024;
pub const IDLE_NAP: Duration = Duration::from_micros(50);

/// Where a packet goes after the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum To {
    /// The kernel, through the TAP of this port.
    Kernel(u16),
    /// Out this physical port.
    Port(u16),
    Drop(DropReason),
}

/// What the worker knows of one port.
#[derive(Debug, Clone, Copy)]
pub struct PortRole {
    /// The port has a TAP (the kernel sees it).
    pub kernel: bool,
    /// Inline mode: permitted packets leave through this port instead of the kernel.
    pub peer: Option<u16>,
}

/// The queues one worker owns.
#[derive(Debug)]
pub struct Queues<'p> {
    /// (port index, RX queue) of the physical ports this worker polls.
    pub port_rx: Vec<(u16, RxQueue<'p>)>,
    /// (port index, RX queue) of the TAPs this worker polls (kernel output).
    pub tap_rx: Vec<(u16, RxQueue<'p>)>,
    /// This worker's TX queue on every physical port, by port index.
    pub port_tx: Vec<TxQueue<'p>>,
    /// This worker's TX queue on every TAP, by port index (`None`: no TAP).
    pub tap_tx: Vec<Option<TxQueue<'p>>>,
}

/// One poll-mode worker.
#[derive(Debug)]
pub struct Worker<'p> {
    /// Worker index: selects this worker's rule counters in every rule set.
    index: usize,
    queues: Queues<'p>,
    roles: Vec<PortRole>,
    port_out: Vec<Burst>,
    tap_out: Vec<Burst>,
    counters: Arc<WorkerCounters>,
    rules: &'p ArcSwap<RuleSet>,
    stop: &'p AtomicBool,
    // scratch, reused for every burst
    keys: [Key; BATCH],
    verdicts: [Verdict; BATCH],
    /// For key j, the packet index in the burst.
    key_pkt: [u8; BATCH],
    to: [To; BATCH],
}

impl<'p> Worker<'p> {
    pub fn new(
        index: usize,
        queues: Queues<'p>,
        roles: Vec<PortRole>,
        counters: Arc<WorkerCounters>,
        rules: &'p ArcSwap<RuleSet>,
        stop: &'p AtomicBool,
    ) -> Worker<'p> {
        let n = roles.len();
        Worker {
            index,
            queues,
            roles,
            port_out: (0..n).map(|_| Burst::new()).collect(),
            tap_out: (0..n).map(|_| Burst::new()).collect(),
            counters,
            rules,
            stop,
            keys: [Key::default(); BATCH],
            verdicts: [Verdict::default(); BATCH],
            key_pkt: [0; BATCH],
            to: [To::Drop(DropReason::TxFull); BATCH],
        }
    }

    /// Poll until `stop` is set, then flush and return.
    pub fn run(mut self) {
        let mut idle = 0u32;
        let mut burst = Burst::new();
        while !self.stop.load(Ordering::Relaxed) {
            let mut work = 0usize;
            for i in 0..self.queues.port_rx.len() {
                let port = self.queues.port_rx[i].0;
                if burst.rx(&mut self.queues.port_rx[i].1) > 0 {
                    work += burst.len();
                    self.ingress(port, &mut burst);
                }
            }
            for i in 0..self.queues.tap_rx.len() {
                let port = self.queues.tap_rx[i].0;
                if burst.rx(&mut self.queues.tap_rx[i].1) > 0 {
                    work += burst.len();
                    self.kernel_egress(port, &mut burst);
                }
            }
            self.flush_all();
            if work == 0 {
                idle += 1;
                if idle >= IDLE_ROUNDS {
                    std::thread::sleep(IDLE_NAP);
                }
            } else {
                idle = 0;
                self.counters.busy_polls.add(1);
            }
        }
        self.flush_all();
    }

    /// Frames from physical port `port`: flows, then kernel / peer (through the outflows) /
    /// drop.
    fn ingress(&mut self, port: u16, burst: &mut Burst) {
        let pc = &self.counters.ports[usize::from(port)];
        pc.rx.add(burst.len() as u64);
        pc.rx_bytes.add(burst.bytes());
        let rules = self.rules.load();
        let role = self.roles[usize::from(port)];
        let iface = rules.flows.port_iface[usize::from(port)];
        let n = self.parse(burst, iface, role.kernel.then_some(To::Kernel(port)));
        if n > 0 {
            let list = &rules.flows;
            list.classifier
                .classify_batch(&self.keys[..n], &mut self.verdicts[..n]);
            let rc = &rules.counters[self.index.min(rules.counters.len() - 1)];
            let mut egress = 0usize;
            for j in 0..n {
                let v = self.verdicts[j];
                let kind = count(list, v, &rc.flow_rules, &rc.flow_verdicts);
                let p = usize::from(self.key_pkt[j]);
                self.to[p] = match kind {
                    Some(VerdictKind::Permit) => match role.peer {
                        Some(peer) => {
                            // leaves through the peer: the outflows decide, with its iface
                            self.keys[egress] = self.keys[j];
                            self.keys[egress].iface = rules.outflows.port_iface[usize::from(peer)];
                            self.key_pkt[egress] = p as u8;
                            egress += 1;
                            To::Port(peer)
                        }
                        None if role.kernel => To::Kernel(port),
                        None => To::Drop(DropReason::NoKernel),
                    },
                    Some(VerdictKind::Deny) => To::Drop(DropReason::FlowDeny),
                    Some(VerdictKind::Director) => To::Drop(DropReason::DirectorUnavailable),
                    Some(VerdictKind::Table) => To::Drop(DropReason::TableUnavailable),
                    None => To::Drop(DropReason::FlowDeny),
                };
            }
            if egress > 0 {
                self.outflows(&rules, egress);
            }
        }
        self.dispatch(burst);
    }

    /// Frames the kernel sent out of port `port`'s TAP: outflows, then out the port.
    fn kernel_egress(&mut self, port: u16, burst: &mut Burst) {
        let pc = &self.counters.ports[usize::from(port)];
        pc.from_kernel.add(burst.len() as u64);
        let rules = self.rules.load();
        let iface = rules.outflows.port_iface[usize::from(port)];
        let n = self.parse(burst, iface, Some(To::Port(port)));
        for j in 0..n {
            self.to[usize::from(self.key_pkt[j])] = To::Port(port);
        }
        // kernel output the parser cannot read is dropped, not sent blindly
        for t in self.to[..burst.len()].iter_mut() {
            if let To::Drop(DropReason::Malformed(_)) = t {
                *t = To::Drop(DropReason::KernelMalformed);
            }
        }
        if n > 0 {
            self.outflows(&rules, n);
        }
        self.dispatch(burst);
    }

    /// Parse every frame of the burst: IP frames get a key (with `iface`) in `keys[..n]`;
    /// non-IP frames go to `non_ip` (or are dropped when it is `None`); malformed ones are
    /// dropped. Returns n.
    fn parse(&mut self, burst: &Burst, iface: u16, non_ip: Option<To>) -> usize {
        let mut n = 0;
        for (i, frame) in burst.iter().enumerate() {
            self.to[i] = match wire::parse(frame) {
                Frame::Ip(facts) => {
                    self.keys[n] = key_of(&facts, iface);
                    self.key_pkt[n] = i as u8;
                    n += 1;
                    continue;
                }
                Frame::NonIp { .. } => match non_ip {
                    Some(to) => {
                        let port = match to {
                            To::Kernel(p) | To::Port(p) => usize::from(p),
                            To::Drop(_) => 0,
                        };
                        self.counters.ports[port].non_ip.add(1);
                        to
                    }
                    None => To::Drop(DropReason::NoKernel),
                },
                Frame::Malformed(why) => To::Drop(DropReason::Malformed(why)),
            };
        }
        n
    }

    /// Classify `keys[..n]` (already carrying the output port's iface) with the outflows,
    /// and turn the destinations of those packets (`To::Port`) into drops where denied.
    fn outflows(&mut self, rules: &RuleSet, n: usize) {
        let list = &rules.outflows;
        list.classifier
            .classify_batch(&self.keys[..n], &mut self.verdicts[..n]);
        let rc = &rules.counters[self.index.min(rules.counters.len() - 1)];
        for j in 0..n {
            let kind = count(
                list,
                self.verdicts[j],
                &rc.outflow_rules,
                &rc.outflow_verdicts,
            );
            let p = usize::from(self.key_pkt[j]);
            match kind {
                Some(VerdictKind::Permit) => {}
                Some(VerdictKind::Table) => self.to[p] = To::Drop(DropReason::TableUnavailable),
                _ => self.to[p] = To::Drop(DropReason::OutflowDeny),
            }
        }
    }

    /// Move every mbuf of the burst to its destination.
    fn dispatch(&mut self, burst: &mut Burst) {
        let to = self.to;
        let counters = Arc::clone(&self.counters);
        burst.drain_each(|i, m| match to[i] {
            To::Kernel(p) => {
                counters.ports[usize::from(p)].to_kernel.add(1);
                self.send(true, p, m);
            }
            To::Port(p) => self.send(false, p, m),
            To::Drop(why) => {
                counters.dropped(why);
                drop(m);
            }
        });
    }

    /// Queue `m` for port `p` (or its TAP), flushing the burst first when it is full.
    #[inline]
    fn send(&mut self, tap: bool, p: u16, m: Mbuf) {
        let i = usize::from(p);
        let out = if tap {
            &mut self.tap_out[i]
        } else {
            &mut self.port_out[i]
        };
        if let Err(m) = out.push(m) {
            self.flush(tap, i);
            let out = if tap {
                &mut self.tap_out[i]
            } else {
                &mut self.port_out[i]
            };
            if let Err(m) = out.push(m) {
                self.counters.dropped(DropReason::TxFull);
                drop(m);
            }
        }
    }

    fn flush_all(&mut self) {
        for i in 0..self.port_out.len() {
            if !self.port_out[i].is_empty() {
                self.flush(false, i);
            }
            if !self.tap_out[i].is_empty() {
                self.flush(true, i);
            }
        }
    }

    /// Transmit the pending burst of port `i` (or its TAP); what the queue refuses is dropped
    /// and counted.
    fn flush(&mut self, tap: bool, i: usize) {
        let (out, queue) = if tap {
            (&mut self.tap_out[i], self.queues.tap_tx[i].as_mut())
        } else {
            (&mut self.port_out[i], self.queues.port_tx.get_mut(i))
        };
        let Some(queue) = queue else {
            for _ in 0..out.len() {
                self.counters.dropped(DropReason::NoKernel);
            }
            out.clear();
            return;
        };
        let bytes = out.bytes();
        let before = out.len();
        out.tx(queue);
        let unsent = out.len();
        if !tap {
            let pc = &self.counters.ports[i];
            pc.tx.add((before - unsent) as u64);
            pc.tx_bytes.add(bytes.saturating_sub(out.bytes()));
        }
        for _ in 0..unsent {
            self.counters.dropped(DropReason::TxFull);
        }
        out.clear();
    }
}

/// Count a verdict of `list` into a generation's counters; its verdict kind.
#[inline]
fn count(
    list: &CompiledList,
    v: Verdict,
    rules: &[crate::counters::Counter],
    verdicts: &[crate::counters::Counter; 4],
) -> Option<VerdictKind> {
    if let Some(c) = rules.get(list.slot(v)) {
        c.add(1);
    }
    let kind = match list.classifier.action(v)? {
        Action::Permit => VerdictKind::Permit,
        Action::Deny => VerdictKind::Deny,
        Action::Director(_) => VerdictKind::Director,
        Action::Table(_) => VerdictKind::Table,
    };
    verdicts[kind as usize].add(1);
    Some(kind)
}

/// The classifier key of a parsed IP packet arriving on (or leaving by) `iface`.
#[inline]
pub fn key_of(f: &IpFacts, iface: u16) -> Key {
    let (l4, sport, dport, icmptype) = match f.l4 {
        L4::Ports { sport, dport } => (L4Kind::Ports, sport, dport, 0),
        L4::Icmp { icmptype } => (L4Kind::Icmp, 0, 0, icmptype),
        L4::Fragment | L4::Other => (L4Kind::None, 0, 0, 0),
    };
    let (src, dst, v6) = match (f.src, f.dst) {
        (std::net::IpAddr::V4(s), std::net::IpAddr::V4(d)) => {
            (u128::from(u32::from(s)), u128::from(u32::from(d)), false)
        }
        (s, d) => (ip128(s), ip128(d), true),
    };
    Key {
        src,
        dst,
        iface,
        sport,
        dport,
        proto: f.proto,
        icmptype,
        v6,
        l4,
    }
}

fn ip128(a: std::net::IpAddr) -> u128 {
    match a {
        std::net::IpAddr::V4(a) => u128::from(u32::from(a)),
        std::net::IpAddr::V6(a) => u128::from(a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::{frame, FrameSpec};
    use flowgate_config::flows::{parse, parse_packet_line};

    /// The key the worker builds from real bytes equals the key `classify` builds from the
    /// equivalent packet line: the dataplane and `flowgate classify` decide alike.
    #[test]
    fn key_from_frame_equals_key_from_packet_line() {
        let file = parse("flow a permit match iface eth0 proto tcp dstport 22")
            .expect("ok")
            .file;
        let c = crate::classify::Classifier::new(file.flows(), &Action::Deny).expect("compiles");
        let cases = [
            (
                "10.0.0.1",
                "10.0.0.2",
                6,
                1234,
                22,
                "proto=tcp sport=1234 dport=22",
                false,
            ),
            (
                "10.0.0.1",
                "10.0.0.2",
                17,
                53,
                53,
                "proto=udp sport=53 dport=53",
                false,
            ),
            (
                "10.0.0.1",
                "10.0.0.2",
                1,
                8,
                0,
                "proto=icmp icmptype=8",
                false,
            ),
            ("10.0.0.1", "10.0.0.2", 47, 0, 0, "proto=47", false),
            ("10.0.0.1", "10.0.0.2", 6, 1, 2, "proto=tcp frag=1", true),
            (
                "2001:db8::1",
                "2001:db8::2",
                58,
                128,
                0,
                "proto=icmp icmptype=128",
                false,
            ),
            (
                "2001:db8::1",
                "2001:db8::2",
                6,
                9,
                22,
                "proto=tcp sport=9 dport=22",
                false,
            ),
            (
                "2001:db8::1",
                "2001:db8::2",
                17,
                9,
                22,
                "proto=udp frag=1",
                true,
            ),
        ];
        for (s, d, proto, sp, dp, line, frag) in cases {
            let mut spec = FrameSpec::new(
                s.parse().expect("addr"),
                d.parse().expect("addr"),
                proto,
                sp,
                dp,
            );
            spec.non_first_fragment = frag;
            let Frame::Ip(facts) = wire::parse(&frame(&spec)) else {
                panic!("{line}: not IP");
            };
            let pkt = parse_packet_line(&format!("iface=eth0 src={s} dst={d} {line}"))
                .expect("packet line");
            assert_eq!(key_of(&facts, c.iface_id("eth0")), c.key(&pkt), "{line}");
        }
    }
}
