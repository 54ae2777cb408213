//! The connection sync between appliances (`docs/sync.md`), control side: one thread that
//! sends what the workers exported and applies what peers send.
//!
//! Every [`SyncConfig::interval`] the thread drains each worker's batches
//! ([`flowgate_dataplane::director::sync`]), encodes them into messages of at most `mtu`
//! bytes ([`wire`]) and sends each to every peer (and the group). In between it receives:
//! a message is checked (version, HMAC, replay window per sender), decoded whole, and each
//! entry goes to the inbound queue of the worker owning its client endpoint, with the
//! director and server translated to this appliance's indexes. A hello from a sender boot
//! not answered yet makes every worker dump its tables into the export path (a full
//! resync); the thread says hello itself at start and every [`HELLO_EVERY`].

pub mod wire;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flowgate_config::appliance::{Mode, SyncConfig};
use flowgate_dataplane::director::steer::Steering;
use flowgate_dataplane::director::sync::{SyncEntry, BATCHES};
use flowgate_dataplane::director::{DirectorSet, SharedDirectors};
use flowgate_dataplane::handoff::Owners;

use wire::{director_id, Encoder, Kind, Refusal, Replay, Window, WireEntry};

/// How often the thread says hello (peers answer a new boot id with a full dump).
pub const HELLO_EVERY: Duration = Duration::from_secs(1);
/// Senders the thread keeps a replay window for; messages of further ones are refused.
pub const MAX_SENDERS: usize = 64;
/// The longest the thread waits for a datagram before it looks at the workers' backlog.
const BACKLOG_CHECK: Duration = Duration::from_millis(5);
/// How often the counters go to the metrics.
const METRICS_EVERY: Duration = Duration::from_secs(1);

/// The sync's counters (the thread's; the workers' are in their lanes).
#[derive(Debug, Default)]
pub struct SyncStats {
    pub messages_sent: AtomicU64,
    pub entries_sent: AtomicU64,
    pub send_errors: AtomicU64,
    pub hellos_sent: AtomicU64,
    pub messages_received: AtomicU64,
    pub entries_received: AtomicU64,
    pub auth_failures: AtomicU64,
    pub decode_errors: AtomicU64,
    pub replayed: AtomicU64,
    /// Entries for a director or server this appliance does not have.
    pub unknown: AtomicU64,
    /// Entries dropped because the owning worker's inbound queue was full.
    pub inbound_dropped: AtomicU64,
    /// Full dumps made for peers that announced a new boot.
    pub resyncs: AtomicU64,
}

/// Totals of the sync, for the metrics, `--stats-json` and the logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncTotals {
    /// (name, value), cumulative counters.
    pub counters: Vec<(&'static str, u64)>,
    /// What was received, per sender address.
    pub peers: Vec<PeerTotals>,
}

/// What was received from one sender address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PeerTotals {
    pub address: String,
    pub messages: u64,
    pub entries: u64,
    /// Milliseconds since its last message (hellos come every [`HELLO_EVERY`]).
    pub silent_ms: u64,
}

/// The receive side's record of one sender address.
#[derive(Debug, Clone, Copy)]
struct PeerSeen {
    messages: u64,
    entries: u64,
    last: Instant,
}

type Peers = Arc<std::sync::Mutex<HashMap<String, PeerSeen>>>;

impl SyncTotals {
    pub fn get(&self, name: &str) -> u64 {
        self.counters
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, v)| *v)
    }

    /// As JSON (`--stats-json`'s `sync`).
    pub fn json(&self) -> serde_json::Value {
        let mut o = serde_json::Map::new();
        for (k, v) in &self.counters {
            o.insert((*k).into(), (*v).into());
        }
        let peers: serde_json::Map<String, serde_json::Value> = self
            .peers
            .iter()
            .map(|p| {
                (
                    p.address.clone(),
                    serde_json::json!({
                        "messages": p.messages,
                        "entries": p.entries,
                        "silent_ms": p.silent_ms,
                    }),
                )
            })
            .collect();
        o.insert("peers".into(), peers.into());
        serde_json::Value::Object(o)
    }
}

/// A view of the sync's counters that outlives nothing: for `flowctl stats` (through the
/// director hook).
#[derive(Debug, Clone)]
pub struct SyncMonitor {
    stats: Arc<SyncStats>,
    peers: Peers,
    directors: Arc<SharedDirectors>,
}

impl SyncMonitor {
    pub fn totals(&self) -> SyncTotals {
        totals(&self.stats, &self.directors, &self.peers)
    }
}

/// The running sync thread; stopped and joined when dropped.
#[derive(Debug)]
pub struct SyncHandle {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<SyncStats>,
    peers: Peers,
    directors: Arc<SharedDirectors>,
}

impl SyncHandle {
    /// The counters so far (the thread's and the workers').
    pub fn totals(&self) -> SyncTotals {
        totals(&self.stats, &self.directors, &self.peers)
    }

    /// The counters, for another thread.
    pub fn monitor(&self) -> SyncMonitor {
        SyncMonitor {
            stats: Arc::clone(&self.stats),
            peers: Arc::clone(&self.peers),
            directors: Arc::clone(&self.directors),
        }
    }

    /// Stop the thread (it sends what the workers exported last) and return the totals.
    pub fn stop(mut self) -> SyncTotals {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.totals()
    }
}

impl Drop for SyncHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn totals(
    s: &SyncStats,
    directors: &SharedDirectors,
    peers: &std::sync::Mutex<HashMap<String, PeerSeen>>,
) -> SyncTotals {
    let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut lanes = [0u64; 5];
    if let Some(sync) = &directors.sync {
        for l in &sync.lanes {
            let st = &l.stats;
            for (t, a) in lanes.iter_mut().zip([
                &st.exported,
                &st.export_dropped,
                &st.applied,
                &st.apply_failed,
                &st.dumps,
            ]) {
                *t += r(a);
            }
        }
    }
    let counters = vec![
        ("messages_sent", r(&s.messages_sent)),
        ("entries_sent", r(&s.entries_sent)),
        ("send_errors", r(&s.send_errors)),
        ("hellos_sent", r(&s.hellos_sent)),
        ("messages_received", r(&s.messages_received)),
        ("entries_received", r(&s.entries_received)),
        ("auth_failures", r(&s.auth_failures)),
        ("decode_errors", r(&s.decode_errors)),
        ("replayed", r(&s.replayed)),
        ("unknown", r(&s.unknown)),
        ("inbound_dropped", r(&s.inbound_dropped)),
        ("resyncs", r(&s.resyncs)),
        ("entries_exported", lanes[0]),
        ("export_dropped", lanes[1]),
        ("entries_applied", lanes[2]),
        ("apply_failed", lanes[3]),
        ("dumps", lanes[4]),
    ];
    let mut peers: Vec<PeerTotals> = peers
        .lock()
        .map(|p| {
            p.iter()
                .map(|(k, v)| PeerTotals {
                    address: k.clone(),
                    messages: v.messages,
                    entries: v.entries,
                    silent_ms: v.last.elapsed().as_millis() as u64,
                })
                .collect()
        })
        .unwrap_or_default();
    peers.sort();
    SyncTotals { counters, peers }
}

/// Publish the totals through the metrics facade (`flowgate_sync_*`).
pub fn publish(t: &SyncTotals) {
    for (name, v) in &t.counters {
        metrics::counter!(format!("flowgate_sync_{name}_total")).absolute(*v);
    }
    for p in &t.peers {
        let l = [("peer", p.address.clone())];
        metrics::counter!("flowgate_sync_peer_messages_received_total", &l).absolute(p.messages);
        metrics::counter!("flowgate_sync_peer_entries_received_total", &l).absolute(p.entries);
        metrics::gauge!("flowgate_sync_peer_silent_seconds", &l).set(p.silent_ms as f64 / 1000.0);
    }
}

/// The id this appliance sends as: FNV-1a of its `listen` address.
pub fn sender_id(listen: SocketAddr) -> u32 {
    director_id(&listen.to_string())
}

/// A boot id: the wall clock in ns (a restart makes a greater one, which peers take as a
/// new boot; an earlier one is refused as a replay).
pub fn boot_id() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}

/// Bind the sync socket(s) and start the thread. `key` is the shared secret; the workers'
/// lanes are `directors.sync` (the thread does nothing useful without them).
pub fn start(
    cfg: &SyncConfig,
    key: Vec<u8>,
    directors: Arc<SharedDirectors>,
    workers: usize,
) -> io::Result<SyncHandle> {
    let socket = UdpSocket::bind(cfg.listen)?;
    let group = match cfg.group {
        Some(g) => Some(join_group(g, cfg)?),
        None => None,
    };
    if let (Some(_), SocketAddr::V4(_)) = (cfg.group, cfg.listen) {
        socket.set_multicast_loop_v4(false)?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(SyncStats::default());
    let peers = Arc::new(std::sync::Mutex::new(HashMap::new()));
    let mut t = Thread {
        socket,
        group,
        cfg: cfg.clone(),
        key,
        sender: sender_id(cfg.listen),
        boot: boot_id(),
        seq: 0,
        directors: Arc::clone(&directors),
        ids: Vec::new(),
        owners: None,
        steering: Steering::round_robin(workers),
        workers: workers.max(1),
        windows: HashMap::new(),
        answered: HashMap::new(),
        stats: Arc::clone(&stats),
        peers: Arc::clone(&peers),
        stop: Arc::clone(&stop),
        encoder: Encoder::new(usize::from(cfg.mtu)),
    };
    t.refresh_map();
    let thread = std::thread::Builder::new()
        .name("fg-sync".into())
        .spawn(move || t.run())?;
    Ok(SyncHandle {
        stop,
        thread: Some(thread),
        stats,
        peers,
        directors,
    })
}

/// A socket bound to the group's address and port, joined on `interface`.
fn join_group(g: SocketAddr, cfg: &SyncConfig) -> io::Result<UdpSocket> {
    let s = UdpSocket::bind(g)?;
    match (g.ip(), cfg.listen.ip()) {
        (IpAddr::V4(m), IpAddr::V4(local)) => s.join_multicast_v4(&m, &local)?,
        (IpAddr::V6(m), _) => {
            let name = cfg.interface.as_deref().unwrap_or("");
            let index = std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::NotFound, format!("interface `{name}`"))
                })?;
            s.join_multicast_v6(&m, index)?
        }
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "group and listen differ in family",
            ))
        }
    }
    s.set_nonblocking(true)?;
    Ok(s)
}

struct Thread {
    socket: UdpSocket,
    group: Option<UdpSocket>,
    cfg: SyncConfig,
    key: Vec<u8>,
    sender: u32,
    boot: u64,
    seq: u64,
    directors: Arc<SharedDirectors>,
    /// By local director index: its wire id.
    ids: Vec<u32>,
    /// Which worker owns a client endpoint (NAT directors with several workers).
    owners: Option<Owners>,
    steering: Steering,
    workers: usize,
    windows: HashMap<u32, Window>,
    /// Per sender: the boot id a full dump was made for.
    answered: HashMap<u32, u64>,
    stats: Arc<SyncStats>,
    peers: Peers,
    stop: Arc<AtomicBool>,
    encoder: Encoder,
}

fn bump(a: &AtomicU64, n: u64) {
    a.fetch_add(n, Ordering::Relaxed);
}

impl Thread {
    /// The directors' wire ids and the workers' ownership, from the current set (director
    /// names and modes do not change while the daemon runs).
    fn refresh_map(&mut self) {
        let set = self.directors.set.load();
        self.ids = set.iter().map(|d| director_id(&d.name)).collect();
        self.owners = Owners::new(self.workers, &set);
    }

    fn run(mut self) {
        let mut buf = vec![0u8; 65_536];
        let start = Instant::now();
        let mut next_flush = start + self.cfg.interval;
        let mut next_hello = start;
        let mut next_metrics = start + METRICS_EVERY;
        log::info!(
            target: "sync",
            "sync on {}: peers {:?}{}",
            self.cfg.listen,
            self.cfg.peers,
            self.cfg
                .group
                .map(|g| format!(", group {g}"))
                .unwrap_or_default()
        );
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now >= next_hello {
                self.hello();
                next_hello = now + HELLO_EVERY;
            }
            if now >= next_flush || self.backlog() {
                self.send_exports();
                next_flush = now + self.cfg.interval;
            }
            if now >= next_metrics {
                publish(&totals(&self.stats, &self.directors, &self.peers));
                next_metrics = now + METRICS_EVERY;
            }
            let wait = next_flush
                .min(next_hello)
                .saturating_duration_since(Instant::now())
                .clamp(Duration::from_millis(1), BACKLOG_CHECK);
            let _ = self.socket.set_read_timeout(Some(wait));
            if let Ok((n, from)) = self.socket.recv_from(&mut buf) {
                self.receive(&buf[..n], from);
                // whatever else is queued, without waiting
                let _ = self.socket.set_nonblocking(true);
                for _ in 0..256 {
                    let Ok((n, from)) = self.socket.recv_from(&mut buf) else {
                        break;
                    };
                    self.receive(&buf[..n], from);
                }
                let _ = self.socket.set_nonblocking(false);
            }
            for _ in 0..256 {
                let Some(Ok((n, from))) = self.group.as_ref().map(|g| g.recv_from(&mut buf)) else {
                    break;
                };
                self.receive(&buf[..n], from);
            }
        }
        // what the workers exported last goes out before the thread ends
        self.send_exports();
        publish(&totals(&self.stats, &self.directors, &self.peers));
    }

    /// Some worker has half its batches waiting: send now rather than at the interval (a
    /// worker then exports up to [`BATCHES`] / 2 batches of 256 entries every
    /// [`BACKLOG_CHECK`], about 400,000 a second, before it drops).
    fn backlog(&self) -> bool {
        self.directors
            .sync
            .as_ref()
            .is_some_and(|s| s.lanes.iter().any(|l| l.out.len() >= BATCHES / 2))
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Send the finished message to every peer and the group.
    fn send(&mut self, kind: Kind) {
        let entries = self.encoder.len() as u64;
        let seq = self.next_seq();
        let msg = self
            .encoder
            .finish(kind, self.sender, self.boot, seq, &self.key);
        let targets = self.cfg.peers.iter().chain(self.cfg.group.iter());
        for to in targets {
            match self.socket.send_to(msg, to) {
                Ok(_) => {
                    bump(&self.stats.messages_sent, 1);
                    bump(&self.stats.entries_sent, entries);
                }
                Err(_) => bump(&self.stats.send_errors, 1),
            }
        }
        self.encoder.reset();
    }

    fn hello(&mut self) {
        self.encoder.reset();
        self.send(Kind::Hello);
        bump(&self.stats.hellos_sent, 1);
    }

    /// Drain every worker's exported batches into messages and send them.
    fn send_exports(&mut self) {
        let directors = Arc::clone(&self.directors);
        let Some(sync) = &directors.sync else { return };
        for lane in &sync.lanes {
            while let Some(batch) = lane.out.pop() {
                for e in &batch {
                    let Some(w) = self.wire(e) else { continue };
                    self.encoder.push(&w);
                    if self.encoder.is_full() {
                        self.send(Kind::Entries);
                    }
                }
                lane.recycle(batch);
            }
        }
        if !self.encoder.is_empty() {
            self.send(Kind::Entries);
        }
    }

    fn wire(&self, e: &SyncEntry) -> Option<WireEntry> {
        Some(e.with_ids(*self.ids.get(usize::from(e.director))?, ()))
    }

    fn receive(&mut self, msg: &[u8], from: SocketAddr) {
        let (h, entries) = match wire::decode(msg, &self.key) {
            Ok(x) => x,
            Err(Refusal::Auth) => {
                bump(&self.stats.auth_failures, 1);
                log::debug!(target: "sync", "from {from}: bad HMAC");
                return;
            }
            Err(Refusal::Version | Refusal::Decode) => {
                bump(&self.stats.decode_errors, 1);
                return;
            }
        };
        if h.sender == self.sender {
            // our own, looped back by the group
            return;
        }
        if !self.windows.contains_key(&h.sender) && self.windows.len() >= MAX_SENDERS {
            bump(&self.stats.replayed, 1);
            return;
        }
        let window = self.windows.entry(h.sender).or_default();
        let new_boot = match window.check(h.boot, h.seq) {
            Replay::Fresh { new_boot } => new_boot,
            Replay::Replayed => {
                bump(&self.stats.replayed, 1);
                return;
            }
        };
        if new_boot {
            log::info!(target: "sync", "peer {from}: boot {}", h.boot);
        }
        bump(&self.stats.messages_received, 1);
        bump(&self.stats.entries_received, entries.len() as u64);
        if let Ok(mut p) = self.peers.lock() {
            let c = p.entry(from.to_string()).or_insert(PeerSeen {
                messages: 0,
                entries: 0,
                last: Instant::now(),
            });
            c.messages += 1;
            c.entries += entries.len() as u64;
            c.last = Instant::now();
        }
        match h.kind {
            Kind::Hello => self.answer_hello(h.sender, h.boot, from),
            Kind::Entries => self.apply(&entries),
        }
    }

    /// A peer said hello: a full dump for each boot of it, once.
    fn answer_hello(&mut self, sender: u32, boot: u64, from: SocketAddr) {
        if self.answered.get(&sender) == Some(&boot) {
            return;
        }
        self.answered.insert(sender, boot);
        if let Some(sync) = &self.directors.sync {
            sync.request_dump();
            bump(&self.stats.resyncs, 1);
            log::info!(target: "sync", "peer {from} (re)started: full dump of the tables");
        }
    }

    /// Hand each entry to the worker owning it, in this appliance's indexes.
    fn apply(&self, entries: &[WireEntry]) {
        let Some(sync) = &self.directors.sync else {
            return;
        };
        let set = self.directors.set.load();
        for w in entries {
            let Some(e) = local(&set, &self.ids, w) else {
                bump(&self.stats.unknown, 1);
                continue;
            };
            let owner = self.owner(&e);
            let Some(lane) = sync.lanes.get(owner) else {
                continue;
            };
            if lane.inbound.push(e).is_err() {
                bump(&self.stats.inbound_dropped, 1);
            }
        }
    }

    /// The worker owning entry `e`: its client endpoint's (as packets are steered).
    fn owner(&self, e: &SyncEntry) -> usize {
        if self.workers == 1 {
            return 0;
        }
        let v6 = e.client[..12] != [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];
        let addr = if v6 {
            u128::from_be_bytes(e.client)
        } else {
            u128::from(u32::from_be_bytes([
                e.client[12],
                e.client[13],
                e.client[14],
                e.client[15],
            ]))
        };
        match &self.owners {
            Some(o) => o.owner(v6, addr, e.cport),
            None => self.steering.owner(v6, addr, e.cport),
        }
    }
}

/// A wire entry in this appliance's terms: its director (by wire id) and server (by address
/// and port); `None` when this appliance has no such director or server.
pub fn local(set: &DirectorSet, ids: &[u32], w: &WireEntry) -> Option<SyncEntry> {
    let d = ids.iter().position(|&id| id == w.director)?;
    let st = set.get(d)?;
    let template = w.proto == 0;
    let server = st
        .servers
        .iter()
        .position(|s| s.addr16 == w.real && (template || s.port.unwrap_or(w.vport) == w.rport))?;
    if !template && w.nat != (st.mode == Mode::Nat) {
        return None;
    }
    Some(w.with_ids(d as u16, server as u16))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowgate_config::appliance::{parse_with_cpus, SyncKey};
    use flowgate_dataplane::director::conntrack::ConnState;
    use flowgate_dataplane::director::sync::SyncLanes;

    const KEY: &[u8] = b"sixteen bytes or more of secret";

    /// Directors as a config lists them (`order` reverses the servers, as a peer's config
    /// may).
    fn directors(reversed: bool) -> Arc<SharedDirectors> {
        let (a, b) = ("10.0.0.11", "10.0.0.12");
        let (first, second) = if reversed { (b, a) } else { (a, b) };
        let text = format!(
            r#"flows = "x.flows"
[[director]]
name = "web"
scheduler = "rr"
mode = "gateway"
servers = [ {{ name = "w1", address = "10.0.1.1" }} ]
[[director]]
name = "mail"
scheduler = "rr"
mode = "nat"
servers = [
  {{ name = "one", address = "{first}", port = 2525 }},
  {{ name = "two", address = "{second}", port = 2525 }},
]
"#
        );
        let app = parse_with_cpus("t.toml", &text, 4).expect("config");
        Arc::new(
            SharedDirectors::new(DirectorSet::build(&app.directors).expect("set"), 1)
                .with_sync(SyncLanes::new(1)),
        )
    }

    fn entry(cport: u16, server: u16) -> SyncEntry {
        let real: std::net::IpAddr = if server == 0 {
            "10.0.0.11".parse().expect("ip")
        } else {
            "10.0.0.12".parse().expect("ip")
        };
        SyncEntry {
            director: 1,
            server,
            proto: 6,
            state: ConnState::Established,
            fins: 0,
            nat: true,
            client: flowgate_dataplane::director::state::addr16(
                "192.168.0.100".parse().expect("ip"),
            ),
            cport,
            vip: flowgate_dataplane::director::state::addr16("192.168.0.2".parse().expect("ip")),
            vport: 25,
            real: flowgate_dataplane::director::state::addr16(real),
            rport: 2525,
            timeout_ms: 900_000,
        }
    }

    fn config(me: SocketAddr, peer: SocketAddr) -> SyncConfig {
        SyncConfig {
            listen: me,
            peers: vec![peer],
            group: None,
            interface: None,
            key: SyncKey::Inline(KEY.to_vec()),
            mtu: 1472,
            interval: Duration::from_millis(10),
        }
    }

    fn lane(d: &SharedDirectors) -> &flowgate_dataplane::director::sync::Lane {
        &d.sync.as_ref().expect("lanes").lanes[0]
    }

    fn wait(mut f: impl FnMut() -> bool) -> bool {
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if f() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        f()
    }

    #[test]
    fn entries_map_to_the_receivers_director_and_server() {
        let here = directors(false);
        let there = directors(true);
        let set = here.set.load();
        let ids: Vec<u32> = set.iter().map(|d| director_id(&d.name)).collect();
        let w = WireEntry {
            director: director_id("mail"),
            server: (),
            proto: 6,
            state: ConnState::Established,
            fins: 0,
            nat: true,
            client: entry(1, 0).client,
            cport: 1,
            vip: entry(1, 0).vip,
            vport: 25,
            real: entry(1, 0).real,
            rport: 2525,
            timeout_ms: 5,
        };
        assert_eq!(
            local(&set, &ids, &w),
            Some(entry(1, 0)).map(|e| SyncEntry { timeout_ms: 5, ..e })
        );
        // the peer lists the servers the other way round: its own index
        let tset = there.set.load();
        assert_eq!(local(&tset, &ids, &w).map(|e| e.server), Some(1));
        // no such director, server, port, or a mode that differs
        assert_eq!(local(&set, &ids, &WireEntry { director: 1, ..w }), None);
        assert_eq!(local(&set, &ids, &WireEntry { rport: 25, ..w }), None);
        assert_eq!(local(&set, &ids, &WireEntry { real: [9; 16], ..w }), None);
        assert_eq!(local(&set, &ids, &WireEntry { nat: false, ..w }), None);
    }

    #[test]
    fn two_threads_sync_over_udp_and_refuse_forgeries_and_replays() {
        let base = 20_000 + (std::process::id() % 20_000) as u16;
        let (la, lb): (SocketAddr, SocketAddr) = (
            format!("127.0.0.1:{base}").parse().expect("addr"),
            format!("127.0.0.1:{}", base + 1).parse().expect("addr"),
        );
        let (da, db) = (directors(false), directors(true));
        let a = start(&config(la, lb), KEY.to_vec(), Arc::clone(&da), 1).expect("a");
        let b = start(&config(lb, la), KEY.to_vec(), Arc::clone(&db), 1).expect("b");

        // each hears the other's hello and asks its worker for a full dump
        assert!(wait(|| lane(&da).dump.load(Ordering::Relaxed) >= 1
            && lane(&db).dump.load(Ordering::Relaxed) >= 1));
        // A's worker exports 25 connections: two messages (20 a message)
        let mut batch = lane(&da).spare.pop().expect("a spare batch");
        batch.extend((0..25).map(|p| entry(1000 + p, p % 2)));
        lane(&da).out.push(batch).expect("room");
        let mut got = Vec::new();
        assert!(wait(|| {
            while let Some(e) = lane(&db).inbound.pop() {
                got.push(e);
            }
            got.len() >= 25
        }));
        assert_eq!(got.len(), 25);
        for (i, e) in got.iter().enumerate() {
            // B lists the servers the other way round
            let sent = entry(1000 + i as u16, (i % 2) as u16);
            let want = SyncEntry {
                server: 1 - sent.server,
                ..sent
            };
            assert_eq!(*e, want);
        }
        let t = a.totals();
        assert_eq!(t.get("entries_sent"), 25);
        assert!(t.get("messages_sent") >= 2);

        // forged (another key), replayed (the same sequence twice), malformed
        let x = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let mut enc = Encoder::new(1472);
        enc.push(&WireEntry {
            director: director_id("mail"),
            server: (),
            proto: 6,
            state: ConnState::Established,
            fins: 0,
            nat: true,
            client: [7; 16],
            cport: 1,
            vip: [7; 16],
            vport: 25,
            real: entry(0, 0).real,
            rport: 2525,
            timeout_ms: 1,
        });
        let forged = enc
            .finish(Kind::Entries, 99, 1, 1, b"not the key at all!")
            .to_vec();
        let mut enc = Encoder::new(1472);
        let good = enc.finish(Kind::Entries, 99, 1, 1, KEY).to_vec();
        for m in [&forged, &good, &good, &vec![1u8, 1, 0]] {
            x.send_to(m, lb).expect("send");
        }
        assert!(
            wait(|| {
                let t = b.totals();
                t.get("auth_failures") == 1 && t.get("replayed") == 1 && t.get("decode_errors") == 1
            }),
            "{:?}",
            b.totals()
        );
        assert!(lane(&db).inbound.pop().is_none(), "nothing of them applied");
        let tb = b.stop();
        assert_eq!(tb.get("entries_received"), 25);
        assert_eq!(
            tb.peers
                .iter()
                .find(|p| p.address == la.to_string())
                .map(|p| p.entries),
            Some(25)
        );
        drop(a);
    }
}
