//! Differential tests: the compiled classifier answers exactly what the reference `decide`
//! answers, on random rule sets (overlapping prefixes and ranges, `not`, `ignore`, skip flows,
//! ICMP types, fragments, IPv4 and IPv6, interfaces) and on random and boundary packets.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use flowgate_config::flows::{
    decide, Action, Cond, Flow, FlowsFile, ListKind, Packet, Policy, PortRange, Prefix, Proto,
    Rule, RuleKind, Test, L4,
};
use flowgate_dataplane::classify::live::{ListEdit, LiveClassifier};
use flowgate_dataplane::classify::{Classifier, Kernel, Key, Verdict};
use proptest::prelude::*;

const IFACES: [&str; 3] = ["eth0", "eth1", "lo"];
const PORTS: [u16; 9] = [0, 1, 22, 80, 443, 1023, 1024, 65534, 65535];
const TYPES: [u8; 7] = [0, 3, 8, 11, 128, 129, 255];

fn v4_prefix() -> impl Strategy<Value = Prefix> {
    let bases = [
        Ipv4Addr::new(10, 0, 0, 0),
        Ipv4Addr::new(10, 1, 2, 3),
        Ipv4Addr::new(192, 168, 0, 5),
        Ipv4Addr::new(255, 255, 255, 255),
        Ipv4Addr::new(0, 0, 0, 0),
    ];
    (
        0..bases.len(),
        prop::sample::select(vec![0u8, 1, 8, 16, 24, 30, 31, 32]),
    )
        .prop_map(move |(b, l)| Prefix::new(IpAddr::V4(bases[b]), l))
}

fn v6_prefix() -> impl Strategy<Value = Prefix> {
    let bases: [Ipv6Addr; 4] = [
        "2001:db8::1".parse().unwrap_or(Ipv6Addr::LOCALHOST),
        "2001:db8:1::".parse().unwrap_or(Ipv6Addr::LOCALHOST),
        "fe80::1".parse().unwrap_or(Ipv6Addr::LOCALHOST),
        Ipv6Addr::UNSPECIFIED,
    ];
    (
        0..bases.len(),
        prop::sample::select(vec![0u8, 1, 16, 32, 48, 64, 127, 128]),
    )
        .prop_map(move |(b, l)| Prefix::new(IpAddr::V6(bases[b]), l))
}

fn prefix() -> impl Strategy<Value = Prefix> {
    prop_oneof![3 => v4_prefix(), 2 => v6_prefix()]
}

fn ports() -> impl Strategy<Value = PortRange> {
    (0..PORTS.len(), 0..PORTS.len()).prop_map(|(a, b)| {
        let (a, b) = (PORTS[a.min(b)], PORTS[a.max(b)]);
        PortRange { lo: a, hi: b }
    })
}

fn test() -> impl Strategy<Value = Test> {
    prop_oneof![
        prop::sample::select(IFACES.to_vec()).prop_map(|n| Test::Iface(n.to_string())),
        prop::sample::select(vec![
            Proto::Icmp,
            Proto::TCP,
            Proto::UDP,
            Proto::Number(1),
            Proto::Number(58),
            Proto::Number(47),
            Proto::Number(0),
            Proto::Number(255)
        ])
        .prop_map(Test::Proto),
        prefix().prop_map(Test::Src),
        prefix().prop_map(Test::Dst),
        ports().prop_map(Test::SrcPort),
        ports().prop_map(Test::DstPort),
        prop::sample::select(TYPES.to_vec()).prop_map(Test::IcmpType),
    ]
}

fn rule() -> impl Strategy<Value = Rule> {
    let cond =
        (prop::bool::weighted(0.3), test()).prop_map(|(negated, test)| Cond { negated, test });
    (
        prop::bool::weighted(0.25),
        prop::collection::vec(cond, 0..5),
    )
        .prop_map(|(ignore, conds)| Rule {
            kind: if ignore {
                RuleKind::Ignore
            } else {
                RuleKind::Match
            },
            conds,
        })
}

fn policy() -> impl Strategy<Value = Policy> {
    prop_oneof![
        Just(Policy::Permit),
        Just(Policy::Deny),
        Just(Policy::Skip),
        Just(Policy::Director("web".to_string())),
        Just(Policy::Table(7)),
    ]
}

fn file() -> impl Strategy<Value = FlowsFile> {
    sized_file(7, 6)
}

/// Up to `flows - 1` items of up to `rules - 1` rules each.
fn sized_file(flows: usize, rules: usize) -> impl Strategy<Value = FlowsFile> {
    let flow = (
        prop::bool::weighted(0.3),
        policy(),
        prop::collection::vec(rule(), 0..rules),
    );
    prop::collection::vec(flow, 1..flows).prop_map(|flows| {
        FlowsFile::from_flows(
            flows
                .into_iter()
                .enumerate()
                .map(|(i, (out, policy, rules))| Flow {
                    kind: if out {
                        ListKind::Outflow
                    } else {
                        ListKind::Flow
                    },
                    name: format!("f{i}"),
                    policy: if out && matches!(policy, Policy::Director(_)) {
                        Policy::Deny
                    } else {
                        policy
                    },
                    rules,
                }),
        )
    })
}

/// A small deterministic generator (the seed comes from proptest).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn one_in(&mut self, n: u64) -> bool {
        self.next().checked_rem(n) == Some(0)
    }
    fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[(self.next() % v.len() as u64) as usize]
    }
}

/// Edge values of every prefix and range in the file, plus neighbours.
fn pools(f: &FlowsFile) -> (Vec<u32>, Vec<u128>, Vec<u16>) {
    let mut a4 = vec![0u32, u32::MAX, 0x0a00_0001];
    let mut a6 = vec![0u128, u128::MAX, 0x2001_0db8 << 96];
    let mut ps = PORTS.to_vec();
    for flow in &f.items {
        for r in &flow.rules {
            for c in &r.conds {
                match &c.test {
                    Test::Src(p) | Test::Dst(p) => match p {
                        Prefix::V4 { addr, len } => {
                            let lo = u32::from(*addr);
                            let hi = lo | !flowgate_config::flows::mask32(*len);
                            a4.extend([lo, hi, lo.wrapping_sub(1), hi.wrapping_add(1), lo ^ 1]);
                        }
                        Prefix::V6 { addr, len } => {
                            let lo = u128::from(*addr);
                            let hi = lo | !flowgate_config::flows::mask128(*len);
                            a6.extend([lo, hi, lo.wrapping_sub(1), hi.wrapping_add(1), lo ^ 1]);
                        }
                    },
                    Test::SrcPort(r) | Test::DstPort(r) => {
                        ps.extend([r.lo, r.hi, r.lo.wrapping_sub(1), r.hi.wrapping_add(1)]);
                    }
                    _ => {}
                }
            }
        }
    }
    (a4, a6, ps)
}

fn packet(rng: &mut Rng, a4: &[u32], a6: &[u128], ps: &[u16]) -> Packet {
    let v6 = rng.one_in(3);
    let (src, dst) = if v6 {
        let mut a = || {
            if rng.one_in(5) {
                u128::from(rng.next()) << 64 | u128::from(rng.next())
            } else {
                rng.pick(a6)
            }
        };
        (
            IpAddr::V6(Ipv6Addr::from(a())),
            IpAddr::V6(Ipv6Addr::from(a())),
        )
    } else {
        let mut a = || {
            if rng.one_in(5) {
                rng.next() as u32
            } else {
                rng.pick(a4)
            }
        };
        (
            IpAddr::V4(Ipv4Addr::from(a())),
            IpAddr::V4(Ipv4Addr::from(a())),
        )
    };
    let proto = rng.pick(&[6u8, 17, 1, 58, 47, 0, 255, 6, 17, 1, 58]);
    let icmp = if v6 { 58 } else { 1 };
    let l4 = match rng.next() % 8 {
        0 => L4::Fragment,
        1 => L4::Other,
        // a header that does not fit the protocol: the classifier must read it as the
        // reference does (ports only for TCP/UDP, a type only for ICMP of the family)
        2 => L4::Ports {
            sport: rng.pick(ps),
            dport: rng.pick(ps),
        },
        _ if proto == 6 || proto == 17 => L4::Ports {
            sport: rng.pick(ps),
            dport: rng.pick(ps),
        },
        _ if proto == icmp => L4::Icmp {
            icmptype: rng.pick(&TYPES),
        },
        3 => L4::Icmp {
            icmptype: rng.pick(&TYPES),
        },
        _ => L4::Other,
    };
    let iface = rng.pick(&["eth0", "eth1", "lo", "eth9", ""]).to_string();
    Packet {
        iface,
        proto,
        src,
        dst,
        l4,
    }
}

fn check(file: &FlowsFile, seed: u64, packets: usize) -> Result<(), TestCaseError> {
    let (a4, a6, ps) = pools(file);
    let mut rng = Rng(seed | 1);
    for kind in [ListKind::Flow, ListKind::Outflow] {
        let default = if seed & 1 == 0 {
            Action::Permit
        } else {
            Action::Deny
        };
        let c = Classifier::new(file.list(kind), &default)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let pkts: Vec<Packet> = (0..packets)
            .map(|_| packet(&mut rng, &a4, &a6, &ps))
            .collect();
        let keys: Vec<Key> = pkts.iter().map(|p| c.key(p)).collect();
        let mut out = vec![Verdict::default(); keys.len()];
        c.classify_batch(&keys, &mut out);
        let want: Vec<_> = pkts
            .iter()
            .map(|p| decide(file.list(kind), p, &default))
            .collect();
        for (i, p) in pkts.iter().enumerate() {
            prop_assert_eq!(&c.decide(p), &want[i], "single, packet {:?}", p);
            prop_assert_eq!(&c.decision(out[i]), &want[i], "batched, packet {:?}", p);
            prop_assert_eq!(c.decision(out[i]).to_string(), want[i].to_string());
        }
        // Every kernel this CPU runs, with both batch strategies, answers the same.
        for k in Kernel::all_supported() {
            for interleave in [false, true] {
                let Some(c2) = c
                    .clone()
                    .with_interleaved_batches(interleave)
                    .with_kernel(k)
                else {
                    return Err(TestCaseError::fail(format!("kernel {k} refused")));
                };
                let mut out2 = vec![Verdict::default(); keys.len()];
                c2.classify_batch(&keys, &mut out2);
                prop_assert_eq!(&out, &out2, "kernel {} interleave {}", k, interleave);
                for (i, key) in keys.iter().enumerate() {
                    prop_assert_eq!(c2.classify(key), out[i], "kernel {} single", k);
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn compiled_equals_reference(file in file(), seed in any::<u64>()) {
        check(&file, seed, 96)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 120, ..ProptestConfig::default() })]

    /// Larger lists: deeper trees, more restarts after `ignore`.
    #[test]
    fn compiled_equals_reference_large(file in sized_file(30, 14), seed in any::<u64>()) {
        check(&file, seed, 400)?;
    }
}

fn cond(negated: bool, test: Test) -> Cond {
    Cond { negated, test }
}

fn v4(s: &str, len: u8) -> Prefix {
    Prefix::new(IpAddr::V4(s.parse().unwrap_or(Ipv4Addr::UNSPECIFIED)), len)
}

#[test]
fn seed_example_and_ignore() {
    let file = FlowsFile::from_flows([
        Flow {
            kind: ListKind::Flow,
            name: "ssh".into(),
            policy: Policy::Permit,
            rules: vec![
                Rule {
                    kind: RuleKind::Ignore,
                    conds: vec![cond(false, Test::Src(v4("192.168.0.66", 32)))],
                },
                Rule {
                    kind: RuleKind::Match,
                    conds: vec![
                        cond(false, Test::Iface("eth0".into())),
                        cond(false, Test::Proto(Proto::TCP)),
                        cond(false, Test::Src(v4("192.168.0.0", 24))),
                        cond(false, Test::DstPort(PortRange { lo: 22, hi: 22 })),
                    ],
                },
            ],
        },
        Flow {
            kind: ListKind::Flow,
            name: "off".into(),
            policy: Policy::Skip,
            rules: vec![Rule {
                kind: RuleKind::Match,
                conds: vec![],
            }],
        },
        Flow {
            kind: ListKind::Flow,
            name: "rest".into(),
            policy: Policy::Deny,
            rules: vec![Rule {
                kind: RuleKind::Match,
                conds: vec![cond(true, Test::Src(v4("10.0.0.0", 8)))],
            }],
        },
    ]);
    let c = Classifier::new(file.flows(), &Action::Permit).expect("compile");
    let pkt = |src: &str, iface: &str, frag: bool| Packet {
        iface: iface.into(),
        proto: 6,
        src: IpAddr::V4(src.parse().unwrap_or(Ipv4Addr::UNSPECIFIED)),
        dst: IpAddr::V4(Ipv4Addr::new(192, 168, 0, 1)),
        l4: if frag {
            L4::Fragment
        } else {
            L4::Ports {
                sport: 40000,
                dport: 22,
            }
        },
    };
    assert_eq!(
        c.decide(&pkt("192.168.0.5", "eth0", false)).to_string(),
        "permit ssh 2"
    );
    assert_eq!(
        c.decide(&pkt("192.168.0.66", "eth0", false)).to_string(),
        "deny rest 1"
    );
    assert_eq!(
        c.decide(&pkt("192.168.0.5", "eth0", true)).to_string(),
        "deny rest 1"
    );
    assert_eq!(
        c.decide(&pkt("10.0.0.5", "eth1", false)).to_string(),
        "permit - -"
    );
    let v6 = Packet {
        iface: "eth0".into(),
        proto: 6,
        src: IpAddr::V6(Ipv6Addr::LOCALHOST),
        dst: IpAddr::V6(Ipv6Addr::LOCALHOST),
        l4: L4::Ports {
            sport: 1,
            dport: 22,
        },
    };
    // `not src 10/8` never holds for IPv6: the default decides
    assert_eq!(c.decide(&v6).to_string(), "permit - -");
}

#[test]
fn classifier_is_send_sync() {
    fn assert<T: Send + Sync>() {}
    assert::<Classifier>();
}

/// One random edit of a list: what it does and the material it may use.
#[derive(Debug, Clone)]
struct EditOp {
    op: u8,
    at: usize,
    rule_at: usize,
    policy: Policy,
    rules: Vec<Rule>,
}

fn edit_op() -> impl Strategy<Value = EditOp> {
    (
        0u8..6,
        any::<usize>(),
        any::<usize>(),
        policy(),
        prop::collection::vec(rule(), 0..5),
    )
        .prop_map(|(op, at, rule_at, policy, rules)| EditOp {
            op,
            at,
            rule_at,
            policy: if matches!(policy, Policy::Director(_)) {
                Policy::Director("mail".into())
            } else {
                policy
            },
            rules,
        })
}

/// Apply `e` to `list`: the new list and the `ListEdit` the live classifier takes.
fn apply_edit(list: &mut Vec<Flow>, e: &EditOp, step: usize) -> ListEdit {
    let n = list.len();
    let new_flow = |name: String| Flow {
        kind: ListKind::Flow,
        name,
        policy: e.policy.clone(),
        rules: e.rules.clone(),
    };
    match e.op {
        // delete a flow
        0 if n > 0 => {
            let i = e.at % n;
            list.remove(i);
            ListEdit {
                removed: Some(i),
                inserted: None,
            }
        }
        // replace a flow (same name, new policy and rules)
        1 if n > 0 => {
            let i = e.at % n;
            list[i] = new_flow(list[i].name.clone());
            ListEdit {
                removed: Some(i),
                inserted: Some(i),
            }
        }
        // insert, delete or replace one rule of a flow
        2..=4 if n > 0 => {
            let i = e.at % n;
            let mut f = list[i].clone();
            let r = f.rules.len();
            match (e.op, e.rules.first()) {
                (2, Some(rule)) => f.rules.insert(e.rule_at % (r + 1), rule.clone()),
                (3, _) if r > 0 => {
                    f.rules.remove(e.rule_at % r);
                }
                (4, Some(rule)) if r > 0 => f.rules[e.rule_at % r] = rule.clone(),
                _ => {}
            }
            list[i] = f;
            ListEdit {
                removed: Some(i),
                inserted: Some(i),
            }
        }
        // insert a new flow anywhere
        _ => {
            let i = e.at % (n + 1);
            list.insert(i, new_flow(format!("new{step}")));
            ListEdit {
                removed: None,
                inserted: Some(i),
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 150, ..ProptestConfig::default() })]

    /// Random sequences of incremental edits: after each, the live classifier (base plus
    /// delta) answers what the reference answers for the edited list, single and batched.
    #[test]
    fn live_edits_equal_reference(
        file in sized_file(12, 6),
        edits in prop::collection::vec(edit_op(), 1..24),
        seed in any::<u64>(),
    ) {
        let default = if seed & 1 == 0 { Action::Permit } else { Action::Deny };
        let mut list: Vec<Flow> = file.items.iter().map(|f| Flow {
            kind: ListKind::Flow,
            ..f.as_ref().clone()
        }).collect();
        let mut live = LiveClassifier::compile(list.iter(), &default)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut rng = Rng(seed | 1);
        for (step, e) in edits.iter().enumerate() {
            let edit = apply_edit(&mut list, e, step);
            let refs: Vec<&Flow> = list.iter().collect();
            live = match live.edit(&refs, edit, &default)
                .map_err(|e| TestCaseError::fail(e.to_string()))? {
                Some(l) => l,
                None => return Err(TestCaseError::fail("delta refused a small edit")),
            };
            prop_assert!(live.delta_edits() as usize <= step + 1);
            let whole = FlowsFile::from_flows(list.iter().cloned());
            let (a4, a6, ps) = pools(&whole);
            let pkts: Vec<Packet> = (0..64).map(|_| packet(&mut rng, &a4, &a6, &ps)).collect();
            let keys: Vec<Key> = pkts.iter().map(|p| live.key(p)).collect();
            let mut out = vec![Verdict::default(); keys.len()];
            live.classify_batch(&keys, &mut out);
            for (i, p) in pkts.iter().enumerate() {
                let want = decide(list.iter(), p, &default);
                prop_assert_eq!(&live.decide(p), &want, "step {} {:?}, packet {:?}", step, e, p);
                prop_assert_eq!(&live.decision(out[i]), &want, "batched, step {}", step);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 150, ..ProptestConfig::default() })]

    /// Whole new lists (several edits at once, as `apply` brings) compiled against the
    /// running one by flow equality: equal to the reference after each of a chain.
    #[test]
    fn live_diffs_equal_reference(
        file in sized_file(12, 6),
        batches in prop::collection::vec(prop::collection::vec(edit_op(), 1..5), 1..8),
        seed in any::<u64>(),
    ) {
        let default = if seed & 1 == 0 { Action::Permit } else { Action::Deny };
        let mut list: Vec<Flow> = file.items.iter().map(|f| Flow {
            kind: ListKind::Flow,
            ..f.as_ref().clone()
        }).collect();
        let mut live = LiveClassifier::compile(list.iter(), &default)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut rng = Rng(seed | 1);
        for (b, batch) in batches.iter().enumerate() {
            let old = list.clone();
            for (k, e) in batch.iter().enumerate() {
                apply_edit(&mut list, e, b * 10 + k);
            }
            let same: Vec<Option<usize>> = list
                .iter()
                .map(|f| old.iter().position(|o| o.name == f.name && o == f))
                .collect();
            let refs: Vec<&Flow> = list.iter().collect();
            live = live
                .diffed(&refs, &same, &default)
                .map_err(|e| TestCaseError::fail(e.to_string()))?
                .ok_or_else(|| TestCaseError::fail("delta refused a small diff"))?;
            let whole = FlowsFile::from_flows(list.iter().cloned());
            let (a4, a6, ps) = pools(&whole);
            for _ in 0..64 {
                let p = packet(&mut rng, &a4, &a6, &ps);
                let want = decide(list.iter(), &p, &default);
                prop_assert_eq!(&live.decide(&p), &want, "batch {} {:?}, packet {:?}", b, batch, p);
            }
        }
    }
}
