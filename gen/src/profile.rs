//! Traffic profiles: the frames a run sends, prepared once as stamped templates.
//!
//! A profile is a list of flows (N synthetic UDP flows, the lines of a ClassBench trace, or
//! the frames of a pcap) and a cycle of frame sizes ([`FrameSize::cycle`]); frame `i` of a run
//! is flow `i mod flows` at size `cycle[i mod cycle]`. Templates are built for every (flow,
//! size) pair up front, so the send loop only copies bytes and writes the TSC.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use flowgate_dataplane::build::{frame, FrameSpec};
use flowgate_dataplane::classify::classbench::load_trace;

use crate::sizes::{FrameSize, FCS};
use crate::stamp::{self, StampAt, STAMP_ROOM};

/// Largest frame the generator sends (bytes of mbuf data): 1518 minus the FCS, or any pcap
/// frame up to the default mbuf data room.
pub const MAX_DATA: usize = 1920;

/// Errors building a profile.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("{path}: {msg}")]
    File { path: PathBuf, msg: String },
    #[error("profile {0:?}: expected synth:N, trace:FILE or pcap:FILE")]
    Spec(String),
    #[error("{0}: no usable frame (need untagged Ethernet frames of at most {MAX_DATA} bytes)")]
    Empty(String),
}

/// Where the flows come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// N UDP flows: 10.0.0.0 + i -> 10.128.0.0 + i, ports 1024 + i mod 60000 -> 5001.
    Synthetic(u32),
    /// The lines of a ClassBench trace (`src dst sport dport proto match`).
    Trace(PathBuf),
    /// The frames of a classic pcap (sizes as captured; `--size` does not apply).
    Pcap(PathBuf),
}

impl std::str::FromStr for Source {
    type Err = ProfileError;
    fn from_str(s: &str) -> Result<Self, ProfileError> {
        let bad = || ProfileError::Spec(s.into());
        let (kind, arg) = s.split_once(':').ok_or_else(bad)?;
        match kind {
            "synth" => {
                let n: u32 = arg.parse().map_err(|_| bad())?;
                if n == 0 {
                    return Err(bad());
                }
                Ok(Source::Synthetic(n))
            }
            "trace" if !arg.is_empty() => Ok(Source::Trace(arg.into())),
            "pcap" if !arg.is_empty() => Ok(Source::Pcap(arg.into())),
            _ => Err(bad()),
        }
    }
}

/// Options of a profile.
#[derive(Debug, Clone)]
pub struct Options {
    /// At most this many flows (trace lines, pcap frames).
    pub limit: usize,
    /// Leave out flows a Linux router would drop as martians (addresses in 0/8, 127/8,
    /// 224/3, the limited broadcast): the kernel comparison sends only routable flows.
    pub routable: bool,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
}

impl Default for Options {
    fn default() -> Self {
        Options {
            limit: 4096,
            routable: false,
            src_mac: [0x02, 0, 0, 0, 0, 1],
            dst_mac: [0x02, 0, 0, 0, 0, 2],
        }
    }
}

/// One frame ready to copy: bytes with a zero TSC, and where the TSC goes.
#[derive(Debug, Clone)]
pub struct Template {
    pub bytes: Vec<u8>,
    pub stamp: Option<StampAt>,
}

/// The frames of a run.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Flows (rows of `templates`).
    pub flows: usize,
    /// Size slots per flow (columns of `templates`).
    slots: usize,
    /// Slot of frame `i mod cycle.len()`.
    cycle: Vec<usize>,
    templates: Vec<Template>,
    /// Mean frame size over a whole cycle, FCS included.
    pub mean_frame: f64,
    /// Flows left out (martians with `routable`, pcap frames that do not fit).
    pub skipped: usize,
    /// Description for reports.
    pub label: String,
}

/// A 5-tuple of a flow.
#[derive(Debug, Clone, Copy)]
struct Tuple {
    src: u32,
    dst: u32,
    sport: u16,
    dport: u16,
    proto: u8,
}

/// Whether a Linux router forwards this address pair (no martians).
pub fn routable(src: u32, dst: u32) -> bool {
    let bad = |a: u32| {
        let first = a >> 24;
        first == 0 || first == 127 || first >= 224
    };
    !bad(src) && !bad(dst)
}

fn tuple_frame(t: &Tuple, size: u16, opts: &Options) -> Vec<u8> {
    let (sport, dport) = match t.proto {
        6 | 17 => (t.sport, t.dport),
        1 => (8, 0), // echo request
        _ => (0, 0),
    };
    let l4_hdr = match t.proto {
        6 => 20,
        17 | 1 => 8,
        _ => 0,
    };
    let data = usize::from(size - FCS);
    let min_payload = if t.proto == 6 { 0 } else { STAMP_ROOM };
    let mut spec = FrameSpec::new(
        IpAddr::V4(Ipv4Addr::from(t.src)),
        IpAddr::V4(Ipv4Addr::from(t.dst)),
        t.proto,
        sport,
        dport,
    );
    spec.src_mac = opts.src_mac;
    spec.dst_mac = opts.dst_mac;
    spec.payload = data.saturating_sub(14 + 20 + l4_hdr).max(min_payload);
    frame(&spec)
}

impl Profile {
    /// Builds the templates of `source` at `size`.
    pub fn build(
        source: &Source,
        size: FrameSize,
        opts: &Options,
    ) -> Result<Profile, ProfileError> {
        match source {
            Source::Synthetic(n) => {
                let tuples: Vec<Tuple> = (0..(*n as usize).min(opts.limit.max(1)))
                    .map(|i| Tuple {
                        src: 0x0a00_0000 + i as u32,
                        dst: 0x0a80_0000 + i as u32,
                        sport: 1024 + (i % 60000) as u16,
                        dport: 5001,
                        proto: 17,
                    })
                    .collect();
                Ok(Self::from_tuples(
                    &tuples,
                    0,
                    size,
                    opts,
                    format!("synth:{n}"),
                ))
            }
            Source::Trace(path) => {
                let trace = load_trace(path).map_err(|e| ProfileError::File {
                    path: path.clone(),
                    msg: e.to_string(),
                })?;
                let mut skipped = 0;
                let mut tuples = Vec::new();
                for p in &trace {
                    if tuples.len() >= opts.limit {
                        break;
                    }
                    let k = &p.key;
                    let t = Tuple {
                        src: k.src as u32,
                        dst: k.dst as u32,
                        sport: k.sport,
                        dport: k.dport,
                        proto: k.proto,
                    };
                    if opts.routable && !routable(t.src, t.dst) {
                        skipped += 1;
                        continue;
                    }
                    tuples.push(t);
                }
                if tuples.is_empty() {
                    return Err(ProfileError::Empty(path.display().to_string()));
                }
                let label = format!("trace:{}", path.display());
                Ok(Self::from_tuples(&tuples, skipped, size, opts, label))
            }
            Source::Pcap(path) => Self::from_pcap(path, opts),
        }
    }

    fn from_tuples(
        tuples: &[Tuple],
        skipped: usize,
        size: FrameSize,
        opts: &Options,
        label: String,
    ) -> Profile {
        let sizes = size.distinct();
        let cycle = size
            .cycle()
            .iter()
            .map(|s| sizes.iter().position(|x| x == s).unwrap_or(0))
            .collect();
        let mut templates = Vec::with_capacity(tuples.len() * sizes.len());
        for t in tuples {
            for &s in &sizes {
                let mut bytes = tuple_frame(t, s, opts);
                let stamp = stamp::prepare(&mut bytes);
                templates.push(Template { bytes, stamp });
            }
        }
        Profile {
            flows: tuples.len(),
            slots: sizes.len(),
            cycle,
            templates,
            mean_frame: size.mean_bytes(),
            skipped,
            label,
        }
    }

    fn from_pcap(path: &Path, opts: &Options) -> Result<Profile, ProfileError> {
        let data = std::fs::read(path).map_err(|e| ProfileError::File {
            path: path.into(),
            msg: e.to_string(),
        })?;
        let frames = read_pcap(&data).map_err(|msg| ProfileError::File {
            path: path.into(),
            msg,
        })?;
        let mut templates = Vec::new();
        let mut skipped = 0;
        for mut bytes in frames {
            if templates.len() >= opts.limit {
                break;
            }
            if bytes.len() < 14 || bytes.len() > MAX_DATA {
                skipped += 1;
                continue;
            }
            let stamp = stamp::prepare(&mut bytes);
            templates.push(Template { bytes, stamp });
        }
        if templates.is_empty() {
            return Err(ProfileError::Empty(path.display().to_string()));
        }
        let mean_frame = templates
            .iter()
            .map(|t| (t.bytes.len().max(60) + usize::from(FCS)) as f64)
            .sum::<f64>()
            / templates.len() as f64;
        Ok(Profile {
            flows: templates.len(),
            slots: 1,
            cycle: vec![0],
            templates,
            mean_frame,
            skipped,
            label: format!("pcap:{}", path.display()),
        })
    }

    /// The template of frame `flow`, `slot` (see [`Cursor`]).
    #[inline]
    pub fn template(&self, flow: usize, cycle_pos: usize) -> &Template {
        &self.templates[flow * self.slots + self.cycle[cycle_pos]]
    }

    /// Length of the size cycle.
    pub fn cycle_len(&self) -> usize {
        self.cycle.len()
    }

    /// Templates that carry a stamp, out of all.
    pub fn stamped(&self) -> (usize, usize) {
        let n = self.templates.iter().filter(|t| t.stamp.is_some()).count();
        (n, self.templates.len())
    }
}

/// Walks a profile frame by frame: flow `i mod flows`, size `cycle[i mod cycle]`.
#[derive(Debug, Clone, Default)]
pub struct Cursor {
    flow: usize,
    pos: usize,
}

impl Cursor {
    /// The next frame's template.
    #[inline]
    pub fn next<'p>(&mut self, p: &'p Profile) -> &'p Template {
        let t = p.template(self.flow, self.pos);
        self.flow += 1;
        if self.flow == p.flows {
            self.flow = 0;
        }
        self.pos += 1;
        if self.pos == p.cycle.len() {
            self.pos = 0;
        }
        t
    }
}

/// The frames of a classic pcap file (either byte order, micro- or nanosecond stamps), of
/// link type Ethernet.
pub fn read_pcap(data: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    if data.len() < 24 {
        return Err("too short for a pcap header".into());
    }
    let magic = [data[0], data[1], data[2], data[3]];
    let le = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => return Err("not a classic pcap file (pcapng is not supported)".into()),
    };
    let u32_at = |o: usize| {
        let b = [data[o], data[o + 1], data[o + 2], data[o + 3]];
        if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    let linktype = u32_at(20);
    if linktype != 1 {
        return Err(format!("link type {linktype}, expected 1 (Ethernet)"));
    }
    let mut frames = Vec::new();
    let mut off = 24;
    while off + 16 <= data.len() {
        let caplen = u32_at(off + 8) as usize;
        let start = off + 16;
        let end = start
            .checked_add(caplen)
            .filter(|&e| e <= data.len())
            .ok_or_else(|| format!("record at byte {off} runs past the end of the file"))?;
        frames.push(data[start..end].to_vec());
        off = end;
    }
    Ok(frames)
}
