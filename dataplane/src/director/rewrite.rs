//! The director's forwarding modes on an Ethernet frame in place: NAT (rewrite the destination
//! to the server, or the source back to the VIP on replies, with RFC 1624 incremental checksum
//! updates of the IPv4 header and the TCP/UDP pseudo-header), gateway (direct routing: only the
//! destination MAC changes) and tunnel (IP-in-IP: an outer IPv4/IPv6 header written into the
//! headroom in front of the frame). No allocation; every length was checked by `wire::parse`
//! and is checked again here, so a wrong call returns an error rather than panicking.

use std::net::IpAddr;
use std::ops::Range;

use flowgate_config::appliance::MacAddr;
use flowgate_config::flows::Family;

use crate::wire::{checksum, ethernet, ethertype, ipv4, ipv6, proto, udp};
use crate::wire::{EthernetFrame, IpFacts, Ipv4Packet, Ipv6Packet, PortsHeader};

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

/// Which end of the packet to rewrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Src,
    Dst,
}

/// An address as it was and as it became (4 or 16 bytes), for the checksums that cover it.
#[derive(Debug, Clone, Copy)]
pub(super) struct AddrChange {
    old: [u8; 16],
    new: [u8; 16],
    width: usize,
}

impl AddrChange {
    pub(super) fn before(&self) -> &[u8] {
        &self.old[..self.width]
    }

    pub(super) fn after(&self) -> &[u8] {
        &self.new[..self.width]
    }
}

/// Replaces the `end` address of the IP header at the start of `ip` (an IPv4 header's
/// checksum updated incrementally) by `addr`, of the header's `family`. Checks everything
/// before writing anything.
pub(super) fn replace_address(
    ip: &mut [u8],
    family: Family,
    end: End,
    addr: IpAddr,
) -> Result<AddrChange, RewriteError> {
    let mut change = AddrChange {
        old: [0; 16],
        new: [0; 16],
        width: 0,
    };
    match (family, addr) {
        (Family::V4, IpAddr::V4(a)) => {
            let mut p = Ipv4Packet::new_checked_header(ip).map_err(|_| RewriteError::Truncated)?;
            let old = match end {
                End::Src => p.replace_src_addr(a),
                End::Dst => p.replace_dst_addr(a),
            };
            change.old[..4].copy_from_slice(&old.octets());
            change.new[..4].copy_from_slice(&a.octets());
            change.width = 4;
        }
        (Family::V6, IpAddr::V6(a)) => {
            let mut p = Ipv6Packet::new_checked_header(ip).map_err(|_| RewriteError::Truncated)?;
            change.old = match end {
                End::Src => p.src_bytes(),
                End::Dst => p.dst_bytes(),
            };
            match end {
                End::Src => p.set_src_addr(a),
                End::Dst => p.set_dst_addr(a),
            }
            change.new = a.octets();
            change.width = 16;
        }
        _ => return Err(RewriteError::FamilyMismatch),
    }
    Ok(change)
}

/// The TCP/UDP side of a changed address: the checksum updated incrementally for the
/// pseudo-header's address (and the port, when it changes; RFC 1624), then the port written.
/// An IPv4 UDP checksum of 0 means "none" and stays 0; a UDP checksum that would become 0 is
/// sent as 0xffff. A checksum the buffer does not hold (a short ICMP quote) is left out.
pub(super) fn rewrite_ports(
    l4: &mut PortsHeader<&mut [u8]>,
    family: Family,
    end: End,
    addr: &AddrChange,
    port: Option<u16>,
) {
    let old_port = match end {
        End::Src => l4.src_port(),
        End::Dst => l4.dst_port(),
    };
    if let Some(mut c) = l4.checksum() {
        let udp = l4.protocol() == proto::UDP;
        if !(udp && family == Family::V4 && c == 0) {
            c = checksum::update(c, addr.before(), addr.after());
            if let Some(p) = port {
                c = checksum::update16(c, old_port, p);
            }
            if udp {
                c = udp::nonzero_checksum(c);
            }
            l4.set_checksum(c);
        }
    }
    match (end, port) {
        (End::Src, Some(p)) => l4.set_src_port(p),
        (End::Dst, Some(p)) => l4.set_dst_port(p),
        (_, None) => {}
    }
}

/// Replace the source or destination address (and port, when given) of a TCP/UDP packet,
/// updating the IPv4 header checksum and the L4 checksum incrementally. The address of
/// another protocol's packet is replaced, its port (it has none) is not. On error the frame
/// is unchanged.
pub fn rewrite_endpoint(
    frame: &mut [u8],
    facts: &IpFacts,
    end: End,
    addr: IpAddr,
    port: Option<u16>,
) -> Result<(), RewriteError> {
    let (l3, l4) = (facts.l3_offset, facts.l4_offset);
    if l3 > l4 || l4 > frame.len() {
        return Err(RewriteError::Truncated);
    }
    let (head, rest) = frame.split_at_mut(l4);
    let mut ports = match facts.proto {
        proto::TCP | proto::UDP => {
            let p =
                PortsHeader::new_checked(rest, facts.proto).map_err(|_| RewriteError::Truncated)?;
            // a whole packet (parsed) holds its checksum
            p.checksum().ok_or(RewriteError::Truncated)?;
            Some(p)
        }
        _ => None,
    };
    let change = replace_address(&mut head[l3..], facts.family, end, addr)?;
    if let Some(p) = ports.as_mut() {
        rewrite_ports(p, facts.family, end, &change, port);
    }
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
    EthernetFrame::new_checked(frame)
        .map_err(|_| RewriteError::Truncated)?
        .set_dst_addr(MacAddr(mac));
    Ok(())
}

/// The length of the outer header a tunnel to `remote` adds.
pub fn tunnel_overhead(remote: IpAddr) -> usize {
    match remote {
        IpAddr::V4(_) => ipv4::field::MIN_HEADER_LEN,
        IpAddr::V6(_) => ipv6::field::HEADER_LEN,
    }
}

/// Tunnel (IP-in-IP): the frame lies at `buf[frame]`, with at least
/// [`tunnel_overhead`]`(remote)` bytes of headroom in front of it (a DPDK mbuf's headroom, or a
/// buffer the caller prepared). The Ethernet header (with its VLAN tags) moves to the front of
/// the headroom, an outer IPv4 (protocol 4 or 41) or IPv6 (next header 4 or 41) header from
/// `local` to `remote` follows, then the untouched inner packet. Returns where the new frame
/// lies in `buf`. The caller still sets the MACs for the next hop. On error `buf` is
/// unchanged.
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
    let inner = f.get(l3..).ok_or(RewriteError::Truncated)?;
    // the inner packet's length, class of service and DF (IPv6 never fragments on the way)
    let (inner_len, tos, df, inner_proto) = match facts.family {
        Family::V4 => {
            let p = Ipv4Packet::new_checked(inner).map_err(|_| RewriteError::Truncated)?;
            (
                usize::from(p.total_len()),
                p.dscp_ecn(),
                p.dont_frag(),
                proto::IPIP,
            )
        }
        Family::V6 => {
            let p = Ipv6Packet::new_checked(inner).map_err(|_| RewriteError::Truncated)?;
            (p.total_len(), p.traffic_class(), true, proto::IPV6)
        }
    };
    let outer_len = u16::try_from(over + inner_len).map_err(|_| RewriteError::TooBig)?;
    if l3 < ethernet::field::HEADER_LEN {
        return Err(RewriteError::Truncated);
    }
    let start = frame.start - over;
    // Ethernet header (and tags) to the front; the outer header takes its place.
    buf.copy_within(frame.start..frame.start + l3, start);
    let out = &mut buf[start..start + l3 + over];
    let ethertype = match remote {
        IpAddr::V4(_) => ethertype::IPV4,
        IpAddr::V6(_) => ethertype::IPV6,
    };
    ethernet::set_network_ethertype(out, l3, ethertype).map_err(|_| RewriteError::Truncated)?;
    let h = &mut out[l3..];
    h.fill(0);
    match (local, remote) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut p = Ipv4Packet::new_unchecked(h);
            p.set_version_header_len(ipv4::field::MIN_HEADER_LEN);
            p.set_dscp_ecn(tos);
            p.set_total_len(outer_len);
            p.set_dont_frag(df);
            p.set_ttl(TUNNEL_TTL);
            p.set_protocol(inner_proto);
            p.set_src_addr(s);
            p.set_dst_addr(d);
            p.fill_checksum();
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut p = Ipv6Packet::new_unchecked(h);
            p.set_version_traffic_class(tos);
            p.set_payload_len(outer_len - over as u16);
            p.set_next_header(inner_proto);
            p.set_hop_limit(TUNNEL_TTL);
            p.set_src_addr(s);
            p.set_dst_addr(d);
        }
        _ => return Err(RewriteError::FamilyMismatch),
    }
    Ok(start..start + l3 + over + inner_len)
}
