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
//! - an ICMP error quoting a TCP/UDP packet that is about none of its own connections, when
//!   the quoted packet's client endpoint is not its own ([`Owners::icmp_owner`]),
//!
//! hands it to the owner over a DPDK ring (one per owner and input port: many producers, one
//! consumer), tagged with what it already knows (the director a flow chose; "reply
//! candidate"). The owner polls its rings like RX queues and finishes the packet: the
//! director's `forward` or `reply`, routing, outflows, TX on its own queues. Nothing is
//! classified twice: a forwarded packet carries its director, and a reply candidate was not
//! classified yet.
//!
//! With one worker, or no NAT director, there is no hand-over (and no ring).
//!
//! Persistence: a persistent director's templates (client address under the netmask -> server)
//! live in the owner's table, so every connection of that masked client must have the same
//! owner. When some NAT director is persistent, the owner is a function of the client address
//! under the shortest persistence netmask alone (port ignored), for every director (a reply
//! does not say which director it belongs to). A client's connections then share one worker.

use std::net::IpAddr;

use flowgate_config::appliance::Mode;
use flowgate_config::flows::Family;

use crate::classify::{Key, L4Kind};
use crate::director::icmp::Embedded;
use crate::director::steer::Steering;
use crate::director::DirectorSet;
use crate::dpdk::{DpdkError, Ring};
use crate::wire::IpFacts;

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

/// Whether `workers` workers running directors of these modes hand packets over: several
/// workers and some NAT director (the rule `Handoff::new` and the mempool sizing share).
pub fn needed(workers: usize, mut modes: impl Iterator<Item = Mode>) -> bool {
    workers > 1 && modes.any(|m| m == Mode::Nat)
}

/// The rings and the ownership policy shared by the workers.
#[derive(Debug)]
pub struct Handoff {
    ports: usize,
    /// `rings[w * ports + p]`: packets from port `p` for worker `w`.
    rings: Vec<Ring>,
    owners: Owners,
}

/// Which packets are handed over, and to whom: the part of the hand-over that needs no EAL.
#[derive(Debug)]
pub struct Owners {
    workers: usize,
    steering: Steering,
    /// By director index: in NAT mode.
    nat: Vec<bool>,
    servers: NatServers,
    /// Some NAT director is persistent: the owner hashes the client address under this
    /// prefix length (port 0).
    persist_len: Option<u8>,
}

/// The NAT directors' server addresses: a NAT reply (or its ICMP error) can only come from
/// one of them, so nothing else needs a reply lookup.
#[derive(Debug, Clone, Default)]
pub struct NatServers {
    /// In key form (v6 flag, address), sorted.
    addrs: Vec<(bool, u128)>,
}

impl NatServers {
    pub fn new(set: &DirectorSet) -> NatServers {
        let mut addrs: Vec<(bool, u128)> = set
            .iter()
            .filter(|d| d.mode == Mode::Nat)
            .flat_map(|d| d.servers.iter().map(|s| key_addr(s.address)))
            .collect();
        addrs.sort_unstable();
        addrs.dedup();
        NatServers { addrs }
    }

    /// `addr` (key form) is a NAT server's.
    #[inline]
    pub fn contains(&self, v6: bool, addr: u128) -> bool {
        self.addrs.binary_search(&(v6, addr)).is_ok()
    }

    /// The packet of `key` comes from a NAT server.
    #[inline]
    pub fn sent(&self, key: &Key) -> bool {
        self.contains(key.v6, key.src)
    }
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
        let Some(owners) = Owners::new(workers, set) else {
            return Ok(None);
        };
        let mut rings = Vec::with_capacity(workers * ports);
        for w in 0..workers {
            for p in 0..ports {
                rings.push(Ring::new(&format!("fg_ho_{w}_{p}"), RING_SIZE)?);
            }
        }
        Ok(Some(Handoff {
            ports,
            rings,
            owners,
        }))
    }

    pub fn workers(&self) -> usize {
        self.owners.workers
    }

    pub fn ports(&self) -> usize {
        self.ports
    }

    /// Who owns what.
    pub fn owners(&self) -> &Owners {
        &self.owners
    }

    /// The ring carrying packets from port `port` to worker `worker`.
    pub fn ring(&self, worker: usize, port: usize) -> Option<&Ring> {
        if port >= self.ports {
            return None;
        }
        self.rings.get(worker * self.ports + port)
    }
}

impl Owners {
    /// The policy for `workers` workers and the directors of `set`; `None` when nothing is
    /// ever handed over (one worker, or no NAT director).
    pub fn new(workers: usize, set: &DirectorSet) -> Option<Owners> {
        if !needed(workers, set.iter().map(|d| d.mode)) {
            return None;
        }
        let nat: Vec<bool> = set.iter().map(|d| d.mode == Mode::Nat).collect();
        let servers = NatServers::new(set);
        let persist_len = set
            .iter()
            .filter(|d| d.mode == Mode::Nat)
            .filter_map(|d| d.persistence.map(|p| p.netmask_len))
            .min();
        Some(Owners {
            workers,
            steering: Steering::round_robin(workers),
            nat,
            servers,
            persist_len,
        })
    }

    /// The worker owning the connections of client endpoint `addr:port` (key form).
    #[inline]
    pub fn owner(&self, v6: bool, addr: u128, port: u16) -> usize {
        match self.persist_len {
            None => self.steering.owner(v6, addr, port),
            Some(len) => self.steering.owner(v6, mask(v6, addr, len), 0),
        }
    }

    /// Director `d` is in NAT mode (its packets are handed to their owner).
    #[inline]
    pub fn is_nat(&self, d: u16) -> bool {
        self.nat.get(usize::from(d)).copied().unwrap_or(false)
    }

    /// The worker to hand packet `key`, sent to director `d` by a flow of worker `me`, to: its
    /// owner, when that is another worker and `d` is a NAT director.
    #[inline]
    pub fn forward_owner(&self, me: usize, d: u16, key: &Key) -> Option<u8> {
        if key.l4 != L4Kind::Ports || !self.is_nat(d) {
            return None;
        }
        let o = self.owner(key.v6, key.src, key.sport);
        (o != me).then_some(o as u8)
    }

    /// The worker to hand TCP/UDP packet `key` to, from a NAT server but no reply of worker
    /// `me`'s connections, as a possible NAT reply: its client endpoint's owner, when that is
    /// another worker.
    #[inline]
    pub fn reply_owner(&self, me: usize, key: &Key) -> Option<u8> {
        let o = self.owner(key.v6, key.dst, key.dport);
        (o != me).then_some(o as u8)
    }

    /// The worker to hand ICMP error `frame` (facts `facts`) to, when it is about none of
    /// worker `me`'s NAT connections: the owner of the client endpoint of the packet it
    /// quotes ([`Owners::icmp_owner`]), when that is another worker.
    pub fn icmp_error_owner(&self, me: usize, frame: &[u8], facts: &IpFacts) -> Option<u8> {
        let o = self.icmp_owner(&crate::director::icmp::embedded(frame, facts)?);
        (o != me).then_some(o as u8)
    }

    /// The worker owning the connection an ICMP error quoting `e` may be about: the owner of
    /// the quoted packet's client endpoint. When the quoted destination is a NAT server, the
    /// packet was forwarded (`client -> server`, the error goes to the client): its source;
    /// otherwise it may be a NAT reply (`VIP -> client`, the error goes to the VIP): its
    /// destination. (The VIP cannot tell: a flow may send any destination to a director.)
    #[inline]
    pub fn icmp_owner(&self, e: &Embedded) -> usize {
        let v6 = e.family == Family::V6;
        let dst = key_form(&e.dst, v6);
        if self.servers.contains(v6, dst) {
            self.owner(v6, key_form(&e.src, v6), e.sport)
        } else {
            self.owner(v6, dst, e.dport)
        }
    }
}

/// A 16-byte address (IPv4 mapped) in key form.
fn key_form(a: &[u8; 16], v6: bool) -> u128 {
    if v6 {
        u128::from_be_bytes(*a)
    } else {
        u128::from(u32::from_be_bytes([a[12], a[13], a[14], a[15]]))
    }
}

/// `addr` (key form) under a prefix of `len` bits.
fn mask(v6: bool, addr: u128, len: u8) -> u128 {
    let bits = if v6 { 128 } else { 32 };
    let len = u32::from(len).min(bits);
    if len == 0 {
        return 0;
    }
    let keep = u128::MAX << (bits - len);
    let width = if v6 { u128::MAX } else { u128::from(u32::MAX) };
    addr & keep & width
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::director::tests::director;
    use crate::wire::{parse, Frame};
    use flowgate_config::appliance::{Persistence, Scheduler};
    use std::time::Duration;

    fn key(src: &str, sport: u16, dst: &str, dport: u16) -> Key {
        let spec = crate::build::FrameSpec::new(
            src.parse().expect("src"),
            dst.parse().expect("dst"),
            6,
            sport,
            dport,
        );
        let f = crate::build::frame(&spec);
        match parse(&f) {
            Frame::Ip(facts) => Key::from_facts(&facts, 0),
            other => panic!("{other:?}"),
        }
    }

    fn nat_set(persistent: Option<u8>) -> DirectorSet {
        let mut nat = director(
            Scheduler::Wrr,
            Mode::Nat,
            &[("10.0.0.11", 1, false), ("10.0.0.12", 1, false)],
        );
        nat.persistence = persistent.map(|len| Persistence {
            timeout: Duration::from_secs(300),
            netmask_len: len,
        });
        let gw = director(Scheduler::Rr, Mode::Gateway, &[("10.0.0.21", 1, false)]);
        DirectorSet::build(&[gw, nat]).expect("set")
    }

    #[test]
    fn only_several_workers_with_a_nat_director_hand_over() {
        assert!(Owners::new(1, &nat_set(None)).is_none());
        let gw = director(Scheduler::Rr, Mode::Gateway, &[("10.0.0.21", 1, false)]);
        assert!(Owners::new(4, &DirectorSet::build(&[gw]).expect("set")).is_none());
        let o = Owners::new(2, &nat_set(None)).expect("owners");
        assert!(!o.is_nat(0) && o.is_nat(1) && !o.is_nat(7));
        // replies come from NAT servers' addresses only (not the gateway director's)
        let servers = NatServers::new(&nat_set(None));
        assert!(servers.sent(&key("10.0.0.12", 25, "192.168.0.100", 40000)));
        assert!(!servers.sent(&key("10.0.0.21", 25, "192.168.0.100", 40000)));
        assert!(!servers.sent(&key("192.168.0.100", 40000, "10.0.0.12", 25)));
    }

    #[test]
    fn a_connection_and_its_replies_have_one_owner() {
        let o = Owners::new(3, &nat_set(None)).expect("owners");
        let mut seen = [0usize; 3];
        for port in 30000..33000u16 {
            let fwd = key("192.168.0.100", port, "192.168.0.2", 25);
            let rep = key("10.0.0.11", 25, "192.168.0.100", port);
            let a = o.owner(fwd.v6, fwd.src, fwd.sport);
            assert_eq!(a, o.owner(rep.v6, rep.dst, rep.dport));
            seen[a] += 1;
        }
        assert!(
            seen.iter().all(|&n| n > 800),
            "client ports spread: {seen:?}"
        );
    }

    #[test]
    fn an_icmp_error_goes_to_the_owner_of_the_quoted_client_endpoint() {
        use crate::director::icmp::Embedded;
        use crate::director::state::addr16;
        let o = Owners::new(3, &nat_set(None)).expect("owners");
        let quote = |src: &str, sport: u16, dst: &str, dport: u16| Embedded {
            family: Family::V4,
            proto: 17,
            src: addr16(src.parse().expect("src")),
            sport,
            dst: addr16(dst.parse().expect("dst")),
            dport,
            l3: 0,
            l4: 0,
            end: 0,
        };
        let mut seen = [0usize; 3];
        for port in 30000..31000u16 {
            let fwd = key("192.168.0.100", port, "192.168.0.2", 53);
            let want = o.owner(fwd.v6, fwd.src, fwd.sport);
            // a server's error about a forwarded packet: client -> server quoted
            assert_eq!(
                o.icmp_owner(&quote("192.168.0.100", port, "10.0.0.11", 53)),
                want
            );
            // a client's error about a reply: VIP -> client quoted
            assert_eq!(
                o.icmp_owner(&quote("192.168.0.2", 53, "192.168.0.100", port)),
                want
            );
            seen[want] += 1;
        }
        assert!(seen.iter().all(|&n| n > 250), "{seen:?}");
    }

    #[test]
    fn persistence_gives_a_masked_client_one_owner() {
        let o = Owners::new(2, &nat_set(Some(24))).expect("owners");
        let first = key("192.168.0.100", 1000, "192.168.0.2", 25);
        let want = o.owner(first.v6, first.src, first.sport);
        for (addr, port) in [
            ("192.168.0.100", 40000),
            ("192.168.0.7", 2),
            ("192.168.0.255", 9),
        ] {
            let k = key(addr, port, "192.168.0.2", 110);
            assert_eq!(o.owner(k.v6, k.src, k.sport), want, "{addr}:{port}");
        }
        // other /24s spread over the workers
        let mut seen = [0usize; 2];
        for net in 0..200u8 {
            let k = key(&format!("10.{net}.1.1"), 5, "192.168.0.2", 25);
            seen[o.owner(k.v6, k.src, k.sport)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
    }

    #[test]
    fn persistence_masks_the_client_address() {
        let a = u128::from(u32::from(std::net::Ipv4Addr::new(192, 168, 7, 200)));
        let m = u128::from(u32::from(std::net::Ipv4Addr::new(192, 168, 7, 0)));
        assert_eq!(mask(false, a, 24), m);
        assert_eq!(mask(false, a, 32), a);
        assert_eq!(mask(false, a, 0), 0);
        let b: u128 = "2001:db8:1:2:3:4:5:6"
            .parse::<std::net::Ipv6Addr>()
            .expect("v6")
            .into();
        let bm: u128 = "2001:db8:1::"
            .parse::<std::net::Ipv6Addr>()
            .expect("v6")
            .into();
        assert_eq!(mask(true, b, 48), bm);
        assert_eq!(mask(true, b, 128), b);
    }

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
