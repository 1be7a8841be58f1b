//! A head's kernel `M = W_Q W_K^T` held as its factors (`docs/math.md` section 1): energies and matrix-free
//! products with `M`, `M^T`, routing `S` and filtering `D`, never forming the `d_model x d_model`
//! matrix.

use crate::error::{check_len, check_matrix, check_workspace};
use crate::linalg::dense::Transpose;
use crate::linalg::kernel;
use crate::spectral::split::Energies;
use crate::workspace::{carve, Req};
use crate::{Result, Scalar};

/// Which operator a matrix-free product applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The kernel `M = W_Q W_K^T`.
    Kernel,
    /// Its transpose `M^T = W_K W_Q^T`.
    KernelTransposed,
    /// Routing `S = (M - M^T) / 2` (skew-symmetric).
    Routing,
    /// Filtering `D = (M + M^T) / 2` (symmetric).
    Filtering,
}

/// The kernel `M = W_Q W_K^T` of one attention head, borrowed as its factors.
///
/// `w_q` and `w_k` are row-major `d_model x d_head` (the layout of `x W_Q` with row vectors `x`;
/// a PyTorch `nn.Linear` weight is stored `[out, in] = d_head x d_model` and must be transposed, or
/// read as a column slice, first). Logits of the head are `x_i^T M x_j / sqrt(d_head)`.
#[derive(Clone, Copy, Debug)]
pub struct FactoredKernel<'a, T> {
    d_model: usize,
    d_head: usize,
    w_q: &'a [T],
    w_k: &'a [T],
}

impl<'a, T: Scalar> FactoredKernel<'a, T> {
    /// Borrows the factors after checking `w_q.len() == w_k.len() == d_model * d_head`, and that the
    /// workspace sizes (`2 d_head^2` elements) fit in `usize` ([`crate::Error::DimensionOverflow`]
    /// otherwise: with `d_model = 0` any `d_head` matches empty factors).
    ///
    /// ```
    /// use sd_attention::spectral::factored::FactoredKernel;
    /// // d_model = 2, d_head = 1: M = q k^T = [[0, 1], [0, 0]], a pure shear.
    /// let (w_q, w_k) = ([1.0f64, 0.0], [0.0f64, 1.0]);
    /// let head = FactoredKernel::new(2, 1, &w_q, &w_k)?;
    /// let mut workspace = vec![0.0; head.energies_workspace_len()];
    /// let energies = head.energies(&mut workspace)?;
    /// assert_eq!(energies.routing_fraction(), 0.5); // half routing, half filtering
    /// # Ok::<(), sd_attention::Error>(())
    /// ```
    pub fn new(d_model: usize, d_head: usize, w_q: &'a [T], w_k: &'a [T]) -> Result<Self> {
        check_matrix("w_q", w_q.len(), d_model, d_head)?;
        check_matrix("w_k", w_k.len(), d_model, d_head)?;
        d_head
            .checked_mul(d_head)
            .and_then(|square| square.checked_mul(2))
            .ok_or(crate::Error::DimensionOverflow { what: "d_head" })?;
        Ok(FactoredKernel { d_model, d_head, w_q, w_k })
    }

    /// Model width: the kernel is `d_model x d_model`.
    pub fn d_model(&self) -> usize {
        self.d_model
    }

    /// Head width: `rank(M) <= d_head`.
    pub fn d_head(&self) -> usize {
        self.d_head
    }

    /// The query factor `W_Q` (`d_model x d_head`).
    pub fn w_q(&self) -> &'a [T] {
        self.w_q
    }

    /// The key factor `W_K` (`d_model x d_head`).
    pub fn w_k(&self) -> &'a [T] {
        self.w_k
    }

    /// Routing capacity `min(2 d_head, d_model)`: the largest rank `S` can have.
    pub fn routing_rank_bound(&self) -> usize {
        (2 * self.d_head).min(self.d_model)
    }

    /// Scratch elements [`FactoredKernel::apply`] needs: `2 d_head`.
    pub fn apply_workspace_len(&self) -> usize {
        Req::array(self.d_head, 2).saturating()
    }

    /// `y = P x` for the operator `P` named by `part`, in `O(d_model d_head)`:
    /// with `u = W_K^T x`, `w = W_Q^T x`: `M x = W_Q u`, `M^T x = W_K w`,
    /// `S x = (W_Q u - W_K w) / 2`, `D x = (W_Q u + W_K w) / 2`.
    ///
    /// `x` and `y` have length `d_model`; `workspace` at least [`Self::apply_workspace_len`].
    /// NaN or infinity in the factors or in `x` propagates to `y`.
    pub fn apply(&self, part: Part, x: &[T], y: &mut [T], workspace: &mut [T]) -> Result<()> {
        check_len("x", x.len(), self.d_model)?;
        check_len("y", y.len(), self.d_model)?;
        check_workspace(workspace.len(), self.apply_workspace_len())?;
        let d_head = self.d_head;
        let ([key_proj, query_proj], _) = carve(workspace, [d_head, d_head])?;
        key_proj.fill(T::zero());
        query_proj.fill(T::zero());
        let need_key = part != Part::KernelTransposed;
        let need_query = part != Part::Kernel;
        // u = W_K^T x and w = W_Q^T x, accumulated row by row (contiguous reads).
        for (i, &x_i) in x.iter().enumerate() {
            let row = i * d_head..(i + 1) * d_head;
            if need_key {
                kernel::axpy(x_i, &self.w_k[row.clone()], key_proj);
            }
            if need_query {
                kernel::axpy(x_i, &self.w_q[row], query_proj);
            }
        }
        for (i, y_i) in y.iter_mut().enumerate() {
            let row = i * d_head..(i + 1) * d_head;
            let forward = || kernel::dot(&self.w_q[row.clone()], key_proj);
            let backward = || kernel::dot(&self.w_k[row.clone()], query_proj);
            *y_i = match part {
                Part::Kernel => forward(),
                Part::KernelTransposed => backward(),
                Part::Routing => (forward() - backward()) * T::HALF,
                Part::Filtering => (forward() + backward()) * T::HALF,
            };
        }
        Ok(())
    }

    /// Writes the dense `d_model x d_model` matrix of `part` into `out` (for small heads and tests;
    /// `O(d_model^2 d_head)`).
    pub fn to_dense(&self, part: Part, out: &mut [T]) -> Result<()> {
        let d = self.d_model;
        check_matrix("out", out.len(), d, d)?;
        let (first, second, alpha, beta) = match part {
            Part::Kernel => (self.w_q, self.w_k, T::one(), None),
            Part::KernelTransposed => (self.w_k, self.w_q, T::one(), None),
            Part::Routing => (self.w_q, self.w_k, T::HALF, Some(-T::HALF)),
            Part::Filtering => (self.w_q, self.w_k, T::HALF, Some(T::HALF)),
        };
        let h = self.d_head;
        kernel::gemm(d, h, d, alpha, first, Transpose::No, second, Transpose::Yes, T::zero(), out);
        if let Some(beta) = beta {
            kernel::gemm(d, h, d, beta, second, Transpose::No, first, Transpose::Yes, T::one(), out);
        }
        Ok(())
    }

    /// Scratch elements [`FactoredKernel::energies`] needs: `2 d_head^2`.
    pub fn energies_workspace_len(&self) -> usize {
        Req::array(self.d_head, self.d_head).times(2).saturating()
    }

    /// `||S||_F^2` and `||D||_F^2` from the factors in `O(d_model d_head^2)`:
    /// `||M||^2 = <W_Q^T W_Q, W_K^T W_K>_F` and `tr(M M) = tr(G G)` with `G = W_K^T W_Q`, so
    /// `||S||^2 = (||M||^2 - tr(G G)) / 2` and `||D||^2 = (||M||^2 + tr(G G)) / 2`.
    ///
    /// The two parts come from a difference, so each carries an absolute error of a few
    /// `d_model eps ||M||_F^2` (not relative to itself as in [`crate::spectral::split::energies`]); a part
    /// that rounds below zero is returned as `0`.
    pub fn energies(&self, workspace: &mut [T]) -> Result<Energies<T>> {
        let (d, h) = (self.d_model, self.d_head);
        check_workspace(workspace.len(), self.energies_workspace_len())?;
        let ([gram_q, gram_k], _) = carve(workspace, [h * h, h * h])?;
        kernel::gemm(h, d, h, T::one(), self.w_q, Transpose::Yes, self.w_q, Transpose::No, T::zero(), gram_q);
        kernel::gemm(h, d, h, T::one(), self.w_k, Transpose::Yes, self.w_k, Transpose::No, T::zero(), gram_k);
        let total = kernel::dot(gram_q, gram_k);
        // G = W_K^T W_Q, reusing the first buffer; tr(G G) = sum_ij G_ij G_ji.
        let cross = gram_q;
        kernel::gemm(h, d, h, T::one(), self.w_k, Transpose::Yes, self.w_q, Transpose::No, T::zero(), cross);
        let mut trace_mm = T::zero();
        for i in 0..h {
            for j in 0..h {
                trace_mm += cross[i * h + j] * cross[j * h + i];
            }
        }
        let clamp = |v: T| if v < T::zero() { T::zero() } else { v };
        Ok(Energies {
            routing: clamp((total - trace_mm) * T::HALF),
            filtering: clamp((total + trace_mm) * T::HALF),
        })
    }
}
