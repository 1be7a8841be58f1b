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
pub fn mlp_workspace_len(n: usize, d_model: usize, d_mlp: usize) -> usize {
    Req::array(d_model, d_mlp).times(2).and(Req::array(n.min(ROW_BLOCK), d_mlp)).saturating()
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
