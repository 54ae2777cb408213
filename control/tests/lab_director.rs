//! `director` verdicts through real kernels: the seed's `mail` flow hands TCP to 192.168.0.2
//! ports 25/110/143 to the `maildirect` director (wrr, NAT), which spreads connections over two
//! real servers in namespaces of their own; their replies come back through the appliance and
//! leave with the VIP as source. A server's listener killed mid-test is marked down by the
//! tcp health check and gets no new connection; restarted, it gets them again. The same in
//! gateway mode (direct routing: the servers own the VIP, only the MACs are rewritten), and in
//! tunnel mode (IP-in-IP, checked on a capture of what leaves towards the servers).
//!
//! Needs root (namespaces); traffic is bounded (about 100 short connections); the lab is
//! removed when the test ends.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{
    nic_for_flowgate, skip_without_cpus, skip_without_lab, sysctl, tag, veth, wait_until, Flowgate,
    Netns, Proc, TempDir,
};

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
def listen(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('0.0.0.0', port)); s.listen(64)
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()
for p in (110, 143):
    threading.Thread(target=listen, args=(p,), daemon=True).start()
listen(25)
"#;

/// `n` connections, one after the other, to 192.168.0.2:`port` (from the address given
/// third, if any): per connection the server name of its greeting, or `MIXED a b` if the
/// echo came from another server, or `ERR ...`.
const CLIENT: &str = r#"
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
src = (sys.argv[3], 0) if len(sys.argv) > 3 else None
for i in range(n):
    try:
        s = socket.create_connection(('192.168.0.2', port), timeout=3, source_address=src)
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

/// Opens a connection to 192.168.0.2:25, reads the greeting, then sends the VIP (raw socket)
/// an ICMP "fragmentation needed" (MTU 1400) quoting the server's answer `VIP:25 ->
/// client:port` of that connection; prints the server's name and the ICMP message sent (hex).
const ICMP_CLIENT: &str = r#"
import socket, struct, time
def csum(b):
    if len(b) % 2:
        b += b'\0'
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
vip, client = '192.168.0.2', '192.168.0.100'
c = socket.create_connection((vip, 25), timeout=5)
name = c.makefile('rb').readline().strip().decode()
cport = c.getsockname()[1]
ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 1500, 0, 0x4000, 63, 6, 0,
                 socket.inet_aton(vip), socket.inet_aton(client))
ip = ip[:10] + struct.pack('!H', csum(ip)) + ip[12:]
quoted = ip + struct.pack('!HHI', 25, cport, 12345)
msg = struct.pack('!BBHHH', 3, 4, 0, 0, 1400) + quoted
msg = msg[:2] + struct.pack('!H', csum(msg)) + msg[4:]
r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
r.sendto(msg, (vip, 0))
time.sleep(0.5)
c.close()
print(name, msg.hex())
"#;

/// Gateway mode, step 6 of [`mail_lab`]: the client's ICMP error about an answer of one of
/// its connections reaches that connection's server, unchanged but for the TTL, at the
/// server's MAC (captured on the appliance-facing bridge port).
fn gateway_icmp_reaches_the_server(lab: &Lab, dir: &Path) {
    let Lab {
        app,
        cli,
        sw,
        s1,
        s2,
        nic1,
        w0,
        e1,
        e2,
        ..
    } = lab;
    let pcap = dir.join("icmp.pcap");
    let capture = sw.spawn(&[
        "tcpdump",
        "-i",
        w0,
        "-n",
        "-U",
        "--immediate-mode",
        "-Z",
        "root",
        "-w",
        pcap.to_str().expect("utf-8 path"),
        "icmp",
    ]);
    assert!(
        wait_until(Duration::from_secs(10), || pcap.exists()),
        "tcpdump started"
    );
    std::thread::sleep(Duration::from_millis(300));
    let script = dir.join("icmp_client.py");
    std::fs::write(&script, ICMP_CLIENT).expect("write icmp client");
    let out = cli.run(&["python3", script.to_str().expect("utf-8 path")]);
    assert!(
        out.status.success(),
        "icmp client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (name, hex) = text.trim().split_once(' ').expect("name and message");
    std::thread::sleep(Duration::from_millis(300));
    let _ = capture.stop(Duration::from_secs(5));
    let frames = read_pcap(&std::fs::read(&pcap).expect("pcap written"));
    let port_mac = mac_of(app, nic1);
    let sent: Vec<&Vec<u8>> = frames
        .iter()
        .filter(|f| f.len() > 34 && f[6..12] == port_mac && f[23] == 1)
        .collect();
    assert_eq!(sent.len(), 1, "one ICMP error forwarded: {frames:?}");
    let f = sent[0];
    let server_mac = if name == "mail1" {
        mac_of(s1, e1)
    } else {
        mac_of(s2, e2)
    };
    assert_eq!(&f[0..6], &server_mac, "to {name}'s MAC");
    assert_eq!(&f[26..30], &[192, 168, 0, 100], "from the client");
    assert_eq!(&f[30..34], &[192, 168, 0, 2], "to the VIP");
    assert_eq!(f[22], 63, "TTL - 1");
    assert_eq!(checksum(&f[14..34]), 0, "IPv4 header checksum");
    let msg: Vec<u8> = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex"))
        .collect();
    assert_eq!(
        &f[34..34 + msg.len()],
        &msg[..],
        "the ICMP message unchanged"
    );
}

/// One connection to 192.168.0.2:25 held open: it writes the server's greeting to the file
/// `argv[1]`, waits (at most 10 s) for the file `argv[2]`, sends a line and prints the
/// greeting and the echo.
const HELD_CLIENT: &str = r#"
import os, socket, sys, time
mark, go = sys.argv[1], sys.argv[2]
s = socket.create_connection(('192.168.0.2', 25), timeout=5)
f = s.makefile('rb')
a = f.readline().strip().decode()
open(mark, 'w').write(a)
for _ in range(200):
    if os.path.exists(go):
        break
    time.sleep(0.05)
s.sendall(b'held\n')
print(a, f.readline().strip().decode())
"#;

fn connections(cli: &Netns, client: &Path, port: u16, n: usize) -> Vec<String> {
    connections_from(cli, client, port, n, None)
}

fn connections_from(
    cli: &Netns,
    client: &Path,
    port: u16,
    n: usize,
    src: Option<&str>,
) -> Vec<String> {
    let mut argv = vec![
        "python3".to_string(),
        client.to_str().expect("utf-8 path").to_string(),
        port.to_string(),
        n.to_string(),
    ];
    argv.extend(src.map(str::to_string));
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = cli.run(&argv);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn tally(results: &[String]) -> (usize, usize) {
    for r in results {
        assert!(
            r == "mail1" || r == "mail2",
            "a connection failed: {r} (all: {results:?})"
        );
    }
    (
        results.iter().filter(|r| *r == "mail1").count(),
        results.iter().filter(|r| *r == "mail2").count(),
    )
}

fn server(ns: &Netns, script: &Path, name: &str) -> Proc {
    let p = ns.spawn(&["python3", script.to_str().expect("utf-8 path"), name]);
    assert!(
        wait_until(Duration::from_secs(10), || {
            let out = ns.run(&["ss", "-ltnH"]);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            text.contains(":25 ") && text.contains(":110 ") && text.contains(":143 ")
        }),
        "{name} listening"
    );
    p
}

/// The director labs' network: a client (192.168.0.100/24) behind the appliance's eth0
/// (`nic0`), two servers (10.0.0.11 and 10.0.0.12 /24) on a bridge in `sw` behind its eth1
/// (`nic1`, bridged as `w0`). Removed when dropped.
struct Lab {
    app: Netns,
    cli: Netns,
    sw: Netns,
    s1: Netns,
    s2: Netns,
    nic0: String,
    nic1: String,
    c0: String,
    w0: String,
    e1: String,
    e2: String,
}

impl Lab {
    fn new(servers: [&str; 2]) -> Lab {
        let app = Netns::new("app");
        let cli = Netns::new("cli");
        let sw = Netns::new("sw");
        let s1 = Netns::new(servers[0]);
        let s2 = Netns::new(servers[1]);
        let t = tag();
        let (nic0, nic1) = (format!("fa0{t}"), format!("fa1{t}"));
        let (c0, w0, w1, w2) = (
            format!("fc0{t}"),
            format!("fw0{t}"),
            format!("fw1{t}"),
            format!("fw2{t}"),
        );
        let (e1, e2) = (format!("fe1{t}"), format!("fe2{t}"));
        veth(&app, &nic0, &cli, &c0);
        veth(&app, &nic1, &sw, &w0);
        veth(&sw, &w1, &s1, &e1);
        veth(&sw, &w2, &s2, &e2);
        sw.bridge("br0", &[&w0, &w1, &w2]);
        nic_for_flowgate(&app, &nic0);
        nic_for_flowgate(&app, &nic1);
        for kv in [
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
        ] {
            sysctl(&app, kv);
        }
        cli.must(&["ip", "addr", "add", "192.168.0.100/24", "dev", &c0]);
        s1.must(&["ip", "addr", "add", "10.0.0.11/24", "dev", &e1]);
        s2.must(&["ip", "addr", "add", "10.0.0.12/24", "dev", &e2]);
        // veth leaves checksums partial otherwise
        for (ns, ifc) in [(&cli, &c0), (&s1, &e1), (&s2, &e2)] {
            ns.must(&["ethtool", "-K", ifc, "tx", "off"]);
        }
        Lab {
            app,
            cli,
            sw,
            s1,
            s2,
            nic0,
            nic1,
            c0,
            w0,
            e1,
            e2,
        }
    }
}

#[test]
fn seed_mail_flow_balances_over_two_nat_servers_with_health_checks() {
    if skip_without_lab() {
        return;
    }
    mail_lab(Mode::Nat, 1);
}

/// NAT with two workers, each polling one RX queue of each port (af_packet fans frames out
/// by the kernel's flow hash, which knows nothing of NAT): a connection's replies often
/// reach the worker that does not hold it, and are handed to the one that does (the owner of
/// the client endpoint), as are client packets received by the other worker. Every
/// connection must work end to end, and the hand-over must have happened.
#[test]
fn seed_mail_flow_nat_with_two_workers_hands_replies_to_the_connection_owner() {
    if skip_without_lab() {
        return;
    }
    if skip_without_cpus(2) {
        return;
    }
    mail_lab(Mode::Nat, 2);
}

/// The same in gateway mode (direct routing): the servers own the VIP (on `lo`), the
/// appliance only rewrites the MACs, and the servers' answers come back as plain routed
/// traffic (a `table 100` flow: no route there, main answers), not through the director.
#[test]
fn seed_mail_flow_in_gateway_mode_routes_to_the_servers_macs() {
    if skip_without_lab() {
        return;
    }
    mail_lab(Mode::Gateway, 1);
}

/// The mail labs' flows: the seed's `mail` flow, gateway-mode answers routed, the rest
/// permitted.
const MAIL_FLOWS: &str = "flow mail director maildirect\n\
                          \x20   match proto tcp dst 192.168.0.2 dstport 110\n\
                          \x20   match proto tcp dst 192.168.0.2 dstport 143\n\
                          \x20   match proto tcp dst 192.168.0.2 dstport 25\n\
                          flow dr-answers table 100\n    match proto tcp src 192.168.0.2\n\
                          flow rest permit\n    match\n";

/// The mail labs' config: `maildirect` (wrr, `mode`, tcp health checks) over mail1 and mail2,
/// with one worker or two (lcores 0 and 1, the main lcore sharing 0, one RX queue each per
/// port), persistent per client address or not.
fn mail_config(nic0: &str, nic1: &str, mode: Mode, workers: usize, persistent: bool) -> String {
    let mode_name = match mode {
        Mode::Nat => "nat",
        Mode::Gateway => "gateway",
    };
    let persistence = match persistent {
        true => "persistence = { timeout = 300, netmask = \"255.255.255.255\" }",
        false => "",
    };
    let head = common::lab_config("mail.flows", nic0, nic1, workers);
    format!(
        r#"{head}[[table]]
id = 100
routes = {{ "203.0.113.0/24" = "10.0.0.254" }}
[[director]]
name = "maildirect"
scheduler = "wrr"
mode = "{mode_name}"
virtual = {{ address = "192.168.0.2" }}
{persistence}
check = {{ kind = "tcp", port = 25, interval_ms = 200, timeout_ms = 150, rise = 1, fall = 2 }}
servers = [
  {{ name = "mail1", address = "10.0.0.11", weight = 10 }},
  {{ name = "mail2", address = "10.0.0.12", weight = 10 }},
]
"#
    )
}

/// Persistence (per client address) with two workers: a persistent director's templates
/// live in the owning worker's table, so the hand-over steers by the client address alone
/// and every connection of a client, whatever its port, meets the same template. A first
/// client (192.168.0.101) opens one connection, which moves one worker's wrr cursor; then
/// the second client's 30 connections to ports 25, 110 and 143 must all reach one server
/// (steered by address and port instead, they would split over the two workers, whose
/// cursors now disagree, and reach both).
#[test]
fn persistent_nat_director_keeps_a_client_on_one_server_with_two_workers() {
    if skip_without_lab() {
        return;
    }
    if skip_without_cpus(2) {
        return;
    }
    let lab = Lab::new(["mail1", "mail2"]);
    let Lab {
        app,
        cli,
        s1,
        s2,
        nic0,
        nic1,
        c0,
        ..
    } = &lab;
    cli.must(&["ip", "addr", "add", "192.168.0.101/24", "dev", c0]);
    for s in [s1, s2] {
        s.must(&["ip", "route", "add", "default", "via", "10.0.0.1"]);
    }
    let dir = TempDir::new("persist");
    let server_py = dir.0.join("server.py");
    let client_py = dir.0.join("client.py");
    std::fs::write(&server_py, SERVER).expect("write server");
    std::fs::write(&client_py, CLIENT).expect("write client");
    let _mail1 = server(s1, &server_py, "mail1");
    let _mail2 = server(s2, &server_py, "mail2");
    let config = mail_config(nic0, nic1, Mode::Nat, 2, true);
    let fg = Flowgate::start(
        app,
        &dir.0,
        "mail",
        &config,
        MAIL_FLOWS,
        "10.0.0.0/24 dev eth1",
    );
    std::thread::sleep(Duration::from_millis(1500));

    let first = connections_from(cli, &client_py, 25, 1, Some("192.168.0.101"));
    assert_eq!(tally(&first).0 + tally(&first).1, 1, "{first:?}");
    let mut all = Vec::new();
    for port in [25, 110, 143] {
        all.extend(connections_from(
            cli,
            &client_py,
            port,
            10,
            Some("192.168.0.100"),
        ));
    }
    let (a, b) = tally(&all);
    assert!(
        a == 30 || b == 30,
        "one server for the client: mail1 {a}, mail2 {b}"
    );
    let (s, _err) = fg.stop();
    let d = &s["directors"]["maildirect"];
    assert_eq!(d["connections"].as_u64(), Some(31), "{d:#}");
    assert!(
        s["handoff"]["handed_out"].as_u64().unwrap_or(0) > 0,
        "{s:#}"
    );
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Nat,
    Gateway,
}

fn mail_lab(mode: Mode, workers: usize) {
    let lab = Lab::new(["mail1", "mail2"]);
    let Lab {
        app,
        cli,
        s1,
        s2,
        nic0,
        nic1,
        ..
    } = &lab;
    for s in [&s1, &s2] {
        s.must(&["ip", "route", "add", "default", "via", "10.0.0.1"]);
        if mode == Mode::Gateway {
            s.must(&["ip", "addr", "add", "192.168.0.2/32", "dev", "lo"]);
            s.must(&["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0"]);
        }
    }

    let dir = TempDir::new("director");
    let server_py = dir.0.join("server.py");
    let client_py = dir.0.join("client.py");
    std::fs::write(&server_py, SERVER).expect("write server");
    std::fs::write(&client_py, CLIENT).expect("write client");
    let mail1 = server(s1, &server_py, "mail1");
    let _mail2 = server(s2, &server_py, "mail2");

    let config = mail_config(nic0, nic1, mode, workers, false);
    let flows = MAIL_FLOWS;
    let fg = Flowgate::start(app, &dir.0, "mail", &config, flows, "10.0.0.0/24 dev eth1");
    // the first checks may run before the TAPs have their addresses: let them settle
    std::thread::sleep(Duration::from_millis(1500));

    // 1. both servers up: 40 connections to port 25, and some to 110 and 143
    let r = connections(cli, &client_py, 25, 40);
    assert_eq!(r.len(), 40, "{r:?}");
    let (a, b) = tally(&r);
    assert!(
        a >= 12 && b >= 12,
        "wrr 10/10 spreads the connections: {a}/{b}"
    );
    for port in [110, 143] {
        let r = connections(cli, &client_py, port, 6);
        assert_eq!(r.len(), 6, "{r:?}");
        let (a, b) = tally(&r);
        assert!(a >= 1 && b >= 1, "port {port}: {a}/{b}");
    }

    // 2. mail1's listener dies: once the check marks it down, everything goes to mail2
    let _ = mail1.stop(Duration::from_secs(2));
    std::thread::sleep(Duration::from_millis(1500));
    let r = connections(cli, &client_py, 25, 20);
    assert_eq!(r.len(), 20, "{r:?}");
    assert_eq!(tally(&r), (0, 20), "mail1 is down: {r:?}");

    // 3. mail1 back: the check marks it up, new connections reach it again
    let _mail1 = server(s1, &server_py, "mail1");
    std::thread::sleep(Duration::from_millis(1500));
    let r = connections(cli, &client_py, 25, 20);
    assert_eq!(r.len(), 20, "{r:?}");
    let (a, b) = tally(&r);
    assert!(a >= 5 && b >= 5, "mail1 is back: {a}/{b}");

    // 4. flowctl: disable (drain) mail2 over the control socket, then enable it again
    let socket = dir.0.join("mail.sock");
    let flowctl = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_flowctl"))
            .arg("--socket")
            .arg(&socket)
            .args(args)
            .output()
            .expect("flowctl");
        assert!(
            out.status.success(),
            "flowctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    flowctl(&["director", "disable", "maildirect", "mail2"]);
    let listed = flowctl(&["--json", "director", "list"]);
    assert!(listed.contains("\"enabled\":false"), "{listed}");
    // the closed connections stay in the tables (TIME_WAIT, FIN_WAIT) as inactive ones
    let v: serde_json::Value = serde_json::from_str(listed.trim()).expect("director list JSON");
    let inactive: u64 = v["directors"][0]["servers"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s["inactive"].as_u64()).sum())
        .unwrap_or(0);
    assert!(inactive > 0, "inactive connections: {listed}");
    let r = connections(cli, &client_py, 25, 10);
    assert_eq!(tally(&r), (10, 0), "mail2 disabled: {r:?}");
    flowctl(&["director", "enable", "maildirect", "mail2"]);
    flowctl(&["director", "weight", "maildirect", "mail1", "0"]);
    let r = connections(cli, &client_py, 25, 10);
    assert_eq!(tally(&r), (0, 10), "mail1 drained by weight 0: {r:?}");
    // the control side sees the hand-over too (`flowctl stats`, the metrics)
    let stats: serde_json::Value =
        serde_json::from_str(flowctl(&["--json", "stats"]).trim()).expect("stats JSON");
    let handed = stats["workers"]
        .as_array()
        .and_then(|w| w.iter().find(|c| c[0] == "handed_out"))
        .and_then(|c| c[1].as_u64());
    assert_eq!(handed.is_some_and(|n| n > 0), workers > 1, "{stats:#}");

    // 5. an established connection keeps its server across a rule swap and the drain of
    // that very server: it greets, the flows are replaced, its server goes to weight 0, and
    // its echo still comes from the same server
    let held_py = dir.0.join("held.py");
    std::fs::write(&held_py, HELD_CLIENT).expect("write held client");
    let (mark, go) = (dir.0.join("held.mark"), dir.0.join("held.go"));
    let held = cli.spawn(&[
        "python3",
        held_py.to_str().expect("utf-8 path"),
        mark.to_str().expect("utf-8 path"),
        go.to_str().expect("utf-8 path"),
    ]);
    assert!(
        wait_until(Duration::from_secs(10), || mark.exists()),
        "the held connection greeted"
    );
    let first = std::fs::read_to_string(&mark).expect("greeting");
    let swapped = dir.0.join("swapped.flows");
    std::fs::write(
        &swapped,
        format!("flow extra deny\n    match proto udp dstport 9\n{MAIL_FLOWS}"),
    )
    .expect("write flows");
    flowctl(&["apply", swapped.to_str().expect("utf-8 path")]);
    flowctl(&["director", "weight", "maildirect", &first, "0"]);
    std::fs::write(&go, "").expect("go");
    let mut held = held;
    assert!(
        wait_until(Duration::from_secs(10), || !held.is_running()),
        "the held connection finished"
    );
    let (_, out, err_held) = held.stop(Duration::from_secs(1));
    assert_eq!(
        out.trim(),
        format!("{first} {first}:held"),
        "same server after the swap and the drain: {err_held}"
    );

    // 6. gateway mode: an ICMP error from the client about a server's answer (sent to the
    // VIP, so to the appliance) is forwarded unchanged to that connection's server
    if mode == Mode::Gateway {
        flowctl(&["director", "weight", "maildirect", &first, "10"]);
        gateway_icmp_reaches_the_server(&lab, &dir.0);
    }

    let (s, err) = fg.stop();
    // the health checks' state changes, as printed by `flowgate run`
    let down = err.find("director maildirect/mail1: down");
    let up = err.rfind("director maildirect/mail1: up");
    assert!(down.is_some() && up > down, "{err}");
    assert!(err.contains("director maildirect:"), "the report: {err}");
    let d = &s["directors"]["maildirect"];
    eprintln!("directors: {d:#}");
    let conns = |srv: &str| d["servers"][srv]["connections"].as_u64().unwrap_or(0);
    assert!(
        conns("mail1") >= 12 + 5 && conns("mail2") >= 12 + 20,
        "{d:#}"
    );
    assert!(
        (d["packets_out"].as_u64().unwrap_or(0) > 0) == (mode == Mode::Nat),
        "NAT replies: {d:#}"
    );
    assert_eq!(d["servers"]["mail1"]["up"], true, "{d:#}");
    let icmp_in = u64::from(mode == Mode::Gateway);
    assert_eq!(d["icmp_in"].as_u64(), Some(icmp_in), "{d:#}");
    // over every generation (the held connection's test swapped the rule set)
    let director_verdicts: u64 = s["all_generations"]["verdicts"]
        .as_array()
        .map(|v| {
            v.iter()
                .filter(|x| x["list"] == "flow" && x["verdict"] == "director")
                .filter_map(|x| x["packets"].as_u64())
                .sum()
        })
        .unwrap_or(0);
    assert!(director_verdicts >= 86 * 3, "{s:#}");
    assert_eq!(s["generation"].as_u64(), Some(2), "one swap: {s:#}");
    let (out, into) = (
        s["handoff"]["handed_out"].as_u64().unwrap_or(0),
        s["handoff"]["handed_in"].as_u64().unwrap_or(0),
    );
    eprintln!("hand-over: {out} out, {into} in");
    assert_eq!(out, into, "every packet handed over was received: {s:#}");
    assert_eq!(s["drops"]["handoff-full"].as_u64().unwrap_or(0), 0, "{s:#}");
    if workers > 1 {
        // about half of the connections' packets reach the other worker first
        assert!(out >= 20, "packets were handed to their owner: {out}");
        assert!(
            err.contains("hand-over between workers"),
            "the report: {err}"
        );
    } else {
        assert_eq!(out, 0, "one worker hands nothing over");
    }
}

/// Tunnel mode sends half-open TCP connections and UDP "connections" (one client port each)
/// to the VIP, then a datagram too big to tunnel (DF, 1488 bytes of IP).
const TUNNEL_CLIENT: &str = r#"
import socket, sys, time
n_tcp, n_udp = int(sys.argv[1]), int(sys.argv[2])
held = []
for i in range(n_tcp):
    s = socket.socket(); s.setblocking(False)
    s.connect_ex(('192.168.0.2', 25)); held.append(s); time.sleep(0.01)
for i in range(n_udp):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for k in range(3):
        u.sendto(b'datagram %d %d' % (i, k), ('192.168.0.2', 53)); time.sleep(0.005)
    held.append(u)
big = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
big.setsockopt(socket.IPPROTO_IP, 10, 2)  # IP_MTU_DISCOVER = IP_PMTUDISC_DO: DF
big.sendto(b'x' * 1460, ('192.168.0.2', 53))
time.sleep(1.8)  # nobody answers: every SYN is sent again after 1 s
for s in held + [big]:
    s.close()
"#;

/// The frames of a classic pcap file (either byte order, micro- or nanosecond stamps).
fn read_pcap(bytes: &[u8]) -> Vec<Vec<u8>> {
    assert!(bytes.len() >= 24, "pcap header");
    let le = match bytes[..4] {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => panic!("not a pcap file: {:02x?}", &bytes[..4]),
    };
    let u32_at = |at: usize| {
        let b: [u8; 4] = bytes[at..at + 4].try_into().expect("4 bytes");
        if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    assert_eq!(u32_at(20), 1, "Ethernet link type");
    let mut frames = Vec::new();
    let mut at = 24;
    while at + 16 <= bytes.len() {
        let (incl, orig) = (u32_at(at + 8) as usize, u32_at(at + 12) as usize);
        assert_eq!(incl, orig, "whole frames captured");
        frames.push(bytes[at + 16..at + 16 + incl].to_vec());
        at += 16 + incl;
    }
    assert_eq!(at, bytes.len(), "no partial record");
    frames
}

/// The complemented one's complement sum: 0 over a header with a valid checksum.
fn checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = h
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn mac_of(ns: &Netns, ifc: &str) -> [u8; 6] {
    let out = ns.must(&["cat", &format!("/sys/class/net/{ifc}/address")]);
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<u8> = text
        .trim()
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).expect("hex"))
        .collect();
    v.try_into().expect("6 bytes")
}

/// Tunnel mode (IPVS's LVS-TUN): the appliance wraps the client's packet, TTL - 1, in an
/// outer IPv4 header (protocol 4) from its port's address to the chosen server, and sends it
/// to that server's MAC. This kernel has no `ipip` module, so the servers cannot unwrap:
/// what leaves the appliance's server-side port is captured and checked byte by byte.
#[test]
fn tunnel_mode_wraps_client_packets_in_ipip_to_the_servers() {
    if skip_without_lab() {
        return;
    }
    let lab = Lab::new(["tun1", "tun2"]);
    let Lab {
        app,
        cli,
        sw,
        s1,
        s2,
        nic0,
        nic1,
        w0,
        e1,
        e2,
        ..
    } = &lab;
    let (mac1, mac2, port_mac) = (mac_of(s1, e1), mac_of(s2, e2), mac_of(app, nic1));

    let dir = TempDir::new("tunnel");
    let client_py = dir.0.join("client.py");
    std::fs::write(&client_py, TUNNEL_CLIENT).expect("write client");
    // everything the appliance's server-side port sends, from before flowgate starts
    let pcap = dir.0.join("eth1.pcap");
    let capture = sw.spawn(&[
        "tcpdump",
        "-i",
        w0,
        "-n",
        "-U",
        "--immediate-mode",
        "-Z",
        "root",
        "-w",
        pcap.to_str().expect("utf-8 path"),
        "ether",
        "src",
        &port_mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":"),
    ]);
    assert!(
        wait_until(Duration::from_secs(10), || pcap.exists()),
        "tcpdump started"
    );
    std::thread::sleep(Duration::from_millis(300));

    let head = common::lab_config("tun.flows", nic0, nic1, 1);
    let config = head
        + r#"[[director]]
name = "tundirect"
scheduler = "wrr"
mode = "tunnel"
virtual = { address = "192.168.0.2" }
servers = [
  { name = "t1", address = "10.0.0.11", weight = 3 },
  { name = "t2", address = "10.0.0.12", weight = 1 },
]
"#;
    // the outflows see what leaves: the outer packet (protocol 4), not the client's UDP
    let flows = "flow lb director tundirect\n\
                 \x20   match proto tcp dst 192.168.0.2 dstport 25\n\
                 \x20   match proto udp dst 192.168.0.2 dstport 53\n\
                 flow rest permit\n    match\n\
                 outflow ipip permit\n    match proto 4 src 10.0.0.1\n\
                 outflow inner-udp deny\n    match proto udp dst 192.168.0.2\n";
    let fg = Flowgate::start(app, &dir.0, "tun", &config, flows, "10.0.0.0/24 dev eth1");
    // the servers make themselves known (their ARP requests teach the worker their MACs)
    for s in [&s1, &s2] {
        s.must(&["ping", "-c", "1", "-W", "2", "10.0.0.1"]);
    }

    let (n_tcp, n_udp) = (20usize, 10usize);
    let out = cli.run(&[
        "python3",
        client_py.to_str().expect("utf-8 path"),
        &n_tcp.to_string(),
        &n_udp.to_string(),
    ]);
    assert!(
        out.status.success(),
        "client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_millis(300));
    // the too-big datagram (DF) was answered with "fragmentation needed" from the VIP,
    // announcing the port's MTU less the outer header: the client's kernel learned it
    let route = cli.run(&["ip", "route", "get", "192.168.0.2"]);
    let route = String::from_utf8_lossy(&route.stdout).to_string();
    assert!(route.contains("mtu 1480"), "path MTU learned: {route}");
    let (s, err) = fg.stop();
    let _ = capture.stop(Duration::from_secs(5));
    let frames = read_pcap(&std::fs::read(&pcap).expect("pcap written"));

    // every frame the port sent was captured: the TX counters count what really left
    let eth1 = &s["ports"][1];
    assert_eq!(
        eth1["tx_packets"].as_u64(),
        Some(frames.len() as u64),
        "{eth1:#}"
    );
    assert_eq!(
        eth1["tx_bytes"].as_u64(),
        Some(frames.iter().map(|f| f.len() as u64).sum::<u64>()),
        "{eth1:#}"
    );

    // (proto, client port) -> (server, packets)
    let servers = [
        ([10u8, 0, 0, 11], mac1, "t1"),
        ([10u8, 0, 0, 12], mac2, "t2"),
    ];
    let mut conns: std::collections::BTreeMap<(u8, u16), (&str, usize)> = Default::default();
    let mut tunnelled = 0usize;
    for f in &frames {
        if f[12..14] != [0x08, 0x00] || f[14 + 9] != 4 {
            continue; // ARP, the kernel's answers to the pings
        }
        tunnelled += 1;
        let outer = &f[14..34];
        assert_eq!(&f[6..12], &port_mac, "from the port's MAC");
        assert_eq!(outer[0], 0x45, "outer IPv4 without options");
        assert_eq!(
            usize::from(u16::from_be_bytes([outer[2], outer[3]])),
            f.len() - 14,
            "outer length"
        );
        assert_eq!(outer[8], 64, "outer TTL");
        assert_eq!(checksum(outer), 0, "outer header checksum");
        assert_eq!(outer[12..16], [10, 0, 0, 1], "from the port's address");
        let (_, mac, name) = servers
            .iter()
            .find(|(a, _, _)| outer[16..20] == *a)
            .unwrap_or_else(|| panic!("to a server: {:?}", &outer[16..20]));
        assert_eq!(&f[..6], mac, "to {name}'s MAC");
        let inner = &f[34..];
        assert_eq!(inner[0], 0x45);
        assert_eq!(
            usize::from(u16::from_be_bytes([inner[2], inner[3]])),
            inner.len(),
            "the whole inner packet"
        );
        assert_eq!(inner[8], 63, "inner TTL one less than the client's 64");
        assert_eq!(checksum(&inner[..20]), 0, "inner header checksum");
        assert_eq!(inner[12..16], [192, 168, 0, 100], "client");
        assert_eq!(inner[16..20], [192, 168, 0, 2], "VIP, unchanged");
        let proto = inner[9];
        let (sport, dport) = (
            u16::from_be_bytes([inner[20], inner[21]]),
            u16::from_be_bytes([inner[22], inner[23]]),
        );
        match proto {
            6 => assert_eq!((dport, inner[20 + 13]), (25, 0x02), "a SYN to port 25"),
            17 => assert_eq!(dport, 53),
            _ => panic!("inner protocol {proto}"),
        }
        let e = conns.entry((proto, sport)).or_insert((name, 0));
        assert_eq!(e.0, *name, "connection {proto}/{sport} stays on its server");
        e.1 += 1;
    }
    let tcp: Vec<_> = conns.iter().filter(|((p, _), _)| *p == 6).collect();
    let udp: Vec<_> = conns.iter().filter(|((p, _), _)| *p == 17).collect();
    assert_eq!(tcp.len(), n_tcp, "{conns:?}");
    assert_eq!(udp.len(), n_udp, "{conns:?}");
    assert!(
        tcp.iter().all(|(_, (_, n))| *n >= 2),
        "the SYNs sent again went the same way: {tcp:?}"
    );
    assert!(udp.iter().all(|(_, (_, n))| *n == 3), "{udp:?}");
    let on = |srv: &str| conns.values().filter(|(n, _)| *n == srv).count();
    let (a, b) = (on("t1"), on("t2"));
    eprintln!("tunnelled {tunnelled} packets, connections t1 {a}, t2 {b}");
    // wrr 3:1 over 31 new connections (the last, too big, is scheduled then dropped)
    assert!(
        (21..=24).contains(&a) && (6..=9).contains(&b),
        "3:1: {a}/{b}"
    );

    // the counters (the too-big datagram is counted, though answered)
    let drops = &s["drops"];
    assert_eq!(drops["tunnel-too-big"].as_u64(), Some(1), "{drops:#}");
    for r in [
        "tunnel-no-source",
        "director-unavailable",
        "director-drop",
        "outflow-deny",
    ] {
        assert_eq!(drops[r].as_u64(), Some(0), "{r}: {drops:#}");
    }
    let d = &s["directors"]["tundirect"];
    eprintln!("directors: {d:#}");
    assert_eq!(d["connections"].as_u64(), Some(31), "{d:#}");
    assert_eq!(
        d["packets_out"].as_u64(),
        Some(0),
        "no replies through us: {d:#}"
    );
    let dc = |srv: &str| d["servers"][srv]["connections"].as_u64().unwrap_or(0) as usize;
    assert_eq!(
        (dc("t1") - a) + (dc("t2") - b),
        1,
        "the too big one is a connection too: {d:#}"
    );
    assert_eq!(
        d["packets_in"].as_u64(),
        Some(tunnelled as u64 + 1),
        "{d:#}"
    );
    assert_eq!(
        s["verdicts"]["director"].as_u64(),
        Some(tunnelled as u64 + 1),
        "{s:#}"
    );
    let hits = |flow: &str| -> u64 {
        s["outflow_rules"]
            .as_array()
            .expect("rules")
            .iter()
            .filter(|r| r["flow"] == flow)
            .map(|r| r["packets"].as_u64().unwrap_or(0))
            .sum()
    };
    assert_eq!(hits("ipip"), tunnelled as u64, "{err}");
    assert_eq!(hits("inner-udp"), 0);
}

/// `n` connected UDP sockets, one after the other, each sending one datagram to
/// 192.168.0.2:5353 and waiting for an answer: per socket `REFUSED` (ECONNREFUSED: an ICMP
/// port unreachable whose quoted packet matches the socket), `DATA`, `TIMEOUT` or `ERR ...`.
const UDP_CLIENT: &str = r#"
import socket, sys
n = int(sys.argv[1])
for i in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    try:
        s.connect(('192.168.0.2', 5353))
        s.send(b'x%d' % i)
        s.recv(100)
        print('DATA')
    except ConnectionRefusedError:
        print('REFUSED')
    except socket.timeout:
        print('TIMEOUT')
    except Exception as e:
        print('ERR', e)
    s.close()
    sys.stdout.flush()
"#;

/// ICMP errors about NAT connections: a UDP NAT director (192.168.0.2:5353 over two servers)
/// whose servers listen on nothing. Each server's port unreachable quotes `client -> server`;
/// translated by the appliance (quoted destination back to the VIP, outer source the VIP) it
/// matches the client's connected socket, which gets ECONNREFUSED. Untranslated it would
/// reach the client through the appliance's kernel, match no socket, and `recv` would time
/// out.
#[test]
fn nat_udp_port_unreachable_reaches_the_client_as_connection_refused() {
    if skip_without_lab() {
        return;
    }
    udp_unreachable_lab(1);
}

/// The same with two workers: the servers' errors reach either worker (af_packet's fan-out
/// hashes the outer addresses), and one about the other worker's connection is handed to the
/// owner of the quoted client endpoint.
#[test]
fn nat_udp_port_unreachable_with_two_workers_is_handed_to_the_connection_owner() {
    if skip_without_lab() {
        return;
    }
    if skip_without_cpus(2) {
        return;
    }
    udp_unreachable_lab(2);
}

fn udp_unreachable_lab(workers: usize) {
    let lab = Lab::new(["dns1", "dns2"]);
    let Lab {
        app,
        cli,
        s1,
        s2,
        nic0,
        nic1,
        ..
    } = &lab;
    for s in [&s1, &s2] {
        s.must(&["ip", "route", "add", "default", "via", "10.0.0.1"]);
        // every datagram gets its port unreachable
        sysctl(s, "net.ipv4.icmp_ratelimit=0");
    }

    let dir = TempDir::new("director-icmp");
    let client_py = dir.0.join("udp_client.py");
    std::fs::write(&client_py, UDP_CLIENT).expect("write client");
    let head = common::lab_config("dns.flows", nic0, nic1, workers);
    let config = format!(
        r#"{head}[[director]]
name = "dns"
scheduler = "rr"
mode = "nat"
virtual = {{ address = "192.168.0.2", port = 5353 }}
servers = [
  {{ name = "dns1", address = "10.0.0.11" }},
  {{ name = "dns2", address = "10.0.0.12" }},
]
"#
    );
    let flows = "flow dns director dns\n    match proto udp dst 192.168.0.2 dstport 5353\n\
                 flow rest permit\n    match\n";
    let fg = Flowgate::start(app, &dir.0, "dns", &config, flows, "10.0.0.0/24 dev eth1");
    std::thread::sleep(Duration::from_millis(500));

    let n = 16;
    let out = cli.run(&[
        "python3",
        client_py.to_str().expect("utf-8 path"),
        &n.to_string(),
    ]);
    let results: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let (s, _err) = fg.stop();
    let d = &s["directors"]["dns"];
    eprintln!(
        "results: {results:?}\ndirectors: {d:#}\nhandoff: {}",
        s["handoff"]
    );
    assert_eq!(results.len(), n, "{results:?}");
    assert!(
        results.iter().all(|r| r == "REFUSED"),
        "every connected socket sees the servers' port unreachable: {results:?}"
    );
    let conns = |srv: &str| d["servers"][srv]["connections"].as_u64().unwrap_or(0);
    assert!(conns("dns1") >= 4 && conns("dns2") >= 4, "rr: {d:#}");
    assert_eq!(d["icmp_out"].as_u64(), Some(n as u64), "{d:#}");
    assert_eq!(d["icmp_in"].as_u64(), Some(0), "{d:#}");
    assert_eq!(
        d["packets_out"].as_u64(),
        Some(0),
        "no datagram answered: {d:#}"
    );
    let (handed_out, handed_in) = (
        s["handoff"]["handed_out"].as_u64().unwrap_or(0),
        s["handoff"]["handed_in"].as_u64().unwrap_or(0),
    );
    assert_eq!(handed_out, handed_in, "{s:#}");
    if workers == 1 {
        assert_eq!(handed_out, 0);
    }
}
