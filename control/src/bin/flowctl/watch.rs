//! `flowctl watch`: live rates per rule, per port and per director server, from two `stats`
//! replies `--interval` apart, redrawn in place on a terminal (or appended, one block per
//! refresh, when stdout is not one). `--count N` stops after N refreshes; with `--json`, each
//! refresh is one JSON line (`json_version`, `interval_s`, `rules`, `ports`, `servers`,
//! `drops_per_s`; docs/control.md).

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use flowgate_control::protocol::{ErrorReply, Request, StatsReply};
use serde_json::{json, Value};

use super::{call, ok_or_err, Failure, JSON_VERSION};

/// One reading of the counters and when it was taken.
struct Sample {
    at: Instant,
    stats: StatsReply,
}

fn sample(socket: &Path) -> Result<Sample, Failure> {
    let v = call(socket, &Request::Stats {})?;
    let v = ok_or_err(&v)?;
    let stats = serde_json::from_value(v.clone())
        .map_err(|e| Failure::Refused(ErrorReply::new(format!("bad stats reply: {e}"))))?;
    Ok(Sample {
        at: Instant::now(),
        stats,
    })
}

/// Per-second rates between two samples.
#[derive(Debug, Default)]
struct Rates {
    interval_s: f64,
    generation: u64,
    /// (list, flow, rule, packets/s)
    rules: Vec<(String, String, usize, f64)>,
    /// (port, column, per second) for the port counters, in column order.
    ports: Vec<(String, Vec<(String, f64)>)>,
    /// (director, server, up, packets/s, bytes/s, connections/s, active)
    servers: Vec<(String, String, bool, f64, f64, f64, u64)>,
    drops_per_s: f64,
}

fn rate(now: u64, before: u64, dt: f64) -> f64 {
    now.saturating_sub(before) as f64 / dt
}

fn rates(a: &Sample, b: &Sample) -> Rates {
    let dt = b.at.duration_since(a.at).as_secs_f64().max(1e-3);
    let before: HashMap<(&str, &str, usize), u64> = a
        .stats
        .rules
        .iter()
        .map(|r| ((r.list.as_str(), r.flow.as_str(), r.rule), r.total))
        .collect();
    let rules = b
        .stats
        .rules
        .iter()
        .map(|r| {
            let was = before
                .get(&(r.list.as_str(), r.flow.as_str(), r.rule))
                .copied()
                .unwrap_or(0);
            (
                r.list.clone(),
                r.flow.clone(),
                r.rule,
                rate(r.total, was, dt),
            )
        })
        .collect();
    let ports = b
        .stats
        .ports
        .iter()
        .map(|p| {
            let old = a.stats.ports.iter().find(|q| q.name == p.name);
            let cols = p
                .counters
                .iter()
                .map(|(col, n)| {
                    let was = old
                        .and_then(|o| o.counters.iter().find(|(c, _)| c == col))
                        .map_or(0, |(_, v)| *v);
                    (col.clone(), rate(*n, was, dt))
                })
                .collect();
            (p.name.clone(), cols)
        })
        .collect();
    let mut servers = Vec::new();
    for d in &b.stats.directors {
        let old = a.stats.directors.iter().find(|o| o.name == d.name);
        for s in &d.servers {
            let was = old.and_then(|o| o.servers.iter().find(|x| x.name == s.name));
            servers.push((
                d.name.clone(),
                s.name.clone(),
                s.up && s.enabled,
                rate(s.packets, was.map_or(0, |w| w.packets), dt),
                rate(s.bytes, was.map_or(0, |w| w.bytes), dt),
                rate(s.connections, was.map_or(0, |w| w.connections), dt),
                s.active,
            ));
        }
    }
    let drops = |s: &StatsReply| s.drops.iter().map(|(_, n)| *n).sum::<u64>();
    Rates {
        interval_s: dt,
        generation: b.stats.generation,
        rules,
        ports,
        servers,
        drops_per_s: rate(drops(&b.stats), drops(&a.stats), dt),
    }
}

/// The JSON line of one refresh.
fn to_json(r: &Rates) -> Value {
    json!({
        "json_version": JSON_VERSION,
        "interval_s": r.interval_s,
        "generation": r.generation,
        "rules": r.rules.iter().map(|(list, flow, rule, pps)| json!({
            "list": list, "flow": flow, "rule": rule, "packets_per_s": pps,
        })).collect::<Vec<_>>(),
        "ports": r.ports.iter().map(|(name, cols)| {
            let mut o = serde_json::Map::new();
            o.insert("name".into(), name.clone().into());
            for (c, v) in cols {
                o.insert(format!("{c}_per_s"), (*v).into());
            }
            Value::Object(o)
        }).collect::<Vec<_>>(),
        "servers": r.servers.iter().map(|(d, s, up, pps, bps, cps, active)| json!({
            "director": d, "server": s, "up": up, "packets_per_s": pps, "bytes_per_s": bps,
            "connections_per_s": cps, "active": active,
        })).collect::<Vec<_>>(),
        "drops_per_s": r.drops_per_s,
    })
}

/// The text of one refresh.
fn to_text(r: &Rates, all: bool) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "flowgate: generation {}, rates over {:.1} s, drops {:.0}/s",
        r.generation, r.interval_s, r.drops_per_s
    );
    let _ = writeln!(
        s,
        "\n{:<12} {:>12} {:>12} {:>14} {:>14} {:>12} {:>12}",
        "port", "rx pkt/s", "tx pkt/s", "rx bit/s", "tx bit/s", "kernel in/s", "kernel out/s"
    );
    for (name, cols) in &r.ports {
        let c = |k: &str| cols.iter().find(|(n, _)| n == k).map_or(0.0, |(_, v)| *v);
        let _ = writeln!(
            s,
            "{:<12} {:>12.0} {:>12.0} {:>14.0} {:>14.0} {:>12.0} {:>12.0}",
            name,
            c("rx"),
            c("tx"),
            c("rx_bytes") * 8.0,
            c("tx_bytes") * 8.0,
            c("to_kernel"),
            c("from_kernel")
        );
    }
    let mut rules: Vec<_> = r
        .rules
        .iter()
        .filter(|(_, _, _, pps)| all || *pps > 0.0)
        .collect();
    rules.sort_by(|a, b| b.3.total_cmp(&a.3));
    let _ = writeln!(
        s,
        "\n{:<8} {:<28} {:>5} {:>12}",
        "list", "flow", "rule", "pkt/s"
    );
    for (list, flow, rule, pps) in rules {
        let rule = if *rule == 0 {
            "-".to_string()
        } else {
            rule.to_string()
        };
        let _ = writeln!(s, "{list:<8} {flow:<28} {rule:>5} {pps:>12.0}");
    }
    if !r.servers.is_empty() {
        let _ = writeln!(
            s,
            "\n{:<16} {:<16} {:<4} {:>12} {:>14} {:>10} {:>8}",
            "director", "server", "", "pkt/s", "bit/s", "conn/s", "active"
        );
        for (d, srv, up, pps, bps, cps, active) in &r.servers {
            if !all && *pps == 0.0 && *active == 0 && *up {
                continue;
            }
            let _ = writeln!(
                s,
                "{d:<16} {srv:<16} {:<4} {pps:>12.0} {:>14.0} {cps:>10.1} {active:>8}",
                if *up { "up" } else { "down" },
                bps * 8.0
            );
        }
    }
    s
}

/// Poll `stats` every `interval` seconds and print rates until `count` refreshes (or forever).
pub fn run(
    socket: &Path,
    interval: f64,
    count: Option<u32>,
    all: bool,
    json: bool,
) -> Result<(), Failure> {
    if !(interval.is_finite() && interval > 0.0) {
        return Err(Failure::Refused(ErrorReply::new(format!(
            "--interval {interval}: expected a positive number of seconds"
        ))));
    }
    let tty = std::io::stdout().is_terminal();
    let mut prev = sample(socket)?;
    let mut shown = 0u32;
    while count.is_none_or(|c| shown < c) {
        std::thread::sleep(Duration::from_secs_f64(interval));
        let cur = sample(socket)?;
        let r = rates(&prev, &cur);
        let mut out = std::io::stdout().lock();
        let text = if json {
            format!("{}\n", to_json(&r))
        } else if tty {
            // home, clear: redraw in place
            format!("\x1b[H\x1b[2J{}", to_text(&r, all))
        } else {
            format!("{}\n", to_text(&r, all))
        };
        if out
            .write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .is_err()
        {
            return Ok(()); // stdout closed (`| head`): done
        }
        prev = cur;
        shown += 1;
    }
    Ok(())
}
