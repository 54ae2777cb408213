//! Active/backup with keepalived: two appliances, A (VRRP priority 150) and B (100), each
//! running flowgate and keepalived, share one VRRP instance that owns the VIP 192.168.0.2 on
//! the clients' side and the servers' gateway 10.0.0.1 on the servers' side, as addresses on
//! flowgate's TAPs `eth0` / `eth1` of whichever box is master. VRRP adverts (IP protocol 112 to
//! 224.0.0.18) and ARP cross flowgate both ways: the flows permit them to the TAP, the kernel's
//! own frames leave through the port. A NAT director with persistence on each box spreads
//! 192.168.0.2:8080 over two servers.
//!
//! ```text
//!  cli 192.168.0.100 -- br0 --+-- A eth0 .11 / eth1 10.0.0.2 --+-- br1 -- srv 10.0.0.11, .12
//!                             |   A sync0 10.50.0.1 (sync) |   |       (default via 10.0.0.1)
//!                             |   B sync0 10.50.0.2 -------+   |
//!                             +-- B eth0 .12 / eth1 10.0.0.3 --+
//! ```
//!
//! The client keeps 50 connections to the VIP, each exchanging a line every 100 ms, and opens a
//! fresh probe connection every 100 ms. A's flowgate is killed (SIGKILL): its TAPs vanish,
//! keepalived on A goes to FAULT, B misses the adverts and takes the addresses over (gratuitous
//! ARPs through B's flowgate). Later A's flowgate starts again and keepalived preempts: the
//! addresses come back to A. For each of the two events the test reports the probes' longest
//! gap (how long the VIP took no new connection), and for each generation of connections open
//! at the event how many still exchange data afterwards and their longest stall.
//!
//! Without connection sync, the box taking over knows none of the connections: every one open
//! at the event breaks (NAT `not_syn` drops), only new connections work. With `[sync]` (over a
//! cable between the appliances, `sync0`, a kernel interface, not a flowgate port), every
//! connection survives both events.
//!
//! Needs root (namespaces) and keepalived; traffic is bounded (about 20 s of at most 100
//! connections and a probe connection every 100 ms); the lab is removed when the test ends.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use common::{nic_for_flowgate, skip_without_lab, sysctl, veth, wait_until, Flowgate, Netns, Proc};

/// An echo server: each line comes back prefixed with the server address it reached (the
/// one `scripts/demo-ha.sh` runs).
const SERVER: &str = include_str!("../../scripts/lab/echo-server.py");

/// The client: long-lived connections to VIP:PORT, each sending a numbered line every 100 ms
/// (one in flight) and reading its echo; and a probe, a fresh connection every 100 ms that must
/// answer within 300 ms. Commands on stdin: `open` (N more connections, a new generation),
/// `mark NAME` (an event, now), `quit` (print the report and exit). The report, per event: the
/// longest interval without an answered probe from 1 s before the event to the next one
/// (`probe_gap`); per generation with connections open at the event (an answer in the second
/// before it): how many (`open`), how many still answer in the last second before the next
/// event (`survived`), how many saw a reset or error (`reset`), and the survivors' longest
/// interval between answers over the same span (`stall_max`, `stall_median`).
const CLIENT: &str = r#"
import json, os, selectors, socket, statistics, sys, time
vip, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
PERIOD, PROBE_TIMEOUT = 0.1, 0.3
sel, now = selectors.DefaultSelector(), time.monotonic
conns, probes, probe_ok, marks = [], [], [], []
class Conn:
    def __init__(self, gen, i):
        self.gen, self.replies, self.dead, self.buf = gen, [], None, b''
        self.s = socket.socket(); self.s.setblocking(False)
        self.s.connect_ex((vip, port))
        self.next, self.sent, self.seq, self.up = now() + i * PERIOD / n, None, 0, False
        sel.register(self.s, selectors.EVENT_WRITE, self)
    def ready(self, t, ev):
        if self.up:
            return self.read(t)
        err = self.s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            return self.fail(t, os.strerror(err))
        self.up = True
        sel.modify(self.s, selectors.EVENT_READ, self)
    def tick(self, t):
        if self.up and self.dead is None and self.sent is None and t >= self.next:
            try:
                self.s.send(b'%d\n' % self.seq)
                self.sent, self.next = t, max(self.next + PERIOD, t)
            except BlockingIOError:
                pass
            except OSError as e:
                self.fail(t, e)
    def read(self, t):
        try:
            data = self.s.recv(4096)
        except BlockingIOError:
            return
        except OSError as e:
            return self.fail(t, e)
        if not data:
            return self.fail(t, 'closed')
        self.buf += data
        while b'\n' in self.buf:
            line, self.buf = self.buf.split(b'\n', 1)
            if self.sent is not None and line.split()[-1:] == [b'%d' % self.seq]:
                self.replies.append(t); self.seq += 1; self.sent = None
    def fail(self, t, e):
        self.dead = (t, str(e)); sel.unregister(self.s); self.s.close()
class Probe:
    def __init__(self, t):
        self.t, self.buf = t, b''
        self.s = socket.socket(); self.s.setblocking(False)
        self.s.connect_ex((vip, port))
        sel.register(self.s, selectors.EVENT_READ | selectors.EVENT_WRITE, self)
    def ready(self, t, ev):
        try:
            if ev & selectors.EVENT_WRITE:
                if self.s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    return self.close()
                self.s.send(b'p\n'); sel.modify(self.s, selectors.EVENT_READ, self)
            else:
                self.buf += self.s.recv(4096)
                if self.buf.endswith(b' p\n'):
                    probe_ok.append(t); self.close()
        except OSError:
            self.close()
    def close(self):
        if self in probes:
            probes.remove(self); sel.unregister(self.s); self.s.close()
sel.register(sys.stdin, selectors.EVENT_READ, None)
gen, last_probe, quit = 0, 0.0, False
while not quit:
    for key, ev in sel.select(0.005):
        t = now()
        if key.data is not None:
            key.data.ready(t, ev)
            continue
        data = os.read(0, 4096)
        quit = not data
        for cmd in (l.split() for l in data.decode().splitlines()):
            if cmd == ['quit']:
                quit = True
            elif cmd == ['open']:
                gen += 1
                conns.extend(Conn(gen, i) for i in range(n))
            elif cmd[:1] == ['mark']:
                marks.append((cmd[1], t))
    t = now()
    for c in conns:
        c.tick(t)
    for p in [p for p in probes if t - p.t > PROBE_TIMEOUT]:
        p.close()
    if t - last_probe >= PERIOD:
        last_probe = t; probes.append(Probe(t))
def longest_gap(times, a, b):
    ts = [a] + [x for x in times if a < x < b] + [b]
    return max(y - x for x, y in zip(ts, ts[1:]))
report, bounds = {}, [m for _, m in marks] + [now()]
for k, (name, m) in enumerate(marks):
    a, b = m - 1.0, bounds[k + 1]
    ev = {'probe_gap': round(longest_gap(probe_ok, a, b), 3), 'gens': {}}
    for g in range(1, gen + 1):
        cs = [c for c in conns if c.gen == g and any(m - 1.0 <= r < m for r in c.replies)]
        if not cs:
            continue
        alive = [c for c in cs if any(b - 1.0 <= r < b for r in c.replies)]
        stalls = sorted(longest_gap(c.replies, a, b) for c in alive)
        ev['gens'][str(g)] = {
            'open': len(cs), 'survived': len(alive),
            'reset': sum(1 for c in cs if c.dead is not None),
            'stall_max': round(stalls[-1], 3) if stalls else None,
            'stall_median': round(statistics.median(stalls), 3) if stalls else None,
        }
    report[name] = ev
print(json.dumps(report), flush=True)
"#;

/// Who answers ARP for an address: sends one ARP request (who-has `argv[2]`, tell `argv[3]`)
/// out of interface `argv[1]` and prints the sender MAC of every reply seen in 0.5 s.
const ARP_WHO_HAS: &str = r#"
import socket, struct, sys, time
ifc, target, src = sys.argv[1], socket.inet_aton(sys.argv[2]), socket.inet_aton(sys.argv[3])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
s.bind((ifc, 0)); mac = s.getsockname()[4]
s.send(b'\xff' * 6 + mac + b'\x08\x06' + struct.pack('!HHBBH', 1, 0x0800, 6, 4, 1)
       + mac + src + b'\0' * 6 + target)
s.settimeout(0.1); end, seen = time.monotonic() + 0.5, set()
while time.monotonic() < end:
    try:
        f = s.recv(128)
    except socket.timeout:
        continue
    if len(f) >= 42 and f[12:14] == b'\x08\x06' and f[20:22] == b'\0\x02' and f[28:32] == target:
        seen.add(f[22:28].hex(':'))
print(' '.join(sorted(seen)))
"#;

/// Connections per generation.
const CONNECTIONS: usize = 50;

/// The appliances' flows: VRRP to the kernel (keepalived), the web service to the director,
/// the rest (ARP is not IP: it always reaches the TAP) permitted.
const FLOWS: &str = "flow vrrp permit\n    match proto 112 dst 224.0.0.18\n\
                     flow web director web\n    match proto tcp dst 192.168.0.2 dstport 8080\n\
                     flow rest permit\n    match\n";

/// The two appliances.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Appliance {
    A,
    B,
}

impl Appliance {
    fn name(self) -> &'static str {
        match self {
            Appliance::A => "a",
            Appliance::B => "b",
        }
    }

    /// The last byte of its own addresses on each side (eth0 192.168.0.1N, eth1 10.0.0.(N+1),
    /// sync0 10.50.0.N).
    fn n(self) -> u8 {
        match self {
            Appliance::A => 1,
            Appliance::B => 2,
        }
    }

    fn other(self) -> Appliance {
        match self {
            Appliance::A => Appliance::B,
            Appliance::B => Appliance::A,
        }
    }

    fn priority(self) -> u8 {
        match self {
            Appliance::A => 150,
            Appliance::B => 100,
        }
    }
}

/// Appliance `me`'s config: ports eth0 (clients) and eth1 (servers) on the veths nic0 and
/// nic1; the NAT director `web` with persistence per client address over the two servers;
/// `[sync]` to the other box over `sync0` when `sync`.
fn appliance_config(me: Appliance, sync: bool, key_file: &Path) -> String {
    let n = me.n();
    let sync = match sync {
        true => format!(
            "[sync]\nlisten = \"10.50.0.{n}:8848\"\npeers = [\"10.50.0.{}:8848\"]\nkey_file = \"{}\"\n",
            me.other().n(),
            key_file.display()
        ),
        false => String::new(),
    };
    format!(
        r#"flows = "{name}.flows"
{sync}
[dataplane]
workers = [{lcore}]
eal = ["--no-huge", "-m", "512", "--no-pci", "--no-shconf"]
[[port]]
name = "eth0"
device = "net_af_packet0,iface=nic0"
addresses = ["192.168.0.1{n}/24"]
[[port]]
name = "eth1"
device = "net_af_packet1,iface=nic1"
addresses = ["10.0.0.{gw}/24"]
[[director]]
name = "web"
scheduler = "wrr"
mode = "nat"
virtual = {{ address = "192.168.0.2", port = 8080 }}
persistence = {{ timeout = 300, netmask = "255.255.255.255" }}
check = {{ kind = "tcp", interval_ms = 500, timeout_ms = 300, rise = 1, fall = 2 }}
servers = [
  {{ name = "web1", address = "10.0.0.11", weight = 10 }},
  {{ name = "web2", address = "10.0.0.12", weight = 10 }},
]
"#,
        name = me.name(),
        // one box's worker per CPU, so that neither starves the other's VRRP
        lcore = n - 1,
        gw = n + 1,
    )
}

/// Appliance `me`'s keepalived.conf: one VRRPv3 instance on flowgate's TAP eth0, adverts every
/// 200 ms (the backup takes over 3 adverts + skew later, about 0.7 s), owning the VIP on eth0
/// and the servers' gateway on eth1; both boxes start as BACKUP, the higher priority preempts
/// (after 1 s, time for a restarted flowgate to settle and be resynchronised).
fn keepalived_config(me: Appliance) -> String {
    format!(
        r#"global_defs {{
    router_id flowgate-{name}
    vrrp_version 3
    vrrp_priority -20
    dynamic_interfaces
}}
vrrp_instance web {{
    state BACKUP
    interface eth0
    virtual_router_id 51
    priority {priority}
    advert_int 0.2
    preempt_delay 1
    track_interface {{
        eth1
    }}
    virtual_ipaddress {{
        192.168.0.2/24 dev eth0
        10.0.0.1/24 dev eth1
    }}
}}
"#,
        name = me.name(),
        priority = me.priority(),
    )
}

/// The lab's namespaces: the client, a switch (two bridges), the two appliances and the
/// servers (both addresses in one namespace).
struct Lab {
    dir: std::path::PathBuf,
    cli: Netns,
    _sw: Netns,
    a: Netns,
    b: Netns,
    srv: Netns,
}

impl Lab {
    fn new(dir: &Path) -> Lab {
        let cli = Netns::new("vcli");
        let sw = Netns::new("vsw");
        let a = Netns::new("va");
        let b = Netns::new("vb");
        let srv = Netns::new("vsrv");
        for br in ["br0", "br1"] {
            sw.bridge(br, &[]);
        }
        let plug = |ns: &Netns, ifc: &str, port: &str, br: &str| {
            veth(ns, ifc, &sw, port);
            sw.must(&["ip", "link", "set", port, "master", br]);
        };
        plug(&cli, "cli0", "cli", "br0");
        plug(&srv, "srv0", "srv", "br1");
        plug(&a, "nic0", "a0", "br0");
        plug(&a, "nic1", "a1", "br1");
        plug(&b, "nic0", "b0", "br0");
        plug(&b, "nic1", "b1", "br1");
        // the sync cable: the kernel's own, not flowgate's (a management link)
        veth(&a, "sync0", &b, "sync0");
        for (app, n) in [(&a, 1), (&b, 2)] {
            for nic in ["nic0", "nic1"] {
                nic_for_flowgate(app, nic);
            }
            sysctl(app, "net.ipv4.conf.all.rp_filter=0");
            app.must(&[
                "ip",
                "addr",
                "add",
                &format!("10.50.0.{n}/24"),
                "dev",
                "sync0",
            ]);
        }
        cli.must(&["ip", "addr", "add", "192.168.0.100/24", "dev", "cli0"]);
        srv.must(&["ip", "addr", "add", "10.0.0.11/24", "dev", "srv0"]);
        srv.must(&["ip", "addr", "add", "10.0.0.12/24", "dev", "srv0"]);
        srv.must(&["ip", "route", "add", "default", "via", "10.0.0.1"]);
        // veth leaves checksums partial otherwise
        for (ns, ifc) in [(&cli, "cli0"), (&srv, "srv0")] {
            ns.must(&["ethtool", "-K", ifc, "tx", "off"]);
        }
        Lab {
            dir: dir.to_path_buf(),
            cli,
            _sw: sw,
            a,
            b,
            srv,
        }
    }

    fn ns(&self, which: Appliance) -> &Netns {
        match which {
            Appliance::A => &self.a,
            Appliance::B => &self.b,
        }
    }

    /// The box whose TAP eth0 holds the VIP (both or neither: `None`).
    fn master(&self) -> Option<Appliance> {
        let holds = |ns: &Netns| {
            let out = ns.run(&["ip", "-br", "addr", "show", "dev", "eth0"]);
            String::from_utf8_lossy(&out.stdout).contains("192.168.0.2/")
        };
        match (holds(&self.a), holds(&self.b)) {
            (true, false) => Some(Appliance::A),
            (false, true) => Some(Appliance::B),
            _ => None,
        }
    }

    /// The MACs that answer an ARP request for `target` from `ns` (interface `ifc`, own
    /// address `src`).
    fn arp_answers(&self, ns: &Netns, ifc: &str, target: &str, src: &str) -> String {
        let script = self.dir.join("arp_who_has.py");
        std::fs::write(&script, ARP_WHO_HAS).expect("write the ARP script");
        let out = ns.must(&[
            "python3",
            script.to_str().expect("utf-8 path"),
            ifc,
            target,
            src,
        ]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Only `which`'s kernel answers ARP for the VIP (clients' side) and for the gateway
    /// (servers' side), with its TAPs' MACs: the other box's kernel, without the addresses,
    /// stays silent.
    fn assert_arp_owner(&self, which: Appliance) {
        let tap_mac = |ifc: &str| {
            let out = self
                .ns(which)
                .must(&["cat", &format!("/sys/class/net/{ifc}/address")]);
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        let vip = self.arp_answers(&self.cli, "cli0", "192.168.0.2", "192.168.0.100");
        assert_eq!(vip, tap_mac("eth0"), "ARP for the VIP, {which:?} master");
        let gw = self.arp_answers(&self.srv, "srv0", "10.0.0.1", "10.0.0.11");
        assert_eq!(gw, tap_mac("eth1"), "ARP for the gateway, {which:?} master");
    }

    /// The MAC the client's kernel has for the VIP, and appliance `which`'s eth0 MAC.
    fn vip_mac(&self, which: Appliance) -> (String, String) {
        let out = self
            .cli
            .run(&["ip", "neigh", "show", "192.168.0.2", "dev", "cli0"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let client = text
            .split_whitespace()
            .skip_while(|w| *w != "lladdr")
            .nth(1)
            .unwrap_or("none")
            .to_string();
        let out = self.ns(which).must(&["cat", "/sys/class/net/eth0/address"]);
        (
            client,
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        )
    }

    /// Wait until the client's kernel reaches the VIP at `which`'s MAC (its gratuitous ARPs
    /// crossed flowgate, or its kernel answered the client's ARP while the other stayed quiet).
    fn await_vip_at(&self, which: Appliance) {
        let ok = wait_until(Duration::from_secs(5), || {
            let (client, mac) = self.vip_mac(which);
            client == mac
        });
        assert!(
            ok,
            "the client's ARP entry for the VIP: {:?}",
            self.vip_mac(which)
        );
    }

    /// Wait (at most `timeout`) until `which` is the only master; panic with the keepalived
    /// logs otherwise.
    fn await_master(&self, which: Appliance, timeout: Duration, dir: &Path) {
        if !wait_until(timeout, || self.master() == Some(which)) {
            let logs: String = [Appliance::A, Appliance::B]
                .iter()
                .map(|b| {
                    let p = dir.join(format!("{}.keepalived.log", b.name()));
                    std::fs::read_to_string(p).unwrap_or_default()
                })
                .collect();
            panic!("{which:?} did not become master: {logs}");
        }
    }
}

/// Start `me`'s flowgate; ready when its last TAP (eth1) has its route.
fn start_flowgate(lab: &Lab, dir: &Path, me: Appliance, sync: bool) -> Flowgate {
    start_flowgate_with(lab, dir, me, sync, FLOWS)
}

fn start_flowgate_with(lab: &Lab, dir: &Path, me: Appliance, sync: bool, flows: &str) -> Flowgate {
    let config = appliance_config(me, sync, &dir.join("sync.key"));
    Flowgate::start(
        lab.ns(me),
        dir,
        me.name(),
        &config,
        flows,
        "10.0.0.0/24 dev eth1",
    )
}

/// Start `me`'s keepalived (VRRP only, in the foreground, its config, pid files and log in
/// `dir`).
fn start_keepalived(lab: &Lab, dir: &Path, me: Appliance) -> Proc {
    let name = me.name();
    let conf = dir.join(format!("{name}.keepalived.conf"));
    std::fs::write(&conf, keepalived_config(me)).expect("write keepalived.conf");
    let path = |what: &str| dir.join(format!("{name}.{what}")).display().to_string();
    let cmd = format!(
        "exec keepalived --dont-fork --log-console --vrrp --use-file {} --pid {} --vrrp_pid {} >{} 2>&1",
        conf.display(),
        path("keepalived.pid"),
        path("vrrp.pid"),
        path("keepalived.log"),
    );
    lab.ns(me).spawn(&["sh", "-c", &cmd])
}

/// The client process, driven through its stdin; killed on drop.
struct Client {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
}

impl Client {
    fn start(cli: &Netns, script: &Path) -> Client {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &cli.name, "python3"])
            .arg(script)
            .args(["192.168.0.2", "8080", &CONNECTIONS.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the client");
        let stdin = child.stdin.take();
        Client {
            child: Some(child),
            stdin,
        }
    }

    fn say(&mut self, cmd: &str) {
        let stdin = self.stdin.as_mut().expect("client stdin");
        writeln!(stdin, "{cmd}").expect("write to the client");
        stdin.flush().expect("flush the client's stdin");
    }

    /// `quit`, then the report.
    fn report(mut self) -> serde_json::Value {
        self.say("quit");
        drop(self.stdin.take());
        let child = self.child.take().expect("client running");
        let out = child.wait_with_output().expect("client output");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        serde_json::from_str(text.trim()).unwrap_or_else(|e| {
            panic!(
                "client report ({e}): {text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// What the client saw of one generation of connections at one event.
#[derive(Debug, Default)]
struct Seen {
    open: u64,
    survived: u64,
    stall_max: Option<f64>,
    stall_median: Option<f64>,
}

fn seen(report: &serde_json::Value, event: &str, generation: u32) -> Seen {
    let g = &report[event]["gens"][generation.to_string()];
    Seen {
        open: g["open"].as_u64().unwrap_or(0),
        survived: g["survived"].as_u64().unwrap_or(0),
        stall_max: g["stall_max"].as_f64(),
        stall_median: g["stall_median"].as_f64(),
    }
}

fn probe_gap(report: &serde_json::Value, event: &str) -> f64 {
    report[event]["probe_gap"]
        .as_f64()
        .unwrap_or_else(|| panic!("no probe gap for {event}: {report}"))
}

fn not_syn(stats: &serde_json::Value) -> u64 {
    stats["directors"]["web"]["drops"]["not_syn"]
        .as_u64()
        .unwrap_or(0)
}

/// What one run measured.
struct Run {
    report: serde_json::Value,
    /// B's final counters (it ran throughout), and A's second flowgate's.
    b_stats: serde_json::Value,
    a_stats: serde_json::Value,
}

/// The scenario: A master, generation 1 open; SIGKILL to A's flowgate ("kill"); generation 2
/// opened through B; A's flowgate restarted, keepalived preempts ("back", marked when the VIP
/// is on A again).
fn failover(sync: bool) -> Run {
    let tmp = common::TempDir::new("vrrp");
    let dir = tmp.0.as_path();
    let lab = Lab::new(dir);
    std::fs::write(dir.join("sync.key"), "flowgate lab_vrrp shared secret\n").expect("key");
    let server_py = dir.join("server.py");
    let client_py = dir.join("client.py");
    std::fs::write(&server_py, SERVER).expect("write server");
    std::fs::write(&client_py, CLIENT).expect("write client");
    let _servers = lab
        .srv
        .spawn(&["python3", server_py.to_str().expect("utf-8 path")]);

    let fg_a = start_flowgate(&lab, dir, Appliance::A, sync);
    let fg_b = start_flowgate(&lab, dir, Appliance::B, sync);
    let _ka_a = start_keepalived(&lab, dir, Appliance::A);
    let _ka_b = start_keepalived(&lab, dir, Appliance::B);
    lab.await_master(Appliance::A, Duration::from_secs(15), dir);
    lab.assert_arp_owner(Appliance::A);
    // the health checks mark the servers up
    std::thread::sleep(Duration::from_secs(1));

    let mut client = Client::start(&lab.cli, &client_py);
    client.say("open");
    std::thread::sleep(Duration::from_secs(3));
    lab.await_vip_at(Appliance::A);

    // A's flowgate crashes: B takes the addresses over
    client.say("mark kill");
    let _ = fg_a.kill();
    lab.await_master(Appliance::B, Duration::from_secs(5), dir);
    lab.assert_arp_owner(Appliance::B);
    std::thread::sleep(Duration::from_secs(5));

    lab.await_vip_at(Appliance::B);
    client.say("open");
    std::thread::sleep(Duration::from_secs(3));

    // A's flowgate back: keepalived on A leaves FAULT and preempts
    let fg_a = start_flowgate(&lab, dir, Appliance::A, sync);
    lab.await_master(Appliance::A, Duration::from_secs(15), dir);
    client.say("mark back");
    lab.assert_arp_owner(Appliance::A);
    std::thread::sleep(Duration::from_secs(5));
    lab.await_vip_at(Appliance::A);
    let report = client.report();

    let (b_stats, _) = fg_b.stop();
    let (a_stats, _) = fg_a.stop();
    eprintln!(
        "sync {}: client report {report}",
        if sync { "on" } else { "off" }
    );
    Run {
        report,
        b_stats,
        a_stats,
    }
}

/// Prints one event's figures (the test's output is the measurement).
fn print_event(run: &Run, sync: bool, event: &str) {
    let sync = if sync { "on" } else { "off" };
    eprintln!(
        "sync {sync}, {event}: new connections: longest gap {:.2} s",
        probe_gap(&run.report, event)
    );
    for generation in [1, 2] {
        let s = seen(&run.report, event, generation);
        if s.open > 0 {
            eprintln!(
                "sync {sync}, {event}: generation {generation}: {} of {} connections survived, stall max {:?} s, median {:?} s",
                s.survived, s.open, s.stall_max, s.stall_median
            );
        }
    }
}

fn skip_without_keepalived() -> bool {
    if Command::new("keepalived")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: needs keepalived (scripts/setup.sh installs it)");
        return true;
    }
    false
}

/// The flows decide whether VRRP works: with the adverts denied, neither box hears the
/// other and both become master, both holding the VIP (a split brain); the lab's flows,
/// permitting them, give one master (the other tests).
#[test]
fn vrrp_adverts_denied_by_the_flows_make_two_masters() {
    if skip_without_lab() || skip_without_keepalived() {
        return;
    }
    let tmp = common::TempDir::new("vrrp-deny");
    let dir = tmp.0.as_path();
    let lab = Lab::new(dir);
    let flows = FLOWS.replace("flow vrrp permit", "flow vrrp deny");
    let fg_a = start_flowgate_with(&lab, dir, Appliance::A, false, &flows);
    let fg_b = start_flowgate_with(&lab, dir, Appliance::B, false, &flows);
    let _ka_a = start_keepalived(&lab, dir, Appliance::A);
    let _ka_b = start_keepalived(&lab, dir, Appliance::B);
    let holds = |ns: &Netns| {
        let out = ns.run(&["ip", "-br", "addr", "show", "dev", "eth0"]);
        String::from_utf8_lossy(&out.stdout).contains("192.168.0.2/")
    };
    assert!(
        wait_until(Duration::from_secs(10), || holds(&lab.a) && holds(&lab.b)),
        "both boxes hold the VIP"
    );
    // and keep it: they never hear each other
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        holds(&lab.a) && holds(&lab.b),
        "both boxes still hold the VIP"
    );
    for (fg, name) in [(fg_a, "A"), (fg_b, "B")] {
        let (stats, _) = fg.stop();
        let denied = stats["flow_rules"]
            .as_array()
            .and_then(|rules| rules.iter().find(|r| r["flow"] == "vrrp"))
            .and_then(|r| r["packets"].as_u64())
            .unwrap_or(0);
        assert!(
            denied > 0,
            "{name}'s flow vrrp denied the adverts: {stats:#}"
        );
    }
}

/// Without sync the backup knows none of the connections: all 50 break when it takes over
/// (its director drops their packets as `not_syn`), and so do the 50 opened through it when
/// the master comes back; new connections work again within a few seconds each time.
#[test]
fn vrrp_failover_without_sync_breaks_the_connections_but_not_the_service() {
    if skip_without_lab() || skip_without_keepalived() {
        return;
    }
    let run = failover(false);
    for event in ["kill", "back"] {
        print_event(&run, false, event);
        let gap = probe_gap(&run.report, event);
        assert!(gap < 5.0, "{event}: the VIP answers again: {gap} s");
    }
    let killed = seen(&run.report, "kill", 1);
    assert_eq!(killed.open, CONNECTIONS as u64, "{}", run.report);
    assert_eq!(killed.survived, 0, "B has no state: {}", run.report);
    let back = seen(&run.report, "back", 2);
    assert_eq!(back.open, CONNECTIONS as u64, "{}", run.report);
    assert_eq!(back.survived, 0, "restarted A has no state: {}", run.report);
    assert!(not_syn(&run.b_stats) > 0, "{:#}", run.b_stats["directors"]);
    assert!(not_syn(&run.a_stats) > 0, "{:#}", run.a_stats["directors"]);
}

/// With `[sync]` the backup holds every connection (and persistence template) of the master:
/// all 50 survive the master's crash, and all 100 (the first 50 and 50 opened through B) the
/// way back, after the restarted master's full resync from B.
#[test]
fn vrrp_failover_with_sync_keeps_every_connection() {
    if skip_without_lab() || skip_without_keepalived() {
        return;
    }
    let run = failover(true);
    for event in ["kill", "back"] {
        print_event(&run, true, event);
    }
    let killed = seen(&run.report, "kill", 1);
    assert_eq!(killed.open, CONNECTIONS as u64, "{}", run.report);
    assert_eq!(killed.survived, killed.open, "{}", run.report);
    for generation in [1, 2] {
        let back = seen(&run.report, "back", generation);
        assert_eq!(back.open, CONNECTIONS as u64, "{}", run.report);
        assert_eq!(back.survived, back.open, "{}", run.report);
    }
    // B held A's connections as backup entries; the restarted A got B's whole table (a resync
    // for its new boot): at least the 100 connections
    let sync = |stats: &serde_json::Value, key: &str| stats["sync"][key].as_u64().unwrap_or(0);
    for stats in [&run.a_stats, &run.b_stats] {
        assert_eq!(sync(stats, "auth_failures"), 0, "{:#}", stats["sync"]);
    }
    assert!(
        sync(&run.b_stats, "entries_applied") >= CONNECTIONS as u64,
        "{:#}",
        run.b_stats["sync"]
    );
    assert!(
        sync(&run.b_stats, "resyncs") >= 1,
        "{:#}",
        run.b_stats["sync"]
    );
    assert!(
        sync(&run.a_stats, "entries_applied") >= 2 * CONNECTIONS as u64,
        "{:#}",
        run.a_stats["sync"]
    );
    // and the connections did go through A again after the way back (100 of them, a line
    // every 100 ms for 5 s, one packet each way at least)
    let packets_in = run.a_stats["directors"]["web"]["packets_in"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        packets_in >= 2 * CONNECTIONS as u64 * 30,
        "A's director: {:#}",
        run.a_stats["directors"]
    );
}
