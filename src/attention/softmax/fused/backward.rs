//! The fused backward: strips of query rows against key blocks read from panels laid out once.

use super::tiles::*;
use super::*;

/// The forward's outputs and `dO`, and the gradients to overwrite, for [`backward`].
#[derive(Debug)]
pub(crate) struct BackwardIo<'a> {
    pub out: &'a [f32],
    pub lse: &'a [f32],
    pub d_out: &'a [f32],
    pub d_q: &'a mut [f32],
    pub d_k: &'a mut [f32],
    pub d_v: &'a mut [f32],
}

/// The fused backward of one head in `f32` with the given instruction set, as
/// [`super::SoftmaxAttention::backward`]. Returns `false` (touching nothing) when the
/// workspace is shorter than [`Blocking::backward_len`].
///
/// Panics if a length disagrees with the dimensions (validated callers never trigger this).
pub(crate) fn backward(isa: Isa, problem: &Problem<'_>, io: BackwardIo<'_>, workspace: &mut [f32]) -> bool {
    problem.assert_lengths();
    let (n, d_k, d_v) = (problem.n, problem.d_k, problem.d_v);
    assert!(io.out.len() == n * d_v && io.d_out.len() == n * d_v && io.lse.len() == n);
    assert!(io.d_q.len() == n * d_k && io.d_k.len() == n * d_k && io.d_v.len() == n * d_v);
    let isa = isa.clamp();
    let Some(blocking) = blocking(isa) else {
        return false;
    };
    if workspace.len() < blocking.backward_len(n, d_k, d_v) {
        return false;
    }
    io.d_q.fill(0.0);
    io.d_k.fill(0.0);
    io.d_v.fill(0.0);
    if n == 0 {
        return true;
    }
    backward_isa(isa, problem, io, workspace)
}

crate::arch::multiversion! {
    /// [`backward_body`] in the variant `isa` with its blocking; `false` for the portable variant,
    /// which has no tile kernel ([`backward`] never asks for it).
    fn backward_isa(problem: &Problem<'_>, io: BackwardIo<'_>, workspace: &mut [f32]) -> bool;
    avx512("avx512f,fma") => {
        // SAFETY: the dispatch runs this only on a CPU with the features; `n > 0`, the lengths
        // were asserted, the gradients zeroed and the workspace holds `backward_len` of this
        // blocking (`backward`).
        unsafe { backward_body::<Avx512, AVX512_MR, AVX512_NV>(AVX512_BLOCKING, problem, io, workspace) }
    };
    avx2("avx2,fma") => {
        // SAFETY: as above.
        unsafe { backward_body::<Avx2, AVX2_MR, AVX2_NV>(AVX2_BLOCKING, problem, io, workspace) }
    };
    portable => false;
}

/// Returns `false` (touching nothing) when the workspace cannot hold the panels and strip
/// buffers, which a workspace of [`Blocking::backward_len`] elements always can.
///
/// # Safety
/// The CPU has `S`'s features; `n > 0`; the lengths asserted by [`backward`] hold and the
/// gradients are zero; `blocking` matches `MR`, `NV W`.
#[inline(always)]
unsafe fn backward_body<S: Simd, const MR: usize, const NV: usize>(
    blocking: Blocking,
    problem: &Problem<'_>,
    io: BackwardIo<'_>,
    workspace: &mut [f32],
) -> bool {
    let Problem { n, d_k, d_v, scale, causal, q, k, v, mask } = *problem;
    let BackwardIo { out, lse, d_out, d_q, d_k: d_key, d_v: d_val } = io;
    let (nr, strip) = (blocking.panel, blocking.strip_rows(n, d_k, d_v, causal));
    let (block, ld) = (blocking.key_block(n), blocking.logit_stride(n));
    let (ld_dq, ld_do) = (aligned(d_k), aligned(d_v));
    let parts = blocking.backward_parts(strip, n, d_k, d_v);
    let Ok(([k_panels, v_panels, prob, d_logit, d_q_strip, q_strip, d_out_strip, delta], _)) =
        workspace::carve_aligned(workspace, ALIGN, parts)
    else {
        return false;
    };
    pack_panels(k, n, d_k, nr, k_panels);
    pack_panels(v, n, d_v, nr, v_panels);
    for i0 in (0..n).step_by(strip) {
        let rows = strip.min(n - i0);
        let padded = rows.div_ceil(MR) * MR; // rows computed: whole register blocks
        for (r, delta_r) in delta[..rows].iter_mut().enumerate() {
            let range = (i0 + r) * d_v..(i0 + r + 1) * d_v;
            *delta_r = crate::linalg::kernel::dot(&d_out[range.clone()], &out[range.clone()]);
            // The strip's dO and Q rows, copied to 64-byte-aligned rows: the B operands of dV and
            // dK, read once per key block (unaligned rows would split every vector load).
            d_out_strip[r * ld_do..r * ld_do + d_v].copy_from_slice(&d_out[range]);
            q_strip[r * ld_dq..r * ld_dq + d_k].copy_from_slice(&q[(i0 + r) * d_k..(i0 + r + 1) * d_k]);
        }
        d_q_strip.fill(0.0);
        let j_end = if causal { i0 + rows } else { n };
        for j0 in (0..j_end).step_by(block) {
            let bk = block.min(j_end - j0);
            // SAFETY: as in the forward, for Q against the key panels and dO against the value
            // panels (dO is n x d_v like the value panels' rows). Features: caller.
            unsafe {
                logits::<S, MR, NV>(q, n, d_k, i0, padded, k_panels, j0, bk, scale, prob, ld);
                logits::<S, MR, NV>(d_out, n, d_v, i0, padded, v_panels, j0, bk, 1.0, d_logit, ld);
            }
            for r in 0..padded {
                let (p_row, ds_row) = (&mut prob[r * ld..r * ld + bk], &mut d_logit[r * ld..r * ld + bk]);
                let i = i0 + r;
                if r >= rows || lse[i] == f32::NEG_INFINITY {
                    // Padding rows and fully masked rows contribute nothing.
                    p_row.fill(0.0);
                    ds_row.fill(0.0);
                    continue;
                }
                if let Some(mask) = mask {
                    for (a, &m) in p_row.iter_mut().zip(&mask[i * n + j0..i * n + j0 + bk]) {
                        *a += m;
                    }
                }
                let visible = if causal { bk.min((i + 1).saturating_sub(j0)) } else { bk };
                // SAFETY: a plain slice; the CPU has the features (caller).
                unsafe { exp_shifted_sum::<S>(&mut p_row[..visible], lse[i]) };
                p_row[visible..].fill(0.0);
                let delta_r = delta[r];
                for (ds, &p) in ds_row.iter_mut().zip(p_row.iter()) {
                    *ds = p * (*ds - delta_r);
                }
            }
            let p_t = Broadcast { ptr: prob.as_ptr(), row_stride: 1, col_stride: ld };
            let ds_t = Broadcast { ptr: d_logit.as_ptr(), row_stride: 1, col_stride: ld };
            let ds = Broadcast { ptr: d_logit.as_ptr(), row_stride: ld, col_stride: 1 };
            // SAFETY: P^T and dS^T are read at (key jr < bk, query r < rows): prob[r ld + jr] with
            // r < strip, jr < bk <= ld. B = the strip copies of dO / Q, rows [0, rows) of strides
            // ld_do >= d_v / ld_dq >= d_k. C = d_val /
            // d_key rows [j0, j0 + bk) (<= n). For dQ: A = dS rows [0, padded) x [0, bk), B = k
            // rows [j0, j0 + bk), C = d_q_strip (strip rows of stride ld_dq >= d_k). Features: caller.
            unsafe {
                let d_val_rows = d_val[j0 * d_v..].as_mut_ptr();
                accumulate::<S, MR, NV>(
                    bk,
                    p_t,
                    rows,
                    d_out_strip.as_ptr(),
                    ld_do,
                    d_val_rows,
                    d_v,
                    d_v,
                    add(1.0),
                );
                let d_key_rows = d_key[j0 * d_k..].as_mut_ptr();
                accumulate::<S, MR, NV>(
                    bk,
                    ds_t,
                    rows,
                    q_strip.as_ptr(),
                    ld_dq,
                    d_key_rows,
                    d_k,
                    d_k,
                    add(scale),
                );
                let d_q_rows = d_q_strip.as_mut_ptr();
                accumulate::<S, MR, NV>(
                    padded,
                    ds,
                    bk,
                    k[j0 * d_k..].as_ptr(),
                    d_k,
                    d_q_rows,
                    ld_dq,
                    d_k,
                    add(1.0),
                );
            }
        }
        for r in 0..rows {
            let src = &d_q_strip[r * ld_dq..r * ld_dq + d_k];
            let dst = &mut d_q[(i0 + r) * d_k..(i0 + r + 1) * d_k];
            for (g, &s) in dst.iter_mut().zip(src) {
                *g = s * scale;
            }
        }
    }
    true
}
