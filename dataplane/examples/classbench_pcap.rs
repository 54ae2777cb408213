//! Turn a ClassBench trace into a classic pcap for the dataplane throughput benchmark.
//!
//! ```text
//! cargo run --release -p flowgate-dataplane --example classbench_pcap -- \
//!     --trace T --out F.pcap [--limit N] [--min-len BYTES]
//! ```
//!
//! One frame per trace line (`src dst sport dport proto match`), in trace order, built with
//! [`flowgate_dataplane::build::frame`] (real Ethernet/IPv4 headers, valid lengths and
//! checksums):
//!
//! - protocol 6 / 17: a TCP (SYN) / UDP header carrying the trace's ports;
//! - protocol 1: an ICMP echo request (the trace's "ports" mean nothing for ICMP);
//! - any other protocol (ClassBench traces have 0 and 255 from wildcard rules): the bare IPv4
//!   header and a payload.
//!
//! Frames are padded with L4 payload to `--min-len` bytes (default 64, excluding the FCS,
//! which pcap files do not carry). The output is a classic little-endian pcap (magic
//! `a1b2c3d4`, version 2.4, linktype 1 = Ethernet), all timestamps zero-based and 1 us apart.
//!
//! The trace files are benchmark data with unclear terms: write the pcap to a temporary or
//! `target/` directory at run time, never into the repository.

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use flowgate_dataplane::build::trace_frame;
use flowgate_dataplane::classify::classbench::load_trace;

const USAGE: &str =
    "usage: classbench_pcap --trace TRACE --out OUT.pcap [--limit N] [--min-len BYTES]";

struct Args {
    trace: PathBuf,
    out: PathBuf,
    limit: Option<usize>,
    min_len: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut trace = None;
    let mut out = None;
    let mut limit = None;
    let mut min_len = 64usize;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--trace" => trace = Some(PathBuf::from(val("--trace")?)),
            "--out" => out = Some(PathBuf::from(val("--out")?)),
            "--limit" => {
                let v = val("--limit")?;
                limit = Some(v.parse().map_err(|_| format!("bad --limit {v:?}"))?);
            }
            "--min-len" => {
                let v = val("--min-len")?;
                min_len = v.parse().map_err(|_| format!("bad --min-len {v:?}"))?;
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Args {
        trace: trace.ok_or("--trace is required")?,
        out: out.ok_or("--out is required")?,
        limit,
        min_len,
    })
}

/// The pcap global header: little endian, v2.4, snaplen 65535, linktype 1 (Ethernet).
fn global_header() -> [u8; 24] {
    let mut h = [0u8; 24];
    h[0..4].copy_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    h[4..6].copy_from_slice(&2u16.to_le_bytes());
    h[6..8].copy_from_slice(&4u16.to_le_bytes());
    // thiszone (4) and sigfigs (4) stay zero
    h[16..20].copy_from_slice(&65535u32.to_le_bytes());
    h[20..24].copy_from_slice(&1u32.to_le_bytes());
    h
}

/// A pcap record header for packet `n` (timestamps 1 us apart) of `len` bytes.
fn record_header(n: usize, len: usize) -> [u8; 16] {
    let mut h = [0u8; 16];
    let (sec, usec) = ((n / 1_000_000) as u32, (n % 1_000_000) as u32);
    h[0..4].copy_from_slice(&sec.to_le_bytes());
    h[4..8].copy_from_slice(&usec.to_le_bytes());
    h[8..12].copy_from_slice(&(len as u32).to_le_bytes());
    h[12..16].copy_from_slice(&(len as u32).to_le_bytes());
    h
}

fn run(args: &Args) -> Result<usize, String> {
    let trace = load_trace(&args.trace).map_err(|e| e.to_string())?;
    let n = args.limit.map_or(trace.len(), |l| l.min(trace.len()));
    let file =
        std::fs::File::create(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let mut w = BufWriter::new(file);
    let io = |e: std::io::Error| format!("{}: {e}", args.out.display());
    w.write_all(&global_header()).map_err(io)?;
    for (i, p) in trace.iter().take(n).enumerate() {
        let k = &p.key;
        let f = trace_frame(
            k.proto,
            k.src as u32,
            k.dst as u32,
            k.sport,
            k.dport,
            args.min_len,
        );
        w.write_all(&record_header(i, f.len())).map_err(io)?;
        w.write_all(&f).map_err(io)?;
    }
    w.flush().map_err(io)?;
    Ok(n)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("classbench_pcap: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(n) => {
            eprintln!(
                "classbench_pcap: wrote {n} frames to {}",
                args.out.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("classbench_pcap: {e}");
            ExitCode::FAILURE
        }
    }
}
