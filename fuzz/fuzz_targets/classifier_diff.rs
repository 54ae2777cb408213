//! Differential: the compiled classifier (`dataplane::classify`) against the reference
//! interpreter (`config::flows::decide`) on rule sets and packets decoded from the fuzzer's
//! bytes, the way `dataplane/tests/classify_prop.rs` builds them (overlapping prefixes and
//! ranges, `not`, `ignore`, skip flows, ICMP types, fragments, IPv4 and IPv6, interfaces), with
//! packets on the edges of every prefix and range. Single, batched and interleaved-batch
//! answers must all equal the reference's.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use flowgate_config::flows::{
    decide, mask128, mask32, Action, Cond, Flow, FlowsFile, ListKind, Packet, Policy, PortRange,
    Prefix, Proto, Rule, RuleKind, Test, L4,
};
use flowgate_dataplane::classify::{Classifier, Key, Verdict};
use libfuzzer_sys::fuzz_target;

const IFACES: [&str; 3] = ["eth0", "eth1", "lo"];
const PORTS: [u16; 9] = [0, 1, 22, 80, 443, 1023, 1024, 65534, 65535];
const TYPES: [u8; 7] = [0, 3, 8, 11, 128, 129, 255];
const V4: [u32; 5] = [0x0a00_0000, 0x0a01_0203, 0xc0a8_0005, u32::MAX, 0];
const V4_LENS: [u8; 8] = [0, 1, 8, 16, 24, 30, 31, 32];
const V6: [u128; 4] = [
    0x2001_0db8_0000_0000_0000_0000_0000_0001,
    0x2001_0db8_0001_0000_0000_0000_0000_0000,
    0xfe80_0000_0000_0000_0000_0000_0000_0001,
    0,
];
const V6_LENS: [u8; 8] = [0, 1, 16, 32, 48, 64, 127, 128];

/// Reads choices from the fuzzer's bytes; zeros once they run out.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn below(&mut self, n: usize) -> usize {
        usize::from(self.byte()) % n
    }
    fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[self.below(v.len())]
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }
    fn u128(&mut self) -> u128 {
        (0..4).fold(0u128, |a, _| a << 32 | u128::from(self.u32()))
    }
}

fn prefix(b: &mut Bytes) -> Prefix {
    if b.below(5) < 3 {
        Prefix::new(IpAddr::V4(Ipv4Addr::from(b.pick(&V4))), b.pick(&V4_LENS))
    } else {
        Prefix::new(IpAddr::V6(Ipv6Addr::from(b.pick(&V6))), b.pick(&V6_LENS))
    }
}

fn ports(b: &mut Bytes) -> PortRange {
    let (x, y) = (b.pick(&PORTS), b.pick(&PORTS));
    PortRange {
        lo: x.min(y),
        hi: x.max(y),
    }
}

fn test(b: &mut Bytes) -> Test {
    match b.below(7) {
        0 => Test::Iface(b.pick(&IFACES).to_string()),
        1 => Test::Proto(b.pick(&[
            Proto::Icmp,
            Proto::TCP,
            Proto::UDP,
            Proto::Number(1),
            Proto::Number(58),
            Proto::Number(47),
            Proto::Number(0),
            Proto::Number(255),
        ])),
        2 => Test::Src(prefix(b)),
        3 => Test::Dst(prefix(b)),
        4 => Test::SrcPort(ports(b)),
        5 => Test::DstPort(ports(b)),
        _ => Test::IcmpType(b.pick(&TYPES)),
    }
}

fn policy(b: &mut Bytes) -> Policy {
    match b.below(5) {
        0 => Policy::Permit,
        1 => Policy::Deny,
        2 => Policy::Skip,
        3 => Policy::Director("web".to_string()),
        _ => Policy::Table(7),
    }
}

/// Up to 12 items of up to 8 rules of up to 5 conditions.
fn file(b: &mut Bytes) -> FlowsFile {
    let items = (0..1 + b.below(12))
        .map(|i| {
            let out = b.below(10) < 3;
            let mut policy = policy(b);
            if out && matches!(policy, Policy::Director(_)) {
                policy = Policy::Deny;
            }
            let rules = (0..b.below(9))
                .map(|_| Rule {
                    kind: if b.below(4) == 0 {
                        RuleKind::Ignore
                    } else {
                        RuleKind::Match
                    },
                    conds: (0..b.below(6))
                        .map(|_| Cond {
                            negated: b.below(10) < 3,
                            test: test(b),
                        })
                        .collect(),
                })
                .collect();
            Arc::new(Flow {
                kind: if out {
                    ListKind::Outflow
                } else {
                    ListKind::Flow
                },
                name: format!("f{i}"),
                policy,
                rules,
            })
        })
        .collect();
    FlowsFile { items }
}

/// Edge values of every prefix and range in the file, plus neighbours.
fn pools(f: &FlowsFile) -> (Vec<u32>, Vec<u128>, Vec<u16>) {
    let mut a4 = vec![0u32, u32::MAX, 0x0a00_0001];
    let mut a6 = vec![0u128, u128::MAX, 0x2001_0db8 << 96];
    let mut ps = PORTS.to_vec();
    for c in f.items.iter().flat_map(|f| &f.rules).flat_map(|r| &r.conds) {
        match &c.test {
            Test::Src(Prefix::V4 { addr, len }) | Test::Dst(Prefix::V4 { addr, len }) => {
                let lo = u32::from(*addr);
                let hi = lo | !mask32(*len);
                a4.extend([lo, hi, lo.wrapping_sub(1), hi.wrapping_add(1), lo ^ 1]);
            }
            Test::Src(Prefix::V6 { addr, len }) | Test::Dst(Prefix::V6 { addr, len }) => {
                let lo = u128::from(*addr);
                let hi = lo | !mask128(*len);
                a6.extend([lo, hi, lo.wrapping_sub(1), hi.wrapping_add(1), lo ^ 1]);
            }
            Test::SrcPort(r) | Test::DstPort(r) => {
                ps.extend([r.lo, r.hi, r.lo.wrapping_sub(1), r.hi.wrapping_add(1)]);
            }
            _ => {}
        }
    }
    (a4, a6, ps)
}

fn packet(b: &mut Bytes, a4: &[u32], a6: &[u128], ps: &[u16]) -> Packet {
    let v6 = b.below(3) == 0;
    let (src, dst) = if v6 {
        let mut a = || {
            if b.below(5) == 0 {
                b.u128()
            } else {
                b.pick(a6)
            }
        };
        (
            IpAddr::V6(Ipv6Addr::from(a())),
            IpAddr::V6(Ipv6Addr::from(a())),
        )
    } else {
        let mut a = || {
            if b.below(5) == 0 {
                b.u32()
            } else {
                b.pick(a4)
            }
        };
        (
            IpAddr::V4(Ipv4Addr::from(a())),
            IpAddr::V4(Ipv4Addr::from(a())),
        )
    };
    let proto = b.pick(&[6u8, 17, 1, 58, 47, 0, 255, 6, 17, 1, 58]);
    let icmp = if v6 { 58 } else { 1 };
    let l4 = match b.below(8) {
        0 => L4::Fragment,
        1 => L4::Other,
        // a header that does not fit the protocol: read as the reference reads it
        2 => L4::Ports {
            sport: b.pick(ps),
            dport: b.pick(ps),
        },
        _ if proto == 6 || proto == 17 => L4::Ports {
            sport: b.pick(ps),
            dport: b.pick(ps),
        },
        _ if proto == icmp => L4::Icmp {
            icmptype: b.pick(&TYPES),
        },
        3 => L4::Icmp {
            icmptype: b.pick(&TYPES),
        },
        _ => L4::Other,
    };
    let iface = b.pick(&["eth0", "eth1", "lo", "eth9", ""]).to_string();
    Packet {
        iface,
        proto,
        src,
        dst,
        l4,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let f = file(&mut b);
    let default = if b.below(2) == 0 {
        Action::Permit
    } else {
        Action::Deny
    };
    let (a4, a6, ps) = pools(&f);
    let pkts: Vec<Packet> = (0..1 + b.below(64))
        .map(|_| packet(&mut b, &a4, &a6, &ps))
        .collect();
    for kind in [ListKind::Flow, ListKind::Outflow] {
        let c = Classifier::new(f.list(kind), &default).expect("a small list compiles");
        let keys: Vec<Key> = pkts.iter().map(|p| c.key(p)).collect();
        let mut out = vec![Verdict::default(); keys.len()];
        c.classify_batch(&keys, &mut out);
        let interleaved = c.clone().with_interleaved_batches(true);
        let mut out2 = vec![Verdict::default(); keys.len()];
        interleaved.classify_batch(&keys, &mut out2);
        assert_eq!(out, out2, "interleaved batch differs");
        for (p, v) in pkts.iter().zip(&out) {
            let want = decide(f.list(kind), p, &default);
            assert_eq!(c.decide(p), want, "single, {p:?}\n{f:?}");
            assert_eq!(c.decision(*v), want, "batched, {p:?}\n{f:?}");
        }
    }
});
