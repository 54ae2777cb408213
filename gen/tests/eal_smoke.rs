//! The generator under the EAL, on virtual ports (run with nextest: one process per test, as
//! the EAL starts once per process). No hugepages, no PCI, no shared config.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use flowgate_gen::engine::{Generator, TrialSpec};
use flowgate_gen::profile::{Options, Profile, Source};
use flowgate_gen::sizes::FrameSize;

fn eal(vdevs: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "--no-huge",
        "-m",
        "256",
        "--no-pci",
        "--no-shconf",
        "-l",
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(vdevs.iter().map(|d| format!("--vdev={d}")));
    v.push("--log-level=lib.eal:error".into());
    v
}

#[test]
fn loopback_ring_receives_every_frame_offered_with_latency() {
    let mut g = Generator::open(
        &eal(&["net_ring0"]),
        "net_ring0",
        "net_ring0",
        Duration::from_secs(5),
    )
    .expect("generator on net_ring0");
    let p = Profile::build(&Source::Synthetic(64), FrameSize::Imix, &Options::default()).unwrap();
    let spec = TrialSpec {
        rate_pps: 20_000,
        duration: Duration::from_millis(300),
        drain: Duration::from_millis(20),
    };
    let r = g.trial(&p, &spec).expect("trial");
    assert!(r.offered > 1000, "{r:?}");
    assert_eq!(r.received, r.offered, "a ring loses nothing: {r:?}");
    assert_eq!(
        (r.lost, r.loss_ratio, r.tx_refused, r.foreign),
        (0, 0.0, 0, 0)
    );
    assert_eq!(r.latency.count(), r.received, "every frame timed");
    // paced: never above the target (one burst of slack), and the reported rate is the
    // count over the time
    assert!(
        r.offered_pps <= 20_000.0 * 1.05 + 32.0 / r.tx_seconds,
        "{r:?}"
    );
    assert!((r.offered_pps - r.offered as f64 / r.tx_seconds).abs() < 1e-6 * r.offered_pps);
    assert_eq!(r.generator_limited, r.offered_pps < 0.99 * 20_000.0);
    let (p50, max) = (r.latency.quantile(0.5).unwrap(), r.latency.max().unwrap());
    assert!(p50 > 0 && p50 <= max && max < 10_000_000_000, "{p50} {max}");
}

#[test]
fn frames_into_a_sink_are_all_lost() {
    let mut g = Generator::open(
        &eal(&["net_null0,no-rx=1", "net_ring0"]),
        "net_null0",
        "net_ring0",
        Duration::from_secs(5),
    )
    .expect("generator on net_null0 -> net_ring0");
    let p = Profile::build(
        &Source::Synthetic(8),
        FrameSize::Fixed(64),
        &Options::default(),
    )
    .unwrap();
    let spec = TrialSpec {
        rate_pps: 10_000,
        duration: Duration::from_millis(200),
        drain: Duration::from_millis(10),
    };
    let r = g.trial(&p, &spec).expect("trial");
    assert!(r.offered > 100, "{r:?}");
    assert_eq!(r.received, 0);
    assert_eq!(r.lost, r.offered as i64);
    assert_eq!(r.loss_ratio, 1.0);
    assert_eq!(r.latency.count(), 0);
    let (tx, _) = g.port_stats().unwrap();
    assert_eq!(tx.opackets, r.offered - r.tx_refused);
}
