//! The immutable per-director snapshot ([`DirectorState`]) and the set of them
//! ([`DirectorSet`]): servers with their weight and up flag, plus everything the schedulers
//! derive from them (the available list, the `wrr` parameters, the `sh`/`dh` bucket table, the
//! Maglev table). Built off the hot path, as pingora-load-balancing builds its selectors: a
//! health check or a `flowctl director weight` makes a new set ([`DirectorSet::with_server_up`],
//! [`DirectorSet::with_weight`]) that the control side publishes by RCU (`ArcSwap`); the
//! directors that did not change are shared (`Arc`) between the old set and the new.
//!
//! A server's identity is its index in the config's `servers` list: connections remember that
//! index, so a new snapshot (weight, state) never moves an established connection.

use std::net::IpAddr;
use std::sync::Arc;

use flowgate_config::appliance::{self as config, Mode, Persistence, Scheduler};

use super::conntrack::ConnTimeouts;
use super::hash::{hash_addr, Seed};
use super::maglev::{self, Backend, Maglev};

/// Buckets of the `sh`/`dh` table (IPVS `IP_VS_SH_TAB_SIZE`/`IP_VS_DH_TAB_SIZE` default).
pub const HASH_BUCKETS: usize = 256;

/// Why a director set could not be built or changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectorError {
    #[error("no director number {0}")]
    UnknownDirector(usize),
    #[error("director `{director}` has no server number {server}")]
    UnknownServer { director: String, server: usize },
    #[error("director `{0}`: more than 65535 servers")]
    TooManyServers(String),
    #[error("Maglev table size {0} is not a prime above the server count")]
    BadTableSize(u32),
}

/// Build options that are not in the appliance config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectorOptions {
    /// The Maglev lookup table size, a prime ([`maglev::DEFAULT_TABLE_SIZE`]).
    pub maglev_size: u32,
    /// Seed of the `sh`/`dh`/`mh` key hashes of directors whose config gives no `hash_seed`.
    /// Boxes that must pick the same server for a client (ECMP) need the same one.
    pub seed: Seed,
}

impl Default for DirectorOptions {
    fn default() -> Self {
        DirectorOptions {
            maglev_size: maglev::DEFAULT_TABLE_SIZE,
            seed: 0x666c_6f77_6761_7465, // "flowgate"
        }
    }
}

/// A real server as the data path sees it in one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerState {
    pub name: String,
    pub address: IpAddr,
    /// `address`, IPv4 mapped into IPv6: the form connection keys use.
    pub addr16: [u8; 16],
    /// `None` keeps the packet's destination port.
    pub port: Option<u16>,
    /// 0 drains: no new connections, established ones stay.
    pub weight: u32,
    /// Health: a down server takes nothing, and its connections are expired on their next
    /// packet (IPVS `expire_nodest_conn = 1`).
    pub up: bool,
    pub sorry: bool,
}

impl ServerState {
    /// Can take new connections as a regular (non-sorry) server.
    pub fn available(&self) -> bool {
        self.up && self.weight > 0 && !self.sorry
    }
}

/// An address in the 16-byte form used by keys (IPv4 mapped into IPv6).
pub fn addr16(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The immutable state of one director: what a worker reads to schedule and forward.
#[derive(Debug, Clone)]
pub struct DirectorState {
    pub name: String,
    pub scheduler: Scheduler,
    pub mode: Mode,
    pub persistence: Option<Persistence>,
    pub timeouts: ConnTimeouts,
    /// Connections (and templates) tracked at most over all workers (`max_connections`).
    pub max_connections: u32,
    /// The virtual service address, when the config gives one.
    pub vip: Option<IpAddr>,
    /// In config order; the index is the server's identity.
    pub servers: Vec<ServerState>,
    /// Bumped on every new snapshot of this director: workers reset their `rr`/`wrr` cursor.
    pub generation: u64,
    /// A TCP packet without SYN of no known connection is scheduled and tracked (config
    /// `sloppy`, IPVS `sloppy_tcp`), not dropped as `not_syn`.
    pub sloppy: bool,
    /// The key hash seed: the config's `hash_seed`, else [`DirectorOptions::seed`].
    pub(crate) seed: Seed,
    /// Regular servers that can take new connections (up, weight > 0, not sorry).
    pub(crate) available: Vec<u16>,
    /// The first sorry server that is up.
    pub(crate) sorry: Option<u16>,
    /// `wrr`: the largest weight and the gcd of the available servers' weights.
    pub(crate) wrr_max: u32,
    pub(crate) wrr_gcd: u32,
    /// `sh`/`dh`: buckets over the regular servers with a weight (up or not: a down server's
    /// buckets fall back, the others' keys stay), IPVS style.
    pub(crate) buckets: Option<Box<[u16; HASH_BUCKETS]>>,
    /// `mh`: Maglev over the available servers.
    pub(crate) maglev: Option<Maglev>,
    maglev_size: u32,
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl DirectorState {
    /// A fresh snapshot of `d`, every server up.
    pub fn from_config(d: &config::Director, opts: DirectorOptions) -> Result<Self, DirectorError> {
        if d.servers.len() >= usize::from(u16::MAX) {
            return Err(DirectorError::TooManyServers(d.name.clone()));
        }
        if !maglev::is_prime(opts.maglev_size) || opts.maglev_size as usize <= d.servers.len() {
            return Err(DirectorError::BadTableSize(opts.maglev_size));
        }
        let servers = d
            .servers
            .iter()
            .map(|s| ServerState {
                name: s.name.clone(),
                address: s.address,
                addr16: addr16(s.address),
                port: s.port,
                weight: s.weight,
                up: true,
                sorry: s.sorry,
            })
            .collect();
        let mut st = DirectorState {
            name: d.name.clone(),
            scheduler: d.scheduler,
            mode: d.mode,
            persistence: d.persistence,
            timeouts: ConnTimeouts::from_config(&d.timeouts),
            max_connections: d.max_connections,
            vip: d.virtual_service.map(|v| v.address),
            servers,
            generation: 0,
            sloppy: d.sloppy,
            seed: d.hash_seed.unwrap_or(opts.seed),
            available: Vec::new(),
            sorry: None,
            wrr_max: 0,
            wrr_gcd: 0,
            buckets: None,
            maglev: None,
            maglev_size: opts.maglev_size,
        };
        st.derive();
        Ok(st)
    }

    /// Recompute everything derived from the servers (off the hot path).
    fn derive(&mut self) {
        self.available = (0..self.servers.len() as u16)
            .filter(|&i| self.servers[usize::from(i)].available())
            .collect();
        self.sorry = (0..self.servers.len() as u16).find(|&i| {
            let s = &self.servers[usize::from(i)];
            s.sorry && s.up
        });
        let weights = self
            .available
            .iter()
            .map(|&i| self.servers[usize::from(i)].weight);
        self.wrr_max = weights.clone().max().unwrap_or(0);
        self.wrr_gcd = weights.fold(0, gcd);
        self.buckets = None;
        self.maglev = None;
        match self.scheduler {
            Scheduler::Sh | Scheduler::Dh => self.buckets = self.build_buckets(),
            Scheduler::Mh => {
                let backends: Vec<Backend> = self
                    .available
                    .iter()
                    .map(|&i| {
                        let s = &self.servers[usize::from(i)];
                        Backend {
                            id: i,
                            addr: s.addr16,
                            port: s.port.unwrap_or(0),
                            weight: s.weight,
                        }
                    })
                    .collect();
                self.maglev = Maglev::build(&backends, self.maglev_size);
            }
            _ => {}
        }
    }

    /// IPVS `ip_vs_sh_reassign`: walk the buckets, each regular server with a weight taking
    /// `weight` consecutive ones in turn.
    fn build_buckets(&self) -> Option<Box<[u16; HASH_BUCKETS]>> {
        let members: Vec<u16> = (0..self.servers.len() as u16)
            .filter(|&i| {
                let s = &self.servers[usize::from(i)];
                !s.sorry && s.weight > 0
            })
            .collect();
        if members.is_empty() {
            return None;
        }
        let mut b = Box::new([0u16; HASH_BUCKETS]);
        let (mut m, mut taken) = (0usize, 0u32);
        for slot in b.iter_mut() {
            let id = members[m];
            *slot = id;
            taken += 1;
            if taken >= self.servers[usize::from(id)].weight {
                taken = 0;
                m = (m + 1) % members.len();
            }
        }
        Some(b)
    }

    /// The bucket of `key` for `sh`/`dh`, with IPVS's fallback when its server is down:
    /// rehash with growing offsets. `None` when nothing is available.
    pub(crate) fn bucket_lookup(&self, key: &[u8; 16]) -> Option<u16> {
        let buckets = self.buckets.as_ref()?;
        for round in 0..HASH_BUCKETS as u32 {
            let h = hash_addr(self.seed, key, round);
            let id = buckets[(h % HASH_BUCKETS as u64) as usize];
            if self.servers[usize::from(id)].available() {
                return Some(id);
            }
        }
        None
    }

    /// The index of the server named `name`.
    pub fn server_index(&self, name: &str) -> Option<usize> {
        self.servers.iter().position(|s| s.name == name)
    }

    fn changed(&self, f: impl FnOnce(&mut Vec<ServerState>)) -> DirectorState {
        let mut next = self.clone();
        f(&mut next.servers);
        next.generation = self.generation + 1;
        next.derive();
        next
    }

    /// The Maglev table, for measurements (`mh` only).
    pub fn maglev(&self) -> Option<&Maglev> {
        self.maglev.as_ref()
    }
}

/// All directors of the appliance, in config order; a director's index is what flows name.
#[derive(Debug, Clone)]
pub struct DirectorSet {
    directors: Vec<Arc<DirectorState>>,
}

impl DirectorSet {
    /// Snapshot every director of the config, every server up, default options.
    pub fn build(directors: &[config::Director]) -> Result<DirectorSet, DirectorError> {
        Self::build_with(directors, DirectorOptions::default())
    }

    /// [`DirectorSet::build`] with explicit options.
    pub fn build_with(
        directors: &[config::Director],
        opts: DirectorOptions,
    ) -> Result<DirectorSet, DirectorError> {
        let directors = directors
            .iter()
            .map(|d| DirectorState::from_config(d, opts).map(Arc::new))
            .collect::<Result<_, _>>()?;
        Ok(DirectorSet { directors })
    }

    pub fn len(&self) -> usize {
        self.directors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.directors.is_empty()
    }

    /// The director at `index`.
    pub fn get(&self, index: usize) -> Option<&Arc<DirectorState>> {
        self.directors.get(index)
    }

    /// The index of the director named `name`.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.directors.iter().position(|d| d.name == name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<DirectorState>> {
        self.directors.iter()
    }

    fn with(
        &self,
        director: usize,
        server: usize,
        f: impl FnOnce(&mut ServerState),
    ) -> Result<DirectorSet, DirectorError> {
        let d = self
            .directors
            .get(director)
            .ok_or(DirectorError::UnknownDirector(director))?;
        if server >= d.servers.len() {
            return Err(DirectorError::UnknownServer {
                director: d.name.clone(),
                server,
            });
        }
        let next = d.changed(|servers| f(&mut servers[server]));
        let mut directors = self.directors.clone();
        directors[director] = Arc::new(next);
        Ok(DirectorSet { directors })
    }

    /// A new set in which `server` of `director` is up or down (health checks).
    pub fn with_server_up(
        &self,
        director: usize,
        server: usize,
        up: bool,
    ) -> Result<DirectorSet, DirectorError> {
        self.with(director, server, |s| s.up = up)
    }

    /// A new set in which `server` of `director` has `weight` (0 drains).
    pub fn with_weight(
        &self,
        director: usize,
        server: usize,
        weight: u32,
    ) -> Result<DirectorSet, DirectorError> {
        self.with(director, server, |s| s.weight = weight)
    }
}
