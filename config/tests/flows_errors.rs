//! Load-time errors and warnings of flows files: every class, with its exact `line:col`.

use flowgate_config::flows::diag::headline;
use flowgate_config::flows::{load, Loaded, Names, Report};

/// The first lines (`t.flows:L:C: error: ...`) of every diagnostic of a refused file.
fn refused(src: &str) -> Vec<String> {
    match load("t.flows", src, None) {
        Ok(l) => panic!("loaded, expected errors: {:?}", l.file),
        Err(r) => heads(&r),
    }
}

fn heads(r: &Report) -> Vec<String> {
    r.diagnostics
        .iter()
        .map(|d| headline(&r.path, &r.source, d))
        .collect()
}

fn loaded(src: &str) -> Loaded {
    match load("t.flows", src, None) {
        Ok(l) => l,
        Err(r) => panic!("refused:\n{}", r.render(false)),
    }
}

fn warnings(src: &str) -> Vec<String> {
    let l = loaded(src);
    l.warnings
        .iter()
        .map(|d| headline(&l.path, &l.source, d))
        .collect()
}

/// Asserts exactly one error, at `at` (`L:C`), whose message contains `msg`.
#[track_caller]
fn one_error(src: &str, at: &str, msg: &str) {
    let e = refused(src);
    assert_eq!(e.len(), 1, "{e:#?}");
    let prefix = format!("t.flows:{at}: error: ");
    assert!(e[0].starts_with(&prefix), "expected at {at}: {}", e[0]);
    assert!(e[0].contains(msg), "expected {msg:?} in {}", e[0]);
}

#[test]
fn unknown_keywords_and_tokens() {
    one_error("permit", "1:1", "expected `flow` or `outflow`");
    one_error(
        "flow a permit\n  match bogus 1\n",
        "2:9",
        "unknown keyword `bogus`",
    );
    one_error("flow a permt match", "1:8", "unknown keyword `permt`");
    one_error(
        "flow a permit proto tcp",
        "1:15",
        "condition `proto` outside a rule",
    );
    one_error(
        "flow a permit match not",
        "1:24",
        "expected a condition after `not`",
    );
    one_error(
        "flow a permit match not permit",
        "1:25",
        "expected a condition after `not`",
    );
    one_error("flow", "1:5", "missing name after `flow`");
    one_error(
        "flow a permit\n  match proto\n\n# end\n",
        "2:14",
        "missing a protocol after `proto` at end of file",
    );
    one_error("flow a permit match proto", "1:26", "missing a protocol");
    one_error(
        "flow a permit match proto match",
        "1:27",
        "missing a protocol",
    );
    one_error("flow a director", "1:16", "missing a director name");
    one_error("flow a table", "1:13", "missing a routing table id");
    one_error("flow a Permit match", "1:8", "unexpected `Permit`");
    one_error(
        "flow a permit match proto tcp 22",
        "1:31",
        "unexpected `22`: expected a condition",
    );
    one_error(
        "flow a permit match proto TCP",
        "1:27",
        "unknown protocol `TCP`",
    );
    one_error("flow a permit match proto tcpp", "1:27", "unknown protocol");
}

#[test]
fn values_out_of_range() {
    one_error("flow a permit match proto 256", "1:27", "out of range");
    one_error(
        "flow a permit match src 10.0.0.0/33",
        "1:25",
        "out of range",
    );
    one_error("flow a permit match src ::/129", "1:25", "out of range");
    one_error(
        "flow a permit match proto tcp srcport 65536",
        "1:39",
        "out of range",
    );
    one_error(
        "flow a permit match proto tcp dstport 1:70000",
        "1:39",
        "out of range",
    );
    one_error(
        "flow a permit match proto icmp icmptype 256",
        "1:41",
        "out of range",
    );
    one_error("flow a table 0 match", "1:14", "out of range");
    one_error("flow a table 4294967296 match", "1:14", "out of range");
    one_error("flow a table 253 match", "1:14", "reserved (default)");
    one_error("flow a table 254 match", "1:14", "reserved (main)");
    one_error("flow a table 255 match", "1:14", "reserved (local)");
    assert!(load(
        "t",
        "flow a table 4294967295 match\nflow b table 1 match",
        None
    )
    .is_ok());
    assert!(load("t", "flow a table 252 match\nflow b table 256 match", None).is_ok());
}

#[test]
fn malformed_addresses_masks_ports_ranges() {
    one_error(
        "flow a permit match src 10.0.0",
        "1:25",
        "malformed IPv4 address",
    );
    one_error(
        "flow a permit match src 10.0.0.256",
        "1:25",
        "malformed IPv4 address",
    );
    one_error(
        "flow a permit match dst 1::2::3",
        "1:25",
        "malformed IPv6 address",
    );
    one_error(
        "flow a permit match dst 10.0.0.0/",
        "1:25",
        "malformed IPv4 mask",
    );
    one_error(
        "flow a permit match dst 10.0.0.0/x",
        "1:25",
        "malformed IPv4 mask",
    );
    one_error(
        "flow a permit match dst 10.0.0.0/255.0.255.0",
        "1:25",
        "not contiguous",
    );
    one_error(
        "flow a permit match dst ::/ffff::",
        "1:25",
        "malformed IPv6 prefix length",
    );
    one_error(
        "flow a permit match proto tcp srcport x",
        "1:39",
        "malformed port",
    );
    one_error(
        "flow a permit match proto tcp srcport 1:",
        "1:39",
        "malformed port",
    );
    one_error(
        "flow a permit match proto tcp srcport -1",
        "1:39",
        "malformed port",
    );
    one_error(
        "flow a permit match proto tcp dstport 90:80",
        "1:39",
        "empty port range",
    );
    one_error("flow a table x match", "1:14", "malformed routing table id");
}

#[test]
fn duplicate_names_point_at_both_lines() {
    let src = "flow ssh permit match\n\noutflow ssh deny match\n";
    let e = refused(src);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(
        e[0],
        "t.flows:3:9: error: duplicate name `ssh`: defined on line 1 and again on line 3"
    );
    let Err(r) = load("t.flows", src, None) else {
        panic!()
    };
    let out = r.render(false);
    assert!(out.contains("first defined here"), "{out}");
    // Names are case-sensitive.
    assert!(load("t", "flow ssh permit match\nflow SSH permit match", None).is_ok());
}

#[test]
fn bad_names() {
    let long = "a".repeat(28);
    one_error(&format!("flow {long} permit match"), "1:6", "at most 27");
    assert!(load("t", &format!("flow {} permit match", "a".repeat(27)), None).is_ok());
    one_error("flow a.b permit match", "1:6", "invalid character `.`");
    one_error("flow a director m/d match", "1:17", "invalid character `/`");
    one_error(
        "flow a permit match iface eth0.1",
        "1:27",
        "invalid character",
    );
    assert!(load("t", "flow A-z_09 permit match", None).is_ok());
}

#[test]
fn same_key_twice_in_a_rule() {
    one_error(
        "flow a permit match proto tcp proto udp",
        "1:31",
        "`proto` given twice",
    );
    one_error(
        "flow a permit match src 1.2.3.4 not src 1.2.3.5",
        "1:37",
        "`src` given twice",
    );
    one_error(
        "flow a permit match iface x iface y",
        "1:29",
        "`iface` given twice",
    );
    // Same key in different rules is fine.
    assert!(load("t", "flow a permit match proto tcp match proto udp", None).is_ok());
}

#[test]
fn ports_need_tcp_or_udp() {
    one_error(
        "flow a permit match srcport 80",
        "1:21",
        "needs a non-negated `proto tcp`",
    );
    one_error(
        "flow a permit match dstport 80 proto icmp",
        "1:21",
        "`dstport` needs",
    );
    one_error(
        "flow a permit match not proto tcp dstport 80",
        "1:35",
        "`dstport` needs",
    );
    one_error(
        "flow a permit match proto 47 srcport 1",
        "1:30",
        "`srcport` needs",
    );
    // proto 6 / 17 are tcp / udp; the proto may come after the ports.
    assert!(load(
        "t",
        "flow a permit match proto 6 dstport 22 match srcport 53 proto 17",
        None
    )
    .is_ok());
}

#[test]
fn icmptype_needs_icmp() {
    one_error(
        "flow a permit match icmptype 0",
        "1:21",
        "`icmptype` needs a non-negated `proto icmp`",
    );
    one_error(
        "flow a permit match proto 1 icmptype 0",
        "1:29",
        "`icmptype` needs",
    );
    one_error(
        "flow a permit match not proto icmp icmptype 0",
        "1:36",
        "`icmptype` needs",
    );
    one_error(
        "flow a permit match proto tcp icmptype 0",
        "1:31",
        "`icmptype` needs",
    );
}

#[test]
fn icmp_names_by_family() {
    let l = loaded(
        "flow a permit match proto icmp icmptype echo-request\n\
         match proto icmp dst ::1 icmptype echo-request\n\
         match icmptype packet-too-big src ::/0 proto icmp\n\
         match proto icmp icmptype redirect src 10.0.0.0/8\n",
    );
    let types: Vec<_> = l.file.items[0]
        .rules
        .iter()
        .map(|r| {
            r.conds.iter().find_map(|c| match c.test {
                flowgate_config::flows::Test::IcmpType(t) => Some(t),
                _ => None,
            })
        })
        .collect();
    assert_eq!(types, [Some(8), Some(128), Some(2), Some(5)]);
    one_error(
        "flow a permit match proto icmp icmptype packet-too-big",
        "1:41",
        "unknown ICMPv4 type",
    );
    one_error(
        "flow a permit match proto icmp src ::1 icmptype redirect",
        "1:49",
        "unknown ICMPv6 type",
    );
    one_error(
        "flow a permit match proto icmp icmptype Echo-Reply",
        "1:41",
        "unknown ICMPv4 type",
    );
}

#[test]
fn mixed_families_in_a_rule() {
    one_error(
        "flow a permit match src 10.0.0.1 dst ::1",
        "1:38",
        "IPv4 and IPv6 addresses mixed",
    );
    one_error(
        "flow a permit match dst ::/0 src 0.0.0.0/0",
        "1:34",
        "IPv4 and IPv6 addresses mixed",
    );
    assert!(load("t", "flow a permit match src 10.0.0.1 match dst ::1", None).is_ok());
}

#[test]
fn director_on_outflow() {
    one_error(
        "outflow a director d match",
        "1:11",
        "`director` policy on an outflow",
    );
    assert!(load("t", "flow a director d match", None).is_ok());
}

struct Appliance;

impl Names for Appliance {
    fn has_port(&self, name: &str) -> bool {
        name == "eth0" || name == "eth1"
    }
    fn has_director(&self, name: &str) -> bool {
        name == "maildirect"
    }
    fn has_table(&self, id: u32) -> bool {
        id == 200
    }
}

#[test]
fn references_checked_against_names() {
    let src = "flow a director other match iface eth2\nflow b table 100 match not iface eth3\n\
               flow c director maildirect match iface eth0\noutflow d table 200 match iface eth1\n";
    let Err(r) = load("t.flows", src, Some(&Appliance)) else {
        panic!("loaded")
    };
    assert_eq!(
        heads(&r),
        [
            "t.flows:1:17: error: unknown director `other`: the appliance config does not define it",
            "t.flows:1:35: error: unknown interface `eth2`: the appliance config does not define it",
            "t.flows:2:14: error: unknown routing table 100: the appliance config does not define it",
            "t.flows:2:34: error: unknown interface `eth3`: the appliance config does not define it",
        ]
    );
    // Without names nothing is checked.
    assert!(load("t", src, None).is_ok());
}

#[test]
fn every_error_of_a_file_is_reported() {
    let src = "\
flow ssh permit
    ignore not src 192.168.0.0/33
    match proto tcp dst 192.168.0.1 dstport 22 dstport 23
flow dns permit
    match proto udp bogus 53
    match srcport 1
flow ssh deny match
outflow o director x
    match proto icmp icmptype 999
";
    let e = refused(src);
    assert_eq!(
        e.iter()
            .map(|h| h.split(": error").next().unwrap_or(""))
            .collect::<Vec<_>>(),
        [
            "t.flows:2:20",
            "t.flows:3:48",
            "t.flows:5:21",
            "t.flows:6:11",
            "t.flows:7:6",
            "t.flows:8:11",
            "t.flows:9:31",
        ],
        "{e:#?}"
    );
}

#[test]
fn rendering_shows_line_caret_and_expectation() {
    let Err(r) = load(
        "dir/t.flows",
        "flow a permit\n  match proto tcp srcport 8o\n",
        None,
    ) else {
        panic!()
    };
    let out = r.render(false);
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some("dir/t.flows:2:27: error: malformed port `8o` in `8o`")
    );
    assert!(out.contains("  match proto tcp srcport 8o"), "{out}");
    assert!(
        out.contains("^^ expected a port 0..=65535 or a range lo:hi"),
        "{out}"
    );
    assert!(!out.contains('\u{1b}'), "no colour when not asked");
    assert!(r.render(true).contains('\u{1b}'));
    assert_eq!(r.to_string(), out);
}

#[test]
fn warning_host_bits_cleared() {
    let l = loaded("flow a permit match src 10.1.2.3/8 dst 10.0.0.0/255.0.0.0\n");
    assert_eq!(
        warnings("flow a permit match src 10.1.2.3/8 dst 10.0.0.0/255.0.0.0\n"),
        ["t.flows:1:25: warning: host bits set in `10.1.2.3/8`: using 10.0.0.0/8"]
    );
    assert_eq!(
        l.file,
        loaded("flow a permit match src 10.0.0.0/8 dst 10.0.0.0/8").file
    );
    assert_eq!(warnings("flow a permit match src 2001:db8::1/32").len(), 1);
    assert!(l
        .render_warnings(false)
        .starts_with("t.flows:1:25: warning: host bits"));
}

#[test]
fn warning_flow_without_rules() {
    assert_eq!(
        warnings("flow a permit\nflow b deny match"),
        ["t.flows:1:6: warning: flow `a` has no rules and never matches"]
    );
    assert_eq!(
        warnings("flow a permit ignore src 1.2.3.4"),
        ["t.flows:1:6: warning: flow `a` has only `ignore` rules and never decides"]
    );
}

#[test]
fn warning_rules_never_matching_or_shadowed() {
    assert_eq!(
        warnings("flow a permit\n match not src 0.0.0.0/0\n"),
        ["t.flows:2:8: warning: rule 1 of `a` can never match: `not src 0.0.0.0/0` never holds"]
    );
    assert_eq!(
        warnings("flow a permit match proto tcp not dstport 0:65535"),
        ["t.flows:1:31: warning: rule 1 of `a` can never match: `not dstport 0:65535` never holds"]
    );
    assert_eq!(
        warnings("flow a permit\n match proto tcp\n match proto tcp dstport 22\n"),
        ["t.flows:3:2: warning: rule 2 of `a` can never match: rule 1 (line 2) takes every packet it could match"]
    );
    assert_eq!(
        warnings("flow a permit ignore src 10.0.0.0/8 match src 10.1.0.0/16 iface x"),
        ["t.flows:1:37: warning: rule 2 of `a` can never match: rule 1 (line 1) takes every packet it could match"]
    );
    assert_eq!(
        warnings("flow a permit match\nmatch proto udp\nignore").len(),
        2
    );
    assert_eq!(
        warnings("flow a permit match not src 10.1.0.0/16 match not src 10.0.0.0/8").len(),
        1
    );
    // Not shadowed: a narrower rule first, a different key, negation the other way.
    for src in [
        "flow a permit match proto tcp dstport 22 match proto tcp",
        "flow a permit match iface x match proto tcp",
        "flow a permit match not src 10.0.0.0/8 match not src 10.1.0.0/16",
        "flow a permit match src 10.0.0.0/8 match src ::/0",
        "flow a permit match proto tcp srcport 1:10 match proto tcp srcport 5:20",
        "flow a permit match proto 1 match proto icmp",
    ] {
        assert_eq!(warnings(src), Vec::<String>::new(), "{src}");
    }
}

#[test]
fn warning_flow_that_never_decides() {
    assert_eq!(
        warnings("flow all deny match\nflow b permit match proto tcp\nflow c skip match\noutflow o permit match"),
        ["t.flows:2:6: warning: flow `b` can never decide: earlier flow `all` (line 1) decides every packet it could match"]
    );
    assert_eq!(
        warnings("flow t permit match proto tcp\nflow u permit match proto udp\nflow b deny match proto udp dstport 53 match proto tcp"),
        ["t.flows:3:6: warning: flow `b` can never decide: earlier flows `u` (line 2), `t` (line 1) decide every packet it could match"]
    );
    // An ignore before the catch-all, a skip flow, or a narrower earlier flow: no warning.
    for src in [
        "flow all deny ignore iface x match\nflow b permit match proto tcp",
        "flow all skip match\nflow b permit match proto tcp",
        "flow t permit match proto tcp dstport 22\nflow b permit match proto tcp",
        "flow all deny match\noutflow b permit match",
    ] {
        assert_eq!(warnings(src), Vec::<String>::new(), "{src}");
    }
}
