//! Hand-over of NAT director packets between workers, so that a NAT reply finds its
//! connection whichever worker the NIC gave it to (`docs/director.md`, "NAT replies: which
//! worker?").
//!
//! Each worker's connection tables are private. A connection belongs to the worker that
//! [`Steering::owner`] names for its *client endpoint* (address and port): the source of the
//! client's packets and the destination of the server's replies, the one part of the tuple
//! NAT never changes. A worker that receives
//!
//! - a packet the flows send to a NAT director, from a client endpoint it does not own, or
//! - a packet from a NAT server's address that is no reply of its own connections, towards a
//!   client endpoint it does not own,
//!
//! hands it to the owner over a DPDK ring (one per owner and input port: many producers, one
//! consumer), tagged with what it already knows (the director a flow chose; "reply
//! candidate"). The owner polls its rings like RX queues and finishes the packet: the
//! director's `forward` or `reply`, routing, outflows, TX on its own queues. Nothing is
//! classified twice: a forwarded packet carries its director, and a reply candidate was not
//! classified yet.
//!
//! With one worker, or no NAT director, there is no hand-over (and no ring).

use std::net::IpAddr;

use flowgate_config::appliance::Mode;

use crate::classify::Key;
use crate::director::steer::Steering;
use crate::director::DirectorSet;
use crate::dpdk::{DpdkError, Ring};

/// Mbufs one ring holds (minus one): a burst from every other worker, many times over.
pub const RING_SIZE: u32 = 1024;

const TAG_REPLY: u32 = u32::MAX;
const TAG_FORWARD: u32 = 0x8000_0000;

/// What the handing worker tells the owner about a packet (in the mbuf's tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    /// The flows sent it to this director (counted already): schedule / look it up.
    Forward(u16),
    /// From a NAT server, no reply of the sender's connections: try it as a reply, else
    /// the flows decide.
    Reply,
}

impl Tag {
    pub fn encode(self) -> u32 {
        match self {
            Tag::Forward(d) => TAG_FORWARD | u32::from(d),
            Tag::Reply => TAG_REPLY,
        }
    }

    pub fn decode(v: u32) -> Tag {
        if v != TAG_REPLY && v & TAG_FORWARD != 0 {
            Tag::Forward(v as u16)
        } else {
            Tag::Reply
        }
    }
}

/// The rings and the steering function shared by the workers.
#[derive(Debug)]
pub struct Handoff {
    workers: usize,
    ports: usize,
    /// `rings[w * ports + p]`: packets from port `p` for worker `w`.
    rings: Vec<Ring>,
    steering: Steering,
    /// By director index: in NAT mode.
    nat: Vec<bool>,
    /// The NAT directors' server addresses in key form (v6 flag, address), sorted.
    servers: Vec<(bool, u128)>,
}

fn key_addr(a: IpAddr) -> (bool, u128) {
    match a {
        IpAddr::V4(v4) => (false, u128::from(u32::from(v4))),
        IpAddr::V6(v6) => (true, u128::from(v6)),
    }
}

impl Handoff {
    /// The hand-over for `workers` workers polling `ports` ports with the directors of `set`:
    /// `None` when it is not needed (one worker, or no NAT director). Needs the EAL.
    pub fn new(
        workers: usize,
        ports: usize,
        set: &DirectorSet,
    ) -> Result<Option<Handoff>, DpdkError> {
        let nat: Vec<bool> = set.iter().map(|d| d.mode == Mode::Nat).collect();
        if workers < 2 || !nat.contains(&true) {
            return Ok(None);
        }
        let mut servers: Vec<(bool, u128)> = set
            .iter()
            .filter(|d| d.mode == Mode::Nat)
            .flat_map(|d| d.servers.iter().map(|s| key_addr(s.address)))
            .collect();
        servers.sort_unstable();
        servers.dedup();
        let mut rings = Vec::with_capacity(workers * ports);
        for w in 0..workers {
            for p in 0..ports {
                rings.push(Ring::new(&format!("fg_ho_{w}_{p}"), RING_SIZE)?);
            }
        }
        Ok(Some(Handoff {
            workers,
            ports,
            rings,
            steering: Steering::round_robin(workers),
            nat,
            servers,
        }))
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    pub fn ports(&self) -> usize {
        self.ports
    }

    /// The ring carrying packets from port `port` to worker `worker`.
    pub fn ring(&self, worker: usize, port: usize) -> Option<&Ring> {
        if port >= self.ports {
            return None;
        }
        self.rings.get(worker * self.ports + port)
    }

    /// The worker owning the connections of client endpoint `addr:port` (key form).
    #[inline]
    pub fn owner(&self, v6: bool, addr: u128, port: u16) -> usize {
        self.steering.owner(v6, addr, port)
    }

    /// Director `d` is in NAT mode (its packets are handed to their owner).
    #[inline]
    pub fn is_nat(&self, d: u16) -> bool {
        self.nat.get(usize::from(d)).copied().unwrap_or(false)
    }

    /// The packet of `key` comes from one of the NAT directors' servers: it may be a reply.
    #[inline]
    pub fn from_nat_server(&self, key: &Key) -> bool {
        self.servers.binary_search(&(key.v6, key.src)).is_ok()
    }

    /// Mbufs waiting in all the rings now.
    pub fn pending(&self) -> usize {
        self.rings.iter().map(Ring::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip() {
        for t in [
            Tag::Reply,
            Tag::Forward(0),
            Tag::Forward(7),
            Tag::Forward(u16::MAX),
        ] {
            assert_eq!(Tag::decode(t.encode()), t);
        }
        // an mbuf never tagged (RSS hash, zero) reads as a reply candidate: never as a
        // forward to some director
        assert_eq!(Tag::decode(0), Tag::Reply);
        assert_eq!(Tag::decode(0x1234), Tag::Reply);
    }
}
