//! flowgate-dataplane: the packet path.
//!
//! - [`wire`]: reading frames down to the classifier's facts (no panics, no allocation).
//! - [`build`]: crafting real frames for tests, benchmark pcaps and fixtures.
#![deny(unsafe_code)]

pub mod build;
pub mod wire;
