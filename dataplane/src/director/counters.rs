//! Per-worker director counters: plain `u64`s in worker-owned memory (no atomics), summed by
//! the control side with [`DirectorCounters::add`].

/// Why the director dropped a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// No server up (and no sorry server) for a new connection.
    NoServer,
    /// The connection table is full of live connections.
    ConntrackFull,
    /// A TCP packet other than a SYN for an unknown connection.
    NotSyn,
    /// The connection's server is down; the connection was expired.
    ServerDown,
    /// Not TCP/UDP, or a non-first fragment.
    Unsupported,
    /// The packet's family is not the servers', or its headers could not be rewritten.
    BadPacket,
}

impl DropReason {
    pub const ALL: [DropReason; 6] = [
        DropReason::NoServer,
        DropReason::ConntrackFull,
        DropReason::NotSyn,
        DropReason::ServerDown,
        DropReason::Unsupported,
        DropReason::BadPacket,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DropReason::NoServer => "no_server",
            DropReason::ConntrackFull => "conntrack_full",
            DropReason::NotSyn => "not_syn",
            DropReason::ServerDown => "server_down",
            DropReason::Unsupported => "unsupported",
            DropReason::BadPacket => "bad_packet",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// One server's counters (as `ipvsadm -L --stats`), plus its active/inactive gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerCounters {
    /// Connections scheduled to it.
    pub conns: u64,
    pub packets_in: u64,
    pub bytes_in: u64,
    /// Replies (NAT).
    pub packets_out: u64,
    pub bytes_out: u64,
    /// Gauges, filled in by [`super::DirectorWorker::counters`].
    pub active: u64,
    pub inactive: u64,
}

impl ServerCounters {
    pub fn add(&mut self, o: &ServerCounters) {
        self.conns += o.conns;
        self.packets_in += o.packets_in;
        self.bytes_in += o.bytes_in;
        self.packets_out += o.packets_out;
        self.bytes_out += o.bytes_out;
        self.active += o.active;
        self.inactive += o.inactive;
    }
}

/// A director's counters in one worker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirectorCounters {
    pub conns: u64,
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    /// Connections given to the sorry server.
    pub sorry_conns: u64,
    /// Connections expired because their server went down.
    pub nodest_expired: u64,
    /// ICMP errors about NAT connections translated towards the server (from the client's
    /// side: errors about replies).
    pub icmp_in: u64,
    /// ICMP errors about NAT connections translated towards the client (from the server's
    /// side: the server's or a router's errors about forwarded packets).
    pub icmp_out: u64,
    /// Half-open entries (SYN_RECV connections, pending templates) evicted to make room.
    pub half_open_evicted: u64,
    /// Times a table went into SYN-flood defense (shorter half-open timeouts).
    pub defense_entered: u64,
    /// Gauge: half-open entries now, filled in by [`super::DirectorWorker::counters`].
    pub half_open: u64,
    /// Gauge: tables in defense now (0 or 1 per worker), filled in the same way.
    pub defense_active: u64,
    /// Gauge: backup entries now (applied from a peer's sync, unused since).
    pub backup: u64,
    /// Drops by [`DropReason::index`].
    pub drops: [u64; DropReason::ALL.len()],
    /// By server index.
    pub servers: Vec<ServerCounters>,
}

impl DirectorCounters {
    pub fn new(servers: usize) -> Self {
        DirectorCounters {
            servers: vec![ServerCounters::default(); servers],
            ..Default::default()
        }
    }

    pub fn drop(&mut self, r: DropReason) {
        self.drops[r.index()] += 1;
    }

    /// The director-wide counters by name, for the control socket and the metrics: cumulative
    /// ones first, then (`true`) the gauges. Drops are named `drop_<reason>`.
    pub fn named(&self) -> Vec<(String, u64, bool)> {
        let mut v: Vec<(String, u64, bool)> = [
            ("connections", self.conns),
            ("packets_in", self.packets_in),
            ("bytes_in", self.bytes_in),
            ("packets_out", self.packets_out),
            ("bytes_out", self.bytes_out),
            ("sorry_connections", self.sorry_conns),
            ("nodest_expired", self.nodest_expired),
            ("icmp_in", self.icmp_in),
            ("icmp_out", self.icmp_out),
            ("half_open_evicted", self.half_open_evicted),
            ("defense_entered", self.defense_entered),
        ]
        .into_iter()
        .map(|(k, n)| (k.to_string(), n, false))
        .collect();
        v.extend(
            DropReason::ALL
                .iter()
                .map(|r| (format!("drop_{}", r.name()), self.drops[r.index()], false)),
        );
        v.push(("half_open".into(), self.half_open, true));
        v.push(("defense_active".into(), self.defense_active, true));
        v.push(("backup".into(), self.backup, true));
        v
    }

    /// Add another worker's counters to these.
    pub fn add(&mut self, o: &DirectorCounters) {
        self.conns += o.conns;
        self.packets_in += o.packets_in;
        self.bytes_in += o.bytes_in;
        self.packets_out += o.packets_out;
        self.bytes_out += o.bytes_out;
        self.sorry_conns += o.sorry_conns;
        self.nodest_expired += o.nodest_expired;
        self.icmp_in += o.icmp_in;
        self.icmp_out += o.icmp_out;
        self.half_open_evicted += o.half_open_evicted;
        self.defense_entered += o.defense_entered;
        self.half_open += o.half_open;
        self.defense_active += o.defense_active;
        self.backup += o.backup;
        for (a, b) in self.drops.iter_mut().zip(o.drops.iter()) {
            *a += b;
        }
        if self.servers.len() < o.servers.len() {
            self.servers
                .resize(o.servers.len(), ServerCounters::default());
        }
        for (a, b) in self.servers.iter_mut().zip(o.servers.iter()) {
            a.add(b);
        }
    }
}
