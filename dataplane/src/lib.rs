//! flowgate-dataplane: the packet path.
#![deny(unsafe_code)]
