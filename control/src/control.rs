//! The control thread, the push thread and the report thread. Requests arrive over a channel
//! as [`Request`] actions (from the socket server or in-process). The control thread answers
//! `status` itself; the pushes (check, diff, apply, apply_path, rollback, and the incremental
//! updates insert, delete, replace: parse, compile, persist, publish, lint) go to the push thread, which executes them one at a time
//! ([`Pusher::handle`]), so publication has a single writer; the rest (stats, show, trace,
//! directors, and the periodic fold and metrics) go to the report thread
//! ([`Reports::handle`]). So `status` is answered while a push or a large `stats` is worked on.
//!
//! `apply`: load (parse, check references against the appliance) -> compile the next
//! generation (against the running one: unchanged flows keep their compiled form) -> persist
//! the text atomically -> publish (`ArcSwap::store`) -> lint (after publication, so the lint's
//! time is not the publication's). A file that does not load, compile or persist changes
//! nothing: neither the dataplane nor the file on disk. Every publishing push (apply,
//! apply_path, rollback, SIGHUP reload, insert/delete/replace) goes through one commit step,
//! [`Pusher::commit`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flowgate_config::appliance::Appliance;
use flowgate_config::flows::{self, print::print_flow, Flow, FlowsFile, ListKind, Loaded, Rule};
use flowgate_dataplane::classify::live::ListEdit;
use flowgate_dataplane::counters::{
    DropReason, Totals, VerdictKind, HANDOFF_COLUMNS, NEIGHBOUR_COLUMNS, PORT_COLUMNS,
};
use flowgate_dataplane::ruleset::RuleSet;

use crate::editlog::EditLog;
use crate::history::{History, Saved};
use crate::metrics;
use crate::persist::{write_atomic, FileStamp};
use crate::protocol::{
    AppliedReply, Body, Changed, CheckReply, DiffReply, DirectorsReply, DoneReply, ErrorReply,
    FlowsReply, PortStat, Request, RuleStat, StatsReply, StatusReply, VerdictStat,
};
use crate::server::{self, Server};
use crate::state::{sizes, DirectorControl, Generations, Shared};
use crate::trace::{list_default, trace};

/// The largest flows file `apply_path` (and the daemon at start) reads.
pub const MAX_FLOWS_FILE: u64 = flowgate_config::source::MAX_FLOWS_FILE;

pub use crate::history::{ROLLBACK_BYTES, ROLLBACK_DEPTH};

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
    let text = flowgate_config::source::read_regular(&appliance.flows, MAX_FLOWS_FILE).map_err(
        |source| StartError::ReadFlows {
            path: path.clone(),
            source,
        },
    )?;
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

/// What the push thread publishes for the control thread to read (without waiting for it).
#[derive(Debug, Default)]
struct PushProgress {
    swaps: AtomicU64,
    rollback_depth: AtomicUsize,
    /// Pushes (`apply`, `apply_path`, `rollback`, SIGHUP, `insert`/`delete`/`replace`)
    /// refused since start.
    refused: AtomicU64,
}

/// Locks a mutex whose holder may have panicked (the state it guards stays consistent: every
/// change to it is a single store at the end of a push).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Whether a request is a push: worked on by the push thread, not the control thread.
fn is_push(req: &Request) -> bool {
    matches!(
        req,
        Request::Check { .. }
            | Request::Diff { .. }
            | Request::Apply { .. }
            | Request::ApplyPath { .. }
            | Request::Rollback {}
            | Request::Insert { .. }
            | Request::Delete { .. }
            | Request::Replace { .. }
    )
}

/// An incremental update, as the push thread executes it (and as the edit log keeps it:
/// one JSON object a line).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(tag = "edit", rename_all = "snake_case")]
enum EditOp {
    InsertFlow {
        text: String,
        before: Option<String>,
        after: Option<String>,
    },
    DeleteFlow {
        flow: String,
    },
    ReplaceFlow {
        text: String,
    },
    /// Insert (`text`, at a position or at the end), replace (`text`) or delete (no text)
    /// one rule of `flow`.
    Rule {
        flow: String,
        rule: RuleAt,
        text: Option<String>,
    },
}

/// The stamp of the flows file at `path` if it holds exactly `text` (the text the daemon
/// loaded at start), so that the first edit can link the history to it and log the edit
/// against it; `None` if it changed meanwhile or cannot be read.
fn stamp_if_holding(path: &Path, text: &str) -> Option<FileStamp> {
    let before = FileStamp::of(path)?;
    let on_disk = flowgate_config::source::read_regular(path, MAX_FLOWS_FILE).ok()?;
    (on_disk == text && FileStamp::of(path) == Some(before)).then_some(before)
}

/// The reply of a published, persisted push: its generation, its times (publish, compile,
/// persist) and warnings.
fn applied(
    generation: u64,
    [publish, compile, persist]: [Duration; 3],
    warnings: String,
) -> AppliedReply {
    AppliedReply {
        generation,
        publish_us: micros(publish),
        compile_us: micros(compile),
        persist_us: micros(persist),
        persisted: true,
        persist_error: None,
        warnings,
    }
}

/// The running set's items after one edit, and where the edit fell.
struct Edited {
    file: FlowsFile,
    kind: ListKind,
    edit: ListEdit,
    /// Item index removed (in the items before) and inserted (in the items after).
    removed_at: Option<usize>,
    inserted_at: Option<usize>,
    /// Rendered warnings of the new item.
    warnings: String,
}

/// Where a rule edit applies.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum RuleAt {
    /// New rule number (1-based), or after the last.
    Insert(Option<usize>),
    /// An existing rule number (1-based).
    At(usize),
}

/// The expensive side of the control side: loads, compiles, persists and publishes flows
/// texts, one request at a time (on the push thread when the controller runs).
pub struct Pusher {
    shared: Arc<Shared>,
    gens: Arc<Mutex<Generations>>,
    progress: Arc<PushProgress>,
    /// The text of the applied set, and of the sets before it.
    current_text: String,
    undo: History,
    /// Canonical text of each item of the running set, kept between incremental edits
    /// (`None` after a full apply or rollback: printed on the first edit).
    printed: Option<Vec<String>>,
    flows_path: PathBuf,
    /// The flows file as this daemon last wrote it, or read it at start (`None` when it
    /// does not hold a text this daemon knows). With an empty edit log it holds
    /// `current_text`.
    flows_stamp: Option<FileStamp>,
    /// Edits published but not yet in the flows file (see [`crate::editlog`]).
    log: EditLog,
}

impl std::fmt::Debug for Pusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pusher")
            .field("undo", &self.undo.len())
            .field("undo_bytes", &self.undo.bytes())
            .field("flows_path", &self.flows_path)
            .finish()
    }
}

/// The cheap side of the control side: status, stats, show, trace, directors, and the
/// periodic fold and metrics (on the report thread when the controller runs, so a `stats` of
/// a large set does not hold `status` up either).
pub struct Reports {
    shared: Arc<Shared>,
    gens: Arc<Mutex<Generations>>,
    progress: Arc<PushProgress>,
    flows_path: PathBuf,
    director: Mutex<Option<Box<dyn DirectorControl>>>,
    export_metrics: bool,
}

impl std::fmt::Debug for Reports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reports")
            .field("shared", &self.shared)
            .field("progress", &self.progress)
            .finish()
    }
}

/// The owner of the published state. Its loop (on the control thread) answers `status` and
/// hands pushes to the push thread and the other requests to the report thread.
pub struct Controller {
    reports: Arc<Reports>,
    pusher: Arc<Mutex<Pusher>>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("reports", &self.reports)
            .finish()
    }
}

/// Which thread works on a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Worker {
    /// `status`: the control thread itself.
    Control,
    /// Loads, compiles, persists: the push thread.
    Push,
    /// Everything else: the report thread.
    Report,
}

fn worker_for(req: &Request) -> Worker {
    match req {
        Request::Status {} => Worker::Control,
        r if is_push(r) => Worker::Push,
        _ => Worker::Report,
    }
}

impl Controller {
    /// A controller for `shared`, whose current set was loaded from `current_text`.
    pub fn new(shared: Arc<Shared>, current_text: String, opts: &mut ControlOptions) -> Self {
        let mut gens = Generations::default();
        gens.push(shared.rules.load_full());
        let gens = Arc::new(Mutex::new(gens));
        let progress = Arc::new(PushProgress::default());
        let (undo, notes) = History::open(&opts.flows_path, &current_text);
        for note in notes {
            log::warn!(target: "control", "rollback history: {note}");
        }
        progress.rollback_depth.store(undo.len(), Ordering::Relaxed);
        let flows_stamp = stamp_if_holding(&opts.flows_path, &current_text);
        let (log, pending) = EditLog::open(&opts.flows_path);
        for note in pending.notes {
            log::warn!(target: "control", "edit log: {note}");
        }
        let mut pusher = Pusher {
            shared: Arc::clone(&shared),
            gens: Arc::clone(&gens),
            progress: Arc::clone(&progress),
            current_text,
            undo,
            printed: None,
            flows_path: opts.flows_path.clone(),
            flows_stamp,
            log,
        };
        pusher.replay(pending.entries);
        let reports = Reports {
            shared,
            gens,
            progress,
            flows_path: opts.flows_path.clone(),
            director: Mutex::new(opts.director.take()),
            export_metrics: opts.metrics.is_some(),
        };
        Controller {
            reports: Arc::new(reports),
            pusher: Arc::new(Mutex::new(pusher)),
        }
    }

    /// Execute one action on this thread (a push too: this thread then waits for it).
    pub fn handle(&mut self, req: Request, arrived: Instant) -> Reply {
        match worker_for(&req) {
            Worker::Push => lock(&self.pusher).handle(req, arrived),
            Worker::Control | Worker::Report => self.reports.handle(req),
        }
    }

    /// Generation, uptime and sizes.
    pub fn status(&self) -> StatusReply {
        self.reports.status()
    }

    /// Every counter, summed over workers (and over generations for rules and verdicts).
    pub fn stats(&self) -> StatsReply {
        self.reports.stats()
    }

    /// Periodic work: fold old generations' counters, publish metrics.
    pub fn tick(&mut self) {
        self.reports.tick();
    }

    /// The control thread's loop: serve commands until `Shutdown` or every sender is gone.
    /// `status` is answered here; pushes go to the push thread (one at a time, in arrival
    /// order), every other request to the report thread, which also does the periodic
    /// [`Reports::tick`]. So `status` never waits for a push or a large `stats`.
    pub fn run(self, rx: Receiver<Command>, tick: Duration) {
        type Job = (Request, Instant, Sender<Reply>);
        let (push_tx, push_rx) = mpsc::channel::<Job>();
        let pusher = Arc::clone(&self.pusher);
        let push_thread = std::thread::Builder::new()
            .name("flowgate-push".into())
            .spawn(move || {
                for (req, arrived, reply) in push_rx {
                    let r = lock(&pusher).handle(req, arrived);
                    let _ = reply.send(r);
                }
            });
        let (report_tx, report_rx) = mpsc::channel::<Job>();
        let reports = Arc::clone(&self.reports);
        let report_thread = std::thread::Builder::new()
            .name("flowgate-report".into())
            .spawn(move || reports.run(report_rx, tick));
        // a thread that could not be made: its requests are worked on here
        let push_tx = push_thread.as_ref().ok().map(|_| push_tx);
        let report_tx = report_thread.as_ref().ok().map(|_| report_tx);
        let mut last = Instant::now();
        loop {
            match rx.recv_timeout(tick) {
                Ok(Command::Request(req, arrived, reply)) => {
                    let to = match worker_for(&req) {
                        Worker::Push => push_tx.as_ref(),
                        Worker::Report => report_tx.as_ref(),
                        Worker::Control => None,
                    };
                    let job = match to {
                        Some(tx) => match tx.send((req, arrived, reply)) {
                            Ok(()) => None,
                            Err(mpsc::SendError(job)) => Some(job),
                        },
                        None => Some((req, arrived, reply)),
                    };
                    if let Some((req, arrived, reply)) = job {
                        let r = match worker_for(&req) {
                            Worker::Push => lock(&self.pusher).handle(req, arrived),
                            _ => self.reports.handle(req),
                        };
                        let _ = reply.send(r);
                    }
                }
                Ok(Command::Shutdown) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
            if report_tx.is_none() && last.elapsed() >= tick {
                last = Instant::now();
                self.reports.tick();
            }
        }
        drop(push_tx);
        drop(report_tx);
        if let Ok(t) = push_thread {
            let _ = t.join();
        }
        if let Ok(t) = report_thread {
            let _ = t.join();
        }
    }
}

impl Reports {
    fn appliance(&self) -> &Appliance {
        &self.shared.appliance
    }

    /// Answer one request that is not a push.
    pub fn handle(&self, req: Request) -> Reply {
        match req {
            Request::Status {} => Ok(Body::Status(self.status())),
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
                directors: self.with_director(|d| Ok(d.list()))?,
            })),
            Request::DirectorEnable { director, server } => {
                self.with_director(|d| d.set_enabled(&director, &server, true))?;
                done(format!("{director}/{server} enabled"))
            }
            Request::DirectorDisable { director, server } => {
                self.with_director(|d| d.set_enabled(&director, &server, false))?;
                done(format!("{director}/{server} disabled"))
            }
            Request::DirectorWeight {
                director,
                server,
                weight,
            } => {
                self.with_director(|d| d.set_weight(&director, &server, weight))?;
                done(format!("{director}/{server} weight {weight}"))
            }
            other => Err(ErrorReply::new(format!(
                "`{}` is a push: the push thread answers it",
                other.op()
            ))),
        }
    }

    fn with_director<T>(
        &self,
        f: impl FnOnce(&mut Box<dyn DirectorControl>) -> Result<T, String>,
    ) -> Result<T, ErrorReply> {
        let mut d = lock(&self.director);
        let d = d
            .as_mut()
            .ok_or_else(|| ErrorReply::new("no director state in this build"))?;
        f(d).map_err(ErrorReply::new)
    }

    /// The report thread's loop: answer requests, and tick every `tick`.
    fn run(&self, rx: Receiver<(Request, Instant, Sender<Reply>)>, tick: Duration) {
        let mut last = Instant::now();
        loop {
            match rx.recv_timeout(tick) {
                Ok((req, _, reply)) => {
                    let _ = reply.send(self.handle(req));
                }
                Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => {}
            }
            if last.elapsed() >= tick {
                last = Instant::now();
                self.tick();
            }
        }
    }
}

impl Pusher {
    fn appliance(&self) -> &Appliance {
        &self.shared.appliance
    }

    /// Execute one push: `check`, `diff`, `apply`, `apply_path`, `rollback`, or an
    /// incremental `insert`, `delete` or `replace` (the seam: a request in, the reply out, the
    /// published state and the flows file changed or not). A publishing push's outcome is
    /// logged (and a refusal counted).
    pub fn handle(&mut self, req: Request, arrived: Instant) -> Reply {
        let source = push_source(&req);
        let reply = self.work(req, arrived);
        if let Some(source) = source {
            self.log_push(&source, &reply);
        }
        reply
    }

    /// Logs a push's outcome once: the swap it published, or why it was refused.
    fn log_push(&self, source: &str, reply: &Reply) {
        match reply {
            Ok(Body::Applied(a)) => {
                log::info!(
                    target: "control",
                    "{source}: generation {} published in {} us (compile {} us, persist {} us){}",
                    a.generation,
                    a.publish_us,
                    a.compile_us,
                    a.persist_us,
                    match &a.persist_error {
                        Some(e) => format!("; NOT persisted: {e}"),
                        None => String::new(),
                    }
                );
            }
            Ok(_) => {}
            Err(e) => {
                let refused = self.progress.refused.fetch_add(1, Ordering::Relaxed) + 1;
                metrics::publish_refused(refused);
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

    fn work(&mut self, req: Request, arrived: Instant) -> Reply {
        match req {
            Request::Check { flows, name } => {
                let loaded = self.load(&flows, name.as_deref(), true)?;
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
                let loaded = self.load(&flows, name.as_deref(), false)?;
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
            Request::Insert {
                text,
                flow,
                at,
                before,
                after,
            } => match flow {
                None if at.is_none() => self.edit(
                    EditOp::InsertFlow {
                        text,
                        before,
                        after,
                    },
                    arrived,
                ),
                None => Err(ErrorReply::new("`at` needs `flow`")),
                Some(flow) => {
                    if before.is_some() || after.is_some() {
                        return Err(ErrorReply::new(
                            "`before`/`after` place flows; a rule takes `at`",
                        ));
                    }
                    self.edit(
                        EditOp::Rule {
                            flow,
                            rule: RuleAt::Insert(at),
                            text: Some(text),
                        },
                        arrived,
                    )
                }
            },
            Request::Delete { flow, rule } => match rule {
                None => self.edit(EditOp::DeleteFlow { flow }, arrived),
                Some(r) => self.edit(
                    EditOp::Rule {
                        flow,
                        rule: RuleAt::At(r),
                        text: None,
                    },
                    arrived,
                ),
            },
            Request::Replace { text, flow, rule } => match (flow, rule) {
                (None, None) => self.edit(EditOp::ReplaceFlow { text }, arrived),
                (Some(flow), Some(r)) => self.edit(
                    EditOp::Rule {
                        flow,
                        rule: RuleAt::At(r),
                        text: Some(text),
                    },
                    arrived,
                ),
                _ => Err(ErrorReply::new(
                    "replace takes a whole item, or `flow` and `rule` with one rule",
                )),
            },
            other => Err(ErrorReply::new(format!(
                "`{}` is not a push request",
                other.op()
            ))),
        }
    }

    /// Parse and check `text` against the appliance; with `lint`, lint it too (else the
    /// caller lints after publication, see `apply`).
    fn load(&self, text: &str, name: Option<&str>, lint: bool) -> Result<Loaded, ErrorReply> {
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
        let mut warnings = parsed.warnings;
        if lint {
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

    /// Parse and check, compile, commit (persist, publish); then lint (after publication, so
    /// the lint's time is not the publication's) and answer with the warnings.
    fn apply(&mut self, text: String, name: Option<&str>, arrived: Instant) -> Reply {
        let mut loaded = self.load(&text, name, false)?;
        // items are shared: this copies pointers
        let file = loaded.file.clone();
        let mut reply = self.compile_and_publish(file, text, arrived, true)?;
        let lint = flows::lint::lint(&loaded.file, &loaded.spans, &loaded.source);
        loaded.warnings.extend(lint);
        loaded.warnings.sort_by_key(|d| (d.span.start, d.span.end));
        reply.warnings = loaded.render_warnings(false);
        Ok(Body::Applied(reply))
    }

    fn rollback(&mut self, arrived: Instant) -> Reply {
        let Some(text) = self.undo.last().cloned() else {
            return Err(ErrorReply::new("nothing to roll back to"));
        };
        let loaded = self.load(&text, Some("<rollback>"), false)?;
        let reply = self.compile_and_publish(loaded.file, text, arrived, false)?;
        self.undo.pop();
        self.progress
            .rollback_depth
            .store(self.undo.len(), Ordering::Relaxed);
        Ok(Body::Applied(reply))
    }

    /// Compile the next generation (against the running set: flows it already has keep their
    /// compiled form, the others go to a delta, or the lists are compiled whole when they are
    /// many), then commit it.
    fn compile_and_publish(
        &mut self,
        file: FlowsFile,
        text: String,
        arrived: Instant,
        remember: bool,
    ) -> Result<AppliedReply, ErrorReply> {
        let running = self.shared.rules.load_full();
        let generation = running.generation + 1;
        let t0 = Instant::now();
        let set = Arc::new(
            running
                .update(file, self.appliance(), generation)
                .map_err(compile_err)?,
        );
        drop(running);
        let compile = t0.elapsed();
        // the printed items are those of the old set: printed again on the next edit
        self.commit(set, text, arrived, compile, remember, None)
    }

    /// The one place a compiled set becomes the running one (apply, apply_path, rollback,
    /// SIGHUP reload, incremental edits): persist `text` (the set's flows file) atomically,
    /// then publish, then remember the generation and the text it replaced. A text that
    /// cannot be saved is not published (a restart would silently go back to the saved
    /// one): the push is refused and nothing changes. `printed` is the canonical text of each
    /// of the set's items, when the caller has it (kept for the next incremental edit).
    fn commit(
        &mut self,
        set: Arc<RuleSet>,
        text: String,
        arrived: Instant,
        compile: Duration,
        remember: bool,
        printed: Option<Vec<String>>,
    ) -> Result<AppliedReply, ErrorReply> {
        let generation = set.generation;
        let t0 = Instant::now();
        // the replaced text is saved to the history first, the new one to the flows file
        // second: a failure of either leaves both as they were
        let saved = if remember {
            Some(self.save_replaced()?)
        } else {
            None
        };
        if let Err(e) = write_atomic(&self.flows_path, text.as_bytes()) {
            if let Some(saved) = saved {
                self.undo.discard(saved);
            }
            return Err(ErrorReply::new(format!(
                "cannot persist to {}: {e}; nothing changed",
                self.flows_path.display()
            )));
        }
        self.flows_stamp = FileStamp::of(&self.flows_path);
        // the file holds every edit now
        self.log.clear();
        let persist = t0.elapsed();
        let publish = self.publish(set, arrived);
        self.printed = printed;
        self.remember(saved, text);
        Ok(applied(
            generation,
            [publish, compile, persist],
            String::new(),
        ))
    }

    /// An incremental update (`insert`, `delete`, `replace`): the running set with one flow
    /// or one rule added, removed or replaced, validated as `apply` validates, compiled as
    /// a delta beside the running classifier (`classify::live`), committed through the edit
    /// log ([`Pusher::commit_edit`]).
    fn edit(&mut self, op: EditOp, arrived: Instant) -> Reply {
        let op_line = serde_json::to_string(&op)
            .map_err(|e| ErrorReply::new(format!("cannot write the edit down: {e}")))?;
        let set = self.shared.rules.load_full();
        let Edited {
            file,
            kind,
            edit,
            removed_at,
            inserted_at,
            mut warnings,
        } = self.edited_file(&set, op)?;
        let t0 = Instant::now();
        let new = RuleSet::edit(&set, file, kind, edit, self.appliance(), set.generation + 1)
            .map_err(compile_err)?;
        let compile = t0.elapsed();
        let new = Arc::new(new);
        drop(set);
        let mut reply =
            self.commit_edit(new, &op_line, (removed_at, inserted_at), arrived, compile)?;
        if !reply.warnings.is_empty() && !warnings.is_empty() {
            warnings.push('\n');
        }
        warnings.push_str(&reply.warnings);
        reply.warnings = warnings;
        Ok(Body::Applied(reply))
    }

    /// The running set's items with `op` applied, checked as `apply` checks them.
    fn edited_file(&self, set: &RuleSet, op: EditOp) -> Result<Edited, ErrorReply> {
        let mut items = set.source.items.clone();
        let find = |items: &[Arc<Flow>], name: &str| {
            items
                .iter()
                .position(|f| f.name == name)
                .ok_or_else(|| ErrorReply::new(format!("no flow or outflow named `{name}`")))
        };
        let list_index = |items: &[Arc<Flow>], at: usize, kind: ListKind| {
            items[..at].iter().filter(|f| f.kind == kind).count()
        };
        let mut warnings = String::new();
        // (item index removed, item index inserted) in `items` before / after the edit
        let (kind, edit, removed_at, inserted_at) = match op {
            EditOp::InsertFlow {
                text,
                before,
                after,
            } => {
                let (flow, w) = self.parse_flow(&text)?;
                warnings = w;
                if items.iter().any(|f| f.name == flow.name) {
                    return Err(ErrorReply::new(format!(
                        "`{}` exists: replace it, or delete it first; nothing changed",
                        flow.name
                    )));
                }
                let at = match (before, after) {
                    (Some(_), Some(_)) => {
                        return Err(ErrorReply::new("give `before` or `after`, not both"))
                    }
                    (Some(n), None) => find(&items, &n)?,
                    (None, Some(n)) => find(&items, &n)? + 1,
                    (None, None) => items.len(),
                };
                let kind = flow.kind;
                let li = list_index(&items, at, kind);
                items.insert(at, Arc::new(flow));
                (
                    kind,
                    ListEdit {
                        removed: None,
                        inserted: Some(li),
                    },
                    None,
                    Some(at),
                )
            }
            EditOp::DeleteFlow { flow } => {
                let at = find(&items, &flow)?;
                let kind = items[at].kind;
                let li = list_index(&items, at, kind);
                items.remove(at);
                (
                    kind,
                    ListEdit {
                        removed: Some(li),
                        inserted: None,
                    },
                    Some(at),
                    None,
                )
            }
            EditOp::ReplaceFlow { text } => {
                let (flow, w) = self.parse_flow(&text)?;
                warnings = w;
                let at = find(&items, &flow.name)?;
                if items[at].kind != flow.kind {
                    return Err(ErrorReply::new(format!(
                        "`{}` is {} {}: delete it and insert the new item; nothing changed",
                        flow.name,
                        if items[at].kind == ListKind::Flow {
                            "a"
                        } else {
                            "an"
                        },
                        items[at].kind.keyword()
                    )));
                }
                let kind = flow.kind;
                let li = list_index(&items, at, kind);
                items[at] = Arc::new(flow);
                (
                    kind,
                    ListEdit {
                        removed: Some(li),
                        inserted: Some(li),
                    },
                    Some(at),
                    Some(at),
                )
            }
            EditOp::Rule { flow, rule, text } => {
                let at = find(&items, &flow)?;
                let mut f = items[at].as_ref().clone();
                let n = f.rules.len();
                let check = |r: usize, max: usize| {
                    if r == 0 || r > max {
                        Err(ErrorReply::new(format!(
                            "`{flow}` has {n} rule(s): rule {r} is out of range; nothing changed"
                        )))
                    } else {
                        Ok(r - 1)
                    }
                };
                match (rule, text) {
                    // insert
                    (RuleAt::Insert(r), Some(text)) => {
                        let (new, w) = self.parse_rule(&f, &text)?;
                        warnings = w;
                        let i = check(r.unwrap_or(n + 1), n + 1)?;
                        f.rules.insert(i, new);
                    }
                    (RuleAt::At(r), Some(text)) => {
                        let (new, w) = self.parse_rule(&f, &text)?;
                        warnings = w;
                        let i = check(r, n)?;
                        f.rules[i] = new;
                    }
                    (RuleAt::At(r), None) => {
                        let i = check(r, n)?;
                        f.rules.remove(i);
                    }
                    (RuleAt::Insert(_), None) => {
                        return Err(ErrorReply::new("insert needs a rule"));
                    }
                }
                let kind = f.kind;
                let li = list_index(&items, at, kind);
                items[at] = Arc::new(f);
                (
                    kind,
                    ListEdit {
                        removed: Some(li),
                        inserted: Some(li),
                    },
                    Some(at),
                    Some(at),
                )
            }
        };
        Ok(Edited {
            file: FlowsFile { items },
            kind,
            edit,
            removed_at,
            inserted_at,
            warnings,
        })
    }

    /// Makes `set` the running one (the workers see it at their next burst), keeps it among
    /// the generations whose counters are read; the time from `arrived` to now.
    fn publish(&mut self, set: Arc<RuleSet>, arrived: Instant) -> Duration {
        self.shared.rules.store(Arc::clone(&set));
        let publish = arrived.elapsed();
        lock(&self.gens).push(set);
        self.progress.swaps.fetch_add(1, Ordering::Relaxed);
        metrics::record_swap(publish);
        publish
    }

    /// After a commit: `text` is the running text, and the one it replaced goes on the
    /// rollback stack under `saved` (when the commit is remembered).
    fn remember(&mut self, saved: Option<Saved>, text: String) {
        let previous = std::mem::replace(&mut self.current_text, text);
        if let Some(saved) = saved {
            self.undo.keep(saved, previous);
        }
        self.progress
            .rollback_depth
            .store(self.undo.len(), Ordering::Relaxed);
    }

    /// Saves the running text to the rollback history before a commit replaces it (a hard
    /// link to the flows file when the file holds it); refused whole if it cannot be saved.
    fn save_replaced(&mut self) -> Result<Saved, ErrorReply> {
        let same_as = self
            .flows_holds_current()
            .then_some(self.flows_path.as_path());
        self.undo
            .save(&self.current_text, same_as)
            .map_err(|(path, e)| {
                ErrorReply::new(format!(
                    "cannot persist to {}: {e}; nothing changed",
                    path.display()
                ))
            })
    }

    /// Whether the flows file holds the running text: it is the file this daemon last wrote
    /// (or read at start), and no edit is waiting in the log.
    fn flows_holds_current(&self) -> bool {
        self.log.is_empty()
            && self
                .flows_stamp
                .is_some_and(|s| FileStamp::of(&self.flows_path) == Some(s))
    }

    /// [`Pusher::commit`] for an incremental edit: the edit (`op_line`) is made durable by
    /// an append to the edit log, then published; the flows file is rewritten after
    /// publication and the log emptied. When the log cannot extend the flows file as it is
    /// (edited by hand since), or cannot be written, the edit is committed as `apply` is
    /// (the whole file rewritten before publication).
    /// `at`: the item removed and the item inserted by the edit (for the flows file's text,
    /// printed from the cache of each item's canonical text, see [`Pusher::printed_after`]).
    fn commit_edit(
        &mut self,
        set: Arc<RuleSet>,
        op_line: &str,
        at: (Option<usize>, Option<usize>),
        arrived: Instant,
        compile: Duration,
    ) -> Result<AppliedReply, ErrorReply> {
        let now = FileStamp::of(&self.flows_path);
        let loggable = match now {
            Some(stamp) if self.log.is_empty() => self.flows_holds_current().then_some(stamp),
            Some(stamp) if self.log.extends(now) => Some(stamp),
            _ => None,
        };
        // as `apply`: the whole file rewritten before publication
        let commit_whole = |p: &mut Pusher, set: Arc<RuleSet>| {
            let printed = p.printed_after(&set, at.0, at.1);
            let text = printed.join("\n");
            p.commit(set, text, arrived, compile, true, Some(printed))
        };
        let Some(base) = loggable else {
            return commit_whole(self, set);
        };
        let generation = set.generation;
        let t0 = Instant::now();
        // the replaced text first (a hard link when the file holds it), then the edit
        let saved = self.save_replaced()?;
        if let Err(e) = self.log.append(base, op_line) {
            log::warn!(target: "control", "edit log: {e}; the flows file is rewritten instead");
            self.undo.discard(saved);
            return commit_whole(self, set);
        }
        let persist = t0.elapsed();
        let publish = self.publish(Arc::clone(&set), arrived);
        let printed = self.printed_after(&set, at.0, at.1);
        drop(set);
        // after publication: the flows file catches up with the log
        let text = printed.join("\n");
        self.printed = Some(printed);
        let warnings = match write_atomic(&self.flows_path, text.as_bytes()) {
            Ok(()) => {
                self.flows_stamp = FileStamp::of(&self.flows_path);
                self.log.clear();
                String::new()
            }
            Err(e) => format!(
                "the flows file {} was not rewritten ({e}): the edit is kept in {} and \
                 applies at the next start; the next push rewrites the file",
                self.flows_path.display(),
                EditLog::path_for(&self.flows_path).display()
            ),
        };
        self.remember(Some(saved), text);
        Ok(applied(generation, [publish, compile, persist], warnings))
    }

    /// Replays the edit log found at start on top of the running set (the flows file it
    /// extends), then writes the flows file whole and empties the log. An edit that no longer
    /// applies stops the replay there (said in the log).
    fn replay(&mut self, entries: Vec<String>) {
        if entries.is_empty() {
            return;
        }
        let total = entries.len();
        let mut done = 0;
        for line in entries {
            let op: EditOp = match serde_json::from_str(&line) {
                Ok(op) => op,
                Err(e) => {
                    log::error!(target: "control", "edit log: entry {}: {e}; the replay stops", done + 1);
                    break;
                }
            };
            if let Err(e) = self.apply_edit(op) {
                log::error!(target: "control", "edit log: entry {}: {}; the replay stops", done + 1, e.error);
                break;
            }
            done += 1;
        }
        if done > 0 {
            self.current_text = flows::print(&self.shared.rules.load().source);
            self.printed = None;
        }
        match write_atomic(&self.flows_path, self.current_text.as_bytes()) {
            Ok(()) => {
                self.flows_stamp = FileStamp::of(&self.flows_path);
                self.log.clear();
            }
            Err(e) => log::error!(
                target: "control",
                "edit log: cannot rewrite {}: {e}; the log is kept",
                self.flows_path.display()
            ),
        }
        log::info!(target: "control", "edit log: replayed {done} of {total} edit(s) left by the last run");
    }

    /// One edit of the replay: validated, compiled and published as a live edit, without
    /// persistence (it is persisted already) or history (the caller prints the text once).
    fn apply_edit(&mut self, op: EditOp) -> Result<(), ErrorReply> {
        let set = self.shared.rules.load_full();
        let Edited {
            file, kind, edit, ..
        } = self.edited_file(&set, op)?;
        let new = RuleSet::edit(&set, file, kind, edit, self.appliance(), set.generation + 1)
            .map_err(compile_err)?;
        self.publish(Arc::new(new), Instant::now());
        Ok(())
    }

    /// The canonical text of each item of `new`, the running set after an edit that removed
    /// item `removed_at` and inserted `inserted_at`: the cache of the set before, so updated,
    /// or `new` printed whole when there is no cache (after a full apply or rollback, or a
    /// refused commit). Taken out of the cache (the commit puts it back).
    fn printed_after(
        &mut self,
        new: &RuleSet,
        removed_at: Option<usize>,
        inserted_at: Option<usize>,
    ) -> Vec<String> {
        let print = |f: &Flow| {
            let mut s = String::new();
            print_flow(&mut s, f);
            s
        };
        match self.printed.take() {
            Some(mut printed) => {
                if let Some(r) = removed_at {
                    printed.remove(r);
                }
                if let Some(i) = inserted_at {
                    printed.insert(i, print(&new.source.items[i]));
                }
                printed
            }
            None => new.source.items.iter().map(|f| print(f)).collect(),
        }
    }

    /// One whole item, validated against the appliance; its rendered warnings.
    fn parse_flow(&self, text: &str) -> Result<(Flow, String), ErrorReply> {
        let loaded = self.load_fragment(text, "<flow>")?;
        match loaded.file.items.as_slice() {
            [one] => Ok((one.as_ref().clone(), loaded.render_warnings(false))),
            items => Err(ErrorReply::new(format!(
                "expected exactly one flow or outflow, got {}; nothing changed",
                items.len()
            ))),
        }
    }

    /// One rule for flow `f`, validated against the appliance (as a rule of `f`, whose
    /// warnings it gets).
    fn parse_rule(&self, f: &Flow, text: &str) -> Result<(Rule, String), ErrorReply> {
        let wrapped = format!(
            "{} {} skip\n    {}\n",
            f.kind.keyword(),
            f.name,
            text.trim()
        );
        let loaded = self.load_fragment(&wrapped, "<rule>")?;
        match loaded.file.items.first() {
            Some(g) if loaded.file.items.len() == 1 && g.rules.len() == 1 => {
                Ok((g.rules[0].clone(), loaded.render_warnings(false)))
            }
            _ => Err(ErrorReply::new(
                "expected exactly one `match` or `ignore` rule; nothing changed",
            )),
        }
    }

    /// Parse and check a fragment as `apply` checks a file (and lint it alone).
    fn load_fragment(&self, text: &str, name: &str) -> Result<Loaded, ErrorReply> {
        self.load(text, Some(name), true)
    }
}

impl Reports {
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
            rollback_depth: self.progress.rollback_depth.load(Ordering::Relaxed),
            swaps: self.progress.swaps.load(Ordering::Relaxed),
            flows_path: self.flows_path.display().to_string(),
        }
    }

    /// Every counter, summed over workers (and over generations for rules and verdicts).
    pub fn stats(&self) -> StatsReply {
        let set = self.shared.rules.load();
        let (all_rules, verdicts) = lock(&self.gens).totals();
        let rules = all_rules
            .into_iter()
            .map(|r| RuleStat {
                list: r.ident.list.keyword().into(),
                flow: r.ident.flow.to_string(),
                rule: r.rule,
                text: r.ident.text.to_string(),
                occurrence: r.ident.occurrence,
                live: r.live,
                hits: r.packets,
                bytes: r.bytes,
                total: r.total_packets,
                total_bytes: r.total_bytes,
            })
            .collect();
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
        // one lock for both (a guard in the literal would live to its end)
        let (directors, sync) = match lock(&self.director).as_ref() {
            Some(d) => (d.list(), d.sync()),
            None => (Vec::new(), Vec::new()),
        };
        StatsReply {
            generation: set.generation,
            rules,
            verdicts: vs,
            ports,
            drops,
            directors,
            sync,
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
    pub fn tick(&self) {
        lock(&self.gens).fold();
        if self.export_metrics {
            metrics::publish(&self.stats(), self.progress.swaps.load(Ordering::Relaxed));
            metrics::publish_refused(self.progress.refused.load(Ordering::Relaxed));
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
        Request::Insert { flow: None, .. } => Some("insert".into()),
        Request::Insert {
            flow: Some(flow), ..
        } => Some(format!("insert into {flow}")),
        Request::Delete { flow, rule: None } => Some(format!("delete {flow}")),
        Request::Delete {
            flow,
            rule: Some(r),
        } => Some(format!("delete {flow} rule {r}")),
        Request::Replace {
            flow: Some(flow),
            rule: Some(r),
            ..
        } => Some(format!("replace {flow} rule {r}")),
        Request::Replace { .. } => Some("replace".into()),
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

/// The flows file `apply_path` names: a regular file of at most [`MAX_FLOWS_FILE`] bytes
/// (a device, FIFO or socket is refused without reading from or waiting on it).
fn read_bounded(path: &Path) -> Result<String, ErrorReply> {
    flowgate_config::source::read_regular(path, MAX_FLOWS_FILE)
        .map_err(|e| ErrorReply::new(format!("cannot read {}: {e}", path.display())))
}

/// Items added, removed, changed and moved between two files, by name.
pub fn diff(old: &FlowsFile, new: &FlowsFile) -> DiffReply {
    let text = |f: &Flow| {
        let mut s = String::new();
        print_flow(&mut s, f);
        s
    };
    let old_by: HashMap<&str, &Flow> = old
        .items
        .iter()
        .map(|f| (f.name.as_str(), f.as_ref()))
        .collect();
    let new_by: HashMap<&str, &Flow> = new
        .items
        .iter()
        .map(|f| (f.name.as_str(), f.as_ref()))
        .collect();
    let added = new
        .items
        .iter()
        .map(|f| f.as_ref())
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
            (**before != **f).then(|| Changed {
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
    for stale in crate::persist::remove_stale_temps(&opts.flows_path) {
        eprintln!(
            "flowgate: removed {}, left by an interrupted push",
            stale.display()
        );
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
