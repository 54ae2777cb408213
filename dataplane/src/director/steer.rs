//! Which worker owns a director connection, so that NAT replies find it without a shared
//! table. The owner is a function of the *client endpoint* (address and port) alone: it is the
//! source of forward packets and the destination of replies, and NAT (IPVS masquerading) never
//! changes it, whereas everything else in the tuple does (VIP vs server address and port).
//!
//! The function is the NIC's: Toeplitz over `client address || client port` with the port's
//! RSS key, then the redirection table. Configured with RSS on the client-facing port limited
//! to source fields (DPDK `RTE_ETH_RSS_L3_SRC_ONLY | RTE_ETH_RSS_L4_SRC_ONLY`) and on the
//! server-facing port to destination fields (`..._DST_ONLY`), with the same key and RETA, the
//! NIC itself delivers both directions to the owner. On NICs without those RSS modifiers a
//! worker computes [`owner`] for each director packet and hands packets it does not own to the
//! owner over a per-worker-pair SPSC ring (the wiring of those rings is the worker's, not
//! this module's). Either way each worker's connection table stays private (no locks).

use std::net::IpAddr;

/// The Microsoft/DPDK default RSS key (40 bytes).
pub const DEFAULT_RSS_KEY: [u8; 40] = [
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0,
    0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c,
    0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
];

/// The Toeplitz hash of `data` under `key` (as NICs compute RSS); `key` must be at least
/// `data.len() + 4` bytes long, extra data bytes are ignored.
pub fn toeplitz(key: &[u8], data: &[u8]) -> u32 {
    let n = data.len().min(key.len().saturating_sub(4));
    let mut window = u32::from_be_bytes([key[0], key[1], key[2], key[3]]);
    let mut hash = 0u32;
    for (i, &byte) in data[..n].iter().enumerate() {
        let next = key[i + 4];
        for bit in 0..8 {
            if byte & (0x80 >> bit) != 0 {
                hash ^= window;
            }
            window = (window << 1) | u32::from((next >> (7 - bit)) & 1);
        }
    }
    hash
}

/// The RSS hash of a client endpoint: Toeplitz over address then port, as a NIC hashes the
/// source (or destination) fields only.
pub fn client_hash(key: &[u8], client: IpAddr, port: u16) -> u32 {
    let mut data = [0u8; 18];
    let len = match client {
        IpAddr::V4(a) => {
            data[..4].copy_from_slice(&a.octets());
            data[4..6].copy_from_slice(&port.to_be_bytes());
            6
        }
        IpAddr::V6(a) => {
            data[..16].copy_from_slice(&a.octets());
            data[16..18].copy_from_slice(&port.to_be_bytes());
            18
        }
    };
    toeplitz(key, &data[..len])
}

/// The queue (worker) owning the connections of `client:port`: `reta[hash % reta.len()]`,
/// as the NIC picks the RX queue. `reta` must not be empty.
pub fn owner(key: &[u8], reta: &[u16], client: IpAddr, port: u16) -> u16 {
    let h = client_hash(key, client, port) as usize;
    reta.get(h % reta.len().max(1)).copied().unwrap_or(0)
}

/// Bytes of the longest endpoint hashed: an IPv6 address and a port.
const ENDPOINT_BYTES: usize = 18;

/// [`owner`] with the Toeplitz hash precomputed per byte position and value (18 x 256 words,
/// 18 KiB): one table lookup per input byte instead of eight shift-and-xor steps, for the
/// workers' per-packet hand-over decision.
#[derive(Clone)]
pub struct Steering {
    table: Box<[[u32; 256]; ENDPOINT_BYTES]>,
    reta: Vec<u16>,
}

impl std::fmt::Debug for Steering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Steering")
            .field("reta", &self.reta.len())
            .finish()
    }
}

impl Steering {
    /// Steering over `reta` (not empty) with RSS `key` (at least 22 bytes).
    pub fn new(key: &[u8], reta: Vec<u16>) -> Steering {
        let mut table = Box::new([[0u32; 256]; ENDPOINT_BYTES]);
        for (i, row) in table.iter_mut().enumerate() {
            for (v, slot) in row.iter_mut().enumerate() {
                // the contribution of byte value v at position i: Toeplitz is linear over
                // xor, so a hash is the xor of its bytes' contributions
                let mut data = [0u8; ENDPOINT_BYTES];
                data[i] = v as u8;
                *slot = toeplitz(key, &data[..=i]);
            }
        }
        let reta = if reta.is_empty() { vec![0] } else { reta };
        Steering { table, reta }
    }

    /// `workers` workers with the default key and a 128-entry redirection table filled round
    /// robin (`i % workers`), as DPDK ports set up RSS by default.
    pub fn round_robin(workers: usize) -> Steering {
        let w = workers.clamp(1, usize::from(u16::MAX));
        Steering::new(&DEFAULT_RSS_KEY, (0..128).map(|i| (i % w) as u16).collect())
    }

    #[inline]
    fn hash(&self, bytes: &[u8]) -> u32 {
        let mut h = 0u32;
        for (row, &b) in self.table.iter().zip(bytes) {
            h ^= row[usize::from(b)];
        }
        h
    }

    /// The worker owning the client endpoint `addr:port`; `addr` as the classifier's keys
    /// hold it (an IPv4 address in the low 32 bits unless `v6`).
    #[inline]
    pub fn owner(&self, v6: bool, addr: u128, port: u16) -> usize {
        let mut data = [0u8; ENDPOINT_BYTES];
        let len = if v6 {
            data[..16].copy_from_slice(&addr.to_be_bytes());
            data[16..].copy_from_slice(&port.to_be_bytes());
            18
        } else {
            data[..4].copy_from_slice(&(addr as u32).to_be_bytes());
            data[4..6].copy_from_slice(&port.to_be_bytes());
            6
        };
        let h = self.hash(&data[..len]) as usize;
        usize::from(self.reta[h % self.reta.len()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steering_table_computes_the_same_owner_as_the_bitwise_hash() {
        let reta: Vec<u16> = (0..128).map(|i| i % 3).collect();
        let s = Steering::new(&DEFAULT_RSS_KEY, reta.clone());
        let mut seed = 0x1234_5678_9abc_def0u64;
        for _ in 0..2000 {
            seed = crate::director::hash::mix64(seed);
            let v4 = std::net::Ipv4Addr::from(seed as u32);
            let port = (seed >> 32) as u16;
            assert_eq!(
                s.owner(false, u128::from(u32::from(v4)), port),
                usize::from(owner(&DEFAULT_RSS_KEY, &reta, IpAddr::V4(v4), port))
            );
            let v6 = std::net::Ipv6Addr::from(u128::from(seed) << 64 | u128::from(!seed));
            assert_eq!(
                s.owner(true, u128::from(v6), port),
                usize::from(owner(&DEFAULT_RSS_KEY, &reta, IpAddr::V6(v6), port))
            );
        }
        // and the hash itself agrees with Microsoft's vector (source fields only)
        let ms = Steering::new(&DEFAULT_RSS_KEY, vec![0]);
        let mut v = [0u8; 6];
        v[..4].copy_from_slice(&[66, 9, 149, 187]);
        v[4..].copy_from_slice(&2794u16.to_be_bytes());
        assert_eq!(ms.hash(&v), toeplitz(&DEFAULT_RSS_KEY, &v));
    }

    #[test]
    fn round_robin_steering_spreads_client_ports_over_workers() {
        let s = Steering::round_robin(2);
        let client = u128::from(u32::from(std::net::Ipv4Addr::new(192, 168, 0, 100)));
        let mut seen = [0usize; 2];
        for p in 0..2000u16 {
            seen[s.owner(false, client, 32768 + p)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 700), "{seen:?}");
        assert_eq!(Steering::round_robin(1).owner(false, client, 1), 0);
    }

    #[test]
    fn microsoft_rss_verification_vectors() {
        // "Verifying the RSS Hash Calculation": 66.9.149.187:2794 -> 161.142.100.80:1766
        let mut v = Vec::new();
        v.extend_from_slice(&[66, 9, 149, 187]);
        v.extend_from_slice(&[161, 142, 100, 80]);
        assert_eq!(toeplitz(&DEFAULT_RSS_KEY, &v), 0x323e_8fc2);
        v.extend_from_slice(&2794u16.to_be_bytes());
        v.extend_from_slice(&1766u16.to_be_bytes());
        assert_eq!(toeplitz(&DEFAULT_RSS_KEY, &v), 0x51cc_c178);
    }

    #[test]
    fn both_directions_have_one_owner() {
        let reta: Vec<u16> = (0..128).map(|i| i % 4).collect();
        let client: IpAddr = "198.51.100.7".parse().expect("addr");
        // forward: client is the source; reply: client is the destination. Same endpoint,
        // same owner, whatever the VIP or the server.
        let fwd = owner(&DEFAULT_RSS_KEY, &reta, client, 40_000);
        let rep = owner(&DEFAULT_RSS_KEY, &reta, client, 40_000);
        assert_eq!(fwd, rep);
        let mut seen = [0usize; 4];
        for p in 0..4000u16 {
            seen[usize::from(owner(&DEFAULT_RSS_KEY, &reta, client, 1024 + p))] += 1;
        }
        assert!(seen.iter().all(|&n| n > 800), "{seen:?}");
    }
}
