//! Multi-head wrappers over packed layouts (`docs/math.md` sections 4 and 5): `h` heads side by side in the
//! columns of one row-major matrix, head `t` owning columns `[t w, (t + 1) w)` of an `n x (h w)`
//! matrix (the layout of a fused `X W` projection). Each head is gathered into contiguous workspace
//! rows (`O(n w)` copies, against the head's `O(n^2 w)` work), run by the single-head kernel, and
//! scattered back. Per-row log-sum-exps are stored head-major: `lse[t * n + i]`.

use super::sd::{AttentionHead, HeadGrads};
use super::softmax::{SoftmaxAttention, SoftmaxGrads};
use crate::error::{check_len, check_matrix, check_workspace};
use crate::workspace::{carve, Req};
use crate::{Error, Result, Scalar};

/// `dst = src` for two rows of equal length; rows that are a multiple of 8 elements long (head
/// widths) are copied in fixed blocks of 8, which compile to vector moves rather than a `memcpy`
/// call per row (rows here are 8..64 elements).
#[inline(always)]
fn copy_row<T: Scalar>(dst: &mut [T], src: &[T]) {
    if dst.len() % 8 == 0 {
        for (d, s) in dst.chunks_exact_mut(8).zip(src.chunks_exact(8)) {
            let s: &[T; 8] = s.try_into().expect("chunks of 8");
            let d: &mut [T; 8] = d.try_into().expect("chunks of 8");
            *d = *s;
        }
    } else {
        dst.copy_from_slice(src);
    }
}

/// Copies columns `[offset, offset + width)` of the `n x stride` matrix `src` into `n x width` `dst`.
pub(crate) fn gather<T: Scalar>(
    n: usize,
    stride: usize,
    offset: usize,
    width: usize,
    src: &[T],
    dst: &mut [T],
) {
    for i in 0..n {
        copy_row(
            &mut dst[i * width..(i + 1) * width],
            &src[i * stride + offset..i * stride + offset + width],
        );
    }
}

/// The inverse of [`gather`].
pub(crate) fn scatter<T: Scalar>(
    n: usize,
    stride: usize,
    offset: usize,
    width: usize,
    src: &[T],
    dst: &mut [T],
) {
    for i in 0..n {
        copy_row(
            &mut dst[i * stride + offset..i * stride + offset + width],
            &src[i * width..(i + 1) * width],
        );
    }
}

/// The rows of `src` (`n x h width`, `h` heads side by side) split head-major into `dst`
/// (`h` blocks of `n x width`): `dst[t][i] = src[i][t width..(t + 1) width]`. One pass over `src`
/// (each row read once, against `h` strided passes of [`gather`]). In `f32` compiled for AVX-512
/// or AVX2 when the CPU has them (plain copies: identical results).
#[cfg_attr(not(feature = "alloc"), allow(dead_code))] // used by the model (alloc)
pub(crate) fn split_heads<T: Scalar>(n: usize, h: usize, width: usize, src: &[T], dst: &mut [T]) {
    let (src, dst) = (&src[..n * h * width], &mut dst[..n * h * width]);
    if let (Some(s), Some(d)) = (T::f32_slice(src), T::f32_slice_mut(dst)) {
        return heads_f32::<true>(n, h, width, s, d);
    }
    heads_body::<T, true>(n, h, width, src, dst)
}

/// The inverse of [`split_heads`]: `h` blocks of `n x width` in `src` side by side into the rows
/// of `dst` (`n x h width`).
#[cfg_attr(not(feature = "alloc"), allow(dead_code))] // used by the model (alloc)
pub(crate) fn merge_heads<T: Scalar>(n: usize, h: usize, width: usize, src: &[T], dst: &mut [T]) {
    let (src, dst) = (&src[..n * h * width], &mut dst[..n * h * width]);
    if let (Some(s), Some(d)) = (T::f32_slice(src), T::f32_slice_mut(dst)) {
        return heads_f32::<false>(n, h, width, s, d);
    }
    heads_body::<T, false>(n, h, width, src, dst)
}

/// [`split_heads`] (`SPLIT`) or [`merge_heads`], shared by every instruction-set variant.
#[inline(always)]
#[cfg_attr(not(feature = "alloc"), allow(dead_code))] // used by the model (alloc)
fn heads_body<T: Scalar, const SPLIT: bool>(n: usize, h: usize, width: usize, src: &[T], dst: &mut [T]) {
    let hw = h * width;
    for i in 0..n {
        for t in 0..h {
            let (packed, block) = (i * hw + t * width, (t * n + i) * width);
            if SPLIT {
                copy_row(&mut dst[block..block + width], &src[packed..packed + width]);
            } else {
                copy_row(&mut dst[packed..packed + width], &src[block..block + width]);
            }
        }
    }
}

crate::arch::multiversion! {
    /// The `f32` path of [`split_heads`] (`split`) / [`merge_heads`] in the variant `isa` (copies
    /// only: identical results in every one).
    #[cfg_attr(not(feature = "alloc"), allow(dead_code))] // used by the model (alloc)
    fn heads_isa(split: bool, n: usize, h: usize, width: usize, src: &[f32], dst: &mut [f32]);
    avx512("avx512f") => heads_either(split, n, h, width, src, dst);
    avx2("avx2") => heads_either(split, n, h, width, src, dst);
    portable => heads_either(split, n, h, width, src, dst);
}

/// [`heads_body`] in `f32`, splitting or merging.
#[inline(always)]
fn heads_either(split: bool, n: usize, h: usize, width: usize, src: &[f32], dst: &mut [f32]) {
    if split {
        heads_body::<f32, true>(n, h, width, src, dst)
    } else {
        heads_body::<f32, false>(n, h, width, src, dst)
    }
}

/// The `f32` path of [`split_heads`] / [`merge_heads`], in the variant [`crate::arch`] chooses.
#[cfg_attr(not(feature = "alloc"), allow(dead_code))] // used by the model (alloc)
fn heads_f32<const SPLIT: bool>(n: usize, h: usize, width: usize, src: &[f32], dst: &mut [f32]) {
    heads_isa(crate::arch::isa(), SPLIT, n, h, width, src, dst)
}

fn packed(what: &'static str, n_heads: usize, width: usize) -> Result<usize> {
    n_heads.checked_mul(width).ok_or(Error::DimensionOverflow { what })
}

/// `n_heads` softmax heads of one shape over packed `q, k` (`n x (h d_k)`) and `v` (`n x (h d_v)`),
/// sharing the optional additive `n x n` mask; output `n x (h d_v)`, `lse` `h x n`. The number of
/// positions `n` is given per call.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MultiHeadSoftmax<T> {
    /// Number of heads `h`.
    pub n_heads: usize,
    /// The shape and options every head shares.
    pub head: SoftmaxAttention<T>,
}

impl<T: Scalar> MultiHeadSoftmax<T> {
    fn gathered_req(&self, n_tokens: usize) -> Req {
        let h = &self.head;
        Req::new(h.d_k).and(Req::new(h.d_v)).times(2).times(n_tokens)
    }

    /// Workspace elements of [`forward`](Self::forward) for `n = n_tokens`: `n (2 d_k + 2 d_v)`
    /// plus one head's. With the `parallel` feature the heads run as separate tasks, each with its
    /// own scratch: `n_heads` times that.
    pub fn forward_workspace_len(&self, n_tokens: usize) -> usize {
        self.tasks().saturating_mul(self.forward_head_len(n_tokens))
    }

    /// Heads whose scratch is live at once: all of them with `parallel`, else one.
    fn tasks(&self) -> usize {
        if crate::parallel::ENABLED {
            self.n_heads.max(1)
        } else {
            1
        }
    }

    fn forward_head_len(&self, n_tokens: usize) -> usize {
        let head = Req::new(self.head.forward_workspace_len(n_tokens));
        self.gathered_req(n_tokens).and(head).saturating()
    }

    fn backward_head_len(&self, n_tokens: usize) -> usize {
        let h = &self.head;
        let grads = Req::array(h.d_k, 2).and(Req::array(h.d_v, 3)).times(n_tokens);
        let head = Req::new(h.backward_workspace_len(n_tokens));
        Req::all_of([self.gathered_req(n_tokens), grads, head]).saturating()
    }

    /// Workspace elements of [`backward`](Self::backward) for `n = n_tokens`: `n (4 d_k + 5 d_v)`
    /// plus one head's. With `parallel`, `n_heads` times that (one task per head).
    pub fn backward_workspace_len(&self, n_tokens: usize) -> usize {
        self.tasks().saturating_mul(self.backward_head_len(n_tokens))
    }

    fn check(&self, n_tokens: usize, q: &[T], k: &[T], v: &[T]) -> Result<(usize, usize)> {
        let h = &self.head;
        let qk_cols = packed("q", self.n_heads, h.d_k)?;
        let v_cols = packed("v", self.n_heads, h.d_v)?;
        check_matrix("q", q.len(), n_tokens, qk_cols)?;
        check_matrix("k", k.len(), n_tokens, qk_cols)?;
        check_matrix("v", v.len(), n_tokens, v_cols)?;
        Ok((qk_cols, v_cols))
    }

    /// Every head's [`SoftmaxAttention::forward`], on its columns of the packed inputs.
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
        let (qk_cols, v_cols) = self.check(n_tokens, q, k, v)?;
        let h = &self.head;
        let n = n_tokens;
        check_matrix("out", out.len(), n, v_cols)?;
        check_matrix("lse", lse.len(), self.n_heads, n)?;
        check_workspace(workspace.len(), self.forward_workspace_len(n))?;
        if n == 0 {
            return Ok(()); // nothing to compute, whatever the number of heads
        }
        // One head: gathered into its scratch, its output left at `out_h` there.
        let head = |t: usize, lse_t: &mut [T], ws: &mut [T]| {
            let (q_h, rest) = ws.split_at_mut(n * h.d_k);
            let (k_h, rest) = rest.split_at_mut(n * h.d_k);
            let (v_h, rest) = rest.split_at_mut(n * h.d_v);
            let (out_h, rest) = rest.split_at_mut(n * h.d_v);
            gather(n, qk_cols, t * h.d_k, h.d_k, q, q_h);
            gather(n, qk_cols, t * h.d_k, h.d_k, k, k_h);
            gather(n, v_cols, t * h.d_v, h.d_v, v, v_h);
            h.forward(n, q_h, k_h, v_h, mask, out_h, lse_t, rest)
        };
        let out_at = 2 * n * h.d_k + n * h.d_v;
        if crate::parallel::ENABLED {
            // One task per head, each with its own scratch; outputs scattered afterwards.
            let task = self.forward_head_len(n);
            let ws = &mut workspace[..self.n_heads * task];
            crate::parallel::try_chunks2(&mut lse[..self.n_heads * n], n, ws, task, head)?;
            for (t, ws) in ws.chunks_exact(task).enumerate() {
                scatter(n, v_cols, t * h.d_v, h.d_v, &ws[out_at..out_at + n * h.d_v], out);
            }
            return Ok(());
        }
        for t in 0..self.n_heads {
            head(t, &mut lse[t * n..(t + 1) * n], &mut *workspace)?;
            scatter(n, v_cols, t * h.d_v, h.d_v, &workspace[out_at..out_at + n * h.d_v], out);
        }
        Ok(())
    }

    /// Every head's [`SoftmaxAttention::backward`]; gradients packed like their inputs.
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
        let (qk_cols, v_cols) = self.check(n_tokens, q, k, v)?;
        let h = &self.head;
        let n = n_tokens;
        check_matrix("out", out.len(), n, v_cols)?;
        check_matrix("lse", lse.len(), self.n_heads, n)?;
        check_matrix("d_out", d_out.len(), n, v_cols)?;
        check_matrix("d_q", grads.d_q.len(), n, qk_cols)?;
        check_matrix("d_k", grads.d_k.len(), n, qk_cols)?;
        check_matrix("d_v", grads.d_v.len(), n, v_cols)?;
        check_workspace(workspace.len(), self.backward_workspace_len(n))?;
        if n == 0 {
            return Ok(());
        }
        // One head: gathered into its scratch, its gradients left at `grads_at` there
        // (`dQ_t, dK_t, dV_t`).
        let head = |t: usize, ws: &mut [T]| {
            let (q_h, rest) = ws.split_at_mut(n * h.d_k);
            let (k_h, rest) = rest.split_at_mut(n * h.d_k);
            let (v_h, rest) = rest.split_at_mut(n * h.d_v);
            let (out_h, rest) = rest.split_at_mut(n * h.d_v);
            let (d_out_h, rest) = rest.split_at_mut(n * h.d_v);
            let (d_q_h, rest) = rest.split_at_mut(n * h.d_k);
            let (d_k_h, rest) = rest.split_at_mut(n * h.d_k);
            let (d_v_h, rest) = rest.split_at_mut(n * h.d_v);
            gather(n, qk_cols, t * h.d_k, h.d_k, q, q_h);
            gather(n, qk_cols, t * h.d_k, h.d_k, k, k_h);
            gather(n, v_cols, t * h.d_v, h.d_v, v, v_h);
            gather(n, v_cols, t * h.d_v, h.d_v, out, out_h);
            gather(n, v_cols, t * h.d_v, h.d_v, d_out, d_out_h);
            let head_grads = SoftmaxGrads { d_q: d_q_h, d_k: d_k_h, d_v: d_v_h };
            h.backward(n, q_h, k_h, v_h, mask, out_h, &lse[t * n..(t + 1) * n], d_out_h, head_grads, rest)
        };
        let grads_at = 2 * n * h.d_k + 3 * n * h.d_v;
        let scatter_head = |t: usize, ws: &[T], grads: &mut SoftmaxGrads<'_, T>| {
            let (d_q_h, rest) = ws[grads_at..].split_at(n * h.d_k);
            let (d_k_h, rest) = rest.split_at(n * h.d_k);
            scatter(n, qk_cols, t * h.d_k, h.d_k, d_q_h, grads.d_q);
            scatter(n, qk_cols, t * h.d_k, h.d_k, d_k_h, grads.d_k);
            scatter(n, v_cols, t * h.d_v, h.d_v, &rest[..n * h.d_v], grads.d_v);
        };
        let mut grads = grads;
        if crate::parallel::ENABLED {
            // One task per head, each with its own scratch; gradients scattered afterwards.
            let task = self.backward_head_len(n);
            let ws = &mut workspace[..self.n_heads * task];
            crate::parallel::try_chunks(ws, task, |t, ws| head(t, ws))?;
            for (t, ws) in ws.chunks_exact(task).enumerate() {
                scatter_head(t, ws, &mut grads);
            }
            return Ok(());
        }
        for t in 0..self.n_heads {
            head(t, &mut *workspace)?;
            scatter_head(t, &*workspace, &mut grads);
        }
        Ok(())
    }
}

/// `n_heads` [`AttentionHead`]s of one shape (standard or S-D) reading the same tokens `x`
/// (`n x d_model`); parameters packed head after head (`h * param_len`), output `n x (h d_v)`
/// (heads side by side), `lse` `h x n`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MultiHead<T> {
    /// Number of heads `h`.
    pub n_heads: usize,
    /// The shape and options every head shares.
    pub head: AttentionHead<T>,
}

impl<T: Scalar> MultiHead<T> {
    /// Total parameters: `h * head.param_len()` (`usize::MAX` if that overflows).
    pub fn param_len(&self) -> usize {
        self.n_heads.saturating_mul(self.head.param_len())
    }

    /// Workspace elements of [`forward`](Self::forward) for `n_tokens`: `n d_v` plus one head's.
    pub fn forward_workspace_len(&self, n_tokens: usize) -> usize {
        Req::array(n_tokens, self.head.d_v)
            .and(Req::new(self.head.forward_workspace_len(n_tokens)))
            .saturating()
    }

    /// Workspace elements of [`backward`](Self::backward): `n (2 d_v + d_model)` plus one head's.
    pub fn backward_workspace_len(&self, n_tokens: usize) -> usize {
        let own = Req::array(self.head.d_v, 2).and(Req::new(self.head.d_model)).times(n_tokens);
        own.and(Req::new(self.head.backward_workspace_len(n_tokens))).saturating()
    }

    fn check(&self, params: &[T]) -> Result<usize> {
        let p = self.head.param_len();
        check_matrix("params", params.len(), self.n_heads, p)?;
        packed("out", self.n_heads, self.head.d_v)
    }

    /// Every head's [`AttentionHead::forward`] on `x`, outputs side by side.
    pub fn forward(
        &self,
        n_tokens: usize,
        x: &[T],
        params: &[T],
        out: &mut [T],
        lse: &mut [T],
        workspace: &mut [T],
    ) -> Result<()> {
        let out_cols = self.check(params)?;
        let (n, d_v, p) = (n_tokens, self.head.d_v, self.head.param_len());
        check_matrix("x", x.len(), n, self.head.d_model)?;
        check_matrix("out", out.len(), n, out_cols)?;
        check_matrix("lse", lse.len(), self.n_heads, n)?;
        check_workspace(workspace.len(), self.forward_workspace_len(n))?;
        if n == 0 {
            return Ok(());
        }
        let ([out_h], rest) = carve(workspace, [n * d_v])?;
        for t in 0..self.n_heads {
            let head_params = &params[t * p..(t + 1) * p];
            self.head.forward(n, x, head_params, out_h, &mut lse[t * n..(t + 1) * n], rest)?;
            scatter(n, out_cols, t * d_v, d_v, out_h, out);
        }
        Ok(())
    }

    /// Every head's [`AttentionHead::backward`]: `d_x` is the sum over heads, `d_params` packed
    /// like `params`.
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
        let out_cols = self.check(params)?;
        let (n, d_v, p, d) = (n_tokens, self.head.d_v, self.head.param_len(), self.head.d_model);
        check_matrix("x", x.len(), n, d)?;
        check_matrix("out", out.len(), n, out_cols)?;
        check_matrix("lse", lse.len(), self.n_heads, n)?;
        check_matrix("d_out", d_out.len(), n, out_cols)?;
        check_matrix("d_x", grads.d_x.len(), n, d)?;
        check_len("d_params", grads.d_params.len(), params.len())?;
        check_workspace(workspace.len(), self.backward_workspace_len(n))?;
        grads.d_x.fill(T::zero());
        if n == 0 {
            grads.d_params.fill(T::zero()); // no tokens: every gradient is zero
            return Ok(());
        }
        let ([out_h, d_out_h, d_x_h], rest) = carve(workspace, [n * d_v, n * d_v, n * d])?;
        for t in 0..self.n_heads {
            gather(n, out_cols, t * d_v, d_v, out, out_h);
            gather(n, out_cols, t * d_v, d_v, d_out, d_out_h);
            let head_grads =
                HeadGrads { d_x: &mut *d_x_h, d_params: &mut grads.d_params[t * p..(t + 1) * p] };
            let head_params = &params[t * p..(t + 1) * p];
            self.head.backward(
                n,
                x,
                head_params,
                out_h,
                &lse[t * n..(t + 1) * n],
                d_out_h,
                head_grads,
                rest,
            )?;
            crate::linalg::kernel::axpy(T::one(), d_x_h, grads.d_x);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::boxed::Box;
    use std::vec;
    use std::vec::Vec;

    /// [`split_heads`] and [`merge_heads`] against [`gather`] / [`scatter`] head by head, f32
    /// (every variant the CPU has, whatever the dispatch chooses) and f64, widths that are and are not multiples
    /// of 8; a round trip is the identity.
    #[test]
    fn split_and_merge_heads_match_gather_and_scatter() {
        for (n, h, width) in [(0usize, 2usize, 8usize), (1, 1, 1), (5, 3, 16), (7, 4, 5), (3, 2, 24)] {
            let src: Vec<f32> = (0..n * h * width).map(|i| i as f32).collect();
            let mut expect = vec![0.0f32; n * h * width];
            for t in 0..h {
                gather(n, h * width, t * width, width, &src, &mut expect[t * n * width..(t + 1) * n * width]);
            }
            type Variant = Box<dyn Fn(usize, usize, usize, &[f32], &mut [f32])>;
            let mut variants: Vec<(&str, Variant, Variant)> =
                vec![("dispatched", Box::new(split_heads::<f32>), Box::new(merge_heads::<f32>))];
            for isa in crate::arch::available() {
                variants.push((
                    isa.name(),
                    Box::new(move |n: usize, h: usize, w: usize, s: &[f32], d: &mut [f32]| {
                        heads_isa(isa, true, n, h, w, s, d)
                    }),
                    Box::new(move |n: usize, h: usize, w: usize, s: &[f32], d: &mut [f32]| {
                        heads_isa(isa, false, n, h, w, s, d)
                    }),
                ));
            }
            for (name, split, merge) in variants {
                let mut blocks = vec![-1.0f32; n * h * width];
                split(n, h, width, &src, &mut blocks);
                assert_eq!(blocks, expect, "{name} split {n} {h} {width}");
                let mut back = vec![-1.0f32; n * h * width];
                merge(n, h, width, &blocks, &mut back);
                assert_eq!(back, src, "{name} merge {n} {h} {width}");
            }
            let src64: Vec<f64> = src.iter().map(|&v| v as f64).collect();
            let mut blocks64 = vec![0.0f64; n * h * width];
            split_heads(n, h, width, &src64, &mut blocks64);
            assert!(blocks64.iter().zip(&expect).all(|(&a, &b)| a == b as f64));
        }
    }
}
