//! IPv6 headers (RFC 8200) and the extension headers between them and the upper layer.

use std::net::Ipv6Addr;

use super::{get_u16, proto, set_u16, WireError};

/// Byte ranges of the IPv6 fixed header.
pub mod field {
    use crate::wire::Field;
    /// Version (4 bits), traffic class (8), flow label (20).
    pub const VER_TC_FLOW: Field = 0..4;
    pub const LENGTH: Field = 4..6;
    pub const NXT_HDR: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC_ADDR: Field = 8..24;
    pub const DST_ADDR: Field = 24..40;
    pub const HEADER_LEN: usize = DST_ADDR.end;
}

/// How many extension headers are walked before a packet is declared malformed
/// (`bad-ipv6-extension`): a chain of 8 is read, one of 9 is not.
pub const MAX_EXTENSION_HEADERS: usize = 8;

/// Whether `next_header` is an extension header the walk steps over (hop-by-hop, routing,
/// fragment, AH, destination options, mobility, HIP, shim6). ESP is not: it hides what
/// follows, so it ends the walk as an upper-layer protocol would.
#[inline]
pub fn is_extension(next_header: u8) -> bool {
    matches!(
        next_header,
        proto::HOP_BY_HOP
            | proto::ROUTING
            | proto::FRAGMENT
            | proto::AH
            | proto::DEST_OPTS
            | proto::MOBILITY
            | proto::HIP
            | proto::SHIM6
    )
}

/// An IPv6 packet (fixed header, payload) over a byte buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// A view without a length check: the accessors panic on a buffer shorter than 40 bytes.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Ipv6Packet<T> {
        Ipv6Packet { buffer }
    }

    /// A view of a whole packet: the fixed header and the payload length it states lie
    /// within the buffer (padding may follow). The version is not checked.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Ipv6Packet<T>, WireError> {
        let p = Self::new_checked_header(buffer)?;
        p.check_payload_len()?;
        Ok(p)
    }

    /// A view of a packet whose fixed header lies within the buffer, but maybe not its
    /// payload: the start of a packet an ICMPv6 error quotes.
    #[inline]
    pub fn new_checked_header(buffer: T) -> Result<Ipv6Packet<T>, WireError> {
        let len = buffer.as_ref().len();
        if len < field::HEADER_LEN {
            return Err(WireError::truncated("ipv6", field::HEADER_LEN, len));
        }
        Ok(Ipv6Packet { buffer })
    }

    /// The payload length stated lies within the buffer.
    #[inline]
    pub fn check_payload_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if self.total_len() > len {
            return Err(WireError::truncated("ipv6 payload", self.total_len(), len));
        }
        Ok(())
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }

    #[inline]
    pub fn traffic_class(&self) -> u8 {
        (get_u16(self.buffer.as_ref(), 0) >> 4) as u8
    }

    #[inline]
    pub fn flow_label(&self) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([0, b[1] & 0x0f, b[2], b[3]])
    }

    #[inline]
    pub fn payload_len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::LENGTH.start)
    }

    /// The fixed header plus the payload length: the packet without padding.
    #[inline]
    pub fn total_len(&self) -> usize {
        field::HEADER_LEN + usize::from(self.payload_len())
    }

    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NXT_HDR]
    }

    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    #[inline]
    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.src_bytes())
    }

    #[inline]
    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.dst_bytes())
    }

    #[inline]
    pub fn src_bytes(&self) -> [u8; 16] {
        addr_at(self.buffer.as_ref(), field::SRC_ADDR.start)
    }

    #[inline]
    pub fn dst_bytes(&self) -> [u8; 16] {
        addr_at(self.buffer.as_ref(), field::DST_ADDR.start)
    }

    /// The payload (extension headers and upper layer), clamped to the buffer.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[field::HEADER_LEN..self.total_len().min(b.len())]
    }
}

#[inline]
fn addr_at(b: &[u8], at: usize) -> [u8; 16] {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[at..at + 16]);
    a
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Version 6, traffic class `tc`, flow label 0.
    #[inline]
    pub fn set_version_traffic_class(&mut self, tc: u8) {
        let b = self.buffer.as_mut();
        b[0] = 0x60 | (tc >> 4);
        b[1] = tc << 4;
        b[2] = 0;
        b[3] = 0;
    }

    #[inline]
    pub fn set_flow_label(&mut self, label: u32) {
        let b = self.buffer.as_mut();
        let l = label.to_be_bytes();
        b[1] = (b[1] & 0xf0) | (l[1] & 0x0f);
        b[2] = l[2];
        b[3] = l[3];
    }

    #[inline]
    pub fn set_payload_len(&mut self, len: u16) {
        set_u16(self.buffer.as_mut(), field::LENGTH.start, len);
    }

    #[inline]
    pub fn set_next_header(&mut self, next: u8) {
        self.buffer.as_mut()[field::NXT_HDR] = next;
    }

    #[inline]
    pub fn set_hop_limit(&mut self, hl: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = hl;
    }

    #[inline]
    pub fn set_src_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&a.octets());
    }

    #[inline]
    pub fn set_dst_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&a.octets());
    }

    /// The payload (as [`Ipv6Packet::payload`]), to write.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.total_len().min(self.buffer.as_ref().len());
        &mut self.buffer.as_mut()[field::HEADER_LEN..end]
    }
}

/// Byte ranges shared by the extension headers (RFC 8200 4.3-4.6, RFC 4302 for AH).
pub mod ext_field {
    use crate::wire::Field;
    pub const NXT_HDR: usize = 0;
    /// Length in 8-byte units after the first 8 (AH: in 4-byte units, minus 2).
    pub const LENGTH: usize = 1;
    /// The fragment header's offset (13 bits, 8-byte units), 2 reserved bits, M flag.
    pub const FRAG_OFFSET: Field = 2..4;
    pub const FRAG_IDENT: Field = 4..8;
    /// The fragment header's (fixed) length, and the shortest of every extension header.
    pub const MIN_LEN: usize = 8;
}

/// One extension header (of type `kind`, the previous header's next header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv6ExtHeader<T: AsRef<[u8]>> {
    buffer: T,
    kind: u8,
}

impl<T: AsRef<[u8]>> Ipv6ExtHeader<T> {
    /// A view of an extension header of type `kind` ([`is_extension`]) whose whole length
    /// lies within the buffer.
    #[inline]
    pub fn new_checked(buffer: T, kind: u8) -> Result<Ipv6ExtHeader<T>, WireError> {
        let b = buffer.as_ref();
        let Some(&units) = b.get(ext_field::LENGTH) else {
            return Err(WireError::truncated("ipv6 extension", 2, b.len()));
        };
        let len = header_len_of(kind, units);
        if len > b.len() {
            return Err(WireError::truncated("ipv6 extension", len, b.len()));
        }
        Ok(Ipv6ExtHeader { buffer, kind })
    }

    /// The header's type.
    #[inline]
    pub fn kind(&self) -> u8 {
        self.kind
    }

    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[ext_field::NXT_HDR]
    }

    /// The header's length in bytes.
    #[inline]
    pub fn header_len(&self) -> usize {
        header_len_of(self.kind, self.buffer.as_ref()[ext_field::LENGTH])
    }

    /// A fragment header's offset in 8-byte units (0: a first fragment); 0 for the other
    /// kinds.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        if self.kind != proto::FRAGMENT {
            return 0;
        }
        get_u16(self.buffer.as_ref(), ext_field::FRAG_OFFSET.start) >> 3
    }

    /// A fragment header's M flag (more fragments follow); false for the other kinds.
    #[inline]
    pub fn more_frags(&self) -> bool {
        self.kind == proto::FRAGMENT
            && get_u16(self.buffer.as_ref(), ext_field::FRAG_OFFSET.start) & 1 != 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6ExtHeader<T> {
    #[inline]
    pub fn set_next_header(&mut self, next: u8) {
        self.buffer.as_mut()[ext_field::NXT_HDR] = next;
    }
}

/// Writes a fragment header (8 bytes) at the start of `buf`.
pub fn emit_fragment_header(buf: &mut [u8], next: u8, offset_units: u16, more: bool, ident: u32) {
    buf[ext_field::NXT_HDR] = next;
    buf[ext_field::LENGTH] = 0;
    set_u16(
        buf,
        ext_field::FRAG_OFFSET.start,
        (offset_units << 3) | u16::from(more),
    );
    buf[ext_field::FRAG_IDENT].copy_from_slice(&ident.to_be_bytes());
}

/// The length in bytes of an extension header of type `kind` whose length byte is `units`.
#[inline]
fn header_len_of(kind: u8, units: u8) -> usize {
    match kind {
        proto::FRAGMENT => ext_field::MIN_LEN,
        proto::AH => (usize::from(units) + 2) * 4,
        _ => (usize::from(units) + 1) * 8,
    }
}

/// Where the upper-layer header of an IPv6 packet starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpperLayer {
    /// Its protocol (the last next header).
    pub protocol: u8,
    /// Its offset from the start of the extension headers (the end of the fixed header).
    pub offset: usize,
    /// A fragment header with a non-zero offset was met: what follows it is no header.
    pub non_first_fragment: bool,
}

/// Why the extension header chain could not be walked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("an IPv6 extension header is cut short")]
    Truncated,
    #[error("more than {MAX_EXTENSION_HEADERS} IPv6 extension headers")]
    TooLong,
}

/// Walks the extension headers of `payload` (the packet after its fixed header, up to its
/// stated length), starting with type `next` (the fixed header's next header): at most
/// [`MAX_EXTENSION_HEADERS`]. Stops at the first header that is no extension (the upper
/// layer, ESP, no-next-header) or after a non-first fragment's fragment header.
#[inline]
pub fn upper_layer(payload: &[u8], mut next: u8) -> Result<UpperLayer, ChainError> {
    let mut offset = 0;
    for _ in 0..MAX_EXTENSION_HEADERS {
        if !is_extension(next) {
            return Ok(UpperLayer {
                protocol: next,
                offset,
                non_first_fragment: false,
            });
        }
        let ext = payload
            .get(offset..)
            .and_then(|b| Ipv6ExtHeader::new_checked(b, next).ok())
            .ok_or(ChainError::Truncated)?;
        let non_first = ext.frag_offset() != 0;
        next = ext.next_header();
        offset += ext.header_len();
        if non_first {
            return Ok(UpperLayer {
                protocol: next,
                offset,
                non_first_fragment: true,
            });
        }
    }
    if is_extension(next) {
        return Err(ChainError::TooLong);
    }
    Ok(UpperLayer {
        protocol: next,
        offset,
        non_first_fragment: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    const DST: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0xa, 0xb);

    fn header(payload_len: u16, next: u8) -> Vec<u8> {
        let mut b = vec![0x6a, 0xb1, 0x23, 0x45];
        b.extend_from_slice(&payload_len.to_be_bytes());
        b.extend_from_slice(&[next, 64]);
        b.extend_from_slice(&SRC.octets());
        b.extend_from_slice(&DST.octets());
        b
    }

    #[test]
    fn getters_and_setters() {
        let mut b = header(4, proto::UDP);
        b.extend_from_slice(&[1, 2, 3, 4, 0xee]); // one byte of padding
        let p = Ipv6Packet::new_checked(&b[..]).expect("whole");
        assert_eq!(
            (p.version(), p.traffic_class(), p.flow_label()),
            (6, 0xab, 0x12345)
        );
        assert_eq!(
            (p.payload_len(), p.next_header(), p.hop_limit()),
            (4, 17, 64)
        );
        assert_eq!((p.src_addr(), p.dst_addr()), (SRC, DST));
        assert_eq!(p.payload(), &[1, 2, 3, 4]);

        let mut out = [0u8; 44];
        let mut q = Ipv6Packet::new_unchecked(&mut out[..]);
        q.set_version_traffic_class(0xab);
        q.set_flow_label(0x12345);
        q.set_payload_len(4);
        q.set_next_header(proto::UDP);
        q.set_hop_limit(64);
        q.set_src_addr(SRC);
        q.set_dst_addr(DST);
        q.payload_mut().copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!(&out[..], &b[..44]);
    }

    #[test]
    fn short_buffers_are_refused() {
        let mut b = header(8, proto::TCP);
        b.extend_from_slice(&[0; 8]);
        for n in 0..b.len() {
            assert!(Ipv6Packet::new_checked(&b[..n]).is_err(), "{n} bytes");
            assert_eq!(Ipv6Packet::new_checked_header(&b[..n]).is_ok(), n >= 40);
        }
        assert!(Ipv6Packet::new_checked(&b[..]).is_ok());
    }

    /// `n` extension headers of the kinds the walk knows, in turn, then UDP.
    fn chain(n: usize) -> Vec<u8> {
        let kinds = [
            proto::HOP_BY_HOP,
            proto::DEST_OPTS,
            proto::ROUTING,
            proto::FRAGMENT,
            proto::AH,
            proto::MOBILITY,
            proto::HIP,
            proto::SHIM6,
            proto::DEST_OPTS,
            proto::DEST_OPTS,
        ];
        let mut out = Vec::new();
        for i in 0..n {
            let next = if i + 1 == n { proto::UDP } else { kinds[i + 1] };
            match kinds[i] {
                proto::FRAGMENT => {
                    let mut h = [0u8; 8];
                    emit_fragment_header(&mut h, next, 0, true, 7);
                    out.extend_from_slice(&h);
                }
                proto::AH => {
                    out.extend_from_slice(&[next, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
                }
                _ => out.extend_from_slice(&[next, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            }
        }
        out.extend_from_slice(&[0; 8]);
        out
    }

    #[test]
    fn chains_up_to_eight_headers_are_walked_nine_are_refused() {
        for n in 0..=9 {
            let c = chain(n);
            let first = if n == 0 {
                proto::UDP
            } else {
                proto::HOP_BY_HOP
            };
            let got = upper_layer(&c, first);
            if n <= MAX_EXTENSION_HEADERS {
                let want = UpperLayer {
                    protocol: proto::UDP,
                    offset: c.len() - 8,
                    non_first_fragment: false,
                };
                assert_eq!(got, Ok(want), "{n} headers");
            } else {
                assert_eq!(got, Err(ChainError::TooLong), "{n} headers");
            }
        }
    }

    #[test]
    fn a_non_first_fragment_ends_the_walk() {
        let mut c = vec![0u8; 8];
        emit_fragment_header(&mut c, proto::TCP, 185, false, 1);
        let ext = Ipv6ExtHeader::new_checked(&c[..], proto::FRAGMENT).expect("8 bytes");
        assert_eq!(
            (ext.frag_offset(), ext.more_frags(), ext.next_header()),
            (185, false, 6)
        );
        assert_eq!(
            upper_layer(&c, proto::FRAGMENT),
            Ok(UpperLayer {
                protocol: proto::TCP,
                offset: 8,
                non_first_fragment: true
            })
        );
    }

    #[test]
    fn cut_chains_are_refused() {
        let c = chain(3);
        for n in 0..c.len() - 8 {
            assert_eq!(
                upper_layer(&c[..n], proto::HOP_BY_HOP),
                Err(ChainError::Truncated),
                "{n} bytes"
            );
        }
        // ESP ends the walk: what follows is hidden
        assert_eq!(
            upper_layer(&[], proto::ESP).map(|u| u.protocol),
            Ok(proto::ESP)
        );
    }
}
