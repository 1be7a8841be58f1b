//! S-D attention (`docs/math.md` sections 5 and 8), and the standard `W_Q, W_K` head in the same form.
//!
//! An [`AttentionHead`] maps tokens `X` (`n x d_model`) to projected queries `Qh`, keys `Kh` and
//! values `X W_V`, then runs [`SoftmaxAttention`] on them. Its parameters live in one flat slice
//! whose layout [`AttentionHead::param_blocks`] names, and the backward pass returns gradients in
//! the same layout, so that a model can hold heads of either kind side by side.
//!
//! ## The S-D factorization (`docs/math.md` section 8: ours, kept in this one place)
//! Routing `S = U V^T - V U^T` (`U, V`: `d_model x r`, skew by construction, rank `<= 2r`) and
//! filtering `D = -C C^T` (`C`: `d_model x q`, negative semidefinite by construction). With
//! `a = X U`, `b = X V`, `c = X C` (rows `a_i, b_i, c_i`):
//!
//! ```text
//! x_i^T S x_j = a_i . b_j - b_i . a_j        x_i^T D x_j = -c_i . c_j
//! A_ij = scale * x_i^T (S + D) x_j = scale * [a_i, b_i, c_i] . [b_j, -a_j, -c_j]
//! ```
//!
//! so the logits are a product of `n x (2r + q)` projected queries and keys, computed in
//! `O(n d_model (r + q))` without forming the `d_model x d_model` kernel, and fed to the tiled
//! softmax path. The functions `sd_assemble` and `sd_assemble_adjoint` are the only code that
//! knows this form (with [`AttentionHead::kernel_dense`]); changing the factorization means changing
//! them. The default scale of an S-D head is `1/sqrt(2r + q)`, the width of that product (ours too).
//!
//! The spectrum check (`Re(lambda) <= 0` for `S + D`) is [`AttentionHead::stability_bound`], which
//! forms the kernel and runs the crate's general checker [`crate::testing::check::stability_bound`].

use super::softmax::{default_scale, SoftmaxAttention, SoftmaxGrads};
use super::Causality;
use crate::error::{check_matrix, check_workspace};
use crate::linalg::kernel::{self, Transpose};
use crate::workspace::{carve, Req};
use crate::{Error, Result, Scalar};

mod assemble;
pub(crate) use assemble::{sd_assemble, sd_assemble_adjoint, Cols};

/// How a head turns tokens into queries and keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadKind {
    /// Standard attention: `Q = X W_Q`, `K = X W_K` with `W_Q, W_K`: `d_model x d_head`; kernel
    /// `M = W_Q W_K^T`. Parameters `[W_Q, W_K, W_V]`.
    Standard {
        /// Width of queries and keys.
        d_head: usize,
    },
    /// S-D attention: kernel `S + D = (U V^T - V U^T) - C C^T` with `U, V`: `d_model x
    /// rank_routing`, `C`: `d_model x rank_filtering`. Parameters `[U, V, C, W_V]`.
    RoutingFiltering {
        /// `r`, the number of columns of `U` and `V` (rank of `S` at most `2r`).
        rank_routing: usize,
        /// `q`, the number of columns of `C` (rank of `D` at most `q`).
        rank_filtering: usize,
    },
}

/// One named block of a head's flat parameter slice: `rows x cols`, row-major, from `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParamBlock {
    /// `"w_q"`, `"w_k"`, `"u"`, `"v"`, `"c"` or `"w_v"`.
    pub name: &'static str,
    /// First element in the flat slice.
    pub offset: usize,
    /// Rows (always `d_model`).
    pub rows: usize,
    /// Columns.
    pub cols: usize,
}

impl ParamBlock {
    /// `offset..offset + rows * cols`.
    pub fn range(&self) -> core::ops::Range<usize> {
        self.offset..self.offset.saturating_add(self.rows.saturating_mul(self.cols))
    }
}

/// An attention head over tokens `X` (`n x d_model`) with value projection `W_V`
/// (`d_model x d_v`): `out = softmax_row(Qh Kh^T scale [+ causal mask]) X W_V`, with `Qh, Kh` as
/// its [`HeadKind`] says. The struct holds shapes and options only; parameters are a flat slice.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionHead<T> {
    /// How queries and keys are formed.
    pub kind: HeadKind,
    /// Width of the tokens.
    pub d_model: usize,
    /// Width of the values and of the output.
    pub d_v: usize,
    /// Causal or bidirectional.
    pub causality: Causality,
    /// Multiplies the logits; `1/sqrt(qk_width)` unless set.
    pub scale: T,
}

/// Gradients of a head: with respect to the tokens and to every parameter.
#[derive(Debug)]
pub struct HeadGrads<'a, T> {
    /// `dL/dX`, `n x d_model` (overwritten).
    pub d_x: &'a mut [T],
    /// `dL/dparams`, in the layout of [`AttentionHead::param_blocks`] (overwritten).
    pub d_params: &'a mut [T],
}

impl<T: Scalar> AttentionHead<T> {
    /// A standard head (`W_Q, W_K`: `d_model x d_head`, `W_V`: `d_model x d_v`), scale
    /// `1/sqrt(d_head)`.
    pub fn standard(d_model: usize, d_head: usize, d_v: usize, causality: Causality) -> Self {
        AttentionHead {
            kind: HeadKind::Standard { d_head },
            d_model,
            d_v,
            causality,
            scale: default_scale(d_head),
        }
    }

    /// An S-D head (`U, V`: `d_model x rank_routing`, `C`: `d_model x rank_filtering`, `W_V`:
    /// `d_model x d_v`), scale `1/sqrt(2 rank_routing + rank_filtering)`.
    pub fn routing_filtering(
        d_model: usize,
        rank_routing: usize,
        rank_filtering: usize,
        d_v: usize,
        causality: Causality,
    ) -> Self {
        let kind = HeadKind::RoutingFiltering { rank_routing, rank_filtering };
        let width = rank_routing.saturating_mul(2).saturating_add(rank_filtering);
        AttentionHead { kind, d_model, d_v, causality, scale: default_scale(width) }
    }

    /// The same head with another scale.
    pub fn with_scale(self, scale: T) -> Self {
        AttentionHead { scale, ..self }
    }

    /// Width of the projected queries and keys: `d_head`, or `2r + q` for S-D (saturating).
    pub fn qk_width(&self) -> usize {
        match self.kind {
            HeadKind::Standard { d_head } => d_head,
            HeadKind::RoutingFiltering { rank_routing, rank_filtering } => {
                rank_routing.saturating_mul(2).saturating_add(rank_filtering)
            }
        }
    }

    /// The parameter blocks in order (`[W_Q, W_K, W_V]` or `[U, V, C, W_V]`) and how many there are.
    pub fn param_blocks(&self) -> ([ParamBlock; 4], usize) {
        let d = self.d_model;
        let cols: ([&'static str; 4], [usize; 4], usize) = match self.kind {
            HeadKind::Standard { d_head } => (["w_q", "w_k", "w_v", ""], [d_head, d_head, self.d_v, 0], 3),
            HeadKind::RoutingFiltering { rank_routing: r, rank_filtering: q } => {
                (["u", "v", "c", "w_v"], [r, r, q, self.d_v], 4)
            }
        };
        let mut blocks = [ParamBlock { name: "", offset: 0, rows: d, cols: 0 }; 4];
        let mut offset = 0;
        for (b, block) in blocks.iter_mut().enumerate().take(cols.2) {
            *block = ParamBlock { name: cols.0[b], offset, rows: d, cols: cols.1[b] };
            offset = offset.saturating_add(d.saturating_mul(cols.1[b]));
        }
        (blocks, cols.2)
    }

    /// The block named `name`, if the head has one.
    pub fn param_block(&self, name: &str) -> Option<ParamBlock> {
        let (blocks, count) = self.param_blocks();
        blocks[..count].iter().copied().find(|b| b.name == name)
    }

    /// Columns of all parameter blocks together: `2 d_head + d_v` or `2r + q + d_v`.
    fn param_cols(&self) -> Option<usize> {
        match self.kind {
            HeadKind::Standard { d_head } => d_head.checked_mul(2)?.checked_add(self.d_v),
            HeadKind::RoutingFiltering { rank_routing, rank_filtering } => {
                rank_routing.checked_mul(2)?.checked_add(rank_filtering)?.checked_add(self.d_v)
            }
        }
    }

    /// Total number of parameters: `d_model (2 d_head + d_v)` or `d_model (2r + q + d_v)`
    /// (`usize::MAX` if that overflows).
    pub fn param_len(&self) -> usize {
        self.param_cols().and_then(|cols| cols.checked_mul(self.d_model)).unwrap_or(usize::MAX)
    }

    fn softmax(&self) -> SoftmaxAttention<T> {
        SoftmaxAttention { d_k: self.qk_width(), d_v: self.d_v, causality: self.causality, scale: self.scale }
    }

    fn check(&self, n_tokens: usize, x: &[T], params: &[T]) -> Result<()> {
        check_matrix("x", x.len(), n_tokens, self.d_model)?;
        let expected = self
            .param_cols()
            .and_then(|cols| cols.checked_mul(self.d_model))
            .ok_or(Error::DimensionOverflow { what: "params" })?;
        crate::error::check_len("params", params.len(), expected)?;
        if !self.scale.is_finite() {
            return Err(Error::InvalidParameter { what: "scale", expected: "finite" });
        }
        Ok(())
    }

    /// Elements of the projection buffers: `Qh`, `Kh` (`n x w` each), `X W_V` (`n x d_v`), and for
    /// S-D one more `n x w` for `[XU | XV | XC]`.
    fn projection_req(&self, n_tokens: usize) -> Req {
        let w = self.qk_width();
        let extra = match self.kind {
            HeadKind::Standard { .. } => 0,
            HeadKind::RoutingFiltering { .. } => w,
        };
        Req::all_of([Req::new(w).times(2), Req::new(self.d_v), Req::new(extra)]).times(n_tokens)
    }

    /// The part of [`Self::projection_len`] beyond `Qh`, `Kh` and `X W_V`: `n w` for the S-D
    /// head's `[XU | XV | XC]`, nothing for a standard head. (Never computed as a difference: an
    /// empty sequence may carry huge widths, whose products only saturate.)
    fn packed_projection_len(&self, n_tokens: usize) -> usize {
        match self.kind {
            HeadKind::Standard { .. } => 0,
            HeadKind::RoutingFiltering { .. } => self.qk_width().saturating_mul(n_tokens),
        }
    }

    /// Workspace elements [`forward`](Self::forward) needs for `n_tokens` tokens:
    /// `n (2w + d_v [+ w for S-D])` plus the softmax forward's tile workspace.
    pub fn forward_workspace_len(&self, n_tokens: usize) -> usize {
        let softmax = Req::new(self.softmax().forward_workspace_len(n_tokens));
        self.projection_req(n_tokens).and(softmax).saturating()
    }

    /// Workspace elements [`backward`](Self::backward) needs: twice the projections (values and
    /// their gradients) plus the softmax backward's tile workspace.
    pub fn backward_workspace_len(&self, n_tokens: usize) -> usize {
        let softmax = Req::new(self.softmax().backward_workspace_len(n_tokens));
        self.projection_req(n_tokens).times(2).and(softmax).saturating()
    }

    /// Writes `Qh`, `Kh` (`n x w`) and `Vp = X W_V` (`n x d_v`); `proj` is `n x w` scratch (S-D only).
    #[allow(clippy::too_many_arguments)]
    fn project(
        &self,
        n: usize,
        x: &[T],
        params: &[T],
        qh: &mut [T],
        kh: &mut [T],
        vp: &mut [T],
        proj: &mut [T],
    ) -> Result<()> {
        let d = self.d_model;
        let (blocks, _) = self.param_blocks();
        match self.kind {
            HeadKind::Standard { d_head } => {
                let (w_q, w_k, w_v) =
                    (&params[blocks[0].range()], &params[blocks[1].range()], &params[blocks[2].range()]);
                kernel::gemm(n, d, d_head, T::one(), x, Transpose::No, w_q, Transpose::No, T::zero(), qh);
                kernel::gemm(n, d, d_head, T::one(), x, Transpose::No, w_k, Transpose::No, T::zero(), kh);
                kernel::gemm(n, d, self.d_v, T::one(), x, Transpose::No, w_v, Transpose::No, T::zero(), vp);
            }
            HeadKind::RoutingFiltering { rank_routing: r, rank_filtering: q } => {
                let ([xa, xb], xc) = carve(proj, [n * r, n * r])?;
                for (block, out, cols) in [(0, &mut *xa, r), (1, &mut *xb, r), (2, &mut *xc, q)] {
                    let factor = &params[blocks[block].range()];
                    kernel::gemm(
                        n,
                        d,
                        cols,
                        T::one(),
                        x,
                        Transpose::No,
                        factor,
                        Transpose::No,
                        T::zero(),
                        out,
                    );
                }
                sd_assemble(
                    n,
                    r,
                    q,
                    (xa, Cols::dense(r)),
                    (xb, Cols::dense(r)),
                    (xc, Cols::dense(q)),
                    qh,
                    kh,
                );
                let w_v = &params[blocks[3].range()];
                kernel::gemm(n, d, self.d_v, T::one(), x, Transpose::No, w_v, Transpose::No, T::zero(), vp);
            }
        }
        Ok(())
    }

    /// `out = softmax_row(Qh Kh^T scale [+ causal]) X W_V` (`n x d_v`) and the per-row log-sum-exp
    /// `lse` (`n`), for tokens `x` (`n x d_model`) and parameters `params` (layout
    /// [`param_blocks`](Self::param_blocks)). NaN propagates as in [`SoftmaxAttention::forward`].
    ///
    /// ```
    /// use sd_attention::attention::{sd::AttentionHead, Causality};
    /// // d_model 2, r = 1, q = 0, d_v = 1: U = e_0, V = e_1, so S = e_0 e_1^T - e_1 e_0^T.
    /// let head = AttentionHead::<f64>::routing_filtering(2, 1, 0, 1, Causality::Bidirectional);
    /// let params = [1.0, 0.0, /* V */ 0.0, 1.0, /* W_V */ 1.0, 0.0];
    /// let x = [1.0, 0.0, 0.0, 1.0]; // two tokens e_0, e_1
    /// let (mut out, mut lse) = ([0.0; 2], [0.0; 2]);
    /// let mut workspace = vec![0.0; head.forward_workspace_len(2)];
    /// head.forward(2, &x, &params, &mut out, &mut lse, &mut workspace)?;
    /// // Logits scale * x_i^T S x_j: A_01 = s, A_10 = -s, A_00 = A_11 = 0 with s = 1/sqrt(2); values
    /// // x W_V = (1, 0). Token 0 weighs token 1 by e^s, token 1 weighs itself by e^s: both outputs
    /// // equal 1 / (1 + e^s).
    /// let expected = 1.0 / (1.0 + (0.5f64).sqrt().exp());
    /// assert!((out[0] - expected).abs() < 1e-15 && (out[1] - expected).abs() < 1e-15);
    /// # Ok::<(), sd_attention::Error>(())
    /// ```
    pub fn forward(
        &self,
        n_tokens: usize,
        x: &[T],
        params: &[T],
        out: &mut [T],
        lse: &mut [T],
        workspace: &mut [T],
    ) -> Result<()> {
        self.check(n_tokens, x, params)?;
        let attn = self.softmax();
        check_matrix("out", out.len(), n_tokens, self.d_v)?;
        crate::error::check_len("lse", lse.len(), n_tokens)?;
        check_workspace(workspace.len(), self.forward_workspace_len(n_tokens))?;
        let (n, w) = (n_tokens, self.qk_width());
        let ([qh, kh, vp, proj], rest) =
            carve(workspace, [n * w, n * w, n * self.d_v, self.packed_projection_len(n)])?;
        self.project(n, x, params, qh, kh, vp, proj)?;
        attn.forward(n, qh, kh, vp, None, out, lse, rest)
    }

    /// Gradients with respect to `x` and every parameter, given `d_out = dL/dout` and the forward's
    /// `out` and `lse`. Projections are recomputed from `x` (`O(n d_model (w + d_v))`); then the
    /// softmax backward, then the chain rule through the projections:
    /// `dW = X^T dQh` (standard), `dU = X^T (dQh_a - dKh_b)`, `dV = X^T (dQh_b + dKh_a)`,
    /// `dC = X^T (dQh_c - dKh_c)` (S-D), `dW_V = X^T dVp`, and `dX` the sum of the matching
    /// `d(proj) W^T` terms.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        n_tokens: usize,
        x: &[T],
        params: &[T],
        out: &[T],
        lse: &[T],
        d_out: &[T],
        grads: HeadGrads<'_, T>,
        workspace: &mut [T],
    ) -> Result<()> {
        self.check(n_tokens, x, params)?;
        let attn = self.softmax();
        check_matrix("out", out.len(), n_tokens, self.d_v)?;
        crate::error::check_len("lse", lse.len(), n_tokens)?;
        check_matrix("d_out", d_out.len(), n_tokens, self.d_v)?;
        check_matrix("d_x", grads.d_x.len(), n_tokens, self.d_model)?;
        crate::error::check_len("d_params", grads.d_params.len(), params.len())?;
        check_workspace(workspace.len(), self.backward_workspace_len(n_tokens))?;
        let (n, w, d, d_v) = (n_tokens, self.qk_width(), self.d_model, self.d_v);
        let packed = self.packed_projection_len(n);
        let ([qh, kh, vp, proj, d_qh, d_kh, d_vp, d_proj], rest) =
            carve(workspace, [n * w, n * w, n * d_v, packed, n * w, n * w, n * d_v, packed])?;
        self.project(n, x, params, qh, kh, vp, proj)?;
        attn.backward(
            n,
            qh,
            kh,
            vp,
            None,
            out,
            lse,
            d_out,
            SoftmaxGrads { d_q: d_qh, d_k: d_kh, d_v: d_vp },
            rest,
        )?;

        let HeadGrads { d_x, d_params } = grads;
        let (blocks, count) = self.param_blocks();
        // Gradient of each block's projection `X W_b`, in block order; for S-D `d_proj` holds
        // `[d(XU) | d(XV) | d(XC)]`, each `n x r` (or `n x q`) and contiguous.
        let rank_a = match self.kind {
            HeadKind::Standard { .. } => 0,
            HeadKind::RoutingFiltering { rank_routing, rank_filtering } => {
                let (r, q) = (rank_routing, rank_filtering);
                // Three consecutive dense blocks of d_proj: offsets n r and 2 n r.
                let (da, db, dc) = (Cols::of(r, 0), Cols::of(r, n * r), Cols::of(q, 2 * n * r));
                sd_assemble_adjoint(n, r, q, d_qh, d_kh, d_proj, da, db, dc);
                rank_routing
            }
        };
        d_x.fill(T::zero());
        for block in &blocks[..count] {
            let cols = block.cols;
            let d_projection: &[T] = match (self.kind, block.name) {
                (_, "w_v") => d_vp,
                (HeadKind::Standard { .. }, "w_q") => d_qh,
                (HeadKind::Standard { .. }, "w_k") => d_kh,
                (_, "u") => &d_proj[..n * rank_a],
                (_, "v") => &d_proj[n * rank_a..2 * n * rank_a],
                _ => &d_proj[2 * n * rank_a..],
            };
            let weight = &params[block.range()];
            // dW_b = X^T d(X W_b);  dX += d(X W_b) W_b^T.
            kernel::gemm(
                d,
                n,
                cols,
                T::one(),
                x,
                Transpose::Yes,
                d_projection,
                Transpose::No,
                T::zero(),
                &mut d_params[block.range()],
            );
            kernel::gemm(
                n,
                cols,
                d,
                T::one(),
                d_projection,
                Transpose::No,
                weight,
                Transpose::Yes,
                T::one(),
                d_x,
            );
        }
        Ok(())
    }

    /// The head's `d_model x d_model` kernel `M` written to `out`, with `A_ij = scale x_i^T M x_j`:
    /// `W_Q W_K^T` (standard) or `S + D = U V^T - V U^T - C C^T` (S-D). Costs `O(d_model^2 w)`;
    /// meant for small `d_model`, tests and inspection (the forward never forms it).
    pub fn kernel_dense(&self, params: &[T], out: &mut [T]) -> Result<()> {
        let d = self.d_model;
        crate::error::check_len("params", params.len(), self.param_len())?;
        check_matrix("out", out.len(), d, d)?;
        let (blocks, _) = self.param_blocks();
        let block = |b: usize| &params[blocks[b].range()];
        match self.kind {
            HeadKind::Standard { d_head } => {
                kernel::gemm(
                    d,
                    d_head,
                    d,
                    T::one(),
                    block(0),
                    Transpose::No,
                    block(1),
                    Transpose::Yes,
                    T::zero(),
                    out,
                );
            }
            HeadKind::RoutingFiltering { rank_routing: r, rank_filtering: q } => {
                let (u, v, c) = (block(0), block(1), block(2));
                kernel::gemm(d, r, d, T::one(), u, Transpose::No, v, Transpose::Yes, T::zero(), out);
                kernel::gemm(d, r, d, -T::one(), v, Transpose::No, u, Transpose::Yes, T::one(), out);
                kernel::gemm(d, q, d, -T::one(), c, Transpose::No, c, Transpose::Yes, T::one(), out);
            }
        }
        Ok(())
    }

    /// Workspace elements [`stability_bound`](Self::stability_bound) needs: the
    /// `d_model x d_model` kernel and [`crate::testing::check::stability_bound_workspace_len`]`(d_model)`.
    pub fn stability_bound_workspace_len(&self) -> usize {
        let d = self.d_model;
        Req::array(d, d).and(Req::new(crate::testing::check::stability_bound_workspace_len(d))).saturating()
    }

    /// Upper bound on `max Re(lambda)` over the eigenvalues of the head's kernel `M`
    /// ([`kernel_dense`](Self::kernel_dense)): `M` is formed in the workspace and handed to the
    /// crate's checker [`crate::testing::check::stability_bound`] (Lanczos on the symmetric part; Bendixson:
    /// no eigenvalue of `M` has a larger real part). For an S-D head the symmetric part is
    /// `D = -C C^T`, so the bound is `<= 0` up to rounding: compare with
    /// [`crate::testing::check::tolerance_for`]`(d_model, ||M||_F)` (`docs/math.md` section 5, `Re(lambda) <= 0`). A
    /// standard head has no such guarantee. `-inf` for `d_model = 0`. Errors: wrong `params`
    /// length, a short workspace, NaN or infinity in the kernel ([`Error::NonFinite`]).
    /// Cost `O(d_model^2 (w + d_model))`; meant for inspection and tests, like `kernel_dense`.
    ///
    /// ```
    /// use sd_attention::attention::{sd::AttentionHead, Causality};
    /// use sd_attention::testing::check::tolerance_for;
    /// let head = AttentionHead::<f64>::routing_filtering(3, 1, 1, 1, Causality::Causal);
    /// let params: Vec<f64> = (0..head.param_len()).map(|i| (i as f64 * 0.7).sin()).collect();
    /// let mut workspace = vec![0.0; head.stability_bound_workspace_len()];
    /// let bound = head.stability_bound(&params, &mut workspace)?;
    /// assert!(bound <= tolerance_for(3, 10.0)); // ||S + D||_F < 10 here
    /// # Ok::<(), sd_attention::Error>(())
    /// ```
    pub fn stability_bound(&self, params: &[T], workspace: &mut [T]) -> Result<T> {
        let d = self.d_model;
        crate::error::check_len("params", params.len(), self.param_len())?;
        check_workspace(workspace.len(), self.stability_bound_workspace_len())?;
        let ([kernel], rest) = carve(workspace, [d * d])?;
        self.kernel_dense(params, kernel)?;
        crate::linalg::dense::check_finite("kernel", kernel)?;
        crate::testing::check::stability_bound(d, kernel, rest)
    }
}
