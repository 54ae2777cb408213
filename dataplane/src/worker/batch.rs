//! The burst's per-packet metadata: one [`PacketMeta`] and one classifier [`Key`] per frame,
//! filled by the parse stage and updated by every later stage (a rewrite updates them; no
//! stage parses a frame again), and the lanes of one classification pass.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use flowgate_config::flows::{Family, L4};

use crate::classify::live::LiveClassifier;
use crate::classify::{Key, L4Kind, Verdict, BATCH};
use crate::counters::DropReason;
use crate::wire::{IpFacts, PlainIpv4};

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

/// What the pipeline knows of one packet besides its key: where its headers are, where it
/// goes. Small (the parse stage writes one per packet); the packet's facts are its key and
/// these offsets ([`PacketMeta::facts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketMeta {
    pub to: To,
    /// The port it arrived on (the kernel's packets: the port whose TAP sent it).
    pub input: u16,
    /// Offsets of the IP and L4 headers (when `ip`).
    pub l3: u16,
    pub l4: u16,
    pub ip: bool,
    /// It still passes the outflows before leaving (its key carries the output port's iface).
    pub egress: bool,
    /// Its TTL / hop limit was taken off already (routed, or the kernel's own: an outflow
    /// re-route does not take it).
    pub routed: bool,
    /// A non-first fragment (no L4 header; its key says only "no L4").
    fragment: bool,
    vlan_tags: u8,
    /// The frame's length as the parse read it (first segment); not updated by rewrites:
    /// the flows count the bytes of packets as they arrived.
    pub rx_len: u16,
}

impl PacketMeta {
    pub const EMPTY: PacketMeta = PacketMeta {
        to: To::Drop(DropReason::TxFull),
        input: 0,
        l3: 0,
        l4: 0,
        ip: false,
        egress: false,
        routed: false,
        fragment: false,
        vlan_tags: 0,
        rx_len: 0,
    };

    /// An IP packet from `input` (facts `f`), for the flows to decide.
    #[inline]
    pub fn ip(f: &IpFacts, input: u16) -> PacketMeta {
        let mut m = PacketMeta {
            to: To::Flows,
            input,
            ip: true,
            ..PacketMeta::EMPTY
        };
        m.set_facts(f);
        m
    }

    /// A plain IPv4 packet ([`crate::wire::plain_ipv4`]) from `input`, for the flows to
    /// decide: as [`PacketMeta::ip`] of its facts.
    #[inline(always)]
    pub fn plain_v4(input: u16) -> PacketMeta {
        PacketMeta {
            to: To::Flows,
            input,
            l3: PlainIpv4::L3 as u16,
            l4: PlainIpv4::L4 as u16,
            ip: true,
            ..PacketMeta::EMPTY
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

    /// The packet was rewritten: these are its facts now (its key is set by the caller).
    #[inline]
    pub fn set_facts(&mut self, f: &IpFacts) {
        self.l3 = f.l3_offset as u16;
        self.l4 = f.l4_offset as u16;
        self.fragment = f.l4 == L4::Fragment;
        self.vlan_tags = f.vlan_tags;
    }

    /// The IP packet's facts, rebuilt from these offsets and its `key` (no parse).
    #[inline]
    pub fn facts(&self, key: &Key) -> IpFacts {
        let (src, dst) = if key.v6 {
            (
                IpAddr::V6(Ipv6Addr::from(key.src)),
                IpAddr::V6(Ipv6Addr::from(key.dst)),
            )
        } else {
            (
                IpAddr::V4(Ipv4Addr::from(key.src as u32)),
                IpAddr::V4(Ipv4Addr::from(key.dst as u32)),
            )
        };
        let l4 = match key.l4 {
            L4Kind::Ports => L4::Ports {
                sport: key.sport,
                dport: key.dport,
            },
            L4Kind::Icmp => L4::Icmp {
                icmptype: key.icmptype,
            },
            L4Kind::None if self.fragment => L4::Fragment,
            L4Kind::None => L4::Other,
        };
        IpFacts {
            family: family(key),
            proto: key.proto,
            src,
            dst,
            l4,
            l3_offset: usize::from(self.l3),
            l4_offset: usize::from(self.l4),
            vlan_tags: self.vlan_tags,
        }
    }
}

/// A key's family.
#[inline]
pub fn family(key: &Key) -> Family {
    if key.v6 {
        Family::V6
    } else {
        Family::V4
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
    pub fn classify(&mut self, c: &LiveClassifier, pick: impl Fn(&PacketMeta) -> bool) -> usize {
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

    /// The facts a packet's metadata and key give back are those its parse read, for every
    /// kind of L4 (ports, ICMP, other, a non-first fragment), both families, VLAN tags.
    #[test]
    fn facts_come_back_from_the_key_and_the_offsets() {
        use crate::build::{frame, FrameSpec};
        use crate::wire::{parse, Frame};
        for (s, d, proto, frag, vlan) in [
            ("10.0.0.1", "10.0.0.2", 6, false, None),
            ("10.0.0.1", "10.0.0.2", 17, true, Some(5)),
            ("10.0.0.1", "10.0.0.2", 1, false, None),
            ("10.0.0.1", "10.0.0.2", 47, false, Some(7)),
            ("2001:db8::1", "2001:db8::2", 58, false, None),
            ("2001:db8::1", "2001:db8::2", 6, true, None),
            ("2001:db8::1", "2001:db8::2", 17, false, Some(9)),
        ] {
            let mut spec =
                FrameSpec::new(s.parse().expect("s"), d.parse().expect("d"), proto, 8, 9);
            spec.non_first_fragment = frag;
            spec.vlan = vlan;
            let Frame::Ip(facts) = parse(&frame(&spec)) else {
                panic!("not IP");
            };
            let key = Key::from_facts(&facts, 3);
            assert_eq!(
                PacketMeta::ip(&facts, 0).facts(&key),
                facts,
                "{s} {proto} {frag}"
            );
        }
    }

    /// A pass over some packets gathers their keys and gives each its own verdict.
    #[test]
    fn a_partial_pass_gives_each_packet_its_own_verdict() {
        let file = parse("flow a permit match proto tcp dstport 22")
            .expect("flows")
            .file;
        let c = LiveClassifier::compile(file.flows(), &Action::Deny).expect("compiles");
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
