//! The appliance TOML as serde reads it: the file's shape, before validation.
//!
//! Every table refuses unknown keys. Values that need checks beyond their TOML type (addresses,
//! prefixes, names) stay strings here, so validation can report all of them at once with their
//! key paths.

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::fmt;

use super::{CheckKindName, DefaultPolicy, LogLevel, Mode, Scheduler};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAppliance {
    pub flows: String,
    #[serde(default)]
    pub dataplane: RawDataplane,
    #[serde(default)]
    pub control: RawControl,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub port: Vec<RawPort>,
    #[serde(default)]
    pub routes: RawRoutes,
    #[serde(default)]
    pub table: Vec<RawTable>,
    #[serde(default)]
    pub director: Vec<RawDirector>,
    #[serde(default)]
    pub sync: Option<RawSync>,
}

/// `[sync]`: connection sync between appliances.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSync {
    pub listen: String,
    #[serde(default)]
    pub peers: Vec<String>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub interface: Option<String>,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub key_file: Option<String>,
    #[serde(default)]
    pub mtu: Option<u32>,
    #[serde(default)]
    pub interval_ms: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDataplane {
    #[serde(default = "default_workers")]
    pub workers: Vec<u32>,
    #[serde(default)]
    pub eal: Vec<String>,
    #[serde(default = "default_burst")]
    pub burst: u32,
    #[serde(default)]
    pub default_flow: DefaultPolicy,
    #[serde(default)]
    pub default_outflow: DefaultPolicy,
    #[serde(default)]
    pub mbufs: Option<u64>,
}

impl Default for RawDataplane {
    fn default() -> Self {
        RawDataplane {
            workers: default_workers(),
            eal: Vec::new(),
            burst: default_burst(),
            default_flow: DefaultPolicy::default(),
            default_outflow: DefaultPolicy::default(),
            mbufs: None,
        }
    }
}

fn default_workers() -> Vec<u32> {
    vec![1]
}

fn default_burst() -> u32 {
    32
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawControl {
    #[serde(default = "default_socket")]
    pub socket: String,
    #[serde(default)]
    pub metrics: Option<String>,
}

impl Default for RawControl {
    fn default() -> Self {
        RawControl {
            socket: default_socket(),
            metrics: None,
        }
    }
}

fn default_socket() -> String {
    super::DEFAULT_CONTROL_SOCKET.to_string()
}

/// `[log]`: levels of flowgate's own log and of DPDK's, routed through it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLog {
    #[serde(default)]
    pub level: Option<LogLevel>,
    #[serde(default)]
    pub dpdk: Option<LogLevel>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPort {
    pub name: String,
    pub device: String,
    #[serde(default = "one_u16")]
    pub rx_queues: u16,
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default = "yes")]
    pub kernel: bool,
    #[serde(default)]
    pub mac: Option<String>,
    #[serde(default)]
    pub peer: Option<String>,
    #[serde(default)]
    pub neighbours: RawNeighbours,
}

/// A port's static neighbours, in file order: address key to MAC string.
#[derive(Debug, Default)]
pub(crate) struct RawNeighbours(pub Vec<(String, String)>);

impl<'de> Deserialize<'de> for RawNeighbours {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NeighboursVisitor;
        impl<'de> Visitor<'de> for NeighboursVisitor {
            type Value = RawNeighbours;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table of static neighbours: \"address\" = \"MAC\"")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawNeighbours, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    entries.push((key, map.next_value::<String>()?));
                }
                Ok(RawNeighbours(entries))
            }
        }
        deserializer.deserialize_map(NeighboursVisitor)
    }
}

fn one_u16() -> u16 {
    1
}

fn one_u32() -> u32 {
    1
}

fn yes() -> bool {
    true
}

/// A routing table's routes, in file order: destination key to route value.
#[derive(Debug, Default)]
pub(crate) struct RawRoutes(pub Vec<(String, RawRoute)>);

impl<'de> Deserialize<'de> for RawRoutes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RoutesVisitor;
        impl<'de> Visitor<'de> for RoutesVisitor {
            type Value = RawRoutes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table of routes: destination = \"gateway\" or { via, port }")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawRoutes, A::Error> {
                let mut routes = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    let value = map.next_value::<RawRoute>()?;
                    routes.push((key, value));
                }
                Ok(RawRoutes(routes))
            }
        }
        deserializer.deserialize_map(RoutesVisitor)
    }
}

/// One route: a gateway string, or `{ via = "...", port = "..." }`.
#[derive(Debug, Default)]
pub(crate) struct RawRoute {
    pub via: Option<String>,
    pub port: Option<String>,
    /// Written as a table (so `via` has its own key path).
    pub inline_table: bool,
}

impl<'de> Deserialize<'de> for RawRoute {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RouteVisitor;
        impl<'de> Visitor<'de> for RouteVisitor {
            type Value = RawRoute;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a gateway address string or a table { via, port }")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RawRoute, E> {
                Ok(RawRoute {
                    via: Some(s.to_string()),
                    port: None,
                    inline_table: false,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawRoute, A::Error> {
                RawRouteTable::deserialize(de::value::MapAccessDeserializer::new(map)).map(|t| {
                    RawRoute {
                        via: t.via,
                        port: t.port,
                        inline_table: true,
                    }
                })
            }
        }
        deserializer.deserialize_any(RouteVisitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRouteTable {
    #[serde(default)]
    via: Option<String>,
    #[serde(default)]
    port: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTable {
    pub id: u32,
    #[serde(default)]
    pub routes: RawRoutes,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDirector {
    pub name: String,
    pub scheduler: Scheduler,
    pub mode: Mode,
    #[serde(default)]
    pub persistence: Option<RawPersistence>,
    #[serde(default)]
    pub check: Option<RawCheck>,
    #[serde(default)]
    pub timeouts: Option<RawTimeouts>,
    #[serde(default)]
    pub max_connections: Option<u64>,
    #[serde(default, rename = "virtual")]
    pub virtual_service: Option<RawVirtual>,
    pub servers: Vec<RawServer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPersistence {
    pub timeout: u32,
    #[serde(default)]
    pub netmask: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCheck {
    pub kind: CheckKindName,
    #[serde(default)]
    pub interval_ms: Option<u32>,
    #[serde(default)]
    pub timeout_ms: Option<u32>,
    #[serde(default)]
    pub rise: Option<u32>,
    #[serde(default)]
    pub fall: Option<u32>,
    #[serde(default)]
    pub uri: Option<String>,
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub port: Option<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTimeouts {
    #[serde(default)]
    pub tcp: Option<u32>,
    #[serde(default)]
    pub tcp_fin: Option<u32>,
    #[serde(default)]
    pub udp: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVirtual {
    pub address: String,
    #[serde(default)]
    pub port: Option<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    pub name: String,
    pub address: String,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default = "one_u32")]
    pub weight: u32,
    #[serde(default)]
    pub sorry: bool,
}
