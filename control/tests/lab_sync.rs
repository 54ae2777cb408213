//! The connection sync between two appliances through real kernels (`docs/sync.md`):
//! appliances A and B run flowgate with the same persistent NAT director and `[sync]`
//! pointing at each other over a management veth (plain kernel UDP in the appliance
//! namespaces, not the DPDK ports). A client makes connections through A to two servers;
//! they appear on B as backup entries (B carries no traffic). B is stopped and started
//! again: its hello makes A dump its table, and the restarted B has the connections and the
//! client's template again without any new traffic. A third appliance with another key is
//! refused (bad HMAC), its messages never applied.
//!
//! Needs root (namespaces); traffic is bounded (20 short connections); the lab is removed
//! when the test ends.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{
    nic_for_flowgate, skip_without_cpus, skip_without_lab, sysctl, tag, veth, wait_until, Flowgate,
    Netns,
};
use common::{Proc, TempDir};

const SERVER: &str = r#"
import socket, sys, threading
name = sys.argv[1].encode()
def serve(c):
    try:
        c.settimeout(5); c.sendall(name + b'\n'); f = c.makefile('rb')
        for line in f:
            c.sendall(name + b':' + line)
    except OSError:
        pass
    finally:
        c.close()
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', 25)); s.listen(64)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// `n` connections, one after the other, to 192.168.0.2:25: per connection the server
/// name of its greeting (the echo checked), or `ERR ...`.
const CLIENT: &str = r#"
import socket, sys
n = int(sys.argv[1])
for i in range(n):
    try:
        s = socket.create_connection(('192.168.0.2', 25), timeout=3)
        f = s.makefile('rb')
        a = f.readline().strip().decode()
        s.sendall(b'x%d\n' % i)
        b = f.readline().strip().decode()
        s.close()
        print(a if b == '%s:x%d' % (a, i) else 'MIXED %s %s' % (a, b))
    except Exception as e:
        print('ERR', e)
    sys.stdout.flush()
"#;

const FLOWS: &str = "flow mail director maildirect\n\
                     \x20   match proto tcp dst 192.168.0.2 dstport 25\n\
                     flow rest permit\n    match\n";

const KEY: &str = "the pair's shared sync secret";

/// An appliance's config: eth0 (clients, the VIP 192.168.0.2), eth1 (servers), the
/// persistent NAT director, and `[sync]` from `me` to `peer` on the management network.
fn config(name: &str, nic0: &str, nic1: &str, me: &str, peer: &str, key_file: &Path) -> String {
    config_with(name, nic0, nic1, me, peer, key_file, 1)
}

/// [`config`] with one worker (lcore 1) or two (lcores 0 and 1, two RX queues a port).
fn config_with(
    name: &str,
    nic0: &str,
    nic1: &str,
    me: &str,
    peer: &str,
    key_file: &Path,
    workers: usize,
) -> String {
    let head = common::lab_config(&format!("{name}.flows"), nic0, nic1, workers);
    format!(
        r#"{head}[[director]]
name = "maildirect"
scheduler = "rr"
mode = "nat"
virtual = {{ address = "192.168.0.2" }}
persistence = {{ timeout = 300, netmask = "255.255.255.255" }}
servers = [
  {{ name = "mail1", address = "10.0.0.11" }},
  {{ name = "mail2", address = "10.0.0.12" }},
]
[sync]
listen = "{me}:8848"
peers = ["{peer}:8848"]
key_file = "{key}"
interval_ms = 20
"#,
        key = key_file.display()
    )
}

/// The value of the metric line starting with `name` (`name{labels} value` or `name value`)
/// in appliance `ns`'s Prometheus endpoint, if it is there.
fn metric(ns: &Netns, name: &str) -> Option<f64> {
    let out = ns.run(&[
        "curl",
        "-sS",
        "--max-time",
        "3",
        "http://127.0.0.1:9469/metrics",
    ]);
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            return None;
        }
        l.rsplit(' ').next()?.parse().ok()
    })
}

/// Wait until `name` on `ns` is at least `want`; panic with the last value.
fn wait_metric(ns: &Netns, name: &str, want: f64) {
    let mut last = None;
    let ok = wait_until(Duration::from_secs(15), || {
        last = metric(ns, name);
        last.is_some_and(|v| v >= want)
    });
    assert!(ok, "{name}: {last:?}, expected at least {want}");
}

/// An appliance namespace with its two DPDK NICs (peers in `sink` for B, the lab's client
/// and servers for A) and its management interface.
struct Appliance {
    ns: Netns,
    nic0: String,
    nic1: String,
}

fn appliance(role: &str) -> Appliance {
    let ns = Netns::new(role);
    let t = tag();
    let a = Appliance {
        ns,
        nic0: format!("sa0{t}"),
        nic1: format!("sa1{t}"),
    };
    sysctl(&a.ns, "net.ipv4.conf.all.rp_filter=0");
    sysctl(&a.ns, "net.ipv4.conf.default.rp_filter=0");
    a
}

fn start(app: &Appliance, dir: &Path, name: &str, me: &str, peer: &str, key: &Path) -> Flowgate {
    Flowgate::start_with_control(
        &app.ns,
        dir,
        name,
        &config(name, &app.nic0, &app.nic1, me, peer, key),
        FLOWS,
        "10.0.0.0/24 dev eth1",
        "metrics = \"127.0.0.1:9469\"",
    )
}

#[test]
fn connections_through_one_appliance_appear_on_its_peer_and_a_restarted_peer_gets_them_all() {
    if skip_without_lab() {
        return;
    }
    for tool in ["curl", "python3"] {
        if std::process::Command::new(tool)
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("skipped: needs {tool}");
            return;
        }
    }
    // A between the client and the servers; B and C with their NICs in a sink
    let a = appliance("sya");
    let b = appliance("syb");
    let c = appliance("syc");
    let cli = Netns::new("sycli");
    let sw = Netns::new("sysw");
    let s1 = Netns::new("sys1");
    let s2 = Netns::new("sys2");
    let sink = Netns::new("sysink");
    let t = tag();
    let (c0, w0, w1, w2, e1, e2) = (
        format!("sc0{t}"),
        format!("sw0{t}"),
        format!("sw1{t}"),
        format!("sw2{t}"),
        format!("se1{t}"),
        format!("se2{t}"),
    );
    veth(&a.ns, &a.nic0, &cli, &c0);
    veth(&a.ns, &a.nic1, &sw, &w0);
    veth(&sw, &w1, &s1, &e1);
    veth(&sw, &w2, &s2, &e2);
    sw.bridge("br0", &[&w0, &w1, &w2]);
    for (app, i) in [(&b, 0), (&c, 1)] {
        let (k0, k1) = (format!("sk{i}0{t}"), format!("sk{i}1{t}"));
        veth(&app.ns, &app.nic0, &sink, &k0);
        veth(&app.ns, &app.nic1, &sink, &k1);
    }
    for app in [&a, &b, &c] {
        nic_for_flowgate(&app.ns, &app.nic0);
        nic_for_flowgate(&app.ns, &app.nic1);
    }
    // the management network: A 10.50.0.1, B 10.50.0.2 (a veth), C 10.50.1.3 on another
    // veth to A, routed to A's sync address (C sends to A with the wrong key)
    let (ma, mb, mc, mac) = (
        format!("sma{t}"),
        format!("smb{t}"),
        format!("smc{t}"),
        format!("smx{t}"),
    );
    veth(&a.ns, &ma, &b.ns, &mb);
    veth(&a.ns, &mac, &c.ns, &mc);
    a.ns.must(&["ip", "addr", "add", "10.50.0.1/24", "dev", &ma]);
    b.ns.must(&["ip", "addr", "add", "10.50.0.2/24", "dev", &mb]);
    a.ns.must(&["ip", "addr", "add", "10.50.1.1/24", "dev", &mac]);
    c.ns.must(&["ip", "addr", "add", "10.50.1.3/24", "dev", &mc]);
    c.ns.must(&["ip", "route", "add", "10.50.0.0/24", "via", "10.50.1.1"]);
    cli.must(&["ip", "addr", "add", "192.168.0.100/24", "dev", &c0]);
    s1.must(&["ip", "addr", "add", "10.0.0.11/24", "dev", &e1]);
    s2.must(&["ip", "addr", "add", "10.0.0.12/24", "dev", &e2]);
    for (ns, ifc) in [(&cli, &c0), (&s1, &e1), (&s2, &e2)] {
        ns.must(&["ethtool", "-K", ifc, "tx", "off"]);
    }
    for s in [&s1, &s2] {
        s.must(&["ip", "route", "add", "default", "via", "10.0.0.1"]);
    }
    let dir = TempDir::new("sync");
    let key = dir.0.join("sync.key");
    std::fs::write(&key, format!("{KEY}\n")).expect("write key");
    let wrong = dir.0.join("wrong.key");
    std::fs::write(&wrong, "not the pair's secret at all").expect("write key");
    let server_py = dir.0.join("server.py");
    let client_py = dir.0.join("client.py");
    std::fs::write(&server_py, SERVER).expect("write server");
    std::fs::write(&client_py, CLIENT).expect("write client");
    let _servers: Vec<Proc> = [(&s1, "mail1"), (&s2, "mail2")]
        .into_iter()
        .map(|(ns, name)| {
            let p = ns.spawn(&["python3", server_py.to_str().expect("utf-8"), name]);
            assert!(
                wait_until(Duration::from_secs(10), || {
                    String::from_utf8_lossy(&ns.run(&["ss", "-ltnH"]).stdout).contains(":25 ")
                }),
                "{name} listening"
            );
            p
        })
        .collect();

    let fa = start(&a, &dir.0, "a", "10.50.0.1", "10.50.0.2", &key);
    let fb = start(&b, &dir.0, "b", "10.50.0.2", "10.50.0.1", &key);
    let fc = start(&c, &dir.0, "c", "10.50.1.3", "10.50.0.1", &wrong);
    // the peers hear each other's hellos
    wait_metric(&a.ns, "flowgate_sync_messages_received_total", 1.0);
    wait_metric(&b.ns, "flowgate_sync_messages_received_total", 1.0);
    // C's messages reach A and are refused
    wait_metric(&a.ns, "flowgate_sync_auth_failures_total", 1.0);
    // B's hellos keep it fresh on A (one a second)
    let silent = metric(&a.ns, "flowgate_sync_peer_silent_seconds");
    assert!(silent.is_some_and(|s| s < 3.0), "{silent:?}");

    // 20 connections through A: persistence keeps the client on one server
    let out = cli.run(&["python3", client_py.to_str().expect("utf-8"), "20"]);
    let results: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(results.len(), 20, "{results:?}");
    assert!(
        results
            .iter()
            .all(|r| r == &results[0] && r.starts_with("mail")),
        "one server for the client: {results:?}"
    );
    // on B: 20 connections and the client's template, as backup entries
    wait_metric(&b.ns, "flowgate_director_backup", 21.0);
    wait_metric(&b.ns, "flowgate_sync_entries_applied_total", 21.0);
    // flowctl shows them too: the director's backup gauge, the sync's counters
    let flowctl = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_flowctl"))
            .arg("--socket")
            .arg(dir.0.join("b.sock"))
            .args(args)
            .output()
            .expect("flowctl");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let stats = flowctl(&["stats"]);
    let line = stats
        .lines()
        .find(|l| l.starts_with("sync: "))
        .unwrap_or_else(|| panic!("no sync line: {stats}"));
    assert!(line.contains(" auth_failures=0 "), "{line}");
    let applied: u64 = line
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("entries_applied="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(applied >= 21, "{line}");
    let json: serde_json::Value = serde_json::from_str(&flowctl(&["--json", "director", "list"]))
        .expect("flowctl --json director list");
    let backup = json["directors"][0]["counters"]
        .as_array()
        .and_then(|c| c.iter().find(|kv| kv[0] == "backup"))
        .and_then(|kv| kv[1].as_u64());
    assert_eq!(backup, Some(21), "{json:#}");
    let (sb, _) = fb.stop();
    let sync = &sb["sync"];
    assert_eq!(sync["auth_failures"].as_u64(), Some(0), "{sync:#}");
    assert_eq!(sync["decode_errors"].as_u64(), Some(0), "{sync:#}");
    assert_eq!(sync["unknown"].as_u64(), Some(0), "{sync:#}");
    assert_eq!(sync["apply_failed"].as_u64(), Some(0), "{sync:#}");
    assert_eq!(
        sb["directors"]["maildirect"]["connections"].as_u64(),
        Some(0),
        "B scheduled nothing itself"
    );

    // B restarted: a new boot; its hello makes A dump its table to it
    let resyncs_before = metric(&a.ns, "flowgate_sync_resyncs_total").unwrap_or(0.0);
    let fb = start(&b, &dir.0, "b", "10.50.0.2", "10.50.0.1", &key);
    let restarted = std::time::Instant::now();
    wait_metric(&a.ns, "flowgate_sync_resyncs_total", resyncs_before + 1.0);
    wait_metric(&b.ns, "flowgate_director_backup", 21.0);
    eprintln!(
        "restarted B has the 21 entries {:?} after it came up (metrics published every 1 s)",
        restarted.elapsed()
    );
    let (sb, _) = fb.stop();
    let sync = &sb["sync"];
    eprintln!("restarted B: {sync}");
    assert!(
        sync["entries_applied"].as_u64().unwrap_or(0) >= 21,
        "{sync:#}"
    );
    assert_eq!(sync["apply_failed"].as_u64(), Some(0), "{sync:#}");
    let (sc, _) = fc.stop();
    assert_eq!(
        sc["sync"]["entries_applied"].as_u64(),
        Some(0),
        "C applied nothing"
    );
    let (sa, _) = fa.stop();
    let sync = &sa["sync"];
    eprintln!("A: {sync}");
    assert!(sync["dumps"].as_u64().unwrap_or(0) >= 2, "{sync:#}");
    assert!(sync["auth_failures"].as_u64().unwrap_or(0) >= 1, "{sync:#}");
    assert_eq!(sync["export_dropped"].as_u64(), Some(0), "{sync:#}");
    assert_eq!(
        sa["directors"]["maildirect"]["connections"].as_u64(),
        Some(20),
        "{sa:#}"
    );
}

/// `argv[1]` connections to 192.168.0.2:25 held open; once all are up, the first one's
/// server goes to the file `argv[2]`; then every 100 ms each sends a line and expects its
/// echo (5 s at most), until the file `argv[3]` exists (40 s at most). Then one new
/// connection. Prints: connections that never failed, the longest wait between two echoes
/// of a connection (s), the first connection's server, the new connection's server.
const HELD: &str = r#"
import os, socket, sys, time
n, mark, stop = int(sys.argv[1]), sys.argv[2], sys.argv[3]
conns = []
for i in range(n):
    s = socket.create_connection(('192.168.0.2', 25), timeout=3)
    f = s.makefile('rb')
    conns.append((s, f, f.readline().strip().decode()))
open(mark, 'w').write(conns[0][2])
ok, gap, last = [True] * n, [0.0] * n, [time.time()] * n
k, end = 0, time.time() + 40
while time.time() < end and not os.path.exists(stop):
    k += 1
    for i, (s, f, name) in enumerate(conns):
        if not ok[i]:
            continue
        try:
            s.settimeout(5)
            s.sendall(b'p%d\n' % k)
            if f.readline().strip().decode() != '%s:p%d' % (name, k):
                ok[i] = False
                continue
            now = time.time()
            gap[i], last[i] = max(gap[i], now - last[i]), now
        except Exception:
            ok[i] = False
    time.sleep(0.1)
try:
    s = socket.create_connection(('192.168.0.2', 25), timeout=3)
    new = s.makefile('rb').readline().strip().decode()
except Exception as e:
    new = 'ERR'
print(sum(ok), '%.2f' % max(gap), conns[0][2], new)
"#;

fn mac_of(ns: &Netns, ifc: &str) -> String {
    let out = ns.must(&["cat", &format!("/sys/class/net/{ifc}/address")]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A failover by hand (what VRRP would do, without keepalived): A and B on the same client
/// and server networks (bridges), the client's neighbour entry for the VIP and the servers'
/// for their gateway 10.0.0.1 pointing at A. 20 connections held open through A (persistent
/// NAT director) are synced to B (two workers: each entry must reach the worker owning its
/// client endpoint); A is stopped and the neighbour entries moved to B's MACs. Every
/// connection goes on through B with its server, NAT replies included, and a new connection
/// of the client meets the synced template (the same server).
#[test]
fn held_connections_go_on_through_the_peer_when_traffic_moves_to_it() {
    if skip_without_lab() || skip_without_cpus(2) {
        return;
    }
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: needs curl");
        return;
    }
    let a = appliance("sfa");
    let b = appliance("sfb");
    let cli = Netns::new("sfcli");
    let lan = Netns::new("sflan");
    let sw = Netns::new("sfsw");
    let s1 = Netns::new("sfs1");
    let s2 = Netns::new("sfs2");
    let t = tag();
    let name = |p: &str| format!("{p}{t}");
    let (c0, l0, la, lb, wa, wb, w1, w2, e1, e2) = (
        name("fc0"),
        name("fl0"),
        name("fla"),
        name("flb"),
        name("fwa"),
        name("fwb"),
        name("fw1"),
        name("fw2"),
        name("fe1"),
        name("fe2"),
    );
    veth(&cli, &c0, &lan, &l0);
    veth(&a.ns, &a.nic0, &lan, &la);
    veth(&b.ns, &b.nic0, &lan, &lb);
    veth(&a.ns, &a.nic1, &sw, &wa);
    veth(&b.ns, &b.nic1, &sw, &wb);
    veth(&sw, &w1, &s1, &e1);
    veth(&sw, &w2, &s2, &e2);
    lan.bridge("br0", &[&l0, &la, &lb]);
    sw.bridge("br0", &[&wa, &wb, &w1]);
    sw.must(&["ip", "link", "set", &w2, "master", "br0"]);
    for app in [&a, &b] {
        nic_for_flowgate(&app.ns, &app.nic0);
        nic_for_flowgate(&app.ns, &app.nic1);
    }
    let (ma, mb) = (name("fma"), name("fmb"));
    veth(&a.ns, &ma, &b.ns, &mb);
    a.ns.must(&["ip", "addr", "add", "10.50.0.1/24", "dev", &ma]);
    b.ns.must(&["ip", "addr", "add", "10.50.0.2/24", "dev", &mb]);
    cli.must(&["ip", "addr", "add", "192.168.0.100/24", "dev", &c0]);
    s1.must(&["ip", "addr", "add", "10.0.0.11/24", "dev", &e1]);
    s2.must(&["ip", "addr", "add", "10.0.0.12/24", "dev", &e2]);
    for (ns, ifc) in [(&cli, &c0), (&s1, &e1), (&s2, &e2)] {
        ns.must(&["ethtool", "-K", ifc, "tx", "off"]);
    }
    // where the VIP and the gateway are: A's MACs first
    let point = |at: &Appliance| {
        let (m0, m1) = (mac_of(&at.ns, &at.nic0), mac_of(&at.ns, &at.nic1));
        cli.must(&[
            "ip",
            "neigh",
            "replace",
            "192.168.0.2",
            "lladdr",
            &m0,
            "dev",
            &c0,
            "nud",
            "permanent",
        ]);
        for (s, e) in [(&s1, &e1), (&s2, &e2)] {
            s.must(&[
                "ip",
                "neigh",
                "replace",
                "10.0.0.1",
                "lladdr",
                &m1,
                "dev",
                e,
                "nud",
                "permanent",
            ]);
        }
    };
    for s in [&s1, &s2] {
        s.must(&["ip", "route", "add", "default", "via", "10.0.0.1"]);
    }
    point(&a);
    let dir = TempDir::new("syncmove");
    let key = dir.0.join("sync.key");
    std::fs::write(&key, KEY).expect("write key");
    let server_py = dir.0.join("server.py");
    let held_py = dir.0.join("held.py");
    std::fs::write(&server_py, SERVER).expect("write server");
    std::fs::write(&held_py, HELD).expect("write client");
    let _servers: Vec<Proc> = [(&s1, "mail1"), (&s2, "mail2")]
        .into_iter()
        .map(|(ns, n)| {
            let p = ns.spawn(&["python3", server_py.to_str().expect("utf-8"), n]);
            assert!(
                wait_until(Duration::from_secs(10), || {
                    String::from_utf8_lossy(&ns.run(&["ss", "-ltnH"]).stdout).contains(":25 ")
                }),
                "{n} listening"
            );
            p
        })
        .collect();
    let run = |app: &Appliance, n: &str, me: &str, peer: &str, workers: usize| {
        Flowgate::start_with_control(
            &app.ns,
            &dir.0,
            n,
            &config_with(n, &app.nic0, &app.nic1, me, peer, &key, workers),
            FLOWS,
            "10.0.0.0/24 dev eth1",
            "metrics = \"127.0.0.1:9469\"",
        )
    };
    let fa = run(&a, "a", "10.50.0.1", "10.50.0.2", 1);
    let fb = run(&b, "b", "10.50.0.2", "10.50.0.1", 2);
    wait_metric(&b.ns, "flowgate_sync_messages_received_total", 1.0);

    let (mark, stop) = (dir.0.join("up"), dir.0.join("stop"));
    let n: u32 = 20;
    let out = std::thread::scope(|sc| {
        let client = sc.spawn(|| {
            cli.run(&[
                "python3",
                held_py.to_str().expect("utf-8"),
                &n.to_string(),
                mark.to_str().expect("utf-8"),
                stop.to_str().expect("utf-8"),
            ])
        });
        let up = wait_until(Duration::from_secs(20), || mark.exists());
        if up {
            // the connections and the template on B, then A goes and traffic moves to B
            wait_metric(&b.ns, "flowgate_director_backup", f64::from(n + 1));
            let (sa, _) = fa.stop();
            assert_eq!(
                sa["directors"]["maildirect"]["connections"].as_u64(),
                Some(u64::from(n)),
                "{sa:#}"
            );
            point(&b);
            std::thread::sleep(Duration::from_secs(3));
        }
        std::fs::write(&stop, "").expect("stop file");
        client.join().expect("client thread")
    });
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let fields: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(
        fields.len(),
        4,
        "client: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "{} of {n} held connections went on through B; longest wait between echoes {} s",
        fields[0], fields[1]
    );
    let (sb, _) = fb.stop();
    assert_eq!(fields[0], n.to_string(), "survivors; B: {:#}", sb["sync"]);
    assert_eq!(
        fields[3], fields[2],
        "a new connection meets the synced template"
    );
    let d = &sb["directors"]["maildirect"];
    // B scheduled only the new connection itself
    assert_eq!(d["connections"].as_u64(), Some(1), "{d:#}");
    assert_eq!(
        sb["sync"]["apply_failed"].as_u64(),
        Some(0),
        "{:#}",
        sb["sync"]
    );
}

/// `[sync]` over a multicast group instead of unicast peers: two appliances on a management
/// veth hear each other's hellos through the group (each answering the other's with a dump).
#[test]
fn peers_find_each_other_through_a_multicast_group() {
    if skip_without_lab() {
        return;
    }
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: needs curl");
        return;
    }
    let a = appliance("sga");
    let b = appliance("sgb");
    let sink = Netns::new("sgsink");
    let t = tag();
    for (app, i) in [(&a, 0), (&b, 1)] {
        veth(&app.ns, &app.nic0, &sink, &format!("sg{i}0{t}"));
        veth(&app.ns, &app.nic1, &sink, &format!("sg{i}1{t}"));
        nic_for_flowgate(&app.ns, &app.nic0);
        nic_for_flowgate(&app.ns, &app.nic1);
    }
    let (ma, mb) = (format!("sgma{t}"), format!("sgmb{t}"));
    veth(&a.ns, &ma, &b.ns, &mb);
    for (app, m, addr) in [(&a, &ma, "10.50.0.1/24"), (&b, &mb, "10.50.0.2/24")] {
        app.ns.must(&["ip", "addr", "add", addr, "dev", m]);
        app.ns
            .must(&["ip", "route", "add", "224.0.0.0/4", "dev", m]);
    }
    let dir = TempDir::new("syncgroup");
    let key = dir.0.join("sync.key");
    std::fs::write(&key, KEY).expect("write key");
    let run = |app: &Appliance, n: &str, me: &str, m: &str| {
        let cfg = config(n, &app.nic0, &app.nic1, me, "unused", &key).replace(
            "peers = [\"unused:8848\"]",
            &format!("group = \"239.0.0.81:8848\"\ninterface = \"{m}\""),
        );
        assert!(cfg.contains("group ="), "{cfg}");
        Flowgate::start_with_control(
            &app.ns,
            &dir.0,
            n,
            &cfg,
            FLOWS,
            "10.0.0.0/24 dev eth1",
            "metrics = \"127.0.0.1:9469\"",
        )
    };
    let fa = run(&a, "a", "10.50.0.1", &ma);
    let fb = run(&b, "b", "10.50.0.2", &mb);
    wait_metric(&a.ns, "flowgate_sync_resyncs_total", 1.0);
    wait_metric(&b.ns, "flowgate_sync_resyncs_total", 1.0);
    let (sb, _) = fb.stop();
    let (sa, _) = fa.stop();
    for (s, other) in [(&sa, "10.50.0.2:8848"), (&sb, "10.50.0.1:8848")] {
        let sync = &s["sync"];
        assert!(
            sync["peers"][other]["messages"].as_u64().unwrap_or(0) >= 1,
            "{sync:#}"
        );
        assert_eq!(sync["auth_failures"].as_u64(), Some(0), "{sync:#}");
        assert_eq!(sync["send_errors"].as_u64(), Some(0), "{sync:#}");
    }
}
