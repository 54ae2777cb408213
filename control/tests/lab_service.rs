//! flowgate as a systemd service, without systemd (it cannot run as PID 1 in this sandbox):
//! a fake `$NOTIFY_SOCKET` receives READY=1 only once the ports, the TAP and the workers are
//! up; SIGHUP reloads the flows file through the control path (a wrong file refused whole,
//! RELOADING=1 then READY=1 either way); SIGTERM says STOPPING=1. The log: every line
//! `TIMESTAMP LEVEL COMPONENT: message`, no DPDK/TAP noise at the default level, swaps,
//! refused pushes and health-check changes logged once each.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{skip_without_lab, Netns, TempDir};
use serde_json::Value;

fn config(dir: &Path) -> String {
    format!(
        r#"flows = "flows"
[control]
socket = "{dir}/control.sock"
[dataplane]
workers = [1]
eal = ["--no-huge", "-m", "512", "--no-pci", "--no-shconf"]
[[port]]
name = "eth0"
device = "net_null0"
addresses = ["192.168.0.1/24"]
kernel = true
[[director]]
name = "web"
scheduler = "rr"
mode = "nat"
virtual = {{ address = "192.168.0.2" }}
check = {{ kind = "tcp", port = 80, interval_ms = 200, timeout_ms = 100, rise = 1, fall = 1 }}
servers = [ {{ name = "w1", address = "10.9.0.1" }} ]
"#,
        dir = dir.display()
    )
}

const GOOD: &str = "flow web director web\n    match proto tcp dst 192.168.0.2 dstport 80\n";
const GOOD2: &str = "flow web director web\n    match proto tcp dst 192.168.0.2 dstport 80\n\
                     flow rest deny\n    match\n";
const WRONG: &str = "flow web director nosuch\n    match proto tcp\n";

/// The next notification, or panic after `within`.
fn next(rx: &UnixDatagram, within: Duration, what: &str) -> String {
    rx.set_read_timeout(Some(within)).expect("timeout");
    let mut buf = [0u8; 4096];
    let n = rx
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no notification ({what}): {e}"));
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn status(socket: &Path) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_flowctl"))
        .arg("--socket")
        .arg(socket)
        .args(["--json", "status"])
        .output()
        .expect("flowctl");
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// Whether a log line has the one format: `2026-12-04T17:45:00.123Z LEVEL COMPONENT: ...`.
fn well_formed(line: &str) -> bool {
    let mut parts = line.splitn(3, ' ');
    let (Some(ts), Some(level), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let ts_ok = ts.len() == 24
        && ts.ends_with('Z')
        && ts.as_bytes()[10] == b'T'
        && ts.as_bytes()[19] == b'.';
    let level_ok = ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(&level);
    let rest = rest.trim_start();
    let comp_ok = rest
        .split_once(": ")
        .is_some_and(|(c, _)| !c.is_empty() && !c.contains(' '));
    ts_ok && level_ok && comp_ok
}

#[test]
fn notify_reload_and_log() {
    if skip_without_lab() {
        return;
    }
    let tmp = TempDir::new("svc");
    let dir = tmp.0.clone();
    std::fs::write(dir.join("flows"), GOOD).expect("flows");
    std::fs::write(dir.join("flowgate.toml"), config(&dir)).expect("config");
    let notify_path = dir.join("notify");
    let notify = UnixDatagram::bind(&notify_path).expect("notify socket");
    let ns = Netns::new("svc");
    let started = Instant::now();
    let child = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg("env")
        .arg(format!("NOTIFY_SOCKET={}", notify_path.display()))
        .arg(env!("CARGO_BIN_EXE_flowgate"))
        .args(["run", "--config"])
        .arg(dir.join("flowgate.toml"))
        .args(["--duration", "60"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn flowgate");
    let pid = child.id();

    // READY=1 comes once the TAP carries its address, every worker thread runs and the
    // control socket answers
    let ready = next(&notify, Duration::from_secs(30), "READY=1");
    assert!(
        ready.starts_with("READY=1\nSTATUS=running: 1 ports"),
        "{ready:?}"
    );
    let tap = ns.run(&["ip", "-br", "addr", "show", "dev", "eth0"]);
    let tap = String::from_utf8_lossy(&tap.stdout);
    assert!(tap.contains("192.168.0.1/24"), "TAP at READY: {tap}");
    // `ip netns exec` execs `env`, which execs flowgate: same pid
    let threads: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("threads")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .collect();
    assert!(
        threads.iter().any(|c| c.trim() == "fg-worker-0"),
        "worker thread at READY: {threads:?}"
    );
    assert_eq!(status(&dir.join("control.sock"))["generation"], 1);

    // a wrong file: refused whole, the set stays; systemd sees the reload end
    std::fs::write(dir.join("flows"), WRONG).expect("flows");
    let kill = |sig: &str| {
        assert!(Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .expect("kill")
            .success());
    };
    kill("-HUP");
    assert!(next(&notify, Duration::from_secs(10), "RELOADING=1").starts_with("RELOADING=1"));
    let done = next(&notify, Duration::from_secs(10), "READY=1 after reload");
    assert!(
        done.starts_with("READY=1\nSTATUS=reload refused"),
        "{done:?}"
    );
    assert_eq!(status(&dir.join("control.sock"))["generation"], 1);
    // the daemon kept the file as it is on disk (a reload never writes a refused file)
    assert_eq!(
        std::fs::read_to_string(dir.join("flows")).expect("flows"),
        WRONG
    );

    // a good file: published as the next generation
    std::fs::write(dir.join("flows"), GOOD2).expect("flows");
    kill("-HUP");
    assert!(next(&notify, Duration::from_secs(10), "RELOADING=1").starts_with("RELOADING=1"));
    let done = next(&notify, Duration::from_secs(10), "READY=1 after reload");
    assert!(done.starts_with("READY=1\nSTATUS=reloaded"), "{done:?}");
    let st = status(&dir.join("control.sock"));
    assert_eq!(st["generation"], 2, "{st}");
    assert_eq!(st["flows"], 2, "{st}");

    // let the health check see w1 (no route to 10.9.0.1) down
    std::thread::sleep(Duration::from_millis(1500));
    kill("-TERM");
    let stopping = next(&notify, Duration::from_secs(10), "STOPPING=1");
    assert!(stopping.starts_with("STOPPING=1"), "{stopping:?}");
    let out = child.wait_with_output().expect("flowgate exits");
    assert_eq!(out.status.code(), Some(0), "clean exit");
    assert!(started.elapsed() < Duration::from_secs(60));
    let log = String::from_utf8_lossy(&out.stderr);

    for l in log.lines() {
        assert!(well_formed(l), "not a log line: {l:?}\n{log}");
    }
    for noise in [
        "tap_nl_dump_ext_ack",
        "multiq",
        "TELEMETRY",
        "EAL: Detected",
    ] {
        assert!(
            !log.contains(noise),
            "`{noise}` at the default level:\n{log}"
        );
    }
    let count = |pat: &str| log.lines().filter(|l| l.contains(pat)).count();
    assert_eq!(count(" INFO  flowgate: running: 1 ports"), 1, "{log}");
    assert_eq!(count("SIGHUP: re-reading"), 2, "{log}");
    assert_eq!(
        count("WARN  control: apply_path "),
        1,
        "one refusal:\n{log}"
    );
    assert_eq!(count("refused: flows file refused"), 1, "{log}");
    assert_eq!(count("control: apply_path"), 2, "{log}");
    assert_eq!(count("generation 2 published"), 1, "one swap line:\n{log}");
    assert_eq!(count("health: director web/w1: down"), 1, "{log}");
    assert_eq!(count(" INFO  flowgate: stopped"), 1, "{log}");
}

#[test]
fn debug_level_shows_dpdk() {
    if skip_without_lab() {
        return;
    }
    let tmp = TempDir::new("svcdbg");
    let dir = tmp.0.clone();
    std::fs::write(dir.join("flows"), GOOD).expect("flows");
    std::fs::write(dir.join("flowgate.toml"), config(&dir)).expect("config");
    let ns = Netns::new("svcdbg");
    let out = ns.run(&[
        env!("CARGO_BIN_EXE_flowgate"),
        "--log-level",
        "debug",
        "run",
        "--config",
        dir.join("flowgate.toml").to_str().expect("utf-8"),
        "--duration",
        "1",
    ]);
    assert!(out.status.success(), "{out:?}");
    let log = String::from_utf8_lossy(&out.stderr);
    for l in log.lines() {
        assert!(well_formed(l), "not a log line: {l:?}\n{log}");
    }
    assert!(log.contains(" INFO  dpdk: EAL: Detected"), "{log}");
}
