//! The lookup engine: first match over a priority-ordered list of 8-lane boxes.
//!
//! A rule ("box") is an inclusive interval per lane; a key holds one value per lane; a box
//! matches when every lane value lies in its interval. Rules are numbered by priority
//! (0 = best) and the engine answers the lowest-numbered matching rule.
//!
//! Structure (built once, immutable afterwards):
//! - rules are partitioned by address wildness into up to [`GROUPS`] groups (small source
//!   prefix, small destination prefix, and among the rules with neither, those whose source is
//!   the wider and those whose destination is) so wildcards do not get replicated across cuts
//!   of the other address (the EffiCuts/CutSplit observation; the last split took ipc1_100K
//!   from 71 MiB to 6.3 MiB);
//! - each group is a multi-way decision tree (HyperSplit-style cuts on rule endpoints, up to
//!   [`FANOUT`] children per node chosen to minimise the largest child), nodes in one flat
//!   array of 64-byte records (for `u32` lanes) addressed by `u32`;
//! - leaves are runs of rule numbers in priority order, ended by a sentinel, checked linearly
//!   against the rule table (one 64-byte record per rule for `u32` lanes);
//! - trees are searched in order of their best rule; a tree whose best rule cannot beat the
//!   current answer is skipped, and a leaf scan stops at the first rule that cannot;
//! - the IPv4 lookups come in kernels (plain, AVX2, AVX-512: `kernel.rs`), and the batched one
//!   walks 32 keys together without data-dependent branches (`first_batch_isa`).
//!
//! `first_from(key, bound)` ignores rules numbered below `bound`: the classifier uses it to
//! restart the search after an `ignore` rule (see `classify/mod.rs`).

use std::fmt::Debug;

use super::kernel::Isa;

/// Lanes per key and per rule (the last one or more may be padding).
pub const LANES: usize = 8;
/// Children per tree node at most.
pub const FANOUT: usize = 8;
/// A node with at most this many rules becomes a leaf.
pub const LEAF_SIZE: usize = 5;
/// Depth guard: deeper nodes become leaves whatever their size.
const MAX_DEPTH: u32 = 24;
/// Direct-index root tables have at most 2^this slots.
const DIR_BITS_MAX: u32 = 14;
/// Rule copies per rule, on average, a direct-index root table may hold.
const DIR_COPIES: usize = 3;
/// Keys per batched walk (`Engine::first_batch_isa`) at most.
pub const BATCH: usize = 32;
/// Number of rule groups (separate trees).
pub const GROUPS: usize = 4;
/// No rule: the answer of a search that found nothing.
pub const NONE: u32 = u32::MAX;
/// Flag bit of a child reference that points into `leaf_rules` instead of `nodes`.
const LEAF: u32 = 1 << 31;
/// The lane of the source address and of the destination address (for partitioning).
pub const LANE_SRC: usize = 3;
pub const LANE_DST: usize = 4;

/// A lane value: `u32` for the IPv4 engine, `u128` for the IPv6 one.
pub trait Word: Copy + Ord + Default + Debug + Send + Sync + From<u32> + 'static {
    const MAX: Self;
    const ZERO: Self;
    /// Address ranges up to this size count as "small" when partitioning.
    const SMALL_SPAN: Self;
    /// `SMALL_SPAN == 1 << SMALL_BITS`.
    const SMALL_BITS: u32;
    fn wsub(self, other: Self) -> Self;
    fn wadd1(self) -> Self;
    /// The low bits of `v` (lowering computes in `u128`).
    fn from_u128(v: u128) -> Self;
    /// The low 32 bits.
    fn low_u32(self) -> u32;
    /// The value as a `u128`.
    fn to_u128(self) -> u128;
    /// Width in bits.
    const BITS: u32;
    /// `self >> shift` as an index (the caller keeps it small).
    fn shr_usize(self, shift: u32) -> usize;
    /// `i << shift`.
    fn slot_start(i: usize, shift: u32) -> Self;
    /// How many of `thr` are below `v`.
    #[inline(always)]
    fn count_gt(v: Self, thr: &[Self; FANOUT - 1]) -> usize {
        thr.iter().map(|t| usize::from(v > *t)).sum()
    }
}

impl Word for u32 {
    const MAX: Self = u32::MAX;
    const ZERO: Self = 0;
    const SMALL_SPAN: Self = 1 << 16;
    const SMALL_BITS: u32 = 16;
    #[inline(always)]
    fn wsub(self, other: Self) -> Self {
        self.wrapping_sub(other)
    }
    #[inline(always)]
    fn wadd1(self) -> Self {
        self.wrapping_add(1)
    }
    #[inline(always)]
    fn from_u128(v: u128) -> Self {
        v as u32
    }
    #[inline(always)]
    fn low_u32(self) -> u32 {
        self
    }
    fn to_u128(self) -> u128 {
        u128::from(self)
    }
    const BITS: u32 = 32;
    #[inline(always)]
    fn shr_usize(self, shift: u32) -> usize {
        self.checked_shr(shift).unwrap_or(0) as usize
    }
    fn slot_start(i: usize, shift: u32) -> Self {
        (i as u32).checked_shl(shift).unwrap_or(0)
    }
}

impl Word for u128 {
    const MAX: Self = u128::MAX;
    const ZERO: Self = 0;
    const SMALL_SPAN: Self = 1 << 64;
    const SMALL_BITS: u32 = 64;
    #[inline(always)]
    fn wsub(self, other: Self) -> Self {
        self.wrapping_sub(other)
    }
    #[inline(always)]
    fn wadd1(self) -> Self {
        self.wrapping_add(1)
    }
    #[inline(always)]
    fn from_u128(v: u128) -> Self {
        v
    }
    #[inline(always)]
    fn low_u32(self) -> u32 {
        self as u32
    }
    fn to_u128(self) -> u128 {
        self
    }
    const BITS: u32 = 128;
    #[inline(always)]
    fn shr_usize(self, shift: u32) -> usize {
        self.checked_shr(shift).unwrap_or(0) as usize
    }
    fn slot_start(i: usize, shift: u32) -> Self {
        (i as u128).checked_shl(shift).unwrap_or(0)
    }
}

/// A rule as the builder takes it: inclusive `[lo, hi]` per lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds<W: Word> {
    pub lo: [W; LANES],
    pub hi: [W; LANES],
}

impl<W: Word> Bounds<W> {
    /// The box that matches every key: each lane's whole domain ([`lane_max`]).
    pub fn any() -> Self {
        Bounds {
            lo: [W::ZERO; LANES],
            hi: std::array::from_fn(lane_max::<W>),
        }
    }

    /// The box cut down to the lanes' domains; `None` if nothing is left.
    pub fn clipped(mut self) -> Option<Self> {
        for i in 0..LANES {
            self.hi[i] = self.hi[i].min(lane_max::<W>(i));
            if self.lo[i] > self.hi[i] {
                return None;
            }
        }
        Some(self)
    }

    pub fn matches(&self, key: &[W; LANES]) -> bool {
        (0..LANES).all(|i| self.lo[i] <= key[i] && key[i] <= self.hi[i])
    }
}

/// The largest value a key can hold in each lane: addresses use the whole word; iface ids
/// and ports are 16-bit, protocol 8-bit, L4 kind 0..=2 (`key::L4Kind`), the padding lane 0.
pub fn lane_max<W: Word>(lane: usize) -> W {
    const SMALL: [u32; LANES] = [0xffff, 0xff, 2, 0, 0, 0xffff, 0xffff, 0];
    if lane == LANE_SRC || lane == LANE_DST {
        W::MAX
    } else {
        W::from(SMALL[lane & (LANES - 1)])
    }
}

/// A rule as the lookup reads it: `key - lo <= span` (wrapping) per field, with the small
/// fields narrowed to their domain: 32 bytes for `u32` addresses.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(32))]
struct RuleBox<W: Word> {
    src: W,
    src_span: W,
    dst: W,
    dst_span: W,
    /// iface, sport, dport-or-type.
    lo16: [u16; 3],
    span16: [u16; 3],
    /// proto, L4 kind.
    lo8: [u8; 2],
    span8: [u8; 2],
}

impl<W: Word> RuleBox<W> {
    /// The lookup form of a box already clipped to the lane domains.
    fn new(b: &Bounds<W>) -> Self {
        let n16 = |l: usize| {
            (
                b.lo[l].low_u32() as u16,
                b.hi[l].wsub(b.lo[l]).low_u32() as u16,
            )
        };
        let n8 = |l: usize| {
            (
                b.lo[l].low_u32() as u8,
                b.hi[l].wsub(b.lo[l]).low_u32() as u8,
            )
        };
        let (i, s, d) = (n16(0), n16(5), n16(6));
        let (p, k) = (n8(1), n8(2));
        RuleBox {
            src: b.lo[LANE_SRC],
            src_span: b.hi[LANE_SRC].wsub(b.lo[LANE_SRC]),
            dst: b.lo[LANE_DST],
            dst_span: b.hi[LANE_DST].wsub(b.lo[LANE_DST]),
            lo16: [i.0, s.0, d.0],
            span16: [i.1, s.1, d.1],
            lo8: [p.0, k.0],
            span8: [p.1, k.1],
        }
    }

    #[inline(always)]
    fn matches(&self, key: &[W; LANES]) -> bool {
        // Every field is evaluated (no early exit): one well-predicted branch per rule
        // instead of one per field.
        let k16 = [
            key[0].low_u32() as u16,
            key[5].low_u32() as u16,
            key[6].low_u32() as u16,
        ];
        let k8 = [key[1].low_u32() as u8, key[2].low_u32() as u8];
        let mut out = u32::from(key[LANE_SRC].wsub(self.src) > self.src_span);
        out |= u32::from(key[LANE_DST].wsub(self.dst) > self.dst_span);
        for ((k, lo), span) in k16.iter().zip(&self.lo16).zip(&self.span16) {
            out |= u32::from(k.wrapping_sub(*lo) > *span);
        }
        for ((k, lo), span) in k8.iter().zip(&self.lo8).zip(&self.span8) {
            out |= u32::from(k.wrapping_sub(*lo) > *span);
        }
        out == 0
    }
}

/// An inner tree node: the child is the number of thresholds the lane value exceeds.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct Node<W: Word> {
    /// Upper bounds of children 0..FANOUT-1, padded with `W::MAX`.
    pub(crate) thr: [W; FANOUT - 1],
    /// Child references: node index, or `LEAF | index into leaf_rules`.
    child: [u32; FANOUT],
    lane: u8,
}

impl<W: Word> Node<W> {
    #[inline(always)]
    fn next(&self, key: &[W; LANES]) -> u32 {
        let v = key[usize::from(self.lane) & (LANES - 1)];
        self.child[W::count_gt(v, &self.thr) & (FANOUT - 1)]
    }
}

impl Node<u32> {
    /// [`Node::next`] with the threshold count of kernel `I`.
    #[inline(always)]
    fn next_isa<I: Isa>(&self, key: &[u32; LANES]) -> u32 {
        let v = key[usize::from(self.lane) & (LANES - 1)];
        self.child[I::count_gt(self, v) & (FANOUT - 1)]
    }
}

#[derive(Debug, Clone, Copy)]
struct Tree {
    /// Root reference; with `dir_len > 0`, unused: the root is a direct-index table.
    root: u32,
    /// Direct-index root: `dir[dir_base + ((key[dir_lane] >> dir_shift) & (dir_len - 1))]` is
    /// the reference (`dir_len` a power of two).
    dir_base: u32,
    dir_len: u32,
    dir_shift: u32,
    dir_lane: u32,
    /// Best (lowest) and worst rule number in the tree.
    min: u32,
    max: u32,
}

/// The compiled engine: immutable, `Send + Sync`.
#[derive(Debug, Clone)]
pub struct Engine<W: Word> {
    rules: Vec<RuleBox<W>>,
    nodes: Vec<Node<W>>,
    leaf_rules: LeafSlots,
    trees: Vec<Tree>,
    /// Direct-index root tables of the trees that have one.
    dir: Vec<u32>,
}

/// The leaf slots (rule numbers, each leaf ended by [`NONE`]): `u16` when every rule number
/// fits, which halves the largest table of the small sets.
#[derive(Debug, Clone)]
enum LeafSlots {
    Narrow(Vec<u16>),
    Wide(Vec<u32>),
}

impl LeafSlots {
    const NARROW_NONE: u16 = u16::MAX;

    fn new(mut v: Vec<u32>) -> Self {
        if v.iter()
            .all(|&p| p == NONE || p < u32::from(Self::NARROW_NONE))
        {
            let n = v.iter().map(|&p| {
                if p == NONE {
                    Self::NARROW_NONE
                } else {
                    p as u16
                }
            });
            LeafSlots::Narrow(n.collect())
        } else {
            v.shrink_to_fit();
            LeafSlots::Wide(v)
        }
    }

    #[inline(always)]
    fn get(&self, i: usize) -> Option<u32> {
        match self {
            LeafSlots::Narrow(v) => v.get(i).map(|&p| {
                if p == Self::NARROW_NONE {
                    NONE
                } else {
                    u32::from(p)
                }
            }),
            LeafSlots::Wide(v) => v.get(i).copied(),
        }
    }

    fn len(&self) -> usize {
        match self {
            LeafSlots::Narrow(v) => v.len(),
            LeafSlots::Wide(v) => v.len(),
        }
    }

    fn bytes(&self) -> usize {
        match self {
            LeafSlots::Narrow(v) => v.capacity() * 2,
            LeafSlots::Wide(v) => v.capacity() * 4,
        }
    }
}

/// Shape figures of a built engine (for reports and tuning).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shape {
    pub rules: usize,
    pub trees: usize,
    pub nodes: usize,
    pub leaf_slots: usize,
    pub max_depth: u32,
}

impl<W: Word> Engine<W> {
    /// Build from rules in priority order (index = rule number). With `prune`, rules behind
    /// a rule that covers a whole tree region are dropped from that region: `first` stays
    /// exact but `first_from` does not; build without `prune` when restarts are needed.
    /// Every rule must lie within the lane domains ([`Bounds::clipped`]).
    pub fn build(rules: &[Bounds<W>], prune: bool) -> Self {
        debug_assert!(rules.iter().all(|r| r.clipped() == Some(*r)));
        let mut b = Builder {
            rules,
            prune,
            nodes: Vec::new(),
            leaf_rules: vec![NONE],
            max_depth: 0,
            scratch: Default::default(),
        };
        let mut groups: [Vec<u32>; GROUPS] = Default::default();
        for (i, r) in rules.iter().enumerate() {
            let small_src = r.hi[LANE_SRC].wsub(r.lo[LANE_SRC]) < W::SMALL_SPAN;
            let small_dst = r.hi[LANE_DST].wsub(r.lo[LANE_DST]) < W::SMALL_SPAN;
            // neither address small: apart by which one is the narrower (EffiCuts' separable
            // trees): a rule wide in one address and narrow in the other is then cut on the
            // narrow one without being copied into every child of the other's cuts
            let g = if small_src {
                0
            } else if small_dst {
                1
            } else if r.hi[LANE_SRC].wsub(r.lo[LANE_SRC]) < r.hi[LANE_DST].wsub(r.lo[LANE_DST]) {
                3
            } else {
                2
            };
            groups[g].push(i as u32);
        }
        let mut trees = Vec::new();
        let mut dir = Vec::new();
        for (gi, g) in groups.into_iter().enumerate() {
            let (Some(&min), Some(&max)) = (g.first(), g.last()) else {
                continue;
            };
            let region = Bounds::any();
            // Small-source and small-destination groups start with a direct-index table on a
            // window of `bits` bits of that address, `dir[(addr >> shift) & mask]`. The window is
            // the one that spreads the group best (least sum of squared slot loads) without
            // copying rules into more than `DIR_COPIES` slots each on average: the top bits
            // when the rules' addresses differ there, lower bits (folding the top ones, as a
            // hash would) when they share their leading bits (acl1: 911 rules on 89 source
            // addresses in three /10s). Every rule spans less than 2^SMALL_BITS addresses, so at
            // or above that bit it lands in one or two slots, below it in more.
            let lane = [LANE_SRC, LANE_DST, 0, 0][gi];
            let bits = (usize::BITS - g.len().leading_zeros()).clamp(4, DIR_BITS_MAX);
            if gi < 2 && g.len() > LEAF_SIZE {
                let slots = 1usize << bits;
                let mask = slots - 1;
                // The slot numbers (before masking) rule `r` covers with window `shift`.
                let span_of = |r: u32, shift: u32| {
                    let (lo, hi) = (rules[r as usize].lo[lane], rules[r as usize].hi[lane]);
                    let a = lo.shr_usize(shift);
                    // At most `slots` consecutive numbers cover every slot.
                    let n = hi.wsub(lo).shr_usize(shift).min(slots - 1) + 1;
                    let n = if hi.shr_usize(shift) & mask == a.wrapping_add(n) & mask {
                        (n + 1).min(slots)
                    } else {
                        n
                    };
                    (a, n)
                };
                let top = W::BITS - bits;
                let mut shift = top;
                let mut best_cost = u64::MAX;
                let mut load = vec![0u64; slots];
                let budget = (g.len() * DIR_COPIES) as u64;
                for s in (W::SMALL_BITS.saturating_sub(16).min(top)..=top).rev() {
                    load.fill(0);
                    let mut copies = 0u64;
                    for &r in &g {
                        let (a, n) = span_of(r, s);
                        copies += n as u64;
                        for k in 0..n {
                            load[a.wrapping_add(k) & mask] += 1;
                        }
                        if copies > budget {
                            break;
                        }
                    }
                    if copies > budget {
                        continue;
                    }
                    let cost = load.iter().map(|c| c * c).sum::<u64>();
                    if cost < best_cost {
                        (best_cost, shift) = (cost, s);
                    }
                }
                let mut lists: Vec<Vec<u32>> = vec![Vec::new(); slots];
                for &r in &g {
                    let (a, n) = span_of(r, shift);
                    for k in 0..n {
                        lists[a.wrapping_add(k) & mask].push(r);
                    }
                }
                let base = dir.len() as u32;
                let mut i = 0;
                while i < slots {
                    let mut j = i;
                    while j + 1 < slots && lists[j + 1] == lists[i] {
                        j += 1;
                    }
                    // A folded window's slot is no interval of the lane: its region is the
                    // whole lane.
                    let mut reg = region;
                    if shift == top {
                        reg.lo[lane] = W::slot_start(i, shift);
                        reg.hi[lane] = W::slot_start(j + 1, shift).wsub(W::from(1));
                        if j + 1 == slots {
                            reg.hi[lane] = W::MAX;
                        }
                    }
                    let r = b.build(std::mem::take(&mut lists[i]), reg, 1);
                    dir.resize(dir.len() + (j + 1 - i), r);
                    i = j + 1;
                }
                trees.push(Tree {
                    root: LEAF,
                    dir_base: base,
                    dir_len: slots as u32,
                    dir_shift: shift,
                    dir_lane: lane as u32,
                    min,
                    max,
                });
            } else {
                let root = b.build(g, region, 0);
                trees.push(Tree {
                    root,
                    dir_base: 0,
                    dir_len: 0,
                    dir_shift: 0,
                    dir_lane: 0,
                    min,
                    max,
                });
            }
        }
        trees.sort_by_key(|t| t.min);
        let Builder {
            mut nodes,
            leaf_rules,
            ..
        } = b;
        nodes.shrink_to_fit();
        let leaf_rules = LeafSlots::new(leaf_rules);
        let rules = rules.iter().map(RuleBox::new).collect();
        dir.shrink_to_fit();
        Engine {
            rules,
            nodes,
            leaf_rules,
            trees,
            dir,
        }
    }

    /// The root reference of `t` for `key` (through its direct-index table if it has one).
    #[inline(always)]
    fn root(&self, t: &Tree, key: &[W; LANES]) -> u32 {
        if t.dir_len == 0 {
            return t.root;
        }
        let v = key[t.dir_lane as usize & (LANES - 1)];
        let slot = v.shr_usize(t.dir_shift) & (t.dir_len as usize - 1);
        self.dir
            .get(t.dir_base as usize + slot)
            .copied()
            .unwrap_or(LEAF)
    }

    /// The best rule matching `key`, or [`NONE`].
    #[inline]
    pub fn first(&self, key: &[W; LANES]) -> u32 {
        let mut best = NONE;
        for t in &self.trees {
            if t.min >= best {
                break;
            }
            let mut r = self.root(t, key);
            while r & LEAF == 0 {
                r = match self.nodes.get(r as usize) {
                    Some(n) => n.next(key),
                    None => return NONE,
                };
            }
            let mut i = (r & !LEAF) as usize;
            while let Some(p) = self.leaf_rules.get(i) {
                if p >= best {
                    break;
                }
                if self.rules.get(p as usize).is_some_and(|b| b.matches(key)) {
                    best = p;
                    break;
                }
                i += 1;
            }
        }
        best
    }

    /// The best rule numbered `bound` or more that matches `key`, or [`NONE`].
    pub fn first_from(&self, key: &[W; LANES], bound: u32) -> u32 {
        let mut best = NONE;
        for t in &self.trees {
            if t.min >= best {
                break;
            }
            if t.max < bound {
                continue;
            }
            let mut r = self.root(t, key);
            while r & LEAF == 0 {
                r = match self.nodes.get(r as usize) {
                    Some(n) => n.next(key),
                    None => return NONE,
                };
            }
            let mut i = (r & !LEAF) as usize;
            while let Some(p) = self.leaf_rules.get(i) {
                if p >= best {
                    break;
                }
                if p >= bound && self.rules.get(p as usize).is_some_and(|b| b.matches(key)) {
                    best = p;
                    break;
                }
                i += 1;
            }
        }
        best
    }

    /// Work `first` does for `key`: (trees searched, nodes visited, rules checked).
    pub fn cost(&self, key: &[W; LANES]) -> (u32, u32, u32) {
        let (mut trees, mut nodes, mut checked) = (0, 0, 0);
        let mut best = NONE;
        for t in &self.trees {
            if t.min >= best {
                break;
            }
            trees += 1;
            let mut r = self.root(t, key);
            while r & LEAF == 0 {
                nodes += 1;
                r = match self.nodes.get(r as usize) {
                    Some(n) => n.next(key),
                    None => return (trees, nodes, checked),
                };
            }
            let mut i = (r & !LEAF) as usize;
            while let Some(p) = self.leaf_rules.get(i) {
                if p >= best {
                    break;
                }
                checked += 1;
                if self.rules.get(p as usize).is_some_and(|b| b.matches(key)) {
                    best = p;
                    break;
                }
                i += 1;
            }
        }
        (trees, nodes, checked)
    }

    /// Heap bytes held by the structure.
    pub fn memory_bytes(&self) -> usize {
        self.rules.capacity() * std::mem::size_of::<RuleBox<W>>()
            + self.nodes.capacity() * std::mem::size_of::<Node<W>>()
            + self.leaf_rules.bytes()
            + self.trees.capacity() * std::mem::size_of::<Tree>()
            + self.dir.capacity() * std::mem::size_of::<u32>()
    }

    pub fn shape(&self) -> Shape {
        let mut max_depth = 0;
        for t in &self.trees {
            let mut stack = vec![(t.root, 0u32)];
            let b = t.dir_base as usize;
            if let Some(d) = self.dir.get(b..b + t.dir_len as usize) {
                stack.extend(d.iter().map(|r| (*r, 1u32)));
            }
            while let Some((r, d)) = stack.pop() {
                max_depth = max_depth.max(d);
                if r & LEAF == 0 {
                    if let Some(n) = self.nodes.get(r as usize) {
                        stack.extend(n.child.iter().map(|c| (*c, d + 1)));
                    }
                }
            }
        }
        Shape {
            rules: self.rules.len(),
            trees: self.trees.len(),
            nodes: self.nodes.len(),
            leaf_slots: self.leaf_rules.len(),
            max_depth,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

impl Engine<u32> {
    /// [`Engine::first`] with the node step of kernel `I` (see `kernel.rs`).
    #[inline(always)]
    pub(crate) fn first_isa<I: Isa>(&self, key: &[u32; LANES]) -> u32 {
        let mut best = NONE;
        for t in &self.trees {
            if t.min >= best {
                break;
            }
            let mut r = self.root(t, key);
            while r & LEAF == 0 {
                r = match self.nodes.get(r as usize) {
                    Some(n) => n.next_isa::<I>(key),
                    None => return NONE,
                };
            }
            let mut i = (r & !LEAF) as usize;
            while let Some(p) = self.leaf_rules.get(i) {
                if p >= best {
                    break;
                }
                if self.rules.get(p as usize).is_some_and(|b| b.matches(key)) {
                    best = p;
                    break;
                }
                i += 1;
            }
        }
        best
    }

    /// [`Engine::first`] for up to [`BATCH`] keys, `best[i]` answering `keys[i]`, without
    /// data-dependent branches in the inner loops: per tree, every key still improvable takes
    /// one node step per round, and the keys that reached a leaf drop out of the work list
    /// (compacted in place with a branch-free write-then-advance); then every key checks one
    /// leaf rule per round the same way until its first match or a rule that cannot beat its
    /// answer. A round's steps are independent, so their loads overlap (the cache misses of a
    /// large structure, the latency of a small one) and only the rounds' loop exits are
    /// mispredicted, not every key's depth and leaf length.
    #[inline(always)]
    pub(crate) fn first_batch_isa<I: Isa>(&self, keys: &[[u32; LANES]], best: &mut [u32]) {
        const M: usize = BATCH - 1;
        let n = keys.len().min(best.len()).min(BATCH);
        let mut k = [[0u32; LANES]; BATCH];
        k[..n].copy_from_slice(&keys[..n]);
        let mut b = [NONE; BATCH];
        let mut cur = [LEAF; BATCH];
        let mut work = [0u8; BATCH];
        let Some(last_rule) = self.rules.len().checked_sub(1) else {
            best[..n].fill(NONE);
            return;
        };
        let mut live = [0u8; BATCH];
        for t in &self.trees {
            // The keys this tree can still improve.
            let mut m = 0;
            for (i, bi) in b[..n].iter().enumerate() {
                live[m & M] = i as u8;
                m += usize::from(t.min < *bi);
            }
            if m == 0 {
                break; // trees are sorted by best rule: no later tree can improve either
            }
            // Their roots; the ones at an inner node go on the walk list.
            let mut w = 0;
            for j in 0..m {
                let i = usize::from(live[j & M]) & M;
                let r = self.root(t, &k[i]);
                cur[i] = r;
                work[w & M] = i as u8;
                w += usize::from(r & LEAF == 0);
            }
            while w > 0 {
                let mut w2 = 0;
                for j in 0..w {
                    let i = usize::from(work[j & M]) & M;
                    let nx = match self.nodes.get(cur[i] as usize) {
                        Some(node) => node.next_isa::<I>(&k[i]),
                        None => LEAF,
                    };
                    cur[i] = nx;
                    work[w2 & M] = i as u8;
                    w2 += usize::from(nx & LEAF == 0);
                }
                w = w2;
            }
            // Leaf scans, one rule per key per round: `cur[i]` is `LEAF | position`.
            while m > 0 {
                let mut m2 = 0;
                for j in 0..m {
                    let i = usize::from(live[j & M]) & M;
                    let at = (cur[i] & !LEAF) as usize;
                    let p = self.leaf_rules.get(at).unwrap_or(NONE);
                    let cand = p < b[i];
                    let r = &self.rules[(p as usize).min(last_rule)];
                    let hit = cand & r.matches(&k[i]);
                    b[i] = if hit { p } else { b[i] };
                    cur[i] = cur[i].wrapping_add(1);
                    live[m2 & M] = i as u8;
                    m2 += usize::from(cand & !hit);
                }
                m = m2;
            }
        }
        best[..n].copy_from_slice(&b[..n]);
    }
}

struct Builder<'a, W: Word> {
    rules: &'a [Bounds<W>],
    prune: bool,
    nodes: Vec<Node<W>>,
    leaf_rules: Vec<u32>,
    max_depth: u32,
    /// [`Builder::choose`]'s buffers, kept between its calls (one call per node and lane
    /// would otherwise allocate three vectors).
    scratch: [Vec<W>; 3],
}

/// A chosen cut: the lane and the inclusive upper bound of every child but the last.
struct Cut<W> {
    lane: usize,
    uppers: Vec<W>,
    max_child: usize,
    sum: usize,
}

impl<W: Word> Builder<'_, W> {
    fn covers(&self, r: u32, region: &Bounds<W>) -> bool {
        let b = &self.rules[r as usize];
        (0..LANES).all(|i| b.lo[i] <= region.lo[i] && b.hi[i] >= region.hi[i])
    }

    fn leaf(&mut self, rules: &[u32]) -> u32 {
        if rules.is_empty() {
            return LEAF;
        }
        let at = self.leaf_rules.len() as u32;
        self.leaf_rules.extend_from_slice(rules);
        self.leaf_rules.push(NONE);
        LEAF | at
    }

    fn build(&mut self, mut rules: Vec<u32>, region: Bounds<W>, depth: u32) -> u32 {
        self.max_depth = self.max_depth.max(depth);
        if self.prune {
            if let Some(p) = rules.iter().position(|&r| self.covers(r, &region)) {
                rules.truncate(p + 1);
            }
        }
        if rules.len() <= LEAF_SIZE || depth >= MAX_DEPTH {
            return self.leaf(&rules);
        }
        let Some(cut) = self.choose(&rules, &region) else {
            return self.leaf(&rules);
        };
        // Child intervals on the cut lane, then merge neighbours that hold the same rules.
        let lane = cut.lane;
        let mut children: Vec<(W, W, Vec<u32>)> = Vec::new();
        let mut lo = region.lo[lane];
        let last = region.hi[lane];
        // one pass over the rules: each goes to the children its interval meets (child k
        // ends at uppers[k], the last at the region's end), in priority order
        let uppers = &cut.uppers;
        let mut subs: Vec<Vec<u32>> = vec![Vec::new(); uppers.len() + 1];
        for &r in &rules {
            let b = &self.rules[r as usize];
            let first = uppers.partition_point(|u| *u < b.lo[lane]);
            let end = uppers.partition_point(|u| *u < b.hi[lane]);
            for sub in &mut subs[first..=end] {
                sub.push(r);
            }
        }
        for (hi, sub) in uppers
            .iter()
            .copied()
            .chain(std::iter::once(last))
            .zip(subs)
        {
            match children.last_mut() {
                Some(prev) if prev.2 == sub => prev.1 = hi,
                _ => children.push((lo, hi, sub)),
            }
            lo = hi.wadd1();
        }
        if children.len() < 2 {
            return self.leaf(&rules);
        }
        drop(rules);
        let at = self.nodes.len();
        self.nodes.push(Node {
            thr: [W::MAX; FANOUT - 1],
            child: [LEAF; FANOUT],
            lane: lane as u8,
        });
        let mut thr = [W::MAX; FANOUT - 1];
        let mut child = [LEAF; FANOUT];
        let n = children.len();
        for (j, (clo, chi, sub)) in children.into_iter().enumerate() {
            if j + 1 < n {
                thr[j] = chi;
            }
            let mut r = region;
            r.lo[lane] = clo;
            r.hi[lane] = chi;
            child[j] = self.build(sub, r, depth + 1);
        }
        self.nodes[at] = Node {
            thr,
            child,
            lane: lane as u8,
        };
        at as u32
    }

    /// The best cut over all lanes: smallest largest child, then least replication.
    fn choose(&mut self, rules: &[u32], region: &Bounds<W>) -> Option<Cut<W>> {
        let [mut los, mut his, mut starts] = std::mem::take(&mut self.scratch);
        let best = self.choose_with(rules, region, [&mut los, &mut his, &mut starts]);
        self.scratch = [los, his, starts];
        best
    }

    /// [`Builder::choose`] with its three buffers (cleared here before use).
    fn choose_with(
        &self,
        rules: &[u32],
        region: &Bounds<W>,
        [los, his, starts]: [&mut Vec<W>; 3],
    ) -> Option<Cut<W>> {
        let n = rules.len();
        let mut best: Option<Cut<W>> = None;
        for lane in 0..LANES {
            let (rlo, rhi) = (region.lo[lane], region.hi[lane]);
            if rlo == rhi {
                continue;
            }
            los.clear();
            his.clear();
            for &r in rules {
                let b = &self.rules[r as usize];
                los.push(b.lo[lane].max(rlo));
                his.push(b.hi[lane].min(rhi));
            }
            // Segment starts: region start, rule starts, one past rule ends.
            starts.clear();
            starts.push(rlo);
            starts.extend(los.iter().copied());
            starts.extend(his.iter().copied().filter(|h| *h < rhi).map(|h| h.wadd1()));
            starts.sort_unstable();
            starts.dedup();
            if starts.len() < 2 {
                continue;
            }
            los.sort_unstable();
            his.sort_unstable();
            let seg_end = |j: usize| -> W {
                match starts.get(j + 1) {
                    Some(s) => s.wsub(W::from(1)),
                    None => rhi,
                }
            };
            // Rules meeting [a, b]: #(hi >= a) - #(lo > b).
            let count = |a: W, b: W| -> usize {
                let hi_ge = n - his.partition_point(|h| *h < a);
                let lo_gt = n - los.partition_point(|l| *l <= b);
                hi_ge - lo_gt
            };
            let m = starts.len();
            let greedy = |t: usize, out: Option<&mut Vec<(usize, usize)>>| -> usize {
                let mut s = 0;
                let mut k = 0;
                let mut out = out;
                while s < m {
                    // Largest e >= s with count(starts[s], seg_end(e)) <= t (at least s).
                    let (mut a, mut b) = (s, m - 1);
                    while a < b {
                        let mid = (a + b).div_ceil(2);
                        if count(starts[s], seg_end(mid)) <= t {
                            a = mid;
                        } else {
                            b = mid - 1;
                        }
                    }
                    if let Some(o) = out.as_deref_mut() {
                        o.push((s, a));
                    }
                    k += 1;
                    if out.is_none() && k > FANOUT {
                        return k;
                    }
                    s = a + 1;
                }
                k
            };
            let (mut tlo, mut thi) = (1usize, n);
            while tlo < thi {
                let mid = (tlo + thi) / 2;
                if greedy(mid, None) <= FANOUT {
                    thi = mid;
                } else {
                    tlo = mid + 1;
                }
            }
            let mut segs = Vec::new();
            greedy(tlo, Some(&mut segs));
            if segs.len() < 2 {
                continue;
            }
            let mut max_child = 0;
            let mut sum = 0;
            for &(s, e) in &segs {
                let c = count(starts[s], seg_end(e));
                max_child = max_child.max(c);
                sum += c;
            }
            if max_child >= n {
                continue;
            }
            let better = match &best {
                None => true,
                Some(b) => (max_child, sum) < (b.max_child, b.sum),
            };
            if better {
                let uppers = segs[..segs.len() - 1]
                    .iter()
                    .map(|&(_, e)| seg_end(e))
                    .collect();
                best = Some(Cut {
                    lane,
                    uppers,
                    max_child,
                    sum,
                });
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::super::kernel::{self, Kernel};
    use super::*;

    fn lin(rules: &[Bounds<u32>], key: &[u32; LANES], bound: u32) -> u32 {
        rules
            .iter()
            .enumerate()
            .skip(bound as usize)
            .find(|(_, r)| r.matches(key))
            .map_or(NONE, |(i, _)| i as u32)
    }

    #[test]
    fn engine_equals_linear_scan() {
        check_against_linear_scan(0x1234_5678_9abc_def0, false);
    }

    /// Rules with wide address ranges of different widths: every group is built, the two
    /// "neither small" ones included (source wider than destination, and the other way).
    #[test]
    fn engine_with_every_group_equals_linear_scan() {
        let shape = check_against_linear_scan(0x0fed_cba9_8765_4321, true);
        assert_eq!(shape.trees, GROUPS, "{shape:?}");
    }

    /// Random rules (`wide`: addresses small, 2^20 or 2^24 wide, or any) against a linear
    /// scan, with every kernel, batched and single, pruned and not, with restarts.
    fn check_against_linear_scan(mut seed: u64, wide: bool) -> Shape {
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let span = |lane: usize, r: u64| -> u32 {
            match (wide && (lane == LANE_SRC || lane == LANE_DST), r % 4) {
                (true, 0) => 1 << 20,
                (true, 1) => 1 << 24,
                _ => (r % 16) as u32,
            }
        };
        let domain = if wide { 1u32 << 26 } else { 84 };
        let mut rules = Vec::new();
        for _ in 0..400 {
            let mut b = Bounds::<u32>::any();
            for lane in [1, 3, 4, 5, 6] {
                if rnd() % 3 != 0 {
                    let w = span(lane, rnd());
                    (b.lo[lane], b.hi[lane]) = if w > 16 {
                        // an aligned block, as a prefix is
                        let a = (rnd() as u32 % (domain / w)) * w;
                        (a, a + w - 1)
                    } else {
                        let a = (rnd() % 64) as u32;
                        (a, a + w)
                    };
                }
            }
            rules.push(b);
        }
        let e = Engine::build(&rules, true);
        let r = Engine::build(&rules, false);
        let mut batch = Vec::new();
        for _ in 0..20000 {
            let mut k = [0u32; LANES];
            for lane in [1, 3, 4, 5, 6] {
                let addr = wide && (lane == LANE_SRC || lane == LANE_DST);
                k[lane] = if addr && rnd() % 2 == 0 {
                    rnd() as u32 % domain
                } else {
                    (rnd() % 84) as u32
                };
            }
            assert_eq!(e.first(&k), lin(&rules, &k, 0));
            batch.push(k);
            if batch.len() == 1 + (rnd() as usize % BATCH) {
                for kern in Kernel::all_supported() {
                    let mut best = [0u32; BATCH];
                    kernel::first_batch(kern, &e, &batch, &mut best);
                    for (key, b) in batch.iter().zip(&best) {
                        assert_eq!(*b, lin(&rules, key, 0), "{kern} batch");
                        assert_eq!(kernel::first(kern, &e, key), *b, "{kern} single");
                    }
                }
                batch.clear();
            }
            let bound = (rnd() % 400) as u32;
            assert_eq!(r.first(&k), lin(&rules, &k, 0));
            assert_eq!(r.first_from(&k, bound), lin(&rules, &k, bound));
        }
        r.shape()
    }
}
