//! Small, fast, seeded hashes for the director: connection-table buckets, the source/destination
//! hash schedulers and the Maglev permutation. Not cryptographic: a director facing hostile
//! clients should get a per-boot random seed from the control side (see [`Seed`]).

/// A hash seed. Distinct seeds give independent hash functions over the same bytes.
pub type Seed = u64;

const K0: u64 = 0x9e37_79b9_7f4a_7c15;
const K1: u64 = 0xbf58_476d_1ce4_e5b9;
const K2: u64 = 0x94d0_49bb_1331_11eb;

/// The final mixer of splitmix64: every input bit affects every output bit.
#[inline]
pub fn mix64(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(K1);
    x ^= x >> 27;
    x = x.wrapping_mul(K2);
    x ^ (x >> 31)
}

/// Hash two 64-bit words under `seed`.
#[inline]
pub fn hash2(seed: Seed, a: u64, b: u64) -> u64 {
    let h = mix64(seed ^ a.wrapping_mul(K0));
    mix64(h ^ b.rotate_left(29).wrapping_add(K1))
}

/// Hash a 16-byte address (IPv4 in its mapped form) and a 32-bit extra word under `seed`.
#[inline]
pub fn hash_addr(seed: Seed, addr: &[u8; 16], extra: u32) -> u64 {
    let (hi, lo) = split(addr);
    mix64(hash2(seed, hi, lo) ^ u64::from(extra))
}

/// Hash bytes of any length (used off the hot path: server names for Maglev).
pub fn hash_bytes(seed: Seed, bytes: &[u8]) -> u64 {
    let mut h = mix64(seed ^ (bytes.len() as u64).wrapping_mul(K0));
    for chunk in bytes.chunks(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        h = hash2(h, u64::from_le_bytes(w), K2);
    }
    h
}

#[inline]
pub(crate) fn split(addr: &[u8; 16]) -> (u64, u64) {
    let mut hi = [0u8; 8];
    let mut lo = [0u8; 8];
    hi.copy_from_slice(&addr[..8]);
    lo.copy_from_slice(&addr[8..]);
    (u64::from_le_bytes(hi), u64::from_le_bytes(lo))
}
