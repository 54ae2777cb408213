//! ICMP errors about NAT director connections (IPVS `ip_vs_in_icmp` / `ip_vs_out_icmp`): read
//! the packet an ICMP/ICMPv6 error quotes, and translate the error in place so the other side
//! of the NAT understands it.
//!
//! An ICMP error quotes the offending packet (its IP header and at least the first 8 bytes of
//! what follows, RFC 792; as much as fits in 1280 bytes for ICMPv6, RFC 4443) and goes to that
//! packet's source. So a server's (or a router's, between the appliance and the server) error
//! about a forwarded packet quotes `client:cport -> server:sport` and goes to the client, who
//! must see `client:cport -> VIP:vport`; a client's (or a client-side router's) error about a
//! NAT reply quotes `VIP:vport -> client:cport` and goes to the VIP, which the server must see
//! as `server:sport -> client:cport` sent to itself.
//!
//! [`embedded`] reads the quoted header with every length checked (no panics; anything it
//! cannot read is `None`, not handled); [`translate`] rewrites the quoted endpoint, the outer
//! address when asked, and the checksums:
//!
//! - the quoted IPv4 header checksum, incrementally (RFC 1624);
//! - the quoted TCP/UDP checksum, incrementally, when its bytes were quoted (always for UDP,
//!   the first 8 bytes; for TCP only when 18 or more bytes are, which Linux and most stacks
//!   do): the quoted packet is usually cut short, so nobody can verify it, but a stack that
//!   looks at it sees a checksum consistent with the rewrite (as Linux's NAT does; IPVS
//!   leaves it). An IPv4 UDP checksum of 0 ("none") stays 0;
//! - the outer IPv4 header checksum, incrementally;
//! - the ICMP checksum, recomputed over the whole message (for ICMPv6 with the pseudo-header,
//!   so the outer address change counts), as IPVS does. It is verified first: an error whose
//!   checksum is wrong is not translated (it goes on to the flows as it came).

use std::net::IpAddr;

use flowgate_config::appliance::MacAddr;
use flowgate_config::flows::{Family, L4};

use super::rewrite::{replace_address, rewrite_ports, End, RewriteError};
use super::state::addr16;
use super::worker::ip_of;
use crate::wire::{self, checksum, icmpv4, icmpv6, ipv4, ipv6, proto, IpFacts};
use crate::wire::{EthernetFrame, Icmpv4Packet, Icmpv6Packet, Ipv4Packet, Ipv6Packet, PortsHeader};

/// The ICMP header in front of the quoted packet: type, code, checksum, 4 more bytes (the
/// same 8 in ICMPv6).
const ICMP_HDR: usize = icmpv4::field::HEADER_LEN;

/// The ICMP (ICMPv6 for IPv6) types that are errors about a packet: IPv4 destination
/// unreachable (3), source quench (4), time exceeded (11), parameter problem (12); ICMPv6
/// destination unreachable (1), packet too big (2), time exceeded (3), parameter problem (4).
#[inline]
pub fn is_error(family: Family, icmptype: u8) -> bool {
    match family {
        Family::V4 => icmpv4::is_error(icmptype),
        Family::V6 => icmpv6::is_error(icmptype),
    }
}

/// The packet an ICMP error quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Embedded {
    pub family: Family,
    /// TCP or UDP.
    pub proto: u8,
    /// Addresses in 16-byte form (IPv4 mapped), as the connection table keys them.
    pub src: [u8; 16],
    pub sport: u16,
    pub dst: [u8; 16],
    pub dport: u16,
    /// Offset in the frame of the quoted IP header.
    pub l3: usize,
    /// Offset in the frame of the quoted TCP/UDP header.
    pub l4: usize,
    /// End of the ICMP message in the frame (the outer IP packet's end).
    pub end: usize,
}

/// Where the outer packet ends: its IP length, within the frame. `None` for an IPv4 first
/// fragment (the message is not all here) or an IPv6 packet with extension headers (not
/// handled: ICMPv6 errors carry none in practice).
fn outer_end(frame: &[u8], facts: &IpFacts) -> Option<usize> {
    let l3 = facts.l3_offset;
    let ip = frame.get(l3..)?;
    let len = match facts.family {
        Family::V4 => {
            let p = Ipv4Packet::new_checked(ip).ok()?;
            if p.more_frags() {
                return None;
            }
            usize::from(p.total_len())
        }
        Family::V6 => {
            if facts.l4_offset != l3 + ipv6::field::HEADER_LEN {
                return None;
            }
            Ipv6Packet::new_checked(ip).ok()?.total_len()
        }
    };
    Some(l3 + len)
}

/// The TCP/UDP packet quoted by the ICMP error `frame` (parsed as `facts`), or `None` when
/// it is no ICMP error, or quotes something else (another protocol, a non-first fragment), or
/// anything is cut short. The quote is read by `wire::parse_quote`, as a packet is.
pub fn embedded(frame: &[u8], facts: &IpFacts) -> Option<Embedded> {
    let L4::Icmp { icmptype } = facts.l4 else {
        return None;
    };
    if !is_error(facts.family, icmptype) {
        return None;
    }
    let end = outer_end(frame, facts)?;
    let l3 = facts.l4_offset + ICMP_HDR;
    let quoted = wire::parse_quote(frame.get(l3..end)?, facts.family).ok()?;
    if quoted.proto != proto::TCP && quoted.proto != proto::UDP {
        return None;
    }
    let L4::Ports { sport, dport } = quoted.l4 else {
        return None;
    };
    Some(Embedded {
        family: facts.family,
        proto: quoted.proto,
        src: addr16(quoted.src),
        sport,
        dst: addr16(quoted.dst),
        dport,
        l3,
        l4: l3 + quoted.l4_offset,
        end,
    })
}

/// The folded one's-complement sum of the ICMP message `frame[l4..end]` as it stands (ICMPv6:
/// with the pseudo-header of the outer addresses): 0xffff when its checksum is right.
fn icmp_sum(frame: &[u8], facts: &IpFacts, end: usize) -> Option<u32> {
    let msg = frame.get(facts.l4_offset..end)?;
    Some(match facts.family {
        Family::V4 => checksum::ones_sum(0, msg),
        Family::V6 => {
            let ip = Ipv6Packet::new_checked_header(frame.get(facts.l3_offset..)?).ok()?;
            icmpv6::message_sum(&ip.src_addr(), &ip.dst_addr(), msg)
        }
    })
}

/// The ICMP message's checksum verifies.
pub fn checksum_ok(frame: &[u8], facts: &IpFacts, emb: &Embedded) -> bool {
    icmp_sum(frame, facts, emb.end) == Some(0xffff)
}

/// The IP header of `family` at the start of `ip` is whole.
fn header_ok(ip: &[u8], family: Family) -> bool {
    match family {
        Family::V4 => Ipv4Packet::new_checked_header(ip).is_ok(),
        Family::V6 => Ipv6Packet::new_checked_header(ip).is_ok(),
    }
}

/// Translate the ICMP error `frame` quoting `emb`: the quoted packet's `inner` end becomes
/// `addr:port` (16-byte form, of the packet's family); when `outer` is given, that end of the
/// outer header becomes its address. Checksums as the module says. The caller checked
/// [`checksum_ok`] first. Every header is checked before anything is written: on error the
/// frame is unchanged.
pub fn translate(
    frame: &mut [u8],
    facts: &IpFacts,
    emb: &Embedded,
    inner: End,
    addr: &[u8; 16],
    port: u16,
    outer: Option<(End, &[u8; 16])>,
) -> Result<(), RewriteError> {
    let family = emb.family;
    if facts.family != family {
        return Err(RewriteError::FamilyMismatch);
    }
    let (l3, l4) = (facts.l3_offset, facts.l4_offset);
    let in_order = l3 <= l4
        && l4 + ICMP_HDR <= emb.l3
        && emb.l3 <= emb.l4
        && emb.l4 <= emb.end
        && emb.end <= frame.len();
    if !in_order {
        return Err(RewriteError::Truncated);
    }
    let (head, quote) = frame.split_at_mut(emb.l3);
    let (quoted_ip, quoted_l4) = quote[..emb.end - emb.l3].split_at_mut(emb.l4 - emb.l3);
    let mut ports =
        PortsHeader::new_checked(quoted_l4, emb.proto).map_err(|_| RewriteError::Truncated)?;
    if !header_ok(quoted_ip, family) || !header_ok(&head[l3..], family) {
        return Err(RewriteError::Truncated);
    }

    // the quoted header: address (and its IPv4 header checksum), port, L4 checksum
    let change = replace_address(quoted_ip, family, inner, ip_of(addr, family))?;
    rewrite_ports(&mut ports, family, inner, &change, Some(port));

    // the outer header
    if let Some((end, a)) = outer {
        replace_address(&mut head[l3..], family, end, ip_of(a, family))?;
    }

    // the ICMP checksum, over the message as it is now
    match family {
        Family::V4 => {
            Icmpv4Packet::new_checked(&mut frame[l4..emb.end])
                .map_err(|_| RewriteError::Truncated)?
                .fill_checksum();
        }
        Family::V6 => {
            let ip = Ipv6Packet::new_checked_header(&frame[l3..])
                .map_err(|_| RewriteError::Truncated)?;
            let (src, dst) = (ip.src_addr(), ip.dst_addr());
            Icmpv6Packet::new_checked(&mut frame[l4..emb.end])
                .map_err(|_| RewriteError::Truncated)?
                .fill_checksum(&src, &dst);
        }
    }
    Ok(())
}

/// Bytes an ICMP "too big" error puts in front of the packet it quotes (outer IP header and
/// ICMP header): the headroom [`too_big`] needs.
pub fn too_big_overhead(family: Family) -> usize {
    match family {
        Family::V4 => ipv4::field::MIN_HEADER_LEN + ICMP_HDR,
        Family::V6 => ipv6::field::HEADER_LEN + ICMP_HDR,
    }
}

/// The most an error quotes, as Linux: the error fits in 576 bytes (IPv4) or the IPv6 minimum
/// MTU, 1280 bytes.
const ERROR_MAX_V4: usize = 576;
const ERROR_MAX_V6: usize = 1280;
const TOO_BIG_TTL: u8 = 64;
/// The IPv4 class of service of the error: internetwork control, as Linux's ICMP errors.
const TOO_BIG_TOS: u8 = 0xc0;

/// Turn the frame lying at `buf[over..]` (`over` = [`too_big_overhead`] of its family; its IP
/// header at `l3` from the frame's start) into the ICMP error that tells its sender it does
/// not fit: IPv4 "fragmentation needed" (type 3 code 4) or ICMPv6 "packet too big" (type 2),
/// announcing `mtu`, from the packet's destination to its source, quoting the packet's start
/// (as much as the error's size limit allows). The Ethernet header (VLAN tags kept) moves to
/// the front, addressed back to the frame's sender from `mac`. Returns the error frame's
/// length from `buf[0]`: the caller trims the rest. On error `buf` is unchanged.
pub fn too_big(
    buf: &mut [u8],
    l3: usize,
    family: Family,
    mtu: u32,
    mac: [u8; 6],
) -> Result<usize, RewriteError> {
    let over = too_big_overhead(family);
    let frame_len = buf
        .len()
        .checked_sub(over)
        .ok_or(RewriteError::NoHeadroom)?;
    if l3 < wire::ethernet::field::HEADER_LEN || l3 + ipv4::field::MIN_HEADER_LEN > frame_len {
        return Err(RewriteError::Truncated);
    }
    let quoted_at = l3 + over;
    let quoted = &buf[quoted_at..];
    // the error goes from the packet's destination back to its source; the quote stops at
    // the packet's own length (not the Ethernet padding after it)
    let truncated = |_| RewriteError::Truncated;
    let (from, to, packet_len, ip_len, max) = match family {
        Family::V4 => {
            let p = Ipv4Packet::new_checked_header(quoted).map_err(truncated)?;
            (
                IpAddr::V4(p.dst_addr()),
                IpAddr::V4(p.src_addr()),
                usize::from(p.total_len()),
                ipv4::field::MIN_HEADER_LEN,
                ERROR_MAX_V4,
            )
        }
        Family::V6 => {
            let p = Ipv6Packet::new_checked_header(quoted).map_err(truncated)?;
            (
                IpAddr::V6(p.dst_addr()),
                IpAddr::V6(p.src_addr()),
                p.total_len(),
                ipv6::field::HEADER_LEN,
                ERROR_MAX_V6,
            )
        }
    };
    let quoted_avail = (frame_len - l3).min(packet_len);
    let quote = quoted_avail.min(max - ip_len - ICMP_HDR);
    let icmp_len = ICMP_HDR + quote;
    let icmp_at = l3 + ip_len;

    // the Ethernet header to the front: the new IP header and ICMP header then sit between
    // it and the quoted packet, which stays where it is; back to the sender, from `mac`
    buf.copy_within(over..over + l3, 0);
    let mut eth = EthernetFrame::new_unchecked(&mut buf[..l3]);
    let sender = eth.src_addr();
    eth.set_dst_addr(sender);
    eth.set_src_addr(MacAddr(mac));
    buf[l3..icmp_at].fill(0);
    match (from, to) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            let mut h = Ipv4Packet::new_unchecked(&mut buf[l3..icmp_at]);
            h.set_version_header_len(ip_len);
            h.set_dscp_ecn(TOO_BIG_TOS);
            h.set_total_len((ip_len + icmp_len) as u16);
            h.set_ttl(TOO_BIG_TTL);
            h.set_protocol(proto::ICMP);
            h.set_src_addr(src);
            h.set_dst_addr(dst);
            h.fill_checksum();
            let mut m = Icmpv4Packet::new_unchecked(&mut buf[icmp_at..icmp_at + icmp_len]);
            m.set_msg_type(icmpv4::msg::DST_UNREACHABLE);
            m.set_msg_code(icmpv4::msg::CODE_FRAG_NEEDED);
            m.clear_rest();
            m.set_next_hop_mtu(mtu.min(0xffff) as u16);
            m.fill_checksum();
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            let mut h = Ipv6Packet::new_unchecked(&mut buf[l3..icmp_at]);
            h.set_version_traffic_class(0);
            h.set_payload_len(icmp_len as u16);
            h.set_next_header(proto::ICMPV6);
            h.set_hop_limit(TOO_BIG_TTL);
            h.set_src_addr(src);
            h.set_dst_addr(dst);
            let mut m = Icmpv6Packet::new_unchecked(&mut buf[icmp_at..icmp_at + icmp_len]);
            m.set_msg_type(icmpv6::msg::PKT_TOO_BIG);
            m.set_msg_code(0);
            m.set_mtu(mtu);
            m.fill_checksum(&src, &dst);
        }
        _ => return Err(RewriteError::FamilyMismatch),
    }
    Ok(icmp_at + icmp_len)
}

#[cfg(test)]
mod too_big_tests {
    use super::*;
    use crate::build::{frame, FrameSpec};
    use crate::wire::{parse, Frame};
    use std::net::IpAddr;

    const MAC: [u8; 6] = [0x02, 0xfa, 0, 0, 0, 1];

    /// A `len`-byte UDP packet from the client to the VIP, the `over` bytes of headroom in
    /// front, the error made of it, and the error frame re-parsed.
    fn error_of(src: &str, dst: &str, payload: usize) -> (Vec<u8>, Vec<u8>, IpFacts) {
        let mut spec = FrameSpec::new(
            src.parse().expect("src"),
            dst.parse().expect("dst"),
            17,
            40000,
            53,
        );
        spec.payload = payload;
        let original = frame(&spec);
        let family = if spec.src.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        };
        let over = too_big_overhead(family);
        let mut buf = vec![0u8; over];
        buf.extend_from_slice(&original);
        let len = too_big(&mut buf, 14, family, 1480, MAC).expect("too big");
        buf.truncate(len);
        let Frame::Ip(facts) = parse(&buf) else {
            panic!("the error parses as IP")
        };
        (original, buf, facts)
    }

    #[test]
    fn ipv4_fragmentation_needed_goes_back_to_the_sender_quoting_its_packet() {
        let (original, err, facts) = error_of("192.168.0.100", "192.168.0.2", 1500);
        // Ethernet: back to the sender's MAC, from ours
        assert_eq!(&err[0..6], &original[6..12]);
        assert_eq!(&err[6..12], &MAC);
        assert_eq!(facts.src, "192.168.0.2".parse::<IpAddr>().expect("vip"));
        assert_eq!(
            facts.dst,
            "192.168.0.100".parse::<IpAddr>().expect("client")
        );
        assert_eq!(facts.l4, L4::Icmp { icmptype: 3 });
        let l3 = facts.l3_offset;
        assert_eq!(
            checksum::checksum(&err[l3..l3 + 20]),
            0,
            "IPv4 header checksum"
        );
        let icmp = &err[facts.l4_offset..];
        assert_eq!((icmp[0], icmp[1]), (3, 4));
        assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1480);
        assert_eq!(checksum::checksum(icmp), 0, "ICMP checksum");
        // the error fits in 576 bytes and quotes the packet's start, byte for byte
        assert_eq!(err.len() - 14, 576);
        assert_eq!(&icmp[8..], &original[14..14 + 576 - 28]);
        // and it is an error the director's ICMP path recognises, quoting the client's packet
        let e = embedded(&err, &facts).expect("quoted packet");
        assert_eq!((e.sport, e.dport, e.proto), (40000, 53, 17));
    }

    #[test]
    fn ipv6_packet_too_big_quotes_up_to_the_minimum_mtu() {
        let (original, err, facts) = error_of("2001:db8::100", "2001:db8::2", 1500);
        assert_eq!(facts.src, "2001:db8::2".parse::<IpAddr>().expect("vip"));
        assert_eq!(facts.l4, L4::Icmp { icmptype: 2 });
        let icmp = &err[facts.l4_offset..];
        assert_eq!(
            u32::from_be_bytes([icmp[4], icmp[5], icmp[6], icmp[7]]),
            1480
        );
        assert_eq!(err.len() - 14, 1280);
        assert_eq!(&icmp[8..], &original[14..14 + 1280 - 48]);
        let e = embedded(&err, &facts).expect("quoted packet");
        assert!(
            checksum_ok(&err, &facts, &e),
            "ICMPv6 checksum with the pseudo-header"
        );
    }

    #[test]
    fn a_short_packet_is_quoted_whole_without_its_padding() {
        // 28 bytes of IP padded to a 60-byte frame: the quote stops at the packet's end
        let spec = FrameSpec::new(
            "10.0.0.1".parse().expect("src"),
            "10.0.0.2".parse().expect("dst"),
            17,
            1,
            2,
        );
        let mut buf = vec![0u8; too_big_overhead(Family::V4)];
        buf.extend_from_slice(&frame(&spec));
        buf.resize(too_big_overhead(Family::V4) + 60, 0);
        let len = too_big(&mut buf, 14, Family::V4, 1480, MAC).expect("too big");
        assert_eq!(len, 14 + 20 + 8 + 28);
        assert_eq!(checksum::checksum(&buf[14 + 20..len]), 0);
    }

    #[test]
    fn no_headroom_or_no_packet_is_an_error() {
        let mut tiny = vec![0u8; 20];
        assert!(too_big(&mut tiny, 14, Family::V4, 1480, MAC).is_err());
        let mut short = vec![0u8; 28 + 14 + 10];
        assert!(too_big(&mut short, 14, Family::V4, 1480, MAC).is_err());
    }
}

#[cfg(test)]
mod quote_tests {
    use super::*;
    use crate::build::{frame, FrameSpec};
    use crate::wire::{parse, tcp, Frame, TcpPacket};
    use std::net::Ipv6Addr;

    const CLIENT: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);
    const VIP: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
    const ROUTER: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
    const SERVER: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 9, 0, 0, 0, 0, 7);

    /// The client's TCP packet to the VIP (its IP packet, no Ethernet) with a destination
    /// options header (8 bytes) and an AH (16 bytes) before the TCP header.
    fn packet_with_extensions() -> Vec<u8> {
        let mut spec = FrameSpec::new(CLIENT.into(), VIP.into(), 6, 40000, 443);
        spec.payload = 12;
        let mut ip = frame(&spec)[14..].to_vec();
        let ext = [
            proto::AH,
            0,
            1,
            4,
            0,
            0,
            0,
            0, // destination options, PadN
            proto::TCP,
            2,
            0,
            0,
            0,
            0,
            0,
            1,
            0,
            0,
            0,
            1,
            0,
            0,
            0,
            0, // AH, 16 bytes
        ];
        ip.splice(40..40, ext);
        let mut p = Ipv6Packet::new_unchecked(&mut ip[..]);
        p.set_next_header(proto::DEST_OPTS);
        let plen = p.payload_len() + ext.len() as u16;
        p.set_payload_len(plen);
        ip
    }

    /// A router's ICMPv6 destination unreachable to the client, quoting `quoted`.
    fn error_quoting(quoted: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 40 + 8];
        wire::EthernetFrame::new_unchecked(&mut f[..]).set_ethertype(wire::ethertype::IPV6);
        f.extend_from_slice(quoted);
        let icmp_len = (8 + quoted.len()) as u16;
        let mut ip = Ipv6Packet::new_unchecked(&mut f[14..]);
        ip.set_version_traffic_class(0);
        ip.set_payload_len(icmp_len);
        ip.set_next_header(proto::ICMPV6);
        ip.set_hop_limit(64);
        ip.set_src_addr(ROUTER);
        ip.set_dst_addr(CLIENT);
        let mut m = Icmpv6Packet::new_unchecked(&mut f[54..]);
        m.set_msg_type(icmpv6::msg::DST_UNREACHABLE);
        m.fill_checksum(&ROUTER, &CLIENT);
        f
    }

    fn facts(f: &[u8]) -> IpFacts {
        match parse(f) {
            Frame::Ip(x) => x,
            other => panic!("not IP: {other:?}"),
        }
    }

    #[test]
    fn a_quote_with_extension_headers_is_read_and_translated() {
        let quoted = packet_with_extensions();
        let mut f = error_quoting(&quoted);
        let x = facts(&f);
        let e = embedded(&f, &x).expect("the quoted TCP packet");
        assert_eq!((e.proto, e.sport, e.dport), (proto::TCP, 40000, 443));
        assert_eq!((e.src, e.dst), (CLIENT.octets(), VIP.octets()));
        assert_eq!((e.l3, e.l4, e.end), (62, 62 + 40 + 24, f.len()));
        assert!(checksum_ok(&f, &x, &e));

        // as a NAT director translates a server-side error for the client... here the other
        // way round: the quoted destination becomes the server
        translate(&mut f, &x, &e, End::Dst, &SERVER.octets(), 8443, None).expect("translated");
        let x = facts(&f);
        let e = embedded(&f, &x).expect("still read");
        assert_eq!((e.dst, e.dport), (SERVER.octets(), 8443));
        assert!(checksum_ok(&f, &x, &e), "ICMPv6 checksum recomputed");
        // the whole TCP segment was quoted: its checksum, updated incrementally, verifies
        let seg = &f[e.l4..e.end];
        let pseudo = checksum::pseudo_header_v6(&CLIENT, &SERVER, proto::TCP, seg.len() as u32);
        let t = TcpPacket::new_checked(seg).expect("tcp");
        assert!(t.verify_checksum(pseudo));
        assert_eq!(t.flags(), tcp::flags::SYN);
    }

    #[test]
    fn a_quote_cut_inside_its_extension_headers_is_not_read() {
        let quoted = packet_with_extensions();
        for keep in [40, 47, 50, 63, 64 + 7] {
            let f = error_quoting(&quoted[..keep]);
            let x = facts(&f);
            assert_eq!(embedded(&f, &x), None, "{keep} bytes quoted");
        }
        // 8 bytes of TCP are enough
        let f = error_quoting(&quoted[..64 + 8]);
        let x = facts(&f);
        assert_eq!(embedded(&f, &x).map(|e| e.dport), Some(443));
    }
}
