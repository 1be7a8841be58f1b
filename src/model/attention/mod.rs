//! The attention sub-layers of the model: [`AttentionMixer`] implements
//! [`AttentionSublayer`] for the three kinds of [`AttentionKind`] on top of the crate's kernels
//! (`docs/math.md` sections 4-6), with no second copy of any of them.
//!
//! For `n` tokens with (normalized) input `A` (`n x d_model`), `h` heads of value width `d_head`,
//! and values `V` (`n x h d_head`, computed by the model):
//!
//! ```text
//! softmax (sec. 4):  Q = A W_Q, K = A W_K       (n x h d_head)   O = causal softmax(Q K^T / sqrt(d_head)) V
//! S-D (sec. 5):      a = A U_t, b = A V_t, c = A C_t per head t;  Q_t = [a | b | c], K_t = [b | -a | -c]
//!                    so Q_t K_t^T = A (U_t V_t^T - V_t U_t^T - C_t C_t^T) A^T = A (S_t + D_t) A^T,
//!                    O_t = causal softmax(Q_t K_t^T / sqrt(2r + q)) V_t
//! linear (sec. 6):   Q = A W_Q, K = A W_K;  O = causal ELU+1 linear attention(Q, K, V)  (no scale)
//! ```
//!
//! The linear kind of its own query/key width ([`AttentionKind::LinearQk`]) is the linear one with
//! `W_Q, W_K` of `qk_width` columns per head instead of `d_head` (queries and keys `n x h qk_width`,
//! values still `n x h d_head`).
//!
//! Scales: `1/sqrt(d_head)` for softmax, `1/sqrt(2r + q)` for S-D (the width of the assembled
//! queries, the default of [`crate::attention::sd::AttentionHead::routing_filtering`]), none for
//! ELU+1 linear attention (`phi` is applied to the raw projections, eps `1e-6`).
//!
//! The S-D queries and keys are assembled by `attention::sd`'s `sd_assemble` (and differentiated
//! by its adjoint): the factorization lives in that one place. The softmax heads run one by one through
//! [`SoftmaxAttention`] (queries and keys cached head-major, so that only values and outputs are
//! gathered and scattered), the linear ones through [`LinearAttention`] with packed heads.
//!
//! ## Parameter layout (`theta`, one flat slice per layer)
//! * softmax, linear: `[W_Q | W_K]`, each `d_model x h w` row-major (`w = d_head`, or `qk_width`
//!   for [`AttentionKind::LinearQk`]); head `t` owns columns `t w .. (t + 1) w` of each.
//! * S-D: `[U | V | C]` with `U, V`: `d_model x h r`, `C`: `d_model x h q`; head `t` owns columns
//!   `t r .. (t + 1) r` of `U` and `V` and `t q .. (t + 1) q` of `C`.
//!
//! [`AttentionMixer::head_factors`] returns, for any kind, a pair `(W_Q', W_K')` with
//! `M_t = W_Q' W_K'^T` the head's kernel, ready for [`crate::spectral::factored::FactoredKernel`] and the
//! matrix-free spectra of [`crate::spectral::spectrum`].

use super::config::AttentionKind;
use super::linear::{product_rows, product_tn};
use super::sublayer::{backward_each, forward_each, AttentionSublayer, SublayerDims};
use crate::attention::linear::LinearAttention;
use crate::attention::multihead::{gather, merge_heads, scatter, split_heads};
use crate::attention::sd::{sd_assemble, sd_assemble_adjoint, Cols};
use crate::attention::softmax::{SoftmaxAttention, SoftmaxGrads};
use crate::attention::Causality;
use crate::error::{check_len, check_matrix, check_workspace};
use crate::linalg::dense::Update;
use crate::linalg::kernel;
use crate::rng::SplitMix64;
use crate::workspace::{carve, Req};
use crate::{Error, Result, Scalar};

mod paths;
mod sequences;
#[cfg(test)]
mod tests;

/// Standard deviation of the normal initialization of every attention kernel parameter
/// (`W_Q, W_K` or `U, V, C`): the model's [`super::transformer::INIT_STD`], `0.02`.
pub const KERNEL_INIT_STD: f64 = 0.02;

/// One layer's attention kernel: `h` causal heads of the given [`AttentionKind`] (see the module
/// docs for the formulas, scales and parameter layout).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionMixer {
    dims: SublayerDims,
    kind: AttentionKind,
}

impl AttentionMixer {
    /// A mixer of `kind` for `dims`. Errors on a zero dimension or S-D routing rank, or on overflow.
    pub fn new(dims: SublayerDims, kind: AttentionKind) -> Result<Self> {
        for (what, value) in [("d_model", dims.d_model), ("n_heads", dims.n_heads), ("d_head", dims.d_head)] {
            if value == 0 {
                return Err(Error::InvalidParameter { what, expected: "at least 1" });
            }
        }
        match kind {
            AttentionKind::Sd { routing_rank: 0, .. } => {
                return Err(Error::InvalidParameter { what: "routing_rank", expected: "at least 1" })
            }
            AttentionKind::LinearQk { qk_width: 0 } => {
                return Err(Error::InvalidParameter { what: "qk_width", expected: "at least 1" })
            }
            _ => {}
        }
        let mixer = AttentionMixer { dims, kind };
        // Every size below is computed unchecked from these products: make sure the largest fits.
        kind.params_per_head(dims.d_model, dims.d_head)
            .and_then(|p| p.checked_mul(dims.n_heads))
            .and_then(|_| dims.n_heads.checked_mul(mixer.qk_width().max(dims.d_head)))
            .ok_or(Error::DimensionOverflow { what: "attention" })?;
        Ok(mixer)
    }

    /// The kind of its heads.
    pub fn kind(&self) -> AttentionKind {
        self.kind
    }

    /// Width of one head's queries and keys: `d_head`, `2r + q` for S-D, or the kind's own
    /// `qk_width` for [`AttentionKind::LinearQk`].
    pub fn qk_width(&self) -> usize {
        match self.kind {
            AttentionKind::Sd { routing_rank, filtering_rank } => 2 * routing_rank + filtering_rank,
            AttentionKind::LinearQk { qk_width } => qk_width,
            AttentionKind::Softmax | AttentionKind::Linear => self.dims.d_head,
        }
    }

    /// The logit scale: `1/sqrt(d_head)` (softmax), `1/sqrt(2r + q)` (S-D), `1` (linear: unused).
    pub fn scale<T: Scalar>(&self) -> T {
        match self.kind {
            AttentionKind::Linear | AttentionKind::LinearQk { .. } => T::one(),
            _ => crate::attention::softmax::default_scale(self.qk_width()),
        }
    }

    /// Columns of the per-kind projection blocks of `theta`: `[h w, h w]` (`w` the query/key
    /// width) or `[h r, h r, h q]` (each block `d_model x cols`).
    fn blocks(&self) -> ([usize; 3], usize) {
        let h = self.dims.n_heads;
        match self.kind {
            AttentionKind::Sd { routing_rank: r, filtering_rank: q } => ([h * r, h * r, h * q], 3),
            _ => ([h * self.qk_width(), h * self.qk_width(), 0], 2),
        }
    }

    /// Packed width of `Q` and `K`: `h qk_width`.
    fn packed_qk(&self) -> usize {
        self.dims.n_heads * self.qk_width()
    }

    fn heads_width(&self) -> usize {
        self.dims.n_heads * self.dims.d_head
    }

    /// One head's causal softmax (all heads share it).
    fn softmax<T: Scalar>(&self) -> SoftmaxAttention<T> {
        SoftmaxAttention::new(self.qk_width(), self.dims.d_head, Causality::Causal).with_scale(self.scale())
    }

    fn linear<T: Scalar>(&self) -> LinearAttention<T> {
        LinearAttention::new(self.qk_width(), self.dims.d_head, Causality::Causal)
            .with_heads(self.dims.n_heads)
    }

    /// Scratch of [`Self::project`]: softmax: the packed `A W_Q` or `A W_K` (`n h d_head`);
    /// linear: 0; S-D: 0 (it projects in `sd_forward`, see `sd_workspace_len`).
    fn projection_scratch(&self, n: usize) -> Req {
        match self.kind {
            AttentionKind::Sd { .. } => Req::EMPTY,
            AttentionKind::Softmax => Req::array(n, self.packed_qk()),
            AttentionKind::Linear | AttentionKind::LinearQk { .. } => Req::EMPTY,
        }
    }

    /// `(W_Q', W_K')`, each `d_model x qk_width`, with head `head`'s kernel
    /// `M = W_Q' W_K'^T` (`A_ij = scale a_i^T M a_j`): the head's columns of `W_Q, W_K`, or for S-D
    /// `W_Q' = [U_t | V_t | C_t]`, `W_K' = [V_t | -U_t | -C_t]` (so `M = S + D` exactly, with
    /// `S = U_t V_t^T - V_t U_t^T`, `D = -C_t C_t^T`). Pass them to
    /// [`crate::spectral::factored::FactoredKernel::new`]`(d_model, qk_width, ..)` for energies and spectra.
    /// `workspace` holds [`Self::head_factors_workspace_len`] elements.
    pub fn head_factors<T: Scalar>(
        &self,
        params: &[T],
        head: usize,
        w_q: &mut [T],
        w_k: &mut [T],
        workspace: &mut [T],
    ) -> Result<()> {
        check_len("params", params.len(), self.param_len_checked())?;
        if head >= self.dims.n_heads {
            return Err(Error::InvalidParameter { what: "head", expected: "< n_heads" });
        }
        let (d, w) = (self.dims.d_model, self.qk_width());
        check_matrix("w_q", w_q.len(), d, w)?;
        check_matrix("w_k", w_k.len(), d, w)?;
        check_workspace(workspace.len(), self.head_factors_workspace_len())?;
        let (cols, _) = self.blocks();
        match self.kind {
            AttentionKind::Sd { routing_rank: r, filtering_rank: q } => {
                let (u, rest) = params.split_at(d * cols[0]);
                let (v, c) = rest.split_at(d * cols[1]);
                // Rows of U_t, V_t, C_t play the roles of the token rows a_i, b_i, c_i.
                let (ut, vt) = (Cols::of(cols[0], head * r), Cols::of(cols[1], head * r));
                sd_assemble(d, r, q, (u, ut), (v, vt), (c, Cols::of(cols[2], head * q)), w_q, w_k);
            }
            _ => {
                let (wq_all, wk_all) = params.split_at(d * cols[0]);
                gather(d, cols[0], head * w, w, wq_all, w_q);
                gather(d, cols[1], head * w, w, wk_all, w_k);
            }
        }
        Ok(())
    }

    /// Scratch of [`Self::head_factors`]: none any more (0; the S-D factors are assembled in place
    /// from the packed parameters). Kept so that callers need not change.
    pub fn head_factors_workspace_len(&self) -> usize {
        0
    }

    fn param_len_checked(&self) -> usize {
        let (cols, _) = self.blocks();
        self.dims.d_model * (cols[0] + cols[1] + cols[2])
    }

    /// `Q, K` from `input`: head-major (`h` blocks of `n x qk_width`) for the softmax kinds, packed
    /// (`n x h qk_width`) for linear; `scratch` holds [`Self::projection_scratch`].
    fn project<T: Scalar>(
        &self,
        n: usize,
        params: &[T],
        input: &[T],
        q: &mut [T],
        k: &mut [T],
        scratch: &mut [T],
    ) -> Result<()> {
        let d = self.dims.d_model;
        let (cols, _) = self.blocks();
        let w = self.qk_width();
        match self.kind {
            // S-D projects in `sd_forward` (all rows of a batch in one product).
            AttentionKind::Sd { .. } => {}
            AttentionKind::Softmax => {
                let ([packed], _) = carve(scratch, [self.projection_scratch(n).saturating()])?;
                for (block, out) in [(0, q), (1, k)] {
                    let weight = &params[block * d * cols[0]..(block + 1) * d * cols[0]];
                    product_rows(n, d, cols[0], input, weight, packed, Update::Overwrite);
                    for t in 0..self.dims.n_heads {
                        gather(n, cols[0], t * w, w, packed, &mut out[t * n * w..(t + 1) * n * w]);
                    }
                }
            }
            AttentionKind::Linear | AttentionKind::LinearQk { .. } => {
                let (w_q, w_k) = params.split_at(d * cols[0]);
                product_rows(n, d, cols[0], input, w_q, q, Update::Overwrite);
                product_rows(n, d, cols[1], input, w_k, k, Update::Overwrite);
            }
        }
        Ok(())
    }

    /// Adjoint of the projections from the gradients of their outputs: `d_params += A^T d_block`,
    /// `d_input += d_block W^T` (`W^T` laid out in `scratch`, [`Self::weight_t_len`] elements, so
    /// that the product runs unpacked on row-major operands). `d_blocks` is, for S-D, one
    /// `n x h (2r + q)` matrix `[d(AU) | d(AV) | d(AC)]` (the blocks side by side in each row, as
    /// the forward's wide product); otherwise one contiguous `n x cols` block per parameter block
    /// (`[dQ | dK]`, packed).
    #[allow(clippy::too_many_arguments)]
    fn project_backward<T: Scalar>(
        &self,
        n: usize,
        params: &[T],
        input: &[T],
        d_blocks: &[T],
        d_input: &mut [T],
        d_params: &mut [T],
        scratch: &mut [T],
    ) -> Result<()> {
        let d = self.dims.d_model;
        let (cols, count) = self.blocks();
        if let AttentionKind::Sd { .. } = self.kind {
            // d_blocks is one n x h (2r + q) matrix [d(AU) | d(AV) | d(AC)]: one product for the
            // weight gradients of the three blocks side by side, one for the input gradient
            // against [U | V | C]^T (the blocks' transposes stacked).
            let wide = self.packed_qk();
            let part = Req::array(d, wide).saturating();
            let ([d_wide, w_wide_t], _) = carve(scratch, [part, part])?;
            product_tn(d, n, wide, input, d_blocks, d_wide, Update::Overwrite);
            let (mut offset, mut col) = (0, 0);
            for &cb in &cols {
                if cb == 0 {
                    // An empty block (r = 0 or q = 0): no rows to move, and no chunks of width 0.
                    continue;
                }
                for (p, d_row) in d_params[offset..offset + d * cb].chunks_exact_mut(cb).enumerate() {
                    for (g, &v) in d_row.iter_mut().zip(&d_wide[p * wide + col..p * wide + col + cb]) {
                        *g += v;
                    }
                }
                kernel::transpose(
                    d,
                    cb,
                    &params[offset..offset + d * cb],
                    &mut w_wide_t[col * d..(col + cb) * d],
                );
                offset += d * cb;
                col += cb;
            }
            product_rows(n, wide, d, d_blocks, w_wide_t, d_input, Update::Accumulate);
            return Ok(());
        }
        let (mut offset, mut poff) = (0, 0);
        for &cb in cols.iter().take(count) {
            let g = &d_blocks[poff..poff + n * cb];
            let weight = &params[offset..offset + d * cb];
            let d_weight = &mut d_params[offset..offset + d * cb];
            product_tn(d, n, cb, input, g, d_weight, Update::Accumulate);
            let ([weight_t], _) = carve(&mut *scratch, [Req::array(d, cb).saturating()])?;
            kernel::transpose(d, cb, weight, weight_t);
            product_rows(n, cb, d, g, weight_t, d_input, Update::Accumulate);
            offset += d * cb;
            poff += n * cb;
        }
        Ok(())
    }

    /// Scratch of [`Self::project_backward`]: S-D: the weight gradients side by side and the
    /// stacked transposed weights (`2 d_model h (2r + q)`); otherwise one transposed weight block,
    /// `d_model` times the widest block.
    fn weight_t_len(&self) -> Req {
        let (cols, _) = self.blocks();
        match self.kind {
            AttentionKind::Sd { .. } => Req::array(self.dims.d_model, self.packed_qk()).times(2),
            _ => Req::array(self.dims.d_model, cols[0].max(cols[1]).max(cols[2])),
        }
    }

    /// `[U | V | C]` side by side (`d_model x h (2r + q)`, row `p` the rows `p` of the three
    /// blocks) into `out`, for the one wide projection product of the S-D forward.
    fn side_by_side<T: Scalar>(&self, params: &[T], out: &mut [T]) {
        let (cols, _) = self.blocks();
        let wide = self.packed_qk();
        let (mut offset, mut col) = (0, 0);
        for &cb in &cols {
            if cb == 0 {
                // An empty block (r = 0 or q = 0): no rows to move, and no chunks of width 0.
                continue;
            }
            for (p, row) in params[offset..offset + self.dims.d_model * cb].chunks_exact(cb).enumerate() {
                out[p * wide + col..p * wide + col + cb].copy_from_slice(row);
            }
            offset += self.dims.d_model * cb;
            col += cb;
        }
    }

    /// Length of the packed projection gradients `d_blocks`: `n` times the columns of all blocks.
    fn d_blocks_len(&self, n: usize) -> Req {
        let (cols, _) = self.blocks();
        Req::array(n, cols[0] + cols[1] + cols[2])
    }

    /// The buffers of the softmax kinds' backward, in order: one head's `dQ_t, dK_t` (`n w`
    /// each), and `V`, `dO`, `dV` of all heads, head-major (`n h d_head` each). (S-D's
    /// `da, db, dc` go straight into the packed gradients.)
    fn head_parts(&self, n: usize) -> [Req; 5] {
        let (qk, heads) = (Req::array(n, self.qk_width()), Req::array(n, self.heads_width()));
        [qk, qk, heads, heads, heads]
    }

    /// Scratch of the softmax kinds' backward: the buffers of [`Self::head_parts`],
    /// `n (2 w + 3 h d_head)`.
    fn head_scratch(&self, n: usize) -> Req {
        Req::all_of(self.head_parts(n))
    }

    fn check<T: Scalar>(&self, n: usize, params: &[T], input: &[T], values: &[T]) -> Result<()> {
        check_len("params", params.len(), self.param_len_checked())?;
        check_matrix("input", input.len(), n, self.dims.d_model)?;
        check_matrix("values", values.len(), n, self.heads_width())?;
        Ok(())
    }

    /// Cache layout: `Q, K` (`n h qk_width` each; head-major for the softmax kinds, packed for
    /// linear), then for the softmax kinds each head's output (`h` blocks of `n x d_head`) and
    /// `lse` (`h x n`).
    fn cache_parts(&self, n: usize) -> [Req; 4] {
        let qk = Req::array(n, self.packed_qk());
        match self.kind {
            AttentionKind::Linear | AttentionKind::LinearQk { .. } => [qk, qk, Req::EMPTY, Req::EMPTY],
            _ => [qk, qk, Req::array(n, self.heads_width()), Req::array(n, self.dims.n_heads)],
        }
    }
}

impl<T: Scalar> AttentionSublayer<T> for AttentionMixer {
    fn dims(&self) -> SublayerDims {
        self.dims
    }

    fn param_len(&self) -> usize {
        self.param_len_checked()
    }

    /// Every entry `N(0, 0.02^2)` ([`KERNEL_INIT_STD`]).
    fn init_params(&self, rng: &mut SplitMix64, params: &mut [T]) {
        rng.fill_normal(T::of_f64(KERNEL_INIT_STD), params);
    }

    fn cache_len(&self, n_tokens: usize) -> usize {
        Req::all_of(self.cache_parts(n_tokens)).saturating()
    }

    fn workspace_len(&self, n_tokens: usize) -> usize {
        let n = n_tokens;
        if let AttentionKind::Sd { .. } = self.kind {
            return self.sd_workspace_len::<T>(1, n);
        }
        let grads = self.d_blocks_len(n);
        let (forward, backward) = match self.kind {
            AttentionKind::Linear | AttentionKind::LinearQk { .. } => {
                let l = self.linear::<T>();
                (Req::new(l.forward_workspace_len(n)), Req::new(l.backward_workspace_len(n)))
            }
            _ => {
                let s = self.softmax::<T>();
                let v_heads = Req::array(n, self.heads_width());
                (
                    v_heads.and(Req::new(s.forward_workspace_len(n))),
                    self.head_scratch(n).and(Req::new(s.backward_workspace_len(n))),
                )
            }
        };
        let forward = forward.or(self.projection_scratch(n));
        let backward = grads.and(Req::any_of([backward, self.projection_scratch(n), self.weight_t_len()]));
        forward.or(backward).saturating()
    }

    fn forward(
        &self,
        n_tokens: usize,
        params: &[T],
        input: &[T],
        values: &[T],
        out: &mut [T],
        cache: &mut [T],
        workspace: &mut [T],
    ) -> Result<()> {
        let n = n_tokens;
        self.check(n, params, input, values)?;
        check_matrix("out", out.len(), n, self.heads_width())?;
        check_workspace(cache.len(), AttentionSublayer::<T>::cache_len(self, n))?;
        check_workspace(workspace.len(), AttentionSublayer::<T>::workspace_len(self, n))?;
        if n == 0 {
            return Ok(());
        }
        if let AttentionKind::Sd { .. } = self.kind {
            return self.sd_forward(1, n, params, input, values, out, cache, workspace);
        }
        let ([q, k, out_cache, lse], _) = carve(cache, self.cache_parts(n).map(Req::saturating))?;
        self.project(n, params, input, q, k, workspace)?;
        if self.kind.is_linear() {
            return self.linear().forward(n, q, k, values, out, workspace);
        }
        self.heads_forward(n, q, k, values, out, out_cache, lse, workspace)
    }

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
    ) -> Result<()> {
        let n = n_tokens;
        self.check(n, params, input, values)?;
        let hw = self.heads_width();
        check_matrix("d_out", d_out.len(), n, hw)?;
        check_matrix("d_input", d_input.len(), n, self.dims.d_model)?;
        check_matrix("d_values", d_values.len(), n, hw)?;
        check_len("d_params", d_params.len(), params.len())?;
        check_workspace(cache.len(), AttentionSublayer::<T>::cache_len(self, n))?;
        check_workspace(workspace.len(), AttentionSublayer::<T>::workspace_len(self, n))?;
        if n == 0 {
            return Ok(());
        }
        if let AttentionKind::Sd { .. } = self.kind {
            return self.sd_backward(
                1, n, params, input, values, cache, d_out, d_input, d_values, d_params, workspace,
            );
        }
        let [lq, lk, lo, ll] = self.cache_parts(n).map(Req::saturating);
        let (q, rest) = cache.split_at(lq);
        let (k, rest) = rest.split_at(lk);
        let (out, rest) = rest.split_at(lo);
        let lse = &rest[..ll];
        let ([d_blocks], scratch) = carve(workspace, [self.d_blocks_len(n).saturating()])?;
        let (cols, _) = self.blocks();
        if self.kind.is_linear() {
            let (d_q, d_k) = d_blocks.split_at_mut(n * cols[0]);
            self.linear().backward(n, q, k, values, d_out, d_q, d_k, d_values, scratch)?;
        } else {
            self.heads_backward(n, (q, k, out, lse), values, d_out, d_values, d_blocks, scratch)?;
        }
        self.project_backward(n, params, input, d_blocks, d_input, d_params, scratch)
    }

    /// With the `parallel` feature, the softmax and linear kinds run one task per sequence, each
    /// with one sequence's scratch and its own partial parameter gradient (added to `d_params` in
    /// sequence order afterwards): `batch (workspace_len(n) + param_len)`.
    fn batch_workspace_len(&self, batch: usize, n_tokens: usize) -> usize {
        match self.kind {
            AttentionKind::Sd { .. } => self.sd_workspace_len::<T>(batch, n_tokens),
            _ if crate::parallel::ENABLED => batch.saturating_mul(self.sequence_task_len::<T>(n_tokens)),
            _ => AttentionSublayer::<T>::workspace_len(self, n_tokens),
        }
    }

    /// S-D: the projections of all `batch n` rows as one product each way (forward
    /// `A [U | V | C]`, backward its two adjoint products), the heads sequence by sequence.
    /// Other kinds: one [`forward`](AttentionSublayer::forward) per sequence.
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
        if !matches!(self.kind, AttentionKind::Sd { .. }) {
            if crate::parallel::ENABLED {
                return self.forward_sequences(batch, n_tokens, params, input, values, out, cache, workspace);
            }
            return forward_each(self, batch, n_tokens, params, input, values, out, cache, workspace);
        }
        let n = n_tokens;
        let rows = batch.checked_mul(n).ok_or(Error::DimensionOverflow { what: "batch" })?;
        self.check(rows, params, input, values)?;
        check_matrix("out", out.len(), rows, self.heads_width())?;
        let cache_len = AttentionSublayer::<T>::cache_len(self, n)
            .checked_mul(batch)
            .ok_or(Error::DimensionOverflow { what: "cache" })?;
        check_workspace(cache.len(), cache_len)?;
        check_workspace(workspace.len(), self.sd_workspace_len::<T>(batch, n))?;
        if rows == 0 {
            return Ok(());
        }
        self.sd_forward(batch, n, params, input, values, out, cache, workspace)
    }

    /// See [`forward_batch`](Self::forward_batch).
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
        if !matches!(self.kind, AttentionKind::Sd { .. }) {
            if crate::parallel::ENABLED {
                return self.backward_sequences(
                    batch, n_tokens, params, input, values, cache, d_out, d_input, d_values, d_params,
                    workspace,
                );
            }
            return backward_each(
                self, batch, n_tokens, params, input, values, cache, d_out, d_input, d_values, d_params,
                workspace,
            );
        }
        let n = n_tokens;
        let rows = batch.checked_mul(n).ok_or(Error::DimensionOverflow { what: "batch" })?;
        self.check(rows, params, input, values)?;
        let hw = self.heads_width();
        check_matrix("d_out", d_out.len(), rows, hw)?;
        check_matrix("d_input", d_input.len(), rows, self.dims.d_model)?;
        check_matrix("d_values", d_values.len(), rows, hw)?;
        check_len("d_params", d_params.len(), params.len())?;
        let cache_len = AttentionSublayer::<T>::cache_len(self, n)
            .checked_mul(batch)
            .ok_or(Error::DimensionOverflow { what: "cache" })?;
        check_workspace(cache.len(), cache_len)?;
        check_workspace(workspace.len(), self.sd_workspace_len::<T>(batch, n))?;
        if rows == 0 {
            return Ok(());
        }
        self.sd_backward(
            batch, n, params, input, values, cache, d_out, d_input, d_values, d_params, workspace,
        )
    }
}

/// One [`AttentionMixer`] per layer of `config`, ready for [`super::transformer::Model::new`].
pub fn mixers<T: Scalar>(
    config: &super::config::ModelConfig,
) -> Result<alloc::vec::Vec<alloc::boxed::Box<dyn AttentionSublayer<T>>>> {
    config.validate()?;
    let dims = SublayerDims { d_model: config.d_model, n_heads: config.n_heads, d_head: config.d_head };
    config
        .attention
        .iter()
        .map(|&kind| {
            AttentionMixer::new(dims, kind)
                .map(|m| alloc::boxed::Box::new(m) as alloc::boxed::Box<dyn AttentionSublayer<T>>)
        })
        .collect()
}
