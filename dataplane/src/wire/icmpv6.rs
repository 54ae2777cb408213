//! ICMPv6 (RFC 4443): the 8-byte header of every message, its checksum with the IPv6
//! pseudo-header.

use std::net::Ipv6Addr;

use super::{checksum, get_u16, proto, set_u16, WireError};

/// Message types the dataplane tells apart.
pub mod msg {
    pub const DST_UNREACHABLE: u8 = 1;
    pub const PKT_TOO_BIG: u8 = 2;
    pub const TIME_EXCEEDED: u8 = 3;
    pub const PARAM_PROBLEM: u8 = 4;
    pub const ECHO_REQUEST: u8 = 128;
    pub const ECHO_REPLY: u8 = 129;
    pub const ROUTER_SOLICIT: u8 = 133;
    pub const ROUTER_ADVERT: u8 = 134;
    /// Neighbour discovery (RFC 4861): see `wire::ndisc`.
    pub const NEIGHBOR_SOLICIT: u8 = 135;
    pub const NEIGHBOR_ADVERT: u8 = 136;
    pub const REDIRECT: u8 = 137;
}

/// Whether messages of type `t` are errors about a packet they quote (types 1 to 4; 127 and
/// below are errors, but only these are defined).
#[inline]
pub fn is_error(t: u8) -> bool {
    matches!(
        t,
        msg::DST_UNREACHABLE | msg::PKT_TOO_BIG | msg::TIME_EXCEEDED | msg::PARAM_PROBLEM
    )
}

/// Byte ranges of the ICMPv6 header.
pub mod field {
    use crate::wire::{Field, Rest};
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Field = 2..4;
    /// The MTU of "packet too big"; the pointer of "parameter problem".
    pub const MTU: Field = 4..8;
    /// What follows the header: an error's quoted packet.
    pub const DATA: Rest = 8..;
    pub const HEADER_LEN: usize = DATA.start;
}

/// The folded sum of `message` with its pseudo-header (`src`, `dst`, its length, ICMPv6).
#[inline]
pub fn message_sum(src: &Ipv6Addr, dst: &Ipv6Addr, message: &[u8]) -> u32 {
    let len = u32::try_from(message.len()).unwrap_or(u32::MAX);
    checksum::ones_sum(
        checksum::pseudo_header_v6(src, dst, proto::ICMPV6, len),
        message,
    )
}

/// An ICMPv6 message over a byte buffer (the whole message: the checksum covers it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Icmpv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv6Packet<T> {
    /// A view without a length check: the accessors panic on a buffer shorter than 8 bytes.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Icmpv6Packet<T> {
        Icmpv6Packet { buffer }
    }

    /// A view of a buffer holding at least the 8-byte header.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Icmpv6Packet<T>, WireError> {
        let len = buffer.as_ref().len();
        if len < field::HEADER_LEN {
            return Err(WireError::truncated("icmpv6", field::HEADER_LEN, len));
        }
        Ok(Icmpv6Packet { buffer })
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    #[inline]
    pub fn msg_code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// The MTU a "packet too big" announces.
    #[inline]
    pub fn mtu(&self) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([b[4], b[5], b[6], b[7]])
    }

    /// The checksum verifies for a message from `src` to `dst`.
    #[inline]
    pub fn verify_checksum(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        message_sum(src, dst, self.buffer.as_ref()) == 0xffff
    }

    /// What follows the header (an error's quoted packet).
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[field::DATA]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv6Packet<T> {
    #[inline]
    pub fn set_msg_type(&mut self, t: u8) {
        self.buffer.as_mut()[field::TYPE] = t;
    }

    #[inline]
    pub fn set_msg_code(&mut self, c: u8) {
        self.buffer.as_mut()[field::CODE] = c;
    }

    #[inline]
    pub fn set_checksum(&mut self, c: u16) {
        set_u16(self.buffer.as_mut(), field::CHECKSUM.start, c);
    }

    #[inline]
    pub fn set_mtu(&mut self, mtu: u32) {
        self.buffer.as_mut()[field::MTU].copy_from_slice(&mtu.to_be_bytes());
    }

    /// Computes and stores the checksum for a message from `src` to `dst`.
    #[inline]
    pub fn fill_checksum(&mut self, src: &Ipv6Addr, dst: &Ipv6Addr) {
        self.set_checksum(0);
        let c = checksum::finish(message_sum(src, dst, self.buffer.as_ref()));
        self.set_checksum(c);
    }

    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::DATA]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_too_big() {
        let (s, d) = (
            Ipv6Addr::LOCALHOST,
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2),
        );
        let mut b = [0u8; 10];
        let mut m = Icmpv6Packet::new_checked(&mut b[..]).expect("8 bytes");
        m.set_msg_type(msg::PKT_TOO_BIG);
        m.set_msg_code(0);
        m.set_mtu(1480);
        m.data_mut().copy_from_slice(&[0x60, 0]);
        m.fill_checksum(&s, &d);
        assert!(m.verify_checksum(&s, &d));
        assert!(!m.verify_checksum(&s, &Ipv6Addr::UNSPECIFIED));
        let m = Icmpv6Packet::new_checked(&b[..]).expect("8 bytes");
        assert_eq!((m.msg_type(), m.msg_code(), m.mtu()), (2, 0, 1480));
        assert_eq!(m.data(), &[0x60, 0]);
        assert!(is_error(m.msg_type()) && !is_error(msg::NEIGHBOR_SOLICIT));
        for n in 0..8 {
            assert!(Icmpv6Packet::new_checked(&b[..n]).is_err());
        }
    }
}
