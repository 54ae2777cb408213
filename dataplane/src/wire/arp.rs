//! ARP (RFC 826) for IPv4 over Ethernet: the only kind the dataplane reads or sends, so the
//! address fields sit at fixed offsets (hardware length 6, protocol length 4).

use std::net::Ipv4Addr;

use flowgate_config::appliance::MacAddr;

use super::{ethernet::ethertype, get_u16, set_u16, WireError};

/// Byte ranges of an Ethernet/IPv4 ARP packet.
pub mod field {
    use crate::wire::Field;
    pub const HTYPE: Field = 0..2;
    pub const PTYPE: Field = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Field = 6..8;
    pub const SHA: Field = 8..14;
    pub const SPA: Field = 14..18;
    pub const THA: Field = 18..24;
    pub const TPA: Field = 24..28;
    pub const PACKET_LEN: usize = TPA.end;
}

/// Hardware type Ethernet.
pub const HTYPE_ETHERNET: u16 = 1;
/// Operations.
pub const OP_REQUEST: u16 = 1;
pub const OP_REPLY: u16 = 2;

/// An ARP packet over a byte buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// A view without a length check: the accessors panic on a buffer shorter than 28 bytes.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> ArpPacket<T> {
        ArpPacket { buffer }
    }

    /// A view of a buffer holding the 28 bytes of an Ethernet/IPv4 ARP packet (whether it is
    /// one is [`ArpPacket::is_ethernet_ipv4`]).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<ArpPacket<T>, WireError> {
        let len = buffer.as_ref().len();
        if len < field::PACKET_LEN {
            return Err(WireError::truncated("arp", field::PACKET_LEN, len));
        }
        Ok(ArpPacket { buffer })
    }

    #[inline]
    pub fn hardware_type(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::HTYPE.start)
    }

    #[inline]
    pub fn protocol_type(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::PTYPE.start)
    }

    #[inline]
    pub fn hardware_len(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }

    #[inline]
    pub fn protocol_len(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }

    /// Hardware Ethernet (6-byte addresses), protocol IPv4 (4-byte addresses): the layout
    /// the address accessors read.
    #[inline]
    pub fn is_ethernet_ipv4(&self) -> bool {
        self.hardware_type() == HTYPE_ETHERNET
            && self.protocol_type() == ethertype::IPV4
            && self.hardware_len() == 6
            && self.protocol_len() == 4
    }

    #[inline]
    pub fn operation(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::OPER.start)
    }

    #[inline]
    pub fn sender_hardware_addr(&self) -> MacAddr {
        MacAddr(mac(self.buffer.as_ref(), field::SHA.start))
    }

    #[inline]
    pub fn sender_protocol_addr(&self) -> Ipv4Addr {
        ipv4(self.buffer.as_ref(), field::SPA.start)
    }

    #[inline]
    pub fn target_hardware_addr(&self) -> MacAddr {
        MacAddr(mac(self.buffer.as_ref(), field::THA.start))
    }

    #[inline]
    pub fn target_protocol_addr(&self) -> Ipv4Addr {
        ipv4(self.buffer.as_ref(), field::TPA.start)
    }
}

#[inline]
fn mac(b: &[u8], at: usize) -> [u8; 6] {
    [b[at], b[at + 1], b[at + 2], b[at + 3], b[at + 4], b[at + 5]]
}

#[inline]
fn ipv4(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    /// Hardware Ethernet, protocol IPv4, lengths 6 and 4.
    #[inline]
    pub fn set_ethernet_ipv4(&mut self) {
        let b = self.buffer.as_mut();
        set_u16(b, field::HTYPE.start, HTYPE_ETHERNET);
        set_u16(b, field::PTYPE.start, ethertype::IPV4);
        b[field::HLEN] = 6;
        b[field::PLEN] = 4;
    }

    #[inline]
    pub fn set_operation(&mut self, op: u16) {
        set_u16(self.buffer.as_mut(), field::OPER.start, op);
    }

    #[inline]
    pub fn set_sender_hardware_addr(&mut self, m: MacAddr) {
        self.buffer.as_mut()[field::SHA].copy_from_slice(&m.0);
    }

    #[inline]
    pub fn set_sender_protocol_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::SPA].copy_from_slice(&a.octets());
    }

    #[inline]
    pub fn set_target_hardware_addr(&mut self, m: MacAddr) {
        self.buffer.as_mut()[field::THA].copy_from_slice(&m.0);
    }

    #[inline]
    pub fn set_target_protocol_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::TPA].copy_from_slice(&a.octets());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // who has 192.168.0.1? tell 192.168.0.10 (02:00:00:00:00:0a)
    const REQ: [u8; 28] = [
        0, 1, 0x08, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 0xa, 192, 168, 0, 10, 0, 0, 0, 0, 0, 0, 192, 168,
        0, 1,
    ];

    #[test]
    fn getters_and_setters() {
        let a = ArpPacket::new_checked(&REQ[..]).expect("28 bytes");
        assert!(a.is_ethernet_ipv4());
        assert_eq!(a.operation(), OP_REQUEST);
        assert_eq!(a.sender_hardware_addr(), MacAddr([2, 0, 0, 0, 0, 0xa]));
        assert_eq!(a.sender_protocol_addr(), Ipv4Addr::new(192, 168, 0, 10));
        assert_eq!(a.target_hardware_addr(), MacAddr([0; 6]));
        assert_eq!(a.target_protocol_addr(), Ipv4Addr::new(192, 168, 0, 1));

        let mut b = [0xeeu8; 28];
        let mut w = ArpPacket::new_checked(&mut b[..]).expect("28 bytes");
        w.set_ethernet_ipv4();
        w.set_operation(OP_REQUEST);
        w.set_sender_hardware_addr(MacAddr([2, 0, 0, 0, 0, 0xa]));
        w.set_sender_protocol_addr(Ipv4Addr::new(192, 168, 0, 10));
        w.set_target_hardware_addr(MacAddr([0; 6]));
        w.set_target_protocol_addr(Ipv4Addr::new(192, 168, 0, 1));
        assert_eq!(b, REQ);
        for n in 0..28 {
            assert!(ArpPacket::new_checked(&REQ[..n]).is_err());
        }
        let mut other = REQ;
        other[5] = 16; // IPv6-sized protocol addresses: not this layout
        assert!(!ArpPacket::new_checked(&other[..])
            .expect("28")
            .is_ethernet_ipv4());
    }
}
