//! Softmax attention (`docs/math.md` section 4): a tiled online-softmax forward that never materializes the
//! `n x n` matrix of logits, and a flash-style backward that recomputes each tile from the per-row
//! log-sum-exp saved by the forward.
//!
//! ```text
//! P = softmax_row(Q K^T * scale + mask),  O = P V,  lse_i = ln sum_j exp(A_ij)
//! dV = P^T dO,  dP = dO V^T,  dS = P .* (dP - rowsum(dO .* O)),  dQ = dS K scale,  dK = dS^T Q scale
//! ```
//!
//! Queries are processed in blocks of `tile_q = min(TILE_Q, n)` rows (at most `CAUSAL_BLOCK_Q` for
//! causal heads, so that the hidden tiles above the diagonal are skipped) against blocks of
//! `tile_k = min(TILE_K, n)` keys ([`SoftmaxAttention::tile_q`], [`SoftmaxAttention::tile_k`]); the
//! running maximum and sum of each row rescale the output accumulated so far (Milakov & Gimelshein
//! 2018, "Online normalizer calculation for softmax"; Dao et al. 2022, "FlashAttention"). Extra memory
//! is one `tile_q x tile_k` tile (two in the backward), `O(tile_q)` row statistics, the keys (and,
//! backward, values) transposed once per call and one transposed query (and `dO`) block:
//! `O(n d + tile_q tile_k)`, e.g. 344 elements forward for `n = 8, d = 16` (no fixed tile).
//! The forward keeps its tile transposed (keys x queries) and every operand of a tile product is
//! laid out so that `matrixmultiply` packs it by contiguous copies (only `dS` in `dQ = dS K`
//! cannot be: `dK = dS^T Q` needs the other orientation).
//! Products go through the crate's unchecked `gemm` under [`crate::linalg::dense::gemm`].
//!
//! In `f32` on x86-64 with `std`, when the CPU has AVX-512 or AVX2/FMA, both passes run the fused
//! tile kernels of `attention/softmax/fused/` instead (same semantics, same workspace buffers, within
//! the same rounding bounds): query strips against key panels laid out once per call, the online
//! softmax on a strip while it is in cache, and every product register-blocked without packing.
//! They take their scratch from the same workspace, whose length formula covers them for
//! `n >= 135` with widths up to 256, and for the model's heads (`n = 128`, widths 16-24); where it
//! does not (short sequences), the generic path runs.

#[cfg(all(feature = "std", target_arch = "x86_64"))]
mod fused;
mod tiled;
use super::Causality;
use crate::error::{check_len, check_matrix, check_workspace};
use crate::workspace::Req;
use crate::{Error, Result, Scalar};
use tiled::{backward_unchecked, forward_unchecked};

/// Query rows per tile at most (a head uses `min(TILE_Q, n_tokens)`).
pub const TILE_Q: usize = 256;
/// Key columns per tile at most (a head uses `min(TILE_K, n_tokens)`).
pub const TILE_K: usize = 512;
/// Query rows per block of a causal head at most: the blocks on and below the diagonal are
/// computed, the hidden ones above it skipped (see the tile loop's `block_q`).
pub const CAUSAL_BLOCK_Q: usize = 32;

/// Shape and options of one softmax attention head: `Q, K` are `n x d_k`, `V` and the output
/// `n x d_v`, all row-major, with the number of positions `n` given per call (as for every attention
/// kernel of the crate); the logit of query `i` and key `j` is `A_ij = scale * q_i . k_j (+ mask_ij)`,
/// with `A_ij = -inf` for `j > i` when causal.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SoftmaxAttention<T> {
    /// Width of queries and keys.
    pub d_k: usize,
    /// Width of values and of the output.
    pub d_v: usize,
    /// Whether query `i` sees keys `j > i`.
    pub causality: Causality,
    /// Multiplies `q_i . k_j`; [`default_scale`] of `d_k` unless set.
    pub scale: T,
}

/// A head over one sequence length: what the tile loops run on.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Shaped<T> {
    n_tokens: usize,
    d_k: usize,
    d_v: usize,
    causality: Causality,
    scale: T,
}

/// `1 / sqrt(d_k)` (`docs/math.md` section 4), and `1` for `d_k = 0` (whose logits are all zero).
pub fn default_scale<T: Scalar>(d_k: usize) -> T {
    if d_k == 0 {
        T::one()
    } else {
        T::of_usize(d_k).sqrt().recip()
    }
}

/// The gradients of a softmax head with respect to its inputs (all overwritten).
#[derive(Debug)]
pub struct SoftmaxGrads<'a, T> {
    /// `dL/dQ`, `n_tokens x d_k`.
    pub d_q: &'a mut [T],
    /// `dL/dK`, `n_tokens x d_k`.
    pub d_k: &'a mut [T],
    /// `dL/dV`, `n_tokens x d_v`.
    pub d_v: &'a mut [T],
}

impl<T: Scalar> SoftmaxAttention<T> {
    /// A head with the default scale `1/sqrt(d_k)`.
    pub fn new(d_k: usize, d_v: usize, causality: Causality) -> Self {
        SoftmaxAttention { d_k, d_v, causality, scale: default_scale(d_k) }
    }

    /// The same head with another scale.
    pub fn with_scale(self, scale: T) -> Self {
        SoftmaxAttention { scale, ..self }
    }

    fn at(&self, n_tokens: usize) -> Shaped<T> {
        let SoftmaxAttention { d_k, d_v, causality, scale } = *self;
        Shaped { n_tokens, d_k, d_v, causality, scale }
    }

    /// Query rows per tile for `n_tokens` positions: `min(TILE_Q, n_tokens)`.
    pub fn tile_q(&self, n_tokens: usize) -> usize {
        self.at(n_tokens).tile_q()
    }

    /// Key columns per tile for `n_tokens` positions: `min(TILE_K, n_tokens)`.
    pub fn tile_k(&self, n_tokens: usize) -> usize {
        self.at(n_tokens).tile_k()
    }

    /// Workspace elements [`forward`](Self::forward) needs for `n = n_tokens`: one logit tile,
    /// three row statistics per query of a tile, the keys transposed once per call (`n d_k`) and
    /// one transposed query block (`tile_q d_k`): `tile_q (tile_k + 3 + d_k) + n d_k`, i.e.
    /// `O(n d_k + TILE_Q TILE_K)` (`n^2 + n (3 + 2 d_k)` for `n <= TILE_Q`); saturates at
    /// `usize::MAX`.
    pub fn forward_workspace_len(&self, n_tokens: usize) -> usize {
        self.at(n_tokens).forward_workspace_len()
    }

    /// Workspace elements [`backward`](Self::backward) needs for `n = n_tokens`: two tiles and one
    /// row statistic per query of a tile (plus two spare, so that a buffer of this length also
    /// serves [`forward`](Self::forward)), keys and values transposed once per call
    /// (`n (d_k + d_v)`) and one transposed block of queries and of `dO` (`tile_q (d_k + d_v)`):
    /// `tile_q (2 tile_k + 3 + d_k + d_v) + n (d_k + d_v)`, i.e. `O(n d + TILE_Q TILE_K)`.
    pub fn backward_workspace_len(&self, n_tokens: usize) -> usize {
        self.at(n_tokens).backward_workspace_len()
    }

    /// `out = softmax_row(Q K^T scale + mask) V` and `lse_i = ln sum_j exp(A_ij)` over
    /// `n = n_tokens` positions, tile by tile.
    ///
    /// `q, k`: `n x d_k`; `v`, `out`: `n x d_v`; `lse`: `n`; `mask`: optional additive `n x n`
    /// (row `i` = query), finite or `-inf`. A row whose logits are all `-inf` (fully masked) gets
    /// `out_i = 0` and `lse_i = -inf`; rows with huge logits (`1e4`) are exact, since each exponent
    /// is taken relative to the row's running maximum. NaN in `q, k, v` propagates to the affected
    /// rows. Errors: wrong lengths, a non-finite `scale`, NaN or `+inf` in `mask`, a short workspace.
    ///
    /// ```
    /// use sd_attention::attention::{softmax::SoftmaxAttention, Causality};
    /// let head = SoftmaxAttention::<f64>::new(1, 1, Causality::Causal);
    /// let (q, k, v) = ([1.0, 1.0], [0.0, 0.0], [1.0, 3.0]);
    /// let (mut out, mut lse) = ([0.0; 2], [0.0; 2]);
    /// let mut workspace = vec![0.0; head.forward_workspace_len(2)];
    /// head.forward(2, &q, &k, &v, None, &mut out, &mut lse, &mut workspace)?;
    /// assert_eq!(out, [1.0, 2.0]); // equal logits: query 1 averages values 0 and 1
    /// assert!((lse[1] - 2f64.ln()).abs() < 1e-15);
    /// # Ok::<(), sd_attention::Error>(())
    /// ```
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        n_tokens: usize,
        q: &[T],
        k: &[T],
        v: &[T],
        mask: Option<&[T]>,
        out: &mut [T],
        lse: &mut [T],
        workspace: &mut [T],
    ) -> Result<()> {
        self.at(n_tokens).forward(q, k, v, mask, out, lse, workspace)
    }

    /// Gradients of `L` with respect to `q, k, v` given `d_out = dL/dO`, the forward's `out` and
    /// `lse`, recomputing each probability tile as `P_ij = exp(A_ij - lse_i)` (`docs/math.md`
    /// section 4).
    ///
    /// Shapes as in [`forward`](Self::forward); `d_out` is `n x d_v`. Fully masked rows
    /// (`lse_i = -inf`) contribute nothing. The mask gets no gradient (it is a constant).
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        n_tokens: usize,
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
        self.at(n_tokens).backward(q, k, v, mask, out, lse, d_out, grads, workspace)
    }
}

impl<T: Scalar> Shaped<T> {
    /// Query rows per tile: `min(TILE_Q, n_tokens)`.
    fn tile_q(&self) -> usize {
        TILE_Q.min(self.n_tokens)
    }

    /// Query rows per block of the tile loop: [`tile_q`](Self::tile_q), or at most
    /// [`CAUSAL_BLOCK_Q`] for causal heads. A causal block of queries `[i0, i1)` only sees keys
    /// `[0, i1)`, so smaller blocks skip the hidden upper triangle of the logits (its products,
    /// `exp` and backward), about half the work at `n <= TILE_Q`; the workspace stays sized by
    /// `tile_q` (a block never exceeds it).
    fn block_q(&self) -> usize {
        match self.causality {
            Causality::Causal => CAUSAL_BLOCK_Q.min(self.tile_q()),
            Causality::Bidirectional => self.tile_q(),
        }
    }

    /// Key columns per tile: `min(TILE_K, n_tokens)`.
    fn tile_k(&self) -> usize {
        TILE_K.min(self.n_tokens)
    }

    /// Workspace elements [`forward`](Self::forward) needs: one logit tile, three row statistics per
    /// query of a tile, the keys transposed once per call (`n d_k`) and one transposed query block
    /// (`tile_q d_k`): `tile_q (tile_k + 3 + d_k) + n d_k`, i.e. `O(n d_k + TILE_Q TILE_K)`
    /// (`n^2 + n (3 + 2 d_k)` for `n <= TILE_Q`).
    fn forward_workspace_len(&self) -> usize {
        let (tq, tk, n) = (self.tile_q(), self.tile_k(), self.n_tokens);
        let per_query = Req::all_of([Req::new(tk), Req::new(3), Req::new(self.d_k)]);
        per_query.times(tq).and(Req::array(n, self.d_k)).saturating()
    }

    /// Workspace elements [`backward`](Self::backward) needs: two tiles and one row statistic per
    /// query of a tile (plus two spare, so that a buffer of this length also serves
    /// [`forward`](Self::forward)), keys and values transposed once per call (`n (d_k + d_v)`) and
    /// one transposed block of queries and of `dO` (`tile_q (d_k + d_v)`):
    /// `tile_q (2 tile_k + 3 + d_k + d_v) + n (d_k + d_v)`, i.e. `O(n d + TILE_Q TILE_K)`.
    fn backward_workspace_len(&self) -> usize {
        let (tq, tk, n) = (self.tile_q(), self.tile_k(), self.n_tokens);
        let widths = Req::new(self.d_k).and(Req::new(self.d_v));
        let per_query = Req::all_of([Req::array(tk, 2), Req::new(3), widths]);
        per_query.times(tq).and(widths.times(n)).saturating()
    }

    fn check(&self, q: &[T], k: &[T], v: &[T], mask: Option<&[T]>) -> Result<()> {
        check_matrix("q", q.len(), self.n_tokens, self.d_k)?;
        check_matrix("k", k.len(), self.n_tokens, self.d_k)?;
        check_matrix("v", v.len(), self.n_tokens, self.d_v)?;
        if !self.scale.is_finite() {
            return Err(Error::InvalidParameter { what: "scale", expected: "finite" });
        }
        if let Some(mask) = mask {
            check_matrix("mask", mask.len(), self.n_tokens, self.n_tokens)?;
            if let Some(index) = mask.iter().position(|m| m.is_nan() || *m == T::infinity()) {
                return Err(Error::InvalidValue { what: "mask", index, expected: "finite or -inf" });
            }
        }
        Ok(())
    }

    /// `out = softmax_row(Q K^T scale + mask) V` and `lse_i = ln sum_j exp(A_ij)`, tile by tile.
    ///
    /// `q, k`: `n x d_k`; `v`, `out`: `n x d_v`; `lse`: `n`; `mask`: optional additive `n x n`
    /// (row `i` = query), finite or `-inf`. A row whose logits are all `-inf` (fully masked) gets
    /// `out_i = 0` and `lse_i = -inf`; rows with huge logits (`1e4`) are exact, since each exponent
    /// is taken relative to the row's running maximum. NaN in `q, k, v` propagates to the affected
    /// rows. Errors: wrong lengths, a non-finite `scale`, NaN or `+inf` in `mask`, a short workspace.
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        q: &[T],
        k: &[T],
        v: &[T],
        mask: Option<&[T]>,
        out: &mut [T],
        lse: &mut [T],
        workspace: &mut [T],
    ) -> Result<()> {
        self.check(q, k, v, mask)?;
        check_matrix("out", out.len(), self.n_tokens, self.d_v)?;
        check_len("lse", lse.len(), self.n_tokens)?;
        check_workspace(workspace.len(), self.forward_workspace_len())?;
        forward_unchecked(self, q, k, v, mask, out, lse, workspace)?;
        Ok(())
    }

    /// Gradients of `L` with respect to `q, k, v` given `d_out = dL/dO`, the forward's `out` and
    /// `lse`, recomputing each probability tile as `P_ij = exp(A_ij - lse_i)` (`docs/math.md` section 4).
    ///
    /// Shapes as in [`forward`](Self::forward); `d_out` is `n x d_v`. Fully masked rows
    /// (`lse_i = -inf`) contribute nothing. The mask gets no gradient (it is a constant).
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &self,
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
        self.check(q, k, v, mask)?;
        check_matrix("out", out.len(), self.n_tokens, self.d_v)?;
        check_len("lse", lse.len(), self.n_tokens)?;
        check_matrix("d_out", d_out.len(), self.n_tokens, self.d_v)?;
        check_matrix("d_q", grads.d_q.len(), self.n_tokens, self.d_k)?;
        check_matrix("d_k", grads.d_k.len(), self.n_tokens, self.d_k)?;
        check_matrix("d_v", grads.d_v.len(), self.n_tokens, self.d_v)?;
        check_workspace(workspace.len(), self.backward_workspace_len())?;
        backward_unchecked(self, q, k, v, mask, out, lse, d_out, grads, workspace)?;
        Ok(())
    }
}

/// Flops of one forward pass (`2 n n_k d_k + 2 n n_k d_v`, with `n_k` the keys each query sees:
/// about half for causal heads), the figure the benches report (saturating).
pub fn forward_flops(n_tokens: usize, d_k: usize, d_v: usize, causality: Causality) -> u64 {
    let pairs = visible_pairs(n_tokens, causality);
    pairs.saturating_mul(2).saturating_mul((d_k as u64).saturating_add(d_v as u64))
}

/// Flops of one backward pass: five products of the forward's size (`QK^T` recomputed, `P^T dO`,
/// `dO V^T`, `dS K`, `dS^T Q`).
pub fn backward_flops(n_tokens: usize, d_k: usize, d_v: usize, causality: Causality) -> u64 {
    let pairs = visible_pairs(n_tokens, causality);
    let width = (d_k as u64).saturating_mul(3).saturating_add((d_v as u64).saturating_mul(2));
    pairs.saturating_mul(2).saturating_mul(width)
}

fn visible_pairs(n: usize, causality: Causality) -> u64 {
    let n = n as u64;
    match causality {
        Causality::Bidirectional => n.saturating_mul(n),
        Causality::Causal => n.saturating_mul(n.saturating_add(1)) / 2,
    }
}

/// The head's shapes and `f32` inputs for the fused kernels, or `None` when `T` is not `f32`.
#[cfg(all(feature = "std", target_arch = "x86_64"))]
fn fused_problem<'a, T: Scalar>(
    head: &Shaped<T>,
    q: &'a [T],
    k: &'a [T],
    v: &'a [T],
    mask: Option<&'a [T]>,
) -> Option<fused::Problem<'a>> {
    let mask = match mask {
        Some(mask) => Some(T::f32_slice(mask)?),
        None => None,
    };
    Some(fused::Problem {
        n: head.n_tokens,
        d_k: head.d_k,
        d_v: head.d_v,
        scale: head.scale.as_f64() as f32, // exact: T is f32 here
        causal: head.causality == Causality::Causal,
        q: T::f32_slice(q)?,
        k: T::f32_slice(k)?,
        v: T::f32_slice(v)?,
        mask,
    })
}

/// The fused `f32` forward (`fused`) when `T` is `f32`, the CPU has AVX2/FMA or AVX-512
/// and the workspace (sized by [`SoftmaxAttention::forward_workspace_len`]) covers its layout;
/// returns whether it ran.
#[cfg(all(feature = "std", target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
fn fused_forward<T: Scalar>(
    head: &Shaped<T>,
    q: &[T],
    k: &[T],
    v: &[T],
    mask: Option<&[T]>,
    out: &mut [T],
    lse: &mut [T],
    workspace: &mut [T],
) -> bool {
    let Some(problem) = fused_problem(head, q, k, v, mask) else {
        return false;
    };
    let isa = crate::arch::isa();
    match (T::f32_slice_mut(out), T::f32_slice_mut(lse), T::f32_slice_mut(workspace)) {
        (Some(out), Some(lse), Some(workspace)) => fused::forward(isa, &problem, out, lse, workspace),
        _ => false,
    }
}

/// The fused `f32` backward when it applies (as [`fused_forward`]): `None` when it ran, else the
/// gradients handed back untouched.
#[cfg(all(feature = "std", target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
fn fused_backward<'g, T: Scalar>(
    head: &Shaped<T>,
    q: &[T],
    k: &[T],
    v: &[T],
    mask: Option<&[T]>,
    out: &[T],
    lse: &[T],
    d_out: &[T],
    grads: SoftmaxGrads<'g, T>,
    workspace: &mut [T],
) -> Option<SoftmaxGrads<'g, T>> {
    let Some(problem) = fused_problem(head, q, k, v, mask) else {
        return Some(grads);
    };
    let isa = crate::arch::isa();
    let (Some(out), Some(lse), Some(d_out), Some(workspace)) =
        (T::f32_slice(out), T::f32_slice(lse), T::f32_slice(d_out), T::f32_slice_mut(workspace))
    else {
        return Some(grads);
    };
    let ran = match (
        T::f32_slice_mut(&mut *grads.d_q),
        T::f32_slice_mut(&mut *grads.d_k),
        T::f32_slice_mut(&mut *grads.d_v),
    ) {
        (Some(d_q), Some(d_k), Some(d_v)) => {
            let io = fused::BackwardIo { out, lse, d_out, d_q, d_k, d_v };
            // Touches nothing and returns false when the workspace is too short for its layout.
            fused::backward(isa, &problem, io, workspace)
        }
        _ => false,
    };
    if ran {
        None
    } else {
        Some(grads)
    }
}
