//! `flowctl --json` as an interface: the key set of every command's output against the golden
//! file of its `json_version` (a change is noticed), every key documented in docs/control.md,
//! the exit statuses (0 ok, 1 refused, 2 usage, 3 unreachable), and `flowctl watch` rates.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowgate_control::protocol::{DirectorStatus, ServerStatus};
use flowgate_control::DirectorControl;
use serde_json::Value;
use support::{Daemon, SEED};

/// The golden key set of `json_version` 1.
const GOLDEN: &str = "tests/golden/flowctl-json-v1.keys";

/// A director state the control side can list and change (no dataplane needed).
#[derive(Debug)]
struct FakeDirectors(Arc<Mutex<Vec<DirectorStatus>>>);

impl DirectorControl for FakeDirectors {
    fn list(&self) -> Vec<DirectorStatus> {
        self.0.lock().expect("lock").clone()
    }
    fn set_enabled(&mut self, director: &str, server: &str, enabled: bool) -> Result<(), String> {
        let mut ds = self.0.lock().expect("lock");
        let s = find(&mut ds, director, server)?;
        s.enabled = enabled;
        Ok(())
    }
    fn set_weight(&mut self, director: &str, server: &str, weight: u32) -> Result<(), String> {
        let mut ds = self.0.lock().expect("lock");
        find(&mut ds, director, server)?.weight = weight;
        Ok(())
    }
}

fn find<'a>(
    ds: &'a mut [DirectorStatus],
    director: &str,
    server: &str,
) -> Result<&'a mut ServerStatus, String> {
    ds.iter_mut()
        .find(|d| d.name == director)
        .and_then(|d| d.servers.iter_mut().find(|s| s.name == server))
        .ok_or_else(|| format!("no server {director}/{server}"))
}

fn directors() -> Arc<Mutex<Vec<DirectorStatus>>> {
    Arc::new(Mutex::new(vec![DirectorStatus {
        name: "maildirect".into(),
        scheduler: "wrr".into(),
        servers: vec![ServerStatus {
            name: "mail1".into(),
            address: "10.0.0.11".into(),
            weight: 10,
            enabled: true,
            up: true,
            connections: 0,
            active: 0,
            inactive: 0,
            packets: 0,
            bytes: 0,
        }],
        counters: vec![("drop_conntrack_full".into(), 0)],
    }]))
}

fn start(dir: &Path) -> (Daemon, Arc<Mutex<Vec<DirectorStatus>>>) {
    let ds = directors();
    let fake = FakeDirectors(Arc::clone(&ds));
    let d = Daemon::start_with(dir, Some(SEED), move |o| o.director = Some(Box::new(fake)));
    (d, ds)
}

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn flowctl(socket: &Path, args: &[&str]) -> Out {
    let out = Command::new(env!("CARGO_BIN_EXE_flowctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("run flowctl");
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Every key path of a JSON value: objects by key, arrays as `[]` (elements merged), pairs
/// (`[name, n]` arrays of two) as `[][]`.
fn key_paths(prefix: &str, v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                out.insert(p.clone());
                key_paths(&p, x, out);
            }
        }
        Value::Array(a) => {
            for x in a {
                key_paths(&format!("{prefix}[]"), x, out);
            }
        }
        _ => {}
    }
}

fn json_of(what: &str, o: &Out) -> Value {
    let line = o.stdout.lines().next().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| {
        panic!(
            "{what}: not one JSON object ({e}): {}{}",
            o.stdout, o.stderr
        )
    })
}

#[test]
fn json_keys_match_the_golden_file_and_the_docs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (d, _) = start(dir.path());
    let s = d.socket.clone();
    let new = dir.path().join("new.flows");
    std::fs::write(
        &new,
        "flow web permit\n    match proto tcp dstport 80\nflow dns permit\n    match proto udp dstport 54\n",
    )
    .expect("write");
    let bad = dir.path().join("bad.flows");
    std::fs::write(&bad, "flow a permit match iface eth9\n").expect("write");
    let (newp, badp) = (new.to_str().expect("utf-8"), bad.to_str().expect("utf-8"));
    let pkt = [
        "iface=eth0",
        "proto=tcp",
        "src=192.168.0.5",
        "dst=192.168.0.1",
        "sport=4000",
        "dport=22",
    ];
    let mut trace = vec!["--json", "trace"];
    trace.extend(pkt);
    let runs: Vec<(&str, Vec<&str>, i32)> = vec![
        ("status", vec!["--json", "status"], 0),
        ("check", vec!["--json", "check", newp], 0),
        (
            "check --offline",
            vec!["--json", "check", "--offline", newp],
            0,
        ),
        ("diff", vec!["--json", "diff", newp], 0),
        ("apply", vec!["--json", "apply", newp], 0),
        ("rollback", vec!["--json", "rollback"], 0),
        ("show flows", vec!["--json", "show", "flows"], 0),
        ("stats", vec!["--json", "stats"], 0),
        ("trace", trace, 0),
        ("director list", vec!["--json", "director", "list"], 0),
        (
            "director weight",
            vec!["--json", "director", "weight", "maildirect", "mail1", "5"],
            0,
        ),
        ("refused", vec!["--json", "apply", badp], 1),
        (
            "watch",
            vec!["--json", "watch", "--count", "1", "--interval", "0.1"],
            0,
        ),
    ];
    let mut seen = BTreeSet::new();
    for (name, args, code) in &runs {
        let o = flowctl(&s, args);
        assert_eq!(o.code, Some(*code), "{name}: {}{}", o.stdout, o.stderr);
        let v = json_of(name, &o);
        assert_eq!(v["json_version"], 1, "{name}: {v}");
        let mut keys = BTreeSet::new();
        key_paths("", &v, &mut keys);
        for k in keys {
            seen.insert(format!("{name}\t{k}"));
        }
    }
    let got: String = seen.iter().map(|l| format!("{l}\n")).collect();
    let golden_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(GOLDEN);
    if std::env::var_os("FLOWGATE_BLESS").is_some() {
        std::fs::write(&golden_path, &got).expect("bless");
    }
    let golden = std::fs::read_to_string(&golden_path).expect("golden file");
    if golden != got {
        let g: BTreeSet<&str> = golden.lines().collect();
        let n: BTreeSet<&str> = got.lines().collect();
        panic!(
            "`flowctl --json` changed.\nremoved: {:?}\nadded: {:?}\nA removed or renamed key \
             needs a new json_version (flowctl's JSON_VERSION); document every change in \
             docs/control.md, then FLOWGATE_BLESS=1 rewrites {GOLDEN}.",
            g.difference(&n).collect::<Vec<_>>(),
            n.difference(&g).collect::<Vec<_>>()
        );
    }
    // every key is documented (by its last name, in backquotes)
    let docs = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/control.md"),
    )
    .expect("docs/control.md");
    let mut missing = BTreeSet::new();
    for l in got.lines() {
        let key = l
            .rsplit(['\t', '.'])
            .next()
            .unwrap_or(l)
            .trim_end_matches("[]");
        if !docs.contains(&format!("`{key}`")) {
            missing.insert(key.to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "keys of `flowctl --json` not documented in docs/control.md: {missing:?}"
    );
}

#[test]
fn exit_statuses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (d, _) = start(dir.path());
    let ok = flowctl(&d.socket, &["status"]);
    assert_eq!(ok.code, Some(0), "{}", ok.stderr);
    // refused by the daemon
    let bad = dir.path().join("bad.flows");
    std::fs::write(&bad, "flow a permit match iface eth9\n").expect("write");
    let r = flowctl(&d.socket, &["apply", bad.to_str().expect("utf-8")]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(
        r.stderr.contains("unknown interface `eth9`"),
        "{}",
        r.stderr
    );
    let r = flowctl(&d.socket, &["director", "enable", "maildirect", "nobody"]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    // refused offline
    let broken = dir.path().join("broken.flows");
    std::fs::write(&broken, "flow a sometimes\n").expect("write");
    let r = flowctl(
        Path::new("/nonexistent/ctl.sock"),
        &["check", broken.to_str().expect("utf-8")],
    );
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("broken.flows:1:"), "{}", r.stderr);
    // usage
    let r = flowctl(&d.socket, &["no-such-command"]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    // unreachable: no socket, and a socket nobody answers on
    let r = flowctl(Path::new("/nonexistent/ctl.sock"), &["status"]);
    assert_eq!(r.code, Some(3), "{}", r.stderr);
    assert!(r.stderr.contains("cannot connect"), "{}", r.stderr);
    let socket = d.socket.clone();
    drop(d);
    let stale = std::os::unix::net::UnixListener::bind(dir.path().join("stale.sock"))
        .expect("bind a socket");
    drop(stale); // the file stays, nobody listens
    let r = flowctl(&dir.path().join("stale.sock"), &["--json", "stats"]);
    assert_eq!(r.code, Some(3), "{}", r.stderr);
    let r = flowctl(&socket, &["status"]);
    assert_eq!(r.code, Some(3), "daemon stopped: {}", r.stderr);
}

#[test]
fn watch_shows_rates_per_port_rule_and_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (d, ds) = start(dir.path());
    // traffic: 50 packets per ms on eth0 and on the `ssh` flow's first rule (slot 0),
    // 10 packets per ms through maildirect/mail1
    let stop = Arc::new(AtomicBool::new(false));
    let shared = Arc::clone(&d.shared);
    let (stop2, ds2) = (Arc::clone(&stop), Arc::clone(&ds));
    let pump = std::thread::spawn(move || {
        let t0 = Instant::now();
        let mut ms = 0u64;
        while !stop2.load(Ordering::Relaxed) {
            let due = t0.elapsed().as_millis() as u64;
            while ms < due {
                shared.workers[0].ports[0].rx.add(50);
                shared.rules.load().counters[0].flow_rules[0].add(50);
                ds2.lock().expect("lock")[0].servers[0].packets += 10;
                ms += 1;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    let o = flowctl(
        &d.socket,
        &["--json", "watch", "--count", "2", "--interval", "0.5"],
    );
    let text = flowctl(&d.socket, &["watch", "--count", "1", "--interval", "0.3"]);
    stop.store(true, Ordering::Relaxed);
    pump.join().expect("pump");
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "two refreshes: {}", o.stdout);
    let expect = |what: &str, got: f64, per_s: f64| {
        assert!(
            got > per_s / 3.0 && got < per_s * 3.0,
            "{what}: {got}/s, expected about {per_s}/s: {}",
            o.stdout
        );
    };
    for l in lines {
        let v: Value = serde_json::from_str(l).expect("a JSON line");
        let port = |name: &str| {
            v["ports"]
                .as_array()
                .and_then(|a| a.iter().find(|p| p["name"] == name))
                .cloned()
                .unwrap_or_else(|| panic!("port {name}: {v}"))
        };
        expect(
            "eth0 rx",
            port("eth0")["rx_per_s"].as_f64().expect("rate"),
            50_000.0,
        );
        assert_eq!(port("eth1")["rx_per_s"], 0.0, "{v}");
        let rules = v["rules"].as_array().expect("rules");
        for r in rules {
            let pps = r["packets_per_s"].as_f64().expect("rate");
            if r["flow"] == "ssh" && r["rule"] == 1 {
                expect("ssh rule 1", pps, 50_000.0);
            } else {
                assert_eq!(pps, 0.0, "{r}");
            }
        }
        let srv = &v["servers"][0];
        assert_eq!(srv["server"], "mail1", "{v}");
        expect(
            "mail1",
            srv["packets_per_s"].as_f64().expect("rate"),
            10_000.0,
        );
    }
    assert_eq!(text.code, Some(0), "{}", text.stderr);
    assert!(text.stdout.contains("eth0"), "{}", text.stdout);
    assert!(
        text.stdout
            .lines()
            .any(|l| l.starts_with("flow ") && l.contains("ssh")),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.lines().any(|l| l.contains("mail1")),
        "{}",
        text.stdout
    );
}
