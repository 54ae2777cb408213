//! Ports with fewer TX queues than workers: two workers forward through one `net_pcap` port
//! that has a single TX queue. flowgate starts (it used to refuse), says so once, the workers
//! share the queue behind its lock, every frame leaves, and the sharing is counted.
//!
//! No namespaces and no TAPs (`kernel = false`): `flowgate run` on pcap vdevs only, bounded by
//! `--duration`. The EAL runs in the flowgate child process, so plain `cargo test` works too.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::{Command, Stdio};

use flowgate_dataplane::build::{frame, pcap_frames, FrameSpec, PcapWriter};

/// Frames in each of the two input pcaps.
const FRAMES_PER_QUEUE: u16 = 3000;

/// A pcap of `n` distinct UDP frames, `queue` in the source address.
fn write_input(path: &Path, queue: u8, n: u16) {
    let file = std::fs::File::create(path).expect("create pcap");
    let mut w = PcapWriter::new(std::io::BufWriter::new(file)).expect("pcap header");
    for i in 0..n {
        let mut spec = FrameSpec::new(
            IpAddr::V4(Ipv4Addr::new(10, 0, queue, 1)),
            IpAddr::V4(Ipv4Addr::new(10, 9, (i >> 8) as u8, i as u8)),
            17,
            10_000 + i,
            53,
        );
        spec.payload = 18;
        w.push(&frame(&spec)).expect("pcap record");
    }
    w.finish().expect("flush pcap");
}

#[test]
fn two_workers_share_the_single_tx_queue_of_a_pcap_port() {
    let dir = std::env::temp_dir().join(format!("fg-txshared-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (a, b, empty, out) = (
        dir.join("a.pcap"),
        dir.join("b.pcap"),
        dir.join("empty.pcap"),
        dir.join("out.pcap"),
    );
    write_input(&a, 1, FRAMES_PER_QUEUE);
    write_input(&b, 2, FRAMES_PER_QUEUE);
    write_input(&empty, 0, 0);
    let d = dir.display();
    // in0: two RX queues (one pcap each), one polled by each worker; out0: one RX queue (an
    // empty pcap) and one TX queue (the output pcap) that both workers send on
    let config = format!(
        r#"flows = "t.flows"
[control]
socket = "{d}/control.sock"
[dataplane]
workers = [0, 1]
eal = ["--no-huge", "-m", "512", "--no-pci", "--no-shconf", "-l", "0"]
default_flow = "permit"
[[port]]
name = "in0"
device = "net_pcap0,rx_pcap={d}/a.pcap,rx_pcap={d}/b.pcap"
rx_queues = 2
kernel = false
peer = "out0"
[[port]]
name = "out0"
device = "net_pcap1,rx_pcap={d}/empty.pcap,tx_pcap={d}/out.pcap"
kernel = false
"#
    );
    std::fs::write(dir.join("t.flows"), "flow all permit\n    match\n").expect("write flows");
    std::fs::write(dir.join("t.toml"), config).expect("write config");
    let stats = dir.join("stats.json");
    let run = Command::new(env!("CARGO_BIN_EXE_flowgate"))
        .args(["run", "--config"])
        .arg(dir.join("t.toml"))
        .args(["--duration", "4", "--stats-json"])
        .arg(&stats)
        .stdin(Stdio::null())
        .output()
        .expect("run flowgate");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "flowgate run failed: {stderr}");

    // said once, naming the port, its queues and the workers
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("share TX queues"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning line: {stderr}");
    assert!(
        warnings[0].contains("port out0") && warnings[0].contains("1 TX queue for 2 workers"),
        "{}",
        warnings[0]
    );

    // every frame left, through the one queue
    let total = 2 * u64::from(FRAMES_PER_QUEUE);
    let written = std::fs::read(&out).expect("output pcap");
    let frames = pcap_frames(&written).expect("a pcap file");
    assert_eq!(frames.len() as u64, total, "frames in {}", out.display());
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&stats).expect("stats json"))
            .expect("stats is JSON");
    let port = |name: &str| {
        s["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no port {name} in {s}"))
    };
    let (in0, out0) = (port("in0"), port("out0"));
    assert_eq!(in0["rx_packets"], total, "{in0}");
    assert_eq!(out0["tx_packets"], total, "{out0}");
    assert_eq!(out0["nic_opackets"], total, "{out0}");
    // both workers received (one RX queue each) and sent through the shared queue
    let bursts = out0["tx_shared_bursts"].as_u64().expect("tx_shared_bursts");
    let contended = out0["tx_lock_contended"]
        .as_u64()
        .expect("tx_lock_contended");
    assert!(
        bursts >= total.div_ceil(32),
        "{bursts} shared bursts for {total} frames"
    );
    assert!(contended <= bursts, "{out0}");
    // in0's device has a TX queue per worker: nothing shared there
    assert_eq!(in0["tx_shared_bursts"], 0, "{in0}");
    assert!(
        stderr.contains("out0: TX queue shared by workers"),
        "the exit report names the sharing: {stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
