//! The rewrite of a routed frame, in place: IPv4 TTL or IPv6 hop limit minus one (IPv4 header
//! checksum updated incrementally, RFC 1624 eqn. 3), then the next hop's destination MAC and the
//! output port's source MAC.
//!
//! A packet whose TTL / hop limit is 1 or 0 is not forwarded and not touched: [`forward`] returns
//! [`NotForwarded::Expired`] and the worker hands the frame, unchanged, to the kernel through the
//! input port's TAP. The kernel, which owns the port's addresses, answers with ICMP time
//! exceeded (and rate-limits it), as a Linux router would; when the port has no TAP
//! (`kernel = false`) the worker drops and counts it.

use flowgate_config::appliance::MacAddr;
use flowgate_config::flows::Family;

use crate::wire::{EthernetFrame, Ipv4Packet, Ipv6Packet};

/// Why a frame was not rewritten (it is left unchanged).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum NotForwarded {
    /// TTL / hop limit <= 1: the kernel answers ICMP time exceeded.
    #[error("TTL or hop limit expired")]
    Expired,
    /// The frame is shorter than the header at `l3_offset`.
    #[error("frame too short for its IP header")]
    Truncated,
}

/// Decrements the TTL (IPv4, with the checksum) or the hop limit (IPv6) of the IP header at
/// `l3`. Leaves the frame unchanged when it returns an error.
#[inline]
pub fn decrement_ttl(frame: &mut [u8], l3: usize, family: Family) -> Result<(), NotForwarded> {
    let ip = frame.get_mut(l3..).ok_or(NotForwarded::Truncated)?;
    match family {
        Family::V4 => {
            let mut p = Ipv4Packet::new_checked_header(ip).map_err(|_| NotForwarded::Truncated)?;
            let ttl = p.ttl();
            if ttl <= 1 {
                return Err(NotForwarded::Expired);
            }
            p.replace_ttl(ttl - 1);
        }
        Family::V6 => {
            let mut p = Ipv6Packet::new_checked_header(ip).map_err(|_| NotForwarded::Truncated)?;
            let hl = p.hop_limit();
            if hl <= 1 {
                return Err(NotForwarded::Expired);
            }
            p.set_hop_limit(hl - 1);
        }
    }
    Ok(())
}

/// Sets the Ethernet destination and source addresses.
#[inline]
pub fn rewrite_macs(frame: &mut [u8], src: MacAddr, dst: MacAddr) -> Result<(), NotForwarded> {
    let mut eth = EthernetFrame::new_checked(frame).map_err(|_| NotForwarded::Truncated)?;
    eth.set_dst_addr(dst);
    eth.set_src_addr(src);
    Ok(())
}

/// The whole rewrite of a routed frame: TTL / hop limit, then MACs (`src`: the output port's,
/// `dst`: the resolved next hop's). On error the frame is unchanged.
#[inline]
pub fn forward(
    frame: &mut [u8],
    l3: usize,
    family: Family,
    src: MacAddr,
    dst: MacAddr,
) -> Result<(), NotForwarded> {
    EthernetFrame::new_checked(&*frame).map_err(|_| NotForwarded::Truncated)?;
    decrement_ttl(frame, l3, family)?;
    rewrite_macs(frame, src, dst)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::build::{frame, FrameSpec};
    use crate::wire::checksum::checksum;
    use crate::wire::{ipv4, ipv6, parse, Frame};
    use proptest::prelude::*;
    use std::net::IpAddr;

    const SRC: MacAddr = MacAddr([0x02, 0xaa, 0, 0, 0, 1]);
    const DST: MacAddr = MacAddr([0x02, 0xbb, 0, 0, 0, 2]);

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn run(spec: &FrameSpec) -> (Vec<u8>, Vec<u8>, Result<(), NotForwarded>) {
        let before = frame(spec);
        let Frame::Ip(facts) = parse(&before) else {
            panic!("not an IP frame")
        };
        let mut after = before.clone();
        let r = forward(&mut after, facts.l3_offset, facts.family, SRC, DST);
        (before, after, r)
    }

    /// Packet in, packet out: only the TTL, the checksum and the MACs change, and the checksum
    /// recomputed from scratch is valid.
    #[test]
    fn table_driven_rewrites() {
        // (src, dst, proto, vlan, ttl in, expected TTL out)
        type Case = (
            &'static str,
            &'static str,
            u8,
            Option<u16>,
            u8,
            Result<u8, NotForwarded>,
        );
        let cases: &[Case] = &[
            ("10.0.0.1", "192.168.1.1", 6, None, 64, Ok(63)),
            ("10.0.0.1", "192.168.1.1", 17, Some(7), 2, Ok(1)),
            ("10.0.0.1", "8.8.8.8", 1, None, 255, Ok(254)),
            ("0.0.0.0", "0.0.0.0", 0, None, 128, Ok(127)),
            (
                "255.255.255.255",
                "255.255.255.255",
                255,
                None,
                0x80,
                Ok(0x7f),
            ),
            (
                "10.0.0.1",
                "192.168.1.1",
                6,
                None,
                1,
                Err(NotForwarded::Expired),
            ),
            (
                "10.0.0.1",
                "192.168.1.1",
                6,
                None,
                0,
                Err(NotForwarded::Expired),
            ),
            ("2001:db8::1", "2001:db8:1::2", 6, None, 64, Ok(63)),
            ("2001:db8::1", "2001:db8:1::2", 58, Some(12), 2, Ok(1)),
            (
                "2001:db8::1",
                "2001:db8:1::2",
                17,
                None,
                1,
                Err(NotForwarded::Expired),
            ),
            (
                "2001:db8::1",
                "2001:db8:1::2",
                17,
                None,
                0,
                Err(NotForwarded::Expired),
            ),
        ];
        for &(s, d, proto, vlan, ttl, want) in cases {
            let mut spec = FrameSpec::new(ip(s), ip(d), proto, 1234, 80);
            spec.ttl = ttl;
            spec.vlan = vlan;
            spec.payload = 5;
            let (before, after, r) = run(&spec);
            let l3 = 14 + if vlan.is_some() { 4 } else { 0 };
            match want {
                Err(e) => {
                    assert_eq!(r, Err(e), "{s} -> {d} ttl {ttl}");
                    assert_eq!(before, after, "an expired frame stays as it was");
                }
                Ok(out_ttl) => {
                    assert_eq!(r, Ok(()), "{s} -> {d} ttl {ttl}");
                    assert_eq!(&after[0..6], &DST.0);
                    assert_eq!(&after[6..12], &SRC.0);
                    let v4 = ip(s).is_ipv4();
                    let ttl_at = l3
                        + if v4 {
                            ipv4::field::TTL
                        } else {
                            ipv6::field::HOP_LIMIT
                        };
                    assert_eq!(after[ttl_at], out_ttl);
                    if v4 {
                        let hdr = &after[l3..l3 + 20];
                        assert_eq!(checksum(hdr), 0, "checksum valid after rewrite");
                    }
                    // Nothing else changed.
                    let mut expect = before.clone();
                    expect[0..6].copy_from_slice(&DST.0);
                    expect[6..12].copy_from_slice(&SRC.0);
                    expect[ttl_at] = out_ttl;
                    if v4 {
                        expect[l3 + 10..l3 + 12].copy_from_slice(&after[l3 + 10..l3 + 12]);
                    }
                    assert_eq!(after, expect);
                }
            }
        }
    }

    #[test]
    fn truncated() {
        let mut short = vec![0u8; 20];
        assert_eq!(
            forward(&mut short, 14, Family::V4, SRC, DST),
            Err(NotForwarded::Truncated)
        );
        assert_eq!(
            forward(&mut short[..8], 0, Family::V6, SRC, DST),
            Err(NotForwarded::Truncated)
        );
    }

    // RFC 1624 eqn. 3 against a full recomputation, over varied headers and every TTL.
    proptest! {
        #[test]
        fn incremental_equals_full(src in any::<u32>(), dst in any::<u32>(), ttl in 2u8..=255, proto in any::<u8>(), payload in 0usize..40) {
            let mut spec = FrameSpec::new(IpAddr::V4(src.into()), IpAddr::V4(dst.into()), proto, 1, 2);
            spec.ttl = ttl;
            spec.payload = payload;
            let (_, after, r) = run(&spec);
            prop_assert_eq!(r, Ok(()));
            let mut hdr = after[14..34].to_vec();
            prop_assert_eq!(checksum(&hdr), 0);
            let stored = u16::from_be_bytes([hdr[10], hdr[11]]);
            hdr[10] = 0;
            hdr[11] = 0;
            prop_assert_eq!(stored, checksum(&hdr));
        }
    }
}
