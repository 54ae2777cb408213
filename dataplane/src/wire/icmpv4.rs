//! ICMP for IPv4 (RFC 792): the 8-byte header of every message.

use super::{checksum, get_u16, set_u16, WireError};

/// Message types the dataplane tells apart.
pub mod msg {
    pub const ECHO_REPLY: u8 = 0;
    pub const DST_UNREACHABLE: u8 = 3;
    pub const SOURCE_QUENCH: u8 = 4;
    pub const REDIRECT: u8 = 5;
    pub const ECHO_REQUEST: u8 = 8;
    pub const TIME_EXCEEDED: u8 = 11;
    pub const PARAM_PROBLEM: u8 = 12;
    /// Destination unreachable code: fragmentation needed and DF set (RFC 1191).
    pub const CODE_FRAG_NEEDED: u8 = 4;
}

/// Whether messages of type `t` are errors about a packet they quote (destination
/// unreachable, source quench, time exceeded, parameter problem).
#[inline]
pub fn is_error(t: u8) -> bool {
    matches!(
        t,
        msg::DST_UNREACHABLE | msg::SOURCE_QUENCH | msg::TIME_EXCEEDED | msg::PARAM_PROBLEM
    )
}

/// Byte ranges of the ICMP header.
pub mod field {
    use crate::wire::{Field, Rest};
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Field = 2..4;
    /// Echo identifier and sequence number.
    pub const ECHO_IDENT: Field = 4..6;
    pub const ECHO_SEQ: Field = 6..8;
    /// The next-hop MTU of "fragmentation needed" (RFC 1191).
    pub const NEXT_HOP_MTU: Field = 6..8;
    /// What follows the header: an error's quoted packet, an echo's data.
    pub const DATA: Rest = 8..;
    pub const HEADER_LEN: usize = DATA.start;
}

/// An ICMP message over a byte buffer (the whole message: the checksum covers it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Icmpv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv4Packet<T> {
    /// A view without a length check: the accessors panic on a buffer shorter than 8 bytes.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Icmpv4Packet<T> {
        Icmpv4Packet { buffer }
    }

    /// A view of a buffer holding at least the 8-byte header.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Icmpv4Packet<T>, WireError> {
        let len = buffer.as_ref().len();
        if len < field::HEADER_LEN {
            return Err(WireError::truncated("icmp", field::HEADER_LEN, len));
        }
        Ok(Icmpv4Packet { buffer })
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

    #[inline]
    pub fn echo_ident(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::ECHO_IDENT.start)
    }

    #[inline]
    pub fn echo_seq(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::ECHO_SEQ.start)
    }

    #[inline]
    pub fn next_hop_mtu(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::NEXT_HOP_MTU.start)
    }

    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::verifies(0, self.buffer.as_ref())
    }

    /// What follows the header (an error's quoted packet).
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[field::DATA]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv4Packet<T> {
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

    /// Bytes 4 to 8: zero them (the "unused" word of most errors).
    #[inline]
    pub fn clear_rest(&mut self) {
        self.buffer.as_mut()[4..field::HEADER_LEN].fill(0);
    }

    #[inline]
    pub fn set_echo_ident(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::ECHO_IDENT.start, v);
    }

    #[inline]
    pub fn set_echo_seq(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::ECHO_SEQ.start, v);
    }

    #[inline]
    pub fn set_next_hop_mtu(&mut self, mtu: u16) {
        set_u16(self.buffer.as_mut(), field::NEXT_HOP_MTU.start, mtu);
    }

    /// Computes and stores the checksum over the whole message.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.buffer.as_ref());
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
    fn frag_needed_and_echo() {
        let mut b = [0u8; 12];
        let mut m = Icmpv4Packet::new_checked(&mut b[..]).expect("8 bytes");
        m.set_msg_type(msg::DST_UNREACHABLE);
        m.set_msg_code(msg::CODE_FRAG_NEEDED);
        m.clear_rest();
        m.set_next_hop_mtu(1480);
        m.data_mut().copy_from_slice(&[0x45, 0, 0, 20]);
        m.fill_checksum();
        assert!(m.verify_checksum());
        assert_eq!(&b[..2], &[3, 4]);
        assert_eq!(&b[4..8], &[0, 0, 0x05, 0xc8]);
        let m = Icmpv4Packet::new_checked(&b[..]).expect("8 bytes");
        assert_eq!((m.next_hop_mtu(), m.data()), (1480, &[0x45, 0, 0, 20][..]));
        assert!(is_error(m.msg_type()) && !is_error(msg::ECHO_REQUEST));

        let echo = [8, 0, 0xf7, 0xfc, 0, 1, 0, 2];
        let e = Icmpv4Packet::new_checked(&echo[..]).expect("8 bytes");
        assert_eq!((e.msg_type(), e.echo_ident(), e.echo_seq()), (8, 1, 2));
        assert!(e.verify_checksum());
        for n in 0..8 {
            assert!(Icmpv4Packet::new_checked(&echo[..n]).is_err());
        }
    }
}
