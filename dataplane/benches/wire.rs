//! The per-packet parser (`wire::parse`) on a mix of real frames: IPv4 TCP/UDP/ICMP, one and
//! two VLAN tags, IPv6 TCP, IPv6 with extension headers, a non-first fragment, ARP.
//!
//! `cargo bench -p flowgate-dataplane --bench wire` times it with criterion. For a figure that
//! does not depend on the machine's load, count instructions instead:
//! `WIRE_PARSE_LOOP=100000 valgrind --tool=callgrind <the bench binary>` parses the mix that
//! many times and exits (the count per parse is callgrind's total over 100000 x frames).

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{Criterion, Throughput};
use flowgate_dataplane::build::{frame, FrameSpec};
use flowgate_dataplane::wire::{parse, Frame};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

/// IPv6 frame `f` (untagged) with `hops` 8-byte destination-options headers in front of its
/// upper-layer header.
fn with_dest_opts(mut f: Vec<u8>, hops: usize) -> Vec<u8> {
    let upper = f[20];
    for i in 0..hops {
        let next = if i == 0 { upper } else { 60 };
        f.splice(54..54, [next, 0, 1, 4, 0, 0, 0, 0]);
    }
    f[20] = 60;
    let plen = u16::from_be_bytes([f[18], f[19]]) + 8 * hops as u16;
    f[18..20].copy_from_slice(&plen.to_be_bytes());
    f
}

fn frames() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    out.push(frame(&FrameSpec::new(
        ip("10.0.0.1"),
        ip("192.168.1.1"),
        6,
        40000,
        443,
    )));
    let mut udp = FrameSpec::new(ip("10.0.0.1"), ip("192.168.1.1"), 17, 53, 5353);
    udp.vlan = Some(100);
    udp.payload = 32;
    out.push(frame(&udp));
    out.push(frame(&FrameSpec::new(
        ip("10.0.0.1"),
        ip("8.8.8.8"),
        1,
        8,
        0,
    )));
    let mut qinq = frame(&FrameSpec::new(ip("10.0.0.1"), ip("192.168.1.1"), 6, 1, 2));
    qinq.splice(12..12, [0x88, 0xa8, 0x00, 0x07, 0x81, 0x00, 0x00, 0x64]);
    out.push(qinq);
    out.push(frame(&FrameSpec::new(
        ip("2001:db8::1"),
        ip("2001:db8:1::2"),
        6,
        40000,
        443,
    )));
    out.push(with_dest_opts(
        frame(&FrameSpec::new(
            ip("2001:db8::1"),
            ip("2001:db8:1::2"),
            17,
            1,
            2,
        )),
        2,
    ));
    let mut frag = FrameSpec::new(ip("10.0.0.1"), ip("192.168.1.1"), 17, 1, 2);
    frag.non_first_fragment = true;
    out.push(frame(&frag));
    let mut arp = vec![0xff; 12];
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&[0; 20]);
    out.push(arp);
    out
}

fn checksum_of(f: &Frame) -> usize {
    match f {
        Frame::Ip(x) => x.l4_offset + usize::from(x.proto),
        Frame::NonIp { ethertype } => usize::from(*ethertype),
        Frame::Malformed(m) => m.index(),
    }
}

fn main() {
    let frames = frames();
    if let Some(n) = std::env::var("WIRE_PARSE_LOOP")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        let mut acc = 0usize;
        for _ in 0..n {
            for f in &frames {
                acc = acc.wrapping_add(checksum_of(&parse(black_box(f))));
            }
        }
        println!("{acc}");
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("wire");
    g.throughput(Throughput::Elements(frames.len() as u64));
    g.bench_function("parse/mix", |b| {
        b.iter(|| {
            let mut acc = 0usize;
            for f in &frames {
                acc = acc.wrapping_add(checksum_of(&parse(black_box(f))));
            }
            acc
        })
    });
    g.finish();
    c.final_summary();
}
