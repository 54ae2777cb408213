//! Active/active with BGP and ECMP (`docs/ha.md`): a router namespace running BIRD 2 learns
//! the VIP 192.0.2.80 from three flowgate appliances, each with BIRD beside it over a
//! management veth, and installs one multipath route (L4 hash). Each flowgate announces the
//! VIP (`announce = "eth0"`: the VIP on its eth0 TAP, exported by BIRD's `protocol direct`)
//! while its `mh` director has a server that can take connections.
//!
//! Checked: three next hops; two when one appliance's servers are all disabled (`flowctl
//! director disable`) or all fail their health checks, when one flowgate is killed (SIGKILL)
//! or stopped (SIGTERM); three again when it comes back; each within a bound, the times
//! printed. The same 1,000 client tuples (UDP) sent through each appliance in turn reach
//! the same server on each. A few hundred long-lived TCP connections through the router's
//! ECMP keep their server and keep working when an appliance dies and comes back (the moved
//! ones arrive mid-stream at another box: `sloppy`), in gateway and tunnel modes.
//!
//! Topology (one router, three appliances, three servers):
//!
//! ```text
//!  client (10.9.0.2, AnyIP 10.10.0.0/16) --- rt (10.9.0.1)
//!  rt br0 192.168.1.1/24 --- app1..3 eth0 (192.168.1.11..13, flowgate)   data, ECMP next hops
//!  rt mgK 172.16.K.1/30  --- appK mgmt 172.16.K.2/30 (kernel only)        BGP (BIRD), hold 3 s
//!  rt br1 10.0.0.254/24  --- app1..3 eth1 (10.0.0.1..3), servers 10.0.0.21..23 (VIP on lo)
//! ```
//!
//! Servers answer the clients directly through the router (their default route). This
//! kernel has no `ipip` module: in tunnel mode each server unwraps IP-in-IP in user space
//! (a raw socket for protocol 4 writes the inner packet into a TUN device).
//!
//! Needs root, `bird` and `birdc`; traffic is bounded (1,000 datagrams a round, a few hundred
//! connections with a line each a round); everything is removed when the test ends.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    nic_for_flowgate, skip_without_lab, sysctl, tag, veth, wait_until, Netns, Proc, TempDir,
};

const VIP: &str = "192.0.2.80";
/// Appliances, and servers.
const BOXES: usize = 3;
const SERVERS: [&str; 3] = ["10.0.0.21", "10.0.0.22", "10.0.0.23"];
/// Long-lived connections through the router's ECMP.
const CONNECTIONS: usize = 240;
/// A withdraw or an announce must reach the router's kernel within this.
const BOUND: Duration = Duration::from_secs(5);
/// The first BGP sessions, once every flowgate runs.
const START: Duration = Duration::from_secs(30);

/// A server: TCP 80 greets with its name and echoes lines prefixed with it; UDP 7000 (bound
/// to the VIP, so answers come from it) answers `name:datagram`. With `tunnel`, it also
/// unwraps IP-in-IP: protocol 4 from a raw socket, the inner packet into the TUN `dtun`.
const SERVER: &str = r#"
import fcntl, os, socket, struct, sys, threading
name = sys.argv[1].encode()
if len(sys.argv) > 2 and sys.argv[2] == 'tunnel':
    fd = os.open('/dev/net/tun', os.O_RDWR)
    fcntl.ioctl(fd, 0x400454ca, struct.pack('16sH', b'dtun', 0x0001 | 0x1000))
    os.system('ip link set dtun up; sysctl -qw net.ipv4.conf.dtun.rp_filter=0')
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, 4)
    def unwrap():
        while True:
            p = raw.recv(65535)
            os.write(fd, p[(p[0] & 15) * 4:])
    threading.Thread(target=unwrap, daemon=True).start()
def serve(c):
    try:
        c.settimeout(300); c.sendall(name + b'\n'); f = c.makefile('rb')
        for line in f:
            c.sendall(name + b':' + line)
    except OSError:
        pass
    finally:
        c.close()
def udp():
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(('192.0.2.80', 7000))
    while True:
        data, peer = u.recvfrom(2048)
        u.sendto(name + b':' + data, peer)
threading.Thread(target=udp, daemon=True).start()
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', 80)); s.listen(1024)
open(sys.argv[3] if len(sys.argv) > 3 else '/dev/null', 'w').write('up')
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// `n` fixed UDP client tuples (address 10.10.100.1.., port 20000 + i) to VIP:7000, one
/// after the other: per tuple the name of the server that answered, or `ERR`.
const UDP_CLIENT: &str = r#"
import socket, sys
n = int(sys.argv[1])
for i in range(n):
    src = ('10.10.%d.%d' % (100 + i // 250, i % 250 + 1), 20000 + i)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(src); s.settimeout(0.3)
    name = 'ERR'
    for attempt in range(5):
        s.sendto(b'%d\n' % i, ('192.0.2.80', 7000))
        try:
            name = s.recvfrom(2048)[0].split(b':')[0].decode()
            break
        except socket.timeout:
            pass
    s.close()
    print(name)
    sys.stdout.flush()
"#;

/// `n` long-lived connections to VIP:80 from addresses 10.10.K.J (the server's greeting
/// names it, written to `DIR/names`); then per round R, when the file `DIR/goR` appears,
/// one line on every connection and the echoes read (10 s for all), each reported in
/// `DIR/resR` as `ok NAME`, `moved NAME OTHER` or `err NAME WHY`. `DIR/stop` ends it.
const TCP_CLIENT: &str = r#"
import os, socket, sys, time
n, d = int(sys.argv[1]), sys.argv[2]
conns = []
for i in range(n):
    src = ('10.10.%d.%d' % (i // 200, i % 200 + 1), 0)
    for attempt in range(3):
        try:
            s = socket.create_connection(('192.0.2.80', 80), timeout=3, source_address=src)
            f = s.makefile('rb')
            conns.append((s, f, f.readline().strip().decode()))
            break
        except OSError:
            time.sleep(0.2)
    else:
        conns.append((None, None, 'ERR'))
open(os.path.join(d, 'names.tmp'), 'w').write('\n'.join(c[2] for c in conns) + '\n')
os.rename(os.path.join(d, 'names.tmp'), os.path.join(d, 'names'))
r = 1
while True:
    go = os.path.join(d, 'go%d' % r)
    while not os.path.exists(go) and not os.path.exists(os.path.join(d, 'stop')):
        time.sleep(0.05)
    if not os.path.exists(go):
        break
    out = []
    for i, (s, f, name) in enumerate(conns):
        try:
            s.sendall(b'r%d-%d\n' % (r, i))
        except Exception as e:
            pass
    deadline = time.time() + 10
    for i, (s, f, name) in enumerate(conns):
        try:
            s.settimeout(max(0.05, deadline - time.time()))
            line = f.readline().strip().decode()
            who, _, echo = line.partition(':')
            if echo != 'r%d-%d' % (r, i):
                out.append('err %s %r' % (name, line))
            elif who == name:
                out.append('ok %s' % name)
            else:
                out.append('moved %s %s' % (name, who))
        except Exception as e:
            out.append('err %s %s' % (name, type(e).__name__))
    open(os.path.join(d, 'res%d.tmp' % r), 'w').write('\n'.join(out) + '\n')
    os.rename(os.path.join(d, 'res%d.tmp' % r), os.path.join(d, 'res%d' % r))
    r += 1
"#;

/// An ARP request for `argv[2]` broadcast on interface `argv[1]` (with the router's
/// address `argv[3]` as sender); prints the sender MAC of every reply heard within 0.7 s.
const ARP_PROBE: &str = r#"
import socket, struct, sys, time
ifc, target, me = sys.argv[1], socket.inet_aton(sys.argv[2]), socket.inet_aton(sys.argv[3])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
s.bind((ifc, 0))
mac = s.getsockname()[4]
req = b'\xff' * 6 + mac + b'\x08\x06' + struct.pack('!HHBBH', 1, 0x0800, 6, 4, 1) \
    + mac + me + b'\0' * 6 + target
s.send(req)
s.settimeout(0.1)
end = time.time() + 0.7
while time.time() < end:
    try:
        f = s.recv(2048)
    except socket.timeout:
        continue
    if f[12:14] == b'\x08\x06' and f[20:22] == b'\0\x02' and f[28:32] == target:
        print(f[22:28].hex(':'))
"#;

/// BIRD on the router: BGP from the three appliances (eBGP, AS 65000 <- 65001), every
/// learned route into the kernel, equal ones merged into one multipath route.
fn router_bird(boxes: usize) -> String {
    let mut s = String::from(
        "router id 172.16.0.1;\n\
         protocol device { scan time 10; }\n\
         protocol kernel {\n  ipv4 { import none; export all; };\n  merge paths on;\n}\n\
         template bgp appliance {\n  local as 65000;\n  hold time 3; keepalive time 1; connect retry time 1;\n  \
         ipv4 { import all; export none; };\n}\n",
    );
    for k in 1..=boxes {
        s += &format!(
            "protocol bgp app{k} from appliance {{ local 172.16.{k}.1; neighbor 172.16.{k}.2 as 65001; }}\n"
        );
    }
    s
}

/// BIRD on appliance `k`: the VIP as flowgate puts it on the eth0 TAP (`protocol direct`),
/// announced to the router with eth0's address as next hop (the session runs over the
/// management veth, the traffic through flowgate).
fn appliance_bird(k: usize) -> String {
    format!(
        "router id 172.16.{k}.2;\n\
         protocol device {{ scan time 10; }}\n\
         protocol direct vips {{ ipv4; interface \"eth0\"; }}\n\
         protocol bgp upstream {{\n  local 172.16.{k}.2 as 65001;\n  neighbor 172.16.{k}.1 as 65000;\n  \
         hold time 3; keepalive time 1; connect retry time 1;\n  \
         ipv4 {{ import none; export where net ~ [ {VIP}/32 ]; next hop address 192.168.1.1{k}; }};\n}}\n"
    )
}

/// Appliance `k`'s flowgate config: eth0 towards the router, eth1 towards the servers, the
/// `mh` director `web` announcing the VIP on eth0; servers listed in another order on each.
fn flowgate_config(
    k: usize,
    nic0: &str,
    nic1: &str,
    mode: &str,
    extra: &str,
    socket: &Path,
) -> String {
    let mut order: Vec<usize> = (0..SERVERS.len()).collect();
    order.rotate_left(k % SERVERS.len());
    if k.is_multiple_of(2) {
        order.reverse();
    }
    let servers: Vec<String> = order
        .iter()
        .map(|&i| {
            format!(
                "  {{ name = \"s{}\", address = \"{}\" }},",
                i + 1,
                SERVERS[i]
            )
        })
        .collect();
    format!(
        r#"flows = "fg{k}.flows"
[control]
socket = "{socket}"
[dataplane]
workers = [1]
eal = ["--no-huge", "-m", "512", "--no-pci", "--no-shconf"]
[[port]]
name = "eth0"
device = "net_af_packet0,iface={nic0}"
addresses = ["192.168.1.1{k}/24"]
[[port]]
name = "eth1"
device = "net_af_packet1,iface={nic1}"
addresses = ["10.0.0.{k}/24"]
[[director]]
name = "web"
scheduler = "mh"
mode = "{mode}"
virtual = {{ address = "{VIP}" }}
announce = "eth0"
hash_seed = 20261204
{extra}
check = {{ kind = "tcp", port = 80, interval_ms = 200, timeout_ms = 150, rise = 1, fall = 2 }}
servers = [
{}
]
"#,
        servers.join("\n"),
        socket = socket.display(),
    )
}

const FLOWS: &str = "flow web director web\n\
                     \x20   match proto tcp dst 192.0.2.80 dstport 80\n\
                     \x20   match proto udp dst 192.0.2.80 dstport 7000\n\
                     flow rest permit\n    match\n";

/// One appliance: its namespace, NICs, BIRD and flowgate.
struct Appliance {
    k: usize,
    ns: Netns,
    nic0: String,
    nic1: String,
    socket: PathBuf,
    flowgate: Option<Proc>,
    _bird: Proc,
}

/// The lab: router, client, servers, appliances (dropped in reverse: processes, then the
/// namespaces).
struct Lab {
    dir: TempDir,
    mode: &'static str,
    /// More lines for the director (`sloppy = false`).
    extra: &'static str,
    apps: Vec<Appliance>,
    _servers: Vec<(Netns, Proc)>,
    _router_bird: Proc,
    rt: Netns,
    cl: Netns,
}

fn bird(ns: &Netns, dir: &Path, name: &str, config: &str) -> Proc {
    let conf = dir.join(format!("{name}.conf"));
    std::fs::write(&conf, config).expect("write bird config");
    let ctl = dir.join(format!("{name}.ctl"));
    let p = ns.spawn(&[
        "bird",
        "-f",
        "-c",
        conf.to_str().expect("utf-8 path"),
        "-s",
        ctl.to_str().expect("utf-8 path"),
        "-P",
        dir.join(format!("{name}.pid"))
            .to_str()
            .expect("utf-8 path"),
    ]);
    let mut p = p;
    let up = wait_until(Duration::from_secs(10), || ctl.exists());
    if !up || !p.is_running() {
        let (code, out, err) = p.stop(Duration::from_secs(1));
        panic!("bird {name} did not start ({code:?}): {out}{err}");
    }
    p
}

impl Lab {
    fn new(mode: &'static str, extra: &'static str) -> Lab {
        let dir = TempDir::new("ecmp");
        let rt = Netns::new("rt");
        let cl = Netns::new("cl");
        let t = tag();
        for kv in [
            "net.ipv4.ip_forward=1",
            "net.ipv4.fib_multipath_hash_policy=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
        ] {
            sysctl(&rt, kv);
        }
        for br in ["br0", "br1"] {
            rt.bridge(br, &[]);
        }
        rt.must(&["ip", "addr", "add", "192.168.1.1/24", "dev", "br0"]);
        rt.must(&["ip", "addr", "add", "10.0.0.254/24", "dev", "br1"]);
        // the client, with the whole of 10.10.0.0/16 as its own (AnyIP)
        let (rc, cc) = (format!("er{t}"), format!("ec{t}"));
        veth(&rt, &rc, &cl, &cc);
        rt.must(&["ip", "addr", "add", "10.9.0.1/24", "dev", &rc]);
        cl.must(&["ip", "addr", "add", "10.9.0.2/24", "dev", &cc]);
        cl.must(&["ip", "route", "add", "default", "via", "10.9.0.1"]);
        cl.must(&["ip", "route", "add", "local", "10.10.0.0/16", "dev", "lo"]);
        cl.must(&["ethtool", "-K", &cc, "tx", "off"]);
        rt.must(&["ip", "route", "add", "10.10.0.0/16", "via", "10.9.0.2"]);

        // servers on br1, the VIP on lo, answering through the router
        let server_py = dir.0.join("server.py");
        std::fs::write(&server_py, SERVER).expect("write server");
        let mut servers = Vec::new();
        for (i, addr) in SERVERS.iter().enumerate() {
            let ns = Netns::new(&format!("s{}", i + 1));
            let (a, b) = (format!("es{i}{t}"), format!("bs{i}{t}"));
            veth(&ns, &a, &rt, &b);
            rt.must(&["ip", "link", "set", &b, "master", "br1"]);
            ns.must(&["ip", "addr", "add", &format!("{addr}/24"), "dev", &a]);
            ns.must(&["ip", "addr", "add", &format!("{VIP}/32"), "dev", "lo"]);
            ns.must(&["ip", "route", "add", "default", "via", "10.0.0.254"]);
            ns.must(&["ethtool", "-K", &a, "tx", "off"]);
            for kv in [
                "net.ipv4.conf.all.rp_filter=0".to_string(),
                "net.ipv4.conf.default.rp_filter=0".to_string(),
                format!("net.ipv4.conf.{a}.rp_filter=0"),
                // the VIP is the service's, not an address to answer ARP for
                "net.ipv4.conf.all.arp_ignore=1".to_string(),
                "net.ipv4.conf.all.arp_announce=2".to_string(),
            ] {
                sysctl(&ns, &kv);
            }
            let mark = dir.0.join(format!("s{}.up", i + 1));
            let p = ns.spawn(&[
                "python3",
                server_py.to_str().expect("utf-8 path"),
                &format!("s{}", i + 1),
                mode,
                mark.to_str().expect("utf-8 path"),
            ]);
            assert!(
                wait_until(Duration::from_secs(10), || mark.exists()),
                "server s{} listening",
                i + 1
            );
            servers.push((ns, p));
        }

        let router_bird = bird(&rt, &dir.0, "rt", &router_bird(BOXES));
        let mut apps = Vec::new();
        for k in 1..=BOXES {
            let ns = Netns::new(&format!("a{k}"));
            let (nic0, nic1) = (format!("fa{k}0{t}"), format!("fa{k}1{t}"));
            let (b0, b1) = (format!("fb{k}0{t}"), format!("fb{k}1{t}"));
            veth(&ns, &nic0, &rt, &b0);
            veth(&ns, &nic1, &rt, &b1);
            rt.must(&["ip", "link", "set", &b0, "master", "br0"]);
            rt.must(&["ip", "link", "set", &b1, "master", "br1"]);
            nic_for_flowgate(&ns, &nic0);
            nic_for_flowgate(&ns, &nic1);
            for kv in [
                "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.conf.default.rp_filter=0",
            ] {
                sysctl(&ns, kv);
            }
            // the management link: BGP, kernel only
            let (m, rm) = (format!("fm{k}{t}"), format!("rm{k}{t}"));
            veth(&ns, &m, &rt, &rm);
            ns.must(&["ip", "addr", "add", &format!("172.16.{k}.2/30"), "dev", &m]);
            rt.must(&["ip", "addr", "add", &format!("172.16.{k}.1/30"), "dev", &rm]);
            let bird = bird(&ns, &dir.0, &format!("a{k}"), &appliance_bird(k));
            let socket = dir.0.join(format!("fg{k}.sock"));
            apps.push(Appliance {
                k,
                ns,
                nic0,
                nic1,
                socket,
                flowgate: None,
                _bird: bird,
            });
        }
        let mut lab = Lab {
            dir,
            mode,
            extra,
            apps,
            _servers: servers,
            _router_bird: router_bird,
            rt,
            cl,
        };
        for i in 0..BOXES {
            lab.start(i);
        }
        lab
    }

    /// Start appliance `i`'s flowgate; wait for its TAPs (the announcement follows).
    fn start(&mut self, i: usize) {
        let dir = self.dir.0.clone();
        let (mode, extra) = (self.mode, self.extra);
        let a = &mut self.apps[i];
        let k = a.k;
        std::fs::write(dir.join(format!("fg{k}.flows")), FLOWS).expect("write flows");
        let cfg = dir.join(format!("fg{k}.toml"));
        std::fs::write(
            &cfg,
            flowgate_config(k, &a.nic0, &a.nic1, mode, extra, &a.socket),
        )
        .expect("write config");
        let p = a.ns.spawn(&[
            env!("CARGO_BIN_EXE_flowgate"),
            "run",
            "--config",
            cfg.to_str().expect("utf-8 path"),
            "--duration",
            "400",
        ]);
        a.flowgate = Some(p);
        let ns = &a.ns;
        let up = wait_until(Duration::from_secs(30), || {
            let out = ns.run(&["ip", "route", "show"]);
            String::from_utf8_lossy(&out.stdout).contains("10.0.0.0/24 dev eth1")
        });
        if !up {
            let (code, out, err) = a
                .flowgate
                .take()
                .expect("started")
                .stop(Duration::from_secs(5));
            panic!("flowgate {k} did not come up ({code:?}): {out}\n{err}");
        }
    }

    /// SIGKILL appliance `i`'s flowgate.
    fn kill(&mut self, i: usize) {
        let p = self.apps[i].flowgate.take().expect("running");
        let _ = Command::new("kill")
            .args(["-KILL", &p.id().to_string()])
            .status();
        drop(p);
    }

    /// SIGTERM appliance `i`'s flowgate and check its clean exit.
    fn stop(&mut self, i: usize) -> String {
        let p = self.apps[i].flowgate.take().expect("running");
        let (code, out, err) = p.stop(Duration::from_secs(15));
        assert_eq!(code, Some(0), "clean exit: {out}\n{err}");
        err
    }

    fn flowctl(&self, i: usize, args: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_flowctl"))
            .arg("--socket")
            .arg(&self.apps[i].socket)
            .args(args)
            .output()
            .expect("run flowctl");
        assert!(
            out.status.success(),
            "flowctl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The next hops of the router's kernel route to the VIP.
    fn next_hops(&self) -> BTreeSet<String> {
        let out = self.rt.run(&["ip", "route", "show", &format!("{VIP}/32")]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let words: Vec<&str> = text.split_whitespace().collect();
        words
            .windows(2)
            .filter(|w| w[0] == "via")
            .map(|w| w[1].to_string())
            .collect()
    }

    /// The next hops BIRD itself holds for the VIP (`birdc show route`), as a cross-check.
    fn bird_next_hops(&self) -> BTreeSet<String> {
        let ctl = self.dir.0.join("rt.ctl");
        let out = self.rt.run(&[
            "birdc",
            "-s",
            ctl.to_str().expect("utf-8 path"),
            "show",
            "route",
            "for",
            VIP,
        ]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let words: Vec<&str> = text.split_whitespace().collect();
        words
            .windows(2)
            .filter(|w| w[0] == "via")
            .map(|w| w[1].to_string())
            .collect()
    }

    /// Wait (at most [`BOUND`]) until the router's next hops are those of appliances `on`
    /// (1-based numbers); the time it took.
    fn await_hops(&self, on: &[usize], what: &str, since: Instant) -> Duration {
        self.await_hops_within(on, what, since, BOUND)
    }

    /// [`Lab::await_hops`] with another bound (the first BGP sessions take longer).
    fn await_hops_within(
        &self,
        on: &[usize],
        what: &str,
        since: Instant,
        bound: Duration,
    ) -> Duration {
        let want: BTreeSet<String> = on.iter().map(|k| format!("192.168.1.1{k}")).collect();
        let ok = wait_until_fine(bound, || self.next_hops() == want);
        let took = since.elapsed();
        assert!(
            ok,
            "{what}: next hops {:?}, expected {want:?} within {bound:?}\n{}",
            self.next_hops(),
            self.diagnose()
        );
        eprintln!("{what}: next hops {want:?} after {} ms", took.as_millis());
        took
    }

    /// Who answers ARP for the VIP on the router's data segment: the MACs.
    fn arp_for_vip(&self) -> BTreeSet<String> {
        let script = self.dir.0.join("arp_probe.py");
        std::fs::write(&script, ARP_PROBE).expect("write arp probe");
        let out = self.rt.must(&[
            "python3",
            script.to_str().expect("utf-8 path"),
            "br0",
            VIP,
            "192.168.1.1",
        ]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The MAC of appliance `i`'s port eth0 (its TAP carries the port's).
    fn port_mac(&self, i: usize) -> String {
        let a = &self.apps[i];
        let out =
            a.ns.must(&["cat", &format!("/sys/class/net/{}/address", a.nic0)]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// What BIRD and the appliances' kernels say, for a failure's message.
    fn diagnose(&self) -> String {
        let mut s = String::new();
        let ctl = self.dir.0.join("rt.ctl");
        let out = self.rt.run(&[
            "birdc",
            "-s",
            ctl.to_str().expect("utf-8 path"),
            "show",
            "protocols",
        ]);
        s += &String::from_utf8_lossy(&out.stdout);
        for a in &self.apps {
            let out = a.ns.run(&["ip", "-o", "addr", "show"]);
            s += &format!(
                "appliance {}:\n{}{}",
                a.k,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let ctl = self.dir.0.join(format!("a{}.ctl", a.k));
            let out = a.ns.run(&[
                "birdc",
                "-s",
                ctl.to_str().expect("utf-8 path"),
                "show",
                "route",
            ]);
            s += &String::from_utf8_lossy(&out.stdout);
            s += &String::from_utf8_lossy(&out.stderr);
        }
        s
    }

    /// Route the client's traffic to the VIP through appliance `k` only (`None`: by ECMP
    /// again), with a policy rule on the router.
    fn pin_to(&self, k: Option<usize>) {
        let _ = self
            .rt
            .run(&["ip", "rule", "del", "pref", "100", "lookup", "100"]);
        if let Some(k) = k {
            self.rt.must(&[
                "ip",
                "route",
                "replace",
                &format!("{VIP}/32"),
                "via",
                &format!("192.168.1.1{k}"),
                "table",
                "100",
            ]);
            self.rt.must(&[
                "ip",
                "rule",
                "add",
                "pref",
                "100",
                "from",
                "10.10.0.0/16",
                "lookup",
                "100",
            ]);
        }
    }

    /// The UDP client's server per tuple.
    fn udp_round(&self, n: usize) -> Vec<String> {
        let script = self.dir.0.join("udp_client.py");
        std::fs::write(&script, UDP_CLIENT).expect("write udp client");
        let out = self.cl.run(&[
            "python3",
            script.to_str().expect("utf-8 path"),
            &n.to_string(),
        ]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Connections the running appliances picked up mid-stream since their sum was
    /// `before` (the workers copy their counters out every 100 ms: wait up to 2 s for it).
    fn picked_up_since(&self, before: u64) -> u64 {
        // the copy may have caught the round half-way: let the next one come
        std::thread::sleep(Duration::from_millis(300));
        let mut now = 0;
        wait_until(Duration::from_secs(2), || {
            now = self.counter("sloppy_connections");
            now > before
        });
        now.saturating_sub(before)
    }

    /// A director counter summed over the running appliances (`flowctl --json stats`).
    fn counter(&self, name: &str) -> u64 {
        let mut sum = 0;
        for (i, a) in self.apps.iter().enumerate() {
            if a.flowgate.is_none() {
                continue;
            }
            let v: serde_json::Value =
                serde_json::from_str(&self.flowctl(i, &["--json", "stats"])).expect("json");
            // counters: [[name, value], ...]
            sum += v["directors"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|d| d["counters"].as_array().cloned().unwrap_or_default())
                .filter(|pair| pair[0] == name)
                .filter_map(|pair| pair[1].as_u64())
                .sum::<u64>();
        }
        sum
    }
}

/// [`wait_until`] at a 10 ms step (the withdraw times are measured with it).
fn wait_until_fine(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}

/// The long-lived connections' client, in its own directory.
struct Conns {
    dir: PathBuf,
    proc: Option<Proc>,
    names: Vec<String>,
    round: usize,
}

impl Conns {
    fn open(lab: &Lab, n: usize) -> Conns {
        let dir = lab.dir.0.join("conns");
        std::fs::create_dir_all(&dir).expect("conns dir");
        let script = lab.dir.0.join("tcp_client.py");
        std::fs::write(&script, TCP_CLIENT).expect("write tcp client");
        let proc = lab.cl.spawn(&[
            "python3",
            script.to_str().expect("utf-8 path"),
            &n.to_string(),
            dir.to_str().expect("utf-8 path"),
        ]);
        let names_file = dir.join("names");
        assert!(
            wait_until(Duration::from_secs(60), || names_file.exists()),
            "{n} connections opened"
        );
        let names: Vec<String> = std::fs::read_to_string(&names_file)
            .expect("names")
            .lines()
            .map(str::to_string)
            .collect();
        assert_eq!(names.len(), n);
        assert!(
            names.iter().all(|s| s.starts_with('s')),
            "every connection greeted by a server: {names:?}"
        );
        Conns {
            dir,
            proc: Some(proc),
            names,
            round: 0,
        }
    }

    /// One line on every connection: (kept with their server, moved to another, broken).
    fn round(&mut self) -> (usize, usize, usize) {
        self.round += 1;
        let r = self.round;
        std::fs::write(self.dir.join(format!("go{r}")), "").expect("go");
        let res = self.dir.join(format!("res{r}"));
        assert!(
            wait_until(Duration::from_secs(30), || res.exists()),
            "round {r} done"
        );
        let text = std::fs::read_to_string(&res).expect("results");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), self.names.len());
        let count = |p: &str| lines.iter().filter(|l| l.starts_with(p)).count();
        let broken: Vec<&&str> = lines
            .iter()
            .filter(|l| l.starts_with("err"))
            .take(5)
            .collect();
        if !broken.is_empty() {
            eprintln!("round {r}: broken connections, e.g. {broken:?}");
        }
        (count("ok "), count("moved "), count("err "))
    }
}

impl Drop for Conns {
    fn drop(&mut self) {
        let _ = std::fs::write(self.dir.join("stop"), "");
        if let Some(p) = self.proc.take() {
            let _ = p.stop(Duration::from_secs(2));
        }
    }
}

/// Every connection kept its server: the share, printed.
fn assert_all_kept(what: &str, (ok, moved, broken): (usize, usize, usize), n: usize) {
    eprintln!(
        "{what}: {ok} of {n} connections kept their server ({:.1}%), {moved} moved, {broken} broken",
        100.0 * ok as f64 / n as f64
    );
    assert_eq!((ok, moved, broken), (n, 0, 0), "{what}");
}

fn skip_without_bird() -> bool {
    if Command::new("birdc").arg("--version").output().is_err()
        || Command::new("bird").arg("--version").output().is_err()
    {
        eprintln!("skipped: needs bird and birdc (BIRD 2, scripts/setup.sh)");
        return true;
    }
    false
}

#[test]
fn ecmp_announces_while_servers_are_up_and_mh_keeps_connections_in_gateway_mode() {
    if skip_without_lab() || skip_without_bird() {
        return;
    }
    let mut lab = Lab::new("gateway", "");
    let t = Instant::now();
    lab.await_hops_within(&[1, 2, 3], "three appliances up", t, START);
    assert_eq!(
        lab.bird_next_hops().len(),
        3,
        "birdc: one route, three next hops"
    );
    // eth0's TAP holds the VIP as a host address; each appliance's kernel answers ARP for
    // it with its port's MAC (the TAP's), as for the port's own addresses
    let addrs = lab.apps[0]
        .ns
        .run(&["ip", "-o", "addr", "show", "dev", "eth0"]);
    assert!(
        String::from_utf8_lossy(&addrs.stdout).contains(&format!("{VIP}/32")),
        "the VIP on eth0's TAP"
    );
    let macs: Vec<String> = (0..BOXES).map(|i| lab.port_mac(i)).collect();
    assert_eq!(
        lab.arp_for_vip(),
        macs.iter().cloned().collect::<BTreeSet<_>>(),
        "ARP for the VIP: each announcing appliance, with its port's MAC"
    );

    // 1. the same 1,000 tuples through each appliance: the same server for each
    let n = 1000;
    let mut rounds = Vec::new();
    for k in 1..=BOXES {
        lab.pin_to(Some(k));
        let r = lab.udp_round(n);
        assert_eq!(r.len(), n);
        let errs = r.iter().filter(|s| *s == "ERR").count();
        assert_eq!(errs, 0, "appliance {k}: every tuple answered");
        rounds.push(r);
    }
    lab.pin_to(None);
    for k in 1..BOXES {
        let differ = rounds[0]
            .iter()
            .zip(&rounds[k])
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(
            differ,
            0,
            "appliance {} chose other servers than appliance 1",
            k + 1
        );
    }
    let spread: BTreeSet<&String> = rounds[0].iter().collect();
    assert_eq!(
        spread.len(),
        SERVERS.len(),
        "the tuples spread over every server"
    );
    eprintln!("{n} UDP tuples: the same server on all {BOXES} appliances");

    // 2. long-lived connections through the router's ECMP
    let mut conns = Conns::open(&lab, CONNECTIONS);
    assert_all_kept("before any failure", conns.round(), CONNECTIONS);

    // 3. every server of appliance 1 disabled: withdrawn; one enabled again: announced
    let t = Instant::now();
    for s in ["s1", "s2", "s3"] {
        lab.flowctl(0, &["director", "disable", "web", s]);
    }
    lab.await_hops(&[2, 3], "appliance 1: all servers disabled", t);
    assert_eq!(
        lab.arp_for_vip(),
        macs[1..].iter().cloned().collect::<BTreeSet<_>>(),
        "appliance 1 no longer answers ARP for the VIP"
    );
    let t = Instant::now();
    lab.flowctl(0, &["director", "enable", "web", "s2"]);
    lab.await_hops(&[1, 2, 3], "appliance 1: a server enabled", t);
    for s in ["s1", "s3"] {
        lab.flowctl(0, &["director", "enable", "web", s]);
    }
    assert_all_kept(
        "after appliance 1 was withdrawn and came back",
        conns.round(),
        CONNECTIONS,
    );

    // 4. appliance 2's health checks all fail (its own kernel's checks dropped): withdrawn
    let nft =
        "table ip hc { chain out { type filter hook output priority 0; tcp dport 80 drop; }; }";
    let t = Instant::now();
    lab.apps[1].ns.must(&["nft", nft]);
    lab.await_hops(&[1, 3], "appliance 2: health checks fail", t);
    let t = Instant::now();
    lab.apps[1].ns.must(&["nft", "delete", "table", "ip", "hc"]);
    lab.await_hops(&[1, 2, 3], "appliance 2: health checks pass", t);

    // 5. appliance 3's flowgate killed: its TAP and the VIP go, BIRD withdraws
    let t = Instant::now();
    lab.kill(2);
    lab.await_hops(&[1, 2], "appliance 3: flowgate killed (SIGKILL)", t);
    // the survivors' count (no traffic until the next round)
    let before = lab.counter("sloppy_connections");
    assert_all_kept("appliance 3 killed", conns.round(), CONNECTIONS);
    let picked = lab.picked_up_since(before);
    eprintln!("appliances 1 and 2 picked up {picked} connections mid-stream");
    assert!(picked > 0, "some connections moved to another box");

    // 6. it comes back: announced again, the connections it gets back keep working
    let t = Instant::now();
    lab.start(2);
    lab.await_hops(&[1, 2, 3], "appliance 3: flowgate restarted", t);
    assert_all_kept("appliance 3 back", conns.round(), CONNECTIONS);

    // 7. appliance 1 stopped cleanly: it withdraws first, then stops its ports
    let t = Instant::now();
    let err = lab.stop(0);
    assert!(
        err.contains(&format!("withdrew {VIP} from eth0 (stopping)")),
        "a clean stop withdraws: {err}"
    );
    lab.await_hops(&[2, 3], "appliance 1: flowgate stopped (SIGTERM)", t);
    assert_all_kept("appliance 1 stopped", conns.round(), CONNECTIONS);
}

/// The lab of three appliances in `mode` (director keys `extra`) with every ECMP hop up and
/// [`CONNECTIONS`] connections open, each answered by its server once (`label` names the
/// case in messages).
fn up_with_connections(mode: &'static str, extra: &'static str, label: &str) -> (Lab, Conns) {
    let lab = Lab::new(mode, extra);
    let t = Instant::now();
    lab.await_hops_within(
        &[1, 2, 3],
        &format!("{label}: three appliances up"),
        t,
        START,
    );
    let mut conns = Conns::open(&lab, CONNECTIONS);
    assert_all_kept(
        &format!("{label}: before any failure"),
        conns.round(),
        CONNECTIONS,
    );
    (lab, conns)
}

/// Tunnel mode (IP-in-IP to the servers): the connections ECMP moves when an appliance is
/// killed keep their server.
#[test]
fn ecmp_mh_keeps_connections_in_tunnel_mode_when_an_appliance_dies() {
    if skip_without_lab() || skip_without_bird() {
        return;
    }
    let (mut lab, mut conns) = up_with_connections("tunnel", "", "tunnel");
    let t = Instant::now();
    lab.kill(1);
    lab.await_hops(&[1, 3], "tunnel: appliance 2 killed (SIGKILL)", t);
    // the survivors' count (no traffic until the next round)
    let before = lab.counter("sloppy_connections");
    assert_all_kept("tunnel: appliance 2 killed", conns.round(), CONNECTIONS);
    let picked = lab.picked_up_since(before);
    eprintln!("tunnel: appliances 1 and 3 picked up {picked} connections mid-stream");
    assert!(picked > 0, "some connections moved to another box");
}

/// The control: without `sloppy`, the connections ECMP moves to another box when one dies
/// arrive there without SYN and are dropped (`not_syn`): they break.
#[test]
fn ecmp_without_sloppy_the_moved_connections_break() {
    if skip_without_lab() || skip_without_bird() {
        return;
    }
    let (mut lab, mut conns) = up_with_connections("gateway", "sloppy = false", "not sloppy");
    let t = Instant::now();
    lab.kill(0);
    lab.await_hops(&[2, 3], "not sloppy: appliance 1 killed (SIGKILL)", t);
    let (ok, moved, broken) = conns.round();
    eprintln!(
        "not sloppy: appliance 1 killed: {ok} of {CONNECTIONS} connections kept ({:.1}%), {broken} broken",
        100.0 * ok as f64 / CONNECTIONS as f64
    );
    assert_eq!(moved, 0, "a connection never reaches another server");
    assert!(broken > 0, "the moved connections break without sloppy");
    assert!(lab.counter("drop_not_syn") > 0, "dropped as not_syn");
}
