//! What every condition means, negated or not, checked through `decide` on hand-written packets.

use std::net::IpAddr;

use flowgate_config::flows::{decide, parse, Action, FlowsFile, Packet, L4};

fn file(src: &str) -> FlowsFile {
    match parse(src) {
        Ok(p) => p.file,
        Err(e) => panic!("{src}: {e:#?}"),
    }
}

fn ip(s: &str) -> IpAddr {
    match s.parse() {
        Ok(a) => a,
        Err(e) => panic!("{s}: {e}"),
    }
}

fn tcp(src: &str, sport: u16, dst: &str, dport: u16) -> Packet {
    Packet {
        iface: "eth0".into(),
        proto: 6,
        src: ip(src),
        dst: ip(dst),
        l4: L4::Ports { sport, dport },
    }
}

fn udp(src: &str, sport: u16, dst: &str, dport: u16) -> Packet {
    Packet {
        proto: 17,
        ..tcp(src, sport, dst, dport)
    }
}

fn icmp(src: &str, dst: &str, icmptype: u8) -> Packet {
    let proto = if ip(src).is_ipv4() { 1 } else { 58 };
    Packet {
        iface: "eth0".into(),
        proto,
        src: ip(src),
        dst: ip(dst),
        l4: L4::Icmp { icmptype },
    }
}

fn frag(mut p: Packet) -> Packet {
    p.l4 = L4::Fragment;
    p
}

/// Whether `match CONDS` (in a permit flow) takes the packet.
fn holds(conds: &str, p: &Packet) -> bool {
    let f = file(&format!("flow t permit match {conds}"));
    let d = decide(f.flows(), p, &Action::Deny);
    d.to_string() == "permit t 1"
}

/// (cond, negated cond) truth values.
fn both(conds: &str, p: &Packet) -> (bool, bool) {
    // `not` goes before the last condition of `conds`.
    let words: Vec<&str> = conds.split_whitespace().collect();
    let n = words.len();
    let neg = format!(
        "{} not {} {}",
        words[..n - 2].join(" "),
        words[n - 2],
        words[n - 1]
    );
    (holds(conds, p), holds(&neg, p))
}

#[test]
fn iface() {
    let p = tcp("10.0.0.1", 1, "10.0.0.2", 2);
    assert_eq!(both("iface eth0", &p), (true, false));
    assert_eq!(both("iface eth1", &p), (false, true));
    assert_eq!(both("iface ETH0", &p), (false, true), "case-sensitive");
}

#[test]
fn proto() {
    let t = tcp("10.0.0.1", 1, "10.0.0.2", 2);
    let u = udp("10.0.0.1", 1, "10.0.0.2", 2);
    assert_eq!(both("proto tcp", &t), (true, false));
    assert_eq!(both("proto 6", &t), (true, false));
    assert_eq!(both("proto udp", &t), (false, true));
    assert_eq!(both("proto 17", &u), (true, false));
    assert_eq!(
        both("proto tcp", &frag(t.clone())),
        (true, false),
        "proto holds for fragments"
    );
    let gre = Packet {
        proto: 47,
        l4: L4::Other,
        ..t.clone()
    };
    assert_eq!(both("proto 47", &gre), (true, false));
    assert_eq!(both("proto 0", &gre), (false, true));
}

#[test]
fn proto_icmp_is_family_dependent() {
    let v4 = icmp("10.0.0.1", "10.0.0.2", 8);
    let v6 = icmp("2001:db8::1", "2001:db8::2", 128);
    assert_eq!(both("proto icmp", &v4), (true, false));
    assert_eq!(both("proto icmp", &v6), (true, false));
    assert_eq!(both("proto 1", &v4), (true, false));
    assert_eq!(
        both("proto 1", &v6),
        (false, true),
        "proto 1 is IPv4 ICMP only"
    );
    assert_eq!(both("proto 58", &v6), (true, false));
    assert_eq!(both("proto 58", &v4), (false, true));
    // An IPv6 packet carrying protocol 1 is not ICMP of its family.
    let odd6 = Packet {
        proto: 1,
        l4: L4::Other,
        ..v6.clone()
    };
    assert_eq!(both("proto icmp", &odd6), (false, true));
    assert_eq!(both("proto 1", &odd6), (true, false));
}

#[test]
fn addresses_and_prefix_boundaries() {
    let p = tcp("192.168.0.5", 1, "10.255.255.255", 2);
    assert_eq!(both("src 192.168.0.5", &p), (true, false));
    assert_eq!(both("src 192.168.0.4", &p), (false, true));
    assert_eq!(both("src 192.168.0.5/32", &p), (true, false));
    assert_eq!(both("src 192.168.0.0/24", &p), (true, false));
    assert_eq!(both("src 192.168.1.0/24", &p), (false, true));
    assert_eq!(both("src 192.168.0.4/31", &p), (true, false));
    assert_eq!(both("src 192.168.0.6/31", &p), (false, true));
    assert_eq!(both("src 0.0.0.0/0", &p), (true, false));
    assert_eq!(both("dst 10.0.0.0/8", &p), (true, false));
    assert_eq!(both("dst 10.0.0.0/255.0.0.0", &p), (true, false));
    assert_eq!(both("dst 11.0.0.0/255.0.0.0", &p), (false, true));
    assert_eq!(
        both("dst 10.255.255.254/255.255.255.254", &p),
        (true, false)
    );
    assert_eq!(
        both("dst 10.255.255.255/255.255.255.255", &p),
        (true, false)
    );
    assert_eq!(both("dst 0.0.0.0/0.0.0.0", &p), (true, false));
    assert_eq!(both("dst 128.0.0.0/1", &p), (false, true));
    assert_eq!(both("dst 0.0.0.0/1", &p), (true, false));
}

#[test]
fn ipv6_addresses_and_boundaries() {
    let p = tcp("2001:db8::5", 1, "fe80::1", 2);
    assert_eq!(both("src 2001:db8::5", &p), (true, false));
    assert_eq!(both("src 2001:db8::5/128", &p), (true, false));
    assert_eq!(both("src 2001:db8::4/128", &p), (false, true));
    assert_eq!(both("src 2001:db8::/32", &p), (true, false));
    assert_eq!(both("src 2001:db9::/32", &p), (false, true));
    assert_eq!(both("src ::/0", &p), (true, false));
    assert_eq!(both("dst fe80::/10", &p), (true, false));
    assert_eq!(both("dst fec0::/10", &p), (false, true));
}

#[test]
fn address_of_the_other_family_never_holds() {
    let v6 = tcp("2001:db8::5", 1, "fe80::1", 2);
    let v4 = tcp("10.0.0.1", 1, "10.0.0.2", 2);
    for c in [
        "src 0.0.0.0/0",
        "src 10.0.0.1",
        "dst 10.0.0.0/8",
        "dst 1.2.3.4",
    ] {
        assert_eq!(both(c, &v6), (false, false), "{c}");
    }
    for c in [
        "src ::/0",
        "src ::1",
        "dst fe80::/10",
        "dst ::ffff:10.0.0.2",
    ] {
        assert_eq!(both(c, &v4), (false, false), "{c}");
    }
}

#[test]
fn ports_and_range_boundaries() {
    let p = tcp("10.0.0.1", 1024, "10.0.0.2", 65535);
    assert_eq!(both("proto tcp srcport 1024", &p), (true, false));
    assert_eq!(both("proto tcp srcport 1023", &p), (false, true));
    assert_eq!(both("proto tcp srcport 1024:2000", &p), (true, false));
    assert_eq!(both("proto tcp srcport 1000:1024", &p), (true, false));
    assert_eq!(both("proto tcp srcport 1025:2000", &p), (false, true));
    assert_eq!(both("proto tcp srcport 0:1023", &p), (false, true));
    assert_eq!(both("proto tcp dstport 65535", &p), (true, false));
    assert_eq!(both("proto tcp dstport 0:65535", &p), (true, false));
    assert_eq!(both("proto tcp dstport 0:65534", &p), (false, true));
    let z = udp("10.0.0.1", 0, "10.0.0.2", 53);
    assert_eq!(both("proto udp srcport 0", &z), (true, false));
    assert_eq!(both("proto 17 dstport 53", &z), (true, false));
}

#[test]
fn fragments_never_satisfy_ports_or_icmptype() {
    let t = frag(tcp("10.0.0.1", 1, "10.0.0.2", 22));
    assert_eq!(both("proto tcp dstport 22", &t), (false, false));
    assert_eq!(both("proto tcp dstport 0:65535", &t), (false, false));
    assert_eq!(both("proto tcp srcport 1", &t), (false, false));
    let i = frag(icmp("10.0.0.1", "10.0.0.2", 8));
    assert_eq!(both("proto icmp icmptype 8", &i), (false, false));
    assert_eq!(both("proto icmp icmptype 0", &i), (false, false));
    let i6 = frag(icmp("::1", "::2", 128));
    assert_eq!(
        both("proto icmp icmptype echo-request", &i6),
        (false, false)
    );
}

#[test]
fn icmptype() {
    let p = icmp("10.0.0.1", "10.0.0.2", 0);
    assert_eq!(both("proto icmp icmptype 0", &p), (true, false));
    assert_eq!(both("proto icmp icmptype echo-reply", &p), (true, false));
    assert_eq!(both("proto icmp icmptype 8", &p), (false, true));
    let v6 = icmp("2001:db8::1", "2001:db8::2", 129);
    assert_eq!(
        both("proto icmp dst 2001:db8::2 icmptype echo-reply", &v6),
        (true, false)
    );
    assert_eq!(both("proto icmp dst ::/0 icmptype 0", &v6), (false, true));
    // Rule without an address: ICMPv4 names, compared with the v6 type number.
    assert_eq!(both("proto icmp icmptype 129", &v6), (true, false));
    // Ports are not ICMP: a TCP packet never satisfies icmptype.
    let t = tcp("10.0.0.1", 0, "10.0.0.2", 0);
    assert!(!holds("not proto tcp", &t));
}

#[test]
fn match_ignore_skip_and_rule_numbers() {
    let f = file(
        "flow off skip match\n\
         flow a deny ignore proto udp match proto tcp dstport 22 match proto udp\n\
         flow b table 7 match iface eth1 ignore match\n\
         flow c director d match proto udp\n",
    );
    let v = |p: &Packet| decide(f.flows(), p, &Action::Permit).to_string();
    assert_eq!(v(&tcp("1.1.1.1", 1, "2.2.2.2", 22)), "deny a 2");
    assert_eq!(v(&udp("1.1.1.1", 1, "2.2.2.2", 22)), "director:d c 1");
    assert_eq!(
        v(&Packet {
            iface: "eth1".into(),
            ..tcp("1.1.1.1", 1, "2.2.2.2", 80)
        }),
        "table:7 b 1"
    );
    assert_eq!(v(&tcp("1.1.1.1", 1, "2.2.2.2", 80)), "permit - -");
}
