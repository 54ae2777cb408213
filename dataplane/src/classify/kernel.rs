//! Instruction-set kernels of the IPv4 lookup, chosen at start from what the CPU has.
//!
//! The lookup code itself is written once, generic over [`Isa`] (`engine.rs`:
//! `Engine::first_batch_isa`, `Engine::first_isa`); this module instantiates it three times:
//! plain (baseline x86-64 or any other architecture), inside a function compiled with AVX2, and
//! inside one compiled with AVX-512 (F, VL, BW, DQ). The feature-specific parts are the node
//! step (compare the key's lane value with a node's 7 thresholds in one vector compare and
//! count the thresholds it exceeds: `vpcmpgtd` + `vmovmskps` + `popcnt` on AVX2, `vpcmpud`
//! into a mask register + `popcnt` on AVX-512) and whatever LLVM vectorises in the rest of the
//! loop once the target features are enabled. [`Kernel::detect`] picks the best one the CPU has
//! (`is_x86_feature_detected!`); the binary is built for baseline x86-64 (no `-march=native`).
//!
//! Why `unsafe` here: calling a `#[target_feature]` function from code compiled without that
//! feature, and loading a vector from a reference, are `unsafe` operations. The workspace
//! denies `unsafe_code` outside the DPDK binding; this module is the one exception on the
//! packet path, kept small: three dispatch calls, each guarded by a runtime check of the very
//! feature the callee is compiled with, and one 32-byte load per vector kernel from a
//! reference to a `#[repr(C, align(64))]` node. Every block says why it is sound.

#![allow(unsafe_code)]

use super::engine::{Engine, Node, LANES};

/// Which compiled variant of the lookup runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// Baseline code (no feature beyond the build target's).
    Scalar,
    /// Compiled with AVX2 + POPCNT + BMI1/2.
    Avx2,
    /// Compiled with AVX-512 F/VL/BW/DQ (+ the AVX2 set).
    Avx512,
}

impl Kernel {
    /// The best kernel this CPU can run.
    pub fn detect() -> Kernel {
        if Kernel::Avx512.supported() {
            Kernel::Avx512
        } else if Kernel::Avx2.supported() {
            Kernel::Avx2
        } else {
            Kernel::Scalar
        }
    }

    /// Whether this CPU can run the kernel (runtime detection; cached by std).
    pub fn supported(self) -> bool {
        match self {
            Kernel::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => {
                is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("popcnt")
                    && is_x86_feature_detected!("bmi1")
                    && is_x86_feature_detected!("bmi2")
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => {
                Kernel::Avx2.supported()
                    && is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512dq")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// Every kernel this CPU can run (for differential tests).
    pub fn all_supported() -> Vec<Kernel> {
        [Kernel::Scalar, Kernel::Avx2, Kernel::Avx512]
            .into_iter()
            .filter(|k| k.supported())
            .collect()
    }

    pub fn name(self) -> &'static str {
        match self {
            Kernel::Scalar => "scalar",
            Kernel::Avx2 => "avx2",
            Kernel::Avx512 => "avx512",
        }
    }
}

impl std::fmt::Display for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The feature-specific steps of the IPv4 lookup.
pub(crate) trait Isa {
    /// How many of the node's 7 thresholds `v` exceeds (0..=7).
    fn count_gt(node: &Node<u32>, v: u32) -> usize;
}

/// Plain code.
pub(crate) struct Plain;

impl Isa for Plain {
    #[inline(always)]
    fn count_gt(node: &Node<u32>, v: u32) -> usize {
        node.thr.iter().map(|t| usize::from(v > *t)).sum()
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::super::engine::Node;
    use super::Isa;

    /// AVX2: one signed compare on sign-flipped values (unsigned order), mask, popcount.
    pub(crate) struct Avx2;

    impl Isa for Avx2 {
        #[inline(always)]
        fn count_gt(node: &Node<u32>, v: u32) -> usize {
            // SAFETY: only reached from `batch_avx2` / `first_avx2`, which are compiled with
            // AVX2 and only called after `Kernel::Avx2.supported()` said the CPU has it.
            unsafe { count_gt_avx2(node, v) }
        }
    }

    #[target_feature(enable = "avx2,popcnt")]
    #[inline]
    unsafe fn count_gt_avx2(node: &Node<u32>, v: u32) -> usize {
        // SAFETY: `Node<u32>` is `repr(C, align(64))` and 64 bytes long; its first 32 bytes
        // are `thr` (7 x u32) and `child[0]`, all initialised; the load is unaligned-safe.
        let t = unsafe { _mm256_loadu_si256((node as *const Node<u32>).cast::<__m256i>()) };
        let flip = _mm256_set1_epi32(i32::MIN);
        let key = _mm256_set1_epi32((v ^ 0x8000_0000) as i32);
        let gt = _mm256_cmpgt_epi32(key, _mm256_xor_si256(t, flip));
        let m = _mm256_movemask_ps(_mm256_castsi256_ps(gt)) as u32 & 0x7f;
        m.count_ones() as usize
    }

    /// AVX-512 (VL): an unsigned compare straight into a mask register, popcount.
    pub(crate) struct Avx512;

    impl Isa for Avx512 {
        #[inline(always)]
        fn count_gt(node: &Node<u32>, v: u32) -> usize {
            // SAFETY: only reached from `batch_avx512` / `first_avx512`, compiled with
            // AVX-512 F/VL and only called after `Kernel::Avx512.supported()`.
            unsafe { count_gt_avx512(node, v) }
        }
    }

    #[target_feature(enable = "avx512f,avx512vl,avx2,popcnt")]
    #[inline]
    unsafe fn count_gt_avx512(node: &Node<u32>, v: u32) -> usize {
        // SAFETY: as in `count_gt_avx2`: 32 initialised bytes at the start of the node.
        let t = unsafe { _mm256_loadu_si256((node as *const Node<u32>).cast::<__m256i>()) };
        let m = _mm256_cmpgt_epu32_mask(_mm256_set1_epi32(v as i32), t) & 0x7f;
        m.count_ones() as usize
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,popcnt,bmi1,bmi2")]
unsafe fn batch_avx2(e: &Engine<u32>, keys: &[[u32; LANES]], best: &mut [u32]) {
    e.first_batch_isa::<x86::Avx2>(keys, best)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,popcnt,bmi1,bmi2")]
unsafe fn batch_avx512(e: &Engine<u32>, keys: &[[u32; LANES]], best: &mut [u32]) {
    e.first_batch_isa::<x86::Avx512>(keys, best)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,popcnt,bmi1,bmi2")]
unsafe fn first_avx2(e: &Engine<u32>, key: &[u32; LANES]) -> u32 {
    e.first_isa::<x86::Avx2>(key)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,popcnt,bmi1,bmi2")]
unsafe fn first_avx512(e: &Engine<u32>, key: &[u32; LANES]) -> u32 {
    e.first_isa::<x86::Avx512>(key)
}

/// [`Engine::first_batch_isa`] with kernel `k` (plain code if the CPU lacks its features).
#[inline]
pub(crate) fn first_batch(k: Kernel, e: &Engine<u32>, keys: &[[u32; LANES]], best: &mut [u32]) {
    match k {
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 if Kernel::Avx512.supported() => {
            // SAFETY: the CPU has every feature `batch_avx512` is compiled with (checked).
            unsafe { batch_avx512(e, keys, best) }
        }
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 if Kernel::Avx2.supported() => {
            // SAFETY: the CPU has every feature `batch_avx2` is compiled with (checked).
            unsafe { batch_avx2(e, keys, best) }
        }
        _ => e.first_batch_isa::<Plain>(keys, best),
    }
}

/// [`Engine::first_isa`] with kernel `k` (plain code if the CPU lacks its features).
#[inline]
pub(crate) fn first(k: Kernel, e: &Engine<u32>, key: &[u32; LANES]) -> u32 {
    match k {
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 if Kernel::Avx512.supported() => {
            // SAFETY: the CPU has every feature `first_avx512` is compiled with (checked).
            unsafe { first_avx512(e, key) }
        }
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 if Kernel::Avx2.supported() => {
            // SAFETY: the CPU has every feature `first_avx2` is compiled with (checked).
            unsafe { first_avx2(e, key) }
        }
        _ => e.first_isa::<Plain>(key),
    }
}
