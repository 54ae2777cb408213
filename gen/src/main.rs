//! `flowgate-gen`: the throughput lab's traffic generator (see the crate docs and
//! `docs/benchmarks.md`).
//!
//! ```text
//! flowgate-gen trial  --tx P --rx P --profile SRC --size S --rate PPS --duration S -- EAL...
//! flowgate-gen search --tx P --rx P --profile SRC --sizes 64,128,imix --trial S -- EAL...
//! flowgate-gen nft    --rules R --form linear|sets [--limit N] --out F
//! ```
//!
//! `trial` and `search` print one JSON record per line on stdout (each trial, then per size
//! a `result`) and a readable summary on stderr.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};

use flowgate_dataplane::classify::classbench::load_rules;
use flowgate_gen::engine::{Generator, TrialResult, TrialSpec};
use flowgate_gen::nft::{convert, Form};
use flowgate_gen::profile::{Options, Profile, Source};
use flowgate_gen::report::{command_json, delta, latency_json};
use flowgate_gen::search::{Majority, RateSearch};
use flowgate_gen::sizes::{wire_bits, FrameSize};

#[derive(Debug, Parser)]
#[command(
    name = "flowgate-gen",
    about = "Traffic generator for flowgate's throughput lab"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// One trial at one rate.
    Trial {
        #[command(flatten)]
        common: Common,
        /// Frame size (FCS included, 64..=1518) or imix.
        #[arg(long, default_value = "64")]
        size: FrameSize,
        /// Frames per second to offer (0: as fast as possible).
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Trial time, seconds.
        #[arg(long, default_value_t = 1.0)]
        duration: f64,
    },
    /// NDR and PDR binary search per frame size, then latency at fractions of the NDR.
    Search {
        #[command(flatten)]
        common: Common,
        /// Frame sizes, comma separated.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "64,128,256,512,1024,1518,imix"
        )]
        sizes: Vec<FrameSize>,
        /// Seconds per search trial.
        #[arg(long, default_value_t = 1.0)]
        trial: f64,
        /// The top of the search, frames/s (0: a first trial as fast as possible gives it).
        #[arg(long, default_value_t = 0.0)]
        top: f64,
        /// Search precision: stop when the bracket is within this share of the failing rate.
        #[arg(long, default_value_t = 0.02)]
        precision: f64,
        /// Most rates tried per search (NDR, PDR).
        #[arg(long, default_value_t = 10)]
        max_trials: u32,
        /// Trials per rate at most: a rate passes when more than half of them pass (and the
        /// trials stop once that is decided: 2 of 3), as FD.io CSIT's MLRsearch; 1 = RFC 2544.
        #[arg(long, default_value_t = 1)]
        repeat: u32,
        /// PDR loss threshold (ratio).
        #[arg(long, default_value_t = 0.005)]
        pdr_loss: f64,
        /// Fractions of the NDR at which latency is measured.
        #[arg(long, value_delimiter = ',', default_value = "0.1,0.5,0.9")]
        latency_at: Vec<f64>,
        /// Seconds per latency trial.
        #[arg(long, default_value_t = 2.0)]
        latency_trial: f64,
    },
    /// ClassBench rules as an nftables ruleset: OUT (load first), then OUT.1, OUT.2, ...
    /// (map elements, sets form), each with its own `nft -f`.
    Nft {
        /// ClassBench rules file.
        #[arg(long)]
        rules: PathBuf,
        /// linear (one rule per ClassBench rule) or sets (verdict maps).
        #[arg(long)]
        form: Form,
        /// Use the first N rules only.
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long, default_value = "fgbench")]
        table: String,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Args)]
struct Common {
    /// TX port: ethdev name (net_memif0, a PCI address) or port id.
    #[arg(long)]
    tx: String,
    /// RX port (the same as --tx for a loopback).
    #[arg(long)]
    rx: String,
    /// synth:N, trace:FILE (ClassBench) or pcap:FILE.
    #[arg(long, default_value = "synth:1024")]
    profile: Source,
    /// At most this many flows (trace lines, pcap frames).
    #[arg(long, default_value_t = 4096)]
    limit: usize,
    /// Only flows a Linux router forwards (no martian addresses).
    #[arg(long)]
    routable: bool,
    #[arg(long, default_value = "02:00:00:00:00:01", value_parser = parse_mac)]
    src_mac: [u8; 6],
    #[arg(long, default_value = "02:00:00:00:00:02", value_parser = parse_mac)]
    dst_mac: [u8; 6],
    /// Idle time on the RX port that ends a trial after its last frame, ms.
    #[arg(long, default_value_t = 50)]
    drain_ms: u64,
    /// How long to wait for the links, seconds.
    #[arg(long, default_value_t = 30)]
    link_timeout: u64,
    /// Name of the device under test in the records.
    #[arg(long, default_value = "dut")]
    label: String,
    /// Shell command printing the DUT's counters as JSON, run around every trial.
    #[arg(long)]
    dut_stats: Option<String>,
    /// EAL arguments.
    #[arg(last = true)]
    eal: Vec<String>,
}

fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = s.split(':').collect();
    let mut mac = [0u8; 6];
    if parts.len() != 6 {
        return Err(format!("MAC {s:?}: expected six hex bytes a:b:c:d:e:f"));
    }
    for (m, p) in mac.iter_mut().zip(parts) {
        *m = u8::from_str_radix(p, 16).map_err(|_| format!("MAC {s:?}: bad byte {p:?}"))?;
    }
    Ok(mac)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flowgate-gen: {e}");
            ExitCode::FAILURE
        }
    }
}

fn emit(v: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

/// A generator with its profile options, running trials and writing their records.
struct Lab {
    gen: Generator,
    opts: Options,
    profile_src: Source,
    label: String,
    dut_stats: Option<String>,
    drain: Duration,
}

impl Lab {
    fn open(c: &Common) -> Result<Lab, String> {
        let gen = Generator::open(&c.eal, &c.tx, &c.rx, Duration::from_secs(c.link_timeout))
            .map_err(|e| e.to_string())?;
        eprintln!("flowgate-gen: ports up, TSC {} Hz", gen.tsc_hz());
        Ok(Lab {
            gen,
            opts: Options {
                limit: c.limit,
                routable: c.routable,
                src_mac: c.src_mac,
                dst_mac: c.dst_mac,
            },
            profile_src: c.profile.clone(),
            label: c.label.clone(),
            dut_stats: c.dut_stats.clone(),
            drain: Duration::from_millis(c.drain_ms),
        })
    }

    fn profile(&self, size: FrameSize) -> Result<Profile, String> {
        let p = Profile::build(&self.profile_src, size, &self.opts).map_err(|e| e.to_string())?;
        let (stamped, all) = p.stamped();
        eprintln!(
            "flowgate-gen: profile {} size {size}: {} flows ({} left out), {stamped}/{all} templates stamped, mean frame {:.1} B",
            p.label, p.flows, p.skipped, p.mean_frame
        );
        Ok(p)
    }

    /// One trial; prints its record and returns the result.
    fn trial(
        &mut self,
        profile: &Profile,
        size: FrameSize,
        rate: f64,
        secs: f64,
        phase: &str,
        cdf: bool,
    ) -> Result<TrialResult, String> {
        let before = match &self.dut_stats {
            Some(cmd) => Some(command_json(cmd)?),
            None => None,
        };
        let spec = TrialSpec {
            rate_pps: rate.round() as u64,
            duration: Duration::from_secs_f64(secs),
            drain: self.drain,
        };
        let r = self.gen.trial(profile, &spec).map_err(|e| e.to_string())?;
        let dut = match (&self.dut_stats, before) {
            (Some(cmd), Some(b)) => delta(&b, &command_json(cmd)?),
            _ => Value::Null,
        };
        let mut rec = serde_json::to_value(&r).map_err(|e| e.to_string())?;
        rec["record"] = json!("trial");
        rec["dut"] = json!(self.label);
        rec["size"] = json!(size.to_string());
        rec["phase"] = json!(phase);
        rec["mean_frame"] = json!(profile.mean_frame);
        rec["latency"] = latency_json(&r.latency, cdf);
        rec["dut_counters"] = dut;
        emit(&rec);
        eprintln!(
            "flowgate-gen: {} {size} {phase}: target {:.0} pps, offered {:.0} pps{}, received {}/{} (loss {:.4}%), p50 {} ns",
            self.label,
            rate,
            r.offered_pps,
            if r.generator_limited { " (generator-limited)" } else { "" },
            r.received,
            r.offered,
            r.loss_ratio * 100.0,
            r.latency.quantile(0.5).unwrap_or(0)
        );
        Ok(r)
    }
}

fn rate_json(t: Option<&(f64, TrialResult)>, mean_frame: f64) -> Value {
    match t {
        Some((target, r)) => json!({
            "target_pps": target,
            "offered_pps": r.offered_pps,
            "received_pps": r.received_pps,
            "loss_ratio": r.loss_ratio,
            "l1_mbps": r.offered_pps * wire_bits(mean_frame) / 1e6,
            "generator_limited": r.generator_limited,
        }),
        None => Value::Null,
    }
}

#[allow(clippy::too_many_arguments)]
fn search_size(
    lab: &mut Lab,
    size: FrameSize,
    trial: f64,
    top: f64,
    precision: f64,
    max_trials: u32,
    majority: Majority,
    pdr_loss: f64,
    latency_at: &[f64],
    latency_trial: f64,
) -> Result<(), String> {
    let profile = lab.profile(size)?;
    let mut trials: Vec<(f64, TrialResult)> = Vec::new();
    let top = if top > 0.0 {
        top
    } else {
        let r = lab.trial(&profile, size, 0.0, trial, "top", false)?;
        let t = r.offered_pps;
        trials.push((t, r));
        t
    };
    let floor = top / 1000.0;
    let mut pdr = RateSearch::new(pdr_loss, top, floor, precision, max_trials);
    let mut ndr = RateSearch::new(0.0, top, floor, precision, max_trials);
    for (rate, r) in &trials {
        pdr.record(*rate, r.loss_ratio, false);
        ndr.record(*rate, r.loss_ratio, false);
    }
    for which in ["pdr", "ndr"] {
        loop {
            let next = if which == "pdr" {
                pdr.next_rate()
            } else {
                ndr.next_rate()
            };
            let Some(rate) = next else { break };
            let threshold = if which == "pdr" { pdr_loss } else { 0.0 };
            let mut losses = Vec::new();
            let passed = loop {
                let r = lab.trial(&profile, size, rate, trial, which, false)?;
                losses.push(r.loss_ratio);
                trials.push((rate, r));
                if let Some(v) = majority.verdict(&losses, threshold) {
                    break v;
                }
            };
            // the other search learns from the same trials when they decide for it too
            for (search, t, own) in [(&mut pdr, pdr_loss, "pdr"), (&mut ndr, 0.0, "ndr")] {
                let v = if own == which {
                    Some(passed)
                } else {
                    majority.verdict(&losses, t)
                };
                if let Some(v) = v {
                    search.record_verdict(rate, v, own == which);
                }
            }
        }
    }
    // the trial reported for a search's result: the best passing trial at its rate
    let best = |s: &RateSearch| {
        let threshold = s.threshold;
        s.result().and_then(|rate| {
            trials
                .iter()
                .filter(|(t, r)| *t == rate && r.loss_ratio <= threshold)
                .max_by(|a, b| a.1.offered_pps.total_cmp(&b.1.offered_pps))
        })
    };
    let ndr_t = best(&ndr);
    let pdr_t = best(&pdr);
    let mut lat = Vec::new();
    // latency at fractions of the NDR as offered (the rate the DUT was shown to forward
    // without loss), not of the target, which a generator-limited trial did not reach
    if let Some(ndr_offered) = ndr_t.map(|(_, r)| r.offered_pps) {
        for &f in latency_at {
            let rate = ndr_offered * f;
            let r = lab.trial(&profile, size, rate, latency_trial, "latency", true)?;
            let mut v = rate_json(Some(&(rate, r.clone())), profile.mean_frame);
            v["fraction"] = json!(f);
            v["latency"] = latency_json(&r.latency, true);
            lat.push(v);
        }
    }
    emit(&json!({
        "record": "result",
        "dut": lab.label,
        "size": size.to_string(),
        "mean_frame": profile.mean_frame,
        "top_pps": top,
        "ndr": rate_json(ndr_t, profile.mean_frame),
        "pdr": rate_json(pdr_t, profile.mean_frame),
        "pdr_loss": pdr_loss,
        "trials": trials.len(),
        "latency": lat,
    }));
    eprintln!(
        "flowgate-gen: {} {size}: NDR {} pps, PDR {} pps ({} trials)",
        lab.label,
        ndr_t.map_or("none".into(), |(_, r)| format!("{:.0}", r.offered_pps)),
        pdr_t.map_or("none".into(), |(_, r)| format!("{:.0}", r.offered_pps)),
        trials.len()
    );
    Ok(())
}

fn run(cmd: Cmd) -> Result<(), String> {
    match cmd {
        Cmd::Trial {
            common,
            size,
            rate,
            duration,
        } => {
            if !(duration > 0.0 && duration.is_finite()) {
                return Err(format!(
                    "--duration {duration}: expected a positive number of seconds"
                ));
            }
            let mut lab = Lab::open(&common)?;
            let profile = lab.profile(size)?;
            lab.trial(&profile, size, rate as f64, duration, "trial", true)?;
            Ok(())
        }
        Cmd::Search {
            common,
            sizes,
            trial,
            top,
            precision,
            max_trials,
            repeat,
            pdr_loss,
            latency_at,
            latency_trial,
        } => {
            if !(trial > 0.0
                && trial.is_finite()
                && latency_trial > 0.0
                && latency_trial.is_finite())
            {
                return Err(
                    "--trial and --latency-trial must be positive numbers of seconds".into(),
                );
            }
            if !(0.0..1.0).contains(&precision) || !(0.0..1.0).contains(&pdr_loss) {
                return Err("--precision and --pdr-loss must be ratios in [0, 1)".into());
            }
            if let Some(f) = latency_at.iter().find(|f| !(**f > 0.0 && **f <= 1.0)) {
                return Err(format!("--latency-at {f}: expected fractions in (0, 1]"));
            }
            let mut lab = Lab::open(&common)?;
            for size in sizes {
                search_size(
                    &mut lab,
                    size,
                    trial,
                    top,
                    precision,
                    max_trials,
                    Majority::new(repeat),
                    pdr_loss,
                    &latency_at,
                    latency_trial,
                )?;
            }
            Ok(())
        }
        Cmd::Nft {
            rules,
            form,
            limit,
            table,
            out,
        } => {
            let mut rs = load_rules(&rules).map_err(|e| e.to_string())?;
            if let Some(n) = limit {
                rs.truncate(n);
            }
            let c = convert(&rs, form, &table);
            let write = |path: &std::path::Path, text: &str| {
                std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
            };
            write(&out, &c.text)?;
            for (i, chunk) in c.chunks.iter().enumerate() {
                let mut name = out.clone().into_os_string();
                name.push(format!(".{}", i + 1));
                write(std::path::Path::new(&name), chunk)?;
            }
            eprintln!(
                "flowgate-gen nft: {} rules -> {} {} in {} + {} element file(s) ({}.1 ...), {} rules after the lookups ({} approximated: ports dropped for a non-TCP/UDP protocol)",
                rs.len(),
                c.entries,
                if form == Form::Linear { "rules" } else { "map elements" },
                out.display(),
                c.chunks.len(),
                out.display(),
                c.fallback,
                c.approximated
            );
            Ok(())
        }
    }
}
