//! The parse stage: every frame of a burst is read once, into its [`PacketMeta`] and key.
//! IP frames go to the flows (port input) or towards the port through the outflows (the
//! kernel's output); other frames go to the port's kernel / out the port, or are dropped; a
//! malformed frame is dropped with its reason. Frames that may teach a neighbour (ARP, NS,
//! NA from a port) are noted for the neighbour stage.

use crate::classify::{Key, BATCH};
use crate::counters::{DropReason, WorkerCounters};
use crate::wire::{self, Frame};

use super::batch::{Batch, PacketMeta, To};
use super::frames::Frames;
use super::neighbour::{is_arp, is_nd};

/// Where a burst from a port comes from, and what becomes of its frames that are no IP.
#[derive(Debug, Clone, Copy)]
pub struct Source {
    /// The port.
    pub input: u16,
    /// The port's iface id in the flows.
    pub iface: u16,
    /// Where non-IP frames go (`None`: dropped).
    pub non_ip: Option<To>,
    /// Note the frames that may teach a neighbour.
    pub learn: bool,
}

/// The parse stage's notes on the last burst.
#[derive(Debug)]
pub struct Parse {
    /// (frame index, IP header offset) of the frames that may teach a neighbour.
    learn: [(u8, u16); BATCH],
    n_learn: usize,
    /// Bytes of the frames read.
    pub bytes: u64,
}

impl Default for Parse {
    fn default() -> Self {
        Parse {
            learn: [(0, 0); BATCH],
            n_learn: 0,
            bytes: 0,
        }
    }
}

impl Parse {
    /// Frames from a physical port (`from`): IP packets (key with the flows' iface) wait for
    /// the flows; non-IP frames go to `from.non_ip` (`None`: dropped, the port has no
    /// kernel); with `from.learn`, ARP / NS / NA frames are noted.
    // a stage per function in profiles (one call per burst)
    #[inline(never)]
    pub fn ports<F: Frames>(
        &mut self,
        b: &mut Batch,
        frames: &F,
        from: Source,
        counters: &WorkerCounters,
    ) {
        let Source {
            input,
            iface,
            non_ip,
            learn,
        } = from;
        self.n_learn = 0;
        self.bytes = 0;
        b.start(frames.len());
        for i in 0..b.len() {
            let Some(frame) = frames.packet(i) else {
                b.meta[i] = PacketMeta::other(input, To::Drop(DropReason::RouteTruncated));
                continue;
            };
            self.bytes += frame.len() as u64;
            let rx_len = u16::try_from(frame.len()).unwrap_or(u16::MAX);
            // the common case straight to its key (no facts in between); ND is IPv6
            if let Some(p) = wire::plain_ipv4(frame) {
                b.keys[i] = Key::plain_v4(&p, iface);
                b.meta[i] = PacketMeta::plain_v4(input);
                b.meta[i].rx_len = rx_len;
                continue;
            }
            let meta = match wire::parse(frame) {
                Frame::Ip(facts) => {
                    b.keys[i] = Key::from_facts(&facts, iface);
                    if learn && is_nd(&facts) {
                        self.note(i, facts.l3_offset);
                    }
                    PacketMeta::ip(&facts, input)
                }
                Frame::NonIp { ethertype } => match non_ip {
                    Some(to) => {
                        if let Some(c) = counters.ports.get(usize::from(input)) {
                            c.non_ip.add(1);
                        }
                        if learn && is_arp(ethertype) {
                            self.note(i, 0);
                        }
                        PacketMeta::other(input, to)
                    }
                    None => PacketMeta::other(input, To::Drop(DropReason::NoKernel)),
                },
                Frame::Malformed(why) => {
                    PacketMeta::other(input, To::Drop(DropReason::Malformed(why)))
                }
            };
            b.meta[i] = meta;
            b.meta[i].rx_len = rx_len;
        }
    }

    /// Frames the kernel sent out of port `port`'s TAP: IP packets head for the port
    /// through the outflows (key with the outflows' `iface`; their TTL is the kernel's
    /// business); other frames go out the port as they are; what the parser cannot read is
    /// dropped, not sent blindly.
    // a stage per function in profiles (one call per burst)
    #[inline(never)]
    pub fn kernel<F: Frames>(
        &mut self,
        b: &mut Batch,
        frames: &F,
        port: u16,
        iface: u16,
        counters: &WorkerCounters,
    ) {
        self.n_learn = 0;
        self.bytes = 0;
        b.start(frames.len());
        for i in 0..b.len() {
            let Some(frame) = frames.packet(i) else {
                b.meta[i] = PacketMeta::other(port, To::Drop(DropReason::KernelMalformed));
                continue;
            };
            self.bytes += frame.len() as u64;
            b.meta[i] = match wire::parse(frame) {
                Frame::Ip(facts) => {
                    b.keys[i] = Key::from_facts(&facts, iface);
                    let mut m = PacketMeta::ip(&facts, port);
                    (m.to, m.egress, m.routed) = (To::Port(port), true, true);
                    m
                }
                Frame::NonIp { .. } => {
                    if let Some(c) = counters.ports.get(usize::from(port)) {
                        c.non_ip.add(1);
                    }
                    PacketMeta::other(port, To::Port(port))
                }
                Frame::Malformed(_) => {
                    PacketMeta::other(port, To::Drop(DropReason::KernelMalformed))
                }
            };
        }
    }

    #[inline]
    fn note(&mut self, i: usize, l3: usize) {
        self.learn[self.n_learn] = (i as u8, l3 as u16);
        self.n_learn += 1;
    }

    /// The frames of the last burst that may teach a neighbour: (index, IP header offset).
    #[inline]
    pub fn learners(&self) -> &[(u8, u16)] {
        &self.learn[..self.n_learn]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::{frame, FrameSpec};
    use crate::worker::frames::VecFrames;
    use crate::worker::test_support::{facts, ip};

    /// The straight path of plain IPv4 gives each frame the key and metadata the general
    /// reading gives it (`Key::from_facts`, `PacketMeta::ip` of `wire::parse`'s facts), and
    /// the other frames keep the general path: every protocol, options-free or not,
    /// fragments, VLAN tags, IPv6.
    #[test]
    fn the_plain_ipv4_path_fills_what_the_general_one_would() {
        let mut specs = Vec::new();
        for proto in [6u8, 17, 1, 47] {
            specs.push(FrameSpec::new(
                ip("10.1.2.3"),
                ip("192.0.2.9"),
                proto,
                40000,
                443,
            ));
            let mut tagged = FrameSpec::new(ip("10.1.2.3"), ip("192.0.2.9"), proto, 1, 2);
            tagged.vlan = Some(7);
            specs.push(tagged);
            let mut fragment = FrameSpec::new(ip("10.1.2.3"), ip("192.0.2.9"), proto, 1, 2);
            fragment.non_first_fragment = true;
            specs.push(fragment);
            specs.push(FrameSpec::new(
                ip("2001:db8::1"),
                ip("2001:db8::2"),
                proto,
                5,
                6,
            ));
        }
        let frames: Vec<Vec<u8>> = specs.iter().map(frame).collect();
        assert!(frames.iter().any(|f| wire::plain_ipv4(f).is_some()));
        assert!(frames.iter().any(|f| wire::plain_ipv4(f).is_none()));
        let burst = VecFrames::of(frames.iter().map(Vec::as_slice));
        let mut b = Batch::default();
        let counters = WorkerCounters::new(2);
        let from = Source {
            input: 1,
            iface: 3,
            non_ip: None,
            learn: true,
        };
        Parse::default().ports(&mut b, &burst, from, &counters);
        assert_eq!(b.len(), frames.len());
        for (i, f) in frames.iter().enumerate() {
            let x = facts(f);
            assert_eq!(b.keys[i], Key::from_facts(&x, 3), "frame {i}");
            let mut want = PacketMeta::ip(&x, 1);
            want.rx_len = f.len() as u16;
            assert_eq!(b.meta[i], want, "frame {i}");
        }
    }
}
