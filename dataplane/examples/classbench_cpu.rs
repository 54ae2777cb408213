//! The classifier's own time per packet on a ClassBench set, in CPU time of the calling
//! thread, for the dataplane benchmark on a shared machine.
//!
//! ```text
//! cargo run --release -p flowgate-dataplane --example classbench_cpu -- \
//!     --rules R --trace T [--iters N]
//! ```
//!
//! Same rules form, verification and batched loop as `flowgate bench classbench`
//! ([`classbench::compile`], [`classbench::verify`], `classify_batch` over chunks of
//! [`BATCH`] keys), but the timed loop is charged by this thread's on-CPU nanoseconds (first
//! field of `/proc/thread-self/schedstat`) rather than by wall clock, so time the thread spent
//! preempted by other work on the machine does not count. The kernel updates that counter at
//! scheduler ticks, so the timed loop runs at least `--iters` passes and at least one second of
//! wall time. Prints one line: `batched_cpu_ns_per_pkt wall_ns_per_pkt lookups`.

#[path = "support/cpu_time.rs"]
mod cpu_time;
use cpu_time::thread_cpu_ns;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use flowgate_dataplane::classify::classbench::{self, load_rules, load_trace};
use flowgate_dataplane::classify::{Key, Verdict, BATCH};

const USAGE: &str = "usage: classbench_cpu --rules RULES --trace TRACE [--iters N]";

struct Args {
    rules: PathBuf,
    trace: PathBuf,
    iters: u32,
}

fn parse_args() -> Result<Args, String> {
    let mut rules = None;
    let mut trace = None;
    let mut iters = 200u32;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--rules" => rules = Some(PathBuf::from(val("--rules")?)),
            "--trace" => trace = Some(PathBuf::from(val("--trace")?)),
            "--iters" => {
                let v = val("--iters")?;
                iters = v.parse().map_err(|_| format!("bad --iters {v:?}"))?;
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Args {
        rules: rules.ok_or("--rules is required")?,
        trace: trace.ok_or("--trace is required")?,
        iters: iters.max(1),
    })
}

fn run(args: &Args) -> Result<(f64, f64, u64), String> {
    let rules = load_rules(&args.rules).map_err(|e| e.to_string())?;
    let trace = load_trace(&args.trace).map_err(|e| e.to_string())?;
    let c = classbench::compile(&rules).map_err(|e| e.to_string())?;
    classbench::verify(&c, &trace).map_err(|e| e.to_string())?;
    let keys: Vec<Key> = trace.iter().map(|p| p.key).collect();
    let mut out = vec![Verdict::default(); BATCH];
    let mut sum = 0u64;
    // one untimed pass to warm the caches, as the timed passes see a warm structure too
    for chunk in keys.chunks(BATCH) {
        c.classify_batch(std::hint::black_box(chunk), &mut out);
    }
    let cpu0 = thread_cpu_ns()?;
    let t0 = Instant::now();
    let mut passes = 0u64;
    while passes < u64::from(args.iters) || t0.elapsed().as_secs_f64() < 1.0 {
        for chunk in keys.chunks(BATCH) {
            c.classify_batch(std::hint::black_box(chunk), &mut out);
            sum = sum.wrapping_add(u64::from(out[0].rule));
        }
        passes += 1;
    }
    let wall = t0.elapsed().as_nanos() as f64;
    let cpu = (thread_cpu_ns()? - cpu0) as f64;
    std::hint::black_box(sum);
    let lookups = passes * keys.len() as u64;
    Ok((cpu / lookups as f64, wall / lookups as f64, lookups))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("classbench_cpu: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok((cpu, wall, n)) => {
            println!("{cpu:.2} {wall:.2} {n}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("classbench_cpu: {e}");
            ExitCode::FAILURE
        }
    }
}
