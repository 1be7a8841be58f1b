//! Thin Householder QR of a tall (or wide) row-major matrix into caller workspace: `A = Q R` with
//! `Q` (`rows x k`, `k = min(rows, cols)`) orthonormal columns and `R` (`k x cols`) upper
//! trapezoidal. The exact spectra of a head (`docs/math.md` section 9) need only `R`: `Q` is never
//! formed there, but [`qr_form_q`] builds it when a caller wants it.
//!
//! ## Algorithm
//! Householder reflections (Golub & Van Loan, *Matrix Computations*, 4th ed., section 5.2):
//! column `j` is mapped onto `beta_j e_j` by `H_j = I - tau_j v_j v_j^T` with `v_j(j) = 1`, chosen as
//! LAPACK's `dlarfg` does (`beta = -sign(alpha) ||x||`, so that `alpha - beta` never cancels). A
//! column that is already zero below the diagonal gets `tau = 0` (`H = I`): rank-deficient and zero
//! matrices factor without any division by zero, and `R` may have zero (or tiny) diagonal entries.
//! No pivoting is done: `R^T R = A^T A` holds whatever the rank, which is what spectra need.
//!
//! The reflections are applied in blocks, in the compact WY form of Schreiber & Van Loan (1989,
//! "A storage-efficient WY representation for products of Householder transformations";
//! Golub & Van Loan section 5.2.3): `H_0 H_1 ... H_{b-1} = I - V T V^T` with `V` the `b` vectors
//! and `T` (`b x b`) upper triangular, built from `V^T V` and the `tau`s. The trailing columns are
//! then updated by three matrix products, `W = V^T A`, `W = T^T W`, `A -= V W`, through the crate's
//! register-blocked kernel (no packing, no allocation), a few columns at a time so that each
//! group stays in the first-level cache through all three. The panels (blocks of 8 columns) are
//! factored by single reflections, applied column by column as `x -= (tau v^T x) v`.
//!
//! ## Error bound
//! Householder QR is backward stable (Higham, *Accuracy and Stability of Numerical Algorithms*,
//! 2nd ed., theorem 19.4, and section 19.5 for the blocked WY forms): the computed `R` is the exact
//! triangular factor of `A + dA` with an exactly orthogonal `Q`, and column by column
//! `||dA_j||_2 <= gamma(c rows cols) ||A_j||_2` with `gamma(k) = k eps / (1 - k eps)` and a small
//! constant `c`; so `||R^T R - A^T A||_F <= 2 gamma ||A||_F^2` to first order, and the `Q` of
//! [`qr_form_q`] satisfies `||Q^T Q - I||_F <= sqrt(cols) gamma`. The tests check these bounds with
//! `c = 1`; observed errors are a few `eps` times `sqrt(rows)`.

use crate::error::{check_len, check_matrix, check_workspace};
use crate::linalg::kernel;
use crate::linalg::microkernel::gemm_rows;
use crate::workspace::{carve, Req};
use crate::{Error, Result, Scalar};

/// Column blocks of the factorization, outermost first: the trailing update of a block of
/// `BLOCKS[0]` reflections goes through three matrix products; the block itself is factored by
/// single reflections (a further entry would factor it in blocks of that width). One level of 8
/// measured fastest for `768 x 128` (1.07 ms against 1.15 ms for 16 then 4, and 1.39 ms for 32
/// then 8, thread CPU time, AVX2): wider blocks save passes over the trailing columns but make the
/// panels, which run at the speed of dot products, longer.
const BLOCKS: [usize; 1] = [8];

/// Trailing columns updated together by [`apply_block`]: all three products of a group are done
/// while its columns (`rows` entries each) are still in the first-level cache.
const CHUNK: usize = 6;

/// Scratch of one blocking level of width `nb`: `V^T` and `V` (`nb x rows` each), `T` and `V^T V`
/// (`nb x nb` each), and the products `W`, `W T` (`nb x cols` each).
fn level_req(rows: usize, cols: usize, nb: usize) -> Req {
    Req::all_of([Req::array(nb, rows).times(2), Req::array(nb, nb).times(2), Req::array(nb, cols).times(2)])
}

/// Scratch of [`qr_in_place`]: each level's.
fn in_place_req(rows: usize, cols: usize) -> Req {
    BLOCKS.iter().fold(Req::new(0), |req, &nb| req.and(level_req(rows, cols, nb)))
}

/// Scratch elements of [`qr_in_place`] for a `rows x cols` matrix: `16 (rows + cols) + 128`;
/// `usize::MAX` if that overflows (no workspace can then be large enough, and the call reports
/// [`Error::WorkspaceTooSmall`]).
pub fn qr_in_place_workspace_len(rows: usize, cols: usize) -> usize {
    in_place_req(rows, cols).saturating()
}

/// Scratch elements of [`qr_r`]: `A^T` (`rows cols`), the `min(rows, cols)` factors `tau`, and
/// [`qr_in_place_workspace_len`].
pub fn qr_r_workspace_len(rows: usize, cols: usize) -> usize {
    Req::all_of([Req::array(rows, cols), Req::new(rows.min(cols)), in_place_req(rows, cols)]).saturating()
}

/// Householder QR in place, on `A` stored **column by column** (`a_t` is `A^T`, `cols x rows`
/// row-major: the LAPACK `geqrf` layout). On return `R` is in the upper trapezoid of `A`, i.e.
/// `R[i][j] = a_t[j rows + i]` for `i <= j`, and the vector `v_j` below the diagonal of column `j`
/// (`a_t[j rows + j + 1..(j + 1) rows]`, its unit leading entry implied); `tau` (length
/// `min(rows, cols)`) holds the factors, so `Q = H_0 H_1 ... H_{k-1}` with
/// `H_j = I - tau_j v_j v_j^T`. Each column is contiguous here, so every product runs along rows.
///
/// `workspace` needs [`qr_in_place_workspace_len`] elements. NaN or infinity in `a_t` is rejected
/// with [`Error::NonFinite`] before anything is written. Cost `2 cols^2 (rows - cols / 3)` flops.
///
/// ```
/// use sd_attention::linalg::qr::{qr_in_place, qr_in_place_workspace_len};
/// // A = [[3, 1], [4, 2]], stored by columns: [3, 4 | 1, 2]. The first column has norm 5, so
/// // R[0][0] = -5 (beta = -sign(alpha) ||x||); |det A| = 2 = 5 |R[1][1]|.
/// let mut a_t = [3.0f64, 4.0, 1.0, 2.0];
/// let mut tau = [0.0; 2];
/// let mut workspace = vec![0.0; qr_in_place_workspace_len(2, 2)];
/// qr_in_place(2, 2, &mut a_t, &mut tau, &mut workspace)?;
/// assert!((a_t[0] + 5.0).abs() < 1e-15 && (a_t[2] + 2.2).abs() < 1e-15); // R row 0: [-5, -11/5]
/// assert!((a_t[3].abs() - 0.4).abs() < 1e-15);
/// # Ok::<(), sd_attention::Error>(())
/// ```
pub fn qr_in_place<T: Scalar>(
    rows: usize,
    cols: usize,
    a_t: &mut [T],
    tau: &mut [T],
    workspace: &mut [T],
) -> Result<()> {
    check_matrix("a_t", a_t.len(), cols, rows)?;
    check_len("tau", tau.len(), rows.min(cols))?;
    check_workspace(workspace.len(), qr_in_place_workspace_len(rows, cols))?;
    if let Some(index) = a_t.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite { what: "a_t", index });
    }
    qr_in_place_unchecked(rows, cols, a_t, tau, workspace);
    Ok(())
}

/// The `R` factor alone (`min(rows, cols) x cols`, row-major, upper trapezoidal with zeros below
/// the diagonal) of `A = Q R` for a row-major `a` (`rows x cols`), which is left untouched.
/// `workspace` needs [`qr_r_workspace_len`] elements; NaN or infinity in `a` is rejected with
/// [`Error::NonFinite`].
///
/// ```
/// use sd_attention::linalg::qr::{qr_r, qr_r_workspace_len};
/// // A = [[1, 1], [1, -1], [0, 0]]: orthogonal columns of norm sqrt 2, so |R| = sqrt(2) I.
/// let a = [1.0f64, 1.0, 1.0, -1.0, 0.0, 0.0];
/// let mut r = [0.0; 4];
/// let mut workspace = vec![0.0; qr_r_workspace_len(3, 2)];
/// qr_r(3, 2, &a, &mut r, &mut workspace)?;
/// assert!((r[0].abs() - 2f64.sqrt()).abs() < 1e-15 && r[1].abs() < 1e-15 && r[2] == 0.0);
/// assert!((r[3].abs() - 2f64.sqrt()).abs() < 1e-15);
/// # Ok::<(), sd_attention::Error>(())
/// ```
pub fn qr_r<T: Scalar>(rows: usize, cols: usize, a: &[T], r: &mut [T], workspace: &mut [T]) -> Result<()> {
    let k = rows.min(cols);
    check_matrix("a", a.len(), rows, cols)?;
    check_matrix("r", r.len(), k, cols)?;
    check_workspace(workspace.len(), qr_r_workspace_len(rows, cols))?;
    if let Some(index) = a.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite { what: "a", index });
    }
    let ([a_t, tau], scratch) = carve(workspace, [rows * cols, k])?;
    kernel::transpose(rows, cols, a, a_t);
    qr_in_place_unchecked(rows, cols, a_t, tau, scratch);
    r_from_factored(rows, cols, a_t, r);
    Ok(())
}

/// `R` (`min(rows, cols) x cols`, row-major, zeros below the diagonal) from the column-major
/// factored form that [`qr_in_place`] leaves (`a_t`, `cols x rows`).
pub(crate) fn r_from_factored<T: Scalar>(rows: usize, cols: usize, a_t: &[T], r: &mut [T]) {
    let k = rows.min(cols);
    for i in 0..k {
        let out = &mut r[i * cols..(i + 1) * cols];
        out[..i].fill(T::zero());
        for (j, value) in out.iter_mut().enumerate().skip(i) {
            *value = a_t[j * rows + i];
        }
    }
}

/// Scratch elements of [`qr_form_q`]: `min(rows, cols)`.
pub fn qr_form_q_workspace_len(rows: usize, cols: usize) -> usize {
    rows.min(cols)
}

/// The thin `Q` (`rows x k` row-major, `k = min(rows, cols)`, orthonormal columns) of a
/// factorization made by [`qr_in_place`] (`factored_t` and `tau` as it left them), by applying
/// `H_{k-1}, ..., H_0` to the first `k` columns of the identity (Golub & Van Loan section 5.1.6,
/// backward accumulation). Cost `4 rows k^2 - 4 k^3 / 3` flops; `workspace` needs
/// [`qr_form_q_workspace_len`] elements. NaN or infinity in the inputs propagates into `q`.
pub fn qr_form_q<T: Scalar>(
    rows: usize,
    cols: usize,
    factored_t: &[T],
    tau: &[T],
    q: &mut [T],
    workspace: &mut [T],
) -> Result<()> {
    let k = rows.min(cols);
    check_matrix("factored_t", factored_t.len(), cols, rows)?;
    check_len("tau", tau.len(), k)?;
    check_matrix("q", q.len(), rows, k)?;
    check_workspace(workspace.len(), qr_form_q_workspace_len(rows, cols))?;
    q.fill(T::zero());
    for i in 0..k {
        q[i * k + i] = T::one();
    }
    let w = &mut workspace[..k];
    for j in (0..k).rev() {
        if tau[j] == T::zero() {
            continue;
        }
        let len = rows - j;
        let v = &factored_t[j * rows + j..(j + 1) * rows];
        // Columns j.. of Q, rows j..: w = v^T Q_sub, Q_sub -= tau v w, with v_0 = 1 taken apart
        // (the stored v_0 is R[j][j]). Columns left of j are still the identity's (zero in rows
        // >= j), which H_j leaves alone.
        let width = k - j;
        let (q_head, q_tail) = q[j * k..].split_at_mut(k);
        let w = &mut w[..width];
        w.copy_from_slice(&q_head[j..]);
        gemm_rows(1, len - 1, width, T::one(), &v[1..], len - 1, &q_tail[j..], k, w, width, true);
        for (qj, &wj) in q_head[j..].iter_mut().zip(w.iter()) {
            *qj -= tau[j] * wj;
        }
        gemm_rows(len - 1, 1, width, -tau[j], &v[1..], 1, w, width, &mut q_tail[j..], k, true);
    }
    Ok(())
}

/// `x -> beta e_0`: overwrites `x` with `v` (`v_0 = 1`) and returns `(beta, tau)` with
/// `(I - tau v v^T) x = beta e_0` (LAPACK `dlarfg`). `tau = 0` (and `beta = x_0`) when `x_1.. = 0`.
pub(crate) fn reflector<T: Scalar>(x: &mut [T]) -> (T, T) {
    let Some((head, tail)) = x.split_first_mut() else {
        return (T::zero(), T::zero());
    };
    let alpha = *head;
    let tail_norm = kernel::norm(tail);
    *head = T::one();
    if tail_norm == T::zero() {
        return (alpha, T::zero());
    }
    let magnitude = alpha.hypot(tail_norm);
    let beta = if alpha >= T::zero() { -magnitude } else { magnitude };
    let tau = (beta - alpha) / beta;
    // |alpha - beta| >= |beta| >= tail_norm > 0 and |x_i| <= tail_norm, so |v_i| <= 1; the
    // reciprocal overflows only for a subnormal divisor, where each entry is divided instead.
    let divisor = alpha - beta;
    if divisor.abs() >= T::min_positive_value() {
        kernel::scale(divisor.recip(), tail);
    } else {
        for v in tail.iter_mut() {
            *v /= divisor;
        }
    }
    (beta, tau)
}

/// Lanes of the inner products in [`reflect_columns_body`]: independent partial sums, enough to
/// fill the vector registers' multiply-add pipelines of every variant.
const REFLECT_LANES: usize = 16;

/// `x -= (tau v^T x) v` for each column `x = a[c lda..c lda + v.len()]`, `c < count`: the inner
/// product in [`REFLECT_LANES`] partial sums (added pairwise at the end), then the update, while
/// the column is in the first-level cache. Multiply-adds are fused when `FUSED`.
#[inline(always)]
fn reflect_columns_body<T: Scalar, const FUSED: bool>(
    tau: T,
    v: &[T],
    a: &mut [T],
    lda: usize,
    count: usize,
) {
    let len = v.len();
    for c in 0..count {
        let x = &mut a[c * lda..c * lda + len];
        let mut acc = [T::zero(); REFLECT_LANES];
        let (x_chunks, v_chunks) = (x.chunks_exact(REFLECT_LANES), v.chunks_exact(REFLECT_LANES));
        let mut tail = T::zero();
        for (&xi, &vi) in x_chunks.remainder().iter().zip(v_chunks.remainder()) {
            tail = T::multiply_add::<FUSED>(xi, vi, tail);
        }
        for (xs, vs) in x_chunks.zip(v_chunks) {
            for lane in 0..REFLECT_LANES {
                acc[lane] = T::multiply_add::<FUSED>(xs[lane], vs[lane], acc[lane]);
            }
        }
        let mut width = REFLECT_LANES;
        while width > 1 {
            width /= 2;
            for lane in 0..width {
                acc[lane] += acc[lane + width];
            }
        }
        let w = -(tau * (acc[0] + tail));
        for (xi, &vi) in x.iter_mut().zip(v) {
            *xi = T::multiply_add::<FUSED>(w, vi, *xi);
        }
    }
}

macro_rules! reflect_variants {
    ($t:ty, $isa:ident, $dispatch:ident) => {
        crate::arch::multiversion! {
            /// [`reflect_columns_body`] in the variant `isa`: AVX-512 or AVX2 with FMA, or portable
            /// (unfused).
            fn $isa(tau: $t, v: &[$t], a: &mut [$t], lda: usize, count: usize);
            avx512("avx512f,fma") => reflect_columns_body::<$t, true>(tau, v, a, lda, count);
            avx2("avx2,fma") => reflect_columns_body::<$t, true>(tau, v, a, lda, count);
            portable => reflect_columns_body::<$t, false>(tau, v, a, lda, count);
        }

        /// [`reflect_columns_body`] in the variant [`crate::arch`] chooses (the `Scalar` method
        /// `reflect_columns`).
        pub(crate) fn $dispatch(tau: $t, v: &[$t], a: &mut [$t], lda: usize, count: usize) {
            $isa(crate::arch::isa(), tau, v, a, lda, count)
        }
    };
}

reflect_variants!(f32, reflect_columns_f32_isa, reflect_columns_f32);
reflect_variants!(f64, reflect_columns_f64_isa, reflect_columns_f64);

/// Scratch of one blocking level, carved from the workspace.
struct Level<'w, T> {
    nb: usize,
    /// `V^T` (`nb x rows'`: row `j` zero before `j`, one at `j`) and `V` (`rows' x nb`).
    vt: &'w mut [T],
    v: &'w mut [T],
    /// `T` (upper triangular) and `V^T V` (upper part used).
    t: &'w mut [T],
    gram: &'w mut [T],
    /// `W = B V` and `W T` (`cols' x nb`) for the trailing columns `B`.
    w: &'w mut [T],
    w2: &'w mut [T],
}

/// The factorization of `A` (column-major in `a_t`) on validated input: finite entries, `tau` of
/// length `min(rows, cols)`, `workspace` of at least [`qr_in_place_workspace_len`] elements.
pub(crate) fn qr_in_place_unchecked<T: Scalar>(
    rows: usize,
    cols: usize,
    a_t: &mut [T],
    tau: &mut [T],
    workspace: &mut [T],
) {
    let mut rest = workspace;
    let mut levels: [Option<Level<'_, T>>; BLOCKS.len()] = Default::default();
    for (slot, nb) in levels.iter_mut().zip(BLOCKS) {
        let (vt, r) = rest.split_at_mut(nb * rows);
        let (v, r) = r.split_at_mut(nb * rows);
        let (t, r) = r.split_at_mut(nb * nb);
        let (gram, r) = r.split_at_mut(nb * nb);
        let (w, r) = r.split_at_mut(nb * cols);
        let (w2, r) = r.split_at_mut(nb * cols);
        rest = r;
        *slot = Some(Level { nb, vt, v, t, gram, w, w2 });
    }
    let mut levels = levels.map(|l| l.expect("every level is carved above"));
    factor_columns(rows, a_t, tau, 0, cols, &mut levels);
}

/// Reflections for columns `c0..min(c1, rows)`, each applied to the columns up to `c1`.
fn factor_columns<T: Scalar>(
    rows: usize,
    a_t: &mut [T],
    tau: &mut [T],
    c0: usize,
    c1: usize,
    levels: &mut [Level<'_, T>],
) {
    let Some((level, inner)) = levels.split_first_mut() else {
        return unblocked(rows, a_t, tau, c0, c1);
    };
    let last = c1.min(rows);
    let mut k0 = c0;
    while k0 < last {
        let b = level.nb.min(last - k0);
        factor_columns(rows, a_t, tau, k0, k0 + b, inner);
        let trailing = c1 - (k0 + b);
        if trailing > 0 {
            apply_block(rows, a_t, &tau[k0..k0 + b], k0, b, trailing, level);
        }
        k0 += b;
    }
}

/// Applies `(H_{k0} ... H_{k0+b-1})^T = I - V T^T V^T` to the `trailing` columns right of the
/// block (rows `k0..`), in compact WY form: with those columns as the rows of `B`
/// (`trailing x rows'`), `B -= ((B V) T) V^T`.
fn apply_block<T: Scalar>(
    rows: usize,
    a_t: &mut [T],
    tau: &[T],
    k0: usize,
    b: usize,
    trailing: usize,
    level: &mut Level<'_, T>,
) {
    let mp = rows - k0;
    let (vt, v) = (&mut level.vt[..b * mp], &mut level.v[..mp * b]);
    for j in 0..b {
        let row = &mut vt[j * mp..(j + 1) * mp];
        row[..j].fill(T::zero());
        row[j] = T::one();
        let column = (k0 + j) * rows + k0;
        row[j + 1..].copy_from_slice(&a_t[column + j + 1..column + mp]);
    }
    // V row by row (each row of b entries written whole, reading b streams of V^T).
    for (r, v_row) in v.chunks_exact_mut(b).enumerate() {
        for (j, value) in v_row.iter_mut().enumerate() {
            *value = vt[j * mp + r];
        }
    }
    // Upper part of V^T V in strips of 8 rows: rows i0.. of V^T vanish before column i0.
    let gram = &mut level.gram[..b * b];
    for i0 in (0..b).step_by(8) {
        let strip = 8.min(b - i0);
        let (vt_strip, v_strip) = (&vt[i0 * mp + i0..], &v[i0 * b + i0..]);
        gemm_rows(
            strip,
            mp - i0,
            b - i0,
            T::one(),
            vt_strip,
            mp,
            v_strip,
            b,
            &mut gram[i0 * b + i0..],
            b,
            false,
        );
    }
    // T: T_jj = tau_j, T[..j, j] = -tau_j T[..j, ..j] (V^T v_j) (LAPACK dlarft, forward, columnwise).
    let t = &mut level.t[..b * b];
    t.fill(T::zero());
    for j in 0..b {
        t[j * b + j] = tau[j];
        for i in 0..j {
            let mut sum = T::zero();
            for l in i..j {
                sum += t[i * b + l] * gram[l * b + j];
            }
            t[i * b + j] = -tau[j] * sum;
        }
    }
    // The trailing columns in groups of CHUNK, each group through all three products at once.
    let start = (k0 + b) * rows + k0;
    for c0 in (0..trailing).step_by(CHUNK) {
        let group = CHUNK.min(trailing - c0);
        let (w, w2) = (&mut level.w[..group * b], &mut level.w2[..group * b]);
        let columns = &mut a_t[start + c0 * rows..];
        gemm_rows(group, mp, b, T::one(), columns, rows, v, b, w, b, false);
        gemm_rows(group, b, b, T::one(), w, b, t, b, w2, b, false);
        gemm_rows(group, b, mp, -T::one(), w2, b, vt, mp, columns, rows, true);
    }
}

/// Single reflections for columns `c0..min(c1, rows)`, each applied to the columns up to `c1`:
/// column by column, `x -= (tau v^T x) v`, while the column is in the first-level cache.
fn unblocked<T: Scalar>(rows: usize, a_t: &mut [T], tau: &mut [T], c0: usize, c1: usize) {
    for c in c0..c1.min(rows) {
        let (top, below) = a_t.split_at_mut((c + 1) * rows);
        let v = &mut top[c * rows + c..];
        let (beta, t) = reflector(v);
        tau[c] = t;
        let width = c1 - c - 1;
        if t != T::zero() && width > 0 {
            T::reflect_columns(t, v, &mut below[c..], rows, width);
        }
        v[0] = beta;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;
    use std::vec::Vec;

    /// Every variant the CPU runs of the column reflection, f64 and f32, against the same
    /// arithmetic in f64 by the textbook loops, over lengths 0, 1, below, at and beyond the lanes
    /// and odd, with padding between columns that must stay untouched. Bound: the inner product's
    /// `(len + 2) eps sum |x_i v_i|` times `|tau v_i|`, plus `2 eps |x_i|` for the update.
    #[test]
    fn every_reflect_variant_matches_the_naive_loops() {
        let mut rng = SplitMix64::new(11);
        for len in [0usize, 1, 5, 15, 16, 17, 33, 100] {
            for count in [1usize, 3] {
                let lda = len + 2;
                let v: Vec<f64> = (0..len).map(|_| rng.normal()).collect();
                let a0: Vec<f64> = (0..count * lda).map(|_| rng.normal()).collect();
                let tau = 0.75;
                let mut expected = a0.clone();
                let mut bound = std::vec![0.0; a0.len()];
                for c in 0..count {
                    let x = &mut expected[c * lda..c * lda + len];
                    let w: f64 = x.iter().zip(&v).map(|(a, b)| a * b).sum();
                    let magnitude: f64 = x.iter().zip(&v).map(|(a, b)| (a * b).abs()).sum();
                    for i in 0..len {
                        bound[c * lda + i] =
                            (len as f64 + 2.0) * magnitude * (tau * v[i]).abs() + 2.0 * x[i].abs();
                        x[i] -= tau * w * v[i];
                    }
                }
                for isa in crate::arch::available() {
                    let mut a = a0.clone();
                    reflect_columns_f64_isa(isa, tau, &v, &mut a, lda, count);
                    for (i, ((&got, &want), &b)) in a.iter().zip(&expected).zip(&bound).enumerate() {
                        let err = (got - want).abs();
                        assert!(err <= b * f64::EPSILON, "{} f64 len {len} at {i}: {err:e}", isa.name());
                        if i % lda >= len {
                            assert_eq!(got, a0[i], "{} f64: padding written", isa.name());
                        }
                    }
                    // f32: inputs rounded, compared with the f64 loops on the rounded inputs.
                    let (v32, a32): (Vec<f32>, Vec<f32>) =
                        (v.iter().map(|&x| x as f32).collect(), a0.iter().map(|&x| x as f32).collect());
                    let mut got32 = a32.clone();
                    reflect_columns_f32_isa(isa, tau as f32, &v32, &mut got32, lda, count);
                    for c in 0..count {
                        let x: Vec<f64> = a32[c * lda..c * lda + len].iter().map(|&x| x as f64).collect();
                        let vr: Vec<f64> = v32.iter().map(|&x| x as f64).collect();
                        let w: f64 = x.iter().zip(&vr).map(|(a, b)| a * b).sum();
                        let magnitude: f64 = x.iter().zip(&vr).map(|(a, b)| (a * b).abs()).sum();
                        for i in 0..len {
                            let want = x[i] - tau * w * vr[i];
                            let b = (len as f64 + 2.0) * magnitude * (tau * vr[i]).abs() + 2.0 * x[i].abs();
                            let err = (got32[c * lda + i] as f64 - want).abs();
                            assert!(
                                err <= b * f32::EPSILON as f64 * 1.01,
                                "{} f32 len {len}: {err:e}",
                                isa.name()
                            );
                        }
                    }
                }
            }
        }
    }
}
