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
    attach_vdev, lcore_id, port_by_name, Burst, Eal, Mbuf, Mempool, Port, Ring, DEFAULT_DATA_ROOM,
    SOCKET_ANY,
};
use flowgate_dataplane::runtime_files;

/// This process's EAL file prefix.
fn prefix() -> String {
    format!("fgtest{}", std::process::id())
}

/// Starts the EAL with [`eal_args`], then removes the runtime directory DPDK made for it
/// (empty with `--no-shconf`; nothing reads it afterwards), and any left by killed runs.
fn start_eal(extra: &[&str]) -> Eal {
    let eal = Eal::init(&eal_args(extra)).unwrap();
    runtime_files::remove_runtime_dir(&prefix()).unwrap();
    runtime_files::remove_stale("fgtest");
    assert!(!runtime_files::runtime_dir(&prefix()).exists());
    eal
}

/// EAL arguments for this machine: no hugepages, no PCI scan, no shared config file, and a
/// per-process file prefix so parallel test processes do not collide.
fn eal_args(extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--no-huge",
        "-m",
        "256",
        "--no-pci",
        "--no-shconf",
        "-l",
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(format!("--file-prefix={}", prefix()));
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
    let eal = start_eal(&["--vdev=net_ring0"]);
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
    assert!(matches!(
        Port::configure(port_id, 1, 1, false, pool),
        Err(flowgate_dataplane::dpdk::DpdkError::PortInUse(_))
    ));
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
    assert_eq!(
        pool.in_use(),
        in_use_before,
        "every mbuf went back to the pool"
    );

    let stats = port.stats().unwrap();
    assert_eq!(stats.opackets, 48);
    assert_eq!(stats.ipackets, 48);
    port.close().unwrap();
}

/// Hot-plugged vdevs (`rte_dev_probe`), RSS on a multi-queue `net_null`, and a std thread
/// registered with the EAL (`rte_thread_register`) that owns an RX queue and uses the
/// mempool's per-lcore cache.
#[test]
fn attach_vdev_rss_and_registered_worker_thread() {
    let eal = start_eal(&[]);
    let pool = Mempool::new("attach_pool", 2047, 64, DEFAULT_DATA_ROOM, SOCKET_ANY).unwrap();

    // RSS: net_null offers IP/TCP/UDP hashing with several queues.
    let null_id = attach_vdev("net_null0,no-rx=1").unwrap();
    let null = Port::configure(null_id, 2, 2, true, pool).unwrap();
    assert_ne!(null.rss_hf(), 0, "RSS enabled on a 2-queue net_null");
    let single = port_by_name("net_null0").unwrap();
    assert_eq!(single, null_id);
    null.close().unwrap();

    // A second loopback ring, attached at run time.
    let ring_id = attach_vdev("net_ring1").unwrap();
    assert_eq!(port_by_name("net_ring1").unwrap(), ring_id);
    let mut port = Port::configure(ring_id, 1, 1, true, pool).unwrap();
    assert_eq!(port.rss_hf(), 0, "no RSS with a single RX queue");
    port.start().unwrap();

    let frames: Vec<Vec<u8>> = (100..110u8).map(frame).collect();
    let mut out = Burst::new();
    fill(&pool, &mut out, &frames);
    let mut txq = port.tx_queue(0).unwrap();
    assert_eq!(out.tx(&mut txq), frames.len());

    let received = std::thread::scope(|s| {
        s.spawn(|| {
            assert_eq!(lcore_id(), None, "a plain std thread has no lcore");
            let lcore = eal.register_thread().unwrap();
            assert_ne!(lcore, 0, "the main lcore is taken");
            assert_eq!(lcore_id(), Some(lcore));
            let mut rxq = port.rx_queue(0).unwrap();
            let mut burst = Burst::new();
            let mut spins = 0;
            while burst.len() < 10 && spins < 1_000_000 {
                burst.rx(&mut rxq);
                spins += 1;
            }
            // Allocate through this lcore's cache too.
            let extra = pool.alloc().unwrap();
            drop(extra);
            let got: Vec<Vec<u8>> = burst.iter().map(|p| p.to_vec()).collect();
            drop(burst);
            drop(rxq);
            eal.unregister_thread();
            assert_eq!(lcore_id(), None);
            got
        })
        .join()
        .unwrap()
    });
    assert_eq!(received, frames);
    drop(txq);
    port.close().unwrap();
}

/// `Burst::prepend` grows a packet at the front from the mbuf's headroom (what a tunnel
/// header takes), `Burst::trim` shortens it, and a ring port reports the default MTU.
#[test]
fn burst_prepend_trim_and_port_mtu() {
    let _eal = start_eal(&["--vdev=net_ring0"]);
    let pool = Mempool::new("prepend_pool", 255, 32, DEFAULT_DATA_ROOM, SOCKET_ANY).unwrap();
    let port = Port::configure(port_by_name("net_ring0").unwrap(), 1, 1, false, pool).unwrap();
    assert_eq!(port.mtu().unwrap(), 1500);
    let frames: Vec<Vec<u8>> = (0..2u8).map(frame).collect();
    let mut burst = Burst::new();
    fill(&pool, &mut burst, &frames);
    let room = pool.alloc().unwrap().headroom();
    assert!(room >= 40, "headroom {room}");
    {
        let data = burst.prepend(0, 20).expect("headroom");
        assert_eq!(data.len(), frames[0].len() + 20);
        assert_eq!(&data[20..], &frames[0][..]);
        data[..20].fill(0xab);
    }
    assert_eq!(burst.packet(0).unwrap()[..20], [0xab; 20]);
    assert_eq!(burst.packet(0).unwrap()[20..], frames[0][..]);
    // more than the headroom: refused, nothing changed
    assert!(burst.prepend(1, room as u16 + 1).is_none());
    assert_eq!(burst.packet(1).unwrap(), &frames[1][..]);
    assert!(burst.prepend(2, 1).is_none(), "no packet 2");
    assert_eq!(
        burst.bytes(),
        (frames[0].len() + 20 + frames[1].len()) as u64
    );
    assert!(burst.trim(0, 6));
    assert_eq!(burst.packet(0).unwrap().len(), frames[0].len() + 14);
    assert!(!burst.trim(1, 10_000), "longer than the packet");
    assert!(!burst.trim(2, 1), "no packet 2");
    burst.clear();
    port.close().unwrap();
}

/// `net_pcap` reads frames from one pcap file and writes what we send to another; the file
/// written must hold exactly the bytes read.
#[test]
fn net_pcap_file_roundtrip() {
    let dir = std::env::temp_dir().join(format!("fg-pcap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("in.pcap");
    let output = dir.join("out.pcap");
    let frames: Vec<Vec<u8>> = (1..=5u8).map(frame).collect();
    std::fs::write(&input, write_pcap(&frames)).unwrap();

    let vdev = format!(
        "--vdev=net_pcap0,rx_pcap={},tx_pcap={}",
        input.display(),
        output.display()
    );
    let _eal = start_eal(&[&vdev]);
    let pool = Mempool::new("pcap_pool", 511, 32, DEFAULT_DATA_ROOM, SOCKET_ANY).unwrap();
    let mut port = Port::configure(port_by_name("net_pcap0").unwrap(), 1, 1, false, pool).unwrap();
    port.start().unwrap();
    {
        let mut rxq = port.rx_queue(0).unwrap();
        let mut txq = port.tx_queue(0).unwrap();
        let mut burst = Burst::new();
        while burst.rx(&mut rxq) > 0 {}
        assert_eq!(burst.iter().map(|p| p.to_vec()).collect::<Vec<_>>(), frames);
        assert_eq!(burst.tx_or_free(&mut txq), frames.len());
    }
    let stats = port.stats().unwrap();
    assert_eq!((stats.ipackets, stats.opackets), (5, 5));
    port.close().unwrap();

    assert_eq!(read_pcap(&std::fs::read(&output).unwrap()), frames);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A classic little-endian pcap file (Ethernet link type) holding `frames`.
fn write_pcap(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    for word in [0u32, 0, 65535, 1] {
        out.extend_from_slice(&word.to_le_bytes());
    }
    for (i, f) in frames.iter().enumerate() {
        for word in [i as u32, 0, f.len() as u32, f.len() as u32] {
            out.extend_from_slice(&word.to_le_bytes());
        }
        out.extend_from_slice(f);
    }
    out
}

/// The frames of a little-endian pcap file (micro- or nanosecond magic).
fn read_pcap(bytes: &[u8]) -> Vec<Vec<u8>> {
    let magic = u32::from_le_bytes(bytes[0..4].try_into().unwrap());
    assert!(
        magic == 0xa1b2_c3d4 || magic == 0xa1b2_3c4d,
        "pcap magic {magic:#x}"
    );
    let mut frames = Vec::new();
    let mut at = 24;
    while at + 16 <= bytes.len() {
        let caplen = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        frames.push(bytes[at + 16..at + 16 + caplen].to_vec());
        at += 16 + caplen;
    }
    frames
}

/// The hand-over ring between workers: two producer threads enqueue tagged bursts at once,
/// the ring's single reader gets every mbuf exactly once with its bytes and tag; a full ring
/// takes what fits and leaves the rest in the burst; dropping a ring frees what it holds.
#[test]
fn ring_moves_tagged_mbufs_between_threads() {
    let _eal = start_eal(&[]);
    let pool = Mempool::new("ring_pool", 4095, 0, DEFAULT_DATA_ROOM, SOCKET_ANY).unwrap();
    assert!(
        Ring::new("bad", 1000).is_err(),
        "size must be a power of two"
    );
    let ring = Ring::new("fg_test_ring", 1024).unwrap();
    let mut reader = ring.reader().unwrap();
    assert!(ring.reader().is_none(), "one reader only");
    let baseline = pool.in_use();

    // 2 producers x 8 bursts x 20 frames: seq = producer * 160 + burst * 20 + i (< 256)
    let produced = std::thread::scope(|s| {
        let hs: Vec<_> = (0..2u32)
            .map(|t| {
                let ring = &ring;
                s.spawn(move || {
                    let mut n = 0;
                    for b in 0..8u32 {
                        let frames: Vec<Vec<u8>> = (0..20u32)
                            .map(|i| frame((t * 160 + b * 20 + i) as u8 / 2))
                            .collect();
                        let mut burst = Burst::new();
                        fill(&pool, &mut burst, &frames);
                        for i in 0..burst.len() {
                            burst.set_tag(i, t * 1000 + b * 20 + i as u32);
                        }
                        n += ring.enqueue(&mut burst);
                        assert!(burst.is_empty(), "the ring had room");
                    }
                    n
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum::<usize>()
    });
    assert_eq!(produced, 320);
    assert_eq!(ring.len(), 320);
    let mut tags = Vec::new();
    let mut burst = Burst::new();
    while burst.rx_ring(&mut reader) > 0 {
        for i in 0..burst.len() {
            let tag = burst.tag(i).unwrap();
            let (t, k) = (tag / 1000, tag % 1000);
            assert_eq!(
                burst.packet(i).unwrap(),
                &frame((t * 160 + k) as u8 / 2)[..]
            );
            tags.push(tag);
        }
        burst.clear();
    }
    tags.sort_unstable();
    let mut want: Vec<u32> = (0..2u32)
        .flat_map(|t| (0..160u32).map(move |k| t * 1000 + k))
        .collect();
    want.sort_unstable();
    assert_eq!(tags, want, "every mbuf once, with its tag");
    assert!(ring.is_empty());
    assert_eq!(pool.in_use(), baseline);

    // a full ring takes what fits (size - 1) and leaves the rest, in order, in the burst
    let small = Ring::new("fg_small_ring", 8).unwrap();
    let frames: Vec<Vec<u8>> = (0..10u8).map(frame).collect();
    let mut burst = Burst::new();
    fill(&pool, &mut burst, &frames);
    assert_eq!(small.enqueue(&mut burst), 7);
    assert_eq!(burst.len(), 3);
    assert_eq!(burst.packet(0).unwrap(), &frames[7][..]);
    burst.clear();
    assert_eq!(pool.in_use(), baseline + 7);
    drop(small);
    assert_eq!(pool.in_use(), baseline, "dropping a ring frees its mbufs");
}

/// A TX queue shared by two threads (`Port::shared_tx_queue`): both send on the same queue of
/// a one-queue `net_ring` behind its lock, every frame comes back, the bursts are counted, and
/// exclusive and shared hand-outs of one queue exclude each other.
#[test]
fn shared_tx_queue_between_two_threads() {
    let eal = start_eal(&["--vdev=net_ring0"]);
    let pool = Mempool::new("shared_pool", 4095, 64, DEFAULT_DATA_ROOM, SOCKET_ANY).unwrap();
    let id = port_by_name("net_ring0").unwrap();
    let mut port = Port::configure(id, 1, 1, false, pool).unwrap();
    assert!(
        port.shared_tx_queue(0).is_err(),
        "no queue before the port starts"
    );
    port.start().unwrap();

    {
        let exclusive = port.tx_queue(0).unwrap();
        assert!(!exclusive.is_shared());
        assert!(port.shared_tx_queue(0).is_err(), "held exclusively");
    }
    let (first, second) = (
        port.shared_tx_queue(0).unwrap(),
        port.shared_tx_queue(0).unwrap(),
    );
    assert!(first.is_shared() && second.is_shared());
    assert!(port.tx_queue(0).is_err(), "shared holders exist");
    assert!(port.shared_tx_queue(1).is_err(), "no such queue");

    // each thread sends 20 bursts of 8 distinct frames; the ring holds all 320
    const BURSTS: u8 = 20;
    std::thread::scope(|s| {
        for (t, mut q) in [(0u8, first), (1u8, second)] {
            let pool = &pool;
            let eal = &eal;
            s.spawn(move || {
                eal.register_thread().unwrap();
                for b in 0..BURSTS {
                    let frames: Vec<Vec<u8>> = (0..8u8)
                        .map(|i| {
                            let mut f = frame(i);
                            f[0] = t;
                            f[1] = b;
                            f
                        })
                        .collect();
                    let mut out = Burst::new();
                    fill(pool, &mut out, &frames);
                    assert_eq!(out.tx_or_free(&mut q), 8);
                }
                // an empty burst is not sent, not counted
                assert_eq!(Burst::new().tx(&mut q), 0);
                drop(q);
                eal.unregister_thread();
            });
        }
    });
    let mut rxq = port.rx_queue(0).unwrap();
    let mut seen = std::collections::HashSet::new();
    let mut burst = Burst::new();
    while burst.rx(&mut rxq) > 0 {
        for p in burst.iter() {
            assert!(seen.insert((p[0], p[1], p.to_vec())), "a frame sent twice");
        }
        burst.clear();
    }
    assert_eq!(
        seen.len(),
        2 * 8 * usize::from(BURSTS),
        "every frame came back"
    );
    let stats = port.stats().unwrap();
    assert_eq!(stats.tx_shared_bursts, 2 * u64::from(BURSTS));
    assert!(stats.tx_lock_contended <= stats.tx_shared_bursts);
    assert_eq!(port.tx_sharing().counts().0, 2 * u64::from(BURSTS));
    // every shared holder gone: the queue can be taken exclusively again
    drop(rxq);
    let q = port.tx_queue(0).unwrap();
    drop(q);
    port.close().unwrap();
}
