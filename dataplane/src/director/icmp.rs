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

use flowgate_config::flows::{Family, L4};

use super::rewrite::{csum_replace, End, RewriteError};
use crate::build::ones_sum;
use crate::wire::{self, field, IpFacts};

const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_ICMPV6: u8 = 58;
/// The ICMP header in front of the quoted packet: type, code, checksum, 4 more bytes.
const ICMP_HDR: usize = 8;
const ICMP_CSUM: usize = 2;
/// Bytes of the quoted TCP/UDP header required: the ports (and UDP's checksum), the 8 bytes
/// every ICMP error carries.
const QUOTED_L4: usize = 8;
const TCP_CSUM: usize = 16;
const UDP_CSUM: usize = 6;
const IPV4_MF: u16 = 0x2000;

const EXT_HOP_BY_HOP: u8 = 0;
const EXT_ROUTING: u8 = 43;
const EXT_FRAGMENT: u8 = 44;
const EXT_DEST_OPTS: u8 = 60;

/// The ICMP (ICMPv6 for IPv6) types that are errors about a packet: IPv4 destination
/// unreachable (3), source quench (4), time exceeded (11), parameter problem (12); ICMPv6
/// destination unreachable (1), packet too big (2), time exceeded (3), parameter problem (4).
#[inline]
pub fn is_error(family: Family, icmptype: u8) -> bool {
    match family {
        Family::V4 => matches!(icmptype, 3 | 4 | 11 | 12),
        Family::V6 => matches!(icmptype, 1..=4),
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

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Where the outer packet ends: its IP length, within the frame. `None` for an IPv4 first
/// fragment (the message is not all here) or an IPv6 packet with extension headers (not
/// handled: ICMPv6 errors carry none in practice).
fn outer_end(frame: &[u8], facts: &IpFacts) -> Option<usize> {
    let l3 = facts.l3_offset;
    let end = match facts.family {
        Family::V4 => {
            if be16(frame, l3 + field::IPV4_FRAG)? & IPV4_MF != 0 {
                return None;
            }
            l3 + wire::ip_len(frame, l3, Family::V4)?
        }
        Family::V6 => {
            if facts.l4_offset != l3 + field::IPV6_HDR {
                return None;
            }
            l3 + wire::ip_len(frame, l3, Family::V6)?
        }
    };
    (end <= frame.len()).then_some(end)
}

/// The TCP/UDP packet quoted by the ICMP error `frame` (parsed as `facts`), or `None` when
/// it is no ICMP error, or quotes something else (another protocol, a non-first fragment), or
/// anything is cut short.
pub fn embedded(frame: &[u8], facts: &IpFacts) -> Option<Embedded> {
    let L4::Icmp { icmptype } = facts.l4 else {
        return None;
    };
    if !is_error(facts.family, icmptype) {
        return None;
    }
    let end = outer_end(frame, facts)?;
    let l3 = facts.l4_offset + ICMP_HDR;
    let ip = frame.get(l3..end)?;
    let first = *ip.first()?;
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    let (proto, hdr) = match facts.family {
        Family::V4 => {
            let ihl = usize::from(first & 0x0f) * 4;
            if first >> 4 != 4 || ihl < field::IPV4_MIN_HDR || ip.len() < ihl {
                return None;
            }
            if be16(ip, field::IPV4_FRAG)? & field::IPV4_FRAG_OFFSET_MASK != 0 {
                return None;
            }
            src[10] = 0xff;
            src[11] = 0xff;
            dst[10] = 0xff;
            dst[11] = 0xff;
            src[12..].copy_from_slice(ip.get(field::IPV4_SRC..field::IPV4_SRC + 4)?);
            dst[12..].copy_from_slice(ip.get(field::IPV4_DST..field::IPV4_DST + 4)?);
            (ip[field::IPV4_PROTO], ihl)
        }
        Family::V6 => {
            if first >> 4 != 6 || ip.len() < field::IPV6_HDR {
                return None;
            }
            src.copy_from_slice(ip.get(field::IPV6_SRC..field::IPV6_SRC + 16)?);
            dst.copy_from_slice(ip.get(field::IPV6_DST..field::IPV6_DST + 16)?);
            let mut next = ip[field::IPV6_NEXT_HDR];
            let mut off = field::IPV6_HDR;
            for _ in 0..field::MAX_IPV6_EXT {
                let len = match next {
                    EXT_HOP_BY_HOP | EXT_ROUTING | EXT_DEST_OPTS => {
                        (usize::from(*ip.get(off + 1)?) + 1) * 8
                    }
                    EXT_FRAGMENT => {
                        if be16(ip, off + 2)? >> 3 != 0 {
                            return None;
                        }
                        8
                    }
                    _ => break,
                };
                next = *ip.get(off)?;
                off += len;
            }
            (next, off)
        }
    };
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return None;
    }
    let l4 = ip.get(hdr..hdr + QUOTED_L4)?;
    Some(Embedded {
        family: facts.family,
        proto,
        src,
        sport: u16::from_be_bytes([l4[0], l4[1]]),
        dst,
        dport: u16::from_be_bytes([l4[2], l4[3]]),
        l3,
        l4: l3 + hdr,
        end,
    })
}

/// The address bytes of `a` (16-byte form) for `family`.
fn addr_bytes(a: &[u8; 16], family: Family) -> &[u8] {
    match family {
        Family::V4 => &a[12..],
        Family::V6 => &a[..],
    }
}

fn addr_at(l3: usize, family: Family, end: End) -> usize {
    l3 + match (family, end) {
        (Family::V4, End::Src) => field::IPV4_SRC,
        (Family::V4, End::Dst) => field::IPV4_DST,
        (Family::V6, End::Src) => field::IPV6_SRC,
        (Family::V6, End::Dst) => field::IPV6_DST,
    }
}

/// Replace the address at `at` by `new` (4 or 16 bytes), updating the IPv4 header checksum at
/// `ip_csum` when given; returns the old bytes.
fn replace_addr(
    frame: &mut [u8],
    at: usize,
    new: &[u8],
    ip_csum: Option<usize>,
) -> Result<[u8; 16], RewriteError> {
    let mut old = [0u8; 16];
    let cur = frame
        .get_mut(at..at + new.len())
        .ok_or(RewriteError::Truncated)?;
    old[..new.len()].copy_from_slice(cur);
    cur.copy_from_slice(new);
    if let Some(c) = ip_csum {
        let b = frame.get_mut(c..c + 2).ok_or(RewriteError::Truncated)?;
        let h = csum_replace(u16::from_be_bytes([b[0], b[1]]), &old[..new.len()], new);
        b.copy_from_slice(&h.to_be_bytes());
    }
    Ok(old)
}

/// The folded one's-complement sum of the ICMP message `frame[l4..end]` as it stands (ICMPv6:
/// with the pseudo-header of the outer addresses): 0xffff when its checksum is right.
fn icmp_sum(frame: &[u8], facts: &IpFacts, end: usize) -> Option<u32> {
    let l4 = facts.l4_offset;
    let msg = frame.get(l4..end)?;
    let base = match facts.family {
        Family::V4 => 0,
        Family::V6 => {
            let l3 = facts.l3_offset;
            let addrs = frame.get(l3 + field::IPV6_SRC..l3 + field::IPV6_DST + 16)?;
            let len = u32::try_from(msg.len()).ok()?;
            let mut tail = [0u8; 8];
            tail[..4].copy_from_slice(&len.to_be_bytes());
            tail[7] = PROTO_ICMPV6;
            ones_sum(ones_sum(0, addrs), &tail)
        }
    };
    Some(ones_sum(base, msg))
}

/// The ICMP message's checksum verifies.
pub fn checksum_ok(frame: &[u8], facts: &IpFacts, emb: &Embedded) -> bool {
    icmp_sum(frame, facts, emb.end) == Some(0xffff)
}

/// Translate the ICMP error `frame` quoting `emb`: the quoted packet's `inner` end becomes
/// `addr:port` (16-byte form, of the packet's family); when `outer` is given, that end of the
/// outer header becomes its address. Checksums as the module says. The caller checked
/// [`checksum_ok`] first.
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
    let v4 = family == Family::V4;
    let new = addr_bytes(addr, family);

    // the quoted header: address (and its IPv4 header checksum), port, L4 checksum
    let at = addr_at(emb.l3, family, inner);
    let old = replace_addr(frame, at, new, v4.then_some(emb.l3 + field::IPV4_CSUM))?;
    let port_at = emb.l4
        + match inner {
            End::Src => 0,
            End::Dst => 2,
        };
    let oldp = frame
        .get_mut(port_at..port_at + 2)
        .ok_or(RewriteError::Truncated)?;
    let oldp_b = [oldp[0], oldp[1]];
    oldp.copy_from_slice(&port.to_be_bytes());
    let csum_at = emb.l4
        + match emb.proto {
            PROTO_TCP => TCP_CSUM,
            _ => UDP_CSUM,
        };
    if let Some(b) = frame.get_mut(csum_at..(csum_at + 2).min(emb.end)) {
        if b.len() == 2 {
            let c = u16::from_be_bytes([b[0], b[1]]);
            let none = emb.proto == PROTO_UDP && v4 && c == 0;
            if !none {
                let mut c = csum_replace(c, &old[..new.len()], new);
                c = csum_replace(c, &oldp_b, &port.to_be_bytes());
                if emb.proto == PROTO_UDP && c == 0 {
                    c = 0xffff;
                }
                b.copy_from_slice(&c.to_be_bytes());
            }
        }
    }

    // the outer header
    if let Some((end, a)) = outer {
        let at = addr_at(facts.l3_offset, family, end);
        replace_addr(
            frame,
            at,
            addr_bytes(a, family),
            v4.then_some(facts.l3_offset + field::IPV4_CSUM),
        )?;
    }

    // the ICMP checksum, over the message as it is now
    let c_at = facts.l4_offset + ICMP_CSUM;
    frame
        .get_mut(c_at..c_at + 2)
        .ok_or(RewriteError::Truncated)?
        .fill(0);
    let sum = icmp_sum(frame, facts, emb.end).ok_or(RewriteError::Truncated)?;
    frame[c_at..c_at + 2].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    Ok(())
}

/// Bytes an ICMP "too big" error puts in front of the packet it quotes (outer IP header and
/// ICMP header): the headroom [`too_big`] needs.
pub fn too_big_overhead(family: Family) -> usize {
    match family {
        Family::V4 => field::IPV4_MIN_HDR + ICMP_HDR,
        Family::V6 => field::IPV6_HDR + ICMP_HDR,
    }
}

/// The most an error quotes, as Linux: the error fits in 576 bytes (IPv4) or the IPv6 minimum
/// MTU, 1280 bytes.
const ERROR_MAX_V4: usize = 576;
const ERROR_MAX_V6: usize = 1280;
const TOO_BIG_TTL: u8 = 64;

/// Turn the frame lying at `buf[over..]` (`over` = [`too_big_overhead`] of its family; its IP
/// header at `l3` from the frame's start) into the ICMP error that tells its sender it does
/// not fit: IPv4 "fragmentation needed" (type 3 code 4) or ICMPv6 "packet too big" (type 2),
/// announcing `mtu`, from the packet's destination to its source, quoting the packet's start
/// (as much as the error's size limit allows). The Ethernet header (VLAN tags kept) moves to
/// the front, addressed back to the frame's sender from `mac`. Returns the error frame's
/// length from `buf[0]`: the caller trims the rest.
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
    if l3 < 14 || l3 + field::IPV4_MIN_HDR > frame_len {
        return Err(RewriteError::Truncated);
    }
    // the Ethernet header to the front: the new IP header and ICMP header then sit between
    // it and the quoted packet, which stays where it is
    buf.copy_within(over..over + l3, 0);
    // back to the sender (its source MAC), from `mac`
    buf.copy_within(6..12, 0);
    buf[6..12].copy_from_slice(&mac);
    let quoted_at = l3 + over;
    // the quoted packet's own length (not the Ethernet padding after it)
    let packet_len = wire::ip_len(buf, quoted_at, family).ok_or(RewriteError::Truncated)?;
    let quoted_avail = (frame_len - l3).min(packet_len);
    let (ip_len, max) = match family {
        Family::V4 => (field::IPV4_MIN_HDR, ERROR_MAX_V4),
        Family::V6 => (field::IPV6_HDR, ERROR_MAX_V6),
    };
    let quote = quoted_avail.min(max - ip_len - ICMP_HDR);
    let icmp_len = ICMP_HDR + quote;
    let icmp_at = l3 + ip_len;
    match family {
        Family::V4 => {
            let (mut src, mut dst) = ([0u8; 4], [0u8; 4]);
            src.copy_from_slice(&buf[quoted_at + field::IPV4_DST..quoted_at + field::IPV4_DST + 4]);
            dst.copy_from_slice(&buf[quoted_at + field::IPV4_SRC..quoted_at + field::IPV4_SRC + 4]);
            let h = &mut buf[l3..l3 + ip_len];
            h.fill(0);
            h[0] = 0x45;
            h[1] = 0xc0; // internetwork control, as Linux's ICMP errors
            h[2..4].copy_from_slice(&((ip_len + icmp_len) as u16).to_be_bytes());
            h[field::IPV4_TTL] = TOO_BIG_TTL;
            h[field::IPV4_PROTO] = 1;
            h[field::IPV4_SRC..field::IPV4_SRC + 4].copy_from_slice(&src);
            h[field::IPV4_DST..field::IPV4_DST + 4].copy_from_slice(&dst);
            let c = !(ones_sum(0, h) as u16);
            h[field::IPV4_CSUM..field::IPV4_CSUM + 2].copy_from_slice(&c.to_be_bytes());
            let m = &mut buf[icmp_at..icmp_at + ICMP_HDR];
            m.fill(0);
            m[0] = 3;
            m[1] = 4;
            m[6..8].copy_from_slice(&(mtu.min(0xffff) as u16).to_be_bytes());
            let c = !(ones_sum(0, &buf[icmp_at..icmp_at + icmp_len]) as u16);
            buf[icmp_at + ICMP_CSUM..icmp_at + ICMP_CSUM + 2].copy_from_slice(&c.to_be_bytes());
        }
        Family::V6 => {
            if quoted_avail < field::IPV6_HDR {
                return Err(RewriteError::Truncated);
            }
            let (mut src, mut dst) = ([0u8; 16], [0u8; 16]);
            src.copy_from_slice(
                &buf[quoted_at + field::IPV6_DST..quoted_at + field::IPV6_DST + 16],
            );
            dst.copy_from_slice(
                &buf[quoted_at + field::IPV6_SRC..quoted_at + field::IPV6_SRC + 16],
            );
            let h = &mut buf[l3..l3 + ip_len];
            h.fill(0);
            h[0] = 0x60;
            h[field::IPV6_PAYLOAD_LEN..field::IPV6_PAYLOAD_LEN + 2]
                .copy_from_slice(&(icmp_len as u16).to_be_bytes());
            h[field::IPV6_NEXT_HDR] = PROTO_ICMPV6;
            h[field::IPV6_HOP_LIMIT] = TOO_BIG_TTL;
            h[field::IPV6_SRC..field::IPV6_SRC + 16].copy_from_slice(&src);
            h[field::IPV6_DST..field::IPV6_DST + 16].copy_from_slice(&dst);
            let m = &mut buf[icmp_at..icmp_at + ICMP_HDR];
            m.fill(0);
            m[0] = 2;
            m[4..8].copy_from_slice(&mtu.to_be_bytes());
            let mut pseudo = [0u8; 40];
            pseudo[..16].copy_from_slice(&src);
            pseudo[16..32].copy_from_slice(&dst);
            pseudo[32..36].copy_from_slice(&(icmp_len as u32).to_be_bytes());
            pseudo[39] = PROTO_ICMPV6;
            let sum = ones_sum(ones_sum(0, &pseudo), &buf[icmp_at..icmp_at + icmp_len]);
            let c = !(sum as u16);
            buf[icmp_at + ICMP_CSUM..icmp_at + ICMP_CSUM + 2].copy_from_slice(&c.to_be_bytes());
        }
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
            crate::build::checksum(&err[l3..l3 + 20]),
            0,
            "IPv4 header checksum"
        );
        let icmp = &err[facts.l4_offset..];
        assert_eq!((icmp[0], icmp[1]), (3, 4));
        assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1480);
        assert_eq!(crate::build::checksum(icmp), 0, "ICMP checksum");
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
        assert_eq!(crate::build::checksum(&buf[14 + 20..len]), 0);
    }

    #[test]
    fn no_headroom_or_no_packet_is_an_error() {
        let mut tiny = vec![0u8; 20];
        assert!(too_big(&mut tiny, 14, Family::V4, 1480, MAC).is_err());
        let mut short = vec![0u8; 28 + 14 + 10];
        assert!(too_big(&mut short, 14, Family::V4, 1480, MAC).is_err());
    }
}
