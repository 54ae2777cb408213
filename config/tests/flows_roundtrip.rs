//! Property: the canonical printer and the parser agree, `parse(print(x)) == x`.

use std::net::IpAddr;

use flowgate_config::flows::{
    parse, print, Cond, Flow, FlowsFile, ListKind, Policy, PortRange, Prefix, Proto, Rule,
    RuleKind, Test,
};
use proptest::prelude::*;

const KEYWORDS: [&str; 17] = [
    "flow", "outflow", "permit", "deny", "skip", "director", "table", "match", "ignore", "not",
    "iface", "proto", "src", "dst", "srcport", "dstport", "icmptype",
];

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[A-Za-z0-9_-]{1,27}",
        1 => proptest::sample::select(KEYWORDS.to_vec()).prop_map(String::from),
    ]
}

fn proto() -> impl Strategy<Value = Proto> {
    prop_oneof![
        Just(Proto::TCP),
        Just(Proto::UDP),
        Just(Proto::Icmp),
        any::<u8>().prop_map(Proto::Number)
    ]
}

fn prefix(v6: bool) -> BoxedStrategy<Prefix> {
    if v6 {
        (any::<u128>(), 0u8..=128)
            .prop_map(|(a, l)| Prefix::new(IpAddr::V6(a.into()), l))
            .boxed()
    } else {
        (any::<u32>(), 0u8..=32)
            .prop_map(|(a, l)| Prefix::new(IpAddr::V4(a.into()), l))
            .boxed()
    }
}

fn ports() -> impl Strategy<Value = PortRange> {
    prop_oneof![
        any::<u16>().prop_map(|p| PortRange { lo: p, hi: p }),
        (any::<u16>(), any::<u16>()).prop_map(|(a, b)| PortRange {
            lo: a.min(b),
            hi: a.max(b)
        }),
    ]
}

/// A valid rule: each key at most once, one family, ports only with tcp/udp, icmptype only
/// with icmp, in any order.
fn rule() -> impl Strategy<Value = Rule> {
    let kind = prop_oneof![Just(RuleKind::Match), Just(RuleKind::Ignore)];
    any::<bool>()
        .prop_flat_map(move |v6| {
            (
                kind.clone(),
                proptest::option::of((any::<bool>(), name())),
                proptest::option::of((any::<bool>(), proto())),
                proptest::option::of((any::<bool>(), prefix(v6))),
                proptest::option::of((any::<bool>(), prefix(v6))),
                proptest::option::of((any::<bool>(), ports())),
                proptest::option::of((any::<bool>(), ports())),
                proptest::option::of((any::<bool>(), any::<u8>())),
            )
        })
        .prop_flat_map(|(kind, iface, proto, src, dst, sport, dport, icmp)| {
            let mut conds = Vec::new();
            let c = |negated: bool, test: Test| Cond { negated, test };
            if let Some((n, i)) = iface {
                conds.push(c(n, Test::Iface(i)));
            }
            let (mut has_ports, mut has_icmp) = (false, false);
            if let Some((n, p)) = proto {
                has_ports = !n && p.has_ports();
                has_icmp = !n && p == Proto::Icmp;
                conds.push(c(n, Test::Proto(p)));
            }
            if let Some((n, a)) = src {
                conds.push(c(n, Test::Src(a)));
            }
            if let Some((n, a)) = dst {
                conds.push(c(n, Test::Dst(a)));
            }
            if has_ports {
                if let Some((n, r)) = sport {
                    conds.push(c(n, Test::SrcPort(r)));
                }
                if let Some((n, r)) = dport {
                    conds.push(c(n, Test::DstPort(r)));
                }
            }
            if has_icmp {
                if let Some((n, t)) = icmp {
                    conds.push(c(n, Test::IcmpType(t)));
                }
            }
            Just(conds)
                .prop_shuffle()
                .prop_map(move |conds| Rule { kind, conds })
        })
}

fn policy(kind: ListKind) -> BoxedStrategy<Policy> {
    let table = (1u32..=u32::MAX).prop_filter("reserved table", |t| !(253..=255).contains(t));
    let base = prop_oneof![
        Just(Policy::Permit),
        Just(Policy::Deny),
        Just(Policy::Skip),
        table.prop_map(Policy::Table),
    ];
    match kind {
        ListKind::Flow => prop_oneof![3 => base, 1 => name().prop_map(Policy::Director)].boxed(),
        ListKind::Outflow => base.boxed(),
    }
}

fn item() -> impl Strategy<Value = (ListKind, Policy, Vec<Rule>)> {
    prop_oneof![Just(ListKind::Flow), Just(ListKind::Outflow)].prop_flat_map(|kind| {
        (
            Just(kind),
            policy(kind),
            proptest::collection::vec(rule(), 0..5),
        )
    })
}

fn flows_file() -> impl Strategy<Value = FlowsFile> {
    (
        proptest::collection::hash_set(name(), 8),
        proptest::collection::vec(item(), 0..8),
    )
        .prop_map(|(names, items)| {
            FlowsFile::from_flows(names.into_iter().zip(items).map(
                |(name, (kind, policy, rules))| Flow {
                    kind,
                    name,
                    policy,
                    rules,
                },
            ))
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn parse_print_round_trip(file in flows_file()) {
        let printed = print(&file);
        let parsed = match parse(&printed) {
            Ok(p) => p,
            Err(e) => return Err(TestCaseError::fail(format!("{printed}\n{e:#?}"))),
        };
        prop_assert_eq!(&parsed.file, &file, "{}", printed);
        prop_assert!(parsed.warnings.is_empty(), "canonical text clears no host bits");
        prop_assert_eq!(print(&parsed.file), printed);
    }

    #[test]
    fn layout_does_not_matter(file in flows_file()) {
        let printed = print(&file);
        let one_line = printed.split_whitespace().collect::<Vec<_>>().join(" ");
        let parsed = parse(&one_line).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        prop_assert_eq!(parsed.file, file);
    }
}

/// Words a flows file is made of, valid or not, to shake the parser and its recovery.
fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(KEYWORDS.to_vec()).prop_map(String::from),
        2 => proptest::sample::select(vec![
            "tcp", "udp", "icmp", "6", "1", "256", "10.0.0.0/8", "10.1.2.3/8", "::1", "fe80::/10",
            "1.2.3.4/255.0.255.0", "22", "1:1024", "9:1", "echo-reply", "packet-too-big", "200",
            "254", "eth0", "#", "#x\n", "\n", "a#b",
        ])
        .prop_map(String::from),
        1 => "[ -~]{0,12}",
        1 => any::<String>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    /// Any input: no panic; errors point inside the source; what loads prints back to itself.
    #[test]
    fn arbitrary_words(words in proptest::collection::vec(word(), 0..30)) {
        let src = words.join(" ");
        match parse(&src) {
            Ok(p) => {
                let again = parse(&print(&p.file)).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                prop_assert_eq!(again.file, p.file);
            }
            Err(diags) => {
                prop_assert!(diags.iter().any(|d| d.is_error()));
                for d in &diags {
                    prop_assert!(d.span.start <= d.span.end && d.span.end <= src.len());
                    let _ = flowgate_config::flows::render("f", &src, std::slice::from_ref(d), false);
                }
            }
        }
        let _ = flowgate_config::flows::load("f", &src, None);
    }
}
