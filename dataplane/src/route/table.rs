//! [`Routes`]: every routing table of an appliance config, compiled into LPM structures, with the
//! lookup a `table T` verdict makes.
//!
//! - The main table ([`MAIN_TABLE`], 254) holds the connected prefix of every port address
//!   (on-link, out of that port), then `[routes]`. An explicit route for a connected prefix
//!   replaces the connected one.
//! - Each `[[table]]` holds its own routes only, as `ip route ... table N` does.
//! - Policy-routing fallback: when table T has no route for a destination, the lookup continues
//!   in the main table, as Linux does when the `ip rule` that selected T finds nothing and the
//!   next rule (`from all lookup main`) applies. [`RouteMatch::table`] says which table answered,
//!   so the caller can count fallbacks.
//!
//! Built off the data path (a control-thread job) and published with the rule set; immutable,
//! `Send + Sync`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use flowgate_config::appliance::{Appliance, InterfaceAddress, Route, RoutingTable, MAIN_TABLE};
use flowgate_config::flows::Prefix;

use super::lpm::{Lpm4, Lpm6, LpmError, NextHopId, Stride4};

/// IPv4 tables with more routes than this use DIR-24-8 (64 MiB); smaller ones DIR-16-8-8
/// (256 KiB and a little), whose lookups cost one more read only for prefixes longer than /16.
pub const DIR24_THRESHOLD: usize = 4096;

/// Where a routed packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NextHop {
    /// The output port (index in [`Appliance::ports`]).
    pub port: usize,
    /// The gateway; `None` when the destination is on-link (the packet's destination is the
    /// neighbour to resolve).
    pub gateway: Option<IpAddr>,
}

impl NextHop {
    /// The address whose MAC the frame must be sent to.
    #[inline]
    pub fn neighbour(&self, dst: IpAddr) -> IpAddr {
        self.gateway.unwrap_or(dst)
    }
}

/// The answer of [`Routes::lookup`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteMatch {
    pub hop: NextHop,
    /// The table that had the route: the one asked, or [`MAIN_TABLE`] after a fallback.
    pub table: u32,
}

impl RouteMatch {
    /// Whether the asked table had no route and the main table answered.
    pub fn fell_back(&self, asked: u32) -> bool {
        self.table != asked
    }
}

/// One compiled routing table.
#[derive(Debug, Clone)]
pub struct Table {
    pub id: u32,
    v4: Lpm4,
    v6: Lpm6,
    hops: Vec<NextHop>,
}

impl Table {
    fn build(id: u32, routes: &[Route]) -> Result<Table, LpmError> {
        let mut hops: Vec<NextHop> = Vec::new();
        let mut v4: Vec<(Ipv4Addr, u8, NextHopId)> = Vec::new();
        let mut v6: Vec<(Ipv6Addr, u8, NextHopId)> = Vec::new();
        for r in routes {
            let hop = NextHop {
                port: r.port,
                gateway: r.via,
            };
            let idx = match hops.iter().position(|h| *h == hop) {
                Some(i) => i,
                None => {
                    hops.push(hop);
                    hops.len() - 1
                }
            };
            let nh =
                NextHopId(u32::try_from(idx).map_err(|_| LpmError::NextHopTooLarge(u32::MAX))?);
            match r.prefix {
                Prefix::V4 { addr, len } => v4.push((addr, len, nh)),
                Prefix::V6 { addr, len } => v6.push((addr, len, nh)),
            }
        }
        let stride = if v4.len() > DIR24_THRESHOLD {
            Stride4::S24
        } else {
            Stride4::S16
        };
        Ok(Table {
            id,
            v4: Lpm4::build(stride, &v4)?,
            v6: Lpm6::build(&v6)?,
            hops,
        })
    }

    /// The next hop for `dst` in this table alone.
    #[inline]
    pub fn lookup(&self, dst: IpAddr) -> Option<NextHop> {
        let id = match dst {
            IpAddr::V4(a) => self.v4.lookup(a),
            IpAddr::V6(a) => self.v6.lookup(a),
        }?;
        self.hops.get(id.0 as usize).copied()
    }

    /// Bytes held by the LPM structures.
    pub fn memory(&self) -> usize {
        self.v4.memory() + self.v6.memory()
    }
}

/// Every routing table of a config. Index 0 is the main table.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    tables: Vec<Table>,
    /// Each port's interface addresses (by port index): the source of the ARP requests and
    /// neighbour solicitations the dataplane sends for its next hops.
    addresses: Vec<Vec<InterfaceAddress>>,
}

/// The main table's routes: connected prefixes of the port addresses, then `[routes]`.
pub fn main_routes(appliance: &Appliance) -> Vec<Route> {
    let mut routes: Vec<Route> = Vec::new();
    for (port, p) in appliance.ports.iter().enumerate() {
        for a in &p.addresses {
            routes.push(Route {
                prefix: a.subnet(),
                via: None,
                port,
            });
        }
    }
    // Later routes win over earlier equal prefixes in the LPM build.
    routes.extend(appliance.main.routes.iter().cloned());
    routes
}

impl Routes {
    /// Compiles the main table and each `[[table]]` of `appliance`.
    pub fn build(appliance: &Appliance) -> Result<Routes, LpmError> {
        let mut tables = vec![Table::build(MAIN_TABLE, &main_routes(appliance))?];
        for t in &appliance.tables {
            let RoutingTable { id, routes } = t;
            tables.push(Table::build(*id, routes)?);
        }
        Ok(Routes {
            tables,
            addresses: appliance
                .ports
                .iter()
                .map(|p| p.addresses.clone())
                .collect(),
        })
    }

    /// No table at all: every lookup answers `None` (`flowgate classify`, tests).
    pub fn empty() -> Routes {
        Routes::default()
    }

    /// How many tables (the main one included); table indexes are `0..count()`.
    pub fn count(&self) -> usize {
        self.tables.len()
    }

    /// The index of table `id` (0 is the main table), for per-table counters.
    #[inline]
    pub fn index_of(&self, id: u32) -> Option<usize> {
        self.tables.iter().position(|t| t.id == id)
    }

    /// The id of every table, by index.
    pub fn ids(&self) -> Vec<u32> {
        self.tables.iter().map(|t| t.id).collect()
    }

    /// Whether `ip` is an address of the appliance (any port): Linux's `local` table.
    #[inline]
    pub fn is_local(&self, ip: IpAddr) -> bool {
        self.addresses.iter().flatten().any(|a| a.addr == ip)
    }

    /// Whether `ip` is one of port `port`'s addresses.
    pub fn owns(&self, port: usize, ip: IpAddr) -> bool {
        self.addresses
            .get(port)
            .is_some_and(|a| a.iter().any(|a| a.addr == ip))
    }

    /// The address port `port` speaks from to neighbour `target`: the port's address of the
    /// same family whose subnet holds `target`, else its first address of that family.
    pub fn source_for(&self, port: usize, target: IpAddr) -> Option<IpAddr> {
        let addrs = self.addresses.get(port)?;
        let same = |a: &&InterfaceAddress| a.addr.is_ipv4() == target.is_ipv4();
        addrs
            .iter()
            .filter(same)
            .find(|a| a.subnet().contains(target))
            .or_else(|| addrs.iter().find(same))
            .map(|a| a.addr)
    }

    /// The compiled table `id` ([`MAIN_TABLE`] or a `[[table]]` id).
    pub fn table(&self, id: u32) -> Option<&Table> {
        self.tables.iter().find(|t| t.id == id)
    }

    /// The main table.
    pub fn main(&self) -> Option<&Table> {
        self.tables.first()
    }

    /// The route for `dst` in table `table_id`; when that table has no route (or does not
    /// exist), in the main table. `None`: no route at all (drop and count "no route").
    #[inline]
    pub fn lookup(&self, table_id: u32, dst: IpAddr) -> Option<RouteMatch> {
        if table_id != MAIN_TABLE {
            if let Some(hop) = self.table(table_id).and_then(|t| t.lookup(dst)) {
                return Some(RouteMatch {
                    hop,
                    table: table_id,
                });
            }
        }
        let hop = self.main()?.lookup(dst)?;
        Some(RouteMatch {
            hop,
            table: MAIN_TABLE,
        })
    }

    /// Bytes held by all LPM structures.
    pub fn memory(&self) -> usize {
        self.tables.iter().map(Table::memory).sum()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
flows = "flows.conf"

[dataplane]
workers = [0]

[[port]]
name = "eth0"
device = "net_null0"
addresses = ["192.168.0.10/24", "2001:db8:0:1::10/64"]

[[port]]
name = "eth1"
device = "net_null1"
addresses = ["192.168.161.2/24", "10.9.0.1/16"]

[routes]
default = "192.168.0.1"
"10.0.0.0/8" = { via = "192.168.0.254" }
"10.9.0.0/16" = { via = "192.168.161.1" }
"::/0" = { via = "2001:db8:0:1::1" }

[[table]]
id = 200
routes = { default = "192.168.161.1", "172.16.0.0/12" = { port = "eth0" } }
"#;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn routes() -> Routes {
        let a = flowgate_config::appliance::parse_with_cpus("t.toml", CONFIG, 1).unwrap();
        Routes::build(&a).unwrap()
    }

    #[test]
    fn main_table_connected_and_static() {
        let r = routes();
        let cases = [
            // connected: on-link, out of the port holding the address
            ("192.168.0.77", 0, None),
            ("192.168.161.9", 1, None),
            ("2001:db8:0:1::99", 0, None),
            // static routes
            ("10.1.2.3", 0, Some("192.168.0.254")),
            ("8.8.8.8", 0, Some("192.168.0.1")),
            ("2606:4700::1", 0, Some("2001:db8:0:1::1")),
            // an explicit route replaces the connected prefix
            ("10.9.3.3", 1, Some("192.168.161.1")),
        ];
        for (dst, port, gw) in cases {
            let m = r.lookup(MAIN_TABLE, ip(dst)).unwrap();
            assert_eq!(m.table, MAIN_TABLE, "{dst}");
            assert_eq!(
                m.hop,
                NextHop {
                    port,
                    gateway: gw.map(ip)
                },
                "{dst}"
            );
        }
    }

    #[test]
    fn table_and_fallback_to_main() {
        let r = routes();
        let m = r.lookup(200, ip("8.8.8.8")).unwrap();
        assert_eq!(
            (m.table, m.hop.port, m.hop.gateway),
            (200, 1, Some(ip("192.168.161.1")))
        );
        assert!(!m.fell_back(200));
        let m = r.lookup(200, ip("172.20.0.1")).unwrap();
        assert_eq!((m.table, m.hop.port, m.hop.gateway), (200, 0, None));
        assert_eq!(m.hop.neighbour(ip("172.20.0.1")), ip("172.20.0.1"));
        // table 200 has no IPv6 route: main answers
        let m = r.lookup(200, ip("2001:db8:0:1::5")).unwrap();
        assert_eq!(m.table, MAIN_TABLE);
        assert!(m.fell_back(200));
        // unknown table: main
        assert_eq!(r.lookup(7, ip("8.8.8.8")).unwrap().table, MAIN_TABLE);
    }

    #[test]
    fn no_route_at_all() {
        let text = CONFIG
            .replace("default = \"192.168.0.1\"\n", "")
            .replace("\"::/0\" = { via = \"2001:db8:0:1::1\" }\n", "");
        let a = flowgate_config::appliance::parse_with_cpus("t.toml", &text, 1).unwrap();
        let r = Routes::build(&a).unwrap();
        assert_eq!(r.lookup(MAIN_TABLE, ip("8.8.8.8")), None);
        assert_eq!(r.lookup(MAIN_TABLE, ip("2606:4700::1")), None);
        assert!(r.lookup(200, ip("8.8.8.8")).is_some());
        assert!(r.memory() > 0);
        assert_eq!(Routes::empty().lookup(200, ip("8.8.8.8")), None);
    }

    #[test]
    fn indexes_and_sources() {
        let r = routes();
        assert_eq!(r.count(), 2);
        assert_eq!(r.ids(), vec![MAIN_TABLE, 200]);
        assert_eq!(r.index_of(MAIN_TABLE), Some(0));
        assert_eq!(r.index_of(200), Some(1));
        assert_eq!(r.index_of(7), None);
        // the address in the neighbour's subnet, else the first of the family
        assert_eq!(r.source_for(1, ip("10.9.8.7")), Some(ip("10.9.0.1")));
        assert_eq!(
            r.source_for(1, ip("192.168.161.1")),
            Some(ip("192.168.161.2"))
        );
        assert_eq!(r.source_for(1, ip("172.16.0.1")), Some(ip("192.168.161.2")));
        assert_eq!(
            r.source_for(0, ip("2001:db8:0:1::1")),
            Some(ip("2001:db8:0:1::10"))
        );
        assert_eq!(r.source_for(1, ip("2001:db8::1")), None);
        assert_eq!(r.source_for(5, ip("10.0.0.1")), None);
        assert!(r.owns(1, ip("10.9.0.1")));
        assert!(!r.owns(0, ip("10.9.0.1")));
        assert!(!r.owns(9, ip("10.9.0.1")));
        assert!(r.is_local(ip("10.9.0.1")) && r.is_local(ip("2001:db8:0:1::10")));
        assert!(!r.is_local(ip("10.9.0.2")));
    }
}
