//! Packet-in, packet-out fixtures for the whole pipeline (Katran's `BpfTester` is the model):
//! an appliance config and a flows file, frames fed to a [`Pipeline`] over `Vec` buffers,
//! and the frames that leave (where, and byte for byte, checksums included) or the drop
//! reasons counted. No EAL, no root: `cargo test` runs them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use flowgate_config::appliance::{parse_with_cpus, MacAddr};
use flowgate_config::flows::parse;

use super::test_support::{facts, ip as ip_};
use super::*;
use crate::build::{checksum, frame, FrameSpec};
use crate::counters::{DropReason, VerdictKind};
use crate::director::tests::{assert_checksums, assert_icmp_checksums, icmp_error, quoted};
use crate::director::DirectorSet;
use crate::handoff::{Owners, Tag};
use crate::wire::{self, Frame as WireFrame, Malformed};

/// The ports' MACs (eth0, eth1, eth2).
const PORT_MAC: [[u8; 6]; 3] = [
    [0x02, 0, 0, 0, 0, 0xa0],
    [0x02, 0, 0, 0, 0, 0xa1],
    [0x02, 0, 0, 0, 0, 0xa2],
];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xc1];
const GW0_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xf0];
const GW1_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xf1];
const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x5e];

/// eth0 is the front (clients, the VIPs 192.168.0.2-4), eth1 the back (servers in 10.0.0.0/24
/// directly connected, table 200's gateway 192.168.161.1), eth2 an inline pair of eth0's
/// style (no kernel, peer eth1) for the `peer` path.
const CONFIG: &str = r#"
flows = "f.flows"
[dataplane]
workers = [WORKERS]
default_flow = "deny"
default_outflow = "permit"
[[port]]
name = "eth0"
device = "net_null0"
addresses = ["192.168.0.1/24", "2001:db8::1/64"]
[[port]]
name = "eth1"
device = "net_null1"
addresses = ["10.0.0.1/24", "192.168.161.10/24", "2001:db8:1::1/64"]
[[port]]
name = "eth2"
device = "net_null2"
kernel = false
peer = "eth1"
[routes]
default = "192.168.0.254"
"::/0" = "2001:db8::fe"
[[table]]
id = 200
routes = { default = "192.168.161.1" }
[[table]]
id = 300
routes = { default = "192.168.0.254" }
[[director]]
name = "mail"
scheduler = "rr"
mode = "nat"
virtual = { address = "192.168.0.2" }
servers = [ { name = "m1", address = "10.0.0.11" }, { name = "m2", address = "10.0.0.12" } ]
[[director]]
name = "web"
scheduler = "rr"
mode = "gateway"
virtual = { address = "192.168.0.3" }
servers = [ { name = "w1", address = "10.0.0.21" } ]
[[director]]
name = "tun"
scheduler = "rr"
mode = "tunnel"
virtual = { address = "192.168.0.4" }
servers = [ { name = "t1", address = "10.0.0.31" } ]
"#;

const FLOWS: &str = r#"
flow ssh permit
    match iface eth0 proto tcp dstport 22
    match iface eth2 proto tcp dstport 22
flow web-deny deny
    match iface eth0 proto tcp dstport 80
flow mail director mail
    match iface eth0 proto tcp dst 192.168.0.2 dstport 25
flow web director web
    match iface eth0 proto tcp dst 192.168.0.3 dstport 443
flow tun director tun
    match iface eth0 proto tcp dst 192.168.0.4 dstport 443
flow routed table 200
    match iface eth0 dst 172.16.0.0/12
    match iface eth0 dst 2001:db8:9::/48
flow back permit
    match iface eth1
flow icmp permit
    match proto icmp
outflow no-telnet deny
    match iface eth1 proto tcp dstport 23
outflow reroute table 200
    match iface eth0 dst 172.20.0.0/16
outflow back-out table 300
    match iface eth1 dst 172.17.0.0/16
"#;

/// A config, flows and the shared state of one or more workers' pipelines.
struct Lab {
    rules: ArcSwap<RuleSet>,
    directors: SharedDirectors,
    neighbours: SharedNeighbours,
    owners: Option<Owners>,
    counters: Vec<Arc<WorkerCounters>>,
    roles: Vec<PortRole>,
}

impl Lab {
    fn new(workers: usize) -> Lab {
        Self::with(workers, FLOWS)
    }

    fn with(workers: usize, flows: &str) -> Lab {
        Self::configured(workers, flows, CONFIG)
    }

    fn configured(workers: usize, flows: &str, config: &str) -> Lab {
        let list: Vec<String> = (0..workers).map(|w| w.to_string()).collect();
        let text = config.replace("WORKERS", &list.join(", "));
        let app = parse_with_cpus("lab.toml", &text, workers.max(1)).expect("config");
        let file = parse(flows).expect("flows").file;
        let rules = RuleSet::compile(file, &app, 1).expect("compiles");
        let set = DirectorSet::build(&app.directors).expect("directors");
        let owners = Owners::new(workers, &set);
        let roles = app
            .ports
            .iter()
            .enumerate()
            .map(|(i, p)| PortRole {
                kernel: p.kernel,
                peer: p.peer.map(|x| x as u16),
                mac: MacAddr(PORT_MAC[i]),
                mtu: DEFAULT_MTU,
            })
            .collect();
        Lab {
            rules: ArcSwap::from_pointee(rules),
            directors: SharedDirectors::new(set, workers),
            neighbours: SharedNeighbours::default(),
            owners,
            counters: (0..workers)
                .map(|_| Arc::new(WorkerCounters::new(app.ports.len())))
                .collect(),
            roles,
        }
    }

    /// Worker `w`'s pipeline, its clock at `now`.
    fn worker(&self, w: usize, now: Instant) -> Pipeline<'_, VecIo> {
        let mut p = Pipeline::new(
            w,
            self.roles.clone(),
            Arc::clone(&self.counters[w]),
            &self.rules,
            &self.neighbours,
            VecIo::default(),
            now,
        )
        .with_directors(&self.directors, WorkerOptions::default());
        if let Some(o) = &self.owners {
            p = p.with_owners(o);
        }
        p.round(now);
        p
    }

    /// The usual neighbours, resolved: the gateways, the servers, the client.
    fn resolved(self) -> Lab {
        let now = Instant::now();
        for (port, ip, mac) in [
            (0, "192.168.0.254", GW0_MAC),
            (0, "192.168.0.100", CLIENT_MAC),
            (0, "2001:db8::fe", GW0_MAC),
            (1, "192.168.161.1", GW1_MAC),
            (1, "10.0.0.11", SERVER_MAC),
            (1, "10.0.0.12", SERVER_MAC),
            (1, "10.0.0.21", SERVER_MAC),
            (1, "10.0.0.31", SERVER_MAC),
        ] {
            self.neighbours.publish(port, ip_(ip), MacAddr(mac), now);
        }
        self
    }

    fn drops(&self, w: usize, why: DropReason) -> u64 {
        self.counters[w].drops[why.index()].get()
    }

    /// Every drop reason counted by worker `w`, with its count.
    fn all_drops(&self, w: usize) -> Vec<(usize, u64)> {
        self.counters[w]
            .drops
            .iter()
            .enumerate()
            .map(|(i, c)| (i, c.get()))
            .filter(|&(_, n)| n > 0)
            .collect()
    }
}

/// A frame as `FrameSpec` builds it (valid checksums), between these MACs.
fn pkt(
    src: &str,
    dst: &str,
    proto: u8,
    sport: u16,
    dport: u16,
    macs: ([u8; 6], [u8; 6]),
) -> Vec<u8> {
    let mut spec = FrameSpec::new(ip_(src), ip_(dst), proto, sport, dport);
    spec.src_mac = macs.0;
    spec.dst_mac = macs.1;
    spec.payload = 10;
    frame(&spec)
}

/// The same, with a TTL.
fn pkt_ttl(
    src: &str,
    dst: &str,
    proto: u8,
    ports: (u16, u16),
    macs: ([u8; 6], [u8; 6]),
    ttl: u8,
) -> Vec<u8> {
    let mut spec = FrameSpec::new(ip_(src), ip_(dst), proto, ports.0, ports.1);
    spec.src_mac = macs.0;
    spec.dst_mac = macs.1;
    spec.payload = 10;
    spec.ttl = ttl;
    frame(&spec)
}

/// Feeds `frames` to `p` from port `port`; what left.
fn feed(p: &mut Pipeline<'_, VecIo>, port: u16, frames: &[Vec<u8>]) -> Vec<(Out, Vec<u8>)> {
    let mut b = VecFrames::of(frames.iter().map(|f| &f[..]));
    p.ingress(port, &mut b, false);
    p.io().take()
}

/// Feeds `frames` to `p` as the kernel's output on port `port`'s TAP; what left.
fn feed_kernel(p: &mut Pipeline<'_, VecIo>, port: u16, frames: &[Vec<u8>]) -> Vec<(Out, Vec<u8>)> {
    let mut b = VecFrames::of(frames.iter().map(|f| &f[..]));
    p.kernel_egress(port, &mut b);
    p.io().take()
}

const FROM_CLIENT: ([u8; 6], [u8; 6]) = (CLIENT_MAC, PORT_MAC[0]);

/// The simple paths, one table: a frame in on a port, and exactly what leaves (or the drop).
#[test]
fn simple_paths_packet_in_packet_out() {
    struct Case {
        name: &'static str,
        port: u16,
        input: Vec<u8>,
        /// Where it leaves and as what; `None`: dropped for `drop`.
        out: Option<(Out, Vec<u8>)>,
        drop: Option<DropReason>,
    }
    let client = "192.168.0.100";
    let cases = [
        Case {
            name: "permit to the kernel, untouched",
            port: 0,
            input: pkt(client, "192.168.0.1", 6, 40000, 22, FROM_CLIENT),
            out: Some((
                Out::Tap(0),
                pkt(client, "192.168.0.1", 6, 40000, 22, FROM_CLIENT),
            )),
            drop: None,
        },
        Case {
            name: "deny",
            port: 0,
            input: pkt(client, "192.168.0.1", 6, 40000, 80, FROM_CLIENT),
            out: None,
            drop: Some(DropReason::FlowDeny),
        },
        Case {
            name: "the default (deny)",
            port: 0,
            input: pkt(client, "192.168.0.1", 17, 40000, 53, FROM_CLIENT),
            out: None,
            drop: Some(DropReason::FlowDeny),
        },
        Case {
            name: "non-IP to the kernel",
            port: 0,
            input: {
                let mut f = pkt(client, "192.168.0.1", 6, 1, 2, FROM_CLIENT);
                f[12..14].copy_from_slice(&0x88ccu16.to_be_bytes()); // LLDP
                f
            },
            out: Some((Out::Tap(0), {
                let mut f = pkt(client, "192.168.0.1", 6, 1, 2, FROM_CLIENT);
                f[12..14].copy_from_slice(&0x88ccu16.to_be_bytes());
                f
            })),
            drop: None,
        },
        Case {
            name: "permit on an inline port: out its peer, as it is",
            port: 2,
            input: pkt(client, "10.9.9.9", 6, 40000, 22, FROM_CLIENT),
            out: Some((
                Out::Port(1),
                pkt(client, "10.9.9.9", 6, 40000, 22, FROM_CLIENT),
            )),
            drop: None,
        },
        Case {
            name: "inline peer, an outflow denies",
            port: 2,
            input: pkt(client, "10.9.9.9", 6, 40000, 22, FROM_CLIENT),
            out: None,
            drop: None,
        },
        Case {
            name: "table 200: TTL - 1, MACs to the gateway, checksum updated",
            port: 0,
            input: pkt(client, "172.16.1.1", 17, 5000, 53, FROM_CLIENT),
            out: Some((
                Out::Port(1),
                pkt_ttl(
                    client,
                    "172.16.1.1",
                    17,
                    (5000, 53),
                    (PORT_MAC[1], GW1_MAC),
                    63,
                ),
            )),
            drop: None,
        },
        Case {
            name: "IPv6 table 200 falls back to main: hop limit - 1, out eth0 to its gateway",
            port: 0,
            input: pkt("2001:db8::100", "2001:db8:9::1", 17, 5000, 53, FROM_CLIENT),
            out: Some((
                Out::Port(0),
                pkt_ttl(
                    "2001:db8::100",
                    "2001:db8:9::1",
                    17,
                    (5000, 53),
                    (PORT_MAC[0], GW0_MAC),
                    63,
                ),
            )),
            drop: None,
        },
        Case {
            name: "TTL expiry: to the input port's kernel (ICMP time exceeded), untouched",
            port: 0,
            input: pkt_ttl(client, "172.16.1.1", 17, (5000, 53), FROM_CLIENT, 1),
            out: Some((
                Out::Tap(0),
                pkt_ttl(client, "172.16.1.1", 17, (5000, 53), FROM_CLIENT, 1),
            )),
            drop: None,
        },
        Case {
            name: "from a server's side: permitted to the kernel",
            port: 1,
            input: pkt(
                "10.0.0.50",
                "10.0.0.1",
                6,
                40000,
                22,
                (SERVER_MAC, PORT_MAC[1]),
            ),
            out: Some((
                Out::Tap(1),
                pkt(
                    "10.0.0.50",
                    "10.0.0.1",
                    6,
                    40000,
                    22,
                    (SERVER_MAC, PORT_MAC[1]),
                ),
            )),
            drop: None,
        },
    ];
    for (k, case) in cases.into_iter().enumerate() {
        // the one case meant for the outflows gets a flows file whose outflow denies it
        let lab = if case.name.starts_with("inline peer, an outflow") {
            Lab::with(
                1,
                &format!("{FLOWS}\noutflow inline-deny deny\n    match iface eth1 dst 10.9.9.9\n"),
            )
        } else {
            Lab::new(1)
        }
        .resolved();
        let mut w = lab.worker(0, Instant::now());
        let got = feed(&mut w, case.port, &[case.input]);
        match case.out {
            Some(want) => {
                assert_eq!(got, vec![want], "case {k}: {}", case.name);
                if let WireFrame::Ip(x) = wire::parse(&got[0].1) {
                    if x.src.is_ipv4() {
                        assert_checksums(&got[0].1);
                    }
                }
                assert_eq!(lab.all_drops(0), vec![], "case {k}: {}", case.name);
            }
            None => {
                assert_eq!(got, vec![], "case {k}: {}", case.name);
                let why = case.drop.unwrap_or(DropReason::OutflowDeny);
                assert_eq!(
                    lab.all_drops(0),
                    vec![(why.index(), 1)],
                    "case {k}: {}",
                    case.name
                );
            }
        }
    }
}

/// Every malformed-frame reason is counted as itself, and nothing leaves; from the kernel,
/// what cannot be read is `kernel-malformed`.
#[test]
fn every_malformed_frame_reason() {
    let good = pkt("192.168.0.100", "192.168.0.1", 6, 40000, 22, FROM_CLIENT);
    let v6 = pkt("2001:db8::100", "2001:db8::1", 6, 40000, 22, FROM_CLIENT);
    let mut cases: Vec<(Malformed, Vec<u8>)> = vec![
        (Malformed::TruncatedEthernet, good[..10].to_vec()),
        (Malformed::TooManyVlanTags, {
            let mut f = good[..12].to_vec();
            for _ in 0..3 {
                f.extend_from_slice(&[0x81, 0x00, 0x00, 0x01]);
            }
            f.extend_from_slice(&good[12..]);
            f
        }),
        (Malformed::BadIpv4Header, {
            let mut f = good.clone();
            f[14] = 0x44; // IHL 4
            f
        }),
        (Malformed::BadIpv6Header, {
            let mut f = v6.clone();
            f[18..20].copy_from_slice(&9000u16.to_be_bytes()); // payload past the frame
            f
        }),
        (Malformed::TruncatedL4, {
            // an IPv4 packet whose length ends 10 bytes into its TCP header
            let mut f = good[..14 + 20 + 10].to_vec();
            f[16..18].copy_from_slice(&30u16.to_be_bytes());
            f[24..26].fill(0);
            let c = checksum(&f[14..34]);
            f[24..26].copy_from_slice(&c.to_be_bytes());
            f
        }),
    ];
    // an IPv6 chain of 9 extension headers (hop-by-hop first, then destination options)
    let mut chain = v6[..14 + 40].to_vec();
    chain[14 + 6] = 0; // next: hop-by-hop
    let l4 = v6[14 + 40..].to_vec();
    for k in 0..9 {
        let next = if k == 8 { 6 } else { 60 };
        chain.extend_from_slice(&[next, 0, 0, 0, 0, 0, 0, 0]);
    }
    chain.extend_from_slice(&l4);
    let payload = (chain.len() - 14 - 40) as u16;
    chain[14 + 4..14 + 6].copy_from_slice(&payload.to_be_bytes());
    cases.push((Malformed::BadIpv6Extension, chain));
    let reasons: Vec<Malformed> = cases.iter().map(|c| c.0).collect();
    for m in Malformed::ALL {
        assert!(reasons.contains(&m), "no fixture for {}", m.name());
    }
    for (why, f) in cases {
        let lab = Lab::new(1).resolved();
        let mut w = lab.worker(0, Instant::now());
        assert_eq!(
            feed(&mut w, 0, std::slice::from_ref(&f)),
            vec![],
            "{}",
            why.name()
        );
        assert_eq!(
            lab.all_drops(0),
            vec![(DropReason::Malformed(why).index(), 1)],
            "{}",
            why.name()
        );
        assert_eq!(feed_kernel(&mut w, 0, &[f]), vec![], "{}", why.name());
        assert_eq!(
            lab.drops(0, DropReason::KernelMalformed),
            1,
            "{}",
            why.name()
        );
    }
}

/// The kernel's own packets: through the outflows (their TTL is the kernel's business); an
/// outflow `table 200` re-routes one out eth1 to table 200's gateway, TTL kept; one denied.
#[test]
fn kernel_output_through_the_outflows_and_a_reroute() {
    let lab = Lab::new(1).resolved();
    let mut w = lab.worker(0, Instant::now());
    let from_tap = (PORT_MAC[0], GW0_MAC);
    let plain = pkt("192.168.0.1", "8.8.8.8", 17, 5000, 53, from_tap);
    let rerouted = pkt("192.168.0.1", "172.20.0.5", 17, 5000, 53, from_tap);
    let out = feed_kernel(&mut w, 0, &[plain.clone(), rerouted]);
    assert_eq!(
        out,
        vec![
            (Out::Port(0), plain),
            (
                Out::Port(1),
                pkt(
                    "192.168.0.1",
                    "172.20.0.5",
                    17,
                    5000,
                    53,
                    (PORT_MAC[1], GW1_MAC)
                )
            ),
        ]
    );
    let telnet = pkt(
        "10.0.0.1",
        "10.0.0.50",
        6,
        5000,
        23,
        (PORT_MAC[1], SERVER_MAC),
    );
    assert_eq!(feed_kernel(&mut w, 1, &[telnet]), vec![]);
    assert_eq!(lab.all_drops(0), vec![(DropReason::OutflowDeny.index(), 1)]);
}

/// A routed transit packet that an outflow re-routes is routed twice but loses one TTL.
#[test]
fn an_outflow_reroute_of_a_routed_packet_takes_the_ttl_once() {
    let lab = Lab::new(1).resolved();
    let mut w = lab.worker(0, Instant::now());
    let input = pkt_ttl(
        "192.168.0.100",
        "172.17.0.9",
        17,
        (5000, 53),
        FROM_CLIENT,
        30,
    );
    let out = feed(&mut w, 0, &[input]);
    let want = pkt_ttl(
        "192.168.0.100",
        "172.17.0.9",
        17,
        (5000, 53),
        (PORT_MAC[0], GW0_MAC),
        29,
    );
    assert_eq!(out, vec![(Out::Port(0), want)]);
}

/// An unresolved next hop: the packet is held while an ARP request goes out; the reply
/// (which still goes to the kernel) releases it with the learned MAC. Unanswered, the held
/// packets are dropped as `neighbour-unresolved` after the retries.
#[test]
fn unresolved_next_hop_held_then_released() {
    let lab = Lab::new(1);
    let t0 = Instant::now();
    let mut w = lab.worker(0, t0);
    let input = pkt("192.168.0.100", "172.16.1.1", 17, 5000, 53, FROM_CLIENT);
    let out = feed(&mut w, 0, std::slice::from_ref(&input));
    assert_eq!(out.len(), 1, "{out:?}");
    let (to, req) = &out[0];
    assert_eq!(*to, Out::Port(1));
    let arp = neighbour_in(req, 14).expect("an ARP request");
    assert_eq!(arp.ip, ip_("192.168.161.10"), "from eth1's address");
    assert_eq!(arp.asked, Some(ip_("192.168.161.1")));
    assert_eq!(arp.mac, MacAddr(PORT_MAC[1]));
    assert_eq!(lab.counters[0].neighbours.solicits.get(), 1);
    // the gateway answers
    let reply = crate::route::Arp::reply_to(
        &crate::route::Arp::parse_frame(req).expect("arp"),
        MacAddr(GW1_MAC),
    )
    .frame()
    .to_vec();
    let out = feed(&mut w, 1, std::slice::from_ref(&reply));
    let want = pkt_ttl(
        "192.168.0.100",
        "172.16.1.1",
        17,
        (5000, 53),
        (PORT_MAC[1], GW1_MAC),
        63,
    );
    assert_eq!(out, vec![(Out::Port(1), want), (Out::Tap(1), reply)]);
    assert_eq!(lab.counters[0].neighbours.learned.get(), 1);
    assert!(
        lab.neighbours.get(1, ip_("192.168.161.1"), t0).is_some(),
        "shared"
    );

    // nobody answers for another next hop: retries, then the held packet is dropped
    let lab = Lab::new(1);
    let mut w = lab.worker(0, t0);
    feed(&mut w, 0, &[input]);
    w.io().take();
    let mut t = t0;
    for _ in 0..100 {
        t += Duration::from_millis(100);
        w.round(t);
    }
    assert_eq!(lab.drops(0, DropReason::NeighbourUnresolved), 1);
    let retries = w.io().take();
    assert!(!retries.is_empty() && retries.iter().all(|(o, _)| *o == Out::Port(1)));
}

/// NAT: a client's SYN to the VIP goes to a server (round robin: one each), destination
/// rewritten, TTL - 1, MACs for the server; the server's answer comes back from the VIP.
#[test]
fn nat_forward_and_reply() {
    let lab = Lab::new(1).resolved();
    let mut w = lab.worker(0, Instant::now());
    let a = pkt("192.168.0.100", "192.168.0.2", 6, 40000, 25, FROM_CLIENT);
    let b = pkt("192.168.0.101", "192.168.0.2", 6, 40001, 25, FROM_CLIENT);
    let out = feed(&mut w, 0, &[a, b]);
    assert_eq!(out.len(), 2, "{out:?}");
    let mut servers = Vec::new();
    for ((to, f), (client, sport)) in out
        .iter()
        .zip([("192.168.0.100", 40000), ("192.168.0.101", 40001)])
    {
        assert_eq!(*to, Out::Port(1));
        let server = facts(f).dst.to_string();
        let want = pkt_ttl(
            client,
            &server,
            6,
            (sport, 25),
            (PORT_MAC[1], SERVER_MAC),
            63,
        );
        assert_eq!(f, &want, "to {server}");
        servers.push(server);
    }
    servers.sort();
    assert_eq!(servers, ["10.0.0.11", "10.0.0.12"]);
    // the answer of the first connection's server, back to the client from the VIP
    let server = facts(&out[0].1).dst.to_string();
    let answer = pkt(
        &server,
        "192.168.0.100",
        6,
        25,
        40000,
        (SERVER_MAC, PORT_MAC[1]),
    );
    let back = feed(&mut w, 1, &[answer]);
    let want = pkt_ttl(
        "192.168.0.2",
        "192.168.0.100",
        6,
        (25, 40000),
        (PORT_MAC[0], CLIENT_MAC),
        63,
    );
    assert_eq!(back, vec![(Out::Port(0), want)]);
    // a server's packet of no connection is no reply: the flows decide (eth1 permitted)
    let other = pkt(
        &server,
        "192.168.0.100",
        6,
        25,
        41000,
        (SERVER_MAC, PORT_MAC[1]),
    );
    assert_eq!(
        feed(&mut w, 1, std::slice::from_ref(&other)),
        vec![(Out::Tap(1), other)]
    );
    assert_eq!(lab.all_drops(0), vec![]);
}

/// Gateway mode: the packet is unchanged but for the TTL and the MACs (to the server).
#[test]
fn gateway_director() {
    let lab = Lab::new(1).resolved();
    let mut w = lab.worker(0, Instant::now());
    let input = pkt("192.168.0.100", "192.168.0.3", 6, 40000, 443, FROM_CLIENT);
    let want = pkt_ttl(
        "192.168.0.100",
        "192.168.0.3",
        6,
        (40000, 443),
        (PORT_MAC[1], SERVER_MAC),
        63,
    );
    assert_eq!(feed(&mut w, 0, &[input]), vec![(Out::Port(1), want)]);
}

/// Tunnel mode: an outer IPv4 header from eth1's address to the server, protocol 4, the
/// inner packet with its TTL taken, MACs to the server.
#[test]
fn tunnel_director() {
    let lab = Lab::new(1).resolved();
    let mut w = lab.worker(0, Instant::now());
    let input = pkt("192.168.0.100", "192.168.0.4", 6, 40000, 443, FROM_CLIENT);
    let inner = pkt_ttl(
        "192.168.0.100",
        "192.168.0.4",
        6,
        (40000, 443),
        FROM_CLIENT,
        63,
    );
    let out = feed(&mut w, 0, &[input]);
    assert_eq!(out.len(), 1, "{out:?}");
    let (to, f) = &out[0];
    assert_eq!(*to, Out::Port(1));
    let mut want = Vec::new();
    want.extend_from_slice(&SERVER_MAC);
    want.extend_from_slice(&PORT_MAC[1]);
    want.extend_from_slice(&[0x08, 0x00]);
    let mut outer = [0u8; 20];
    outer[0] = 0x45;
    outer[1] = inner[15]; // the inner TOS
    let total = (20 + inner.len() - 14) as u16;
    outer[2..4].copy_from_slice(&total.to_be_bytes());
    outer[8] = 64;
    outer[9] = 4;
    outer[12..16].copy_from_slice(&[10, 0, 0, 1]);
    outer[16..20].copy_from_slice(&[10, 0, 0, 31]);
    // the rest of the outer header (id, DF) as the director writes it; its checksum verifies
    outer[4..8].copy_from_slice(&f[18..22]);
    let c = checksum(&outer);
    outer[10..12].copy_from_slice(&c.to_be_bytes());
    want.extend_from_slice(&outer);
    want.extend_from_slice(&inner[14..]);
    assert_eq!(f, &want);
    assert_eq!(checksum(&f[14..34]), 0, "outer header checksum");
}

/// Tunnel mode, too big once wrapped: with DF, an ICMP "fragmentation needed" announcing
/// 1480 goes back out eth0 to the client (through the outflows); without DF, a drop; both
/// counted `tunnel-too-big`.
#[test]
fn tunnel_too_big() {
    let lab = Lab::new(1).resolved();
    let mut w = lab.worker(0, Instant::now());
    let mut spec = FrameSpec::new(ip_("192.168.0.100"), ip_("192.168.0.4"), 6, 40000, 443);
    spec.src_mac = CLIENT_MAC;
    spec.dst_mac = PORT_MAC[0];
    spec.payload = 1500 - 40 - 10; // IP length 1490: 1510 once wrapped
    let no_df = frame(&spec);
    let mut df = no_df.clone();
    df[14 + 6] |= 0x40;
    df[24..26].fill(0);
    let c = checksum(&df[14..34]);
    df[24..26].copy_from_slice(&c.to_be_bytes());
    let out = feed(&mut w, 0, &[no_df, df.clone()]);
    assert_eq!(lab.drops(0, DropReason::TunnelTooBig), 2);
    assert_eq!(out.len(), 1, "{out:?}");
    let (to, e) = &out[0];
    assert_eq!(*to, Out::Port(0));
    let x = facts(e);
    assert_eq!(
        (x.src, x.dst, x.proto),
        (ip_("192.168.0.4"), ip_("192.168.0.100"), 1)
    );
    assert_eq!(
        &e[..12],
        &[&CLIENT_MAC[..], &PORT_MAC[0][..]].concat()[..],
        "back to the sender"
    );
    assert_eq!(
        (e[x.l4_offset], e[x.l4_offset + 1]),
        (3, 4),
        "fragmentation needed"
    );
    let mtu = u16::from_be_bytes([e[x.l4_offset + 6], e[x.l4_offset + 7]]);
    assert_eq!(mtu, 1480);
    assert_icmp_checksums(e, false);
    assert_eq!(
        &quoted(e)[14..34],
        &df[14..34],
        "the quote starts with the packet's header"
    );
}

/// ICMP errors about NAT connections are translated: from the server's side to the client
/// (the quote and the outer source back to the VIP), from the client's side to the server.
#[test]
fn icmp_error_translation() {
    let lab = Lab::new(1).resolved();
    let mut w = lab.worker(0, Instant::now());
    let syn = pkt("192.168.0.100", "192.168.0.2", 6, 40000, 25, FROM_CLIENT);
    let out = feed(&mut w, 0, &[syn]);
    let forwarded = &out[0].1;
    let server = facts(forwarded).dst.to_string();
    // the server says "port unreachable" about the forwarded packet
    let mut err = icmp_error(&server, "192.168.0.100", 3, 3, forwarded, 1500);
    err[..12].copy_from_slice(&[&PORT_MAC[1][..], &SERVER_MAC[..]].concat());
    let out = feed(&mut w, 1, &[err]);
    assert_eq!(out.len(), 1, "{out:?}");
    let (to, e) = &out[0];
    assert_eq!(*to, Out::Port(0));
    let x = facts(e);
    assert_eq!(
        (x.src, x.dst),
        (ip_("192.168.0.2"), ip_("192.168.0.100")),
        "from the VIP"
    );
    let q = facts(&quoted(e));
    assert_eq!(
        (q.src, q.dst),
        (ip_("192.168.0.100"), ip_("192.168.0.2")),
        "quotes the VIP"
    );
    assert_icmp_checksums(e, true);
    // the client says "port unreachable" about an answer it got from the VIP
    let answer = pkt(
        "192.168.0.2",
        "192.168.0.100",
        6,
        25,
        40000,
        (PORT_MAC[0], CLIENT_MAC),
    );
    let mut err = icmp_error("192.168.0.100", "192.168.0.2", 3, 3, &answer, 1500);
    err[..12].copy_from_slice(&[&PORT_MAC[0][..], &CLIENT_MAC[..]].concat());
    let out = feed(&mut w, 0, &[err]);
    assert_eq!(out.len(), 1, "{out:?}");
    let (to, e) = &out[0];
    assert_eq!(*to, Out::Port(1));
    let x = facts(e);
    assert_eq!(x.dst, ip_(&server), "to the server");
    let q = facts(&quoted(e));
    assert_eq!(q.src, ip_(&server), "quotes the server's own answer");
    assert_icmp_checksums(e, false);
}

/// Two workers and a NAT director: a worker hands a client's packet to the worker owning
/// its endpoint (tagged "forward to director 0", counted once by the flows of the first),
/// and the owner finishes it exactly as if it had received it; the server's answer, arriving
/// at the other worker, is handed to the owner as a reply candidate and rewritten there.
#[test]
fn the_hand_over_decision_with_two_workers() {
    let lab = Lab::new(2).resolved();
    let now = Instant::now();
    let mut w = [lab.worker(0, now), lab.worker(1, now)];
    let owners = lab.owners.as_ref().expect("two workers, a NAT director");
    // clients owned by each worker
    let mut by_owner: [Vec<(String, u16)>; 2] = [Vec::new(), Vec::new()];
    for i in 0..64u16 {
        let c = format!("192.168.0.{}", 100 + i);
        let key = crate::classify::Key::from_facts(
            &facts(&pkt(&c, "192.168.0.2", 6, 40000 + i, 25, FROM_CLIENT)),
            0,
        );
        by_owner[owners.owner(false, key.src, key.sport)].push((c, 40000 + i));
    }
    assert!(!by_owner[0].is_empty() && !by_owner[1].is_empty());
    let (client, sport) = by_owner[1][0].clone();
    let syn = pkt(&client, "192.168.0.2", 6, sport, 25, FROM_CLIENT);
    // worker 0 receives it: handed to worker 1, untouched, tagged
    let out = feed(&mut w[0], 0, std::slice::from_ref(&syn));
    assert_eq!(out, vec![(Out::Handoff(1), syn.clone())]);
    let tag = w[0].io().sent.first().map(|(_, f)| f.tag());
    assert_eq!(tag, None, "taken");
    assert_eq!(
        w[0].io().bursts,
        vec![0],
        "the burst's hand-over is flushed"
    );
    // the same through a burst that keeps the tag: worker 1 finishes it
    let mut b = VecFrames::of([&syn[..]]);
    w[0].ingress(0, &mut b, false);
    let (_, handed) = w[0].io().sent.pop().expect("handed");
    assert_eq!(Tag::decode(handed.tag()), Tag::Forward(0));
    let mut b = VecFrames::new([handed]);
    w[1].ingress(0, &mut b, true);
    let out = w[1].io().take();
    assert_eq!(out.len(), 1, "{out:?}");
    let server = facts(&out[0].1).dst.to_string();
    assert_eq!(
        out[0],
        (
            Out::Port(1),
            pkt_ttl(
                &client,
                &server,
                6,
                (sport, 25),
                (PORT_MAC[1], SERVER_MAC),
                63
            )
        )
    );
    assert_eq!(lab.counters[1].handoff.handed_in.get(), 1);
    // the flow was counted by worker 0 (once per burst: two), never by worker 1
    let rules = lab.rules.load();
    let mail = rules
        .flows
        .classifier
        .classify(&crate::classify::Key::from_facts(&facts(&syn), 0));
    let slot = rules.flows.slot(mail);
    assert_eq!(rules.counters[0].flow_rules[slot].get(), 2);
    assert_eq!(rules.counters[1].flow_rules[slot].get(), 0);
    // the answer arrives at worker 0: a reply candidate for worker 1
    let answer = pkt(&server, &client, 6, 25, sport, (SERVER_MAC, PORT_MAC[1]));
    let mut b = VecFrames::of([&answer[..]]);
    w[0].ingress(1, &mut b, false);
    let (to, handed) = w[0].io().sent.pop().expect("handed");
    assert_eq!(to, Out::Handoff(1));
    assert_eq!(Tag::decode(handed.tag()), Tag::Reply);
    let mut b = VecFrames::new([handed]);
    w[1].ingress(1, &mut b, true);
    let want = pkt_ttl(
        "192.168.0.2",
        &client,
        6,
        (25, sport),
        (PORT_MAC[0], CLIENT_MAC),
        63,
    );
    assert_eq!(w[1].io().take(), vec![(Out::Port(0), want)]);
    assert_eq!(lab.counters[1].handoff.handed_in.get(), 2);
    assert_eq!(lab.counters[0].handoff.handed_in.get(), 0);
    // a client worker 0 owns stays with worker 0
    let (client, sport) = by_owner[0][0].clone();
    let syn = pkt(&client, "192.168.0.2", 6, sport, 25, FROM_CLIENT);
    let out = feed(&mut w[0], 0, &[syn]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, Out::Port(1));
}

/// A static neighbour (`neighbours = { IP = MAC }` in the config) is never asked: once its
/// entry in the worker's table is stale, the next packet refreshes it from the config rather
/// than sending an ARP request; a learned neighbour in the same state is asked again.
#[test]
fn a_static_next_hop_is_never_solicited() {
    let t0 = Instant::now();
    let later = t0 + Duration::from_secs(31);
    let input = pkt("192.168.0.100", "172.16.1.1", 17, 5000, 53, FROM_CLIENT);
    let want = pkt_ttl(
        "192.168.0.100",
        "172.16.1.1",
        17,
        (5000, 53),
        (PORT_MAC[1], GW1_MAC),
        63,
    );
    for stat in [true, false] {
        let mut lab = Lab::new(1);
        let gw = (1, ip_("192.168.161.1"), MacAddr(GW1_MAC));
        if stat {
            lab.neighbours = SharedNeighbours::default().with_static([gw]);
        } else {
            lab.neighbours.publish(gw.0, gw.1, gw.2, t0);
        }
        let mut w = lab.worker(0, t0);
        assert_eq!(
            feed(&mut w, 0, std::slice::from_ref(&input)),
            vec![(Out::Port(1), want.clone())]
        );
        w.round(later);
        let out = feed(&mut w, 0, std::slice::from_ref(&input));
        assert_eq!(
            out[0],
            (Out::Port(1), want.clone()),
            "still sent, static {stat}"
        );
        let asked = out[1..]
            .iter()
            .filter(|(_, f)| neighbour_in(f, 14).is_some())
            .count();
        assert_eq!(
            (asked, lab.counters[0].neighbours.solicits.get()),
            if stat { (0, 0) } else { (1, 1) },
            "static {stat}"
        );
    }
}

/// No outflows at all: the default outflow decides every leaving packet of a burst, counted
/// once per packet; a default `deny` drops them (and only them: the kernel's copy stays).
#[test]
fn without_outflows_the_default_decides() {
    let flows = "flow ssh permit\n    match iface eth2 proto tcp dstport 22\n    match iface eth0 proto tcp dstport 22\n";
    let burst: Vec<Vec<u8>> = (0..5)
        .map(|k| pkt("192.168.0.100", "10.9.9.9", 6, 40000 + k, 22, FROM_CLIENT))
        .collect();
    for policy in ["permit", "deny"] {
        let config = CONFIG.replace(
            "default_outflow = \"permit\"",
            &format!("default_outflow = \"{policy}\""),
        );
        let lab = Lab::configured(1, flows, &config).resolved();
        let mut w = lab.worker(0, Instant::now());
        let out = feed(&mut w, 2, &burst);
        let to_kernel = feed(&mut w, 0, &burst[..2]);
        assert_eq!(to_kernel.len(), 2, "the kernel's copy is no egress");
        let rules = lab.rules.load();
        let kind = if policy == "permit" {
            VerdictKind::Permit
        } else {
            VerdictKind::Deny
        };
        assert_eq!(
            rules.counters[0].outflow_verdicts[kind as usize].get(),
            5,
            "{policy}"
        );
        // the flows' verdicts by kind: 5 permits from eth2, 2 from eth0 (counted per burst)
        let permits = &rules.counters[0].flow_verdicts[VerdictKind::Permit as usize];
        assert_eq!(permits.get(), 7, "{policy}");
        // per rule: packets and bytes (the flow `ssh`'s rule for eth2; the outflows' default)
        let bytes: u64 = burst.iter().map(|f| f.len() as u64).sum();
        let c = &rules.counters[0];
        let key = crate::classify::Key::from_facts(&facts(&burst[0]), rules.flows.port_iface[2]);
        let slot = rules.flows.slot(rules.flows.classifier.classify(&key));
        assert_eq!(
            (c.flow_rules[slot].get(), c.flow_bytes[slot].get()),
            (5, bytes)
        );
        let default = rules.outflows.slots() - 1;
        assert_eq!(
            (
                c.outflow_rules[default].get(),
                c.outflow_bytes[default].get()
            ),
            (5, bytes)
        );
        match policy {
            "permit" => assert_eq!(
                out,
                burst
                    .iter()
                    .map(|f| (Out::Port(1), f.clone()))
                    .collect::<Vec<_>>()
            ),
            _ => {
                assert_eq!(out, vec![]);
                assert_eq!(lab.drops(0, DropReason::OutflowDeny), 5);
            }
        }
    }
}
