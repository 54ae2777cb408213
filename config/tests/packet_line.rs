//! `flowgate classify` packet lines: every key, every required/forbidden combination.

use std::net::IpAddr;

use flowgate_config::flows::packet::{is_skipped_line, parse_packet_lines};
use flowgate_config::flows::{parse_packet_line, Packet, L4};

fn ok(line: &str) -> Packet {
    match parse_packet_line(line) {
        Ok(p) => p,
        Err(e) => panic!("{line}: {e}"),
    }
}

#[track_caller]
fn err(line: &str, what: &str) {
    match parse_packet_line(line) {
        Ok(p) => panic!("{line}: accepted as {p:?}"),
        Err(e) => assert!(e.contains(what), "{line}: {e:?} does not contain {what:?}"),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

#[test]
fn the_spec_example() {
    assert_eq!(
        ok("iface=eth0 proto=tcp src=192.168.0.5 dst=192.168.0.1 sport=40000 dport=22"),
        Packet {
            iface: "eth0".into(),
            proto: 6,
            src: ip("192.168.0.5"),
            dst: ip("192.168.0.1"),
            l4: L4::Ports {
                sport: 40000,
                dport: 22
            },
        }
    );
}

#[test]
fn any_order_and_spacing() {
    assert_eq!(
        ok("  dport=22\tsport=40000 dst=192.168.0.1   src=192.168.0.5 proto=tcp iface=eth0  "),
        ok("iface=eth0 proto=tcp src=192.168.0.5 dst=192.168.0.1 sport=40000 dport=22")
    );
}

#[test]
fn protocols() {
    let base = "iface=e src=10.0.0.1 dst=10.0.0.2";
    assert_eq!(ok(&format!("{base} proto=udp sport=1 dport=2")).proto, 17);
    assert_eq!(
        ok(&format!("{base} proto=6 sport=1 dport=2")).l4,
        L4::Ports { sport: 1, dport: 2 }
    );
    assert_eq!(
        ok(&format!("{base} proto=17 sport=0 dport=65535")).l4,
        L4::Ports {
            sport: 0,
            dport: 65535
        }
    );
    let i = ok(&format!("{base} proto=icmp icmptype=8"));
    assert_eq!((i.proto, i.l4), (1, L4::Icmp { icmptype: 8 }));
    let i = ok(&format!("{base} proto=1 icmptype=0"));
    assert_eq!((i.proto, i.l4), (1, L4::Icmp { icmptype: 0 }));
    let i6 = ok("iface=e src=::1 dst=::2 proto=icmp icmptype=128");
    assert_eq!((i6.proto, i6.l4), (58, L4::Icmp { icmptype: 128 }));
    let i6 = ok("iface=e src=::1 dst=::2 proto=58 icmptype=echo-reply");
    assert_eq!((i6.proto, i6.l4), (58, L4::Icmp { icmptype: 129 }));
    // Protocol 1 in IPv6 and 58 in IPv4 are not ICMP of the family: no icmptype.
    assert_eq!(ok("iface=e src=::1 dst=::2 proto=1").l4, L4::Other);
    assert_eq!(ok(&format!("{base} proto=58")).l4, L4::Other);
    err("iface=e src=::1 dst=::2 proto=1 icmptype=0", "icmptype");
    err(&format!("{base} proto=58 icmptype=0"), "icmptype");
    let g = ok(&format!("{base} proto=47"));
    assert_eq!((g.proto, g.l4), (47, L4::Other));
    assert_eq!(ok(&format!("{base} proto=0")).proto, 0);
    assert_eq!(ok(&format!("{base} proto=255")).proto, 255);
    err(&format!("{base} proto=256"), "key `proto`");
    err(&format!("{base} proto=TCP sport=1 dport=2"), "key `proto`");
    err(&format!("{base} proto=-1"), "key `proto`");
}

#[test]
fn required_keys() {
    err("proto=47 src=10.0.0.1 dst=10.0.0.2", "missing key `iface`");
    err("iface=e src=10.0.0.1 dst=10.0.0.2", "missing key `proto`");
    err("iface=e proto=47 dst=10.0.0.2", "missing key `src`");
    err("iface=e proto=47 src=10.0.0.1", "missing key `dst`");
    err(
        "iface=e proto=tcp src=10.0.0.1 dst=10.0.0.2 sport=1",
        "missing key `dport`",
    );
    err(
        "iface=e proto=udp src=10.0.0.1 dst=10.0.0.2 dport=1",
        "missing key `sport`",
    );
    err(
        "iface=e proto=icmp src=10.0.0.1 dst=10.0.0.2",
        "missing key `icmptype`",
    );
    err(
        "iface=e proto=icmp src=::1 dst=::2",
        "missing key `icmptype`",
    );
}

#[test]
fn l4_keys_for_the_wrong_protocol() {
    err(
        "iface=e proto=icmp src=10.0.0.1 dst=10.0.0.2 icmptype=0 sport=1",
        "key `sport`",
    );
    err(
        "iface=e proto=icmp src=10.0.0.1 dst=10.0.0.2 icmptype=0 dport=1",
        "key `dport`",
    );
    err(
        "iface=e proto=47 src=10.0.0.1 dst=10.0.0.2 dport=1",
        "key `dport`",
    );
    err(
        "iface=e proto=tcp src=10.0.0.1 dst=10.0.0.2 sport=1 dport=2 icmptype=0",
        "key `icmptype`",
    );
    err(
        "iface=e proto=47 src=10.0.0.1 dst=10.0.0.2 icmptype=0",
        "key `icmptype`",
    );
}

#[test]
fn fragments() {
    let f = ok("iface=e proto=tcp src=10.0.0.1 dst=10.0.0.2 frag=1");
    assert_eq!((f.proto, f.l4), (6, L4::Fragment));
    assert_eq!(
        ok("iface=e proto=icmp src=::1 dst=::2 frag=1").l4,
        L4::Fragment
    );
    // L4 keys may be given with frag=1 and are ignored.
    assert_eq!(
        ok("iface=e proto=tcp src=10.0.0.1 dst=10.0.0.2 frag=1 sport=1 dport=2").l4,
        L4::Fragment
    );
    assert_eq!(
        ok("iface=e proto=47 src=10.0.0.1 dst=10.0.0.2 frag=1 icmptype=3").l4,
        L4::Fragment
    );
    assert_eq!(
        ok("iface=e proto=tcp src=10.0.0.1 dst=10.0.0.2 frag=0 sport=1 dport=2").l4,
        L4::Ports { sport: 1, dport: 2 }
    );
    err(
        "iface=e proto=tcp src=10.0.0.1 dst=10.0.0.2 frag=0",
        "missing key `sport`",
    );
    err(
        "iface=e proto=47 src=10.0.0.1 dst=10.0.0.2 frag=2",
        "key `frag`",
    );
    err(
        "iface=e proto=47 src=10.0.0.1 dst=10.0.0.2 frag=yes",
        "key `frag`",
    );
}

#[test]
fn malformed_values() {
    let base = "iface=e proto=tcp src=10.0.0.1 dst=10.0.0.2";
    err(&format!("{base} sport=65536 dport=1"), "key `sport`");
    err(&format!("{base} sport=1 dport=x"), "key `dport`");
    err(&format!("{base} sport=1 dport=1:2"), "key `dport`");
    err("iface=e proto=47 src=10.0.0 dst=10.0.0.2", "key `src`");
    err("iface=e proto=47 src=10.0.0.1 dst=10.0.0.2/32", "key `dst`");
    err(
        "iface=e proto=47 src=10.0.0.1 dst=::2",
        "different families",
    );
    err(
        "iface=e proto=icmp src=10.0.0.1 dst=10.0.0.2 icmptype=256",
        "key `icmptype`",
    );
    err(
        "iface=e proto=icmp src=10.0.0.1 dst=10.0.0.2 icmptype=packet-too-big",
        "key `icmptype`",
    );
    err("iface= proto=47 src=10.0.0.1 dst=10.0.0.2", "key `iface`");
}

#[test]
fn unknown_and_repeated_keys() {
    err(
        "iface=e proto=47 src=10.0.0.1 dst=10.0.0.2 ttl=3",
        "unknown key `ttl`",
    );
    err(
        "iface=e proto=47 src=10.0.0.1 dst=10.0.0.2 IFACE=e",
        "unknown key `IFACE`",
    );
    err(
        "iface=e proto=47 src=10.0.0.1 dst=10.0.0.2 iface=f",
        "key `iface` given twice",
    );
    err(
        "iface=e proto=47 src=10.0.0.1 dst=10.0.0.2 frag=0 frag=0",
        "key `frag` given twice",
    );
    err(
        "iface=e proto=47 src=10.0.0.1 dst=10.0.0.2 extra",
        "not key=value",
    );
    err(
        "iface=e proto=47 src=10.0.0.1 dst=10.0.0.2 # comment",
        "not key=value",
    );
}

#[test]
fn blank_and_comment_lines() {
    for l in ["", "   ", "\t", "# x", "   # iface=e", "#"] {
        assert!(is_skipped_line(l), "{l:?}");
    }
    assert!(!is_skipped_line("iface=e #"));
    err("", "empty");
    let input = "\n# c\niface=e proto=47 src=10.0.0.1 dst=10.0.0.2\n  \nbogus\n";
    let got: Vec<(usize, bool)> = parse_packet_lines(input)
        .map(|(n, r)| (n, r.is_ok()))
        .collect();
    assert_eq!(got, [(3, true), (5, false)]);
}
