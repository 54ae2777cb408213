//! flowgate-dataplane: the packet path.
//!
//! - [`wire`]: reading frames down to the classifier's facts (no panics, no allocation).
//! - [`build`]: crafting real frames for tests, benchmark pcaps and fixtures.
//! - [`director`]: the L4 load balancer (IPVS-like schedulers, connection tracking, NAT,
//!   direct routing and IP-in-IP).
#![deny(unsafe_code)]

pub mod build;
pub mod director;
pub mod wire;
