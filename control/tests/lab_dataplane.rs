//! The dataplane through a real kernel stack: flowgate runs on af_packet vdevs over veth pairs
//! in a namespace of its own, with TAPs for its kernel; a client namespace sends real traffic.
//! Permit/deny by port, address, protocol and ICMP type; outflow deny on egress; malformed
//! frames never crash a worker and are counted. Needs root (namespaces); traffic is bounded in
//! count and time, and the lab is removed when the test ends.

mod common;

use std::time::Duration;

use common::{skip_without_lab, tag, veth, wait_until, Netns, Proc, TempDir};
use flowgate_dataplane::build::{frame, FrameSpec};

const FLOWS: &str = "
flow blocked deny
    match src 192.168.50.200
flow ping permit
    match proto icmp dst 192.168.50.1 icmptype echo-request
flow ssh permit
    match proto tcp dst 192.168.50.1 dstport 22
flow udp permit
    match proto udp dstport 5000:5010
flow rest deny
    match
outflow quiet-5005 deny
    match proto udp srcport 5005
";

struct Lab {
    app: Netns,
    cli: Netns,
    dir: TempDir,
    flowgate: Option<Proc>,
}

impl Lab {
    /// An appliance namespace running flowgate with port eth0 (192.168.50.1/24) on a veth
    /// whose peer is in a client namespace (192.168.50.100/24 and .200/32).
    fn start() -> Lab {
        let app = Netns::new("app");
        let cli = Netns::new("cli");
        let t = tag();
        let nic = format!("fgn{t}");
        let peer = format!("fgc{t}");
        veth(&app, &nic, &cli, &peer);
        app.must(&[
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{nic}.disable_ipv6=1"),
        ]);
        let nft = format!(
            "table netdev lab {{ chain nic_in {{ type filter hook ingress device \"{nic}\" priority 0; policy drop; }}; }}"
        );
        app.must(&["nft", &nft]);
        cli.must(&["ip", "addr", "add", "192.168.50.100/24", "dev", &peer]);
        cli.must(&["ip", "addr", "add", "192.168.50.200/32", "dev", &peer]);
        cli.must(&["ethtool", "-K", &peer, "tx", "off"]);
        // a TCP echo on 22 and 23, a UDP echo on 5001 and 5005, all on 192.168.50.1
        let dir = TempDir::new("test");
        std::fs::write(dir.0.join("lab.flows"), FLOWS).expect("write flows");
        let socket = dir.0.join("control.sock");
        let socket = socket.display();
        let config = format!(
            r#"flows = "lab.flows"
[control]
socket = "{socket}"
[dataplane]
workers = [1]
eal = ["--no-huge", "-m", "512", "--no-pci", "--no-shconf"]
[[port]]
name = "eth0"
device = "net_af_packet0,iface={nic}"
addresses = ["192.168.50.1/24"]
"#
        );
        std::fs::write(dir.0.join("lab.toml"), config).expect("write config");
        let cfg = dir.0.join("lab.toml");
        let stats = dir.0.join("stats.json");
        let flowgate = app.spawn(&[
            env!("CARGO_BIN_EXE_flowgate"),
            "run",
            "--config",
            cfg.to_str().expect("utf-8 path"),
            "--duration",
            "60",
            "--stats-json",
            stats.to_str().expect("utf-8 path"),
        ]);
        let up = wait_until(Duration::from_secs(20), || {
            let out = app.run(&["ip", "-br", "addr", "show", "dev", "eth0"]);
            String::from_utf8_lossy(&out.stdout).contains("192.168.50.1")
        });
        let mut lab = Lab {
            app,
            cli,
            dir,
            flowgate: Some(flowgate),
        };
        if !up {
            let (code, out, err) = lab.stop_flowgate();
            panic!("flowgate did not come up ({code:?}): {out}\n{err}");
        }
        lab.app_services();
        lab
    }

    fn app_services(&self) {
        let script = self.dir.0.join("services.py");
        std::fs::write(
            &script,
            r#"
import socket, sys, threading
def tcp(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("192.168.50.1", port)); s.listen(16)
    while True:
        c, _ = s.accept(); c.settimeout(3)
        try: c.sendall(c.recv(1024))
        except OSError: pass
        c.close()
def udp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("192.168.50.1", port))
    while True:
        d, a = s.recvfrom(1024)
        open("%s/udp-%d-received" % (sys.argv[1], port), "a").close()
        s.sendto(d, a)
for p in (22, 23): threading.Thread(target=tcp, args=(p,), daemon=True).start()
for p in (5001, 5005): threading.Thread(target=udp, args=(p,), daemon=True).start()
threading.Event().wait()
"#,
        )
        .expect("write services");
        let services = self.app.spawn(&[
            "python3",
            script.to_str().expect("utf-8 path"),
            self.dir.0.to_str().expect("utf-8 path"),
        ]);
        std::mem::forget(services); // killed with the namespace
        let listening = wait_until(Duration::from_secs(10), || {
            let out = self.app.run(&["ss", "-ltnuH"]);
            let s = String::from_utf8_lossy(&out.stdout).to_string();
            [
                "192.168.50.1:22 ",
                "192.168.50.1:23 ",
                "192.168.50.1:5001 ",
                "192.168.50.1:5005 ",
            ]
            .iter()
            .all(|p| s.contains(p))
        });
        assert!(listening, "lab services did not start");
    }

    /// Run a Python snippet in the client namespace; true when it exits 0.
    fn client(&self, code: &str, args: &[&str]) -> bool {
        let mut argv = vec!["python3", "-c", code];
        argv.extend_from_slice(args);
        self.cli.run(&argv).status.success()
    }

    fn tcp(&self, src: &str, port: u16) -> bool {
        self.client(
            "import socket,sys\ns=socket.socket(); s.settimeout(2)\ns.bind((sys.argv[1],0)); s.connect(('192.168.50.1', int(sys.argv[2])))\ns.sendall(b'hi\\n'); assert s.recv(8)==b'hi\\n'",
            &[src, &port.to_string()],
        )
    }

    fn udp(&self, port: u16) -> bool {
        self.client(
            "import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(2)\ns.sendto(b'hi',('192.168.50.1',int(sys.argv[1]))); assert s.recv(8)==b'hi'",
            &[&port.to_string()],
        )
    }

    fn ping(&self, src: &str) -> bool {
        self.cli
            .run(&[
                "ping",
                "-c",
                "2",
                "-i",
                "0.2",
                "-W",
                "2",
                "-I",
                src,
                "192.168.50.1",
            ])
            .status
            .success()
    }

    /// Send raw frames (hex, one per line) out of the client's veth end.
    fn send_raw(&self, frames: &[Vec<u8>]) {
        let path = self.dir.0.join("frames.hex");
        let hex: Vec<String> = frames
            .iter()
            .map(|f| f.iter().map(|b| format!("{b:02x}")).collect())
            .collect();
        std::fs::write(&path, hex.join("\n")).expect("write frames");
        let ifc = self.client_if();
        assert!(self.client(
            "import socket,sys\ns=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)\ns.bind((sys.argv[1],0))\nfor l in open(sys.argv[2]):\n    s.send(bytes.fromhex(l.strip()))",
            &[&ifc, path.to_str().expect("utf-8 path")],
        ));
    }

    fn client_if(&self) -> String {
        let out = self.cli.must(&["ip", "-br", "link"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split(['@', ' ']).next().unwrap_or("").to_string())
            .find(|n| n.starts_with("fgc"))
            .expect("client veth")
    }

    fn stop_flowgate(&mut self) -> (Option<i32>, String, String) {
        self.flowgate
            .take()
            .expect("flowgate running")
            .stop(Duration::from_secs(10))
    }

    fn stats(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.dir.0.join("stats.json")).expect("stats json");
        serde_json::from_str(&text).expect("stats parse")
    }
}

fn rule_hits(stats: &serde_json::Value, list: &str, flow: &str) -> u64 {
    stats[list]
        .as_array()
        .expect("rules array")
        .iter()
        .filter(|r| r["flow"] == flow)
        .map(|r| r["packets"].as_u64().unwrap_or(0))
        .sum()
}

#[test]
fn permit_and_deny_through_the_kernel_and_outflow_deny_on_egress() {
    if skip_without_lab() {
        return;
    }
    let mut lab = Lab::start();
    // ICMP type: echo-request permitted, the kernel's echo-reply leaves (default outflow)
    assert!(lab.ping("192.168.50.100"), "ping permitted");
    // by port: 22 permitted, 23 denied
    assert!(lab.tcp("192.168.50.100", 22), "tcp 22 permitted");
    assert!(!lab.tcp("192.168.50.100", 23), "tcp 23 denied");
    // by address: everything from .200 denied, even tcp 22 and ping
    assert!(!lab.tcp("192.168.50.200", 22), "tcp 22 from .200 denied");
    assert!(!lab.ping("192.168.50.200"), "ping from .200 denied");
    // by protocol and port range: udp 5001 permitted both ways
    assert!(lab.udp(5001), "udp 5001 answered");
    // outflow deny on egress: udp 5005 reaches the service, its answer is denied leaving
    assert!(!lab.udp(5005), "udp 5005 answer denied by the outflow");
    assert!(
        lab.dir.0.join("udp-5005-received").exists(),
        "udp 5005 request reached the appliance kernel"
    );

    let (code, out, err) = lab.stop_flowgate();
    assert_eq!(code, Some(0), "clean exit: {out}\n{err}");
    let s = lab.stats();
    assert!(rule_hits(&s, "flow_rules", "ping") >= 2, "{s:#}");
    assert!(rule_hits(&s, "flow_rules", "ssh") >= 1);
    assert!(
        rule_hits(&s, "flow_rules", "blocked") >= 3,
        "tcp syn retries + pings from .200"
    );
    assert!(rule_hits(&s, "flow_rules", "rest") >= 1, "tcp 23");
    assert!(rule_hits(&s, "flow_rules", "udp") >= 2);
    assert!(rule_hits(&s, "outflow_rules", "quiet-5005") >= 1);
    assert!(s["drops"]["outflow-deny"].as_u64().unwrap_or(0) >= 1);
    assert!(s["drops"]["flow-deny"].as_u64().unwrap_or(0) >= 4);
    // the TAP is gone with flowgate
    assert!(!lab
        .app
        .run(&["ip", "link", "show", "eth0"])
        .status
        .success());
}

#[test]
fn malformed_frames_never_crash_a_worker_and_are_counted() {
    if skip_without_lab() {
        return;
    }
    let mut lab = Lab::start();
    assert!(lab.ping("192.168.50.100"), "ping before");
    let ip = |s: &str| s.parse().expect("address");
    let good = frame(&FrameSpec::new(
        ip("192.168.50.100"),
        ip("192.168.50.1"),
        6,
        4000,
        22,
    ));
    let mut frames = Vec::new();
    // truncated IPv4 headers (every length from the Ethernet header to 33 bytes)
    for n in 14..34 {
        frames.push(good[..n].to_vec());
    }
    // IHL below 5, IHL past the end, total length beyond the frame
    for (at, v) in [(14usize, 0x44u8), (14, 0x4f)] {
        let mut f = good.clone();
        f[at] = v;
        frames.push(f);
    }
    let mut f = good.clone();
    f[16..18].copy_from_slice(&4000u16.to_be_bytes());
    frames.push(f);
    // a TCP header cut short by the IP total length
    let mut f = good.clone();
    f[16..18].copy_from_slice(&28u16.to_be_bytes());
    frames.push(f);
    // a non-first fragment of TCP (no ports: denied by `rest`, never by a port rule)
    let mut spec = FrameSpec::new(ip("192.168.50.100"), ip("192.168.50.1"), 6, 4000, 22);
    spec.non_first_fragment = true;
    frames.push(frame(&spec));
    // IPv6 with a payload length beyond the frame
    let mut f = frame(&FrameSpec::new(
        ip("2001:db8::1"),
        ip("2001:db8::2"),
        17,
        1,
        2,
    ));
    f[18..20].copy_from_slice(&3000u16.to_be_bytes());
    frames.push(f);
    // garbage with IP ethertypes
    for i in 0..50u8 {
        let mut f = vec![i.wrapping_mul(37); 60];
        f[12..14].copy_from_slice(if i % 2 == 0 {
            &[0x08, 0x00]
        } else {
            &[0x86, 0xdd]
        });
        frames.push(f);
    }
    lab.send_raw(&frames);
    std::thread::sleep(Duration::from_millis(300));
    // still forwarding
    assert!(lab.ping("192.168.50.100"), "ping after malformed frames");
    assert!(lab.tcp("192.168.50.100", 22), "tcp after malformed frames");
    let (code, out, err) = lab.stop_flowgate();
    assert_eq!(code, Some(0), "clean exit: {out}\n{err}");
    let s = lab.stats();
    let d = &s["drops"];
    let get = |k: &str| d[k].as_u64().unwrap_or(0);
    assert!(get("bad-ipv4-header") >= 20, "{d:#}");
    assert!(get("truncated-l4") >= 1, "{d:#}");
    assert!(get("bad-ipv6-header") >= 1, "{d:#}");
    assert!(get("truncated-ethernet") + get("bad-ipv4-header") + get("bad-ipv6-header") >= 40);
    // the fragment was classified (no ports) and denied by `rest`, not permitted by `ssh`
    assert!(rule_hits(&s, "flow_rules", "rest") >= 1);
}
