//! `flowgate run --config FILE`: the daemon. Loads the config and flows (refusing either
//! whole on any error), compiles the rule set, brings the ports and TAPs up, starts one pinned
//! poll-mode worker per configured lcore, and serves signals: SIGHUP re-reads the flows file
//! through the control thread (as `flowctl apply`: refused whole if wrong), SIGUSR1 logs the
//! counters, SIGINT/SIGTERM stop cleanly (workers joined, ports stopped, TAPs gone, counters
//! logged). Under systemd it notifies readiness once ports, TAPs and every worker are up
//! ([`flowgate_control::notify`]). Everything it says goes through the one-line log
//! ([`flowgate_control::logging`]), DPDK's own messages included.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use flowgate_config::appliance::{Appliance, LogLevel};
use flowgate_config::flows::ListKind;
use flowgate_control::notify::Notifier;
use flowgate_control::protocol::{Body, NicStats, Request, StatsReply};
use flowgate_control::{logging, ControlHandle, ControlOptions, NicStatsFn, Shared};
use flowgate_dataplane::counters::{
    DropReason, Totals, VerdictKind, WorkerCounters, HANDOFF_COLUMNS, NEIGHBOUR_COLUMNS,
    PORT_COLUMNS,
};
use flowgate_dataplane::director::health::{self, HealthChecker, HealthOptions};
use flowgate_dataplane::director::sync::SyncLanes;
use flowgate_dataplane::director::{DirectorCounters, DirectorSet, SharedDirectors, WorkerOptions};
use flowgate_dataplane::dpdk::PortStats;
use flowgate_dataplane::handoff::Handoff;
use flowgate_dataplane::plant::Plant;
use flowgate_dataplane::ruleset::RuleSet;
use flowgate_dataplane::runtime_files;
use flowgate_dataplane::worker::Worker;

use crate::classify_cmd::{self, Refused};
use crate::director_hook::DirectorHook;

/// Options of `flowgate run`.
#[derive(Debug)]
pub struct RunOptions {
    pub config: PathBuf,
    /// Stop after this long (benchmarks, tests); `None` runs until a signal.
    pub duration: Option<Duration>,
    /// Write the final counters here as JSON.
    pub stats_json: Option<PathBuf>,
    /// `--log-level`: overrides the config's `[log] level`.
    pub log_level: Option<LogLevel>,
}

/// Load config + flows and compile; every refusal is rendered for a person.
/// Also returns the flows text (the control thread keeps it for rollback and persistence).
pub fn prepare(config: &Path) -> Result<(Appliance, RuleSet, String), Refused> {
    let app =
        classify_cmd::load_config(Some(config))?.ok_or_else(|| Refused("no config".into()))?;
    let loaded = classify_cmd::load_flows(&app.flows, Some(&app))?;
    let warnings = loaded.render_warnings(false);
    if !warnings.trim().is_empty() {
        log::warn!(target: "flows", "{warnings}");
    }
    let text = loaded.source.clone();
    let rules = RuleSet::compile(loaded.file, &app, 1)
        .map_err(|e| Refused(format!("{}: {e}", app.flows.display())))?;
    Ok((app, rules, text))
}

/// DPDK's log level: the config's `[log] dpdk`, raised to `info` when flowgate's own level
/// is `debug` or finer (`--log-level debug` shows the EAL's start-up lines).
pub fn dpdk_level(app: &Appliance, ours: LogLevel) -> LogLevel {
    if ours >= LogLevel::Debug {
        app.log.dpdk.max(LogLevel::Info)
    } else {
        app.log.dpdk
    }
}

pub fn run(opts: &RunOptions) -> anyhow::Result<()> {
    logging::init(opts.log_level.unwrap_or(LogLevel::Info));
    // signals first: a SIGHUP or SIGTERM during start-up must not kill the process
    let term = Arc::new(AtomicBool::new(false));
    let usr1 = Arc::new(AtomicBool::new(false));
    let hup = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&term)).context("signal handler")?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGUSR1, Arc::clone(&usr1))
        .context("signal handler")?;
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hup))
        .context("signal handler")?;
    let (mut app, rules, text) = match prepare(&opts.config) {
        Ok(x) => x,
        Err(Refused(msg)) => {
            log::error!(target: "flowgate", "{}: refused:\n{msg}", opts.config.display());
            std::process::exit(1);
        }
    };
    // a file prefix of this daemon's own (also with --no-shconf or --in-memory, with which
    // DPDK still makes a runtime directory), so that the directory removed at exit is ours
    // and never the default `rte` of another DPDK program
    if runtime_files::given_prefix(&app.dataplane.eal).is_none() {
        app.dataplane
            .eal
            .push(format!("--file-prefix=flowgate-{}", std::process::id()));
    }
    let level = opts.log_level.unwrap_or(app.log.level);
    logging::set_level(level);
    let notifier = Notifier::from_env().context("$NOTIFY_SOCKET")?;

    // DPDK's log goes through ours, at the config's level (unless its EAL arguments say)
    logging::route_dpdk().map_err(|e| anyhow!("routing DPDK's log: {e}"))?;
    let mut plant_app = app.clone();
    let log_args = logging::eal_log_args(dpdk_level(&app, level), &app.dataplane.eal);
    plant_app.dataplane.eal.splice(0..0, log_args);
    // runtime files: those of daemons killed before they could remove theirs, then ours at exit
    for stale in runtime_files::remove_stale("flowgate-") {
        log::info!(target: "flowgate", "removed {}, left by a stopped daemon", stale.display());
    }
    let _runtime_dir = runtime_files::RuntimeDir::new(runtime_files::file_prefix(
        &flowgate_dataplane::plant::eal_args(&plant_app),
    ));
    let plant = Plant::bring_up(&plant_app).map_err(|e| anyhow!("bringing ports up: {e}"))?;
    let read_nic_stats = plant.nic_stats_reader();
    let nic_stats: NicStatsFn =
        Box::new(move || read_nic_stats().into_iter().map(NicStats::from).collect());
    let shared = Arc::new(Shared::new(app.clone(), rules, Some(nic_stats)));
    let published = &shared.rules;
    let counters = &shared.workers;
    let sync_key = match &app.sync {
        Some(s) => match s.key.read() {
            Ok(k) => Some(k),
            Err(e) => {
                log::error!(target: "flowgate", "{}: refused: [sync]: {e}", opts.config.display());
                std::process::exit(1);
            }
        },
        None => None,
    };
    let mut shared_directors = SharedDirectors::new(
        DirectorSet::build(&app.directors).map_err(|e| anyhow!("directors: {e}"))?,
        app.dataplane.workers.len(),
    );
    if app.sync.is_some() {
        shared_directors = shared_directors.with_sync(SyncLanes::new(app.dataplane.workers.len()));
    }
    let directors = Arc::new(shared_directors);
    let sync = match (&app.sync, sync_key) {
        (Some(cfg), Some(key)) => Some(
            flowgate_control::sync::start(
                cfg,
                key,
                Arc::clone(&directors),
                app.dataplane.workers.len(),
            )
            .with_context(|| format!("[sync]: binding {}", cfg.listen))?,
        ),
        _ => None,
    };
    let mut control_opts = ControlOptions::from_appliance(&app);
    control_opts.director = Some(Box::new(
        DirectorHook::new(Arc::clone(&directors)).with_sync(sync.as_ref().map(|h| h.monitor())),
    ));
    let control = flowgate_control::start(Arc::clone(&shared), text, control_opts)
        .map_err(|e| anyhow!("starting the control thread: {e}"))?;
    let _health = start_health(&app, &directors)?;
    // several workers and a NAT director: packets go to the worker owning their connection
    let handoff = Handoff::new(
        app.dataplane.workers.len(),
        app.ports.len(),
        &directors.set.load(),
    )
    .map_err(|e| anyhow!("hand-over rings: {e}"))?;
    if let Some(h) = &handoff {
        log::info!(
            target: "flowgate",
            "NAT directors with {} workers: packets are handed to the worker owning \
             their connection (client endpoint)",
            h.workers()
        );
    }
    let dir_opts = WorkerOptions {
        seed: per_boot_seed(),
        ..WorkerOptions::default()
    };
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    // workers past their start-up (pinned, registered with the EAL, about to poll)
    let workers_up = AtomicUsize::new(0);
    let mut ready = false;
    // route health injection, once the workers poll (`announce = "PORT"`)
    let mut announcer: Option<crate::announce::Announcer> = None;

    let result = std::thread::scope(|s| -> anyhow::Result<()> {
        let mut handles = Vec::new();
        for (w, &lcore) in app.dataplane.workers.iter().enumerate() {
            let queues = plant
                .queues(w)
                .map_err(|e| anyhow!("worker {w} queues: {e}"))?;
            let worker = Worker::new(
                w,
                queues,
                plant.roles(),
                Arc::clone(&counters[w]),
                published,
                &stop,
            )
            .with_directors(&directors, dir_opts);
            let worker = match &handoff {
                Some(h) => worker.with_handoff(h).map_err(|e| anyhow!(e))?,
                None => worker,
            };
            let eal = &plant.eal;
            let workers_up = &workers_up;
            let h = std::thread::Builder::new()
                .name(format!("fg-worker-{w}"))
                .spawn_scoped(s, move || {
                    let pinned = core_affinity::set_for_current(core_affinity::CoreId {
                        id: lcore as usize,
                    });
                    if !pinned {
                        log::warn!(target: "worker", "worker {w}: could not pin to cpu {lcore}");
                    }
                    if let Err(e) = eal.register_thread() {
                        log::warn!(target: "worker", "worker {w}: rte_thread_register: {e}");
                    }
                    workers_up.fetch_add(1, Ordering::Release);
                    worker.run();
                    eal.unregister_thread();
                })
                .context("spawning a worker")?;
            handles.push(h);
        }
        loop {
            std::thread::sleep(Duration::from_millis(50));
            if !ready && workers_up.load(Ordering::Acquire) == handles.len() {
                ready = true;
                let status = format!(
                    "running: {} ports, {} workers on lcores {:?}, generation {}",
                    app.ports.len(),
                    app.dataplane.workers.len(),
                    app.dataplane.workers,
                    published.load().generation
                );
                log::info!(target: "flowgate", "{status}");
                announcer = crate::announce::start(&app, &directors);
                if let Err(e) = notifier.ready(&status) {
                    log::warn!(target: "flowgate", "systemd notification: {e}");
                }
            }
            if hup.swap(false, Ordering::Relaxed) {
                reload(&control, &app, &notifier, ready);
            }
            if usr1.swap(false, Ordering::Relaxed) {
                let r = published.load();
                let all = stats_of(&control);
                log::info!(
                    target: "counters",
                    "{}{}",
                    report(
                        &app,
                        &r,
                        counters,
                        &plant.nic_stats(),
                        started.elapsed(),
                        all.as_ref()
                    ),
                    director_report(&directors)
                );
                if let Some(h) = &sync {
                    log::info!(target: "counters", "sync: {}", sync_line(&h.totals()));
                }
            }
            let timed_out = opts.duration.is_some_and(|d| started.elapsed() >= d);
            if term.load(Ordering::Relaxed) || timed_out {
                break;
            }
            if handles.iter().any(|h| h.is_finished()) {
                stop.store(true, Ordering::Relaxed);
                return Err(anyhow!("a worker stopped unexpectedly"));
            }
        }
        // withdraw the VIPs first: the router stops sending before the ports stop
        if let Some(a) = announcer.take() {
            a.stop();
        }
        stop.store(true, Ordering::Relaxed);
        let _ = notifier.stopping();
        log::info!(target: "flowgate", "stopping");
        Ok(())
    });
    let elapsed = started.elapsed();
    // the workers are joined: what they exported last goes out, then the thread stops
    let sync_totals = sync.map(|h| h.stop());
    if let Some(t) = &sync_totals {
        log::info!(target: "counters", "sync: {}", sync_line(t));
    }
    // the control side's view covers every generation ever published (rule swaps)
    let all = stats_of(&control);
    let all_generations = match &all {
        Some(stats) => serde_json::to_value(stats).unwrap_or_default(),
        None => serde_json::json!({ "error": "the control thread did not answer" }),
    };
    control.shutdown();
    let nic = plant.nic_stats();
    let rules = published.load_full();
    log::info!(
        target: "counters",
        "{}{}",
        report(&app, &rules, counters, &nic, elapsed, all.as_ref()),
        director_report(&directors)
    );
    if let Some(path) = &opts.stats_json {
        let mut json = stats_json(&app, &rules, counters, &nic, elapsed);
        json["all_generations"] = all_generations;
        json["directors"] = directors_json(&directors);
        if let Some(t) = &sync_totals {
            json["sync"] = t.json();
        }
        std::fs::write(path, format!("{json:#}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    drop(rules);
    drop(shared);
    for e in plant.shut_down() {
        log::warn!(target: "flowgate", "shutdown: {e}");
    }
    log::info!(target: "flowgate", "stopped");
    result
}

/// The control side's counters (every generation, by rule identity).
fn stats_of(control: &ControlHandle) -> Option<StatsReply> {
    match control.request(Request::Stats {}) {
        Ok(Body::Stats(s)) => Some(*s),
        _ => None,
    }
}

/// SIGHUP: re-read the appliance's flows file through the control thread, exactly as
/// `flowctl apply` (or `apply_path`) would: a file that does not load or compile is refused
/// whole and the running set stays. The control thread logs the swap or the refusal.
fn reload(
    control: &flowgate_control::ControlHandle,
    app: &Appliance,
    notifier: &Notifier,
    ready: bool,
) {
    let path = app.flows.display().to_string();
    log::info!(target: "flowgate", "SIGHUP: re-reading {path}");
    let _ = notifier.reloading();
    let outcome = control.request(Request::ApplyPath { path });
    let status = match &outcome {
        Ok(_) => "reloaded".to_string(),
        Err(e) => format!("reload refused: {}", e.error),
    };
    // READY=1 ends the reload for systemd either way: the daemon runs on (old or new set)
    if ready {
        let _ = notifier.ready(&status);
    } else {
        let _ = notifier.status(&status);
    }
}

/// The sync's counters on one line (exit log).
fn sync_line(t: &flowgate_control::sync::SyncTotals) -> String {
    t.counters
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The counters as a person reads them (SIGUSR1 and exit). With `all` (the control side's
/// `stats`), per-rule lines are totals since start by rule identity (packets and bytes,
/// rules of earlier sets included); without, this generation's hits.
pub fn report(
    app: &Appliance,
    rules: &RuleSet,
    workers: &[Arc<WorkerCounters>],
    nic: &[PortStats],
    elapsed: Duration,
    all: Option<&StatsReply>,
) -> String {
    let t = Totals::sum(workers.iter().map(|w| w.as_ref()));
    let r = rules.totals();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "== flowgate counters after {:.1} s (generation {}, {} workers)",
        elapsed.as_secs_f64(),
        rules.generation,
        workers.len()
    );
    let _ = writeln!(
        s,
        "{:<12} {:>10} {:>12} {:>10} {:>12} {:>10} {:>11} {:>8} | {:>10} {:>10} {:>8}",
        "port",
        "rx",
        "rx_bytes",
        "tx",
        "tx_bytes",
        "to_kernel",
        "from_kernel",
        "non_ip",
        "nic_ipkts",
        "nic_opkts",
        "imissed"
    );
    for (i, p) in app.ports.iter().enumerate() {
        let c = t.ports.get(i).copied().unwrap_or_default();
        let n = nic.get(i).copied().unwrap_or_default();
        let _ = writeln!(
            s,
            "{:<12} {:>10} {:>12} {:>10} {:>12} {:>10} {:>11} {:>8} | {:>10} {:>10} {:>8}",
            p.name, c[0], c[1], c[2], c[3], c[4], c[5], c[6], n.ipackets, n.opackets, n.imissed
        );
    }
    for (p, n) in app.ports.iter().zip(nic) {
        if n.tx_shared_bursts > 0 {
            let _ = writeln!(
                s,
                "{}: TX queue shared by workers: {} bursts, {} waited for the lock",
                p.name, n.tx_shared_bursts, n.tx_lock_contended
            );
        }
    }
    for (kind, list, verdicts, hits) in [
        (ListKind::Flow, &rules.flows, r.flow_verdicts, &r.flow_rules),
        (
            ListKind::Outflow,
            &rules.outflows,
            r.outflow_verdicts,
            &r.outflow_rules,
        ),
    ] {
        let v: Vec<String> = VerdictKind::ALL
            .iter()
            .map(|k| format!("{} {}", k.name(), verdicts[*k as usize]))
            .collect();
        let _ = writeln!(s, "{}s: {}", kind.keyword(), v.join(", "));
        if let Some(all) = all {
            for r in all.rules.iter().filter(|r| r.list == kind.keyword()) {
                let at = match (r.live, r.rule) {
                    (false, _) => "gone".to_string(),
                    (true, 0) => "-".to_string(),
                    (true, n) => n.to_string(),
                };
                let flow = if r.flow == "-" { "(default)" } else { &r.flow };
                let _ = writeln!(
                    s,
                    "  {flow:<28} rule {at:<4} {:>12} pkts {:>14} bytes  {}",
                    r.total, r.total_bytes, r.text
                );
            }
            continue;
        }
        for (slot, (flow, rule)) in list.slot_names(&rules.source, kind).iter().enumerate() {
            let _ = writeln!(
                s,
                "  {flow:<28} rule {rule:<3} {:>12}",
                hits.get(slot).copied().unwrap_or(0)
            );
        }
        let _ = writeln!(
            s,
            "  {:<28} {:<8} {:>12}",
            "(default)",
            "",
            hits.last().copied().unwrap_or(0)
        );
    }
    let drops: Vec<String> = DropReason::all()
        .filter(|d| t.drop_count(*d) > 0)
        .map(|d| format!("{} {}", d.name(), t.drop_count(d)))
        .collect();
    let _ = writeln!(
        s,
        "drops: {}",
        if drops.is_empty() {
            "none".into()
        } else {
            drops.join(", ")
        }
    );
    if t.handoff.iter().any(|&n| n > 0) {
        let _ = writeln!(
            s,
            "hand-over between workers: {} handed out, {} handed in",
            t.handoff[0], t.handoff[1]
        );
    }
    s
}

/// Start the health checks of the appliance's directors: each state change is published
/// as a new `DirectorSet` snapshot (the workers see it on their next burst) and printed.
fn start_health(
    app: &Appliance,
    directors: &Arc<SharedDirectors>,
) -> anyhow::Result<Option<HealthChecker>> {
    let targets = health::targets(&app.directors).map_err(|e| anyhow!("health checks: {e}"))?;
    if targets.is_empty() {
        return Ok(None);
    }
    let shared = Arc::clone(directors);
    let checker = HealthChecker::start_with(targets, HealthOptions::default(), move |e| {
        let cur = shared.set.load();
        let name = cur
            .get(e.director)
            .and_then(|d| {
                d.servers
                    .get(e.server)
                    .map(|s| format!("{}/{}", d.name, s.name))
            })
            .unwrap_or_else(|| format!("{}/{}", e.director, e.server));
        match cur.with_server_up(e.director, e.server, e.up) {
            Ok(next) => {
                shared.set.store(Arc::new(next));
                if e.up {
                    log::info!(target: "health", "director {name}: up ({})", e.reason);
                } else {
                    log::warn!(target: "health", "director {name}: down ({})", e.reason);
                }
            }
            Err(err) => log::warn!(target: "health", "director {name}: {err}"),
        }
    })
    .map_err(|e| anyhow!("health checks: {e}"))?;
    Ok(Some(checker))
}

/// A connection-table hash seed that differs per boot (against hostile clients).
fn per_boot_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (t.as_nanos() as u64) ^ (u64::from(std::process::id()) << 32) ^ WorkerOptions::default().seed
}

/// The directors' counters, summed over workers, as a person reads them.
pub fn director_report(directors: &SharedDirectors) -> String {
    let set = directors.set.load();
    if set.is_empty() {
        return String::new();
    }
    let totals = directors.totals();
    let mut s = String::new();
    for (d, c) in set.iter().zip(&totals) {
        let drops: Vec<String> = flowgate_dataplane::director::DropReason::ALL
            .iter()
            .filter(|r| c.drops[r.index()] > 0)
            .map(|r| format!("{} {}", r.name(), c.drops[r.index()]))
            .collect();
        let _ = writeln!(
            s,
            "director {}: conns {}, packets in {} out {}, icmp errors in {} out {}, half-open evicted {}, defense entered {}, drops: {}",
            d.name,
            c.conns,
            c.packets_in,
            c.packets_out,
            c.icmp_in,
            c.icmp_out,
            c.half_open_evicted,
            c.defense_entered,
            if drops.is_empty() {
                "none".into()
            } else {
                drops.join(", ")
            }
        );
        for (srv, sc) in d.servers.iter().zip(&c.servers) {
            let _ = writeln!(
                s,
                "  {:<20} {:<4} conns {:>8} active {:>6} packets {:>10} bytes {:>12}",
                srv.name,
                if srv.up { "up" } else { "down" },
                sc.conns,
                sc.active,
                sc.packets_in + sc.packets_out,
                sc.bytes_in + sc.bytes_out
            );
        }
    }
    s
}

/// The `directors` section of `--stats-json`: per director, per server name.
pub fn directors_json(directors: &SharedDirectors) -> serde_json::Value {
    let set = directors.set.load();
    let totals = directors.totals();
    let mut out = serde_json::Map::new();
    for (d, c) in set.iter().zip(&totals) {
        out.insert(d.name.clone(), director_json(d, c));
    }
    serde_json::Value::Object(out)
}

fn director_json(
    d: &flowgate_dataplane::director::DirectorState,
    c: &DirectorCounters,
) -> serde_json::Value {
    let mut servers = serde_json::Map::new();
    for (srv, sc) in d.servers.iter().zip(&c.servers) {
        servers.insert(
            srv.name.clone(),
            serde_json::json!({
                "connections": sc.conns,
                "packets": sc.packets_in + sc.packets_out,
                "bytes": sc.bytes_in + sc.bytes_out,
                "packets_in": sc.packets_in,
                "packets_out": sc.packets_out,
                "active": sc.active,
                "inactive": sc.inactive,
                "up": srv.up,
            }),
        );
    }
    let mut drops = serde_json::Map::new();
    for r in flowgate_dataplane::director::DropReason::ALL {
        drops.insert(r.name().into(), c.drops[r.index()].into());
    }
    serde_json::json!({
        "connections": c.conns,
        "packets_in": c.packets_in,
        "packets_out": c.packets_out,
        "nodest_expired": c.nodest_expired,
        "icmp_in": c.icmp_in,
        "icmp_out": c.icmp_out,
        "half_open_evicted": c.half_open_evicted,
        "defense_entered": c.defense_entered,
        "half_open": c.half_open,
        "defense_active": c.defense_active,
        "drops": drops,
        "servers": servers,
    })
}

/// The counters as JSON (`--stats-json`), for scripts and benchmarks.
pub fn stats_json(
    app: &Appliance,
    rules: &RuleSet,
    workers: &[Arc<WorkerCounters>],
    nic: &[PortStats],
    elapsed: Duration,
) -> serde_json::Value {
    let t = Totals::sum(workers.iter().map(|w| w.as_ref()));
    let r = rules.totals();
    let ports: Vec<serde_json::Value> = app
        .ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let c = t.ports.get(i).copied().unwrap_or_default();
            let n = nic.get(i).copied().unwrap_or_default();
            let mut o = serde_json::Map::new();
            o.insert("name".into(), p.name.clone().into());
            for (k, v) in PORT_COLUMNS.iter().zip(c) {
                o.insert(
                    format!("{k}_packets").replace("_bytes_packets", "_bytes"),
                    v.into(),
                );
            }
            o.insert("nic_ipackets".into(), n.ipackets.into());
            o.insert("nic_opackets".into(), n.opackets.into());
            o.insert("nic_imissed".into(), n.imissed.into());
            o.insert("nic_ierrors".into(), n.ierrors.into());
            o.insert("nic_oerrors".into(), n.oerrors.into());
            o.insert("nic_rx_nombuf".into(), n.rx_nombuf.into());
            o.insert("tx_shared_bursts".into(), n.tx_shared_bursts.into());
            o.insert("tx_lock_contended".into(), n.tx_lock_contended.into());
            serde_json::Value::Object(o)
        })
        .collect();
    let verdicts = |v: [u64; 4]| {
        let mut o = serde_json::Map::new();
        for k in VerdictKind::ALL {
            o.insert(k.name().into(), v[k as usize].into());
        }
        serde_json::Value::Object(o)
    };
    let mut drops = serde_json::Map::new();
    for d in DropReason::all() {
        drops.insert(d.name().into(), t.drop_count(d).into());
    }
    let rules_json = |kind: ListKind, hits: &Vec<u64>| -> serde_json::Value {
        let list = rules.list(kind);
        let mut v: Vec<serde_json::Value> = list
            .slot_names(&rules.source, kind)
            .iter()
            .enumerate()
            .map(|(slot, (flow, rule))| {
                serde_json::json!({"flow": flow, "rule": rule, "packets": hits.get(slot).copied().unwrap_or(0)})
            })
            .collect();
        v.push(serde_json::json!({"flow": null, "rule": null, "packets": hits.last().copied().unwrap_or(0)}));
        serde_json::Value::Array(v)
    };
    serde_json::json!({
        "elapsed_s": elapsed.as_secs_f64(),
        "workers": workers.len(),
        "generation": rules.generation,
        "ports": ports,
        "verdicts": verdicts(r.flow_verdicts),
        "outflow_verdicts": verdicts(r.outflow_verdicts),
        "drops": serde_json::Value::Object(drops),
        "neighbours": NEIGHBOUR_COLUMNS.iter().zip(t.neighbours)
            .map(|(k, v)| ((*k).to_string(), serde_json::Value::from(v)))
            .collect::<serde_json::Map<_, _>>(),
        "handoff": HANDOFF_COLUMNS.iter().zip(t.handoff)
            .map(|(k, v)| ((*k).to_string(), serde_json::Value::from(v)))
            .collect::<serde_json::Map<_, _>>(),
        "tables": rules.routes.ids().iter().enumerate().map(|(i, id)| serde_json::json!({
            "id": id,
            "lookups": r.route_lookups.get(i).copied().unwrap_or(0),
            "fallbacks": r.route_fallbacks.get(i).copied().unwrap_or(0),
        })).collect::<Vec<_>>(),
        "flow_rules": rules_json(ListKind::Flow, &r.flow_rules),
        "outflow_rules": rules_json(ListKind::Outflow, &r.outflow_rules),
    })
}
