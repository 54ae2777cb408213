//! Health checks of the directors' servers, run off the data path.
//!
//! [`targets`] turns the config's directors into one [`Target`] per (director, server) whose
//! check kind is not `none`. [`HealthChecker::start`] runs them: one scheduler thread keeps a
//! timer queue (a heap of due times) and hands due checks to a small, bounded pool of worker
//! threads ([`HealthOptions::workers`]); a target is never queued twice, so at most one check
//! per server is in flight and a slow server cannot pile up work. Each result goes through the
//! server's rise/fall counter ([`RiseFall`]); a state change becomes an [`Event`], sent to the
//! control thread (a channel, or any callback with [`HealthChecker::start_with`]). The control
//! thread answers an event with [`DirectorSet::with_server_up`](super::DirectorSet::with_server_up)
//! and publishes the new set as it publishes a rule push.
//!
//! The checks ([`probe`]):
//! - `tcp`: a TCP connect ([`TcpStream::connect_timeout`]) to the server's address and the
//!   check port (`check.port`, else the server's port, else the virtual port).
//! - `http`: connect, send `GET <uri> HTTP/1.0\r\nHost: <addr>\r\n\r\n`, read the status line
//!   and compare its code with the expected status. The whole exchange (connect, write, read)
//!   must end within the timeout.
//! - `icmp`: an ICMP echo needs a raw or ICMP datagram socket, which std does not offer (and the
//!   crate has no `unsafe`): the check runs the system's `ping -c 1 -W S -w S ADDR` (`-6` for
//!   IPv6, S = the timeout rounded up to whole seconds, at least 1) and succeeds when it exits
//!   with 0. `ping` must be allowed to send echoes (setuid, `cap_net_raw`, or
//!   `net.ipv4.ping_group_range`); [`HealthOptions::ping`] names the program.
//!
//! Servers start up ([`HealthOptions::start_up`], as `DirectorSet::build` makes them), go down
//! after `fall` failures in a row and come back after `rise` successes in a row. Starting down
//! is possible: the checker then sends a down [`Event`] for every checked server before the
//! first check, so the control side's set agrees with it.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use flowgate_config::appliance::{self as config, CheckKind};

/// Worker threads of a [`HealthChecker`] by default (never more than the targets).
pub const DEFAULT_WORKERS: usize = 4;
/// The longest HTTP status line read before the check gives up.
pub const MAX_STATUS_LINE: usize = 1024;

/// What a check does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// TCP connect.
    Tcp,
    /// HTTP/1.0 `GET uri`, expecting `status`.
    Http { uri: String, status: u16 },
    /// One ICMP echo, through the `ping` program.
    Icmp,
}

impl Probe {
    /// The check kind's name, as in the config.
    pub fn kind(&self) -> &'static str {
        match self {
            Probe::Tcp => "tcp",
            Probe::Http { .. } => "http",
            Probe::Icmp => "icmp",
        }
    }
}

/// One checked server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The director's index in the config (and in the `DirectorSet`).
    pub director: usize,
    /// The server's index in the director's `servers`.
    pub server: usize,
    /// `director/server`, for messages.
    pub name: String,
    pub address: IpAddr,
    /// The port checked (`tcp`, `http`); `None` for `icmp`.
    pub port: Option<u16>,
    pub probe: Probe,
    pub interval: Duration,
    pub timeout: Duration,
    /// Successes in a row that bring the server up.
    pub rise: u32,
    /// Failures in a row that bring the server down.
    pub fall: u32,
}

/// Why health checks could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HealthError {
    #[error(
        "director `{director}` server `{server}`: a {kind} check needs a port \
         (check.port, the server's port or virtual.port)"
    )]
    NoPort {
        director: String,
        server: String,
        kind: &'static str,
    },
    #[error("could not start a health-check thread: {0}")]
    Spawn(String),
}

/// The checks of `directors` (config order): one per server of every director whose check is
/// not `none`. The port is `check.port`, else the server's port, else the virtual port.
pub fn targets(directors: &[config::Director]) -> Result<Vec<Target>, HealthError> {
    let mut out = Vec::new();
    for (di, d) in directors.iter().enumerate() {
        let probe = match &d.check.kind {
            CheckKind::None => continue,
            CheckKind::Tcp => Probe::Tcp,
            CheckKind::Http { uri, status } => Probe::Http {
                uri: uri.clone(),
                status: *status,
            },
            CheckKind::Icmp => Probe::Icmp,
        };
        for (si, s) in d.servers.iter().enumerate() {
            let port = match probe {
                Probe::Icmp => None,
                Probe::Tcp | Probe::Http { .. } => {
                    let port = d
                        .check
                        .port
                        .or(s.port)
                        .or(d.virtual_service.and_then(|v| v.port));
                    if port.is_none() {
                        return Err(HealthError::NoPort {
                            director: d.name.clone(),
                            server: s.name.clone(),
                            kind: probe.kind(),
                        });
                    }
                    port
                }
            };
            out.push(Target {
                director: di,
                server: si,
                name: format!("{}/{}", d.name, s.name),
                address: s.address,
                port,
                probe: probe.clone(),
                interval: d.check.interval,
                timeout: d.check.timeout,
                rise: d.check.rise,
                fall: d.check.fall,
            });
        }
    }
    Ok(out)
}

/// A server's state changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The director's index (as for `DirectorSet::with_server_up`).
    pub director: usize,
    /// The server's index in its director.
    pub server: usize,
    /// The new state.
    pub up: bool,
    /// Why, for logs: the check and its last result.
    pub reason: String,
}

/// The rise/fall counter of one server: down after `fall` failures in a row, up after `rise`
/// successes in a row. A result that agrees with the state resets the count (a success while
/// up, a failure while down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RiseFall {
    up: bool,
    rise: u32,
    fall: u32,
    /// Results in a row that disagree with `up`.
    streak: u32,
}

impl RiseFall {
    /// A counter starting in state `up`; `rise` and `fall` of 0 count as 1.
    pub fn new(up: bool, rise: u32, fall: u32) -> RiseFall {
        RiseFall {
            up,
            rise: rise.max(1),
            fall: fall.max(1),
            streak: 0,
        }
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Results in a row against the current state (failures while up, successes while down).
    pub fn streak(&self) -> u32 {
        self.streak
    }

    /// Counts one result; returns the new state when it changes.
    pub fn record(&mut self, ok: bool) -> Option<bool> {
        if ok == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.up { self.fall } else { self.rise };
        if self.streak < needed {
            return None;
        }
        self.up = ok;
        self.streak = 0;
        Some(ok)
    }
}

/// The state after each of `results`, from a server starting in `start_up`.
pub fn rise_fall(
    start_up: bool,
    rise: u32,
    fall: u32,
    results: impl IntoIterator<Item = bool>,
) -> Vec<bool> {
    let mut rf = RiseFall::new(start_up, rise, fall);
    results
        .into_iter()
        .map(|ok| {
            rf.record(ok);
            rf.is_up()
        })
        .collect()
}

/// How a [`HealthChecker`] runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthOptions {
    /// Worker threads running checks (at least 1, at most one per target).
    pub workers: usize,
    /// The state servers start in; `true` agrees with `DirectorSet::build`.
    pub start_up: bool,
    /// The program `icmp` checks run.
    pub ping: PathBuf,
}

impl Default for HealthOptions {
    fn default() -> Self {
        HealthOptions {
            workers: DEFAULT_WORKERS,
            start_up: true,
            ping: PathBuf::from("ping"),
        }
    }
}

/// Runs one check of `probe` against `address` (`port` for `tcp`/`http`) within `timeout`
/// (`icmp`: rounded up to whole seconds). `Ok` holds what succeeded, `Err` why it failed.
pub fn probe(
    probe: &Probe,
    address: IpAddr,
    port: Option<u16>,
    timeout: Duration,
    ping: &Path,
) -> Result<String, String> {
    match probe {
        Probe::Icmp => icmp(ping, address, timeout),
        Probe::Tcp | Probe::Http { .. } => {
            let Some(port) = port else {
                return Err("no port to check".to_string());
            };
            let addr = SocketAddr::new(address, port);
            match probe {
                Probe::Http { uri, status } => http(addr, uri, *status, timeout),
                _ => tcp(addr, timeout),
            }
        }
    }
}

fn io_reason(what: &str, e: &std::io::Error, timeout: Duration) -> String {
    match e.kind() {
        ErrorKind::TimedOut | ErrorKind::WouldBlock => {
            format!("{what}: timed out after {} ms", timeout.as_millis())
        }
        _ => format!("{what}: {e}"),
    }
}

fn tcp(addr: SocketAddr, timeout: Duration) -> Result<String, String> {
    let what = format!("connect {addr}");
    match TcpStream::connect_timeout(&addr, timeout) {
        Ok(_) => Ok(format!("connected to {addr}")),
        Err(e) => Err(io_reason(&what, &e, timeout)),
    }
}

/// The time left before `deadline`, or a timeout error.
fn left(deadline: Instant, timeout: Duration, what: &str) -> Result<Duration, String> {
    let d = deadline.saturating_duration_since(Instant::now());
    if d.is_zero() {
        Err(format!(
            "{what}: timed out after {} ms",
            timeout.as_millis()
        ))
    } else {
        Ok(d)
    }
}

fn http(addr: SocketAddr, uri: &str, expect: u16, timeout: Duration) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    let what = format!("http {addr}");
    let mut s = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| io_reason(&format!("connect {addr}"), &e, timeout))?;
    let request = http_request(uri, addr.ip());
    s.set_write_timeout(Some(left(deadline, timeout, &what)?))
        .map_err(|e| io_reason(&what, &e, timeout))?;
    s.write_all(request.as_bytes())
        .map_err(|e| io_reason(&format!("{what}: send"), &e, timeout))?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    let line_end = loop {
        if let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            break pos;
        }
        if buf.len() > MAX_STATUS_LINE {
            return Err(format!(
                "{what}: no status line in the first {MAX_STATUS_LINE} bytes"
            ));
        }
        s.set_read_timeout(Some(left(deadline, timeout, &what)?))
            .map_err(|e| io_reason(&what, &e, timeout))?;
        match s.read(&mut chunk) {
            Ok(0) if buf.is_empty() => {
                return Err(format!("{what}: connection closed before a status line"))
            }
            Ok(0) => break buf.len(),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(io_reason(&format!("{what}: read"), &e, timeout)),
        }
    };
    let status = status_code(&buf[..line_end]).map_err(|e| format!("{what}: {e}"))?;
    if status == expect {
        Ok(format!("{what}: status {status}"))
    } else {
        Err(format!("{what}: status {status}, expected {expect}"))
    }
}

/// The request of an `http` check of `uri` on `ip` (an IPv6 host is bracketed).
pub fn http_request(uri: &str, ip: IpAddr) -> String {
    let host = match ip {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    };
    format!("GET {uri} HTTP/1.0\r\nHost: {host}\r\n\r\n")
}

/// The status code of an HTTP status line (`HTTP/1.1 200 OK`, with or without `\r`).
pub fn status_code(line: &[u8]) -> Result<u16, String> {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches('\r');
    let mut words = text.split(' ');
    let version = words.next().unwrap_or_default();
    let code = words.next().unwrap_or_default();
    if !version.starts_with("HTTP/") || code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit())
    {
        let shown: String = text.chars().take(64).collect();
        return Err(format!("not an HTTP status line: {shown:?}"));
    }
    code.parse()
        .map_err(|_| format!("not an HTTP status code: {code:?}"))
}

fn icmp(ping: &Path, address: IpAddr, timeout: Duration) -> Result<String, String> {
    let secs = (timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0)).max(1);
    let mut cmd = Command::new(ping);
    cmd.arg("-c")
        .arg("1")
        .arg("-W")
        .arg(secs.to_string())
        .arg("-w")
        .arg(secs.to_string());
    if address.is_ipv6() {
        cmd.arg("-6");
    }
    cmd.arg(address.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    match cmd.status() {
        Ok(st) if st.success() => Ok(format!("echo reply from {address}")),
        Ok(st) => Err(format!("no echo reply from {address} (ping: {st})")),
        Err(e) => Err(format!("could not run {}: {e}", ping.display())),
    }
}

/// What the scheduler thread hears.
#[derive(Debug)]
enum Msg {
    Done {
        target: usize,
        started: Instant,
        result: Result<String, String>,
    },
    Stop,
}

/// Runs the health checks of a list of [`Target`]s on its own threads until stopped
/// ([`HealthChecker::stop`] or drop, which join the threads: at most one check timeout).
#[derive(Debug)]
pub struct HealthChecker {
    control: Sender<Msg>,
    scheduler: Option<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
}

impl HealthChecker {
    /// Starts checking `targets`; state changes arrive on the returned channel.
    pub fn start(
        targets: Vec<Target>,
        opts: HealthOptions,
    ) -> Result<(HealthChecker, Receiver<Event>), HealthError> {
        let (tx, rx) = mpsc::channel();
        let checker = Self::start_with(targets, opts, move |e| {
            // The receiver gone means nobody listens any more: drop the event.
            let _ = tx.send(e);
        })?;
        Ok((checker, rx))
    }

    /// Starts checking `targets`; `sink` is called with each state change, on the scheduler
    /// thread (a sink that blocks delays the checks).
    pub fn start_with(
        targets: Vec<Target>,
        opts: HealthOptions,
        sink: impl FnMut(Event) + Send + 'static,
    ) -> Result<HealthChecker, HealthError> {
        let (control, msgs) = mpsc::channel::<Msg>();
        let mut checker = HealthChecker {
            control: control.clone(),
            scheduler: None,
            workers: Vec::new(),
        };
        let targets: Arc<[Target]> = targets.into();
        let ping: Arc<Path> = opts.ping.into();
        let (jobs_tx, jobs_rx) = mpsc::channel::<usize>();
        let jobs_rx = Arc::new(Mutex::new(jobs_rx));
        let n = opts.workers.clamp(1, targets.len().max(1));
        for i in 0..n {
            let (targets, ping, jobs, done) = (
                Arc::clone(&targets),
                Arc::clone(&ping),
                Arc::clone(&jobs_rx),
                control.clone(),
            );
            let h = thread::Builder::new()
                .name(format!("health-{i}"))
                .spawn(move || worker(&targets, &ping, &jobs, &done))
                .map_err(|e| HealthError::Spawn(e.to_string()))?;
            checker.workers.push(h);
        }
        drop(control);
        let mut sched = Scheduler::new(targets, opts.start_up, jobs_tx, msgs, sink);
        let h = thread::Builder::new()
            .name("health-sched".to_string())
            .spawn(move || sched.run())
            .map_err(|e| HealthError::Spawn(e.to_string()))?;
        checker.scheduler = Some(h);
        Ok(checker)
    }

    /// Stops the checks and joins the threads (a check in flight finishes first).
    pub fn stop(self) {
        // Drop does the work.
        drop(self);
    }
}

impl Drop for HealthChecker {
    fn drop(&mut self) {
        let _ = self.control.send(Msg::Stop);
        if let Some(h) = self.scheduler.take() {
            let _ = h.join();
        }
        // The scheduler dropped the job channel: idle workers return at once, busy ones after
        // their check.
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

fn worker(targets: &[Target], ping: &Path, jobs: &Mutex<Receiver<usize>>, done: &Sender<Msg>) {
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(i) = job else { return };
        let Some(t) = targets.get(i) else { continue };
        let started = Instant::now();
        let result = probe(&t.probe, t.address, t.port, t.timeout, ping);
        let msg = Msg::Done {
            target: i,
            started,
            result,
        };
        if done.send(msg).is_err() {
            return;
        }
    }
}

/// The scheduler thread's state: the due queue and every target's counter.
struct Scheduler<F> {
    targets: Arc<[Target]>,
    states: Vec<RiseFall>,
    start_up: bool,
    /// (due, target index), earliest first.
    due: BinaryHeap<Reverse<(Instant, usize)>>,
    jobs: Sender<usize>,
    msgs: Receiver<Msg>,
    sink: F,
}

impl<F: FnMut(Event)> Scheduler<F> {
    fn new(
        targets: Arc<[Target]>,
        start_up: bool,
        jobs: Sender<usize>,
        msgs: Receiver<Msg>,
        sink: F,
    ) -> Self {
        let states = targets
            .iter()
            .map(|t| RiseFall::new(start_up, t.rise, t.fall))
            .collect();
        let now = Instant::now();
        let due = (0..targets.len()).map(|i| Reverse((now, i))).collect();
        Scheduler {
            targets,
            states,
            start_up,
            due,
            jobs,
            msgs,
            sink,
        }
    }

    fn run(&mut self) {
        if !self.start_up {
            for t in self.targets.iter() {
                (self.sink)(Event {
                    director: t.director,
                    server: t.server,
                    up: false,
                    reason: format!("{}: starts down until {} checks pass", t.name, t.rise),
                });
            }
        }
        loop {
            let now = Instant::now();
            while let Some(&Reverse((at, i))) = self.due.peek() {
                if at > now {
                    break;
                }
                self.due.pop();
                if self.jobs.send(i).is_err() {
                    return;
                }
            }
            let msg = match self.due.peek() {
                Some(&Reverse((at, _))) => self.msgs.recv_timeout(at - now),
                // Every check is in flight: wait for one to finish.
                None => self.msgs.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match msg {
                Ok(Msg::Done {
                    target,
                    started,
                    result,
                }) => self.done(target, started, result),
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }

    fn done(&mut self, i: usize, started: Instant, result: Result<String, String>) {
        let (Some(t), Some(state)) = (self.targets.get(i), self.states.get_mut(i)) else {
            return;
        };
        self.due
            .push(Reverse(((started + t.interval).max(Instant::now()), i)));
        let ok = result.is_ok();
        if let Some(up) = state.record(ok) {
            let detail = match result {
                Ok(d) | Err(d) => d,
            };
            let reason = if up {
                format!(
                    "{}: {} check passed {} times in a row ({detail})",
                    t.name,
                    t.probe.kind(),
                    t.rise
                )
            } else {
                format!(
                    "{}: {} check failed {} times in a row ({detail})",
                    t.name,
                    t.probe.kind(),
                    t.fall
                )
            };
            (self.sink)(Event {
                director: t.director,
                server: t.server,
                up,
                reason,
            });
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
