//! The worker's DPDK output side ([`DpdkIo`]): per-port and per-TAP TX bursts flushed to the
//! worker's TX queues, the hand-over bursts flushed to the owners' rings, and the mempool
//! the worker's own frames (ARP requests, neighbour solicitations) come from.

use std::sync::Arc;

use crate::counters::{DropReason, WorkerCounters};
use crate::dpdk::{Burst, Mbuf, Mempool, TxQueue};
use crate::handoff::Handoff;

use super::frames::{Io, Out};

/// What leaves a DPDK worker, and where it goes.
#[derive(Debug)]
pub struct DpdkIo<'p> {
    /// This worker's TX queue on every physical port, by port index.
    port_tx: Vec<TxQueue<'p>>,
    /// This worker's TX queue on every TAP, by port index (`None`: no TAP).
    tap_tx: Vec<Option<TxQueue<'p>>>,
    port_out: Vec<Burst>,
    tap_out: Vec<Burst>,
    pool: Mempool,
    /// Hand-over of NAT director packets (`None`: one worker, or no NAT director).
    handoff: Option<&'p Handoff>,
    /// By owner worker: what the current burst hands over.
    ho_out: Vec<Burst>,
    counters: Arc<WorkerCounters>,
}

impl<'p> DpdkIo<'p> {
    pub fn new(
        port_tx: Vec<TxQueue<'p>>,
        tap_tx: Vec<Option<TxQueue<'p>>>,
        pool: Mempool,
        counters: Arc<WorkerCounters>,
    ) -> Self {
        let n = port_tx.len().max(tap_tx.len());
        DpdkIo {
            port_tx,
            tap_tx,
            port_out: (0..n).map(|_| Burst::new()).collect(),
            tap_out: (0..n).map(|_| Burst::new()).collect(),
            pool,
            handoff: None,
            ho_out: Vec::new(),
            counters,
        }
    }

    /// Hands NAT director packets over `handoff`'s rings.
    pub fn with_handoff(&mut self, handoff: &'p Handoff) {
        self.ho_out = (0..handoff.workers()).map(|_| Burst::new()).collect();
        self.handoff = Some(handoff);
    }

    fn out(&mut self, tap: bool, i: usize) -> Option<&mut Burst> {
        if tap {
            self.tap_out.get_mut(i)
        } else {
            self.port_out.get_mut(i)
        }
    }

    /// Transmit the pending burst of port `i` (or its TAP); what the queue refuses is
    /// dropped and counted.
    fn flush_one(&mut self, tap: bool, i: usize) {
        let (out, queue) = if tap {
            (
                &mut self.tap_out[i],
                self.tap_tx.get_mut(i).and_then(Option::as_mut),
            )
        } else {
            (&mut self.port_out[i], self.port_tx.get_mut(i))
        };
        let Some(queue) = queue else {
            for _ in 0..out.len() {
                self.counters.dropped(DropReason::NoKernel);
            }
            out.clear();
            return;
        };
        let bytes = out.bytes();
        let before = out.len();
        out.tx(queue);
        let unsent = out.len();
        if !tap {
            let pc = &self.counters.ports[i];
            pc.tx.add((before - unsent) as u64);
            pc.tx_bytes.add(bytes.saturating_sub(out.bytes()));
        }
        for _ in 0..unsent {
            self.counters.dropped(DropReason::TxFull);
        }
        out.clear();
    }
}

impl Io for DpdkIo<'_> {
    type Frame = Mbuf;
    type Frames = Burst;

    /// A whole burst for one port whose TX burst is empty is taken as it is (the two bursts
    /// are swapped: no per-packet work, as testpmd's io forwarding).
    #[inline]
    fn send_all(&mut self, out: Out, frames: &mut Burst) {
        if let Out::Port(p) = out {
            if let Some(b) = self
                .port_out
                .get_mut(usize::from(p))
                .filter(|b| b.is_empty())
            {
                std::mem::swap(b, frames);
                return;
            }
        }
        frames.drain_each(|_, m| self.send(out, m));
    }

    #[inline]
    fn send(&mut self, out: Out, m: Mbuf) {
        let (tap, p) = match out {
            Out::Port(p) => (false, usize::from(p)),
            Out::Tap(p) => (true, usize::from(p)),
            Out::Handoff(w) => {
                match self.ho_out.get_mut(usize::from(w)).map(|b| b.push(m)) {
                    Some(Ok(())) => {}
                    _ => self.counters.dropped(DropReason::HandoffFull),
                }
                return;
            }
        };
        let Some(burst) = self.out(tap, p) else {
            self.counters.dropped(DropReason::NoKernel);
            return;
        };
        if let Err(m) = burst.push(m) {
            self.flush_one(tap, p);
            if let Some(Err(m)) = self.out(tap, p).map(|b| b.push(m)) {
                self.counters.dropped(DropReason::TxFull);
                drop(m);
            }
        }
    }

    /// Put what this burst handed over into the owners' rings for `input`; what does not
    /// fit is dropped and counted.
    fn end_burst(&mut self, input: u16) {
        let Some(h) = self.handoff else { return };
        for w in 0..self.ho_out.len() {
            let out = &mut self.ho_out[w];
            if out.is_empty() {
                continue;
            }
            let n = out.len();
            let sent = h.ring(w, usize::from(input)).map_or(0, |r| r.enqueue(out));
            out.clear();
            self.counters.handoff.handed_out.add(sent as u64);
            for _ in sent..n {
                self.counters.dropped(DropReason::HandoffFull);
            }
        }
    }

    fn flush(&mut self) {
        for i in 0..self.port_out.len() {
            if !self.port_out[i].is_empty() {
                self.flush_one(false, i);
            }
            if !self.tap_out[i].is_empty() {
                self.flush_one(true, i);
            }
        }
    }

    fn alloc(&mut self, bytes: &[u8]) -> Option<Mbuf> {
        let mut m = self.pool.alloc()?;
        m.append(bytes.len() as u16)?.copy_from_slice(bytes);
        Some(m)
    }
}
