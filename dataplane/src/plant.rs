//! Bringing the appliance's ports up and down: EAL arguments from the config, one ethdev per
//! `[[port]]` (RSS over its RX queues, one TX queue per worker), and a DPDK `net_tap` TAP
//! per kernel port, named like the port, carrying the port's MAC and addresses, so the
//! kernel answers ARP, ping and local services for it as it would on the appliance.
//!
//! A device with fewer TX queues than workers (`net_pcap`, a small virtio NIC) is not
//! refused: as VPP does, its workers share its TX queues, worker `w` sending on queue
//! `w % queues` ([`tx_queue_of`]), behind the queue's lock where more than one worker lands on
//! it. This is chosen at start and said once, in one line per port ([`tx_sharing_warning`]).

use std::process::Command;

use flowgate_config::appliance::{Appliance, Device, MacAddr};

use crate::dpdk::{self, DpdkError, Eal, Mempool, Port, PortStats, TxSharing};
use crate::route::SharedNeighbours;
use crate::worker::{PortRole, Queues, DEFAULT_MTU};

/// Why the ports could not be brought up.
#[derive(Debug, thiserror::Error)]
pub enum PlantError {
    #[error("port {port}: {source}")]
    Port {
        port: String,
        #[source]
        source: DpdkError,
    },
    #[error("DPDK: {0}")]
    Dpdk(#[from] DpdkError),
    #[error("port {port}: `{cmd}` failed: {why}")]
    Kernel {
        port: String,
        cmd: String,
        why: String,
    },
    #[error("too many {what}: {n}")]
    TooMany { what: &'static str, n: usize },
    #[error("port {port}: the device has no TX queue")]
    NoTxQueue { port: String },
}

/// The TX queue a worker sends on, of a port's queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxAssignment {
    /// The queue index.
    pub queue: u16,
    /// Whether another worker sends on this queue too (so it is taken behind its lock).
    pub shared: bool,
}

/// The TX queue of worker `worker` (of `workers`) on a port with `queues` TX queues (at least
/// 1): queue `worker % queues`, shared when another worker lands on it too. With as many
/// queues as workers, every worker has its own.
pub fn tx_queue_of(worker: usize, workers: usize, queues: u16) -> TxAssignment {
    let n = usize::from(queues.max(1));
    let queue = worker % n;
    TxAssignment {
        queue: queue as u16,
        // the workers on queue q are q, q + n, q + 2n, ...: more than one when q + n < workers
        shared: queue + n < workers,
    }
}

/// The one line said at start when port `port`'s device has fewer TX queues (`queues`) than
/// there are workers; `None` when every worker has its own queue.
pub fn tx_sharing_warning(port: &str, queues: u16, workers: usize) -> Option<String> {
    (usize::from(queues) < workers).then(|| {
        format!(
            "flowgate: warning: port {port}: the device has {queues} TX queue{} for {workers} \
             workers: workers share TX queues (worker w sends on queue w % {queues}, behind a \
             lock; counted as tx_shared_bursts and tx_lock_contended)",
            if queues == 1 { "" } else { "s" }
        )
    })
}

/// RX/TX descriptors per queue.
const DESC: u16 = 512;

/// The EAL arguments for `app`: the config's own, plus a main lcore outside the workers
/// (unless the config chose lcores), a private file prefix, and each port's device.
pub fn eal_args(app: &Appliance) -> Vec<String> {
    let given = app.dataplane.eal.clone();
    let has = |flags: &[&str]| {
        given.iter().any(|a| {
            flags
                .iter()
                .any(|f| a == f || a.starts_with(&format!("{f}=")))
        })
    };
    let mut args = given.clone();
    if !has(&["-l", "-c", "--lcores"]) {
        let main = (0..1024u32)
            .find(|c| !app.dataplane.workers.contains(c))
            .unwrap_or(0);
        args.push("-l".into());
        args.push(main.to_string());
    }
    if !has(&["--file-prefix", "--no-shconf", "--in-memory"]) {
        args.push(format!("--file-prefix=flowgate-{}", std::process::id()));
    }
    for p in &app.ports {
        args.extend(p.device.eal_args());
    }
    args
}

/// The DPDK port name of a device (what `rte_eth_dev_get_port_by_name` knows it by).
fn device_name(d: &Device) -> &str {
    match d {
        Device::Pci(addr) => addr,
        Device::Vdev { name, .. } => name,
    }
}

/// The running ports: physical ethdevs and their TAPs.
#[derive(Debug)]
pub struct Plant {
    pub eal: Eal,
    pub pool: Mempool,
    /// By port index.
    pub ports: Vec<Port>,
    /// By port index; `None` when the port has `kernel = false`.
    pub taps: Vec<Option<Port>>,
    pub names: Vec<String>,
    /// What the workers learned of the next hops, shared between them (`docs/routing.md`).
    pub neighbours: SharedNeighbours,
    roles: Vec<PortRole>,
    workers: usize,
    rx_queues: Vec<u16>,
    /// TX queues configured on every port: as many as workers, or fewer when the device has
    /// fewer (then shared, [`tx_queue_of`]).
    tx_queues: Vec<u16>,
}

impl Plant {
    /// Start the EAL and bring every port and TAP of `app` up, for `workers` workers.
    pub fn bring_up(app: &Appliance) -> Result<Plant, PlantError> {
        let workers = app.dataplane.workers.len().max(1);
        let nw = u16::try_from(workers).map_err(|_| PlantError::TooMany {
            what: "workers",
            n: workers,
        })?;
        let eal = Eal::init(&eal_args(app))?;
        let kernel_ports = app.ports.iter().filter(|p| p.kernel).count();
        let rxq: usize = app.ports.iter().map(|p| usize::from(p.rx_queues)).sum();
        // every RX descriptor holds an mbuf, TX rings hold some, plus bursts in flight
        let mbufs = (rxq + kernel_ports * workers) * usize::from(DESC)
            + (app.ports.len() + kernel_ports) * workers * usize::from(DESC)
            + workers * (2 * app.ports.len() + 1) * dpdk::BURST_SIZE
            + handoff_mbufs(app, workers)
            + 4096;
        let mbufs =
            u32::try_from(mbufs.next_power_of_two() - 1).map_err(|_| PlantError::TooMany {
                what: "mbufs",
                n: mbufs,
            })?;
        // or more if the config asks (devices that keep frames of their own in the pool)
        let mbufs = mbufs.max(app.dataplane.mbufs.unwrap_or(0));
        let pool = Mempool::new("flowgate_pool", mbufs, 256, 2048 + 128, -1)?;

        let mut ports = Vec::new();
        let mut tx_queues = Vec::new();
        for p in &app.ports {
            let err = |source| PlantError::Port {
                port: p.name.clone(),
                source,
            };
            let id = dpdk::port_by_name(device_name(&p.device)).map_err(err)?;
            // one TX queue per worker, or all the device has (shared by the workers)
            let txq = nw.min(dpdk::device_limits(id).map_err(err)?.max_tx_queues);
            if txq == 0 {
                return Err(PlantError::NoTxQueue {
                    port: p.name.clone(),
                });
            }
            if let Some(warning) = tx_sharing_warning(&p.name, txq, workers) {
                eprintln!("{warning}");
            }
            tx_queues.push(txq);
            let cfg = dpdk::PortConfig {
                rx_desc: DESC,
                tx_desc: DESC,
                ..dpdk::PortConfig::new(p.rx_queues, txq, p.rx_queues > 1)
            };
            let mut port = Port::configure_with(id, cfg, pool).map_err(err)?;
            port.start().map_err(err)?;
            // frames for the TAP's MAC (and multicast) must reach us
            let _ = port.set_promiscuous(true);
            ports.push(port);
        }
        // a port's MAC: the configured one, else the device's; its TAP carries the same, so
        // the kernel and the routed path speak from one address
        let mut macs = Vec::new();
        for (i, p) in app.ports.iter().enumerate() {
            macs.push(match p.mac {
                Some(m) => m,
                None => MacAddr(ports[i].mac_address().map_err(|source| PlantError::Port {
                    port: p.name.clone(),
                    source,
                })?),
            });
        }
        let mut taps = Vec::new();
        for (i, p) in app.ports.iter().enumerate() {
            if !p.kernel {
                taps.push(None);
                continue;
            }
            let err = |source| PlantError::Port {
                port: p.name.clone(),
                source,
            };
            let mac = macs[i]
                .0
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":");
            let id = dpdk::attach_vdev(&format!("net_tap{i},iface={},mac={mac}", p.name))
                .map_err(err)?;
            let cfg = dpdk::PortConfig {
                rx_desc: DESC,
                tx_desc: DESC,
                ..dpdk::PortConfig::new(nw, nw, false)
            };
            let mut tap = Port::configure_with(id, cfg, pool).map_err(err)?;
            tap.start().map_err(err)?;
            kernel_setup(
                &p.name,
                &p.addresses
                    .iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>(),
            )?;
            taps.push(Some(tap));
        }
        kernel_routes(app)?;
        let roles = app
            .ports
            .iter()
            .zip(&macs)
            .zip(&ports)
            .map(|((p, mac), port)| PortRole {
                kernel: p.kernel,
                peer: p.peer.map(|q| q as u16),
                mac: *mac,
                mtu: port.mtu().ok().filter(|&m| m > 0).unwrap_or(DEFAULT_MTU),
            })
            .collect();
        Ok(Plant {
            eal,
            pool,
            ports,
            taps,
            names: app.ports.iter().map(|p| p.name.clone()).collect(),
            neighbours: SharedNeighbours::default().with_static(static_neighbours(app)),
            roles,
            workers,
            rx_queues: app.ports.iter().map(|p| p.rx_queues).collect(),
            tx_queues,
        })
    }

    /// What the workers need to know of each port.
    pub fn roles(&self) -> Vec<PortRole> {
        self.roles.clone()
    }

    /// The queues of worker `w`: its share of the (port, RX queue) pairs (round robin), its
    /// own queue of every TAP, its own TX queue on every TAP, and its TX queue on every port
    /// ([`tx_queue_of`]: its own, or one shared with other workers where the device has fewer
    /// queues than workers).
    pub fn queues(&self, w: usize) -> Result<Queues<'_>, PlantError> {
        let mut port_rx = Vec::new();
        let mut k = 0usize;
        for (p, port) in self.ports.iter().enumerate() {
            for q in 0..self.rx_queues[p] {
                if k % self.workers == w {
                    port_rx.push((p as u16, port.rx_queue(q)?));
                }
                k += 1;
            }
        }
        let wq = w as u16;
        let mut tap_rx = Vec::new();
        let mut tap_tx = Vec::new();
        for (p, tap) in self.taps.iter().enumerate() {
            match tap {
                Some(t) => {
                    tap_rx.push((p as u16, t.rx_queue(wq)?));
                    tap_tx.push(Some(t.tx_queue(wq)?));
                }
                None => tap_tx.push(None),
            }
        }
        let port_tx = self
            .ports
            .iter()
            .zip(&self.tx_queues)
            .map(|(p, &n)| {
                let a = tx_queue_of(w, self.workers, n);
                if a.shared {
                    p.shared_tx_queue(a.queue)
                } else {
                    p.tx_queue(a.queue)
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(Queues {
            port_rx,
            tap_rx,
            port_tx,
            tap_tx,
            pool: self.pool,
            neighbours: &self.neighbours,
        })
    }

    /// The DPDK port id of every port, by port index.
    pub fn port_ids(&self) -> Vec<u16> {
        self.ports.iter().map(|p| p.id()).collect()
    }

    /// The NIC's own counters of every port (zeros where the driver has none), with the TX
    /// sharing counters.
    pub fn nic_stats(&self) -> Vec<PortStats> {
        self.ports
            .iter()
            .map(|p| p.stats().unwrap_or_default())
            .collect()
    }

    /// [`Plant::nic_stats`] for another thread (the control thread): reads the same counters
    /// without borrowing the plant.
    pub fn nic_stats_reader(&self) -> impl Fn() -> Vec<PortStats> + Send + Sync + 'static {
        let ports: Vec<(u16, TxSharing)> = self
            .ports
            .iter()
            .map(|p| (p.id(), p.tx_sharing()))
            .collect();
        move || {
            ports
                .iter()
                .map(|(id, sharing)| sharing.add_to(dpdk::port_stats(*id).unwrap_or_default()))
                .collect()
        }
    }

    /// The TX queues configured on each port, by port index.
    pub fn tx_queue_counts(&self) -> &[u16] {
        &self.tx_queues
    }

    /// Stop and close every port; the TAP netdevs disappear from the kernel.
    pub fn shut_down(self) -> Vec<String> {
        let mut errors = Vec::new();
        for (name, tap) in self.names.iter().zip(self.taps) {
            if let Some(t) = tap {
                if let Err(e) = t.close() {
                    errors.push(format!("{name} tap: {e}"));
                }
            }
        }
        for (name, port) in self.names.iter().zip(self.ports) {
            if let Err(e) = port.close() {
                errors.push(format!("{name}: {e}"));
            }
        }
        errors
    }
}

/// The config's static neighbours as `(port index, address, MAC)`, for the shared neighbour
/// table the workers resolve next hops from (`docs/routing.md`).
pub fn static_neighbours(app: &Appliance) -> Vec<(usize, std::net::IpAddr, MacAddr)> {
    app.ports
        .iter()
        .enumerate()
        .flat_map(|(i, p)| p.neighbours.iter().map(move |&(ip, mac)| (i, ip, mac)))
        .collect()
}

/// Mbufs the hand-over rings between workers may hold (`crate::handoff`): they exist with
/// several workers and a NAT director.
fn handoff_mbufs(app: &Appliance, workers: usize) -> usize {
    if crate::handoff::needed(workers, app.directors.iter().map(|d| d.mode)) {
        workers * app.ports.len() * crate::handoff::RING_SIZE as usize
    } else {
        0
    }
}

/// The main table's `[routes]` in the kernel too, on the TAPs (`ip route replace`), so that
/// what the kernel sends (answers of local services, ICMP) is routed as the config says
/// before the outflows see it. Routes out of a port without a TAP are the dataplane's only.
fn kernel_routes(app: &Appliance) -> Result<(), PlantError> {
    for r in &app.main.routes {
        let Some(port) = app.ports.get(r.port).filter(|p| p.kernel) else {
            continue;
        };
        let prefix = r.prefix.to_string();
        let via = r.via.map(|v| v.to_string());
        let mut args = vec!["route", "replace", prefix.as_str()];
        if let Some(v) = &via {
            args.extend(["via", v.as_str()]);
        }
        args.extend(["dev", port.name.as_str()]);
        ip(&port.name, &args)?;
    }
    Ok(())
}

/// Run `ip ARGS` for port `name`.
fn ip(name: &str, args: &[&str]) -> Result<(), PlantError> {
    let fail = |why: String| PlantError::Kernel {
        port: name.to_string(),
        cmd: format!("ip {}", args.join(" ")),
        why,
    };
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| fail(e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(fail(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

/// Bring the TAP `name` up in the kernel and give it its addresses.
fn kernel_setup(name: &str, addresses: &[String]) -> Result<(), PlantError> {
    for a in addresses {
        if a.contains(':') {
            ip(name, &["-6", "addr", "add", a, "dev", name, "nodad"])?;
        } else {
            ip(name, &["addr", "add", a, "dev", name])?;
        }
    }
    ip(name, &["link", "set", "dev", name, "up"])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_worker_has_its_own_tx_queue_when_there_are_enough() {
        for w in 0..4 {
            let a = tx_queue_of(w, 4, 4);
            assert_eq!(a.queue, w as u16);
            assert!(!a.shared);
            // more queues than workers: still its own
            assert_eq!(tx_queue_of(w, 4, 8), a);
        }
        assert_eq!(tx_sharing_warning("eth0", 4, 4), None);
        assert_eq!(tx_sharing_warning("eth0", 8, 4), None);
    }

    #[test]
    fn workers_share_tx_queues_round_robin_when_the_device_has_fewer() {
        // one queue: everybody on queue 0, shared
        let one: Vec<_> = (0..2).map(|w| tx_queue_of(w, 2, 1)).collect();
        assert_eq!(
            one,
            vec![
                TxAssignment {
                    queue: 0,
                    shared: true
                };
                2
            ]
        );
        // three workers on two queues: 0 and 2 share queue 0, worker 1 has queue 1 alone
        let three: Vec<_> = (0..3).map(|w| tx_queue_of(w, 3, 2)).collect();
        assert_eq!(
            three
                .iter()
                .map(|a| (a.queue, a.shared))
                .collect::<Vec<_>>(),
            vec![(0, true), (1, false), (0, true)]
        );
        // a single worker never shares, even on a one-queue device
        assert!(!tx_queue_of(0, 1, 1).shared);
    }

    #[test]
    fn the_sharing_warning_names_the_port_queues_and_workers() {
        let w = tx_sharing_warning("out0", 1, 2).expect("a warning");
        assert!(w.contains("port out0"), "{w}");
        assert!(w.contains("1 TX queue for 2 workers"), "{w}");
        assert!(!w.contains('\n'), "one line: {w}");
        let w = tx_sharing_warning("eth1", 2, 3).expect("a warning");
        assert!(w.contains("2 TX queues for 3 workers"), "{w}");
    }
}
