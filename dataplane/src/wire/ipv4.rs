//! IPv4 headers (RFC 791).

use std::net::Ipv4Addr;

use super::{checksum, get_u16, set_u16, WireError};

/// Byte ranges of the IPv4 header.
pub mod field {
    use crate::wire::Field;
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: Field = 2..4;
    pub const IDENT: Field = 4..6;
    pub const FLG_OFF: Field = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Field = 10..12;
    pub const SRC_ADDR: Field = 12..16;
    pub const DST_ADDR: Field = 16..20;
    /// The header without options.
    pub const MIN_HEADER_LEN: usize = DST_ADDR.end;
    /// Bits of the flags/fragment-offset word.
    pub const FLAG_DF: u16 = 0x4000;
    pub const FLAG_MF: u16 = 0x2000;
    pub const FRAG_OFFSET_MASK: u16 = 0x1fff;
}

/// An IPv4 packet (header, options, payload) over a byte buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// A view without a length check: the accessors panic on a buffer shorter than 20 bytes.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Ipv4Packet<T> {
        Ipv4Packet { buffer }
    }

    /// A view of a whole packet: the header (IHL at least 5) and the total length it states
    /// lie within the buffer (Ethernet padding may follow). The version is not checked.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Ipv4Packet<T>, WireError> {
        let p = Self::new_checked_header(buffer)?;
        p.check_total_len()?;
        Ok(p)
    }

    /// A view of a packet whose header (with its options) lies within the buffer, but maybe
    /// not its payload: the start of a packet an ICMP error quotes.
    #[inline]
    pub fn new_checked_header(buffer: T) -> Result<Ipv4Packet<T>, WireError> {
        let len = buffer.as_ref().len();
        if len < field::MIN_HEADER_LEN {
            return Err(WireError::truncated("ipv4", field::MIN_HEADER_LEN, len));
        }
        let p = Ipv4Packet { buffer };
        let hl = p.header_len();
        if hl < field::MIN_HEADER_LEN {
            return Err(WireError::malformed("ipv4", "IHL below 5"));
        }
        if hl > len {
            return Err(WireError::truncated("ipv4 options", hl, len));
        }
        Ok(p)
    }

    /// The total length covers the header and lies within the buffer.
    #[inline]
    pub fn check_total_len(&self) -> Result<(), WireError> {
        let total = usize::from(self.total_len());
        if total < self.header_len() {
            return Err(WireError::malformed(
                "ipv4",
                "total length below the header's",
            ));
        }
        let len = self.buffer.as_ref().len();
        if total > len {
            return Err(WireError::truncated("ipv4 payload", total, len));
        }
        Ok(())
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// The header's length in bytes, options included (IHL x 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// DSCP and ECN (the former type of service byte).
    #[inline]
    pub fn dscp_ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN]
    }

    #[inline]
    pub fn total_len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::LENGTH.start)
    }

    #[inline]
    pub fn ident(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::IDENT.start)
    }

    /// The flags and fragment offset word as it is.
    #[inline]
    pub fn flags_frag(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::FLG_OFF.start)
    }

    #[inline]
    pub fn dont_frag(&self) -> bool {
        self.flags_frag() & field::FLAG_DF != 0
    }

    #[inline]
    pub fn more_frags(&self) -> bool {
        self.flags_frag() & field::FLAG_MF != 0
    }

    /// The fragment offset in 8-byte units (0 for a whole packet or a first fragment).
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        self.flags_frag() & field::FRAG_OFFSET_MASK
    }

    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// The protocol of the payload (`wire::proto`).
    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.src_bytes())
    }

    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.dst_bytes())
    }

    #[inline]
    pub fn src_bytes(&self) -> [u8; 4] {
        addr_at(self.buffer.as_ref(), field::SRC_ADDR.start)
    }

    #[inline]
    pub fn dst_bytes(&self) -> [u8; 4] {
        addr_at(self.buffer.as_ref(), field::DST_ADDR.start)
    }

    /// The header checksum verifies.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        let b = self.buffer.as_ref();
        checksum::verifies(0, &b[..self.header_len().min(b.len())])
    }

    /// The payload: from the end of the header to the total length, both clamped to the
    /// buffer (so a quoted packet's payload is what was quoted).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        let end = usize::from(self.total_len()).min(b.len());
        let start = self.header_len().min(end);
        &b[start..end]
    }
}

#[inline]
fn addr_at(b: &[u8], at: usize) -> [u8; 4] {
    [b[at], b[at + 1], b[at + 2], b[at + 3]]
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Version 4 and the header length in bytes (a multiple of 4, 20 to 60).
    #[inline]
    pub fn set_version_header_len(&mut self, header_len: usize) {
        self.buffer.as_mut()[field::VER_IHL] = 0x40 | ((header_len / 4) as u8 & 0x0f);
    }

    #[inline]
    pub fn set_dscp_ecn(&mut self, v: u8) {
        self.buffer.as_mut()[field::DSCP_ECN] = v;
    }

    #[inline]
    pub fn set_total_len(&mut self, len: u16) {
        set_u16(self.buffer.as_mut(), field::LENGTH.start, len);
    }

    #[inline]
    pub fn set_ident(&mut self, id: u16) {
        set_u16(self.buffer.as_mut(), field::IDENT.start, id);
    }

    /// The flags and fragment offset word.
    #[inline]
    pub fn set_flags_frag(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::FLG_OFF.start, v);
    }

    #[inline]
    pub fn set_dont_frag(&mut self, df: bool) {
        let v = self.flags_frag() & !field::FLAG_DF;
        self.set_flags_frag(v | if df { field::FLAG_DF } else { 0 });
    }

    #[inline]
    pub fn set_more_frags(&mut self, mf: bool) {
        let v = self.flags_frag() & !field::FLAG_MF;
        self.set_flags_frag(v | if mf { field::FLAG_MF } else { 0 });
    }

    /// The fragment offset in 8-byte units (13 bits).
    #[inline]
    pub fn set_frag_offset(&mut self, units: u16) {
        let v = self.flags_frag() & !field::FRAG_OFFSET_MASK;
        self.set_flags_frag(v | (units & field::FRAG_OFFSET_MASK));
    }

    #[inline]
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    #[inline]
    pub fn set_protocol(&mut self, proto: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = proto;
    }

    #[inline]
    pub fn set_checksum(&mut self, c: u16) {
        set_u16(self.buffer.as_mut(), field::CHECKSUM.start, c);
    }

    #[inline]
    pub fn set_src_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&a.octets());
    }

    #[inline]
    pub fn set_dst_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&a.octets());
    }

    /// Computes and stores the header checksum over the header (options included).
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let hl = self.header_len().min(self.buffer.as_ref().len());
        let c = checksum::checksum(&self.buffer.as_ref()[..hl]);
        self.set_checksum(c);
    }

    /// Sets the TTL, updating the header checksum incrementally (RFC 1624): the TTL shares
    /// its 16-bit word with the protocol.
    #[inline]
    pub fn replace_ttl(&mut self, ttl: u8) {
        let proto = self.protocol();
        let old = u16::from_be_bytes([self.ttl(), proto]);
        let new = u16::from_be_bytes([ttl, proto]);
        let c = checksum::update16(self.checksum(), old, new);
        self.set_ttl(ttl);
        self.set_checksum(c);
    }

    /// Sets the source address, updating the header checksum incrementally; returns the old
    /// address (for the caller's TCP/UDP checksum).
    #[inline]
    pub fn replace_src_addr(&mut self, a: Ipv4Addr) -> Ipv4Addr {
        let old = self.src_bytes();
        let c = checksum::update32(self.checksum(), old, a.octets());
        self.set_src_addr(a);
        self.set_checksum(c);
        Ipv4Addr::from(old)
    }

    /// Sets the destination address, updating the header checksum incrementally; returns
    /// the old address.
    #[inline]
    pub fn replace_dst_addr(&mut self, a: Ipv4Addr) -> Ipv4Addr {
        let old = self.dst_bytes();
        let c = checksum::update32(self.checksum(), old, a.octets());
        self.set_dst_addr(a);
        self.set_checksum(c);
        Ipv4Addr::from(old)
    }

    /// The payload (as [`Ipv4Packet::payload`]), to write.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.total_len()).min(self.buffer.as_ref().len());
        let start = self.header_len().min(end);
        &mut self.buffer.as_mut()[start..end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 45 00 00 1c 1c 46 40 00 40 11 [cksum] 0a 00 00 01 c0 a8 01 02 + 8 bytes of UDP
    fn packet() -> Vec<u8> {
        let mut p = vec![
            0x45, 0x00, 0x00, 0x1c, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 10, 0, 0, 1,
            192, 168, 1, 2, 0x9c, 0x40, 0x00, 0x35, 0x00, 0x08, 0x00, 0x00,
        ];
        let c = checksum::checksum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p
    }

    #[test]
    fn getters() {
        let b = packet();
        let p = Ipv4Packet::new_checked(&b[..]).expect("whole packet");
        assert_eq!((p.version(), p.header_len(), p.total_len()), (4, 20, 28));
        assert_eq!(
            (p.ident(), p.dont_frag(), p.more_frags()),
            (0x1c46, true, false)
        );
        assert_eq!((p.frag_offset(), p.ttl(), p.protocol()), (0, 64, 17));
        assert_eq!(p.src_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(192, 168, 1, 2));
        assert!(p.verify_checksum());
        assert_eq!(p.payload(), &b[20..]);
    }

    #[test]
    fn setters_and_incremental_updates() {
        let mut b = packet();
        let mut p = Ipv4Packet::new_checked(&mut b[..]).expect("whole packet");
        p.replace_ttl(63);
        assert!(p.verify_checksum());
        assert_eq!(
            p.replace_src_addr(Ipv4Addr::new(172, 16, 9, 9)),
            Ipv4Addr::new(10, 0, 0, 1)
        );
        p.replace_dst_addr(Ipv4Addr::new(8, 8, 4, 4));
        assert!(p.verify_checksum());
        let kept = p.checksum();
        p.fill_checksum();
        assert_eq!(p.checksum(), kept, "incremental equals full");
        p.set_more_frags(true);
        p.set_frag_offset(185);
        p.set_dont_frag(false);
        assert_eq!((p.flags_frag(), p.frag_offset()), (0x2000 | 185, 185));
        p.set_dscp_ecn(0xc0);
        p.set_ident(7);
        p.set_protocol(6);
        p.set_total_len(24);
        assert_eq!(p.payload().len(), 4);
        assert_eq!(
            &b[..12],
            &[0x45, 0xc0, 0, 24, 0, 7, 0x20, 185, 63, 6, b[10], b[11]]
        );
        assert_eq!(&b[12..20], &[172, 16, 9, 9, 8, 8, 4, 4]);
    }

    #[test]
    fn short_or_inconsistent_buffers_are_refused() {
        let b = packet();
        for n in 0..b.len() {
            assert!(Ipv4Packet::new_checked(&b[..n]).is_err(), "{n} bytes");
            assert_eq!(Ipv4Packet::new_checked_header(&b[..n]).is_ok(), n >= 20);
        }
        let mut bad = b.clone();
        bad[0] = 0x44; // IHL 4
        assert!(Ipv4Packet::new_checked_header(&bad[..]).is_err());
        bad[0] = 0x46; // options beyond a 20-byte buffer
        assert!(Ipv4Packet::new_checked_header(&bad[..20]).is_err());
        let mut bad = b;
        bad[3] = 19; // total length below the header
        assert!(Ipv4Packet::new_checked(&bad[..]).is_err());
        // a quoted start: header whole, payload cut, payload() clamps
        let q = Ipv4Packet::new_checked_header(&bad[..24]).expect("header");
        assert!(q.payload().is_empty());
    }
}
