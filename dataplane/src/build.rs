//! Frame builders: real Ethernet/IP/L4 bytes with correct lengths and checksums, for tests,
//! benchmark pcaps and the demo's fixtures. Not on the packet path.

use std::net::IpAddr;

use crate::wire::field;

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

/// The Internet checksum (RFC 1071) of `data`, folded, not complemented, starting at `sum`.
pub fn ones_sum(mut sum: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum
}

/// The complemented checksum of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    !(ones_sum(0, data) as u16)
}

fn l4_header(spec: &FrameSpec) -> Vec<u8> {
    match spec.proto {
        6 => {
            let mut h = vec![0u8; field::TCP_MIN_HDR];
            h[0..2].copy_from_slice(&spec.sport.to_be_bytes());
            h[2..4].copy_from_slice(&spec.dport.to_be_bytes());
            h[12] = 5 << 4; // data offset
            h[13] = 0x02; // SYN
            h[14..16].copy_from_slice(&64240u16.to_be_bytes());
            h
        }
        17 => {
            let mut h = vec![0u8; field::UDP_HDR];
            h[0..2].copy_from_slice(&spec.sport.to_be_bytes());
            h[2..4].copy_from_slice(&spec.dport.to_be_bytes());
            h
        }
        1 | 58 => {
            // type, code, checksum, identifier, sequence
            let mut h = vec![0u8; 8];
            h[0] = spec.sport as u8;
            h[1] = spec.dport as u8;
            h
        }
        _ => Vec::new(),
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
    if spec.proto == 17 && !spec.non_first_fragment {
        // the UDP length covers the header and the payload
        let len = l4.len() as u16;
        l4[4..6].copy_from_slice(&len.to_be_bytes());
    }
    let mut out = Vec::with_capacity(64 + l4.len());
    out.extend_from_slice(&spec.dst_mac);
    out.extend_from_slice(&spec.src_mac);
    if let Some(vid) = spec.vlan {
        out.extend_from_slice(&field::ETHERTYPE_VLAN.to_be_bytes());
        out.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
    }
    match (spec.src, spec.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.extend_from_slice(&field::ETHERTYPE_IPV4.to_be_bytes());
            let mut ip = [0u8; field::IPV4_MIN_HDR];
            ip[0] = 0x45;
            let total = (field::IPV4_MIN_HDR + l4.len()) as u16;
            ip[2..4].copy_from_slice(&total.to_be_bytes());
            if spec.non_first_fragment {
                ip[6..8].copy_from_slice(&185u16.to_be_bytes());
            }
            ip[field::IPV4_TTL] = spec.ttl;
            ip[field::IPV4_PROTO] = spec.proto;
            ip[12..16].copy_from_slice(&s.octets());
            ip[16..20].copy_from_slice(&d.octets());
            let c = checksum(&ip);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            if !spec.non_first_fragment {
                let mut pseudo = Vec::with_capacity(12);
                pseudo.extend_from_slice(&s.octets());
                pseudo.extend_from_slice(&d.octets());
                pseudo.extend_from_slice(&[0, spec.proto]);
                pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
                fill_l4_checksum(spec.proto, &pseudo, &mut l4, false);
            }
            out.extend_from_slice(&ip);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            out.extend_from_slice(&field::ETHERTYPE_IPV6.to_be_bytes());
            let mut ip = [0u8; field::IPV6_HDR];
            ip[0] = 0x60;
            let mut next = spec.proto;
            let mut ext = Vec::new();
            if spec.non_first_fragment {
                ext = vec![spec.proto, 0, 0, 8 << 3, 0, 0, 0, 1];
                next = 44;
            }
            let payload = (ext.len() + l4.len()) as u16;
            ip[4..6].copy_from_slice(&payload.to_be_bytes());
            ip[field::IPV6_NEXT_HDR] = next;
            ip[field::IPV6_HOP_LIMIT] = spec.ttl;
            ip[8..24].copy_from_slice(&s.octets());
            ip[24..40].copy_from_slice(&d.octets());
            if !spec.non_first_fragment {
                let mut pseudo = Vec::with_capacity(40);
                pseudo.extend_from_slice(&s.octets());
                pseudo.extend_from_slice(&d.octets());
                pseudo.extend_from_slice(&(l4.len() as u32).to_be_bytes());
                pseudo.extend_from_slice(&[0, 0, 0, spec.proto]);
                fill_l4_checksum(spec.proto, &pseudo, &mut l4, true);
            }
            out.extend_from_slice(&ip);
            out.extend_from_slice(&ext);
        }
        _ => panic!("FrameSpec with mixed address families"),
    }
    out.extend_from_slice(&l4);
    out
}

fn fill_l4_checksum(proto: u8, pseudo: &[u8], l4: &mut [u8], v6: bool) {
    let at = match proto {
        6 => 16,
        17 => 6,
        58 if v6 => 2,
        1 if !v6 => 2,
        _ => return,
    };
    if l4.len() < at + 2 {
        return;
    }
    let base = if proto == 1 { 0 } else { ones_sum(0, pseudo) };
    let mut c = !(ones_sum(base, l4) as u16);
    if proto == 17 && c == 0 {
        c = 0xffff;
    }
    l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
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
