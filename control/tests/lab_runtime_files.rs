//! The daemon leaves no runtime files (issue 17): the EAL's directory of a clean stop is
//! removed at exit, those of killed daemons at the next start. Runs the real `flowgate run`
//! on null and pcap vdevs (no namespaces), with the example config's EAL arguments (no
//! `--no-shconf`: DPDK writes its shared config files).

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{skip_without_lab, TempDir};
use flowgate_dataplane::runtime_files;

#[test]
fn a_daemon_run_leaves_nothing_in_the_runtime_directory() {
    if skip_without_lab() {
        return;
    }
    // the example config's arguments, then the lab tests' (`--no-shconf`: DPDK still makes
    // the directory, and without a prefix of the daemon's own it would be the shared `rte`)
    run_once(r#"["--no-huge", "-m", "256", "--no-pci"]"#);
    run_once(r#"["--no-huge", "-m", "256", "--no-pci", "--no-shconf"]"#);
}

fn run_once(eal: &str) {
    let tmp = TempDir::new("rtfiles");
    let dir = tmp.0.clone();
    std::fs::write(dir.join("flows"), "flow all permit\n  match\n").expect("flows");
    let config = format!(
        r#"flows = "flows"
[control]
socket = "{}"
[dataplane]
workers = [1]
eal = {}
[[port]]
name = "a0"
device = "net_null0"
kernel = false
"#,
        dir.join("control.sock").display(),
        eal
    );
    std::fs::write(dir.join("rt.toml"), config).expect("config");
    // left by a daemon killed with -9 (a pid above pid_max: not alive)
    let stale: PathBuf = runtime_files::runtime_dir("flowgate-4194305");
    std::fs::create_dir_all(&stale).expect("stale dir");
    std::fs::write(stale.join("config"), "x").expect("stale file");

    let mut child = Command::new(env!("CARGO_BIN_EXE_flowgate"))
        .args(["run", "--config"])
        .arg(dir.join("rt.toml"))
        .args(["--duration", "3"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("flowgate");
    let ours = runtime_files::runtime_dir(&format!("flowgate-{}", child.id()));
    // while it runs, DPDK keeps its files there (so the check below means something)
    let t = Instant::now();
    let mut seen = false;
    while t.elapsed() < Duration::from_secs(10) {
        if ours.exists() {
            seen = true;
            break;
        }
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("flowgate output");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(seen, "the daemon never made {}: {err}", ours.display());
    assert!(!ours.exists(), "{} left behind: {err}", ours.display());
    assert!(!stale.exists(), "{} not removed: {err}", stale.display());
    assert!(err.contains("left by a stopped daemon"), "{err}");
}
