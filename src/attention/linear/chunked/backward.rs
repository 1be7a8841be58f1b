//! The chunked backward pass of one head: a forward sweep for `dQ`, a reverse sweep for `dK`
//! and `dV` over the suffix sums (causal); three sweeps without masks (non-causal).

use super::elementwise::{
    all_finite, axpy, dot, normalize_gradient, phi_rows, sum, transpose, write_through_phi,
};
use super::masked::{absorb, lower_product, lower_scores, product, upper_product, upper_scores};
use super::{backward_lens, Geometry, Grads, Inputs, Layout, Pass, Tiles};
use crate::attention::Causality;
use crate::workspace::carve;
use crate::{Result, Scalar};

/// One head's backward pass; `workspace` holds at least [`super::backward_workspace_len`] elements.
#[inline(always)]
pub(super) fn backward_body<T: Scalar, const FUSED: bool>(
    tiles: Tiles,
    pass: &Pass<'_>,
    eps: T,
    x: &Inputs<'_, T>,
    grads: &mut Grads<'_, T>,
    workspace: &mut [T],
) -> Result<()> {
    let Geometry { n_tokens: n, d_k, d_v, n_heads, chunk } = *pass.geometry;
    let (lk, lv) = (Layout::of_head(n_heads, d_k, pass.head), Layout::of_head(n_heads, d_v, pass.head));
    let ldv = lv.stride;
    debug_assert!(d_k > 0 && d_v > 0, "the caller handles empty feature dimensions");
    let ([s, suffix, transposed, z, suffix_z, fq, fk, ft, grad_ab, vt, gc, num, p, mixed, den, h], _) =
        carve(workspace, backward_lens(d_k, d_v, chunk))?;
    s.fill(T::zero());
    z.fill(T::zero());
    suffix.fill(T::zero());
    suffix_z.fill(T::zero());
    let chunk_starts = (0..n).step_by(chunk);

    match pass.causality {
        Causality::Causal => {
            // Forward sweep: dQ; with two or more value features also the chunk's own part of dB
            // (into d_k), its den and h parked in d_v; otherwise g, h parked in d_v and column 0
            // of d_k.
            let intra_first = d_v >= 2;
            for t0 in chunk_starts.clone() {
                let c = chunk.min(n - t0);
                phi_rows::<T, FUSED>(x.q, lk, t0, c, fq);
                phi_rows::<T, FUSED>(x.k, lk, t0, c, fk);
                transpose::<T, FUSED>(c, d_k, fk, d_k, ft, c);
                let (vb, ob) = (&x.v[lv.start(t0)..], &x.d_out[lv.start(t0)..]);
                // den = A z + P 1 + eps with P = tril(A B^T).
                lower_scores(tiles, c, d_k, fq, d_k, ft, c, p);
                for r in 0..c {
                    den[r] = dot(&fq[r * d_k..(r + 1) * d_k], z) + sum(&p[r * c..r * c + r + 1]) + eps;
                }
                // Y = dO S^T (into dA) and M = tril(dO V^T) (into G), unnormalized; they give
                // dO_r . num_r = A_r . Y_r + sum_j P_rj M_rj without forming num = A S + P V.
                transpose::<T, FUSED>(d_k, d_v, s, d_v, transposed, d_k);
                product(c, if t0 == 0 { 0 } else { d_v }, d_k, ob, ldv, transposed, d_k, grad_ab, d_k, false);
                transpose::<T, FUSED>(c, d_v, vb, ldv, vt, c);
                lower_scores(tiles, c, d_v, ob, ldv, vt, c, mixed);
                // g = dO / den, h = -(g . num) / den; dA = g S^T + h z^T + G B with
                // G = tril(g V^T + h 1^T) = tril(M / den + h 1^T).
                for r in 0..c {
                    let (grad_r, mixed_r) =
                        (&mut grad_ab[r * d_k..(r + 1) * d_k], &mut mixed[r * c..r * c + r + 1]);
                    let dot_num =
                        dot(&fq[r * d_k..(r + 1) * d_k], grad_r) + dot(&p[r * c..r * c + r + 1], mixed_r);
                    let denominator = den[r];
                    let h_r = -(dot_num / denominator) / denominator;
                    h[r] = h_r;
                    for (y, &z_p) in grad_r.iter_mut().zip(z.iter()) {
                        *y = *y / denominator + h_r * z_p;
                    }
                    for m in mixed_r.iter_mut() {
                        *m = *m / denominator + h_r;
                    }
                }
                let finite = all_finite(c, d_k, fk, d_k);
                lower_product(tiles, c, mixed, fk, d_k, d_k, grad_ab, d_k, finite, true);
                write_through_phi(x.q, fq, grad_ab, lk, t0, c, grads.d_q);
                if intra_first {
                    // The chunk's own part of dB, G^T A with G^T = triu(V g^T + 1 h^T), while G is
                    // at hand; den and h parked in columns 0 and 1 of d_v (g = dO / den again).
                    transpose::<T, FUSED>(c, c, mixed, c, p, c);
                    let finite = all_finite(c, d_k, fq, d_k);
                    let dkb = &mut grads.d_k[lk.start(t0)..];
                    upper_product(tiles, c, p, fq, d_k, d_k, dkb, lk.stride, finite, false);
                    for r in 0..c {
                        let row = lv.row(t0 + r).start;
                        grads.d_v[row] = den[r];
                        grads.d_v[row + 1] = h[r];
                    }
                } else {
                    for r in 0..c {
                        let (g_r, denominator) = (&mut gc[r * d_v..(r + 1) * d_v], den[r]);
                        for (g, &d) in g_r.iter_mut().zip(&x.d_out[lv.row(t0 + r)]) {
                            *g = d / denominator;
                        }
                        grads.d_v[lv.row(t0 + r)].copy_from_slice(g_r);
                        grads.d_k[lk.row(t0 + r).start] = h[r];
                    }
                }
                absorb(c, d_k, d_v, fk, ft, vb, ldv, s, z);
            }
            // Reverse sweep: dK, dV from the suffix sums R = sum A_i^T g_i, r = sum h_i A_i.
            for t0 in (0..n.div_ceil(chunk)).rev().map(|index| index * chunk) {
                let c = chunk.min(n - t0);
                phi_rows::<T, FUSED>(x.q, lk, t0, c, fq);
                phi_rows::<T, FUSED>(x.k, lk, t0, c, fk);
                transpose::<T, FUSED>(c, d_k, fq, d_k, ft, c);
                let vb = &x.v[lv.start(t0)..];
                if intra_first {
                    for r in 0..c {
                        let row = lv.row(t0 + r);
                        let denominator = grads.d_v[row.start];
                        h[r] = grads.d_v[row.start + 1];
                        for (g, &d) in gc[r * d_v..(r + 1) * d_v].iter_mut().zip(&x.d_out[row]) {
                            *g = d / denominator;
                        }
                    }
                } else {
                    for r in 0..c {
                        gc[r * d_v..(r + 1) * d_v].copy_from_slice(&grads.d_v[lv.row(t0 + r)]);
                        h[r] = grads.d_k[lk.row(t0 + r).start];
                    }
                }
                // dB = V R^T + 1 r^T + G^T A, with G^T = triu(V g^T + 1 h^T).
                let later = if t0 + c == n { 0 } else { d_v };
                transpose::<T, FUSED>(d_k, d_v, suffix, d_v, transposed, d_k);
                product(c, later, d_k, vb, ldv, transposed, d_k, grad_ab, d_k, false);
                for j in 0..c {
                    axpy(T::one(), suffix_z, &mut grad_ab[j * d_k..(j + 1) * d_k]);
                }
                if intra_first {
                    for j in 0..c {
                        axpy(T::one(), &grads.d_k[lk.row(t0 + j)], &mut grad_ab[j * d_k..(j + 1) * d_k]);
                    }
                } else {
                    transpose::<T, FUSED>(c, d_v, gc, d_v, vt, c);
                    upper_scores(tiles, c, d_v, vb, ldv, vt, c, mixed);
                    for j in 0..c {
                        for (m, &h_i) in mixed[j * c + j..(j + 1) * c].iter_mut().zip(&h[j..c]) {
                            *m += h_i;
                        }
                    }
                    let finite = all_finite(c, d_k, fq, d_k);
                    upper_product(tiles, c, mixed, fq, d_k, d_k, grad_ab, d_k, finite, true);
                }
                write_through_phi(x.k, fk, grad_ab, lk, t0, c, grads.d_k);
                // dV = B R + P^T g, with P^T = triu(B A^T).
                let dvb = &mut grads.d_v[lv.start(t0)..];
                product(c, if later == 0 { 0 } else { d_k }, d_v, fk, d_k, suffix, d_v, dvb, ldv, false);
                upper_scores(tiles, c, d_k, fk, d_k, ft, c, p);
                let finite = all_finite(c, d_v, gc, d_v);
                upper_product(tiles, c, p, gc, d_v, d_v, dvb, ldv, finite, true);
                // R += A^T g, r += A^T h.
                product(d_k, c, d_v, ft, c, gc, d_v, suffix, d_v, true);
                for i in 0..c {
                    axpy(h[i], &fq[i * d_k..(i + 1) * d_k], suffix_z);
                }
            }
        }
        Causality::Bidirectional => {
            for t0 in chunk_starts.clone() {
                let c = chunk.min(n - t0);
                phi_rows::<T, FUSED>(x.k, lk, t0, c, fk);
                transpose::<T, FUSED>(c, d_k, fk, d_k, ft, c);
                absorb(c, d_k, d_v, fk, ft, &x.v[lv.start(t0)..], ldv, s, z);
            }
            transpose::<T, FUSED>(d_k, d_v, s, d_v, transposed, d_k);
            for t0 in chunk_starts.clone() {
                let c = chunk.min(n - t0);
                phi_rows::<T, FUSED>(x.q, lk, t0, c, fq);
                product(c, d_k, d_v, fq, d_k, s, d_v, num, d_v, false);
                for r in 0..c {
                    den[r] = dot(&fq[r * d_k..(r + 1) * d_k], z);
                }
                normalize_gradient(c, d_v, eps, x.d_out, lv, t0, num, den, gc, h);
                product(c, d_v, d_k, gc, d_v, transposed, d_k, grad_ab, d_k, false);
                for r in 0..c {
                    axpy(h[r], z, &mut grad_ab[r * d_k..(r + 1) * d_k]);
                }
                write_through_phi(x.q, fq, grad_ab, lk, t0, c, grads.d_q);
                transpose::<T, FUSED>(c, d_k, fq, d_k, ft, c);
                product(d_k, c, d_v, ft, c, gc, d_v, suffix, d_v, true);
                for r in 0..c {
                    axpy(h[r], &fq[r * d_k..(r + 1) * d_k], suffix_z);
                }
            }
            transpose::<T, FUSED>(d_k, d_v, suffix, d_v, transposed, d_k);
            for t0 in chunk_starts {
                let c = chunk.min(n - t0);
                phi_rows::<T, FUSED>(x.k, lk, t0, c, fk);
                let vb = &x.v[lv.start(t0)..];
                product(c, d_v, d_k, vb, ldv, transposed, d_k, grad_ab, d_k, false);
                for j in 0..c {
                    axpy(T::one(), suffix_z, &mut grad_ab[j * d_k..(j + 1) * d_k]);
                }
                write_through_phi(x.k, fk, grad_ab, lk, t0, c, grads.d_k);
                product(c, d_k, d_v, fk, d_k, suffix, d_v, &mut grads.d_v[lv.start(t0)..], ldv, false);
            }
        }
    }
    Ok(())
}
