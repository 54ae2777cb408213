//! What TCP and UDP headers share and NAT rewrites: the ports (their first 4 bytes) and the
//! checksum (at byte 16 of TCP, 6 of UDP), over a buffer that may end before the checksum
//! (an ICMP error quotes as little as 8 bytes of the packet it is about).

use super::{get_u16, proto, set_u16, tcp, udp, WireError};

/// Byte ranges of the ports, in both protocols.
pub mod field {
    use crate::wire::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
}

/// The ports and checksum of a TCP or UDP header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortsHeader<T: AsRef<[u8]>> {
    buffer: T,
    protocol: u8,
}

impl<T: AsRef<[u8]>> PortsHeader<T> {
    /// A view of the TCP or UDP (`protocol`) header at the start of `buffer`, which holds at
    /// least the ports.
    #[inline]
    pub fn new_checked(buffer: T, protocol: u8) -> Result<PortsHeader<T>, WireError> {
        if protocol != proto::TCP && protocol != proto::UDP {
            return Err(WireError::malformed("ports", "not TCP or UDP"));
        }
        let len = buffer.as_ref().len();
        if len < field::DST_PORT.end {
            return Err(WireError::truncated("ports", field::DST_PORT.end, len));
        }
        Ok(PortsHeader { buffer, protocol })
    }

    #[inline]
    pub fn protocol(&self) -> u8 {
        self.protocol
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
    fn checksum_at(&self) -> usize {
        if self.protocol == proto::TCP {
            tcp::field::CHECKSUM.start
        } else {
            udp::field::CHECKSUM.start
        }
    }

    /// The checksum, when the buffer holds it.
    #[inline]
    pub fn checksum(&self) -> Option<u16> {
        let at = self.checksum_at();
        let b = self.buffer.as_ref();
        (b.len() >= at + 2).then(|| get_u16(b, at))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> PortsHeader<T> {
    #[inline]
    pub fn set_src_port(&mut self, port: u16) {
        set_u16(self.buffer.as_mut(), field::SRC_PORT.start, port);
    }

    #[inline]
    pub fn set_dst_port(&mut self, port: u16) {
        set_u16(self.buffer.as_mut(), field::DST_PORT.start, port);
    }

    /// Stores the checksum when the buffer holds it (else does nothing).
    #[inline]
    pub fn set_checksum(&mut self, c: u16) {
        let at = self.checksum_at();
        let b = self.buffer.as_mut();
        if b.len() >= at + 2 {
            set_u16(b, at, c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_a_checksum_that_may_be_cut() {
        let mut tcp = [
            0x9c, 0x40, 0x01, 0xbb, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 2, 0, 0, 0xab, 0xcd,
        ];
        let mut h = PortsHeader::new_checked(&mut tcp[..], proto::TCP).expect("ports");
        assert_eq!(
            (h.src_port(), h.dst_port(), h.checksum()),
            (40000, 443, Some(0xabcd))
        );
        h.set_dst_port(8443);
        h.set_src_port(1);
        h.set_checksum(0x1234);
        assert_eq!(&tcp[..4], &[0, 1, 0x20, 0xfb]);
        assert_eq!(&tcp[16..], &[0x12, 0x34]);
        // an 8-byte quote: no TCP checksum, setting it is a no-op
        let mut q = PortsHeader::new_checked(&mut tcp[..8], proto::TCP).expect("ports");
        assert_eq!(q.checksum(), None);
        q.set_checksum(1);
        // UDP's is within 8 bytes
        let udp = [0, 53, 0, 54, 0, 8, 0x55, 0x66];
        let u = PortsHeader::new_checked(&udp[..], proto::UDP).expect("ports");
        assert_eq!(
            (u.src_port(), u.dst_port(), u.checksum()),
            (53, 54, Some(0x5566))
        );
        assert!(PortsHeader::new_checked(&udp[..3], proto::UDP).is_err());
        assert!(PortsHeader::new_checked(&udp[..], proto::ICMP).is_err());
    }
}
