//! The Internet checksum (RFC 1071), its incremental update (RFC 1624) and the IPv4/IPv6
//! pseudo-headers of TCP, UDP and ICMPv6: the one implementation the packet path, the frame
//! builders and the tests use.
//!
//! Sums are carried as `u32` values already folded to 16 bits ("folded sums"), so they can be
//! chained: `ones_sum(pseudo_header_v4(..), segment)`. [`finish`] complements a folded sum
//! into the checksum to store; a message whose checksum is right sums to `0xffff`.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Folds a 64-bit accumulator of 16/32-bit big-endian words into 16 bits with end-around
/// carries. Never 0 unless every word added was 0.
#[inline]
fn fold64(mut acc: u64) -> u32 {
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    let mut s = acc as u32;
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s
}

/// The folded one's-complement sum of `data` (big-endian 16-bit words, an odd last byte padded
/// with a zero), added to the folded (or any) sum `initial`. Not complemented.
#[inline]
pub fn ones_sum(initial: u32, data: &[u8]) -> u32 {
    let mut acc = u64::from(initial);
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    match *words.remainder() {
        [a] => acc += u64::from(a) << 8,
        [a, b] => acc += u64::from(u16::from_be_bytes([a, b])),
        [a, b, c] => acc += u64::from(u16::from_be_bytes([a, b])) + (u64::from(c) << 8),
        _ => {}
    }
    fold64(acc)
}

/// The checksum to store for a folded sum: its complement.
#[inline]
pub fn finish(sum: u32) -> u16 {
    !(fold64(u64::from(sum)) as u16)
}

/// The Internet checksum of `data`, ready to store (its checksum field zeroed first).
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    finish(ones_sum(0, data))
}

/// Whether `data`, checksum field included, verifies (sums to `0xffff`).
#[inline]
pub fn verifies(initial: u32, data: &[u8]) -> bool {
    ones_sum(initial, data) == 0xffff
}

/// The folded sum of the IPv4 pseudo-header of a TCP/UDP segment (RFC 793 3.1, RFC 768):
/// source, destination, zero, protocol, the segment's length.
#[inline]
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, length: u16) -> u32 {
    let acc = u64::from(u32::from(src))
        + u64::from(u32::from(dst))
        + u64::from(protocol)
        + u64::from(length);
    fold64(acc)
}

/// The folded sum of the IPv6 pseudo-header (RFC 8200 8.1): source, destination, the
/// upper-layer packet's length (32 bits), three zero bytes, the next header.
#[inline]
pub fn pseudo_header_v6(src: &Ipv6Addr, dst: &Ipv6Addr, next_header: u8, length: u32) -> u32 {
    let acc = u64::from(ones_sum(0, &src.octets()))
        + u64::from(ones_sum(0, &dst.octets()))
        + u64::from(length)
        + u64::from(next_header);
    fold64(acc)
}

/// One's-complement addition of two 16-bit values.
#[inline]
fn add16(a: u16, b: u16) -> u16 {
    let s = u32::from(a) + u32::from(b);
    ((s & 0xffff) + (s >> 16)) as u16
}

/// RFC 1624 eqn. 3: the checksum `hc` of a header after one of its 16-bit words changed from
/// `old` to `new`: `HC' = ~(~HC + ~m + m')`.
#[inline]
pub fn update16(hc: u16, old: u16, new: u16) -> u16 {
    !add16(add16(!hc, !old), new)
}

/// RFC 1624 eqn. 3 for a run of 16-bit words (an IPv4 or IPv6 address, a port and an
/// address...) that changed from `old` to `new` (the same even length; extra bytes of the
/// longer one and an odd last byte are ignored).
#[inline]
pub fn update(hc: u16, old: &[u8], new: &[u8]) -> u16 {
    let mut acc = u64::from(!hc);
    for (o, n) in old.chunks_exact(2).zip(new.chunks_exact(2)) {
        acc += u64::from(!u16::from_be_bytes([o[0], o[1]]));
        acc += u64::from(u16::from_be_bytes([n[0], n[1]]));
    }
    !(fold64(acc) as u16)
}

/// RFC 1624 for a changed 32-bit value (an IPv4 address).
#[inline]
pub fn update32(hc: u16, old: [u8; 4], new: [u8; 4]) -> u16 {
    update(hc, &old, &new)
}

/// RFC 1624 for a changed 128-bit value (an IPv6 address).
#[inline]
pub fn update128(hc: u16, old: [u8; 16], new: [u8; 16]) -> u16 {
    update(hc, &old, &new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The reference: RFC 1071's loop, 16 bits at a time, nothing clever.
    fn reference_sum(data: &[u8]) -> u32 {
        let mut sum = 0u32;
        for c in data.chunks(2) {
            let hi = u32::from(c[0]) << 8;
            let lo = c.get(1).map_or(0, |b| u32::from(*b));
            sum += hi | lo;
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(ones_sum(0, &data), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
        // odd lengths pad with a zero byte
        assert_eq!(ones_sum(0, &data[..7]), reference_sum(&data[..7]));
        assert_eq!(ones_sum(0, &[0xab]), 0xab00);
    }

    #[test]
    fn rfc1624_example() {
        // RFC 1624 section 4: a header checksum dd2f, a word 5555 -> 3285: the new checksum
        // is 0000 by eqn. 3 (eqn. 2 would give ffff).
        assert_eq!(update16(0xdd2f, 0x5555, 0x3285), 0x0000);
        assert_eq!(update(0xdd2f, &[0x55, 0x55], &[0x32, 0x85]), 0x0000);
    }

    #[test]
    fn a_real_ipv4_header() {
        // 45 00 00 73 00 00 40 00 40 11 [b8 61] c0 a8 00 01 c0 a8 00 c7 (Wikipedia's example)
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&h), 0xb861);
        h[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert!(verifies(0, &h));
    }

    #[test]
    fn pseudo_headers_equal_their_bytes() {
        let (s, d) = (
            Ipv4Addr::new(10, 1, 2, 3),
            Ipv4Addr::new(192, 168, 200, 254),
        );
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&s.octets());
        bytes.extend_from_slice(&d.octets());
        bytes.extend_from_slice(&[0, 17, 0x05, 0xdc]);
        assert_eq!(pseudo_header_v4(s, d, 17, 1500), ones_sum(0, &bytes));
        let (s, d): (Ipv6Addr, Ipv6Addr) = (
            "2001:db8::ffff:1".parse().unwrap_or(Ipv6Addr::LOCALHOST),
            "fe80::8:9:a:b".parse().unwrap_or(Ipv6Addr::LOCALHOST),
        );
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&s.octets());
        bytes.extend_from_slice(&d.octets());
        bytes.extend_from_slice(&70000u32.to_be_bytes());
        bytes.extend_from_slice(&[0, 0, 0, 58]);
        assert_eq!(pseudo_header_v6(&s, &d, 58, 70000), ones_sum(0, &bytes));
    }

    proptest! {
        /// The word-at-a-time sum equals RFC 1071's loop, whatever the bytes and length.
        #[test]
        fn sum_equals_reference(data in proptest::collection::vec(any::<u8>(), 0..300), init in 0u32..=0xffff) {
            let want = reference_sum(&data) + init;
            let want = (want & 0xffff) + (want >> 16);
            prop_assert_eq!(ones_sum(init, &data), want);
        }

        /// RFC 1624 after a changed 16-bit word, 32-bit address or 128-bit address equals the
        /// checksum computed again over the changed header (a header whose first word is not
        /// zero, as every IPv4/IPv6/TCP/UDP header's, so neither sum is a zero of the other
        /// sign).
        #[test]
        fn incremental_equals_full(
            mut header in proptest::collection::vec(any::<u8>(), 40..=60),
            first in 1u16..,
            at in 0usize..20,
            width in prop_oneof![Just(2usize), Just(4), Just(16)],
            new in proptest::collection::vec(any::<u8>(), 16),
        ) {
            header[0..2].copy_from_slice(&first.to_be_bytes());
            let len = header.len() & !1;
            let header = &mut header[..len];
            // the checksum lives in the last word
            let c = len - 2;
            header[c..].fill(0);
            let hc = checksum(header);
            header[c..].copy_from_slice(&hc.to_be_bytes());
            // change `width` bytes at an even offset past the first word, before the checksum
            let start = (2 + 2 * at).min(c - width);
            let old = header[start..start + width].to_vec();
            header[start..start + width].copy_from_slice(&new[..width]);
            let inc = match width {
                2 => update16(hc, u16::from_be_bytes([old[0], old[1]]), u16::from_be_bytes([new[0], new[1]])),
                4 => update32(hc, [old[0], old[1], old[2], old[3]], [new[0], new[1], new[2], new[3]]),
                _ => {
                    let (mut o, mut n) = ([0u8; 16], [0u8; 16]);
                    o.copy_from_slice(&old);
                    n.copy_from_slice(&new);
                    update128(hc, o, n)
                }
            };
            header[c..].fill(0);
            prop_assert_eq!(inc, checksum(header));
        }
    }
}
