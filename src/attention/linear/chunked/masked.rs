//! The products of a chunk on the register-blocked kernel: plain, and masked to the causal
//! (lower) or anti-causal (upper) triangle of a `c x c` block; the state update.

use super::elementwise::axpy;
use super::Tiles;
use crate::linalg::microkernel::gemm_rows;
use crate::Scalar;

/// `C = A B` (or `C += A B`) by the register-blocked kernel (see the module documentation).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn product<T: Scalar>(
    m: usize,
    k: usize,
    n: usize,
    a: &[T],
    lda: usize,
    b: &[T],
    ldb: usize,
    c: &mut [T],
    ldc: usize,
    accumulate: bool,
) {
    gemm_rows(m, k, n, T::one(), a, lda, b, ldb, c, ldc, accumulate);
}

/// `t` (`c x c`, leading dimension `c`) = the causal part of `a bt` (`a`: `c x k`, `bt`: `k x c`):
/// per band of `tiles.width` rows (a panel of the product kernel), the columns up to the band's
/// last row by the product kernel, then every entry above the diagonal overwritten with zero.
/// Entries to the right of a band's columns are not written (and never read by
/// [`lower_product`], whose row blocks end at or before their band's end).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn lower_scores<T: Scalar>(
    tiles: Tiles,
    c: usize,
    k: usize,
    a: &[T],
    lda: usize,
    bt: &[T],
    ldb: usize,
    t: &mut [T],
) {
    // Bands of a panel's width: each band's columns end on a panel boundary (or the chunk's end).
    for i0 in (0..c).step_by(tiles.width) {
        let rows = tiles.width.min(c - i0);
        let cols = c.min(i0 + tiles.width);
        product(rows, k, cols, &a[i0 * lda..], lda, bt, ldb, &mut t[i0 * c..], c, false);
        for r in i0..i0 + rows {
            t[r * c + r + 1..r * c + cols].fill(T::zero());
        }
    }
}

/// The row blocks of the masked products: blocks of `tiles.rows` rows inside each band of
/// `tiles.width` rows (the last block of a band may be shorter), so that no block crosses the
/// band boundary at which [`lower_scores`] and [`upper_scores`] stop computing entries.
#[inline(always)]
pub(super) fn blocks(tiles: Tiles, c: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..c).step_by(tiles.width).flat_map(move |b0| {
        let b1 = c.min(b0 + tiles.width);
        (b0..b1).step_by(tiles.rows).map(move |i0| (i0, tiles.rows.min(b1 - i0)))
    })
}

/// `out_r (+)= sum_{j <= r} t_rj b_j` for `c` rows (`t` from [`lower_scores`]; `b`: rows of `n`
/// at leading dimension `ldb`; `out`: leading dimension `ldo`). With `finite` (every `b_j` of the
/// chunk finite) each row block runs through the end of the block, its zeros above the diagonal
/// included; otherwise the diagonal block is summed over `j <= r` only.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn lower_product<T: Scalar>(
    tiles: Tiles,
    c: usize,
    t: &[T],
    b: &[T],
    ldb: usize,
    n: usize,
    out: &mut [T],
    ldo: usize,
    finite: bool,
    accumulate: bool,
) {
    for (i0, rows) in blocks(tiles, c) {
        let (t_block, out_block) = (&t[i0 * c..], &mut out[i0 * ldo..]);
        if finite {
            product(rows, i0 + rows, n, t_block, c, b, ldb, out_block, ldo, accumulate);
        } else {
            product(rows, i0, n, t_block, c, b, ldb, out_block, ldo, accumulate);
            for r in 0..rows {
                let out_r = &mut out_block[r * ldo..r * ldo + n];
                for j in i0..=i0 + r {
                    axpy(t_block[r * c + j], &b[j * ldb..j * ldb + n], out_r);
                }
            }
        }
    }
}

/// `t` (`c x c`) = the anti-causal part of `a bt`: row `j` holds `a_j . bt_i` for `i >= j` (per
/// band of `tiles.width` rows, from the band's first column; entries left of the diagonal
/// overwritten with zero, entries left of the band not written: [`upper_product`]'s row blocks
/// start at or after their band's start).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn upper_scores<T: Scalar>(
    tiles: Tiles,
    c: usize,
    k: usize,
    a: &[T],
    lda: usize,
    bt: &[T],
    ldb: usize,
    t: &mut [T],
) {
    for j0 in (0..c).step_by(tiles.width) {
        let (rows, col0) = (tiles.width.min(c - j0), j0);
        product(rows, k, c - col0, &a[j0 * lda..], lda, &bt[col0..], ldb, &mut t[j0 * c + col0..], c, false);
        for j in j0..j0 + rows {
            t[j * c + col0..j * c + j].fill(T::zero());
        }
    }
}

/// `out_j (+)= sum_{i >= j} t_ji b_i` for `c` rows (`t` from [`upper_scores`]), the mirror of
/// [`lower_product`]: with `finite` each row block runs from its first row on.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn upper_product<T: Scalar>(
    tiles: Tiles,
    c: usize,
    t: &[T],
    b: &[T],
    ldb: usize,
    n: usize,
    out: &mut [T],
    ldo: usize,
    finite: bool,
    accumulate: bool,
) {
    for (j0, rows) in blocks(tiles, c) {
        let out_block = &mut out[j0 * ldo..];
        if finite {
            product(rows, c - j0, n, &t[j0 * c + j0..], c, &b[j0 * ldb..], ldb, out_block, ldo, accumulate);
        } else {
            let j1 = j0 + rows;
            if j1 < c {
                product(
                    rows,
                    c - j1,
                    n,
                    &t[j0 * c + j1..],
                    c,
                    &b[j1 * ldb..],
                    ldb,
                    out_block,
                    ldo,
                    accumulate,
                );
            } else if !accumulate {
                for r in 0..rows {
                    out_block[r * ldo..r * ldo + n].fill(T::zero());
                }
            }
            for r in 0..rows {
                let j = j0 + r;
                let out_r = &mut out_block[r * ldo..r * ldo + n];
                for i in j..j1 {
                    axpy(t[j * c + i], &b[i * ldb..i * ldb + n], out_r);
                }
            }
        }
    }
}

/// `S += B^T V` (`bt` = `B^T`, `d_k x c`; `V` rows at leading dimension `ldv`), `z += B^T 1`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn absorb<T: Scalar>(
    c: usize,
    d_k: usize,
    d_v: usize,
    b: &[T],
    bt: &[T],
    v: &[T],
    ldv: usize,
    s: &mut [T],
    z: &mut [T],
) {
    product(d_k, c, d_v, bt, c, v, ldv, s, d_v, true);
    for r in 0..c {
        axpy(T::one(), &b[r * d_k..(r + 1) * d_k], z);
    }
}
