//! Wire formats the packet path reads: Ethernet (with 802.1Q/802.1ad tags), IPv4, IPv6 (with
//! extension headers), and the first bytes of TCP, UDP and ICMP.
//!
//! Following smoltcp, every check on lengths happens once in [`parse`]; what it returns is
//! either the facts the classifier needs or the reason the frame is malformed. It never
//! panics and never allocates, whatever the bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use flowgate_config::flows::{Family, L4};

/// Byte offsets and constants of the headers.
pub mod field {
    pub const ETH_HDR: usize = 14;
    pub const ETH_TYPE: usize = 12;
    pub const VLAN_TAG: usize = 4;
    pub const ETHERTYPE_IPV4: u16 = 0x0800;
    pub const ETHERTYPE_IPV6: u16 = 0x86dd;
    pub const ETHERTYPE_ARP: u16 = 0x0806;
    pub const ETHERTYPE_VLAN: u16 = 0x8100;
    pub const ETHERTYPE_QINQ: u16 = 0x88a8;
    /// How many VLAN tags are walked before a frame is declared malformed.
    pub const MAX_VLAN_TAGS: usize = 2;

    pub const IPV4_MIN_HDR: usize = 20;
    pub const IPV4_TOTAL_LEN: usize = 2;
    pub const IPV4_FRAG: usize = 6;
    pub const IPV4_TTL: usize = 8;
    pub const IPV4_PROTO: usize = 9;
    pub const IPV4_CSUM: usize = 10;
    pub const IPV4_SRC: usize = 12;
    pub const IPV4_DST: usize = 16;
    /// Fragment offset bits of the flags/fragment field.
    pub const IPV4_FRAG_OFFSET_MASK: u16 = 0x1fff;

    pub const IPV6_HDR: usize = 40;
    pub const IPV6_PAYLOAD_LEN: usize = 4;
    pub const IPV6_NEXT_HDR: usize = 6;
    pub const IPV6_HOP_LIMIT: usize = 7;
    pub const IPV6_SRC: usize = 8;
    pub const IPV6_DST: usize = 24;
    /// How many IPv6 extension headers are walked before giving up (counted as malformed).
    pub const MAX_IPV6_EXT: usize = 8;

    pub const TCP_MIN_HDR: usize = 20;
    pub const UDP_HDR: usize = 8;
    pub const ICMP_MIN_HDR: usize = 4;
}

const EXT_HOP_BY_HOP: u8 = 0;
const EXT_ROUTING: u8 = 43;
const EXT_FRAGMENT: u8 = 44;
const EXT_AUTH: u8 = 51;
const EXT_DEST_OPTS: u8 = 60;
const EXT_MOBILITY: u8 = 135;
const EXT_HIP: u8 = 139;
const EXT_SHIM6: u8 = 140;

/// Why a frame could not be read. Each reason is counted separately by the workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Malformed {
    /// Shorter than an Ethernet header, or a VLAN tag cut short.
    TruncatedEthernet,
    /// More VLAN tags than [`field::MAX_VLAN_TAGS`].
    TooManyVlanTags,
    /// IPv4: short header, IHL < 5, version not 4, or lengths that do not fit the frame.
    BadIpv4Header,
    /// IPv6: short header, version not 6, or a payload length larger than the frame.
    BadIpv6Header,
    /// IPv6 extension header chain cut short or too long.
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

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// The length of the IP packet whose header starts at `frame[l3]`, as its header says
/// (IPv4 total length; IPv6 fixed header plus payload length): the packet without the
/// Ethernet padding that may follow it. `None` when the length field is cut short.
pub fn ip_len(frame: &[u8], l3: usize, family: Family) -> Option<usize> {
    Some(match family {
        Family::V4 => usize::from(be16(frame, l3 + field::IPV4_TOTAL_LEN)?),
        Family::V6 => field::IPV6_HDR + usize::from(be16(frame, l3 + field::IPV6_PAYLOAD_LEN)?),
    })
}

fn array<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..at + N)?.try_into().ok()
}

/// Read an Ethernet frame down to the L4 facts the classifier uses.
pub fn parse(frame: &[u8]) -> Frame {
    let Some(mut ethertype) = be16(frame, field::ETH_TYPE) else {
        return Frame::Malformed(Malformed::TruncatedEthernet);
    };
    let mut off = field::ETH_HDR;
    let mut tags = 0u8;
    while ethertype == field::ETHERTYPE_VLAN || ethertype == field::ETHERTYPE_QINQ {
        if usize::from(tags) == field::MAX_VLAN_TAGS {
            return Frame::Malformed(Malformed::TooManyVlanTags);
        }
        let Some(inner) = be16(frame, off + 2) else {
            return Frame::Malformed(Malformed::TruncatedEthernet);
        };
        ethertype = inner;
        off += field::VLAN_TAG;
        tags += 1;
    }
    let ip = &frame[off.min(frame.len())..];
    let parsed = match ethertype {
        field::ETHERTYPE_IPV4 => parse_ipv4(ip),
        field::ETHERTYPE_IPV6 => parse_ipv6(ip),
        _ => return Frame::NonIp { ethertype },
    };
    match parsed {
        Ok(mut facts) => {
            facts.l3_offset = off;
            facts.l4_offset += off;
            facts.vlan_tags = tags;
            Frame::Ip(facts)
        }
        Err(m) => Frame::Malformed(m),
    }
}

/// IPv4 header and L4 facts; offsets relative to the IP header.
fn parse_ipv4(ip: &[u8]) -> Result<IpFacts, Malformed> {
    let bad = Malformed::BadIpv4Header;
    let first = *ip.first().ok_or(bad)?;
    if ip.len() < field::IPV4_MIN_HDR || first >> 4 != 4 {
        return Err(bad);
    }
    let ihl = usize::from(first & 0x0f) * 4;
    let total = usize::from(be16(ip, field::IPV4_TOTAL_LEN).ok_or(bad)?);
    if ihl < field::IPV4_MIN_HDR || total < ihl || total > ip.len() {
        return Err(bad);
    }
    let frag = be16(ip, field::IPV4_FRAG).ok_or(bad)?;
    let proto = ip[field::IPV4_PROTO];
    let src = Ipv4Addr::from(array::<4>(ip, field::IPV4_SRC).ok_or(bad)?);
    let dst = Ipv4Addr::from(array::<4>(ip, field::IPV4_DST).ok_or(bad)?);
    let l4 = if frag & field::IPV4_FRAG_OFFSET_MASK != 0 {
        L4::Fragment
    } else {
        // The L4 header must lie within the IP packet's own length (not trailing padding).
        read_l4(&ip[ihl..total], proto, Family::V4)?
    };
    Ok(IpFacts {
        family: Family::V4,
        proto,
        src: IpAddr::V4(src),
        dst: IpAddr::V4(dst),
        l4,
        l3_offset: 0,
        l4_offset: ihl,
        vlan_tags: 0,
    })
}

/// IPv6 header, extension header chain and L4 facts; offsets relative to the IP header.
fn parse_ipv6(ip: &[u8]) -> Result<IpFacts, Malformed> {
    let bad = Malformed::BadIpv6Header;
    let first = *ip.first().ok_or(bad)?;
    if ip.len() < field::IPV6_HDR || first >> 4 != 6 {
        return Err(bad);
    }
    let payload = usize::from(be16(ip, field::IPV6_PAYLOAD_LEN).ok_or(bad)?);
    let end = field::IPV6_HDR + payload;
    if end > ip.len() {
        return Err(bad);
    }
    let src = Ipv6Addr::from(array::<16>(ip, field::IPV6_SRC).ok_or(bad)?);
    let dst = Ipv6Addr::from(array::<16>(ip, field::IPV6_DST).ok_or(bad)?);
    let mut next = ip[field::IPV6_NEXT_HDR];
    let mut off = field::IPV6_HDR;
    let mut fragment = false;
    let ext = Malformed::BadIpv6Extension;
    for _ in 0..=field::MAX_IPV6_EXT {
        let hdr_len = match next {
            EXT_HOP_BY_HOP | EXT_ROUTING | EXT_DEST_OPTS | EXT_MOBILITY | EXT_HIP | EXT_SHIM6 => {
                (usize::from(*ip.get(off + 1).ok_or(ext)?) + 1) * 8
            }
            EXT_AUTH => (usize::from(*ip.get(off + 1).ok_or(ext)?) + 2) * 4,
            EXT_FRAGMENT => {
                let offset = be16(ip, off + 2).ok_or(ext)? >> 3;
                if offset != 0 {
                    fragment = true;
                }
                8
            }
            // ESP hides what follows; anything else is the upper-layer protocol.
            _ => break,
        };
        if off + hdr_len > end {
            return Err(ext);
        }
        next = ip[off];
        off += hdr_len;
        if fragment {
            break;
        }
    }
    if is_extension(next) && !fragment {
        return Err(ext);
    }
    let l4 = if fragment {
        L4::Fragment
    } else {
        read_l4(&ip[off..end], next, Family::V6)?
    };
    Ok(IpFacts {
        family: Family::V6,
        proto: next,
        src: IpAddr::V6(src),
        dst: IpAddr::V6(dst),
        l4,
        l3_offset: 0,
        l4_offset: off,
        vlan_tags: 0,
    })
}

fn is_extension(proto: u8) -> bool {
    matches!(
        proto,
        EXT_HOP_BY_HOP
            | EXT_ROUTING
            | EXT_FRAGMENT
            | EXT_AUTH
            | EXT_DEST_OPTS
            | EXT_MOBILITY
            | EXT_HIP
            | EXT_SHIM6
    )
}

/// Ports of TCP/UDP, the type of ICMP of the packet's family; `Other` for the rest.
fn read_l4(l4: &[u8], proto: u8, family: Family) -> Result<L4, Malformed> {
    const TCP: u8 = flowgate_config::flows::PROTO_TCP;
    const UDP: u8 = flowgate_config::flows::PROTO_UDP;
    let icmp = match family {
        Family::V4 => flowgate_config::flows::PROTO_ICMP,
        Family::V6 => flowgate_config::flows::PROTO_ICMPV6,
    };
    let need = match proto {
        TCP => field::TCP_MIN_HDR,
        UDP => field::UDP_HDR,
        p if p == icmp => field::ICMP_MIN_HDR,
        _ => return Ok(L4::Other),
    };
    if l4.len() < need {
        return Err(Malformed::TruncatedL4);
    }
    if proto == icmp {
        return Ok(L4::Icmp { icmptype: l4[0] });
    }
    Ok(L4::Ports {
        sport: u16::from_be_bytes([l4[0], l4[1]]),
        dport: u16::from_be_bytes([l4[2], l4[3]]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
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
        f.extend_from_slice(&field::ETHERTYPE_ARP.to_be_bytes());
        f.extend_from_slice(&[0; 28]);
        assert_eq!(
            parse(&f),
            Frame::NonIp {
                ethertype: field::ETHERTYPE_ARP
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
}
