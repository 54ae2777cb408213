//! Synthetic routing tables for benchmarks and tests: an IPv4 table shaped like the Internet's
//! (BGP) table, and lookup addresses that mostly hit it. Deterministic from a seed (xorshift64*),
//! no dependency. Not on the packet path.

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use flowgate_config::flows::{mask128, mask32};

use super::lpm::NextHopId;

/// xorshift64* (Vigna): small, fast, good enough for synthetic data.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator from `seed` (0 is replaced by a fixed non-zero state).
    pub fn new(seed: u64) -> XorShift {
        XorShift(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// Uniform in `0..n` (n > 0; tiny bias is irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// Share of each IPv4 prefix length in the table, per 10 000, shaped after the public BGP
/// table of the mid-2020s (about 60 % /24; then /22, /23, /21, /20; /16 a bump; few shorter
/// than /16; longer than /24 only a trace, as most networks filter them).
pub const BGP_V4_LENGTHS: [(u8, u32); 25] = [
    (8, 2),
    (9, 2),
    (10, 4),
    (11, 8),
    (12, 15),
    (13, 25),
    (14, 40),
    (15, 60),
    (16, 130),
    (17, 80),
    (18, 130),
    (19, 250),
    (20, 400),
    (21, 500),
    (22, 1200),
    (23, 1000),
    (24, 5904),
    (25, 50),
    (26, 50),
    (27, 30),
    (28, 30),
    (29, 30),
    (30, 30),
    (31, 5),
    (32, 25),
];

fn pick_length(rng: &mut XorShift) -> u8 {
    let total: u32 = BGP_V4_LENGTHS.iter().map(|l| l.1).sum();
    let mut r = rng.below(u64::from(total)) as u32;
    for (len, w) in BGP_V4_LENGTHS {
        if r < w {
            return len;
        }
        r -= w;
    }
    24
}

/// A unicast-looking first octet: 1..=223, not 10 or 127.
fn unicast_v4(rng: &mut XorShift) -> u32 {
    loop {
        let a = rng.next_u32();
        let first = a >> 24;
        if (1..=223).contains(&first) && first != 10 && first != 127 {
            return a;
        }
    }
}

/// `n` distinct IPv4 prefixes with lengths from [`BGP_V4_LENGTHS`] and next hops in
/// `0..next_hops`.
pub fn bgp_v4(n: usize, next_hops: u32, seed: u64) -> Vec<(Ipv4Addr, u8, NextHopId)> {
    let mut rng = XorShift::new(seed);
    let mut seen = HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let len = pick_length(&mut rng);
        let addr = unicast_v4(&mut rng) & mask32(len);
        if seen.insert((addr, len)) {
            let nh = NextHopId(rng.below(u64::from(next_hops.max(1))) as u32);
            out.push((Ipv4Addr::from(addr), len, nh));
        }
    }
    out
}

/// `n` lookup addresses: a share `hit_permille`/1000 drawn inside random prefixes of
/// `prefixes`, the rest uniform over the unicast space (some of those hit too).
pub fn lookups_v4(
    prefixes: &[(Ipv4Addr, u8, NextHopId)],
    n: usize,
    hit_permille: u64,
    seed: u64,
) -> Vec<u32> {
    let mut rng = XorShift::new(seed);
    (0..n)
        .map(|_| {
            if !prefixes.is_empty() && rng.below(1000) < hit_permille {
                let (p, len, _) = prefixes[rng.below(prefixes.len() as u64) as usize];
                u32::from(p) | (rng.next_u32() & !mask32(len))
            } else {
                unicast_v4(&mut rng)
            }
        })
        .collect()
}

/// `n` distinct IPv6 prefixes inside 2000::/3: mostly /48 and /32..=/44, some /29../31 and
/// /64, a trace of /128.
pub fn global_v6(n: usize, next_hops: u32, seed: u64) -> Vec<(Ipv6Addr, u8, NextHopId)> {
    const LENGTHS: [(u8, u64); 9] = [
        (29, 30),
        (32, 120),
        (36, 40),
        (40, 70),
        (44, 90),
        (46, 30),
        (48, 560),
        (64, 50),
        (128, 10),
    ];
    let total: u64 = LENGTHS.iter().map(|l| l.1).sum();
    let mut rng = XorShift::new(seed);
    let mut seen = HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let mut r = rng.below(total);
        let mut len = 48;
        for (l, w) in LENGTHS {
            if r < w {
                len = l;
                break;
            }
            r -= w;
        }
        let raw = u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64());
        let addr = ((raw >> 3) | 1 << 125) & mask128(len);
        if seen.insert((addr, len)) {
            let nh = NextHopId(rng.below(u64::from(next_hops.max(1))) as u32);
            out.push((Ipv6Addr::from(addr), len, nh));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_distinct_and_shaped() {
        let a = bgp_v4(20_000, 100, 7);
        assert_eq!(a, bgp_v4(20_000, 100, 7));
        let distinct: HashSet<_> = a.iter().map(|(p, l, _)| (*p, *l)).collect();
        assert_eq!(distinct.len(), a.len());
        let s24 = a.iter().filter(|r| r.1 == 24).count() as f64 / a.len() as f64;
        assert!((0.55..0.65).contains(&s24), "{s24}");
        let addrs = lookups_v4(&a, 1000, 900, 1);
        assert_eq!(addrs.len(), 1000);
        assert_eq!(global_v6(500, 10, 3).len(), 500);
    }
}
