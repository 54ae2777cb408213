//! DPDK smoke tests: start the EAL without hugepages or PCI, set up vdev ports and move real
//! frames through them.
//!
//! The EAL starts once per process, so each test here starts its own and the file must be run
//! with `cargo nextest` (one process per test):
//!
//! ```text
//! cargo nextest run -p flowgate-dataplane --test dpdk_smoke
//! ```
//!
//! Plain `cargo test` runs all tests of a binary in one process: the second EAL start fails
//! with `AlreadyInitialised`. Run a single test with `cargo test --test dpdk_smoke -- NAME`.
#![allow(clippy::unwrap_used)]

use flowgate_dataplane::dpdk::{
    attach_vdev, lcore_id, port_by_name, Burst, Eal, Mbuf, Mempool, Port, DEFAULT_DATA_ROOM,
    SOCKET_ANY,
};

/// EAL arguments for this machine: no hugepages, no PCI scan, no shared config file, and a
/// per-process file prefix so parallel test processes do not collide.
fn eal_args(extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["--no-huge", "-m", "256", "--no-pci", "--no-shconf", "-l", "0"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(format!("--file-prefix=fgtest{}", std::process::id()));
    args.push("--log-level=lib.eal:notice".into());
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// An Ethernet/IPv4/UDP frame whose payload carries `seq`, so every frame is distinct.
fn frame(seq: u8) -> Vec<u8> {
    let payload_len = 18usize;
    let udp_len = 8 + payload_len;
    let ip_len = 20 + udp_len;
    let mut f = Vec::with_capacity(14 + ip_len);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02]); // dst MAC
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]); // src MAC
    f.extend_from_slice(&[0x08, 0x00]); // IPv4
    f.extend_from_slice(&[0x45, 0, (ip_len >> 8) as u8, ip_len as u8]);
    f.extend_from_slice(&[0, seq, 0x40, 0]); // id, DF
    f.extend_from_slice(&[64, 17, 0, 0]); // ttl, UDP, checksum (left 0)
    f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
    f.extend_from_slice(&[0x30, 0x39, 0x00, 0x35]); // 12345 -> 53
    f.extend_from_slice(&[(udp_len >> 8) as u8, udp_len as u8, 0, 0]);
    f.extend((0..payload_len).map(|i| seq.wrapping_mul(7).wrapping_add(i as u8)));
    f
}

fn fill(pool: &Mempool, burst: &mut Burst, frames: &[Vec<u8>]) {
    for f in frames {
        let mut m: Mbuf = pool.alloc().expect("mempool exhausted");
        m.append(f.len() as u16).unwrap().copy_from_slice(f);
        assert_eq!(m.data(), &f[..]);
        burst.push(m).unwrap();
    }
}

/// A lone `net_ring0` vdev loops its TX ring back to its RX ring: frames sent come back
/// byte for byte.
#[test]
fn net_ring_loopback_roundtrip() {
    let eal = Eal::init(&eal_args(&["--vdev=net_ring0"])).unwrap();
    assert!(Eal::is_initialised());
    assert!(matches!(
        Eal::init(&eal_args(&[])),
        Err(flowgate_dataplane::dpdk::DpdkError::AlreadyInitialised)
    ));
    assert_eq!(eal.lcore_count(), 1);
    assert_eq!(eal.lcore_ids(), vec![0]);
    assert_eq!(lcore_id(), Some(0));

    let pool = Mempool::new("smoke_pool", 1023, 32, DEFAULT_DATA_ROOM, SOCKET_ANY).unwrap();
    let port_id = port_by_name("net_ring0").unwrap();
    let mut port = Port::configure(port_id, 1, 1, false, pool).unwrap();
    assert_eq!(port.driver_name().unwrap(), "net_ring");
    port.start().unwrap();
    port.set_promiscuous(true).unwrap();
    assert!(port.link_status().unwrap().up);
    let _mac = port.mac_address().unwrap();

    let frames: Vec<Vec<u8>> = (0..32u8).map(frame).collect();
    let in_use_before = pool.in_use();
    {
        let mut rxq = port.rx_queue(0).unwrap();
        let mut txq = port.tx_queue(0).unwrap();
        assert!(port.rx_queue(0).is_err(), "a queue is handed out once");

        let mut out = Burst::new();
        fill(&pool, &mut out, &frames);
        assert_eq!(out.len(), 32);
        assert_eq!(out.tx(&mut txq), 32);
        assert!(out.is_empty());

        let mut back = Burst::new();
        assert_eq!(back.rx(&mut rxq), 32);
        let got: Vec<Vec<u8>> = back.iter().map(|p| p.to_vec()).collect();
        assert_eq!(got, frames);

        // Rewrite in place, send again, and check the rewrite made the trip.
        for p in back.iter_mut() {
            p[0..6].copy_from_slice(&[0xaa; 6]);
        }
        back.retain(|p| p[19] % 2 == 0); // keep even IP ids
        assert_eq!(back.len(), 16);
        assert_eq!(back.tx_or_free(&mut txq), 16);
        let mut again = Burst::new();
        assert_eq!(again.rx(&mut rxq), 16);
        for (p, seq) in again.iter().zip((0..32u8).step_by(2)) {
            assert_eq!(&p[0..6], &[0xaa; 6]);
            assert_eq!(&p[6..], &frame(seq)[6..]);
        }
        let m = again.pop().unwrap();
        assert_eq!(m.pkt_len(), frames[30].len());
        assert_eq!(m.refcnt(), 1);
    }
    assert_eq!(pool.in_use(), in_use_before, "every mbuf went back to the pool");

    let stats = port.stats().unwrap();
    assert_eq!(stats.opackets, 48);
    assert_eq!(stats.ipackets, 48);
    port.close().unwrap();
}
