//! The DPDK side of the generator: one TX port, one RX port (or the same port), one lcore
//! that paces, builds, stamps and sends frames, and receives and times them in the same loop.
//!
//! A trial sends a profile at a set rate for a set time, then keeps receiving until the RX
//! port has been idle for the drain time (frames still in flight are not lost). Counting,
//! RFC 2544 style:
//!
//! - **offered**: frames built and handed to the TX port, whether the port took them or not.
//!   On memif the TX ring is the DUT's RX ring, and on a wire a frame the DUT cannot take is
//!   lost all the same, so a frame the TX queue refuses is offered and lost (`tx_refused`).
//! - frames the schedule had due but the generator could not build in time (`late`) or for
//!   lack of mbufs (`no_mbuf`) were never offered: the offered rate, not the asked-for rate,
//!   is what a trial reports, and a trial whose offered rate falls short says so.
//! - **received**: frames back on the RX port carrying our stamp; anything else is counted
//!   as `foreign` and not received. **lost** = offered - received (negative if the DUT
//!   duplicated frames).

use std::time::{Duration, Instant};

use flowgate_dataplane::dpdk::{
    self, tsc_cycles, Burst, Eal, Mempool, Port, PortConfig, BURST_SIZE, DEFAULT_DATA_ROOM,
};
use flowgate_dataplane::runtime_files::{self, RuntimeDir};
use serde::Serialize;

use crate::hist::LatencyHistogram;
use crate::pace::Pacer;
use crate::profile::{Cursor, Profile};
use crate::stamp;

/// Errors of the generator's DPDK side.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Dpdk(#[from] dpdk::DpdkError),
    #[error("port {0}: link still down after {1:?} (is the other side running?)")]
    LinkDown(String, Duration),
    #[error("port {0:?}: no such port (give an ethdev name such as net_memif0, a PCI address, or a port id)")]
    NoPort(String),
}

/// What a trial does.
#[derive(Debug, Clone, Copy)]
pub struct TrialSpec {
    /// Frames per second to offer; 0 = as fast as the generator can.
    pub rate_pps: u64,
    pub duration: Duration,
    /// How long the RX port must stay idle after the last frame before the trial ends.
    pub drain: Duration,
}

/// What a trial measured.
#[derive(Debug, Clone, Serialize)]
pub struct TrialResult {
    pub target_pps: u64,
    pub offered: u64,
    pub tx_refused: u64,
    pub late: u64,
    /// Frames due but not built: no mbuf in the pool (or none with room for the frame).
    pub no_mbuf: u64,
    /// Frames back on the RX port: stamped ones, and unstamped ones when the profile has
    /// unstamped frames (else those are `foreign` only).
    pub received: u64,
    pub foreign: u64,
    pub unstamped: u64,
    pub lost: i64,
    pub loss_ratio: f64,
    /// Seconds between the first and the last frame offered.
    pub tx_seconds: f64,
    pub offered_pps: f64,
    pub received_pps: f64,
    /// Whether the generator offered less than 99% of the target (it is the bottleneck).
    pub generator_limited: bool,
    #[serde(skip)]
    pub latency: LatencyHistogram,
}

/// An open generator: the EAL, a pool, the ports.
#[derive(Debug)]
pub struct Generator {
    eal: Eal,
    pool: Mempool,
    tx: Port,
    /// `None` when RX is the TX port.
    rx: Option<Port>,
    hz: u64,
    /// Nanoseconds per TSC cycle, as 32.32 fixed point.
    ns_per_cycle: u64,
    /// The EAL's runtime directory, removed on drop (DPDK makes one even with `--no-shconf`
    /// and never removes it).
    _runtime_dir: RuntimeDir,
}

/// The file prefix of generators not given one: this stem and the process id.
const PREFIX_STEM: &str = "flowgate-gen-";

/// The port id of `name`: an ethdev name (vdev instance or PCI address) or a number.
pub fn resolve_port(name: &str) -> Result<u16, EngineError> {
    if let Ok(id) = name.parse::<u16>() {
        return Ok(id);
    }
    dpdk::port_by_name(name).map_err(|_| EngineError::NoPort(name.into()))
}

impl Generator {
    /// Starts the EAL with `eal_args` and sets up `tx` and `rx` (names as [`resolve_port`]
    /// takes them; the same name for a loopback) with one queue each, then waits up to
    /// `link_timeout` for both links.
    pub fn open(
        eal_args: &[String],
        tx: &str,
        rx: &str,
        link_timeout: Duration,
    ) -> Result<Generator, EngineError> {
        // a prefix of our own, so that the runtime directory removed on drop is ours and never
        // the default `rte` of another DPDK program; those of killed generators go first
        let mut eal_args = eal_args.to_vec();
        if runtime_files::given_prefix(&eal_args).is_none() {
            eal_args.push(format!("--file-prefix={PREFIX_STEM}{}", std::process::id()));
        }
        runtime_files::remove_stale(PREFIX_STEM);
        let runtime_dir = RuntimeDir::new(runtime_files::file_prefix(&eal_args));
        let eal = Eal::init(&eal_args)?;
        let pool = Mempool::new(
            "fg_gen_pool",
            16383,
            256,
            DEFAULT_DATA_ROOM,
            dpdk::SOCKET_ANY,
        )?;
        let tx_id = resolve_port(tx)?;
        let rx_id = resolve_port(rx)?;
        let open = |id| -> Result<Port, EngineError> {
            let mut p = Port::configure_with(id, PortConfig::new(1, 1, false), pool)?;
            p.start()?;
            // Promiscuous where the port supports it (a NIC behind a DUT that does not rewrite
            // MACs); a port that cannot is fine as it is.
            let _ = p.set_promiscuous(true);
            Ok(p)
        };
        let tx_port = open(tx_id)?;
        let rx_port = if rx_id == tx_id {
            None
        } else {
            Some(open(rx_id)?)
        };
        let hz = eal.tsc_hz();
        let g = Generator {
            ns_per_cycle: ((1_000_000_000u128 << 32) / u128::from(hz.max(1))) as u64,
            eal,
            pool,
            tx: tx_port,
            rx: rx_port,
            hz,
            _runtime_dir: runtime_dir,
        };
        g.wait_link(tx, g.tx_port(), link_timeout)?;
        g.wait_link(rx, g.rx_port(), link_timeout)?;
        Ok(g)
    }

    fn tx_port(&self) -> &Port {
        &self.tx
    }

    fn rx_port(&self) -> &Port {
        self.rx.as_ref().unwrap_or(&self.tx)
    }

    fn wait_link(&self, name: &str, port: &Port, timeout: Duration) -> Result<(), EngineError> {
        let start = Instant::now();
        loop {
            if port.link_status()?.up {
                return Ok(());
            }
            if start.elapsed() >= timeout {
                return Err(EngineError::LinkDown(name.into(), timeout));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// TSC ticks per second.
    pub fn tsc_hz(&self) -> u64 {
        self.hz
    }

    /// The EAL this generator runs in.
    pub fn eal(&self) -> &Eal {
        &self.eal
    }

    /// Counters of the TX and RX ports.
    pub fn port_stats(&self) -> Result<(dpdk::PortStats, dpdk::PortStats), EngineError> {
        Ok((self.tx_port().stats()?, self.rx_port().stats()?))
    }

    /// Receives and frees whatever arrives until the RX port has been idle for `idle` (at
    /// most `max`); returns the frames discarded.
    pub fn flush(&self, idle: Duration, max: Duration) -> Result<u64, EngineError> {
        let mut rxq = self.rx_port().rx_queue(0)?;
        let mut burst = Burst::new();
        let (start, mut last) = (Instant::now(), Instant::now());
        let mut n = 0;
        while last.elapsed() < idle && start.elapsed() < max {
            if burst.rx(&mut rxq) > 0 {
                n += burst.len() as u64;
                burst.clear();
                last = Instant::now();
            }
        }
        Ok(n)
    }

    /// Runs one trial of `profile`.
    pub fn trial(
        &mut self,
        profile: &Profile,
        spec: &TrialSpec,
    ) -> Result<TrialResult, EngineError> {
        self.flush(Duration::from_millis(20), Duration::from_millis(500))?;
        let hz = self.hz;
        let ns_per_cycle = self.ns_per_cycle;
        let max_latency_cycles = hz.saturating_mul(10);
        let pool = self.pool;
        let mut txq = self.tx_port().tx_queue(0)?;
        let mut rxq = self.rx_port().rx_queue(0)?;
        let mut out = Burst::new();
        let mut inb = Burst::new();
        let mut cursor = Cursor::default();
        let mut hist = LatencyHistogram::new();
        let (mut offered, mut refused, mut no_mbuf, mut received, mut foreign, mut unstamped) =
            (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);

        let receive = |inb: &mut Burst,
                       hist: &mut LatencyHistogram,
                       received: &mut u64,
                       foreign: &mut u64| {
            let now = tsc_cycles();
            for frame in inb.iter() {
                match stamp::read(frame) {
                    Some(sent) => {
                        *received += 1;
                        let d = now.wrapping_sub(sent);
                        if sent != 0 && d < max_latency_cycles {
                            hist.record(((u128::from(d) * u128::from(ns_per_cycle)) >> 32) as u64);
                        }
                    }
                    None => *foreign += 1,
                }
            }
            inb.clear();
        };

        let start = tsc_cycles();
        let end = start + (spec.duration.as_secs_f64() * hz as f64) as u64;
        let mut pacer = Pacer::new(start, spec.rate_pps, hz, 4 * BURST_SIZE as u64);
        let mut last_tx = start;
        loop {
            let now = tsc_cycles();
            if now >= end {
                break;
            }
            let n = pacer.take(now, BURST_SIZE as u64) as usize;
            if n > 0 && out.alloc_from(&pool, n) == 0 {
                no_mbuf += n as u64;
            }
            let mut unfilled = false;
            for i in 0..out.len() {
                let t = cursor.next(profile);
                // a fresh mbuf has the default data room, which every template fits
                // (profile::MAX_DATA); one that does not is freed below, not sent empty
                match out.append(i, t.bytes.len() as u16) {
                    Some(buf) => {
                        buf.copy_from_slice(&t.bytes);
                        match &t.stamp {
                            Some(at) => stamp::write(buf, at, tsc_cycles()),
                            None => unstamped += 1,
                        }
                    }
                    None => unfilled = true,
                }
            }
            if unfilled {
                let before = out.len();
                out.retain(|frame| !frame.is_empty());
                no_mbuf += (before - out.len()) as u64;
            }
            if !out.is_empty() {
                offered += out.len() as u64;
                out.tx(&mut txq);
                refused += out.len() as u64;
                out.clear();
                last_tx = tsc_cycles();
            }
            if inb.rx(&mut rxq) > 0 {
                receive(&mut inb, &mut hist, &mut received, &mut foreign);
            }
        }
        // drain: until idle for `drain` (at most 20 drains or 2 s)
        let drain = (spec.drain.as_secs_f64() * hz as f64) as u64;
        let drain_end = tsc_cycles() + (drain * 20).min(2 * hz);
        let mut idle_since = tsc_cycles();
        loop {
            let now = tsc_cycles();
            if now.saturating_sub(idle_since) >= drain || now >= drain_end {
                break;
            }
            if inb.rx(&mut rxq) > 0 {
                receive(&mut inb, &mut hist, &mut received, &mut foreign);
                idle_since = tsc_cycles();
            }
        }
        let tx_seconds = (last_tx.saturating_sub(start)) as f64 / hz as f64;
        let secs = tx_seconds.max(1e-9);
        if profile.stamped().0 < profile.stamped().1 {
            received += foreign;
        }
        let lost = offered as i64 - received as i64;
        let offered_pps = offered as f64 / secs;
        Ok(TrialResult {
            target_pps: spec.rate_pps,
            offered,
            tx_refused: refused,
            late: pacer.missed(),
            no_mbuf,
            received,
            foreign,
            unstamped,
            lost,
            loss_ratio: if offered == 0 {
                1.0
            } else {
                lost.max(0) as f64 / offered as f64
            },
            tx_seconds,
            offered_pps,
            received_pps: received as f64 / secs,
            generator_limited: spec.rate_pps > 0 && offered_pps < 0.99 * spec.rate_pps as f64,
            latency: hist,
        })
    }
}
