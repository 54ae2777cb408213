//! Static neighbours (`[[port]] neighbours = { "IP" = "MAC" }`): a routed flow whose next hop
//! never answers ARP (a pcap file is no host) still leaves, to the configured MAC, with the
//! TTL taken and the IPv4 checksum updated. Without the static entry the same packets wait
//! for an ARP reply that never comes and are dropped (`neighbour-unresolved`).
//!
//! No namespaces and no TAPs (`kernel = false`): `flowgate run` on pcap vdevs only, bounded by
//! `--duration`.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::{Command, Stdio};

use flowgate_dataplane::build::{checksum, frame, pcap_frames, FrameSpec, PcapWriter};

const FRAMES: u16 = 200;
const OUT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x99, 0x01];
const HOP_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x99, 0x02];

fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let file = std::fs::File::create(path).expect("create pcap");
    let mut w = PcapWriter::new(std::io::BufWriter::new(file)).expect("pcap header");
    for f in frames {
        w.push(f).expect("pcap record");
    }
    w.finish().expect("flush pcap");
}

/// Runs flowgate routing `FRAMES` packets to 10.200.0.0/16 via 10.99.0.2 out `out0`, with
/// `neighbours` on out0; returns the frames written to out0's pcap and the stats.
fn route(dir: &Path, neighbours: &str) -> (Vec<Vec<u8>>, serde_json::Value) {
    std::fs::create_dir_all(dir).expect("temp dir");
    let input: Vec<Vec<u8>> = (0..FRAMES)
        .map(|i| {
            let mut spec = FrameSpec::new(
                IpAddr::V4(Ipv4Addr::new(10, 1, 0, 2)),
                IpAddr::V4(Ipv4Addr::new(10, 200, (i >> 8) as u8, i as u8)),
                17,
                20_000 + i,
                53,
            );
            spec.ttl = 64;
            spec.payload = 18;
            frame(&spec)
        })
        .collect();
    write_pcap(&dir.join("in.pcap"), &input);
    write_pcap(&dir.join("empty.pcap"), &[]);
    let d = dir.display();
    let config = format!(
        r#"flows = "t.flows"
[control]
socket = "{d}/control.sock"
[dataplane]
workers = [0]
eal = ["--no-huge", "-m", "512", "--no-pci", "--no-shconf", "-l", "0"]
[[port]]
name = "in0"
device = "net_pcap0,rx_pcap={d}/in.pcap"
kernel = false
addresses = ["10.1.0.1/24"]
[[port]]
name = "out0"
device = "net_pcap1,rx_pcap={d}/empty.pcap,tx_pcap={d}/out.pcap"
kernel = false
mac = "02:00:00:00:99:01"
addresses = ["10.99.0.1/24"]
{neighbours}
[[table]]
id = 100
routes = {{ "10.200.0.0/16" = "10.99.0.2" }}
"#
    );
    std::fs::write(
        dir.join("t.flows"),
        "flow routed table 100\n    match dst 10.200.0.0/16\n",
    )
    .expect("write flows");
    std::fs::write(dir.join("t.toml"), config).expect("write config");
    let stats = dir.join("stats.json");
    let run = Command::new(env!("CARGO_BIN_EXE_flowgate"))
        .args(["run", "--config"])
        .arg(dir.join("t.toml"))
        .args(["--duration", "5", "--stats-json"])
        .arg(&stats)
        .stdin(Stdio::null())
        .output()
        .expect("run flowgate");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "flowgate run failed: {stderr}");
    let written = std::fs::read(dir.join("out.pcap")).expect("output pcap");
    let out = pcap_frames(&written)
        .expect("a pcap file")
        .into_iter()
        .map(<[u8]>::to_vec)
        .collect();
    let s = serde_json::from_str(&std::fs::read_to_string(&stats).expect("stats json"))
        .expect("stats is JSON");
    (out, s)
}

#[test]
fn a_static_neighbour_resolves_a_next_hop_that_never_answers() {
    let dir = std::env::temp_dir().join(format!("fg-staticneigh-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (out, s) = route(
        &dir.join("static"),
        r#"neighbours = { "10.99.0.2" = "02:00:00:00:99:02" }"#,
    );
    // every packet routed (no ARP request: the MAC was known)
    let routed: Vec<&Vec<u8>> = out.iter().filter(|f| f[12..14] == [0x08, 0x00]).collect();
    assert_eq!(routed.len(), usize::from(FRAMES), "{s}");
    assert!(
        out.iter().all(|f| f[12..14] != [0x08, 0x06]),
        "no ARP request for a static neighbour"
    );
    for (i, f) in routed.iter().enumerate() {
        assert_eq!(f[0..6], HOP_MAC, "frame {i}: to the static neighbour's MAC");
        assert_eq!(f[6..12], OUT_MAC, "frame {i}: from out0's MAC");
        assert_eq!(f[14 + 8], 63, "frame {i}: TTL 64 - 1");
        assert_eq!(checksum(&f[14..34]), 0, "frame {i}: IPv4 header checksum");
    }
    assert_eq!(s["tables"][1]["lookups"], u64::from(FRAMES), "{s}");
    assert_eq!(s["drops"]["neighbour-unresolved"], 0, "{s}");

    // the same without the static entry: ARP requests go out, nothing routed leaves
    let (out, s) = route(&dir.join("dynamic"), "");
    assert!(
        out.iter().all(|f| f[12..14] == [0x08, 0x06]),
        "only ARP requests leave"
    );
    assert!(!out.is_empty(), "ARP requests for 10.99.0.2");
    let dropped = s["drops"]["neighbour-unresolved"].as_u64().expect("drops")
        + s["drops"]["neighbour-hold-overflow"]
            .as_u64()
            .expect("drops");
    assert_eq!(dropped, u64::from(FRAMES), "{s}");
    let _ = std::fs::remove_dir_all(&dir);
}
