//! The director's forwarding modes on an Ethernet frame in place: NAT (rewrite the destination
//! to the server, or the source back to the VIP on replies, with RFC 1624 incremental checksum
//! updates of the IPv4 header and the TCP/UDP pseudo-header), gateway (direct routing: only the
//! destination MAC changes) and tunnel (IP-in-IP: an outer IPv4/IPv6 header written into the
//! headroom in front of the frame). No allocation; every length was checked by `wire::parse`
//! and is checked again here, so a wrong call returns an error rather than panicking.

use std::net::IpAddr;
use std::ops::Range;

use flowgate_config::flows::Family;

use crate::build::checksum;
use crate::wire::{field, IpFacts};

const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const TCP_CSUM: usize = 16;
const UDP_CSUM: usize = 6;
/// IP protocol numbers of the inner packet in a tunnel: IPv4-in-IP and IPv6-in-IP.
pub const PROTO_IPIP: u8 = 4;
pub const PROTO_IPV6: u8 = 41;
/// Hop limit of outer tunnel headers.
pub const TUNNEL_TTL: u8 = 64;

/// Why a rewrite could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    #[error("frame shorter than its parsed headers")]
    Truncated,
    #[error("the new address is not of the packet's family")]
    FamilyMismatch,
    #[error("not enough headroom for the tunnel header")]
    NoHeadroom,
    #[error("tunnelled packet would exceed 65535 bytes")]
    TooBig,
}

/// RFC 1624 (eqn. 3): the checksum `hc` after the 16-bit words `old` became `new`.
#[inline]
pub fn csum_replace(hc: u16, old: &[u8], new: &[u8]) -> u16 {
    let mut sum = u32::from(!hc);
    for (o, n) in old.chunks_exact(2).zip(new.chunks_exact(2)) {
        sum += u32::from(!u16::from_be_bytes([o[0], o[1]]));
        sum += u32::from(u16::from_be_bytes([n[0], n[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn read16(f: &[u8], at: usize) -> Result<u16, RewriteError> {
    let b = f.get(at..at + 2).ok_or(RewriteError::Truncated)?;
    Ok(u16::from_be_bytes([b[0], b[1]]))
}

fn write16(f: &mut [u8], at: usize, v: u16) -> Result<(), RewriteError> {
    f.get_mut(at..at + 2)
        .ok_or(RewriteError::Truncated)?
        .copy_from_slice(&v.to_be_bytes());
    Ok(())
}

/// Which end of the packet to rewrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Src,
    Dst,
}

/// Replace the source or destination address (and port, when given) of a TCP/UDP packet,
/// updating the IPv4 header checksum and the L4 checksum incrementally.
pub fn rewrite_endpoint(
    frame: &mut [u8],
    facts: &IpFacts,
    end: End,
    addr: IpAddr,
    port: Option<u16>,
) -> Result<(), RewriteError> {
    let l3 = facts.l3_offset;
    let l4 = facts.l4_offset;
    let new4;
    let new16;
    let (at, new): (usize, &[u8]) = match (facts.family, addr) {
        (Family::V4, IpAddr::V4(a)) => {
            new4 = a.octets();
            let off = match end {
                End::Src => field::IPV4_SRC,
                End::Dst => field::IPV4_DST,
            };
            (l3 + off, &new4)
        }
        (Family::V6, IpAddr::V6(a)) => {
            new16 = a.octets();
            let off = match end {
                End::Src => field::IPV6_SRC,
                End::Dst => field::IPV6_DST,
            };
            (l3 + off, &new16)
        }
        _ => return Err(RewriteError::FamilyMismatch),
    };
    let mut old = [0u8; 16];
    let old = &mut old[..new.len()];
    old.copy_from_slice(
        frame
            .get(at..at + new.len())
            .ok_or(RewriteError::Truncated)?,
    );

    // L4 checksum: the pseudo-header's address, and the port.
    let csum_at = match facts.proto {
        PROTO_TCP => Some(l4 + TCP_CSUM),
        PROTO_UDP => Some(l4 + UDP_CSUM),
        _ => None,
    };
    let port_at = l4
        + match end {
            End::Src => 0,
            End::Dst => 2,
        };
    if let Some(c_at) = csum_at {
        let mut c = read16(frame, c_at)?;
        // An IPv4 UDP checksum of 0 means "none": leave it.
        let skip = facts.proto == PROTO_UDP && facts.family == Family::V4 && c == 0;
        if !skip {
            c = csum_replace(c, old, new);
            if let Some(p) = port {
                let oldp = read16(frame, port_at)?;
                c = csum_replace(c, &oldp.to_be_bytes(), &p.to_be_bytes());
            }
            if facts.proto == PROTO_UDP && c == 0 {
                c = 0xffff;
            }
            write16(frame, c_at, c)?;
        }
    }
    if let Some(p) = port {
        if csum_at.is_some() {
            write16(frame, port_at, p)?;
        }
    }
    if facts.family == Family::V4 {
        let h = read16(frame, l3 + field::IPV4_CSUM)?;
        write16(frame, l3 + field::IPV4_CSUM, csum_replace(h, old, new))?;
    }
    frame[at..at + new.len()].copy_from_slice(new);
    Ok(())
}

/// NAT, client to server: the destination becomes the server (and its port, when it has one).
pub fn nat_forward(
    frame: &mut [u8],
    facts: &IpFacts,
    server: IpAddr,
    port: Option<u16>,
) -> Result<(), RewriteError> {
    rewrite_endpoint(frame, facts, End::Dst, server, port)
}

/// NAT, server to client: the source becomes the VIP and the port the client used.
pub fn nat_reply(
    frame: &mut [u8],
    facts: &IpFacts,
    vip: IpAddr,
    vport: u16,
) -> Result<(), RewriteError> {
    rewrite_endpoint(frame, facts, End::Src, vip, Some(vport))
}

/// Gateway (direct routing): the frame goes to the server's MAC, untouched otherwise.
pub fn set_dst_mac(frame: &mut [u8], mac: [u8; 6]) -> Result<(), RewriteError> {
    frame
        .get_mut(0..6)
        .ok_or(RewriteError::Truncated)?
        .copy_from_slice(&mac);
    Ok(())
}

/// The length of the outer header a tunnel to `remote` adds.
pub fn tunnel_overhead(remote: IpAddr) -> usize {
    match remote {
        IpAddr::V4(_) => field::IPV4_MIN_HDR,
        IpAddr::V6(_) => field::IPV6_HDR,
    }
}

/// Tunnel (IP-in-IP): the frame lies at `buf[frame]`, with at least
/// [`tunnel_overhead`]`(remote)` bytes of headroom in front of it (a DPDK mbuf's headroom, or a
/// buffer the caller prepared). The Ethernet header (with its VLAN tags) moves to the front of
/// the headroom, an outer IPv4 (protocol 4 or 41) or IPv6 (next header 4 or 41) header from
/// `local` to `remote` follows, then the untouched inner packet. Returns where the new frame
/// lies in `buf`. The caller still sets the MACs for the next hop.
pub fn encapsulate(
    buf: &mut [u8],
    frame: Range<usize>,
    facts: &IpFacts,
    local: IpAddr,
    remote: IpAddr,
) -> Result<Range<usize>, RewriteError> {
    if local.is_ipv4() != remote.is_ipv4() {
        return Err(RewriteError::FamilyMismatch);
    }
    let over = tunnel_overhead(remote);
    if frame.start < over {
        return Err(RewriteError::NoHeadroom);
    }
    let f = buf.get(frame.clone()).ok_or(RewriteError::Truncated)?;
    let l3 = facts.l3_offset;
    let (inner_len, tos, df, inner_proto) = match facts.family {
        Family::V4 => {
            let total = usize::from(read16(f, l3 + field::IPV4_TOTAL_LEN)?);
            let tos = *f.get(l3 + 1).ok_or(RewriteError::Truncated)?;
            let df = read16(f, l3 + field::IPV4_FRAG)? & 0x4000;
            (total, tos, df, PROTO_IPIP)
        }
        Family::V6 => {
            let payload = usize::from(read16(f, l3 + field::IPV6_PAYLOAD_LEN)?);
            let tc = (read16(f, l3)? >> 4) as u8;
            (field::IPV6_HDR + payload, tc, 0x4000, PROTO_IPV6)
        }
    };
    if l3 + inner_len > f.len() {
        return Err(RewriteError::Truncated);
    }
    let start = frame.start - over;
    // Ethernet header (and tags) to the front; the outer header takes its place.
    buf.copy_within(frame.start..frame.start + l3, start);
    let ethertype = match remote {
        IpAddr::V4(_) => field::ETHERTYPE_IPV4,
        IpAddr::V6(_) => field::ETHERTYPE_IPV6,
    };
    write16(buf, start + l3 - 2, ethertype)?;
    let o = start + l3;
    match (local, remote) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = u16::try_from(over + inner_len).map_err(|_| RewriteError::TooBig)?;
            let h = &mut buf[o..o + field::IPV4_MIN_HDR];
            h.fill(0);
            h[0] = 0x45;
            h[1] = tos;
            h[2..4].copy_from_slice(&total.to_be_bytes());
            h[6..8].copy_from_slice(&df.to_be_bytes());
            h[field::IPV4_TTL] = TUNNEL_TTL;
            h[field::IPV4_PROTO] = inner_proto;
            h[12..16].copy_from_slice(&s.octets());
            h[16..20].copy_from_slice(&d.octets());
            let c = checksum(h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let payload = u16::try_from(inner_len).map_err(|_| RewriteError::TooBig)?;
            let h = &mut buf[o..o + field::IPV6_HDR];
            h.fill(0);
            h[0] = 0x60 | (tos >> 4);
            h[1] = tos << 4;
            h[4..6].copy_from_slice(&payload.to_be_bytes());
            h[field::IPV6_NEXT_HDR] = inner_proto;
            h[field::IPV6_HOP_LIMIT] = TUNNEL_TTL;
            h[8..24].copy_from_slice(&s.octets());
            h[24..40].copy_from_slice(&d.octets());
        }
        _ => return Err(RewriteError::FamilyMismatch),
    }
    Ok(start..o + over + inner_len)
}
