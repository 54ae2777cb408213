//! The connection sync's messages on the wire (`docs/sync.md` has the byte layout): encoding
//! into datagrams of at most the configured MTU, HMAC-SHA256 authentication, decoding that
//! never panics on hostile input, and the per-sender replay window.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use flowgate_dataplane::director::conntrack::ConnState;
use flowgate_dataplane::director::sync::Entry;

/// The protocol version this code speaks.
pub const VERSION: u8 = 1;
/// Bytes of the header: version, type, count, sender id, boot id, sequence.
pub const HEADER: usize = 24;
/// Bytes of one entry.
pub const ENTRY: usize = 68;
/// Bytes of the HMAC-SHA256 tag that ends every message.
pub const TAG: usize = 32;
/// The smallest message: a header and its tag (a hello).
pub const MIN_MESSAGE: usize = HEADER + TAG;

/// Entry flag: the connection is NAT (indexed by its reply key too).
const FLAG_NAT: u8 = 1;

/// What a message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Connection and template entries.
    Entries = 1,
    /// A sender announcing itself (start-up, then periodically): peers answer a new boot id
    /// with a full dump of their tables.
    Hello = 2,
}

/// A message's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub count: u16,
    /// The sender appliance (a hash of its `listen` address).
    pub sender: u32,
    /// The sender's start time (ns since the Unix epoch): a restart makes a greater one.
    pub boot: u64,
    /// Per boot, from 1, one per message.
    pub seq: u64,
}

/// One connection or persistence template as sent: the director by name hash
/// ([`director_id`]), the server by its address and port (the receiver finds its own index).
pub type WireEntry = Entry<u32, ()>;

/// Why a datagram was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("not a sync message of version {VERSION}")]
    Version,
    #[error("bad HMAC")]
    Auth,
    #[error("malformed message")]
    Decode,
}

/// The id of a director on the wire: FNV-1a (32 bits) of its name, so that appliances
/// whose configs list the directors in another order still agree.
pub fn director_id(name: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

fn state_code(s: ConnState) -> u8 {
    match s {
        ConnState::SynRecv => 0,
        ConnState::Established => 1,
        ConnState::FinWait => 2,
        ConnState::TimeWait => 3,
        ConnState::Close => 4,
        ConnState::Udp => 5,
        ConnState::Template => 6,
        ConnState::PendingTemplate => 7,
    }
}

fn state_of(code: u8) -> Option<ConnState> {
    Some(match code {
        0 => ConnState::SynRecv,
        1 => ConnState::Established,
        2 => ConnState::FinWait,
        3 => ConnState::TimeWait,
        4 => ConnState::Close,
        5 => ConnState::Udp,
        6 => ConnState::Template,
        7 => ConnState::PendingTemplate,
        _ => return None,
    })
}

type HmacSha256 = Hmac<Sha256>;

fn mac(key: &[u8], data: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length: this never fails
    let mut m = <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    m.update(data);
    m
}

/// The HMAC-SHA256 tag of message `body` (header and entries) under `key`.
pub fn tag(key: &[u8], body: &[u8]) -> [u8; TAG] {
    mac(key, body).finalize().into_bytes().into()
}

/// Entries that fit a message of at most `mtu` bytes.
pub fn entries_per_message(mtu: usize) -> usize {
    mtu.saturating_sub(MIN_MESSAGE) / ENTRY
}

/// Builds messages, one at a time, into a reused buffer.
#[derive(Debug)]
pub struct Encoder {
    buf: Vec<u8>,
    count: u16,
    max: usize,
}

impl Encoder {
    /// An encoder of messages of at most `mtu` bytes (at least one entry's worth).
    pub fn new(mtu: usize) -> Encoder {
        let max = entries_per_message(mtu).clamp(1, usize::from(u16::MAX));
        Encoder {
            buf: Vec::with_capacity(HEADER + max * ENTRY + TAG),
            count: 0,
            max,
        }
    }

    /// Entries in the message being built.
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The message is full: [`Encoder::finish`] it.
    pub fn is_full(&self) -> bool {
        self.len() >= self.max
    }

    /// Append an entry (the caller finishes a full message first).
    pub fn push(&mut self, e: &WireEntry) {
        if self.buf.is_empty() {
            self.buf.resize(HEADER, 0);
        }
        let flags = if e.nat { FLAG_NAT } else { 0 };
        self.buf
            .extend_from_slice(&[flags, e.proto, state_code(e.state), e.fins]);
        self.buf.extend_from_slice(&e.director.to_be_bytes());
        for p in [e.cport, e.vport, e.rport, 0] {
            self.buf.extend_from_slice(&p.to_be_bytes());
        }
        self.buf.extend_from_slice(&e.timeout_ms.to_be_bytes());
        for a in [&e.client, &e.vip, &e.real] {
            self.buf.extend_from_slice(a);
        }
        self.count += 1;
    }

    /// The finished message (header, entries, tag), ready to send; the encoder starts a new
    /// one on the next [`Encoder::push`].
    pub fn finish(&mut self, kind: Kind, sender: u32, boot: u64, seq: u64, key: &[u8]) -> &[u8] {
        if self.buf.is_empty() {
            self.buf.resize(HEADER, 0);
        }
        let h = Header {
            kind,
            count: self.count,
            sender,
            boot,
            seq,
        };
        write_header(&mut self.buf[..HEADER], &h);
        let tag = mac(key, &self.buf).finalize().into_bytes();
        self.buf.extend_from_slice(&tag);
        self.count = 0;
        &self.buf
    }

    /// Forget the finished message (after it was sent).
    pub fn reset(&mut self) {
        self.buf.clear();
        self.count = 0;
    }
}

fn write_header(out: &mut [u8], h: &Header) {
    out[0] = VERSION;
    out[1] = h.kind as u8;
    out[2..4].copy_from_slice(&h.count.to_be_bytes());
    out[4..8].copy_from_slice(&h.sender.to_be_bytes());
    out[8..16].copy_from_slice(&h.boot.to_be_bytes());
    out[16..24].copy_from_slice(&h.seq.to_be_bytes());
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(x)
}

fn addr(b: &[u8], at: usize) -> [u8; 16] {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[at..at + 16]);
    a
}

/// Check a datagram and read it: version, length, HMAC (constant time), then every field.
/// Either the whole message or a refusal: nothing of a bad message is used.
pub fn decode(msg: &[u8], key: &[u8]) -> Result<(Header, Vec<WireEntry>), Refusal> {
    if msg.first() != Some(&VERSION) {
        return Err(Refusal::Version);
    }
    if msg.len() < MIN_MESSAGE {
        return Err(Refusal::Decode);
    }
    let (body, tag) = msg.split_at(msg.len() - TAG);
    mac(key, body)
        .verify_slice(tag)
        .map_err(|_| Refusal::Auth)?;
    let kind = match body[1] {
        1 => Kind::Entries,
        2 => Kind::Hello,
        _ => return Err(Refusal::Decode),
    };
    let h = Header {
        kind,
        count: be16(body, 2),
        sender: be32(body, 4),
        boot: be64(body, 8),
        seq: be64(body, 16),
    };
    let entries = &body[HEADER..];
    if entries.len() != usize::from(h.count) * ENTRY || (kind == Kind::Hello && h.count != 0) {
        return Err(Refusal::Decode);
    }
    let out = entries
        .chunks_exact(ENTRY)
        .map(entry)
        .collect::<Option<Vec<_>>>()
        .ok_or(Refusal::Decode)?;
    Ok((h, out))
}

fn entry(b: &[u8]) -> Option<WireEntry> {
    let (flags, proto, fins) = (b[0], b[1], b[3]);
    let state = state_of(b[2])?;
    let template = proto == 0;
    let nat = flags & FLAG_NAT != 0;
    if flags & !FLAG_NAT != 0
        || fins > 3
        || be16(b, 14) != 0
        || template != state.is_template()
        || (template && nat)
    {
        return None;
    }
    Some(WireEntry {
        director: be32(b, 4),
        server: (),
        proto,
        state,
        fins,
        nat,
        cport: be16(b, 8),
        vport: be16(b, 10),
        rport: be16(b, 12),
        timeout_ms: be32(b, 16),
        client: addr(b, 20),
        vip: addr(b, 36),
        real: addr(b, 52),
    })
}

/// What the replay window says of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// New: use it. `new_boot`: the first of a boot id (the sender started or restarted).
    Fresh { new_boot: bool },
    /// Seen already, or too old for the window, or of an earlier boot: drop it.
    Replayed,
}

/// Per sender: its boot id and a 64-message sliding window over its sequence numbers (as
/// IPsec's anti-replay window).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    boot: u64,
    top: u64,
    /// Bit `i`: sequence number `top - i` was seen.
    seen: u64,
}

/// Messages the window remembers behind the newest.
pub const WINDOW: u64 = 64;

impl Window {
    /// Check message (`boot`, `seq`) and, when fresh, remember it.
    pub fn check(&mut self, boot: u64, seq: u64) -> Replay {
        if boot < self.boot {
            return Replay::Replayed;
        }
        if boot > self.boot || (self.top == 0 && self.seen == 0) {
            let new_boot = boot > self.boot;
            *self = Window {
                boot,
                top: seq,
                seen: 1,
            };
            return Replay::Fresh { new_boot };
        }
        if seq > self.top {
            let shift = seq - self.top;
            self.seen = if shift >= WINDOW {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.top = seq;
            return Replay::Fresh { new_boot: false };
        }
        let back = self.top - seq;
        if back >= WINDOW || self.seen & (1 << back) != 0 {
            return Replay::Replayed;
        }
        self.seen |= 1 << back;
        Replay::Fresh { new_boot: false }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: &[u8] = b"a shared secret of the pair";

    fn e(n: u16) -> WireEntry {
        WireEntry {
            director: director_id("mail"),
            server: (),
            proto: 6,
            state: ConnState::Established,
            fins: 0,
            nat: true,
            client: [n as u8; 16],
            cport: 40_000 + n,
            vip: [2; 16],
            vport: 25,
            real: [3; 16],
            rport: 2525,
            timeout_ms: 900_000,
        }
    }

    fn template() -> WireEntry {
        WireEntry {
            proto: 0,
            state: ConnState::Template,
            nat: false,
            cport: 0,
            vport: 0,
            rport: 0,
            ..e(9)
        }
    }

    fn message(entries: &[WireEntry], seq: u64) -> Vec<u8> {
        let mut enc = Encoder::new(1472);
        for x in entries {
            enc.push(x);
        }
        enc.finish(Kind::Entries, 7, 1000, seq, KEY).to_vec()
    }

    #[test]
    fn round_trip() {
        let sent = vec![e(1), e(2), template()];
        let msg = message(&sent, 5);
        assert_eq!(msg.len(), HEADER + 3 * ENTRY + TAG);
        let (h, got) = decode(&msg, KEY).expect("decodes");
        assert_eq!(
            h,
            Header {
                kind: Kind::Entries,
                count: 3,
                sender: 7,
                boot: 1000,
                seq: 5
            }
        );
        assert_eq!(got, sent);
        let mut enc = Encoder::new(1472);
        let hello = enc.finish(Kind::Hello, 7, 1000, 6, KEY).to_vec();
        assert_eq!(hello.len(), MIN_MESSAGE);
        let (h, got) = decode(&hello, KEY).expect("hello decodes");
        assert_eq!((h.kind, h.count, got.len()), (Kind::Hello, 0, 0));
    }

    #[test]
    fn a_message_fills_up_to_the_mtu() {
        assert_eq!(entries_per_message(1472), 20);
        let mut enc = Encoder::new(1472);
        let mut n = 0;
        while !enc.is_full() {
            enc.push(&e(n));
            n += 1;
        }
        let msg = enc.finish(Kind::Entries, 1, 1, 1, KEY);
        assert!(
            msg.len() <= 1472 && msg.len() + ENTRY > 1472,
            "{}",
            msg.len()
        );
    }

    #[test]
    fn refusals() {
        let msg = message(&[e(1)], 1);
        // bad HMAC: another key, a flipped bit anywhere
        assert_eq!(decode(&msg, b"another secret key!!"), Err(Refusal::Auth));
        for i in 1..msg.len() {
            let mut bad = msg.clone();
            bad[i] ^= 0x10;
            assert_eq!(decode(&bad, KEY), Err(Refusal::Auth), "byte {i}");
        }
        // another version
        let mut v2 = msg.clone();
        v2[0] = 2;
        assert_eq!(decode(&v2, KEY), Err(Refusal::Version));
        // truncated: anywhere
        for n in 0..msg.len() {
            assert!(decode(&msg[..n], KEY).is_err(), "{n} bytes");
        }
        // a count that lies, with a valid HMAC
        let mut lie = msg[..msg.len() - TAG].to_vec();
        lie[3] = 2;
        let tag = mac(KEY, &lie).finalize().into_bytes();
        lie.extend_from_slice(&tag);
        assert_eq!(decode(&lie, KEY), Err(Refusal::Decode));
        // an unknown state, with a valid HMAC
        let mut bad = msg[..msg.len() - TAG].to_vec();
        bad[HEADER + 2] = 8;
        let tag = mac(KEY, &bad).finalize().into_bytes();
        bad.extend_from_slice(&tag);
        assert_eq!(decode(&bad, KEY), Err(Refusal::Decode));
    }

    #[test]
    fn replay_window() {
        let mut w = Window::default();
        assert_eq!(w.check(10, 1), Replay::Fresh { new_boot: true });
        assert_eq!(w.check(10, 1), Replay::Replayed);
        assert_eq!(w.check(10, 3), Replay::Fresh { new_boot: false });
        // out of order inside the window: once
        assert_eq!(w.check(10, 2), Replay::Fresh { new_boot: false });
        assert_eq!(w.check(10, 2), Replay::Replayed);
        // far ahead: the old ones fall out of the window
        assert_eq!(w.check(10, 200), Replay::Fresh { new_boot: false });
        assert_eq!(w.check(10, 136), Replay::Replayed);
        assert_eq!(w.check(10, 137), Replay::Fresh { new_boot: false });
        // an earlier boot is refused, a later one starts over
        assert_eq!(w.check(9, 500), Replay::Replayed);
        assert_eq!(w.check(11, 1), Replay::Fresh { new_boot: true });
        assert_eq!(w.check(10, 201), Replay::Replayed);
    }

    proptest! {
        /// Hostile input: any bytes, with the right key even, never panic.
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1600)) {
            let _ = decode(&bytes, KEY);
        }

        /// Any well-authenticated body (right version, a count and length that agree) decodes
        /// or is refused without panicking, and what decodes encodes back to the same bytes.
        #[test]
        fn authenticated_garbage_is_refused_or_round_trips(
            kind in 1u8..=2,
            n in 0usize..4,
            body in proptest::collection::vec(any::<u8>(), 4 * ENTRY),
            fix in any::<bool>(),
        ) {
            let mut m = vec![VERSION, kind];
            m.extend_from_slice(&(n as u16).to_be_bytes());
            m.extend_from_slice(&[0; 20]);
            let mut entries = body[..n * ENTRY].to_vec();
            if fix {
                // make most fields valid so decoding goes deep
                for c in entries.chunks_exact_mut(ENTRY) {
                    c[0] &= 1;
                    c[2] %= 8;
                    c[3] &= 3;
                    c[14] = 0;
                    c[15] = 0;
                }
            }
            m.extend_from_slice(&entries);
            let tag = mac(KEY, &m).finalize().into_bytes();
            m.extend_from_slice(&tag);
            if let Ok((h, got)) = decode(&m, KEY) {
                let mut enc = Encoder::new(65_000);
                for x in &got {
                    enc.push(x);
                }
                let again = enc.finish(h.kind, h.sender, h.boot, h.seq, KEY).to_vec();
                prop_assert_eq!(again, m);
            }
        }
    }
}
