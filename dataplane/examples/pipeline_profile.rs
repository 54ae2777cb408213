//! The worker's pipeline alone (no driver, no EAL) on a ClassBench set, for the per-stage
//! profile of `docs/benchmarks.md`: the frames of a trace go through [`Pipeline::ingress`]
//! from an inline port (`peer` = the other port, no kernel), as in `scripts/bench-dataplane.sh`,
//! in bursts of 32, their buffers recycled (no allocation in the timed loop); beside it, in the
//! same run, the flows classifier alone on the same packets' keys.
//!
//! ```text
//! cargo run --release -p flowgate-dataplane --example classbench_flows -- --rules R --out F
//! cargo run --release -p flowgate-dataplane --example pipeline_profile -- \
//!     --flows F --trace T [--limit 4096] [--iters N]
//! valgrind --tool=callgrind target/release/examples/pipeline_profile --flows F --trace T --iters 20
//! ```
//!
//! Prints `pipeline_cpu_ns_per_pkt classifier_cpu_ns_per_pkt packets` (thread CPU time, as
//! `classbench_cpu`). Under callgrind, the instruction counts per function give the stages'
//! shares independently of the machine's load.

#[path = "support/cpu_time.rs"]
mod cpu_time;
use cpu_time::thread_cpu_ns;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use flowgate_config::appliance::{parse_with_cpus, MacAddr};
use flowgate_config::flows::parse;
use flowgate_dataplane::build::trace_frame;
use flowgate_dataplane::classify::classbench::load_trace;
use flowgate_dataplane::classify::{Key, Verdict, BATCH};
use flowgate_dataplane::counters::WorkerCounters;
use flowgate_dataplane::route::SharedNeighbours;
use flowgate_dataplane::ruleset::RuleSet;
use flowgate_dataplane::wire::{self, Frame as WireFrame};
use flowgate_dataplane::worker::{Pipeline, PortRole, VecFrames, VecIo, DEFAULT_MTU};

const USAGE: &str = "usage: pipeline_profile --flows FLOWS --trace TRACE [--limit N] [--iters N]";

const CONFIG: &str = r#"
flows = "bench.flows"
[dataplane]
workers = [0]
default_flow = "deny"
default_outflow = "permit"
[[port]]
name = "in0"
device = "net_null0"
kernel = false
peer = "out0"
[[port]]
name = "out0"
device = "net_null1"
kernel = false
"#;

struct Args {
    flows: PathBuf,
    trace: PathBuf,
    limit: usize,
    iters: u32,
}

fn parse_args() -> Result<Args, String> {
    let (mut flows, mut trace, mut limit, mut iters) = (None, None, 4096usize, 200u32);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--flows" => flows = Some(PathBuf::from(val("--flows")?)),
            "--trace" => trace = Some(PathBuf::from(val("--trace")?)),
            "--limit" => {
                let v = val("--limit")?;
                limit = v.parse().map_err(|_| format!("bad --limit {v:?}"))?;
            }
            "--iters" => {
                let v = val("--iters")?;
                iters = v.parse().map_err(|_| format!("bad --iters {v:?}"))?;
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Args {
        flows: flows.ok_or("--flows is required")?,
        trace: trace.ok_or("--trace is required")?,
        limit: limit.max(1),
        iters: iters.max(1),
    })
}

fn run(args: &Args) -> Result<(f64, f64, u64), String> {
    let text = std::fs::read_to_string(&args.flows)
        .map_err(|e| format!("{}: {e}", args.flows.display()))?;
    let file = parse(&text)
        .map_err(|d| format!("{}: {} errors", args.flows.display(), d.len()))?
        .file;
    let app = parse_with_cpus("bench.toml", CONFIG, 1).map_err(|e| e.to_string())?;
    let rules = RuleSet::compile(file, &app, 1).map_err(|e| e.to_string())?;
    let trace = load_trace(&args.trace).map_err(|e| e.to_string())?;
    let frames: Vec<Vec<u8>> = trace
        .iter()
        .take(args.limit)
        .map(|p| {
            let k = &p.key;
            trace_frame(k.proto, k.src as u32, k.dst as u32, k.sport, k.dport, 64)
        })
        .collect();
    let iface = rules.flows.port_iface[0];
    let keys: Vec<Key> = frames
        .iter()
        .filter_map(|f| match wire::parse(f) {
            WireFrame::Ip(x) => Some(Key::from_facts(&x, iface)),
            _ => None,
        })
        .collect();
    let classifier_rules = ArcSwap::from_pointee(rules);
    let neighbours = SharedNeighbours::default();
    let roles = vec![
        PortRole {
            kernel: false,
            peer: Some(1),
            mac: MacAddr([2, 0, 0, 0, 0, 1]),
            mtu: DEFAULT_MTU,
        },
        PortRole {
            kernel: false,
            peer: None,
            mac: MacAddr([2, 0, 0, 0, 0, 2]),
            mtu: DEFAULT_MTU,
        },
    ];
    let counters = Arc::new(WorkerCounters::new(2));
    let mut p = Pipeline::new(
        0,
        roles,
        Arc::clone(&counters),
        &classifier_rules,
        &neighbours,
        VecIo::default(),
        Instant::now(),
    );
    // the bursts, their buffers moved back and forth between the input and the output
    let mut bursts: Vec<VecFrames> = frames
        .chunks(BATCH)
        .map(|c| VecFrames::of(c.iter().map(|f| &f[..])))
        .collect();
    let pass = |p: &mut Pipeline<'_, VecIo>, bursts: &mut [VecFrames]| {
        for b in bursts.iter_mut() {
            p.ingress(0, b, false);
            *b = VecFrames::new(p.io().sent.drain(..).map(|(_, f)| f));
        }
    };
    pass(&mut p, &mut bursts);
    let sent = counters.ports[0].rx.get();
    if sent != frames.len() as u64 {
        return Err(format!("{sent} of {} frames went through", frames.len()));
    }
    let cpu0 = thread_cpu_ns()?;
    for _ in 0..args.iters {
        pass(&mut p, &mut bursts);
    }
    let pipeline_ns = (thread_cpu_ns()? - cpu0) as f64;
    let n = frames.len() as u64 * u64::from(args.iters);
    // the classifier alone, same keys, same batches
    let rules = classifier_rules.load();
    let mut out = [Verdict::default(); BATCH];
    let cpu0 = thread_cpu_ns()?;
    for _ in 0..args.iters {
        for chunk in keys.chunks(BATCH) {
            rules
                .flows
                .classifier
                .classify_batch(std::hint::black_box(chunk), &mut out[..chunk.len()]);
        }
    }
    let cls_ns = (thread_cpu_ns()? - cpu0) as f64;
    // thread CPU time comes from the scheduler's accounting, ticked per few ms: a run much
    // shorter than that reads as 0 (fine under callgrind, which counts instructions)
    if pipeline_ns.min(cls_ns) < 100e6 {
        eprintln!(
            "pipeline_profile: the timed runs took {:.0} and {:.0} ms of CPU: too short for \
             per-packet times, raise --iters (instruction counts under callgrind are fine)",
            pipeline_ns / 1e6,
            cls_ns / 1e6
        );
    }
    let drops: u64 = counters.drops.iter().map(|c| c.get()).sum();
    if drops != 0 {
        return Err(format!(
            "{drops} frames dropped: the flows must permit every frame"
        ));
    }
    Ok((
        pipeline_ns / n as f64,
        cls_ns / (keys.len() as u64 * u64::from(args.iters)) as f64,
        n,
    ))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("pipeline_profile: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok((pipe, cls, n)) => {
            println!("{pipe:.2} {cls:.2} {n}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pipeline_profile: {e}");
            ExitCode::FAILURE
        }
    }
}
