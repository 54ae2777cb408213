//! The burst path against the per-packet one: `forward_burst`, and `forward` after the
//! prefetch calls, give the same verdicts, rewritten frames, counters and tables as plain
//! `forward` over random mixed sequences (new and established connections, TCP flags of
//! every kind, UDP, unsupported and cross-family packets, NAT replies, expiry, a small table
//! that fills up, servers going down and up, persistence).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use flowgate_config::appliance::{
    Check, CheckKind, Director, Mode, Persistence, Scheduler, Server, Timeouts,
};

use super::conntrack::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};
use super::*;
use crate::build::{frame, FrameSpec};
use crate::classify::Key;
use crate::wire::{parse, Frame, IpFacts};

const VIP: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 100);

fn director(scheduler: Scheduler, mode: Mode, persistence: bool) -> Director {
    Director {
        name: "d".into(),
        max_connections: 1 << 16,
        scheduler,
        mode,
        persistence: persistence.then_some(Persistence {
            timeout: Duration::from_secs(30),
            netmask_len: 30,
        }),
        check: Check {
            kind: CheckKind::None,
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 3,
            port: None,
        },
        timeouts: Timeouts {
            tcp: Duration::from_secs(20),
            tcp_fin: Duration::from_secs(5),
            udp: Duration::from_secs(8),
        },
        virtual_service: None,
        hash_seed: None,
        sloppy: false,
        announce: None,
        servers: (0..4u8)
            .map(|i| Server {
                name: format!("s{i}"),
                address: IpAddr::V4(Ipv4Addr::new(10, 0, 0, i + 1)),
                port: (i % 2 == 0).then_some(8080),
                weight: 1 + u32::from(i),
                sorry: false,
            })
            .collect(),
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn facts(f: &[u8]) -> IpFacts {
    match parse(f) {
        Frame::Ip(x) => x,
        other => panic!("not IP: {other:?}"),
    }
}

/// A random client-to-VIP packet from a small pool of clients (so connections are reused).
fn client_packet(r: &mut Rng) -> Vec<u8> {
    let c = r.below(48) as u8;
    let src = IpAddr::V4(Ipv4Addr::new(11, 0, 0, c / 4));
    let sport = 1000 + u16::from(c % 4);
    let (proto, dst, dport) = match r.below(40) {
        0 => (1, IpAddr::V4(VIP), 0),
        1 => (
            6,
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x100)),
            80,
        ),
        2..=7 => (17, IpAddr::V4(VIP), 53),
        8..=11 => (6, IpAddr::V4(VIP), 443),
        _ => (6, IpAddr::V4(VIP), 80),
    };
    let src = if dst.is_ipv6() {
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, u16::from(c)))
    } else {
        src
    };
    let mut spec = FrameSpec::new(src, dst, proto, sport, dport);
    spec.payload = 6;
    let mut f = frame(&spec);
    if proto == 6 {
        let flags = match r.below(10) {
            0..=2 => TCP_SYN,
            3..=6 => TCP_ACK,
            7 => TCP_FIN | TCP_ACK,
            8 => TCP_RST,
            _ => TCP_SYN | TCP_ACK,
        };
        let x = facts(&f);
        f[x.l4_offset + 13] = flags;
    }
    f
}

/// A server-to-client packet for one of the connections seen so far (or a stray one).
fn reply_packet(r: &mut Rng, seen: &[(IpAddr, u16, IpAddr, u16, u8)]) -> Vec<u8> {
    let (src, sport, dst, dport, proto) = if seen.is_empty() || r.below(8) == 0 {
        (
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9)),
            8080,
            IpAddr::V4(Ipv4Addr::new(11, 0, 0, 1)),
            1000,
            6,
        )
    } else {
        seen[r.below(seen.len() as u64) as usize]
    };
    let mut spec = FrameSpec::new(src, dst, proto, sport, dport);
    spec.payload = 6;
    let mut f = frame(&spec);
    if proto == 6 {
        let x = facts(&f);
        f[x.l4_offset + 13] = [TCP_SYN | TCP_ACK, TCP_ACK, TCP_FIN | TCP_ACK, TCP_RST]
            [r.below(4) as usize]
            | if r.below(2) == 0 { TCP_ACK } else { 0 };
    }
    f
}

/// How the worker under test is driven.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Way {
    PerPacket,
    Prefetch,
    Burst,
}

fn assert_same(a: &DirectorWorker, b: &DirectorWorker, what: &str) {
    assert_eq!(a.counters(), b.counters(), "{what}: counters");
    assert_eq!(a.table().len(), b.table().len(), "{what}: table size");
    assert_eq!(a.table().loads(), b.table().loads(), "{what}: loads");
}

/// Run `rounds` random bursts through three workers (per packet, prefetch + per packet,
/// `forward_burst`) and compare everything after every burst.
fn differential(d: Director, seed: u64, rounds: usize, capacity: usize) -> DirectorCounters {
    let mut set = DirectorSet::build(&[d]).expect("director set");
    let mut r = Rng(seed);
    let opts = WorkerOptions {
        capacity,
        ..Default::default()
    };
    let st0 = set.get(0).expect("director").clone();
    let mut ws: Vec<(Way, DirectorWorker)> = [Way::PerPacket, Way::Prefetch, Way::Burst]
        .into_iter()
        .map(|w| (w, DirectorWorker::new(&st0, opts)))
        .collect();
    let mut now = 0u64;
    let mut seen = Vec::new();
    for round in 0..rounds {
        now += r.below(1500);
        if r.below(40) == 0 {
            now += 30_000; // let most things expire
        }
        if r.below(25) == 0 {
            let s = r.below(4) as usize;
            let up = r.below(2) == 0;
            set = set.with_server_up(0, s, up).expect("server");
        }
        let st = set.get(0).expect("director").clone();
        if r.below(3) == 0 {
            let budget = r.below(16) as usize;
            let removed: Vec<usize> = ws.iter_mut().map(|(_, w)| w.expire(now, budget)).collect();
            assert!(
                removed.windows(2).all(|x| x[0] == x[1]),
                "expire {removed:?}"
            );
        }
        // a burst of client packets, up to 40 so forward_burst splits it
        let n = 1 + r.below(40) as usize;
        let frames: Vec<Vec<u8>> = (0..n).map(|_| client_packet(&mut r)).collect();
        let fs: Vec<IpFacts> = frames.iter().map(|f| facts(f)).collect();
        let mut results = Vec::new();
        for (way, w) in &mut ws {
            let mut out = frames.clone();
            let mut verdicts = vec![Verdict::Drop(DropReason::BadPacket); n];
            match way {
                Way::PerPacket => {
                    for ((f, x), v) in out.iter_mut().zip(&fs).zip(&mut verdicts) {
                        *v = w.forward(&st, f, x, now);
                    }
                }
                Way::Prefetch => {
                    for x in &fs {
                        w.prefetch(x);
                        w.prefetch_reply(&st, x);
                    }
                    for x in &fs {
                        w.prefetch_conn(x);
                        w.prefetch_reply_conn(&st, x);
                    }
                    for stage in [Prefetch::Slot, Prefetch::Conn] {
                        for x in &fs {
                            w.prefetch_key(stage, &Key::from_facts(x, 0));
                            w.prefetch_reply_key(&st, stage, &Key::from_facts(x, 0));
                        }
                    }
                    for ((f, x), v) in out.iter_mut().zip(&fs).zip(&mut verdicts) {
                        *v = w.forward(&st, f, x, now);
                    }
                }
                Way::Burst => {
                    let mut refs: Vec<&mut [u8]> = out.iter_mut().map(|f| &mut f[..]).collect();
                    w.forward_burst(&st, &mut refs, &fs, now, &mut verdicts);
                }
            }
            results.push((out, verdicts));
        }
        for (k, res) in results.iter().enumerate().skip(1) {
            let what = format!("seed {seed} round {round} {:?}", ws[k].0);
            assert_eq!(res.1, results[0].1, "{what}: verdicts");
            assert_eq!(res.0, results[0].0, "{what}: frames");
            assert_same(&ws[0].1, &ws[k].1, &what);
        }
        // remember reply keys of the connections forwarded (NAT: server to client)
        for ((f, x), v) in results[0].0.iter().zip(&fs).zip(&results[0].1) {
            if let (Verdict::Forward { .. }, flowgate_config::flows::L4::Ports { sport, .. }) =
                (v, x.l4)
            {
                let after = facts(f);
                if let flowgate_config::flows::L4::Ports { dport, .. } = after.l4 {
                    if seen.len() < 256 {
                        seen.push((after.dst, dport, x.src, sport, x.proto));
                    }
                }
            }
        }
        // some NAT replies, the same way for every worker
        for _ in 0..r.below(6) {
            let f = reply_packet(&mut r, &seen);
            let x = facts(&f);
            let mut outs = Vec::new();
            for (_, w) in &mut ws {
                let mut g = f.clone();
                w.prefetch_reply(&st, &x);
                let v = w.reply(&st, &mut g, &x, now);
                outs.push((g, v));
            }
            assert!(outs.windows(2).all(|o| o[0] == o[1]), "replies differ");
        }
    }
    let total = ws[0].1.counters();
    assert!(total.packets_in > 0, "nothing forwarded");
    total
}

fn drops(c: &DirectorCounters, r: DropReason) -> u64 {
    c.drops[r.index()]
}

#[test]
fn burst_matches_per_packet_nat() {
    for seed in 1..=6u64 {
        let c = differential(
            director(Scheduler::Wrr, Mode::Nat, false),
            seed * 0x9e37_79b9,
            300,
            48,
        );
        // the sequences do reach the paths they are meant to
        assert!(c.packets_out > 0, "no NAT reply");
        assert!(c.nodest_expired > 0, "no server-down expiry");
        for r in [
            DropReason::NotSyn,
            DropReason::Unsupported,
            DropReason::BadPacket,
        ] {
            assert!(drops(&c, r) > 0, "no {r:?} drop");
        }
    }
}

#[test]
fn burst_matches_per_packet_nat_persistence_wlc() {
    for seed in 1..=4u64 {
        differential(
            director(Scheduler::Wlc, Mode::Nat, true),
            seed * 0x51_7cc1,
            300,
            40,
        );
    }
}

#[test]
fn burst_matches_per_packet_gateway_mh() {
    for seed in 1..=4u64 {
        differential(
            director(Scheduler::Mh, Mode::Gateway, false),
            seed * 0x2545_f491,
            300,
            1024,
        );
    }
}

#[test]
fn burst_matches_per_packet_with_a_full_table() {
    // 8 entries for 48 clients: new connections are refused (conntrack_full) most of the time
    let c = differential(director(Scheduler::Rr, Mode::Nat, false), 77, 400, 8);
    assert!(drops(&c, DropReason::ConntrackFull) > 0, "never full");
}

#[test]
fn forward_burst_of_nothing_is_nothing() {
    let set = DirectorSet::build(&[director(Scheduler::Rr, Mode::Nat, false)]).expect("set");
    let st = set.get(0).expect("director");
    let mut w = DirectorWorker::new(st, WorkerOptions::default());
    w.forward_burst(st, &mut [], &[], 0, &mut []);
    assert_eq!(
        w.counters(),
        DirectorWorker::new(st, WorkerOptions::default()).counters()
    );
}

#[test]
fn key_hashes_equal_facts_hashes() {
    // the worker prefetches from classifier keys: they must hash as `forward`/`reply` do,
    // or the prefetches fetch the wrong lines (harmless, but useless)
    for mode in [Mode::Nat, Mode::Gateway] {
        let set = DirectorSet::build(&[director(Scheduler::Rr, mode, false)]).expect("set");
        let st = set.get(0).expect("director");
        let w = DirectorWorker::new(st, WorkerOptions::default());
        let mut r = Rng(99);
        let mut some = 0;
        for _ in 0..500 {
            let f = client_packet(&mut r);
            let x = facts(&f);
            let k = Key::from_facts(&x, 3);
            assert_eq!(w.forward_hash_key(&k), w.forward_hash(&x), "{x:?}");
            assert_eq!(w.reply_hash_key(st, &k), w.reply_hash(st, &x), "{x:?}");
            some += usize::from(w.forward_hash(&x).is_some());
        }
        assert!(some > 400);
    }
}
