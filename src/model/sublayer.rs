//! The attention sub-layer interface: what an attention kernel must provide to be plugged into the
//! model ([`super::transformer`]).
//!
//! A block computes, for a sequence of `n` tokens with (normalized) input `A` (`n x d_model`):
//!
//! ```text
//! V = A W_V                      (n x n_heads d_head; plain linear layer owned by the model)
//! O = mix(A, V; theta)           (n x n_heads d_head; THIS interface, one head per column block)
//! Y = O W_O                      (n x d_model;        plain linear layer owned by the model)
//! ```
//!
//! `mix` holds the part of attention that decides *where* information flows: for head `h`,
//! `O_h = softmax(logits_h(A)) V_h` for softmax attention (`theta` = the head's `W_Q, W_K`) or S-D
//! attention (`theta` = `U, V, C`, `docs/math.md` section 5), or the ELU+1 linear form of `docs/math.md` section 6.
//! Head `h` owns columns `h d_head .. (h + 1) d_head` of `V` and `O`. The model is a causal language
//! model, so every implementation must be causal (output row `i` depends on rows `j <= i` only).
//!
//! How each kind maps onto it (implemented by `model::attention::AttentionMixer`; heads packed
//! side by side, as the multi-head kernels take them):
//! * softmax (`docs/math.md` section 4): `theta = [W_Q, W_K]` (`d_model x n_heads d_head` each); `Q = A W_Q`,
//!   `K = A W_K`, `O = causal multi-head softmax(Q, K, V)`; backward: the kernel's `dQ, dK, dV`, then
//!   `dW_Q = A^T dQ`, `dW_K = A^T dK`, `dA += dQ W_Q^T + dK W_K^T`.
//! * S-D (`docs/math.md` section 5): per head `U, V` (`d_model x r`), `C` (`d_model x q`). With `Q = A [U | V | C]`
//!   and `K = A [V | -U | -C]` (width `2r + q`), `Q K^T = A (U V^T - V U^T - C C^T) A^T = A (S + D) A^T`,
//!   so the softmax kernel computes S-D attention without forming `d_model x d_model`; the
//!   gradients of `U, V, C` follow from `dQ, dK` by the same linear maps.
//! * ELU+1 linear (`docs/math.md` section 6): `theta = [W_Q, W_K]`; `O = causal linear attention(A W_Q, A W_K, V)`.
//!
//! Buffers: the model allocates `theta` and its gradient inside its flat parameter buffers
//! (`param_len` elements per layer), a cache of `cache_len(n)` elements per sequence that the
//! forward pass fills and the backward pass reads, and a shared workspace of `workspace_len(n)`
//! elements. No method allocates.

use crate::error::{check_matrix, check_workspace};
use crate::rng::SplitMix64;
use crate::{Error, Result, Scalar};

/// Dimensions of an attention sub-layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SublayerDims {
    /// Width of the residual stream (columns of `A`).
    pub d_model: usize,
    /// Number of heads.
    pub n_heads: usize,
    /// Width of a head's values and outputs (`V`, `O` have `n_heads * d_head` columns).
    pub d_head: usize,
}

/// An attention kernel as the model sees it: `O = mix(A, V; theta)` with its backward pass.
///
/// Contract for implementations (checked by the model's tests with a stand-in):
/// * [`forward`](Self::forward) overwrites `out` and fills `cache`;
/// * [`backward`](Self::backward) *adds* `dL/dA` to `d_input` and `dL/dtheta` to `d_params`,
///   and *overwrites* `d_values` with `dL/dV`;
/// * lengths: `input` `n x d_model`, `values`, `out`, `d_out`, `d_values` `n x n_heads d_head`,
///   `params`, `d_params` `param_len()`, `cache` `>= cache_len(n)`, `workspace >= workspace_len(n)`;
///   wrong lengths are an `Err`, never a panic.
///
/// Implementations are `Send + Sync` (shared, read-only, by the tasks of the `parallel` feature,
/// and moved with the model onto a worker thread for a whole training step).
pub trait AttentionSublayer<T: Scalar>: Send + Sync {
    /// The dimensions this sub-layer was built for.
    fn dims(&self) -> SublayerDims;
    /// Number of parameters `theta` (not counting `W_V`, `W_O`).
    fn param_len(&self) -> usize;
    /// Initializes `theta` (`param_len()` elements) from `rng`.
    fn init_params(&self, rng: &mut SplitMix64, params: &mut [T]);
    /// Cache elements one sequence of `n_tokens` needs between forward and backward.
    fn cache_len(&self, n_tokens: usize) -> usize;
    /// Scratch elements forward or backward needs for `n_tokens`.
    fn workspace_len(&self, n_tokens: usize) -> usize;
    /// `out = mix(input, values; params)`; fills `cache`.
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        n_tokens: usize,
        params: &[T],
        input: &[T],
        values: &[T],
        out: &mut [T],
        cache: &mut [T],
        workspace: &mut [T],
    ) -> Result<()>;
    /// Backward of [`forward`](Self::forward) from `d_out`: `d_input += dL/dA`,
    /// `d_values = dL/dV`, `d_params += dL/dtheta`.
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &self,
        n_tokens: usize,
        params: &[T],
        input: &[T],
        values: &[T],
        cache: &[T],
        d_out: &[T],
        d_input: &mut [T],
        d_values: &mut [T],
        d_params: &mut [T],
        workspace: &mut [T],
    ) -> Result<()>;

    /// Scratch elements [`forward_batch`](Self::forward_batch) or
    /// [`backward_batch`](Self::backward_batch) need for `batch` sequences of `n_tokens`; by
    /// default one sequence's [`workspace_len`](Self::workspace_len).
    fn batch_workspace_len(&self, batch: usize, n_tokens: usize) -> usize {
        let _ = batch;
        self.workspace_len(n_tokens)
    }

    /// [`forward`](Self::forward) of `batch` sequences of `n_tokens`, stored one after the other
    /// (`input` `batch n x d_model`, `values`, `out` `batch n x n_heads d_head`, `cache` `batch`
    /// blocks of `cache_len(n)`); `workspace >= batch_workspace_len(batch, n)`. By default one
    /// [`forward`](Self::forward) per sequence ([`forward_each`]); an implementation may batch
    /// work across sequences (one product over all rows) with the same results up to rounding.
    #[allow(clippy::too_many_arguments)]
    fn forward_batch(
        &self,
        batch: usize,
        n_tokens: usize,
        params: &[T],
        input: &[T],
        values: &[T],
        out: &mut [T],
        cache: &mut [T],
        workspace: &mut [T],
    ) -> Result<()> {
        forward_each(self, batch, n_tokens, params, input, values, out, cache, workspace)
    }

    /// [`backward`](Self::backward) of `batch` sequences laid out as in
    /// [`forward_batch`](Self::forward_batch) (same contract: adds to `d_input`, `d_params`,
    /// overwrites `d_values`). By default one [`backward`](Self::backward) per sequence
    /// ([`backward_each`]).
    #[allow(clippy::too_many_arguments)]
    fn backward_batch(
        &self,
        batch: usize,
        n_tokens: usize,
        params: &[T],
        input: &[T],
        values: &[T],
        cache: &[T],
        d_out: &[T],
        d_input: &mut [T],
        d_values: &mut [T],
        d_params: &mut [T],
        workspace: &mut [T],
    ) -> Result<()> {
        backward_each(
            self, batch, n_tokens, params, input, values, cache, d_out, d_input, d_values, d_params,
            workspace,
        )
    }
}

/// Rows `batch n` (checked), and the lengths of the batched inputs of a sub-layer.
fn batch_rows<T: Scalar, S: AttentionSublayer<T> + ?Sized>(
    sub: &S,
    batch: usize,
    n: usize,
    input: usize,
    values: usize,
    cache: usize,
) -> Result<usize> {
    let dims = sub.dims();
    let rows = batch.checked_mul(n).ok_or(Error::DimensionOverflow { what: "batch" })?;
    let heads = dims.n_heads.checked_mul(dims.d_head).ok_or(Error::DimensionOverflow { what: "heads" })?;
    check_matrix("input", input, rows, dims.d_model)?;
    check_matrix("values", values, rows, heads)?;
    let cache_len = sub.cache_len(n).checked_mul(batch).ok_or(Error::DimensionOverflow { what: "cache" })?;
    check_workspace(cache, cache_len)?;
    Ok(rows)
}

/// The default [`AttentionSublayer::forward_batch`]: one `forward` per sequence, after checking
/// the batched lengths.
#[allow(clippy::too_many_arguments)]
pub fn forward_each<T: Scalar, S: AttentionSublayer<T> + ?Sized>(
    sub: &S,
    batch: usize,
    n: usize,
    params: &[T],
    input: &[T],
    values: &[T],
    out: &mut [T],
    cache: &mut [T],
    workspace: &mut [T],
) -> Result<()> {
    batch_rows(sub, batch, n, input.len(), values.len(), cache.len())?;
    check_matrix("out", out.len(), batch * n, sub.dims().n_heads * sub.dims().d_head)?;
    let (d, hw, cl) = (sub.dims().d_model, sub.dims().n_heads * sub.dims().d_head, sub.cache_len(n));
    for b in 0..batch {
        sub.forward(
            n,
            params,
            &input[b * n * d..(b + 1) * n * d],
            &values[b * n * hw..(b + 1) * n * hw],
            &mut out[b * n * hw..(b + 1) * n * hw],
            &mut cache[b * cl..(b + 1) * cl],
            workspace,
        )?;
    }
    Ok(())
}

/// The default [`AttentionSublayer::backward_batch`]: one `backward` per sequence, after checking
/// the batched lengths.
#[allow(clippy::too_many_arguments)]
pub fn backward_each<T: Scalar, S: AttentionSublayer<T> + ?Sized>(
    sub: &S,
    batch: usize,
    n: usize,
    params: &[T],
    input: &[T],
    values: &[T],
    cache: &[T],
    d_out: &[T],
    d_input: &mut [T],
    d_values: &mut [T],
    d_params: &mut [T],
    workspace: &mut [T],
) -> Result<()> {
    let rows = batch_rows(sub, batch, n, input.len(), values.len(), cache.len())?;
    let (d, hw, cl) = (sub.dims().d_model, sub.dims().n_heads * sub.dims().d_head, sub.cache_len(n));
    check_matrix("d_out", d_out.len(), rows, hw)?;
    check_matrix("d_input", d_input.len(), rows, d)?;
    check_matrix("d_values", d_values.len(), rows, hw)?;
    for b in 0..batch {
        sub.backward(
            n,
            params,
            &input[b * n * d..(b + 1) * n * d],
            &values[b * n * hw..(b + 1) * n * hw],
            &cache[b * cl..(b + 1) * cl],
            &d_out[b * n * hw..(b + 1) * n * hw],
            &mut d_input[b * n * d..(b + 1) * n * d],
            &mut d_values[b * n * hw..(b + 1) * n * hw],
            d_params,
            workspace,
        )?;
    }
    Ok(())
}
