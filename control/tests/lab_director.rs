//! `director` verdicts through real kernels: the seed's `mail` flow hands TCP to 192.168.0.2
//! ports 25/110/143 to the `maildirect` director (wrr, NAT), which spreads connections over two
//! real servers in namespaces of their own; their replies come back through the appliance and
//! leave with the VIP as source. A server's listener killed mid-test is marked down by the
//! tcp health check and gets no new connection; restarted, it gets them again. The same in
//! gateway mode (direct routing: the servers own the VIP, only the MACs are rewritten).
//!
//! Needs root (namespaces); traffic is bounded (about 100 short connections); the lab is
//! removed when the test ends.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{
    nic_for_flowgate, skip_without_lab, sysctl, tag, veth, wait_until, Flowgate, Netns, Proc,
    TempDir,
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

/// `n` connections, one after the other, to 192.168.0.2:`port`: per connection the server
/// name of its greeting, or `MIXED a b` if the echo came from another server, or `ERR ...`.
const CLIENT: &str = r#"
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
for i in range(n):
    try:
        s = socket.create_connection(('192.168.0.2', port), timeout=3)
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

fn connections(cli: &Netns, client: &Path, port: u16, n: usize) -> Vec<String> {
    let out = cli.run(&[
        "python3",
        client.to_str().expect("utf-8 path"),
        &port.to_string(),
        &n.to_string(),
    ]);
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
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        eprintln!("skipped: needs two CPUs");
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

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Nat,
    Gateway,
}

fn mail_lab(mode: Mode, workers: usize) {
    let app = Netns::new("app");
    let cli = Netns::new("cli");
    let sw = Netns::new("sw");
    let s1 = Netns::new("mail1");
    let s2 = Netns::new("mail2");
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
    sw.must(&["ip", "link", "add", "br0", "type", "bridge"]);
    for w in [&w0, &w1, &w2] {
        sw.must(&["ip", "link", "set", w, "master", "br0"]);
    }
    sw.must(&["ip", "link", "set", "br0", "up"]);
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
    for s in [&s1, &s2] {
        s.must(&["ip", "route", "add", "default", "via", "10.0.0.1"]);
        if mode == Mode::Gateway {
            s.must(&["ip", "addr", "add", "192.168.0.2/32", "dev", "lo"]);
            s.must(&["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0"]);
        }
    }
    // veth leaves checksums partial otherwise
    for (ns, ifc) in [(&cli, &c0), (&s1, &e1), (&s2, &e2)] {
        ns.must(&["ethtool", "-K", ifc, "tx", "off"]);
    }

    let dir = TempDir::new("director");
    let server_py = dir.0.join("server.py");
    let client_py = dir.0.join("client.py");
    std::fs::write(&server_py, SERVER).expect("write server");
    std::fs::write(&client_py, CLIENT).expect("write client");
    let mail1 = server(&s1, &server_py, "mail1");
    let _mail2 = server(&s2, &server_py, "mail2");

    let mode_name = match mode {
        Mode::Nat => "nat",
        Mode::Gateway => "gateway",
    };
    // two workers: lcores 0 and 1 (the main lcore shares 0), one RX queue each per port
    let (lcores, eal_extra, qpairs, rx_queues) = match workers {
        1 => ("[1]", "", "", ""),
        _ => ("[0, 1]", r#", "-l", "0""#, ",qpairs=2", "rx_queues = 2"),
    };
    let config = format!(
        r#"flows = "mail.flows"
[dataplane]
workers = {lcores}
eal = ["--no-huge", "-m", "512", "--no-pci", "--no-shconf"{eal_extra}]
[[port]]
name = "eth0"
device = "net_af_packet0,iface={nic0}{qpairs}"
{rx_queues}
addresses = ["192.168.0.1/24", "192.168.0.2/24"]
[[port]]
name = "eth1"
device = "net_af_packet1,iface={nic1}{qpairs}"
{rx_queues}
addresses = ["10.0.0.1/24"]
[[table]]
id = 100
routes = {{ "203.0.113.0/24" = "10.0.0.254" }}
[[director]]
name = "maildirect"
scheduler = "wrr"
mode = "{mode_name}"
virtual = {{ address = "192.168.0.2" }}
check = {{ kind = "tcp", port = 25, interval_ms = 200, timeout_ms = 150, rise = 1, fall = 2 }}
servers = [
  {{ name = "mail1", address = "10.0.0.11", weight = 10 }},
  {{ name = "mail2", address = "10.0.0.12", weight = 10 }},
]
"#
    );
    let flows = "flow mail director maildirect\n\
                 \x20   match proto tcp dst 192.168.0.2 dstport 110\n\
                 \x20   match proto tcp dst 192.168.0.2 dstport 143\n\
                 \x20   match proto tcp dst 192.168.0.2 dstport 25\n\
                 flow dr-answers table 100\n    match proto tcp src 192.168.0.2\n\
                 flow rest permit\n    match\n";
    let fg = Flowgate::start(&app, &dir.0, "mail", &config, flows, "10.0.0.0/24 dev eth1");
    // the first checks may run before the TAPs have their addresses: let them settle
    std::thread::sleep(Duration::from_millis(1500));

    // 1. both servers up: 40 connections to port 25, and some to 110 and 143
    let r = connections(&cli, &client_py, 25, 40);
    assert_eq!(r.len(), 40, "{r:?}");
    let (a, b) = tally(&r);
    assert!(
        a >= 12 && b >= 12,
        "wrr 10/10 spreads the connections: {a}/{b}"
    );
    for port in [110, 143] {
        let r = connections(&cli, &client_py, port, 6);
        assert_eq!(r.len(), 6, "{r:?}");
        let (a, b) = tally(&r);
        assert!(a >= 1 && b >= 1, "port {port}: {a}/{b}");
    }

    // 2. mail1's listener dies: once the check marks it down, everything goes to mail2
    let _ = mail1.stop(Duration::from_secs(2));
    std::thread::sleep(Duration::from_millis(1500));
    let r = connections(&cli, &client_py, 25, 20);
    assert_eq!(r.len(), 20, "{r:?}");
    assert_eq!(tally(&r), (0, 20), "mail1 is down: {r:?}");

    // 3. mail1 back: the check marks it up, new connections reach it again
    let _mail1 = server(&s1, &server_py, "mail1");
    std::thread::sleep(Duration::from_millis(1500));
    let r = connections(&cli, &client_py, 25, 20);
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
    let r = connections(&cli, &client_py, 25, 10);
    assert_eq!(tally(&r), (10, 0), "mail2 disabled: {r:?}");
    flowctl(&["director", "enable", "maildirect", "mail2"]);
    flowctl(&["director", "weight", "maildirect", "mail1", "0"]);
    let r = connections(&cli, &client_py, 25, 10);
    assert_eq!(tally(&r), (0, 10), "mail1 drained by weight 0: {r:?}");

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
    assert!(
        s["verdicts"]["director"].as_u64().unwrap_or(0) >= 86 * 3,
        "{s:#}"
    );
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
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        eprintln!("skipped: needs two CPUs");
        return;
    }
    udp_unreachable_lab(2);
}

fn udp_unreachable_lab(workers: usize) {
    let app = Netns::new("app");
    let cli = Netns::new("cli");
    let sw = Netns::new("sw");
    let s1 = Netns::new("dns1");
    let s2 = Netns::new("dns2");
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
    sw.must(&["ip", "link", "add", "br0", "type", "bridge"]);
    for w in [&w0, &w1, &w2] {
        sw.must(&["ip", "link", "set", w, "master", "br0"]);
    }
    sw.must(&["ip", "link", "set", "br0", "up"]);
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
    for s in [&s1, &s2] {
        s.must(&["ip", "route", "add", "default", "via", "10.0.0.1"]);
        // every datagram gets its port unreachable
        sysctl(s, "net.ipv4.icmp_ratelimit=0");
    }
    for (ns, ifc) in [(&cli, &c0), (&s1, &e1), (&s2, &e2)] {
        ns.must(&["ethtool", "-K", ifc, "tx", "off"]);
    }

    let dir = TempDir::new("director-icmp");
    let client_py = dir.0.join("udp_client.py");
    std::fs::write(&client_py, UDP_CLIENT).expect("write client");
    let (lcores, eal_extra, qpairs, rx_queues) = match workers {
        1 => ("[1]", "", "", ""),
        _ => ("[0, 1]", r#", "-l", "0""#, ",qpairs=2", "rx_queues = 2"),
    };
    let config = format!(
        r#"flows = "dns.flows"
[dataplane]
workers = {lcores}
eal = ["--no-huge", "-m", "512", "--no-pci", "--no-shconf"{eal_extra}]
[[port]]
name = "eth0"
device = "net_af_packet0,iface={nic0}{qpairs}"
{rx_queues}
addresses = ["192.168.0.1/24", "192.168.0.2/24"]
[[port]]
name = "eth1"
device = "net_af_packet1,iface={nic1}{qpairs}"
{rx_queues}
addresses = ["10.0.0.1/24"]
[[director]]
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
    let fg = Flowgate::start(&app, &dir.0, "dns", &config, flows, "10.0.0.0/24 dev eth1");
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
