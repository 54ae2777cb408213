//! The control socket protocol: one JSON object per line each way.
//!
//! A request is `{"op": "...", ...}` and parses into [`Request`] (unknown ops and unknown
//! fields are refused); a reply is `{"ok": true, ...}` with the op's fields, or
//! `{"ok": false, "error": "...", "diagnostics": "..."}`. The reference is `docs/control.md`.

use serde::{Deserialize, Serialize};

/// The longest request line the server reads (a flows file travels inside `apply`: a
/// 100K-rule file is about 9 MB).
pub const MAX_REQUEST: usize = 16 << 20;

/// An action for the control thread, parsed from one request line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Generation, uptime, workers, ports, flow counts.
    Status {},
    /// Load and compile a flows text against the config; change nothing.
    Check {
        flows: String,
        /// The file name diagnostics show.
        #[serde(default)]
        name: Option<String>,
    },
    /// Flows added, removed and changed between the applied set and a flows text.
    Diff {
        flows: String,
        #[serde(default)]
        name: Option<String>,
    },
    /// Compile, validate, publish and persist a flows text.
    Apply {
        flows: String,
        #[serde(default)]
        name: Option<String>,
    },
    /// As `apply`, with a file the daemon reads itself.
    ApplyPath {
        path: String,
    },
    /// Publish the previously applied set again.
    Rollback {},
    /// Add one flow (`text` is a whole item; placed `before` or `after` a flow of its list,
    /// else at the end of the file), or one rule (`text` is one rule; into `flow`, as its
    /// rule number `at`, else after its last).
    Insert {
        text: String,
        #[serde(default)]
        flow: Option<String>,
        #[serde(default)]
        at: Option<usize>,
        #[serde(default)]
        before: Option<String>,
        #[serde(default)]
        after: Option<String>,
    },
    /// Remove flow `flow`, or its rule number `rule`.
    Delete {
        flow: String,
        #[serde(default)]
        rule: Option<usize>,
    },
    /// Replace the flow of the same name as `text` (a whole item), or rule number `rule` of
    /// `flow` (`text` is one rule).
    Replace {
        text: String,
        #[serde(default)]
        flow: Option<String>,
        #[serde(default)]
        rule: Option<usize>,
    },
    /// The canonical text of the applied set.
    ShowFlows {},
    /// Counters: per flow and rule, per port, drops, per director server.
    Stats {},
    /// Which flow and rule decide a packet line, and why earlier flows did not.
    Trace {
        packet: String,
        /// Trace the outflows (`iface` is then the output port).
        #[serde(default)]
        outflows: bool,
    },
    DirectorList {},
    DirectorEnable {
        director: String,
        server: String,
    },
    DirectorDisable {
        director: String,
        server: String,
    },
    DirectorWeight {
        director: String,
        server: String,
        weight: u32,
    },
}

impl Request {
    /// The op name, for logs and metrics.
    pub fn op(&self) -> &'static str {
        match self {
            Request::Status {} => "status",
            Request::Check { .. } => "check",
            Request::Diff { .. } => "diff",
            Request::Apply { .. } => "apply",
            Request::ApplyPath { .. } => "apply_path",
            Request::Rollback {} => "rollback",
            Request::Insert { .. } => "insert",
            Request::Delete { .. } => "delete",
            Request::Replace { .. } => "replace",
            Request::ShowFlows {} => "show_flows",
            Request::Stats {} => "stats",
            Request::Trace { .. } => "trace",
            Request::DirectorList {} => "director_list",
            Request::DirectorEnable { .. } => "director_enable",
            Request::DirectorDisable { .. } => "director_disable",
            Request::DirectorWeight { .. } => "director_weight",
        }
    }
}

/// A refused request: what went wrong, and for a refused flows file its rendered diagnostics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{error}")]
pub struct ErrorReply {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnostics: Option<String>,
}

impl ErrorReply {
    pub fn new(error: impl Into<String>) -> ErrorReply {
        ErrorReply {
            error: error.into(),
            diagnostics: None,
        }
    }
}

/// The body of a successful reply, one variant per kind of answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Body {
    Status(StatusReply),
    Applied(AppliedReply),
    Check(CheckReply),
    Diff(DiffReply),
    Flows(FlowsReply),
    Stats(Box<StatsReply>),
    Trace(TraceReply),
    Directors(DirectorsReply),
    Done(DoneReply),
}

/// Serialises a reply line (without the newline).
pub fn encode(reply: &Result<Body, ErrorReply>) -> String {
    let value = match reply {
        Ok(body) => {
            let mut v = serde_json::to_value(body).unwrap_or_else(|_| serde_json::json!({}));
            if let Some(o) = v.as_object_mut() {
                o.insert("ok".into(), true.into());
            }
            v
        }
        Err(e) => {
            let mut v = serde_json::to_value(e).unwrap_or_else(|_| serde_json::json!({}));
            if let Some(o) = v.as_object_mut() {
                o.insert("ok".into(), false.into());
            }
            v
        }
    };
    value.to_string()
}

/// `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReply {
    pub generation: u64,
    pub uptime_s: u64,
    pub workers: usize,
    pub ports: Vec<String>,
    pub flows: usize,
    pub outflows: usize,
    pub rules: usize,
    /// Sets `rollback` can go back to.
    pub rollback_depth: usize,
    pub swaps: u64,
    pub flows_path: String,
}

/// `apply`, `apply_path`, `rollback`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedReply {
    pub generation: u64,
    /// From the request's arrival to the new set being visible to the workers.
    pub publish_us: u64,
    /// Of which compiling the classifiers.
    pub compile_us: u64,
    /// Of which persisting the push, before publication: the rollback history and the
    /// flows file written (`apply`, `rollback`), or the history and the edit log's append
    /// (`insert`, `delete`, `replace`: the flows file is rewritten after publication).
    #[serde(default)]
    pub persist_us: u64,
    pub persisted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persist_error: Option<String>,
    /// Rendered warnings of the applied file.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub warnings: String,
}

/// `check`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckReply {
    pub flows: usize,
    pub outflows: usize,
    pub rules: usize,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub warnings: String,
}

/// `diff`: by item name (flows and outflows share one name space).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffReply {
    /// Canonical text of each added item.
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<Changed>,
    /// Items whose position among the others changed (order decides).
    pub moved: Vec<String>,
}

/// One changed item of a diff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changed {
    pub name: String,
    pub before: String,
    pub after: String,
}

/// `show_flows`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowsReply {
    pub generation: u64,
    pub text: String,
}

/// `stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsReply {
    pub generation: u64,
    /// Per rule of the applied set: hits in this generation and in every generation.
    pub rules: Vec<RuleStat>,
    /// Verdict counts over every generation, per list.
    pub verdicts: Vec<VerdictStat>,
    pub ports: Vec<PortStat>,
    pub drops: Vec<(String, u64)>,
    pub directors: Vec<DirectorStatus>,
    /// The workers' other counters, summed: next-hop resolution (`neighbour_solicits`,
    /// `neighbour_learned`, `neighbour_from_shared`) and the NAT hand-over between workers
    /// (`handed_out`, `handed_in`).
    #[serde(default)]
    pub workers: Vec<(String, u64)>,
    /// The connection sync's counters (`docs/sync.md`, "Metrics"); empty when it is off.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sync: Vec<(String, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleStat {
    /// `flow` or `outflow`.
    pub list: String,
    /// Flow name, or `-` for the list's default.
    pub flow: String,
    /// 1-based rule index in the current set; 0 for the default and for retired rules.
    pub rule: usize,
    /// Canonical text of the rule (`default` for the list's default).
    #[serde(default)]
    pub text: String,
    /// Which occurrence of `text` in the flow (1: the first).
    #[serde(default)]
    pub occurrence: u32,
    /// In the current set (else a retired rule, kept with its totals).
    #[serde(default)]
    pub live: bool,
    /// Packets and bytes of this generation.
    pub hits: u64,
    #[serde(default)]
    pub bytes: u64,
    /// Packets and bytes since start, over every generation that had this rule's identity.
    pub total: u64,
    #[serde(default)]
    pub total_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerdictStat {
    pub list: String,
    pub verdict: String,
    pub packets: u64,
}

/// One port: the workers' counters (see `PORT_COLUMNS`) and the NIC's own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortStat {
    pub name: String,
    pub counters: Vec<(String, u64)>,
    #[serde(default)]
    pub nic: Option<NicStats>,
}

/// What the NIC (ethdev) counts for a port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicStats {
    pub ipackets: u64,
    pub opackets: u64,
    pub ibytes: u64,
    pub obytes: u64,
    /// Dropped by the NIC: RX queue full.
    pub imissed: u64,
    pub ierrors: u64,
    pub oerrors: u64,
    pub rx_nombuf: u64,
    /// Bursts sent through a TX queue shared by several workers (the device has fewer TX
    /// queues than workers, docs/dataplane.md).
    #[serde(default)]
    pub tx_shared_bursts: u64,
    /// Of those, how many waited for the queue's lock held by another worker.
    #[serde(default)]
    pub tx_lock_contended: u64,
}

/// `trace`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceReply {
    pub generation: u64,
    pub list: String,
    pub steps: Vec<TraceStep>,
    /// The reference interpreter's verdict line (`permit ssh 2`).
    pub decision: String,
    /// The compiled classifier's verdict line; equal to `decision` unless there is a bug.
    pub classifier: String,
    pub agree: bool,
}

/// What one flow did with the packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceStep {
    pub flow: String,
    pub policy: String,
    /// `skipped`, `ignored`, `no-match` or `decided`.
    pub outcome: String,
    /// One line per rule examined.
    pub rules: Vec<String>,
}

/// `director_list` (and the per-server part of `stats`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectorsReply {
    pub directors: Vec<DirectorStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectorStatus {
    pub name: String,
    pub scheduler: String,
    pub servers: Vec<ServerStatus>,
    /// The director's own counters, summed over workers: connections, packets, drops by
    /// reason (`drop_conntrack_full` ...), the SYN-flood defense's `half_open_evicted` and
    /// `defense_entered`, then the gauges `half_open`, `defense_active` (workers in
    /// defense now) and `backup` (entries applied from a peer's sync, unused since). See
    /// `docs/director.md` and `docs/sync.md`.
    #[serde(default)]
    pub counters: Vec<(String, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStatus {
    pub name: String,
    pub address: String,
    pub weight: u32,
    pub enabled: bool,
    /// Health check state.
    pub up: bool,
    /// Connections scheduled to the server since start.
    pub connections: u64,
    /// Connections open now: ESTABLISHED (`active`) and any other state (`inactive`), as
    /// IPVS's ActiveConn / InActConn.
    #[serde(default)]
    pub active: u64,
    #[serde(default)]
    pub inactive: u64,
    pub packets: u64,
    pub bytes: u64,
}

/// A request that only needs an acknowledgement (`director_enable` ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoneReply {
    pub done: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_refuse() {
        let r: Request = serde_json::from_str(r#"{"op":"status"}"#).expect("status");
        assert_eq!(r, Request::Status {});
        let r: Request =
            serde_json::from_str(r#"{"op":"apply","flows":"flow a permit"}"#).expect("apply");
        assert_eq!(
            r,
            Request::Apply {
                flows: "flow a permit".into(),
                name: None
            }
        );
        assert!(serde_json::from_str::<Request>(r#"{"op":"nope"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"op":"status","x":1}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"op":"apply"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"[1,2]"#).is_err());
    }

    #[test]
    fn replies_carry_ok() {
        let s = encode(&Ok(Body::Done(DoneReply { done: "x".into() })));
        assert_eq!(s, r#"{"done":"x","ok":true}"#);
        let s = encode(&Err(ErrorReply::new("bad")));
        assert_eq!(s, r#"{"error":"bad","ok":false}"#);
    }
}
