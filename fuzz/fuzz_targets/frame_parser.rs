//! The frame parser (`dataplane::wire::parse`) on any bytes: never a panic, offsets inside the
//! frame; an IP frame then goes through a NAT director the way the worker would hand it over
//! (forward, reply, ICMP error translation: rewrites on a copy), which must not panic either.
#![no_main]

use std::sync::OnceLock;

use flowgate_config::appliance::parse_with_cpus;
use flowgate_dataplane::director::{DirectorSet, DirectorWorker, WorkerOptions};
use flowgate_dataplane::wire::{parse, Frame};
use libfuzzer_sys::fuzz_target;

/// A NAT director with a VIP and two servers (IPv4), like the seed's `maildirect`.
const CONFIG: &str = r#"
flows = "fuzz.flows"
[[port]]
name = "eth0"
device = "net_null0"
addresses = ["192.168.0.1/24"]
[[director]]
name = "d"
scheduler = "wrr"
mode = "nat"
virtual = { address = "192.168.0.2" }
persistence = { timeout = 300, netmask = "255.255.255.0" }
servers = [
  { name = "a", address = "10.0.0.11", weight = 1 },
  { name = "b", address = "10.0.0.12", weight = 1, port = 8025 },
]
"#;

fn directors() -> &'static DirectorSet {
    static SET: OnceLock<DirectorSet> = OnceLock::new();
    SET.get_or_init(|| {
        let app = parse_with_cpus("fuzz.toml", CONFIG, 4).expect("the fuzz config is valid");
        DirectorSet::build(&app.directors).expect("the fuzz director builds")
    })
}

fuzz_target!(|data: &[u8]| {
    let Frame::Ip(facts) = parse(data) else {
        return;
    };
    assert!(facts.l3_offset < data.len(), "{facts:?}");
    assert!(facts.l3_offset <= facts.l4_offset, "{facts:?}");
    let Some(st) = directors().get(0) else {
        return;
    };
    let opts = WorkerOptions {
        capacity: 64,
        ..WorkerOptions::default()
    };
    let mut w = DirectorWorker::new(st, opts);
    let mut frame = data.to_vec();
    let _ = w.forward(st, &mut frame, &facts, 1);
    let mut frame = data.to_vec();
    let _ = w.reply(st, &mut frame, &facts, 2);
    let mut frame = data.to_vec();
    let _ = w.icmp(st, &mut frame, &facts, 3);
});
