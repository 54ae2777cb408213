//! Director data-path benchmarks on one core: packets/s for new connections and for
//! established ones (1M connections in the table), NAT and gateway modes, each packet a
//! 64-byte frame (lookup or schedule + insert, TCP state, rewrite); Maglev table build time,
//! and Maglev disruption when one of N servers leaves (printed once).
//!
//! Run: `cargo bench -p flowgate-dataplane --bench director`.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use flowgate_config::appliance::{Check, CheckKind, Director, Mode, Scheduler, Server, Timeouts};
use flowgate_config::flows::L4;
use flowgate_dataplane::build::{frame, FrameSpec};
use flowgate_dataplane::director::hash::mix64;
use flowgate_dataplane::director::maglev::{Backend, Maglev, DEFAULT_TABLE_SIZE};
use flowgate_dataplane::director::rewrite::set_dst_mac;
use flowgate_dataplane::director::worker::BURST;
use flowgate_dataplane::director::{
    DirectorSet, DirectorState, DirectorWorker, DropReason, Verdict, WorkerOptions,
};
use flowgate_dataplane::wire::{parse, Frame, IpFacts};

const CONNS: u32 = 1_000_000;
const VIP: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 100);

fn director(scheduler: Scheduler, mode: Mode, n: u8) -> DirectorState {
    let d = Director {
        name: "bench".into(),
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
        // Established connections outlive the whole run (the new-connection bench's clock
        // runs 1 ms per packet).
        timeouts: Timeouts {
            tcp: Duration::from_secs(365 * 86_400),
            ..Timeouts::default()
        },
        virtual_service: None,
        hash_seed: None,
        sloppy: false,
        announce: None,
        servers: (0..n)
            .map(|i| Server {
                name: format!("s{i}"),
                address: IpAddr::V4(Ipv4Addr::new(10, 0, 0, i + 1)),
                port: Some(8080),
                weight: 1 + u32::from(i % 3),
                sorry: false,
            })
            .collect(),
    };
    let set = DirectorSet::build(&[d]).expect("director");
    (**set.get(0).expect("director")).clone()
}

/// A 64-byte TCP frame to the VIP and its facts; `client` picks the source address and port.
struct Packet {
    template: Vec<u8>,
    facts: IpFacts,
    buf: [u8; 64],
}

impl Packet {
    fn new(flags: u8) -> Packet {
        let mut spec = FrameSpec::new(
            IpAddr::V4(Ipv4Addr::new(1, 0, 0, 1)),
            IpAddr::V4(VIP),
            6,
            1,
            80,
        );
        spec.payload = 10;
        let mut template = frame(&spec);
        assert_eq!(template.len(), 64);
        template[14 + 20 + 13] = flags;
        let Frame::Ip(facts) = parse(&template) else {
            panic!("bench frame does not parse");
        };
        Packet {
            template,
            facts,
            buf: [0; 64],
        }
    }

    /// Fill the buffer with the frame of client `i` (address and port from `i`).
    #[inline]
    fn client(&mut self, i: u32) -> (&mut [u8], IpFacts) {
        self.buf.copy_from_slice(&self.template);
        let addr = Ipv4Addr::from(0x0b00_0000 | (i >> 4));
        let port = 1024 + (i & 0xf) as u16;
        self.buf[26..30].copy_from_slice(&addr.octets());
        self.buf[34..36].copy_from_slice(&port.to_be_bytes());
        let mut f = self.facts;
        f.src = IpAddr::V4(addr);
        f.l4 = L4::Ports {
            sport: port,
            dport: 80,
        };
        (&mut self.buf, f)
    }
}

/// How a burst of packets goes through the director, for the per-packet / burst comparison.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Way {
    /// `forward` on each packet in turn (what the worker does today).
    PerPacket,
    /// `prefetch` on the whole burst, then `forward` on each.
    Prefetch1,
    /// `prefetch`, then `prefetch_conn` on the whole burst, then `forward` on each.
    Prefetch2,
    /// `forward_burst` (hashes once, both prefetch stages, then the work).
    Burst,
}

impl Way {
    const ALL: [Way; 4] = [Way::PerPacket, Way::Prefetch1, Way::Prefetch2, Way::Burst];

    fn name(self) -> &'static str {
        match self {
            Way::PerPacket => "per-packet",
            Way::Prefetch1 => "prefetch-1",
            Way::Prefetch2 => "prefetch-2",
            Way::Burst => "forward_burst",
        }
    }
}

/// A burst of [`BURST`] 64-byte TCP frames to the VIP from chosen clients.
struct Burst {
    one: Packet,
    bufs: [[u8; 64]; BURST],
    facts: [IpFacts; BURST],
    verdicts: [Verdict; BURST],
}

impl Burst {
    fn new(flags: u8) -> Burst {
        let one = Packet::new(flags);
        let facts = [one.facts; BURST];
        Burst {
            one,
            bufs: [[0; 64]; BURST],
            facts,
            verdicts: [Verdict::Drop(DropReason::BadPacket); BURST],
        }
    }

    /// Fill the burst with the frames of clients `client(0..BURST)`.
    #[inline]
    fn fill(&mut self, mut client: impl FnMut(usize) -> u32) {
        for j in 0..BURST {
            let (b, f) = self.one.client(client(j));
            self.bufs[j].copy_from_slice(b);
            self.facts[j] = f;
        }
    }

    /// Run the burst through `w` the `way` given.
    #[inline]
    fn run(&mut self, way: Way, w: &mut DirectorWorker, st: &DirectorState, now: u64) {
        match way {
            Way::PerPacket => {
                for j in 0..BURST {
                    self.verdicts[j] = w.forward(st, &mut self.bufs[j], &self.facts[j], now);
                }
            }
            Way::Prefetch1 | Way::Prefetch2 => {
                for f in &self.facts {
                    w.prefetch(f);
                }
                if way == Way::Prefetch2 {
                    for f in &self.facts {
                        w.prefetch_conn(f);
                    }
                }
                for j in 0..BURST {
                    self.verdicts[j] = w.forward(st, &mut self.bufs[j], &self.facts[j], now);
                }
            }
            Way::Burst => {
                let mut bufs = self.bufs.iter_mut();
                let mut frames: [&mut [u8]; BURST] =
                    std::array::from_fn(|_| &mut bufs.next().expect("BURST buffers")[..]);
                w.forward_burst(st, &mut frames, &self.facts, now, &mut self.verdicts);
            }
        }
        black_box(&self.verdicts);
    }
}

fn filled(st: &DirectorState) -> DirectorWorker {
    filled_with(st, CONNS)
}

/// A worker whose table holds `conns` established connections (room for as many again).
fn filled_with(st: &DirectorState, conns: u32) -> DirectorWorker {
    let mut w = DirectorWorker::new(
        st,
        WorkerOptions {
            capacity: 2 * conns as usize,
            ..Default::default()
        },
    );
    let mut syn = Packet::new(0x02);
    let mut ack = Packet::new(0x10);
    for i in 0..conns {
        let (b, f) = syn.client(i);
        assert!(matches!(w.forward(st, b, &f, 0), Verdict::Forward { .. }));
        let (b, f) = ack.client(i);
        assert!(matches!(w.forward(st, b, &f, 0), Verdict::Forward { .. }));
    }
    w
}

/// `DIRECTOR_CPU_ONLY=1`: run only the CPU-time rates.
fn cpu_only() -> bool {
    std::env::var_os("DIRECTOR_CPU_ONLY").is_some()
}

fn established(c: &mut Criterion) {
    if cpu_only() {
        return;
    }
    let mut g = c.benchmark_group("director/established_1M");
    g.throughput(Throughput::Elements(1));
    for (name, mode) in [("nat", Mode::Nat), ("gateway", Mode::Gateway)] {
        let st = director(Scheduler::Wrr, mode, 10);
        let mut w = filled(&st);
        assert_eq!(w.table().len(), CONNS as usize);
        let mut ack = Packet::new(0x10);
        let mut i = 0u32;
        g.bench_function(name, |b| {
            b.iter(|| {
                // a pseudo-random established client each packet: no cache locality
                i = i.wrapping_add(1);
                let k = (mix64(u64::from(i)) % u64::from(CONNS)) as u32;
                let (buf, f) = ack.client(k);
                let v = w.forward(&st, buf, &f, 1);
                if mode == Mode::Gateway {
                    let _ = set_dst_mac(buf, [2, 0, 0, 0, 0, 9]);
                }
                black_box(v)
            })
        });
        assert_eq!(w.table().len(), CONNS as usize, "no connection lost");
    }
    g.finish();
}

/// Per-packet against burst prefetching, 32 packets an iteration, 1M connections, NAT.
fn established_burst(c: &mut Criterion) {
    if cpu_only() {
        return;
    }
    let mut g = c.benchmark_group("director/established_1M_burst32");
    g.throughput(Throughput::Elements(BURST as u64));
    let st = director(Scheduler::Wrr, Mode::Nat, 10);
    let mut w = filled(&st);
    let mut burst = Burst::new(0x10);
    let mut i = 0u32;
    for way in [Way::PerPacket, Way::Burst] {
        g.bench_function(format!("nat/{}", way.name()), |b| {
            b.iter(|| {
                burst.fill(|_| {
                    i = i.wrapping_add(1);
                    (mix64(u64::from(i)) % u64::from(CONNS)) as u32
                });
                burst.run(way, &mut w, &st, 1);
            })
        });
    }
    assert_eq!(w.table().len(), CONNS as usize, "no connection lost");
    g.finish();
}

fn new_connections(c: &mut Criterion) {
    if cpu_only() {
        return;
    }
    let mut g = c.benchmark_group("director/new_conn");
    g.throughput(Throughput::Elements(1));
    for (name, sched) in [
        ("nat_wrr", Scheduler::Wrr),
        ("nat_wlc", Scheduler::Wlc),
        ("nat_mh", Scheduler::Mh),
    ] {
        let st = director(sched, Mode::Nat, 10);
        // Start from a table holding 1M established connections; new SYNs come from other
        // clients, their SYN_RECV entries expire after 60 s of the simulated clock (which runs
        // 1 ms per packet), swept 128 entries per 32-packet burst as a worker would.
        let mut w = filled(&st);
        let mut syn = Packet::new(0x02);
        let mut i = 0u32;
        g.bench_function(name, |b| {
            b.iter(|| {
                i = i.wrapping_add(1);
                let now = 1 + u64::from(i);
                if i & 31 == 0 {
                    w.expire(now, 128);
                }
                let (buf, f) = syn.client(CONNS + (i % (1 << 27)));
                black_box(w.forward(&st, buf, &f, now))
            })
        });
        let dropped: u64 = w.counters().drops.iter().sum();
        eprintln!(
            "{name}: table {} entries after the run, {dropped} drops",
            w.table().len()
        );
    }
    g.finish();
}

fn backends(n: u16) -> Vec<Backend> {
    (0..n)
        .map(|i| {
            let mut addr = [0u8; 16];
            addr[10] = 0xff;
            addr[11] = 0xff;
            addr[12..].copy_from_slice(&[10, 0, (i >> 8) as u8, i as u8]);
            Backend {
                id: i,
                addr,
                port: 8080,
                weight: 1,
            }
        })
        .collect()
}

fn maglev(c: &mut Criterion) {
    if cpu_only() {
        return;
    }
    // Disruption: share of 1M keys remapped when one of N servers leaves (ideal 1/N).
    for n in [10u16, 100] {
        let all = backends(n);
        let a = Maglev::build(&all, DEFAULT_TABLE_SIZE).expect("table");
        let b = Maglev::build(&all[1..], DEFAULT_TABLE_SIZE).expect("table");
        let keys = 1_000_000u64;
        let moved = (0..keys)
            .filter(|&k| {
                let h = mix64(k ^ 0x5555);
                a.lookup(h) != b.lookup(h)
            })
            .count();
        eprintln!(
            "maglev disruption N={n} M={DEFAULT_TABLE_SIZE}: {:.4} of keys moved (ideal {:.4})",
            moved as f64 / keys as f64,
            1.0 / f64::from(n)
        );
    }
    let mut g = c.benchmark_group("director/maglev_build");
    for n in [10u16, 100, 1000] {
        let all = backends(n);
        g.bench_function(format!("M65537_N{n}"), |b| {
            b.iter_batched(
                || all.clone(),
                |all| black_box(Maglev::build(&all, DEFAULT_TABLE_SIZE)),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

/// This thread's CPU time (user + system) in clock ticks, from `/proc/thread-self/stat`.
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // fields 14 and 15 of the file; `after` starts at field 3
    f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)
}

/// Packets per second of *CPU time* (and of wall time) over `n` packets: on a shared machine
/// the wall-clock rate measures the neighbours as much as the code.
fn rate(name: &str, n: u32, mut one: impl FnMut(u32)) {
    const HZ: f64 = 100.0; // USER_HZ
    let (t0, c0) = (std::time::Instant::now(), cpu_ticks());
    for i in 0..n {
        one(i);
    }
    let (wall, cpu) = (t0.elapsed().as_secs_f64(), (cpu_ticks() - c0) as f64 / HZ);
    eprintln!(
        "cpu-time rate {name}: {:.2} Mpps per CPU-second, {:.2} Mpps wall, {:.0}% of a core",
        f64::from(n) / cpu.max(0.01) / 1e6,
        f64::from(n) / wall / 1e6,
        100.0 * cpu / wall
    );
}

/// Per-packet against the burst ways, on the same worker, interleaved (two rounds) so that
/// the neighbours' load falls on all of them alike; `n` packets each.
fn burst_rates(case: &str, w: &mut DirectorWorker, st: &DirectorState, conns: u32, n: u32) {
    let mut burst = Burst::new(0x10);
    let mut i = 0u32;
    for _round in 0..2 {
        for way in Way::ALL {
            rate(&format!("{case} {}", way.name()), n, |k| {
                if k % BURST as u32 != 0 {
                    return;
                }
                burst.fill(|_| {
                    i = i.wrapping_add(1);
                    (mix64(u64::from(i)) % u64::from(conns)) as u32
                });
                burst.run(way, w, st, 1);
            });
        }
    }
}

fn cpu_rates(_: &mut Criterion) {
    let burst_only = std::env::var_os("DIRECTOR_BURST_ONLY").is_some();
    let n = 5_000_000;
    // 10K: cache-resident; 32K in a 64K table: the size `flowgate run` gives each worker
    // (`WorkerOptions::default()`), 7 MiB of slab and index
    for conns in [10_000u32, 32_768] {
        let st = director(Scheduler::Wrr, Mode::Nat, 10);
        let mut w = filled_with(&st, conns);
        let name = format!("established_{}K/nat", conns / 1000);
        burst_rates(&name, &mut w, &st, conns, n);
    }
    for (name, mode) in [
        ("established_1M/nat", Mode::Nat),
        ("established_1M/gateway", Mode::Gateway),
    ] {
        let st = director(Scheduler::Wrr, mode, 10);
        let mut w = filled(&st);
        burst_rates(name, &mut w, &st, CONNS, n);
        assert_eq!(w.table().len(), CONNS as usize, "no connection lost");
    }
    {
        // new connections on top of 1M established ones, per packet and by forward_burst
        let st = director(Scheduler::Wrr, Mode::Nat, 10);
        let mut w = filled(&st);
        let mut burst = Burst::new(0x02);
        let mut next = CONNS;
        let mut now = 1u64;
        for _round in 0..2 {
            for way in [Way::PerPacket, Way::Burst] {
                rate(
                    &format!("new_conn/nat_wrr {}", way.name()),
                    2_000_000,
                    |k| {
                        if k % BURST as u32 != 0 {
                            return;
                        }
                        now += BURST as u64;
                        w.expire(now, 128);
                        burst.fill(|j| next + j as u32);
                        next += BURST as u32;
                        burst.run(way, &mut w, &st, now);
                    },
                );
            }
        }
        let dropped: u64 = w.counters().drops.iter().sum();
        eprintln!(
            "new_conn/nat_wrr (burst comparison): table {} entries after the run, {dropped} drops",
            w.table().len()
        );
    }
    if burst_only {
        return;
    }
    cpu_rates_per_packet();
}

/// The per-packet rates as first measured (one packet per call, no burst harness).
fn cpu_rates_per_packet() {
    // The same path with a cache-resident table: what the 1M-entry figures lose to DRAM/TLB.
    let st = director(Scheduler::Wrr, Mode::Nat, 10);
    let small = 10_000u32;
    let mut w = filled_with(&st, small);
    let mut ack = Packet::new(0x10);
    rate("established_10K/nat", 10_000_000, |i| {
        let k = (mix64(u64::from(i)) % u64::from(small)) as u32;
        let (buf, f) = ack.client(k);
        black_box(w.forward(&st, buf, &f, 1));
    });
    for (name, mode) in [
        ("established_1M/nat", Mode::Nat),
        ("established_1M/gateway", Mode::Gateway),
    ] {
        let st = director(Scheduler::Wrr, mode, 10);
        let mut w = filled(&st);
        let mut ack = Packet::new(0x10);
        rate(name, 10_000_000, |i| {
            let k = (mix64(u64::from(i)) % u64::from(CONNS)) as u32;
            let (buf, f) = ack.client(k);
            black_box(w.forward(&st, buf, &f, 1));
            if mode == Mode::Gateway {
                let _ = set_dst_mac(buf, [2, 0, 0, 0, 0, 9]);
            }
        });
    }
    let st = director(Scheduler::Wrr, Mode::Nat, 10);
    let mut w = filled(&st);
    let mut syn = Packet::new(0x02);
    rate("new_conn/nat_wrr", 5_000_000, |i| {
        let now = 1 + u64::from(i);
        if i & 31 == 0 {
            w.expire(now, 128);
        }
        let (buf, f) = syn.client(CONNS + i);
        black_box(w.forward(&st, buf, &f, now));
    });
    eprintln!(
        "new_conn/nat_wrr: table {} entries after the run",
        w.table().len()
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = cpu_rates, established, established_burst, new_connections, maglev
}
criterion_main!(benches);
