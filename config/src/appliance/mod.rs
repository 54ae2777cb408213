//! The appliance config (`flowgate.toml`): ports, routing tables, directors, the dataplane and
//! the control side, read from TOML and validated into an [`Appliance`].
//!
//! [`load`] reads a file, [`parse`] a text. Every problem is reported together, each as
//! `FILE:LINE:COL: error: KEY.PATH: message` (see [`ConfigError`]). The reference of every key
//! is `docs/config.md`.

mod error;
mod raw;
mod span;
mod validate;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use error::{ConfigError, Diagnostic};
pub use validate::{check_workers, online_cpus, MAX_DIRECTORS, MAX_ERRORS, MAX_SERVERS};

use crate::flows::{Family, Names, Prefix};

/// Where the control socket is when `[control] socket` is not given.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/flowgate/control.sock";
/// The id of the main routing table (`[routes]`), as in Linux.
pub const MAIN_TABLE: u32 = 254;
/// Table ids a `[[table]]` may not take: 0 (unspecified), 253 (default), 254 (main), 255 (local).
pub const RESERVED_TABLES: [u32; 4] = [0, 253, 254, 255];
/// The longest port name: a Linux netdev name (`IFNAMSIZ` - 1).
pub const MAX_PORT_NAME: usize = 15;
/// The longest director or server name, as for flow names.
pub const MAX_NAME: usize = 27;

/// A validated appliance config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appliance {
    /// The flows file, resolved against the config file's directory.
    pub flows: PathBuf,
    pub dataplane: Dataplane,
    pub control: Control,
    /// `[log]`: log levels.
    pub log: Log,
    /// The ports in file order; a port's index here is its port id.
    pub ports: Vec<Port>,
    /// The main table (`[routes]`, id [`MAIN_TABLE`]).
    pub main: RoutingTable,
    /// The `[[table]]` tables in file order.
    pub tables: Vec<RoutingTable>,
    /// The directors in file order.
    pub directors: Vec<Director>,
    /// `[sync]`: connection sync with peer appliances (`None`: off).
    pub sync: Option<SyncConfig>,
}

impl Appliance {
    /// The id (index in [`Appliance::ports`]) of the port named `name`.
    pub fn port_id(&self, name: &str) -> Option<usize> {
        self.ports.iter().position(|p| p.name == name)
    }

    /// The port named `name`.
    pub fn port(&self, name: &str) -> Option<&Port> {
        self.ports.iter().find(|p| p.name == name)
    }

    /// The routing table `id`: a `[[table]]`, or the main table for [`MAIN_TABLE`].
    pub fn table(&self, id: u32) -> Option<&RoutingTable> {
        if id == MAIN_TABLE {
            return Some(&self.main);
        }
        self.tables.iter().find(|t| t.id == id)
    }

    /// The director named `name`.
    pub fn director(&self, name: &str) -> Option<&Director> {
        self.directors.iter().find(|d| d.name == name)
    }
}

impl Names for Appliance {
    fn has_port(&self, name: &str) -> bool {
        self.port(name).is_some()
    }

    fn has_director(&self, name: &str) -> bool {
        self.director(name).is_some()
    }

    /// A `[[table]]` id. The main table (254) is not a valid `table` policy target.
    fn has_table(&self, id: u32) -> bool {
        self.tables.iter().any(|t| t.id == id)
    }
}

/// `[dataplane]`: how the poll-mode workers run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataplane {
    /// The lcores (CPU ids) that run a pinned poll-mode worker each, distinct.
    pub workers: Vec<u32>,
    /// Extra EAL arguments; ports add their own `--vdev`/`-a`.
    pub eal: Vec<String>,
    /// Packets per RX/TX burst, 1..=512.
    pub burst: u16,
    /// The verdict when no flow decides.
    pub default_flow: DefaultPolicy,
    /// The verdict when no outflow decides.
    pub default_outflow: DefaultPolicy,
    /// Mbufs in the packet pool, at least; `None`: what the ports, queues and workers need.
    /// More is for devices that keep frames of their own in the pool (`net_pcap` with
    /// `infinite_rx` holds a copy of every frame of its file).
    pub mbufs: Option<u32>,
}

/// The verdict of a list when no flow decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DefaultPolicy {
    #[default]
    Permit,
    Deny,
}

/// A log level: of flowgate's own log (`[log] level`, `--log-level`) or of DPDK's (`[log]
/// dpdk`), most severe first; a level shows its own messages and those more severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    /// Every level, most severe first.
    pub const ALL: [LogLevel; 5] = [
        LogLevel::Error,
        LogLevel::Warn,
        LogLevel::Info,
        LogLevel::Debug,
        LogLevel::Trace,
    ];

    /// The name the config and the command line use.
    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

impl std::str::FromStr for LogLevel {
    type Err = String;

    fn from_str(s: &str) -> Result<LogLevel, String> {
        LogLevel::ALL
            .into_iter()
            .find(|l| l.name() == s)
            .ok_or_else(|| {
                format!("unknown log level `{s}`: expected error, warn, info, debug or trace")
            })
    }
}

/// `[log]`: how much flowgate and DPDK say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Log {
    /// flowgate's own messages (default `info`: start, stop, swaps, refusals, health changes).
    pub level: LogLevel,
    /// DPDK's messages, routed into flowgate's log as component `dpdk` (default `warn`;
    /// `[log] dpdk = "info"` shows the EAL's start-up lines again).
    pub dpdk: LogLevel,
}

impl Default for Log {
    fn default() -> Log {
        Log {
            level: LogLevel::Info,
            dpdk: LogLevel::Warn,
        }
    }
}

/// `[control]`: the control socket and the metrics listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    /// The Unix socket `flowctl` talks to.
    pub socket: PathBuf,
    /// The Prometheus `/metrics` listener; `None` disables it.
    pub metrics: Option<SocketAddr>,
}

/// `[sync]`: the connection sync with peer appliances (`docs/sync.md`).
#[derive(Clone, PartialEq, Eq)]
pub struct SyncConfig {
    /// The UDP address this appliance's sync socket binds (its own sync address).
    pub listen: SocketAddr,
    /// Unicast peers, each sent every message.
    pub peers: Vec<SocketAddr>,
    /// A multicast group messages are also sent to, and received on.
    pub group: Option<SocketAddr>,
    /// The interface the group is joined on (required with `group`).
    pub interface: Option<String>,
    /// Where the shared HMAC key comes from.
    pub key: SyncKey,
    /// Largest UDP payload of a sync message, bytes.
    pub mtu: u16,
    /// How often the exported entries are sent (and hellos repeated).
    pub interval: Duration,
}

impl std::fmt::Debug for SyncConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncConfig")
            .field("listen", &self.listen)
            .field("peers", &self.peers)
            .field("group", &self.group)
            .field("interface", &self.interface)
            .field("key", &self.key)
            .field("mtu", &self.mtu)
            .field("interval", &self.interval)
            .finish()
    }
}

/// The sync's shared secret: inline, or the contents of a file (read when the daemon starts;
/// surrounding whitespace is not part of the key).
#[derive(Clone, PartialEq, Eq)]
pub enum SyncKey {
    Inline(Vec<u8>),
    /// Resolved against the config file's directory.
    File(PathBuf),
}

impl std::fmt::Debug for SyncKey {
    /// Never prints the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyncKey::Inline(k) => write!(f, "Inline({} bytes)", k.len()),
            SyncKey::File(p) => write!(f, "File({})", p.display()),
        }
    }
}

/// Shortest sync key accepted, bytes.
pub const MIN_SYNC_KEY: usize = 16;
/// `[sync] mtu` when not given: an Ethernet frame's UDP payload over IPv4.
pub const DEFAULT_SYNC_MTU: u16 = 1472;
/// `[sync] interval_ms` when not given.
pub const DEFAULT_SYNC_INTERVAL_MS: u32 = 50;

impl SyncKey {
    /// The key bytes: inline, or read from the file (trimmed). At least [`MIN_SYNC_KEY`].
    pub fn read(&self) -> Result<Vec<u8>, String> {
        let key = match self {
            SyncKey::Inline(k) => k.clone(),
            SyncKey::File(p) => {
                let bytes =
                    std::fs::read(p).map_err(|e| format!("sync key file {}: {e}", p.display()))?;
                bytes.trim_ascii().to_vec()
            }
        };
        if key.len() < MIN_SYNC_KEY {
            return Err(format!(
                "the sync key is {} bytes long: at least {MIN_SYNC_KEY} needed",
                key.len()
            ));
        }
        Ok(key)
    }
}

/// A `[[port]]`: one DPDK ethdev, mirrored to the kernel by a TAP of the same name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// What `iface` conditions name; also the kernel TAP's name.
    pub name: String,
    pub device: Device,
    /// RSS queues, spread over the workers (>= 1).
    pub rx_queues: u16,
    /// Interface addresses, configured on the TAP.
    pub addresses: Vec<InterfaceAddress>,
    /// Whether a TAP mirrors this port to the kernel.
    pub kernel: bool,
    /// A MAC address to set on the port; `None` keeps the device's.
    pub mac: Option<MacAddr>,
    /// Inline (bump-in-the-wire) mode: permitted packets from this port leave through the
    /// peer port (after the outflows) instead of going to the kernel. Index into `ports`.
    pub peer: Option<usize>,
    /// Static neighbours on this port (`neighbours = { "10.0.0.2" = "02:00:00:00:00:02" }`):
    /// next hops whose MAC is known without ARP / neighbour discovery, never expiring; each
    /// on a subnet of the port's addresses.
    pub neighbours: Vec<(IpAddr, MacAddr)>,
}

/// What a port is in DPDK: a PCI device or a virtual device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Device {
    /// A PCI address in full form, `0000:3b:00.0` (a short `3b:00.0` gets domain 0000).
    Pci(String),
    /// A vdev: driver instance name and its arguments, as in `net_af_packet0,iface=veth0`.
    Vdev { name: String, args: String },
}

impl Device {
    /// The EAL arguments that make this device available: `-a PCI` or `--vdev SPEC`.
    pub fn eal_args(&self) -> [String; 2] {
        match self {
            Device::Pci(addr) => ["-a".to_string(), addr.clone()],
            Device::Vdev { name, args } if args.is_empty() => ["--vdev".to_string(), name.clone()],
            Device::Vdev { name, args } => ["--vdev".to_string(), format!("{name},{args}")],
        }
    }
}

/// An interface address: the address and the length of its subnet (`192.168.0.1/24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InterfaceAddress {
    pub addr: IpAddr,
    pub len: u8,
}

impl InterfaceAddress {
    /// The connected subnet (host bits cleared).
    pub fn subnet(&self) -> Prefix {
        Prefix::new(self.addr, self.len)
    }

    pub fn family(&self) -> Family {
        family_of(self.addr)
    }
}

impl std::fmt::Display for InterfaceAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// An Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl std::fmt::Display for MacAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// A routing table: the main table or a `[[table]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingTable {
    pub id: u32,
    /// Routes in file order; destinations are distinct.
    pub routes: Vec<Route>,
}

/// One route. The output port is always known: given as `port`, or the port with a connected
/// subnet holding the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The destination (`default` is `0.0.0.0/0`, or `::/0` with an IPv6 gateway).
    pub prefix: Prefix,
    /// The gateway; `None` for a directly connected destination.
    pub via: Option<IpAddr>,
    /// The output port's id (index in [`Appliance::ports`]).
    pub port: usize,
}

/// A `[[director]]`: an in-process L4 load balancer (IPVS-like virtual service).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Director {
    /// What `director NAME` policies name.
    pub name: String,
    pub scheduler: Scheduler,
    pub mode: Mode,
    pub persistence: Option<Persistence>,
    pub check: Check,
    pub timeouts: Timeouts,
    /// Connections (and persistence templates) the director tracks at most, over all workers
    /// (each worker's table holds its share); a new connection beyond is refused and counted.
    pub max_connections: u32,
    /// The service address (and port), when given: informative, and fixes the family.
    pub virtual_service: Option<VirtualService>,
    /// Servers in file order; at least one, all of one family.
    pub servers: Vec<Server>,
}

/// How a director picks a server (IPVS schedulers; `mh` is Maglev hashing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheduler {
    Rr,
    Wrr,
    Lc,
    Wlc,
    Sh,
    Dh,
    Sed,
    Nq,
    Mh,
}

/// How a director forwards to its servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Rewrite the destination (and port); replies come back through the appliance.
    Nat,
    /// Direct routing: rewrite the MAC only; servers own the VIP.
    Gateway,
    /// IP-in-IP to the server.
    Tunnel,
}

/// Client affinity: a client (under `netmask`) keeps its server for `timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Persistence {
    pub timeout: Duration,
    /// The netmask applied to the client address, as a prefix length.
    pub netmask_len: u8,
}

/// A health check, run off the data path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub kind: CheckKind,
    pub interval: Duration,
    pub timeout: Duration,
    /// Successes in a row that bring a server up.
    pub rise: u32,
    /// Failures in a row that bring a server down.
    pub fall: u32,
    /// The port to check; `None`: the server's port, else the virtual port.
    pub port: Option<u16>,
}

/// The kind of a health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    /// A server is always up.
    None,
    /// TCP connect.
    Tcp,
    /// HTTP GET `uri`, expecting `status`.
    Http { uri: String, status: u16 },
    /// ICMP echo.
    Icmp,
}

/// The name of a check kind, as written in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKindName {
    Tcp,
    Http,
    Icmp,
    None,
}

/// Connection-tracking idle timeouts of a director (IPVS defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp: Duration,
    pub tcp_fin: Duration,
    pub udp: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp: Duration::from_secs(900),
            tcp_fin: Duration::from_secs(120),
            udp: Duration::from_secs(300),
        }
    }
}

/// The service a director stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtualService {
    pub address: IpAddr,
    pub port: Option<u16>,
}

/// A real server of a director.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub name: String,
    pub address: IpAddr,
    /// `None` keeps the packet's destination port; `Some` rewrites it (NAT mode only).
    pub port: Option<u16>,
    /// 0 drains the server (existing connections stay, no new ones).
    pub weight: u32,
    /// Takes traffic only while every other server is down.
    pub sorry: bool,
}

/// Reads and validates the config file at `path`. The flows path is resolved against the
/// file's directory; worker lcores are checked against this machine's CPUs.
pub fn load(path: impl AsRef<Path>) -> Result<Appliance, ConfigError> {
    let path = path.as_ref();
    let text =
        crate::source::read_regular(path, crate::source::MAX_CONFIG_FILE).map_err(|source| {
            ConfigError::Io {
                path: path.to_path_buf(),
                source,
            }
        })?;
    parse(&path.to_string_lossy(), &text)
}

/// Validates config `text`; `name` is the file name used in messages and to resolve the
/// flows path (against its directory). Worker lcores are checked against [`online_cpus`].
pub fn parse(name: &str, text: &str) -> Result<Appliance, ConfigError> {
    parse_with_cpus(name, text, online_cpus())
}

/// [`parse`], with the lcore check made against `cpus` CPUs (ids `0..cpus`).
pub fn parse_with_cpus(name: &str, text: &str, cpus: usize) -> Result<Appliance, ConfigError> {
    validate::parse(name, text, cpus)
}

fn family_of(addr: IpAddr) -> Family {
    match addr {
        IpAddr::V4(_) => Family::V4,
        IpAddr::V6(_) => Family::V6,
    }
}
