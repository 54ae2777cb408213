//! Frame sizes: one fixed size, or the simple IMIX (7:4:1 of 64, 570 and 1518 bytes).
//!
//! Sizes are Ethernet frame sizes as RFC 2544 counts them, FCS included: a 64-byte frame is
//! 60 bytes of mbuf data (the NIC, or nothing on a virtual port, adds the 4-byte FCS).

use std::fmt;
use std::str::FromStr;

/// Bytes of the Ethernet FCS, counted in a frame size but not in the mbuf.
pub const FCS: u16 = 4;
/// Smallest frame size (RFC 2544): 64 bytes.
pub const MIN_FRAME: u16 = 64;
/// Largest untagged frame size without jumbo frames: 1518 bytes.
pub const MAX_FRAME: u16 = 1518;

/// The simple IMIX: (frame size, weight).
pub const IMIX: [(u16, u32); 3] = [(64, 7), (570, 4), (1518, 1)];

/// Which frame sizes a run sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameSize {
    /// Every frame this size (FCS included).
    Fixed(u16),
    /// The simple IMIX, 7:4:1 of 64, 570 and 1518 bytes.
    Imix,
}

/// Why a frame size was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("frame size {given:?}: {why} (expected {MIN_FRAME}..={MAX_FRAME} or \"imix\")")]
pub struct BadFrameSize {
    given: String,
    why: &'static str,
}

impl FromStr for FrameSize {
    type Err = BadFrameSize;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("imix") {
            return Ok(FrameSize::Imix);
        }
        let n: u16 = s.parse().map_err(|_| BadFrameSize {
            given: s.into(),
            why: "not a number",
        })?;
        if !(MIN_FRAME..=MAX_FRAME).contains(&n) {
            return Err(BadFrameSize {
                given: s.into(),
                why: "out of range",
            });
        }
        Ok(FrameSize::Fixed(n))
    }
}

impl fmt::Display for FrameSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameSize::Fixed(n) => write!(f, "{n}"),
            FrameSize::Imix => f.write_str("imix"),
        }
    }
}

impl FrameSize {
    /// The repeating cycle of frame sizes the generator walks through: one entry for a fixed
    /// size; 12 for IMIX, interleaved by smooth weighted round robin (64, 570, 64, 1518, ...
    /// rather than seven 64s in a row), so any window of 12 frames has the exact mix.
    pub fn cycle(&self) -> Vec<u16> {
        match *self {
            FrameSize::Fixed(n) => vec![n],
            FrameSize::Imix => {
                let total: i64 = IMIX.iter().map(|&(_, w)| i64::from(w)).sum();
                let mut current = [0i64; IMIX.len()];
                let mut out = Vec::with_capacity(total as usize);
                for _ in 0..total {
                    for (c, &(_, w)) in current.iter_mut().zip(&IMIX) {
                        *c += i64::from(w);
                    }
                    let mut best = 0;
                    for i in 1..IMIX.len() {
                        if current[i] > current[best] {
                            best = i;
                        }
                    }
                    current[best] -= total;
                    out.push(IMIX[best].0);
                }
                out
            }
        }
    }

    /// Mean frame size (FCS included) over the cycle.
    pub fn mean_bytes(&self) -> f64 {
        let c = self.cycle();
        c.iter().map(|&s| f64::from(s)).sum::<f64>() / c.len() as f64
    }

    /// Every distinct size in the cycle, ascending.
    pub fn distinct(&self) -> Vec<u16> {
        let mut v = self.cycle();
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// Bits a frame of `size` bytes (FCS included) takes on an Ethernet wire: preamble and
/// start delimiter (8) and the minimum inter-frame gap (12) added.
pub fn wire_bits(size: f64) -> f64 {
    (size + 20.0) * 8.0
}
