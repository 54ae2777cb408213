//! The cost of handing a NAT director packet to another worker (`flowgate_dataplane::handoff`):
//! the owner decision (`Steering::owner`, table Toeplitz) and the ring hop (`Ring::enqueue`,
//! multi-producer, then `Burst::rx_ring`, single consumer), in bursts of 32 mbufs with their tags.
//!
//! ```text
//! cargo run --release -p flowgate-dataplane --example handoff_bench -- [--packets N]
//! ```
//!
//! Prints `RESULT case=... cycles_per_pkt=... mpps=...` lines. `scripts/bench-handoff.sh` runs it
//! beside DPDK's own `ring_perf_autotest` (dpdk-test), the reference for the ring itself.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use flowgate_dataplane::director::steer::{owner, Steering, DEFAULT_RSS_KEY};
use flowgate_dataplane::dpdk::{tsc_cycles, Burst, Eal, Mempool, Ring, BURST_SIZE, SOCKET_ANY};

/// Mbufs circulating between the two threads.
const IN_FLIGHT: usize = 512;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn result(case: &str, packets: u64, cycles: u64, secs: f64) {
    println!(
        "RESULT case=\"{case}\" packets={packets} cycles_per_pkt={:.2} ns_per_pkt={:.2} mpps={:.2}",
        cycles as f64 / packets as f64,
        secs * 1e9 / packets as f64,
        packets as f64 / secs / 1e6
    );
}

fn main() {
    let packets = arg("--packets", 20_000_000);
    let eal_args: Vec<String> = [
        "handoff_bench",
        "--no-huge",
        "-m",
        "512",
        "--no-pci",
        "--no-shconf",
        "-l",
        "0-1",
        "--log-level=lib.eal:error",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let eal = match Eal::init(&eal_args[1..]) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("handoff_bench: EAL: {e}");
            std::process::exit(1);
        }
    };
    // the runtime directory DPDK made (empty with --no-shconf) is not needed past init
    let _ = flowgate_dataplane::runtime_files::remove_runtime_dir(
        &flowgate_dataplane::runtime_files::file_prefix(&eal_args),
    );
    let pool = Mempool::new("ho_bench_pool", 4095, 256, 2048 + 128, SOCKET_ANY).expect("pool");

    // 1. the owner decision: table Toeplitz vs the bit-by-bit hash, over pseudo-random IPv4
    // client endpoints
    let steering = Steering::round_robin(2);
    let reta: Vec<u16> = (0..128).map(|i| i % 2).collect();
    let n = packets.min(10_000_000);
    owner_case("owner: table Toeplitz (IPv4 endpoint)", n, |x| {
        steering.owner(false, u128::from(x), (x >> 7) as u16)
    });
    owner_case("owner: bitwise Toeplitz (IPv4 endpoint)", n, |x| {
        let a = std::net::IpAddr::V4(x.into());
        usize::from(owner(&DEFAULT_RSS_KEY, &reta, a, (x >> 7) as u16))
    });

    // 2. one thread: enqueue a tagged burst of 32, dequeue it (ring_perf's "burst enq/deq")
    let ring = Ring::new("ho_bench_a", 1024).expect("ring");
    let mut burst = Burst::new();
    while !burst.is_full() {
        burst.push(pool.alloc().expect("mbuf")).expect("room");
    }
    {
        let mut reader = ring.reader().expect("reader");
        let rounds = packets / BURST_SIZE as u64;
        let t0 = Instant::now();
        let c0 = tsc_cycles();
        let mut tags = 0u64;
        for r in 0..rounds {
            for i in 0..burst.len() {
                burst.set_tag(i, r as u32);
            }
            ring.enqueue(&mut burst);
            burst.rx_ring(&mut reader);
            tags += u64::from(burst.tag(0).unwrap_or(0));
        }
        result(
            "ring hop, one thread: tag + MP enqueue + SC dequeue, bursts of 32",
            rounds * BURST_SIZE as u64,
            tsc_cycles() - c0,
            t0.elapsed().as_secs_f64(),
        );
        black_box(tags);
        let t0 = Instant::now();
        let c0 = tsc_cycles();
        for _ in 0..rounds {
            ring.enqueue(&mut burst);
            burst.rx_ring(&mut reader);
        }
        result(
            "ring hop, one thread: MP enqueue + SC dequeue, bursts of 32, pointers only",
            rounds * BURST_SIZE as u64,
            tsc_cycles() - c0,
            t0.elapsed().as_secs_f64(),
        );
    }
    burst.clear();

    // 3. two threads on two cores: worker 0 hands bursts to worker 1 over a ring; worker 1
    // hands the mbufs back over a second ring (no allocation in the loop). With `touch`, both
    // write / read each mbuf's tag, as the hand-over does (the mbuf's cache line moves between
    // the cores); without, only pointers move (as DPDK's ring_perf_autotest measures).
    for (case, touch, name) in [
        ("ring hop, two cores, pointers only", false, "ho_bench_c"),
        (
            "ring hop, two cores, tags written and read",
            true,
            "ho_bench_d",
        ),
    ] {
        let (moved, cycles, secs) = two_cores(&eal, pool, packets, touch, name);
        result(case, moved, cycles, secs);
    }
}

/// Worker 0 sends `packets` mbufs to worker 1 through ring `name`; returns (moved, cycles,
/// seconds) as worker 0 saw them.
fn two_cores(eal: &Eal, pool: Mempool, packets: u64, touch: bool, name: &str) -> (u64, u64, f64) {
    let fwd = Ring::new(name, 1024).expect("ring");
    let back = Ring::new(&format!("{name}_back"), 1024).expect("ring");
    let mut stash = Burst::new();
    for _ in 0..IN_FLIGHT / BURST_SIZE {
        while !stash.is_full() {
            stash.push(pool.alloc().expect("mbuf")).expect("room");
        }
        back.enqueue(&mut stash);
    }
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let consumer = s.spawn(|| {
            let _ = core_pin(1);
            let _ = eal.register_thread();
            let mut reader = fwd.reader().expect("reader");
            let mut b = Burst::new();
            let mut got = 0u64;
            let mut tags = 0u64;
            while !done.load(Ordering::Relaxed) {
                if b.rx_ring(&mut reader) == 0 {
                    continue;
                }
                if touch {
                    for i in 0..b.len() {
                        tags = tags.wrapping_add(u64::from(b.tag(i).unwrap_or(0)));
                    }
                }
                got += b.len() as u64;
                while !b.is_empty() {
                    back.enqueue(&mut b);
                }
            }
            black_box(tags);
            eal.unregister_thread();
            got
        });
        let _ = core_pin(0);
        let mut reader = back.reader().expect("reader");
        let mut b = Burst::new();
        let mut sent = 0u64;
        let t0 = Instant::now();
        let c0 = tsc_cycles();
        while sent < packets {
            if b.rx_ring(&mut reader) == 0 {
                continue;
            }
            if touch {
                for i in 0..b.len() {
                    b.set_tag(i, sent as u32);
                }
            }
            sent += b.len() as u64;
            while !b.is_empty() {
                fwd.enqueue(&mut b);
            }
        }
        // wait until the consumer has taken them all
        while !fwd.is_empty() {
            std::hint::spin_loop();
        }
        let cycles = tsc_cycles() - c0;
        let secs = t0.elapsed().as_secs_f64();
        done.store(true, Ordering::Relaxed);
        let got = consumer.join().expect("consumer");
        (got, cycles, secs)
    })
}

/// `n` owner decisions by `f` over pseudo-random (xorshift) IPv4 endpoints.
fn owner_case(case: &str, n: u64, f: impl Fn(u32) -> usize) {
    let mut x = 0x9e37_79b9u32;
    let t0 = Instant::now();
    let c0 = tsc_cycles();
    let mut acc = 0usize;
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        acc = acc.wrapping_add(f(x));
    }
    result(case, n, tsc_cycles() - c0, t0.elapsed().as_secs_f64());
    black_box(acc);
}

fn core_pin(cpu: usize) -> bool {
    core_affinity::set_for_current(core_affinity::CoreId { id: cpu })
}
