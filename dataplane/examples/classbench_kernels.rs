//! Every lookup kernel this CPU can run on one ClassBench set, side by side, in on-CPU time
//! of the calling thread (for A/B comparisons on a shared machine).
//!
//! ```text
//! cargo run --release -p flowgate-dataplane --example classbench_kernels -- \
//!     RULES TRACE [ITERS] [ROUNDS] [KERNEL|all] [batch|single|both]
//! ```
//!
//! Compiles the rules ([`classbench::compile`]), verifies every trace line with every kernel,
//! then runs `ROUNDS` rounds; in each round every selected kernel classifies the trace `ITERS`
//! times (batched: `classify_batch` over chunks of [`BATCH`] keys; single: `classify`), the
//! kernels alternating so that load changes hit them alike. Prints the best on-CPU ns per
//! packet of each (`/proc/thread-self/schedstat`; wall time where that is missing).

use std::process::ExitCode;
use std::time::Instant;

use flowgate_dataplane::classify::classbench::{self, load_rules, load_trace, thread_cpu_ns};
use flowgate_dataplane::classify::{Classifier, Kernel, Key, Verdict, BATCH};

fn on_cpu_ns(f: impl FnOnce()) -> f64 {
    let c0 = thread_cpu_ns();
    let t0 = Instant::now();
    f();
    let wall = t0.elapsed().as_nanos() as f64;
    match (c0, thread_cpu_ns()) {
        (Some(a), Some(b)) if b > a => (b - a) as f64,
        _ => wall,
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(rules), Some(trace)) = (args.first(), args.get(1)) else {
        return Err("usage: classbench_kernels RULES TRACE [ITERS] [ROUNDS] [KERNEL|all] [batch|single|both]".into());
    };
    let iters: u32 = args
        .get(2)
        .map_or(Ok(20), |v| v.parse())
        .map_err(|e| format!("ITERS: {e}"))?;
    let rounds: u32 = args
        .get(3)
        .map_or(Ok(3), |v| v.parse())
        .map_err(|e| format!("ROUNDS: {e}"))?;
    let which = args.get(4).map_or("all", String::as_str);
    let mode = args.get(5).map_or("both", String::as_str);
    let rules = load_rules(rules.as_ref()).map_err(|e| e.to_string())?;
    let trace = load_trace(trace.as_ref()).map_err(|e| e.to_string())?;
    let base = classbench::compile(&rules).map_err(|e| e.to_string())?;
    // Every kernel with the interleaved batch walk, and the scalar kernel with the per-key
    // batch loop (`loop`).
    let mut kernels: Vec<(String, Classifier)> = Kernel::all_supported()
        .into_iter()
        .filter(|k| which == "all" || which == k.name())
        .filter_map(|k| {
            let c = base.clone().with_interleaved_batches(true).with_kernel(k)?;
            Some((k.name().to_string(), c))
        })
        .collect();
    if which == "all" || which == "loop" {
        if let Some(c) = base
            .clone()
            .with_interleaved_batches(false)
            .with_kernel(Kernel::Scalar)
        {
            kernels.push(("loop".to_string(), c));
        }
    }
    for (k, c) in &kernels {
        classbench::verify(c, &trace).map_err(|e| format!("{k}: {e}"))?;
    }
    let keys: Vec<Key> = trace.iter().map(|p| p.key).collect();
    let n = f64::from(iters) * keys.len() as f64;
    let mut best = vec![(f64::MAX, f64::MAX); kernels.len()];
    let mut out = vec![Verdict::default(); BATCH];
    let mut sum = 0u64;
    for _ in 0..rounds {
        for ((_, c), b) in kernels.iter().zip(best.iter_mut()) {
            if mode != "single" {
                let t = on_cpu_ns(|| {
                    for _ in 0..iters {
                        for chunk in keys.chunks(BATCH) {
                            c.classify_batch(std::hint::black_box(chunk), &mut out);
                            sum = sum.wrapping_add(u64::from(out[0].rule));
                        }
                    }
                });
                b.0 = b.0.min(t / n);
            }
            if mode != "batch" {
                let t = on_cpu_ns(|| {
                    for _ in 0..iters {
                        for k in &keys {
                            sum = sum
                                .wrapping_add(u64::from(c.classify(std::hint::black_box(k)).rule));
                        }
                    }
                });
                b.1 = b.1.min(t / n);
            }
        }
    }
    std::hint::black_box(sum);
    for ((k, _), (b, s)) in kernels.iter().zip(&best) {
        println!("{k:7} batched {b:7.2} ns/pkt  single {s:7.2} ns/pkt (best on-CPU of {rounds})");
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("classbench_kernels: {e}");
            ExitCode::FAILURE
        }
    }
}
