//! Metrics through the `metrics` facade, exported by the Prometheus exporter's HTTP listener.
//!
//! The control thread calls [`publish`] every tick with freshly summed counters (the workers
//! count in their own memory; nothing on the packet path touches the facade), and
//! [`record_swap`] on every publication.

use std::net::SocketAddr;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::PrometheusBuilder;
use metrics_util::MetricKindMask;

use crate::protocol::StatsReply;

/// Swap latency histogram (seconds): request arrival to the new set being published.
pub const SWAP_SECONDS: &str = "flowgate_swap_seconds";

/// A counter series not published for this long leaves the scrape output.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Director counters that are gauges (the rest only grow).
const DIRECTOR_GAUGES: [&str; 3] = ["half_open", "defense_active", "backup"];

/// Installs the global recorder and the `/metrics` HTTP listener on `addr`.
pub fn install(addr: SocketAddr) -> Result<(), String> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        // series the control thread stops publishing (rules whose retired totals were
        // dropped, see `state::RETIRED_MAX`) leave the scrape: /metrics follows the live set
        .idle_timeout(MetricKindMask::COUNTER, Some(IDLE_TIMEOUT))
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(SWAP_SECONDS.into()),
            &[
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0,
            ],
        )
        .and_then(|b| b.install())
        .map_err(|e| e.to_string())
}

/// One publication of a rule set.
pub fn record_swap(latency: Duration) {
    counter!("flowgate_swaps_total").increment(1);
    histogram!(SWAP_SECONDS).record(latency.as_secs_f64());
}

/// Pushes refused since start (`apply`, `apply_path`, `rollback`, SIGHUP reloads).
pub const PUSHES_REFUSED: &str = "flowgate_pushes_refused_total";

/// The count of refused pushes (published from the start, 0 included, so that alert rules
/// on `increase()` see the first refusal).
pub fn publish_refused(total: u64) {
    counter!(PUSHES_REFUSED).absolute(total);
}

/// Publishes the summed counters.
pub fn publish(s: &StatsReply, swaps: u64) {
    gauge!("flowgate_generation").set(s.generation as f64);
    counter!("flowgate_swaps_total").absolute(swaps);
    for r in &s.rules {
        // the rule's identity (see docs/control.md), not its position: stable across pushes
        let labels = [
            ("list", r.list.clone()),
            ("flow", r.flow.clone()),
            ("rule", r.text.clone()),
            ("n", r.occurrence.to_string()),
        ];
        counter!("flowgate_rule_packets_total", &labels).absolute(r.total);
        counter!("flowgate_rule_bytes_total", &labels).absolute(r.total_bytes);
    }
    for v in &s.verdicts {
        counter!(
            "flowgate_verdict_packets_total",
            "list" => v.list.clone(),
            "verdict" => v.verdict.clone()
        )
        .absolute(v.packets);
    }
    for p in &s.ports {
        for (col, v) in &p.counters {
            counter!(format!("flowgate_port_{col}_total"), "port" => p.name.clone()).absolute(*v);
        }
        if let Some(n) = &p.nic {
            for (col, v) in [
                ("rx_packets", n.ipackets),
                ("tx_packets", n.opackets),
                ("rx_bytes", n.ibytes),
                ("tx_bytes", n.obytes),
                ("rx_missed", n.imissed),
                ("rx_errors", n.ierrors),
                ("tx_errors", n.oerrors),
                ("rx_nombuf", n.rx_nombuf),
            ] {
                counter!(format!("flowgate_nic_{col}_total"), "port" => p.name.clone()).absolute(v);
            }
            for (col, v) in [
                ("shared_bursts", n.tx_shared_bursts),
                ("lock_contended", n.tx_lock_contended),
            ] {
                counter!(format!("flowgate_tx_{col}_total"), "port" => p.name.clone()).absolute(v);
            }
        }
    }
    for (why, n) in &s.drops {
        counter!("flowgate_drops_total", "reason" => why.clone()).absolute(*n);
    }
    for (what, n) in &s.workers {
        counter!(format!("flowgate_{what}_total")).absolute(*n);
    }
    for d in &s.directors {
        let servers_up = d.servers.iter().filter(|s| s.up && s.enabled).count();
        let label = [("director", d.name.clone())];
        gauge!("flowgate_director_servers", &label).set(d.servers.len() as f64);
        gauge!("flowgate_director_servers_up", &label).set(servers_up as f64);
        counter!("flowgate_director_packets_total", &label)
            .absolute(d.servers.iter().map(|s| s.packets).sum());
        counter!("flowgate_director_bytes_total", &label)
            .absolute(d.servers.iter().map(|s| s.bytes).sum());
        counter!("flowgate_director_connections_total", &label)
            .absolute(d.servers.iter().map(|s| s.connections).sum());
        gauge!("flowgate_director_active_connections", &label)
            .set(d.servers.iter().map(|s| s.active).sum::<u64>() as f64);
        // the director's own counters (`connections` is exported above, from the servers' sum)
        for (what, n) in d.counters.iter().filter(|(w, _)| w != "connections") {
            let director = [("director", d.name.clone())];
            if let Some(reason) = what.strip_prefix("drop_") {
                let labels = [("director", d.name.clone()), ("reason", reason.to_string())];
                counter!("flowgate_director_drops_total", &labels).absolute(*n);
            } else if DIRECTOR_GAUGES.contains(&what.as_str()) {
                gauge!(format!("flowgate_director_{what}"), &director).set(*n as f64);
            } else {
                counter!(format!("flowgate_director_{what}_total"), &director).absolute(*n);
            }
        }
        for srv in &d.servers {
            let labels = [("director", d.name.clone()), ("server", srv.name.clone())];
            counter!("flowgate_server_packets_total", &labels).absolute(srv.packets);
            counter!("flowgate_server_bytes_total", &labels).absolute(srv.bytes);
            counter!("flowgate_server_connections_total", &labels).absolute(srv.connections);
            gauge!("flowgate_server_active_connections", &labels).set(srv.active as f64);
            gauge!("flowgate_server_inactive_connections", &labels).set(srv.inactive as f64);
            gauge!("flowgate_server_weight", &labels).set(f64::from(srv.weight));
            gauge!("flowgate_server_up", &labels).set(if srv.up { 1.0 } else { 0.0 });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_and_stats_render() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            record_swap(Duration::from_micros(300));
            publish(
                &StatsReply {
                    generation: 3,
                    rules: vec![crate::protocol::RuleStat {
                        list: "flow".into(),
                        flow: "ssh".into(),
                        rule: 2,
                        text: "match proto tcp dstport 22".into(),
                        occurrence: 1,
                        live: true,
                        hits: 5,
                        bytes: 300,
                        total: 9,
                        total_bytes: 540,
                    }],
                    verdicts: vec![],
                    ports: vec![],
                    drops: vec![("flow-deny".into(), 4)],
                    directors: vec![crate::protocol::DirectorStatus {
                        name: "mail".into(),
                        scheduler: "wrr".into(),
                        servers: vec![],
                        counters: vec![
                            ("drop_conntrack_full".into(), 12),
                            ("half_open_evicted".into(), 345),
                            ("defense_entered".into(), 2),
                            ("half_open".into(), 678),
                        ],
                    }],
                    workers: vec![("handed_out".into(), 7)],
                },
                1,
            );
        });
        let text = handle.render();
        assert!(text.contains("flowgate_swaps_total 1"), "{text}");
        assert!(text.contains("flowgate_swap_seconds"), "{text}");
        assert!(
            text.contains(
                r#"flowgate_rule_packets_total{list="flow",flow="ssh",rule="match proto tcp dstport 22",n="1"} 9"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"flowgate_rule_bytes_total{list="flow",flow="ssh",rule="match proto tcp dstport 22",n="1"} 540"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"flowgate_drops_total{reason="flow-deny"} 4"#),
            "{text}"
        );
        assert!(text.contains("flowgate_handed_out_total 7"), "{text}");
        for line in [
            r#"flowgate_director_drops_total{director="mail",reason="conntrack_full"} 12"#,
            r#"flowgate_director_half_open_evicted_total{director="mail"} 345"#,
            r#"flowgate_director_defense_entered_total{director="mail"} 2"#,
            r#"flowgate_director_half_open{director="mail"} 678"#,
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        assert!(
            text.contains("# TYPE flowgate_director_half_open gauge"),
            "{text}"
        );
    }
}
