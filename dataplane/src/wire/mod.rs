//! Wire formats: the only place that knows how headers are laid out.
//!
//! Following smoltcp's `wire`, each protocol has a typed view over a byte buffer,
//! `XxxPacket<T: AsRef<[u8]>>`: `new_checked` checks the lengths once, up front, then every
//! getter is infallible; setters exist when `T: AsMut<[u8]>`; field offsets live in the
//! protocol's `mod field`. `new_unchecked` skips the check for a buffer the caller sized
//! (its accessors then panic on a short buffer, so the packet path always checks first).
//!
//! - [`ethernet`]: Ethernet II and its 802.1Q / 802.1ad tags; [`ethertype`].
//! - [`ipv4`], [`ipv6`] (with the extension header walk), [`tcp`], [`udp`], [`ports`] (what
//!   TCP and UDP share, which NAT rewrites), [`icmpv4`], [`icmpv6`], [`arp`], [`ndisc`];
//!   protocol numbers in [`proto`].
//! - [`checksum`]: the Internet checksum, its RFC 1624 incremental update, pseudo-headers.
//! - [`parse`]: a frame read down to the facts the classifier needs ([`IpFacts`]) or the
//!   reason it is malformed ([`Malformed`]); [`parse_quote`] reads the packet an ICMP error
//!   quotes with the same code. Neither panics nor allocates, whatever the bytes.

use std::net::{IpAddr, Ipv4Addr};
use std::ops::{Range, RangeFrom};

use flowgate_config::flows::{Family, L4};

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmpv4;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod ndisc;
pub mod ports;
pub mod tcp;
pub mod udp;

pub use arp::ArpPacket;
pub use ethernet::{ethertype, EthernetFrame, VlanTag};
pub use icmpv4::Icmpv4Packet;
pub use icmpv6::Icmpv6Packet;
pub use ipv4::Ipv4Packet;
pub use ipv6::{Ipv6ExtHeader, Ipv6Packet};
pub use ndisc::{NdOption, NeighborPacket};
pub use ports::PortsHeader;
pub use tcp::TcpPacket;
pub use udp::UdpPacket;

/// A field's byte range in its header.
pub type Field = Range<usize>;
/// From a byte to the end of the buffer.
pub type Rest = RangeFrom<usize>;

#[inline]
pub(crate) fn get_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline]
pub(crate) fn set_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Why a view refused a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("{header}: {len} bytes where {need} are needed")]
    Truncated {
        header: &'static str,
        need: usize,
        len: usize,
    },
    #[error("{header}: {what}")]
    Malformed {
        header: &'static str,
        what: &'static str,
    },
}

impl WireError {
    #[inline]
    pub const fn truncated(header: &'static str, need: usize, len: usize) -> WireError {
        WireError::Truncated { header, need, len }
    }

    #[inline]
    pub const fn malformed(header: &'static str, what: &'static str) -> WireError {
        WireError::Malformed { header, what }
    }
}

/// IP protocol numbers (IPv4 protocol, IPv6 next header), defined once for the dataplane
/// (the four the flows language names come from `flowgate_config`).
pub mod proto {
    use flowgate_config::flows::Family;

    pub const HOP_BY_HOP: u8 = 0;
    pub const ICMP: u8 = flowgate_config::flows::PROTO_ICMP;
    /// IPv4 in IP (tunnel mode's inner IPv4 packet).
    pub const IPIP: u8 = 4;
    pub const TCP: u8 = flowgate_config::flows::PROTO_TCP;
    pub const UDP: u8 = flowgate_config::flows::PROTO_UDP;
    /// IPv6 in IP (tunnel mode's inner IPv6 packet).
    pub const IPV6: u8 = 41;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const ESP: u8 = 50;
    pub const AH: u8 = 51;
    pub const ICMPV6: u8 = flowgate_config::flows::PROTO_ICMPV6;
    pub const NO_NEXT_HEADER: u8 = 59;
    pub const DEST_OPTS: u8 = 60;
    pub const MOBILITY: u8 = 135;
    pub const HIP: u8 = 139;
    pub const SHIM6: u8 = 140;

    /// ICMP's number in a packet of `family` (1 or 58).
    #[inline]
    pub fn icmp_of(family: Family) -> u8 {
        match family {
            Family::V4 => ICMP,
            Family::V6 => ICMPV6,
        }
    }
}

/// How many VLAN tags [`parse`] walks before a frame is declared malformed.
pub const MAX_VLAN_TAGS: usize = 2;
/// Bytes of an ICMP/ICMPv6 header [`parse`] requires: type, code, checksum.
const ICMP_FACTS_LEN: usize = 4;
/// Bytes of the quoted TCP/UDP/ICMP header [`parse_quote`] requires: the 8 every ICMP error
/// carries (RFC 792), holding the ports and UDP's checksum.
pub const QUOTED_L4_LEN: usize = 8;

/// Why a frame could not be read. Each reason is counted separately by the workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Malformed {
    /// Shorter than an Ethernet header, or a VLAN tag cut short.
    TruncatedEthernet,
    /// More VLAN tags than [`MAX_VLAN_TAGS`].
    TooManyVlanTags,
    /// IPv4: short header, IHL < 5, version not 4, or lengths that do not fit the frame.
    BadIpv4Header,
    /// IPv6: short header, version not 6, or a payload length larger than the frame.
    BadIpv6Header,
    /// IPv6 extension header chain cut short or longer than
    /// [`ipv6::MAX_EXTENSION_HEADERS`].
    BadIpv6Extension,
    /// The TCP/UDP/ICMP header of a first fragment or whole packet is cut short.
    TruncatedL4,
}

impl Malformed {
    pub const ALL: [Malformed; 6] = [
        Malformed::TruncatedEthernet,
        Malformed::TooManyVlanTags,
        Malformed::BadIpv4Header,
        Malformed::BadIpv6Header,
        Malformed::BadIpv6Extension,
        Malformed::TruncatedL4,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Malformed::TruncatedEthernet => "truncated-ethernet",
            Malformed::TooManyVlanTags => "too-many-vlan-tags",
            Malformed::BadIpv4Header => "bad-ipv4-header",
            Malformed::BadIpv6Header => "bad-ipv6-header",
            Malformed::BadIpv6Extension => "bad-ipv6-extension",
            Malformed::TruncatedL4 => "truncated-l4",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// What the classifier needs from an IP packet, and where its headers are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpFacts {
    pub family: Family,
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub l4: L4,
    /// Offset of the IP header in the frame.
    pub l3_offset: usize,
    /// Offset of the L4 header (meaningless for a non-first fragment).
    pub l4_offset: usize,
    /// Number of VLAN tags in front of the IP header.
    pub vlan_tags: u8,
}

/// The result of reading one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// ARP, LLDP and anything else that is not IPv4/IPv6: not classified.
    NonIp {
        ethertype: u16,
    },
    Ip(IpFacts),
    Malformed(Malformed),
}

/// The length of the IP packet whose header starts at `frame[l3]`, as its header says
/// (IPv4 total length; IPv6 fixed header plus payload length): the packet without the
/// Ethernet padding that may follow it. `None` when the fixed header is cut short.
#[inline]
pub fn ip_len(frame: &[u8], l3: usize, family: Family) -> Option<usize> {
    let ip = frame.get(l3..)?;
    Some(match family {
        Family::V4 => usize::from(Ipv4Packet::new_checked_header(ip).ok()?.total_len()),
        Family::V6 => Ipv6Packet::new_checked_header(ip).ok()?.total_len(),
    })
}

/// Read an Ethernet frame down to the L4 facts the classifier uses.
#[inline]
pub fn parse(frame: &[u8]) -> Frame {
    match plain_ipv4(frame) {
        Some(p) => Frame::Ip(p.facts()),
        None => parse_general(frame),
    }
}

/// An untagged IPv4 packet without options that is not a non-first fragment, as
/// [`plain_ipv4`] reads it: its IP header at [`PlainIpv4::L3`], its L4 header at
/// [`PlainIpv4::L4`]. Addresses as host-order numbers (what a classifier key holds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlainIpv4 {
    pub proto: u8,
    pub src: u32,
    pub dst: u32,
    pub l4: L4,
}

impl PlainIpv4 {
    /// Offset of the IP header.
    pub const L3: usize = ethernet::field::HEADER_LEN;
    /// Offset of the L4 header.
    pub const L4: usize = Self::L3 + ipv4::field::MIN_HEADER_LEN;

    /// The same packet's facts, as [`parse`] gives them.
    #[inline(always)]
    pub fn facts(&self) -> IpFacts {
        IpFacts {
            family: Family::V4,
            proto: self.proto,
            src: IpAddr::V4(Ipv4Addr::from(self.src)),
            dst: IpAddr::V4(Ipv4Addr::from(self.dst)),
            l4: self.l4,
            l3_offset: Self::L3,
            l4_offset: Self::L4,
            vlan_tags: 0,
        }
    }
}

/// The common case, straight through: an untagged IPv4 packet without options, not a
/// non-first fragment, TCP / UDP / ICMP with its header whole (or another protocol).
/// `None` for anything else, which [`parse`] reads the general way; where it answers, it
/// gives what [`parse`] would (tested). The parse stage builds its key from this record
/// directly (no [`IpFacts`] in between).
#[inline(always)]
pub fn plain_ipv4(frame: &[u8]) -> Option<PlainIpv4> {
    const L3: usize = PlainIpv4::L3;
    const L4: usize = PlainIpv4::L4;
    let hdr: &[u8; L4] = frame.get(..L4)?.try_into().ok()?;
    let ethertype = u16::from_be_bytes([
        hdr[ethernet::field::ETHERTYPE.start],
        hdr[ethernet::field::ETHERTYPE.start + 1],
    ]);
    let ip = &hdr[L3..];
    if ethertype != ethertype::IPV4 || ip[ipv4::field::VER_IHL] != 0x45 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([
        ip[ipv4::field::LENGTH.start],
        ip[ipv4::field::LENGTH.start + 1],
    ]));
    let flags = u16::from_be_bytes([
        ip[ipv4::field::FLG_OFF.start],
        ip[ipv4::field::FLG_OFF.start + 1],
    ]);
    if total < ipv4::field::MIN_HEADER_LEN
        || total > frame.len() - L3
        || flags & ipv4::field::FRAG_OFFSET_MASK != 0
    {
        return None;
    }
    let protocol = ip[ipv4::field::PROTOCOL];
    let l4_len = total - ipv4::field::MIN_HEADER_LEN;
    let l4 = match protocol {
        proto::TCP if l4_len >= tcp::field::MIN_HEADER_LEN => ports(frame, L4),
        proto::UDP if l4_len >= udp::field::HEADER_LEN => ports(frame, L4),
        proto::ICMP if l4_len >= ICMP_FACTS_LEN => L4::Icmp {
            icmptype: frame[L4 + icmpv4::field::TYPE],
        },
        proto::TCP | proto::UDP | proto::ICMP => return None,
        _ => L4::Other,
    };
    let addr = |at: usize| u32::from_be_bytes([ip[at], ip[at + 1], ip[at + 2], ip[at + 3]]);
    Some(PlainIpv4 {
        proto: protocol,
        src: addr(ipv4::field::SRC_ADDR.start),
        dst: addr(ipv4::field::DST_ADDR.start),
        l4,
    })
}

/// The ports of the TCP / UDP header at `frame[at..]` (its 4 bytes checked by the caller).
#[inline(always)]
fn ports(frame: &[u8], at: usize) -> L4 {
    let p = |o: usize| u16::from_be_bytes([frame[at + o], frame[at + o + 1]]);
    L4::Ports {
        sport: p(tcp::field::SRC_PORT.start),
        dport: p(tcp::field::DST_PORT.start),
    }
}

/// [`parse`] for every frame: VLAN tags, IPv4 options, IPv6 and its extension headers,
/// fragments, and the reasons a frame is malformed.
fn parse_general(frame: &[u8]) -> Frame {
    let start = match ethernet::l3_start(frame, MAX_VLAN_TAGS) {
        Ok(s) => s,
        Err(ethernet::TagError::Truncated) => {
            return Frame::Malformed(Malformed::TruncatedEthernet)
        }
        Err(ethernet::TagError::TooManyTags) => {
            return Frame::Malformed(Malformed::TooManyVlanTags)
        }
    };
    let ip = frame.get(start.offset..).unwrap_or(&[]);
    let parsed = match start.ethertype {
        ethertype::IPV4 => parse_ipv4::<true>(ip),
        ethertype::IPV6 => parse_ipv6::<true>(ip),
        ethertype => return Frame::NonIp { ethertype },
    };
    match parsed {
        Ok(mut facts) => {
            facts.l3_offset = start.offset;
            facts.l4_offset += start.offset;
            facts.vlan_tags = start.tags;
            Frame::Ip(facts)
        }
        Err(m) => Frame::Malformed(m),
    }
}

/// Read the packet an ICMP error of `family` quotes: `quote` is what follows the ICMP header,
/// to the end of the message. The same reading as [`parse`]'s, but the quote may stop before
/// the end of the packet its header describes (RFC 792 asks for its first 8 bytes past the IP
/// header; RFC 4443 for as much as fits in 1280), so the lengths it states are not required
/// to fit, and [`QUOTED_L4_LEN`] bytes of TCP/UDP are enough. Offsets are from the quote's
/// start; a quoted non-first fragment has `L4::Fragment`.
#[inline]
pub fn parse_quote(quote: &[u8], family: Family) -> Result<IpFacts, Malformed> {
    match family {
        Family::V4 => parse_ipv4::<false>(quote),
        Family::V6 => parse_ipv6::<false>(quote),
    }
}

/// IPv4 header and L4 facts; offsets relative to the IP header. `WHOLE`: the packet must lie
/// within `ip` (else: a quote).
#[inline]
fn parse_ipv4<const WHOLE: bool>(ip: &[u8]) -> Result<IpFacts, Malformed> {
    let bad = Malformed::BadIpv4Header;
    let p = Ipv4Packet::new_checked_header(ip).map_err(|_| bad)?;
    if p.version() != 4 {
        return Err(bad);
    }
    let hl = p.header_len();
    let total = usize::from(p.total_len());
    if total < hl || (WHOLE && total > ip.len()) {
        return Err(bad);
    }
    let end = total.min(ip.len());
    let proto = p.protocol();
    let l4 = if p.frag_offset() != 0 {
        L4::Fragment
    } else {
        // The L4 header must lie within the IP packet's own length (not trailing padding).
        read_l4::<WHOLE>(ip.get(hl..end).unwrap_or(&[]), proto, Family::V4)?
    };
    Ok(IpFacts {
        family: Family::V4,
        proto,
        src: IpAddr::V4(p.src_addr()),
        dst: IpAddr::V4(p.dst_addr()),
        l4,
        l3_offset: 0,
        l4_offset: hl,
        vlan_tags: 0,
    })
}

/// IPv6 header, extension header chain and L4 facts; offsets relative to the IP header.
#[inline]
fn parse_ipv6<const WHOLE: bool>(ip: &[u8]) -> Result<IpFacts, Malformed> {
    let bad = Malformed::BadIpv6Header;
    let p = Ipv6Packet::new_checked_header(ip).map_err(|_| bad)?;
    if p.version() != 6 || (WHOLE && p.total_len() > ip.len()) {
        return Err(bad);
    }
    let end = p.total_len().min(ip.len());
    let payload = ip.get(ipv6::field::HEADER_LEN..end).unwrap_or(&[]);
    let upper =
        ipv6::upper_layer(payload, p.next_header()).map_err(|_| Malformed::BadIpv6Extension)?;
    let off = ipv6::field::HEADER_LEN + upper.offset;
    let l4 = if upper.non_first_fragment {
        L4::Fragment
    } else {
        read_l4::<WHOLE>(ip.get(off..end).unwrap_or(&[]), upper.protocol, Family::V6)?
    };
    Ok(IpFacts {
        family: Family::V6,
        proto: upper.protocol,
        src: IpAddr::V6(p.src_addr()),
        dst: IpAddr::V6(p.dst_addr()),
        l4,
        l3_offset: 0,
        l4_offset: off,
        vlan_tags: 0,
    })
}

/// Ports of TCP/UDP, the type of ICMP of the packet's family; `Other` for the rest.
#[inline]
fn read_l4<const WHOLE: bool>(l4: &[u8], protocol: u8, family: Family) -> Result<L4, Malformed> {
    let icmp = proto::icmp_of(family);
    let need = match protocol {
        proto::TCP if WHOLE => tcp::field::MIN_HEADER_LEN,
        proto::TCP | proto::UDP => udp::field::HEADER_LEN,
        p if p == icmp => ICMP_FACTS_LEN,
        _ => return Ok(L4::Other),
    };
    if l4.len() < need {
        return Err(Malformed::TruncatedL4);
    }
    if protocol == icmp {
        // type, code and checksum sit alike in ICMP and ICMPv6
        return Ok(L4::Icmp {
            icmptype: l4[icmpv4::field::TYPE],
        });
    }
    let (sport, dport) = if protocol == proto::TCP {
        let t = TcpPacket::new_unchecked(l4);
        (t.src_port(), t.dst_port())
    } else {
        let u = UdpPacket::new_unchecked(l4);
        (u.src_port(), u.dst_port())
    };
    Ok(L4::Ports { sport, dport })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The straight-through IPv4 reading answers exactly as the general one wherever it
    /// answers: on real frames of every protocol and on every one-byte change of their first
    /// 64 bytes and length (every value of the bytes that decide: EtherType, version and IHL,
    /// lengths, fragment offset, protocol), and it answers for the plain TCP/UDP/ICMP cases.
    #[test]
    fn the_plain_ipv4_path_reads_as_the_general_one() {
        let mut seen_fast = 0;
        for proto in [6u8, 17, 1, 47, 0] {
            for payload in [0usize, 3, 30] {
                let mut spec =
                    crate::build::FrameSpec::new(v4("10.1.2.3"), v4("192.0.2.9"), proto, 1234, 80);
                spec.payload = payload;
                let f = crate::build::frame(&spec);
                assert_eq!(
                    plain_ipv4(&f).map(|p| Frame::Ip(p.facts())),
                    Some(parse_general(&f)),
                    "proto {proto}"
                );
                seen_fast += 1;
                let mut cases = Vec::new();
                for at in 0..f.len().min(64) {
                    for v in [
                        0u8, 1, 4, 5, 6, 8, 0x11, 0x1f, 0x20, 0x40, 0x44, 0x45, 0x46, 0x55, 0x65,
                        0x81, 0x86, 0xdd, 0xff,
                    ] {
                        let mut g = f.clone();
                        g[at] = v;
                        cases.push(g);
                    }
                }
                for cut in 0..f.len() {
                    cases.push(f[..cut].to_vec());
                }
                let mut padded = f.clone();
                padded.extend_from_slice(&[0; 9]);
                cases.push(padded);
                for g in cases {
                    if let Some(fast) = plain_ipv4(&g) {
                        assert_eq!(Frame::Ip(fast.facts()), parse_general(&g), "{g:02x?}");
                    }
                }
            }
        }
        assert_eq!(seen_fast, 15);
    }
    use crate::build::{frame, FrameSpec};

    fn v4(a: &str) -> IpAddr {
        a.parse().expect("test address")
    }

    fn ip(f: &[u8]) -> IpFacts {
        match parse(f) {
            Frame::Ip(facts) => facts,
            other => panic!("expected IP, got {other:?}"),
        }
    }

    #[test]
    fn tcp_udp_icmp_v4() {
        let f = frame(&FrameSpec::new(
            v4("192.168.0.5"),
            v4("192.168.0.1"),
            6,
            40000,
            22,
        ));
        let facts = ip(&f);
        assert_eq!(facts.family, Family::V4);
        assert_eq!(facts.proto, 6);
        assert_eq!(facts.src, v4("192.168.0.5"));
        assert_eq!(facts.dst, v4("192.168.0.1"));
        assert_eq!(
            facts.l4,
            L4::Ports {
                sport: 40000,
                dport: 22
            }
        );
        assert_eq!((facts.l3_offset, facts.l4_offset), (14, 34));

        let f = frame(&FrameSpec::new(
            v4("10.0.0.1"),
            v4("10.0.0.2"),
            17,
            53,
            5353,
        ));
        assert_eq!(
            ip(&f).l4,
            L4::Ports {
                sport: 53,
                dport: 5353
            }
        );

        let f = frame(&FrameSpec::new(v4("10.0.0.1"), v4("10.0.0.2"), 1, 8, 0));
        assert_eq!(ip(&f).l4, L4::Icmp { icmptype: 8 });

        let f = frame(&FrameSpec::new(v4("10.0.0.1"), v4("10.0.0.2"), 47, 0, 0));
        assert_eq!(ip(&f).l4, L4::Other);
    }

    #[test]
    fn ipv6_and_icmpv6_and_fragments() {
        let a = v4("2001:db8::1");
        let b = v4("2001:db8::2");
        let f = frame(&FrameSpec::new(a, b, 6, 1, 443));
        let facts = ip(&f);
        assert_eq!(facts.family, Family::V6);
        assert_eq!(
            facts.l4,
            L4::Ports {
                sport: 1,
                dport: 443
            }
        );
        assert_eq!(facts.l4_offset, 54);

        let f = frame(&FrameSpec::new(a, b, 58, 128, 0));
        assert_eq!(ip(&f).l4, L4::Icmp { icmptype: 128 });
        // ICMPv4's number in an IPv6 packet is just another protocol.
        let f = frame(&FrameSpec::new(a, b, 1, 8, 0));
        assert_eq!(ip(&f).l4, L4::Other);

        let mut spec = FrameSpec::new(a, b, 17, 1, 2);
        spec.non_first_fragment = true;
        let facts = ip(&frame(&spec));
        assert_eq!((facts.proto, facts.l4), (17, L4::Fragment));

        let mut spec = FrameSpec::new(v4("1.1.1.1"), v4("2.2.2.2"), 6, 1, 2);
        spec.non_first_fragment = true;
        let facts = ip(&frame(&spec));
        assert_eq!((facts.proto, facts.l4), (6, L4::Fragment));
    }

    #[test]
    fn vlan_tags() {
        let mut spec = FrameSpec::new(v4("10.0.0.1"), v4("10.0.0.2"), 6, 5, 80);
        spec.vlan = Some(100);
        let facts = ip(&frame(&spec));
        assert_eq!((facts.vlan_tags, facts.l3_offset), (1, 18));
        assert_eq!(
            facts.l4,
            L4::Ports {
                sport: 5,
                dport: 80
            }
        );

        // Three tags: more than we walk.
        let mut f = frame(&FrameSpec::new(v4("10.0.0.1"), v4("10.0.0.2"), 6, 5, 80));
        for _ in 0..3 {
            f.splice(12..12, [0x81, 0x00, 0x00, 0x07]);
        }
        assert_eq!(parse(&f), Frame::Malformed(Malformed::TooManyVlanTags));
    }

    #[test]
    fn non_ip_is_passed_on() {
        let mut f = vec![0xff; 12];
        f.extend_from_slice(&ethertype::ARP.to_be_bytes());
        f.extend_from_slice(&[0; 28]);
        assert_eq!(
            parse(&f),
            Frame::NonIp {
                ethertype: ethertype::ARP
            }
        );
    }

    #[test]
    fn malformed_ipv4() {
        let good = frame(&FrameSpec::new(v4("10.0.0.1"), v4("10.0.0.2"), 6, 5, 80));
        // IHL below 5
        let mut f = good.clone();
        f[14] = 0x44;
        assert_eq!(parse(&f), Frame::Malformed(Malformed::BadIpv4Header));
        // IHL larger than the packet
        let mut f = good.clone();
        f[14] = 0x4f;
        assert_eq!(parse(&f), Frame::Malformed(Malformed::BadIpv4Header));
        // total length beyond the frame
        let mut f = good.clone();
        f[16..18].copy_from_slice(&1500u16.to_be_bytes());
        assert_eq!(parse(&f), Frame::Malformed(Malformed::BadIpv4Header));
        // total length cutting the TCP header
        let mut f = good.clone();
        f[16..18].copy_from_slice(&30u16.to_be_bytes());
        assert_eq!(parse(&f), Frame::Malformed(Malformed::TruncatedL4));
        // wrong version
        let mut f = good.clone();
        f[14] = 0x65;
        assert_eq!(parse(&f), Frame::Malformed(Malformed::BadIpv4Header));
        // every truncation of a good frame is refused or read, never a panic
        for n in 0..good.len() {
            let r = parse(&good[..n]);
            assert!(matches!(r, Frame::Malformed(_)), "prefix {n}: {r:?}");
        }
    }

    #[test]
    fn ipv4_options_are_skipped() {
        let mut f = frame(&FrameSpec::new(v4("10.0.0.1"), v4("10.0.0.2"), 17, 7, 9));
        // grow the header by 4 bytes of options (NOP x4)
        f.splice(34..34, [1, 1, 1, 1]);
        f[14] = 0x46;
        let total = u16::from_be_bytes([f[16], f[17]]) + 4;
        f[16..18].copy_from_slice(&total.to_be_bytes());
        let facts = ip(&f);
        assert_eq!(facts.l4_offset, 38);
        assert_eq!(facts.l4, L4::Ports { sport: 7, dport: 9 });
    }

    #[test]
    fn malformed_ipv6() {
        let good = frame(&FrameSpec::new(v4("::1"), v4("::2"), 17, 1, 2));
        let mut f = good.clone();
        f[18..20].copy_from_slice(&2000u16.to_be_bytes());
        assert_eq!(parse(&f), Frame::Malformed(Malformed::BadIpv6Header));
        for n in 0..good.len() {
            assert!(
                matches!(parse(&good[..n]), Frame::Malformed(_)),
                "prefix {n}"
            );
        }
        // a hop-by-hop header claiming more bytes than there are
        let mut f = good.clone();
        f[20] = 0; // next header: hop-by-hop
        f[54] = 17;
        f[55] = 200;
        assert_eq!(parse(&f), Frame::Malformed(Malformed::BadIpv6Extension));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for len in 0..200usize {
            for _ in 0..50 {
                let mut f = Vec::with_capacity(len);
                for _ in 0..len {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    f.push(x as u8);
                }
                if len > 14 {
                    f[12] = if x & 1 == 0 { 0x08 } else { 0x86 };
                    f[13] = if x & 1 == 0 { 0x00 } else { 0xdd };
                    f[14] = if x & 1 == 0 { 0x45 } else { 0x60 };
                }
                let _ = parse(&f);
            }
        }
    }

    /// An IPv6 UDP frame with `n` 8-byte destination-options headers before the UDP header.
    fn v6_with_ext(n: usize) -> Vec<u8> {
        let mut f = frame(&FrameSpec::new(
            v4("2001:db8::1"),
            v4("2001:db8::2"),
            17,
            7,
            9,
        ));
        for i in 0..n {
            let next = if i == 0 { 17 } else { proto::DEST_OPTS };
            f.splice(54..54, [next, 0, 1, 4, 0, 0, 0, 0]);
        }
        if n > 0 {
            f[20] = proto::DEST_OPTS;
        }
        let plen = u16::from_be_bytes([f[18], f[19]]) + 8 * n as u16;
        f[18..20].copy_from_slice(&plen.to_be_bytes());
        f
    }

    #[test]
    fn eight_extension_headers_are_read_nine_are_malformed() {
        for n in 0..=8 {
            let facts = ip(&v6_with_ext(n));
            assert_eq!(
                (facts.proto, facts.l4_offset),
                (17, 54 + 8 * n),
                "{n} headers"
            );
            assert_eq!(facts.l4, L4::Ports { sport: 7, dport: 9 });
        }
        for n in 9..=11 {
            assert_eq!(
                parse(&v6_with_ext(n)),
                Frame::Malformed(Malformed::BadIpv6Extension),
                "{n} headers"
            );
        }
    }

    #[test]
    fn qinq_is_walked() {
        let mut f = frame(&FrameSpec::new(v4("10.0.0.1"), v4("10.0.0.2"), 6, 5, 80));
        f.splice(12..12, [0x88, 0xa8, 0x00, 0x07, 0x81, 0x00, 0x00, 0x64]);
        let facts = ip(&f);
        assert_eq!(
            (facts.vlan_tags, facts.l3_offset, facts.l4_offset),
            (2, 22, 42)
        );
        // a tag cut short
        assert_eq!(
            parse(&f[..16]),
            Frame::Malformed(Malformed::TruncatedEthernet)
        );
    }

    #[test]
    fn ip_len_reads_the_header() {
        let mut spec = FrameSpec::new(v4("10.0.0.1"), v4("10.0.0.2"), 17, 1, 2);
        spec.payload = 10;
        let f = frame(&spec);
        assert_eq!(ip_len(&f, 14, Family::V4), Some(38));
        assert_eq!(ip_len(&f[..20], 14, Family::V4), None);
        let f = v6_with_ext(2);
        assert_eq!(ip_len(&f, 14, Family::V6), Some(40 + 16 + 8));
        assert_eq!(ip_len(&f, 100, Family::V6), None);
    }

    /// The start of the IP packet of `f` (untagged), `keep` bytes of it.
    fn quote_of(f: &[u8], keep: usize) -> Vec<u8> {
        f[14..(14 + keep).min(f.len())].to_vec()
    }

    #[test]
    fn quotes_are_read_as_far_as_they_go() {
        // IPv4: the header and 8 bytes of UDP, the packet itself being longer
        let mut spec = FrameSpec::new(v4("192.168.0.100"), v4("192.168.0.2"), 17, 40000, 53);
        spec.payload = 100;
        let q = quote_of(&frame(&spec), 28);
        let facts = parse_quote(&q, Family::V4).expect("quote");
        assert_eq!(
            facts.l4,
            L4::Ports {
                sport: 40000,
                dport: 53
            }
        );
        assert_eq!((facts.l3_offset, facts.l4_offset, facts.proto), (0, 20, 17));
        assert_eq!(facts.src, v4("192.168.0.100"));
        // 8 bytes of TCP are enough in a quote (not in a packet)
        let t = frame(&FrameSpec::new(v4("10.0.0.1"), v4("10.0.0.2"), 6, 1234, 80));
        let facts = parse_quote(&quote_of(&t, 28), Family::V4).expect("quote");
        assert_eq!(
            facts.l4,
            L4::Ports {
                sport: 1234,
                dport: 80
            }
        );
        // fewer than 8: refused
        assert_eq!(
            parse_quote(&quote_of(&t, 27), Family::V4),
            Err(Malformed::TruncatedL4)
        );
        // a quoted non-first fragment has no ports
        let mut spec = FrameSpec::new(v4("10.0.0.1"), v4("10.0.0.2"), 17, 1, 2);
        spec.non_first_fragment = true;
        let facts = parse_quote(&quote_of(&frame(&spec), 28), Family::V4).expect("quote");
        assert_eq!(facts.l4, L4::Fragment);
        // the wrong family, a cut header
        assert_eq!(parse_quote(&q, Family::V6), Err(Malformed::BadIpv6Header));
        assert_eq!(
            parse_quote(&q[..19], Family::V4),
            Err(Malformed::BadIpv4Header)
        );
    }

    #[test]
    fn quotes_with_extension_headers() {
        // hop-by-hop (8), routing (16), fragment (offset 0), destination options (8), TCP
        let mut f = frame(&FrameSpec::new(
            v4("2001:db8::5"),
            v4("2001:db8::9"),
            6,
            443,
            50000,
        ));
        let mut ext = vec![proto::ROUTING, 0, 1, 4, 0, 0, 0, 0];
        ext.extend_from_slice(&[proto::FRAGMENT, 1, 0, 0, 0, 0, 0, 0]);
        ext.extend_from_slice(&[0; 8]);
        ext.extend_from_slice(&[proto::DEST_OPTS, 0, 0, 1, 0, 0, 0, 9]);
        ext.extend_from_slice(&[proto::TCP, 0, 1, 4, 0, 0, 0, 0]);
        let n = ext.len();
        f.splice(54..54, ext);
        f[20] = proto::HOP_BY_HOP;
        let plen = u16::from_be_bytes([f[18], f[19]]) + n as u16;
        f[18..20].copy_from_slice(&plen.to_be_bytes());
        assert_eq!(ip(&f).l4_offset, 54 + n);
        // quoted up to 8 bytes of TCP: read; one byte fewer: refused
        let q = quote_of(&f, 40 + n + 8);
        let facts = parse_quote(&q, Family::V6).expect("quote");
        assert_eq!(
            facts.l4,
            L4::Ports {
                sport: 443,
                dport: 50000
            }
        );
        assert_eq!((facts.proto, facts.l4_offset), (6, 40 + n));
        assert_eq!(facts.dst, v4("2001:db8::9"));
        assert_eq!(
            parse_quote(&q[..q.len() - 1], Family::V6),
            Err(Malformed::TruncatedL4)
        );
        // cut inside the extension headers
        assert_eq!(
            parse_quote(&q[..60], Family::V6),
            Err(Malformed::BadIpv6Extension)
        );
        // a quoted non-first fragment
        let mut g = q.clone();
        g[40 + 24 + 2] = 0x01; // fragment offset 32 (8-byte units)
        assert_eq!(parse_quote(&g, Family::V6).map(|x| x.l4), Ok(L4::Fragment));
        // nine extension headers in a quote are refused as in a packet
        let nine = quote_of(&v6_with_ext(9), 40 + 72 + 8);
        assert_eq!(
            parse_quote(&nine, Family::V6),
            Err(Malformed::BadIpv6Extension)
        );
        let eight = quote_of(&v6_with_ext(8), 40 + 64 + 8);
        assert!(parse_quote(&eight, Family::V6).is_ok());
    }

    #[test]
    fn quotes_of_arbitrary_bytes_never_panic() {
        let mut x: u64 = 0x2545f4914f6cdd1d;
        for len in 0..160usize {
            for _ in 0..40 {
                let mut q: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect();
                if let Some(b) = q.first_mut() {
                    *b = if x & 1 == 0 { 0x45 } else { 0x60 };
                }
                let _ = parse_quote(&q, Family::V4);
                let _ = parse_quote(&q, Family::V6);
            }
        }
    }
}
