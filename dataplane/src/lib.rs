//! flowgate-dataplane: the packet path.
//!
//! - [`classify`]: the compiled flows classifier (and the ClassBench benchmark of it).
#![deny(unsafe_code)]

pub mod classify;
