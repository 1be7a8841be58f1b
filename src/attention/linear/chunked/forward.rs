//! The chunked forward pass of one head (causal and non-causal).

use super::elementwise::{all_finite, dot, phi_rows, sum, transpose};
use super::masked::{absorb, lower_product, lower_scores, product};
use super::{forward_lens, Geometry, Layout, Pass, Tiles};
use crate::attention::Causality;
use crate::workspace::carve;
use crate::{Result, Scalar};

/// One head's forward pass; `workspace` holds at least [`super::forward_workspace_len`] elements.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn forward_body<T: Scalar, const FUSED: bool>(
    tiles: Tiles,
    pass: &Pass<'_>,
    eps: T,
    q: &[T],
    k: &[T],
    v: &[T],
    out: &mut [T],
    workspace: &mut [T],
) -> Result<()> {
    let Geometry { n_tokens: n, d_k, d_v, n_heads, chunk } = *pass.geometry;
    let (lk, lv) = (Layout::of_head(n_heads, d_k, pass.head), Layout::of_head(n_heads, d_v, pass.head));
    let ldv = lv.stride;
    let ([s, z, fq, fk, fkt, p, den], _) = carve(workspace, forward_lens(d_k, d_v, chunk))?;
    s.fill(T::zero());
    z.fill(T::zero());
    let normalize = |out: &mut [T], t0: usize, c: usize, den: &[T]| {
        for r in 0..c {
            let denominator = den[r] + eps;
            for o in out[lv.row(t0 + r)].iter_mut() {
                *o /= denominator;
            }
        }
    };
    match pass.causality {
        Causality::Causal => {
            for t0 in (0..n).step_by(chunk) {
                let c = chunk.min(n - t0);
                phi_rows::<T, FUSED>(q, lk, t0, c, fq);
                phi_rows::<T, FUSED>(k, lk, t0, c, fk);
                transpose::<T, FUSED>(c, d_k, fk, d_k, fkt, c);
                let (vb, ob) = (&v[lv.start(t0)..], &mut out[lv.start(t0)..]);
                // Earlier chunks: out = A S, den = A z (zero for the first chunk).
                product(c, if t0 == 0 { 0 } else { d_k }, d_v, fq, d_k, s, d_v, ob, ldv, false);
                for r in 0..c {
                    den[r] = dot(&fq[r * d_k..(r + 1) * d_k], z);
                }
                // This chunk: P = tril(A B^T); out += P V, den += P 1.
                lower_scores(tiles, c, d_k, fq, d_k, fkt, c, p);
                for r in 0..c {
                    den[r] += sum(&p[r * c..r * c + r + 1]);
                }
                let finite = all_finite(c, d_v, vb, ldv);
                lower_product(tiles, c, p, vb, ldv, d_v, ob, ldv, finite, true);
                normalize(out, t0, c, den);
                absorb(c, d_k, d_v, fk, fkt, &v[lv.start(t0)..], ldv, s, z);
            }
        }
        Causality::Bidirectional => {
            for t0 in (0..n).step_by(chunk) {
                let c = chunk.min(n - t0);
                phi_rows::<T, FUSED>(k, lk, t0, c, fk);
                transpose::<T, FUSED>(c, d_k, fk, d_k, fkt, c);
                absorb(c, d_k, d_v, fk, fkt, &v[lv.start(t0)..], ldv, s, z);
            }
            for t0 in (0..n).step_by(chunk) {
                let c = chunk.min(n - t0);
                phi_rows::<T, FUSED>(q, lk, t0, c, fq);
                product(c, d_k, d_v, fq, d_k, s, d_v, &mut out[lv.start(t0)..], ldv, false);
                for r in 0..c {
                    den[r] = dot(&fq[r * d_k..(r + 1) * d_k], z);
                }
                normalize(out, t0, c, den);
            }
        }
    }
    Ok(())
}
