//! The Prometheus exporter of a running control side (own test binary: the recorder is global).

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use support::{Daemon, SEED};

fn scrape(addr: std::net::SocketAddr) -> String {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn exporter_serves_swaps_and_rules() {
    let addr = TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr");
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start_with(dir.path(), Some(SEED), |o| o.metrics = Some(addr));
    let r = d.ask(serde_json::json!({"op":"apply","flows":"flow a permit\n    match\n"}));
    assert_eq!(r["ok"], true, "{r}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut text = String::new();
    while Instant::now() < deadline {
        text = scrape(addr);
        if text.contains("flowgate_generation 2") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(text.contains("flowgate_generation 2"), "{text}");
    assert!(text.contains("flowgate_swaps_total 1"), "{text}");
    assert!(text.contains("flowgate_swap_seconds_bucket"), "{text}");
    assert!(
        text.contains(r#"flowgate_rule_packets_total{list="flow",flow="a",rule="match",n="1"} 0"#),
        "{text}"
    );
    assert!(
        text.contains(r#"flowgate_rule_bytes_total{list="flow",flow="a",rule="match",n="1"} 0"#),
        "{text}"
    );
    // the seed's rules left the set: kept (retired) under their identity
    assert!(
        text.contains(r#"flowgate_rule_packets_total{list="flow",flow="dns",rule="match proto udp dst 192.168.0.1 dstport 53",n="1"} 0"#),
        "{text}"
    );
    assert!(
        text.contains(r#"flowgate_port_rx_total{port="eth0"} 0"#),
        "{text}"
    );
}
