//! Criterion benchmarks of the classifier hot path: batched (32) and single lookups.
//!
//! Uses a synthetic ClassBench-like IPv4 rule set built in code (the ClassBench files are not
//! in the repository), and, when `$FLOWGATE_CLASSBENCH` (default `../shared/classbench`)
//! holds them, the acl1/fw1/ipc1 10K sets with their traces.

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use flowgate_dataplane::classify::classbench::{compile, load_rules, load_trace, CbRule};
use flowgate_dataplane::classify::{Classifier, Key, Verdict, BATCH};

fn synthetic(n: usize) -> (Vec<CbRule>, Vec<Key>) {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed as u32
    };
    let mask = |l: u8| {
        if l == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(l))
        }
    };
    let mut rules = Vec::with_capacity(n);
    for _ in 0..n {
        let sl = [8u8, 16, 24, 32, 32, 0][(rnd() % 6) as usize];
        let dl = [8u8, 16, 24, 32, 32, 0][(rnd() % 6) as usize];
        let dport = match rnd() % 3 {
            0 => (0, 65535),
            1 => {
                let p = (rnd() % 1024) as u16;
                (p, p)
            }
            _ => (1024, 65535),
        };
        let proto = if rnd() % 4 == 0 { (0, 0) } else { (6, 0xff) };
        rules.push(CbRule {
            src: (rnd() & mask(sl), sl),
            dst: (rnd() & mask(dl), dl),
            sport: (0, 65535),
            dport,
            proto,
        });
    }
    rules.push(CbRule {
        src: (0, 0),
        dst: (0, 0),
        sport: (0, 65535),
        dport: (0, 65535),
        proto: (0, 0),
    });
    let keys = (0..4096)
        .map(|_| {
            let r = rules[(rnd() as usize) % rules.len()];
            Key::v4_ports(
                if r.proto.1 == 0 { 17 } else { r.proto.0 },
                r.src.0 | (rnd() & !mask(r.src.1)),
                r.dst.0 | (rnd() & !mask(r.dst.1)),
                rnd() as u16,
                r.dport.0,
            )
        })
        .collect();
    (rules, keys)
}

fn bench_set(c: &mut Criterion, name: &str, cl: &Classifier, keys: &[Key]) {
    let mut g = c.benchmark_group("classify");
    g.throughput(Throughput::Elements(keys.len() as u64));
    let mut out = vec![Verdict::default(); keys.len()];
    g.bench_function(BenchmarkId::new("batch32", name), |b| {
        b.iter(|| {
            for (k, o) in keys.chunks(BATCH).zip(out.chunks_mut(BATCH)) {
                cl.classify_batch(std::hint::black_box(k), o);
            }
        })
    });
    g.bench_function(BenchmarkId::new("single", name), |b| {
        b.iter(|| {
            let mut sum = 0u32;
            for k in keys {
                sum = sum.wrapping_add(cl.classify(std::hint::black_box(k)).rule);
            }
            sum
        })
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    let (rules, keys) = synthetic(5000);
    if let Ok(cl) = compile(&rules) {
        bench_set(c, "synthetic5k", &cl, &keys);
    }
    let dir = std::env::var_os("FLOWGATE_CLASSBENCH")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/classbench")
        });
    for set in ["acl1_10K", "fw1_10K", "ipc1_10K"] {
        let (r, t) = (
            dir.join(format!("{set}.rules")),
            dir.join(format!("{set}.trace")),
        );
        let (Ok(rules), Ok(trace)) = (load_rules(&r), load_trace(&t)) else {
            eprintln!("note: {set} not found in {}; skipped", dir.display());
            continue;
        };
        if let Ok(cl) = compile(&rules) {
            let keys: Vec<Key> = trace.iter().map(|p| p.key).collect();
            bench_set(c, set, &cl, &keys);
        }
    }
}

criterion_group! {
    name = classify;
    config = Criterion::default().sample_size(20);
    targets = benches
}
criterion_main!(classify);
