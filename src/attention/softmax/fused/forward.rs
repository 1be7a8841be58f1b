//! The fused forward: strips of queries against blocks of keys, online softmax down the strip.

use super::tiles::*;
use super::*;

/// The fused forward of one head in `f32` with the given instruction set: `out`, `lse` as
/// [`super::SoftmaxAttention::forward`]. Returns `false` (touching nothing) when the
/// workspace is shorter than [`Blocking::forward_len`].
///
/// Panics if a length disagrees with the dimensions (validated callers never trigger this).
pub(crate) fn forward(
    isa: Isa,
    problem: &Problem<'_>,
    out: &mut [f32],
    lse: &mut [f32],
    workspace: &mut [f32],
) -> bool {
    problem.assert_lengths();
    assert!(out.len() == problem.n * problem.d_v && lse.len() == problem.n);
    let isa = isa.clamp();
    let Some(blocking) = blocking(isa) else {
        return false;
    };
    if workspace.len() < blocking.forward_len(problem.n, problem.d_k, problem.d_v) {
        return false;
    }
    if problem.n == 0 {
        return true;
    }
    forward_isa(isa, problem, out, lse, workspace)
}

crate::arch::multiversion! {
    /// [`forward_body`] in the variant `isa` with its blocking; `false` (touching nothing) for the
    /// portable variant, which has no tile kernel ([`forward`] never asks for it).
    fn forward_isa(problem: &Problem<'_>, out: &mut [f32], lse: &mut [f32], workspace: &mut [f32]) -> bool;
    avx512("avx512f,fma") => {
        // SAFETY: the dispatch runs this only on a CPU with the features; `n > 0`, the lengths
        // were asserted and the workspace holds `forward_len` of this blocking (`forward`).
        unsafe {
            forward_body::<Avx512, AVX512_FORWARD_MR, AVX512_FORWARD_NV>(
                AVX512_BLOCKING,
                problem,
                out,
                lse,
                workspace,
            )
        }
    };
    avx2("avx2,fma") => {
        // SAFETY: as above.
        unsafe {
            forward_body::<Avx2, AVX2_FORWARD_MR, AVX2_FORWARD_NV>(AVX2_BLOCKING, problem, out, lse, workspace)
        }
    };
    portable => false;
}

/// Returns `false` (touching nothing) when the workspace cannot hold the strip buffers, which a
/// workspace of [`Blocking::forward_len`] elements always can.
///
/// # Safety
/// The CPU has `S`'s features; `n > 0`; the lengths asserted by [`forward`] hold;
/// `blocking.forward_strip` is a multiple of `W`.
#[inline(always)]
unsafe fn forward_body<S: Simd, const MR: usize, const NV: usize>(
    blocking: Blocking,
    problem: &Problem<'_>,
    out: &mut [f32],
    lse: &mut [f32],
    workspace: &mut [f32],
) -> bool {
    let Problem { n, d_k, d_v, scale, causal, q, k, v, mask } = *problem;
    let (ld, block) = (blocking.forward_strip(n, d_k, d_v, causal), blocking.forward_key_block(n));
    let parts = blocking.forward_parts(ld, n, d_k, d_v);
    let Ok(([q_t, logit_t, out_t, shift, row_sum], _)) = workspace::carve_aligned(workspace, ALIGN, parts)
    else {
        return false;
    };
    for i0 in (0..n).step_by(ld) {
        let cols = ld.min(n - i0); // the strip's queries; columns [cols, width) are padding
        let width = cols.div_ceil(S::W) * S::W;
        // Q^T of the strip (d_k x width), zero in the padding columns.
        if cols == ld {
            crate::linalg::kernel::transpose(ld, d_k, &q[i0 * d_k..(i0 + ld) * d_k], &mut q_t[..d_k * ld]);
        } else {
            for c in 0..cols {
                for (p, &x) in q[(i0 + c) * d_k..(i0 + c + 1) * d_k].iter().enumerate() {
                    q_t[p * ld + c] = x;
                }
            }
            for p in 0..d_k {
                q_t[p * ld + cols..p * ld + width].fill(0.0);
            }
        }
        out_t.fill(0.0);
        // The running maxima, floored at f32::MIN: an all-masked column keeps MIN, whose
        // exponentials exp(-inf - MIN) are 0 and whose rescalings exp(MIN - MIN) are 1.
        shift.fill(f32::MIN);
        row_sum.fill(0.0);
        let j_end = if causal { i0 + cols } else { n };
        for j0 in (0..j_end).step_by(block) {
            let bk = block.min(j_end - j0);
            let keys = Broadcast { ptr: k[j0 * d_k..].as_ptr(), row_stride: d_k, col_stride: 1 };
            // SAFETY: A = k rows [j0, j0 + bk) (<= n) of d_k; B = q_t, d_k rows of ld; C =
            // logit_t, bk <= block rows of ld. Features: caller.
            unsafe {
                let c = logit_t.as_mut_ptr();
                let overwrite = Alpha { value: scale, accumulate: false };
                accumulate::<S, MR, NV>(bk, keys, d_k, q_t.as_ptr(), ld, c, ld, width, overwrite);
            }
            let plain = mask.is_none() && !causal && cols == width; // nothing to hide
            for jr in (0..bk).filter(|_| !plain) {
                let (j, row) = (j0 + jr, &mut logit_t[jr * ld..jr * ld + width]);
                if let Some(mask) = mask {
                    for (c, a) in row[..cols].iter_mut().enumerate() {
                        *a += mask[(i0 + c) * n + j];
                    }
                }
                // Queries i < j do not see key j when causal; padding columns see nothing.
                let hidden = if causal { (j.saturating_sub(i0)).min(cols) } else { 0 };
                row[..hidden].fill(f32::NEG_INFINITY);
                row[cols..].fill(f32::NEG_INFINITY);
            }
            // SAFETY: every vector access covers W elements of a row of ld (a multiple of W) of
            // the strip buffers; the features are the caller's.
            unsafe { online_softmax_columns::<S>(logit_t, bk, ld, width, shift, row_sum, out_t, d_v) };
            let values = Broadcast { ptr: v[j0 * d_v..].as_ptr(), row_stride: 1, col_stride: d_v };
            // SAFETY: A = V^T of rows [j0, j0 + bk): element (p, jr) at v[(j0 + jr) d_v + p],
            // p < d_v; B = logit_t, bk rows of ld; C = out_t, d_v rows of ld. Features: caller.
            unsafe {
                let (b, c) = (logit_t.as_ptr(), out_t.as_mut_ptr());
                accumulate::<S, MR, NV>(d_v, values, bk, b, ld, c, ld, width, add(1.0));
            }
        }
        // The strip's output rows: O^T transposed back (blocked when the strip is full), then each
        // row normalized.
        let out_rows = &mut out[i0 * d_v..(i0 + cols) * d_v];
        if cols == ld {
            crate::linalg::kernel::transpose(d_v, ld, &out_t[..d_v * ld], out_rows);
        } else {
            for (c, out_row) in out_rows.chunks_exact_mut(d_v.max(1)).enumerate().take(cols) {
                for (p, o) in out_row.iter_mut().enumerate() {
                    *o = out_t[p * ld + c];
                }
            }
        }
        for c in 0..cols {
            let (i, sum) = (i0 + c, row_sum[c]);
            let out_row = &mut out[i * d_v..(i + 1) * d_v];
            if sum > 0.0 {
                let inv = sum.recip();
                for o in out_row.iter_mut() {
                    *o *= inv;
                }
                lse[i] = shift[c] + sum.ln();
            } else if sum == 0.0 {
                out_row.fill(0.0);
                lse[i] = f32::NEG_INFINITY;
            } else {
                // NaN from the inputs: the row stays unnormalized.
                lse[i] = sum;
            }
        }
    }
    true
}

/// One key block of the online softmax on a transposed strip (`bk` rows of keys, the first
/// `width` of `ld` columns of queries): merges the column maxima (NaN skipped) into `shift`, rescales the running sums
/// and the `d_v x ld` output accumulator by `exp(old - new)`, and replaces the logits by
/// `exp(logit - shift)`, adding them to the sums. All in vectors along the queries.
///
/// # Safety
/// The CPU has `S`'s features; `width <= ld` is a multiple of `W`; `logit_t` holds `bk ld`,
/// `out_t` `d_v ld`, `shift` and `row_sum` `ld` elements.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn online_softmax_columns<S: Simd>(
    logit_t: &mut [f32],
    bk: usize,
    ld: usize,
    width: usize,
    shift: &mut [f32],
    row_sum: &mut [f32],
    out_t: &mut [f32],
    d_v: usize,
) {
    assert!(logit_t.len() >= bk * ld && out_t.len() >= d_v * ld && shift.len() >= ld && row_sum.len() >= ld);
    assert!(width <= ld && width % S::W == 0);
    // SAFETY: c0 + W <= width <= ld for every c0 below, so each access lies in row jr (< bk) or p
    // (< d_v) of a buffer of ld columns, or in shift / row_sum, as asserted.
    unsafe {
        for c0 in (0..width).step_by(S::W) {
            let old = S::load(shift.as_ptr().add(c0));
            let mut new = old;
            for jr in 0..bk {
                new = S::max_skip_nan(S::load(logit_t.as_ptr().add(jr * ld + c0)), new);
            }
            let mut old_lanes = [0.0f32; 16];
            let mut new_lanes = [0.0f32; 16];
            S::store(old_lanes.as_mut_ptr(), old);
            S::store(new_lanes.as_mut_ptr(), new);
            let mut sum = S::load(row_sum.as_ptr().add(c0));
            if old_lanes[..S::W] != new_lanes[..S::W] {
                let alpha = S::exp(S::sub(old, new));
                sum = S::mul(sum, alpha);
                for p in 0..d_v {
                    let ptr = out_t.as_mut_ptr().add(p * ld + c0);
                    S::store(ptr, S::mul(S::load(ptr), alpha));
                }
                S::store(shift.as_mut_ptr().add(c0), new);
            }
            for jr in 0..bk {
                let ptr = logit_t.as_mut_ptr().add(jr * ld + c0);
                let y = S::exp(S::sub(S::load(ptr), new));
                S::store(ptr, y);
                sum = S::add(sum, y);
            }
            S::store(row_sum.as_mut_ptr().add(c0), sum);
        }
    }
}
