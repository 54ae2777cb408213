//! RCU under load: simulated workers take one snapshot per burst and count into that
//! generation while the control thread publishes new sets many times a second. Every packet
//! must be counted exactly once, in exactly one generation.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowgate_config::flows::{parse_packet_line, Action};
use flowgate_control::protocol::{Body, DirectorStatus, Request, ServerStatus};
use flowgate_control::DirectorControl;
use support::{Daemon, SEED};

const A: &str =
    "flow x permit\n    match proto udp dstport 1:100\nflow y deny\n    match proto udp\n";
const B: &str =
    "flow x permit\n    match proto udp dstport 101:200\nflow y deny\n    match proto udp\n";

fn verdict_index(a: Option<&Action>) -> usize {
    match a {
        Some(Action::Permit) | None => 0,
        Some(Action::Deny) => 1,
        Some(Action::Director(_)) => 2,
        Some(Action::Table(_)) => 3,
    }
}

#[test]
fn each_packet_is_counted_in_exactly_one_generation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(dir.path(), Some(A));
    let stop = Arc::new(AtomicBool::new(false));
    let packets: Vec<_> = (0..64u16)
        .map(|i| {
            parse_packet_line(&format!(
                "iface=eth0 proto=udp src=10.0.0.1 dst=10.0.0.2 sport=9 dport={}",
                1 + i * 3
            ))
            .expect("packet")
        })
        .collect();
    let workers: Vec<_> = (0..d.shared.workers.len())
        .map(|w| {
            let shared = Arc::clone(&d.shared);
            let stop = Arc::clone(&stop);
            let packets = packets.clone();
            std::thread::spawn(move || {
                let mut sent = 0u64;
                let mut generations = std::collections::BTreeSet::new();
                while !stop.load(Ordering::Relaxed) {
                    // one snapshot per burst
                    let rules = shared.rules.load();
                    generations.insert(rules.generation);
                    let c = &rules.flows.classifier;
                    let counters = &rules.counters[w];
                    for p in packets.iter().skip(sent as usize % 32).take(32) {
                        let v = c.classify(&c.key(p));
                        counters.flow_rules[rules.flows.slot(v)].add(1);
                        counters.flow_verdicts[verdict_index(c.action(v))].add(1);
                        sent += 1;
                    }
                }
                (sent, generations.len())
            })
        })
        .collect();
    let handle = d.handle.as_ref().expect("running");
    let started = Instant::now();
    let mut applied = 0;
    while applied < 300 || started.elapsed() < Duration::from_millis(300) {
        let text = if applied % 2 == 1 { A } else { B };
        let r = handle.request(Request::Apply {
            flows: text.into(),
            name: None,
        });
        assert!(r.is_ok(), "{r:?}");
        applied += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let mut sent = 0;
    for w in workers {
        let (n, gens) = w.join().expect("worker");
        assert!(gens > 1, "a worker saw only {gens} generation(s)");
        sent += n;
    }
    let Ok(Body::Stats(stats)) = handle.request(Request::Stats {}) else {
        panic!("stats");
    };
    assert_eq!(stats.generation, applied + 1);
    let by_verdict: u64 = stats
        .verdicts
        .iter()
        .filter(|v| v.list == "flow")
        .map(|v| v.packets)
        .sum();
    assert_eq!(by_verdict, sent, "verdicts over all generations");
    let by_rule: u64 = stats
        .rules
        .iter()
        .filter(|r| r.list == "flow")
        .map(|r| r.total)
        .sum();
    assert_eq!(by_rule, sent, "rule hits over all generations");
}

#[derive(Debug)]
struct FakeDirector(Vec<DirectorStatus>);

impl DirectorControl for FakeDirector {
    fn list(&self) -> Vec<DirectorStatus> {
        self.0.clone()
    }
    fn set_enabled(&mut self, d: &str, s: &str, enabled: bool) -> Result<(), String> {
        self.server(d, s)?.enabled = enabled;
        Ok(())
    }
    fn set_weight(&mut self, d: &str, s: &str, weight: u32) -> Result<(), String> {
        self.server(d, s)?.weight = weight;
        Ok(())
    }
}

impl FakeDirector {
    fn server(&mut self, d: &str, s: &str) -> Result<&mut ServerStatus, String> {
        self.0
            .iter_mut()
            .find(|x| x.name == d)
            .and_then(|x| x.servers.iter_mut().find(|y| y.name == s))
            .ok_or_else(|| format!("no server {d}/{s}"))
    }
}

#[test]
fn director_requests_reach_the_hook() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start_with(dir.path(), Some(SEED), |o| {
        o.director = Some(Box::new(FakeDirector(vec![DirectorStatus {
            counters: vec![],
            name: "maildirect".into(),
            scheduler: "wrr".into(),
            servers: vec![ServerStatus {
                name: "mail1".into(),
                address: "10.0.0.11".into(),
                weight: 10,
                enabled: true,
                up: true,
                connections: 0,
                active: 0,
                inactive: 0,
                packets: 0,
                bytes: 0,
            }],
        }])))
    });
    let r = d.ask(serde_json::json!({"op":"director_weight","director":"maildirect","server":"mail1","weight":3}));
    assert_eq!(r["ok"], true, "{r}");
    let r = d
        .ask(serde_json::json!({"op":"director_disable","director":"maildirect","server":"mail1"}));
    assert_eq!(r["ok"], true, "{r}");
    let r =
        d.ask(serde_json::json!({"op":"director_enable","director":"maildirect","server":"nope"}));
    assert_eq!(r["error"], "no server maildirect/nope");
    let l = d.ask(serde_json::json!({"op":"director_list"}));
    assert_eq!(l["directors"][0]["servers"][0]["weight"], 3);
    assert_eq!(l["directors"][0]["servers"][0]["enabled"], false);
}
