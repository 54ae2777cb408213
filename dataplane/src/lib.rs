//! flowgate-dataplane: the packet path.
#![deny(unsafe_code)]

#[allow(unsafe_code)]
pub mod dpdk;
