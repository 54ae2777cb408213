//! Incremental updates (`insert`, `delete`, `replace`) through the socket: validation that
//! changes nothing on error, the persisted file equal to the running set, the compiled
//! classifier agreeing with the reference, rollback, and counters that survive pushes by
//! rule identity.

mod support;

use flowgate_config::flows::{self, parse_packet_line};
use serde_json::{json, Value};
use support::{Daemon, SEED};

/// The running set's canonical text, and that the persisted file means the same.
fn running(d: &Daemon) -> String {
    let r = d.ask(json!({"op":"show_flows"}));
    let text = r["text"].as_str().expect("text").to_string();
    let saved = std::fs::read_to_string(&d.flows).expect("flows file");
    let a = flows::parse(&text).expect("running parses").file;
    let b = flows::parse(&saved).expect("saved parses").file;
    assert_eq!(a, b, "persisted file differs from the running set");
    text
}

fn generation(d: &Daemon) -> u64 {
    d.ask(json!({"op":"status"}))["generation"]
        .as_u64()
        .expect("generation")
}

/// The trace of a packet line: compiled classifier and reference agree; the decision.
fn decide(d: &Daemon, packet: &str) -> String {
    let r = d.ask(json!({"op":"trace","packet":packet}));
    assert_eq!(r["agree"], true, "{r}");
    r["decision"].as_str().expect("decision").to_string()
}

fn ok(r: &Value) {
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["persisted"], true, "{r}");
}

const SSH_IN: &str = "iface=eth0 proto=tcp src=192.168.0.7 dst=192.168.0.1 sport=40000 dport=22";
const WEB: &str = "iface=eth0 proto=tcp src=10.1.1.1 dst=192.168.0.1 sport=40000 dport=80";
const WEBS: &str = "iface=eth0 proto=tcp src=10.1.1.1 dst=192.168.0.1 sport=40000 dport=443";

#[test]
fn insert_replace_delete_flows_and_rules() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(dir.path(), Some(SEED));
    assert!(decide(&d, WEB).starts_with("deny alltherest"));

    // a new flow before the catch-all
    let r = d.ask(
        json!({"op":"insert","text":"flow web permit match proto tcp dstport 80",
                          "before":"alltherest"}),
    );
    ok(&r);
    assert_eq!(r["generation"], 2);
    assert!(
        decide(&d, WEB).starts_with("permit web 1"),
        "{}",
        decide(&d, WEB)
    );
    assert!(decide(&d, WEBS).starts_with("deny alltherest"));
    let text = running(&d);
    assert!(text.find("flow web").expect("web") < text.find("flow alltherest").expect("rest"));

    // a rule into it, then replace that rule
    ok(&d.ask(json!({"op":"insert","flow":"web","text":"match proto tcp dstport 443"})));
    assert!(decide(&d, WEBS).starts_with("permit web 2"));
    ok(&d.ask(json!({"op":"insert","flow":"web","at":1,"text":"ignore src 10.1.1.1"})));
    assert!(decide(&d, WEBS).starts_with("deny alltherest"), "ignored");
    ok(&d.ask(json!({"op":"replace","flow":"web","rule":1,"text":"ignore src 10.9.9.9"})));
    assert!(decide(&d, WEBS).starts_with("permit web 3"));
    ok(&d.ask(json!({"op":"delete","flow":"web","rule":1})));
    assert!(decide(&d, WEBS).starts_with("permit web 2"));

    // replace a whole flow, delete a flow
    ok(&d.ask(json!({"op":"replace","text":"flow web deny\n    match proto tcp dstport 80\n"})));
    assert!(decide(&d, WEB).starts_with("deny web 1"));
    assert!(decide(&d, WEBS).starts_with("deny alltherest"));
    ok(&d.ask(json!({"op":"delete","flow":"ssh"})));
    assert!(decide(&d, SSH_IN).starts_with("deny alltherest"));
    let text = running(&d);
    assert!(!text.contains("flow ssh"));
    assert_eq!(generation(&d), 8);

    // refused edits change nothing
    let before = running(&d);
    for (req, what) in [
        (
            json!({"op":"insert","text":"flow web permit match"}),
            "exists",
        ),
        (
            json!({"op":"insert","text":"flow x permit match iface eth9"}),
            "refused",
        ),
        (
            json!({"op":"insert","text":"flow x permit match","before":"nope"}),
            "no flow",
        ),
        (
            json!({"op":"insert","flow":"web","text":"match proto tcp dstport 99999"}),
            "refused",
        ),
        (
            json!({"op":"insert","flow":"web","at":9,"text":"match"}),
            "out of range",
        ),
        (
            json!({"op":"insert","flow":"web","text":"match flow y permit match"}),
            "exactly one",
        ),
        (json!({"op":"delete","flow":"nope"}), "no flow"),
        (json!({"op":"delete","flow":"web","rule":2}), "out of range"),
        (
            json!({"op":"replace","text":"flow nope permit match"}),
            "no flow",
        ),
        (
            json!({"op":"replace","text":"outflow web permit match"}),
            "delete it",
        ),
        (
            json!({"op":"insert","text":"flow a permit match flow b deny match"}),
            "exactly one",
        ),
    ] {
        let r = d.ask(req.clone());
        assert_eq!(r["ok"], false, "{req} -> {r}");
        let msg = format!("{}", r);
        assert!(msg.contains(what), "{req} -> {r}");
    }
    assert_eq!(running(&d), before);
    assert_eq!(generation(&d), 8);

    // rollback undoes the last edit (the ssh delete)
    ok(&d.ask(json!({"op":"rollback"})));
    assert!(decide(&d, SSH_IN).starts_with("permit ssh 2"));
    assert!(running(&d).contains("flow ssh"));
}

/// Simulated worker: count `n` packets of `bytes` each for the verdict of `packet`, in the
/// running generation's counters (worker 0).
fn count(d: &Daemon, packet: &str, n: u64, bytes: u64) {
    let rules = d.shared.rules.load();
    let c = &rules.flows.classifier;
    let v = c.classify(&c.key(&parse_packet_line(packet).expect("packet")));
    rules.counters[0].hit_flow_n(rules.flows.slot(v), n, n * bytes);
}

fn rule_stat(d: &Daemon, flow: &str, text: &str) -> Option<Value> {
    let s = d.ask(json!({"op":"stats"}));
    s["rules"]
        .as_array()?
        .iter()
        .find(|r| r["flow"] == flow && r["text"] == text)
        .cloned()
}

#[test]
fn counters_follow_rule_identity_across_pushes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(dir.path(), Some(SEED));
    let ssh = "match proto tcp dst 192.168.0.1 dstport 22";
    count(&d, SSH_IN, 5, 100);
    // an unrelated flow inserted before it: the rule keeps its counters
    ok(&d.ask(
        json!({"op":"insert","text":"flow web permit match proto tcp dstport 80",
                      "before":"ssh"}),
    ));
    count(&d, SSH_IN, 2, 100);
    count(&d, WEB, 3, 60);
    let s = rule_stat(&d, "ssh", ssh).expect("ssh rule");
    assert_eq!(s["total"], 7, "{s}");
    assert_eq!(s["total_bytes"], 700, "{s}");
    assert_eq!(s["hits"], 2, "{s}");
    assert_eq!(s["rule"], 2);
    assert_eq!(s["live"], true);
    // a full apply of the same text with other flows changed: still the same identity
    let text = running(&d).replace("dstport 53", "dstport 5353");
    ok(&d.ask(json!({"op":"apply","flows":text})));
    count(&d, SSH_IN, 1, 100);
    assert_eq!(rule_stat(&d, "ssh", ssh).expect("ssh")["total"], 8);
    // the rule deleted: its totals stay, retired
    ok(&d.ask(json!({"op":"delete","flow":"web"})));
    let w = rule_stat(&d, "web", "match proto tcp dstport 80").expect("web kept");
    assert_eq!(w["live"], false, "{w}");
    assert_eq!(w["total"], 3);
    assert_eq!(w["total_bytes"], 180);
    // rollback brings it back under the same identity, with its totals
    ok(&d.ask(json!({"op":"rollback"})));
    count(&d, WEB, 1, 60);
    let w = rule_stat(&d, "web", "match proto tcp dstport 80").expect("web back");
    assert_eq!(w["live"], true, "{w}");
    assert_eq!(w["total"], 4);
    // the default's counters are the list's, whatever the pushes
    let s = d.ask(json!({"op":"stats"}));
    let defaults = s["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .filter(|r| r["flow"] == "-")
        .count();
    assert_eq!(defaults, 2, "one default per list");
}

/// The edit log (`FLOWS.edits`): an edit is in the flows file once its request is answered
/// (the log is then empty); an edit the daemon logged but could not write into the flows
/// file (a crash between publication and the rewrite) is replayed at the next start; a log
/// written against another version of the flows file, or an append cut short, is not.
#[test]
fn edits_left_in_the_log_are_replayed_at_start() {
    use flowgate_control::editlog::EditLog;
    use flowgate_control::persist::FileStamp;

    let dir = tempfile::tempdir().expect("tempdir");
    let mut d = Daemon::start(dir.path(), Some(SEED));
    let log_path = EditLog::path_for(&d.flows);
    // the first edit after start extends the file the daemon read
    ok(&d.ask(
        json!({"op":"insert","text":"flow web permit match proto tcp dstport 80",
                     "before":"alltherest"}),
    ));
    assert!(running(&d).contains("flow web"));
    let log_len = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    assert!(log_path.exists(), "the edit went through the log");
    assert_eq!(log_len(&log_path), 0, "the rewrite empties the log");
    ok(&d.ask(json!({"op":"delete","flow":"web"})));
    assert_eq!(log_len(&log_path), 0);
    d.stop();
    drop(d);

    // as a crash after publication would leave it: the flows file without the edits, the
    // log with them (the on-disk form of two edits)
    let flows = support::appliance(dir.path()).flows;
    let (mut log, pending) = EditLog::open(&flows);
    assert!(pending.entries.is_empty());
    let base = FileStamp::of(&flows).expect("stamp");
    log.append(
        base,
        r#"{"edit":"insert_flow","text":"flow web permit match proto tcp dstport 80","before":"alltherest","after":null}"#,
    )
    .expect("append");
    log.append(
        base,
        r#"{"edit":"rule","flow":"web","rule":{"insert":null},"text":"match proto tcp dstport 443"}"#,
    )
    .expect("append");
    let d = Daemon::start(dir.path(), None);
    assert!(
        decide(&d, WEB).starts_with("permit web 1"),
        "{}",
        decide(&d, WEB)
    );
    assert!(decide(&d, WEBS).starts_with("permit web 2"));
    assert_eq!(generation(&d), 3, "two edits on the loaded set");
    assert!(
        running(&d).contains("flow web"),
        "the flows file holds the replayed edits"
    );
    assert_eq!(log_len(&log_path), 0);
    // the next edit goes through the log again, and rollback still undoes one edit
    ok(&d.ask(json!({"op":"delete","flow":"web","rule":1})));
    assert!(decide(&d, WEB).starts_with("deny alltherest"));
    ok(&d.ask(json!({"op":"rollback"})));
    assert!(decide(&d, WEB).starts_with("permit web 1"));
    drop(d);

    // a log against another version of the file: ignored (and an append cut short too)
    let (mut log, _) = EditLog::open(&flows);
    let stale = FileStamp::of(&flows).expect("stamp");
    log.append(stale, r#"{"edit":"delete_flow","flow":"web"}"#)
        .expect("append");
    let text = std::fs::read_to_string(&flows).expect("flows");
    std::fs::write(&flows, format!("{text}\n")).expect("touch the flows file");
    let d = Daemon::start(dir.path(), None);
    assert!(
        decide(&d, WEB).starts_with("permit web 1"),
        "stale log not replayed"
    );
    assert_eq!(generation(&d), 1);
    drop(d);
    let (mut log, _) = EditLog::open(&flows);
    let base = FileStamp::of(&flows).expect("stamp");
    log.append(base, r#"{"edit":"delete_flow","flow":"web"}"#)
        .expect("append");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&log_path)
        .expect("log");
    std::io::Write::write_all(&mut f, br#"{"edit":"delete_flow","flow":"ss"#).expect("cut");
    let d = Daemon::start(dir.path(), None);
    assert!(
        decide(&d, WEB).starts_with("deny alltherest"),
        "whole entry replayed"
    );
    assert!(
        decide(&d, SSH_IN).starts_with("permit ssh"),
        "cut entry not replayed"
    );
    assert_eq!(generation(&d), 2);
}
