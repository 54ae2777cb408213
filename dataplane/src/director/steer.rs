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

#[cfg(test)]
mod tests {
    use super::*;

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
