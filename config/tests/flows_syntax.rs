//! What the parser builds: keywords as names, comments, layout independence, spellings, spans.

use std::net::{Ipv4Addr, Ipv6Addr};

use flowgate_config::flows::{
    parse, print, Cond, Flow, FlowsFile, ListKind, Policy, PortRange, Prefix, Proto, Rule,
    RuleKind, Test,
};

fn file(src: &str) -> FlowsFile {
    match parse(src) {
        Ok(p) => p.file,
        Err(e) => panic!("{e:#?}"),
    }
}

fn cond(test: Test) -> Cond {
    Cond {
        negated: false,
        test,
    }
}

fn not(test: Test) -> Cond {
    Cond {
        negated: true,
        test,
    }
}

#[test]
fn keyword_as_name() {
    let f = file("flow match permit match");
    assert_eq!(
        f.items,
        [std::sync::Arc::new(Flow {
            kind: ListKind::Flow,
            name: "match".into(),
            policy: Policy::Permit,
            rules: vec![Rule {
                kind: RuleKind::Match,
                conds: vec![]
            }],
        })]
    );
    let f = file(
        "flow flow director director match iface match\noutflow permit table 9 ignore iface not",
    );
    assert_eq!(f.items[0].name, "flow");
    assert_eq!(f.items[0].policy, Policy::Director("director".into()));
    assert_eq!(
        f.items[0].rules[0].conds,
        [cond(Test::Iface("match".into()))]
    );
    assert_eq!(f.items[1].name, "permit");
    assert_eq!(f.items[1].rules[0].conds, [cond(Test::Iface("not".into()))]);
    let f = file("flow d director match match");
    assert_eq!(f.items[0].policy, Policy::Director("match".into()));
    assert_eq!(f.items[0].rules.len(), 1);
    // Without a policy word, the next flow starts right after the name.
    let f = file("flow a flow b deny");
    assert_eq!(f.items.len(), 2);
    assert_eq!(f.items[0].policy, Policy::Skip);
    assert!(f.items[0].rules.is_empty());
}

#[test]
fn comments_anywhere() {
    assert_eq!(file("flow a deny#x\nmatch"), file("flow a deny match"));
    assert_eq!(
        file("# head\nflow a # name\n permit#policy\n match proto tcp#\n dstport 22 # end"),
        file("flow a permit match proto tcp dstport 22")
    );
    assert_eq!(file("flow a#permit\n"), file("flow a"));
}

#[test]
fn comment_splitting_a_word_is_an_error() {
    assert!(parse("flow a perm#it\n match").is_err());
}

#[test]
fn layout_independence() {
    let one = "flow alltherest deny match";
    let many = "\n  flow\n\talltherest\n\n   deny\r\n match   \n";
    assert_eq!(file(one), file(many));
    let seed = include_str!("../../examples/seed.flows");
    let squashed: String = seed
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join(" ");
    assert_eq!(file(seed), file(&squashed));
}

#[test]
fn spellings_are_equal() {
    assert_eq!(file("flow a match proto 6"), file("flow a match proto tcp"));
    assert_eq!(
        file("flow a match proto 17"),
        file("flow a match proto udp")
    );
    assert_ne!(
        file("flow a match proto 1"),
        file("flow a match proto icmp")
    );
    assert_eq!(file("flow a skip match"), file("flow a match"));
    assert_eq!(
        file("flow a match src 10.0.0.0/255.0.0.0 dst 1.2.3.4/255.255.255.255"),
        file("flow a match src 10.0.0.0/8 dst 1.2.3.4")
    );
    assert_eq!(
        file("flow a match src 0.0.0.0/0.0.0.0"),
        file("flow a match src 0.0.0.0/0")
    );
    assert_eq!(
        file("flow a match src ::1"),
        file("flow a match src 0::1/128")
    );
    assert_eq!(
        file("flow a match proto tcp srcport 80:80"),
        file("flow a match proto tcp srcport 80")
    );
    assert_eq!(
        file("flow a match proto icmp icmptype echo-reply"),
        file("flow a match proto icmp icmptype 0")
    );
}

#[test]
fn every_condition_parses() {
    let f = file(
        "outflow o table 4294967295 ignore not iface eth0 not proto 47 not src 10.0.0.0/8 \
         not dst 192.168.0.0/16 match proto udp srcport 0:1023 not dstport 53 \
         match proto icmp not icmptype 8 dst fe80::/10",
    );
    let o = &f.items[0];
    assert_eq!(o.kind, ListKind::Outflow);
    assert_eq!(o.policy, Policy::Table(u32::MAX));
    assert_eq!(
        o.rules[0].conds,
        [
            not(Test::Iface("eth0".into())),
            not(Test::Proto(Proto::Number(47))),
            not(Test::Src(Prefix::V4 {
                addr: Ipv4Addr::new(10, 0, 0, 0),
                len: 8
            })),
            not(Test::Dst(Prefix::V4 {
                addr: Ipv4Addr::new(192, 168, 0, 0),
                len: 16
            })),
        ]
    );
    assert_eq!(
        o.rules[1].conds,
        [
            cond(Test::Proto(Proto::UDP)),
            cond(Test::SrcPort(PortRange { lo: 0, hi: 1023 })),
            not(Test::DstPort(PortRange { lo: 53, hi: 53 })),
        ]
    );
    assert_eq!(
        o.rules[2].conds,
        [
            cond(Test::Proto(Proto::Icmp)),
            not(Test::IcmpType(8)),
            cond(Test::Dst(Prefix::V6 {
                addr: Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0),
                len: 10
            })),
        ]
    );
    assert_eq!(o.rules[2].kind, RuleKind::Match);
    assert_eq!(o.rules[0].kind, RuleKind::Ignore);
}

#[test]
fn spans_point_at_the_source() {
    let src = "flow ssh permit\n  ignore not src 192.168.0.0/24\n  match proto tcp dstport 22\n";
    let Ok(p) = parse(src) else { panic!() };
    let item = &p.spans.items[0];
    let at = |s: flowgate_config::flows::Span| &src[s.start..s.end];
    assert_eq!(at(item.keyword), "flow");
    assert_eq!(at(item.name), "ssh");
    assert_eq!(item.policy.map(at), Some("permit"));
    assert_eq!(at(item.rules[0].span), "ignore not src 192.168.0.0/24");
    assert_eq!(at(item.rules[0].conds[0].span), "not src 192.168.0.0/24");
    assert_eq!(at(item.rules[0].conds[0].key), "src");
    assert_eq!(at(item.rules[0].conds[0].value), "192.168.0.0/24");
    assert_eq!(at(item.rules[1].keyword), "match");
    assert_eq!(at(item.rules[1].conds[1].span), "dstport 22");
}

#[test]
fn printer_output_of_the_seed() {
    let seed = include_str!("../../examples/seed.flows");
    let printed = print(&file(seed));
    assert!(printed.starts_with(
        "flow ssh permit\n    ignore not src 192.168.0.0/24\n    match proto tcp dst 192.168.0.1 dstport 22\n\nflow dns permit\n"
    ), "{printed}");
    assert!(printed.contains("flow mail director maildirect\n"));
    assert!(printed.contains(
        "outflow return-eth1 table 200\n    match proto tcp src 192.168.161.0/24 srcport 80\n"
    ));
    assert_eq!(file(&printed), file(seed));
}
