//! Routing: what a `table T` verdict does to a packet, and the main table for everything the
//! dataplane itself sends out (`docs/routing.md`).
//!
//! - [`lpm`]: longest-prefix-match structures (DIR-24-8 / DIR-16-8-8 for IPv4, a 16-8-…-8 trie
//!   for IPv6), immutable after build.
//! - [`table`]: [`Routes`], every routing table of an appliance config compiled, with the
//!   policy-routing fallback to the main table.
//! - [`forward`](mod@forward): the rewrite of a routed frame (TTL / hop limit, checksum, MACs).
//! - [`neigh`]: the neighbour table (ARP / ND resolution, hold queue) and ARP/ND frames.
//! - [`synth`]: synthetic BGP-shaped tables and lookup addresses for benchmarks.

pub mod forward;
pub mod lpm;
pub mod neigh;
pub mod synth;
pub mod table;

pub use forward::{forward, NotForwarded};
pub use lpm::{Lpm4, Lpm6, NextHopId, Stride4};
pub use neigh::{Arp, Nd, NeighbourConfig, NeighbourTable, Resolution, SharedNeighbours};
pub use table::{NextHop, RouteMatch, Routes};
