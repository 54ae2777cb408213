//! `examples/seed.flows` classifies packets as the ALOHA seed page describes.

use flowgate_config::flows::{decide, load, parse_packet_line, Action, Loaded, Names};

const SEED: &str = include_str!("../../examples/seed.flows");

fn seed() -> Loaded {
    match load("examples/seed.flows", SEED, None) {
        Ok(l) => l,
        Err(r) => panic!("{}", r.render(false)),
    }
}

/// The verdict line of a packet line through the flows (or outflows) of the seed.
fn verdict(line: &str, outflows: bool) -> String {
    let l = seed();
    let p = match parse_packet_line(line) {
        Ok(p) => p,
        Err(e) => panic!("{line}: {e}"),
    };
    let list: Vec<_> = if outflows {
        l.file.outflows().collect()
    } else {
        l.file.flows().collect()
    };
    decide(list, &p, &Action::Permit).to_string()
}

#[test]
fn loads_without_warnings() {
    let l = seed();
    assert_eq!(l.warnings, [], "{}", l.render_warnings(false));
    let names: Vec<_> = l.file.items.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "ssh",
            "dns",
            "ping",
            "mail",
            "alltherest",
            "return-eth1",
            "return-eth1-iface"
        ]
    );
}

struct Appliance;

impl Names for Appliance {
    fn has_port(&self, name: &str) -> bool {
        ["eth0", "eth1"].contains(&name)
    }
    fn has_director(&self, name: &str) -> bool {
        name == "maildirect"
    }
    fn has_table(&self, id: u32) -> bool {
        id == 200
    }
}

#[test]
fn loads_against_a_matching_appliance() {
    assert!(load("seed", SEED, Some(&Appliance)).is_ok());
}

#[test]
fn ssh_only_from_the_local_network() {
    let base = "iface=eth0 proto=tcp dst=192.168.0.1 sport=40000 dport=22";
    assert_eq!(
        verdict(&format!("{base} src=192.168.0.5"), false),
        "permit ssh 2"
    );
    assert_eq!(
        verdict(&format!("{base} src=10.0.0.5"), false),
        "deny alltherest 1"
    );
    assert_eq!(
        verdict(
            "iface=eth0 proto=tcp src=192.168.0.5 dst=192.168.0.2 sport=40000 dport=22",
            false
        ),
        "deny alltherest 1"
    );
}

#[test]
fn dns() {
    let base = "iface=eth0 proto=udp src=10.9.9.9 dst=192.168.0.1 sport=5353";
    assert_eq!(verdict(&format!("{base} dport=53"), false), "permit dns 1");
    assert_eq!(
        verdict(&format!("{base} dport=54"), false),
        "deny alltherest 1"
    );
    assert_eq!(
        verdict(
            "iface=eth0 proto=tcp src=10.9.9.9 dst=192.168.0.1 sport=5353 dport=53",
            false
        ),
        "deny alltherest 1"
    );
}

#[test]
fn ping() {
    let to = "iface=eth0 proto=icmp dst=192.168.0.1";
    assert_eq!(
        verdict(&format!("{to} src=8.8.8.8 icmptype=0"), false),
        "permit ping 1"
    );
    assert_eq!(
        verdict(&format!("{to} src=192.168.0.7 icmptype=0"), false),
        "permit ping 1"
    );
    assert_eq!(
        verdict(&format!("{to} src=8.8.8.8 icmptype=8"), false),
        "deny alltherest 1"
    );
    assert_eq!(
        verdict(&format!("{to} src=8.8.8.8 icmptype=3"), false),
        "deny alltherest 1"
    );
    assert_eq!(
        verdict(&format!("{to} src=192.168.0.7 icmptype=8"), false),
        "permit ping 3"
    );
    assert_eq!(
        verdict(&format!("{to} src=192.168.0.7 frag=1"), false),
        "permit ping 3"
    );
    assert_eq!(
        verdict(&format!("{to} src=8.8.8.8 frag=1"), false),
        "deny alltherest 1"
    );
}

#[test]
fn mail_goes_to_the_director() {
    let base = "iface=eth0 proto=tcp src=203.0.113.9 dst=192.168.0.2 sport=50000";
    assert_eq!(
        verdict(&format!("{base} dport=110"), false),
        "director:maildirect mail 1"
    );
    assert_eq!(
        verdict(&format!("{base} dport=143"), false),
        "director:maildirect mail 2"
    );
    assert_eq!(
        verdict(&format!("{base} dport=25"), false),
        "director:maildirect mail 3"
    );
    assert_eq!(
        verdict(&format!("{base} dport=587"), false),
        "deny alltherest 1"
    );
}

#[test]
fn everything_else_is_denied() {
    assert_eq!(
        verdict("iface=eth1 proto=47 src=1.2.3.4 dst=5.6.7.8", false),
        "deny alltherest 1"
    );
    assert_eq!(
        verdict(
            "iface=eth0 proto=tcp src=::1 dst=::2 sport=1 dport=22",
            false
        ),
        "deny alltherest 1"
    );
}

#[test]
fn outflows_route_return_traffic_with_table_200() {
    assert_eq!(
        verdict(
            "iface=eth0 proto=tcp src=192.168.161.10 dst=198.51.100.7 sport=80 dport=41000",
            true
        ),
        "table:200 return-eth1 1"
    );
    assert_eq!(
        verdict(
            "iface=eth1 proto=tcp src=192.168.0.1 dst=198.51.100.7 sport=443 dport=41000",
            true
        ),
        "table:200 return-eth1-iface 1"
    );
    assert_eq!(
        verdict(
            "iface=eth0 proto=tcp src=192.168.161.10 dst=198.51.100.7 sport=443 dport=41000",
            true
        ),
        "permit - -"
    );
    assert_eq!(
        verdict(
            "iface=eth0 proto=udp src=192.168.161.10 dst=198.51.100.7 sport=80 dport=41000",
            true
        ),
        "permit - -"
    );
}
