//! Swap latency: request to publish (load + validate + compile + `ArcSwap::store`) of flows
//! files of 1K, 10K and 100K rules, through the control thread's own `apply` and through the
//! socket.
//!
//! Rules come from the ClassBench sets at `$FLOWGATE_CLASSBENCH` (default
//! `/work/shared/classbench`, `acl1_{1K,10K,100K}.rules`), converted to flows text at run
//! time (16 rules per flow); without them, random rules of the same shape.
//! Run: `cargo bench -p flowgate-control --bench swap [-- SIZES...]`, e.g. `-- 1K 10K`.
//!
//! A second table: incremental updates (`insert` a flow, `replace` a rule of it, `insert` a
//! rule, `delete` the rule, `delete` the flow; [`EDIT_ROUNDS`] rounds) with the set of each size
//! loaded, through the control thread: request to publish (median and worst; it includes
//! persisting the flows file, which comes before publication), of which the edit and its
//! compile, and the persistence (the flows file rewritten and fsynced, the history), then
//! the whole request (with what follows publication).

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use flowgate_config::appliance::parse_with_cpus;
use flowgate_control::protocol::{Body, Request};
use flowgate_control::{start, ControlOptions, Controller, Shared};
use flowgate_dataplane::classify::classbench::{load_rules, CbRule};
use flowgate_dataplane::ruleset::RuleSet;

/// Rules per flow: a list holds at most 65534 flows, so 100K rules need several per flow.
const RULES_PER_FLOW: usize = 16;

/// Rounds of five incremental updates per size.
const EDIT_ROUNDS: usize = 20;

/// The rules as a flows file, flows named `{prefix}{n}`.
fn flows_text(rules: &[CbRule], prefix: &str) -> String {
    let mut s = String::new();
    for (i, r) in rules.iter().enumerate() {
        if i % RULES_PER_FLOW == 0 {
            let policy = if (i / RULES_PER_FLOW) % 2 == 1 {
                "deny"
            } else {
                "permit"
            };
            let _ = writeln!(s, "flow {prefix}{} {policy}", i / RULES_PER_FLOW);
        }
        s.push_str("    match");
        let full = |p: (u16, u16)| p == (0, 65535);
        let ports = !full(r.sport) || !full(r.dport);
        match r.proto {
            (p, 0xff) => {
                let _ = write!(s, " proto {p}");
            }
            // any protocol with ports: the flows language needs tcp or udp for ports
            _ if ports => s.push_str(" proto tcp"),
            _ => {}
        }
        let _ = write!(s, " src {}/{}", Ipv4Addr::from(r.src.0), r.src.1);
        let _ = write!(s, " dst {}/{}", Ipv4Addr::from(r.dst.0), r.dst.1);
        let porty = matches!(r.proto, (6 | 17, 0xff)) || (r.proto.1 == 0 && ports);
        if porty {
            if !full(r.sport) {
                let _ = write!(s, " srcport {}:{}", r.sport.0, r.sport.1);
            }
            if !full(r.dport) {
                let _ = write!(s, " dstport {}:{}", r.dport.0, r.dport.1);
            }
        }
        s.push('\n');
    }
    s
}

/// Random rules (xorshift), when the ClassBench files are absent.
fn random_rules(n: usize, seed: u64) -> Vec<CbRule> {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n)
        .map(|_| {
            let lo = (next() % 60000) as u16;
            CbRule {
                src: (next() as u32, 8 + (next() % 25) as u8),
                dst: (next() as u32, 8 + (next() % 25) as u8),
                sport: (0, 65535),
                dport: (lo, lo + (next() % 100) as u16),
                proto: (6, 0xff),
            }
        })
        .collect()
}

fn rules_for(size: &str) -> (Vec<CbRule>, String) {
    let dir =
        std::env::var("FLOWGATE_CLASSBENCH").unwrap_or_else(|_| "/work/shared/classbench".into());
    let path = PathBuf::from(dir).join(format!("acl1_{size}.rules"));
    match load_rules(&path) {
        Ok(r) => (r, path.display().to_string()),
        Err(_) => {
            let n = size.trim_end_matches('K').parse::<usize>().unwrap_or(1) * 1000;
            (random_rules(n, 0x5eed), format!("random ({n} rules)"))
        }
    }
}

const CONFIG: &str = r#"
flows = "flows.conf"
[dataplane]
workers = [0]
[[port]]
name = "eth0"
device = "net_null0"
"#;

fn main() {
    let sizes: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let sizes = if sizes.is_empty() {
        vec!["1K".to_string(), "10K".into(), "100K".into()]
    } else {
        sizes
    };
    let dir = std::env::temp_dir().join(format!("flowgate-swap-bench-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("cannot create {}: {e}", dir.display());
        return;
    }
    let cfg = dir.join("flowgate.toml");
    let cfg_text = format!(
        "{CONFIG}[control]\nsocket = \"{}\"\n",
        dir.join("ctl.sock").display()
    );
    let app = match parse_with_cpus(&cfg.to_string_lossy(), &cfg_text, 4) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return;
        }
    };
    println!("| set | source | rules | bytes | parse (ms) | lint (ms; after publication) | compile (ms) | request to publish, fresh set, in-process (ms) | same, socket (ms) | flowctl round trip (ms) | request to publish, one rule changed (ms) |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut edits = Vec::new();
    for size in &sizes {
        let (rules, source) = rules_for(size);
        // two sets of the same rules under other flow names: each apply of one after the
        // other shares no flow with the running set (a fresh set: compiled whole)
        let text = flows_text(&rules, "f");
        let other = flows_text(&rules, "g");
        // the running set with one rule changed (the usual push: compiled as a delta)
        let one_changed = |n: usize| {
            text.replacen(
                "    match",
                &format!("    match proto udp dstport {n}\n    match"),
                1,
            )
        };
        // phases, measured apart
        let t = Instant::now();
        let parsed = match flowgate_config::flows::parse_with(&text, Some(&app)) {
            Ok(p) => p,
            Err(d) => {
                eprintln!("{d:?}");
                return;
            }
        };
        let parse_ms = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let _ = flowgate_config::flows::lint::lint(&parsed.file, &parsed.spans, &text);
        let lint_ms = format!("{:.1}", t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let set = match RuleSet::compile(parsed.file, &app, 1) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{e}");
                return;
            }
        };
        let compile_ms = t.elapsed().as_secs_f64() * 1e3;

        // in-process: the control thread's apply, as the socket server calls it
        let shared = Arc::new(Shared::new(app.clone(), set, None));
        let mut opts = ControlOptions::from_appliance(&app);
        opts.metrics = None;
        let mut ctl = Controller::new(Arc::clone(&shared), String::new(), &mut opts);
        let mut best = f64::MAX;
        for i in 0..4 {
            let flows = if i % 2 == 0 {
                other.clone()
            } else {
                text.clone()
            };
            match ctl.handle(Request::Apply { flows, name: None }, Instant::now()) {
                Ok(Body::Applied(a)) => best = best.min(a.publish_us as f64 / 1e3),
                other => {
                    eprintln!("apply failed: {other:?}");
                    return;
                }
            }
        }
        // the running set is `text`: pushes of it with one rule changed
        let mut changed_best = f64::MAX;
        for i in 0..3 {
            match ctl.handle(
                Request::Apply {
                    flows: one_changed(i + 1),
                    name: None,
                },
                Instant::now(),
            ) {
                Ok(Body::Applied(a)) => changed_best = changed_best.min(a.publish_us as f64 / 1e3),
                other => {
                    eprintln!("apply failed: {other:?}");
                    return;
                }
            }
        }
        // incremental updates with this set loaded
        let mut publish = Vec::new();
        let mut whole = Vec::new();
        let (mut edit_compile, mut edit_persist) = (Vec::new(), Vec::new());
        for round in 0..EDIT_ROUNDS {
            let at = format!(
                "f{}",
                (round * 7919) % (rules.len() / RULES_PER_FLOW).max(1)
            );
            let ops = [
                Request::Insert {
                    text: format!("flow edit{round} permit match proto tcp dstport {round}"),
                    flow: None,
                    at: None,
                    before: Some(at),
                    after: None,
                },
                Request::Replace {
                    text: "match proto udp dstport 53".into(),
                    flow: Some(format!("edit{round}")),
                    rule: Some(1),
                },
                Request::Insert {
                    text: "match src 10.0.0.0/8 proto tcp dstport 22".into(),
                    flow: Some(format!("edit{round}")),
                    at: Some(1),
                    before: None,
                    after: None,
                },
                Request::Delete {
                    flow: format!("edit{round}"),
                    rule: Some(2),
                },
                Request::Delete {
                    flow: format!("edit{round}"),
                    rule: None,
                },
            ];
            for op in ops {
                let t = Instant::now();
                match ctl.handle(op, t) {
                    Ok(Body::Applied(a)) => {
                        whole.push(t.elapsed().as_secs_f64() * 1e3);
                        publish.push(a.publish_us as f64 / 1e3);
                        edit_compile.push(a.compile_us as f64 / 1e3);
                        edit_persist.push(a.persist_us as f64 / 1e3);
                    }
                    other => {
                        eprintln!("edit failed: {other:?}");
                        return;
                    }
                }
            }
        }
        let stat = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            (v[v.len() / 2], v[v.len() - 1])
        };
        let (p50, pmax) = stat(&mut publish);
        let (w50, wmax) = stat(&mut whole);
        let (c50, _) = stat(&mut edit_compile);
        let (s50, _) = stat(&mut edit_persist);
        edits.push(format!(
            "| {size} | {} | {} | {p50:.3} | {pmax:.3} | {c50:.3} | {s50:.3} | {w50:.2} | {wmax:.2} |",
            rules.len(),
            publish.len()
        ));
        drop(ctl);

        // through the socket (server thread -> control thread), as flowctl does
        let handle = match start(
            Arc::clone(&shared),
            String::new(),
            ControlOptions::from_appliance(&app),
        ) {
            Ok(h) => h,
            Err(e) => {
                eprintln!("{e}");
                return;
            }
        };
        let lines = [
            serde_json::json!({"op":"apply","flows":other}).to_string(),
            serde_json::json!({"op":"apply","flows":text}).to_string(),
        ];
        let mut sock_best = f64::MAX;
        let mut rt_best = f64::MAX;
        for i in 0..4 {
            let t = Instant::now();
            let reply = round_trip(&app.control.socket, &lines[i % 2]);
            rt_best = rt_best.min(t.elapsed().as_secs_f64() * 1e3);
            match reply.get("publish_us").and_then(|v| v.as_u64()) {
                Some(us) => sock_best = sock_best.min(us as f64 / 1e3),
                None => {
                    eprintln!("apply over the socket failed: {reply}");
                    return;
                }
            }
        }
        handle.shutdown();
        println!(
            "| {size} | {source} | {} | {} | {parse_ms:.1} | {lint_ms} | {compile_ms:.1} | {best:.1} | {sock_best:.1} | {rt_best:.1} | {changed_best:.1} |",
            rules.len(),
            text.len(),
        );
    }
    println!();
    println!("| set loaded | rules | updates | request to publish, median (ms) | worst (ms) | of which edit + compile, median (ms) | of which persistence, median (ms) | whole request, median (ms) | worst (ms) |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for line in edits {
        println!("{line}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn round_trip(socket: &std::path::Path, line: &str) -> serde_json::Value {
    use std::io::{BufRead, BufReader, Write};
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(socket) else {
        return serde_json::Value::Null;
    };
    let _ = s.write_all(line.as_bytes());
    let _ = s.write_all(b"\n");
    let mut out = String::new();
    let _ = BufReader::new(s).read_line(&mut out);
    serde_json::from_str(&out).unwrap_or(serde_json::Value::Null)
}
