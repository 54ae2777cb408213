//! A network-namespace lab for integration tests: namespaces, veth pairs and processes that
//! are removed when the test ends, passed or failed.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A short tag unique to this process and call, for namespace and interface names
/// (interface names are limited to 15 characters).
pub fn tag() -> String {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("{:x}{}", std::process::id() % 0xfffff, n)
}

/// Whether this process may create namespaces (root); lab tests need it.
pub fn can_run_lab() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
        && Command::new("ip").arg("-V").output().is_ok()
}

pub fn run(cmd: &[&str]) -> Output {
    let out = Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .expect("spawn command");
    out
}

pub fn must(cmd: &[&str]) -> Output {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{:?} failed: {}{}",
        cmd,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A network namespace, deleted on drop (with every process still running in it).
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(role: &str) -> Netns {
        let name = format!("fgt-{role}-{}", tag());
        must(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.must(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    fn argv<'a>(&'a self, cmd: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec!["ip", "netns", "exec", self.name.as_str()];
        v.extend_from_slice(cmd);
        v
    }

    pub fn run(&self, cmd: &[&str]) -> Output {
        run(&self.argv(cmd))
    }

    pub fn must(&self, cmd: &[&str]) -> Output {
        must(&self.argv(cmd))
    }

    /// A bridge `name` in the namespace with `ports` as its members (more can join later with
    /// `ip link set PORT master NAME`), up.
    pub fn bridge(&self, name: &str, ports: &[&str]) {
        self.must(&["ip", "link", "add", name, "type", "bridge"]);
        for p in ports {
            self.must(&["ip", "link", "set", p, "master", name]);
        }
        self.must(&["ip", "link", "set", name, "up"]);
    }

    /// Start a long-running process in the namespace; killed when the returned guard drops.
    pub fn spawn(&self, cmd: &[&str]) -> Proc {
        let argv = self.argv(cmd);
        let child = Command::new(argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn in namespace");
        Proc { child: Some(child) }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // kill what still runs inside, then delete the namespace (its veth ends go with it)
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Create a veth pair with one end in each namespace.
pub fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) {
    must(&[
        "ip", "link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns",
        &b.name,
    ]);
    a.must(&["ip", "link", "set", a_if, "up"]);
    b.must(&["ip", "link", "set", b_if, "up"]);
}

/// A child process; SIGTERM then SIGKILL on drop.
pub struct Proc {
    child: Option<Child>,
}

impl Proc {
    /// Stop with SIGTERM and collect (status, stdout, stderr); SIGKILL after `grace`.
    pub fn stop(mut self, grace: Duration) -> (Option<i32>, String, String) {
        let mut child = self.child.take().expect("child present until stopped");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + grace;
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().expect("collect child output");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn id(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Kill with SIGKILL at once (a crash: no clean-up) and collect (status, stdout, stderr).
    pub fn kill(mut self) -> (Option<i32>, String, String) {
        let mut child = self.child.take().expect("child present until stopped");
        let _ = child.kill();
        let out = child.wait_with_output().expect("collect child output");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Poll `f` every 50 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// A temporary directory removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(what: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("flowgate-{what}-{}", tag()));
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// True (after saying why) when lab tests cannot run here: they need root and iproute2.
pub fn skip_without_lab() -> bool {
    if !can_run_lab() {
        eprintln!("skipped: needs root and iproute2 (network namespaces, DPDK vdevs)");
        return true;
    }
    false
}

/// True (after saying why) when this machine has fewer than `n` CPUs (multi-worker labs).
pub fn skip_without_cpus(n: usize) -> bool {
    let cpus = std::thread::available_parallelism().map_or(1, |c| c.get());
    if cpus < n {
        eprintln!("skipped: needs {n} CPUs");
        return true;
    }
    false
}

/// Make `nic` (in the appliance namespace) a NIC only flowgate reads: no IPv6, and an
/// ingress drop so the appliance kernel never answers on it directly.
pub fn nic_for_flowgate(app: &Netns, nic: &str) {
    app.must(&[
        "sysctl",
        "-qw",
        &format!("net.ipv6.conf.{nic}.disable_ipv6=1"),
    ]);
    let nft = format!(
        "table netdev nic_{nic} {{ chain nic_in {{ type filter hook ingress device \"{nic}\" priority 0; policy drop; }}; }}"
    );
    app.must(&["nft", &nft]);
}

pub fn sysctl(ns: &Netns, kv: &str) {
    ns.must(&["sysctl", "-qw", kv]);
}

/// A running flowgate with its stats file.
pub struct Flowgate {
    proc: Option<Proc>,
    stats: PathBuf,
}

impl Flowgate {
    /// Start flowgate in `app` with `config` (its `flows = "NAME.flows"`) and `flows`; wait
    /// until the kernel sees the TAPs' addresses and `ready` in its routing table.
    pub fn start(
        app: &Netns,
        dir: &Path,
        name: &str,
        config: &str,
        flows: &str,
        ready: &str,
    ) -> Self {
        Self::start_with_control(app, dir, name, config, flows, ready, "")
    }

    /// [`Flowgate::start`] with more lines for the `[control]` table (`metrics = ...`).
    pub fn start_with_control(
        app: &Netns,
        dir: &Path,
        name: &str,
        config: &str,
        flows: &str,
        ready: &str,
        control: &str,
    ) -> Self {
        std::fs::write(dir.join(format!("{name}.flows")), flows).expect("write flows");
        let cfg = dir.join(format!("{name}.toml"));
        // a control socket of this test's own (tests run side by side)
        let socket = dir.join(format!("{name}.sock"));
        let config = config.replacen(
            "\n[dataplane]",
            &format!(
                "\n[control]\nsocket = \"{}\"\n{control}\n[dataplane]",
                socket.display()
            ),
            1,
        );
        std::fs::write(&cfg, config).expect("write config");
        let stats = dir.join(format!("{name}.json"));
        let proc = app.spawn(&[
            env!("CARGO_BIN_EXE_flowgate"),
            "run",
            "--config",
            cfg.to_str().expect("utf-8 path"),
            "--duration",
            "60",
            "--stats-json",
            stats.to_str().expect("utf-8 path"),
        ]);
        let mut fg = Flowgate {
            proc: Some(proc),
            stats,
        };
        let up = wait_until(Duration::from_secs(20), || {
            let out = app.run(&["ip", "route", "show"]);
            String::from_utf8_lossy(&out.stdout).contains(ready)
        });
        if !up {
            let (code, out, err) = fg.stop_raw();
            panic!("flowgate did not come up ({code:?}): {out}\n{err}");
        }
        fg
    }

    pub fn stop_raw(&mut self) -> (Option<i32>, String, String) {
        self.proc
            .take()
            .expect("flowgate running")
            .stop(Duration::from_secs(10))
    }

    /// Crash it: SIGKILL, no clean-up of its own (the kernel still removes its TAPs, whose
    /// file descriptors close with the process); returns its stderr.
    pub fn kill(mut self) -> String {
        let (_, _, err) = self.proc.take().expect("flowgate running").kill();
        err
    }

    /// Stop (SIGTERM), check the clean exit, return the final counters and the stderr.
    pub fn stop(mut self) -> (serde_json::Value, String) {
        let (code, out, err) = self.stop_raw();
        assert_eq!(code, Some(0), "clean exit: {out}\n{err}");
        let text = std::fs::read_to_string(&self.stats).expect("stats json");
        (serde_json::from_str(&text).expect("stats parse"), err)
    }
}

/// The director and sync labs' config up to the ports: eth0 (client side, 192.168.0.1 and the VIP
/// 192.168.0.2) and eth1 (servers' side, 10.0.0.1) on the lab's veths, with one worker or two
/// (lcores 0 and 1, the main lcore sharing 0, one RX queue each per port).
pub fn lab_config(flows: &str, nic0: &str, nic1: &str, workers: usize) -> String {
    let (lcores, eal_extra, qpairs, rx_queues) = match workers {
        1 => ("[1]", "", "", ""),
        _ => ("[0, 1]", r#", "-l", "0""#, ",qpairs=2", "rx_queues = 2"),
    };
    format!(
        r#"flows = "{flows}"
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
"#
    )
}
