//! The Debian package end to end: `scripts/package.sh` builds it from the binaries this test
//! run already has (no second cargo build), `apt-get install ./flowgate_*.deb` installs it,
//! the installed unit passes `systemd-analyze verify`, the installed `flowgate check` (the
//! unit's ExecStartPre) accepts the shipped config, the installed `flowgate run` comes up in a
//! namespace on net_null ports (READY=1 on a fake NOTIFY_SOCKET) with its state in
//! /var/lib/flowgate, `flowctl apply` persists there; then the installed unit, hardening
//! included, runs under a real systemd booted as PID 1 of a private PID, mount and network
//! namespace (READY=1 seen by systemd, reloads, stop); and `apt-get purge` leaves nothing.
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
    // systemd-analyze (libsystemd-core) stamps this file; leave the machine as it was
    let stamp = Path::new("/run/systemd/systemd-units-load");
    let had_stamp = stamp.exists();
    let verify =
        sh(Command::new("systemd-analyze")
            .args(["verify", "/lib/systemd/system/flowgate.service"]));
    let verify_err = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success() && !verify_err.contains("flowgate.service"),
        "systemd-analyze verify: {verify_err}"
    );
    if !had_stamp {
        let _ = std::fs::remove_file(stamp);
    }
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
    let lab = shipped
        .replace(r#"device = "0000:03:00.0""#, r#"device = "net_null0""#)
        .replace(r#"device = "0000:03:00.1""#, r#"device = "net_null1""#)
        .replace(
            r#"eal = ["--in-memory"]"#,
            r#"eal = ["--no-huge", "-m", "512", "--no-pci", "--no-shconf"]"#,
        );
    // under systemd (below) the shipped socket path, in the container's own /run
    let sd_cfg = dir.join("systemd.toml");
    std::fs::write(&sd_cfg, &lab).expect("config");
    let cfg = lab.replace(
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

    // the installed unit under a real systemd, when one can boot in a container here
    under_systemd(&dir, &sd_cfg);

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

/// Boots systemd as PID 1 of new PID, mount, network, UTS and IPC namespaces, with tmpfs over
/// /run, /var/lib/systemd, /var/log/journal and /etc/systemd/system (nothing it writes
/// reaches the host), the host-affecting units masked, and a target that starts nothing.
/// `flowgate.service` gets a drop-in: no default dependencies (no sysinit.target, so no
/// udev), and the lab config (net_null ports) instead of the shipped PCI one.
const BOOT: &str = r#"set -e
mount --make-rprivate /
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/lock
cp "$1" /run/flowgate-lab.toml
mount -t tmpfs tmpfs /var/log/journal 2>/dev/null || true
mount -t tmpfs tmpfs /var/lib/systemd
mount -t tmpfs -o mode=755 tmpfs /etc/systemd/system
for u in systemd-udevd.service systemd-udev-trigger.service systemd-udev-settle.service \
         systemd-udevd-control.socket systemd-udevd-kernel.socket systemd-networkd.service \
         systemd-logind.service systemd-timesyncd.service apt-daily.timer \
         apt-daily-upgrade.timer man-db.timer e2scrub_all.timer systemd-tmpfiles-clean.timer \
         getty@.service console-getty.service prometheus.service; do
  ln -s /dev/null "/etc/systemd/system/$u"
done
printf '[Unit]\nDescription=flowgate lab\nDefaultDependencies=no\n' > /etc/systemd/system/lab.target
mkdir -p /etc/systemd/system/flowgate.service.d
cat > /etc/systemd/system/flowgate.service.d/lab.conf <<UNIT
[Unit]
DefaultDependencies=no
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/flowgate check --config /run/flowgate-lab.toml
ExecStart=
ExecStart=/usr/bin/flowgate run --config /run/flowgate-lab.toml
UNIT
export container=flowgate-lab
exec /lib/systemd/systemd --system --unit=lab.target --log-level=warning
"#;

/// The contained systemd's PID 1 (as the host sees it), stopped on drop.
struct Systemd {
    unshare: std::process::Child,
    pid: u32,
}

impl Systemd {
    fn boot(dir: &Path, cfg: &Path) -> Option<Systemd> {
        let script = dir.join("boot.sh");
        std::fs::write(&script, BOOT).expect("boot script");
        let mut unshare = Command::new("unshare")
            .args([
                "--pid",
                "--fork",
                "--mount",
                "--mount-proc",
                "--net",
                "--uts",
                "--ipc",
            ])
            .arg("sh")
            .arg(&script)
            .arg(cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let children = format!("/proc/{0}/task/{0}/children", unshare.id());
        let mut pid = None;
        let up = common::wait_until(Duration::from_secs(20), || {
            pid = std::fs::read_to_string(&children)
                .ok()
                .and_then(|c| c.split_whitespace().next()?.parse::<u32>().ok());
            pid.is_some_and(|p| {
                sh(Command::new("nsenter")
                    .args(["-t", &p.to_string(), "-m", "-p", "-n"])
                    .args(["systemctl", "is-system-running"]))
                .stdout
                .starts_with(b"running")
            })
        });
        match (up, pid) {
            (true, Some(pid)) => Some(Systemd { unshare, pid }),
            _ => {
                let _ = unshare.kill();
                let _ = unshare.wait();
                None
            }
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        sh(Command::new("nsenter")
            .args(["-t", &self.pid.to_string(), "-m", "-p", "-n"])
            .args(args))
    }

    fn show(&self, prop: &str) -> String {
        let out = self.run(&["systemctl", "show", "--value", "-p", prop, "flowgate"]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Systemd {
    fn drop(&mut self) {
        // poweroff: systemd stops its units and ends the PID namespace
        let _ = Command::new("kill")
            .args(["-s", "SIGRTMIN+4", &self.pid.to_string()])
            .status();
        let gone = common::wait_until(Duration::from_secs(20), || {
            matches!(self.unshare.try_wait(), Ok(Some(_)))
        });
        if !gone {
            let _ = Command::new("kill")
                .args(["-9", &self.pid.to_string()])
                .status();
            let _ = self.unshare.kill();
            let _ = self.unshare.wait();
        }
    }
}

/// `systemctl start` returns once flowgate said READY=1 (Type=notify), with the hardening of
/// the shipped unit; a wrong flows file reloads as refused, a right one as reloaded; stop is
/// clean. Skips, saying so, when systemd cannot boot in a container on this machine.
fn under_systemd(dir: &Path, cfg: &Path) {
    let Some(sd) = Systemd::boot(dir, cfg) else {
        eprintln!("skipped the systemd part: systemd does not boot in a namespace here");
        return;
    };
    let start = sd.run(&["systemctl", "start", "flowgate"]);
    let journal = |sd: &Systemd| {
        let out = sd.run(&["systemctl", "status", "--no-pager", "-l", "flowgate"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        start.status.success(),
        "systemctl start: {start:?}\n{}",
        journal(&sd)
    );
    assert_eq!(sd.show("ActiveState"), "active", "{}", journal(&sd));
    assert!(
        sd.show("StatusText")
            .starts_with("running: 2 ports, 1 workers"),
        "{}",
        journal(&sd)
    );
    let st = sd.run(&["flowctl", "--json", "status"]);
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap_or_default();
    assert_eq!(st["ports"], serde_json::json!(["eth0", "eth1"]), "{st}");
    let generation = st["generation"].as_u64().expect("generation");

    let flows = std::fs::read_to_string("/var/lib/flowgate/flows").expect("flows");
    std::fs::write(
        "/var/lib/flowgate/flows",
        "flow x permit\n    match iface eth9\n",
    )
    .expect("write");
    assert!(sd
        .run(&["systemctl", "reload", "flowgate"])
        .status
        .success());
    let refused = common::wait_until(Duration::from_secs(10), || {
        sd.show("StatusText").starts_with("reload refused")
    });
    assert!(refused, "{}", journal(&sd));
    std::fs::write("/var/lib/flowgate/flows", &flows).expect("write");
    assert!(sd
        .run(&["systemctl", "reload", "flowgate"])
        .status
        .success());
    let reloaded = common::wait_until(Duration::from_secs(10), || {
        sd.show("StatusText") == "reloaded"
    });
    assert!(reloaded, "{}", journal(&sd));
    let st = sd.run(&["flowctl", "--json", "status"]);
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap_or_default();
    assert_eq!(st["generation"].as_u64(), Some(generation + 1), "{st}");
    assert_eq!(sd.show("ActiveState"), "active");

    assert!(sd.run(&["systemctl", "stop", "flowgate"]).status.success());
    assert_eq!(sd.show("ActiveState"), "inactive");
    assert_eq!(sd.show("Result"), "success", "{}", journal(&sd));
    assert_eq!(sd.show("ExecMainStatus"), "0");
}
