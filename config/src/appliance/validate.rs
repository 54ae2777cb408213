//! From the serde model to a validated [`Appliance`]: every check, every error with its key
//! path and position, all reported together.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::raw::{RawAppliance, RawDirector, RawPort, RawRoutes};
use super::span::{self, KeyPath, Node};
use super::*;

/// The number of CPU ids on this machine: one more than the highest id in
/// `/sys/devices/system/cpu/online`, else [`std::thread::available_parallelism`], else 1.
pub fn online_cpus() -> usize {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|s| parse_cpu_list(&s))
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
}

/// One more than the highest CPU id in a Linux CPU list such as `0-3,8-11`.
fn parse_cpu_list(list: &str) -> Option<usize> {
    let mut max = None;
    for part in list.trim().split(',') {
        let last = part.rsplit('-').next()?;
        let id: usize = last.trim().parse().ok()?;
        max = Some(max.map_or(id, |m: usize| m.max(id)));
    }
    max.map(|m| m + 1)
}

/// Checks worker lcores against a machine with `cpus` CPUs (ids `0..cpus`): returns the index
/// and the problem of every bad entry (an lcore that does not exist, or one listed twice).
pub fn check_workers(workers: &[u32], cpus: usize) -> Vec<(usize, String)> {
    let mut problems = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, &lcore) in workers.iter().enumerate() {
        if !seen.insert(lcore) {
            problems.push((i, format!("lcore {lcore} is listed twice")));
        } else if !matches!(usize::try_from(lcore), Ok(l) if l < cpus) {
            problems.push((
                i,
                format!(
                    "lcore {lcore} does not exist on this machine (it has {cpus} CPUs: 0..={})",
                    cpus.saturating_sub(1)
                ),
            ));
        }
    }
    problems
}

/// Errors located and reported at most; the others are counted in one last error (locating
/// one costs a walk of the file, so a file of errors stays linear).
pub const MAX_ERRORS: usize = 200;

/// Collects diagnostics while validating.
struct Cx<'a> {
    file: &'a str,
    text: &'a str,
    tree: Spanned<Node>,
    diags: Vec<Diagnostic>,
    /// Errors past [`MAX_ERRORS`], counted only.
    omitted: usize,
}

impl Cx<'_> {
    fn full(&mut self) -> bool {
        if self.diags.len() >= MAX_ERRORS {
            self.omitted += 1;
            true
        } else {
            false
        }
    }

    fn at(&mut self, offset: usize, path: &KeyPath, message: String) {
        let (line, col) = span::line_col(self.text, offset);
        self.diags.push(Diagnostic {
            file: self.file.to_string(),
            line,
            col,
            path: path.to_string(),
            message,
        });
    }

    /// An error about the value at `path`.
    fn err(&mut self, path: &KeyPath, message: impl Into<String>) {
        if self.full() {
            return;
        }
        let offset = span::span_of(&self.tree, path).start;
        self.at(offset, path, message.into());
    }

    /// An error about the key at the end of `path` (a duplicate destination, for instance).
    fn err_key(&mut self, path: &KeyPath, message: impl Into<String>) {
        if self.full() {
            return;
        }
        let offset = span::key_span_of(&self.tree, path).start;
        self.at(offset, path, message.into());
    }

    /// The line of the value at `path`, to point at the first of two duplicates (0 once
    /// errors are no longer located).
    fn line(&self, path: &KeyPath) -> usize {
        if self.diags.len() >= MAX_ERRORS {
            return 0;
        }
        span::line_col(self.text, span::span_of(&self.tree, path).start).0
    }
}

pub(super) fn parse(file: &str, text: &str, cpus: usize) -> Result<Appliance, ConfigError> {
    let tree = span::tree(text);
    let raw: RawAppliance = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            let offset = span.start;
            // An empty span is the whole document (a missing top-level key).
            let path = match &tree {
                Some(t) if !span.is_empty() => span::path_at(t, offset),
                _ => KeyPath::root(),
            };
            let (line, col) = span::line_col(text, offset);
            return Err(ConfigError::Invalid(vec![Diagnostic {
                file: file.to_string(),
                line,
                col,
                path: path.to_string(),
                message: e.message().trim().lines().collect::<Vec<_>>().join(": "),
            }]));
        }
    };
    let tree = tree.unwrap_or_else(|| Spanned::new(0..0, Node::Table(Vec::new())));
    let mut cx = Cx {
        file,
        text,
        tree,
        diags: Vec::new(),
        omitted: 0,
    };
    let appliance = build(&mut cx, raw, Path::new(file), cpus);
    if cx.diags.is_empty() {
        Ok(appliance)
    } else {
        let mut diags = cx.diags;
        diags.sort_by_key(|d| (d.line, d.col));
        if cx.omitted > 0 {
            diags.push(Diagnostic {
                file: file.to_string(),
                line: text.lines().count().max(1),
                col: 1,
                path: String::new(),
                message: format!("{} more errors not shown", cx.omitted),
            });
        }
        Err(ConfigError::Invalid(diags))
    }
}

fn build(cx: &mut Cx<'_>, raw: RawAppliance, file: &Path, cpus: usize) -> Appliance {
    let root = KeyPath::root();
    if raw.flows.trim().is_empty() {
        cx.err(&root.key("flows"), "expected the path of the flows file");
    }
    let base = file.parent().unwrap_or(Path::new(""));
    let flows = base.join(&raw.flows);

    let dataplane = dataplane(cx, raw.dataplane, cpus);
    let control = control(cx, raw.control);
    let log = Log {
        level: raw.log.level.unwrap_or(Log::default().level),
        dpdk: raw.log.dpdk.unwrap_or(Log::default().dpdk),
    };
    let before = cx.diags.len();
    let ports = ports(cx, &raw.port);
    // With a port address refused, "no port's subnet holds the gateway" would be noise.
    let subnets_known = cx.diags.len() == before;
    let main = RoutingTable {
        id: MAIN_TABLE,
        routes: routes(cx, &root.key("routes"), &raw.routes, &ports, subnets_known),
    };
    let mut tables: Vec<RoutingTable> = Vec::new();
    let mut table_ids: HashMap<u32, usize> = HashMap::new();
    for (i, t) in raw.table.iter().enumerate() {
        let path = root.key("table").index(i);
        if RESERVED_TABLES.contains(&t.id) {
            cx.err(
                &path.key("id"),
                format!(
                    "table id {} is reserved (0 unspecified, 253 default, 254 main: use [routes], \
                     255 local); expected 1..=4294967295 except 253, 254, 255",
                    t.id
                ),
            );
        } else if let Some(&j) = table_ids.get(&t.id) {
            let line = cx.line(&root.key("table").index(j).key("id"));
            cx.err(
                &path.key("id"),
                format!("table id {} is already defined at line {line}", t.id),
            );
        }
        table_ids.entry(t.id).or_insert(i);
        let routes = routes(cx, &path.key("routes"), &t.routes, &ports, subnets_known);
        tables.push(RoutingTable { id: t.id, routes });
    }
    let mut directors = Vec::new();
    let mut director_names: HashMap<&str, usize> = HashMap::new();
    if raw.director.len() > MAX_DIRECTORS {
        cx.err(
            &root.key("director"),
            format!(
                "{} directors: at most {MAX_DIRECTORS} are supported",
                raw.director.len()
            ),
        );
    }
    for (i, d) in raw.director.iter().enumerate() {
        let first = *director_names.entry(d.name.as_str()).or_insert(i);
        directors.push(director(cx, i, d, (first < i).then_some(first)));
    }
    let sync = raw.sync.map(|s| sync(cx, s, base));
    Appliance {
        flows,
        dataplane,
        control,
        log,
        ports,
        main,
        tables,
        directors,
        sync,
    }
}

/// `[sync]`: addresses of one family, one key, sizes in range.
fn sync(cx: &mut Cx<'_>, raw: super::raw::RawSync, base: &Path) -> SyncConfig {
    let path = KeyPath::root().key("sync");
    let addr = |cx: &mut Cx<'_>, p: &KeyPath, s: &str| match s.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            cx.err(
                p,
                format!(
                    "`{s}` is not a socket address: expected ADDRESS:PORT, like \"10.50.0.1:8848\""
                ),
            );
            None
        }
    };
    let listen = addr(cx, &path.key("listen"), &raw.listen);
    let fallback = SocketAddr::from(([0, 0, 0, 0], 8848));
    if listen.is_some_and(|l| l.port() == 0) {
        cx.err(&path.key("listen"), "expected a port other than 0");
    }
    let mut peers = Vec::new();
    for (i, p) in raw.peers.iter().enumerate() {
        let at = path.key("peers").index(i);
        let Some(a) = addr(cx, &at, p) else { continue };
        if listen.is_some_and(|l| l.is_ipv4() != a.is_ipv4()) {
            cx.err(&at, format!("peer {a} is not of the family of `listen`"));
        } else if a.ip().is_unspecified() || a.port() == 0 || a.ip().is_multicast() {
            cx.err(&at, format!("peer {a}: expected a unicast ADDRESS:PORT"));
        } else if Some(a) == listen {
            cx.err(&at, format!("peer {a} is this appliance's own `listen`"));
        } else if peers.contains(&a) {
            cx.err(&at, format!("peer {a} is listed twice"));
        } else {
            peers.push(a);
        }
    }
    let group = raw.group.as_deref().and_then(|g| {
        let a = addr(cx, &path.key("group"), g)?;
        if !a.ip().is_multicast() || a.port() == 0 {
            cx.err(
                &path.key("group"),
                format!("{a} is not a multicast ADDRESS:PORT"),
            );
            return None;
        }
        if listen.is_some_and(|l| l.is_ipv4() != a.is_ipv4()) {
            cx.err(
                &path.key("group"),
                format!("group {a} is not of the family of `listen`"),
            );
            return None;
        }
        Some(a)
    });
    if group.is_some() && raw.interface.is_none() {
        cx.err(
            &path.key("group"),
            "a multicast group needs `interface` (where to join it)",
        );
    }
    if let Some(i) = &raw.interface {
        if i.is_empty() || i.len() > MAX_PORT_NAME || i.contains(['/', ' ']) {
            cx.err(
                &path.key("interface"),
                format!("`{i}` is not an interface name"),
            );
        }
    }
    if peers.is_empty() && group.is_none() && raw.peers.is_empty() {
        cx.err(
            &path.key("listen"),
            "expected `peers` or `group`: nobody to sync with",
        );
    }
    let key = match (raw.key, raw.key_file) {
        (Some(k), None) => {
            if k.len() < MIN_SYNC_KEY {
                cx.err(
                    &path.key("key"),
                    format!(
                        "the key is {} bytes long: at least {MIN_SYNC_KEY} needed",
                        k.len()
                    ),
                );
            }
            SyncKey::Inline(k.into_bytes())
        }
        (None, Some(f)) => {
            if f.trim().is_empty() {
                cx.err(&path.key("key_file"), "expected the path of the key file");
            }
            SyncKey::File(base.join(f))
        }
        (Some(_), Some(_)) => {
            cx.err(&path.key("key"), "give `key` or `key_file`, not both");
            SyncKey::Inline(Vec::new())
        }
        (None, None) => {
            cx.err(
                &path.key("listen"),
                "expected `key` or `key_file`: the shared secret",
            );
            SyncKey::Inline(Vec::new())
        }
    };
    let mtu = match raw.mtu.map(u16::try_from) {
        None => DEFAULT_SYNC_MTU,
        Some(Ok(m)) if (MIN_SYNC_MTU..=MAX_SYNC_MTU).contains(&m) => m,
        Some(_) => {
            cx.err(
                &path.key("mtu"),
                format!(
                    "mtu {} is out of range: expected {MIN_SYNC_MTU}..={MAX_SYNC_MTU}",
                    raw.mtu.unwrap_or(0)
                ),
            );
            DEFAULT_SYNC_MTU
        }
    };
    let interval_ms = match raw.interval_ms {
        None => DEFAULT_SYNC_INTERVAL_MS,
        Some(i) if (1..=10_000).contains(&i) => i,
        Some(i) => {
            cx.err(
                &path.key("interval_ms"),
                format!("interval_ms {i} is out of range: expected 1..=10000"),
            );
            DEFAULT_SYNC_INTERVAL_MS
        }
    };
    SyncConfig {
        listen: listen.unwrap_or(fallback),
        peers,
        group,
        interface: raw.interface,
        key,
        mtu,
        interval: Duration::from_millis(u64::from(interval_ms)),
    }
}

/// Smallest `[sync] mtu`: a message header, one entry and its HMAC fit.
const MIN_SYNC_MTU: u16 = 256;
/// Largest `[sync] mtu`: the largest UDP payload over IPv4.
const MAX_SYNC_MTU: u16 = 65507;

fn dataplane(cx: &mut Cx<'_>, raw: super::raw::RawDataplane, cpus: usize) -> Dataplane {
    let path = KeyPath::root().key("dataplane");
    if raw.workers.is_empty() {
        cx.err(&path.key("workers"), "expected at least one worker lcore");
    }
    for (i, problem) in check_workers(&raw.workers, cpus) {
        cx.err(&path.key("workers").index(i), problem);
    }
    let burst = match u16::try_from(raw.burst) {
        Ok(b) if (1..=512).contains(&b) => b,
        _ => {
            cx.err(
                &path.key("burst"),
                format!("burst {} is out of range: expected 1..=512", raw.burst),
            );
            32
        }
    };
    let mbufs = raw.mbufs.and_then(|n| match u32::try_from(n) {
        Ok(m) if (1024..=MAX_MBUFS).contains(&m) => Some(m),
        _ => {
            cx.err(
                &path.key("mbufs"),
                format!("mbufs {n} is out of range: expected 1024..={MAX_MBUFS}"),
            );
            None
        }
    });
    Dataplane {
        workers: raw.workers,
        eal: raw.eal,
        burst,
        mbufs,
        default_flow: raw.default_flow,
        default_outflow: raw.default_outflow,
    }
}

/// Most mbufs `[dataplane] mbufs` may ask for (a pool of 2^24 - 1 mbufs is about 37 GB).
const MAX_MBUFS: u32 = (1 << 24) - 1;

fn control(cx: &mut Cx<'_>, raw: super::raw::RawControl) -> Control {
    let path = KeyPath::root().key("control");
    if raw.socket.trim().is_empty() {
        cx.err(
            &path.key("socket"),
            "expected the path of the control socket",
        );
    }
    let metrics = raw.metrics.as_deref().and_then(|m| match m.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            cx.err(
                &path.key("metrics"),
                format!("`{m}` is not a socket address: expected ADDRESS:PORT, like \"127.0.0.1:9469\""),
            );
            None
        }
    });
    Control {
        socket: PathBuf::from(raw.socket),
        metrics,
    }
}

/// Checks a port, director or server name: `[A-Za-z0-9_-]{1,max}`.
fn check_name(name: &str, max: usize) -> Result<(), String> {
    if name.is_empty() {
        return Err("expected a name of letters, digits, `_` or `-`".to_string());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(format!(
            "`{name}` has the character {c:?}: expected letters, digits, `_` or `-`"
        ));
    }
    if name.len() > max {
        return Err(format!(
            "`{name}` is {} characters long: at most {max} allowed",
            name.len()
        ));
    }
    Ok(())
}

fn ports(cx: &mut Cx<'_>, raw: &[RawPort]) -> Vec<Port> {
    let mut ports = Vec::new();
    let mut seen_addrs: HashMap<IpAddr, KeyPath> = HashMap::new();
    for (i, p) in raw.iter().enumerate() {
        let path = KeyPath::root().key("port").index(i);
        match check_name(&p.name, MAX_PORT_NAME) {
            Err(e) => cx.err(
                &path.key("name"),
                format!("{e} (a port name is a Linux netdev name)"),
            ),
            Ok(()) => {
                if let Some(j) = raw[..i].iter().position(|o| o.name == p.name) {
                    let line = cx.line(&KeyPath::root().key("port").index(j).key("name"));
                    cx.err(
                        &path.key("name"),
                        format!("port `{}` is already defined at line {line}", p.name),
                    );
                }
            }
        }
        let device = match parse_device(&p.device) {
            Ok(d) => {
                if let Some(j) = ports.iter().position(|o: &Port| o.device == d) {
                    let line = cx.line(&KeyPath::root().key("port").index(j).key("device"));
                    cx.err(
                        &path.key("device"),
                        format!("device `{}` is already used at line {line}", p.device),
                    );
                }
                d
            }
            Err(e) => {
                cx.err(&path.key("device"), e);
                Device::Vdev {
                    name: p.device.clone(),
                    args: String::new(),
                }
            }
        };
        if p.rx_queues == 0 {
            cx.err(&path.key("rx_queues"), "expected at least 1 RX queue");
        }
        let mut addresses = Vec::new();
        for (k, a) in p.addresses.iter().enumerate() {
            let apath = path.key("addresses").index(k);
            match parse_interface_address(a) {
                Ok(ia) => {
                    if let Some(first) = seen_addrs.get(&ia.addr) {
                        let line = cx.line(first);
                        cx.err(
                            &apath,
                            format!("address {} is already assigned at line {line}", ia.addr),
                        );
                    } else {
                        seen_addrs.insert(ia.addr, apath);
                    }
                    addresses.push(ia);
                }
                Err(e) => cx.err(&apath, e),
            }
        }
        let mac = p.mac.as_deref().and_then(|m| match parse_mac(m) {
            Ok(mac) => Some(mac),
            Err(e) => {
                cx.err(&path.key("mac"), e);
                None
            }
        });
        let addresses_known = addresses.len() == p.addresses.len();
        let neighbours = neighbours(cx, &path, p, &addresses, addresses_known);
        ports.push(Port {
            name: p.name.clone(),
            device,
            rx_queues: p.rx_queues,
            addresses,
            kernel: p.kernel,
            mac,
            peer: None,
            neighbours,
        });
    }
    // Peers name other ports: resolve once every name is known.
    for (i, p) in raw.iter().enumerate() {
        let Some(peer) = &p.peer else { continue };
        let path = KeyPath::root().key("port").index(i).key("peer");
        match ports.iter().position(|q| &q.name == peer) {
            Some(j) if j == i => cx.err(&path, "a port cannot be its own peer"),
            Some(j) => {
                if let Some(port) = ports.get_mut(i) {
                    port.peer = Some(j);
                }
            }
            None => cx.err(
                &path,
                format!("unknown port `{peer}` (expected a [[port]] name)"),
            ),
        }
    }
    ports
}

/// A port's static neighbours: each an address on one of the port's subnets (not one of its
/// own addresses), once, with a unicast MAC. With `addresses_known` false (one of the port's
/// addresses was refused), the subnet check is left out.
fn neighbours(
    cx: &mut Cx<'_>,
    path: &KeyPath,
    p: &RawPort,
    addresses: &[InterfaceAddress],
    addresses_known: bool,
) -> Vec<(IpAddr, MacAddr)> {
    let mut out: Vec<(IpAddr, MacAddr, KeyPath)> = Vec::new();
    for (key, mac) in &p.neighbours.0 {
        let npath = path.key("neighbours").key(key);
        let ip = match key.parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) => {
                cx.err_key(
                    &npath,
                    format!("`{key}` is not a neighbour address: expected an IPv4 or IPv6 address"),
                );
                continue;
            }
        };
        let mac = match parse_mac(mac) {
            Ok(m) => m,
            Err(e) => {
                cx.err(&npath, e);
                continue;
            }
        };
        if addresses.iter().any(|a| a.addr == ip) {
            cx.err_key(
                &npath,
                format!("{ip} is an address of port `{}` itself", p.name),
            );
            continue;
        }
        if addresses_known && !addresses.iter().any(|a| a.subnet().contains(ip)) {
            cx.err_key(
                &npath,
                format!(
                    "neighbour {ip} is not on a subnet of port `{}`: give the port an address \
                     on its subnet",
                    p.name
                ),
            );
            continue;
        }
        if let Some((_, _, first)) = out.iter().find(|(o, _, _)| *o == ip) {
            let line = cx.line(first);
            cx.err_key(
                &npath,
                format!("neighbour {ip} is already given at line {line}"),
            );
            continue;
        }
        out.push((ip, mac, npath));
    }
    out.into_iter().map(|(ip, mac, _)| (ip, mac)).collect()
}

fn is_hex(s: &str, n: usize) -> bool {
    s.len() == n && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// A PCI address (`0000:3b:00.0` or `3b:00.0`) or a vdev (`net_DRIVERn[,args]`).
fn parse_device(s: &str) -> Result<Device, String> {
    let expected = "expected a PCI address like \"0000:3b:00.0\" or a vdev like \
                    \"net_af_packet0,iface=veth0\"";
    if s.starts_with("net_") {
        let (name, args) = s.split_once(',').unwrap_or((s, ""));
        if name.len() > 4 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Ok(Device::Vdev {
                name: name.to_string(),
                args: args.to_string(),
            });
        }
        return Err(format!("`{s}` is not a vdev: {expected}"));
    }
    let parts: Vec<&str> = s.split(':').collect();
    let (domain, bus, devfn) = match parts.as_slice() {
        [d, b, df] => (*d, *b, *df),
        [b, df] => ("0000", *b, *df),
        _ => return Err(format!("`{s}` is not a device: {expected}")),
    };
    let ok = match devfn.split_once('.') {
        Some((dev, func)) => {
            is_hex(domain, 4)
                && is_hex(bus, 2)
                && is_hex(dev, 2)
                && func.len() == 1
                && func.chars().all(|c| ('0'..='7').contains(&c))
        }
        None => false,
    };
    if ok {
        Ok(Device::Pci(
            format!("{domain}:{bus}:{devfn}").to_ascii_lowercase(),
        ))
    } else {
        Err(format!("`{s}` is not a PCI address: {expected}"))
    }
}

fn max_len(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// `ADDR/LEN` with the host bits kept (an interface address).
fn parse_interface_address(s: &str) -> Result<InterfaceAddress, String> {
    let Some((addr, len)) = s.split_once('/') else {
        return Err(format!(
            "`{s}` has no prefix length: expected ADDRESS/LEN like \"192.168.0.1/24\""
        ));
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("`{addr}` is not an IPv4 or IPv6 address"))?;
    let len = parse_len(len, addr)?;
    if addr.is_unspecified() || addr.is_multicast() {
        return Err(format!("{addr} cannot be an interface address"));
    }
    Ok(InterfaceAddress { addr, len })
}

fn parse_len(len: &str, addr: IpAddr) -> Result<u8, String> {
    let max = max_len(addr);
    match len.parse::<u8>() {
        Ok(l) if l <= max => Ok(l),
        _ => Err(format!(
            "prefix length `{len}` is out of range: expected 0..={max}"
        )),
    }
}

/// A route destination: `ADDR/LEN` or `ADDR` (a host), host bits clear.
fn parse_destination(s: &str) -> Result<Prefix, String> {
    let (addr_s, len_s) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let addr: IpAddr = addr_s.parse().map_err(|_| {
        format!("`{s}` is not a destination: expected \"default\", ADDRESS/LEN or ADDRESS")
    })?;
    let len = match len_s {
        Some(l) => parse_len(l, addr)?,
        None => max_len(addr),
    };
    let prefix = Prefix::new(addr, len);
    let canonical_addr = match prefix {
        Prefix::V4 { addr, .. } => IpAddr::V4(addr),
        Prefix::V6 { addr, .. } => IpAddr::V6(addr),
    };
    if canonical_addr != addr {
        return Err(format!(
            "`{s}` has host bits set: did you mean \"{canonical_addr}/{len}\"?"
        ));
    }
    Ok(prefix)
}

fn parse_mac(s: &str) -> Result<MacAddr, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let mut mac = [0u8; 6];
    let ok = parts.len() == 6
        && parts.iter().zip(mac.iter_mut()).all(|(p, b)| {
            is_hex(p, 2)
                && u8::from_str_radix(p, 16)
                    .map(|v| {
                        *b = v;
                    })
                    .is_ok()
        });
    if !ok {
        return Err(format!(
            "`{s}` is not a MAC address: expected six hex bytes like \"02:00:00:00:00:01\""
        ));
    }
    if mac[0] & 1 == 1 || mac == [0; 6] {
        return Err(format!(
            "{s} is a multicast or zero address: expected a unicast MAC"
        ));
    }
    Ok(MacAddr(mac))
}

/// The routes of one table. With `subnets_known` false (a port address was refused), gateways
/// are not checked against the ports' subnets.
fn routes(
    cx: &mut Cx<'_>,
    path: &KeyPath,
    raw: &RawRoutes,
    ports: &[Port],
    subnets_known: bool,
) -> Vec<Route> {
    let mut out: Vec<(Route, KeyPath)> = Vec::new();
    let mut routed: HashMap<Prefix, usize> = HashMap::new();
    for (key, r) in &raw.0 {
        let kpath = path.key(key);
        let via_path = if r.inline_table {
            kpath.key("via")
        } else {
            kpath.clone()
        };
        let via = match r.via.as_deref().map(str::parse::<IpAddr>) {
            None => None,
            Some(Ok(v)) => Some(v),
            Some(Err(_)) => {
                let v = r.via.as_deref().unwrap_or_default();
                cx.err(
                    &via_path,
                    format!("`{v}` is not a gateway: expected an IPv4 or IPv6 address"),
                );
                continue;
            }
        };
        let prefix = if key == "default" {
            let any = match via {
                Some(IpAddr::V6(_)) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
                _ => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            };
            Prefix::new(any, 0)
        } else {
            match parse_destination(key) {
                Ok(p) => p,
                Err(e) => {
                    cx.err_key(&kpath, e);
                    continue;
                }
            }
        };
        if via.is_none() && r.port.is_none() {
            cx.err(&kpath, "a route needs a gateway (`via`), a `port`, or both");
            continue;
        }
        if let Some(v) = via {
            if super::family_of(v) != prefix.family() {
                cx.err(
                    &via_path,
                    format!("gateway {v} is not of the family of destination {prefix}"),
                );
                continue;
            }
        }
        let port = match r.port.as_deref() {
            Some(name) => match ports.iter().position(|p| p.name == name) {
                Some(id) => Some(id),
                None => {
                    cx.err(&kpath.key("port"), format!("no [[port]] is named `{name}`"));
                    continue;
                }
            },
            None => None,
        };
        let port = match (via, port) {
            (None, Some(id)) => id,
            (Some(_), Some(id)) if !subnets_known => id,
            (Some(v), Some(id)) => {
                if !ports[id].addresses.iter().any(|a| a.subnet().contains(v)) {
                    cx.err(
                        &via_path,
                        format!(
                            "gateway {v} is not on a subnet of port `{}`",
                            ports[id].name
                        ),
                    );
                    continue;
                }
                id
            }
            (Some(v), None) => {
                match ports
                    .iter()
                    .position(|p| p.addresses.iter().any(|a| a.subnet().contains(v)))
                {
                    Some(id) => id,
                    None if !subnets_known => 0,
                    None => {
                        cx.err(
                            &via_path,
                            format!(
                                "gateway {v} is on no port's subnet: give a port an address on its \
                                 subnet"
                            ),
                        );
                        continue;
                    }
                }
            }
            (None, None) => continue,
        };
        if let Some(first) = routed.get(&prefix).and_then(|&k| out.get(k)) {
            let line = cx.line(&first.1);
            cx.err_key(
                &kpath,
                format!("destination {prefix} is already routed at line {line}"),
            );
            continue;
        }
        routed.insert(prefix, out.len());
        out.push((Route { prefix, via, port }, kpath));
    }
    out.into_iter().map(|(r, _)| r).collect()
}

fn secs(cx: &mut Cx<'_>, path: &KeyPath, value: Option<u32>, default: Duration) -> Duration {
    match value {
        None => default,
        Some(0) => {
            cx.err(path, "expected at least 1 second");
            default
        }
        Some(s) => Duration::from_secs(u64::from(s)),
    }
}

/// `dup`: the index of an earlier director of the same name.
fn director(cx: &mut Cx<'_>, i: usize, d: &RawDirector, dup: Option<usize>) -> Director {
    let list = KeyPath::root().key("director");
    let name_ok = check_name(&d.name, MAX_NAME);
    let path = match (&name_ok, dup) {
        (Ok(()), None) => list.named(i, &d.name),
        _ => list.index(i),
    };
    match name_ok {
        Err(e) => cx.err(&path.key("name"), e),
        Ok(()) => {
            if let Some(j) = dup {
                let line = cx.line(&list.index(j).key("name"));
                cx.err(
                    &path.key("name"),
                    format!("director `{}` is already defined at line {line}", d.name),
                );
            }
        }
    }

    let virtual_service = d.virtual_service.as_ref().and_then(|v| {
        let vpath = path.key("virtual");
        if v.port == Some(0) {
            cx.err(&vpath.key("port"), "expected a port 1..=65535");
        }
        match v.address.parse::<IpAddr>() {
            Ok(address) => Some(VirtualService {
                address,
                port: v.port,
            }),
            Err(_) => {
                cx.err(
                    &vpath.key("address"),
                    format!("`{}` is not an IPv4 or IPv6 address", v.address),
                );
                None
            }
        }
    });

    let spath = path.key("servers");
    if d.servers.len() > MAX_SERVERS {
        cx.err(
            &spath,
            format!(
                "{} servers: a director has at most {MAX_SERVERS}",
                d.servers.len()
            ),
        );
    }
    if d.servers.is_empty() {
        cx.err(&spath, "expected at least one server");
    } else if d.servers.iter().all(|s| s.sorry) {
        cx.err(
            &spath,
            "expected at least one server that is not a sorry server",
        );
    }
    let mut family = virtual_service.map(|v| {
        (
            super::family_of(v.address),
            path.key("virtual").key("address"),
        )
    });
    let mut servers: Vec<Server> = Vec::new();
    // first index by name, and by (address, port) into `servers`
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut endpoints: HashMap<(IpAddr, Option<u16>), usize> = HashMap::new();
    for (j, s) in d.servers.iter().enumerate() {
        let p = spath.index(j);
        match check_name(&s.name, MAX_NAME) {
            Err(e) => cx.err(&p.key("name"), e),
            Ok(()) => {
                if let Some(&k) = names.get(s.name.as_str()).filter(|&&k| k < j) {
                    let line = cx.line(&spath.index(k).key("name"));
                    cx.err(
                        &p.key("name"),
                        format!("server `{}` is already defined at line {line}", s.name),
                    );
                }
            }
        }
        names.entry(s.name.as_str()).or_insert(j);
        let address = match s.address.parse::<IpAddr>() {
            Ok(a) => a,
            Err(_) => {
                cx.err(
                    &p.key("address"),
                    format!("`{}` is not an IPv4 or IPv6 address", s.address),
                );
                continue;
            }
        };
        match &family {
            Some((f, first)) if *f != super::family_of(address) => {
                let line = cx.line(first);
                cx.err(
                    &p.key("address"),
                    format!("{address} is not of the family of the address at line {line}: a director serves one family"),
                );
            }
            Some(_) => {}
            None => family = Some((super::family_of(address), p.key("address"))),
        }
        if let Some(port) = s.port {
            if d.mode != Mode::Nat {
                cx.err(
                    &p.key("port"),
                    "a server port rewrites the destination port, which only mode = \"nat\" does: \
                     remove it or use nat",
                );
            } else if port == 0 {
                cx.err(&p.key("port"), "expected a port 1..=65535");
            }
        }
        if s.weight > 65535 {
            cx.err(
                &p.key("weight"),
                format!(
                    "weight {} is out of range: expected 0..=65535 (0 drains)",
                    s.weight
                ),
            );
        }
        if let Some(&k) = endpoints.get(&(address, s.port)) {
            let line = cx.line(&spath.index(k).key("address"));
            cx.err(
                &p.key("address"),
                format!("server {address} is already listed at line {line}"),
            );
        }
        endpoints.entry((address, s.port)).or_insert(servers.len());
        servers.push(Server {
            name: s.name.clone(),
            address,
            port: s.port,
            weight: s.weight,
            sorry: s.sorry,
        });
    }
    let family = family.map(|(f, _)| f);

    let persistence = d.persistence.as_ref().map(|p| {
        let ppath = path.key("persistence");
        let timeout = secs(
            cx,
            &ppath.key("timeout"),
            Some(p.timeout),
            Duration::from_secs(300),
        );
        let full = if family == Some(crate::flows::Family::V6) {
            128
        } else {
            32
        };
        let netmask_len = match p.netmask.as_deref() {
            None => full,
            Some(m) => match parse_netmask(m) {
                Ok((f, len)) if Some(f) == family || family.is_none() => len,
                Ok(_) => {
                    cx.err(
                        &ppath.key("netmask"),
                        format!("netmask {m} is not of the servers' family"),
                    );
                    full
                }
                Err(e) => {
                    cx.err(&ppath.key("netmask"), e);
                    full
                }
            },
        };
        Persistence {
            timeout,
            netmask_len,
        }
    });

    let timeouts = match &d.timeouts {
        None => Timeouts::default(),
        Some(t) => {
            let tpath = path.key("timeouts");
            let def = Timeouts::default();
            Timeouts {
                tcp: secs(cx, &tpath.key("tcp"), t.tcp, def.tcp),
                tcp_fin: secs(cx, &tpath.key("tcp_fin"), t.tcp_fin, def.tcp_fin),
                udp: secs(cx, &tpath.key("udp"), t.udp, def.udp),
            }
        }
    };

    let max_connections = match d.max_connections {
        None => DEFAULT_MAX_CONNECTIONS,
        Some(n) if (1..=u64::from(MAX_CONNECTIONS)).contains(&n) => n as u32,
        Some(n) => {
            cx.err(
                &path.key("max_connections"),
                format!("{n} connections is out of range: expected 1..={MAX_CONNECTIONS}"),
            );
            DEFAULT_MAX_CONNECTIONS
        }
    };
    let check = check(cx, &path, d, virtual_service);
    Director {
        name: d.name.clone(),
        scheduler: d.scheduler,
        mode: d.mode,
        persistence,
        check,
        timeouts,
        max_connections,
        virtual_service,
        servers,
    }
}

/// A director's connection limit when the config gives none.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 1 << 16;
/// Servers of one director at most (the dataplane numbers them with a `u16` and keeps one
/// value for "none"; the Maglev table, 65,537 entries, must be larger).
pub const MAX_SERVERS: usize = 65_534;
/// Directors at most (a flow's director is a `u16` index with one value for "none").
pub const MAX_DIRECTORS: usize = 65_534;
/// The largest connection limit (about 1.7 GB of tables).
pub const MAX_CONNECTIONS: u32 = 1 << 24;

/// A contiguous netmask, IPv4 (`255.255.255.0`) or IPv6 (`ffff:ffff::`): its family and length.
fn parse_netmask(m: &str) -> Result<(crate::flows::Family, u8), String> {
    let bad = || format!("`{m}` is not a contiguous netmask like \"255.255.255.0\"");
    match m.parse::<IpAddr>().map_err(|_| bad())? {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let len = bits.leading_ones();
            if bits.checked_shl(len).unwrap_or(0) != 0 {
                return Err(bad());
            }
            Ok((
                crate::flows::Family::V4,
                u8::try_from(len).map_err(|_| bad())?,
            ))
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let len = bits.leading_ones();
            if bits.checked_shl(len).unwrap_or(0) != 0 {
                return Err(bad());
            }
            Ok((
                crate::flows::Family::V6,
                u8::try_from(len).map_err(|_| bad())?,
            ))
        }
    }
}

fn check(cx: &mut Cx<'_>, path: &KeyPath, d: &RawDirector, vs: Option<VirtualService>) -> Check {
    let Some(c) = &d.check else {
        return Check {
            kind: CheckKind::None,
            interval: Duration::from_millis(2000),
            timeout: Duration::from_millis(1000),
            rise: 2,
            fall: 3,
            port: None,
        };
    };
    let cpath = path.key("check");
    let ms = |cx: &mut Cx<'_>, key: &str, v: Option<u32>, default: u64| match v {
        None => Duration::from_millis(default),
        Some(0) => {
            cx.err(&cpath.key(key), "expected at least 1 millisecond");
            Duration::from_millis(default)
        }
        Some(v) => Duration::from_millis(u64::from(v)),
    };
    let interval = ms(cx, "interval_ms", c.interval_ms, 2000);
    let timeout = ms(cx, "timeout_ms", c.timeout_ms, 1000);
    if timeout > interval {
        cx.err(
            &cpath.key("timeout_ms"),
            format!(
                "timeout {} ms is longer than the interval {} ms",
                timeout.as_millis(),
                interval.as_millis()
            ),
        );
    }
    let count = |cx: &mut Cx<'_>, key: &str, v: Option<u32>, default: u32| match v {
        None => default,
        Some(0) => {
            cx.err(&cpath.key(key), "expected at least 1");
            default
        }
        Some(v) => v,
    };
    let rise = count(cx, "rise", c.rise, 2);
    let fall = count(cx, "fall", c.fall, 3);
    let http = c.kind == CheckKindName::Http;
    if !http {
        if c.uri.is_some() {
            cx.err_key(&cpath.key("uri"), "`uri` is only for kind = \"http\"");
        }
        if c.status.is_some() {
            cx.err_key(&cpath.key("status"), "`status` is only for kind = \"http\"");
        }
    }
    let uses_port = matches!(c.kind, CheckKindName::Tcp | CheckKindName::Http);
    match c.port {
        Some(_) if !uses_port => {
            cx.err_key(
                &cpath.key("port"),
                "`port` is only for kind = \"tcp\" or \"http\"",
            );
        }
        Some(0) => cx.err(&cpath.key("port"), "expected a port 1..=65535"),
        Some(_) => {}
        None if uses_port => {
            let every_server = !d.servers.is_empty() && d.servers.iter().all(|s| s.port.is_some());
            if !every_server && vs.and_then(|v| v.port).is_none() {
                cx.err(
                    &cpath.key("kind"),
                    "this check needs a port: set check.port, virtual.port, or every server's port",
                );
            }
        }
        None => {}
    }
    let kind = match c.kind {
        CheckKindName::None => CheckKind::None,
        CheckKindName::Tcp => CheckKind::Tcp,
        CheckKindName::Icmp => CheckKind::Icmp,
        CheckKindName::Http => {
            let uri = c.uri.clone().unwrap_or_else(|| "/".to_string());
            if !uri.starts_with('/') {
                cx.err(
                    &cpath.key("uri"),
                    format!("`{uri}` is not a path: expected it to start with `/`"),
                );
            }
            let status = c.status.unwrap_or(200);
            if !(100..=599).contains(&status) {
                cx.err(
                    &cpath.key("status"),
                    format!("status {status} is out of range: expected 100..=599"),
                );
            }
            CheckKind::Http { uri, status }
        }
    };
    Check {
        kind,
        interval,
        timeout,
        rise,
        fall,
        port: c.port,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_list() {
        assert_eq!(parse_cpu_list("0-1\n"), Some(2));
        assert_eq!(parse_cpu_list("0-3,8-11"), Some(12));
        assert_eq!(parse_cpu_list("0"), Some(1));
        assert_eq!(parse_cpu_list("x"), None);
    }

    #[test]
    fn workers() {
        assert!(check_workers(&[0, 1], 2).is_empty());
        let p = check_workers(&[1, 2, 1], 2);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].0, 1);
        assert!(p[0].1.contains("does not exist"), "{}", p[0].1);
        assert_eq!(p[1].0, 2);
        assert!(p[1].1.contains("twice"));
    }

    #[test]
    fn devices() {
        assert_eq!(
            parse_device("0000:3B:00.0"),
            Ok(Device::Pci("0000:3b:00.0".into()))
        );
        assert_eq!(
            parse_device("3b:00.1"),
            Ok(Device::Pci("0000:3b:00.1".into()))
        );
        assert_eq!(
            parse_device("net_af_packet0,iface=fg-eth0"),
            Ok(Device::Vdev {
                name: "net_af_packet0".into(),
                args: "iface=fg-eth0".into()
            })
        );
        assert!(parse_device("eth0").is_err());
        assert!(parse_device("0000:3b:00.8").is_err());
        assert!(parse_device("net_").is_err());
    }

    #[test]
    fn addresses_and_destinations() {
        let a = parse_interface_address("192.168.0.1/24").expect("addr");
        assert_eq!(a.to_string(), "192.168.0.1/24");
        assert_eq!(a.subnet().to_string(), "192.168.0.0/24");
        assert!(parse_interface_address("192.168.0.1").is_err());
        assert!(parse_interface_address("192.168.0.1/33").is_err());
        assert!(parse_interface_address("2001:db8::1/64").is_ok());
        assert!(parse_destination("10.0.0.0/8").is_ok());
        assert!(parse_destination("10.1.0.0/8")
            .expect_err("host bits")
            .contains("10.0.0.0/8"));
        assert_eq!(parse_destination("10.0.0.1").expect("host").len(), 32);
    }

    #[test]
    fn macs_and_netmasks() {
        assert_eq!(
            parse_mac("02:00:00:00:00:01"),
            Ok(MacAddr([2, 0, 0, 0, 0, 1]))
        );
        assert!(parse_mac("01:00:00:00:00:01").is_err());
        assert!(parse_mac("02:00:00:00:00").is_err());
        assert_eq!(
            parse_netmask("255.255.255.0"),
            Ok((crate::flows::Family::V4, 24))
        );
        assert_eq!(
            parse_netmask("255.255.255.255"),
            Ok((crate::flows::Family::V4, 32))
        );
        assert_eq!(parse_netmask("0.0.0.0"), Ok((crate::flows::Family::V4, 0)));
        assert!(parse_netmask("255.0.255.0").is_err());
        assert_eq!(
            parse_netmask("ffff:ffff::"),
            Ok((crate::flows::Family::V6, 32))
        );
    }
}
