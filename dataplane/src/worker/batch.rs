//! The burst's per-packet metadata: one [`PacketMeta`] and one classifier [`Key`] per frame,
//! filled by the parse stage and updated by every later stage (a rewrite updates them; no
//! stage parses a frame again), and the lanes of one classification pass.

use std::net::{IpAddr, Ipv4Addr};

use flowgate_config::flows::{Family, L4};

use crate::classify::{Classifier, Key, Verdict, BATCH};
use crate::counters::DropReason;
use crate::wire::IpFacts;

/// Where a packet goes: a pending step, or its destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum To {
    /// Not decided yet: the flows decide.
    Flows,
    /// To director `d` (its flow was counted already, perhaps by the worker that handed it).
    Director(u16),
    /// The kernel, through the TAP of this port.
    Kernel(u16),
    /// Out this physical port, as it is.
    Port(u16),
    /// Routed: out this port to the MAC of neighbour `via` (resolved at dispatch).
    Hop {
        port: u16,
        via: IpAddr,
    },
    Drop(DropReason),
    /// To the worker owning its NAT connection (the frame's tag says what it is).
    Handoff(u8),
}

/// What the pipeline knows of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketMeta {
    /// The IP facts (headers' offsets, addresses, L4), when `ip`.
    pub facts: IpFacts,
    pub ip: bool,
    /// The port it arrived on (the kernel's packets: the port whose TAP sent it).
    pub input: u16,
    pub to: To,
    /// It still passes the outflows before leaving (its key carries the output port's iface).
    pub egress: bool,
    /// Its TTL / hop limit was taken off already (routed, or the kernel's own: an outflow
    /// re-route does not take it).
    pub routed: bool,
}

/// Facts of a frame that is no IP packet.
const NO_FACTS: IpFacts = IpFacts {
    family: Family::V4,
    proto: 0,
    src: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    l4: L4::Other,
    l3_offset: 0,
    l4_offset: 0,
    vlan_tags: 0,
};

impl PacketMeta {
    pub const EMPTY: PacketMeta = PacketMeta {
        facts: NO_FACTS,
        ip: false,
        input: 0,
        to: To::Drop(DropReason::TxFull),
        egress: false,
        routed: false,
    };

    /// An IP packet from `input`, for the flows to decide.
    #[inline]
    pub fn ip(facts: IpFacts, input: u16) -> PacketMeta {
        PacketMeta {
            facts,
            ip: true,
            input,
            to: To::Flows,
            egress: false,
            routed: false,
        }
    }

    /// A frame that is no IP packet (or a malformed one), going to `to`.
    #[inline]
    pub fn other(input: u16, to: To) -> PacketMeta {
        PacketMeta {
            input,
            to,
            ..PacketMeta::EMPTY
        }
    }
}

/// One burst's metadata, indexed by the frame's position in the burst.
#[derive(Debug)]
pub struct Batch {
    len: usize,
    pub meta: [PacketMeta; BATCH],
    /// `keys[i]`: packet i's classifier key (the input iface; the output port's iface once
    /// it is headed for the outflows). Meaningful when `meta[i].ip`.
    pub keys: [Key; BATCH],
    lanes: Lanes,
}

/// One classification pass over some packets of the batch: their indexes, keys (gathered,
/// unless the pass takes every packet in order) and verdicts.
#[derive(Debug)]
struct Lanes {
    n: usize,
    all: bool,
    pkt: [u8; BATCH],
    keys: [Key; BATCH],
    verdicts: [Verdict; BATCH],
}

impl Default for Batch {
    fn default() -> Self {
        Batch {
            len: 0,
            meta: [PacketMeta::EMPTY; BATCH],
            keys: [Key::default(); BATCH],
            lanes: Lanes {
                n: 0,
                all: false,
                pkt: [0; BATCH],
                keys: [Key::default(); BATCH],
                verdicts: [Verdict::default(); BATCH],
            },
        }
    }
}

impl Batch {
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Starts a burst of `len` frames (the parse stage fills every entry).
    #[inline]
    pub fn start(&mut self, len: usize) {
        self.len = len.min(BATCH);
    }

    /// Classifies with `c` the packets for which `pick` holds; their (packet index, verdict)
    /// pairs, in order, are then read with [`Batch::verdict`].
    #[inline]
    pub fn classify(&mut self, c: &Classifier, pick: impl Fn(&PacketMeta) -> bool) -> usize {
        let l = &mut self.lanes;
        l.n = 0;
        for i in 0..self.len {
            if pick(&self.meta[i]) {
                l.pkt[l.n] = i as u8;
                l.n += 1;
            }
        }
        let n = l.n;
        // the common case: every packet, in order; no gathering
        l.all = n == self.len;
        if l.all {
            c.classify_batch(&self.keys[..n], &mut l.verdicts[..n]);
        } else {
            for j in 0..n {
                l.keys[j] = self.keys[usize::from(l.pkt[j])];
            }
            c.classify_batch(&l.keys[..n], &mut l.verdicts[..n]);
        }
        n
    }

    /// Lane `j` of the last [`Batch::classify`]: the packet's index and its verdict.
    #[inline]
    pub fn verdict(&self, j: usize) -> (usize, Verdict) {
        (usize::from(self.lanes.pkt[j]), self.lanes.verdicts[j])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::L4Kind;
    use flowgate_config::flows::{parse, Action};

    /// A pass over some packets gathers their keys and gives each its own verdict.
    #[test]
    fn a_partial_pass_gives_each_packet_its_own_verdict() {
        let file = parse("flow a permit match proto tcp dstport 22")
            .expect("flows")
            .file;
        let c = Classifier::new(file.flows(), &Action::Deny).expect("compiles");
        let mut b = Batch::default();
        b.start(4);
        for i in 0..4 {
            b.meta[i] = PacketMeta {
                ip: true,
                to: if i % 2 == 0 { To::Flows } else { To::Kernel(0) },
                ..PacketMeta::EMPTY
            };
            b.keys[i] = Key::v4(0, 6, L4Kind::Ports, 1, 2, 1000, 20 + i as u16, 0);
        }
        let n = b.classify(&c, |m| m.to == To::Flows);
        assert_eq!(n, 2);
        let want = [(0, 20u16), (2, 22)];
        for (j, &(pkt, dport)) in want.iter().enumerate() {
            let (i, v) = b.verdict(j);
            assert_eq!(i, pkt);
            assert_eq!(
                v,
                c.classify(&Key::v4(0, 6, L4Kind::Ports, 1, 2, 1000, dport, 0))
            );
        }
        assert_ne!(b.verdict(0).1, b.verdict(1).1, "deny vs permit");
        // every packet: the keys are classified in place
        assert_eq!(b.classify(&c, |_| true), 4);
        assert_eq!(b.verdict(3).0, 3);
    }
}
