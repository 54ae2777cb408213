//! The Debian package end to end: `scripts/package.sh` builds it from the binaries this test
//! run already has (no second cargo build), `apt-get install ./flowgate_*.deb` installs it,
//! the installed unit passes `systemd-analyze verify`, the installed `flowgate check` (the
//! unit's ExecStartPre) accepts the shipped config, the installed `flowgate run` comes up in a
//! namespace on net_null ports (READY=1 on a fake NOTIFY_SOCKET) with its state in
//! /var/lib/flowgate, `flowctl apply` persists there, and `apt-get purge` leaves nothing.
//!
//! Needs root, dpkg-buildpackage and debhelper (scripts/setup.sh); skips, saying why, without
//! them or when a `flowgate` package is already installed (an operator's is never touched).

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{skip_without_lab, Netns, TempDir};

fn sh(cmd: &mut Command) -> Output {
    cmd.output().expect("spawn")
}

fn ok(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn installed() -> bool {
    sh(Command::new("dpkg-query").args(["-W", "-f=${Status}", "flowgate"]))
        .stdout
        .starts_with(b"install ok installed")
}

fn apt(args: &[&str]) -> Output {
    sh(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["-y", "-q", "-o", "DPkg::Lock::Timeout=300"])
        .args(args))
}

/// Purges the package if the test installed it and fails before its own purge.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        if installed() {
            let _ = apt(&["purge", "flowgate"]);
        }
    }
}

#[test]
fn build_install_run_purge() {
    if skip_without_lab() {
        return;
    }
    for tool in ["dpkg-buildpackage", "dh", "apt-get", "systemd-analyze"] {
        if sh(Command::new("sh").args(["-c", &format!("command -v {tool}")]))
            .status
            .code()
            != Some(0)
        {
            eprintln!("skipped: needs {tool} (scripts/setup.sh installs it)");
            return;
        }
    }
    if installed() {
        eprintln!("skipped: a flowgate package is installed on this machine; not touching it");
        return;
    }
    let tmp = TempDir::new("deb");
    let dir = tmp.0.clone();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let bins = Path::new(env!("CARGO_BIN_EXE_flowgate"))
        .parent()
        .expect("bin dir")
        .to_path_buf();

    // build, from the binaries of this test run
    let deb = ok(
        "scripts/package.sh",
        &sh(Command::new(root.join("scripts/package.sh"))
            .arg(dir.join("out"))
            .env("FLOWGATE_BIN_DIR", &bins)
            .env("FLOWGATE_DEB_COMPRESS", "-Zgzip")),
    );
    let deb = PathBuf::from(deb.trim());
    let name = deb
        .file_name()
        .expect("deb name")
        .to_string_lossy()
        .into_owned();
    assert!(
        name.starts_with("flowgate_") && name.ends_with("_amd64.deb"),
        "{name}"
    );
    let info = ok(
        "dpkg-deb -f",
        &sh(Command::new("dpkg-deb").arg("-f").arg(&deb).arg("Depends")),
    );
    for lib in [
        "librte-eal23",
        "librte-ethdev23",
        "librte-net-tap23",
        "librte-mempool-ring23",
    ] {
        assert!(info.contains(lib), "Depends lacks {lib}: {info}");
    }
    assert!(!info.contains("-dev"), "runtime dependencies only: {info}");

    // install with apt, as an operator would (relative ./ path)
    let _guard = Installed;
    ok(
        "apt-get install ./deb",
        &sh(Command::new("apt-get")
            .current_dir(deb.parent().expect("out dir"))
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["-y", "-q", "-o", "DPkg::Lock::Timeout=300", "install"])
            .arg(format!("./{name}"))),
    );
    assert!(installed());
    let files: Vec<PathBuf> = ok(
        "dpkg -L",
        &sh(Command::new("dpkg").args(["-L", "flowgate"])),
    )
    .lines()
    .map(PathBuf::from)
    .collect();
    for f in [
        "/usr/bin/flowgate",
        "/usr/bin/flowctl",
        "/etc/flowgate/flowgate.toml",
        "/etc/flowgate/flows.example",
        "/lib/systemd/system/flowgate.service",
        "/usr/share/man/man1/flowgate.1.gz",
        "/usr/share/man/man1/flowgate-run.1.gz",
        "/usr/share/man/man1/flowctl.1.gz",
        "/usr/share/man/man1/flowctl-watch.1.gz",
        "/usr/share/bash-completion/completions/flowctl",
        "/usr/share/zsh/vendor-completions/_flowgate",
        "/usr/share/fish/vendor_completions.d/flowctl.fish",
        "/usr/share/doc/flowgate/appliance.md",
    ] {
        assert!(files.iter().any(|p| p == Path::new(f)), "package lacks {f}");
        assert!(Path::new(f).exists(), "{f} not installed");
    }
    // the state starts from the example; the conffile stays the operator's
    assert_eq!(
        std::fs::read_to_string("/var/lib/flowgate/flows").expect("state flows"),
        std::fs::read_to_string("/etc/flowgate/flows.example").expect("example")
    );
    let conffiles = ok(
        "dpkg-query conffiles",
        &sh(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", "flowgate"])),
    );
    assert!(
        conffiles.contains("/etc/flowgate/flowgate.toml"),
        "{conffiles}"
    );
    // not enabled on install: the operator edits /etc/flowgate first
    assert!(!Path::new("/etc/systemd/system/multi-user.target.wants/flowgate.service").exists());

    // the unit (man pages resolve now that they are installed) and its ExecStartPre
    let verify =
        sh(Command::new("systemd-analyze")
            .args(["verify", "/lib/systemd/system/flowgate.service"]));
    let verify_err = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success() && !verify_err.contains("flowgate.service"),
        "systemd-analyze verify: {verify_err}"
    );
    ok(
        "flowgate check --config /etc/flowgate/flowgate.toml",
        &sh(Command::new("/usr/bin/flowgate").args([
            "check",
            "--config",
            "/etc/flowgate/flowgate.toml",
        ])),
    );
    let man = sh(Command::new("man").args(["-w", "flowctl-watch"]));
    assert!(
        String::from_utf8_lossy(&man.stdout).contains("flowctl-watch.1"),
        "man -w flowctl-watch: {man:?}"
    );

    // run the installed daemon: the shipped config with its NICs swapped for net_null
    // vdevs, its state (flows) where the package put it
    let shipped = std::fs::read_to_string("/etc/flowgate/flowgate.toml").expect("config");
    let socket = dir.join("control.sock");
    let cfg = shipped
        .replace(r#"device = "0000:03:00.0""#, r#"device = "net_null0""#)
        .replace(r#"device = "0000:03:00.1""#, r#"device = "net_null1""#)
        .replace(
            r#"eal = ["--in-memory"]"#,
            r#"eal = ["--no-huge", "-m", "512", "--no-pci", "--no-shconf"]"#,
        )
        .replace(
            r#"socket = "/run/flowgate/control.sock""#,
            &format!("socket = \"{}\"", socket.display()),
        );
    assert!(
        cfg.contains("net_null1") && cfg.contains("--no-huge"),
        "{cfg}"
    );
    let cfg_path = dir.join("flowgate.toml");
    std::fs::write(&cfg_path, cfg).expect("config");
    let notify_path = dir.join("notify");
    let notify = UnixDatagram::bind(&notify_path).expect("notify socket");
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let ns = Netns::new("deb");
    let mut daemon = Command::new("ip")
        .args(["netns", "exec", &ns.name, "env"])
        .arg(format!("NOTIFY_SOCKET={}", notify_path.display()))
        .args(["/usr/bin/flowgate", "run", "--duration", "60", "--config"])
        .arg(&cfg_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the installed flowgate");
    let mut buf = [0u8; 1024];
    let n = notify.recv(&mut buf).unwrap_or(0);
    let ready = String::from_utf8_lossy(&buf[..n]).into_owned();
    if !ready.starts_with("READY=1") {
        let _ = daemon.kill();
        let out = daemon.wait_with_output().expect("output");
        panic!(
            "no READY=1 ({ready:?}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let flowctl = |args: &[&str]| {
        sh(Command::new("/usr/bin/flowctl")
            .arg("--socket")
            .arg(&socket)
            .args(args))
    };
    let status = ok("flowctl --json status", &flowctl(&["--json", "status"]));
    let status: serde_json::Value = serde_json::from_str(&status).expect("status JSON");
    assert_eq!(status["flows_path"], "/var/lib/flowgate/flows", "{status}");
    assert_eq!(
        status["ports"],
        serde_json::json!(["eth0", "eth1"]),
        "{status}"
    );
    let next = dir.join("next.flows");
    std::fs::write(&next, "flow web permit\n    match proto tcp dstport 80\n").expect("write");
    ok(
        "flowctl apply",
        &flowctl(&["apply", next.to_str().expect("utf-8")]),
    );
    assert_eq!(
        std::fs::read_to_string("/var/lib/flowgate/flows").expect("persisted"),
        "flow web permit\n    match proto tcp dstport 80\n"
    );
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    let out = daemon.wait_with_output().expect("daemon exits");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(ns);

    // purge: every file of the package, the config and the state are gone
    let plain: Vec<&PathBuf> = files.iter().filter(|f| !f.is_dir()).collect();
    assert!(plain.len() > 30, "{plain:?}");
    ok("apt-get purge flowgate", &apt(&["purge", "flowgate"]));
    assert!(!installed());
    for f in plain {
        assert!(!f.exists(), "{} left after purge", f.display());
    }
    for d in [
        "/etc/flowgate",
        "/var/lib/flowgate",
        "/usr/share/doc/flowgate",
        "/usr/share/flowgate",
    ] {
        assert!(!Path::new(d).exists(), "{d} left after purge");
    }
    let status = sh(Command::new("dpkg-query").args(["-W", "-f=${db:Status-Abbrev}", "flowgate"]));
    let s = String::from_utf8_lossy(&status.stdout);
    assert!(
        !status.status.success()
            || s.trim().is_empty()
            || s.starts_with("un")
            || s.starts_with("pn"),
        "dpkg still knows flowgate: {s:?}"
    );
}
