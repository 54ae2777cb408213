//! ClassBench rule sets and traces: loaders, and the benchmark `flowgate bench classbench` runs.
//!
//! Rules (`@src/len dst/len slo : shi dlo : dhi proto/mask [flags/mask]`) go straight into the
//! classifier's box form: one box per line, priority = line order, protocol wildcard with
//! port ranges and any protocol number allowed (a packet of any protocol is treated as
//! carrying the trace's ports), TCP flags ignored (as the traces and `dpdk-test-acl` do).
//! Trace lines (`src dst sport dport proto match`) become IPv4 [`Key`]s plus the expected
//! 1-based first-match line.
//!
//! Cycles: the workspace forbids `unsafe`, so no `rdtsc`; times come from
//! `std::time::Instant` and cycles are `ns * MHz / 1000` with the TSC frequency from
//! `FLOWGATE_TSC_MHZ`, else the first `cpu MHz` line of `/proc/cpuinfo` (on this KVM guest the
//! kernel reports `tsc_known_freq` and that line is the TSC rate, which is what
//! `dpdk-test-acl` counts in).

use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use flowgate_config::flows::{mask32, Action};

use super::engine::Bounds;
use super::key::lane;
use super::{Classifier, CompileError, Key, Verdict, BATCH};

/// Errors of the ClassBench loaders and benchmark.
#[derive(Debug, thiserror::Error)]
pub enum ClassbenchError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {msg}")]
    Parse {
        path: PathBuf,
        line: usize,
        msg: String,
    },
    #[error(transparent)]
    Compile(#[from] CompileError),
    #[error(
        "{count} trace lines misclassified; first at trace line {line}: expected rule {expected}, got {got}"
    )]
    Mismatch {
        count: usize,
        line: usize,
        expected: u32,
        got: String,
    },
}

/// One ClassBench rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CbRule {
    pub src: (u32, u8),
    pub dst: (u32, u8),
    pub sport: (u16, u16),
    pub dport: (u16, u16),
    /// Protocol and mask (0xFF: exactly, 0x00: any).
    pub proto: (u8, u8),
}

impl CbRule {
    /// The rule as an engine box.
    pub(crate) fn bounds(&self) -> Bounds<u32> {
        let mut b = Bounds::any();
        let pfx = |(a, l): (u32, u8)| (a & mask32(l), a | !mask32(l));
        (b.lo[lane::SRC], b.hi[lane::SRC]) = pfx(self.src);
        (b.lo[lane::DST], b.hi[lane::DST]) = pfx(self.dst);
        (b.lo[lane::SPORT], b.hi[lane::SPORT]) = (self.sport.0.into(), self.sport.1.into());
        (b.lo[lane::DPORT], b.hi[lane::DPORT]) = (self.dport.0.into(), self.dport.1.into());
        if self.proto.1 == 0xff {
            (b.lo[lane::PROTO], b.hi[lane::PROTO]) = (self.proto.0.into(), self.proto.0.into());
        }
        b
    }

    /// Whether the rule matches a trace packet (the definition, for tests).
    pub fn matches(&self, src: u32, dst: u32, sport: u16, dport: u16, proto: u8) -> bool {
        let inp = |(a, l): (u32, u8), x: u32| x & mask32(l) == a & mask32(l);
        inp(self.src, src)
            && inp(self.dst, dst)
            && (self.sport.0..=self.sport.1).contains(&sport)
            && (self.dport.0..=self.dport.1).contains(&dport)
            && (proto & self.proto.1) == (self.proto.0 & self.proto.1)
    }
}

/// One trace line: the packet and the expected 1-based first-match rule line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CbPacket {
    pub key: Key,
    pub expected: u32,
}

fn prefix(tok: &str) -> Result<(u32, u8), String> {
    let (a, l) = tok
        .split_once('/')
        .ok_or_else(|| format!("expected addr/len, got {tok:?}"))?;
    let a: Ipv4Addr = a.parse().map_err(|_| format!("bad IPv4 address {a:?}"))?;
    let l: u8 = l.parse().map_err(|_| format!("bad prefix length {l:?}"))?;
    if l > 32 {
        return Err(format!("prefix length {l} over 32"));
    }
    Ok((u32::from(a), l))
}

fn hex8(tok: &str) -> Result<u8, String> {
    let t = tok
        .strip_prefix("0x")
        .or_else(|| tok.strip_prefix("0X"))
        .unwrap_or(tok);
    u8::from_str_radix(t, 16).map_err(|_| format!("bad hex byte {tok:?}"))
}

fn num<T: std::str::FromStr>(tok: Option<&str>, what: &str) -> Result<T, String> {
    let t = tok.ok_or_else(|| format!("missing {what}"))?;
    t.parse().map_err(|_| format!("bad {what} {t:?}"))
}

/// Parse one rule line.
pub fn parse_rule(line: &str) -> Result<CbRule, String> {
    let line = line
        .trim()
        .strip_prefix('@')
        .ok_or("rule line must start with '@'")?;
    let t: Vec<&str> = line.split_whitespace().collect();
    if t.len() < 9 || t[3] != ":" || t[6] != ":" {
        return Err("expected `@src/len dst/len slo : shi dlo : dhi proto/mask`".into());
    }
    let src = prefix(t[0])?;
    let dst = prefix(t[1])?;
    let sport = (num(Some(t[2]), "port")?, num(Some(t[4]), "port")?);
    let dport = (num(Some(t[5]), "port")?, num(Some(t[7]), "port")?);
    if sport.0 > sport.1 || dport.0 > dport.1 {
        return Err("port range with lo > hi".into());
    }
    let (p, m) = t[8].split_once('/').ok_or("expected proto/mask")?;
    let proto = (hex8(p)?, hex8(m)?);
    if proto.1 != 0 && proto.1 != 0xff {
        return Err(format!(
            "protocol mask {:#04x} not supported (0x00 or 0xFF)",
            proto.1
        ));
    }
    Ok(CbRule {
        src,
        dst,
        sport,
        dport,
        proto,
    })
}

/// Parse one trace line.
pub fn parse_trace_line(line: &str) -> Result<CbPacket, String> {
    let mut t = line.split_whitespace();
    let src: u32 = num(t.next(), "source address")?;
    let dst: u32 = num(t.next(), "destination address")?;
    let sport: u16 = num(t.next(), "source port")?;
    let dport: u16 = num(t.next(), "destination port")?;
    let proto: u8 = num(t.next(), "protocol")?;
    let expected: u32 = num(t.next(), "match id")?;
    Ok(CbPacket {
        key: Key::v4_ports(proto, src, dst, sport, dport),
        expected,
    })
}

fn read(path: &Path) -> Result<String, ClassbenchError> {
    std::fs::read_to_string(path).map_err(|source| ClassbenchError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Load a rules file.
pub fn load_rules(path: &Path) -> Result<Vec<CbRule>, ClassbenchError> {
    let text = read(path)?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            parse_rule(l).map_err(|msg| ClassbenchError::Parse {
                path: path.to_path_buf(),
                line: i + 1,
                msg,
            })
        })
        .collect()
}

/// Load a trace file.
pub fn load_trace(path: &Path) -> Result<Vec<CbPacket>, ClassbenchError> {
    let text = read(path)?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            parse_trace_line(l).map_err(|msg| ClassbenchError::Parse {
                path: path.to_path_buf(),
                line: i + 1,
                msg,
            })
        })
        .collect()
}

/// Compile ClassBench rules: one flow `classbench`, rule `n` = line `n`, action permit.
pub fn compile(rules: &[CbRule]) -> Result<Classifier, CompileError> {
    let boxes: Vec<Bounds<u32>> = rules.iter().map(CbRule::bounds).collect();
    Classifier::from_v4_boxes("classbench", &boxes, Action::Permit, Action::Deny)
}

/// Check every trace line; `Err` names the first mismatch and counts them all.
pub fn verify(c: &Classifier, trace: &[CbPacket]) -> Result<(), ClassbenchError> {
    let keys: Vec<Key> = trace.iter().map(|p| p.key).collect();
    let mut batched = vec![Verdict::default(); keys.len()];
    c.classify_batch(&keys, &mut batched);
    // Both batch strategies, with every kernel this CPU runs, must agree with it.
    let mut other = vec![Verdict::default(); keys.len()];
    for k in super::Kernel::all_supported() {
        for interleave in [false, true] {
            let Some(forced) = c
                .clone()
                .with_interleaved_batches(interleave)
                .with_kernel(k)
            else {
                continue;
            };
            forced.classify_batch(&keys, &mut other);
            if !interleave {
                // The single-key lookup of the kernel, in the same comparison.
                for (o, key) in other.iter_mut().zip(&keys) {
                    *o = forced.classify(key);
                }
            }
            if let Some(i) = batched.iter().zip(&other).position(|(a, b)| a != b) {
                return Err(ClassbenchError::Mismatch {
                    count: batched.iter().zip(&other).filter(|(a, b)| a != b).count(),
                    line: i + 1,
                    expected: trace[i].expected,
                    got: format!(
                        "{} / {} (kernel {k}, interleaved {interleave} differs)",
                        batched[i].rule, other[i].rule
                    ),
                });
            }
        }
    }
    let mut first = None;
    let mut count = 0;
    for (i, (p, b)) in trace.iter().zip(&batched).enumerate() {
        let s = c.classify(&p.key);
        let ok = |v: &Verdict| !v.is_default() && v.rule == p.expected;
        if !ok(b) || !ok(&s) {
            count += 1;
            if first.is_none() {
                let show = |v: &Verdict| {
                    if v.is_default() {
                        "none".to_string()
                    } else {
                        v.rule.to_string()
                    }
                };
                first = Some((
                    i + 1,
                    p.expected,
                    format!("{} (batched) / {} (single)", show(b), show(&s)),
                ));
            }
        }
    }
    match first {
        None => Ok(()),
        Some((line, expected, got)) => Err(ClassbenchError::Mismatch {
            count,
            line,
            expected,
            got,
        }),
    }
}

/// The TSC frequency used to turn nanoseconds into cycles, and where it came from.
pub fn tsc_mhz() -> (f64, &'static str) {
    if let Some(v) = std::env::var("FLOWGATE_TSC_MHZ")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
    {
        return (v, "FLOWGATE_TSC_MHZ");
    }
    let from_cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("cpu MHz"))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|v| v.trim().parse::<f64>().ok())
    });
    match from_cpuinfo {
        Some(v) => (v, "/proc/cpuinfo cpu MHz"),
        None => (1000.0, "unknown (assumed 1000 MHz)"),
    }
}

/// On-CPU time of the calling thread in ns (`/proc/thread-self/schedstat`, first field), if
/// the kernel provides it: unlike wall time it does not count time the thread waited for a CPU
/// on a shared machine.
pub fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// Wall and on-CPU time of `f`, in ns.
fn timed(f: impl FnOnce()) -> (f64, Option<f64>) {
    let c0 = thread_cpu_ns();
    let t0 = Instant::now();
    f();
    let wall = t0.elapsed().as_nanos() as f64;
    let cpu = match (c0, thread_cpu_ns()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64),
        _ => None,
    };
    (wall, cpu)
}

/// What `run_classbench` measured.
#[derive(Debug, Clone)]
pub struct Report {
    pub rules_path: PathBuf,
    pub rules: usize,
    pub trace_lines: usize,
    pub iters: u32,
    /// Parsing the rules file (not part of the build).
    pub parse_s: f64,
    /// Compiling the parsed rules into the classifier.
    pub build_s: f64,
    pub memory_bytes: usize,
    /// Wall-clock ns per packet (what `dpdk-test-acl` reports, in TSC cycles).
    pub ns_batched: f64,
    pub ns_single: f64,
    /// On-CPU ns per packet (time slices lost to other processes excluded), if available.
    pub cpu_ns_batched: Option<f64>,
    pub cpu_ns_single: Option<f64>,
    pub tsc_mhz: f64,
    pub tsc_source: &'static str,
    /// The lookup kernel that ran.
    pub kernel: super::Kernel,
    pub trees: usize,
    pub nodes: usize,
    pub max_depth: u32,
    pub leaf_slots: usize,
    /// Mean work per trace packet: trees searched, nodes visited, rules checked.
    pub mean_cost: (f64, f64, f64),
}

impl Report {
    pub fn cycles_batched(&self) -> f64 {
        self.ns_batched * self.tsc_mhz / 1000.0
    }
    pub fn cycles_single(&self) -> f64 {
        self.ns_single * self.tsc_mhz / 1000.0
    }
    pub fn mpps_batched(&self) -> f64 {
        1000.0 / self.ns_batched
    }
    pub fn mpps_single(&self) -> f64 {
        1000.0 / self.ns_single
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "rules file:      {}", self.rules_path.display())?;
        writeln!(f, "rules:           {}", self.rules)?;
        writeln!(
            f,
            "trace lines:     {} (all verified against the expected first match)",
            self.trace_lines
        )?;
        writeln!(f, "iterations:      {}", self.iters)?;
        writeln!(f, "parse time:      {:.4} s", self.parse_s)?;
        writeln!(f, "build time:      {:.4} s", self.build_s)?;
        writeln!(
            f,
            "memory:          {} bytes ({:.3} MiB); {} trees, {} nodes, {} leaf slots, depth {}",
            self.memory_bytes,
            self.memory_bytes as f64 / (1024.0 * 1024.0),
            self.trees,
            self.nodes,
            self.leaf_slots,
            self.max_depth
        )?;
        writeln!(
            f,
            "kernel:          {} (detected: {}; usable here: {})",
            self.kernel,
            super::Kernel::detect(),
            super::Kernel::all_supported()
                .iter()
                .map(|k| k.name())
                .collect::<Vec<_>>()
                .join(", ")
        )?;
        writeln!(
            f,
            "work per packet: {:.2} trees, {:.2} nodes, {:.2} rules checked",
            self.mean_cost.0, self.mean_cost.1, self.mean_cost.2
        )?;
        writeln!(
            f,
            "batched ({BATCH}):    {:.2} ns/pkt, {:.1} cycles/pkt, {:.2} Mpps",
            self.ns_batched,
            self.cycles_batched(),
            self.mpps_batched()
        )?;
        writeln!(
            f,
            "single:          {:.2} ns/pkt, {:.1} cycles/pkt, {:.2} Mpps",
            self.ns_single,
            self.cycles_single(),
            self.mpps_single()
        )?;
        if let (Some(b), Some(s)) = (self.cpu_ns_batched, self.cpu_ns_single) {
            writeln!(
                f,
                "on-CPU:          {b:.2} ns/pkt batched ({:.2} Mpps), {s:.2} ns/pkt single ({:.2} Mpps)",
                1000.0 / b,
                1000.0 / s
            )?;
        }
        write!(
            f,
            "tsc:             {:.3} MHz ({})",
            self.tsc_mhz, self.tsc_source
        )
    }
}

fn mean_cost(c: &Classifier, keys: &[Key]) -> (f64, f64, f64) {
    let mut t = (0u64, 0u64, 0u64);
    for k in keys {
        let (a, b, d) = c.cost(k);
        t = (t.0 + u64::from(a), t.1 + u64::from(b), t.2 + u64::from(d));
    }
    let n = keys.len().max(1) as f64;
    (t.0 as f64 / n, t.1 as f64 / n, t.2 as f64 / n)
}

/// Load, build (timed), verify every trace line, then time `iters` passes over the trace,
/// batched and single. No flow cache: every lookup walks the structure.
pub fn run_classbench(
    rules_path: &Path,
    trace_path: &Path,
    iters: u32,
) -> Result<Report, ClassbenchError> {
    let t0 = Instant::now();
    let rules = load_rules(rules_path)?;
    let parse_s = t0.elapsed().as_secs_f64();
    let trace = load_trace(trace_path)?;
    let t1 = Instant::now();
    let c = compile(&rules)?;
    let build_s = t1.elapsed().as_secs_f64();
    verify(&c, &trace)?;
    let keys: Vec<Key> = trace.iter().map(|p| p.key).collect();
    let iters = iters.max(1);
    let mut out = vec![Verdict::default(); BATCH];
    let mut sum = 0u64;
    let n = f64::from(iters) * keys.len() as f64;
    let (wall_b, cpu_b) = timed(|| {
        for _ in 0..iters {
            for chunk in keys.chunks(BATCH) {
                c.classify_batch(std::hint::black_box(chunk), &mut out);
                sum = sum.wrapping_add(u64::from(out[0].rule));
            }
        }
    });
    let (wall_s, cpu_s) = timed(|| {
        for _ in 0..iters {
            for k in &keys {
                sum = sum.wrapping_add(u64::from(c.classify(std::hint::black_box(k)).rule));
            }
        }
    });
    std::hint::black_box(sum);
    let (ns_batched, ns_single) = (wall_b / n, wall_s / n);
    let (cpu_ns_batched, cpu_ns_single) = (cpu_b.map(|v| v / n), cpu_s.map(|v| v / n));
    let (tsc_mhz, tsc_source) = tsc_mhz();
    let (shape, _) = c.shape();
    Ok(Report {
        rules_path: rules_path.to_path_buf(),
        rules: rules.len(),
        trace_lines: trace.len(),
        iters,
        parse_s,
        build_s,
        memory_bytes: c.memory_bytes(),
        ns_batched,
        ns_single,
        cpu_ns_batched,
        cpu_ns_single,
        tsc_mhz,
        tsc_source,
        kernel: c.kernel(),
        trees: shape.trees,
        nodes: shape.nodes,
        max_depth: shape.max_depth,
        leaf_slots: shape.leaf_slots,
        mean_cost: mean_cost(&c, &keys),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_layouts() {
        let r = parse_rule("@175.77.88.155/32 119.106.158.230/32 0 : 65535 6888 : 6888 0x06/0xFF")
            .expect("rule");
        assert_eq!(r.src, (u32::from(Ipv4Addr::new(175, 77, 88, 155)), 32));
        assert_eq!(r.dport, (6888, 6888));
        assert_eq!(r.proto, (6, 0xff));
        let r = parse_rule(
            "@63.168.232.224/28\t63.168.239.172/30\t69 : 69\t80 : 80\t0x11/0xFF\t0x0000/0x0000\t",
        )
        .expect("rule");
        assert_eq!(r.sport, (69, 69));
        assert_eq!(r.proto, (17, 0xff));
        let p = parse_trace_line("1600753409 3271393328 65535 21 6 413").expect("trace");
        assert_eq!(p.expected, 413);
        assert_eq!(
            p.key.src,
            u128::from(u32::from(Ipv4Addr::new(95, 105, 143, 1)))
        );
        assert!(parse_rule("175.77.88.155/32 1.1.1.1/32 0 : 1 0 : 1 0x06/0xFF").is_err());
        assert!(parse_rule("@1.1.1.1/33 1.1.1.1/32 0 : 1 0 : 1 0x06/0xFF").is_err());
        assert!(parse_rule("@1.1.1.1/32 1.1.1.1/32 2 : 1 0 : 1 0x06/0xFF").is_err());
    }

    #[test]
    fn compiled_equals_linear_scan_on_synthetic_rules() {
        let mut seed = 42u64;
        let mut rnd = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as u32
        };
        let mut rules = Vec::new();
        for _ in 0..600 {
            let sl = [0u8, 8, 16, 24, 28, 32][(rnd() % 6) as usize];
            let dl = [0u8, 8, 16, 24, 28, 32][(rnd() % 6) as usize];
            let base = |r: u32| (r % 4) << 30 | (r % 7) << 20;
            let sp = if rnd() % 2 == 0 {
                (0, 65535)
            } else {
                let a = (rnd() % 2000) as u16;
                (a, a + (rnd() % 50) as u16)
            };
            let dp = if rnd() % 3 == 0 {
                (0, 65535)
            } else {
                let a = (rnd() % 2000) as u16;
                (a, a + (rnd() % 3) as u16)
            };
            let proto = match rnd() % 3 {
                0 => (0, 0),
                1 => (6, 0xff),
                _ => (17, 0xff),
            };
            rules.push(CbRule {
                src: (base(rnd()) & mask32(sl), sl),
                dst: (base(rnd()) & mask32(dl), dl),
                sport: sp,
                dport: dp,
                proto,
            });
        }
        let c = compile(&rules).expect("compile");
        for _ in 0..20000 {
            let r = rules[(rnd() % 600) as usize];
            let src = r.src.0 | (rnd() & !mask32(r.src.1));
            let dst = if rnd() % 4 == 0 {
                rnd()
            } else {
                r.dst.0 | (rnd() & !mask32(r.dst.1))
            };
            let sport = [r.sport.0, r.sport.1, (rnd() % 2100) as u16][(rnd() % 3) as usize];
            let dport = [r.dport.0, r.dport.1, r.dport.1.wrapping_add(1)][(rnd() % 3) as usize];
            let proto = [6u8, 17, 0, 255][(rnd() % 4) as usize];
            let want = rules
                .iter()
                .position(|x| x.matches(src, dst, sport, dport, proto));
            let got = c.classify(&Key::v4_ports(proto, src, dst, sport, dport));
            match want {
                Some(i) => assert_eq!(got.rule, i as u32 + 1),
                None => assert!(got.is_default()),
            }
        }
    }
}
