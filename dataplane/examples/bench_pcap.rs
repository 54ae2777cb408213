//! Pcaps for the dataplane benchmark's routed and director rows (`scripts/bench-dataplane.sh`,
//! docs/benchmarks.md "Dataplane throughput").
//!
//! ```text
//! cargo run --release -p flowgate-dataplane --example bench_pcap -- routed \
//!     --out F.pcap --frames N
//! cargo run --release -p flowgate-dataplane --example bench_pcap -- director \
//!     --out F.pcap --clients N --kind established|new [--vip 10.100.0.1] [--vport 80]
//! ```
//!
//! Every frame is built with [`flowgate_dataplane::build::frame`] (valid lengths and
//! checksums) and padded to 64 bytes (without the FCS, which pcap files do not carry):
//!
//! - `routed`: `N` UDP frames from `10.1.0.0/16` to distinct addresses of `10.200.0.0/16`
//!   (source port 1024.., destination port 53), TTL 64: what a `table` flow routes.
//! - `director --kind established`: one UDP datagram from each of `N` distinct clients
//!   (client `i`: address `100.64.0.0 + i`, port `40000 + i % 20000`) to the VIP. Replayed
//!   (`infinite_rx`), the first pass opens `N` connections and every later packet is a hit on
//!   a tracked connection of a table of `N` entries.
//! - `director --kind new`: for each of `N` clients a TCP SYN then a TCP RST. The RST closes
//!   the connection (state CLOSE); replayed, the client's next SYN finds it closing and opens a
//!   new connection on the same tuple (IPVS `conn_reuse_mode`: removed, scheduled, inserted
//!   again). So every other packet opens a new connection; the RSTs are hits.
//!
//! Output: a classic little-endian pcap, microsecond timestamps 1 us apart.

use std::io::BufWriter;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::ExitCode;

use flowgate_dataplane::build::{frame, ones_sum, FrameSpec, PcapWriter};

const USAGE: &str = "usage: bench_pcap routed --out F.pcap --frames N\n       \
     bench_pcap director --out F.pcap --clients N --kind established|new \
     [--vip ADDR] [--vport PORT]";

/// Frames are padded to this many bytes (the minimum Ethernet frame without its FCS is 60;
/// 64 keeps the benchmark's ClassBench pcaps' size).
const MIN_LEN: usize = 64;
const ETH_IP: usize = 14 + 20;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Routed,
    Established,
    New,
}

#[derive(Debug)]
struct Args {
    kind: Kind,
    out: PathBuf,
    count: u32,
    vip: Ipv4Addr,
    vport: u16,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mode = it.next().ok_or("a mode is required: routed or director")?;
    let (mut out, mut count, mut kind) = (None, None, None);
    let (mut vip, mut vport) = (Ipv4Addr::new(10, 100, 0, 1), 80u16);
    while let Some(a) = it.next() {
        let mut val = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match (mode.as_str(), a.as_str()) {
            (_, "--out") => out = Some(PathBuf::from(val("--out")?)),
            ("routed", "--frames") | ("director", "--clients") => {
                let v = val(&a)?;
                count = Some(v.parse::<u32>().map_err(|_| format!("bad {a} {v:?}"))?);
            }
            ("director", "--kind") => {
                kind = Some(match val("--kind")?.as_str() {
                    "established" => Kind::Established,
                    "new" => Kind::New,
                    k => return Err(format!("bad --kind {k:?}: established or new")),
                })
            }
            ("director", "--vip") => {
                let v = val("--vip")?;
                vip = v.parse().map_err(|_| format!("bad --vip {v:?}"))?;
            }
            ("director", "--vport") => {
                let v = val("--vport")?;
                vport = v.parse().map_err(|_| format!("bad --vport {v:?}"))?;
            }
            (_, "-h" | "--help") => return Err(String::new()),
            _ => return Err(format!("unknown argument {a:?} for mode {mode:?}")),
        }
    }
    let kind = match mode.as_str() {
        "routed" => Kind::Routed,
        "director" => kind.ok_or("--kind is required")?,
        m => return Err(format!("unknown mode {m:?}")),
    };
    let count = count.ok_or("--frames / --clients is required")?;
    if count == 0 || count > 1 << 22 {
        return Err(format!("{count} frames or clients: expected 1..=4194304"));
    }
    Ok(Args {
        kind,
        out: out.ok_or("--out is required")?,
        count,
        vip,
        vport,
    })
}

/// A 64-byte frame of `proto` from `src:sport` to `dst:dport`.
fn padded(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, sport: u16, dport: u16) -> Vec<u8> {
    let l4 = if proto == 6 { 20 } else { 8 };
    let mut spec = FrameSpec::new(IpAddr::V4(src), IpAddr::V4(dst), proto, sport, dport);
    spec.payload = MIN_LEN.saturating_sub(ETH_IP + l4);
    frame(&spec)
}

/// Sets the TCP flags of an untagged IPv4 (20-byte header) TCP frame to `flags`, updating
/// the TCP checksum incrementally (RFC 1624: HC' = ~(~HC + ~m + m')).
fn set_tcp_flags(f: &mut [u8], flags: u8) {
    let tcp = ETH_IP;
    let word = |f: &[u8]| u16::from_be_bytes([f[tcp + 12], f[tcp + 13]]);
    let old = word(f);
    f[tcp + 13] = flags;
    let new = word(f);
    let hc = u16::from_be_bytes([f[tcp + 16], f[tcp + 17]]);
    let sum = ones_sum(
        0,
        &[(!hc).to_be_bytes(), (!old).to_be_bytes(), new.to_be_bytes()].concat(),
    );
    f[tcp + 16..tcp + 18].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

/// Client `i`: a distinct (address, port) for every i < 2^22.
fn client(i: u32) -> (Ipv4Addr, u16) {
    (
        Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 0)) + i),
        40_000 + (i % 20_000) as u16,
    )
}

fn run(args: &Args) -> Result<usize, String> {
    let io = |e: std::io::Error| format!("{}: {e}", args.out.display());
    let file = std::fs::File::create(&args.out).map_err(io)?;
    let mut w = PcapWriter::new(BufWriter::new(file)).map_err(io)?;
    for i in 0..args.count {
        match args.kind {
            Kind::Routed => {
                let src = Ipv4Addr::new(10, 1, (i >> 8) as u8, i as u8);
                let dst = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 200, 0, 0)) + (i & 0xffff));
                w.push(&padded(src, dst, 17, 1024 + (i % 60_000) as u16, 53))
                    .map_err(io)?;
            }
            Kind::Established => {
                let (addr, port) = client(i);
                w.push(&padded(addr, args.vip, 17, port, args.vport))
                    .map_err(io)?;
            }
            Kind::New => {
                let (addr, port) = client(i);
                let mut f = padded(addr, args.vip, 6, port, args.vport);
                debug_assert_eq!(f[ETH_IP + 13], TCP_SYN);
                w.push(&f).map_err(io)?;
                set_tcp_flags(&mut f, TCP_RST);
                w.push(&f).map_err(io)?;
            }
        }
    }
    let n = w.frames();
    w.finish().map_err(io)?;
    Ok(n)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("bench_pcap: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(n) => {
            eprintln!(
                "bench_pcap: wrote {n} frames ({:?}) to {}",
                args.kind,
                args.out.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench_pcap: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowgate_dataplane::build::checksum;

    #[test]
    fn rst_frames_keep_a_valid_tcp_checksum() {
        let src = Ipv4Addr::new(100, 64, 0, 7);
        let dst = Ipv4Addr::new(10, 100, 0, 1);
        let mut f = padded(src, dst, 6, 40_007, 80);
        assert_eq!(f.len(), MIN_LEN);
        set_tcp_flags(&mut f, TCP_RST);
        // the pseudo-header and the segment sum to 0xffff when the checksum is right
        let seg = &f[ETH_IP..];
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&src.octets());
        pseudo.extend_from_slice(&dst.octets());
        pseudo.extend_from_slice(&[0, 6]);
        pseudo.extend_from_slice(&(seg.len() as u16).to_be_bytes());
        pseudo.extend_from_slice(seg);
        assert_eq!(checksum(&pseudo), 0);
        assert_eq!(f[ETH_IP + 13], TCP_RST);
    }

    #[test]
    fn clients_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for i in (0..1 << 22).step_by(997) {
            assert!(seen.insert(client(i)));
        }
        assert_ne!(client(0), client(20_000));
    }
}
