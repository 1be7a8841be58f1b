//! The transformer MLP: `Y = gelu(X W_1 + b_1) W_2 + b_2` (GELU in its tanh form, see
//! [`super::gelu`]).
//!
//! Shapes: `X`, `Y` `n x d_model`; `W_1` `d_model x d_mlp`, `b_1` `d_mlp`; `W_2` `d_mlp x d_model`,
//! `b_2` `d_model`. The forward pass keeps the GELU's slope `gelu'(U)` at the pre-activation
//! `U = X W_1 + b_1` and `G = gelu(U)` in a caller cache of [`mlp_cache_len`] elements (bias, GELU
//! and slope in one fused pass, [`bias_gelu_forward`], so that the backward pass needs no `tanh`);
//! the backward pass takes [`mlp_workspace_len`] elements of scratch. Allocation-free.

use super::gelu::{bias_gelu_forward, gelu_backward_cached};
use super::linear::{linear_backward, linear_forward, product_rows};
use crate::error::{check_matrix, check_workspace};
use crate::linalg::dense::Update;
use crate::linalg::kernel;
use crate::workspace::{carve, Req};
use crate::{Error, Result, Scalar};

/// The four parameter tensors of an MLP.
#[derive(Clone, Copy, Debug)]
pub struct MlpParams<'a, T> {
    /// `d_model x d_mlp`.
    pub w_1: &'a [T],
    /// `d_mlp`.
    pub b_1: &'a [T],
    /// `d_mlp x d_model`.
    pub w_2: &'a [T],
    /// `d_model`.
    pub b_2: &'a [T],
}

/// Gradient buffers of an MLP (same shapes as [`MlpParams`]); the backward pass adds to them.
#[derive(Debug)]
pub struct MlpGrads<'a, T> {
    /// `d_model x d_mlp`.
    pub w_1: &'a mut [T],
    /// `d_mlp`.
    pub b_1: &'a mut [T],
    /// `d_mlp x d_model`.
    pub w_2: &'a mut [T],
    /// `d_model`.
    pub b_2: &'a mut [T],
}

fn hidden_len(what: &'static str, n: usize, d_mlp: usize) -> Result<usize> {
    n.checked_mul(d_mlp).ok_or(Error::DimensionOverflow { what })
}

/// Cache elements of [`mlp_forward`]: `2 n d_mlp` (`gelu'(U)` then `G`). Saturates at `usize::MAX`.
pub fn mlp_cache_len(n: usize, d_mlp: usize) -> usize {
    Req::array(n, d_mlp).times(2).saturating()
}

/// Rows per block of the forward and backward passes: each block's hidden activations
/// (`ROW_BLOCK x d_mlp`) stay in cache between the products and the elementwise GELU passes.
pub const ROW_BLOCK: usize = 128;

/// Workspace elements of [`mlp_backward`]: one block of `dG` (`min(n, ROW_BLOCK) d_mlp`) and the
/// transposed weights `W_1^T`, `W_2^T` (`2 d_model d_mlp`), so that the input-gradient products
/// run unpacked on row-major operands.
///
/// With the `parallel` feature the row blocks run as separate tasks, and each needs its own
/// scratch: `dG` of all rows (`n d_mlp`) and, per block, its partial weight gradients
/// (`2 d_model d_mlp`) and a bias row (`d_mlp`), added to the gradients afterwards in block order
/// (so the sums are the serial ones, whatever the number of threads). The size depends on `n`,
/// never on the number of threads.
pub fn mlp_workspace_len(n: usize, d_model: usize, d_mlp: usize) -> usize {
    let weights_t = Req::array(d_model, d_mlp).times(2);
    if crate::parallel::ENABLED {
        let per_block = weights_t.and(Req::array(1, d_mlp));
        return Req::array(n, d_mlp).and(weights_t).and(per_block.times(n.div_ceil(ROW_BLOCK))).saturating();
    }
    weights_t.and(Req::array(n.min(ROW_BLOCK), d_mlp)).saturating()
}

/// `y = gelu(x W_1 + b_1) W_2 + b_2` (`y` overwritten); stores `gelu'(U)`, `G` in `cache`.
/// Runs in blocks of [`ROW_BLOCK`] rows (the result does not depend on the blocking).
pub fn mlp_forward<T: Scalar>(
    n: usize,
    d_model: usize,
    d_mlp: usize,
    params: MlpParams<'_, T>,
    x: &[T],
    y: &mut [T],
    cache: &mut [T],
) -> Result<()> {
    let h = hidden_len("cache", n, d_mlp)?;
    check_workspace(cache.len(), mlp_cache_len(n, d_mlp))?;
    check_matrix("x", x.len(), n, d_model)?;
    check_matrix("y", y.len(), n, d_model)?;
    check_matrix("w_1", params.w_1.len(), d_model, d_mlp)?;
    if d_model == 0 && d_mlp == 0 {
        // Every row is empty (and `n` may be huge: no row loop over nothing; fuzz regression).
        return Ok(());
    }
    let ([slope, g], _) = carve(cache, [h, h])?;
    if crate::parallel::ENABLED && n > ROW_BLOCK && d_model > 0 && d_mlp > 0 {
        // The blocks as separate tasks (the same blocks, so the same results).
        let y = &mut y[..n * d_model];
        return crate::parallel::try_chunks3(
            slope,
            ROW_BLOCK * d_mlp,
            g,
            ROW_BLOCK * d_mlp,
            y,
            ROW_BLOCK * d_model,
            |i, slope, g, y| {
                let (r0, rows) = (i * ROW_BLOCK, y.len() / d_model);
                let x = &x[r0 * d_model..(r0 + rows) * d_model];
                product_rows(rows, d_model, d_mlp, x, params.w_1, slope, Update::Overwrite);
                bias_gelu_forward(d_mlp, params.b_1, slope, g)?;
                linear_forward(rows, d_mlp, d_model, g, params.w_2, Some(params.b_2), y)
            },
        );
    }
    for r0 in (0..n).step_by(ROW_BLOCK) {
        let rows = ROW_BLOCK.min(n - r0);
        let (hid, model) = (r0 * d_mlp..(r0 + rows) * d_mlp, r0 * d_model..(r0 + rows) * d_model);
        let (slope, g) = (&mut slope[hid.clone()], &mut g[hid]);
        product_rows(rows, d_model, d_mlp, &x[model.clone()], params.w_1, slope, Update::Overwrite);
        bias_gelu_forward(d_mlp, params.b_1, slope, g)?;
        linear_forward(rows, d_mlp, d_model, g, params.w_2, Some(params.b_2), &mut y[model])?;
    }
    Ok(())
}

/// Backward of [`mlp_forward`] from `dy` (`n x d_model`): adds the parameter gradients to `grads`
/// and writes (or adds, per `dx_update`) `dX` into `dx`. `cache` is what the forward pass left.
/// Runs in blocks of [`ROW_BLOCK`] rows (the parameter gradients sum over the blocks).
#[allow(clippy::too_many_arguments)]
pub fn mlp_backward<T: Scalar>(
    n: usize,
    d_model: usize,
    d_mlp: usize,
    params: MlpParams<'_, T>,
    x: &[T],
    cache: &[T],
    dy: &[T],
    dx: &mut [T],
    dx_update: Update,
    grads: MlpGrads<'_, T>,
    workspace: &mut [T],
) -> Result<()> {
    let h = hidden_len("cache", n, d_mlp)?;
    check_workspace(cache.len(), mlp_cache_len(n, d_mlp))?;
    check_workspace(workspace.len(), mlp_workspace_len(n, d_model, d_mlp))?;
    check_matrix("x", x.len(), n, d_model)?;
    check_matrix("dy", dy.len(), n, d_model)?;
    check_matrix("dx", dx.len(), n, d_model)?;
    check_matrix("w_1", params.w_1.len(), d_model, d_mlp)?;
    check_matrix("w_2", params.w_2.len(), d_mlp, d_model)?;
    if d_model == 0 && d_mlp == 0 {
        // Empty rows and empty parameters: nothing to add (as in `mlp_forward`).
        return Ok(());
    }
    let (slope, g) = (&cache[..h], &cache[h..2 * h]);
    let MlpGrads { w_1: g_w1, b_1: g_b1, w_2: g_w2, b_2: g_b2 } = grads;
    let ([w_1t, w_2t], d_hidden_all) = carve(workspace, [d_model * d_mlp, d_model * d_mlp])?;
    kernel::transpose(d_model, d_mlp, params.w_1, w_1t);
    kernel::transpose(d_mlp, d_model, params.w_2, w_2t);
    if crate::parallel::ENABLED && n > ROW_BLOCK && d_model > 0 && d_mlp > 0 {
        let grads = MlpGrads { w_1: g_w1, b_1: g_b1, w_2: g_w2, b_2: g_b2 };
        let (w_1t, w_2t) = (&*w_1t, &*w_2t);
        return backward_blocks(
            n,
            d_model,
            d_mlp,
            x,
            (slope, g),
            dy,
            dx,
            dx_update,
            grads,
            (w_1t, w_2t),
            d_hidden_all,
        );
    }
    for r0 in (0..n).step_by(ROW_BLOCK) {
        let rows = ROW_BLOCK.min(n - r0);
        let (hid, model) = (r0 * d_mlp..(r0 + rows) * d_mlp, r0 * d_model..(r0 + rows) * d_model);
        let d_hidden = &mut d_hidden_all[..rows * d_mlp];
        // dG = dY W_2^T; dW_2 += G^T dY, db_2 += colsum dY.
        product_rows(rows, d_model, d_mlp, &dy[model.clone()], w_2t, d_hidden, Update::Overwrite);
        linear_backward(
            rows,
            d_mlp,
            d_model,
            &g[hid.clone()],
            params.w_2,
            &dy[model.clone()],
            None,
            Update::Overwrite,
            &mut *g_w2,
            Some(&mut *g_b2),
        )?;
        // dU = gelu'(U) .* dG, db_1 += colsum dU; dX (+)= dU W_1^T; dW_1 += X^T dU.
        gelu_backward_cached(d_mlp, &slope[hid], d_hidden, &mut *g_b1)?;
        product_rows(rows, d_mlp, d_model, d_hidden, w_1t, &mut dx[model.clone()], dx_update);
        linear_backward(
            rows,
            d_model,
            d_mlp,
            &x[model],
            params.w_1,
            d_hidden,
            None,
            Update::Overwrite,
            &mut *g_w1,
            None,
        )?;
    }
    Ok(())
}

/// The row blocks of [`mlp_backward`] as separate tasks (`parallel`): each block writes its `dU`
/// rows, its `dX` rows and its partial `dW_2 = G^T dY`, `dW_1 = X^T dU` into its own scratch;
/// then the partials are added to the gradients in block order and the bias gradients sum the
/// rows in order (split by columns), which is what the serial loop computes.
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn backward_blocks<T: Scalar>(
    n: usize,
    d_model: usize,
    d_mlp: usize,
    x: &[T],
    (slope, g): (&[T], &[T]),
    dy: &[T],
    dx: &mut [T],
    dx_update: Update,
    grads: MlpGrads<'_, T>,
    (w_1t, w_2t): (&[T], &[T]),
    scratch: &mut [T],
) -> Result<()> {
    use super::linear::product_tn;
    let blocks = n.div_ceil(ROW_BLOCK);
    let (d_u, rest) = scratch.split_at_mut(n * d_mlp);
    let per_block = 2 * d_model * d_mlp + d_mlp;
    let parts = &mut rest[..blocks * per_block];
    let dx = &mut dx[..n * d_model];
    crate::parallel::try_chunks3(
        d_u,
        ROW_BLOCK * d_mlp,
        dx,
        ROW_BLOCK * d_model,
        parts,
        per_block,
        |i, d_hidden, dx, part| {
            let (r0, rows) = (i * ROW_BLOCK, dx.len() / d_model);
            let (hid, model) = (r0 * d_mlp..(r0 + rows) * d_mlp, r0 * d_model..(r0 + rows) * d_model);
            let (p_w2, rest) = part.split_at_mut(d_mlp * d_model);
            let (p_w1, p_b1) = rest.split_at_mut(d_model * d_mlp);
            let dy = &dy[model.clone()];
            product_rows(rows, d_model, d_mlp, dy, w_2t, d_hidden, Update::Overwrite);
            product_tn(d_mlp, rows, d_model, &g[hid.clone()], dy, p_w2, Update::Overwrite);
            // The bias row is summed below over all rows in order; this one is discarded.
            gelu_backward_cached(d_mlp, &slope[hid], d_hidden, p_b1)?;
            product_rows(rows, d_mlp, d_model, d_hidden, w_1t, dx, dx_update);
            product_tn(d_model, rows, d_mlp, &x[model], d_hidden, p_w1, Update::Overwrite);
            Ok(())
        },
    )?;
    let MlpGrads { w_1: g_w1, b_1: g_b1, w_2: g_w2, b_2: g_b2 } = grads;
    let parts = &rest[..blocks * per_block];
    add_block_partials(g_w2, parts, per_block, 0);
    add_block_partials(g_w1, parts, per_block, d_mlp * d_model);
    column_sums(dy, g_b2);
    column_sums(d_u, g_b1);
    Ok(())
}

/// `dst += part_b` for the blocks `b` in order, `part_b` at `offset` in each `stride`-long block
/// of `parts`.
fn add_block_partials<T: Scalar>(dst: &mut [T], parts: &[T], stride: usize, offset: usize) {
    crate::parallel::chunks(dst, crate::parallel::PARTIAL_CHUNK, |i, d| {
        let start = offset + i * crate::parallel::PARTIAL_CHUNK;
        for block in parts.chunks_exact(stride) {
            let len = d.len();
            for (x, &y) in d.iter_mut().zip(&block[start..start + len]) {
                *x += y;
            }
        }
    });
}

/// `sums_j += sum_i m_ij` over the rows of `m` (rows of `sums.len()` elements) in order, split by
/// columns across tasks.
fn column_sums<T: Scalar>(m: &[T], sums: &mut [T]) {
    let width = sums.len();
    if width == 0 {
        return;
    }
    const COLUMNS: usize = 32;
    crate::parallel::chunks(sums, COLUMNS, |i, s| {
        let j0 = i * COLUMNS;
        for row in m.chunks_exact(width) {
            let len = s.len();
            for (x, &y) in s.iter_mut().zip(&row[j0..j0 + len]) {
                *x += y;
            }
        }
    });
}
