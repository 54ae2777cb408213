//! The poll-mode worker: one per configured lcore, pinned, polling its share of the ports'
//! RX queues, its queue of every TAP and its hand-over rings, in bursts of 32.
//!
//! A burst from a port runs through the stages in this order, each a struct (or function)
//! over one [`Batch`] of per-packet metadata, as DPDK's l3fwd main loop reads:
//!
//! ```text
//! receive (mod.rs)          rx burst from a port queue, a TAP queue or a hand-over ring
//! parse (ingress.rs)        every frame read once: PacketMeta + classifier Key
//! NAT replies (director.rs) from NAT servers: rewritten back to the VIP, routed to the client
//! classify + decide         the flows: permit -> kernel / peer, deny, table T, director D
//!   (decide.rs)
//! director (director.rs)    schedule, NAT rewrite, route to the server, tunnel / too big
//! forward (forward.rs)      route(table) + take the TTL: the one step every caller uses
//! outflows (egress.rs)      iface = the output port: permit / deny / table T (re-route once)
//! neighbours (neighbour.rs) next-hop MAC: resolve, hold, solicit, learn
//! transmit (tx.rs)          per-port TX bursts, TAPs, the hand-over rings
//! ```
//!
//! The kernel's own output (a TAP burst) is parsed, then goes straight to the outflows.
//! No allocation, lock or syscall on this path: the batch lives in the worker, counters are
//! single-writer, the rule set (with the routing tables) is one `arc_swap` load per burst.
//!
//! Every stage is generic over the frame-buffer traits of [`frames`]: the DPDK worker
//! ([`Worker`]) runs the [`Pipeline`] over mbufs, fixture tests run the same pipeline over
//! `Vec` buffers (packet in, expected packet out), without the EAL.

pub mod batch;
mod decide;
pub mod director;
mod egress;
#[cfg(test)]
mod fixtures;
pub mod forward;
pub mod frames;
mod ingress;
pub mod neighbour;
#[cfg(test)]
mod test_support;
mod tx;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use flowgate_config::appliance::MacAddr;

use crate::counters::{DropReason, RuleCounters, WorkerCounters};
use crate::director::{SharedDirectors, WorkerOptions};
use crate::dpdk::{Burst, Mempool, RingReader, RxQueue, TxQueue};
use crate::handoff::{Handoff, Owners};
use crate::route::SharedNeighbours;
use crate::ruleset::RuleSet;

pub use batch::{Batch, PacketMeta, To};
pub use director::{tunnel_fits, worker_share, wrap, wrap_for_tunnel};
pub use forward::link_scoped;
pub use frames::{Frame, Frames, Io, Out, VecFrame, VecFrames, VecIo};
pub use neighbour::{neighbour_in, solicitation, Taught, NEIGHBOUR_TICK, SHARED_POLL};
pub use tx::DpdkIo;

use director::{set_of, DirectorStage};
use ingress::{Parse, Source};
use neighbour::{Around, NeighbourStage};

/// After this many consecutive empty polling rounds the worker naps briefly (see
/// [`IDLE_NAP`]), so an idle appliance does not burn its cores; under load it never naps.
pub const IDLE_ROUNDS: u32 = 1024;
pub const IDLE_NAP: Duration = Duration::from_micros(50);
/// Connection-table entries each director's expiry sweep visits per polling round.
pub const EXPIRE_BUDGET: usize = 64;
/// The main routing table: director output (to servers, NAT replies to clients) uses it.
pub const MAIN_TABLE: u32 = 254;

/// What the worker knows of one port.
#[derive(Debug, Clone, Copy)]
pub struct PortRole {
    /// The port has a TAP (the kernel sees it).
    pub kernel: bool,
    /// Inline mode: permitted packets leave through this port instead of the kernel.
    pub peer: Option<u16>,
    /// The port's MAC (its TAP's too): the source of routed frames and of ARP / ND requests.
    pub mac: MacAddr,
    /// The port's MTU (bytes of IP packet): what a tunnel-mode director's packets, outer
    /// header included, may not exceed ([`DEFAULT_MTU`] when the device does not say).
    pub mtu: u16,
}

/// The MTU assumed for a port whose device does not tell its own.
pub const DEFAULT_MTU: u16 = 1500;

/// What every stage reads for one burst: the rule set, this worker's counters in it, the
/// ports' roles and the worker's counters.
#[derive(Debug)]
pub struct Env<'a> {
    pub rules: &'a RuleSet,
    pub rc: &'a RuleCounters,
    pub roles: &'a [PortRole],
    pub counters: &'a WorkerCounters,
}

/// The stages of one worker, over frames of `I::Frame`, writing to `I`.
#[derive(Debug)]
pub struct Pipeline<'p, I: Io> {
    /// Worker index: selects this worker's rule counters in every rule set.
    index: usize,
    roles: Vec<PortRole>,
    counters: Arc<WorkerCounters>,
    rules: &'p ArcSwap<RuleSet>,
    batch: Batch,
    parse: Parse,
    directors: DirectorStage<'p>,
    neighbours: NeighbourStage<'p, I::Frame>,
    io: I,
    /// Read once per polling round.
    now: Instant,
}

impl<'p, I: Io> Pipeline<'p, I> {
    pub fn new(
        index: usize,
        roles: Vec<PortRole>,
        counters: Arc<WorkerCounters>,
        rules: &'p ArcSwap<RuleSet>,
        neighbours: &'p SharedNeighbours,
        io: I,
        now: Instant,
    ) -> Self {
        Pipeline {
            index,
            roles,
            counters,
            rules,
            batch: Batch::default(),
            parse: Parse::default(),
            directors: DirectorStage::new(index, now),
            neighbours: NeighbourStage::new(neighbours, now),
            io,
            now,
        }
    }

    /// Runs the directors of `shared` (see [`DirectorStage::wire_in`]).
    pub fn with_directors(mut self, shared: &'p SharedDirectors, opts: WorkerOptions) -> Self {
        self.directors.wire_in(shared, opts);
        self
    }

    /// NAT director packets whose connection another worker owns are handed to it.
    pub fn with_owners(mut self, owners: &'p Owners) -> Self {
        self.directors.with_owners(owners);
        self
    }

    /// The output side.
    pub fn io(&mut self) -> &mut I {
        &mut self.io
    }

    /// The director stage (its tables and counters).
    pub fn directors(&self) -> &DirectorStage<'p> {
        &self.directors
    }

    /// Once per polling round, at `now`: the directors' clock, expiry and statistics, the
    /// neighbours' timers.
    pub fn round(&mut self, now: Instant) {
        self.now = now;
        if !self.directors.is_empty() {
            self.directors.round(now);
        }
        let rules = self.rules;
        let mut around = Around {
            io: &mut self.io,
            roles: &self.roles,
            counters: &self.counters,
            now,
        };
        self.neighbours.round(&mut around, || rules.load_full());
    }

    /// A burst from physical port `input` (`handed`: from another worker's hand-over ring,
    /// received from that port): parse, NAT replies, flows, directors, outflows, out.
    pub fn ingress(&mut self, input: u16, frames: &mut I::Frames, handed: bool) {
        let p = usize::from(input);
        let (Some(&role), Some(pc)) = (self.roles.get(p), self.counters.ports.get(p)) else {
            // not a port of this appliance (never, from the worker's own queues): freed
            frames.drain_each(|_, f| drop(f));
            return;
        };
        if handed {
            self.counters.handoff.handed_in.add(frames.len() as u64);
        } else {
            pc.rx.add(frames.len() as u64);
        }
        let rules = self.rules.load();
        let iface = rules.flows.port_iface[p];
        let from = Source {
            input,
            iface,
            non_ip: role.kernel.then_some(To::Kernel(input)),
            learn: !handed,
        };
        let b = &mut self.batch;
        self.parse.ports(b, frames, from, &self.counters);
        if !handed {
            pc.rx_bytes.add(self.parse.bytes);
        }
        let env = Env {
            rules: &rules,
            rc: &rules.counters[self.index.min(rules.counters.len() - 1)],
            roles: &self.roles,
            counters: &self.counters,
        };
        if !self.parse.learners().is_empty() {
            let mut around = Around {
                io: &mut self.io,
                roles: env.roles,
                counters: env.counters,
                now: self.now,
            };
            self.neighbours.learn_from(
                &mut around,
                input,
                frames,
                self.parse.learners(),
                env.rules,
            );
        }
        // the directors' snapshot, loaded only where some director runs
        let snapshot = match self.directors.is_empty() {
            true => None,
            false => self.directors.snapshot(),
        };
        let set = set_of(&snapshot);
        let mut handing = false;
        if let Some(set) = set {
            handing |= self.directors.replies(b, frames, &env, set, handed);
        }
        if decide::decide(b, frames, &env, input, role) {
            handing |= self.directors.forward(b, frames, &env, set, handed);
        }
        egress::outflows(b, frames, &env);
        self.dispatch(frames, &rules);
        self.directors.flush_sync();
        if handing {
            self.io.end_burst(input);
        }
    }

    /// Frames the kernel sent out of port `port`'s TAP: the outflows, then out the port.
    pub fn kernel_egress(&mut self, port: u16, frames: &mut I::Frames) {
        let Some(pc) = self.counters.ports.get(usize::from(port)) else {
            frames.drain_each(|_, f| drop(f));
            return;
        };
        pc.from_kernel.add(frames.len() as u64);
        let rules = self.rules.load();
        let iface = rules.outflows.port_iface[usize::from(port)];
        self.parse
            .kernel(&mut self.batch, frames, port, iface, &self.counters);
        let env = Env {
            rules: &rules,
            rc: &rules.counters[self.index.min(rules.counters.len() - 1)],
            roles: &self.roles,
            counters: &self.counters,
        };
        egress::outflows(&mut self.batch, frames, &env);
        self.dispatch(frames, &rules);
    }

    /// Moves every frame of the burst to its destination.
    // a stage per function in profiles (one call per burst)
    #[inline(never)]
    fn dispatch(&mut self, frames: &mut I::Frames, rules: &RuleSet) {
        let meta = &self.batch.meta;
        // the whole burst out one port (inline forwarding, a routed-less peer): as it is
        if let Some(&PacketMeta {
            to: To::Port(p), ..
        }) = meta.first()
        {
            let n = frames.len();
            if meta[..n].iter().all(|m| m.to == To::Port(p)) {
                self.io.send_all(Out::Port(p), frames);
                return;
            }
        }
        let counters = &*self.counters;
        let io = &mut self.io;
        let neighbours = &mut self.neighbours;
        let (roles, now) = (&self.roles[..], self.now);
        frames.drain_each(|i, f| match meta[i].to {
            To::Kernel(p) => {
                if let Some(c) = counters.ports.get(usize::from(p)) {
                    c.to_kernel.add(1);
                }
                io.send(Out::Tap(p), f);
            }
            To::Port(p) => io.send(Out::Port(p), f),
            To::Hop { port, via } => {
                let mut around = Around {
                    io: &mut *io,
                    roles,
                    counters,
                    now,
                };
                neighbours.hop(&mut around, port, via, f, rules);
            }
            To::Handoff(w) => io.send(Out::Handoff(w), f),
            To::Drop(why) => {
                counters.dropped(why);
                drop(f);
            }
            // every stage ran: nothing is left undecided; were it, it would not leave
            To::Flows => counters.dropped(DropReason::FlowDeny),
            To::Director(_) => counters.dropped(DropReason::DirectorUnavailable),
        });
    }

    /// Transmit everything queued, and publish the directors' counters (waiting for the
    /// reader): the worker stops.
    pub fn finish(&mut self) {
        self.io.flush();
        self.directors.flush_sync();
        self.directors.publish_stats(true);
    }
}

/// The queues one worker owns.
#[derive(Debug)]
pub struct Queues<'p> {
    /// (port index, RX queue) of the physical ports this worker polls.
    pub port_rx: Vec<(u16, RxQueue<'p>)>,
    /// (port index, RX queue) of the TAPs this worker polls (kernel output).
    pub tap_rx: Vec<(u16, RxQueue<'p>)>,
    /// This worker's TX queue on every physical port, by port index.
    pub port_tx: Vec<TxQueue<'p>>,
    /// This worker's TX queue on every TAP, by port index (`None`: no TAP).
    pub tap_tx: Vec<Option<TxQueue<'p>>>,
    /// Where the ARP requests and neighbour solicitations this worker sends are allocated.
    pub pool: Mempool,
    /// Next hops learned by any worker (`docs/routing.md`, "Neighbours").
    pub neighbours: &'p SharedNeighbours,
}

/// One poll-mode worker: the receive side of DPDK queues in front of a [`Pipeline`].
#[derive(Debug)]
pub struct Worker<'p> {
    index: usize,
    pipeline: Pipeline<'p, DpdkIo<'p>>,
    port_rx: Vec<(u16, RxQueue<'p>)>,
    tap_rx: Vec<(u16, RxQueue<'p>)>,
    /// This worker's hand-over rings, one per input port, polled like RX queues.
    ho_rx: Vec<(u16, RingReader<'p>)>,
    stop: &'p AtomicBool,
}

impl<'p> Worker<'p> {
    pub fn new(
        index: usize,
        queues: Queues<'p>,
        roles: Vec<PortRole>,
        counters: Arc<WorkerCounters>,
        rules: &'p ArcSwap<RuleSet>,
        stop: &'p AtomicBool,
    ) -> Worker<'p> {
        let Queues {
            port_rx,
            tap_rx,
            port_tx,
            tap_tx,
            pool,
            neighbours,
        } = queues;
        let io = DpdkIo::new(port_tx, tap_tx, pool, Arc::clone(&counters));
        let pipeline = Pipeline::new(
            index,
            roles,
            counters,
            rules,
            neighbours,
            io,
            Instant::now(),
        );
        Worker {
            index,
            pipeline,
            port_rx,
            tap_rx,
            ho_rx: Vec::new(),
            stop,
        }
    }

    /// Runs the directors of `shared` (see [`DirectorStage::wire_in`]).
    pub fn with_directors(mut self, shared: &'p SharedDirectors, opts: WorkerOptions) -> Self {
        self.pipeline = self.pipeline.with_directors(shared, opts);
        self
    }

    /// Hand NAT director packets to the worker owning their connection, and finish those
    /// the others hand to this one (`crate::handoff`). Takes this worker's ring readers: an
    /// error if another worker object took them already.
    pub fn with_handoff(mut self, handoff: &'p Handoff) -> Result<Self, String> {
        if self.index >= handoff.workers() || handoff.workers() > usize::from(u8::MAX) {
            return Err(format!(
                "worker {} is not one of the hand-over's {} workers",
                self.index,
                handoff.workers()
            ));
        }
        for p in 0..handoff.ports() {
            let reader = handoff
                .ring(self.index, p)
                .and_then(|r| r.reader())
                .ok_or_else(|| {
                    format!("worker {}: hand-over ring {p} already taken", self.index)
                })?;
            self.ho_rx.push((p as u16, reader));
        }
        self.pipeline.io().with_handoff(handoff);
        self.pipeline = self.pipeline.with_owners(handoff.owners());
        Ok(self)
    }

    /// Poll until `stop` is set, then flush and return.
    pub fn run(mut self) {
        let mut idle = 0u32;
        let mut burst = Burst::new();
        while !self.stop.load(Ordering::Relaxed) {
            self.pipeline.round(Instant::now());
            let mut work = 0usize;
            for (port, q) in self.port_rx.iter_mut() {
                if burst.rx(q) > 0 {
                    work += burst.len();
                    self.pipeline.ingress(*port, &mut burst, false);
                }
            }
            for (port, ring) in self.ho_rx.iter_mut() {
                if burst.rx_ring(ring) > 0 {
                    work += burst.len();
                    self.pipeline.ingress(*port, &mut burst, true);
                }
            }
            for (port, q) in self.tap_rx.iter_mut() {
                if burst.rx(q) > 0 {
                    work += burst.len();
                    self.pipeline.kernel_egress(*port, &mut burst);
                }
            }
            self.pipeline.io().flush();
            if work == 0 {
                idle += 1;
                if idle >= IDLE_ROUNDS {
                    std::thread::sleep(IDLE_NAP);
                }
            } else {
                idle = 0;
                self.pipeline.counters.busy_polls.add(1);
            }
        }
        self.pipeline.finish();
    }
}
