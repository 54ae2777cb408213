//! flowgate-dataplane: the packet path.
//!
//! - [`wire`]: reading frames down to the classifier's facts (no panics, no allocation).
//! - [`build`]: crafting real frames for tests, benchmark pcaps and fixtures.
//! - [`route`]: routing tables (LPM), forwarding rewrite, neighbour resolution.
#![deny(unsafe_code)]

pub mod build;
pub mod route;
pub mod wire;
