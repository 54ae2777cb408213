//! The control thread: the owner of the published state. Requests arrive over a channel as
//! [`Request`] actions (from the socket server or in-process) and are executed one at a time,
//! so publication has a single writer.
//!
//! `apply`: load (parse, check references against the appliance, lint) -> compile the next
//! generation -> publish (`ArcSwap::store`) -> persist the text atomically. A file that does
//! not load or compile changes nothing: neither the dataplane nor the file on disk.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flowgate_config::appliance::Appliance;
use flowgate_config::flows::{self, print::print_flow, Flow, FlowsFile, ListKind, Loaded};
use flowgate_dataplane::counters::{
    DropReason, Totals, VerdictKind, HANDOFF_COLUMNS, NEIGHBOUR_COLUMNS, PORT_COLUMNS,
};
use flowgate_dataplane::ruleset::RuleSet;

use crate::metrics;
use crate::persist::write_atomic;
use crate::protocol::{
    AppliedReply, Body, Changed, CheckReply, DiffReply, DirectorsReply, DoneReply, ErrorReply,
    FlowsReply, PortStat, Request, RuleStat, StatsReply, StatusReply, VerdictStat,
};
use crate::server::{self, Server};
use crate::state::{per_rule, sizes, DirectorControl, Generations, Shared};
use crate::trace::{list_default, trace};

/// Files with more rules than this are not linted by the daemon (the lint is quadratic in the
/// number of rules); `flowgate check` still lints them. Errors are always checked.
pub const LINT_MAX_RULES: usize = 2_000;

/// The largest flows file `apply_path` reads.
pub const MAX_FLOWS_FILE: u64 = 256 << 20;

/// How many earlier applied sets `rollback` can go back through.
pub const ROLLBACK_DEPTH: usize = 32;

/// Why the control side could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot read flows file {path}: {source}")]
    ReadFlows {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("flows file refused:\n{0}")]
    Flows(flows::Report),
    #[error("cannot compile flows: {0}")]
    Compile(#[from] flowgate_dataplane::classify::CompileError),
    #[error("control socket {path}: {source}")]
    Socket {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("metrics exporter: {0}")]
    Metrics(String),
    #[error("cannot spawn the control thread: {0}")]
    Spawn(#[source] std::io::Error),
}

/// Loads and compiles the flows file the appliance names (what was last applied) as
/// generation 1. Returns the rule set and the file's text.
pub fn initial_rules(appliance: &Appliance) -> Result<(RuleSet, String), StartError> {
    let path = appliance.flows.display().to_string();
    let text =
        std::fs::read_to_string(&appliance.flows).map_err(|source| StartError::ReadFlows {
            path: path.clone(),
            source,
        })?;
    let loaded = flows::load(&path, &text, Some(appliance)).map_err(StartError::Flows)?;
    let set = RuleSet::compile(loaded.file, appliance, 1)?;
    Ok((set, text))
}

/// Where the control side listens and persists.
pub struct ControlOptions {
    pub socket: PathBuf,
    /// Where an applied flows file is persisted (the appliance's `flows`).
    pub flows_path: PathBuf,
    /// Prometheus listener; `None`: no exporter (metrics calls are then no-ops).
    pub metrics: Option<std::net::SocketAddr>,
    /// The director state, if this build has one.
    pub director: Option<Box<dyn DirectorControl>>,
    /// How often counters are folded and metrics published.
    pub tick: Duration,
}

impl std::fmt::Debug for ControlOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlOptions")
            .field("socket", &self.socket)
            .field("flows_path", &self.flows_path)
            .field("metrics", &self.metrics)
            .field("director", &self.director.is_some())
            .field("tick", &self.tick)
            .finish()
    }
}

impl ControlOptions {
    /// The socket, flows path and metrics address of the appliance config.
    pub fn from_appliance(appliance: &Appliance) -> ControlOptions {
        ControlOptions {
            socket: appliance.control.socket.clone(),
            flows_path: appliance.flows.clone(),
            metrics: appliance.control.metrics,
            director: None,
            tick: Duration::from_secs(1),
        }
    }
}

/// The reply of one request.
pub type Reply = Result<Body, ErrorReply>;

/// What the control thread receives.
#[derive(Debug)]
pub enum Command {
    /// A request, when it arrived (for request-to-publish times), and where to answer.
    Request(Request, Instant, Sender<Reply>),
    Shutdown,
}

/// The owner of the published state (runs on the control thread).
pub struct Controller {
    shared: Arc<Shared>,
    gens: Generations,
    /// The text of the applied set, and of the sets before it (most recent last).
    current_text: String,
    undo: Vec<String>,
    flows_path: PathBuf,
    director: Option<Box<dyn DirectorControl>>,
    swaps: u64,
    /// Pushes (`apply`, `apply_path`, `rollback`, SIGHUP) refused since start.
    refused: u64,
    export_metrics: bool,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("shared", &self.shared)
            .field("swaps", &self.swaps)
            .field("undo", &self.undo.len())
            .finish()
    }
}

impl Controller {
    /// A controller for `shared`, whose current set was loaded from `current_text`.
    pub fn new(shared: Arc<Shared>, current_text: String, opts: &mut ControlOptions) -> Self {
        let mut gens = Generations::default();
        gens.push(shared.rules.load_full());
        Controller {
            shared,
            gens,
            current_text,
            undo: Vec::new(),
            flows_path: opts.flows_path.clone(),
            director: opts.director.take(),
            swaps: 0,
            refused: 0,
            export_metrics: opts.metrics.is_some(),
        }
    }

    fn appliance(&self) -> &Appliance {
        &self.shared.appliance
    }

    /// Execute one action.
    pub fn handle(&mut self, req: Request, arrived: Instant) -> Reply {
        match req {
            Request::Status {} => Ok(Body::Status(self.status())),
            Request::Check { flows, name } => {
                let loaded = self.load(&flows, name.as_deref())?;
                let (f, o, r) = sizes(&loaded.file);
                RuleSet::compile(loaded.file.clone(), self.appliance(), 0).map_err(compile_err)?;
                Ok(Body::Check(CheckReply {
                    flows: f,
                    outflows: o,
                    rules: r,
                    warnings: loaded.render_warnings(false),
                }))
            }
            Request::Diff { flows, name } => {
                let loaded = self.load(&flows, name.as_deref())?;
                Ok(Body::Diff(diff(
                    &self.shared.rules.load().source,
                    &loaded.file,
                )))
            }
            Request::Apply { flows, name } => self.apply(flows, name.as_deref(), arrived),
            Request::ApplyPath { path } => {
                let text = read_bounded(Path::new(&path))?;
                self.apply(text, Some(&path), arrived)
            }
            Request::Rollback {} => self.rollback(arrived),
            Request::ShowFlows {} => {
                let set = self.shared.rules.load();
                Ok(Body::Flows(FlowsReply {
                    generation: set.generation,
                    text: flows::print(&set.source),
                }))
            }
            Request::Stats {} => Ok(Body::Stats(Box::new(self.stats()))),
            Request::Trace { packet, outflows } => {
                let pkt = flows::parse_packet_line(&packet)
                    .map_err(|e| ErrorReply::new(format!("bad packet line: {e}")))?;
                let kind = if outflows {
                    ListKind::Outflow
                } else {
                    ListKind::Flow
                };
                let set = self.shared.rules.load();
                let default = list_default(self.appliance(), kind);
                Ok(Body::Trace(trace(&set, kind, &pkt, &default)))
            }
            Request::DirectorList {} => Ok(Body::Directors(DirectorsReply {
                directors: self.director()?.list(),
            })),
            Request::DirectorEnable { director, server } => {
                self.director()?
                    .set_enabled(&director, &server, true)
                    .map_err(ErrorReply::new)?;
                done(format!("{director}/{server} enabled"))
            }
            Request::DirectorDisable { director, server } => {
                self.director()?
                    .set_enabled(&director, &server, false)
                    .map_err(ErrorReply::new)?;
                done(format!("{director}/{server} disabled"))
            }
            Request::DirectorWeight {
                director,
                server,
                weight,
            } => {
                self.director()?
                    .set_weight(&director, &server, weight)
                    .map_err(ErrorReply::new)?;
                done(format!("{director}/{server} weight {weight}"))
            }
        }
    }

    fn director(&mut self) -> Result<&mut Box<dyn DirectorControl>, ErrorReply> {
        self.director
            .as_mut()
            .ok_or_else(|| ErrorReply::new("no director state in this build"))
    }

    fn load(&self, text: &str, name: Option<&str>) -> Result<Loaded, ErrorReply> {
        let name = name.unwrap_or("<pushed>");
        let refused = |report: flows::Report| {
            let n = report.errors().count();
            ErrorReply {
                error: format!("flows file refused: {n} error(s); nothing changed"),
                diagnostics: Some(report.render(false)),
            }
        };
        let parsed = flows::parse_with(text, Some(self.appliance())).map_err(|diagnostics| {
            refused(flows::Report {
                path: name.to_string(),
                source: text.to_string(),
                diagnostics,
            })
        })?;
        let rules: usize = parsed.file.items.iter().map(|f| f.rules.len()).sum();
        let mut warnings = parsed.warnings;
        // as `flows::load`; but the lint compares rule pairs (quadratic): past the limit,
        // errors and parse warnings only
        if rules <= LINT_MAX_RULES {
            warnings.extend(flows::lint::lint(&parsed.file, &parsed.spans, text));
            warnings.sort_by_key(|d| (d.span.start, d.span.end));
        }
        Ok(Loaded {
            path: name.to_string(),
            source: text.to_string(),
            file: parsed.file,
            spans: parsed.spans,
            warnings,
        })
    }

    fn apply(&mut self, text: String, name: Option<&str>, arrived: Instant) -> Reply {
        let loaded = self.load(&text, name)?;
        let warnings = loaded.render_warnings(false);
        let mut reply = self.compile_and_publish(loaded.file, text, arrived, true)?;
        reply.warnings = warnings;
        Ok(Body::Applied(reply))
    }

    fn rollback(&mut self, arrived: Instant) -> Reply {
        let Some(text) = self.undo.last().cloned() else {
            return Err(ErrorReply::new("nothing to roll back to"));
        };
        let loaded = self.load(&text, Some("<rollback>"))?;
        let reply = self.compile_and_publish(loaded.file, text, arrived, false)?;
        self.undo.pop();
        Ok(Body::Applied(reply))
    }

    /// Compile the next generation, publish it, then persist its text.
    fn compile_and_publish(
        &mut self,
        file: FlowsFile,
        text: String,
        arrived: Instant,
        remember: bool,
    ) -> Result<AppliedReply, ErrorReply> {
        let generation = self.shared.rules.load().generation + 1;
        let t0 = Instant::now();
        let set =
            Arc::new(RuleSet::compile(file, self.appliance(), generation).map_err(compile_err)?);
        let compile = t0.elapsed();
        self.shared.rules.store(Arc::clone(&set));
        let publish = arrived.elapsed();
        self.gens.push(set);
        self.swaps += 1;
        metrics::record_swap(publish);
        let previous = std::mem::replace(&mut self.current_text, text);
        if remember {
            self.undo.push(previous);
            if self.undo.len() > ROLLBACK_DEPTH {
                self.undo.remove(0);
            }
        }
        let persist_error = write_atomic(&self.flows_path, self.current_text.as_bytes())
            .err()
            .map(|e| format!("cannot persist to {}: {e}", self.flows_path.display()));
        Ok(AppliedReply {
            generation,
            publish_us: micros(publish),
            compile_us: micros(compile),
            persisted: persist_error.is_none(),
            persist_error,
            warnings: String::new(),
        })
    }

    /// Generation, uptime and sizes.
    pub fn status(&self) -> StatusReply {
        let set = self.shared.rules.load();
        let (f, o, r) = sizes(&set.source);
        StatusReply {
            generation: set.generation,
            uptime_s: self.shared.started.elapsed().as_secs(),
            workers: self.shared.workers.len(),
            ports: self
                .appliance()
                .ports
                .iter()
                .map(|p| p.name.clone())
                .collect(),
            flows: f,
            outflows: o,
            rules: r,
            rollback_depth: self.undo.len(),
            swaps: self.swaps,
            flows_path: self.flows_path.display().to_string(),
        }
    }

    /// Every counter, summed over workers (and over generations for rules and verdicts).
    pub fn stats(&self) -> StatsReply {
        let set = self.shared.rules.load();
        let (all_rules, verdicts) = self.gens.totals();
        let mut rules = Vec::new();
        for (key, hits) in per_rule(&set).0 {
            let total = all_rules.get(&key).copied().unwrap_or(hits);
            let (kind, flow, rule) = key;
            rules.push(RuleStat {
                list: kind.keyword().into(),
                flow,
                rule,
                hits,
                total,
            });
        }
        let mut vs = Vec::new();
        for (kind, counts) in [
            (ListKind::Flow, verdicts[0]),
            (ListKind::Outflow, verdicts[1]),
        ] {
            for (v, n) in VerdictKind::ALL.iter().zip(counts) {
                vs.push(VerdictStat {
                    list: kind.keyword().into(),
                    verdict: v.name().into(),
                    packets: n,
                });
            }
        }
        let totals = Totals::sum(self.shared.workers.iter().map(|w| w.as_ref()));
        let nic = self.shared.nic_stats().unwrap_or_default();
        let ports = self
            .appliance()
            .ports
            .iter()
            .enumerate()
            .map(|(i, p)| PortStat {
                name: p.name.clone(),
                counters: PORT_COLUMNS
                    .iter()
                    .enumerate()
                    .map(|(c, name)| {
                        let v = totals.ports.get(i).map(|row| row[c]).unwrap_or(0);
                        ((*name).to_string(), v)
                    })
                    .collect(),
                nic: nic.get(i).cloned(),
            })
            .collect();
        let drops = DropReason::all()
            .map(|d| (d.name().to_string(), totals.drop_count(d)))
            .collect();
        StatsReply {
            generation: set.generation,
            rules,
            verdicts: vs,
            ports,
            drops,
            directors: self.director.as_ref().map(|d| d.list()).unwrap_or_default(),
            workers: NEIGHBOUR_COLUMNS
                .iter()
                .map(|c| format!("neighbour_{c}"))
                .zip(totals.neighbours)
                .chain(
                    HANDOFF_COLUMNS
                        .iter()
                        .map(|c| (*c).to_string())
                        .zip(totals.handoff),
                )
                .collect(),
        }
    }

    /// Periodic work: fold old generations' counters, publish metrics.
    pub fn tick(&mut self) {
        self.gens.fold();
        if self.export_metrics {
            metrics::publish(&self.stats(), self.swaps);
            metrics::publish_refused(self.refused);
        }
    }

    /// Logs a push's outcome once: the swap it published, or why it was refused.
    fn log_push(&mut self, source: &str, reply: &Reply) {
        match reply {
            Ok(Body::Applied(a)) => {
                log::info!(
                    target: "control",
                    "{source}: generation {} published in {} us (compile {} us){}",
                    a.generation,
                    a.publish_us,
                    a.compile_us,
                    match &a.persist_error {
                        Some(e) => format!("; NOT persisted: {e}"),
                        None => String::new(),
                    }
                );
            }
            Ok(_) => {}
            Err(e) => {
                self.refused += 1;
                metrics::publish_refused(self.refused);
                // the first diagnostic says where; the reply carries them all
                let first = e
                    .diagnostics
                    .as_deref()
                    .and_then(|d| d.lines().find(|l| !l.trim().is_empty()))
                    .map(|l| format!(" ({})", l.trim()))
                    .unwrap_or_default();
                log::warn!(target: "control", "{source} refused: {}{first}", e.error);
            }
        }
    }

    /// The control thread's loop: serve commands until `Shutdown` or every sender is gone.
    pub fn run(mut self, rx: Receiver<Command>, tick: Duration) {
        let mut last = Instant::now();
        loop {
            match rx.recv_timeout(tick) {
                Ok(Command::Request(req, arrived, reply)) => {
                    let push = push_source(&req);
                    let r = self.handle(req, arrived);
                    if let Some(source) = push {
                        self.log_push(&source, &r);
                    }
                    let _ = reply.send(r);
                }
                Ok(Command::Shutdown) | Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => {}
            }
            if last.elapsed() >= tick {
                last = Instant::now();
                self.tick();
            }
        }
    }
}

/// What a request that publishes a rule set is called in the log; `None` for the others.
fn push_source(req: &Request) -> Option<String> {
    match req {
        Request::Apply { name, .. } => {
            Some(format!("apply {}", name.as_deref().unwrap_or("<pushed>")))
        }
        Request::ApplyPath { path } => Some(format!("apply_path {path}")),
        Request::Rollback {} => Some("rollback".into()),
        _ => None,
    }
}

fn done(what: String) -> Reply {
    Ok(Body::Done(DoneReply { done: what }))
}

fn compile_err(e: flowgate_dataplane::classify::CompileError) -> ErrorReply {
    ErrorReply::new(format!("cannot compile flows: {e}; nothing changed"))
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn read_bounded(path: &Path) -> Result<String, ErrorReply> {
    let meta = std::fs::metadata(path)
        .map_err(|e| ErrorReply::new(format!("cannot read {}: {e}", path.display())))?;
    if meta.len() > MAX_FLOWS_FILE {
        return Err(ErrorReply::new(format!(
            "{} is larger than {MAX_FLOWS_FILE} bytes",
            path.display()
        )));
    }
    std::fs::read_to_string(path)
        .map_err(|e| ErrorReply::new(format!("cannot read {}: {e}", path.display())))
}

/// Items added, removed, changed and moved between two files, by name.
pub fn diff(old: &FlowsFile, new: &FlowsFile) -> DiffReply {
    let text = |f: &Flow| {
        let mut s = String::new();
        print_flow(&mut s, f);
        s
    };
    let old_by: HashMap<&str, &Flow> = old.items.iter().map(|f| (f.name.as_str(), f)).collect();
    let new_by: HashMap<&str, &Flow> = new.items.iter().map(|f| (f.name.as_str(), f)).collect();
    let added = new
        .items
        .iter()
        .filter(|f| !old_by.contains_key(f.name.as_str()))
        .map(text)
        .collect();
    let removed = old
        .items
        .iter()
        .filter(|f| !new_by.contains_key(f.name.as_str()))
        .map(|f| f.name.clone())
        .collect();
    let changed = new
        .items
        .iter()
        .filter_map(|f| {
            let before = old_by.get(f.name.as_str())?;
            (*before != f).then(|| Changed {
                name: f.name.clone(),
                before: text(before),
                after: text(f),
            })
        })
        .collect();
    // order among the items both files have, per list
    let mut moved = Vec::new();
    for kind in [ListKind::Flow, ListKind::Outflow] {
        let a: Vec<&str> = old
            .list(kind)
            .filter(|f| new_by.contains_key(f.name.as_str()))
            .map(|f| f.name.as_str())
            .collect();
        let b: Vec<&str> = new
            .list(kind)
            .filter(|f| old_by.contains_key(f.name.as_str()))
            .map(|f| f.name.as_str())
            .collect();
        moved.extend(
            a.iter()
                .zip(&b)
                .filter(|(x, y)| x != y)
                .map(|(_, y)| (*y).to_string()),
        );
    }
    DiffReply {
        added,
        removed,
        changed,
        moved,
    }
}

/// A running control side: the control thread and the socket server.
#[derive(Debug)]
pub struct ControlHandle {
    tx: Sender<Command>,
    thread: Option<JoinHandle<()>>,
    server: Option<Server>,
}

impl ControlHandle {
    /// Send a request in-process (as the socket server does) and wait for the reply.
    pub fn request(&self, req: Request) -> Reply {
        ask(&self.tx, req, Instant::now())
    }

    /// A sender for in-process requests (health checks, signals).
    pub fn sender(&self) -> Sender<Command> {
        self.tx.clone()
    }

    /// Stop the server (removing the socket) and the control thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown();
        }
        let _ = self.tx.send(Command::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl std::ops::Drop for ControlHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends a request to the control thread and waits for its reply.
pub fn ask(tx: &Sender<Command>, req: Request, arrived: Instant) -> Reply {
    let (rtx, rrx) = mpsc::channel();
    tx.send(Command::Request(req, arrived, rtx))
        .map_err(|_| ErrorReply::new("control thread is gone"))?;
    rrx.recv()
        .map_err(|_| ErrorReply::new("control thread dropped the request"))?
}

/// Starts the control side: the metrics exporter (if configured), the control thread owning
/// `shared`'s publication, and the socket server. `current_text` is the applied flows text
/// (from [`initial_rules`]).
pub fn start(
    shared: Arc<Shared>,
    current_text: String,
    mut opts: ControlOptions,
) -> Result<ControlHandle, StartError> {
    if let Some(addr) = opts.metrics {
        metrics::install(addr).map_err(StartError::Metrics)?;
    }
    let listener = server::bind(&opts.socket).map_err(|source| StartError::Socket {
        path: opts.socket.display().to_string(),
        source,
    })?;
    let (tx, rx) = mpsc::channel();
    let ctl = Controller::new(shared, current_text, &mut opts);
    let tick = opts.tick;
    let thread = std::thread::Builder::new()
        .name("flowgate-control".into())
        .spawn(move || ctl.run(rx, tick))
        .map_err(StartError::Spawn)?;
    let server =
        Server::spawn(listener, opts.socket.clone(), tx.clone()).map_err(StartError::Spawn)?;
    Ok(ControlHandle {
        tx,
        thread: Some(thread),
        server: Some(server),
    })
}
