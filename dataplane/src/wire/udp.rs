//! UDP headers (RFC 768).

use super::{checksum, get_u16, set_u16, WireError};

/// Byte ranges of the UDP header.
pub mod field {
    use crate::wire::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const LENGTH: Field = 4..6;
    pub const CHECKSUM: Field = 6..8;
    pub const HEADER_LEN: usize = CHECKSUM.end;
}

/// The checksum to store for a computed one: 0 means "no checksum" (IPv4), so a computed 0
/// is sent as 0xffff (RFC 768).
#[inline]
pub fn nonzero_checksum(c: u16) -> u16 {
    if c == 0 {
        0xffff
    } else {
        c
    }
}

/// A UDP datagram over a byte buffer (the buffer is the whole datagram).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// A view without a length check: the accessors panic on a buffer shorter than 8 bytes.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> UdpPacket<T> {
        UdpPacket { buffer }
    }

    /// A view of a buffer holding at least the 8-byte header (the length field is not
    /// checked).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<UdpPacket<T>, WireError> {
        let len = buffer.as_ref().len();
        if len < field::HEADER_LEN {
            return Err(WireError::truncated("udp", field::HEADER_LEN, len));
        }
        Ok(UdpPacket { buffer })
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
    pub fn len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::LENGTH.start)
    }

    /// The length field says 0 (never true of a valid datagram).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// The checksum verifies (or is 0, "none", which only IPv4 allows).
    #[inline]
    pub fn verify_checksum(&self, pseudo: u32) -> bool {
        self.checksum() == 0 || checksum::verifies(pseudo, self.buffer.as_ref())
    }

    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    #[inline]
    pub fn set_src_port(&mut self, port: u16) {
        set_u16(self.buffer.as_mut(), field::SRC_PORT.start, port);
    }

    #[inline]
    pub fn set_dst_port(&mut self, port: u16) {
        set_u16(self.buffer.as_mut(), field::DST_PORT.start, port);
    }

    #[inline]
    pub fn set_len(&mut self, len: u16) {
        set_u16(self.buffer.as_mut(), field::LENGTH.start, len);
    }

    #[inline]
    pub fn set_checksum(&mut self, c: u16) {
        set_u16(self.buffer.as_mut(), field::CHECKSUM.start, c);
    }

    /// Computes and stores the checksum (never 0) over the datagram and the pseudo-header's
    /// sum.
    #[inline]
    pub fn fill_checksum(&mut self, pseudo: u32) {
        self.set_checksum(0);
        let c = checksum::finish(checksum::ones_sum(pseudo, self.buffer.as_ref()));
        self.set_checksum(nonzero_checksum(c));
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::HEADER_LEN..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    #[test]
    fn getters_setters_checksum() {
        let mut b = [0u8; 11];
        let mut u = UdpPacket::new_checked(&mut b[..]).expect("8 bytes");
        u.set_src_port(53);
        u.set_dst_port(5353);
        u.set_len(11);
        u.payload_mut().copy_from_slice(b"abc");
        let (s, d) = (Ipv6Addr::LOCALHOST, Ipv6Addr::UNSPECIFIED);
        let pseudo = checksum::pseudo_header_v6(&s, &d, 17, 11);
        u.fill_checksum(pseudo);
        assert!(u.verify_checksum(pseudo));
        assert_eq!(&b[..6], &[0, 53, 0x14, 0xe9, 0, 11]);
        let u = UdpPacket::new_checked(&b[..]).expect("8 bytes");
        assert_eq!((u.src_port(), u.dst_port(), u.len()), (53, 5353, 11));
        assert_eq!(u.payload(), b"abc");
        assert_ne!(u.checksum(), 0);
        for n in 0..8 {
            assert!(UdpPacket::new_checked(&b[..n]).is_err());
        }
        assert_eq!((nonzero_checksum(0), nonzero_checksum(5)), (0xffff, 5));
    }
}
