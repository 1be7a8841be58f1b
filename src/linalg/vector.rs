//! Products of a matrix with one vector, for one token at a time (the incremental decoder).
//!
//! ```text
//! dot_rows:      out_i = alpha sum_p a[i lda + p] x_p          (i < m, p < k)   A x
//! combine_rows:  out_j = alpha sum_p s_p v[p ldv + j]          (j < n, p < k)   s^T V
//! ```
//!
//! The register-blocked product of `crate::linalg::microkernel` sums every output in order from
//! `p = 0`, one dependent chain per output. That is the right order for many rows at once, but a
//! single row of outputs then has as few independent chains as it has vector registers of
//! outputs: `A x` with one output per row (a tied unembedding, `256 x d` by `d`) runs on scalar
//! chains, and a weighted sum of `k` rows of 16 values (an attention read) on two. Here each
//! output's sum is split instead:
//!
//! * [`dot_rows`]: `LANES` partial sums per row (`p mod LANES`), added as a tree, then the
//!   `k mod LANES` last products in order (the AVX variants: two vectors of partial sums);
//! * [`combine_rows`]: `SPLIT` partial sums per output (`p mod SPLIT`) over the first
//!   `k - k mod SPLIT` rows, the rest added to the first, then `(s_0 + s_1) + (s_2 + s_3)`.
//!
//! Either is a sum of the same `k` products in another association, so the error is the dot
//! product's: `|err| <= (k + 1) eps sum_p |a_p x_p|` (plus one rounding for `alpha`). `f32` runs in
//! the variant `crate::arch` chooses (fused multiply-adds in the AVX variants, unfused in the
//! portable one); `f64`, the reference precision, in the portable loop.

#[cfg(sda_avx512)]
use crate::arch::x86_64::Avx512;
#[cfg(all(feature = "std", target_arch = "x86_64"))]
use crate::arch::x86_64::{Avx2, Simd};
use crate::Scalar;

/// Partial sums per row of [`dot_rows`] (two AVX2 vectors of `f32`, one AVX-512 vector).
const LANES: usize = 16;

/// Partial sums per output of [`combine_rows`].
const SPLIT: usize = 4;

/// Output columns of [`combine_rows`] per block.
const COLUMNS: usize = 16;

/// One output of [`dot_rows`]: `LANES` partial sums over the full chunks of the row, added as a
/// tree (`l` and `l + LANES/2`, ..., then 0 and 1), then the `k mod LANES` last products in order.
#[inline(always)]
fn dot<T: Scalar, const FUSED: bool>(row: &[T], x: &[T], alpha: T) -> T {
    let mut acc = [T::zero(); LANES];
    let (row_chunks, x_chunks) = (row.chunks_exact(LANES), x[..row.len()].chunks_exact(LANES));
    let (row_tail, x_tail) = (row_chunks.remainder(), x_chunks.remainder());
    for (a, b) in row_chunks.zip(x_chunks) {
        for l in 0..LANES {
            acc[l] = T::multiply_add::<FUSED>(a[l], b[l], acc[l]);
        }
    }
    let mut half = LANES / 2;
    while half > 0 {
        for l in 0..half {
            let upper = acc[l + half];
            acc[l] += upper;
        }
        half /= 2;
    }
    let mut sum = acc[0];
    for (&a, &b) in row_tail.iter().zip(x_tail) {
        sum = T::multiply_add::<FUSED>(a, b, sum);
    }
    alpha * sum
}

/// The loop of [`dot_rows`], shared by every instruction-set variant (rows are independent: the
/// processor overlaps one row's sums with the next).
#[inline(always)]
fn dot_rows_body<T: Scalar, const FUSED: bool>(
    m: usize,
    k: usize,
    alpha: T,
    a: &[T],
    lda: usize,
    x: &[T],
    out: &mut [T],
) {
    for (i, o) in out[..m].iter_mut().enumerate() {
        *o = dot::<T, FUSED>(&a[i * lda..i * lda + k], &x[..k], alpha);
    }
}

/// Columns `[j0, j0 + W)` of [`combine_rows`] (`W <= COLUMNS`, a constant so that a full block
/// stays in registers).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn combine_block<T: Scalar, const FUSED: bool, const W: usize>(
    k: usize,
    alpha: T,
    s: &[T],
    v: &[T],
    ldv: usize,
    j0: usize,
    out: &mut [T],
) {
    let mut acc = [[T::zero(); W]; SPLIT];
    let full = k - k % SPLIT;
    for p0 in (0..full).step_by(SPLIT) {
        for (u, acc_u) in acc.iter_mut().enumerate() {
            let (s_p, row) = (s[p0 + u], &v[(p0 + u) * ldv + j0..(p0 + u) * ldv + j0 + W]);
            for (acc_j, &v_pj) in acc_u.iter_mut().zip(row) {
                *acc_j = T::multiply_add::<FUSED>(s_p, v_pj, *acc_j);
            }
        }
    }
    for p in full..k {
        let (s_p, row) = (s[p], &v[p * ldv + j0..p * ldv + j0 + W]);
        for (acc_j, &v_pj) in acc[0].iter_mut().zip(row) {
            *acc_j = T::multiply_add::<FUSED>(s_p, v_pj, *acc_j);
        }
    }
    for (j, o) in out[j0..j0 + W].iter_mut().enumerate() {
        *o = alpha * ((acc[0][j] + acc[1][j]) + (acc[2][j] + acc[3][j]));
    }
}

/// The loop of [`combine_rows`], shared by every instruction-set variant: blocks of `COLUMNS`
/// columns, then the remainder in blocks of 8, 4, 2, 1.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn combine_rows_body<T: Scalar, const FUSED: bool>(
    k: usize,
    n: usize,
    alpha: T,
    s: &[T],
    v: &[T],
    ldv: usize,
    out: &mut [T],
) {
    let mut j0 = 0;
    while j0 + COLUMNS <= n {
        combine_block::<T, FUSED, COLUMNS>(k, alpha, s, v, ldv, j0, out);
        j0 += COLUMNS;
    }
    if n - j0 >= 8 {
        combine_block::<T, FUSED, 8>(k, alpha, s, v, ldv, j0, out);
        j0 += 8;
    }
    if n - j0 >= 4 {
        combine_block::<T, FUSED, 4>(k, alpha, s, v, ldv, j0, out);
        j0 += 4;
    }
    if n - j0 >= 2 {
        combine_block::<T, FUSED, 2>(k, alpha, s, v, ldv, j0, out);
        j0 += 2;
    }
    if n - j0 >= 1 {
        combine_block::<T, FUSED, 1>(k, alpha, s, v, ldv, j0, out);
    }
}

/// [`dot_rows`] in `f32` with the vector type `S`: two vectors of partial sums per row (`2 S::W`
/// lanes, `p mod 2W`), the two added and their lanes summed (`S::reduce_add`), then the `k mod 2W`
/// last products in order. The compiler's own vectorization of [`dot_rows_body`] splits the lanes
/// into pairs of two for the tree; here they stay whole vectors.
///
/// # Safety
/// The CPU has `S`'s features; `lda >= k`, `a` holds `(m - 1) lda + k` elements (`m > 0`), `x` at
/// least `k`, `out` at least `m`.
#[cfg(all(feature = "std", target_arch = "x86_64"))]
#[inline(always)]
unsafe fn dot_rows_simd<S: Simd>(
    m: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    lda: usize,
    x: &[f32],
    out: &mut [f32],
) {
    let full = k - k % (2 * S::W);
    for (i, o) in out[..m].iter_mut().enumerate() {
        let row = &a[i * lda..i * lda + k];
        // SAFETY: every vector load covers row[p..p + W] and x[p..p + W] with p + W <= full <= k,
        // within `row` (k elements) and `x` (at least k); the features are the caller's.
        let mut sum = unsafe {
            let (mut s0, mut s1) = (S::zero(), S::zero());
            for p in (0..full).step_by(2 * S::W) {
                let (r, v) = (row.as_ptr().add(p), x.as_ptr().add(p));
                s0 = S::fma(S::load(r), S::load(v), s0);
                s1 = S::fma(S::load(r.add(S::W)), S::load(v.add(S::W)), s1);
            }
            S::reduce_add(S::add(s0, s1))
        };
        for (&a_p, &x_p) in row[full..].iter().zip(&x[full..k]) {
            sum = f32::multiply_add::<true>(a_p, x_p, sum);
        }
        *o = alpha * sum;
    }
}

crate::arch::multiversion! {
    /// [`dot_rows`] in `f32`, in the variant `isa`: [`dot_rows_simd`] in the AVX variants, the
    /// portable loop [`dot_rows_body`] (unfused) otherwise.
    fn dot_rows_f32(m: usize, k: usize, alpha: f32, a: &[f32], lda: usize, x: &[f32], out: &mut [f32]);
    // SAFETY (both): the dispatch runs these only on a CPU with the features; `dot_rows` checked
    // the lengths (and the tests call them with valid lengths).
    avx512("avx512f,fma") => unsafe { dot_rows_simd::<Avx512>(m, k, alpha, a, lda, x, out) };
    avx2("avx2,fma") => unsafe { dot_rows_simd::<Avx2>(m, k, alpha, a, lda, x, out) };
    portable => dot_rows_body::<f32, false>(m, k, alpha, a, lda, x, out);
}

crate::arch::multiversion! {
    /// [`combine_rows_body`] in `f32`, in the variant `isa`: fused multiply-adds in the AVX variants.
    fn combine_rows_f32(k: usize, n: usize, alpha: f32, s: &[f32], v: &[f32], ldv: usize, out: &mut [f32]);
    avx512("avx512f,fma") => combine_rows_body::<f32, true>(k, n, alpha, s, v, ldv, out);
    avx2("avx2,fma") => combine_rows_body::<f32, true>(k, n, alpha, s, v, ldv, out);
    portable => combine_rows_body::<f32, false>(k, n, alpha, s, v, ldv, out);
}

/// `out_i = alpha sum_p a[i lda + p] x_p` for `i < m`: `A x` for a row-major `m x k` matrix with
/// leading dimension `lda` (see the module documentation for the order of summation and the error
/// bound), in the variant [`crate::arch`] chooses. `k = 0` gives zeros.
///
/// Panics if a slice is shorter than its dimensions imply or `lda < k` (crate-internal: validated
/// callers never trigger this).
pub(crate) fn dot_rows<T: Scalar>(m: usize, k: usize, alpha: T, a: &[T], lda: usize, x: &[T], out: &mut [T]) {
    if m == 0 {
        return;
    }
    assert!(lda >= k, "dot_rows: leading dimension below the row length");
    let a_len = (m - 1).checked_mul(lda).and_then(|s| s.checked_add(k));
    assert!(
        a_len.is_some_and(|len| len <= a.len()) && x.len() >= k && out.len() >= m,
        "dot_rows: slice shorter than its dimensions"
    );
    let isa = crate::arch::isa();
    if let (Some(a), Some(x), Some(out)) = (T::f32_slice(a), T::f32_slice(x), T::f32_slice_mut(out)) {
        let alpha = alpha.as_f64() as f32; // exact: `T` is f32
        dot_rows_f32(isa, m, k, alpha, a, lda, x, out);
    } else {
        dot_rows_body::<T, false>(m, k, alpha, a, lda, x, out);
    }
}

/// `out_j = alpha sum_p s_p v[p ldv + j]` for `j < n`: `s^T V` for a row-major `k x n` matrix
/// with leading dimension `ldv` (see the module documentation for the order of summation and the
/// error bound), in the variant [`crate::arch`] chooses. `k = 0` gives zeros.
///
/// Panics if a slice is shorter than its dimensions imply or `ldv < n` (crate-internal: validated
/// callers never trigger this).
pub(crate) fn combine_rows<T: Scalar>(
    k: usize,
    n: usize,
    alpha: T,
    s: &[T],
    v: &[T],
    ldv: usize,
    out: &mut [T],
) {
    if n == 0 {
        return;
    }
    assert!(ldv >= n, "combine_rows: leading dimension below the row length");
    let v_ok =
        k == 0 || (k - 1).checked_mul(ldv).and_then(|e| e.checked_add(n)).is_some_and(|e| e <= v.len());
    assert!(v_ok && s.len() >= k && out.len() >= n, "combine_rows: slice shorter than its dimensions");
    let isa = crate::arch::isa();
    if let (Some(s), Some(v), Some(out)) = (T::f32_slice(s), T::f32_slice(v), T::f32_slice_mut(out)) {
        let alpha = alpha.as_f64() as f32; // exact: `T` is f32
        combine_rows_f32(isa, k, n, alpha, s, v, ldv, out);
    } else {
        combine_rows_body::<T, false>(k, n, alpha, s, v, ldv, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;
    use std::vec;
    use std::vec::Vec;

    fn random(len: usize, rng: &mut SplitMix64) -> Vec<f64> {
        (0..len).map(|_| rng.normal()).collect()
    }

    fn round32(x: &[f64]) -> Vec<f32> {
        x.iter().map(|&v| v as f32).collect()
    }

    fn widen(x: &[f32]) -> Vec<f64> {
        x.iter().map(|&v| v as f64).collect()
    }

    /// Checks `got` against the naive f64 sums `terms(i)` (the products of output `i`) within the
    /// bound of the module documentation, `(k + 2) eps |alpha| sum_p |term_p|` (`k + 1` for the
    /// sum, one for `alpha`), and that nothing past `count` outputs was written.
    fn check(name: &str, eps: f64, alpha: f64, got: &[f64], count: usize, terms: impl Fn(usize) -> Vec<f64>) {
        for (i, &g) in got.iter().enumerate() {
            if i >= count {
                assert_eq!(g, -7.0, "{name}: output {i} past the end written");
                continue;
            }
            let t = terms(i);
            let expected = alpha * t.iter().sum::<f64>();
            let magnitude: f64 = t.iter().map(|v| v.abs()).sum::<f64>() * alpha.abs();
            let bound = (t.len() as f64 + 2.0) * eps * magnitude + 1e-300;
            assert!((g - expected).abs() <= bound, "{name} output {i}: {g} vs {expected}, bound {bound}");
        }
    }

    /// Shapes through every block: rows 0..=9 (blocks of 4, remainders), `k` 0, 1, odd, prime,
    /// multiples of 16 and beyond; the tied unembedding's 256 x 64. f64 fused and unfused; f32 in
    /// every variant the CPU runs (against the naive product of the rounded inputs) and through
    /// the dispatched entry.
    #[test]
    fn dot_rows_matches_the_naive_product_in_every_variant() {
        let mut rng = SplitMix64::new(11);
        let mut cases = Vec::new();
        for m in [0usize, 1, 2, 3, 4, 5, 7, 8, 9] {
            for k in [0usize, 1, 2, 7, 15, 16, 17, 31, 32, 37, 64, 100] {
                cases.push((m, k));
            }
        }
        cases.push((256, 64));
        for (case, &(m, k)) in cases.iter().enumerate() {
            let lda = k + case % 3;
            let a = random(m * lda + 2, &mut rng);
            let x = random(k + 1, &mut rng);
            let alpha = if case % 2 == 0 { 1.0 } else { -0.625 };
            let terms =
                |a: &[f64], x: &[f64], i: usize| (0..k).map(|p| a[i * lda + p] * x[p]).collect::<Vec<_>>();
            let mut out = vec![-7.0; m + 2];
            dot_rows(m, k, alpha, &a, lda, &x, &mut out);
            check("dispatch f64", f64::EPSILON, alpha, &out, m, |i| terms(&a, &x, i));
            let mut out = vec![-7.0; m + 2];
            dot_rows_body::<f64, true>(m, k, alpha, &a, lda, &x, &mut out);
            check("fused f64", f64::EPSILON, alpha, &out, m, |i| terms(&a, &x, i));
            let (a32, x32) = (round32(&a), round32(&x));
            let (a_r, x_r) = (widen(&a32), widen(&x32));
            for isa in crate::arch::available() {
                let mut out32 = vec![-7.0f32; m + 2];
                dot_rows_f32(isa, m, k, alpha as f32, &a32, lda, &x32, &mut out32);
                check(isa.name(), f32::EPSILON as f64, alpha, &widen(&out32), m, |i| terms(&a_r, &x_r, i));
            }
            let mut out32 = vec![-7.0f32; m + 2];
            dot_rows(m, k, alpha as f32, &a32, lda, &x32, &mut out32);
            check("dispatch f32", f32::EPSILON as f64, alpha, &widen(&out32), m, |i| terms(&a_r, &x_r, i));
        }
    }

    /// Shapes through every block: columns 0..=40 (blocks of 16, 8, 4, 2, 1 and mixtures), `k` 0,
    /// 1, below and at multiples of the split, prime, and a full context of 128; padded leading
    /// dimensions (the padding is never read into a result: it holds NaN).
    #[test]
    fn combine_rows_matches_the_naive_product_in_every_variant() {
        let mut rng = SplitMix64::new(12);
        let mut cases = Vec::new();
        for n in [0usize, 1, 2, 3, 5, 8, 15, 16, 17, 23, 31, 32, 40] {
            for k in [0usize, 1, 3, 4, 5, 8, 13, 37, 128] {
                cases.push((k, n));
            }
        }
        for (case, &(k, n)) in cases.iter().enumerate() {
            let ldv = n + case % 3;
            let mut v = random(k * ldv + 1, &mut rng);
            for p in 0..k {
                for j in n..ldv {
                    v[p * ldv + j] = f64::NAN;
                }
            }
            let s = random(k + 1, &mut rng);
            let alpha = if case % 2 == 0 { 1.0 } else { 0.375 };
            let terms =
                |s: &[f64], v: &[f64], j: usize| (0..k).map(|p| s[p] * v[p * ldv + j]).collect::<Vec<_>>();
            let mut out = vec![-7.0; n + 2];
            combine_rows(k, n, alpha, &s, &v, ldv, &mut out);
            check("dispatch f64", f64::EPSILON, alpha, &out, n, |j| terms(&s, &v, j));
            let mut out = vec![-7.0; n + 2];
            combine_rows_body::<f64, true>(k, n, alpha, &s, &v, ldv, &mut out);
            check("fused f64", f64::EPSILON, alpha, &out, n, |j| terms(&s, &v, j));
            let (s32, v32) = (round32(&s), round32(&v));
            let (s_r, v_r) = (widen(&s32), widen(&v32));
            for isa in crate::arch::available() {
                let mut out32 = vec![-7.0f32; n + 2];
                combine_rows_f32(isa, k, n, alpha as f32, &s32, &v32, ldv, &mut out32);
                check(isa.name(), f32::EPSILON as f64, alpha, &widen(&out32), n, |j| terms(&s_r, &v_r, j));
            }
            let mut out32 = vec![-7.0f32; n + 2];
            combine_rows(k, n, alpha as f32, &s32, &v32, ldv, &mut out32);
            check("dispatch f32", f32::EPSILON as f64, alpha, &widen(&out32), n, |j| terms(&s_r, &v_r, j));
        }
    }

    #[test]
    #[should_panic(expected = "slice shorter")]
    fn dot_rows_short_slices_panic() {
        dot_rows(2, 3, 1.0, &[1.0f64; 5], 3, &[1.0; 3], &mut [0.0; 2]);
    }

    #[test]
    #[should_panic(expected = "slice shorter")]
    fn combine_rows_short_slices_panic() {
        combine_rows(2, 3, 1.0, &[1.0f64; 2], &[1.0; 5], 3, &mut [0.0; 3]);
    }
}
