//! The L4 director: an in-process, IPVS-like load balancer that `director` flows hand packets to.
//!
//! Its parts, from the control side to the packet:
//! - [`state`]: the immutable per-director snapshot ([`DirectorState`]) and the set of them
//!   ([`DirectorSet`]), rebuilt off the hot path when a server's weight or health changes and
//!   published by the control side with `ArcSwap`.
//! - [`schedule`]: the IPVS schedulers (`rr wrr lc wlc sh dh sed nq mh`); [`maglev`] builds the
//!   `mh` table.
//! - [`conntrack`]: a worker's bounded connection table (forward and NAT reply keys, TCP
//!   states and timeouts, persistence templates).
//! - [`rewrite`]: NAT, gateway (direct routing) and tunnel (IP-in-IP) on frames in place.
//! - [`icmp`]: ICMP errors about NAT connections, translated for the other side.
//! - [`counters`]: per-worker, per-director and per-server counters.
//! - [`worker`]: [`DirectorWorker`], what a worker owns per director and calls per packet.
//! - [`steer`]: which worker owns a connection (client-endpoint RSS), so NAT replies find it.
//! - [`sync`]: the workers' side of the connection sync between appliances (export, apply).
//!
//! Each worker owns its tables outright (no locks). NAT replies reach the worker that owns
//! their connection because ownership follows the client endpoint ([`steer`]);
//! `docs/director.md` explains how and what it needs from the NIC.

pub mod conntrack;
pub mod counters;
pub mod hash;
pub mod health;
pub mod icmp;
pub mod maglev;
pub mod rewrite;
pub mod schedule;
pub mod shared;
pub mod state;
pub mod steer;
pub mod sync;
pub mod worker;

pub use counters::{DirectorCounters, DropReason, ServerCounters};
pub use shared::SharedDirectors;
pub use state::{DirectorError, DirectorOptions, DirectorSet, DirectorState, ServerState};
pub use worker::{DirectorWorker, Prefetch, Verdict, WorkerOptions};

#[cfg(test)]
mod burst_tests;
#[cfg(test)]
mod sync_tests;
#[cfg(test)]
pub(crate) mod tests;
