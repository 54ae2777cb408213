//! The generator's pieces that need no EAL: histogram percentiles, the IMIX cycle, pacing
//! arithmetic, the NDR/PDR search, stamps and checksums, profiles, the nftables converter and
//! the counters' difference.

#![allow(clippy::unwrap_used)]

use flowgate_dataplane::classify::classbench::parse_rule;
use flowgate_gen::hist::LatencyHistogram;
use flowgate_gen::nft::{convert, Form};
use flowgate_gen::pace::{frames_due, Pacer};
use flowgate_gen::profile::{read_pcap, Cursor, Options, Profile, Source};
use flowgate_gen::report::delta;
use flowgate_gen::search::{Majority, RateSearch};
use flowgate_gen::sizes::FrameSize;
use flowgate_gen::stamp;
use serde_json::json;

#[test]
fn histogram_percentiles_within_one_bucket_of_the_exact_ones() {
    let mut h = LatencyHistogram::new();
    // 1..=100_000 ns, each once: the exact q-quantile is ceil(q * n)
    for v in 1..=100_000u64 {
        h.record(v);
    }
    assert_eq!(h.count(), 100_000);
    assert_eq!(h.min(), Some(1));
    assert_eq!(h.max(), Some(100_000));
    assert!((h.mean().unwrap() - 50_000.5).abs() < 1e-6);
    for q in [0.1, 0.5, 0.9, 0.99, 0.999] {
        let exact = (q * 100_000.0_f64).ceil();
        let got = h.quantile(q).unwrap() as f64;
        assert!(got >= exact, "q {q}: {got} below the exact {exact}");
        assert!(
            got <= exact * (1.0 + 1.0 / 32.0) + 1.0,
            "q {q}: {got} too far above {exact}"
        );
    }
    assert_eq!(h.quantile(1.0), Some(100_000));
    assert_eq!(h.quantile(0.0), Some(1));
}

#[test]
fn histogram_small_values_are_exact_and_cdf_ends_at_one() {
    let mut h = LatencyHistogram::new();
    for v in [3u64, 3, 7, 20, 31] {
        h.record(v);
    }
    assert_eq!(h.quantile(0.4), Some(3));
    assert_eq!(h.quantile(0.6), Some(7));
    assert_eq!(h.quantile(0.8), Some(20));
    let cdf = h.cdf();
    assert_eq!(cdf.first(), Some(&(3, 0.4)));
    assert_eq!(cdf.last().map(|c| c.1), Some(1.0));
    assert!(cdf.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1));

    let mut other = LatencyHistogram::new();
    other.record(1_000_000);
    h.merge(&other);
    assert_eq!(h.count(), 6);
    assert_eq!(h.max(), Some(1_000_000));
    assert_eq!(LatencyHistogram::new().quantile(0.5), None);
}

#[test]
fn imix_cycle_has_the_7_4_1_mix_interleaved() {
    let c = FrameSize::Imix.cycle();
    assert_eq!(c.len(), 12);
    for (size, n) in [(64u16, 7usize), (570, 4), (1518, 1)] {
        assert_eq!(c.iter().filter(|&&s| s == size).count(), n, "{size}");
    }
    // interleaved: never three 64-byte frames in a row, the 570s spread out
    assert!(!c.windows(3).any(|w| w.iter().all(|&s| s == 64)), "{c:?}");
    assert!(
        (FrameSize::Imix.mean_bytes() - (7.0 * 64.0 + 4.0 * 570.0 + 1518.0) / 12.0).abs() < 1e-9
    );
    assert_eq!("imix".parse::<FrameSize>(), Ok(FrameSize::Imix));
    assert_eq!("128".parse::<FrameSize>(), Ok(FrameSize::Fixed(128)));
    assert!("63".parse::<FrameSize>().is_err());
    assert!("1519".parse::<FrameSize>().is_err());
    assert!("big".parse::<FrameSize>().is_err());
    assert_eq!(FrameSize::Fixed(256).cycle(), vec![256]);
}

#[test]
fn pacing_releases_frames_on_schedule_and_writes_off_lateness() {
    let hz = 2_000_000_000; // 2 GHz
    assert_eq!(frames_due(hz, 1_000_000, hz), 1_000_000);
    assert_eq!(frames_due(hz / 2, 1_000_000, hz), 500_000);
    assert_eq!(frames_due(1999, 1_000_000, hz), 0); // one frame every 2000 cycles
    assert_eq!(frames_due(2000, 1_000_000, hz), 1);
    // no overflow over hours at high rates
    assert_eq!(frames_due(3600 * hz, 100_000_000, hz), 360_000_000_000);

    let mut p = Pacer::new(1000, 1_000_000, hz, 64);
    assert_eq!(p.take(1000, 32), 0);
    assert_eq!(p.take(1000 + 20_000, 32), 10);
    assert_eq!(p.take(1000 + 20_000, 32), 0, "nothing twice");
    // 50 more due: at most 32 per call
    assert_eq!(p.take(1000 + 120_000, 32), 32);
    assert_eq!(p.take(1000 + 120_000, 32), 18);
    assert_eq!(p.take(1000 + 120_000, 32), 0);
    assert_eq!((p.released(), p.missed()), (60, 0));
    // 100 due at once: more than the backlog of 64, so 36 are written off, 64 released
    assert_eq!(p.take(1000 + 320_000, 32), 32);
    assert_eq!(p.take(1000 + 320_000, 32), 32);
    assert_eq!(p.take(1000 + 320_000, 32), 0);
    assert_eq!((p.released(), p.missed()), (124, 36));
    // far behind: still only 64 released, the rest written off
    assert_eq!(p.take(1000 + 2_000_000_000, 1000), 64);
    assert_eq!(p.released() + p.missed(), 1_000_000);
    assert_eq!(p.released(), 188);
    // unlimited rate
    let mut u = Pacer::new(0, 0, hz, 64);
    assert_eq!(u.take(0, 32), 32);
}

/// A DUT that forwards up to `capacity` frames/s and drops the excess.
fn loss_at(rate: f64, capacity: f64) -> f64 {
    if rate <= capacity {
        0.0
    } else {
        (rate - capacity) / rate
    }
}

#[test]
fn search_converges_on_the_capacity_within_precision() {
    let (top, cap) = (10_000_000.0, 3_300_000.0);
    let mut pdr = RateSearch::new(0.005, top, top / 1000.0, 0.01, 20);
    let mut ndr = RateSearch::new(0.0, top, top / 1000.0, 0.01, 20);
    for which in 0..2 {
        loop {
            let s = if which == 0 { &pdr } else { &ndr };
            let Some(rate) = s.next_rate() else { break };
            let loss = loss_at(rate, cap);
            pdr.record(rate, loss, which == 0);
            ndr.record(rate, loss, which == 1);
        }
    }
    let n = ndr.result().unwrap();
    let p = pdr.result().unwrap();
    assert!(n <= cap && n >= cap * 0.99, "NDR {n}");
    // PDR: highest rate with loss <= 0.5%: cap / 0.995
    assert!(p <= cap / 0.995 && p >= cap / 0.995 * 0.99, "PDR {p}");
    assert!(p > n);
    assert!(ndr.trials() < 20 && pdr.trials() < 20);
}

#[test]
fn search_edge_cases() {
    // the top passes: one trial, done
    let mut s = RateSearch::new(0.0, 1e6, 1e3, 0.01, 10);
    assert_eq!(s.next_rate(), Some(1e6));
    s.record(1e6, 0.0, true);
    assert_eq!(s.next_rate(), None);
    assert_eq!(s.result(), Some(1e6));
    // nothing passes, down to the floor
    let mut s = RateSearch::new(0.0, 1e6, 1e3, 0.01, 40);
    while let Some(r) = s.next_rate() {
        s.record(r, 0.5, true);
    }
    assert_eq!(s.result(), None);
    assert_eq!(s.lowest_failure(), Some(1e3));
    // the trial budget ends the search
    let mut s = RateSearch::new(0.0, 1e6, 1.0, 1e-9, 3);
    while let Some(r) = s.next_rate() {
        s.record(r, loss_at(r, 123_456.0), true);
    }
    assert_eq!(s.trials(), 3);
    // a result outside the bracket does not move it the wrong way
    let mut s = RateSearch::new(0.0, 1e6, 1e3, 0.01, 10);
    s.record(5e5, 0.0, true);
    s.record(6e5, 0.1, true);
    s.record(7e5, 0.0, true); // noisy pass above a failure: ignored
    assert_eq!(s.result(), Some(5e5));
    assert_eq!(s.next_rate(), Some(5.5e5));
}

/// A DUT that loses a few frames in one trial of every three whatever the rate (a preempted
/// core): a single-trial search ends far below its capacity, a majority of 3 finds it.
#[test]
fn repeated_trials_see_through_sporadic_loss() {
    let (top, cap) = (10_000_000.0, 3_300_000.0);
    let search = |repeat: u32| {
        let majority = Majority::new(repeat);
        let mut ndr = RateSearch::new(0.0, top, top / 1000.0, 0.01, 30);
        let mut n = 0u32;
        while let Some(rate) = ndr.next_rate() {
            let mut losses = Vec::new();
            let passed = loop {
                n += 1;
                let spurious = if n.is_multiple_of(3) { 1e-5 } else { 0.0 };
                losses.push(loss_at(rate, cap) + spurious);
                if let Some(v) = majority.verdict(&losses, 0.0) {
                    break v;
                }
            };
            ndr.record_verdict(rate, passed, true);
        }
        ndr.result().unwrap_or(0.0)
    };
    let single = search(1);
    assert!(single < cap * 0.9, "a single trial is fooled: {single}");
    let three = search(3);
    assert!(
        three <= cap && three >= cap * 0.99,
        "majority of 3: {three}"
    );
}

#[test]
fn majority_decides_as_soon_as_it_can() {
    let m = Majority::new(3);
    assert_eq!(m.verdict(&[0.0], 0.0), None);
    assert_eq!(m.verdict(&[0.0, 0.0], 0.0), Some(true));
    assert_eq!(m.verdict(&[0.1, 0.0], 0.0), None);
    assert_eq!(m.verdict(&[0.1, 0.0, 0.2], 0.0), Some(false));
    assert_eq!(m.verdict(&[0.004, 0.1, 0.003], 0.005), Some(true));
    let one = Majority::new(1);
    assert_eq!(one.verdict(&[0.0], 0.0), Some(true));
    assert_eq!(one.verdict(&[0.01], 0.0), Some(false));
    assert_eq!(Majority::new(0), one);
}

fn frames(src: &Source, size: FrameSize) -> Vec<Vec<u8>> {
    let p = Profile::build(src, size, &Options::default()).unwrap();
    let mut c = Cursor::default();
    (0..p.flows * p.cycle_len())
        .map(|_| c.next(&p).bytes.clone())
        .collect()
}

#[test]
fn stamps_round_trip_with_valid_checksums_for_every_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.trace");
    // tcp, udp, icmp, protocol 0 and 255: src dst sport dport proto match
    std::fs::write(
        &trace,
        "167772161 167772162 1000 80 6 1\n167772161 167772162 1000 53 17 2\n\
         167772161 167772162 0 0 1 3\n167772161 167772162 5 6 0 4\n167772161 167772162 5 6 255 5\n",
    )
    .unwrap();
    for size in [
        FrameSize::Fixed(64),
        FrameSize::Fixed(1518),
        FrameSize::Imix,
    ] {
        let p = Profile::build(&Source::Trace(trace.clone()), size, &Options::default()).unwrap();
        assert_eq!(
            p.stamped(),
            (5 * size.distinct().len(), 5 * size.distinct().len())
        );
        let mut c = Cursor::default();
        for i in 0..60usize {
            let t = c.next(&p);
            let expected = usize::from(size.cycle()[i % size.cycle().len()]) - 4;
            assert_eq!(t.bytes.len(), expected, "frame {i} at {size}");
            let mut f = t.bytes.clone();
            assert!(stamp::l4_checksum_ok(&f), "template {i} checksum");
            let tsc = 0x0123_4567_89ab_cdef_u64.wrapping_mul(i as u64 + 1);
            stamp::write(&mut f, t.stamp.as_ref().unwrap(), tsc);
            assert_eq!(stamp::read(&f), Some(tsc), "frame {i}");
            assert!(
                stamp::l4_checksum_ok(&f),
                "frame {i} checksum after stamping"
            );
            // the classifier's view is unchanged: addresses, protocol, ports
            assert_eq!(f[..34], t.bytes[..34]);
            if matches!(f[23], 6 | 17) {
                assert_eq!(f[34..38], t.bytes[34..38]);
            }
        }
    }
    // a frame that is not ours
    let mut f = frames(&Source::Synthetic(1), FrameSize::Fixed(64)).remove(0);
    assert!(stamp::read(&f).is_some());
    f[42] ^= 0xff; // breaks the payload magic
    assert_eq!(stamp::read(&f), None);
    assert_eq!(stamp::read(&[0u8; 20]), None);
}

#[test]
fn synthetic_profile_has_distinct_flows_and_martians_are_left_out() {
    let fs = frames(&Source::Synthetic(4), FrameSize::Fixed(128));
    assert_eq!(fs.len(), 4);
    let mut srcs: Vec<&[u8]> = fs.iter().map(|f| &f[26..30]).collect();
    srcs.dedup();
    assert_eq!(srcs.len(), 4);
    assert!(fs.iter().all(|f| f.len() == 124 && f[23] == 17));

    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.trace");
    // 10.0.0.1 -> 10.0.0.2 routable; 127.0.0.1 and 224.0.0.1 destinations are not
    std::fs::write(
        &trace,
        "167772161 167772162 1 2 6 1\n167772161 2130706433 1 2 6 1\n167772161 3758096385 1 2 17 1\n",
    )
    .unwrap();
    let opts = Options {
        routable: true,
        ..Options::default()
    };
    let p = Profile::build(&Source::Trace(trace), FrameSize::Fixed(64), &opts).unwrap();
    assert_eq!((p.flows, p.skipped), (1, 2));
    assert!("synth:0".parse::<Source>().is_err());
    assert!("nope:1".parse::<Source>().is_err());
    assert_eq!(
        "pcap:x.pcap".parse::<Source>().ok(),
        Some(Source::Pcap("x.pcap".into()))
    );
}

#[test]
fn pcap_profile_reads_frames_and_rejects_garbage() {
    let fs = frames(&Source::Synthetic(3), FrameSize::Fixed(100));
    let mut pcap = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
    pcap.extend([0u8; 8]);
    pcap.extend(65535u32.to_le_bytes());
    pcap.extend(1u32.to_le_bytes());
    for f in &fs {
        pcap.extend([0u8; 8]);
        pcap.extend((f.len() as u32).to_le_bytes());
        pcap.extend((f.len() as u32).to_le_bytes());
        pcap.extend(f);
    }
    assert_eq!(read_pcap(&pcap).unwrap(), fs);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.pcap");
    std::fs::write(&path, &pcap).unwrap();
    let p = Profile::build(
        &Source::Pcap(path),
        FrameSize::Fixed(64),
        &Options::default(),
    )
    .unwrap();
    assert_eq!(p.flows, 3);
    assert_eq!(p.stamped(), (3, 3));
    assert!((p.mean_frame - 100.0).abs() < 1e-9);
    // truncated record, wrong magic, wrong link type
    assert!(read_pcap(&pcap[..pcap.len() - 1])
        .unwrap_err()
        .contains("past the end"));
    assert!(read_pcap(&[0u8; 24]).is_err());
    let mut raw = pcap.clone();
    raw[20] = 101;
    assert!(read_pcap(&raw).unwrap_err().contains("link type 101"));
}

#[test]
fn nft_converter_linear_and_sets() {
    let rules: Vec<_> = [
        "@10.0.0.0/8 192.168.1.7/32 0 : 65535 80 : 80 0x06/0xFF",
        "@10.1.2.3/16 0.0.0.0/0 1000 : 2000 0 : 65535 0x00/0x00",
        "@0.0.0.0/0 0.0.0.0/0 0 : 65535 0 : 65535 0x01/0xFF",
        "@0.0.0.0/0 0.0.0.0/0 5 : 5 0 : 65535 0x2F/0xFF",
        "@0.0.0.0/0 0.0.0.0/0 0 : 65535 0 : 65535 0x00/0x00",
        "@0.0.0.0/0 0.0.0.0/0 0 : 65535 0 : 65535 0x00/0x00",
    ]
    .iter()
    .map(|l| parse_rule(l).unwrap())
    .collect();
    let lin = convert(&rules, Form::Linear, "t");
    assert_eq!(lin.entries, 6);
    assert_eq!(lin.approximated, 1);
    let lines: Vec<&str> = lin.text.lines().map(str::trim).collect();
    assert!(lines.contains(
        &"ip saddr 10.0.0.0/8 ip daddr 192.168.1.7/32 meta l4proto 6 th dport 80 accept"
    ));
    assert!(
        lines.contains(&"ip saddr 10.1.0.0/16 meta l4proto { 6, 17 } th sport 1000-2000 accept")
    );
    assert!(lines.contains(&"meta l4proto 1 accept"));
    assert!(lines.contains(&"meta l4proto 47 accept"));
    assert!(lines.contains(&"type filter hook forward priority filter; policy drop;"));
    assert_eq!(lines.iter().filter(|l| **l == "accept").count(), 2);

    let sets = convert(&rules, Form::Sets, "t");
    // l4 map: rules 1, 2 and 5 (neither corner of 5, everything, lies inside 1 or 2; 6 is a
    // duplicate of 5); l3 map: 3, 4 (ports dropped) and 5
    let all = format!("{}{}", sets.text, sets.chunks.concat());
    assert_eq!(sets.approximated, 1);
    assert!(all.contains("10.0.0.0/8 . 192.168.1.7/32 . 6 . 0-65535 . 80 : accept"));
    assert!(all.contains("10.1.0.0/16 . 0.0.0.0/0 . 0-255 . 1000-2000 . 0-65535 : accept"));
    assert!(all.contains("0.0.0.0/0 . 0.0.0.0/0 . 47 : accept"));
    assert!(all.contains("meta l4proto vmap { tcp : jump l4, udp : jump l4 }"));
    assert_eq!(
        all.matches("0.0.0.0/0 . 0.0.0.0/0 . 0-255 . 0-65535 . 0-65535")
            .count(),
        1
    );
    assert_eq!((sets.entries, sets.fallback), (6, 0));
    assert!(
        !sets.text.lines().any(|l| l.trim().ends_with("accept")),
        "{}",
        sets.text
    );
    assert!(sets
        .chunks
        .iter()
        .all(|c| c.starts_with("add element ip t ")));
    assert!(lin.chunks.is_empty());
}

#[test]
fn nft_sets_keep_overlapping_rules_in_order_after_the_lookups() {
    // 2 lies inside 1 (its first point is in 1): refused by an interval map, so a linear rule
    let rules: Vec<_> = [
        "@10.0.0.0/8 0.0.0.0/0 0 : 65535 0 : 65535 0x06/0xFF",
        "@10.1.0.0/16 0.0.0.0/0 0 : 65535 80 : 80 0x06/0xFF",
        "@11.0.0.0/8 0.0.0.0/0 0 : 65535 0 : 65535 0x06/0xFF",
    ]
    .iter()
    .map(|l| parse_rule(l).unwrap())
    .collect();
    let c = convert(&rules, Form::Sets, "t");
    assert_eq!((c.entries, c.fallback), (2, 1));
    assert!(c
        .text
        .contains("ip saddr 10.1.0.0/16 meta l4proto 6 th dport 80 accept"));
    // more than one chunk of elements
    let many: Vec<_> = (0..1200u32)
        .map(|i| {
            let a = std::net::Ipv4Addr::from(0x0a00_0000 + i);
            parse_rule(&format!("@{a}/32 0.0.0.0/0 0 : 65535 0 : 65535 0x11/0xFF")).unwrap()
        })
        .collect();
    let c = convert(&many, Form::Sets, "t");
    assert_eq!((c.entries, c.fallback, c.chunks.len()), (1200, 0, 2));
}

#[test]
fn counters_difference_follows_the_shape() {
    let before = json!({"ports": [{"name": "in0", "nic": {"imissed": 5}}], "drops": [["no_route", 1]], "g": 1.5});
    let after = json!({"ports": [{"name": "in0", "nic": {"imissed": 12}}], "drops": [["no_route", 4]], "g": 2.0, "new": 3});
    assert_eq!(
        delta(&before, &after),
        json!({"ports": [{"name": "in0", "nic": {"imissed": 7}}], "drops": [["no_route", 3]], "g": 0.5, "new": 3})
    );
}
