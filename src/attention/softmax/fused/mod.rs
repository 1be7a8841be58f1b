//! Fused `f32` tile kernels of softmax attention (`docs/math.md` section 4) for x86-64 with AVX-512 or
//! AVX2/FMA: the forward and backward of [`super::softmax`] without per-call packing or
//! allocation, every product register-blocked over operands read where they lie or laid out once.
//!
//! ```text
//! forward, per strip of 48 queries (transposed: queries along the vectors) and block of 64 keys:
//!     S^T = scale K_b Q_s^T (+ mask)          keys broadcast from their rows, Q_s^T copied per strip
//!     online softmax down the columns of S^T  (column max, rescale by exp(old - new), exp, sums)
//!     O_s^T += V_b^T P^T                      values broadcast from their rows
//! backward, per strip of 48 query rows and block of 128 keys:
//!     P = exp(scale Q_s K_b^T (+ mask) - lse),  dP = dO_s V_b^T    (key/value panels, once per call)
//!     dS = P .* (dP - delta)
//!     dV_b += P^T dO_s,  dK_b += scale dS^T Q_s,  dQ_s += dS K_b   (Q_s, dO_s copied per strip)
//! ```
//!
//! Every product is `C (+)= alpha A B` ([`accumulate`], or [`panel_product`] for the backward's
//! logits): a block of `MR x NV W` outputs in registers while each step broadcasts `MR` entries of
//! `A` (any strides) and loads one row of `B` (contiguous, usually 64-byte aligned workspace).
//! The backward's logits read keys and values from panels of `NR` keys laid out `d x NR` once per
//! call ([`pack_panels`], `O(n d)`); its other products read `K` rows as stored and the strip's
//! `Q`, `dO` rows from aligned copies. Narrow products (`d <= 2 W`) run in taller blocks. The
//! last strip is padded (repeated or zero queries whose results are discarded). The exponential
//! is [`crate::linalg::exp::exp1`]'s reduction and polynomial in vector registers (AVX2: the same steps;
//! AVX-512: its own rounding and scaling instructions), within 3 ulp of `libm::exp` like it; the
//! ragged ends of rows run as masked vectors (causal rows of a small model are mostly ragged).
//! Workspace: forward `O(48 (d + 64))`, backward panels `n_pad d` plus `O(48 (256 + d))`, all
//! from the caller ([`Blocking::forward_len`], [`Blocking::backward_len`]).
//!
//! Every `unsafe` here is either a call of a kernel body compiled for the instruction set that
//! `crate::arch` detected (through its `multiversion!`) or a raw-pointer access whose bounds follow
//! from the lengths asserted in the entry points
//! ([`forward`], [`backward`]); each function's `# Safety` section states what it relies on.

mod backward;
mod forward;
#[cfg(test)]
mod tests;
mod tiles;

pub(crate) use backward::{backward, BackwardIo};
pub(crate) use forward::forward;

#[cfg(sda_avx512)]
use crate::arch::x86_64::Avx512;
use crate::arch::x86_64::{Avx2, Simd};
use crate::arch::Isa;
use crate::workspace::{self, Req};

/// Keys and values larger than this get forward strips twice as wide (half of this machine's L2).
const WIDE_STRIP_BYTES: usize = 1 << 20;
/// Keys per block of the forward: 64 keys of `d = 64` (16 KiB of values) and the strip's logits
/// (12 KiB) stay in L1 next to the transposed queries and output (128 measured 4-5% slower at
/// n = 2048 and 4096).
const FORWARD_KEY_BLOCK: usize = 64;
/// Keys per block at most (a multiple of every panel width): the strip buffers hold `h` rows of it.
/// 128 keys of `d = 64` (32 KiB of panels, as much of values) stay in L1/L2 while a strip's row
/// groups reuse them (256 and 512 measured 2-5% slower at n = 2048 and 4096).
pub(crate) const KEY_BLOCK: usize = 128;

/// One head's problem in `f32`, lengths as [`super::SoftmaxAttention`] checks them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Problem<'a> {
    pub n: usize,
    pub d_k: usize,
    pub d_v: usize,
    pub scale: f32,
    pub causal: bool,
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub mask: Option<&'a [f32]>,
}

impl Problem<'_> {
    /// Panics unless every slice has the length its dimensions imply (the bounds every raw
    /// access below relies on).
    fn assert_lengths(&self) {
        let (n, d_k, d_v) = (self.n, self.d_k, self.d_v);
        assert!(self.q.len() == n * d_k && self.k.len() == n * d_k && self.v.len() == n * d_v);
        if let Some(mask) = self.mask {
            assert_eq!(mask.len(), n * n);
        }
    }
}

/// Register blocking of one variant: strips of `rows` queries, panels of `panel` keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Blocking {
    /// Rows of one register block (`MR`).
    pub mr: usize,
    /// Keys per panel (`NR = NV W`).
    pub panel: usize,
    /// Query rows per strip (a multiple of `mr`).
    pub strip: usize,
    /// Lanes per vector.
    pub lanes: usize,
    /// Query columns per strip of the forward (a multiple of `lanes`).
    pub forward_cols: usize,
}

impl Blocking {
    fn padded(&self, n: usize) -> usize {
        n.div_ceil(self.panel).saturating_mul(self.panel)
    }
    fn key_block(&self, n: usize) -> usize {
        KEY_BLOCK.min(self.padded(n))
    }
    /// Row stride of the strip buffers of logits: one key block (a multiple of 16, so rows stay
    /// 64-byte aligned; padding the stride against cache-set aliasing measured no faster).
    fn logit_stride(&self, n: usize) -> usize {
        self.key_block(n)
    }
    /// Query rows per strip: [`Self::strip`], or `2 mr` for causal heads, whose strips only see
    /// the keys up to their last row (smaller strips skip more of the hidden upper triangle).
    /// Never more than the sequence rounded up to whole register blocks. Three times as tall
    /// when the keys and values outgrow a third of L2 (the backward streams key and value panels
    /// and the key rows, 1.5 times the forward's bytes, once per strip): +2-5% at n = 2048, +8% at
    /// n = 4096 (d = 64).
    fn strip_rows(&self, n: usize, d_k: usize, d_v: usize, causal: bool) -> usize {
        let strip = if causal { self.strip.min(2 * self.mr) } else { self.max_strip(n, d_k, d_v) };
        strip.min(self.max_strip(n, d_k, d_v))
    }
    /// The largest strip any call with `n` rows uses (sizes the workspace).
    fn max_strip(&self, n: usize, d_k: usize, d_v: usize) -> usize {
        let key_value_bytes = n.saturating_mul(d_k.saturating_add(d_v)).saturating_mul(4);
        let strip = if key_value_bytes.saturating_mul(3) > WIDE_STRIP_BYTES.saturating_mul(2) {
            3 * self.strip
        } else {
            self.strip
        };
        strip.min(n.div_ceil(self.mr).saturating_mul(self.mr))
    }
    /// Queries per strip of the forward, which keeps its strip transposed (queries along the
    /// vectors): `forward_cols` (one vector for causal heads), never more than `n` rounded up to
    /// whole vectors.
    ///
    /// Twice as wide when the keys and values outgrow half of L2 (1 MiB, e.g. n = 4096 at
    /// d = 64): every strip streams all of them, so wider strips halve that traffic (+2-4% at
    /// n = 4096; no gain below).
    fn forward_strip(&self, n: usize, d_k: usize, d_v: usize, causal: bool) -> usize {
        let cols = if causal { self.lanes } else { self.max_forward_strip(n, d_k, d_v) };
        cols.min(self.max_forward_strip(n, d_k, d_v))
    }
    fn max_forward_strip(&self, n: usize, d_k: usize, d_v: usize) -> usize {
        let key_value_bytes = n.saturating_mul(d_k.saturating_add(d_v)).saturating_mul(4);
        let cols = if key_value_bytes > WIDE_STRIP_BYTES { 2 * self.forward_cols } else { self.forward_cols };
        cols.min(n.div_ceil(self.lanes).saturating_mul(self.lanes))
    }
    /// Keys per block of the forward (no panels: the keys are broadcast from their rows).
    fn forward_key_block(&self, n: usize) -> usize {
        FORWARD_KEY_BLOCK.min(n)
    }
    /// The forward's buffers for strips of `ld` queries, in order, per query column of a strip:
    /// the transposed queries (`d_k`), logits of one key block, the transposed output (`d_v`),
    /// running maximum and sum.
    fn forward_parts(&self, ld: usize, n: usize, d_k: usize, d_v: usize) -> [Req; 5] {
        let block = self.forward_key_block(n);
        [Req::array(d_k, ld), Req::array(block, ld), Req::array(d_v, ld), Req::new(ld), Req::new(ld)]
    }
    /// Workspace elements of [`forward`]: up to `ALIGN - 1` to align the rest to 64 bytes, then
    /// the buffers of [`Self::forward_parts`] for the widest strip,
    /// `ALIGN - 1 + strip (d_k + key block + d_v + 2)`.
    pub fn forward_len(&self, n: usize, d_k: usize, d_v: usize) -> usize {
        // `usize::MAX` when it overflows: empty problems may carry huge widths (n = 0,
        // d = usize::MAX / 3), and a saturated length only means that no workspace is long
        // enough for the fused layout.
        let ld = self.max_forward_strip(n, d_k, d_v);
        workspace::aligned(ALIGN, self.forward_parts(ld, n, d_k, d_v)).saturating()
    }
    /// The backward's buffers for strips of `strip` rows, in order: key and value panels
    /// (`n_pad d_k`, `n_pad d_v`), then per strip row a probability row and a `dS` row (one key
    /// block each), a `dQ` row and a copy of the `Q` row (`d_k` rounded up to [`ALIGN`] each), a
    /// copy of the `dO` row (`d_v` rounded up), and `delta`.
    fn backward_parts(&self, strip: usize, n: usize, d_k: usize, d_v: usize) -> [Req; 8] {
        let (n_pad, ld) = (self.padded(n), self.logit_stride(n));
        let (ld_dq, ld_do) = (aligned(d_k), aligned(d_v));
        [
            Req::array(n_pad, d_k),
            Req::array(n_pad, d_v),
            Req::array(strip, ld),
            Req::array(strip, ld),
            Req::array(strip, ld_dq),
            Req::array(strip, ld_dq),
            Req::array(strip, ld_do),
            Req::new(strip),
        ]
    }
    /// Workspace elements of [`backward`]: alignment as in [`Self::forward_len`], then the buffers
    /// of [`Self::backward_parts`] for the tallest strip,
    /// `ALIGN - 1 + n_pad (d_k + d_v) + strip (2 key block + 2 aligned(d_k) + aligned(d_v) + 1)`.
    pub fn backward_len(&self, n: usize, d_k: usize, d_v: usize) -> usize {
        // `usize::MAX` when it overflows, as in `forward_len`.
        let strip = self.max_strip(n, d_k, d_v);
        workspace::aligned(ALIGN, self.backward_parts(strip, n, d_k, d_v)).saturating()
    }
}

/// Elements per 64-byte cache line: buffers start at multiples of it.
const ALIGN: usize = 16;

/// `width` rounded up to a multiple of [`ALIGN`] (`usize::MAX` when that overflows, which no
/// workspace holds).
fn aligned(width: usize) -> usize {
    width.div_ceil(ALIGN).saturating_mul(ALIGN)
}

/// The blocking of `isa`'s tile kernels: `None` for [`Isa::Portable`], which has none (the
/// generic path of the softmax runs), and for AVX-512 where its kernels are not compiled in.
pub(crate) fn blocking(isa: Isa) -> Option<Blocking> {
    match isa {
        #[cfg(sda_avx512)]
        Isa::Avx512 => Some(AVX512_BLOCKING),
        #[cfg(not(sda_avx512))]
        Isa::Avx512 => None,
        Isa::Avx2Fma => Some(AVX2_BLOCKING),
        Isa::Portable => None,
    }
}

#[cfg(sda_avx512)]
const AVX512_BLOCKING: Blocking = Blocking {
    mr: AVX512_MR,
    panel: AVX512_NV * 16,
    strip: AVX512_STRIP,
    lanes: 16,
    forward_cols: AVX512_FORWARD_NV * 16,
};
const AVX2_BLOCKING: Blocking = Blocking {
    mr: AVX2_MR,
    panel: AVX2_NV * 8,
    strip: AVX2_STRIP,
    lanes: 8,
    forward_cols: AVX2_FORWARD_NV * 8,
};

/// AVX-512: register blocks of 6 rows x 4 vectors (24 of the 32 registers accumulate; each step
/// loads one 64-float row of `B` and broadcasts 6 values; 12 x 2 measured 5-8% slower), panels of
/// 64 keys, strips of 48 queries (each key block is read from L2 once per 48 queries; strips of 8
/// rows measured 25% slower at n = 4096, where keys and values no longer fit in L2).
#[cfg(sda_avx512)]
const AVX512_MR: usize = 6;
#[cfg(sda_avx512)]
const AVX512_NV: usize = 4;
#[cfg(sda_avx512)]
const AVX512_STRIP: usize = 48;
/// AVX-512 forward: blocks of 8 rows x 3 vectors (24 accumulators); a strip is 48 queries wide,
/// so each broadcast key or value entry is used once for the whole strip.
#[cfg(sda_avx512)]
const AVX512_FORWARD_MR: usize = 8;
#[cfg(sda_avx512)]
const AVX512_FORWARD_NV: usize = 3;
/// AVX2 forward: blocks of 4 rows x 2 vectors, strips of 16 queries.
const AVX2_FORWARD_MR: usize = 4;
const AVX2_FORWARD_NV: usize = 2;
/// AVX2: 16 registers, so blocks of 4 rows x 2 vectors (8 accumulators), panels of 16 keys.
const AVX2_MR: usize = 4;
const AVX2_NV: usize = 2;
const AVX2_STRIP: usize = 16;
