//! Criterion benches of the LPM structures on synthetic tables (`route::synth`): IPv4 DIR-24-8
//! and DIR-16-8-8 with 500K BGP-shaped prefixes, IPv6 with 100K global prefixes; one lookup
//! and a batch of 32. The comparison with `rte_lpm` in the same run is `scripts/bench-lpm.sh`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flowgate_dataplane::route::lpm::{Lpm4, Lpm6, Stride4, BATCH};
use flowgate_dataplane::route::synth;

fn v4(c: &mut Criterion) {
    let routes = synth::bgp_v4(500_000, 1 << 16, 1);
    let addrs = synth::lookups_v4(&routes, 1 << 16, 900, 2);
    let mut g = c.benchmark_group("lpm4");
    for (name, stride) in [("dir24_8", Stride4::S24), ("dir16_8_8", Stride4::S16)] {
        let Ok(lpm) = Lpm4::build(stride, &routes) else {
            return;
        };
        let mut i = 0usize;
        g.throughput(Throughput::Elements(1));
        g.bench_function(format!("{name}/single"), |b| {
            b.iter(|| {
                i = (i + 1) & (addrs.len() - 1);
                lpm.lookup_u32(black_box(addrs[i]))
            })
        });
        let mut j = 0usize;
        let mut out = [None; BATCH];
        g.throughput(Throughput::Elements(BATCH as u64));
        g.bench_function(format!("{name}/batch32"), |b| {
            b.iter(|| {
                j = (j + BATCH) & (addrs.len() - 1);
                if let Ok(a) = <&[u32; BATCH]>::try_from(&addrs[j..j + BATCH]) {
                    lpm.lookup_batch(black_box(a), &mut out);
                }
                out[0]
            })
        });
    }
    g.finish();
}

fn v6(c: &mut Criterion) {
    let routes = synth::global_v6(100_000, 1 << 16, 3);
    let mut rng = synth::XorShift::new(4);
    let addrs: Vec<std::net::Ipv6Addr> = (0..1 << 16)
        .map(|_| {
            let (p, len, _) = routes[rng.below(routes.len() as u64) as usize];
            let host = (u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64()))
                .checked_shr(u32::from(len))
                .unwrap_or(0);
            std::net::Ipv6Addr::from(u128::from(p) | host)
        })
        .collect();
    let Ok(lpm) = Lpm6::build(&routes) else {
        return;
    };
    let mut g = c.benchmark_group("lpm6");
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function("trie16_8/single", |b| {
        b.iter(|| {
            i = (i + 1) & (addrs.len() - 1);
            lpm.lookup(black_box(addrs[i]))
        })
    });
    g.finish();
}

criterion_group!(benches, v4, v6);
criterion_main!(benches);
