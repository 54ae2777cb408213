//! The `flowctl` binary against a running control side.

mod support;

use std::process::Command;

use support::{Daemon, SEED};

fn flowctl(d: &Daemon, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_flowctl"))
        .arg("--socket")
        .arg(&d.socket)
        .args(args)
        .output()
        .expect("run flowctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn commands() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(dir.path(), Some(SEED));
    let (ok, out, err) = flowctl(&d, &["status"]);
    assert!(ok, "{err}");
    assert!(out.contains("generation   1"), "{out}");

    let new = dir.path().join("new.flows");
    std::fs::write(&new, "flow web permit\n    match proto tcp dstport 80\n").expect("write");
    let newp = new.to_str().expect("utf8");
    let (ok, out, _) = flowctl(&d, &["diff", newp]);
    assert!(ok);
    assert!(out.contains("+ flow web permit"), "{out}");
    assert!(out.contains("- removed ssh"), "{out}");
    let (ok, out, err) = flowctl(&d, &["apply", newp]);
    assert!(ok, "{err}");
    assert!(out.starts_with("generation 2 published in "), "{out}");
    let (ok, out, _) = flowctl(&d, &["show", "flows"]);
    assert!(ok);
    assert!(out.contains("flow web permit"), "{out}");
    let (ok, out, _) = flowctl(
        &d,
        &[
            "trace",
            "iface=eth0",
            "proto=tcp",
            "src=1.1.1.1",
            "dst=2.2.2.2",
            "sport=1",
            "dport=80",
        ],
    );
    assert!(ok);
    assert!(out.contains("verdict: permit web 1"), "{out}");
    let (ok, out, _) = flowctl(&d, &["stats"]);
    assert!(ok);
    assert!(out.contains("port eth0: rx=0"), "{out}");
    let (ok, _, _) = flowctl(&d, &["--json", "rollback"]);
    assert!(ok);

    let bad = dir.path().join("bad.flows");
    std::fs::write(&bad, "flow a permit match iface eth9\n").expect("write");
    let (ok, _, err) = flowctl(&d, &["apply", bad.to_str().expect("utf8")]);
    assert!(!ok);
    assert!(
        err.contains("bad.flows:1:27: error: unknown interface `eth9`"),
        "{err}"
    );
    let (ok, _, err) = flowctl(&d, &["director", "list"]);
    assert!(!ok);
    assert!(err.contains("no director state"), "{err}");

    // offline check when no daemon answers
    let out = Command::new(env!("CARGO_BIN_EXE_flowctl"))
        .args(["--socket", "/nonexistent/ctl.sock", "check", newp])
        .output()
        .expect("run flowctl");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok"));
}

/// `flowctl insert`, `replace`, `delete`: one flow or one rule of the running set.
#[test]
fn incremental_updates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(dir.path(), Some(SEED));
    let web = [
        "trace",
        "iface=eth0",
        "proto=tcp",
        "src=1.1.1.1",
        "dst=2.2.2.2",
        "sport=1",
        "dport=80",
    ];
    let (ok, out, err) = flowctl(
        &d,
        &[
            "insert",
            "--before",
            "alltherest",
            "flow web permit",
            "match proto tcp dstport 80",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.starts_with("generation 2 published in "), "{out}");
    let (_, out, _) = flowctl(&d, &web);
    assert!(out.contains("verdict: permit web 1"), "{out}");
    let (ok, _, err) = flowctl(
        &d,
        &["insert", "--flow", "web", "--at", "1", "ignore src 1.1.1.1"],
    );
    assert!(ok, "{err}");
    let (_, out, _) = flowctl(&d, &web);
    assert!(out.contains("verdict: deny alltherest 1"), "{out}");
    let (ok, _, err) = flowctl(
        &d,
        &[
            "replace",
            "--flow",
            "web",
            "--rule",
            "1",
            "ignore src 9.9.9.9",
        ],
    );
    assert!(ok, "{err}");
    let (_, out, _) = flowctl(&d, &web);
    assert!(out.contains("verdict: permit web 2"), "{out}");
    let (ok, _, err) = flowctl(&d, &["delete", "web", "1"]);
    assert!(ok, "{err}");
    let (ok, _, err) = flowctl(&d, &["replace", "flow web deny match proto tcp dstport 80"]);
    assert!(ok, "{err}");
    let (_, out, _) = flowctl(&d, &web);
    assert!(out.contains("verdict: deny web 1"), "{out}");
    // refused: nothing changes
    let (ok, _, err) = flowctl(&d, &["insert", "flow web permit match"]);
    assert!(!ok);
    assert!(err.contains("`web` exists"), "{err}");
    let (ok, _, err) = flowctl(&d, &["insert", "--flow", "web", "match iface eth9"]);
    assert!(!ok);
    assert!(err.contains("unknown interface `eth9`"), "{err}");
    let (ok, _, err) = flowctl(&d, &["delete", "web"]);
    assert!(ok, "{err}");
    let (_, out, _) = flowctl(&d, &["status"]);
    assert!(out.contains("generation   7"), "{out}");
    let saved = std::fs::read_to_string(&d.flows).expect("flows file");
    assert!(!saved.contains("flow web"), "{saved}");
    assert!(saved.contains("flow alltherest deny"), "{saved}");
}
