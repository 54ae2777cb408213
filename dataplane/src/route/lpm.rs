//! Longest-prefix match for IPv4 and IPv6: multibit tries with a wide first stride and 8-bit
//! strides after it, built once from a prefix list and immutable afterwards (publish a new one to
//! change routes).
//!
//! - [`Lpm4`] with [`Stride4::S24`] is DIR-24-8, as DPDK's `rte_lpm`: a 2^24-entry first table
//!   indexed by the top 24 bits of the address, and 256-entry groups for prefixes longer than /24.
//!   A lookup is one memory read, two for a /25../32 route. 64 MiB for the first table.
//! - [`Lpm4`] with [`Stride4::S16`] is DIR-16-8-8: a 2^16-entry first table (256 KiB), up to
//!   three reads. For the small tables of a config (see `docs/routing.md`).
//! - [`Lpm6`] is 16-8-8-...-8 (15 levels at most), as `rte_lpm6`'s layout with a 16-bit root.
//!
//! Every entry is a `u32`: [`VALID`] (a route covers it), [`GROUP`] (the value is a group index:
//! look one level deeper), and a 30-bit value (a [`NextHopId`] or a group index). The build
//! inserts prefixes from the shortest to the longest, so a prefix simply overwrites what a
//! shorter one painted; a group created under an entry inherits that entry. Equal prefixes: the
//! later one in the input wins.

use std::net::{Ipv4Addr, Ipv6Addr};

use flowgate_config::flows::{mask128, mask32};

/// An entry holds a route (its next hop, or the group below it).
pub const VALID: u32 = 1 << 31;
/// An entry points to a group of 256 entries one level deeper.
pub const GROUP: u32 = 1 << 30;
/// The value bits of an entry.
const VALUE: u32 = GROUP - 1;
/// How many addresses [`Lpm4::lookup_batch`] takes at once (one RX burst).
pub const BATCH: usize = 32;

/// The index of a next hop in the table that owns the LPM (at most [`NextHopId::MAX`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NextHopId(pub u32);

impl NextHopId {
    /// The largest next hop index an entry can carry (30 bits).
    pub const MAX: u32 = VALUE;
}

/// Why an LPM could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LpmError {
    #[error("next hop index {0} is larger than {max}", max = NextHopId::MAX)]
    NextHopTooLarge(u32),
    #[error("prefix length {len} is longer than {max}")]
    BadLength { len: u8, max: u8 },
    #[error("more than {max} groups of 256 entries", max = VALUE)]
    TooManyGroups,
}

/// The first stride of an IPv4 LPM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stride4 {
    /// DIR-24-8 (`rte_lpm`): 64 MiB first table, one read for prefixes up to /24.
    S24,
    /// DIR-16-8-8: 256 KiB first table, up to three reads.
    S16,
}

impl Stride4 {
    fn bits(self) -> u32 {
        match self {
            Stride4::S24 => 24,
            Stride4::S16 => 16,
        }
    }
}

/// The trie shared by both families, keys left-aligned in a `u128`.
#[derive(Clone)]
struct Trie {
    /// Bits of the first stride.
    root_bits: u32,
    root: Box<[u32]>,
    /// Groups of 256 entries, back to back.
    groups: Vec<u32>,
}

impl Trie {
    fn new(root_bits: u32) -> Trie {
        Trie {
            root_bits,
            root: vec![0u32; 1 << root_bits].into_boxed_slice(),
            groups: Vec::new(),
        }
    }

    fn paint(table: &mut [u32], start: usize, count: usize, entry: u32) {
        if let Some(range) = table.get_mut(start..start + count) {
            range.fill(entry);
        }
    }

    /// Insert `key/len` (key left-aligned in 128 bits, host bits clear). Callers insert in
    /// ascending length order.
    fn insert(&mut self, key: u128, len: u32, value: u32) -> Result<(), LpmError> {
        let entry = VALID | value;
        let rb = self.root_bits;
        let top = (key >> (128 - rb)) as usize;
        if len <= rb {
            Self::paint(&mut self.root, top, 1 << (rb - len), entry);
            return Ok(());
        }
        // The entry that leads down: an index in the root (None) or in `groups` (Some).
        let mut slot: Option<usize> = None;
        let mut at = top;
        let mut depth = rb;
        loop {
            let cur = match slot {
                None => self.root[at],
                Some(_) => self.groups[at],
            };
            let group = if cur & GROUP != 0 {
                (cur & VALUE) as usize
            } else {
                let g = self.groups.len() / 256;
                if g as u32 > VALUE {
                    return Err(LpmError::TooManyGroups);
                }
                // The new group inherits what the shorter prefix painted here.
                self.groups.extend_from_slice(&[cur; 256]);
                let link = VALID | GROUP | g as u32;
                match slot {
                    None => self.root[at] = link,
                    Some(_) => self.groups[at] = link,
                }
                g
            };
            let byte = ((key >> (128 - depth - 8)) & 0xff) as usize;
            let base = group * 256 + byte;
            if len <= depth + 8 {
                Self::paint(&mut self.groups, base, 1 << (depth + 8 - len), entry);
                return Ok(());
            }
            slot = Some(base);
            at = base;
            depth += 8;
        }
    }

    fn memory(&self) -> usize {
        (self.root.len() + self.groups.len()) * std::mem::size_of::<u32>()
    }

    fn group_count(&self) -> usize {
        self.groups.len() / 256
    }
}

fn check_value(nh: NextHopId) -> Result<u32, LpmError> {
    if nh.0 > NextHopId::MAX {
        return Err(LpmError::NextHopTooLarge(nh.0));
    }
    Ok(nh.0)
}

/// Sorts `(prefix, len, next hop)` by length, stably (equal prefixes: the later one wins).
fn by_length<K: Copy>(routes: &[(K, u8, NextHopId)]) -> Vec<(K, u8, NextHopId)> {
    let mut sorted = routes.to_vec();
    sorted.sort_by_key(|r| r.1);
    sorted
}

/// An IPv4 longest-prefix-match table. Immutable after [`Lpm4::build`]; `Send + Sync`.
#[derive(Clone)]
pub struct Lpm4 {
    trie: Trie,
}

impl std::fmt::Debug for Lpm4 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lpm4")
            .field("root_bits", &self.trie.root_bits)
            .field("groups", &self.trie.group_count())
            .field("memory", &self.memory())
            .finish()
    }
}

impl Lpm4 {
    /// Builds the table from `(address, prefix length, next hop)`; host bits are ignored.
    pub fn build(stride: Stride4, routes: &[(Ipv4Addr, u8, NextHopId)]) -> Result<Lpm4, LpmError> {
        let mut trie = Trie::new(stride.bits());
        for (addr, len, nh) in by_length(routes) {
            if len > 32 {
                return Err(LpmError::BadLength { len, max: 32 });
            }
            let key = u128::from(u32::from(addr) & mask32(len)) << 96;
            trie.insert(key, u32::from(len), check_value(nh)?)?;
        }
        Ok(Lpm4 { trie })
    }

    /// The next hop of the longest prefix holding `addr`.
    #[inline]
    pub fn lookup(&self, addr: Ipv4Addr) -> Option<NextHopId> {
        self.lookup_u32(u32::from(addr))
    }

    /// [`Lpm4::lookup`] on an address as a host-order `u32`.
    #[inline]
    pub fn lookup_u32(&self, addr: u32) -> Option<NextHopId> {
        let shift = 32 - self.trie.root_bits;
        let e = self
            .trie
            .root
            .get((addr >> shift) as usize)
            .copied()
            .unwrap_or(0);
        if e & GROUP == 0 {
            return (e & VALID != 0).then_some(NextHopId(e & VALUE));
        }
        self.resolve(addr, e, shift)
    }

    /// Follows groups from entry `e`, whose children are indexed by the 8 bits below `shift`.
    /// Out of line: the first-table hit stays a short straight path.
    #[inline(never)]
    fn resolve(&self, addr: u32, mut e: u32, mut shift: u32) -> Option<NextHopId> {
        while e & GROUP != 0 {
            shift = shift.checked_sub(8)?;
            let i = ((e & VALUE) as usize) << 8 | ((addr >> shift) & 0xff) as usize;
            e = *self.trie.groups.get(i)?;
        }
        (e & VALID != 0).then_some(NextHopId(e & VALUE))
    }

    /// Looks up a burst: all first-table reads are issued before any group is followed, so
    /// the cache misses overlap.
    pub fn lookup_batch(&self, addrs: &[u32; BATCH], out: &mut [Option<NextHopId>; BATCH]) {
        let rb = self.trie.root_bits;
        let mut first = [0u32; BATCH];
        for (e, a) in first.iter_mut().zip(addrs) {
            *e = self
                .trie
                .root
                .get((a >> (32 - rb)) as usize)
                .copied()
                .unwrap_or(0);
        }
        for ((o, a), e) in out.iter_mut().zip(addrs).zip(first) {
            *o = if e & GROUP == 0 {
                (e & VALID != 0).then_some(NextHopId(e & VALUE))
            } else {
                self.resolve(*a, e, 32 - rb)
            };
        }
    }

    /// Looks up any number of addresses, [`BATCH`] at a time.
    pub fn lookup_bulk(&self, addrs: &[u32], out: &mut [Option<NextHopId>]) {
        let mut a = addrs.chunks_exact(BATCH);
        let mut o = out.chunks_exact_mut(BATCH);
        for (ac, oc) in (&mut a).zip(&mut o) {
            if let (Ok(ac), Ok(oc)) = (ac.try_into(), oc.try_into()) {
                self.lookup_batch(ac, oc);
            }
        }
        for (x, y) in a.remainder().iter().zip(o.into_remainder()) {
            *y = self.lookup_u32(*x);
        }
    }

    /// Bytes held by the tables.
    pub fn memory(&self) -> usize {
        self.trie.memory()
    }

    /// Groups of 256 entries (like `rte_lpm`'s tbl8 groups).
    pub fn groups(&self) -> usize {
        self.trie.group_count()
    }
}

/// An IPv6 longest-prefix-match table (16-bit root, then 8-bit strides). Immutable after
/// [`Lpm6::build`]; `Send + Sync`.
#[derive(Clone)]
pub struct Lpm6 {
    trie: Trie,
}

impl std::fmt::Debug for Lpm6 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lpm6")
            .field("groups", &self.trie.group_count())
            .field("memory", &self.memory())
            .finish()
    }
}

impl Lpm6 {
    /// Builds the table from `(address, prefix length, next hop)`; host bits are ignored.
    pub fn build(routes: &[(Ipv6Addr, u8, NextHopId)]) -> Result<Lpm6, LpmError> {
        let mut trie = Trie::new(16);
        for (addr, len, nh) in by_length(routes) {
            if len > 128 {
                return Err(LpmError::BadLength { len, max: 128 });
            }
            let key = u128::from(addr) & mask128(len);
            trie.insert(key, u32::from(len), check_value(nh)?)?;
        }
        Ok(Lpm6 { trie })
    }

    /// The next hop of the longest prefix holding `addr`.
    #[inline]
    pub fn lookup(&self, addr: Ipv6Addr) -> Option<NextHopId> {
        let a = u128::from(addr);
        let mut e = *self.trie.root.get((a >> 112) as usize)?;
        let mut shift = 112u32;
        while e & GROUP != 0 {
            shift = shift.checked_sub(8)?;
            let i = ((e & VALUE) as usize) << 8 | ((a >> shift) & 0xff) as usize;
            e = *self.trie.groups.get(i)?;
        }
        (e & VALID != 0).then_some(NextHopId(e & VALUE))
    }

    /// Looks up a burst.
    pub fn lookup_batch(&self, addrs: &[Ipv6Addr; BATCH], out: &mut [Option<NextHopId>; BATCH]) {
        for (o, a) in out.iter_mut().zip(addrs) {
            *o = self.lookup(*a);
        }
    }

    /// Bytes held by the tables.
    pub fn memory(&self) -> usize {
        self.trie.memory()
    }

    /// Groups of 256 entries.
    pub fn groups(&self) -> usize {
        self.trie.group_count()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive4(routes: &[(Ipv4Addr, u8, NextHopId)], a: Ipv4Addr) -> Option<NextHopId> {
        let mut best: Option<(u8, NextHopId)> = None;
        for &(p, len, nh) in routes {
            let m = mask32(len);
            if u32::from(a) & m == u32::from(p) & m && !matches!(best, Some((l, _)) if len < l) {
                best = Some((len, nh));
            }
        }
        best.map(|b| b.1)
    }

    fn naive6(routes: &[(Ipv6Addr, u8, NextHopId)], a: Ipv6Addr) -> Option<NextHopId> {
        let mut best: Option<(u8, NextHopId)> = None;
        for &(p, len, nh) in routes {
            let m = mask128(len);
            if u128::from(a) & m == u128::from(p) & m && !matches!(best, Some((l, _)) if len < l) {
                best = Some((len, nh));
            }
        }
        best.map(|b| b.1)
    }

    fn v4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn dir24_basic_and_nested() {
        let routes = [
            (v4("0.0.0.0"), 0, NextHopId(1)),
            (v4("10.0.0.0"), 8, NextHopId(2)),
            (v4("10.1.0.0"), 16, NextHopId(3)),
            (v4("10.1.2.0"), 24, NextHopId(4)),
            (v4("10.1.2.128"), 25, NextHopId(5)),
            (v4("10.1.2.129"), 32, NextHopId(6)),
        ];
        for stride in [Stride4::S24, Stride4::S16] {
            let lpm = Lpm4::build(stride, &routes).unwrap();
            for (a, want) in [
                ("1.2.3.4", 1),
                ("10.9.9.9", 2),
                ("10.1.9.9", 3),
                ("10.1.2.1", 4),
                ("10.1.2.130", 5),
                ("10.1.2.129", 6),
                ("10.1.2.127", 4),
            ] {
                assert_eq!(lpm.lookup(v4(a)), Some(NextHopId(want)), "{a} {stride:?}");
            }
        }
    }

    #[test]
    fn empty_and_no_default() {
        let lpm = Lpm4::build(Stride4::S24, &[]).unwrap();
        assert_eq!(lpm.lookup(v4("1.1.1.1")), None);
        let lpm = Lpm4::build(Stride4::S16, &[(v4("192.168.0.0"), 24, NextHopId(0))]).unwrap();
        assert_eq!(lpm.lookup(v4("192.168.0.77")), Some(NextHopId(0)));
        assert_eq!(lpm.lookup(v4("192.168.1.77")), None);
        let lpm6 = Lpm6::build(&[]).unwrap();
        assert_eq!(lpm6.lookup("::1".parse().unwrap()), None);
    }

    #[test]
    fn later_duplicate_wins_and_errors() {
        let r = [
            (v4("10.0.0.0"), 8, NextHopId(1)),
            (v4("10.0.0.0"), 8, NextHopId(2)),
        ];
        let lpm = Lpm4::build(Stride4::S16, &r).unwrap();
        assert_eq!(lpm.lookup(v4("10.2.3.4")), Some(NextHopId(2)));
        assert_eq!(
            Lpm4::build(Stride4::S16, &[(v4("1.0.0.0"), 33, NextHopId(0))]).unwrap_err(),
            LpmError::BadLength { len: 33, max: 32 }
        );
        assert_eq!(
            Lpm4::build(Stride4::S16, &[(v4("1.0.0.0"), 8, NextHopId(1 << 30))]).unwrap_err(),
            LpmError::NextHopTooLarge(1 << 30)
        );
    }

    #[test]
    fn v6_host_routes_and_default() {
        let p = |s: &str| s.parse::<Ipv6Addr>().unwrap();
        let routes = [
            (p("::"), 0, NextHopId(0)),
            (p("2001:db8::"), 32, NextHopId(1)),
            (p("2001:db8:1::"), 48, NextHopId(2)),
            (p("2001:db8:1::1"), 128, NextHopId(3)),
            (p("2001:db8:1::"), 127, NextHopId(4)),
        ];
        let lpm = Lpm6::build(&routes).unwrap();
        assert_eq!(lpm.lookup(p("::1")), Some(NextHopId(0)));
        assert_eq!(lpm.lookup(p("2001:db8:ffff::1")), Some(NextHopId(1)));
        assert_eq!(lpm.lookup(p("2001:db8:1::5")), Some(NextHopId(2)));
        assert_eq!(lpm.lookup(p("2001:db8:1::1")), Some(NextHopId(3)));
        assert_eq!(lpm.lookup(p("2001:db8:1::")), Some(NextHopId(4)));
        assert_eq!(lpm.lookup(p("2001:db8:1::2")), Some(NextHopId(2)));
    }

    #[test]
    fn batch_matches_single() {
        let routes: Vec<_> = (0..200u32)
            .map(|i| {
                let a = i.wrapping_mul(0x9e37_79b9);
                (Ipv4Addr::from(a), (i % 33) as u8, NextHopId(i))
            })
            .collect();
        let lpm = Lpm4::build(Stride4::S24, &routes).unwrap();
        let addrs: Vec<u32> = (0..100u32).map(|i| i.wrapping_mul(0x85eb_ca6b)).collect();
        let mut out = vec![None; addrs.len()];
        lpm.lookup_bulk(&addrs, &mut out);
        for (a, o) in addrs.iter().zip(&out) {
            assert_eq!(*o, lpm.lookup_u32(*a));
            assert_eq!(*o, naive4(&routes, Ipv4Addr::from(*a)));
        }
    }

    /// Prefixes near a few bases, so they overlap and nest; lengths anywhere in 0..=32.
    fn routes4() -> impl Strategy<Value = Vec<(Ipv4Addr, u8, NextHopId)>> {
        let base = prop_oneof![Just(0x0a00_0000u32), Just(0xc0a8_0100), any::<u32>()];
        prop::collection::vec((base, any::<u32>(), 0u8..=32, 0u32..1000), 0..60).prop_map(|v| {
            v.into_iter()
                .map(|(b, noise, len, nh)| {
                    // Keep most high bits of the base so prefixes nest.
                    let a = b ^ (noise & (u32::MAX >> (noise % 33).min(31)) & 0x0000_ffff);
                    (Ipv4Addr::from(a), len, NextHopId(nh))
                })
                .collect()
        })
    }

    fn probes4(routes: &[(Ipv4Addr, u8, NextHopId)], extra: &[u32]) -> Vec<u32> {
        let mut v: Vec<u32> = extra.to_vec();
        for (a, len, _) in routes {
            let a = u32::from(*a) & mask32(*len);
            v.extend([
                a,
                a | !mask32(*len),
                a.wrapping_sub(1),
                (a | !mask32(*len)).wrapping_add(1),
            ]);
        }
        v
    }

    proptest! {
        // Each case builds a 64 MiB DIR-24-8: fewer cases than the default 256.
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn lpm4_matches_naive(routes in routes4(), extra in prop::collection::vec(any::<u32>(), 0..40)) {
            let probes = probes4(&routes, &extra);
            for stride in [Stride4::S24, Stride4::S16] {
                let lpm = Lpm4::build(stride, &routes).unwrap();
                for &a in &probes {
                    prop_assert_eq!(lpm.lookup_u32(a), naive4(&routes, Ipv4Addr::from(a)), "{}", Ipv4Addr::from(a));
                }
            }
        }

        #[test]
        fn lpm6_matches_naive(
            raw in prop::collection::vec((prop_oneof![Just(0x2001_0db8u128 << 96), Just(0), any::<u128>()], any::<u64>(), 0u8..=128, 0u32..1000), 0..40),
            extra in prop::collection::vec(any::<u128>(), 0..20),
        ) {
            let routes: Vec<_> = raw.into_iter()
                .map(|(b, noise, len, nh)| (Ipv6Addr::from(b ^ u128::from(noise)), len, NextHopId(nh)))
                .collect();
            let lpm = Lpm6::build(&routes).unwrap();
            let mut probes = extra.clone();
            for (a, len, _) in &routes {
                let a = u128::from(*a) & mask128(*len);
                probes.extend([a, a | !mask128(*len), a.wrapping_sub(1), (a | !mask128(*len)).wrapping_add(1)]);
            }
            for a in probes {
                let a = Ipv6Addr::from(a);
                prop_assert_eq!(lpm.lookup(a), naive6(&routes, a), "{}", a);
            }
        }
    }
}
