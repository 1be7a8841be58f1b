//! The generic tile loops of softmax attention (`docs/math.md` section 4), for every scalar type and
//! CPU: the online-softmax forward over `tile_q x tile_k` logit tiles and the flash-style backward
//! that recomputes each tile from the saved log-sum-exp, with their tile helpers. In `f32` on CPUs
//! with AVX2/FMA or AVX-512 both first offer the work to the fused kernels (`fused/`).

#[cfg(all(feature = "std", target_arch = "x86_64"))]
use super::{fused_backward, fused_forward};
use super::{Shaped, SoftmaxGrads};
use crate::attention::Causality;
use crate::linalg::kernel::{self, Transpose};
use crate::workspace::carve;
use crate::{Result, Scalar};

/// The keys query tile `[i0, i1)` can see: all, or `[0, i1)` when causal.
#[inline]
fn key_end(causality: Causality, n: usize, i1: usize) -> usize {
    match causality {
        Causality::Bidirectional => n,
        Causality::Causal => i1,
    }
}

/// Fills the `bq x bk` tile `s` with the logits of queries `[i0, i0 + bq)` against keys
/// `[j0, j0 + bk)`: `scale q_i . k_j + mask_ij`, and `-inf` where causality hides the key.
/// `q_t`: the query block transposed (`d_k x bq`); `k_t`: the keys by [`transpose_tiles`].
#[allow(clippy::too_many_arguments)]
#[inline]
fn logit_tile<T: Scalar>(
    head: &Shaped<T>,
    q_t: &[T],
    k: &[T],
    k_t: &[T],
    mask: Option<&[T]>,
    i0: usize,
    bq: usize,
    j0: usize,
    bk: usize,
    s: &mut [T],
) {
    let (n, d_k) = (head.n_tokens, head.d_k);
    let (k_op, op) = key_operand(k, k_t, n, d_k, head.tile_k(), j0, bk, Transpose::No);
    kernel::gemm(bq, d_k, bk, head.scale, q_t, Transpose::Yes, k_op, op, T::zero(), s);
    for r in 0..bq {
        let i = i0 + r;
        let row = &mut s[r * bk..(r + 1) * bk];
        if let Some(mask) = mask {
            for (a, &m) in row.iter_mut().zip(&mask[i * n + j0..i * n + j0 + bk]) {
                *a += m;
            }
        }
        if head.causality == Causality::Causal && j0 + bk > i + 1 {
            // Keys j > i are hidden: columns from (i + 1 - j0) on.
            let first_hidden = (i + 1).saturating_sub(j0);
            row[first_hidden..].fill(T::neg_infinity());
        }
    }
}

/// Writes the rows of `x` (`n x width`) transposed tile by tile: the tile of rows
/// `[j0, j0 + w)` (`j0` a multiple of `tile`, `w = min(tile, n - j0)`) becomes the `width x w`
/// matrix at `panels[j0 width..(j0 + w) width]`. Done once per call, so that every tile product
/// reads keys and values as contiguous operands, which `matrixmultiply` packs by copies.
fn transpose_tiles<T: Scalar>(n: usize, width: usize, tile: usize, x: &[T], panels: &mut [T]) {
    for j0 in (0..n).step_by(tile) {
        let w = tile.min(n - j0);
        let range = j0 * width..(j0 + w) * width;
        kernel::transpose(w, width, &x[range.clone()], &mut panels[range]);
    }
}

/// Operand `op(X)` of key/value rows `[j0, j0 + bk)` for a tile product: the pre-transposed panel
/// (`width x bk`, read transposed or not as `panel_op` says) when the tile is a whole panel, else
/// the rows themselves (`bk x width`; the last, partial key tile of a causal query block).
#[allow(clippy::too_many_arguments)]
#[inline]
fn key_operand<'a, T: Scalar>(
    x: &'a [T],
    panels: &'a [T],
    n: usize,
    width: usize,
    tile: usize,
    j0: usize,
    bk: usize,
    panel_op: Transpose,
) -> (&'a [T], Transpose) {
    let range = j0 * width..(j0 + bk) * width;
    if bk == tile.min(n - j0) {
        (&panels[range], panel_op)
    } else {
        let rows_op = match panel_op {
            Transpose::No => Transpose::Yes,
            Transpose::Yes => Transpose::No,
        };
        (&x[range], rows_op)
    }
}

/// Fills the `bk x bq` tile `s_t` with the *transposed* logits of queries `[i0, i0 + bq)` against
/// keys `[j0, j0 + bk)`: row `jr` holds key `j0 + jr` against every query of the block,
/// `scale k_j . q_i + mask_ij`, and `-inf` where causality hides the key (`j > i`). The forward
/// keeps its tile in this layout so that the value product `P V` reads `P` as a transposed
/// operand, which `matrixmultiply` packs by contiguous copies instead of element by element.
/// `q_t`: the query block transposed (`d_k x bq`); `k_t`: the keys by [`transpose_tiles`].
#[allow(clippy::too_many_arguments)]
#[inline]
fn logit_tile_transposed<T: Scalar>(
    head: &Shaped<T>,
    q_t: &[T],
    k: &[T],
    k_t: &[T],
    mask: Option<&[T]>,
    i0: usize,
    bq: usize,
    j0: usize,
    bk: usize,
    s_t: &mut [T],
) {
    let (n, d_k) = (head.n_tokens, head.d_k);
    // S^T = K_j Q_i^T, with Q_i^T (d_k x bq) transposed once per query block.
    let (k_op, op) = key_operand(k, k_t, n, d_k, head.tile_k(), j0, bk, Transpose::Yes);
    kernel::gemm(bk, d_k, bq, head.scale, k_op, op, q_t, Transpose::No, T::zero(), s_t);
    for jr in 0..bk {
        let j = j0 + jr;
        let row = &mut s_t[jr * bq..(jr + 1) * bq];
        if let Some(mask) = mask {
            for (ir, a) in row.iter_mut().enumerate() {
                *a += mask[(i0 + ir) * n + j];
            }
        }
        if head.causality == Causality::Causal && j > i0 {
            // Queries i < j do not see key j: columns [0, j - i0).
            let hidden = (j - i0).min(bq);
            row[..hidden].fill(T::neg_infinity());
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn forward_unchecked<T: Scalar>(
    head: &Shaped<T>,
    q: &[T],
    k: &[T],
    v: &[T],
    mask: Option<&[T]>,
    out: &mut [T],
    lse: &mut [T],
    workspace: &mut [T],
) -> Result<()> {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    if fused_forward(head, q, k, v, mask, out, lse, workspace) {
        return Ok(());
    }
    let (n, d_v) = (head.n_tokens, head.d_v);
    if n == 0 {
        return Ok(());
    }
    let (tile_q, tile_k, d_k) = (head.tile_q(), head.tile_k(), head.d_k);
    let ([tile, row_max, row_sum, shift, k_t, q_t_block], _) =
        carve(workspace, [tile_q * tile_k, tile_q, tile_q, tile_q, n * d_k, tile_q * d_k])?;
    transpose_tiles(n, d_k, tile_k, k, k_t);
    let block_q = head.block_q();
    for i0 in (0..n).step_by(block_q) {
        let i1 = (i0 + block_q).min(n);
        let bq = i1 - i0;
        let q_t = &mut q_t_block[..bq * d_k];
        kernel::transpose(bq, d_k, &q[i0 * d_k..i1 * d_k], q_t);
        let q_t = &*q_t;
        let out_tile = &mut out[i0 * d_v..i1 * d_v];
        out_tile.fill(T::zero());
        row_max[..bq].fill(T::neg_infinity());
        row_sum[..bq].fill(T::zero());
        let j_end = key_end(head.causality, n, i1);
        for j0 in (0..j_end).step_by(tile_k) {
            let bk = (j0 + tile_k).min(j_end) - j0;
            let s_t = &mut tile[..bk * bq];
            logit_tile_transposed(head, q_t, k, k_t, mask, i0, bq, j0, bk, s_t);
            // Column (query) maxima of the tile, NaN skipped, merged with the running maxima.
            let shift = &mut shift[..bq];
            shift.copy_from_slice(&row_max[..bq]);
            for row in s_t.chunks_exact(bq) {
                for (m, &a) in shift.iter_mut().zip(row) {
                    *m = if a > *m { a } else { *m };
                }
            }
            for r in 0..bq {
                let (old_max, new_max) = (row_max[r], shift[r]);
                if old_max != new_max {
                    // exp(-inf) = 0 resets an empty accumulator.
                    let alpha = (old_max - new_max).exp();
                    row_sum[r] *= alpha;
                    kernel::scale(alpha, &mut out_tile[r * d_v..(r + 1) * d_v]);
                    row_max[r] = new_max;
                }
                if new_max == T::neg_infinity() {
                    // Everything seen so far is masked: every entry of the column is -inf, and
                    // exp(-inf - 0) = 0 gives it no weight.
                    shift[r] = T::zero();
                }
            }
            // P^T = exp(S^T - shift), its column sums added to the (rescaled) running sums.
            for row in s_t.chunks_exact_mut(bq) {
                T::exp_sub_accumulate(row, shift, &mut row_sum[..bq]);
            }
            let v_tile = &v[j0 * d_v..(j0 + bk) * d_v];
            // out += P V, with P^T the stored tile.
            kernel::gemm(
                bq,
                bk,
                d_v,
                T::one(),
                s_t,
                Transpose::Yes,
                v_tile,
                Transpose::No,
                T::one(),
                out_tile,
            );
        }
        for r in 0..bq {
            let out_row = &mut out_tile[r * d_v..(r + 1) * d_v];
            if row_sum[r] > T::zero() {
                kernel::scale(row_sum[r].recip(), out_row);
                lse[i0 + r] = row_max[r] + row_sum[r].ln();
            } else if row_sum[r] == T::zero() {
                out_row.fill(T::zero());
                lse[i0 + r] = T::neg_infinity();
            } else {
                // NaN from the inputs.
                lse[i0 + r] = row_sum[r];
            }
        }
    }
    Ok(())
}

/// `row_j = exp(row_j - shift)`, returning the sum of the new entries.
#[inline]
fn exp_shifted<T: Scalar>(row: &mut [T], shift: T) -> T {
    T::exp_shifted_sum(row, shift)
}

#[allow(clippy::too_many_arguments)]
pub(super) fn backward_unchecked<T: Scalar>(
    head: &Shaped<T>,
    q: &[T],
    k: &[T],
    v: &[T],
    mask: Option<&[T]>,
    out: &[T],
    lse: &[T],
    d_out: &[T],
    grads: SoftmaxGrads<'_, T>,
    workspace: &mut [T],
) -> Result<()> {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    let grads = match fused_backward(head, q, k, v, mask, out, lse, d_out, grads, workspace) {
        None => return Ok(()),
        Some(grads) => grads,
    };
    let (n, d_k, d_v) = (head.n_tokens, head.d_k, head.d_v);
    let SoftmaxGrads { d_q, d_k: d_key, d_v: d_val } = grads;
    d_q.fill(T::zero());
    d_key.fill(T::zero());
    d_val.fill(T::zero());
    if n == 0 {
        return Ok(());
    }
    let (tile_q, tile_k) = (head.tile_q(), head.tile_k());
    // The forward's extra row statistics (`2 tile_q`) stay unused.
    let tiles = tile_q * tile_k;
    let ([p_tile, dp_tile, delta, _, k_t, v_t, q_t_block, d_out_t_block], _) =
        carve(workspace, [tiles, tiles, tile_q, 2 * tile_q, n * d_k, n * d_v, tile_q * d_k, tile_q * d_v])?;
    transpose_tiles(n, d_k, tile_k, k, k_t);
    transpose_tiles(n, d_v, tile_k, v, v_t);
    let block_q = head.block_q();
    for i0 in (0..n).step_by(block_q) {
        let i1 = (i0 + block_q).min(n);
        let bq = i1 - i0;
        let d_out_tile = &d_out[i0 * d_v..i1 * d_v];
        let q_tile = &q[i0 * d_k..i1 * d_k];
        let q_t = &mut q_t_block[..bq * d_k];
        kernel::transpose(bq, d_k, q_tile, q_t);
        let q_t = &*q_t;
        let d_out_t = &mut d_out_t_block[..bq * d_v];
        kernel::transpose(bq, d_v, d_out_tile, d_out_t);
        let d_out_t = &*d_out_t;
        // delta_i = sum_j P_ij dP_ij = dO_i . O_i.
        for (r, delta_r) in delta[..bq].iter_mut().enumerate() {
            let row = (i0 + r) * d_v..(i0 + r + 1) * d_v;
            *delta_r = kernel::dot(&d_out[row.clone()], &out[row]);
        }
        let j_end = key_end(head.causality, n, i1);
        for j0 in (0..j_end).step_by(tile_k) {
            let bk = (j0 + tile_k).min(j_end) - j0;
            let p = &mut p_tile[..bq * bk];
            let dp = &mut dp_tile[..bq * bk];
            logit_tile(head, q_t, k, k_t, mask, i0, bq, j0, bk, p);
            for r in 0..bq {
                let row = &mut p[r * bk..(r + 1) * bk];
                let row_lse = lse[i0 + r];
                if row_lse == T::neg_infinity() {
                    row.fill(T::zero());
                } else {
                    exp_shifted(row, row_lse);
                }
            }
            // dV_j += P^T dO_i.
            kernel::gemm(
                bk,
                bq,
                d_v,
                T::one(),
                p,
                Transpose::Yes,
                d_out_tile,
                Transpose::No,
                T::one(),
                &mut d_val[j0 * d_v..(j0 + bk) * d_v],
            );
            // dP = dO_i V_j^T, then dS = P .* (dP - delta) in place of dP.
            let (v_op, op) = key_operand(v, v_t, n, d_v, tile_k, j0, bk, Transpose::No);
            kernel::gemm(bq, d_v, bk, T::one(), d_out_t, Transpose::Yes, v_op, op, T::zero(), dp);
            for r in 0..bq {
                let dr = delta[r];
                for (ds, &pr) in dp[r * bk..(r + 1) * bk].iter_mut().zip(&p[r * bk..(r + 1) * bk]) {
                    *ds = pr * (*ds - dr);
                }
            }
            let k_tile = &k[j0 * d_k..(j0 + bk) * d_k];
            // dQ_i += scale dS K_j;  dK_j += scale dS^T Q_i.
            kernel::gemm(
                bq,
                bk,
                d_k,
                head.scale,
                dp,
                Transpose::No,
                k_tile,
                Transpose::No,
                T::one(),
                &mut d_q[i0 * d_k..i1 * d_k],
            );
            kernel::gemm(
                bk,
                bq,
                d_k,
                head.scale,
                dp,
                Transpose::Yes,
                q_tile,
                Transpose::No,
                T::one(),
                &mut d_key[j0 * d_k..(j0 + bk) * d_k],
            );
        }
    }
    Ok(())
}
