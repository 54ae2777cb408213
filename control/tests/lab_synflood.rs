//! A SYN flood against the seed's mail VIP through real kernels: 100,000 TCP SYNs from spoofed
//! sources (198.18.0.0/15, a raw socket in the client's namespace) over 10 s to
//! 192.168.0.2:25, a persistent NAT director (`maildirect` as in the seed: wrr, persistence
//! 300 s per address) with the default 65,536-entry table, and meanwhile a real client opening
//! one connection a second. Without the half-open bound and eviction (`docs/director.md`) the
//! table is full of SYN_RECV entries and their templates within about 4 s and the client is
//! refused until they time out; with it at least 90% of its connections must get through,
//! and the control socket and `/metrics` must show the defense at work.
//!
//! Needs root (namespaces); the flood is bounded (100,000 packets of 40 bytes over 10 s); the
//! lab is removed when the test ends.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{nic_for_flowgate, skip_without_lab, sysctl, tag, veth, wait_until, Flowgate, Netns};

/// Greets every connection with its name, then closes it.
const SERVER: &str = r#"
import socket, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', 25)); s.listen(128)
def serve(c):
    try:
        c.settimeout(5); c.sendall(b'mail\n')
    except OSError:
        pass
    finally:
        c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// `argv[1]` SYNs to 192.168.0.2:25 over `argv[2]` seconds, paced, from random sources in
/// 198.18.0.0/15 and random ports, with valid TCP checksums (the kernel fills the IP one).
/// Prints: sent, send errors, seconds taken.
const FLOOD: &str = r#"
import random, socket, struct, sys, time
n, secs = int(sys.argv[1]), float(sys.argv[2])
vip = socket.inet_aton('192.168.0.2')
def csum(b):
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
rnd = random.Random(17)
t0 = time.monotonic(); sent = errors = 0
while sent < n:
    wait = t0 + secs * sent / n - time.monotonic()
    if wait > 0:
        time.sleep(wait)
    for _ in range(min(100, n - sent)):
        src = struct.pack('!I', 0xc6120000 | rnd.getrandbits(17))
        tcp = struct.pack('!HHIIBBHHH', rnd.randrange(1024, 65536), 25, rnd.getrandbits(32), 0,
                          5 << 4, 0x02, 64240, 0, 0)
        c = csum(src + vip + struct.pack('!BBH', 0, 6, len(tcp)) + tcp)
        tcp = tcp[:16] + struct.pack('!H', c) + tcp[18:]
        ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 40, 0, 0, 64, 6, 0, src, vip)
        try:
            r.sendto(ip + tcp, ('192.168.0.2', 0))
        except OSError:
            errors += 1
        sent += 1
print(sent, errors, '%.2f' % (time.monotonic() - t0))
"#;

/// `argv[1]` connections to 192.168.0.2:25, one a second (each given 2 s), the first after
/// `argv[2]` seconds: `OK` or `ERR why` per connection.
const CLIENT: &str = r#"
import socket, sys, time
n, start = int(sys.argv[1]), float(sys.argv[2])
t0 = time.monotonic() + start
for i in range(n):
    wait = t0 + i - time.monotonic()
    if wait > 0:
        time.sleep(wait)
    try:
        s = socket.create_connection(('192.168.0.2', 25), timeout=2)
        g = s.makefile('rb').readline().strip().decode()
        s.close()
        print('OK' if g == 'mail' else 'ERR greeting %r' % g)
    except Exception as e:
        print('ERR', e)
    sys.stdout.flush()
"#;

/// The director's flows of the seed (`mail`), the rest permitted.
const FLOWS: &str = "flow mail director maildirect\n\
                     \x20   match proto tcp dst 192.168.0.2 dstport 110\n\
                     \x20   match proto tcp dst 192.168.0.2 dstport 143\n\
                     \x20   match proto tcp dst 192.168.0.2 dstport 25\n\
                     flow rest permit\n    match\n";

/// `maildirect` of the seed (wrr, NAT, persistence 300 s per client address, tcp checks),
/// default table size, one worker.
fn config(nic0: &str, nic1: &str) -> String {
    format!(
        r#"flows = "synflood.flows"
[dataplane]
workers = [1]
eal = ["--no-huge", "-m", "512", "--no-pci", "--no-shconf"]
[[port]]
name = "eth0"
device = "net_af_packet0,iface={nic0}"
addresses = ["192.168.0.1/24", "192.168.0.2/24"]
[[port]]
name = "eth1"
device = "net_af_packet1,iface={nic1}"
addresses = ["10.0.0.1/24"]
[[director]]
name = "maildirect"
scheduler = "wrr"
mode = "nat"
virtual = {{ address = "192.168.0.2" }}
persistence = {{ timeout = 300, netmask = "255.255.255.255" }}
check = {{ kind = "tcp", port = 25, interval_ms = 500, timeout_ms = 400, rise = 1, fall = 3 }}
servers = [
  {{ name = "mail1", address = "10.0.0.11", weight = 10 }},
  {{ name = "mail2", address = "10.0.0.12", weight = 10 }},
]
"#
    )
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write script");
    p.to_str().expect("utf-8 path").to_string()
}

/// A director counter from `flowctl --json stats`.
fn counter(stats: &serde_json::Value, name: &str) -> u64 {
    stats["directors"][0]["counters"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c[0] == name))
        .and_then(|c| c[1].as_u64())
        .unwrap_or_else(|| panic!("no director counter {name}: {stats:#}"))
}

#[test]
fn syn_flood_on_the_mail_vip_lets_a_real_client_through() {
    if skip_without_lab() {
        return;
    }
    let app = Netns::new("app");
    let cli = Netns::new("cli");
    let srv = Netns::new("srv");
    let t = tag();
    let (nic0, nic1, c0, e0) = (
        format!("fa0{t}"),
        format!("fa1{t}"),
        format!("fc0{t}"),
        format!("fe0{t}"),
    );
    veth(&app, &nic0, &cli, &c0);
    veth(&app, &nic1, &srv, &e0);
    nic_for_flowgate(&app, &nic0);
    nic_for_flowgate(&app, &nic1);
    sysctl(&app, "net.ipv4.conf.all.rp_filter=0");
    cli.must(&["ip", "addr", "add", "192.168.0.100/24", "dev", &c0]);
    // both real servers in one namespace: one listener answers for both addresses
    srv.must(&["ip", "addr", "add", "10.0.0.11/24", "dev", &e0]);
    srv.must(&["ip", "addr", "add", "10.0.0.12/24", "dev", &e0]);
    srv.must(&["ip", "route", "add", "default", "via", "10.0.0.1"]);
    for (ns, ifc) in [(&cli, &c0), (&srv, &e0)] {
        ns.must(&["ethtool", "-K", ifc, "tx", "off"]);
    }
    let dir = common::TempDir::new("synflood");
    let server = srv.spawn(&["python3", &write(&dir.0, "server.py", SERVER)]);
    assert!(
        wait_until(Duration::from_secs(10), || {
            String::from_utf8_lossy(&srv.run(&["ss", "-ltnH"]).stdout).contains(":25 ")
        }),
        "server listening"
    );
    let fg = Flowgate::start_with_control(
        &app,
        &dir.0,
        "synflood",
        &config(&nic0, &nic1),
        FLOWS,
        "10.0.0.0/24 dev eth1",
        "metrics = \"127.0.0.1:9187\"",
    );
    std::thread::sleep(Duration::from_millis(1500));
    let client = write(&dir.0, "client.py", CLIENT);
    let before =
        String::from_utf8_lossy(&cli.run(&["python3", &client, "2", "0"]).stdout).to_string();
    assert_eq!(before.lines().filter(|l| *l == "OK").count(), 2, "{before}");

    // the flood, and meanwhile one connection a second
    let mut flood = cli.spawn(&["python3", &write(&dir.0, "flood.py", FLOOD), "100000", "10"]);
    let out = cli.run(&["python3", &client, "10", "0.5"]);
    let results = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        wait_until(Duration::from_secs(30), || !flood.is_running()),
        "the flood ends"
    );
    let (_, flood_out, flood_err) = flood.stop(Duration::from_secs(1));
    let f: Vec<&str> = flood_out.split_whitespace().collect();
    assert_eq!(f.first(), Some(&"100000"), "{flood_out} {flood_err}");
    let ok = results.lines().filter(|l| *l == "OK").count();
    let total = results.lines().count();
    eprintln!(
        "SYN flood: {} SYNs in {} s ({} send errors); real client: {ok}/{total} connections",
        f[0],
        f.get(2).unwrap_or(&"?"),
        f.get(1).unwrap_or(&"?")
    );
    assert_eq!(total, 10, "{results}");
    assert!(
        ok >= 9,
        "at least 90% through the flood: {ok}/{total}\n{results}"
    );

    // what the control side shows
    let socket = dir.0.join("synflood.sock");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flowctl"))
        .arg("--socket")
        .arg(&socket)
        .args(["--json", "stats"])
        .output()
        .expect("flowctl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("flowctl --json stats");
    let evicted = counter(&stats, "half_open_evicted");
    let conns = counter(&stats, "connections");
    eprintln!(
        "director: {conns} connections, {evicted} half-open evicted, defense entered {}, conntrack_full {}",
        counter(&stats, "defense_entered"),
        counter(&stats, "drop_conntrack_full"),
    );
    assert!(
        evicted > 0,
        "the table was under pressure (else the test proves nothing): {stats:#}"
    );
    assert!(counter(&stats, "defense_entered") >= 1, "{stats:#}");
    let metrics = app.run(&[
        "python3",
        "-c",
        "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9187/metrics', timeout=5).read().decode())",
    ]);
    let metrics = String::from_utf8_lossy(&metrics.stdout).to_string();
    for name in [
        "flowgate_director_half_open_evicted_total{director=\"maildirect\"}",
        "flowgate_director_drops_total{director=\"maildirect\",reason=\"conntrack_full\"}",
        "flowgate_director_defense_entered_total{director=\"maildirect\"}",
        "flowgate_director_half_open{director=\"maildirect\"}",
    ] {
        assert!(metrics.contains(name), "{name} in /metrics:\n{metrics}");
    }
    let _ = fg.stop();
    drop(server);
}
