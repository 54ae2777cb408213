//! Where a frame carries its TSC timestamp, and writing and reading it.
//!
//! The generator stamps every frame with the TSC value at which it built it, and the
//! receiving side subtracts it from its own TSC (same process, same clock). The stamp must fit
//! a 64-byte frame whatever the protocol, without changing what a classifier sees (addresses,
//! protocol, ports), so its place depends on the protocol of an untagged IPv4 frame:
//!
//! | protocol | magic | TSC (8 bytes, big endian) |
//! |---|---|---|
//! | TCP | urgent pointer = `0x6667` (URG flag clear, so it means nothing) | sequence and acknowledgement numbers (a SYN's are free) |
//! | UDP, ICMP | first 4 payload bytes = `fgts` | the next 8 payload bytes |
//! | any other | first 4 bytes after the IP header | the next 8 |
//!
//! The template of a frame holds the magic and a zero TSC with a valid L4 checksum; writing
//! the TSC adjusts the checksum incrementally (RFC 1624), so every frame on the wire has a
//! valid checksum. Frames that are not untagged IPv4 first fragments with room for the stamp
//! (some pcap frames) go out unstamped and are counted, not timed.

use flowgate_dataplane::build::ones_sum;

/// The 4-byte payload magic, "fgts".
pub const MAGIC: [u8; 4] = *b"fgts";
/// The TCP urgent-pointer magic, "fg".
pub const TCP_MAGIC: [u8; 2] = *b"fg";
/// Payload bytes a non-TCP frame needs for the stamp.
pub const STAMP_ROOM: usize = 12;

const ETH: usize = 14;
const ETHERTYPE_IPV4: [u8; 2] = [0x08, 0x00];

/// Where the stamp of a frame is, found by [`locate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StampAt {
    /// Offset of the 8 TSC bytes.
    pub tsc: usize,
    /// Offset and length of the magic.
    pub magic: (usize, usize),
    /// Offset of the L4 checksum covering the stamp, if any.
    pub csum: Option<usize>,
    /// IP protocol.
    pub proto: u8,
    /// Offset of the L4 header.
    pub l4: usize,
    /// End of the IP datagram in the frame.
    pub ip_end: usize,
}

/// Where the stamp of `frame` goes, if the frame can carry one.
pub fn locate(frame: &[u8]) -> Option<StampAt> {
    if frame.len() < ETH + 20 || frame[12..14] != ETHERTYPE_IPV4 || frame[ETH] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(frame[ETH] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([frame[ETH + 2], frame[ETH + 3]]));
    let frag_offset = u16::from_be_bytes([frame[ETH + 6], frame[ETH + 7]]) & 0x1fff;
    let ip_end = ETH + total;
    let l4 = ETH + ihl;
    if ihl < 20 || total < ihl || ip_end > frame.len() || frag_offset != 0 {
        return None;
    }
    let proto = frame[ETH + 9];
    let at = match proto {
        6 => StampAt {
            tsc: l4 + 4,
            magic: (l4 + 18, 2),
            csum: Some(l4 + 16),
            proto,
            l4,
            ip_end,
        },
        17 | 1 => StampAt {
            tsc: l4 + 12,
            magic: (l4 + 8, 4),
            csum: Some(if proto == 17 { l4 + 6 } else { l4 + 2 }),
            proto,
            l4,
            ip_end,
        },
        _ => StampAt {
            tsc: l4 + 4,
            magic: (l4, 4),
            csum: None,
            proto,
            l4,
            ip_end,
        },
    };
    let needed = match proto {
        6 => l4 + 20,
        _ => at.tsc + 8,
    };
    (needed <= ip_end).then_some(at)
}

/// Writes the magic and a zero TSC into `frame` and recomputes its L4 checksum, making it a
/// template for [`write`]. `None` (frame unchanged) when it cannot carry a stamp.
pub fn prepare(frame: &mut [u8]) -> Option<StampAt> {
    let mut at = locate(frame)?;
    let (m, len) = at.magic;
    if at.proto == 6 {
        frame[m..m + len].copy_from_slice(&TCP_MAGIC);
        frame[at.l4 + 13] &= !0x20; // URG clear: the urgent pointer means nothing
    } else {
        frame[m..m + len].copy_from_slice(&MAGIC);
    }
    frame[at.tsc..at.tsc + 8].fill(0);
    if let Some(c) = at.csum {
        if at.proto == 17 && frame[c..c + 2] == [0, 0] {
            at.csum = None; // UDP without a checksum stays without one
        } else {
            frame[c..c + 2].fill(0);
            let sum = l4_sum(frame, &at);
            let v = finish(!(sum as u16), at.proto);
            frame[c..c + 2].copy_from_slice(&v.to_be_bytes());
        }
    }
    Some(at)
}

/// The ones-complement sum of the L4 segment, with the pseudo-header for TCP and UDP.
fn l4_sum(frame: &[u8], at: &StampAt) -> u32 {
    let seg = &frame[at.l4..at.ip_end];
    let mut sum = 0;
    if at.proto != 1 {
        sum = ones_sum(sum, &frame[ETH + 12..ETH + 20]);
        sum = ones_sum(sum, &[0, at.proto]);
        sum = ones_sum(sum, &(seg.len() as u16).to_be_bytes());
    }
    ones_sum(sum, seg)
}

/// A UDP checksum of 0 means "none": send 0xffff instead.
#[inline]
fn finish(v: u16, proto: u8) -> u16 {
    if v == 0 && proto == 17 {
        0xffff
    } else {
        v
    }
}

/// Writes `tsc` into a frame made from a template prepared at `at`, adjusting the checksum.
#[inline]
pub fn write(frame: &mut [u8], at: &StampAt, tsc: u64) {
    let bytes = tsc.to_be_bytes();
    frame[at.tsc..at.tsc + 8].copy_from_slice(&bytes);
    if let Some(c) = at.csum {
        // RFC 1624: HC' = ~(~HC + m'), the old TSC words being zero. The TSC starts at an
        // even offset from the L4 header, so its bytes are whole checksum words.
        let old = u16::from_be_bytes([frame[c], frame[c + 1]]);
        let sum = ones_sum(u32::from(!old), &bytes);
        frame[c..c + 2].copy_from_slice(&finish(!(sum as u16), at.proto).to_be_bytes());
    }
}

/// The TSC a received frame carries, if it is one of ours.
#[inline]
pub fn read(frame: &[u8]) -> Option<u64> {
    let at = locate(frame)?;
    let (m, len) = at.magic;
    let magic = &frame[m..m + len];
    let ours = if at.proto == 6 {
        magic == TCP_MAGIC
    } else {
        magic == MAGIC
    };
    if !ours {
        return None;
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&frame[at.tsc..at.tsc + 8]);
    Some(u64::from_be_bytes(b))
}

/// Whether the L4 checksum of an IPv4 frame verifies (frames without one: true).
pub fn l4_checksum_ok(frame: &[u8]) -> bool {
    match locate(frame) {
        Some(at) => match at.csum {
            Some(c) if !(at.proto == 17 && frame[c..c + 2] == [0, 0]) => {
                l4_sum(frame, &at) as u16 == 0xffff
            }
            _ => true,
        },
        None => true,
    }
}
