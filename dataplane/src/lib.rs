//! flowgate-dataplane: the packet path.
//!
//! - [`wire`]: header layouts: typed views per protocol, the checksum, and the parser that reads
//!   frames down to the classifier's facts (no panics, no allocation).
//! - [`classify`]: the compiled flows classifier (and the ClassBench benchmark of it).
//! - [`ruleset`]: the compiled flows and outflows the workers run, published as a whole.
//! - [`director`]: the L4 load balancer (IPVS-like schedulers, connection tracking, NAT,
//!   direct routing and IP-in-IP).
//! - [`route`]: routing tables (LPM), forwarding rewrite, neighbour resolution.
//! - [`worker`]: the poll-mode worker, a staged pipeline over per-packet metadata (receive, parse,
//!   NAT replies, decide, director, forward, outflows, neighbours, transmit).
//! - [`handoff`]: NAT director packets handed to the worker owning their connection.
//! - [`plant`]: bringing ports and TAPs up and down.
//! - [`runtime_files`]: the EAL's runtime directory, removed at exit.
//! - [`counters`]: per-worker counters (single writer) and their sums.
//! - [`build`]: crafting real frames for tests, benchmark pcaps and fixtures.
//! - [`dpdk`]: the thin safe wrapper over the DPDK binding (the only module with `unsafe`).
#![deny(unsafe_code)]

pub mod build;
pub mod classify;
pub mod counters;
pub mod director;
#[allow(unsafe_code)]
pub mod dpdk;
pub mod handoff;
pub mod plant;
pub mod route;
pub mod ruleset;
pub mod runtime_files;
pub mod wire;
pub mod worker;
