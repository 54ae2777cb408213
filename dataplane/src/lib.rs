//! flowgate-dataplane: the packet path.
//!
//! - [`wire`]: reading frames down to the classifier's facts (no panics, no allocation).
//! - [`classify`]: the compiled flows classifier (and the ClassBench benchmark of it).
//! - [`build`]: crafting real frames for tests, benchmark pcaps and fixtures.
//! - [`dpdk`]: the thin safe wrapper over the DPDK binding (the only module with `unsafe`).
#![deny(unsafe_code)]

pub mod build;
pub mod classify;
#[allow(unsafe_code)]
pub mod dpdk;
pub mod wire;
