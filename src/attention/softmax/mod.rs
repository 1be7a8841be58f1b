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
use super::Causality;
use crate::error::{check_len, check_matrix, check_workspace};
use crate::linalg::kernel::{self, Transpose};
use crate::workspace::{carve, Req};
use crate::{Error, Result, Scalar};

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

#[allow(clippy::too_many_arguments)]
fn forward_unchecked<T: Scalar>(
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
fn backward_unchecked<T: Scalar>(
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
