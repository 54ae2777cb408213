//! TCP headers (RFC 9293): the fixed 20 bytes.

use super::{checksum, get_u16, set_u16, WireError};

/// Byte ranges of the TCP header.
pub mod field {
    use crate::wire::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const SEQ_NUM: Field = 4..8;
    pub const ACK_NUM: Field = 8..12;
    /// Data offset (4 bits) and reserved bits.
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: Field = 14..16;
    pub const CHECKSUM: Field = 16..18;
    pub const URGENT: Field = 18..20;
    /// The header without options.
    pub const MIN_HEADER_LEN: usize = URGENT.end;
}

/// The bits of the flags byte.
pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

/// A TCP segment over a byte buffer (the buffer is the whole segment: the checksum covers
/// it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// A view without a length check: the accessors panic on a buffer shorter than 20 bytes.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> TcpPacket<T> {
        TcpPacket { buffer }
    }

    /// A view of a buffer holding at least the fixed 20-byte header. The data offset is not
    /// checked: [`TcpPacket::payload`] clamps it.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<TcpPacket<T>, WireError> {
        let len = buffer.as_ref().len();
        if len < field::MIN_HEADER_LEN {
            return Err(WireError::truncated("tcp", field::MIN_HEADER_LEN, len));
        }
        Ok(TcpPacket { buffer })
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn src_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::SRC_PORT.start)
    }

    #[inline]
    pub fn dst_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::DST_PORT.start)
    }

    #[inline]
    pub fn seq_number(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::SEQ_NUM.start)
    }

    #[inline]
    pub fn ack_number(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::ACK_NUM.start)
    }

    /// The header's length in bytes as the data offset says (options included).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFF] >> 4) * 4
    }

    /// The flags byte ([`flags`]).
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    #[inline]
    pub fn window_len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::WINDOW.start)
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    #[inline]
    pub fn urgent_at(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::URGENT.start)
    }

    /// The checksum verifies over the segment, starting from the pseudo-header's sum
    /// ([`checksum::pseudo_header_v4`] / [`checksum::pseudo_header_v6`]).
    #[inline]
    pub fn verify_checksum(&self, pseudo: u32) -> bool {
        checksum::verifies(pseudo, self.buffer.as_ref())
    }

    /// The data after the header (and options), clamped to the buffer.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        let start = self.header_len().clamp(field::MIN_HEADER_LEN, b.len());
        &b[start..]
    }
}

#[inline]
fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    #[inline]
    pub fn set_src_port(&mut self, port: u16) {
        set_u16(self.buffer.as_mut(), field::SRC_PORT.start, port);
    }

    #[inline]
    pub fn set_dst_port(&mut self, port: u16) {
        set_u16(self.buffer.as_mut(), field::DST_PORT.start, port);
    }

    #[inline]
    pub fn set_seq_number(&mut self, n: u32) {
        self.buffer.as_mut()[field::SEQ_NUM].copy_from_slice(&n.to_be_bytes());
    }

    #[inline]
    pub fn set_ack_number(&mut self, n: u32) {
        self.buffer.as_mut()[field::ACK_NUM].copy_from_slice(&n.to_be_bytes());
    }

    /// The data offset, from a header length in bytes (a multiple of 4, 20 to 60).
    #[inline]
    pub fn set_header_len(&mut self, len: usize) {
        self.buffer.as_mut()[field::DATA_OFF] = ((len / 4) as u8) << 4;
    }

    #[inline]
    pub fn set_flags(&mut self, f: u8) {
        self.buffer.as_mut()[field::FLAGS] = f;
    }

    #[inline]
    pub fn set_window_len(&mut self, w: u16) {
        set_u16(self.buffer.as_mut(), field::WINDOW.start, w);
    }

    #[inline]
    pub fn set_checksum(&mut self, c: u16) {
        set_u16(self.buffer.as_mut(), field::CHECKSUM.start, c);
    }

    #[inline]
    pub fn set_urgent_at(&mut self, u: u16) {
        set_u16(self.buffer.as_mut(), field::URGENT.start, u);
    }

    /// Computes and stores the checksum over the segment and the pseudo-header's sum.
    #[inline]
    pub fn fill_checksum(&mut self, pseudo: u32) {
        self.set_checksum(0);
        let c = checksum::finish(checksum::ones_sum(pseudo, self.buffer.as_ref()));
        self.set_checksum(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    // 9c40 01bb | seq 00000001 | ack 00000000 | 50 02 | faf0 | [cksum] | 0000 | "hi"
    const SEG: [u8; 22] = [
        0x9c, 0x40, 0x01, 0xbb, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xfa, 0xf0, 0, 0, 0, 0, b'h',
        b'i',
    ];

    #[test]
    fn getters_setters_checksum() {
        let p = TcpPacket::new_checked(&SEG[..]).expect("20 bytes");
        assert_eq!((p.src_port(), p.dst_port()), (40000, 443));
        assert_eq!((p.seq_number(), p.ack_number()), (1, 0));
        assert_eq!(
            (p.header_len(), p.flags(), p.window_len()),
            (20, flags::SYN, 64240)
        );
        assert_eq!(p.payload(), b"hi");

        let mut out = [0u8; 22];
        let mut q = TcpPacket::new_unchecked(&mut out[..]);
        q.set_src_port(40000);
        q.set_dst_port(443);
        q.set_seq_number(1);
        q.set_ack_number(0);
        q.set_header_len(20);
        q.set_flags(flags::SYN);
        q.set_window_len(64240);
        q.set_urgent_at(0);
        out[20..].copy_from_slice(b"hi");
        assert_eq!(out, SEG);

        let (s, d) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        let pseudo = checksum::pseudo_header_v4(s, d, 6, 22);
        let mut q = TcpPacket::new_unchecked(&mut out[..]);
        q.fill_checksum(pseudo);
        assert!(q.verify_checksum(pseudo));
        assert!(!q.verify_checksum(checksum::pseudo_header_v4(s, s, 6, 22)));
        q.set_ack_number(9);
        assert!(!q.verify_checksum(pseudo));
    }

    #[test]
    fn short_buffers_are_refused() {
        for n in 0..20 {
            assert!(TcpPacket::new_checked(&SEG[..n]).is_err());
        }
        // a data offset beyond the buffer: the payload is empty, no panic
        let mut b = SEG;
        b[12] = 0xf0;
        assert!(TcpPacket::new_checked(&b[..])
            .expect("20 bytes")
            .payload()
            .is_empty());
    }
}
