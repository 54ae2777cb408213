//! Maglev consistent hashing (Eisenbud et al., NSDI 2016), weighted as in IPVS `mh`: a lookup
//! table of prime size `M` in which each server fills slots along its own permutation
//! (`offset = h1 % M`, `skip = h2 % (M - 1) + 1`, both hashes of the server's address and port,
//! so a server keeps its permutation whatever else changes). Servers take turns filling, each
//! taking `weight / gcd` slots per turn (scaled down to at most [`MAX_TURNS`]), so a server's
//! share of the table follows its weight. Servers fill in the order of their identity (address,
//! port), so the table does not depend on the order the config lists them in: appliances with
//! the same servers and weights pick the same server for a client. Built off the hot path;
//! lookups are one array read.

use super::hash::{hash_addr, Seed};

/// The IPVS default table size (`CONFIG_IP_VS_MH_TAB_INDEX` = 12 → 65537), a prime.
pub const DEFAULT_TABLE_SIZE: u32 = 65_537;
/// A server's slots per turn are scaled down so the biggest takes at most this many: long
/// runs of one server would make the table less even without changing the shares.
pub const MAX_TURNS: u32 = 256;

const SEED_OFFSET: Seed = 0x6d68_5f6f_6666_7365; // "mh_offse"
const SEED_SKIP: Seed = 0x6d68_5f73_6b69_7070; // "mh_skipp"

/// One server as Maglev sees it: its table entry, identity and weight.
#[derive(Debug, Clone, Copy)]
pub struct Backend {
    /// What the table holds for this server (the server's index in the director).
    pub id: u16,
    /// The server's address (IPv4 mapped into IPv6) — with `port`, its permutation.
    pub addr: [u8; 16],
    pub port: u16,
    /// 0 leaves the server out of the table.
    pub weight: u32,
}

/// A built Maglev lookup table.
#[derive(Debug, Clone)]
pub struct Maglev {
    table: Box<[u16]>,
}

/// Is `m` prime (trial division; table sizes are small).
pub fn is_prime(m: u32) -> bool {
    if m < 2 {
        return false;
    }
    let mut d = 2u32;
    while u64::from(d) * u64::from(d) <= u64::from(m) {
        if m.checked_rem(d) == Some(0) {
            return false;
        }
        d += 1;
    }
    true
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl Maglev {
    /// Build the table of size `size` (must be prime and above the backend count) over the
    /// backends with a non-zero weight. `None` when no backend has a weight.
    pub fn build(backends: &[Backend], size: u32) -> Option<Maglev> {
        debug_assert!(is_prime(size), "Maglev table size must be prime");
        // in the order of their identity (address, port), not of the config's list: every
        // appliance with the same servers and weights builds the same table (`docs/ha.md`)
        let mut live: Vec<&Backend> = backends.iter().filter(|b| b.weight > 0).collect();
        live.sort_by_key(|b| (b.addr, b.port));
        if live.is_empty() || size < 2 {
            return None;
        }
        let m = u64::from(size);
        let g = live.iter().fold(0, |g, b| gcd(g, b.weight));
        let max = live.iter().map(|b| b.weight / g).max().unwrap_or(1);
        let scale = max.div_ceil(MAX_TURNS).max(1);
        // (offset, skip, turns, next j)
        let mut perm: Vec<(u64, u64, u32, u64)> = live
            .iter()
            .map(|b| {
                let offset = hash_addr(SEED_OFFSET, &b.addr, u32::from(b.port)) % m;
                let skip = hash_addr(SEED_SKIP, &b.addr, u32::from(b.port)) % (m - 1) + 1;
                ((offset), skip, (b.weight / g / scale).max(1), 0)
            })
            .collect();
        let mut table = vec![u16::MAX; size as usize].into_boxed_slice();
        let mut filled = 0u64;
        'fill: loop {
            for (i, p) in perm.iter_mut().enumerate() {
                for _ in 0..p.2 {
                    let mut c;
                    loop {
                        c = ((p.0 + p.1 * p.3) % m) as usize;
                        p.3 += 1;
                        if table[c] == u16::MAX {
                            break;
                        }
                    }
                    table[c] = live[i].id;
                    filled += 1;
                    if filled == m {
                        break 'fill;
                    }
                }
            }
        }
        Some(Maglev { table })
    }

    /// The server for `hash`.
    #[inline]
    pub fn lookup(&self, hash: u64) -> u16 {
        self.table[(hash % self.table.len() as u64) as usize]
    }

    /// The table size.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Never true for a built table; here for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The table itself (for shares and disruption measurements).
    pub fn slots(&self) -> &[u16] {
        &self.table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends(n: u16) -> Vec<Backend> {
        (0..n)
            .map(|i| {
                let mut addr = [0u8; 16];
                addr[10] = 0xff;
                addr[11] = 0xff;
                addr[12..].copy_from_slice(&[10, 0, (i >> 8) as u8, i as u8]);
                Backend {
                    id: i,
                    addr,
                    port: 0,
                    weight: 1,
                }
            })
            .collect()
    }

    #[test]
    fn primes() {
        assert!(is_prime(65_537) && is_prime(251) && is_prime(2));
        assert!(!is_prime(65_536) && !is_prime(1) && !is_prime(0) && !is_prime(255));
    }

    #[test]
    fn even_shares_and_weights() {
        let b = backends(4);
        let t = Maglev::build(&b, 65_537).expect("table");
        let mut n = [0usize; 4];
        for &s in t.slots() {
            n[usize::from(s)] += 1;
        }
        for c in n {
            assert!((16_000..=16_800).contains(&c), "{n:?}");
        }
        let mut b = backends(2);
        b[0].weight = 3;
        let t = Maglev::build(&b, 65_537).expect("table");
        let zero = t.slots().iter().filter(|&&s| s == 0).count();
        let share = zero as f64 / 65_537.0;
        assert!((share - 0.75).abs() < 0.01, "{share}");
    }

    #[test]
    fn zero_weight_is_left_out() {
        let mut b = backends(3);
        b[1].weight = 0;
        let t = Maglev::build(&b, 251).expect("table");
        assert!(t.slots().iter().all(|&s| s != 1));
        for x in &mut b {
            x.weight = 0;
        }
        assert!(Maglev::build(&b, 251).is_none());
    }

    /// The same servers listed in any order (their ids follow the list) give a table that
    /// sends every slot to the same server address.
    #[test]
    fn the_table_does_not_depend_on_the_listing_order() {
        let mut b = backends(7);
        b[2].weight = 3;
        b[5].weight = 2;
        let addr_of = |t: &Maglev, b: &[Backend]| -> Vec<[u8; 16]> {
            t.slots()
                .iter()
                .map(|&id| b.iter().find(|x| x.id == id).expect("a backend").addr)
                .collect()
        };
        let reference = addr_of(&Maglev::build(&b, 65_537).expect("table"), &b);
        for rotation in 1..7 {
            let mut other = b.clone();
            other.rotate_left(rotation);
            other.swap(0, 3);
            for (i, x) in other.iter_mut().enumerate() {
                x.id = i as u16; // the id is the index in this appliance's list
            }
            let t = Maglev::build(&other, 65_537).expect("table");
            assert!(addr_of(&t, &other) == reference, "rotation {rotation}");
        }
    }

    #[test]
    fn one_leaving_moves_about_one_nth() {
        let n = 10u16;
        let b = backends(n);
        let before = Maglev::build(&b, 65_537).expect("table");
        let after = Maglev::build(&b[1..], 65_537).expect("table");
        let keys = 100_000u64;
        let mut moved = 0;
        for k in 0..keys {
            let h = super::super::hash::mix64(k);
            if before.lookup(h) != after.lookup(h) {
                moved += 1;
            }
        }
        let share = moved as f64 / keys as f64;
        // every key of server 0 must move (1/N); the rest should mostly stay.
        assert!(share < 1.5 / f64::from(n), "moved {share}");
        assert!(share >= 0.9 / f64::from(n), "moved {share}");
    }
}
