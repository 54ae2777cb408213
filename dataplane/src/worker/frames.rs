//! The frame-buffer traits the pipeline is generic over, and their `Vec`-backed
//! implementations that drive it in tests without the EAL.
//!
//! - [`Frame`]: one packet buffer (an [`Mbuf`] in production, a [`VecFrame`] in tests).
//! - [`Frames`]: a burst of them, worked on in place by index, then drained to where each goes.
//! - [`Io`]: where frames leave the worker: a port's TX queue, a TAP (the kernel), another
//!   worker (the NAT hand-over), and where the worker gets a fresh buffer (ARP / ND requests).
//!
//! githedgehog/dataplane's `net/src/buffer` is the model: the stages see buffers, never the
//! driver, so a packet-in / packet-out fixture runs the whole pipeline as an ordinary test.

use crate::dpdk::{Burst, Mbuf};

/// One packet buffer: the frame's bytes, from the Ethernet header on.
pub trait Frame {
    fn data(&self) -> &[u8];
    fn data_mut(&mut self) -> &mut [u8];
}

/// A burst of frames (at most [`crate::classify::BATCH`]), read and rewritten in place by
/// index, then drained in order to their destinations.
pub trait Frames {
    type Frame: Frame;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The bytes of frame `i` (`None` past the end).
    fn packet(&self, i: usize) -> Option<&[u8]>;
    fn packet_mut(&mut self, i: usize) -> Option<&mut [u8]>;
    /// Grows frame `i` at the front by `len` bytes; its whole new data, or `None` when the
    /// headroom is too small.
    fn prepend(&mut self, i: usize, len: u16) -> Option<&mut [u8]>;
    /// Removes `len` bytes from the end of frame `i`.
    fn trim(&mut self, i: usize, len: u16) -> bool;
    /// The tag a handing worker put on frame `i` ([`crate::handoff::Tag`]).
    fn tag(&self, i: usize) -> u32;
    fn set_tag(&mut self, i: usize, tag: u32);
    /// Empties the burst in order, handing each frame (with its index) to `f`.
    fn drain_each(&mut self, f: impl FnMut(usize, Self::Frame));
}

impl Frame for Mbuf {
    #[inline]
    fn data(&self) -> &[u8] {
        Mbuf::data(self)
    }
    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        Mbuf::data_mut(self)
    }
}

impl Frames for Burst {
    type Frame = Mbuf;
    #[inline]
    fn len(&self) -> usize {
        Burst::len(self)
    }
    #[inline]
    fn packet(&self, i: usize) -> Option<&[u8]> {
        Burst::packet(self, i)
    }
    #[inline]
    fn packet_mut(&mut self, i: usize) -> Option<&mut [u8]> {
        Burst::packet_mut(self, i)
    }
    #[inline]
    fn prepend(&mut self, i: usize, len: u16) -> Option<&mut [u8]> {
        Burst::prepend(self, i, len)
    }
    #[inline]
    fn trim(&mut self, i: usize, len: u16) -> bool {
        Burst::trim(self, i, len)
    }
    #[inline]
    fn tag(&self, i: usize) -> u32 {
        Burst::tag(self, i).unwrap_or(0)
    }
    #[inline]
    fn set_tag(&mut self, i: usize, tag: u32) {
        Burst::set_tag(self, i, tag)
    }
    #[inline]
    fn drain_each(&mut self, f: impl FnMut(usize, Mbuf)) {
        Burst::drain_each(self, f)
    }
}

/// Where a frame leaves the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Out {
    /// Out this physical port.
    Port(u16),
    /// To the kernel, through this port's TAP.
    Tap(u16),
    /// To this worker, over the hand-over ring of the input port.
    Handoff(u8),
}

/// The worker's output side: queues, the hand-over and a buffer pool.
pub trait Io {
    type Frame: Frame;
    /// The bursts the worker receives and works on.
    type Frames: Frames<Frame = Self::Frame>;
    /// Queues `f` for `out`; what cannot be queued is dropped and counted by the implementation.
    fn send(&mut self, out: Out, f: Self::Frame);
    /// Queues every frame of `frames` for `out`, in order, leaving `frames` empty (an
    /// implementation may take the burst whole instead of frame by frame).
    fn send_all(&mut self, out: Out, frames: &mut Self::Frames) {
        frames.drain_each(|_, f| self.send(out, f));
    }
    /// The burst from `input` is done: what it handed over goes to the owners' rings.
    fn end_burst(&mut self, input: u16);
    /// Transmit everything queued.
    fn flush(&mut self);
    /// A new frame holding `bytes` (ARP requests, neighbour solicitations).
    fn alloc(&mut self, bytes: &[u8]) -> Option<Self::Frame>;
}

/// Headroom of a [`VecFrame`], as an mbuf's (`RTE_PKTMBUF_HEADROOM`).
pub const VEC_HEADROOM: usize = 128;

/// A frame in a `Vec`, with mbuf-like headroom in front.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VecFrame {
    buf: Vec<u8>,
    head: usize,
    tag: u32,
}

impl VecFrame {
    pub fn new(bytes: &[u8]) -> VecFrame {
        let mut buf = vec![0; VEC_HEADROOM];
        buf.extend_from_slice(bytes);
        VecFrame {
            buf,
            head: VEC_HEADROOM,
            tag: 0,
        }
    }

    /// The frame's bytes, owned.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf[self.head..].to_vec()
    }

    pub fn tag(&self) -> u32 {
        self.tag
    }
}

impl Frame for VecFrame {
    fn data(&self) -> &[u8] {
        &self.buf[self.head..]
    }
    fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.head..]
    }
}

/// A burst of [`VecFrame`]s.
#[derive(Debug, Default)]
pub struct VecFrames {
    frames: Vec<VecFrame>,
}

impl VecFrames {
    pub fn new(frames: impl IntoIterator<Item = VecFrame>) -> VecFrames {
        VecFrames {
            frames: frames.into_iter().collect(),
        }
    }

    /// A burst of frames made of these bytes.
    pub fn of<'a>(frames: impl IntoIterator<Item = &'a [u8]>) -> VecFrames {
        Self::new(frames.into_iter().map(VecFrame::new))
    }
}

impl Frames for VecFrames {
    type Frame = VecFrame;
    fn len(&self) -> usize {
        self.frames.len()
    }
    fn packet(&self, i: usize) -> Option<&[u8]> {
        self.frames.get(i).map(Frame::data)
    }
    fn packet_mut(&mut self, i: usize) -> Option<&mut [u8]> {
        self.frames.get_mut(i).map(Frame::data_mut)
    }
    fn prepend(&mut self, i: usize, len: u16) -> Option<&mut [u8]> {
        let f = self.frames.get_mut(i)?;
        f.head = f.head.checked_sub(usize::from(len))?;
        Some(f.data_mut())
    }
    fn trim(&mut self, i: usize, len: u16) -> bool {
        let Some(f) = self.frames.get_mut(i) else {
            return false;
        };
        let len = usize::from(len);
        if f.buf.len() - f.head < len {
            return false;
        }
        f.buf.truncate(f.buf.len() - len);
        true
    }
    fn tag(&self, i: usize) -> u32 {
        self.frames.get(i).map_or(0, |f| f.tag)
    }
    fn set_tag(&mut self, i: usize, tag: u32) {
        if let Some(f) = self.frames.get_mut(i) {
            f.tag = tag;
        }
    }
    fn drain_each(&mut self, mut f: impl FnMut(usize, VecFrame)) {
        for (i, frame) in self.frames.drain(..).enumerate() {
            f(i, frame);
        }
    }
}

/// An [`Io`] that records what leaves, in order: the output side of fixture tests.
#[derive(Debug, Default)]
pub struct VecIo {
    /// Every frame sent, with where it went, in order.
    pub sent: Vec<(Out, VecFrame)>,
    /// Bursts ended (by input port), in order.
    pub bursts: Vec<u16>,
    /// `alloc` fails (a pool run dry).
    pub pool_empty: bool,
}

impl VecIo {
    /// Takes what was sent so far, as bytes.
    pub fn take(&mut self) -> Vec<(Out, Vec<u8>)> {
        self.sent
            .drain(..)
            .map(|(o, f)| (o, f.into_bytes()))
            .collect()
    }
}

impl Io for VecIo {
    type Frame = VecFrame;
    type Frames = VecFrames;
    fn send(&mut self, out: Out, f: VecFrame) {
        self.sent.push((out, f));
    }
    fn end_burst(&mut self, input: u16) {
        self.bursts.push(input);
    }
    fn flush(&mut self) {}
    fn alloc(&mut self, bytes: &[u8]) -> Option<VecFrame> {
        (!self.pool_empty).then(|| VecFrame::new(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vec_frames_prepend_and_trim_like_mbufs() {
        let mut b = VecFrames::of([&[1u8, 2, 3][..]]);
        let d = b.prepend(0, 2).expect("headroom");
        assert_eq!(d, &[0, 0, 1, 2, 3]);
        assert!(b.trim(0, 1));
        assert_eq!(b.packet(0), Some(&[0u8, 0, 1, 2][..]));
        assert!(!b.trim(0, 9), "longer than the frame");
        assert!(
            b.prepend(0, VEC_HEADROOM as u16).is_none(),
            "past the headroom"
        );
        b.set_tag(0, 7);
        assert_eq!(b.tag(0), 7);
        let mut out = Vec::new();
        b.drain_each(|i, f| out.push((i, f.into_bytes())));
        assert_eq!(out, vec![(0, vec![0, 0, 1, 2])]);
        assert!(b.is_empty());
    }
}
