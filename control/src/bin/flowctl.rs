//! `flowctl`: talks to a running `flowgate run` over its control socket.
//!
//! Every command sends one JSON request line and prints the reply for a person, or with
//! `--json` as one JSON object (the daemon's reply plus `json_version`, a documented interface:
//! docs/control.md). Exit status: 0 ok, 1 refused, 2 usage, 3 unreachable.
//! `check FILE` also works offline (`--offline`, or when the daemon is not running).
//! `watch` polls `stats` and shows rates per rule, port and server ([`watch`]).

#[path = "flowctl/watch.rs"]
mod watch;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use flowgate_control::cli::flowctl::{Cli, Cmd, DirectorCmd, ShowWhat};
use flowgate_control::protocol::{
    AppliedReply, CheckReply, DiffReply, DirectorStatus, DirectorsReply, DoneReply, ErrorReply,
    FlowsReply, Request, StatsReply, StatusReply, TraceReply,
};
use serde_json::Value;

/// `flowctl --json` output's version: bumped when a field is renamed, removed or changes
/// meaning (added fields keep it); see docs/control.md.
pub const JSON_VERSION: u64 = 1;

/// Why a command failed, and the exit status that says so (docs/control.md).
#[derive(Debug)]
enum Failure {
    /// The daemon (or an offline check) refused: exit 1.
    Refused(ErrorReply),
    /// No daemon answers on the socket, or its reply is unreadable: exit 3.
    Unreachable(String),
}

/// Exit statuses (2 is clap's usage error).
const EXIT_REFUSED: u8 = 1;
const EXIT_UNREACHABLE: u8 = 3;

impl From<ErrorReply> for Failure {
    fn from(e: ErrorReply) -> Failure {
        Failure::Refused(e)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Refused(e)) => {
            eprintln!("flowctl: {}", e.error);
            if let Some(d) = &e.diagnostics {
                eprint!("{d}");
            }
            ExitCode::from(EXIT_REFUSED)
        }
        Err(Failure::Unreachable(why)) => {
            eprintln!("flowctl: {why}");
            ExitCode::from(EXIT_UNREACHABLE)
        }
    }
}

fn read(path: &Path) -> Result<String, ErrorReply> {
    std::fs::read_to_string(path)
        .map_err(|e| ErrorReply::new(format!("cannot read {}: {e}", path.display())))
}

fn run(cli: &Cli) -> Result<(), Failure> {
    let name = |p: &Path| Some(p.display().to_string());
    let req = match &cli.cmd {
        Cmd::Status => Request::Status {},
        Cmd::Check {
            file,
            offline,
            config,
        } => {
            if *offline || config.is_some() || !cli.socket.exists() {
                return check_offline(file, config.as_deref(), cli.json).map_err(Failure::from);
            }
            Request::Check {
                flows: read(file)?,
                name: name(file),
            }
        }
        Cmd::Diff { file } => Request::Diff {
            flows: read(file)?,
            name: name(file),
        },
        Cmd::Apply { file } => Request::Apply {
            flows: read(file)?,
            name: name(file),
        },
        Cmd::Rollback => Request::Rollback {},
        Cmd::Insert {
            before,
            after,
            flow,
            at,
            text,
        } => Request::Insert {
            text: text.join(" "),
            flow: flow.clone(),
            at: *at,
            before: before.clone(),
            after: after.clone(),
        },
        Cmd::Delete { flow, rule } => Request::Delete {
            flow: flow.clone(),
            rule: *rule,
        },
        Cmd::Replace { flow, rule, text } => Request::Replace {
            text: text.join(" "),
            flow: flow.clone(),
            rule: *rule,
        },
        Cmd::Show {
            what: ShowWhat::Flows,
        } => Request::ShowFlows {},
        Cmd::Stats => Request::Stats {},
        Cmd::Watch {
            interval,
            count,
            all,
        } => return watch::run(&cli.socket, *interval, *count, *all, cli.json),
        Cmd::Trace { outflows, packet } => Request::Trace {
            packet: packet.join(" "),
            outflows: *outflows,
        },
        Cmd::Director { cmd } => match cmd {
            DirectorCmd::List => Request::DirectorList {},
            DirectorCmd::Enable { director, server } => Request::DirectorEnable {
                director: director.clone(),
                server: server.clone(),
            },
            DirectorCmd::Disable { director, server } => Request::DirectorDisable {
                director: director.clone(),
                server: server.clone(),
            },
            DirectorCmd::Weight {
                director,
                server,
                weight,
            } => Request::DirectorWeight {
                director: director.clone(),
                server: server.clone(),
                weight: *weight,
            },
        },
    };
    let reply = call(&cli.socket, &req)?;
    if cli.json {
        println!("{}", versioned(reply.clone()));
        return ok_or_err(&reply).map(|_| ()).map_err(Failure::from);
    }
    let v = ok_or_err(&reply)?;
    render(&req, v).map_err(Failure::from)
}

/// A reply as `--json` prints it: the daemon's object with `json_version` added.
fn versioned(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.insert("json_version".into(), JSON_VERSION.into());
    }
    v
}

/// `check` without a daemon (`--json`: the reply a daemon would give, versioned).
fn check_offline(file: &Path, config: Option<&Path>, json: bool) -> Result<(), ErrorReply> {
    let appliance = match config {
        Some(c) => {
            Some(flowgate_config::appliance::load(c).map_err(|e| ErrorReply::new(e.to_string()))?)
        }
        None => None,
    };
    let names = appliance
        .as_ref()
        .map(|a| a as &dyn flowgate_config::flows::Names);
    match flowgate_config::flows::load_file(file, names) {
        Ok(loaded) => {
            if json {
                let (flows, outflows, rules) = flowgate_control::state::sizes(&loaded.file);
                let reply = flowgate_control::protocol::encode(&Ok(
                    flowgate_control::protocol::Body::Check(CheckReply {
                        flows,
                        outflows,
                        rules,
                        warnings: loaded.render_warnings(false),
                    }),
                ));
                let v: Value = serde_json::from_str(&reply).unwrap_or_default();
                println!("{}", versioned(v));
                return Ok(());
            }
            eprint!("{}", loaded.render_warnings(false));
            println!("{}: ok", file.display());
            Ok(())
        }
        Err(flowgate_config::flows::LoadError::Invalid(report)) => {
            let e = ErrorReply {
                error: format!("{}: refused", file.display()),
                diagnostics: Some(report.render(false)),
            };
            if json {
                let v: Value =
                    serde_json::from_str(&flowgate_control::protocol::encode(&Err(e.clone())))
                        .unwrap_or_default();
                println!("{}", versioned(v));
            }
            Err(e)
        }
        Err(e) => Err(ErrorReply::new(e.to_string())),
    }
}

/// Sends one request and reads one reply line.
fn call(socket: &Path, req: &Request) -> Result<Value, Failure> {
    let gone = |what: &str, e: &dyn std::fmt::Display| {
        Failure::Unreachable(format!("{what} {}: {e}", socket.display()))
    };
    let mut s = UnixStream::connect(socket).map_err(|e| gone("cannot connect to", &e))?;
    let mut line = serde_json::to_string(req).map_err(|e| gone("cannot encode for", &e))?;
    line.push('\n');
    s.write_all(line.as_bytes())
        .map_err(|e| gone("cannot send to", &e))?;
    let mut r = BufReader::new(s);
    let mut out = String::new();
    match r.read_line(&mut out) {
        Ok(0) => return Err(gone("no reply from", &"connection closed")),
        Ok(_) => {}
        Err(e) => return Err(gone("cannot read the reply from", &e)),
    }
    serde_json::from_str(&out).map_err(|e| gone("unreadable reply from", &e))
}

fn ok_or_err(v: &Value) -> Result<&Value, ErrorReply> {
    if v.get("ok").and_then(Value::as_bool) == Some(true) {
        Ok(v)
    } else {
        Err(serde_json::from_value(v.clone())
            .unwrap_or_else(|_| ErrorReply::new(format!("unexpected reply: {v}"))))
    }
}

fn body<T: serde::de::DeserializeOwned>(v: &Value) -> Result<T, ErrorReply> {
    serde_json::from_value(v.clone()).map_err(|e| ErrorReply::new(format!("bad reply: {e}")))
}

fn render(req: &Request, v: &Value) -> Result<(), ErrorReply> {
    match req {
        Request::Status {} => {
            let s: StatusReply = body(v)?;
            println!("generation   {}", s.generation);
            println!("uptime       {}s", s.uptime_s);
            println!("workers      {}", s.workers);
            println!("ports        {}", s.ports.join(" "));
            println!(
                "rules        {} flows, {} outflows, {} rules",
                s.flows, s.outflows, s.rules
            );
            println!("swaps        {}", s.swaps);
            println!("rollback     {} set(s) back", s.rollback_depth);
            println!("flows file   {}", s.flows_path);
        }
        Request::Check { name, .. } => {
            let c: CheckReply = body(v)?;
            eprint!("{}", c.warnings);
            println!(
                "{}: ok ({} flows, {} outflows, {} rules)",
                name.as_deref().unwrap_or("flows"),
                c.flows,
                c.outflows,
                c.rules
            );
        }
        Request::Diff { .. } => {
            let d: DiffReply = body(v)?;
            if d.added.is_empty()
                && d.removed.is_empty()
                && d.changed.is_empty()
                && d.moved.is_empty()
            {
                println!("no changes");
            }
            for a in &d.added {
                for l in a.lines() {
                    println!("+ {l}");
                }
            }
            for r in &d.removed {
                println!("- removed {r}");
            }
            for c in &d.changed {
                println!("~ changed {}", c.name);
                for l in c.before.lines() {
                    println!("  - {l}");
                }
                for l in c.after.lines() {
                    println!("  + {l}");
                }
            }
            for m in &d.moved {
                println!("~ moved {m}");
            }
        }
        Request::Apply { .. }
        | Request::ApplyPath { .. }
        | Request::Rollback {}
        | Request::Insert { .. }
        | Request::Delete { .. }
        | Request::Replace { .. } => {
            let a: AppliedReply = body(v)?;
            eprint!("{}", a.warnings);
            println!(
                "generation {} published in {} us (compile {} us), persisted in {} us",
                a.generation, a.publish_us, a.compile_us, a.persist_us
            );
            if let Some(e) = a.persist_error {
                return Err(ErrorReply::new(format!("published but not persisted: {e}")));
            }
        }
        Request::ShowFlows {} => {
            let f: FlowsReply = body(v)?;
            println!("# generation {}", f.generation);
            print!("{}", f.text);
        }
        Request::Stats {} => render_stats(&body::<StatsReply>(v)?),
        Request::Trace { .. } => {
            let t: TraceReply = body(v)?;
            println!("# {}s, generation {}", t.list, t.generation);
            for s in &t.steps {
                println!("{} {} {}: {}", t.list, s.flow, s.policy, s.outcome);
                for r in &s.rules {
                    println!("    {r}");
                }
            }
            println!("verdict: {}", t.decision);
            if !t.agree {
                return Err(ErrorReply::new(format!(
                    "the compiled classifier says `{}`: a classifier bug, please report",
                    t.classifier
                )));
            }
        }
        Request::DirectorList {} => render_directors(&body::<DirectorsReply>(v)?.directors),
        Request::DirectorEnable { .. }
        | Request::DirectorDisable { .. }
        | Request::DirectorWeight { .. } => {
            println!("{}", body::<DoneReply>(v)?.done);
        }
    }
    Ok(())
}

fn render_stats(s: &StatsReply) {
    println!("generation {}", s.generation);
    println!(
        "{:<8} {:<20} {:>5} {:>12} {:>14} {:>16}  rule",
        "list", "flow", "#", "hits(gen)", "packets", "bytes"
    );
    for r in &s.rules {
        let rule = match (r.live, r.rule) {
            (false, _) => "gone".to_string(),
            (true, 0) => "-".to_string(),
            (true, n) => n.to_string(),
        };
        let text = if r.occurrence > 1 {
            format!("{} (#{})", r.text, r.occurrence)
        } else {
            r.text.clone()
        };
        println!(
            "{:<8} {:<20} {:>5} {:>12} {:>14} {:>16}  {}",
            r.list, r.flow, rule, r.hits, r.total, r.total_bytes, text
        );
    }
    println!();
    for v in s.verdicts.iter().filter(|v| v.packets > 0) {
        println!("{:<8} {:<10} {:>14}", v.list, v.verdict, v.packets);
    }
    println!();
    for p in &s.ports {
        let cols: Vec<String> = p.counters.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("port {}: {}", p.name, cols.join(" "));
        if let Some(n) = &p.nic {
            println!(
                "  nic: ipackets={} opackets={} ibytes={} obytes={} imissed={} ierrors={} oerrors={} rx_nombuf={}",
                n.ipackets, n.opackets, n.ibytes, n.obytes, n.imissed, n.ierrors, n.oerrors, n.rx_nombuf
            );
            if n.tx_shared_bursts > 0 {
                println!(
                    "  tx queue shared by workers: bursts={} lock_contended={}",
                    n.tx_shared_bursts, n.tx_lock_contended
                );
            }
        }
    }
    let drops: Vec<String> = s
        .drops
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("{k}={n}"))
        .collect();
    println!(
        "drops: {}",
        if drops.is_empty() {
            "none".into()
        } else {
            drops.join(" ")
        }
    );
    let workers: Vec<String> = s.workers.iter().map(|(k, n)| format!("{k}={n}")).collect();
    if !workers.is_empty() {
        println!("workers: {}", workers.join(" "));
    }
    let sync: Vec<String> = s.sync.iter().map(|(k, n)| format!("{k}={n}")).collect();
    if !sync.is_empty() {
        println!("sync: {}", sync.join(" "));
    }
    if !s.directors.is_empty() {
        render_directors(&s.directors);
    }
}

fn render_directors(ds: &[DirectorStatus]) {
    for d in ds {
        println!("director {} ({})", d.name, d.scheduler);
        if !d.counters.is_empty() {
            let cols: Vec<String> = d
                .counters
                .iter()
                .filter(|(k, n)| *n > 0 || !k.starts_with("drop_"))
                .map(|(k, n)| format!("{k}={n}"))
                .collect();
            println!("  {}", cols.join(" "));
        }
        for s in &d.servers {
            println!(
                "  {:<16} {:<40} weight {:>5} {} {} conns {} active {} inactive {} packets {} bytes {}",
                s.name,
                s.address,
                s.weight,
                if s.enabled { "enabled" } else { "disabled" },
                if s.up { "up" } else { "down" },
                s.connections,
                s.active,
                s.inactive,
                s.packets,
                s.bytes
            );
        }
    }
}
