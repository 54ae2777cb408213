//! A packet as the flows language sees it: what `holds` reads, nothing more.
//!
//! This is the input of the reference interpreter and of `flowgate classify`'s packet lines;
//! the dataplane builds the same facts from real headers.

use std::net::IpAddr;

use super::ast::{Family, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};

/// What the L4 header of a packet gave the classifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum L4 {
    /// TCP or UDP ports.
    Ports { sport: u16, dport: u16 },
    /// ICMP (ICMPv6 in IPv6) type.
    Icmp { icmptype: u8 },
    /// A non-first fragment: no L4 header at all.
    Fragment,
    /// Another protocol, or no header the classifier reads.
    Other,
}

/// The facts of one packet.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Packet {
    /// Input port (flows) or output port chosen by routing (outflows).
    pub iface: String,
    /// IP protocol number as carried by the packet.
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub l4: L4,
}

impl Packet {
    pub fn family(&self) -> Family {
        match self.src {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    pub fn is_fragment(&self) -> bool {
        self.l4 == L4::Fragment
    }

    /// TCP or UDP ports, if the packet carries them (not a non-first fragment).
    pub fn ports(&self) -> Option<(u16, u16)> {
        match self.l4 {
            L4::Ports { sport, dport } if self.proto == PROTO_TCP || self.proto == PROTO_UDP => {
                Some((sport, dport))
            }
            _ => None,
        }
    }

    /// The ICMP type, if the packet is ICMP of its family and not a non-first fragment.
    pub fn icmp_type(&self) -> Option<u8> {
        let icmp = match self.family() {
            Family::V4 => PROTO_ICMP,
            Family::V6 => PROTO_ICMPV6,
        };
        match self.l4 {
            L4::Icmp { icmptype } if self.proto == icmp => Some(icmptype),
            _ => None,
        }
    }
}
