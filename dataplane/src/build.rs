//! Frame builders: real Ethernet/IP/L4 bytes with correct lengths and checksums, for tests,
//! benchmark pcaps and the demo's fixtures. Not on the packet path (production code uses
//! `wire` directly), but written with `wire`'s views and checksum like it.

use std::net::IpAddr;

use crate::wire::checksum as csum;
use crate::wire::{
    ethernet, ethertype, icmpv4, ipv4, ipv6, proto, tcp, udp, EthernetFrame, Icmpv4Packet,
    Icmpv6Packet, Ipv4Packet, Ipv6Packet, TcpPacket, UdpPacket, VlanTag,
};

/// The checksum helpers, for the tests and labs that recompute checksums from scratch.
pub use crate::wire::checksum::{checksum, ones_sum};

/// What to put in a frame.
#[derive(Debug, Clone, Copy)]
pub struct FrameSpec {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub vlan: Option<u16>,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    /// TCP/UDP ports, or (ICMP type, code) for ICMP.
    pub sport: u16,
    pub dport: u16,
    pub ttl: u8,
    /// IPv4: set a non-zero fragment offset (a non-first fragment, no L4 header).
    pub non_first_fragment: bool,
    /// Payload bytes after the L4 header.
    pub payload: usize,
}

impl FrameSpec {
    pub fn new(src: IpAddr, dst: IpAddr, proto: u8, sport: u16, dport: u16) -> FrameSpec {
        FrameSpec {
            src_mac: [0x02, 0, 0, 0, 0, 1],
            dst_mac: [0x02, 0, 0, 0, 0, 2],
            vlan: None,
            src,
            dst,
            proto,
            sport,
            dport,
            ttl: 64,
            non_first_fragment: false,
            payload: 0,
        }
    }
}

/// A non-first fragment's offset, in 8-byte units.
const FRAGMENT_OFFSET: u16 = 185;
/// TCP's window in built segments.
const TCP_WINDOW: u16 = 64240;

/// The L4 header of `spec` (checksum zero), or nothing for another protocol.
fn l4_header(spec: &FrameSpec) -> Vec<u8> {
    match spec.proto {
        proto::TCP => {
            let mut h = vec![0u8; tcp::field::MIN_HEADER_LEN];
            let mut t = TcpPacket::new_unchecked(&mut h[..]);
            t.set_src_port(spec.sport);
            t.set_dst_port(spec.dport);
            t.set_header_len(tcp::field::MIN_HEADER_LEN);
            t.set_flags(tcp::flags::SYN);
            t.set_window_len(TCP_WINDOW);
            h
        }
        proto::UDP => {
            let mut h = vec![0u8; udp::field::HEADER_LEN];
            let mut u = UdpPacket::new_unchecked(&mut h[..]);
            u.set_src_port(spec.sport);
            u.set_dst_port(spec.dport);
            h
        }
        proto::ICMP | proto::ICMPV6 => {
            // type, code, checksum, identifier, sequence: alike in ICMP and ICMPv6
            let mut h = vec![0u8; icmpv4::field::HEADER_LEN];
            let mut m = Icmpv4Packet::new_unchecked(&mut h[..]);
            m.set_msg_type(spec.sport as u8);
            m.set_msg_code(spec.dport as u8);
            h
        }
        _ => Vec::new(),
    }
}

/// Fills the TCP/UDP/ICMP checksum of `l4` (a whole L4 packet) given its pseudo-header sum
/// (ignored by ICMPv4, which has none; ICMP of the other family gets no checksum).
fn fill_l4_checksum(proto_: u8, v6: bool, pseudo: u32, l4: &mut [u8]) {
    match proto_ {
        proto::TCP if l4.len() >= tcp::field::MIN_HEADER_LEN => {
            TcpPacket::new_unchecked(l4).fill_checksum(pseudo)
        }
        proto::UDP if l4.len() >= udp::field::HEADER_LEN => {
            let len = l4.len() as u16;
            let mut u = UdpPacket::new_unchecked(l4);
            u.set_len(len);
            u.fill_checksum(pseudo)
        }
        proto::ICMP if !v6 && l4.len() >= icmpv4::field::HEADER_LEN => {
            Icmpv4Packet::new_unchecked(l4).fill_checksum()
        }
        proto::ICMPV6 if v6 && l4.len() >= icmpv4::field::HEADER_LEN => {
            Icmpv6Packet::new_unchecked(&mut *l4).set_checksum(0);
            let c = csum::finish(csum::ones_sum(pseudo, l4));
            Icmpv6Packet::new_unchecked(l4).set_checksum(c);
        }
        _ => {}
    }
}

/// Build the frame `spec` describes, with valid lengths and IP/L4 checksums.
pub fn frame(spec: &FrameSpec) -> Vec<u8> {
    let mut l4 = if spec.non_first_fragment {
        Vec::new()
    } else {
        l4_header(spec)
    };
    l4.extend((0..spec.payload).map(|i| i as u8));
    let mut out = vec![0u8; 14];
    let mut eth = EthernetFrame::new_unchecked(&mut out[..]);
    eth.set_dst_addr(flowgate_config::appliance::MacAddr(spec.dst_mac));
    eth.set_src_addr(flowgate_config::appliance::MacAddr(spec.src_mac));
    if let Some(vid) = spec.vlan {
        eth.set_ethertype(ethertype::VLAN);
        let mut tag = [0u8; 4];
        VlanTag::new_unchecked(&mut tag[..]).set_vlan_id(vid);
        out.extend_from_slice(&tag);
    }
    // the EtherType of the IP packet: the frame's or its tag's
    let et_at = out.len() - 2;
    match (spec.src, spec.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out[et_at..].copy_from_slice(&ethertype::IPV4.to_be_bytes());
            let mut ip = [0u8; 20];
            let mut p = Ipv4Packet::new_unchecked(&mut ip[..]);
            p.set_version_header_len(20);
            p.set_total_len((20 + l4.len()) as u16);
            if spec.non_first_fragment {
                p.set_frag_offset(FRAGMENT_OFFSET);
            }
            p.set_ttl(spec.ttl);
            p.set_protocol(spec.proto);
            p.set_src_addr(s);
            p.set_dst_addr(d);
            p.fill_checksum();
            if !spec.non_first_fragment {
                let pseudo = if spec.proto == proto::ICMP {
                    0
                } else {
                    csum::pseudo_header_v4(s, d, spec.proto, l4.len() as u16)
                };
                fill_l4_checksum(spec.proto, false, pseudo, &mut l4);
            }
            out.extend_from_slice(&ip);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            out[et_at..].copy_from_slice(&ethertype::IPV6.to_be_bytes());
            let mut ip = [0u8; 40];
            let mut next = spec.proto;
            let mut ext = Vec::new();
            if spec.non_first_fragment {
                ext = vec![0u8; 8];
                ipv6::emit_fragment_header(&mut ext, spec.proto, 8, false, 1);
                next = proto::FRAGMENT;
            }
            let mut p = Ipv6Packet::new_unchecked(&mut ip[..]);
            p.set_version_traffic_class(0);
            p.set_payload_len((ext.len() + l4.len()) as u16);
            p.set_next_header(next);
            p.set_hop_limit(spec.ttl);
            p.set_src_addr(s);
            p.set_dst_addr(d);
            if !spec.non_first_fragment {
                let pseudo = csum::pseudo_header_v6(&s, &d, spec.proto, l4.len() as u32);
                fill_l4_checksum(spec.proto, true, pseudo, &mut l4);
            }
            out.extend_from_slice(&ip);
            out.extend_from_slice(&ext);
        }
        _ => panic!("FrameSpec with mixed address families"),
    }
    out.extend_from_slice(&l4);
    out
}

/// The frame for one ClassBench trace packet (IPv4 `src` -> `dst`, protocol `proto`): TCP SYN /
/// UDP with the trace's ports for protocols 6 / 17, an ICMP echo request for 1, a bare IPv4
/// header plus payload for anything else; at least `min_len` bytes (without FCS).
pub fn trace_frame(
    protocol: u8,
    src: u32,
    dst: u32,
    sport: u16,
    dport: u16,
    min_len: usize,
) -> Vec<u8> {
    const ETH_IP: usize = ethernet::field::HEADER_LEN + ipv4::field::MIN_HEADER_LEN;
    let (sport, dport) = match protocol {
        proto::TCP | proto::UDP => (sport, dport),
        proto::ICMP => (u16::from(icmpv4::msg::ECHO_REQUEST), 0),
        _ => (0, 0),
    };
    let l4_hdr = match protocol {
        proto::TCP => tcp::field::MIN_HEADER_LEN,
        proto::UDP => udp::field::HEADER_LEN,
        proto::ICMP => icmpv4::field::HEADER_LEN,
        _ => 0,
    };
    let mut spec = FrameSpec::new(
        IpAddr::V4(std::net::Ipv4Addr::from(src)),
        IpAddr::V4(std::net::Ipv4Addr::from(dst)),
        protocol,
        sport,
        dport,
    );
    // Other protocols get at least a few payload bytes so the IP datagram is not empty.
    spec.payload = min_len
        .saturating_sub(ETH_IP + l4_hdr)
        .max(if l4_hdr == 0 { 8 } else { 0 });
    frame(&spec)
}

/// Writes a classic pcap file (little endian, v2.4, microsecond timestamps, snaplen 65535,
/// linktype 1 = Ethernet): the input of `net_pcap`'s `rx_pcap` in tests and benchmarks.
/// Timestamps start at zero, 1 us apart.
#[derive(Debug)]
pub struct PcapWriter<W: std::io::Write> {
    out: W,
    frames: usize,
}

impl<W: std::io::Write> PcapWriter<W> {
    /// Writes the file header.
    pub fn new(mut out: W) -> std::io::Result<Self> {
        let mut h = [0u8; 24];
        h[0..4].copy_from_slice(&PCAP_MAGIC_US.to_le_bytes());
        h[4..6].copy_from_slice(&2u16.to_le_bytes());
        h[6..8].copy_from_slice(&4u16.to_le_bytes());
        // thiszone (4) and sigfigs (4) stay zero
        h[16..20].copy_from_slice(&65535u32.to_le_bytes());
        h[20..24].copy_from_slice(&1u32.to_le_bytes());
        out.write_all(&h)?;
        Ok(PcapWriter { out, frames: 0 })
    }

    /// Appends one frame.
    pub fn push(&mut self, frame: &[u8]) -> std::io::Result<()> {
        let n = self.frames;
        let len = u32::try_from(frame.len())
            .map_err(|_| std::io::Error::other("frame longer than 4 GiB"))?;
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&((n / 1_000_000) as u32).to_le_bytes());
        h[4..8].copy_from_slice(&((n % 1_000_000) as u32).to_le_bytes());
        h[8..12].copy_from_slice(&len.to_le_bytes());
        h[12..16].copy_from_slice(&len.to_le_bytes());
        self.out.write_all(&h)?;
        self.out.write_all(frame)?;
        self.frames += 1;
        Ok(())
    }

    /// Frames written so far.
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Flushes and gives the writer back.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Magic of a little-endian pcap file with microsecond timestamps.
const PCAP_MAGIC_US: u32 = 0xa1b2_c3d4;
/// Magic of a little-endian pcap file with nanosecond timestamps (what `net_pcap`'s
/// `tx_pcap` writes).
const PCAP_MAGIC_NS: u32 = 0xa1b2_3c4d;

/// The frames of a little-endian classic pcap file (either timestamp precision), or `None`
/// when `bytes` is not one (bad magic, a record cut short).
pub fn pcap_frames(bytes: &[u8]) -> Option<Vec<&[u8]>> {
    let magic = u32::from_le_bytes(bytes.get(0..4)?.try_into().ok()?);
    if magic != PCAP_MAGIC_US && magic != PCAP_MAGIC_NS {
        return None;
    }
    let mut at = 24;
    let mut frames = Vec::new();
    while at < bytes.len() {
        let h = bytes.get(at..at + 16)?;
        let caplen = u32::from_le_bytes(h[8..12].try_into().ok()?) as usize;
        frames.push(bytes.get(at + 16..at + 16 + caplen)?);
        at += 16 + caplen;
    }
    Some(frames)
}

#[cfg(test)]
mod pcap_tests {
    use super::*;

    #[test]
    fn a_written_pcap_reads_back_frame_by_frame() {
        let mut w = PcapWriter::new(Vec::new()).unwrap_or_else(|e| panic!("{e}"));
        let frames = [vec![1u8; 60], vec![2u8; 61], vec![]];
        for f in &frames {
            w.push(f).unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(w.frames(), 3);
        let bytes = w.finish().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(bytes.len(), 24 + 3 * 16 + 121);
        let back = pcap_frames(&bytes).unwrap_or_else(|| panic!("not a pcap"));
        assert_eq!(
            back,
            frames.iter().map(|f| f.as_slice()).collect::<Vec<_>>()
        );
        // cut short, or not a pcap at all
        assert_eq!(pcap_frames(&bytes[..bytes.len() - 1]), None);
        assert_eq!(pcap_frames(&[0u8; 24]), None);
    }
}
