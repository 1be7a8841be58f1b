//! The S-D factorization in one place: the assembly of an S-D head's queries and keys from its
//! factor products, and its adjoint (`docs/math.md` section 8).

use crate::Scalar;

/// Columns `offset .. offset + width` of a row-major matrix of `stride` columns: where one head's
/// factor products (`a`, `b`, `c` or their gradients) live inside packed multi-head storage, or
/// a whole contiguous `n x width` matrix ([`Cols::dense`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cols {
    /// Elements per row of the underlying matrix.
    pub stride: usize,
    /// First column.
    pub offset: usize,
}

impl Cols {
    /// A contiguous matrix of `width` columns.
    pub(crate) fn dense(width: usize) -> Self {
        Cols { stride: width, offset: 0 }
    }

    /// Columns `offset .. offset + width` of an `n x stride` matrix (an offset past the first row
    /// addresses a later block: `Cols::of(r, n r)` is the second of two consecutive `n x r` blocks).
    pub(crate) fn of(stride: usize, offset: usize) -> Self {
        Cols { stride, offset }
    }

    #[inline(always)]
    fn start(&self, row: usize) -> usize {
        row * self.stride + self.offset
    }
}

/// The S-D factorization, forward: query rows `[a_i, b_i, c_i]` and key rows `[b_j, -a_j, -c_j]`
/// (`n x (2r + q)`, contiguous) from `a = XU`, `b = XV` (`n x r`) and `c = XC` (`n x q`), each read
/// through its [`Cols`] (a head's columns of packed projections, or a contiguous matrix), so that
/// `qh_i . kh_j = x_i^T (U V^T - V U^T - C C^T) x_j`. Element loops (each writes both outputs),
/// not per-row `memcpy` calls: rows are only `r` or `q` elements long.
/// In `f32` the loops are compiled for AVX-512 or AVX2 when the CPU has them (copies and sign
/// flips: identical results).
#[allow(clippy::too_many_arguments)]
pub(crate) fn sd_assemble<T: Scalar>(
    n: usize,
    r: usize,
    q: usize,
    a: (&[T], Cols),
    b: (&[T], Cols),
    c: (&[T], Cols),
    qh: &mut [T],
    kh: &mut [T],
) {
    if let (Some(fa), Some(fb), Some(fc), Some(fq), Some(fk)) =
        (T::f32_slice(a.0), T::f32_slice(b.0), T::f32_slice(c.0), T::f32_slice_mut(qh), T::f32_slice_mut(kh))
    {
        return assemble_isa(crate::arch::isa(), n, r, q, (fa, a.1), (fb, b.1), (fc, c.1), fq, fk);
    }
    assemble_body(n, r, q, a, b, c, qh, kh)
}

crate::arch::multiversion! {
    /// The `f32` loops of [`sd_assemble`] in the variant `isa` (AVX-512 or portable; copies and
    /// sign flips: identical results).
    fn assemble_isa(
        n: usize,
        r: usize,
        q: usize,
        a: (&[f32], Cols),
        b: (&[f32], Cols),
        c: (&[f32], Cols),
        qh: &mut [f32],
        kh: &mut [f32],
    );
    avx512("avx512f") => assemble_body(n, r, q, a, b, c, qh, kh);
    portable => assemble_body(n, r, q, a, b, c, qh, kh);
}

/// The loops of [`sd_assemble`], shared by every variant.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn assemble_body<T: Scalar>(
    n: usize,
    r: usize,
    q: usize,
    (a, a_cols): (&[T], Cols),
    (b, b_cols): (&[T], Cols),
    (c, c_cols): (&[T], Cols),
    qh: &mut [T],
    kh: &mut [T],
) {
    let w = 2 * r + q;
    if w == 0 {
        // No routing or filtering columns: nothing to assemble (and no chunks of width 0).
        return;
    }
    for ((i, q_row), k_row) in
        qh[..n * w].chunks_exact_mut(w).enumerate().zip(kh[..n * w].chunks_exact_mut(w))
    {
        let (a_i, b_i, c_i) =
            (&a[a_cols.start(i)..][..r], &b[b_cols.start(i)..][..r], &c[c_cols.start(i)..][..q]);
        let (q_ab, q_c) = q_row.split_at_mut(2 * r);
        let (q_a, q_b) = q_ab.split_at_mut(r);
        let (k_ab, k_c) = k_row.split_at_mut(2 * r);
        let (k_b, k_a) = k_ab.split_at_mut(r);
        for ((qa, ka), &v) in q_a.iter_mut().zip(k_a.iter_mut()).zip(a_i) {
            *qa = v;
            *ka = -v;
        }
        for ((qb, kb), &v) in q_b.iter_mut().zip(k_b.iter_mut()).zip(b_i) {
            *qb = v;
            *kb = v;
        }
        for ((qc, kc), &v) in q_c.iter_mut().zip(k_c.iter_mut()).zip(c_i) {
            *qc = v;
            *kc = -v;
        }
    }
}

/// The adjoint of [`sd_assemble`]: `da = dqh_a - dkh_b`, `db = dqh_b + dkh_a`, `dc = dqh_c - dkh_c`
/// (`d_qh`, `d_kh` contiguous `n x (2r + q)`), written into `out` through three [`Cols`] views
/// (which may share rows: e.g. the three column ranges of one packed `n x (2r + q)` gradient, or
/// three consecutive dense blocks, whose offsets then include `n r`); only those entries are
/// touched. In `f32` compiled for AVX-512 when the CPU has it (same operations: identical results).
#[allow(clippy::too_many_arguments)]
pub(crate) fn sd_assemble_adjoint<T: Scalar>(
    n: usize,
    r: usize,
    q: usize,
    d_qh: &[T],
    d_kh: &[T],
    out: &mut [T],
    da: Cols,
    db: Cols,
    dc: Cols,
) {
    if let (Some(fq), Some(fk), Some(fo)) =
        (T::f32_slice(d_qh), T::f32_slice(d_kh), T::f32_slice_mut(&mut *out))
    {
        return adjoint_isa(crate::arch::isa(), n, r, q, fq, fk, fo, da, db, dc);
    }
    adjoint_body(n, r, q, d_qh, d_kh, out, da, db, dc)
}

crate::arch::multiversion! {
    /// The `f32` loops of [`sd_assemble_adjoint`] in the variant `isa` (AVX-512 or portable).
    fn adjoint_isa(
        n: usize,
        r: usize,
        q: usize,
        d_qh: &[f32],
        d_kh: &[f32],
        out: &mut [f32],
        da: Cols,
        db: Cols,
        dc: Cols,
    );
    avx512("avx512f") => adjoint_body(n, r, q, d_qh, d_kh, out, da, db, dc);
    portable => adjoint_body(n, r, q, d_qh, d_kh, out, da, db, dc);
}

/// The loops of [`sd_assemble_adjoint`], shared by every variant.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn adjoint_body<T: Scalar>(
    n: usize,
    r: usize,
    q: usize,
    d_qh: &[T],
    d_kh: &[T],
    out: &mut [T],
    da: Cols,
    db: Cols,
    dc: Cols,
) {
    let w = 2 * r + q;
    if w == 0 {
        return;
    }
    for ((i, dq), dk) in d_qh[..n * w].chunks_exact(w).enumerate().zip(d_kh[..n * w].chunks_exact(w)) {
        let (dq_a, dq_bc) = dq.split_at(r);
        let (dq_b, dq_c) = dq_bc.split_at(r);
        let (dk_a, dk_bc) = dk.split_at(r);
        let (dk_b, dk_c) = dk_bc.split_at(r);
        for ((o, &x), &y) in out[da.start(i)..][..r].iter_mut().zip(dq_a).zip(dk_b) {
            *o = x - y;
        }
        for ((o, &x), &y) in out[db.start(i)..][..r].iter_mut().zip(dq_b).zip(dk_a) {
            *o = x + y;
        }
        for ((o, &x), &y) in out[dc.start(i)..][..q].iter_mut().zip(dq_c).zip(dk_c) {
            *o = x - y;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    /// The assembly and its adjoint through the f32 dispatch (AVX-512 where the CPU has it) and
    /// each variant called directly equal the portable loops bit for bit (copies, sign flips and
    /// one add or subtract per element), on strided head columns of packed storage (h = 3 heads,
    /// r = 5, q = 3, n = 7) with the untouched columns checked.
    #[test]
    fn assembly_variants_match_portable() {
        let (n, h, r, q) = (7usize, 3usize, 5usize, 3usize);
        let w = 2 * r + q;
        let packed = |cols: usize, seed: f32| -> Vec<f32> {
            (0..n * h * cols).map(|i| (i as f32 * seed).sin()).collect()
        };
        let (pu, pv, pc) = (packed(r, 0.37), packed(r, 0.71), packed(q, 1.13));
        for t in 0..h {
            let (a, b, c) = (
                (&pu[..], Cols::of(h * r, t * r)),
                (&pv[..], Cols::of(h * r, t * r)),
                (&pc[..], Cols::of(h * q, t * q)),
            );
            let (mut q0, mut k0) = (vec![0.0f32; n * w], vec![0.0f32; n * w]);
            assemble_body(n, r, q, a, b, c, &mut q0, &mut k0);
            let (mut q1, mut k1) = (vec![1.0f32; n * w], vec![1.0f32; n * w]);
            sd_assemble(n, r, q, a, b, c, &mut q1, &mut k1);
            assert_eq!((&q1, &k1), (&q0, &k0));
            for isa in crate::arch::available() {
                let (mut q2, mut k2) = (vec![1.0f32; n * w], vec![1.0f32; n * w]);
                assemble_isa(isa, n, r, q, a, b, c, &mut q2, &mut k2);
                assert_eq!((&q2, &k2), (&q0, &k0), "{}", isa.name());
            }
            // Adjoint into head t's columns of one packed gradient [dU | dV | dC] (n x h (2r + q)),
            // prefilled with a marker.
            let stride = h * w;
            let (ca, cb, cc) = (
                Cols::of(stride, t * r),
                Cols::of(stride, h * r + t * r),
                Cols::of(stride, 2 * h * r + t * q),
            );
            let run = |f: &dyn Fn(&mut [f32])| {
                let mut out = vec![9.0f32; n * stride];
                f(&mut out);
                out
            };
            let expect = run(&|o| adjoint_body(n, r, q, &q0, &k0, o, ca, cb, cc));
            assert_eq!(run(&|o| sd_assemble_adjoint(n, r, q, &q0, &k0, o, ca, cb, cc)), expect);
            for isa in crate::arch::available() {
                let got = run(&|o| adjoint_isa(isa, n, r, q, &q0, &k0, o, ca, cb, cc));
                assert_eq!(got, expect, "{}", isa.name());
            }
            let touched = |j: usize| {
                let col = j % stride;
                (col >= t * r && col < (t + 1) * r)
                    || (col >= h * r + t * r && col < h * r + (t + 1) * r)
                    || (col >= 2 * h * r + t * q && col < 2 * h * r + (t + 1) * q)
            };
            assert!(expect.iter().enumerate().all(|(j, &v)| touched(j) || v == 9.0));
            // Values: da = dq_a - dk_b on a spot check.
            assert_eq!(expect[2 * stride + t * r + 1], q0[2 * w + 1] - k0[2 * w + r + 1]);
            assert_eq!(expect[2 * stride + h * r + t * r + 1], q0[2 * w + r + 1] + k0[2 * w + 1]);
        }
    }
}
