//! The classifier's input: a compact, copyable packet key, and its engine lanes.

use std::net::IpAddr;

use flowgate_config::flows::L4;

use super::engine::LANES;
use crate::wire::{IpFacts, PlainIpv4};

/// Engine lane numbers: which key field each lane holds.
pub mod lane {
    /// Interface id (see `Classifier::iface_id`).
    pub const IFACE: usize = 0;
    /// IP protocol number.
    pub const PROTO: usize = 1;
    /// [`super::L4Kind`] as a number.
    pub const KIND: usize = 2;
    pub const SRC: usize = 3;
    pub const DST: usize = 4;
    /// Source port (0 unless the packet carries ports).
    pub const SPORT: usize = 5;
    /// Destination port when the packet carries ports, ICMP type when it is ICMP.
    pub const DPORT: usize = 6;
}

/// What the L4 header gives the classifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum L4Kind {
    /// TCP or UDP with its ports (not a non-first fragment).
    Ports = 0,
    /// ICMP of the packet's family (ICMPv6 in IPv6) with its type, not a non-first fragment.
    Icmp = 1,
    /// Anything else: non-first fragments, other protocols.
    #[default]
    None = 2,
}

/// The facts of one packet, as the compiled classifier reads them.
///
/// Addresses are stored in `u128`; an IPv4 address is its `u32` value (most significant byte
/// = first octet), zero-extended. `sport`/`dport` matter only when `l4` is `Ports`, `icmptype`
/// only when it is `Icmp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Key {
    pub src: u128,
    pub dst: u128,
    /// Interface id from the classifier's table (`Classifier::iface_id`).
    pub iface: u16,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub icmptype: u8,
    /// IPv6 packet (else IPv4).
    pub v6: bool,
    pub l4: L4Kind,
}

/// A packet's L4 facts as the key holds them: kind, ports (0 unless it has ports), ICMP type
/// (0 unless ICMP).
#[inline(always)]
fn l4_fields(l4: L4) -> (L4Kind, u16, u16, u8) {
    match l4 {
        L4::Ports { sport, dport } => (L4Kind::Ports, sport, dport, 0),
        L4::Icmp { icmptype } => (L4Kind::Icmp, 0, 0, icmptype),
        L4::Fragment | L4::Other => (L4Kind::None, 0, 0, 0),
    }
}

impl Key {
    /// The key of a parsed IP packet arriving on (or leaving by) interface `iface`.
    #[inline]
    pub fn from_facts(f: &IpFacts, iface: u16) -> Key {
        let (l4, sport, dport, icmptype) = l4_fields(f.l4);
        let (src, dst, v6) = match (f.src, f.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                (u128::from(u32::from(s)), u128::from(u32::from(d)), false)
            }
            (s, d) => (addr_u128(s), addr_u128(d), true),
        };
        Key {
            src,
            dst,
            iface,
            sport,
            dport,
            proto: f.proto,
            icmptype,
            v6,
            l4,
        }
    }

    /// The key of a plain IPv4 packet ([`crate::wire::plain_ipv4`]): as [`Key::from_facts`]
    /// of its facts, with no address conversion.
    #[inline(always)]
    pub fn plain_v4(p: &PlainIpv4, iface: u16) -> Key {
        let (l4, sport, dport, icmptype) = l4_fields(p.l4);
        Key {
            src: u128::from(p.src),
            dst: u128::from(p.dst),
            iface,
            sport,
            dport,
            proto: p.proto,
            icmptype,
            v6: false,
            l4,
        }
    }

    /// An IPv4 key.
    #[allow(clippy::too_many_arguments)]
    pub fn v4(
        iface: u16,
        proto: u8,
        l4: L4Kind,
        src: u32,
        dst: u32,
        sport: u16,
        dport: u16,
        icmptype: u8,
    ) -> Key {
        Key {
            src: u128::from(src),
            dst: u128::from(dst),
            iface,
            sport,
            dport,
            proto,
            icmptype,
            v6: false,
            l4,
        }
    }

    /// A TCP/UDP-style IPv4 key with ports, as ClassBench traces give them (any protocol).
    pub fn v4_ports(proto: u8, src: u32, dst: u32, sport: u16, dport: u16) -> Key {
        Key::v4(0, proto, L4Kind::Ports, src, dst, sport, dport, 0)
    }

    /// The value of the destination-port lane: dport for ports, type for ICMP.
    #[inline(always)]
    fn l4_lane(&self) -> u16 {
        if self.l4 == L4Kind::Icmp {
            u16::from(self.icmptype)
        } else {
            self.dport
        }
    }

    /// The lanes of the IPv4 engine.
    #[inline(always)]
    pub(crate) fn lanes_v4(&self) -> [u32; LANES] {
        [
            u32::from(self.iface),
            u32::from(self.proto),
            self.l4 as u32,
            self.src as u32,
            self.dst as u32,
            u32::from(self.sport),
            u32::from(self.l4_lane()),
            0,
        ]
    }

    /// The lanes of the IPv6 engine.
    #[inline]
    pub(crate) fn lanes_v6(&self) -> [u128; LANES] {
        [
            u128::from(self.iface),
            u128::from(self.proto),
            self.l4 as u128,
            self.src,
            self.dst,
            u128::from(self.sport),
            u128::from(self.l4_lane()),
            0,
        ]
    }
}

/// An address in key form: an IPv4 address is its `u32` value, zero-extended.
#[inline]
pub fn addr_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::{frame, FrameSpec};
    use crate::wire::{self, Frame};
    use flowgate_config::flows::{parse, parse_packet_line, Action};

    /// The key the worker builds from real bytes equals the key `classify` builds from the
    /// equivalent packet line: the dataplane and `flowgate classify` decide alike.
    #[test]
    fn key_from_frame_equals_key_from_packet_line() {
        let file = parse("flow a permit match iface eth0 proto tcp dstport 22")
            .expect("ok")
            .file;
        let c = crate::classify::Classifier::new(file.flows(), &Action::Deny).expect("compiles");
        let cases = [
            (
                "10.0.0.1",
                "10.0.0.2",
                6,
                1234,
                22,
                "proto=tcp sport=1234 dport=22",
                false,
            ),
            (
                "10.0.0.1",
                "10.0.0.2",
                17,
                53,
                53,
                "proto=udp sport=53 dport=53",
                false,
            ),
            (
                "10.0.0.1",
                "10.0.0.2",
                1,
                8,
                0,
                "proto=icmp icmptype=8",
                false,
            ),
            ("10.0.0.1", "10.0.0.2", 47, 0, 0, "proto=47", false),
            ("10.0.0.1", "10.0.0.2", 6, 1, 2, "proto=tcp frag=1", true),
            (
                "2001:db8::1",
                "2001:db8::2",
                58,
                128,
                0,
                "proto=icmp icmptype=128",
                false,
            ),
            (
                "2001:db8::1",
                "2001:db8::2",
                6,
                9,
                22,
                "proto=tcp sport=9 dport=22",
                false,
            ),
            (
                "2001:db8::1",
                "2001:db8::2",
                17,
                9,
                22,
                "proto=udp frag=1",
                true,
            ),
        ];
        for (s, d, proto, sp, dp, line, frag) in cases {
            let mut spec = FrameSpec::new(
                s.parse().expect("addr"),
                d.parse().expect("addr"),
                proto,
                sp,
                dp,
            );
            spec.non_first_fragment = frag;
            let Frame::Ip(facts) = wire::parse(&frame(&spec)) else {
                panic!("{line}: not IP");
            };
            let pkt = parse_packet_line(&format!("iface=eth0 src={s} dst={d} {line}"))
                .expect("packet line");
            assert_eq!(
                Key::from_facts(&facts, c.iface_id("eth0")),
                c.key(&pkt),
                "{line}"
            );
        }
    }
}
