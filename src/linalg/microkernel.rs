//! Register-blocked products of row-major operands, without packing.
//!
//! ```text
//! C = alpha A B (+ C),   A: m x k (row i at a[i lda..]),  B: k x n (row p at b[p ldb..]),
//!                        C: m x n (row i at c[i ldc..])
//! ```
//!
//! `matrixmultiply` copies ("packs") both operands into aligned panels on every call and allocates
//! the buffers for them. That pays for large inner dimensions, but the products of attention tiles
//! and of a small model have `k` between 8 and a few hundred, where the copies cost as much as the
//! arithmetic. Here the operands are read where they lie: a block of `R x W` outputs is held in
//! registers while `k` steps each broadcast `R` entries of `A` and load one row of `W` entries of
//! `B`, then written (or added) to `C` once. `C` is covered in bands of [`ROW_BAND`] rows, each
//! band column panel by column panel: the band's rows of `A` stay in the first- or second-level
//! cache while the panels of `B` sweep past them (without bands, every panel re-read all of `A`
//! from the second level: 2048 x 64 x 256 ran at 115 GF/s whole, 150 GF/s in bands). The ragged edges
//! use narrower and shorter blocks (`W` halving down to 1, `R` to 4, 2, 1), so any shape works and
//! every output is computed by the same sum in the same order, `sum_p a_ip b_pj` from `p = 0`
//! (with `alpha` applied once at the end). Results therefore do not depend on where a block falls.
//!
//! The block loops are plain arithmetic over fixed-size arrays, which the compiler unrolls and keeps
//! in vector registers. With `std` on x86-64 the same loops are compiled for AVX-512 (with Rust
//! 1.89 or newer, see build.rs) and for AVX2 with FMA, chosen at run time; every other target gets
//! the portable instantiation (unfused multiply-add) in its compile-time features.
//!
//! Use it when the operands are cache-resident and `k` is small; for large square products the
//! packed path of [`crate::linalg::kernel::gemm`] is faster.

use crate::Scalar;

/// A block of `R` rows and `W` columns of `C`: `acc_ij = sum_p a[i lda + p] b[p ldb + j]`, then
/// `C_ij = alpha acc_ij` (or `+=` with `accumulate`). `a` starts at the block's first row of `A`,
/// `b` at the block's first column of `B`, `c` at the block's first entry.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn block<T: Scalar, const FUSED: bool, const R: usize, const W: usize>(
    k: usize,
    alpha: T,
    a: &[T],
    lda: usize,
    b: &[T],
    ldb: usize,
    c: &mut [T],
    ldc: usize,
    accumulate: bool,
) {
    let mut acc = [[T::zero(); W]; R];
    let a_rows: [&[T]; R] = core::array::from_fn(|i| &a[i * lda..i * lda + k]);
    for p in 0..k {
        let b_row = &b[p * ldb..p * ldb + W];
        for (acc_row, a_row) in acc.iter_mut().zip(&a_rows) {
            let a_ip = a_row[p];
            for (acc_ij, &b_pj) in acc_row.iter_mut().zip(b_row) {
                *acc_ij = T::multiply_add::<FUSED>(a_ip, b_pj, *acc_ij);
            }
        }
    }
    for (i, acc_row) in acc.iter().enumerate() {
        let c_row = &mut c[i * ldc..i * ldc + W];
        if accumulate {
            for (c_ij, &v) in c_row.iter_mut().zip(acc_row) {
                *c_ij += alpha * v;
            }
        } else {
            for (c_ij, &v) in c_row.iter_mut().zip(acc_row) {
                *c_ij = alpha * v;
            }
        }
    }
}

/// Every full `W`-column panel of `C` from column `j0` on (rows in blocks of `R`, then 4, 2, 1);
/// returns the first column not covered.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn panels<T: Scalar, const FUSED: bool, const R: usize, const W: usize>(
    m: usize,
    k: usize,
    n: usize,
    mut j0: usize,
    alpha: T,
    a: &[T],
    lda: usize,
    b: &[T],
    ldb: usize,
    c: &mut [T],
    ldc: usize,
    accumulate: bool,
) -> usize {
    while j0 + W <= n {
        let (b_panel, mut i0) = (&b[j0..], 0);
        while i0 + R <= m {
            let (a_blk, c_blk) = (&a[i0 * lda..], &mut c[i0 * ldc + j0..]);
            block::<T, FUSED, R, W>(k, alpha, a_blk, lda, b_panel, ldb, c_blk, ldc, accumulate);
            i0 += R;
        }
        if R > 4 && i0 + 4 <= m {
            let (a_blk, c_blk) = (&a[i0 * lda..], &mut c[i0 * ldc + j0..]);
            block::<T, FUSED, 4, W>(k, alpha, a_blk, lda, b_panel, ldb, c_blk, ldc, accumulate);
            i0 += 4;
        }
        if R > 2 && i0 + 2 <= m {
            let (a_blk, c_blk) = (&a[i0 * lda..], &mut c[i0 * ldc + j0..]);
            block::<T, FUSED, 2, W>(k, alpha, a_blk, lda, b_panel, ldb, c_blk, ldc, accumulate);
            i0 += 2;
        }
        if R > 1 && i0 < m {
            let (a_blk, c_blk) = (&a[i0 * lda..], &mut c[i0 * ldc + j0..]);
            block::<T, FUSED, 1, W>(k, alpha, a_blk, lda, b_panel, ldb, c_blk, ldc, accumulate);
        }
        j0 += W;
    }
    j0
}

/// The whole product in bands of [`ROW_BAND`] rows ([`band`]). `W` is a power of two of at most 64.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn product<T: Scalar, const FUSED: bool, const R: usize, const W: usize>(
    m: usize,
    k: usize,
    n: usize,
    alpha: T,
    a: &[T],
    lda: usize,
    b: &[T],
    ldb: usize,
    c: &mut [T],
    ldc: usize,
    accumulate: bool,
) {
    if k == 0 {
        // A B is the zero matrix (and A, B may be empty).
        if !accumulate {
            for i in 0..m {
                c[i * ldc..i * ldc + n].fill(T::zero());
            }
        }
        return;
    }
    for i0 in (0..m).step_by(ROW_BAND) {
        let rows = ROW_BAND.min(m - i0);
        let (a, c) = (&a[i0 * lda..], &mut c[i0 * ldc..]);
        band::<T, FUSED, R, W>(rows, k, n, alpha, a, lda, b, ldb, c, ldc, accumulate);
    }
}

/// Rows of `C` per band of [`product`] (see the module documentation).
pub(crate) const ROW_BAND: usize = 128;

/// One band of [`product`]: blocks of `R x W`, then the column remainder in panels of `W/2`, ...,
/// 1 (each width runs at most once, since the remainder is below twice it).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn band<T: Scalar, const FUSED: bool, const R: usize, const W: usize>(
    m: usize,
    k: usize,
    n: usize,
    alpha: T,
    a: &[T],
    lda: usize,
    b: &[T],
    ldb: usize,
    c: &mut [T],
    ldc: usize,
    accumulate: bool,
) {
    let mut j0 = panels::<T, FUSED, R, W>(m, k, n, 0, alpha, a, lda, b, ldb, c, ldc, accumulate);
    if W > 32 {
        j0 = panels::<T, FUSED, R, 32>(m, k, n, j0, alpha, a, lda, b, ldb, c, ldc, accumulate);
    }
    if W > 16 {
        j0 = panels::<T, FUSED, R, 16>(m, k, n, j0, alpha, a, lda, b, ldb, c, ldc, accumulate);
    }
    if W > 8 {
        j0 = panels::<T, FUSED, R, 8>(m, k, n, j0, alpha, a, lda, b, ldb, c, ldc, accumulate);
    }
    if W > 4 {
        j0 = panels::<T, FUSED, R, 4>(m, k, n, j0, alpha, a, lda, b, ldb, c, ldc, accumulate);
    }
    if W > 2 {
        j0 = panels::<T, FUSED, R, 2>(m, k, n, j0, alpha, a, lda, b, ldb, c, ldc, accumulate);
    }
    if W > 1 {
        panels::<T, FUSED, R, 1>(m, k, n, j0, alpha, a, lda, b, ldb, c, ldc, accumulate);
    }
}

/// Block shapes per instruction set, chosen so that the `R x W` accumulators plus one row of `B`
/// and a broadcast fit the vector registers (32 for AVX-512, 16 for AVX2): `f32` AVX-512 8 x 32
/// (16 zmm), AVX2 6 x 16 (12 ymm); `f64` half as wide; portable 4 x 8.
macro_rules! instruction_set_variants {
    ($t:ty, $isa:ident, $dispatch:ident, $w512:expr, $w2:expr) => {
        crate::arch::multiversion! {
            /// [`product`] in the variant `isa`: AVX-512 or AVX2 with FMA, or portable (unfused).
            pub(crate) fn $isa(
                m: usize,
                k: usize,
                n: usize,
                alpha: $t,
                a: &[$t],
                lda: usize,
                b: &[$t],
                ldb: usize,
                c: &mut [$t],
                ldc: usize,
                accumulate: bool,
            );
            // One row (a vector-matrix product, e.g. one token of a decoder): a block as wide as
            // the registers allow, so that several independent accumulators hide the FMA latency
            // (an R x W block has R of them; one row would have only W / lanes).
            avx512("avx512f,fma") => if m == 1 {
                product::<$t, true, 1, 64>(m, k, n, alpha, a, lda, b, ldb, c, ldc, accumulate)
            } else {
                product::<$t, true, 8, $w512>(m, k, n, alpha, a, lda, b, ldb, c, ldc, accumulate)
            };
            avx2("avx2,fma") => if m == 1 {
                product::<$t, true, 1, { 4 * $w2 }>(m, k, n, alpha, a, lda, b, ldb, c, ldc, accumulate)
            } else {
                product::<$t, true, 6, $w2>(m, k, n, alpha, a, lda, b, ldb, c, ldc, accumulate)
            };
            portable => product::<$t, false, 4, 8>(m, k, n, alpha, a, lda, b, ldb, c, ldc, accumulate);
        }

        /// [`product`] in the variant [`crate::arch`] chooses (see the module documentation);
        /// operands already checked by [`gemm_rows`].
        #[allow(clippy::too_many_arguments)]
        pub(crate) fn $dispatch(
            m: usize,
            k: usize,
            n: usize,
            alpha: $t,
            a: &[$t],
            lda: usize,
            b: &[$t],
            ldb: usize,
            c: &mut [$t],
            ldc: usize,
            accumulate: bool,
        ) {
            $isa(crate::arch::isa(), m, k, n, alpha, a, lda, b, ldb, c, ldc, accumulate)
        }
    };
}

instruction_set_variants!(f32, product_f32_isa, product_f32, 32, 16);
instruction_set_variants!(f64, product_f64_isa, product_f64, 16, 8);

/// `C = alpha A B` (or `C += alpha A B` with `accumulate`) for row-major operands with leading
/// dimensions: `A` is `m x k` with row `i` at `a[i lda..i lda + k]`, `B` is `k x n` with row `p` at
/// `b[p ldb..p ldb + n]`, `C` is `m x n` with row `i` at `c[i ldc..i ldc + n]`. Entries between
/// rows (beyond the row lengths) are neither read nor written. Without `accumulate`, `C` is not
/// read (NaN there does not propagate). `k = 0` gives `C = 0` (or leaves it).
///
/// Each `C_ij` is `alpha * sum_p a_ip b_pj` summed from `p = 0` in order (fused multiply-adds on
/// CPUs with FMA), so the error is the plain dot product's: `|err| <= k eps sum_p |a_ip b_pj|` to
/// first order (plus one rounding for `alpha` and one for the accumulation).
///
/// Panics if a slice is shorter than its dimensions imply or a leading dimension is below its row
/// length (crate-internal: validated callers never trigger this).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_rows<T: Scalar>(
    m: usize,
    k: usize,
    n: usize,
    alpha: T,
    a: &[T],
    lda: usize,
    b: &[T],
    ldb: usize,
    c: &mut [T],
    ldc: usize,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(lda >= k && ldb >= n && ldc >= n, "gemm_rows: leading dimension below the row length");
    let extent = |rows: usize, ld: usize, len: usize| {
        rows.checked_sub(1).and_then(|r| r.checked_mul(ld)).and_then(|s| s.checked_add(len))
    };
    let fits = |rows, ld, len, slice_len| extent(rows, ld, len).is_some_and(|e| e <= slice_len);
    assert!(
        (k == 0 || (fits(m, lda, k, a.len()) && fits(k, ldb, n, b.len()))) && fits(m, ldc, n, c.len()),
        "gemm_rows: slice shorter than its dimensions"
    );
    T::product_rows(m, k, n, alpha, a, lda, b, ldb, c, ldc, accumulate);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;
    use std::boxed::Box;
    use std::vec;
    use std::vec::Vec;

    /// `C = alpha A B (+ C0)` in f64 by the textbook triple loop, over the same strided storage.
    #[allow(clippy::too_many_arguments)]
    fn naive(
        (m, k, n): (usize, usize, usize),
        alpha: f64,
        a: &[f64],
        lda: usize,
        b: &[f64],
        ldb: usize,
        c: &mut [f64],
        ldc: usize,
        accumulate: bool,
    ) {
        for i in 0..m {
            for j in 0..n {
                let sum: f64 = (0..k).map(|p| a[i * lda + p] * b[p * ldb + j]).sum();
                let old = if accumulate { c[i * ldc + j] } else { 0.0 };
                c[i * ldc + j] = old + alpha * sum;
            }
        }
    }

    fn random(len: usize, rng: &mut SplitMix64) -> Vec<f64> {
        (0..len).map(|_| rng.normal()).collect()
    }

    type Variant<T> =
        (&'static str, Box<dyn Fn(usize, usize, usize, T, &[T], usize, &[T], usize, &mut [T], usize, bool)>);

    /// The dispatched path and each variant the CPU runs, whatever the dispatch chooses.
    macro_rules! variants {
        ($t:ty, $dispatch:ident, $isa:ident) => {{
            let mut variants: Vec<Variant<$t>> = vec![("dispatch", Box::new($dispatch))];
            for isa in crate::arch::available() {
                variants.push((
                    isa.name(),
                    Box::new(
                        move |m: usize,
                              k: usize,
                              n: usize,
                              al: $t,
                              a: &[$t],
                              la: usize,
                              b: &[$t],
                              lb: usize,
                              c: &mut [$t],
                              lc: usize,
                              acc: bool| $isa(isa, m, k, n, al, a, la, b, lb, c, lc, acc),
                    ),
                ));
            }
            variants
        }};
    }

    fn f32_variants() -> Vec<Variant<f32>> {
        variants!(f32, product_f32, product_f32_isa)
    }

    fn f64_variants() -> Vec<Variant<f64>> {
        variants!(f64, product_f64, product_f64_isa)
    }

    /// Shapes that reach every block: rows 0..=17 (full blocks of 8 and 6, remainders 4, 2, 1),
    /// columns through every panel width (1..=70 covers 64, 32, 16, 8, 4, 2, 1 and mixtures), `k`
    /// 0, 1, odd, prime and beyond a cache line; leading dimensions with padding that must stay
    /// untouched. Every variant, f64 and f32, against the naive f64 loop within the dot-product
    /// bound `(k + 2) eps sum_p |a_ip b_pj|` (+ `eps |C0|` when accumulating).
    #[test]
    fn every_variant_matches_the_naive_product() {
        let mut rng = SplitMix64::new(7);
        let mut cases = Vec::new();
        for m in [0usize, 1, 2, 3, 5, 6, 7, 8, 9, 13, 17] {
            for n in [1usize, 2, 3, 7, 8, 15, 16, 17, 31, 33, 47, 64, 70] {
                for k in [0usize, 1, 5, 16, 37] {
                    cases.push((m, k, n));
                }
            }
        }
        // Beyond one band of ROW_BAND rows, with a ragged last band.
        cases.extend([
            (128, 64, 256),
            (33, 257, 129),
            (1, 300, 1),
            (ROW_BAND + 7, 16, 40),
            (2 * ROW_BAND, 3, 9),
        ]);
        for (case, &(m, k, n)) in cases.iter().enumerate() {
            let (lda, ldb, ldc) = (k + case % 3, n + case % 5, n + 1 + case % 2);
            let a = random(m * lda + 3, &mut rng);
            let b = random(k * ldb + 3, &mut rng);
            let c0 = random(m * ldc + 3, &mut rng);
            let alpha = if case % 2 == 0 { 1.0 } else { -0.75 };
            for accumulate in [false, true] {
                let mut expected = c0.clone();
                naive((m, k, n), alpha, &a, lda, &b, ldb, &mut expected, ldc, accumulate);
                let magnitude = |i: usize, j: usize| -> f64 {
                    let products: f64 = (0..k).map(|p| (a[i * lda + p] * b[p * ldb + j]).abs()).sum();
                    products * alpha.abs() + if accumulate { c0[i * ldc + j].abs() } else { 0.0 }
                };
                let check = |name: &str, eps: f64, got: &[f64]| {
                    for i in 0..m {
                        for j in 0..ldc {
                            let at = i * ldc + j;
                            if j >= n {
                                assert_eq!(
                                    got[at], c0[at],
                                    "{name}: padding ({i}, {j}) written, {m}x{k}x{n}"
                                );
                                continue;
                            }
                            let bound = (k as f64 + 2.0) * eps * magnitude(i, j) + 1e-300;
                            let err = (got[at] - expected[at]).abs();
                            assert!(
                                err <= bound,
                                "{name} {m}x{k}x{n} acc={accumulate} ({i},{j}): {err} > {bound}"
                            );
                        }
                    }
                    assert_eq!(got[m * ldc..], c0[m * ldc..], "{name}: rows beyond m written");
                };
                for (name, product) in f64_variants() {
                    let mut c = c0.clone();
                    product(m, k, n, alpha, &a, lda, &b, ldb, &mut c, ldc, accumulate);
                    check(name, f64::EPSILON, &c);
                }
                let (a32, b32): (Vec<f32>, Vec<f32>) =
                    (a.iter().map(|&x| x as f32).collect(), b.iter().map(|&x| x as f32).collect());
                let c32: Vec<f32> = c0.iter().map(|&x| x as f32).collect();
                // The f32 inputs are the f64 ones rounded: compare with the naive product of the
                // rounded inputs (the rounding of the inputs is not the kernel's error).
                let (a_r, b_r): (Vec<f64>, Vec<f64>) =
                    (a32.iter().map(|&x| x as f64).collect(), b32.iter().map(|&x| x as f64).collect());
                let c0_r: Vec<f64> = c32.iter().map(|&x| x as f64).collect();
                let mut expected = c0_r.clone();
                naive((m, k, n), alpha, &a_r, lda, &b_r, ldb, &mut expected, ldc, accumulate);
                for (name, product) in f32_variants() {
                    let mut c = c32.clone();
                    product(m, k, n, alpha as f32, &a32, lda, &b32, ldb, &mut c, ldc, accumulate);
                    for i in 0..m {
                        for j in 0..ldc {
                            let at = i * ldc + j;
                            if j >= n {
                                assert_eq!(c[at], c32[at], "{name}: f32 padding written");
                                continue;
                            }
                            let bound =
                                (k as f64 + 2.0) * f32::EPSILON as f64 * (magnitude(i, j) + 1e-30) * 1.01;
                            let err = (c[at] as f64 - expected[at]).abs();
                            assert!(err <= bound, "{name} f32 {m}x{k}x{n} ({i},{j}): {err} > {bound}");
                        }
                    }
                }
            }
        }
    }

    /// Without `accumulate`, NaN already in `C` does not leak into the result; `k = 0` writes
    /// zeros (or leaves `C` when accumulating); NaN in the operands reaches exactly the outputs
    /// whose sums contain it.
    #[test]
    fn special_values() {
        let a = [1.0f32, f32::NAN, 2.0, 3.0]; // 2 x 2, NaN at (0, 1)
        let b = [1.0f32, 2.0, 3.0, 4.0]; // 2 x 2
        let mut c = [f32::NAN; 4];
        gemm_rows(2, 2, 2, 1.0, &a, 2, &b, 2, &mut c, 2, false);
        assert!(c[0].is_nan() && c[1].is_nan());
        assert_eq!(c[2..], [2.0 + 9.0, 4.0 + 12.0]);
        let mut c = [f32::NAN, 5.0];
        gemm_rows(1, 0, 2, 1.0, &[], 0, &[], 2, &mut c, 2, false);
        assert_eq!(c, [0.0, 0.0]);
        let mut c = [4.0f64, 5.0];
        gemm_rows(1, 0, 2, 1.0, &[], 0, &[], 2, &mut c, 2, true);
        assert_eq!(c, [4.0, 5.0]);
    }

    #[test]
    #[should_panic(expected = "slice shorter")]
    fn short_slices_panic_before_any_work() {
        let mut c = [0.0f64; 3];
        gemm_rows(2, 1, 2, 1.0, &[1.0, 2.0], 1, &[1.0, 2.0], 2, &mut c, 2, false);
    }
}
