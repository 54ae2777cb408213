//! Neighbour discovery (RFC 4861): neighbour solicitations and advertisements (ICMPv6 135
//! and 136) and their options (the source / target link-layer address).

use std::net::Ipv6Addr;

use flowgate_config::appliance::MacAddr;

use super::{checksum, get_u16, icmpv6, set_u16, WireError};

/// The solicited-node multicast address of `ip` (`ff02::1:ffXX:XXXX`, RFC 4291 2.7.1).
pub fn solicited_node(ip: Ipv6Addr) -> Ipv6Addr {
    let o = ip.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

/// The Ethernet MAC of an IPv6 multicast group: `33:33` and its last 32 bits (RFC 2464 7).
pub fn multicast_mac(group: Ipv6Addr) -> MacAddr {
    let o = group.octets();
    MacAddr([0x33, 0x33, o[12], o[13], o[14], o[15]])
}

/// Byte ranges of an NS or NA (the ICMPv6 message).
pub mod field {
    use crate::wire::{Field, Rest};
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Field = 2..4;
    /// NA: router, solicited, override flags; NS: reserved.
    pub const FLAGS: usize = 4;
    pub const RESERVED: Field = 4..8;
    pub const TARGET: Field = 8..24;
    pub const OPTIONS: Rest = 24..;
    /// The message without options.
    pub const MIN_LEN: usize = OPTIONS.start;
}

/// NA flags.
pub mod flags {
    pub const ROUTER: u8 = 0x80;
    pub const SOLICITED: u8 = 0x40;
    pub const OVERRIDE: u8 = 0x20;
}

/// Option types.
pub mod option {
    pub const SOURCE_LL_ADDR: u8 = 1;
    pub const TARGET_LL_ADDR: u8 = 2;
    /// The length of a link-layer address option for Ethernet (one 8-byte unit).
    pub const LL_ADDR_LEN: usize = 8;
}

/// A neighbour solicitation or advertisement over a byte buffer (the whole ICMPv6 message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighborPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> NeighborPacket<T> {
    /// A view without a length check: the accessors panic on a buffer shorter than 24 bytes.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> NeighborPacket<T> {
        NeighborPacket { buffer }
    }

    /// A view of a buffer holding at least the 24 bytes before the options.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<NeighborPacket<T>, WireError> {
        let len = buffer.as_ref().len();
        if len < field::MIN_LEN {
            return Err(WireError::truncated(
                "neighbour discovery",
                field::MIN_LEN,
                len,
            ));
        }
        Ok(NeighborPacket { buffer })
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

    /// The flags byte ([`flags`]).
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    #[inline]
    pub fn target_addr(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::TARGET]);
        Ipv6Addr::from(a)
    }

    /// The options' bytes (walk them with [`NdOptions`]).
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[field::OPTIONS]
    }

    /// The checksum verifies for a message from `src` to `dst`.
    #[inline]
    pub fn verify_checksum(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        icmpv6::message_sum(src, dst, self.buffer.as_ref()) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> NeighborPacket<T> {
    #[inline]
    pub fn set_msg_type(&mut self, t: u8) {
        self.buffer.as_mut()[field::TYPE] = t;
    }

    #[inline]
    pub fn set_msg_code(&mut self, c: u8) {
        self.buffer.as_mut()[field::CODE] = c;
    }

    /// The flags byte, the other reserved bytes zeroed.
    #[inline]
    pub fn set_flags(&mut self, f: u8) {
        let b = self.buffer.as_mut();
        b[field::RESERVED].fill(0);
        b[field::FLAGS] = f;
    }

    #[inline]
    pub fn set_target_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::TARGET].copy_from_slice(&a.octets());
    }

    #[inline]
    pub fn options_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::OPTIONS]
    }

    /// Computes and stores the checksum for a message from `src` to `dst`.
    #[inline]
    pub fn fill_checksum(&mut self, src: &Ipv6Addr, dst: &Ipv6Addr) {
        set_u16(self.buffer.as_mut(), field::CHECKSUM.start, 0);
        let c = checksum::finish(icmpv6::message_sum(src, dst, self.buffer.as_ref()));
        set_u16(self.buffer.as_mut(), field::CHECKSUM.start, c);
    }
}

/// Byte ranges of an option.
pub mod option_field {
    use crate::wire::Field;
    pub const TYPE: usize = 0;
    /// In 8-byte units, the type and length included; 0 is invalid.
    pub const LENGTH: usize = 1;
    /// A link-layer address option's Ethernet address.
    pub const LL_ADDR: Field = 2..8;
}

/// One option over a byte buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NdOption<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> NdOption<T> {
    /// A view of an option whose length is not 0 and lies within the buffer.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<NdOption<T>, WireError> {
        let b = buffer.as_ref();
        let Some(&units) = b.get(option_field::LENGTH) else {
            return Err(WireError::truncated("nd option", 2, b.len()));
        };
        let len = usize::from(units) * 8;
        if len == 0 {
            return Err(WireError::malformed("nd option", "length 0"));
        }
        if len > b.len() {
            return Err(WireError::truncated("nd option", len, b.len()));
        }
        Ok(NdOption { buffer })
    }

    #[inline]
    pub fn option_type(&self) -> u8 {
        self.buffer.as_ref()[option_field::TYPE]
    }

    /// The option's length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        usize::from(self.buffer.as_ref()[option_field::LENGTH]) * 8
    }

    /// Never true of a checked option.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The Ethernet address of a source / target link-layer address option of one unit
    /// (`None` for any other length: not Ethernet's).
    #[inline]
    pub fn link_layer_addr(&self) -> Option<MacAddr> {
        if self.len() != option::LL_ADDR_LEN {
            return None;
        }
        let mut m = [0u8; 6];
        m.copy_from_slice(&self.buffer.as_ref()[option_field::LL_ADDR]);
        Some(MacAddr(m))
    }
}

/// Writes a source / target (`kind`) link-layer address option at the start of `buf` (8
/// bytes).
#[inline]
pub fn emit_link_layer_option(buf: &mut [u8], kind: u8, mac: MacAddr) {
    buf[option_field::TYPE] = kind;
    buf[option_field::LENGTH] = 1;
    buf[option_field::LL_ADDR].copy_from_slice(&mac.0);
}

/// The options of an NS/NA, in order; an option cut short or of length 0 ends the walk with
/// an error (RFC 4861 7.1.1: the message is then invalid).
#[derive(Debug, Clone)]
pub struct NdOptions<'a> {
    rest: &'a [u8],
}

impl<'a> NdOptions<'a> {
    pub fn new(options: &'a [u8]) -> NdOptions<'a> {
        NdOptions { rest: options }
    }
}

impl<'a> Iterator for NdOptions<'a> {
    type Item = Result<NdOption<&'a [u8]>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        match NdOption::new_checked(self.rest) {
            Ok(o) => {
                let (this, rest) = self.rest.split_at(o.len());
                self.rest = rest;
                Some(Ok(NdOption { buffer: this }))
            }
            Err(e) => {
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
    const GROUP: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 2);
    const TARGET: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2);
    const MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xa]);

    #[test]
    fn solicitation_build_then_read() {
        let mut b = [0u8; 32];
        let mut ns = NeighborPacket::new_checked(&mut b[..]).expect("24 bytes");
        ns.set_msg_type(icmpv6::msg::NEIGHBOR_SOLICIT);
        ns.set_msg_code(0);
        ns.set_flags(0);
        ns.set_target_addr(TARGET);
        emit_link_layer_option(ns.options_mut(), option::SOURCE_LL_ADDR, MAC);
        ns.fill_checksum(&ME, &GROUP);
        assert_eq!(&b[24..], &[1, 1, 2, 0, 0, 0, 0, 0xa]);
        let ns = NeighborPacket::new_checked(&b[..]).expect("24 bytes");
        assert_eq!((ns.msg_type(), ns.msg_code(), ns.flags()), (135, 0, 0));
        assert_eq!(ns.target_addr(), TARGET);
        assert!(ns.verify_checksum(&ME, &GROUP));
        assert!(!ns.verify_checksum(&ME, &TARGET));
        let opts: Vec<_> = NdOptions::new(ns.options()).collect();
        assert_eq!(opts.len(), 1);
        let o = opts[0].as_ref().expect("option");
        assert_eq!(
            (o.option_type(), o.len(), o.link_layer_addr()),
            (1, 8, Some(MAC))
        );
    }

    #[test]
    fn advert_flags_and_bad_options() {
        let mut b = [0u8; 40];
        let mut na = NeighborPacket::new_checked(&mut b[..]).expect("24 bytes");
        na.set_msg_type(icmpv6::msg::NEIGHBOR_ADVERT);
        na.set_flags(flags::SOLICITED | flags::OVERRIDE);
        na.set_target_addr(TARGET);
        // a 16-byte unknown option, then the target link-layer address
        na.options_mut()[..2].copy_from_slice(&[14, 2]);
        assert_eq!(na.flags(), 0x60);
        assert_eq!(&b[4..8], &[0x60, 0, 0, 0]);
        let opts: Vec<_> = NdOptions::new(&b[24..]).collect();
        assert_eq!(opts.len(), 1);
        assert_eq!(opts[0].as_ref().map(|o| o.link_layer_addr()), Ok(None));
        // a zero length, a length past the end
        assert!(NdOption::new_checked(&[1u8, 0, 0, 0, 0, 0, 0, 0][..]).is_err());
        assert!(NdOption::new_checked(&[1u8, 2, 0, 0, 0, 0, 0, 0][..]).is_err());
        assert!(NdOptions::new(&[1, 0]).any(|o| o.is_err()));
        for n in 0..24 {
            assert!(NeighborPacket::new_checked(&b[..n]).is_err());
        }
    }
}
