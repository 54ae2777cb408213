//! IPv4 LPM benchmark: synthesises a BGP-shaped table and lookup addresses, writes them for the
//! `rte_lpm` reference (`scripts/lpm-ref/rte_lpm_bench.c`, driven by `scripts/bench-lpm.sh`),
//! and measures flowgate's DIR-24-8 and DIR-16-8-8: build time, memory, lookups/s single and in
//! batches of 32. Prints one `RESULT` line per structure.
//!
//! ```text
//! cargo run --release -p flowgate-dataplane --example lpm_bench -- \
//!     --prefixes 500000 --lookups 1048576 --rounds 5 --seed 1 --out /tmp/lpm
//! ```

use std::hint::black_box;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use flowgate_dataplane::route::lpm::{Lpm4, NextHopId, Stride4, BATCH};
use flowgate_dataplane::route::synth;

struct Args {
    prefixes: usize,
    lookups: usize,
    rounds: usize,
    seed: u64,
    out: Option<PathBuf>,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        prefixes: 500_000,
        lookups: 1 << 20,
        rounds: 5,
        seed: 1,
        out: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().ok_or(format!("{k}: missing value"))?;
        let num = || v.parse::<u64>().map_err(|e| format!("{k} {v}: {e}"));
        match k.as_str() {
            "--prefixes" => a.prefixes = num()? as usize,
            "--lookups" => a.lookups = num()? as usize,
            "--rounds" => a.rounds = num()?.max(1) as usize,
            "--seed" => a.seed = num()?,
            "--out" => a.out = Some(PathBuf::from(&v)),
            _ => return Err(format!("unknown option {k}")),
        }
    }
    Ok(a)
}

/// The checksum both sides print: sum of (next hop + 1) over all lookups, misses count 0.
fn sum(o: Option<NextHopId>) -> u64 {
    o.map_or(0, |n| u64::from(n.0) + 1)
}

fn write_files(
    dir: &PathBuf,
    routes: &[(std::net::Ipv4Addr, u8, NextHopId)],
    addrs: &[u32],
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut p = std::io::BufWriter::new(std::fs::File::create(dir.join("prefixes.txt"))?);
    for (a, len, nh) in routes {
        writeln!(p, "{a}/{len} {}", nh.0)?;
    }
    p.flush()?;
    let mut f = std::io::BufWriter::new(std::fs::File::create(dir.join("addrs.txt"))?);
    for a in addrs {
        writeln!(f, "{a}")?;
    }
    f.flush()
}

fn main() -> Result<(), String> {
    let a = args()?;
    let routes = synth::bgp_v4(a.prefixes, 1 << 16, a.seed);
    let addrs = synth::lookups_v4(&routes, a.lookups, 900, a.seed ^ 0x5555);
    if let Some(dir) = &a.out {
        write_files(dir, &routes, &addrs).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    println!(
        "# {} prefixes, {} lookup addresses (90% drawn inside prefixes), {} rounds, best round",
        routes.len(),
        addrs.len(),
        a.rounds
    );
    for (name, stride) in [
        ("flowgate DIR-24-8", Stride4::S24),
        ("flowgate DIR-16-8-8", Stride4::S16),
    ] {
        let t = Instant::now();
        let lpm = Lpm4::build(stride, &routes).map_err(|e| e.to_string())?;
        let build = t.elapsed();

        let mut best_single = f64::MAX;
        let mut check_single = 0u64;
        for _ in 0..a.rounds {
            let t = Instant::now();
            let mut s = 0u64;
            let addrs: &[u32] = black_box(&addrs);
            for &x in addrs {
                s += sum(lpm.lookup_u32(x));
            }
            let el = t.elapsed().as_secs_f64();
            check_single = black_box(s);
            best_single = best_single.min(el);
        }

        let mut best_batch = f64::MAX;
        let mut check_batch = 0u64;
        let mut out = [None; BATCH];
        for _ in 0..a.rounds {
            let t = Instant::now();
            let mut s = 0u64;
            let addrs: &[u32] = black_box(&addrs);
            for chunk in addrs.chunks_exact(BATCH) {
                if let Ok(c) = <&[u32; BATCH]>::try_from(chunk) {
                    lpm.lookup_batch(c, &mut out);
                    s += out.iter().map(|o| sum(*o)).sum::<u64>();
                }
            }
            let el = t.elapsed().as_secs_f64();
            check_batch = black_box(s);
            best_batch = best_batch.min(el);
        }
        let batched = (addrs.len() / BATCH * BATCH) as f64;
        let n = addrs.len() as f64;
        println!(
            "RESULT impl=\"{name}\" build_ms={:.1} memory_mib={:.1} groups={} single_mlps={:.1} single_ns={:.2} batch_mlps={:.1} batch_ns={:.2} checksum={} checksum_batch={}",
            build.as_secs_f64() * 1e3,
            lpm.memory() as f64 / (1 << 20) as f64,
            lpm.groups(),
            n / best_single / 1e6,
            best_single / n * 1e9,
            batched / best_batch / 1e6,
            best_batch / batched * 1e9,
            check_single,
            check_batch,
        );
    }
    Ok(())
}
