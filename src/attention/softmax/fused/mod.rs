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
//! Every `unsafe` here is either a call of a `target_feature` function after run-time detection or
//! a raw-pointer access whose bounds follow from the lengths asserted in the entry points
//! ([`forward`], [`backward`]); each function's `# Safety` section states what it relies on.

use core::arch::x86_64::{
    __m256, __m256i, _mm256_add_epi32, _mm256_add_ps, _mm256_blendv_ps, _mm256_castps256_ps128,
    _mm256_castps_si256, _mm256_castsi256_ps, _mm256_cmp_ps, _mm256_extractf128_ps, _mm256_fmadd_ps,
    _mm256_fnmadd_ps, _mm256_loadu_ps, _mm256_loadu_si256, _mm256_maskload_ps, _mm256_maskstore_ps,
    _mm256_max_ps, _mm256_min_ps, _mm256_mul_ps, _mm256_set1_epi32, _mm256_set1_ps, _mm256_setzero_ps,
    _mm256_slli_epi32, _mm256_storeu_ps, _mm256_sub_epi32, _mm256_sub_ps, _mm_add_ps, _mm_cvtss_f32,
    _mm_movehl_ps, _mm_shuffle_ps, _CMP_GT_OQ as CMP_GT_256, _CMP_LT_OQ as CMP_LT_256,
};
#[cfg(sda_avx512)]
use core::arch::x86_64::{
    __m512, __mmask16, _mm512_add_ps, _mm512_cmp_ps_mask, _mm512_fmadd_ps, _mm512_fnmadd_ps, _mm512_loadu_ps,
    _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps, _mm512_maskz_scalef_ps, _mm512_max_ps, _mm512_min_ps,
    _mm512_mul_ps, _mm512_reduce_add_ps, _mm512_roundscale_ps, _mm512_set1_ps, _mm512_setzero_ps,
    _mm512_storeu_ps, _mm512_sub_ps, _CMP_NLT_UQ, _MM_FROUND_NO_EXC, _MM_FROUND_TO_NEAREST_INT,
};

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

const LOG2_E: f32 = core::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
const ROUND_MAGIC: f32 = 12_582_912.0;
const EXP_HI: f32 = 88.72;
const EXP_LO: f32 = -86.5;
/// Clamp of the AVX-512 exponential: just above `ln(f32::MAX) = 88.7228`, so that every larger
/// input overflows to `+inf` in the final scaling.
#[cfg(sda_avx512)]
const EXP_HI_512: f32 = 88.73;

/// One instruction set's vector of `W` lanes of `f32`. Every method is `unsafe` because it runs an
/// instruction the CPU must have (the implementor's features), and the pointer methods read or
/// write `W` (or `len`) consecutive `f32` at the pointer, which must be valid for that.
pub(crate) trait Simd {
    /// Lanes per vector.
    const W: usize;
    /// The vector type.
    type V: Copy;
    unsafe fn zero() -> Self::V;
    unsafe fn splat(x: f32) -> Self::V;
    unsafe fn load(ptr: *const f32) -> Self::V;
    unsafe fn store(ptr: *mut f32, v: Self::V);
    /// Lanes `[0, len)` from `ptr` (only those are read), zero elsewhere; `0 < len < W`.
    unsafe fn load_partial(ptr: *const f32, len: usize) -> Self::V;
    /// Lanes `[0, len)` to `ptr` (only those are written); `0 < len < W`.
    unsafe fn store_partial(ptr: *mut f32, v: Self::V, len: usize);
    /// `a * b + c`, one rounding.
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise maximum, `acc` when `x` is NaN.
    unsafe fn max_skip_nan(x: Self::V, acc: Self::V) -> Self::V;
    /// Sum of the lanes.
    unsafe fn reduce_add(v: Self::V) -> f32;
    /// [`crate::linalg::exp::exp1`] (fused) lane by lane.
    unsafe fn exp(x: Self::V) -> Self::V;
}

/// AVX-512F (with FMA): 16 lanes.
#[cfg(sda_avx512)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx512;

#[cfg(sda_avx512)]
#[allow(clippy::incompatible_msrv)] // only compiled by Rust >= 1.89 (build.rs)
impl Avx512 {
    #[inline(always)]
    fn mask(len: usize) -> __mmask16 {
        ((1u32 << len) - 1) as __mmask16
    }
}

#[cfg(sda_avx512)]
#[allow(clippy::incompatible_msrv)] // only compiled by Rust >= 1.89 (build.rs)
impl Simd for Avx512 {
    const W: usize = 16;
    type V = __m512;
    #[inline(always)]
    unsafe fn zero() -> __m512 {
        _mm512_setzero_ps()
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m512 {
        _mm512_set1_ps(x)
    }
    #[inline(always)]
    unsafe fn load(ptr: *const f32) -> __m512 {
        // SAFETY: the caller provides 16 readable f32 at `ptr` and AVX-512F.
        unsafe { _mm512_loadu_ps(ptr) }
    }
    #[inline(always)]
    unsafe fn store(ptr: *mut f32, v: __m512) {
        // SAFETY: the caller provides 16 writable f32 at `ptr` and AVX-512F.
        unsafe { _mm512_storeu_ps(ptr, v) }
    }
    #[inline(always)]
    unsafe fn load_partial(ptr: *const f32, len: usize) -> __m512 {
        // SAFETY: masked-off lanes are not accessed (no fault); the caller provides `len` readable f32.
        unsafe { _mm512_maskz_loadu_ps(Self::mask(len), ptr) }
    }
    #[inline(always)]
    unsafe fn store_partial(ptr: *mut f32, v: __m512, len: usize) {
        // SAFETY: as `load_partial`, for writes.
        unsafe { _mm512_mask_storeu_ps(ptr, Self::mask(len), v) }
    }
    #[inline(always)]
    unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
        _mm512_fmadd_ps(a, b, c)
    }
    #[inline(always)]
    unsafe fn add(a: __m512, b: __m512) -> __m512 {
        _mm512_add_ps(a, b)
    }
    #[inline(always)]
    unsafe fn sub(a: __m512, b: __m512) -> __m512 {
        _mm512_sub_ps(a, b)
    }
    #[inline(always)]
    unsafe fn mul(a: __m512, b: __m512) -> __m512 {
        _mm512_mul_ps(a, b)
    }
    #[inline(always)]
    unsafe fn max_skip_nan(x: __m512, acc: __m512) -> __m512 {
        // vmaxps returns its second operand when either is NaN.
        _mm512_max_ps(x, acc)
    }
    #[inline(always)]
    unsafe fn reduce_add(v: __m512) -> f32 {
        _mm512_reduce_add_ps(v)
    }
    #[inline(always)]
    unsafe fn exp(x: __m512) -> __m512 {
        // The reduction and polynomial of `exp1`, with AVX-512's own rounding (vrndscaleps) and
        // exact scaling by 2^k (vscalefps, which overflows to +inf past ln(f32::MAX)). Only the
        // upper clamp is needed (it maps +inf to an overflowing finite value; vminps returns its
        // second operand, x, when either is NaN): lanes below -86.5, including -inf (whose
        // reduction is NaN), are zeroed by the mask, and NaN lanes kept (not-less-than, unordered).
        let clamped = _mm512_min_ps(_mm512_set1_ps(EXP_HI_512), x);
        let k = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(
            clamped,
            _mm512_set1_ps(LOG2_E),
        ));
        let r =
            _mm512_fnmadd_ps(k, _mm512_set1_ps(LN2_LO), _mm512_fnmadd_ps(k, _mm512_set1_ps(LN2_HI), clamped));
        let mut p = _mm512_fmadd_ps(r, _mm512_set1_ps(1.0 / 40320.0), _mm512_set1_ps(1.0 / 5040.0));
        for c in [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
            p = _mm512_fmadd_ps(r, p, _mm512_set1_ps(c));
        }
        let keep = _mm512_cmp_ps_mask::<_CMP_NLT_UQ>(x, _mm512_set1_ps(EXP_LO));
        _mm512_maskz_scalef_ps(keep, p, k)
    }
}

/// AVX2 with FMA: 8 lanes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx2;

/// `-1` (all bits) in the first 8 lanes, `0` in the next 8: `maskload` masks by sliding a window.
static AVX2_MASKS: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];

impl Avx2 {
    /// The lane mask of the first `len` lanes (`len <= 8`).
    #[inline(always)]
    unsafe fn mask(len: usize) -> __m256i {
        // SAFETY: `8 - len` is in `0..=8`, so the 8 loaded i32 lie inside the 16-element table.
        unsafe { _mm256_loadu_si256(AVX2_MASKS.as_ptr().add(8 - len).cast()) }
    }
}

impl Simd for Avx2 {
    const W: usize = 8;
    type V = __m256;
    #[inline(always)]
    unsafe fn zero() -> __m256 {
        _mm256_setzero_ps()
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m256 {
        _mm256_set1_ps(x)
    }
    #[inline(always)]
    unsafe fn load(ptr: *const f32) -> __m256 {
        // SAFETY: the caller provides 8 readable f32 at `ptr` and AVX.
        unsafe { _mm256_loadu_ps(ptr) }
    }
    #[inline(always)]
    unsafe fn store(ptr: *mut f32, v: __m256) {
        // SAFETY: the caller provides 8 writable f32 at `ptr` and AVX.
        unsafe { _mm256_storeu_ps(ptr, v) }
    }
    #[inline(always)]
    unsafe fn load_partial(ptr: *const f32, len: usize) -> __m256 {
        // SAFETY: vmaskmovps does not access masked-off lanes; the caller provides `len` readable f32.
        unsafe { _mm256_maskload_ps(ptr, Self::mask(len)) }
    }
    #[inline(always)]
    unsafe fn store_partial(ptr: *mut f32, v: __m256, len: usize) {
        // SAFETY: as `load_partial`, for writes.
        unsafe { _mm256_maskstore_ps(ptr, Self::mask(len), v) }
    }
    #[inline(always)]
    unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
        _mm256_fmadd_ps(a, b, c)
    }
    #[inline(always)]
    unsafe fn add(a: __m256, b: __m256) -> __m256 {
        _mm256_add_ps(a, b)
    }
    #[inline(always)]
    unsafe fn sub(a: __m256, b: __m256) -> __m256 {
        _mm256_sub_ps(a, b)
    }
    #[inline(always)]
    unsafe fn mul(a: __m256, b: __m256) -> __m256 {
        _mm256_mul_ps(a, b)
    }
    #[inline(always)]
    unsafe fn max_skip_nan(x: __m256, acc: __m256) -> __m256 {
        // vmaxps returns its second operand when either is NaN.
        _mm256_max_ps(x, acc)
    }
    #[inline(always)]
    unsafe fn reduce_add(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ps(s, _mm_shuffle_ps::<0b01>(s, s)))
    }
    #[inline(always)]
    unsafe fn exp(x: __m256) -> __m256 {
        // As `Avx512::exp`; vmaxps/vminps keep NaN in the second operand.
        let clamped = _mm256_min_ps(_mm256_set1_ps(EXP_HI), _mm256_max_ps(_mm256_set1_ps(EXP_LO), x));
        let shifted = _mm256_fmadd_ps(clamped, _mm256_set1_ps(LOG2_E), _mm256_set1_ps(ROUND_MAGIC));
        let k = _mm256_sub_ps(shifted, _mm256_set1_ps(ROUND_MAGIC));
        let k_bits =
            _mm256_sub_epi32(_mm256_castps_si256(shifted), _mm256_set1_epi32(ROUND_MAGIC.to_bits() as i32));
        let r =
            _mm256_fnmadd_ps(k, _mm256_set1_ps(LN2_LO), _mm256_fnmadd_ps(k, _mm256_set1_ps(LN2_HI), clamped));
        let mut p = _mm256_fmadd_ps(r, _mm256_set1_ps(1.0 / 40320.0), _mm256_set1_ps(1.0 / 5040.0));
        for c in [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
            p = _mm256_fmadd_ps(r, p, _mm256_set1_ps(c));
        }
        let half_pow2 =
            _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(k_bits, _mm256_set1_epi32(126))));
        let y = _mm256_mul_ps(_mm256_mul_ps(p, half_pow2), _mm256_set1_ps(2.0));
        let above = _mm256_cmp_ps::<CMP_GT_256>(x, _mm256_set1_ps(EXP_HI));
        let below = _mm256_cmp_ps::<CMP_LT_256>(x, _mm256_set1_ps(EXP_LO));
        let y = _mm256_blendv_ps(y, _mm256_set1_ps(f32::INFINITY), above);
        _mm256_blendv_ps(y, _mm256_setzero_ps(), below)
    }
}

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
        let key_value_bytes = n.saturating_mul(d_k + d_v).saturating_mul(4);
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
        let key_value_bytes = n.saturating_mul(d_k + d_v).saturating_mul(4);
        let cols = if key_value_bytes > WIDE_STRIP_BYTES { 2 * self.forward_cols } else { self.forward_cols };
        cols.min(n.div_ceil(self.lanes).saturating_mul(self.lanes))
    }
    /// Keys per block of the forward (no panels: the keys are broadcast from their rows).
    fn forward_key_block(&self, n: usize) -> usize {
        FORWARD_KEY_BLOCK.min(n)
    }
    /// Workspace elements of [`forward`]: up to `ALIGN - 1` to align the rest to 64 bytes, then
    /// per query column of a strip: the transposed queries (`d_k`), logits of one key block, the
    /// transposed output (`d_v`), running maximum and sum.
    pub fn forward_len(&self, n: usize, d_k: usize, d_v: usize) -> usize {
        // Saturating: empty problems may carry huge widths (n = 0, d = usize::MAX / 3), and a
        // saturated length only means that no workspace is long enough for the fused layout.
        let per_column = d_k.saturating_add(self.forward_key_block(n)).saturating_add(d_v).saturating_add(2);
        (ALIGN - 1).saturating_add(self.max_forward_strip(n, d_k, d_v).saturating_mul(per_column))
    }
    /// Workspace elements of [`backward`]: alignment as in [`Self::forward_len`], key and value
    /// panels `n_pad (d_k + d_v)`, then per strip row a probability row and a `dS` row, a `dQ` row,
    /// copies of the `Q` and `dO` rows, and `delta`.
    pub fn backward_len(&self, n: usize, d_k: usize, d_v: usize) -> usize {
        // Saturating, as in `forward_len`.
        let per_row = (2 * self.logit_stride(n))
            .saturating_add(aligned(d_k).saturating_mul(2))
            .saturating_add(aligned(d_v))
            .saturating_add(1);
        (ALIGN - 1)
            .saturating_add(self.padded(n).saturating_mul(d_k.saturating_add(d_v)))
            .saturating_add(self.max_strip(n, d_k, d_v).saturating_mul(per_row))
    }
}

/// Elements per 64-byte cache line: buffers start at multiples of it.
const ALIGN: usize = 16;

/// `width` rounded up to a multiple of [`ALIGN`].
fn aligned(width: usize) -> usize {
    width.div_ceil(ALIGN) * ALIGN
}

/// The workspace from its first 64-byte-aligned element (at most `ALIGN - 1` skipped).
fn align_workspace(workspace: &mut [f32]) -> &mut [f32] {
    let skip = workspace.as_ptr().align_offset(64).min(ALIGN - 1).min(workspace.len());
    &mut workspace[skip..]
}

/// The instruction sets compiled in, widest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    #[cfg(sda_avx512)]
    Avx512,
    Avx2,
}

impl Isa {
    /// The widest instruction set the running CPU has, if any.
    pub fn detect() -> Option<Isa> {
        #[cfg(sda_avx512)]
        if crate::arch::has_avx512() {
            return Some(Isa::Avx512);
        }
        if crate::arch::has_avx2_fma() {
            return Some(Isa::Avx2);
        }
        None
    }

    /// Every instruction set the running CPU has (for tests).
    #[cfg(test)]
    pub fn all_available() -> std::vec::Vec<Isa> {
        let mut isas = std::vec::Vec::new();
        #[cfg(sda_avx512)]
        if crate::arch::has_avx512() {
            isas.push(Isa::Avx512);
        }
        if crate::arch::has_avx2_fma() {
            isas.push(Isa::Avx2);
        }
        isas
    }

    pub fn blocking(self) -> Blocking {
        match self {
            #[cfg(sda_avx512)]
            Isa::Avx512 => Blocking {
                mr: AVX512_MR,
                panel: AVX512_NV * 16,
                strip: AVX512_STRIP,
                lanes: 16,
                forward_cols: AVX512_FORWARD_NV * 16,
            },
            Isa::Avx2 => Blocking {
                mr: AVX2_MR,
                panel: AVX2_NV * 8,
                strip: AVX2_STRIP,
                lanes: 8,
                forward_cols: AVX2_FORWARD_NV * 8,
            },
        }
    }
}

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

/// Lays the rows of `x` (`n x width`) out as panels of `panel` rows, each stored transposed
/// (`width x panel`, row `p` holding element `p` of the panel's rows), zero-padded to
/// `n_pad = ceil(n / panel) panel` rows: `out[t width panel + p panel + c] = x[(t panel + c) width + p]`.
fn pack_panels(x: &[f32], n: usize, width: usize, panel: usize, out: &mut [f32]) {
    let n_pad = n.div_ceil(panel) * panel;
    if width == 0 {
        return;
    }
    let out = &mut out[..n_pad * width];
    for (t, block) in out.chunks_exact_mut(width * panel).enumerate() {
        for c in 0..panel {
            let row = t * panel + c;
            if row < n {
                for (p, &value) in x[row * width..(row + 1) * width].iter().enumerate() {
                    block[p * panel + c] = value;
                }
            } else {
                for p in 0..width {
                    block[p * panel + c] = 0.0;
                }
            }
        }
    }
}

/// `out[r][c] = alpha sum_p rows[r][p] panel[p NR + c]` for `r < MR`, `c < NR = NV W`.
///
/// # Safety
/// The CPU has `S`'s features; each `rows[r]` is valid for `depth` reads, `panel` for
/// `depth NR`, `out` for writes of `NR` elements at `out + r ld_out` for every `r < MR`.
#[inline(always)]
unsafe fn panel_product<S: Simd, const MR: usize, const NV: usize>(
    rows: &[*const f32; MR],
    depth: usize,
    panel: *const f32,
    alpha: f32,
    out: *mut f32,
    ld_out: usize,
) {
    let nr = NV * S::W;
    // SAFETY: every access below is inside the ranges the caller guarantees: rows[r] + p with
    // p < depth, panel + p nr + v W + [0, W) with p < depth, v < NV, and out + r ld_out + v W + [0, W).
    unsafe {
        let mut acc = [[S::zero(); NV]; MR];
        for p in 0..depth {
            let mut b = [S::zero(); NV];
            for (v, bv) in b.iter_mut().enumerate() {
                *bv = S::load(panel.add(p * nr + v * S::W));
            }
            for r in 0..MR {
                let a = S::splat(*rows[r].add(p));
                for v in 0..NV {
                    acc[r][v] = S::fma(a, b[v], acc[r][v]);
                }
            }
        }
        let alpha = S::splat(alpha);
        for (r, acc_r) in acc.iter().enumerate() {
            for (v, &acc_rv) in acc_r.iter().enumerate() {
                S::store(out.add(r * ld_out + v * S::W), S::mul(acc_rv, alpha));
            }
        }
    }
}

/// How [`accumulate`] writes `C`: `C = value A B`, or `C += value A B` when `accumulate`.
#[derive(Clone, Copy)]
struct Alpha {
    value: f32,
    accumulate: bool,
}

/// `C += alpha A B`.
const fn add(value: f32) -> Alpha {
    Alpha { value, accumulate: true }
}

/// Operand `A` of [`accumulate`]: element `(r, j)` at `ptr + r row_stride + j col_stride`.
#[derive(Clone, Copy)]
struct Broadcast {
    ptr: *const f32,
    row_stride: usize,
    col_stride: usize,
}

/// `C[r][c0 + c] += alpha sum_j A[r][j] B[j][c0 + c]` for `r < R`, `c < NV W` (the last vector
/// only `len` lanes when `PARTIAL`).
///
/// # Safety
/// The CPU has `S`'s features; `A` valid at `(r, j)` for `r < R, j < inner`; `B` (`b + j ld_b`)
/// and `C` (`c + r ld_c`) valid for the columns `[c0, c0 + NV W)` (or `[c0, c0 + len)`).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn accumulate_block<S: Simd, const R: usize, const NV: usize, const PARTIAL: bool>(
    a: Broadcast,
    inner: usize,
    b: *const f32,
    ld_b: usize,
    c: *mut f32,
    ld_c: usize,
    c0: usize,
    len: usize,
    alpha: Alpha,
) {
    // SAFETY: all accesses are in the ranges the caller guarantees (see above); partial vectors
    // touch only `len` lanes.
    unsafe {
        let mut acc = [[S::zero(); NV]; R];
        for j in 0..inner {
            let row = b.add(j * ld_b + c0);
            let mut bv = [S::zero(); NV];
            for (v, x) in bv.iter_mut().enumerate() {
                let ptr = row.add(v * S::W);
                *x = if PARTIAL && v + 1 == NV { S::load_partial(ptr, len) } else { S::load(ptr) };
            }
            let a_j = a.ptr.add(j * a.col_stride);
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let s = S::splat(*a_j.add(r * a.row_stride));
                for (acc_rv, &b_v) in acc_r.iter_mut().zip(&bv) {
                    *acc_rv = S::fma(s, b_v, *acc_rv);
                }
            }
        }
        let (scale, add) = (S::splat(alpha.value), alpha.accumulate);
        for (r, acc_r) in acc.iter().enumerate() {
            let c_row = c.add(r * ld_c + c0);
            for (v, &acc_rv) in acc_r.iter().enumerate() {
                let ptr = c_row.add(v * S::W);
                if PARTIAL && v + 1 == NV {
                    let new = if add {
                        S::fma(acc_rv, scale, S::load_partial(ptr, len))
                    } else {
                        S::mul(acc_rv, scale)
                    };
                    S::store_partial(ptr, new, len);
                } else {
                    let new = if add { S::fma(acc_rv, scale, S::load(ptr)) } else { S::mul(acc_rv, scale) };
                    S::store(ptr, new);
                }
            }
        }
    }
}

/// `C += alpha A B` for `R` rows of `C` over all `width` columns: chunks of `NV` vectors, then
/// single vectors, the last one partial.
///
/// # Safety
/// As [`accumulate_block`] for all columns `[0, width)`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn accumulate_rows<S: Simd, const R: usize, const NV: usize>(
    a: Broadcast,
    inner: usize,
    b: *const f32,
    ld_b: usize,
    c: *mut f32,
    ld_c: usize,
    width: usize,
    alpha: Alpha,
) {
    let mut c0 = 0;
    // SAFETY: every call covers columns inside [0, width), as the caller guarantees.
    unsafe {
        while c0 + NV * S::W <= width {
            accumulate_block::<S, R, NV, false>(a, inner, b, ld_b, c, ld_c, c0, 0, alpha);
            c0 += NV * S::W;
        }
        while c0 + S::W <= width {
            accumulate_block::<S, R, 1, false>(a, inner, b, ld_b, c, ld_c, c0, 0, alpha);
            c0 += S::W;
        }
        if c0 < width {
            accumulate_block::<S, R, 1, true>(a, inner, b, ld_b, c, ld_c, c0, width - c0, alpha);
        }
    }
}

/// Rows of a narrow product ([`accumulate`] with `width <= 2 W`): 12 rows x one vector gives 12
/// independent multiply-add chains where the wide blocks would give `MR` (6 on AVX-512).
const NARROW_ROWS: usize = 12;

/// `C += alpha A B` for `R` rows and `0 < width <= 2 W` columns, in one block of one or two
/// vectors (the last one partial unless `width` is a multiple of `W`).
///
/// # Safety
/// As [`accumulate_block`] for all columns `[0, width)`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn narrow_block<S: Simd, const R: usize>(
    a: Broadcast,
    inner: usize,
    b: *const f32,
    ld_b: usize,
    c: *mut f32,
    ld_c: usize,
    width: usize,
    alpha: Alpha,
) {
    let w = S::W;
    // SAFETY: each call covers exactly the columns [0, width), as the caller guarantees.
    unsafe {
        match width {
            0 => {}
            x if x == 2 * w => accumulate_block::<S, R, 2, false>(a, inner, b, ld_b, c, ld_c, 0, 0, alpha),
            x if x > w => accumulate_block::<S, R, 2, true>(a, inner, b, ld_b, c, ld_c, 0, x - w, alpha),
            x if x == w => accumulate_block::<S, R, 1, false>(a, inner, b, ld_b, c, ld_c, 0, 0, alpha),
            x => accumulate_block::<S, R, 1, true>(a, inner, b, ld_b, c, ld_c, 0, x, alpha),
        }
    }
}

/// `C += alpha A B` for `rows` rows of `C` (`rows x width`, row stride `ld_c`), `A` `rows x inner`
/// broadcast, `B` `inner x width` (row stride `ld_b`): blocks of `MR` rows, then of 4, 2 and
/// single rows.
///
/// # Safety
/// As [`accumulate_block`] for all rows `[0, rows)` and columns `[0, width)`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn accumulate<S: Simd, const MR: usize, const NV: usize>(
    rows: usize,
    a: Broadcast,
    inner: usize,
    b: *const f32,
    ld_b: usize,
    c: *mut f32,
    ld_c: usize,
    width: usize,
    alpha: Alpha,
) {
    // Narrow products (the small heads of a model, d <= 2 W): blocks of NARROW_ROWS rows x one or
    // two vectors, so that enough independent accumulators hide the multiply-add latency.
    let mut start = 0;
    if width <= 2 * S::W && MR < NARROW_ROWS {
        start = rows - rows % NARROW_ROWS;
        for r0 in (0..start).step_by(NARROW_ROWS) {
            // SAFETY: rows [r0, r0 + NARROW_ROWS) lie in [0, rows), columns in [0, width).
            unsafe {
                let a_r = Broadcast { ptr: a.ptr.add(r0 * a.row_stride), ..a };
                narrow_block::<S, NARROW_ROWS>(a_r, inner, b, ld_b, c.add(r0 * ld_c), ld_c, width, alpha);
            }
        }
    }
    let full = start + (rows - start) / MR * MR;
    let quads = if MR > 4 { full + (rows - full) / 4 * 4 } else { full };
    let pairs = if MR > 2 { quads + (rows - quads) / 2 * 2 } else { quads };
    // SAFETY: row blocks [r0, r0 + MR), [r0, r0 + 4), [r0, r0 + 2) and single rows lie in
    // [0, rows), as the caller guarantees; A and C are offset to the block's first row.
    unsafe {
        for r0 in (start..full).step_by(MR) {
            let a_r = Broadcast { ptr: a.ptr.add(r0 * a.row_stride), ..a };
            accumulate_rows::<S, MR, NV>(a_r, inner, b, ld_b, c.add(r0 * ld_c), ld_c, width, alpha);
        }
        for r0 in (full..quads).step_by(4) {
            let a_r = Broadcast { ptr: a.ptr.add(r0 * a.row_stride), ..a };
            accumulate_rows::<S, 4, NV>(a_r, inner, b, ld_b, c.add(r0 * ld_c), ld_c, width, alpha);
        }
        for r0 in (quads..pairs).step_by(2) {
            let a_r = Broadcast { ptr: a.ptr.add(r0 * a.row_stride), ..a };
            accumulate_rows::<S, 2, NV>(a_r, inner, b, ld_b, c.add(r0 * ld_c), ld_c, width, alpha);
        }
        for r0 in pairs..rows {
            let a_r = Broadcast { ptr: a.ptr.add(r0 * a.row_stride), ..a };
            accumulate_rows::<S, 1, NV>(a_r, inner, b, ld_b, c.add(r0 * ld_c), ld_c, width, alpha);
        }
    }
}

/// `x_i = e^{x_i - shift}`, returning the sum of the new values.
#[inline(always)]
unsafe fn exp_shifted_sum<S: Simd>(x: &mut [f32], shift: f32) -> f32 {
    let full = x.len() - x.len() % S::W;
    // SAFETY: each access covers x[i..i + W] with i + W <= full <= x.len(), the partial ones the
    // x.len() - full < W elements from full.
    unsafe {
        let shift = S::splat(shift);
        let mut acc = S::zero();
        for i in (0..full).step_by(S::W) {
            let ptr = x.as_mut_ptr().add(i);
            let y = S::exp(S::sub(S::load(ptr), shift));
            S::store(ptr, y);
            acc = S::add(acc, y);
        }
        if full < x.len() {
            let (ptr, len) = (x.as_mut_ptr().add(full), x.len() - full);
            S::store_partial(ptr, S::exp(S::sub(S::load_partial(ptr, len), shift)), len);
            acc = S::add(acc, S::load_partial(ptr, len)); // zero beyond the tail
        }
        S::reduce_add(acc)
    }
}

/// Pointers to the `MR` query rows `i0 + r` (clamped to the last row `n - 1`) of a row-major
/// `n x width` matrix.
#[inline(always)]
fn clamped_rows<const MR: usize>(x: &[f32], n: usize, width: usize, i0: usize) -> [*const f32; MR] {
    core::array::from_fn(|r| x[(i0 + r).min(n - 1) * width..].as_ptr())
}

/// Fills `buffer` (`strip` rows of stride `ld`, `strip` a multiple of `MR`) with `scale X_s Y_b^T` for strip rows
/// `[i0, i0 + strip)` of `x` (`n x width`, rows clamped) against the `panels` of keys
/// `[j0, j0 + bk)` (`j0` a multiple of the panel width), whole panels.
///
/// # Safety
/// The CPU has `S`'s features; `x.len() == n width`, `n > 0`; `panels` holds `ceil((j0 + bk) / NR)`
/// panels of `width x NR`; `buffer` holds `strip ld` elements with `ceil(bk / NR) NR <= ld`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn logits<S: Simd, const MR: usize, const NV: usize>(
    x: &[f32],
    n: usize,
    width: usize,
    i0: usize,
    strip: usize,
    panels: &[f32],
    j0: usize,
    bk: usize,
    scale: f32,
    buffer: &mut [f32],
    ld: usize,
) {
    let nr = NV * S::W;
    for g in (0..strip).step_by(MR) {
        let rows = clamped_rows::<MR>(x, n, width, i0 + g);
        for t in 0..bk.div_ceil(nr) {
            let panel = &panels[(j0 + t * nr) * width..(j0 + (t + 1) * nr) * width];
            let out = &mut buffer[g * ld + t * nr..(g + MR - 1) * ld + (t + 1) * nr];
            // SAFETY: rows are `width` long rows of x; the panel slice has width nr elements; out
            // spans rows g..g + MR of the buffer at columns [t nr, (t + 1) nr), inside each row as
            // (t + 1) nr <= ceil(bk / nr) nr <= ld. The CPU has the features (caller).
            unsafe { panel_product::<S, MR, NV>(&rows, width, panel.as_ptr(), scale, out.as_mut_ptr(), ld) };
        }
    }
}

/// The fused forward of one head in `f32` with the given instruction set: `out`, `lse` as
/// [`super::SoftmaxAttention::forward`]. Returns `false` (touching nothing) when the
/// workspace is shorter than [`Blocking::forward_len`].
///
/// Panics if a length disagrees with the dimensions (validated callers never trigger this).
pub(crate) fn forward(
    isa: Isa,
    problem: &Problem<'_>,
    out: &mut [f32],
    lse: &mut [f32],
    workspace: &mut [f32],
) -> bool {
    problem.assert_lengths();
    assert!(out.len() == problem.n * problem.d_v && lse.len() == problem.n);
    if workspace.len() < isa.blocking().forward_len(problem.n, problem.d_k, problem.d_v) {
        return false;
    }
    if problem.n == 0 {
        return true;
    }
    match isa {
        // SAFETY (both arms): `isa` came from run-time detection of these features (`Isa::detect`
        // or `all_available`), the only precondition of the target_feature functions.
        #[cfg(sda_avx512)]
        Isa::Avx512 => unsafe { forward_avx512(problem, out, lse, workspace) },
        Isa::Avx2 => unsafe { forward_avx2(problem, out, lse, workspace) },
    }
    true
}

/// # Safety
/// The CPU has AVX-512F and FMA.
#[cfg(sda_avx512)]
#[allow(clippy::incompatible_msrv)] // only compiled by Rust >= 1.89 (build.rs)
#[target_feature(enable = "avx512f,fma")]
unsafe fn forward_avx512(problem: &Problem<'_>, out: &mut [f32], lse: &mut [f32], workspace: &mut [f32]) {
    // SAFETY: the features are the caller's precondition; lengths were asserted by `forward`.
    unsafe {
        forward_body::<Avx512, AVX512_FORWARD_MR, AVX512_FORWARD_NV>(
            Isa::Avx512.blocking(),
            problem,
            out,
            lse,
            workspace,
        )
    }
}

/// # Safety
/// The CPU has AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn forward_avx2(problem: &Problem<'_>, out: &mut [f32], lse: &mut [f32], workspace: &mut [f32]) {
    // SAFETY: the features are the caller's precondition; lengths were asserted by `forward`.
    unsafe {
        forward_body::<Avx2, AVX2_FORWARD_MR, AVX2_FORWARD_NV>(
            Isa::Avx2.blocking(),
            problem,
            out,
            lse,
            workspace,
        )
    }
}

/// # Safety
/// The CPU has `S`'s features; `n > 0`; the lengths asserted by [`forward`] hold and the
/// workspace has [`Blocking::forward_len`] elements; `blocking.forward_strip` is a multiple of `W`.
#[inline(always)]
unsafe fn forward_body<S: Simd, const MR: usize, const NV: usize>(
    blocking: Blocking,
    problem: &Problem<'_>,
    out: &mut [f32],
    lse: &mut [f32],
    workspace: &mut [f32],
) {
    let Problem { n, d_k, d_v, scale, causal, q, k, v, mask } = *problem;
    let (ld, block) = (blocking.forward_strip(n, d_k, d_v, causal), blocking.forward_key_block(n));
    let (q_t, rest) = align_workspace(workspace).split_at_mut(d_k * ld);
    let (logit_t, rest) = rest.split_at_mut(block * ld);
    let (out_t, rest) = rest.split_at_mut(d_v * ld);
    let (shift, rest) = rest.split_at_mut(ld);
    let row_sum = &mut rest[..ld];
    for i0 in (0..n).step_by(ld) {
        let cols = ld.min(n - i0); // the strip's queries; columns [cols, width) are padding
        let width = cols.div_ceil(S::W) * S::W;
        // Q^T of the strip (d_k x width), zero in the padding columns.
        if cols == ld {
            crate::linalg::kernel::transpose(ld, d_k, &q[i0 * d_k..(i0 + ld) * d_k], &mut q_t[..d_k * ld]);
        } else {
            for c in 0..cols {
                for (p, &x) in q[(i0 + c) * d_k..(i0 + c + 1) * d_k].iter().enumerate() {
                    q_t[p * ld + c] = x;
                }
            }
            for p in 0..d_k {
                q_t[p * ld + cols..p * ld + width].fill(0.0);
            }
        }
        out_t.fill(0.0);
        // The running maxima, floored at f32::MIN: an all-masked column keeps MIN, whose
        // exponentials exp(-inf - MIN) are 0 and whose rescalings exp(MIN - MIN) are 1.
        shift.fill(f32::MIN);
        row_sum.fill(0.0);
        let j_end = if causal { i0 + cols } else { n };
        for j0 in (0..j_end).step_by(block) {
            let bk = block.min(j_end - j0);
            let keys = Broadcast { ptr: k[j0 * d_k..].as_ptr(), row_stride: d_k, col_stride: 1 };
            // SAFETY: A = k rows [j0, j0 + bk) (<= n) of d_k; B = q_t, d_k rows of ld; C =
            // logit_t, bk <= block rows of ld. Features: caller.
            unsafe {
                let c = logit_t.as_mut_ptr();
                let overwrite = Alpha { value: scale, accumulate: false };
                accumulate::<S, MR, NV>(bk, keys, d_k, q_t.as_ptr(), ld, c, ld, width, overwrite);
            }
            let plain = mask.is_none() && !causal && cols == width; // nothing to hide
            for jr in (0..bk).filter(|_| !plain) {
                let (j, row) = (j0 + jr, &mut logit_t[jr * ld..jr * ld + width]);
                if let Some(mask) = mask {
                    for (c, a) in row[..cols].iter_mut().enumerate() {
                        *a += mask[(i0 + c) * n + j];
                    }
                }
                // Queries i < j do not see key j when causal; padding columns see nothing.
                let hidden = if causal { (j.saturating_sub(i0)).min(cols) } else { 0 };
                row[..hidden].fill(f32::NEG_INFINITY);
                row[cols..].fill(f32::NEG_INFINITY);
            }
            // SAFETY: every vector access covers W elements of a row of ld (a multiple of W) of
            // the strip buffers; the features are the caller's.
            unsafe { online_softmax_columns::<S>(logit_t, bk, ld, width, shift, row_sum, out_t, d_v) };
            let values = Broadcast { ptr: v[j0 * d_v..].as_ptr(), row_stride: 1, col_stride: d_v };
            // SAFETY: A = V^T of rows [j0, j0 + bk): element (p, jr) at v[(j0 + jr) d_v + p],
            // p < d_v; B = logit_t, bk rows of ld; C = out_t, d_v rows of ld. Features: caller.
            unsafe {
                let (b, c) = (logit_t.as_ptr(), out_t.as_mut_ptr());
                accumulate::<S, MR, NV>(d_v, values, bk, b, ld, c, ld, width, add(1.0));
            }
        }
        // The strip's output rows: O^T transposed back (blocked when the strip is full), then each
        // row normalized.
        let out_rows = &mut out[i0 * d_v..(i0 + cols) * d_v];
        if cols == ld {
            crate::linalg::kernel::transpose(d_v, ld, &out_t[..d_v * ld], out_rows);
        } else {
            for (c, out_row) in out_rows.chunks_exact_mut(d_v.max(1)).enumerate().take(cols) {
                for (p, o) in out_row.iter_mut().enumerate() {
                    *o = out_t[p * ld + c];
                }
            }
        }
        for c in 0..cols {
            let (i, sum) = (i0 + c, row_sum[c]);
            let out_row = &mut out[i * d_v..(i + 1) * d_v];
            if sum > 0.0 {
                let inv = sum.recip();
                for o in out_row.iter_mut() {
                    *o *= inv;
                }
                lse[i] = shift[c] + sum.ln();
            } else if sum == 0.0 {
                out_row.fill(0.0);
                lse[i] = f32::NEG_INFINITY;
            } else {
                // NaN from the inputs: the row stays unnormalized.
                lse[i] = sum;
            }
        }
    }
}

/// One key block of the online softmax on a transposed strip (`bk` rows of keys, the first
/// `width` of `ld` columns of queries): merges the column maxima (NaN skipped) into `shift`, rescales the running sums
/// and the `d_v x ld` output accumulator by `exp(old - new)`, and replaces the logits by
/// `exp(logit - shift)`, adding them to the sums. All in vectors along the queries.
///
/// # Safety
/// The CPU has `S`'s features; `width <= ld` is a multiple of `W`; `logit_t` holds `bk ld`,
/// `out_t` `d_v ld`, `shift` and `row_sum` `ld` elements.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn online_softmax_columns<S: Simd>(
    logit_t: &mut [f32],
    bk: usize,
    ld: usize,
    width: usize,
    shift: &mut [f32],
    row_sum: &mut [f32],
    out_t: &mut [f32],
    d_v: usize,
) {
    assert!(logit_t.len() >= bk * ld && out_t.len() >= d_v * ld && shift.len() >= ld && row_sum.len() >= ld);
    assert!(width <= ld && width % S::W == 0);
    // SAFETY: c0 + W <= width <= ld for every c0 below, so each access lies in row jr (< bk) or p
    // (< d_v) of a buffer of ld columns, or in shift / row_sum, as asserted.
    unsafe {
        for c0 in (0..width).step_by(S::W) {
            let old = S::load(shift.as_ptr().add(c0));
            let mut new = old;
            for jr in 0..bk {
                new = S::max_skip_nan(S::load(logit_t.as_ptr().add(jr * ld + c0)), new);
            }
            let mut old_lanes = [0.0f32; 16];
            let mut new_lanes = [0.0f32; 16];
            S::store(old_lanes.as_mut_ptr(), old);
            S::store(new_lanes.as_mut_ptr(), new);
            let mut sum = S::load(row_sum.as_ptr().add(c0));
            if old_lanes[..S::W] != new_lanes[..S::W] {
                let alpha = S::exp(S::sub(old, new));
                sum = S::mul(sum, alpha);
                for p in 0..d_v {
                    let ptr = out_t.as_mut_ptr().add(p * ld + c0);
                    S::store(ptr, S::mul(S::load(ptr), alpha));
                }
                S::store(shift.as_mut_ptr().add(c0), new);
            }
            for jr in 0..bk {
                let ptr = logit_t.as_mut_ptr().add(jr * ld + c0);
                let y = S::exp(S::sub(S::load(ptr), new));
                S::store(ptr, y);
                sum = S::add(sum, y);
            }
            S::store(row_sum.as_mut_ptr().add(c0), sum);
        }
    }
}

/// The forward's outputs and `dO`, and the gradients to overwrite, for [`backward`].
#[derive(Debug)]
pub(crate) struct BackwardIo<'a> {
    pub out: &'a [f32],
    pub lse: &'a [f32],
    pub d_out: &'a [f32],
    pub d_q: &'a mut [f32],
    pub d_k: &'a mut [f32],
    pub d_v: &'a mut [f32],
}

/// The fused backward of one head in `f32` with the given instruction set, as
/// [`super::SoftmaxAttention::backward`]. Returns `false` (touching nothing) when the
/// workspace is shorter than [`Blocking::backward_len`].
///
/// Panics if a length disagrees with the dimensions (validated callers never trigger this).
pub(crate) fn backward(isa: Isa, problem: &Problem<'_>, io: BackwardIo<'_>, workspace: &mut [f32]) -> bool {
    problem.assert_lengths();
    let (n, d_k, d_v) = (problem.n, problem.d_k, problem.d_v);
    assert!(io.out.len() == n * d_v && io.d_out.len() == n * d_v && io.lse.len() == n);
    assert!(io.d_q.len() == n * d_k && io.d_k.len() == n * d_k && io.d_v.len() == n * d_v);
    if workspace.len() < isa.blocking().backward_len(n, d_k, d_v) {
        return false;
    }
    io.d_q.fill(0.0);
    io.d_k.fill(0.0);
    io.d_v.fill(0.0);
    if n == 0 {
        return true;
    }
    match isa {
        // SAFETY (both arms): `isa` came from run-time detection of these features.
        #[cfg(sda_avx512)]
        Isa::Avx512 => unsafe { backward_avx512(problem, io, workspace) },
        Isa::Avx2 => unsafe { backward_avx2(problem, io, workspace) },
    }
    true
}

/// # Safety
/// The CPU has AVX-512F and FMA.
#[cfg(sda_avx512)]
#[allow(clippy::incompatible_msrv)] // only compiled by Rust >= 1.89 (build.rs)
#[target_feature(enable = "avx512f,fma")]
unsafe fn backward_avx512(problem: &Problem<'_>, io: BackwardIo<'_>, workspace: &mut [f32]) {
    // SAFETY: the features are the caller's precondition; lengths were asserted by `backward`.
    unsafe { backward_body::<Avx512, AVX512_MR, AVX512_NV>(Isa::Avx512.blocking(), problem, io, workspace) }
}

/// # Safety
/// The CPU has AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn backward_avx2(problem: &Problem<'_>, io: BackwardIo<'_>, workspace: &mut [f32]) {
    // SAFETY: the features are the caller's precondition; lengths were asserted by `backward`.
    unsafe { backward_body::<Avx2, AVX2_MR, AVX2_NV>(Isa::Avx2.blocking(), problem, io, workspace) }
}

/// # Safety
/// The CPU has `S`'s features; `n > 0`; the lengths asserted by [`backward`] hold, the gradients
/// are zero and the workspace has [`Blocking::backward_len`] elements; `blocking` matches `MR`, `NV W`.
#[inline(always)]
unsafe fn backward_body<S: Simd, const MR: usize, const NV: usize>(
    blocking: Blocking,
    problem: &Problem<'_>,
    io: BackwardIo<'_>,
    workspace: &mut [f32],
) {
    let Problem { n, d_k, d_v, scale, causal, q, k, v, mask } = *problem;
    let BackwardIo { out, lse, d_out, d_q, d_k: d_key, d_v: d_val } = io;
    let (nr, strip) = (blocking.panel, blocking.strip_rows(n, d_k, d_v, causal));
    let (n_pad, block, ld) = (blocking.padded(n), blocking.key_block(n), blocking.logit_stride(n));
    let ld_dq = aligned(d_k);
    let (k_panels, rest) = align_workspace(workspace).split_at_mut(n_pad * d_k);
    let (v_panels, rest) = rest.split_at_mut(n_pad * d_v);
    let (prob, rest) = rest.split_at_mut(strip * ld);
    let (d_logit, rest) = rest.split_at_mut(strip * ld);
    let (d_q_strip, rest) = rest.split_at_mut(strip * ld_dq);
    let ld_do = aligned(d_v);
    let (q_strip, rest) = rest.split_at_mut(strip * ld_dq);
    let (d_out_strip, rest) = rest.split_at_mut(strip * ld_do);
    let delta = &mut rest[..strip];
    pack_panels(k, n, d_k, nr, k_panels);
    pack_panels(v, n, d_v, nr, v_panels);
    for i0 in (0..n).step_by(strip) {
        let rows = strip.min(n - i0);
        let padded = rows.div_ceil(MR) * MR; // rows computed: whole register blocks
        for (r, delta_r) in delta[..rows].iter_mut().enumerate() {
            let range = (i0 + r) * d_v..(i0 + r + 1) * d_v;
            *delta_r = crate::linalg::kernel::dot(&d_out[range.clone()], &out[range.clone()]);
            // The strip's dO and Q rows, copied to 64-byte-aligned rows: the B operands of dV and
            // dK, read once per key block (unaligned rows would split every vector load).
            d_out_strip[r * ld_do..r * ld_do + d_v].copy_from_slice(&d_out[range]);
            q_strip[r * ld_dq..r * ld_dq + d_k].copy_from_slice(&q[(i0 + r) * d_k..(i0 + r + 1) * d_k]);
        }
        d_q_strip.fill(0.0);
        let j_end = if causal { i0 + rows } else { n };
        for j0 in (0..j_end).step_by(block) {
            let bk = block.min(j_end - j0);
            // SAFETY: as in the forward, for Q against the key panels and dO against the value
            // panels (dO is n x d_v like the value panels' rows). Features: caller.
            unsafe {
                logits::<S, MR, NV>(q, n, d_k, i0, padded, k_panels, j0, bk, scale, prob, ld);
                logits::<S, MR, NV>(d_out, n, d_v, i0, padded, v_panels, j0, bk, 1.0, d_logit, ld);
            }
            for r in 0..padded {
                let (p_row, ds_row) = (&mut prob[r * ld..r * ld + bk], &mut d_logit[r * ld..r * ld + bk]);
                let i = i0 + r;
                if r >= rows || lse[i] == f32::NEG_INFINITY {
                    // Padding rows and fully masked rows contribute nothing.
                    p_row.fill(0.0);
                    ds_row.fill(0.0);
                    continue;
                }
                if let Some(mask) = mask {
                    for (a, &m) in p_row.iter_mut().zip(&mask[i * n + j0..i * n + j0 + bk]) {
                        *a += m;
                    }
                }
                let visible = if causal { bk.min((i + 1).saturating_sub(j0)) } else { bk };
                // SAFETY: a plain slice; the CPU has the features (caller).
                unsafe { exp_shifted_sum::<S>(&mut p_row[..visible], lse[i]) };
                p_row[visible..].fill(0.0);
                let delta_r = delta[r];
                for (ds, &p) in ds_row.iter_mut().zip(p_row.iter()) {
                    *ds = p * (*ds - delta_r);
                }
            }
            let p_t = Broadcast { ptr: prob.as_ptr(), row_stride: 1, col_stride: ld };
            let ds_t = Broadcast { ptr: d_logit.as_ptr(), row_stride: 1, col_stride: ld };
            let ds = Broadcast { ptr: d_logit.as_ptr(), row_stride: ld, col_stride: 1 };
            // SAFETY: P^T and dS^T are read at (key jr < bk, query r < rows): prob[r ld + jr] with
            // r < strip, jr < bk <= ld. B = the strip copies of dO / Q, rows [0, rows) of strides
            // ld_do >= d_v / ld_dq >= d_k. C = d_val /
            // d_key rows [j0, j0 + bk) (<= n). For dQ: A = dS rows [0, padded) x [0, bk), B = k
            // rows [j0, j0 + bk), C = d_q_strip (strip rows of stride ld_dq >= d_k). Features: caller.
            unsafe {
                let d_val_rows = d_val[j0 * d_v..].as_mut_ptr();
                accumulate::<S, MR, NV>(
                    bk,
                    p_t,
                    rows,
                    d_out_strip.as_ptr(),
                    ld_do,
                    d_val_rows,
                    d_v,
                    d_v,
                    add(1.0),
                );
                let d_key_rows = d_key[j0 * d_k..].as_mut_ptr();
                accumulate::<S, MR, NV>(
                    bk,
                    ds_t,
                    rows,
                    q_strip.as_ptr(),
                    ld_dq,
                    d_key_rows,
                    d_k,
                    d_k,
                    add(scale),
                );
                let d_q_rows = d_q_strip.as_mut_ptr();
                accumulate::<S, MR, NV>(
                    padded,
                    ds,
                    bk,
                    k[j0 * d_k..].as_ptr(),
                    d_k,
                    d_q_rows,
                    ld_dq,
                    d_k,
                    add(1.0),
                );
            }
        }
        for r in 0..rows {
            let src = &d_q_strip[r * ld_dq..r * ld_dq + d_k];
            let dst = &mut d_q[(i0 + r) * d_k..(i0 + r + 1) * d_k];
            for (g, &s) in dst.iter_mut().zip(src) {
                *g = s * scale;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::format;
    use std::vec;
    use std::vec::Vec;

    /// Unit roundoff of f32.
    const U32: f64 = f32::EPSILON as f64 / 2.0;

    /// Deterministic entries in `[-1, 1]`, exactly representable in f32.
    fn entries(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = crate::rng::SplitMix64::new(seed);
        (0..len).map(|_| (rng.next_f64() * 2.0 - 1.0) as f32).collect()
    }

    /// The reference in f64 with the full `n x n` probabilities (as `tests/common/attention.rs`,
    /// which unit tests cannot reach): `(out, lse, dq, dk, dv)`.
    #[allow(clippy::type_complexity)]
    fn naive(p: &Problem<'_>, d_out: &[f32]) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
        let (n, d_k, d_v, scale) = (p.n, p.d_k, p.d_v, p.scale as f64);
        let at = |x: &[f32], i: usize| x[i] as f64;
        let mut prob = vec![0.0; n * n];
        let (mut out, mut lse) = (vec![0.0; n * d_v], vec![f64::NEG_INFINITY; n]);
        for i in 0..n {
            let logits: Vec<f64> = (0..n)
                .map(|j| {
                    if p.causal && j > i {
                        return f64::NEG_INFINITY;
                    }
                    let dot: f64 = (0..d_k).map(|t| at(p.q, i * d_k + t) * at(p.k, j * d_k + t)).sum();
                    scale * dot + p.mask.map_or(0.0, |m| m[i * n + j] as f64)
                })
                .collect();
            let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            if max == f64::NEG_INFINITY {
                continue;
            }
            let sum: f64 = logits.iter().map(|a| (a - max).exp()).sum();
            lse[i] = max + sum.ln();
            for j in 0..n {
                prob[i * n + j] = (logits[j] - max).exp() / sum;
                for t in 0..d_v {
                    out[i * d_v + t] += prob[i * n + j] * at(p.v, j * d_v + t);
                }
            }
        }
        let (mut dq, mut dk, mut dv) = (vec![0.0; n * d_k], vec![0.0; n * d_k], vec![0.0; n * d_v]);
        for i in 0..n {
            let dp: Vec<f64> = (0..n)
                .map(|j| (0..d_v).map(|t| at(d_out, i * d_v + t) * at(p.v, j * d_v + t)).sum())
                .collect();
            let row_dot: f64 = (0..n).map(|j| prob[i * n + j] * dp[j]).sum();
            for j in 0..n {
                let pij = prob[i * n + j];
                let ds = pij * (dp[j] - row_dot);
                for t in 0..d_v {
                    dv[j * d_v + t] += pij * at(d_out, i * d_v + t);
                }
                for t in 0..d_k {
                    dq[i * d_k + t] += scale * ds * at(p.k, j * d_k + t);
                    dk[j * d_k + t] += scale * ds * at(p.q, i * d_k + t);
                }
            }
        }
        (out, lse, dq, dk, dv)
    }

    fn max_abs_diff(a: &[f32], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(&x, &y)| (x as f64 - y).abs()).fold(0.0, f64::max)
    }

    fn norm(x: impl Iterator<Item = f64>) -> f64 {
        x.map(|v| v * v).sum::<f64>().sqrt()
    }

    /// Runs `isa`'s forward and backward (with the exact workspace lengths) and checks them
    /// against [`naive`], with the bound of `tests/softmax_sd.rs::softmax_f32_matches_f64`: each
    /// logit is a `d_k`-term dot product (`|dA| <= d_k u L`, `L = scale max sum_p |q_ip k_jp|`),
    /// softmax maps it to `|dP_ij| <= 2 |dA| P_ij`, the normalization and value products are sums
    /// of `n` terms and exp adds a few `u`: `|dO| <= (2 d_k L + 2 n + 8) u max|v|`; gradients chain
    /// three such products, normwise within 4 times that relative to the gradient's norm.
    fn check_variant(
        isa: Isa,
        n: usize,
        d_k: usize,
        d_v: usize,
        causal: bool,
        mask: Option<&[f32]>,
        seed: u64,
    ) {
        let (q, k, v, d_out) = (
            entries(n * d_k, seed),
            entries(n * d_k, seed + 1),
            entries(n * d_v, seed + 2),
            entries(n * d_v, seed + 3),
        );
        let scale = if d_k == 0 { 1.0 } else { 1.0 / (d_k as f32).sqrt() };
        let problem = Problem { n, d_k, d_v, scale, causal, q: &q, k: &k, v: &v, mask };
        let (out64, lse64, dq64, dk64, dv64) = naive(&problem, &d_out);
        let blocking = isa.blocking();
        let what = format!("{isa:?} n={n} d_k={d_k} d_v={d_v} causal={causal} mask={}", mask.is_some());
        let (mut out, mut lse) = (vec![f32::NAN; n * d_v], vec![f32::NAN; n]);
        // Too short a workspace: refused, nothing written.
        let mut short = vec![0.0; blocking.forward_len(n, d_k, d_v) - 1];
        assert!(!forward(isa, &problem, &mut out, &mut lse, &mut short), "{what}");
        assert!(lse.iter().all(|x| x.is_nan()));
        let mut ws = vec![f32::NAN; blocking.forward_len(n, d_k, d_v)];
        assert!(forward(isa, &problem, &mut out, &mut lse, &mut ws), "{what}");
        let l = scale as f64 * d_k as f64; // entries in [-1, 1]
        let bound = (2.0 * d_k as f64 * l + 2.0 * n as f64 + 8.0) * U32;
        let out_err = max_abs_diff(&out, &out64);
        assert!(out_err <= bound, "{what}: out error {out_err:e} > {bound:e}");
        for (i, (&a, &b)) in lse.iter().zip(&lse64).enumerate() {
            if b == f64::NEG_INFINITY {
                assert_eq!(a, f32::NEG_INFINITY, "{what}: row {i} fully masked");
                assert!(out[i * d_v..(i + 1) * d_v].iter().all(|&o| o == 0.0));
            } else {
                assert!((a as f64 - b).abs() <= bound * (1.0 + b.abs()), "{what}: lse {i}: {a} vs {b}");
            }
        }
        let (mut dq, mut dk, mut dv) =
            (vec![f32::NAN; n * d_k], vec![f32::NAN; n * d_k], vec![f32::NAN; n * d_v]);
        let mut ws = vec![f32::NAN; blocking.backward_len(n, d_k, d_v)];
        let io = BackwardIo { out: &out, lse: &lse, d_out: &d_out, d_q: &mut dq, d_k: &mut dk, d_v: &mut dv };
        assert!(backward(isa, &problem, io, &mut ws), "{what}");
        for (name, g, g64) in [("dq", &dq, &dq64), ("dk", &dk, &dk64), ("dv", &dv, &dv64)] {
            let err = norm(g.iter().zip(g64.iter()).map(|(&a, &b)| a as f64 - b));
            // dQ = dK = 0 for one token (P = 1): compare absolutely, entries are O(1).
            let reference = norm(g64.iter().cloned()).max(1.0);
            assert!(err <= 4.0 * bound * reference, "{what}: {name} error {err:e} vs norm {reference:e}");
        }
    }

    /// Every variant the CPU has, against the f64 reference at sizes that reach every remainder
    /// path: partial register blocks of rows (n not a multiple of 4, 6, 12 or the strip), partial
    /// panels and key blocks (n not a multiple of 16, 64 or 128, n > 128), widths below, at and
    /// above one, two and four vectors (the narrow blocks at d <= 2 W and the wide ones), partial
    /// vectors (d = 1, 15, 17, 24, 63, 65), d = 0, ragged causal rows (masked exp and max tails).
    #[test]
    fn every_variant_matches_the_reference() {
        let isas = Isa::all_available();
        assert!(!isas.is_empty() || !std::is_x86_feature_detected!("avx2"));
        for &isa in &isas {
            for &(n, d_k, d_v) in &[
                (1, 1, 1),
                (2, 64, 64),
                (5, 3, 7),
                (13, 16, 16),
                (47, 63, 65),
                (49, 64, 96),
                (130, 17, 24),
                (131, 64, 64),
                (200, 32, 15),
                (37, 0, 8),
                (29, 8, 0),
            ] {
                for causal in [false, true] {
                    check_variant(isa, n, d_k, d_v, causal, None, (n * 131 + d_k * 7 + d_v) as u64);
                }
            }
        }
    }

    /// Keys and values over 1 MiB take the wide forward strips (their own padding of the last
    /// strip, two chunks of register blocks per strip on AVX-512): n = 1037, d = 130.
    #[test]
    fn every_variant_matches_the_reference_with_wide_strips() {
        for &isa in &Isa::all_available() {
            let blocking = isa.blocking();
            assert_eq!(blocking.max_forward_strip(1037, 130, 130), 2 * blocking.forward_cols);
            check_variant(isa, 1037, 130, 130, false, None, 11);
        }
    }

    /// Masks: `-inf` entries, a fully masked row (`out = 0`, `lse = -inf`, no gradient), finite
    /// additive values; and huge logits (scale 1e4 / d_k): each exponent is relative to the row
    /// maximum, so nothing overflows.
    #[test]
    fn every_variant_handles_masks_and_large_logits() {
        for &isa in &Isa::all_available() {
            let (n, d) = (70usize, 20usize);
            let mut mask = entries(n * n, 9);
            for (idx, m) in mask.iter_mut().enumerate() {
                if idx % 7 == 0 {
                    *m = f32::NEG_INFINITY;
                }
            }
            mask[3 * n..4 * n].fill(f32::NEG_INFINITY); // row 3 fully masked
            for causal in [false, true] {
                check_variant(isa, n, d, d, causal, Some(&mask), 5);
            }
            // Large logits: q . k up to 1e4 in magnitude. Forward against the reference, relative
            // to the logit size (the bound above with L = 1e4).
            let (q, k, v) = (entries(n * d, 1), entries(n * d, 2), entries(n * d, 3));
            let problem = Problem {
                n,
                d_k: d,
                d_v: d,
                scale: 1e4 / d as f32,
                causal: false,
                q: &q,
                k: &k,
                v: &v,
                mask: None,
            };
            let (out64, lse64, ..) = naive(&problem, &v);
            let (mut out, mut lse) = (vec![0.0; n * d], vec![0.0; n]);
            let mut ws = vec![0.0; isa.blocking().forward_len(n, d, d)];
            assert!(forward(isa, &problem, &mut out, &mut lse, &mut ws));
            assert!(out.iter().chain(&lse).all(|x| x.is_finite()));
            let bound = (2.0 * d as f64 * 1e4 + 2.0 * n as f64 + 8.0) * U32;
            assert!(max_abs_diff(&out, &out64) <= bound, "{isa:?}: {}", max_abs_diff(&out, &out64));
            assert!(max_abs_diff(&lse, &lse64) <= bound * 1e4);
        }
    }

    /// Each variant's vector exponential against `libm::exp` (within 3 ulp, as `crate::linalg::exp`'s
    /// scalar one) on a dense grid, and its special values: `-inf` and anything below -86.5 give
    /// 0, overflow gives `+inf`, NaN stays NaN.
    #[test]
    fn every_variant_exp_matches_libm() {
        fn run<S: Simd>(x: &mut [f32]) {
            for chunk in x.chunks_exact_mut(S::W) {
                // SAFETY: the chunk has W elements; the caller checked the CPU's features.
                unsafe { S::store(chunk.as_mut_ptr(), S::exp(S::load(chunk.as_ptr()))) };
            }
        }
        for &isa in &Isa::all_available() {
            let exp: fn(&mut [f32]) = match isa {
                #[cfg(sda_avx512)]
                Isa::Avx512 => run_avx512,
                Isa::Avx2 => run_avx2,
            };
            let grid: Vec<f32> = (0..126_992).map(|i| -86.5 + i as f32 * 0.001_37).collect(); // to 87.5, 16 | len
            let mut y = grid.clone();
            exp(&mut y);
            let worst = grid
                .iter()
                .zip(&y)
                .map(|(&x, &y)| {
                    let exact = libm::exp(x as f64);
                    (y as f64 - exact).abs() / exact
                })
                .fold(0.0, f64::max);
            assert!(worst < 3.0 * f32::EPSILON as f64, "{isa:?}: worst relative error {worst:e}");
            let mut special = [
                f32::NEG_INFINITY,
                f32::INFINITY,
                f32::NAN,
                -1e4,
                1e4,
                0.0,
                -100.0,
                88.73,
                -86.6,
                1.0,
                -1.0,
                2.0,
                3.0,
                4.0,
                5.0,
                6.0,
            ];
            exp(&mut special);
            assert_eq!(special[0], 0.0);
            assert_eq!(special[1], f32::INFINITY);
            assert!(special[2].is_nan());
            assert_eq!(&special[3..7], &[0.0, f32::INFINITY, 1.0, 0.0]);
            assert_eq!((special[7], special[8]), (f32::INFINITY, 0.0));
        }

        #[cfg(sda_avx512)]
        fn run_avx512(x: &mut [f32]) {
            #[allow(clippy::incompatible_msrv)]
            #[target_feature(enable = "avx512f,fma")]
            unsafe fn inner(x: &mut [f32]) {
                run::<Avx512>(x)
            }
            // SAFETY: only called for Isa::Avx512, which run-time detection reported.
            unsafe { inner(x) }
        }
        fn run_avx2(x: &mut [f32]) {
            #[target_feature(enable = "avx2,fma")]
            unsafe fn inner(x: &mut [f32]) {
                run::<Avx2>(x)
            }
            // SAFETY: only called for Isa::Avx2, which run-time detection reported.
            unsafe { inner(x) }
        }
    }

    /// The public workspace formulas cover the fused layout where `softmax` documents it:
    /// `n >= 135` with widths up to 256 (sampled), and the model's heads at `n = 128`.
    #[test]
    fn public_workspace_covers_the_fused_layout() {
        use crate::attention::{softmax::SoftmaxAttention, Causality};
        let mut shapes = vec![(128, 16, 16), (128, 24, 16), (128, 16, 24), (512, 64, 64), (4096, 64, 64)];
        for n in (135..700).step_by(37) {
            for d_k in (0..=256).step_by(19) {
                for d_v in (0..=256).step_by(23) {
                    shapes.push((n, d_k, d_v));
                }
            }
        }
        for &isa in &Isa::all_available() {
            let blocking = isa.blocking();
            for &(n, d_k, d_v) in &shapes {
                let head = SoftmaxAttention::<f32>::new(n, d_k, d_v, Causality::Causal);
                assert!(
                    blocking.forward_len(n, d_k, d_v) <= head.forward_workspace_len(),
                    "{isa:?} {n} {d_k} {d_v}"
                );
                assert!(
                    blocking.backward_len(n, d_k, d_v) <= head.backward_workspace_len(),
                    "{isa:?} {n} {d_k} {d_v}"
                );
            }
        }
    }

    /// `pack_panels` writes each panel transposed and zero-pads the last one.
    #[test]
    fn panels_are_transposed_rows() {
        let (n, width, panel) = (5usize, 3usize, 4usize);
        let x: Vec<f32> = (0..n * width).map(|i| i as f32).collect();
        let mut out = vec![f32::NAN; 8 * width];
        pack_panels(&x, n, width, panel, &mut out);
        for t in 0..2 {
            for p in 0..width {
                for c in 0..panel {
                    let row = t * panel + c;
                    let expected = if row < n { x[row * width + p] } else { 0.0 };
                    assert_eq!(out[t * width * panel + p * panel + c], expected);
                }
            }
        }
    }
}
