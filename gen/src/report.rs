//! JSON records of a run, and the DUT's counters around each trial.
//!
//! The DUT's counters are read with a shell command that prints JSON (`flowctl --json stats`
//! for flowgate) before and after every trial; the trial record carries their difference:
//! every number replaced by after - before, objects by key, arrays by position, anything else
//! as it was after. So flowgate's drops by reason and `imissed` per port come out per trial
//! whatever the shape of its stats reply.

use std::process::Command;

use serde_json::{json, Map, Value};

use crate::hist::LatencyHistogram;

/// Latency figures in nanoseconds: samples, min, mean, percentiles, max; with `cdf`, the
/// cumulative distribution as `[ns, share]` pairs.
pub fn latency_json(h: &LatencyHistogram, cdf: bool) -> Value {
    if h.count() == 0 {
        return json!({ "samples": 0 });
    }
    let q = |x| h.quantile(x).unwrap_or(0);
    let mut v = json!({
        "samples": h.count(),
        "min_ns": h.min().unwrap_or(0),
        "mean_ns": h.mean().unwrap_or(0.0).round(),
        "p50_ns": q(0.5),
        "p90_ns": q(0.9),
        "p99_ns": q(0.99),
        "p999_ns": q(0.999),
        "max_ns": h.max().unwrap_or(0),
    });
    if cdf {
        v["cdf"] = Value::Array(h.cdf().into_iter().map(|(ns, f)| json!([ns, f])).collect());
    }
    v
}

/// `after - before` for every number of two JSON documents of the same shape.
pub fn delta(before: &Value, after: &Value) -> Value {
    match (before, after) {
        (Value::Number(b), Value::Number(a)) => match (b.as_i64(), a.as_i64()) {
            (Some(b), Some(a)) => json!(a - b),
            _ => json!(a.as_f64().unwrap_or(0.0) - b.as_f64().unwrap_or(0.0)),
        },
        (Value::Object(b), Value::Object(a)) => {
            let mut out = Map::new();
            for (k, av) in a {
                let d = match b.get(k) {
                    Some(bv) => delta(bv, av),
                    None => av.clone(),
                };
                out.insert(k.clone(), d);
            }
            Value::Object(out)
        }
        (Value::Array(b), Value::Array(a)) => Value::Array(
            a.iter()
                .enumerate()
                .map(|(i, av)| b.get(i).map_or_else(|| av.clone(), |bv| delta(bv, av)))
                .collect(),
        ),
        (_, a) => a.clone(),
    }
}

/// Runs `cmd` with `sh -c` and parses its standard output as JSON.
pub fn command_json(cmd: &str) -> Result<Value, String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .map_err(|e| format!("DUT stats command {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "DUT stats command {cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("DUT stats command {cmd:?}: output is not JSON: {e}"))
}
