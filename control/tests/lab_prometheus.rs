//! Monitoring against the real thing: Debian's Prometheus scrapes flowgate during traffic, in
//! the lab namespace, with the shipped alert rules loaded. Checked through Prometheus's HTTP
//! API: per-rule, per-port, per-director and swap metrics have the values the replayed
//! traffic and the pushes imply; the alert rules are healthy and the refused-push and
//! no-server-up alerts trigger; every query of the shipped Grafana dashboard runs and
//! returns data. `promtool check rules` passes on the rules file.
//!
//! Traffic: `in0` replays a pcap once (exact counts: 100 DNS queries permitted, 40 frames
//! denied, 30 SYNs from 30 clients to the director's VIP); `in1` replays another forever
//! (continuous traffic: permitted UDP and malformed frames) while Prometheus scrapes.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{skip_without_lab, wait_until, Netns, TempDir};
use flowgate_dataplane::build::{frame, FrameSpec};
use serde_json::Value;

const FLOWS: &str = "\
flow dns permit
    match proto udp dst 192.168.0.1 dstport 53
flow mail director mail
    match proto tcp dst 192.168.0.2 dstport 25
flow bulk permit
    match proto udp dstport 9000
flow rest deny
    match
";

/// A classic pcap (little endian, Ethernet) of `frames`.
fn pcap(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    for v in [0u32, 0, 65535, 1] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for f in frames {
        for v in [0u32, 0, f.len() as u32, f.len() as u32] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(f);
    }
    out
}

fn spec(src: &str, dst: &str, proto: u8, sport: u16, dport: u16) -> FrameSpec {
    let ip = |s: &str| s.parse().expect("address");
    let mut s = FrameSpec::new(ip(src), ip(dst), proto, sport, dport);
    s.payload = 18;
    s
}

fn config(dir: &Path) -> String {
    format!(
        r#"flows = "flows"
[control]
socket = "{d}/control.sock"
metrics = "127.0.0.1:9469"
[dataplane]
workers = [1]
eal = ["--no-huge", "-m", "512", "--no-pci", "--no-shconf"]
[[port]]
name = "in0"
device = "net_pcap0,rx_pcap={d}/once.pcap"
kernel = false
peer = "out0"
addresses = ["192.168.0.1/24", "192.168.0.2/24"]
[[port]]
name = "out0"
device = "net_null0,no-rx=1"
kernel = false
addresses = ["10.0.0.1/24"]
[[port]]
name = "in1"
device = "net_pcap1,rx_pcap={d}/forever.pcap,infinite_rx=1"
kernel = false
peer = "out1"
[[port]]
name = "out1"
device = "net_null1,no-rx=1"
kernel = false
[[director]]
name = "mail"
scheduler = "rr"
mode = "nat"
virtual = {{ address = "192.168.0.2" }}
servers = [
  {{ name = "mail1", address = "10.0.0.11" }},
  {{ name = "mail2", address = "10.0.0.12" }},
]
[[director]]
name = "dead"
scheduler = "rr"
mode = "nat"
virtual = {{ address = "192.168.0.3" }}
check = {{ kind = "tcp", port = 25, interval_ms = 200, timeout_ms = 100, rise = 1, fall = 1 }}
servers = [ {{ name = "gone", address = "10.0.0.99" }} ]
"#,
        d = dir.display()
    )
}

/// One instant query through Prometheus's HTTP API (curl in the namespace).
fn query(ns: &Netns, expr: &str) -> Value {
    let out = ns.run(&[
        "curl",
        "-sS",
        "--max-time",
        "5",
        "--get",
        "--data-urlencode",
        &format!("query={expr}"),
        "http://127.0.0.1:9090/api/v1/query",
    ]);
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// The single value of an instant query's result, if it has exactly one series.
fn scalar(ns: &Netns, expr: &str) -> Option<f64> {
    let v = query(ns, expr);
    let r = v["data"]["result"].as_array()?;
    if r.len() != 1 {
        return None;
    }
    r[0]["value"][1].as_str()?.parse().ok()
}

/// Wait until `expr` evaluates to `want` (metrics are published every second, scraped every
/// second); panic with the last answer.
fn expect(ns: &Netns, expr: &str, want: f64) {
    let mut last = None;
    let ok = wait_until(Duration::from_secs(20), || {
        last = scalar(ns, expr);
        last == Some(want)
    });
    assert!(ok, "{expr}: {last:?}, expected {want}: {}", query(ns, expr));
}

fn api(ns: &Netns, path: &str) -> Value {
    let out = ns.run(&[
        "curl",
        "-sS",
        "--max-time",
        "5",
        &format!("http://127.0.0.1:9090{path}"),
    ]);
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn flowctl(socket: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_flowctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("flowctl")
}

fn dist() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dist")
}

#[test]
fn promtool_checks_the_alert_rules() {
    if Command::new("promtool").arg("--version").output().is_err() {
        eprintln!("skipped: needs promtool (Debian's prometheus, scripts/setup.sh)");
        return;
    }
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(dist().join("prometheus/flowgate-alerts.yml"))
        .output()
        .expect("promtool");
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("SUCCESS: 5 rules found"));
}

#[test]
fn prometheus_scrapes_flowgate_during_traffic() {
    if skip_without_lab() {
        return;
    }
    for tool in ["prometheus", "curl"] {
        if Command::new(tool).arg("--version").output().is_err() {
            eprintln!("skipped: needs {tool} (scripts/setup.sh)");
            return;
        }
    }
    let tmp = TempDir::new("prom");
    let dir = tmp.0.clone();
    let mut once = Vec::new();
    for i in 0..100u16 {
        once.push(frame(&spec("10.1.0.5", "192.168.0.1", 17, 5000 + i, 53)));
    }
    for i in 0..40u16 {
        once.push(frame(&spec("10.1.0.6", "192.168.0.9", 6, 6000 + i, 80)));
    }
    for i in 0..30u8 {
        let mut syn = spec(&format!("10.2.0.{}", i + 1), "192.168.0.2", 6, 40000, 25);
        syn.payload = 0;
        once.push(frame(&syn));
    }
    std::fs::write(dir.join("once.pcap"), pcap(&once)).expect("pcap");
    let mut forever = vec![frame(&spec("10.3.0.1", "10.3.0.2", 17, 1, 9000))];
    let mut short = frame(&spec("10.3.0.1", "10.3.0.2", 17, 1, 9000));
    short.truncate(20); // an IPv4 header cut short: a malformed drop
    forever.push(short);
    std::fs::write(dir.join("forever.pcap"), pcap(&forever)).expect("pcap");
    std::fs::write(dir.join("flows"), FLOWS).expect("flows");
    std::fs::write(dir.join("flowgate.toml"), config(&dir)).expect("config");
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: flowgate\n    static_configs:\n      - targets: ['127.0.0.1:9469']\n",
            dist().join("prometheus/flowgate-alerts.yml").display()
        ),
    )
    .expect("prometheus config");

    let ns = Netns::new("prom");
    let _flowgate = ns.spawn(&[
        env!("CARGO_BIN_EXE_flowgate"),
        "run",
        "--config",
        dir.join("flowgate.toml").to_str().expect("utf-8"),
        "--duration",
        "90",
    ]);
    let _prometheus = ns.spawn(&[
        "prometheus",
        &format!("--config.file={}", dir.join("prometheus.yml").display()),
        &format!("--storage.tsdb.path={}", dir.join("tsdb").display()),
        "--web.listen-address=127.0.0.1:9090",
        "--log.level=warn",
    ]);
    let socket = dir.join("control.sock");
    assert!(
        wait_until(Duration::from_secs(30), || scalar(
            &ns,
            "up{job=\"flowgate\"}"
        ) == Some(1.0)),
        "Prometheus never scraped flowgate: {}",
        api(&ns, "/api/v1/targets")
    );

    // pushes: two swaps (same flows, new generations) and one refused file
    let same = dir.join("same.flows");
    std::fs::write(&same, format!("# again\n{FLOWS}")).expect("write");
    let bad = dir.join("bad.flows");
    std::fs::write(&bad, "flow x director nosuch\n    match\n").expect("write");
    for (file, code) in [(&same, 0), (&same, 0), (&bad, 1)] {
        let out = flowctl(&socket, &["apply", file.to_str().expect("utf-8")]);
        assert_eq!(out.status.code(), Some(code), "{out:?}");
    }

    // per rule: the pcap's exact counts (by flow name, over all generations)
    let rule = |flow: &str| {
        format!("flowgate_rule_packets_total{{list=\"flow\",flow=\"{flow}\",rule=\"1\"}}")
    };
    expect(&ns, &rule("dns"), 100.0);
    expect(&ns, &rule("rest"), 40.0);
    expect(&ns, &rule("mail"), 30.0);
    expect(
        &ns,
        "flowgate_verdict_packets_total{list=\"flow\",verdict=\"director\"}",
        30.0,
    );
    // per port
    expect(&ns, "flowgate_port_rx_total{port=\"in0\"}", 170.0);
    expect(&ns, "flowgate_nic_rx_packets_total{port=\"in0\"}", 170.0);
    // out0 sends the 100 permitted queries and the ARP requests for the director's servers
    // (the null port never answers them)
    expect(
        &ns,
        "flowgate_port_tx_total{port=\"out0\"} - scalar(flowgate_neighbour_solicits_total)",
        100.0,
    );
    // per director: 30 connections over two servers, round robin
    expect(
        &ns,
        "flowgate_director_connections_total{director=\"mail\"}",
        30.0,
    );
    expect(
        &ns,
        "flowgate_server_connections_total{director=\"mail\",server=\"mail1\"}",
        15.0,
    );
    expect(
        &ns,
        "flowgate_server_connections_total{director=\"mail\",server=\"mail2\"}",
        15.0,
    );
    expect(&ns, "flowgate_director_servers_up{director=\"mail\"}", 2.0);
    expect(&ns, "flowgate_director_servers_up{director=\"dead\"}", 0.0);
    // swaps
    expect(&ns, "flowgate_swaps_total", 2.0);
    expect(&ns, "flowgate_generation", 3.0);
    expect(&ns, "flowgate_swap_seconds_count", 2.0);
    expect(&ns, "flowgate_pushes_refused_total", 1.0);
    // during traffic: the replayed port's rate is positive, and so is its rule's
    let live = |expr: &str| {
        let mut last = None;
        let ok = wait_until(Duration::from_secs(20), || {
            last = scalar(&ns, expr);
            last.is_some_and(|v| v > 0.0)
        });
        assert!(ok, "{expr}: {last:?}");
    };
    live("rate(flowgate_port_rx_total{port=\"in1\"}[5s])");
    live("rate(flowgate_rule_packets_total{flow=\"bulk\"}[5s])");
    live("sum(rate(flowgate_drops_total{reason!~\"flow-deny|outflow-deny\"}[5s]))");

    // the alert rules: loaded, healthy; refused push and no server up trigger
    let triggered = |name: &str| {
        let v = api(&ns, "/api/v1/alerts");
        v["data"]["alerts"].as_array().is_some_and(|a| {
            a.iter().any(|x| {
                x["labels"]["alertname"] == name
                    && (x["state"] == "firing" || x["state"] == "pending")
            })
        })
    };
    for name in [
        "FlowgateRefusedPush",
        "FlowgateDirectorNoServerUp",
        "FlowgateDropsRising",
    ] {
        assert!(
            wait_until(Duration::from_secs(20), || triggered(name)),
            "{name} never triggered: {}",
            api(&ns, "/api/v1/alerts")
        );
    }
    let rules = api(&ns, "/api/v1/rules");
    let loaded: Vec<&Value> = rules["data"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .collect();
    assert_eq!(loaded.len(), 5, "{rules}");
    for r in &loaded {
        assert_eq!(r["health"], "ok", "{r}");
    }
    assert!(!triggered("FlowgateDown"));

    // the dashboard's queries, with its variables set, all run and return data
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(dist().join("grafana/flowgate-dashboard.json"))
            .expect("dashboard"),
    )
    .expect("dashboard JSON");
    let mut exprs: Vec<String> = dash["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_string))
        .collect();
    exprs.push(
        dash["templating"]["list"][1]["definition"]
            .as_str()
            .map(|d| {
                d.replace(
                    "label_values(flowgate_generation, instance)",
                    "flowgate_generation",
                )
            })
            .expect("instance variable"),
    );
    assert!(exprs.len() >= 20, "{exprs:?}");
    for e in &exprs {
        let q = e
            .replace("$__rate_interval", "10s")
            .replace("$instance", ".*");
        let v = query(&ns, &q);
        assert_eq!(v["status"], "success", "{q}: {v}");
        let n = v["data"]["result"].as_array().map_or(0, Vec::len);
        assert!(n > 0, "dashboard query returns no data: {q}: {v}");
    }
}
