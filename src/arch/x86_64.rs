//! The `f32` vector types of x86-64 behind one trait, [`Simd`]: AVX-512F (16 lanes) and AVX2 with
//! FMA (8 lanes), each with masked loads and stores for ragged ends and the vector exponential
//! (the reduction and polynomial of `crate::linalg::exp`'s `exp1` in registers; AVX2 the same
//! steps, AVX-512 its own rounding and scaling instructions), within 3 ulp of `libm::exp`.
//!
//! Every method is `unsafe`: it runs instructions that the CPU must have, which the caller
//! establishes through this module's detection before it instantiates a kernel with a type here.

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

/// `dst` (`cols x rows`, leading dimension `ldd`) = the transpose of `src` (`rows x cols`, leading
/// dimension `lds`), in 8 x 8 tiles of AVX registers (unpack, shuffle, lane permute), the ragged
/// edges element by element. Panics if a slice is shorter than its extent.
///
/// # Safety
/// The CPU must have AVX2.
#[target_feature(enable = "avx2")]
#[inline]
pub(crate) unsafe fn transpose_f32(
    rows: usize,
    cols: usize,
    src: &[f32],
    lds: usize,
    dst: &mut [f32],
    ldd: usize,
) {
    use core::arch::x86_64::{
        _mm256_loadu_ps, _mm256_permute2f128_ps, _mm256_shuffle_ps, _mm256_storeu_ps, _mm256_unpackhi_ps,
        _mm256_unpacklo_ps,
    };
    if rows == 0 || cols == 0 {
        return;
    }
    // Every access below is inside these extents: full tiles read rows `i0..i0 + 8 <= rows` at
    // columns `j0..j0 + 8 <= cols` and write the mirrored entries.
    assert!(lds >= cols && ldd >= rows, "transpose: leading dimension below the row length");
    assert!(
        (rows - 1) * lds + cols <= src.len() && (cols - 1) * ldd + rows <= dst.len(),
        "transpose: short slice"
    );
    let (full_rows, full_cols) = (rows / 8 * 8, cols / 8 * 8);
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
    for i0 in (0..full_rows).step_by(8) {
        for j0 in (0..full_cols).step_by(8) {
            // SAFETY: rows i0..i0 + 8 and columns j0..j0 + 8 lie inside both extents asserted above.
            unsafe {
                let at = s.add(i0 * lds + j0);
                let (r0, r1) = (_mm256_loadu_ps(at), _mm256_loadu_ps(at.add(lds)));
                let (r2, r3) = (_mm256_loadu_ps(at.add(2 * lds)), _mm256_loadu_ps(at.add(3 * lds)));
                let (r4, r5) = (_mm256_loadu_ps(at.add(4 * lds)), _mm256_loadu_ps(at.add(5 * lds)));
                let (r6, r7) = (_mm256_loadu_ps(at.add(6 * lds)), _mm256_loadu_ps(at.add(7 * lds)));
                let (t0, t1) = (_mm256_unpacklo_ps(r0, r1), _mm256_unpackhi_ps(r0, r1));
                let (t2, t3) = (_mm256_unpacklo_ps(r2, r3), _mm256_unpackhi_ps(r2, r3));
                let (t4, t5) = (_mm256_unpacklo_ps(r4, r5), _mm256_unpackhi_ps(r4, r5));
                let (t6, t7) = (_mm256_unpacklo_ps(r6, r7), _mm256_unpackhi_ps(r6, r7));
                let (u0, u1) = (_mm256_shuffle_ps::<0x44>(t0, t2), _mm256_shuffle_ps::<0xEE>(t0, t2));
                let (u2, u3) = (_mm256_shuffle_ps::<0x44>(t1, t3), _mm256_shuffle_ps::<0xEE>(t1, t3));
                let (u4, u5) = (_mm256_shuffle_ps::<0x44>(t4, t6), _mm256_shuffle_ps::<0xEE>(t4, t6));
                let (u6, u7) = (_mm256_shuffle_ps::<0x44>(t5, t7), _mm256_shuffle_ps::<0xEE>(t5, t7));
                let to = d.add(j0 * ldd + i0);
                _mm256_storeu_ps(to, _mm256_permute2f128_ps::<0x20>(u0, u4));
                _mm256_storeu_ps(to.add(ldd), _mm256_permute2f128_ps::<0x20>(u1, u5));
                _mm256_storeu_ps(to.add(2 * ldd), _mm256_permute2f128_ps::<0x20>(u2, u6));
                _mm256_storeu_ps(to.add(3 * ldd), _mm256_permute2f128_ps::<0x20>(u3, u7));
                _mm256_storeu_ps(to.add(4 * ldd), _mm256_permute2f128_ps::<0x31>(u0, u4));
                _mm256_storeu_ps(to.add(5 * ldd), _mm256_permute2f128_ps::<0x31>(u1, u5));
                _mm256_storeu_ps(to.add(6 * ldd), _mm256_permute2f128_ps::<0x31>(u2, u6));
                _mm256_storeu_ps(to.add(7 * ldd), _mm256_permute2f128_ps::<0x31>(u3, u7));
            }
        }
        for i in i0..i0 + 8 {
            for j in full_cols..cols {
                dst[j * ldd + i] = src[i * lds + j];
            }
        }
    }
    for i in full_rows..rows {
        for (j, &x) in src[i * lds..i * lds + cols].iter().enumerate() {
            dst[j * ldd + i] = x;
        }
    }
}
