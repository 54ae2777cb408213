//! The control socket end to end: round trips, refused pushes, garbage, persistence, many
//! clients at once.

mod support;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use flowgate_config::flows;
use serde_json::json;
use support::{ok, Client, Daemon, SEED};

const NEW: &str = "\
flow ssh permit
    match proto tcp dstport 22
flow web permit
    match proto tcp dstport 80
flow alltherest deny
    match
";

fn canonical(text: &str) -> String {
    flows::print(&flows::parse(text).expect("parses").file)
}

#[test]
fn round_trips() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(dir.path(), Some(SEED));
    let mode = std::fs::metadata(&d.socket)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660);

    let s = d.ask(json!({"op":"status"}));
    assert!(ok(&s), "{s}");
    assert_eq!(s["generation"], 1);
    assert_eq!(s["workers"], 2);
    assert_eq!(s["flows"], 4);
    assert_eq!(s["outflows"], 1);

    let show = d.ask(json!({"op":"show_flows"}));
    assert_eq!(show["text"], canonical(SEED));

    let check = d.ask(json!({"op":"check","flows":NEW}));
    assert!(ok(&check), "{check}");
    assert_eq!(check["rules"], 3);

    let diff = d.ask(json!({"op":"diff","flows":NEW}));
    assert!(ok(&diff), "{diff}");
    assert_eq!(
        diff["added"],
        json!(["flow web permit\n    match proto tcp dstport 80\n"])
    );
    assert_eq!(diff["removed"], json!(["dns", "mail", "back"]));
    assert_eq!(diff["changed"][0]["name"], "ssh");

    let pkt = "iface=eth0 proto=tcp src=192.168.0.5 dst=192.168.0.1 sport=40000 dport=22";
    let t = d.ask(json!({"op":"trace","packet":pkt}));
    assert!(ok(&t), "{t}");
    assert_eq!(t["decision"], "permit ssh 2");
    assert_eq!(t["agree"], true);
    let far = "iface=eth0 proto=tcp src=10.9.9.9 dst=192.168.0.1 sport=40000 dport=22";
    let t = d.ask(json!({"op":"trace","packet":far}));
    assert_eq!(t["decision"], "deny alltherest 1");
    assert_eq!(t["steps"][0]["outcome"], "ignored");
    assert_eq!(t["steps"][1]["outcome"], "no-match");
    assert!(t["steps"][1]["rules"][0]
        .as_str()
        .expect("text")
        .contains("`proto udp` does not hold"));
    assert_eq!(t["steps"].as_array().expect("steps").len(), 4);
    let t = d.ask(json!({"op":"trace","packet":"iface=eth1 proto=udp src=1.1.1.1 dst=2.2.2.2 sport=1 dport=2","outflows":true}));
    assert_eq!(t["decision"], "table:200 back 1");
    let bad = d.ask(json!({"op":"trace","packet":"iface=eth0 proto=tcp"}));
    assert!(!ok(&bad));

    let a = d.ask(json!({"op":"apply","flows":NEW,"name":"new.flows"}));
    assert!(ok(&a), "{a}");
    assert_eq!(a["generation"], 2);
    assert_eq!(a["persisted"], true);
    assert!(a["publish_us"].as_u64().is_some());
    assert_eq!(std::fs::read_to_string(&d.flows).expect("flows"), NEW);
    assert_eq!(d.shared.rules.load().generation, 2);
    let t = d.ask(json!({"op":"trace","packet":far}));
    assert_eq!(t["decision"], "permit ssh 1");

    let r = d.ask(json!({"op":"rollback"}));
    assert!(ok(&r), "{r}");
    assert_eq!(r["generation"], 3);
    assert_eq!(std::fs::read_to_string(&d.flows).expect("flows"), SEED);
    assert_eq!(d.ask(json!({"op":"show_flows"}))["text"], canonical(SEED));
    let r = d.ask(json!({"op":"rollback"}));
    assert!(!ok(&r), "{r}");

    let stats = d.ask(json!({"op":"stats"}));
    assert!(ok(&stats), "{stats}");
    assert_eq!(stats["ports"][1]["name"], "eth1");
    assert!(stats["drops"].as_array().expect("drops").len() > 3);

    let dl = d.ask(json!({"op":"director_list"}));
    assert_eq!(dl["error"], "no director state in this build");
}

#[test]
fn refused_push_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(dir.path(), Some(SEED));
    let before = std::fs::read(&d.flows).expect("flows");
    for broken in [
        "flow a permit match proto tcp proto udp",
        "flow a permit match iface eth9",
        "flow a director nosuch match",
        "flow a permit match dstport 22",
        "flow flow flow",
    ] {
        let r = d.ask(json!({"op":"apply","flows":broken,"name":"broken.flows"}));
        assert!(!ok(&r), "{broken}: {r}");
        let diag = r["diagnostics"].as_str().expect("diagnostics");
        assert!(diag.contains("broken.flows:1:"), "{diag}");
        assert_eq!(d.shared.rules.load().generation, 1);
        assert_eq!(std::fs::read(&d.flows).expect("flows"), before);
    }
    let r = d.ask(json!({"op":"apply_path","path":"/nonexistent/x.flows"}));
    assert!(!ok(&r));
    assert_eq!(d.ask(json!({"op":"status"}))["generation"], 1);
    assert_eq!(d.ask(json!({"op":"status"}))["swaps"], 0);
}

#[test]
fn garbage_gets_errors_and_the_server_carries_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(dir.path(), Some(SEED));
    let mut c = Client::connect(&d.socket);
    for junk in [
        "\u{1}\u{2}garbage\u{7f}",
        "{",
        "[]",
        "null",
        "{}",
        r#"{"op":"explode"}"#,
        r#"{"op":"status","extra":1}"#,
        r#"{"op":"apply"}"#,
        r#"{"op":"director_weight","director":"d","server":"s","weight":-1}"#,
    ] {
        c.send(junk);
        let r = c.recv().expect("a reply");
        assert!(!ok(&r), "{junk}: {r}");
        assert!(r["error"].as_str().is_some());
    }
    // invalid UTF-8
    c.stream.write_all(b"\xff\xfe\xfd\n").expect("send");
    assert!(!ok(&c.recv().expect("reply")));
    // blank lines are ignored; the same connection still works
    c.send("");
    c.send(r#"{"op":"status"}"#);
    assert!(ok(&c.recv().expect("reply")));

    // oversized: an error, then the connection is closed
    let mut big = UnixStream::connect(&d.socket).expect("connect");
    big.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let chunk = vec![b'a'; 1 << 20];
    let mut sent = 0;
    while sent <= flowgate_control::protocol::MAX_REQUEST {
        if big.write_all(&chunk).is_err() {
            break;
        }
        sent += chunk.len();
    }
    let mut out = String::new();
    let _ = big.read_to_string(&mut out);
    assert!(out.contains("longer than"), "{out}");

    // half-closed with a partial request: an error reply, then end of stream
    let mut half = UnixStream::connect(&d.socket).expect("connect");
    half.write_all(br#"{"op":"sta"#).expect("send");
    half.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let mut out = String::new();
    half.read_to_string(&mut out).expect("read");
    assert!(out.contains(r#""ok":false"#), "{out}");
    // half-closed after a whole request: the reply still comes
    let mut half = UnixStream::connect(&d.socket).expect("connect");
    half.write_all(br#"{"op":"status"}"#).expect("send");
    half.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let mut out = String::new();
    half.read_to_string(&mut out).expect("read");
    assert!(out.contains(r#""ok":true"#), "{out}");
    // connect and vanish; vanish mid-request
    drop(UnixStream::connect(&d.socket).expect("connect"));
    let mut gone = UnixStream::connect(&d.socket).expect("connect");
    gone.write_all(br#"{"op":"apply","flows":"flow a"#)
        .expect("send");
    drop(gone);

    let s = d.ask(json!({"op":"status"}));
    assert!(ok(&s));
    assert_eq!(s["generation"], 1);
}

#[test]
fn restart_keeps_the_applied_set() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut d = Daemon::start(dir.path(), Some(SEED));
    let a = d.ask(json!({"op":"apply","flows":NEW}));
    assert!(ok(&a), "{a}");
    let applied = d.shared.rules.load_full();
    d.stop();
    assert!(!d.socket.exists(), "socket removed on shutdown");
    drop(d);

    // a crash leaves a stale socket behind: the next start replaces it
    let app = support::appliance(dir.path());
    drop(std::os::unix::net::UnixListener::bind(&app.control.socket).expect("stale"));
    assert!(app.control.socket.exists());

    let d = Daemon::start(dir.path(), None);
    let now = d.shared.rules.load();
    assert_eq!(now.source, applied.source);
    assert_eq!(now.generation, 1);
    assert_eq!(d.ask(json!({"op":"show_flows"}))["text"], canonical(NEW));
}

/// The rollback history is kept beside the flows file: a restarted daemon can still roll
/// back through the sets applied before it stopped, newest first.
#[test]
fn restart_keeps_the_rollback_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut d = Daemon::start(dir.path(), Some(SEED));
    let third = "flow web permit\n  match proto tcp dstport 80\n";
    for text in [NEW, third] {
        let a = d.ask(json!({"op":"apply","flows":text}));
        assert!(ok(&a), "{a}");
    }
    assert_eq!(d.ask(json!({"op":"status"}))["rollback_depth"], 2);
    d.stop();
    drop(d);

    let d = Daemon::start(dir.path(), None);
    assert_eq!(d.ask(json!({"op":"show_flows"}))["text"], canonical(third));
    assert_eq!(d.ask(json!({"op":"status"}))["rollback_depth"], 2);
    let r = d.ask(json!({"op":"rollback"}));
    assert!(ok(&r), "{r}");
    assert_eq!(d.ask(json!({"op":"show_flows"}))["text"], canonical(NEW));
    let mut d = d;
    d.stop();
    drop(d);

    // the rollback itself is remembered: one step is left, to the seed
    let d = Daemon::start(dir.path(), None);
    assert_eq!(d.ask(json!({"op":"show_flows"}))["text"], canonical(NEW));
    assert_eq!(d.ask(json!({"op":"status"}))["rollback_depth"], 1);
    let r = d.ask(json!({"op":"rollback"}));
    assert!(ok(&r), "{r}");
    assert_eq!(d.ask(json!({"op":"show_flows"}))["text"], canonical(SEED));
    let r = d.ask(json!({"op":"rollback"}));
    assert!(!ok(&r), "nothing left: {r}");
}

#[test]
fn a_live_socket_is_not_taken_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _d = Daemon::start(dir.path(), Some(SEED));
    let app = support::appliance(dir.path());
    let err = flowgate_control::server::bind(&app.control.socket).expect_err("in use");
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
}

#[test]
fn concurrent_clients() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(dir.path(), Some(SEED));
    let socket = d.socket.clone();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(&socket);
                for j in 0..25 {
                    let line = match (i + j) % 4 {
                        0 => json!({"op":"status"}).to_string(),
                        1 => json!({"op":"trace","packet":"iface=eth0 proto=udp src=1.1.1.1 dst=192.168.0.1 sport=5 dport=53"}).to_string(),
                        2 if i < 2 => json!({"op":"apply","flows": if j % 2 == 1 { SEED } else { NEW }}).to_string(),
                        _ => "not json".to_string(),
                    };
                    c.send(&line);
                    let r = c.recv().expect("reply");
                    assert_eq!(ok(&r), !line.starts_with("not"), "{line}: {r}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
    let s = d.ask(json!({"op":"status"}));
    let swaps = s["swaps"].as_u64().expect("swaps");
    assert!(swaps > 0);
    assert_eq!(s["generation"].as_u64(), Some(swaps + 1));
}
