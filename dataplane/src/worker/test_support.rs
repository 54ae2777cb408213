//! What the worker's tests share: addresses from text and the facts of a real frame.

use std::net::IpAddr;

use crate::wire::{self, Frame, IpFacts};

/// An address written in a test.
pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

/// The facts `wire::parse` reads from an IP frame (a test's frames are IP).
pub fn facts(f: &[u8]) -> IpFacts {
    match wire::parse(f) {
        Frame::Ip(facts) => facts,
        other => panic!("not IP: {other:?}"),
    }
}
