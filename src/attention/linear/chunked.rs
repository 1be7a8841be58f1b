//! The chunked kernels behind [`LinearAttention`](super::LinearAttention) (`docs/math.md` section 6).
//!
//! A sequence is cut into chunks of `c` tokens. For chunk `[t0, t0 + c)`, with `A = phi(Q_chunk)`,
//! `B = phi(K_chunk)` (`c x d_k`) and the state `S`, `z` of all earlier tokens:
//!
//! ```text
//! num = A S + tril(A B^T) V_chunk,   den = A z + tril(A B^T) 1 + eps,   O_chunk = num / den
//! S  += B^T V_chunk,                 z  += B^T 1
//! ```
//!
//! The backward pass runs two sweeps. Forward: it recomputes `num`, `den`, forms
//! `g_i = dO_i / den_i`, `h_i = -(g_i . num_i) / den_i` and `dA_i = S_i g_i + z_i h_i` (prefix
//! state plus the masked block `tril(G V^T + h 1^T) B`), and parks `g` in `d_v` and `h` in the first
//! column of `d_k` (the outputs are `n`-sized anyway, so the extra memory stays independent of `n`).
//! Reverse: with the suffix sums `R = sum_{i >= next chunk} A_i g_i^T`, `r = sum h_i A_i`,
//! `dB_j = R v_j + r + sum_{i >= j in chunk} (g_i . v_j + h_i) A_i` and
//! `dV_j = R^T B_j + sum_{i >= j in chunk} (A_i . B_j) g_i`. The non-causal form needs no masks:
//! `R`, `r` are full sums, computed in a middle sweep.
//!
//! Products of whole blocks use the crate's gemm; the masked triangles are axpy loops that only
//! read entries `j <= i`, so a NaN in a later token never reaches an earlier row.

use core::ops::Range;

use super::{phi, phi_derivative_from};
use crate::attention::Causality;
use crate::linalg::kernel::{self, Transpose};
use crate::workspace::{carve, Req};
use crate::{Result, Scalar};

/// Sizes of one call: tokens, per-head dimensions, heads per row, chunk length (`1..=n` or 1).
pub(super) struct Geometry {
    pub n_tokens: usize,
    pub d_k: usize,
    pub d_v: usize,
    pub n_heads: usize,
    pub chunk: usize,
}

/// The inputs of the backward pass.
pub(super) struct Inputs<'a, T> {
    pub q: &'a [T],
    pub k: &'a [T],
    pub v: &'a [T],
    pub d_out: &'a [T],
}

/// The outputs of the backward pass.
pub(super) struct Grads<'a, T> {
    pub d_q: &'a mut [T],
    pub d_k: &'a mut [T],
    pub d_v: &'a mut [T],
}

/// Where one head's row `i` lives in a packed `n x (n_heads width)` matrix.
#[derive(Clone, Copy)]
struct Layout {
    stride: usize,
    offset: usize,
    width: usize,
}

impl Layout {
    fn of_head(n_heads: usize, width: usize, head: usize) -> Self {
        Layout { stride: n_heads * width, offset: head * width, width }
    }
    #[inline(always)]
    fn row(&self, i: usize) -> Range<usize> {
        let start = i * self.stride + self.offset;
        start..start + self.width
    }
}

/// The forward's buffers of one head, in order: the state `S` (`d_k x d_v`) and `z` (`d_k`), then
/// per chunk `phi(Q)`, `phi(K)` (`chunk x d_k` each), `V`, the numerators (`chunk x d_v` each), the
/// denominators (`chunk`) and the weights (`chunk x chunk`).
fn forward_lens(d_k: usize, d_v: usize, chunk: usize) -> [usize; 8] {
    [d_k * d_v, d_k, chunk * d_k, chunk * d_k, chunk * d_v, chunk * d_v, chunk, chunk * chunk]
}

pub(super) fn forward_workspace_len(d_k: usize, d_v: usize, chunk: usize) -> usize {
    let state = Req::array(d_k, d_v).and(Req::new(d_k));
    let per_chunk = Req::all_of([
        Req::array(chunk, d_k).times(2),
        Req::array(chunk, d_v).times(2),
        Req::new(chunk),
        Req::array(chunk, chunk),
    ]);
    state.and(per_chunk).saturating()
}

/// The backward's buffers of one head, in order: `S`, `z` and their suffix sums, then per chunk
/// `phi(Q)`, `phi(K)`, the gradient through `phi` (`chunk x d_k` each), `V`, `dO`, the numerators
/// (`chunk x d_v` each), the denominators and their gradients (`chunk` each), the weights and
/// their gradients (`chunk x chunk` each).
fn backward_lens(d_k: usize, d_v: usize, chunk: usize) -> [usize; 14] {
    let (ck, cv) = (chunk * d_k, chunk * d_v);
    [d_k * d_v, d_k, d_k * d_v, d_k, ck, ck, ck, cv, cv, cv, chunk, chunk, chunk * chunk, chunk * chunk]
}

pub(super) fn backward_workspace_len(d_k: usize, d_v: usize, chunk: usize) -> usize {
    let state = Req::array(d_k, d_v).and(Req::new(d_k)).times(2);
    let per_chunk = Req::all_of([
        Req::array(chunk, d_k).times(3),
        Req::array(chunk, d_v).times(3),
        Req::array(chunk, 2),
        Req::array(chunk, chunk).times(2),
    ]);
    state.and(per_chunk).saturating()
}

/// `dst` row `r` = `phi` of row `t0 + r` of `src`, for `c` rows.
fn load_phi<T: Scalar>(src: &[T], layout: Layout, t0: usize, c: usize, dst: &mut [T]) {
    let w = layout.width;
    for r in 0..c {
        for (d, &x) in dst[r * w..(r + 1) * w].iter_mut().zip(&src[layout.row(t0 + r)]) {
            *d = phi(x);
        }
    }
}

/// `dst` row `r` = row `t0 + r` of `src`, for `c` rows.
fn load<T: Scalar>(src: &[T], layout: Layout, t0: usize, c: usize, dst: &mut [T]) {
    let w = layout.width;
    for r in 0..c {
        dst[r * w..(r + 1) * w].copy_from_slice(&src[layout.row(t0 + r)]);
    }
}

/// Row `t0 + r` of `dst` = row `r` of `src`, for `c` rows.
fn store<T: Scalar>(src: &[T], layout: Layout, t0: usize, c: usize, dst: &mut [T]) {
    let w = layout.width;
    for r in 0..c {
        dst[layout.row(t0 + r)].copy_from_slice(&src[r * w..(r + 1) * w]);
    }
}

/// `num = A S` (`c x d_v`), `den_r = A_r . z`.
#[allow(clippy::too_many_arguments)]
fn read_state<T: Scalar>(
    c: usize,
    d_k: usize,
    d_v: usize,
    a: &[T],
    s: &[T],
    z: &[T],
    num: &mut [T],
    den: &mut [T],
) {
    kernel::gemm(c, d_k, d_v, T::one(), a, Transpose::No, s, Transpose::No, T::zero(), num);
    for r in 0..c {
        den[r] = kernel::dot(&a[r * d_k..(r + 1) * d_k], z);
    }
}

/// `S += B^T V`, `z += B^T 1` over `c` rows.
fn absorb<T: Scalar>(c: usize, d_k: usize, d_v: usize, b: &[T], values: &[T], s: &mut [T], z: &mut [T]) {
    kernel::gemm(d_k, c, d_v, T::one(), b, Transpose::Yes, values, Transpose::No, T::one(), s);
    for r in 0..c {
        kernel::axpy(T::one(), &b[r * d_k..(r + 1) * d_k], z);
    }
}

/// The causal diagonal block: `weights = A B^T` (`c x c`), then for `j <= r`:
/// `num_r += weights_rj v_j`, `den_r += weights_rj`.
#[allow(clippy::too_many_arguments)]
fn diagonal_block<T: Scalar>(
    c: usize,
    d_k: usize,
    d_v: usize,
    a: &[T],
    b: &[T],
    values: &[T],
    weights: &mut [T],
    num: &mut [T],
    den: &mut [T],
) {
    kernel::gemm(c, d_k, c, T::one(), a, Transpose::No, b, Transpose::Yes, T::zero(), weights);
    for r in 0..c {
        let num_r = &mut num[r * d_v..(r + 1) * d_v];
        let mut den_r = den[r];
        for j in 0..=r {
            let w = weights[r * c + j];
            den_r += w;
            kernel::axpy(w, &values[j * d_v..(j + 1) * d_v], num_r);
        }
        den[r] = den_r;
    }
}

/// One head's forward pass; `workspace` holds at least [`forward_workspace_len`] elements.
#[allow(clippy::too_many_arguments)]
pub(super) fn forward_head<T: Scalar>(
    geometry: &Geometry,
    head: usize,
    causality: Causality,
    eps: T,
    q: &[T],
    k: &[T],
    v: &[T],
    out: &mut [T],
    workspace: &mut [T],
) -> Result<()> {
    let Geometry { n_tokens: n, d_k, d_v, n_heads, chunk } = *geometry;
    let (lk, lv) = (Layout::of_head(n_heads, d_k, head), Layout::of_head(n_heads, d_v, head));
    let ([s, z, fq, fk, vc, num, den, weights], _) = carve(workspace, forward_lens(d_k, d_v, chunk))?;
    s.fill(T::zero());
    z.fill(T::zero());
    let write_out = |out: &mut [T], t0: usize, c: usize, num: &[T], den: &[T]| {
        for r in 0..c {
            let denominator = den[r] + eps;
            for (o, &x) in out[lv.row(t0 + r)].iter_mut().zip(&num[r * d_v..(r + 1) * d_v]) {
                *o = x / denominator;
            }
        }
    };
    match causality {
        Causality::Causal => {
            for t0 in (0..n).step_by(chunk) {
                let c = chunk.min(n - t0);
                load_phi(q, lk, t0, c, fq);
                load_phi(k, lk, t0, c, fk);
                load(v, lv, t0, c, vc);
                read_state(c, d_k, d_v, fq, s, z, num, den);
                diagonal_block(c, d_k, d_v, fq, fk, vc, weights, num, den);
                write_out(out, t0, c, num, den);
                absorb(c, d_k, d_v, fk, vc, s, z);
            }
        }
        Causality::Bidirectional => {
            for t0 in (0..n).step_by(chunk) {
                let c = chunk.min(n - t0);
                load_phi(k, lk, t0, c, fk);
                load(v, lv, t0, c, vc);
                absorb(c, d_k, d_v, fk, vc, s, z);
            }
            for t0 in (0..n).step_by(chunk) {
                let c = chunk.min(n - t0);
                load_phi(q, lk, t0, c, fq);
                read_state(c, d_k, d_v, fq, s, z, num, den);
                write_out(out, t0, c, num, den);
            }
        }
    }
    Ok(())
}

/// `den_r += eps`, `g_r = dO_r / den_r` (in place in `g`), `h_r = -(g_r . num_r) / den_r`.
fn normalize_gradient<T: Scalar>(
    c: usize,
    d_v: usize,
    eps: T,
    num: &[T],
    den: &mut [T],
    g: &mut [T],
    h: &mut [T],
) {
    for r in 0..c {
        let denominator = den[r] + eps;
        den[r] = denominator;
        let g_r = &mut g[r * d_v..(r + 1) * d_v];
        for x in g_r.iter_mut() {
            *x /= denominator;
        }
        h[r] = -kernel::dot(g_r, &num[r * d_v..(r + 1) * d_v]) / denominator;
    }
}

/// `d_x` row `t0 + r` = `grad_r * phi'(x_r)` for `c` rows (`fx` holds `phi(x)`).
fn write_through_phi<T: Scalar>(
    x: &[T],
    fx: &[T],
    grad: &[T],
    layout: Layout,
    t0: usize,
    c: usize,
    d_x: &mut [T],
) {
    let w = layout.width;
    for r in 0..c {
        let rows = layout.row(t0 + r);
        let (x_r, fx_r, grad_r) = (&x[rows.clone()], &fx[r * w..(r + 1) * w], &grad[r * w..(r + 1) * w]);
        for (((out, &x), &f), &gr) in d_x[rows].iter_mut().zip(x_r).zip(fx_r).zip(grad_r) {
            *out = gr * phi_derivative_from(x, f);
        }
    }
}

/// One head's backward pass; `workspace` holds at least [`backward_workspace_len`] elements.
pub(super) fn backward_head<T: Scalar>(
    geometry: &Geometry,
    head: usize,
    causality: Causality,
    eps: T,
    x: &Inputs<'_, T>,
    grads: &mut Grads<'_, T>,
    workspace: &mut [T],
) -> Result<()> {
    let Geometry { n_tokens: n, d_k, d_v, n_heads, chunk } = *geometry;
    let (lk, lv) = (Layout::of_head(n_heads, d_k, head), Layout::of_head(n_heads, d_v, head));
    debug_assert!(d_k > 0 && d_v > 0, "the caller handles empty feature dimensions");
    let ([s, z, suffix_s, suffix_z, fq, fk, grad_ab, vc, gc, num, den, h, weights, mixed], _) =
        carve(workspace, backward_lens(d_k, d_v, chunk))?;
    s.fill(T::zero());
    z.fill(T::zero());
    suffix_s.fill(T::zero());
    suffix_z.fill(T::zero());
    let chunk_starts = (0..n).step_by(chunk);

    match causality {
        Causality::Causal => {
            // Forward sweep: dQ, and g, h parked in d_v and column 0 of d_k.
            for t0 in chunk_starts.clone() {
                let c = chunk.min(n - t0);
                load_phi(x.q, lk, t0, c, fq);
                load_phi(x.k, lk, t0, c, fk);
                load(x.v, lv, t0, c, vc);
                load(x.d_out, lv, t0, c, gc);
                read_state(c, d_k, d_v, fq, s, z, num, den);
                diagonal_block(c, d_k, d_v, fq, fk, vc, weights, num, den);
                normalize_gradient(c, d_v, eps, num, den, gc, h);
                // dA = G S^T + h z^T + tril(G V^T + h 1^T) B.
                kernel::gemm(c, d_v, d_k, T::one(), gc, Transpose::No, s, Transpose::Yes, T::zero(), grad_ab);
                kernel::gemm(c, d_v, c, T::one(), gc, Transpose::No, vc, Transpose::Yes, T::zero(), mixed);
                for r in 0..c {
                    let grad_r = &mut grad_ab[r * d_k..(r + 1) * d_k];
                    kernel::axpy(h[r], z, grad_r);
                    for j in 0..=r {
                        kernel::axpy(mixed[r * c + j] + h[r], &fk[j * d_k..(j + 1) * d_k], grad_r);
                    }
                }
                write_through_phi(x.q, fq, grad_ab, lk, t0, c, grads.d_q);
                for r in 0..c {
                    grads.d_v[lv.row(t0 + r)].copy_from_slice(&gc[r * d_v..(r + 1) * d_v]);
                    grads.d_k[lk.row(t0 + r).start] = h[r];
                }
                absorb(c, d_k, d_v, fk, vc, s, z);
            }
            // Reverse sweep: dK, dV from the suffix sums R = sum A_i g_i^T, r = sum h_i A_i.
            let starts: Range<usize> = 0..n.div_ceil(chunk);
            for t0 in starts.rev().map(|index| index * chunk) {
                let c = chunk.min(n - t0);
                load_phi(x.q, lk, t0, c, fq);
                load_phi(x.k, lk, t0, c, fk);
                load(x.v, lv, t0, c, vc);
                load(grads.d_v, lv, t0, c, gc);
                for (r, h_r) in h[..c].iter_mut().enumerate() {
                    *h_r = grads.d_k[lk.row(t0 + r).start];
                }
                // dB = V R^T + 1 r^T + (tril(G V^T + h 1^T))^T A.
                kernel::gemm(
                    c,
                    d_v,
                    d_k,
                    T::one(),
                    vc,
                    Transpose::No,
                    suffix_s,
                    Transpose::Yes,
                    T::zero(),
                    grad_ab,
                );
                kernel::gemm(c, d_v, c, T::one(), gc, Transpose::No, vc, Transpose::Yes, T::zero(), mixed);
                for j in 0..c {
                    let grad_j = &mut grad_ab[j * d_k..(j + 1) * d_k];
                    kernel::axpy(T::one(), suffix_z, grad_j);
                    for i in j..c {
                        kernel::axpy(mixed[i * c + j] + h[i], &fq[i * d_k..(i + 1) * d_k], grad_j);
                    }
                }
                write_through_phi(x.k, fk, grad_ab, lk, t0, c, grads.d_k);
                // dV = B R + (tril(A B^T))^T G.
                kernel::gemm(
                    c,
                    d_k,
                    d_v,
                    T::one(),
                    fk,
                    Transpose::No,
                    suffix_s,
                    Transpose::No,
                    T::zero(),
                    num,
                );
                kernel::gemm(c, d_k, c, T::one(), fq, Transpose::No, fk, Transpose::Yes, T::zero(), weights);
                for j in 0..c {
                    let grad_j = &mut num[j * d_v..(j + 1) * d_v];
                    for i in j..c {
                        kernel::axpy(weights[i * c + j], &gc[i * d_v..(i + 1) * d_v], grad_j);
                    }
                }
                store(num, lv, t0, c, grads.d_v);
                // R += A^T G, r += A^T h.
                kernel::gemm(
                    d_k,
                    c,
                    d_v,
                    T::one(),
                    fq,
                    Transpose::Yes,
                    gc,
                    Transpose::No,
                    T::one(),
                    suffix_s,
                );
                for i in 0..c {
                    kernel::axpy(h[i], &fq[i * d_k..(i + 1) * d_k], suffix_z);
                }
            }
        }
        Causality::Bidirectional => {
            for t0 in chunk_starts.clone() {
                let c = chunk.min(n - t0);
                load_phi(x.k, lk, t0, c, fk);
                load(x.v, lv, t0, c, vc);
                absorb(c, d_k, d_v, fk, vc, s, z);
            }
            for t0 in chunk_starts.clone() {
                let c = chunk.min(n - t0);
                load_phi(x.q, lk, t0, c, fq);
                load(x.d_out, lv, t0, c, gc);
                read_state(c, d_k, d_v, fq, s, z, num, den);
                normalize_gradient(c, d_v, eps, num, den, gc, h);
                kernel::gemm(c, d_v, d_k, T::one(), gc, Transpose::No, s, Transpose::Yes, T::zero(), grad_ab);
                for r in 0..c {
                    kernel::axpy(h[r], z, &mut grad_ab[r * d_k..(r + 1) * d_k]);
                }
                write_through_phi(x.q, fq, grad_ab, lk, t0, c, grads.d_q);
                kernel::gemm(
                    d_k,
                    c,
                    d_v,
                    T::one(),
                    fq,
                    Transpose::Yes,
                    gc,
                    Transpose::No,
                    T::one(),
                    suffix_s,
                );
                for r in 0..c {
                    kernel::axpy(h[r], &fq[r * d_k..(r + 1) * d_k], suffix_z);
                }
            }
            for t0 in chunk_starts {
                let c = chunk.min(n - t0);
                load_phi(x.k, lk, t0, c, fk);
                load(x.v, lv, t0, c, vc);
                kernel::gemm(
                    c,
                    d_v,
                    d_k,
                    T::one(),
                    vc,
                    Transpose::No,
                    suffix_s,
                    Transpose::Yes,
                    T::zero(),
                    grad_ab,
                );
                for j in 0..c {
                    kernel::axpy(T::one(), suffix_z, &mut grad_ab[j * d_k..(j + 1) * d_k]);
                }
                write_through_phi(x.k, fk, grad_ab, lk, t0, c, grads.d_k);
                kernel::gemm(
                    c,
                    d_k,
                    d_v,
                    T::one(),
                    fk,
                    Transpose::No,
                    suffix_s,
                    Transpose::No,
                    T::zero(),
                    num,
                );
                store(num, lv, t0, c, grads.d_v);
            }
        }
    }
    Ok(())
}
