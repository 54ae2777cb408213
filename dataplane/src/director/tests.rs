//! Director tests: scheduler distributions and stability, Maglev disruption, connection
//! tracking through the worker API, and packet-in/packet-out rewrites on real frames whose
//! checksums are verified by recomputation.

use std::net::IpAddr;
use std::time::Duration;

use flowgate_config::appliance::{
    Check, CheckKind, Director, Mode, Persistence, Scheduler, Server, Timeouts,
};

use super::conntrack::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};
use super::hash::mix64;
use super::rewrite::{encapsulate, set_dst_mac, tunnel_overhead};
use super::schedule::{pick, Cursor, SchedKey, ServerLoad};
use super::*;
use crate::build::{frame, FrameSpec};
use crate::wire::checksum::ones_sum;
use crate::wire::{parse, Frame, IpFacts};

pub(crate) fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

pub(crate) fn director(
    scheduler: Scheduler,
    mode: Mode,
    servers: &[(&str, u32, bool)],
) -> Director {
    Director {
        name: "d".into(),
        max_connections: 1 << 16,
        scheduler,
        mode,
        persistence: None,
        check: Check {
            kind: CheckKind::None,
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 3,
            port: None,
        },
        timeouts: Timeouts::default(),
        virtual_service: None,
        servers: servers
            .iter()
            .map(|&(addr, weight, sorry)| Server {
                name: format!("s-{addr}"),
                address: ip(addr),
                port: None,
                weight,
                sorry,
            })
            .collect(),
    }
}

pub(crate) fn set(d: Director) -> DirectorSet {
    DirectorSet::build(&[d]).expect("director set")
}

pub(crate) fn state(d: Director) -> DirectorState {
    (**set(d).get(0).expect("director")).clone()
}

/// `n` regular servers 10.0.0.1.. with the given weights.
pub(crate) fn servers(weights: &[u32]) -> Vec<(String, u32, bool)> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| (format!("10.0.0.{}", i + 1), w, false))
        .collect()
}

pub(crate) fn with(sched: Scheduler, list: &[(String, u32, bool)]) -> Director {
    let v: Vec<(&str, u32, bool)> = list.iter().map(|(a, w, s)| (a.as_str(), *w, *s)).collect();
    director(sched, Mode::Nat, &v)
}

fn key(n: u64) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[10] = 0xff;
    a[11] = 0xff;
    a[12..].copy_from_slice(&(mix64(n) as u32).to_be_bytes());
    a
}

const VIP16: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 168, 0, 100];

/// Picks for `n` distinct clients with idle loads.
fn picks(st: &DirectorState, n: u64) -> Vec<Option<u16>> {
    let mut c = Cursor::default();
    let loads = vec![ServerLoad::default(); st.servers.len()];
    (0..n)
        .map(|i| {
            let k = key(i);
            pick(
                st,
                &mut c,
                &loads,
                SchedKey {
                    client: &k,
                    dest: &k,
                },
            )
        })
        .collect()
}

fn shares(p: &[Option<u16>], n: usize) -> Vec<f64> {
    let mut c = vec![0usize; n];
    for s in p.iter().flatten() {
        c[usize::from(*s)] += 1;
    }
    c.iter().map(|&x| x as f64 / p.len() as f64).collect()
}

#[test]
fn rr_cycles_over_available_servers() {
    let st = state(with(Scheduler::Rr, &servers(&[1, 1, 1])));
    let p: Vec<u16> = picks(&st, 7).into_iter().flatten().collect();
    assert_eq!(p, [0, 1, 2, 0, 1, 2, 0]);
}

#[test]
fn wrr_exact_ipvs_sequence_and_ratio() {
    let st = state(with(Scheduler::Wrr, &servers(&[3, 1])));
    let p: Vec<u16> = picks(&st, 8).into_iter().flatten().collect();
    assert_eq!(p, [0, 0, 0, 1, 0, 0, 0, 1]);
    let s = shares(&picks(&st, 4000), 2);
    assert!((s[0] - 0.75).abs() < 0.01, "{s:?}");

    // IPVS interleaving for 4:3:2 — one cycle of 9.
    let st = state(with(Scheduler::Wrr, &servers(&[4, 3, 2])));
    let p: Vec<u16> = picks(&st, 18).into_iter().flatten().collect();
    let cycle = [0, 0, 1, 0, 1, 2, 0, 1, 2];
    assert_eq!(&p[..9], &cycle);
    assert_eq!(&p[9..], &cycle);
    // gcd: 20:10 behaves as 2:1
    let st = state(with(Scheduler::Wrr, &servers(&[20, 10])));
    let p: Vec<u16> = picks(&st, 6).into_iter().flatten().collect();
    assert_eq!(p, [0, 0, 1, 0, 0, 1]);
}

#[test]
fn least_connection_family() {
    let pick_with = |sched, weights: &[u32], loads: &[(u32, u32)]| {
        let st = state(with(sched, &servers(weights)));
        let l: Vec<ServerLoad> = loads
            .iter()
            .map(|&(active, inactive)| ServerLoad { active, inactive })
            .collect();
        let k = key(1);
        pick(
            &st,
            &mut Cursor::default(),
            &l,
            SchedKey {
                client: &k,
                dest: &k,
            },
        )
    };
    // lc: active weigh 256 inactive
    assert_eq!(
        pick_with(Scheduler::Lc, &[1, 1], &[(1, 0), (0, 255)]),
        Some(1)
    );
    assert_eq!(
        pick_with(Scheduler::Lc, &[1, 1], &[(1, 0), (0, 257)]),
        Some(0)
    );
    // wlc: overhead / weight
    assert_eq!(
        pick_with(Scheduler::Wlc, &[1, 3], &[(1, 0), (2, 0)]),
        Some(1)
    );
    assert_eq!(
        pick_with(Scheduler::Wlc, &[1, 3], &[(1, 0), (4, 0)]),
        Some(0)
    );
    // sed: (active + 1) / weight: (2+1)/3 = 1 vs (0+1)/1 = 1 -> first; (3+1)/3 > 1
    assert_eq!(
        pick_with(Scheduler::Sed, &[1, 3], &[(0, 0), (2, 0)]),
        Some(0)
    );
    assert_eq!(
        pick_with(Scheduler::Sed, &[1, 3], &[(1, 0), (2, 0)]),
        Some(1)
    );
    // nq: an idle server first, whatever the weights
    assert_eq!(
        pick_with(Scheduler::Nq, &[10, 1], &[(1, 0), (0, 0)]),
        Some(1)
    );
    assert_eq!(
        pick_with(Scheduler::Nq, &[1, 3], &[(1, 0), (2, 0)]),
        Some(1)
    );
}

#[test]
fn hash_schedulers_are_stable_and_weighted() {
    for sched in [Scheduler::Sh, Scheduler::Dh, Scheduler::Mh] {
        let st = state(with(sched, &servers(&[3, 1])));
        let a = picks(&st, 20_000);
        let b = picks(&st, 20_000);
        assert_eq!(a, b, "{sched:?} not stable");
        let s = shares(&a, 2);
        assert!((s[0] - 0.75).abs() < 0.03, "{sched:?} {s:?}");
    }
    // dh hashes the destination: one destination, one server
    let st = state(with(Scheduler::Dh, &servers(&[1, 1, 1])));
    let mut c = Cursor::default();
    let l = [ServerLoad::default(); 3];
    let first = pick(
        &st,
        &mut c,
        &l,
        SchedKey {
            client: &key(1),
            dest: &VIP16,
        },
    );
    for i in 0..100 {
        let k = key(i);
        assert_eq!(
            pick(
                &st,
                &mut c,
                &l,
                SchedKey {
                    client: &k,
                    dest: &VIP16
                }
            ),
            first
        );
    }
}

#[test]
fn drained_server_is_never_picked() {
    for sched in [
        Scheduler::Rr,
        Scheduler::Wrr,
        Scheduler::Lc,
        Scheduler::Wlc,
        Scheduler::Sh,
        Scheduler::Dh,
        Scheduler::Sed,
        Scheduler::Nq,
        Scheduler::Mh,
    ] {
        let set = set(with(sched, &servers(&[1, 1, 1])));
        let set = set.with_weight(0, 1, 0).expect("weight");
        let p = picks(set.get(0).expect("d"), 3000);
        assert!(p.iter().all(|s| s.is_some() && *s != Some(1)), "{sched:?}");
        // and a down server neither
        let set = set.with_weight(0, 1, 1).expect("weight");
        let set = set.with_server_up(0, 2, false).expect("down");
        let p = picks(set.get(0).expect("d"), 3000);
        assert!(p.iter().all(|s| s.is_some() && *s != Some(2)), "{sched:?}");
    }
}

#[test]
fn sorry_server_only_when_no_regular_one_is_available() {
    let d = director(
        Scheduler::Rr,
        Mode::Nat,
        &[
            ("10.0.0.1", 1, false),
            ("10.0.0.2", 1, false),
            ("10.0.0.99", 1, true),
        ],
    );
    let s0 = set(d);
    assert!(picks(s0.get(0).expect("d"), 100)
        .iter()
        .all(|p| *p != Some(2)));
    let s1 = s0.with_server_up(0, 0, false).expect("down");
    assert!(picks(s1.get(0).expect("d"), 100)
        .iter()
        .all(|p| *p == Some(1)));
    let s2 = s1.with_server_up(0, 1, false).expect("down");
    assert!(picks(s2.get(0).expect("d"), 100)
        .iter()
        .all(|p| *p == Some(2)));
    // every regular server drained (up, weight 0): nothing available either -> sorry
    let s3 = s0
        .with_weight(0, 0, 0)
        .and_then(|s| s.with_weight(0, 1, 0))
        .expect("w");
    assert!(picks(s3.get(0).expect("d"), 10)
        .iter()
        .all(|p| *p == Some(2)));
    // sorry down too: nothing
    let s4 = s2.with_server_up(0, 2, false).expect("down");
    assert!(picks(s4.get(0).expect("d"), 10).iter().all(|p| p.is_none()));
    // a regular server back: the sorry server is left again
    let s5 = s2.with_server_up(0, 0, true).expect("up");
    assert!(picks(s5.get(0).expect("d"), 10)
        .iter()
        .all(|p| *p == Some(0)));
}

#[test]
fn maglev_disruption_when_one_of_ten_leaves() {
    let n = 10;
    let s0 = set(with(Scheduler::Mh, &servers(&vec![1; n])));
    let s1 = s0.with_server_up(0, 3, false).expect("down");
    let keys = 100_000;
    let a = picks(s0.get(0).expect("d"), keys);
    let b = picks(s1.get(0).expect("d"), keys);
    let moved = a.iter().zip(&b).filter(|(x, y)| x != y).count();
    let share = moved as f64 / keys as f64;
    assert!(share < 1.5 / n as f64, "moved {share}");
    // every key of the leaving server moved, nothing moved onto... only its keys should move
    let from_others = a
        .iter()
        .zip(&b)
        .filter(|(x, y)| x != y && **x != Some(3))
        .count();
    assert!(
        (from_others as f64) < 0.5 / n as f64 * keys as f64,
        "{from_others}"
    );
    // and the Maglev table size is configurable (prime)
    let opts = DirectorOptions {
        maglev_size: 251,
        ..Default::default()
    };
    let small =
        DirectorSet::build_with(&[with(Scheduler::Mh, &servers(&[1, 1]))], opts).expect("build");
    assert_eq!(
        small.get(0).and_then(|d| d.maglev()).map(|m| m.len()),
        Some(251)
    );
    let bad = DirectorOptions {
        maglev_size: 256,
        ..Default::default()
    };
    assert!(DirectorSet::build_with(&[with(Scheduler::Mh, &servers(&[1]))], bad).is_err());
}

// ---- the worker: connection tracking and rewrites on real frames ----

pub(crate) fn facts(f: &[u8]) -> IpFacts {
    match parse(f) {
        Frame::Ip(x) => x,
        other => panic!("not IP: {other:?}"),
    }
}

/// A TCP/UDP frame from `src:sport` to `dst:dport`, TCP with `flags`.
pub(crate) fn packet(
    proto: u8,
    src: &str,
    sport: u16,
    dst: &str,
    dport: u16,
    flags: u8,
) -> Vec<u8> {
    let mut spec = FrameSpec::new(ip(src), ip(dst), proto, sport, dport);
    spec.payload = 6;
    let mut f = frame(&spec);
    if proto == 6 {
        let x = facts(&f);
        f[x.l4_offset + 13] = flags;
        fix_l4(&mut f);
    }
    f
}

/// Recompute the L4 checksum from scratch.
fn fix_l4(f: &mut [u8]) {
    let x = facts(f);
    let at = x.l4_offset + if x.proto == 6 { 16 } else { 6 };
    f[at] = 0;
    f[at + 1] = 0;
    let sum = l4_sum(f, &x);
    let mut c = !(sum as u16);
    if x.proto == 17 && c == 0 {
        c = 0xffff;
    }
    f[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

fn l4_sum(f: &[u8], x: &IpFacts) -> u32 {
    let l4 = &f[x.l4_offset..];
    let mut pseudo = Vec::new();
    match (x.src, x.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = u16::from_be_bytes([f[x.l3_offset + 2], f[x.l3_offset + 3]]) as usize;
            let len = total - (x.l4_offset - x.l3_offset);
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&[0, x.proto]);
            pseudo.extend_from_slice(&(len as u16).to_be_bytes());
            ones_sum(ones_sum(0, &pseudo), &l4[..len])
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&(l4.len() as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, x.proto]);
            ones_sum(ones_sum(0, &pseudo), l4)
        }
        _ => unreachable!(),
    }
}

/// The IPv4 header checksum and the TCP/UDP checksum verify.
pub(crate) fn assert_checksums(f: &[u8]) {
    let x = facts(f);
    if x.src.is_ipv4() {
        let ihl = usize::from(f[x.l3_offset] & 0xf) * 4;
        assert_eq!(
            ones_sum(0, &f[x.l3_offset..x.l3_offset + ihl]),
            0xffff,
            "IPv4 header"
        );
    }
    assert_eq!(l4_sum(f, &x), 0xffff, "L4 checksum");
}

pub(crate) fn ports(f: &[u8]) -> (u16, u16) {
    match facts(f).l4 {
        flowgate_config::flows::L4::Ports { sport, dport } => (sport, dport),
        _ => panic!("no ports"),
    }
}

pub(crate) fn worker(st: &DirectorState, capacity: usize) -> DirectorWorker {
    DirectorWorker::new(
        st,
        WorkerOptions {
            capacity,
            ..Default::default()
        },
    )
}

pub(crate) fn send(w: &mut DirectorWorker, st: &DirectorState, f: &mut [u8], now: u64) -> Verdict {
    let x = facts(f);
    w.forward(st, f, &x, now)
}

pub(crate) fn server_of(v: Verdict) -> u16 {
    match v {
        Verdict::Forward { server, .. } => server,
        Verdict::Drop(r) => panic!("dropped: {r:?}"),
    }
}

#[test]
fn nat_rewrites_forward_and_reply_with_valid_checksums() {
    // (proto, client, vip, server, server port)
    let cases: &[(u8, &str, &str, &str, Option<u16>)] = &[
        (6, "192.168.1.7", "192.168.0.100", "10.0.0.11", None),
        (6, "192.168.1.7", "192.168.0.100", "10.0.0.11", Some(8080)),
        (17, "192.168.1.7", "192.168.0.100", "10.0.0.11", Some(5353)),
        (17, "192.168.1.7", "192.168.0.100", "10.0.0.11", None),
        (6, "2001:db8::7", "2001:db8::100", "fd00::11", Some(8443)),
        (17, "2001:db8::7", "2001:db8::100", "fd00::11", None),
    ];
    for &(proto, client, vip, server, sport_) in cases {
        let mut d = director(Scheduler::Rr, Mode::Nat, &[(server, 1, false)]);
        d.servers[0].port = sport_;
        let st = state(d);
        let mut w = worker(&st, 64);
        let mut f = packet(proto, client, 40000, vip, 443, TCP_SYN);
        let orig = f.clone();
        let v = send(&mut w, &st, &mut f, 0);
        assert_eq!(
            v,
            Verdict::Forward {
                server: 0,
                to: ip(server),
                new: true
            }
        );
        let x = facts(&f);
        assert_eq!((x.src, x.dst), (ip(client), ip(server)), "{proto} {client}");
        assert_eq!(ports(&f), (40000, sport_.unwrap_or(443)));
        assert_checksums(&f);
        // only the destination address, port and checksums changed: payload intact
        assert_eq!(f.len(), orig.len());
        assert_eq!(f[f.len() - 6..], orig[orig.len() - 6..]);

        // the reply from the server
        let mut r = packet(
            proto,
            server,
            sport_.unwrap_or(443),
            client,
            40000,
            TCP_SYN | TCP_ACK,
        );
        let rx = facts(&r);
        let v = w
            .reply(&st, &mut r, &rx, 1)
            .expect("a reply of this director");
        assert_eq!(server_of(v), 0);
        let x = facts(&r);
        assert_eq!((x.src, x.dst), (ip(vip), ip(client)));
        assert_eq!(ports(&r), (443, 40000));
        assert_checksums(&r);
        // a packet from elsewhere is not a reply
        let stranger = if client.contains(':') {
            "fd00::99"
        } else {
            "10.9.9.9"
        };
        let mut other = packet(proto, stranger, 443, client, 40000, TCP_ACK);
        let ox = facts(&other);
        assert_eq!(w.reply(&st, &mut other, &ox, 1), None);
    }
}

#[test]
fn udp_zero_checksum_is_left_alone() {
    let st = state(director(
        Scheduler::Rr,
        Mode::Nat,
        &[("10.0.0.11", 1, false)],
    ));
    let mut w = worker(&st, 8);
    let mut f = packet(17, "192.168.1.7", 5000, "192.168.0.100", 53, 0);
    let x = facts(&f);
    f[x.l4_offset + 6] = 0;
    f[x.l4_offset + 7] = 0;
    server_of(send(&mut w, &st, &mut f, 0));
    assert_eq!(&f[x.l4_offset + 6..x.l4_offset + 8], &[0, 0]);
    assert_eq!(ones_sum(0, &f[14..34]), 0xffff);
}

#[test]
fn gateway_changes_only_the_destination_mac() {
    let st = state(director(
        Scheduler::Rr,
        Mode::Gateway,
        &[("192.168.0.11", 1, false)],
    ));
    let mut w = worker(&st, 8);
    let mut f = packet(6, "1.2.3.4", 1234, "192.168.0.100", 80, TCP_SYN);
    let orig = f.clone();
    let v = send(&mut w, &st, &mut f, 0);
    assert_eq!(f, orig, "gateway mode leaves the packet to the caller");
    assert!(matches!(v, Verdict::Forward { to, .. } if to == ip("192.168.0.11")));
    let mac = [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee];
    set_dst_mac(&mut f, mac).expect("mac");
    assert_eq!(f[..6], mac);
    assert_eq!(f[6..], orig[6..]);
    // no reply tracking outside NAT
    let mut r = packet(6, "192.168.0.11", 80, "1.2.3.4", 1234, TCP_ACK);
    let rx = facts(&r);
    assert_eq!(w.reply(&st, &mut r, &rx, 0), None);
}

#[test]
fn tunnel_prepends_an_outer_header() {
    let cases: &[(&str, &str, &str, &str, u8)] = &[
        ("1.2.3.4", "192.168.0.100", "192.168.0.1", "10.0.0.11", 4),
        ("2001:db8::7", "2001:db8::100", "fd00::1", "fd00::11", 41),
    ];
    for &(client, vip, local, server, proto) in cases {
        let inner = packet(6, client, 1234, vip, 80, TCP_SYN);
        let over = tunnel_overhead(ip(server));
        let head = 64;
        let mut buf = vec![0u8; head + inner.len()];
        buf[head..].copy_from_slice(&inner);
        let x = facts(&inner);
        let r = encapsulate(
            &mut buf,
            head..head + inner.len(),
            &x,
            ip(local),
            ip(server),
        )
        .expect("encapsulate");
        assert_eq!(r, head - over..head + inner.len());
        let out = &buf[r];
        let o = facts(out);
        assert_eq!((o.src, o.dst, o.proto), (ip(local), ip(server), proto));
        // Ethernet addresses kept, inner packet untouched
        assert_eq!(out[..12], inner[..12]);
        assert_eq!(out[14 + over..], inner[14..]);
        if proto == 4 {
            assert_eq!(ones_sum(0, &out[14..34]), 0xffff);
            assert_eq!(
                u16::from_be_bytes([out[16], out[17]]) as usize,
                out.len() - 14
            );
        } else {
            assert_eq!(
                u16::from_be_bytes([out[18], out[19]]) as usize,
                inner.len() - 14
            );
        }
        // without headroom: refused, buffer untouched
        let mut tight = inner.clone();
        let len = tight.len();
        assert!(encapsulate(&mut tight, 0..len, &x, ip(local), ip(server)).is_err());
        assert_eq!(tight, inner);
    }
}

#[test]
fn established_connection_keeps_its_server() {
    let d = with(Scheduler::Rr, &servers(&[1, 1, 1]));
    let s0 = set(d);
    let st0 = s0.get(0).expect("d");
    let mut w = worker(st0, 64);
    let mut f = packet(6, "1.1.1.1", 1000, "192.168.0.100", 80, TCP_SYN);
    let srv = server_of(send(&mut w, st0, &mut f, 0));
    let mut ack = packet(6, "1.1.1.1", 1000, "192.168.0.100", 80, TCP_ACK);
    assert_eq!(server_of(send(&mut w, st0, &mut ack, 1)), srv);
    // its weight drops to 0 (drain), and another server goes down
    let other = (srv + 1) % 3;
    let s1 = s0
        .with_weight(0, usize::from(srv), 0)
        .and_then(|s| s.with_server_up(0, usize::from(other), false))
        .expect("change");
    let st1 = s1.get(0).expect("d");
    for t in 2..10 {
        let mut p = packet(6, "1.1.1.1", 1000, "192.168.0.100", 80, TCP_ACK);
        assert_eq!(server_of(send(&mut w, st1, &mut p, t)), srv);
    }
    // new connections avoid both
    for port in 2000..2010 {
        let mut p = packet(6, "1.1.1.1", port, "192.168.0.100", 80, TCP_SYN);
        let s = server_of(send(&mut w, st1, &mut p, 20));
        assert!(s != srv && s != other);
    }
}

#[test]
fn own_server_down_expires_the_connection() {
    let s0 = set(with(Scheduler::Rr, &servers(&[1, 1])));
    let st0 = s0.get(0).expect("d");
    let mut w = worker(st0, 64);
    let mut f = packet(6, "1.1.1.1", 1000, "192.168.0.100", 80, TCP_SYN);
    let srv = server_of(send(&mut w, st0, &mut f, 0));
    let s1 = s0.with_server_up(0, usize::from(srv), false).expect("down");
    let st1 = s1.get(0).expect("d");
    let mut ack = packet(6, "1.1.1.1", 1000, "192.168.0.100", 80, TCP_ACK);
    assert_eq!(
        send(&mut w, st1, &mut ack, 1),
        Verdict::Drop(DropReason::ServerDown)
    );
    assert!(w.table().is_empty());
    // the client's next SYN goes to the other server
    let mut syn = packet(6, "1.1.1.1", 1000, "192.168.0.100", 80, TCP_SYN);
    assert_eq!(server_of(send(&mut w, st1, &mut syn, 2)), 1 - srv);
    // UDP: rescheduled at once
    let mut u = packet(17, "1.1.1.2", 1000, "192.168.0.100", 53, 0);
    let us = server_of(send(&mut w, st0, &mut u, 3));
    let s2 = s0.with_server_up(0, usize::from(us), false).expect("down");
    let mut u = packet(17, "1.1.1.2", 1000, "192.168.0.100", 53, 0);
    assert_eq!(
        server_of(send(&mut w, s2.get(0).expect("d"), &mut u, 4)),
        1 - us
    );
    let c = w.counters();
    assert_eq!(c.nodest_expired, 2);
    assert_eq!(c.drops[DropReason::ServerDown.index()], 1);
}

#[test]
fn tcp_states_and_their_timeouts() {
    let mut d = with(Scheduler::Rr, &servers(&[1]));
    d.timeouts = Timeouts {
        tcp: Duration::from_secs(900),
        tcp_fin: Duration::from_secs(120),
        udp: Duration::from_secs(300),
    };
    let st = state(d);
    let mut w = worker(&st, 64);
    let c = "1.1.1.1";
    let v = "192.168.0.100";
    let fwd = |w: &mut DirectorWorker, flags, now| {
        let mut p = packet(6, c, 1000, v, 80, flags);
        send(w, &st, &mut p, now)
    };
    let rep = |w: &mut DirectorWorker, flags, now| {
        let mut p = packet(6, "10.0.0.1", 80, c, 1000, flags);
        let x = facts(&p);
        w.reply(&st, &mut p, &x, now)
    };
    let load = |w: &DirectorWorker| w.table().loads()[0];

    // not a SYN, no connection: dropped
    assert_eq!(fwd(&mut w, TCP_ACK, 0), Verdict::Drop(DropReason::NotSyn));
    // SYN_RECV lives 60 s
    server_of(fwd(&mut w, TCP_SYN, 0));
    assert_eq!(
        load(&w),
        ServerLoad {
            active: 0,
            inactive: 1
        }
    );
    assert!(rep(&mut w, TCP_SYN | TCP_ACK, 59_000).is_some());
    assert!(
        rep(&mut w, TCP_ACK, 59_000 + 60_000).is_none(),
        "SYN_RECV expired"
    );
    // handshake to ESTABLISHED: 900 s
    server_of(fwd(&mut w, TCP_SYN, 200_000));
    assert!(rep(&mut w, TCP_SYN | TCP_ACK, 200_001).is_some());
    server_of(fwd(&mut w, TCP_ACK, 200_002));
    assert_eq!(
        load(&w),
        ServerLoad {
            active: 1,
            inactive: 0
        }
    );
    server_of(fwd(&mut w, TCP_ACK, 200_002 + 899_000));
    let t = 200_002 + 899_000;
    // FIN from both sides: TIME_WAIT, 120 s
    server_of(fwd(&mut w, TCP_FIN | TCP_ACK, t + 1));
    assert_eq!(
        load(&w),
        ServerLoad {
            active: 0,
            inactive: 1
        }
    );
    assert!(rep(&mut w, TCP_FIN | TCP_ACK, t + 2).is_some());
    server_of(fwd(&mut w, TCP_ACK, t + 3));
    assert!(rep(&mut w, TCP_ACK, t + 3 + 119_000).is_some());
    assert!(rep(&mut w, TCP_ACK, t + 3 + 119_000 + 120_000).is_none());
    assert!(w.table().is_empty());
    // RST: CLOSE, 10 s; a new SYN on the closed tuple is a new connection
    let t = 2_000_000;
    server_of(fwd(&mut w, TCP_SYN, t));
    server_of(fwd(&mut w, TCP_ACK, t + 1));
    assert!(rep(&mut w, TCP_RST, t + 2).is_some());
    assert!(matches!(
        fwd(&mut w, TCP_SYN, t + 3),
        Verdict::Forward { new: true, .. }
    ));
    server_of(fwd(&mut w, TCP_RST, t + 4));
    assert_eq!(
        fwd(&mut w, TCP_ACK, t + 4 + 10_000),
        Verdict::Drop(DropReason::NotSyn)
    );
    assert_eq!(load(&w), ServerLoad::default());
}

#[test]
fn udp_idle_timeout() {
    let mut d = with(Scheduler::Rr, &servers(&[1, 1]));
    d.timeouts.udp = Duration::from_secs(30);
    let st = state(d);
    let mut w = worker(&st, 8);
    let mut p = packet(17, "1.1.1.1", 5000, "192.168.0.100", 53, 0);
    let s = server_of(send(&mut w, &st, &mut p, 0));
    let mut p = packet(17, "1.1.1.1", 5000, "192.168.0.100", 53, 0);
    let v = send(&mut w, &st, &mut p, 29_999);
    assert_eq!(
        v,
        Verdict::Forward {
            server: s,
            to: st.servers[usize::from(s)].address,
            new: false
        }
    );
    // idle 30 s: gone, the next datagram is a new connection (rr: the other server)
    let mut p = packet(17, "1.1.1.1", 5000, "192.168.0.100", 53, 0);
    assert!(matches!(
        send(&mut w, &st, &mut p, 59_999),
        Verdict::Forward { new: true, .. }
    ));
}

#[test]
fn full_table_refuses_new_connections_and_counts_them() {
    let st = state(with(Scheduler::Rr, &servers(&[1])));
    let mut w = worker(&st, 2);
    // two established connections fill the table: they are never evicted for new ones
    for port in [1, 2] {
        let mut p = packet(6, "1.1.1.1", port, "192.168.0.100", 80, TCP_SYN);
        server_of(send(&mut w, &st, &mut p, 0));
        let mut p = packet(6, "1.1.1.1", port, "192.168.0.100", 80, TCP_ACK);
        server_of(send(&mut w, &st, &mut p, 0));
    }
    let mut p = packet(6, "1.1.1.1", 3, "192.168.0.100", 80, TCP_SYN);
    assert_eq!(
        send(&mut w, &st, &mut p, 1),
        Verdict::Drop(DropReason::ConntrackFull)
    );
    assert_eq!(w.counters().drops[DropReason::ConntrackFull.index()], 1);
    assert_eq!(w.counters().half_open_evicted, 0);
    // the live ones still work
    let mut p = packet(6, "1.1.1.1", 1, "192.168.0.100", 80, TCP_ACK);
    assert!(matches!(
        send(&mut w, &st, &mut p, 2),
        Verdict::Forward { new: false, .. }
    ));
    // once the other is reset and has expired (CLOSE, 10 s), its room is reused
    let mut p = packet(6, "1.1.1.1", 2, "192.168.0.100", 80, TCP_RST);
    server_of(send(&mut w, &st, &mut p, 3));
    let mut p = packet(6, "1.1.1.1", 3, "192.168.0.100", 80, TCP_SYN);
    assert!(matches!(
        send(&mut w, &st, &mut p, 10_004),
        Verdict::Forward { new: true, .. }
    ));
    assert_eq!(w.table().len(), 2);
}

/// A SYN flood from spoofed sources against a persistent director (the seed's mail VIP,
/// scaled down): 1,000 SYNs a second for 20 s into a 4,096-entry table, and a real client
/// opening a connection every second. Half-open entries (and the templates only they use)
/// are bounded and evicted first, the table goes into defense and back: every connection of
/// the real client gets through, and an established connection is never evicted.
#[test]
fn syn_flood_half_open_entries_are_evicted_first_and_real_clients_get_through() {
    let mut d = with(Scheduler::Wrr, &servers(&[10, 10]));
    d.persistence = Some(Persistence {
        timeout: Duration::from_secs(300),
        netmask_len: 32,
    });
    let st = state(d);
    let mut w = worker(&st, 4096);
    // a long-lived established connection from before the flood
    let mut p = packet(6, "192.168.0.50", 4000, "192.168.0.100", 25, TCP_SYN);
    let held = server_of(send(&mut w, &st, &mut p, 0));
    let mut p = packet(6, "192.168.0.50", 4000, "192.168.0.100", 25, TCP_ACK);
    server_of(send(&mut w, &st, &mut p, 1));

    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut ok = 0;
    let max = w.table().half_open_max();
    for ms in 0..20_000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let src = format!("198.18.{}.{}", (x >> 8) as u8, x as u8);
        let mut p = packet(6, &src, (x >> 16) as u16, "192.168.0.100", 25, TCP_SYN);
        let _ = send(&mut w, &st, &mut p, 1000 + ms);
        assert!(
            w.table().half_open() <= max,
            "half-open bounded: {} > {max} at {ms}",
            w.table().half_open()
        );
        if ms % 1000 == 500 {
            let port = 20_000 + (ms / 1000) as u16;
            let mut p = packet(6, "192.168.0.7", port, "192.168.0.100", 25, TCP_SYN);
            let a = send(&mut w, &st, &mut p, 1000 + ms);
            let mut p = packet(6, "192.168.0.7", port, "192.168.0.100", 25, TCP_ACK);
            let b = send(&mut w, &st, &mut p, 1001 + ms);
            if matches!(a, Verdict::Forward { new: true, .. })
                && matches!(b, Verdict::Forward { new: false, .. })
            {
                ok += 1;
            }
        }
        if ms % 32 == 0 {
            w.expire(1000 + ms, 64);
        }
    }
    assert_eq!(ok, 20, "every real connection got through");
    let c = w.counters();
    assert!(c.half_open_evicted > 10_000, "{c:?}");
    assert_eq!(c.defense_entered, 1, "{c:?}");
    assert_eq!(c.defense_active, 1, "{c:?}");
    assert_eq!(c.drops[DropReason::ConntrackFull.index()], 0, "{c:?}");
    // the connection from before the flood is still there, on its server
    let mut p = packet(6, "192.168.0.50", 4000, "192.168.0.100", 25, TCP_ACK);
    assert_eq!(server_of(send(&mut w, &st, &mut p, 21_000)), held);
    // the real client's template was confirmed and keeps it on one server after the flood
    let mut p = packet(6, "192.168.0.7", 30_000, "192.168.0.100", 25, TCP_SYN);
    let first = server_of(send(&mut w, &st, &mut p, 21_001));
    let mut p = packet(6, "192.168.0.7", 30_001, "192.168.0.100", 25, TCP_SYN);
    assert_eq!(server_of(send(&mut w, &st, &mut p, 21_002)), first);
    // the flood is over: half-open entries (10 s in defense) expire, defense ends
    for t in 0..200u64 {
        w.expire(40_000 + t, 64);
    }
    let c = w.counters();
    assert_eq!(c.defense_active, 0, "{c:?}");
    assert_eq!(c.half_open, 0, "{c:?}");
}

#[test]
fn persistence_templates() {
    let mut d = with(Scheduler::Rr, &servers(&[1, 1, 1]));
    d.persistence = Some(Persistence {
        timeout: Duration::from_secs(300),
        netmask_len: 24,
    });
    let s0 = set(d);
    let st = s0.get(0).expect("d");
    let mut w = worker(st, 64);
    let conn = |w: &mut DirectorWorker, st: &DirectorState, client: &str, port, now| {
        let mut p = packet(6, client, port, "192.168.0.100", 25, TCP_SYN);
        let s = server_of(send(w, st, &mut p, now));
        let mut p = packet(6, client, port, "192.168.0.100", 25, TCP_ACK);
        assert_eq!(server_of(send(w, st, &mut p, now)), s);
        s
    };
    // rr alone would rotate; the template keeps the /24 on one server, across ports
    let first = conn(&mut w, st, "1.1.1.1", 1000, 0);
    for (i, c) in ["1.1.1.1", "1.1.1.2", "1.1.1.200"].iter().enumerate() {
        assert_eq!(conn(&mut w, st, c, 2000 + i as u16, 10), first);
    }
    // another /24 gets the next server
    let other = conn(&mut w, st, "1.1.2.1", 1000, 20);
    assert_ne!(other, first);
    // the template outlives its connections until the persistence timeout
    assert_eq!(conn(&mut w, st, "1.1.1.9", 3000, 10 + 299_000), first);
    let later = 10 + 299_000 + 300_001;
    let moved = conn(&mut w, st, "1.1.1.9", 3001, later);
    assert_ne!(moved, first, "template expired: rr goes on");
    // the template's server goes down: rescheduled, new template
    let s1 = s0
        .with_server_up(0, usize::from(moved), false)
        .expect("down");
    let st1 = s1.get(0).expect("d");
    let again = conn(&mut w, st1, "1.1.1.9", 3002, later + 1);
    assert_ne!(again, moved);
    assert_eq!(conn(&mut w, st1, "1.1.1.10", 3003, later + 2), again);
}

/// A template made by a connection that never got established lives as long as a half-open
/// connection (60 s), not the persistence timeout: spoofed SYNs cannot pin the table.
#[test]
fn a_template_of_half_open_connections_lives_as_long_as_they_do() {
    let mut d = with(Scheduler::Rr, &servers(&[1, 1, 1]));
    d.persistence = Some(Persistence {
        timeout: Duration::from_secs(300),
        netmask_len: 32,
    });
    let st = state(d);
    let mut w = worker(&st, 64);
    let syn = |w: &mut DirectorWorker, port, now| {
        let mut p = packet(6, "1.1.1.1", port, "192.168.0.100", 25, TCP_SYN);
        server_of(send(w, &st, &mut p, now))
    };
    let first = syn(&mut w, 1000, 0);
    assert_eq!(w.table().half_open(), 2, "the connection and its template");
    // a second SYN within the minute meets the template and pushes it another minute
    assert_eq!(syn(&mut w, 1001, 59_000), first);
    // ...past which it is gone: rr goes on
    assert_ne!(syn(&mut w, 1002, 59_000 + 60_001), first);
}

#[test]
fn counters_add_up_over_workers() {
    let st = state(with(Scheduler::Rr, &servers(&[1, 1])));
    let mut a = worker(&st, 16);
    let mut b = worker(&st, 16);
    for (w, port) in [(&mut a, 1u16), (&mut b, 2)] {
        let mut p = packet(6, "1.1.1.1", port, "192.168.0.100", 80, TCP_SYN);
        server_of(send(w, &st, &mut p, 0));
        let mut p = packet(6, "1.1.1.1", port, "192.168.0.100", 80, TCP_ACK);
        server_of(send(w, &st, &mut p, 0));
    }
    let mut total = DirectorCounters::new(2);
    total.add(&a.counters());
    total.add(&b.counters());
    assert_eq!((total.conns, total.packets_in), (2, 4));
    assert_eq!(
        total.servers[0].conns, 2,
        "each worker's rr starts at server 0"
    );
    assert_eq!(total.servers[0].active, 2);
    assert_eq!(total.bytes_in, 4 * 60);
}

#[test]
fn unsupported_and_cross_family_packets_are_dropped() {
    let st = state(director(
        Scheduler::Rr,
        Mode::Nat,
        &[("10.0.0.11", 1, false)],
    ));
    let mut w = worker(&st, 8);
    let mut icmp = frame(&FrameSpec::new(ip("1.1.1.1"), ip("192.168.0.100"), 1, 8, 0));
    assert_eq!(
        send(&mut w, &st, &mut icmp, 0),
        Verdict::Drop(DropReason::Unsupported)
    );
    let mut v6 = packet(6, "2001:db8::1", 1000, "2001:db8::100", 80, TCP_SYN);
    assert_eq!(
        send(&mut w, &st, &mut v6, 0),
        Verdict::Drop(DropReason::BadPacket)
    );
    assert!(w.table().is_empty());
    let c = w.counters();
    assert_eq!(c.drops[DropReason::Unsupported.index()], 1);
    assert_eq!(c.drops[DropReason::BadPacket.index()], 1);
}

// ---- ICMP errors about NAT connections ----

/// The folded sum of the ICMP message of `f` from scratch (ICMPv6 with its pseudo-header).
fn icmp_sum_of(f: &[u8]) -> u32 {
    let x = facts(f);
    match x.family {
        flowgate_config::flows::Family::V4 => {
            let total = u16::from_be_bytes([f[x.l3_offset + 2], f[x.l3_offset + 3]]) as usize;
            ones_sum(0, &f[x.l4_offset..x.l3_offset + total])
        }
        flowgate_config::flows::Family::V6 => l4_sum(f, &x),
    }
}

/// An ICMP (ICMPv6 for IPv6 addresses) error `icmptype`/`code` from `src` to `dst`, quoting
/// the first `keep` bytes of the IP packet of frame `quoted`, with a valid checksum.
pub(crate) fn icmp_error(
    src: &str,
    dst: &str,
    icmptype: u8,
    code: u8,
    quoted: &[u8],
    keep: usize,
) -> Vec<u8> {
    let q = facts(quoted);
    let pkt = &quoted[q.l3_offset..];
    let pkt = &pkt[..keep.min(pkt.len())];
    let proto = if src.contains(':') { 58 } else { 1 };
    let mut spec = FrameSpec::new(ip(src), ip(dst), proto, icmptype.into(), code.into());
    spec.payload = pkt.len();
    let mut f = frame(&spec);
    let x = facts(&f);
    f[x.l4_offset + 8..].copy_from_slice(pkt);
    f[x.l4_offset + 2..x.l4_offset + 4].fill(0);
    let c = !(icmp_sum_of(&f) as u16);
    f[x.l4_offset + 2..x.l4_offset + 4].copy_from_slice(&c.to_be_bytes());
    assert_eq!(icmp_sum_of(&f), 0xffff);
    f
}

/// The packet an ICMP error quotes, as a frame of its own (to parse and verify it).
pub(crate) fn quoted(f: &[u8]) -> Vec<u8> {
    let x = facts(f);
    let mut q = f[..x.l3_offset].to_vec();
    q.extend_from_slice(&f[x.l4_offset + 8..]);
    q
}

/// Everything an ICMP error's receiver checks: outer IPv4 header, ICMP checksum, and, when the
/// quoted packet is whole, its IPv4 header and TCP/UDP checksums, all recomputed from scratch.
pub(crate) fn assert_icmp_checksums(f: &[u8], whole: bool) {
    let x = facts(f);
    if x.src.is_ipv4() {
        assert_eq!(
            ones_sum(0, &f[x.l3_offset..x.l4_offset]),
            0xffff,
            "outer IPv4"
        );
        let q = x.l4_offset + 8;
        assert_eq!(ones_sum(0, &f[q..q + 20]), 0xffff, "quoted IPv4 header");
    }
    assert_eq!(icmp_sum_of(f), 0xffff, "ICMP checksum");
    if whole {
        assert_checksums(&quoted(f));
    }
}

fn nat_with_port(server: &str, port: Option<u16>) -> DirectorState {
    let mut d = director(Scheduler::Rr, Mode::Nat, &[(server, 1, false)]);
    d.servers[0].port = port;
    state(d)
}

/// (proto, client, vip, server, a router on the servers' side, a router on the client's side)
const ICMP_CASES: &[(u8, &str, &str, &str, &str, &str)] = &[
    (
        17,
        "192.168.1.7",
        "192.168.0.100",
        "10.0.0.11",
        "10.0.0.254",
        "192.168.1.254",
    ),
    (
        6,
        "192.168.1.7",
        "192.168.0.100",
        "10.0.0.11",
        "10.0.0.254",
        "192.168.1.254",
    ),
    (
        17,
        "2001:db8::7",
        "2001:db8::100",
        "fd00::11",
        "fd00::fe",
        "2001:db8::fe",
    ),
    (
        6,
        "2001:db8::7",
        "2001:db8::100",
        "fd00::11",
        "fd00::fe",
        "2001:db8::fe",
    ),
];

#[test]
fn icmp_errors_from_the_server_side_reach_the_client_translated() {
    for &(proto, client, vip, server, router, _) in ICMP_CASES {
        let v6 = client.contains(':');
        let st = nat_with_port(server, Some(8080));
        let mut w = worker(&st, 64);
        let mut fwd = packet(proto, client, 40000, vip, 443, TCP_SYN);
        server_of(send(&mut w, &st, &mut fwd, 0));
        // what the server got: client:40000 -> server:8080
        let (unreach, port_unreach, too_big) = if v6 { (1, 4, (2, 0)) } else { (3, 3, (3, 4)) };
        for (from, (t, code), outer_src) in [
            (server, (unreach, port_unreach), vip),
            (router, too_big, router),
        ] {
            let mut e = icmp_error(from, client, t, code, &fwd, usize::MAX);
            let before = e.clone();
            let x = facts(&e);
            let v = w
                .icmp(&st, &mut e, &x, 5)
                .expect("an error about the connection");
            assert_eq!(
                v,
                Verdict::Forward {
                    server: 0,
                    to: ip(client),
                    new: false
                },
                "{proto} {from}"
            );
            let o = facts(&e);
            assert_eq!(
                (o.src, o.dst),
                (ip(outer_src), ip(client)),
                "{proto} {from}"
            );
            let q = quoted(&e);
            let qx = facts(&q);
            assert_eq!((qx.src, qx.dst), (ip(client), ip(vip)), "{proto} {from}");
            assert_eq!(ports(&q), (40000, 443));
            assert_icmp_checksums(&e, true);
            assert_eq!(e.len(), before.len());
            // type, code and the quoted payload are kept
            assert_eq!(
                e[x.l4_offset..x.l4_offset + 2],
                before[x.l4_offset..x.l4_offset + 2]
            );
            assert_eq!(e[e.len() - 6..], before[before.len() - 6..]);
        }
        let c = w.counters();
        assert_eq!((c.icmp_out, c.icmp_in, c.conns), (2, 0, 1));
    }
}

#[test]
fn icmp_errors_from_the_client_side_reach_the_server_translated() {
    for &(proto, client, vip, server, _, router) in ICMP_CASES {
        let st = nat_with_port(server, Some(8080));
        let mut w = worker(&st, 64);
        let mut fwd = packet(proto, client, 40000, vip, 443, TCP_SYN);
        server_of(send(&mut w, &st, &mut fwd, 0));
        let mut r = packet(proto, server, 8080, client, 40000, TCP_SYN | TCP_ACK);
        let rx = facts(&r);
        w.reply(&st, &mut r, &rx, 1).expect("reply");
        // what the client got: VIP:443 -> client:40000; the client (or a router) answers it
        for from in [client, router] {
            let t = if client.contains(':') { 1 } else { 3 };
            let mut e = icmp_error(from, vip, t, 3, &r, usize::MAX);
            let x = facts(&e);
            let v = w
                .icmp(&st, &mut e, &x, 5)
                .expect("an error about the connection");
            assert_eq!(
                v,
                Verdict::Forward {
                    server: 0,
                    to: ip(server),
                    new: false
                },
                "{proto} {from}"
            );
            let o = facts(&e);
            assert_eq!((o.src, o.dst), (ip(from), ip(server)), "{proto} {from}");
            let q = quoted(&e);
            let qx = facts(&q);
            assert_eq!((qx.src, qx.dst), (ip(server), ip(client)), "{proto} {from}");
            assert_eq!(ports(&q), (8080, 40000));
            assert_icmp_checksums(&e, true);
        }
        assert_eq!((w.counters().icmp_in, w.counters().icmp_out), (2, 0));
    }
}

/// Gateway and tunnel modes (IPVS `ip_vs_icmp_xmit`): an error from the client's side about a
/// server's answer (which went to the client directly, from the VIP) reaches the appliance
/// and goes, unchanged, to the connection's server; anything else is not the director's.
#[test]
fn client_side_icmp_errors_go_unchanged_to_the_server_in_gateway_and_tunnel_modes() {
    for mode in [Mode::Gateway, Mode::Tunnel] {
        for &(proto, client, vip, server, _, router) in ICMP_CASES {
            let st = state(director(Scheduler::Rr, mode, &[(server, 1, false)]));
            let mut w = worker(&st, 64);
            let mut fwd = packet(proto, client, 40000, vip, 443, TCP_SYN);
            server_of(send(&mut w, &st, &mut fwd, 0));
            let t = if client.contains(':') { 1 } else { 3 };
            // the server's answer, straight to the client: VIP:443 -> client:40000
            let answer = packet(proto, vip, 443, client, 40000, TCP_SYN | TCP_ACK);
            for from in [client, router] {
                let mut e = icmp_error(from, vip, t, 3, &answer, usize::MAX);
                let before = e.clone();
                let x = facts(&e);
                let v = w.icmp(&st, &mut e, &x, 5).expect("about the connection");
                let want = Verdict::Forward {
                    server: 0,
                    to: ip(server),
                    new: false,
                };
                assert_eq!(v, want, "{mode:?} {proto} {from}");
                assert_eq!(e, before, "forwarded unchanged");
            }
            // about another client port, or sent elsewhere than the VIP: not ours
            let other = packet(proto, vip, 443, client, 40001, TCP_ACK);
            let mut e = icmp_error(client, vip, t, 3, &other, usize::MAX);
            let x = facts(&e);
            assert_eq!(w.icmp(&st, &mut e, &x, 6), None, "{mode:?} {proto}");
            let mut e = icmp_error(client, server, t, 3, &answer, usize::MAX);
            let x = facts(&e);
            assert_eq!(w.icmp(&st, &mut e, &x, 6), None, "{mode:?} {proto}");
            assert_eq!((w.counters().icmp_in, w.counters().icmp_out), (2, 0));
        }
    }
}

#[test]
fn icmp_errors_quoting_a_cut_packet_are_translated_the_same() {
    for &(proto, client, vip, server, _, _) in ICMP_CASES {
        let v6 = client.contains(':');
        let st = nat_with_port(server, Some(8080));
        let mut w = worker(&st, 64);
        let mut fwd = packet(proto, client, 40000, vip, 443, TCP_SYN);
        server_of(send(&mut w, &st, &mut fwd, 0));
        let hdr = if v6 { 40 } else { 20 };
        let t = if v6 { 1 } else { 3 };
        let mut whole = icmp_error(server, client, t, 3, &fwd, usize::MAX);
        let wx = facts(&whole);
        w.icmp(&st, &mut whole, &wx, 1).expect("whole");
        let csum_at = if proto == 6 { 16 } else { 6 };
        // the quoted IP header and 8 bytes (RFC 792), and a bit more
        for extra in [8usize, 12, 17, 18, 20] {
            let mut e = icmp_error(server, client, t, 3, &fwd, hdr + extra);
            let x = facts(&e);
            let v = w.icmp(&st, &mut e, &x, 1);
            assert!(v.is_some(), "{proto} {client} +{extra}");
            assert_icmp_checksums(&e, false);
            let q = x.l4_offset + 8 + hdr;
            // same rewrite as the whole quote where the bytes exist
            assert_eq!(e[q..q + 4], whole[wx.l4_offset + 8 + hdr..][..4]);
            assert_eq!(e[x.l4_offset + 8..q], whole[wx.l4_offset + 8..][..hdr]);
            if csum_at + 2 <= extra {
                // the L4 checksum was quoted: updated as in the whole packet
                assert_eq!(
                    e[q + csum_at..q + csum_at + 2],
                    whole[wx.l4_offset + 8 + hdr + csum_at..][..2],
                    "{proto} {client} +{extra}"
                );
            }
        }
        // less than 8 bytes of TCP/UDP: not handled, untouched
        for extra in [0usize, 4, 7] {
            let mut e = icmp_error(server, client, t, 3, &fwd, hdr + extra);
            let before = e.clone();
            let x = facts(&e);
            assert_eq!(w.icmp(&st, &mut e, &x, 1), None, "+{extra}");
            assert_eq!(e, before);
        }
    }
}

#[test]
fn unrelated_or_broken_icmp_is_not_handled() {
    let st = nat_with_port("10.0.0.11", None);
    let mut w = worker(&st, 64);
    let (client, vip, server) = ("192.168.1.7", "192.168.0.100", "10.0.0.11");
    let mut fwd = packet(17, client, 40000, vip, 53, 0);
    server_of(send(&mut w, &st, &mut fwd, 0));
    let check = |w: &mut DirectorWorker, mut e: Vec<u8>, why: &str| {
        let before = e.clone();
        let x = facts(&e);
        assert_eq!(w.icmp(&st, &mut e, &x, 1), None, "{why}");
        assert_eq!(e, before, "{why}: untouched");
    };
    // about another connection (another client port)
    let other = packet(17, client, 40001, server, 53, 0);
    check(
        &mut w,
        icmp_error(server, client, 3, 3, &other, usize::MAX),
        "no connection",
    );
    // not an error: an echo request carrying the same bytes
    check(
        &mut w,
        icmp_error(server, client, 8, 0, &fwd, usize::MAX),
        "echo",
    );
    // not sent to the quoted packet's source
    check(
        &mut w,
        icmp_error(server, "192.168.1.8", 3, 3, &fwd, usize::MAX),
        "elsewhere",
    );
    // a wrong ICMP checksum
    let mut bad = icmp_error(server, client, 3, 3, &fwd, usize::MAX);
    let x = facts(&bad);
    bad[x.l4_offset + 2] ^= 0x40;
    check(&mut w, bad, "checksum");
    // a quoted packet that is no TCP/UDP, or a non-first fragment
    let gre = frame(&FrameSpec::new(ip(client), ip(server), 47, 0, 0));
    check(
        &mut w,
        icmp_error(server, client, 3, 3, &gre, usize::MAX),
        "gre",
    );
    let mut frag = fwd.clone();
    frag[14 + 6..14 + 8].copy_from_slice(&185u16.to_be_bytes());
    check(
        &mut w,
        icmp_error(server, client, 3, 3, &frag, usize::MAX),
        "fragment",
    );
    // the VIP's own reply quoted with the wrong ports
    let r = packet(17, vip, 54, client, 40000, 0);
    check(
        &mut w,
        icmp_error(client, vip, 3, 3, &r, usize::MAX),
        "no such reply",
    );
    assert_eq!((w.counters().icmp_in, w.counters().icmp_out), (0, 0));

    // gateway mode tracks no NAT connection: nothing to translate
    let gw = state(director(
        Scheduler::Rr,
        Mode::Gateway,
        &[(server, 1, false)],
    ));
    let mut g = worker(&gw, 8);
    let mut f = packet(17, client, 40000, vip, 53, 0);
    server_of(send(&mut g, &gw, &mut f, 0));
    let mut e = icmp_error(server, client, 3, 3, &f, usize::MAX);
    let x = facts(&e);
    assert_eq!(g.icmp(&gw, &mut e, &x, 1), None);
}

#[test]
fn icmp_errors_change_no_connection() {
    let mut d = director(Scheduler::Rr, Mode::Nat, &[("10.0.0.11", 1, false)]);
    d.timeouts.udp = Duration::from_secs(300);
    let st = state(d);
    let mut w = worker(&st, 64);
    let mut fwd = packet(17, "192.168.1.7", 40000, "192.168.0.100", 53, 0);
    server_of(send(&mut w, &st, &mut fwd, 0));
    assert_eq!(w.table().len(), 1);
    for t in [100_000, 200_000, 299_000] {
        let mut e = icmp_error("10.0.0.11", "192.168.1.7", 3, 3, &fwd, usize::MAX);
        let x = facts(&e);
        assert!(w.icmp(&st, &mut e, &x, t).is_some());
    }
    assert_eq!(w.table().len(), 1, "no connection made");
    assert_eq!(w.counters().conns, 1);
    // the errors did not restart the timer: 300 s after the last datagram it is gone
    let mut e = icmp_error("10.0.0.11", "192.168.1.7", 3, 3, &fwd, usize::MAX);
    let x = facts(&e);
    assert_eq!(w.icmp(&st, &mut e, &x, 300_000), None);
    assert!(w.table().is_empty());
}

#[test]
fn malformed_icmp_errors_never_panic() {
    let st = nat_with_port("10.0.0.11", Some(8080));
    let mut w = worker(&st, 64);
    for (client, vip, server) in [
        ("192.168.1.7", "192.168.0.100", "10.0.0.11"),
        ("2001:db8::7", "2001:db8::100", "fd00::11"),
    ] {
        let st6;
        let st = if client.contains(':') {
            st6 = nat_with_port(server, Some(8080));
            &st6
        } else {
            &st
        };
        let mut w6;
        let w = if client.contains(':') {
            w6 = worker(st, 64);
            &mut w6
        } else {
            &mut w
        };
        let mut fwd = packet(6, client, 40000, vip, 443, TCP_SYN);
        server_of(send(w, st, &mut fwd, 0));
        let t = if client.contains(':') { 1 } else { 3 };
        let good = icmp_error(server, client, t, 3, &fwd, usize::MAX);
        let x = facts(&good);
        // the frame cut short under facts that claim more
        for n in 0..good.len() {
            let mut f = good[..n].to_vec();
            assert_eq!(w.icmp(st, &mut f, &x, 1), None, "prefix {n}");
            assert_eq!(icmp::embedded(&f, &x), None);
        }
        // every byte of the quoted part garbled (checksum fixed so it is looked at)
        let mut x0: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2000 {
            let mut f = good.clone();
            for _ in 0..3 {
                x0 ^= x0 << 13;
                x0 ^= x0 >> 7;
                x0 ^= x0 << 17;
                let at = x.l4_offset + 8 + (x0 as usize) % (f.len() - x.l4_offset - 8);
                f[at] = (x0 >> 32) as u8;
            }
            f[x.l4_offset + 2..x.l4_offset + 4].fill(0);
            let c = !(icmp_sum_of(&f) as u16);
            f[x.l4_offset + 2..x.l4_offset + 4].copy_from_slice(&c.to_be_bytes());
            if let Some(Verdict::Forward { .. }) = w.icmp(st, &mut f, &x, 1) {
                assert_eq!(icmp_sum_of(&f), 0xffff);
            }
        }
    }
}
