//! `table T` verdicts through real kernels: flowgate on af_packet vdevs over veth pairs, with
//! gateways and clients in namespaces of their own.
//!
//! - The seed's "direct outgoing traffic to a gateway": replies of a service on eth1 follow
//!   the main table to eth0's gateway unless an outflow re-routes them with table 200.
//! - A `flow ... table 100` forwarding between two namespaces: MACs, TTL - 1, checksums on the
//!   wire; TTL 1 answered with ICMP time exceeded by the appliance's kernel.
//!
//! Needs root (namespaces); traffic is bounded in count and time; the lab is removed when the
//! test ends.

mod common;

use std::time::Duration;

use common::{
    nic_for_flowgate, skip_without_cpus, skip_without_lab, sysctl, tag, veth, wait_until, Flowgate,
    Netns, TempDir,
};
use flowgate_dataplane::build::{checksum, ones_sum};

fn mac_of(ns: &Netns, ifname: &str) -> [u8; 6] {
    let out = ns.must(&["cat", &format!("/sys/class/net/{ifname}/address")]);
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let bytes: Vec<u8> = text
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).expect("mac hex"))
        .collect();
    bytes.try_into().expect("6 bytes")
}

fn drops(s: &serde_json::Value, why: &str) -> u64 {
    s["drops"][why].as_u64().unwrap_or(0)
}

fn table(s: &serde_json::Value, id: u64) -> (u64, u64) {
    let t = s["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .find(|t| t["id"] == id)
        .expect("table in stats");
    (
        t["lookups"].as_u64().unwrap_or(0),
        t["fallbacks"].as_u64().unwrap_or(0),
    )
}

/// Packets counted by the nft counter of `table netdev count` in `ns`.
fn nft_count(ns: &Netns) -> u64 {
    let out = ns.must(&["nft", "list", "table", "netdev", "count"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let after = text
        .split("counter packets ")
        .nth(1)
        .expect("a counter in the table");
    after
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("packet count")
}

/// Count the service's answers (from 192.168.161.10 port 80) arriving at `ifname` in `ns`.
fn count_answers(ns: &Netns, ifname: &str) {
    let nft = format!(
        "table netdev count {{ chain c {{ type filter hook ingress device \"{ifname}\" priority 0; ip saddr 192.168.161.10 tcp sport 80 counter; }}; }}"
    );
    ns.must(&["nft", &nft]);
}

const TCP_CLIENT: &str = r#"
import socket
s = socket.create_connection(('192.168.161.10', 80), timeout=3)
s.sendall(b'hi\n'); assert s.recv(16) == b'ok\n'
"#;

/// The seed: eth0 192.168.0.1/24 (main default via 192.168.0.254, gw0), eth1
/// 192.168.161.10/24 (table 200 default via 192.168.161.1, gw1); a client 10.1.1.1 behind
/// gw1 connects to a TCP service on 192.168.161.10:80.
#[test]
fn seed_outflow_table_200_returns_replies_through_the_gateway_they_came_from() {
    if skip_without_lab() {
        return;
    }
    let app = Netns::new("app");
    let gw0 = Netns::new("gw0");
    let gw1 = Netns::new("gw1");
    let cli = Netns::new("cli");
    let t = tag();
    let (nic0, nic1) = (format!("fa0{t}"), format!("fa1{t}"));
    let (g0, g1, gc, c0) = (
        format!("fg0{t}"),
        format!("fg1{t}"),
        format!("fgc{t}"),
        format!("fcc{t}"),
    );
    veth(&app, &nic0, &gw0, &g0);
    veth(&app, &nic1, &gw1, &g1);
    veth(&gw1, &gc, &cli, &c0);
    nic_for_flowgate(&app, &nic0);
    nic_for_flowgate(&app, &nic1);
    for kv in [
        "net.ipv4.conf.all.rp_filter=0",
        "net.ipv4.conf.default.rp_filter=0",
    ] {
        sysctl(&app, kv);
    }
    gw0.must(&["ip", "addr", "add", "192.168.0.254/24", "dev", &g0]);
    gw1.must(&["ip", "addr", "add", "192.168.161.1/24", "dev", &g1]);
    gw1.must(&["ip", "addr", "add", "10.1.1.254/24", "dev", &gc]);
    sysctl(&gw1, "net.ipv4.ip_forward=1");
    cli.must(&["ip", "addr", "add", "10.1.1.1/24", "dev", &c0]);
    cli.must(&["ip", "route", "add", "default", "via", "10.1.1.254"]);
    // veth leaves checksums partial otherwise (also across a forward)
    for (ns, ifc) in [(&gw0, &g0), (&gw1, &g1), (&gw1, &gc), (&cli, &c0)] {
        ns.must(&["ethtool", "-K", ifc, "tx", "off"]);
    }
    count_answers(&gw0, &g0);
    count_answers(&gw1, &g1);

    let dir = TempDir::new("routing");
    let service = dir.0.join("service.py");
    std::fs::write(
        &service,
        r#"
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', 80)); s.listen(16)
while True:
    c, _ = s.accept(); c.settimeout(3)
    try:
        c.recv(64); c.sendall(b'ok\n')
    except OSError:
        pass
    c.close()
"#,
    )
    .expect("write service");
    let _service = app.spawn(&["python3", service.to_str().expect("utf-8 path")]);
    assert!(
        wait_until(Duration::from_secs(10), || {
            let out = app.run(&["ss", "-ltnH"]);
            String::from_utf8_lossy(&out.stdout).contains(":80 ")
        }),
        "service listening"
    );

    let config = |name: &str| {
        format!(
            r#"flows = "{name}.flows"
[dataplane]
workers = [1]
eal = ["--no-huge", "-m", "512", "--no-pci", "--no-shconf"]
[[port]]
name = "eth0"
device = "net_af_packet0,iface={nic0}"
addresses = ["192.168.0.1/24"]
[[port]]
name = "eth1"
device = "net_af_packet1,iface={nic1}"
addresses = ["192.168.161.10/24"]
[routes]
default = "192.168.0.254"
[[table]]
id = 200
routes = {{ default = "192.168.161.1" }}
"#
        )
    };
    let ready = "default via 192.168.0.254 dev eth0";
    let connect = || cli.run(&["python3", "-c", TCP_CLIENT]).status.success();

    // 1. No outflow: the SYN reaches the service through gw1 and eth1, the kernel answers
    //    along its main table, out eth0 to gw0, and the client never hears back.
    let flows = "flow all permit\n    match\n";
    let fg = Flowgate::start(&app, &dir.0, "plain", &config("plain"), flows, ready);
    let (at_gw0, at_gw1) = (nft_count(&gw0), nft_count(&gw1));
    assert!(!connect(), "without the outflow the connection fails");
    let (s, _) = fg.stop();
    assert!(nft_count(&gw0) > at_gw0, "answers went to gw0: {s:#}");
    assert_eq!(nft_count(&gw1), at_gw1, "no answer reached gw1");
    assert_eq!(table(&s, 200), (0, 0));

    // 2. The seed's outflow: the answers are re-routed with table 200, to gw1.
    let flows = "flow all permit\n    match\n\
                 outflow return-eth1 table 200\n    match proto tcp src 192.168.161.0/24 srcport 80\n";
    let fg = Flowgate::start(&app, &dir.0, "seed", &config("seed"), flows, ready);
    let (at_gw0, at_gw1) = (nft_count(&gw0), nft_count(&gw1));
    assert!(connect(), "with the outflow the connection succeeds");
    assert!(connect(), "and again (the next hop is known)");
    let (s, _) = fg.stop();
    assert_eq!(
        nft_count(&gw0),
        at_gw0,
        "nothing for the client went to gw0"
    );
    assert!(nft_count(&gw1) >= at_gw1 + 4, "answers reached gw1");
    assert!(
        s["outflow_verdicts"]["table"].as_u64().unwrap_or(0) >= 4,
        "{s:#}"
    );
    let (lookups, fallbacks) = table(&s, 200);
    assert!(lookups >= 4, "{s:#}");
    assert_eq!(fallbacks, 0, "table 200 has a default route");
    assert_eq!(drops(&s, "no-route"), 0);
    assert_eq!(drops(&s, "neighbour-unresolved"), 0);

    // 3. The seed's alternative, `match iface eth1`: in an outflow, iface is the port the
    //    routing chose, and the kernel's main table chose eth0 for these answers, so the
    //    outflow does not match them: they still go to gw0 and the connection fails. (What
    //    the kernel sends out eth1 itself, IPv6 router solicitations and MLD, matches, but
    //    link-scoped destinations stay on their link.)
    let flows = "flow all permit\n    match\n\
                 outflow return-eth1 table 200\n    match iface eth1\n";
    let fg = Flowgate::start(&app, &dir.0, "iface", &config("iface"), flows, ready);
    let (at_gw0, at_gw1) = (nft_count(&gw0), nft_count(&gw1));
    assert!(
        !connect(),
        "iface eth1 does not catch answers routed to eth0"
    );
    let (s, _) = fg.stop();
    assert!(nft_count(&gw0) > at_gw0, "answers went to gw0");
    assert_eq!(nft_count(&gw1), at_gw1);
    assert_eq!(table(&s, 200), (0, 0), "no answer was re-routed: {s:#}");
    assert_eq!(drops(&s, "no-route"), 0);
}

/// Sniff the first frame for 10.2.0.5 UDP 9999 arriving at an interface; write its hex.
const SNIFF: &str = r#"
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3)); s.bind((sys.argv[1], 0))
s.settimeout(20)
open(sys.argv[2] + '.ready', 'w').close()
while True:
    f, a = s.recvfrom(65535)
    if a[2] == socket.PACKET_OUTGOING:
        continue
    if len(f) >= 42 and f[12:14] == b'\x08\x00' and f[23] == 17 and f[30:34] == bytes([10, 2, 0, 5]) and f[36:38] == (9999).to_bytes(2, 'big'):
        open(sys.argv[2], 'w').write(f.hex()); break
"#;

const UDP_ECHO: &str = r#"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('10.2.0.5', 9999))
while True:
    d, a = s.recvfrom(2048); s.sendto(d, a)
"#;

const UNDELIVERABLE: &str = r#"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(6):
    s.sendto(b'nobody', ('10.9.0.1', 9))
s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s6.sendto(b'nowhere', ('2001:db8:99::1', 9))
"#;

const UDP_CLIENT: &str = r#"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
for i in range(3):
    s.sendto(b'routed payload', ('10.2.0.5', 9999))
    try:
        assert s.recv(64) == b'routed payload'; break
    except socket.timeout:
        pass
else:
    raise SystemExit(1)
"#;

/// `flow fwd table 100 match dst 10.2.0.0/16` between two namespaces A (10.1.0.2, behind
/// eth0) and B (10.2.0.5, behind 192.168.200.2 on eth1): the frame B receives has B's MAC,
/// eth1's MAC, TTL - 1 and valid checksums; answers come back by `flow back table 100`,
/// which falls back to main (connected 10.1.0.0/24). The same over IPv6 (ping). TTL 1: ICMP
/// time exceeded from the appliance's kernel.
#[test]
fn flow_table_forwards_with_macs_ttl_and_checksums_and_expired_ttl_gets_time_exceeded() {
    if skip_without_lab() {
        return;
    }
    forward_lab("workers = [1]", "", "", "");
}

/// The same with two workers, each polling one RX queue of each port. af_packet fans frames
/// out over its queues by flow hash, so the ARP reply for a next hop may land on the worker
/// not holding the packets, which then takes the MAC from the shared neighbour table
/// (`neighbours.from_shared` > 0 in some runs, not all: which worker gets it is the hash's).
#[test]
fn flow_table_with_two_workers_resolves_next_hops_learned_by_the_other() {
    if skip_without_lab() {
        return;
    }
    if skip_without_cpus(2) {
        return;
    }
    // af_packet: one TX queue per worker (qpairs); it fans received frames out over its
    // queues by flow hash, so both are polled (one by each worker)
    forward_lab(
        "workers = [0, 1]",
        r#", "-l", "0""#,
        ",qpairs=2",
        "rx_queues = 2",
    );
}

fn forward_lab(workers: &str, eal_extra: &str, qpairs: &str, rx_queues: &str) {
    let app = Netns::new("app");
    let a = Netns::new("a");
    let b = Netns::new("b");
    let t = tag();
    let (nic0, nic1, a0, b0) = (
        format!("fa0{t}"),
        format!("fa1{t}"),
        format!("fxa{t}"),
        format!("fxb{t}"),
    );
    veth(&app, &nic0, &a, &a0);
    veth(&app, &nic1, &b, &b0);
    nic_for_flowgate(&app, &nic0);
    nic_for_flowgate(&app, &nic1);
    // the kernel answers time exceeded for packets it would forward
    sysctl(&app, "net.ipv4.ip_forward=1");
    a.must(&["ip", "addr", "add", "10.1.0.2/24", "dev", &a0]);
    a.must(&["ip", "route", "add", "10.2.0.0/16", "via", "10.1.0.1"]);
    b.must(&["ip", "addr", "add", "192.168.200.2/24", "dev", &b0]);
    b.must(&["ip", "addr", "add", "10.2.0.5/32", "dev", "lo"]);
    b.must(&["ip", "route", "add", "10.1.0.0/24", "via", "192.168.200.1"]);
    // IPv6 the same way: A 2001:db8:1::2 behind eth0, B 2001:db8:2::5 behind
    // 2001:db8:200::2 on eth1
    a.must(&[
        "ip",
        "-6",
        "addr",
        "add",
        "2001:db8:1::2/64",
        "dev",
        &a0,
        "nodad",
    ]);
    a.must(&[
        "ip",
        "-6",
        "route",
        "add",
        "2001:db8:2::/48",
        "via",
        "2001:db8:1::1",
    ]);
    b.must(&[
        "ip",
        "-6",
        "addr",
        "add",
        "2001:db8:200::2/64",
        "dev",
        &b0,
        "nodad",
    ]);
    b.must(&["ip", "-6", "addr", "add", "2001:db8:2::5/128", "dev", "lo"]);
    b.must(&[
        "ip",
        "-6",
        "route",
        "add",
        "2001:db8:1::/64",
        "via",
        "2001:db8:200::1",
    ]);
    // destinations the appliance cannot deliver: a gateway nobody answers for, no route
    a.must(&["ip", "route", "add", "10.9.0.0/16", "via", "10.1.0.1"]);
    a.must(&[
        "ip",
        "-6",
        "route",
        "add",
        "2001:db8:99::/48",
        "via",
        "2001:db8:1::1",
    ]);
    for (ns, ifc) in [(&a, &a0), (&b, &b0)] {
        ns.must(&["ethtool", "-K", ifc, "tx", "off"]);
    }
    let dir = TempDir::new("routing");
    let config = format!(
        r#"flows = "fwd.flows"
[dataplane]
{workers}
eal = ["--no-huge", "-m", "512", "--no-pci", "--no-shconf"{eal_extra}]
[[port]]
name = "eth0"
device = "net_af_packet0,iface={nic0}{qpairs}"
{rx_queues}
addresses = ["10.1.0.1/24", "2001:db8:1::1/64"]
[[port]]
name = "eth1"
device = "net_af_packet1,iface={nic1}{qpairs}"
{rx_queues}
addresses = ["192.168.200.1/24", "2001:db8:200::1/64"]
[routes]
default = "192.168.200.2"
[[table]]
id = 100
routes = {{ "10.2.0.0/16" = "192.168.200.2", "2001:db8:2::/48" = "2001:db8:200::2", "10.9.0.0/16" = "192.168.200.77" }}
"#
    );
    let flows = "flow fwd table 100\n    match dst 10.2.0.0/16\n\
                 flow back table 100\n    match dst 10.1.0.0/24 src 10.2.0.0/16\n\
                 flow me table 100\n    match dst 10.1.0.1\n\
                 flow fwd6 table 100\n    match dst 2001:db8:2::/48\n\
                 flow back6 table 100\n    match dst 2001:db8:1::/64 src 2001:db8:2::/48\n\
                 flow dead table 100\n    match dst 10.9.0.0/16\n\
                 flow nowhere table 100\n    match dst 2001:db8:99::/48\n";
    let fg = Flowgate::start(
        &app,
        &dir.0,
        "fwd",
        &config,
        flows,
        "default via 192.168.200.2 dev eth1",
    );
    // first, so that its next hop has failed (3 requests 1 s apart) by the end: 6 packets
    // for 192.168.200.77, nobody there: 4 held then dropped unresolved, 2 pushed out of the
    // hold queue; 1 packet with no route at all
    assert!(a.run(&["python3", "-c", UNDELIVERABLE]).status.success());
    let sent_dead = std::time::Instant::now();
    let _echo = b.spawn(&["python3", "-c", UDP_ECHO]);
    let captured = dir.0.join("captured.hex");
    let _sniff = b.spawn(&[
        "python3",
        "-c",
        SNIFF,
        &b0,
        captured.to_str().expect("utf-8 path"),
    ]);
    assert!(
        wait_until(Duration::from_secs(10), || {
            let ready = captured.with_extension("hex.ready").exists();
            let out = b.run(&["ss", "-lunH"]);
            ready && String::from_utf8_lossy(&out.stdout).contains("10.2.0.5:9999")
        }),
        "sniffer and echo ready"
    );
    if !a.run(&["python3", "-c", UDP_CLIENT]).status.success() {
        let (s, _) = fg.stop();
        panic!("UDP through the appliance and back failed: {s:#}");
    }
    assert!(
        wait_until(Duration::from_secs(5), || captured.exists()),
        "frame captured at B"
    );
    let hex = std::fs::read_to_string(&captured).expect("capture");
    let f: Vec<u8> = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex"))
        .collect();
    assert_eq!(&f[0..6], &mac_of(&b, &b0), "destination: B's MAC");
    assert_eq!(&f[6..12], &mac_of(&app, &nic1), "source: eth1's MAC");
    assert_eq!(f[14 + 8], 63, "TTL 64 - 1");
    assert_eq!(checksum(&f[14..34]), 0, "IPv4 header checksum valid");
    let udp_len = usize::from(u16::from_be_bytes([f[38], f[39]]));
    let udp = &f[34..34 + udp_len];
    let mut sum = ones_sum(0, &f[26..34]);
    sum = ones_sum(sum, &[0, 17]);
    sum = ones_sum(sum, &(udp_len as u16).to_be_bytes());
    sum = ones_sum(sum, udp);
    assert_eq!(!(sum as u16), 0, "UDP checksum valid");
    assert_eq!(&udp[8..], b"routed payload");

    // IPv6: routed both ways (hop limit, neighbour solicitation / advertisement)
    let out = a.run(&[
        "ping",
        "-6",
        "-c",
        "2",
        "-i",
        "0.3",
        "-W",
        "3",
        "2001:db8:2::5",
    ]);
    assert!(
        out.status.success(),
        "ping over IPv6 through table 100: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    // `table` for one of the appliance's own addresses: delivered to its kernel (as Linux's
    // `lookup local` comes before any policy table)
    assert!(
        a.run(&["ping", "-c", "1", "-W", "3", "10.1.0.1"])
            .status
            .success(),
        "table verdict for the appliance's own address"
    );

    // TTL 1: routed, expired, handed to the kernel through eth0's TAP: time exceeded
    let out = a.run(&["ping", "-c", "1", "-t", "1", "-W", "3", "10.2.0.5"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains("Time to live exceeded"),
        "ICMP time exceeded from the appliance: {text}"
    );
    assert!(text.contains("From 10.1.0.1"), "{text}");

    let failed_by = Duration::from_millis(4500);
    std::thread::sleep(failed_by.saturating_sub(sent_dead.elapsed()));
    let (s, _) = fg.stop();
    assert_eq!(drops(&s, "neighbour-hold-overflow"), 2, "{s:#}");
    assert_eq!(drops(&s, "neighbour-unresolved"), 4, "{s:#}");
    assert_eq!(drops(&s, "no-route"), 1, "{s:#}");
    assert!(s["verdicts"]["table"].as_u64().unwrap_or(0) >= 3, "{s:#}");
    let (lookups, fallbacks) = table(&s, 100);
    assert!(lookups >= 3, "{s:#}");
    assert!(
        fallbacks >= 1,
        "answers routed by main after table 100: {s:#}"
    );
    assert_eq!(drops(&s, "ttl-expired"), 0, "the port has a TAP");
    assert!(s["ports"][0]["to_kernel_packets"].as_u64().unwrap_or(0) >= 1);
    // the next hops were learned: B's 192.168.200.2 / 2001:db8:200::2 from the answers to
    // our requests, A's 10.1.0.2 / 2001:db8:1::2 from its own requests for the appliance's
    // addresses (so perhaps never asked for); with two workers, maybe by the worker not
    // holding the packets (then `from_shared` counts)
    let n = &s["neighbours"];
    let get = |k: &str| n[k].as_u64().unwrap_or(0);
    assert!(get("solicits") >= 2, "{n:#}");
    assert!(get("learned") >= 4, "{n:#}");
    eprintln!("neighbours: {n}");
}
