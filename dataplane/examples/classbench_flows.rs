//! Turn a ClassBench rule set into a flows file for `flowgate run` (the dataplane benchmark).
//!
//! ```text
//! cargo run --release -p flowgate-dataplane --example classbench_flows -- \
//!     --rules R --out F.flows [--policy permit|deny]
//! ```
//!
//! Output: one flow `cb` with the given policy (default `permit`) whose `match` rules are the
//! ClassBench rules in file order, so the first ClassBench rule that holds decides, as in
//! ClassBench. When the rule set does not end with the whole-space rule (all nine shipped sets
//! do), a final `flow rest deny` / `match` is added so that every packet is decided by a flow.
//!
//! The flows language is stricter than ClassBench, so the translation is not always exact:
//!
//! - `0 : 65535` port ranges and `/0` prefixes are omitted (they hold for every packet).
//! - Ports are only allowed under a non-negated `proto tcp` / `proto udp`. A wildcard-protocol
//!   rule with a port range becomes two rules, `proto tcp ...` then `proto udp ...`. This is
//!   exact for TCP and UDP packets; for a packet of any other protocol (ClassBench traces have
//!   0 and 255) the ClassBench rule held (ClassBench gives every packet ports) but the flows
//!   rules do not, so such a packet falls through to a later rule.
//! - A rule for a specific protocol other than TCP/UDP with a port range keeps the protocol
//!   and drops the ports: it holds for more packets than the ClassBench rule (counted and
//!   reported on stderr as "approximated").
//!
//! In the benchmark the last rule is the catch-all, so every packet is permitted and forwarded
//! whichever rule decides it. The rule files are benchmark data with unclear terms: write the
//! flows file to a temporary or `target/` directory at run time, never into the repository.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;

use flowgate_dataplane::classify::classbench::{load_rules, CbRule};

const USAGE: &str = "usage: classbench_flows --rules RULES --out OUT.flows [--policy permit|deny]";

const ANY_PORT: (u16, u16) = (0, 65535);

struct Args {
    rules: PathBuf,
    out: PathBuf,
    policy: String,
}

fn parse_args() -> Result<Args, String> {
    let mut rules = None;
    let mut out = None;
    let mut policy = "permit".to_string();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--rules" => rules = Some(PathBuf::from(val("--rules")?)),
            "--out" => out = Some(PathBuf::from(val("--out")?)),
            "--policy" => {
                policy = val("--policy")?;
                if policy != "permit" && policy != "deny" {
                    return Err(format!("--policy must be permit or deny, got {policy:?}"));
                }
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Args {
        rules: rules.ok_or("--rules is required")?,
        out: out.ok_or("--out is required")?,
        policy,
    })
}

/// What the translation did, for the summary line.
#[derive(Debug, Default)]
struct Stats {
    rules: usize,
    flow_rules: usize,
    split: usize,
    approximated: usize,
}

fn is_catch_all(r: &CbRule) -> bool {
    r.src.1 == 0 && r.dst.1 == 0 && r.sport == ANY_PORT && r.dport == ANY_PORT && r.proto.1 == 0
}

fn ports(lo: u16, hi: u16) -> String {
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}:{hi}")
    }
}

/// One `match` line: `proto` (if any), then addresses, then ports (if `with_ports`).
fn match_line(out: &mut String, r: &CbRule, proto: Option<&str>, with_ports: bool) {
    out.push_str("  match");
    if let Some(p) = proto {
        let _ = write!(out, " proto {p}");
    }
    if r.src.1 != 0 {
        let _ = write!(out, " src {}/{}", Ipv4Addr::from(r.src.0), r.src.1);
    }
    if r.dst.1 != 0 {
        let _ = write!(out, " dst {}/{}", Ipv4Addr::from(r.dst.0), r.dst.1);
    }
    if with_ports {
        if r.sport != ANY_PORT {
            let _ = write!(out, " srcport {}", ports(r.sport.0, r.sport.1));
        }
        if r.dport != ANY_PORT {
            let _ = write!(out, " dstport {}", ports(r.dport.0, r.dport.1));
        }
    }
    out.push('\n');
}

/// The flow rules for one ClassBench rule (one, or two for wildcard protocol with ports).
fn translate(out: &mut String, r: &CbRule, st: &mut Stats) {
    let has_ports = r.sport != ANY_PORT || r.dport != ANY_PORT;
    let before = out.len();
    match (r.proto.1, r.proto.0) {
        (0, _) if has_ports => {
            match_line(out, r, Some("tcp"), true);
            match_line(out, r, Some("udp"), true);
            st.split += 1;
            st.flow_rules += 2;
        }
        (0, _) => {
            match_line(out, r, None, false);
            st.flow_rules += 1;
        }
        (_, 6) => {
            match_line(out, r, Some("tcp"), true);
            st.flow_rules += 1;
        }
        (_, 17) => {
            match_line(out, r, Some("udp"), true);
            st.flow_rules += 1;
        }
        (_, p) => {
            if has_ports {
                st.approximated += 1;
            }
            match_line(out, r, Some(&p.to_string()), false);
            st.flow_rules += 1;
        }
    }
    debug_assert!(out.len() > before);
}

fn run(args: &Args) -> Result<Stats, String> {
    let rules = load_rules(&args.rules).map_err(|e| e.to_string())?;
    let mut st = Stats {
        rules: rules.len(),
        ..Stats::default()
    };
    let mut body = String::new();
    for r in &rules {
        translate(&mut body, r, &mut st);
    }
    let mut text = String::new();
    let _ = writeln!(
        text,
        "# Generated by `classbench_flows` from {} ({} ClassBench rules).",
        args.rules.display(),
        rules.len()
    );
    text.push_str("# Benchmark data: do not commit.\n");
    let _ = writeln!(text, "flow cb {}", args.policy);
    text.push_str(&body);
    if !rules.last().is_some_and(is_catch_all) {
        text.push_str("flow rest deny\n  match\n");
    }
    std::fs::write(&args.out, text).map_err(|e| format!("{}: {e}", args.out.display()))?;
    Ok(st)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("classbench_flows: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(st) => {
            eprintln!(
                "classbench_flows: {} rules -> {} flow rules in {} ({} split tcp/udp, {} approximated: ports dropped for a non-TCP/UDP protocol)",
                st.rules,
                st.flow_rules,
                args.out.display(),
                st.split,
                st.approximated
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("classbench_flows: {e}");
            ExitCode::FAILURE
        }
    }
}
