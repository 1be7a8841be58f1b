//! The register-blocked tile products of the fused kernels and the panel layout they read.

use super::*;

/// Lays the rows of `x` (`n x width`) out as panels of `panel` rows, each stored transposed
/// (`width x panel`, row `p` holding element `p` of the panel's rows), zero-padded to
/// `n_pad = ceil(n / panel) panel` rows: `out[t width panel + p panel + c] = x[(t panel + c) width + p]`.
pub(super) fn pack_panels(x: &[f32], n: usize, width: usize, panel: usize, out: &mut [f32]) {
    let n_pad = n.div_ceil(panel) * panel;
    if width == 0 {
        return;
    }
    let out = &mut out[..n_pad * width];
    for (t, block) in out.chunks_exact_mut(width * panel).enumerate() {
        for c in 0..panel {
            let row = t * panel + c;
            if row < n {
                for (p, &value) in x[row * width..(row + 1) * width].iter().enumerate() {
                    block[p * panel + c] = value;
                }
            } else {
                for p in 0..width {
                    block[p * panel + c] = 0.0;
                }
            }
        }
    }
}

/// `out[r][c] = alpha sum_p rows[r][p] panel[p NR + c]` for `r < MR`, `c < NR = NV W`.
///
/// # Safety
/// The CPU has `S`'s features; each `rows[r]` is valid for `depth` reads, `panel` for
/// `depth NR`, `out` for writes of `NR` elements at `out + r ld_out` for every `r < MR`.
#[inline(always)]
pub(super) unsafe fn panel_product<S: Simd, const MR: usize, const NV: usize>(
    rows: &[*const f32; MR],
    depth: usize,
    panel: *const f32,
    alpha: f32,
    out: *mut f32,
    ld_out: usize,
) {
    let nr = NV * S::W;
    // SAFETY: every access below is inside the ranges the caller guarantees: rows[r] + p with
    // p < depth, panel + p nr + v W + [0, W) with p < depth, v < NV, and out + r ld_out + v W + [0, W).
    unsafe {
        let mut acc = [[S::zero(); NV]; MR];
        for p in 0..depth {
            let mut b = [S::zero(); NV];
            for (v, bv) in b.iter_mut().enumerate() {
                *bv = S::load(panel.add(p * nr + v * S::W));
            }
            for r in 0..MR {
                let a = S::splat(*rows[r].add(p));
                for v in 0..NV {
                    acc[r][v] = S::fma(a, b[v], acc[r][v]);
                }
            }
        }
        let alpha = S::splat(alpha);
        for (r, acc_r) in acc.iter().enumerate() {
            for (v, &acc_rv) in acc_r.iter().enumerate() {
                S::store(out.add(r * ld_out + v * S::W), S::mul(acc_rv, alpha));
            }
        }
    }
}

/// How [`accumulate`] writes `C`: `C = value A B`, or `C += value A B` when `accumulate`.
#[derive(Clone, Copy)]
pub(super) struct Alpha {
    pub(super) value: f32,
    pub(super) accumulate: bool,
}

/// `C += alpha A B`.
pub(super) const fn add(value: f32) -> Alpha {
    Alpha { value, accumulate: true }
}

/// Operand `A` of [`accumulate`]: element `(r, j)` at `ptr + r row_stride + j col_stride`.
#[derive(Clone, Copy)]
pub(super) struct Broadcast {
    pub(super) ptr: *const f32,
    pub(super) row_stride: usize,
    pub(super) col_stride: usize,
}

/// `C[r][c0 + c] += alpha sum_j A[r][j] B[j][c0 + c]` for `r < R`, `c < NV W` (the last vector
/// only `len` lanes when `PARTIAL`).
///
/// # Safety
/// The CPU has `S`'s features; `A` valid at `(r, j)` for `r < R, j < inner`; `B` (`b + j ld_b`)
/// and `C` (`c + r ld_c`) valid for the columns `[c0, c0 + NV W)` (or `[c0, c0 + len)`).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) unsafe fn accumulate_block<S: Simd, const R: usize, const NV: usize, const PARTIAL: bool>(
    a: Broadcast,
    inner: usize,
    b: *const f32,
    ld_b: usize,
    c: *mut f32,
    ld_c: usize,
    c0: usize,
    len: usize,
    alpha: Alpha,
) {
    // SAFETY: all accesses are in the ranges the caller guarantees (see above); partial vectors
    // touch only `len` lanes.
    unsafe {
        let mut acc = [[S::zero(); NV]; R];
        for j in 0..inner {
            let row = b.add(j * ld_b + c0);
            let mut bv = [S::zero(); NV];
            for (v, x) in bv.iter_mut().enumerate() {
                let ptr = row.add(v * S::W);
                *x = if PARTIAL && v + 1 == NV { S::load_partial(ptr, len) } else { S::load(ptr) };
            }
            let a_j = a.ptr.add(j * a.col_stride);
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let s = S::splat(*a_j.add(r * a.row_stride));
                for (acc_rv, &b_v) in acc_r.iter_mut().zip(&bv) {
                    *acc_rv = S::fma(s, b_v, *acc_rv);
                }
            }
        }
        let (scale, add) = (S::splat(alpha.value), alpha.accumulate);
        for (r, acc_r) in acc.iter().enumerate() {
            let c_row = c.add(r * ld_c + c0);
            for (v, &acc_rv) in acc_r.iter().enumerate() {
                let ptr = c_row.add(v * S::W);
                if PARTIAL && v + 1 == NV {
                    let new = if add {
                        S::fma(acc_rv, scale, S::load_partial(ptr, len))
                    } else {
                        S::mul(acc_rv, scale)
                    };
                    S::store_partial(ptr, new, len);
                } else {
                    let new = if add { S::fma(acc_rv, scale, S::load(ptr)) } else { S::mul(acc_rv, scale) };
                    S::store(ptr, new);
                }
            }
        }
    }
}

/// `C += alpha A B` for `R` rows of `C` over all `width` columns: chunks of `NV` vectors, then
/// single vectors, the last one partial.
///
/// # Safety
/// As [`accumulate_block`] for all columns `[0, width)`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) unsafe fn accumulate_rows<S: Simd, const R: usize, const NV: usize>(
    a: Broadcast,
    inner: usize,
    b: *const f32,
    ld_b: usize,
    c: *mut f32,
    ld_c: usize,
    width: usize,
    alpha: Alpha,
) {
    let mut c0 = 0;
    // SAFETY: every call covers columns inside [0, width), as the caller guarantees.
    unsafe {
        while c0 + NV * S::W <= width {
            accumulate_block::<S, R, NV, false>(a, inner, b, ld_b, c, ld_c, c0, 0, alpha);
            c0 += NV * S::W;
        }
        while c0 + S::W <= width {
            accumulate_block::<S, R, 1, false>(a, inner, b, ld_b, c, ld_c, c0, 0, alpha);
            c0 += S::W;
        }
        if c0 < width {
            accumulate_block::<S, R, 1, true>(a, inner, b, ld_b, c, ld_c, c0, width - c0, alpha);
        }
    }
}

/// Rows of a narrow product ([`accumulate`] with `width <= 2 W`): 12 rows x one vector gives 12
/// independent multiply-add chains where the wide blocks would give `MR` (6 on AVX-512).
pub(super) const NARROW_ROWS: usize = 12;

/// `C += alpha A B` for `R` rows and `0 < width <= 2 W` columns, in one block of one or two
/// vectors (the last one partial unless `width` is a multiple of `W`).
///
/// # Safety
/// As [`accumulate_block`] for all columns `[0, width)`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) unsafe fn narrow_block<S: Simd, const R: usize>(
    a: Broadcast,
    inner: usize,
    b: *const f32,
    ld_b: usize,
    c: *mut f32,
    ld_c: usize,
    width: usize,
    alpha: Alpha,
) {
    let w = S::W;
    // SAFETY: each call covers exactly the columns [0, width), as the caller guarantees.
    unsafe {
        match width {
            0 => {}
            x if x == 2 * w => accumulate_block::<S, R, 2, false>(a, inner, b, ld_b, c, ld_c, 0, 0, alpha),
            x if x > w => accumulate_block::<S, R, 2, true>(a, inner, b, ld_b, c, ld_c, 0, x - w, alpha),
            x if x == w => accumulate_block::<S, R, 1, false>(a, inner, b, ld_b, c, ld_c, 0, 0, alpha),
            x => accumulate_block::<S, R, 1, true>(a, inner, b, ld_b, c, ld_c, 0, x, alpha),
        }
    }
}

/// `C += alpha A B` for `rows` rows of `C` (`rows x width`, row stride `ld_c`), `A` `rows x inner`
/// broadcast, `B` `inner x width` (row stride `ld_b`): blocks of `MR` rows, then of 4, 2 and
/// single rows.
///
/// # Safety
/// As [`accumulate_block`] for all rows `[0, rows)` and columns `[0, width)`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) unsafe fn accumulate<S: Simd, const MR: usize, const NV: usize>(
    rows: usize,
    a: Broadcast,
    inner: usize,
    b: *const f32,
    ld_b: usize,
    c: *mut f32,
    ld_c: usize,
    width: usize,
    alpha: Alpha,
) {
    // Narrow products (the small heads of a model, d <= 2 W): blocks of NARROW_ROWS rows x one or
    // two vectors, so that enough independent accumulators hide the multiply-add latency.
    let mut start = 0;
    if width <= 2 * S::W && MR < NARROW_ROWS {
        start = rows - rows % NARROW_ROWS;
        for r0 in (0..start).step_by(NARROW_ROWS) {
            // SAFETY: rows [r0, r0 + NARROW_ROWS) lie in [0, rows), columns in [0, width).
            unsafe {
                let a_r = Broadcast { ptr: a.ptr.add(r0 * a.row_stride), ..a };
                narrow_block::<S, NARROW_ROWS>(a_r, inner, b, ld_b, c.add(r0 * ld_c), ld_c, width, alpha);
            }
        }
    }
    let full = start + (rows - start) / MR * MR;
    let quads = if MR > 4 { full + (rows - full) / 4 * 4 } else { full };
    let pairs = if MR > 2 { quads + (rows - quads) / 2 * 2 } else { quads };
    // SAFETY: row blocks [r0, r0 + MR), [r0, r0 + 4), [r0, r0 + 2) and single rows lie in
    // [0, rows), as the caller guarantees; A and C are offset to the block's first row.
    unsafe {
        for r0 in (start..full).step_by(MR) {
            let a_r = Broadcast { ptr: a.ptr.add(r0 * a.row_stride), ..a };
            accumulate_rows::<S, MR, NV>(a_r, inner, b, ld_b, c.add(r0 * ld_c), ld_c, width, alpha);
        }
        for r0 in (full..quads).step_by(4) {
            let a_r = Broadcast { ptr: a.ptr.add(r0 * a.row_stride), ..a };
            accumulate_rows::<S, 4, NV>(a_r, inner, b, ld_b, c.add(r0 * ld_c), ld_c, width, alpha);
        }
        for r0 in (quads..pairs).step_by(2) {
            let a_r = Broadcast { ptr: a.ptr.add(r0 * a.row_stride), ..a };
            accumulate_rows::<S, 2, NV>(a_r, inner, b, ld_b, c.add(r0 * ld_c), ld_c, width, alpha);
        }
        for r0 in pairs..rows {
            let a_r = Broadcast { ptr: a.ptr.add(r0 * a.row_stride), ..a };
            accumulate_rows::<S, 1, NV>(a_r, inner, b, ld_b, c.add(r0 * ld_c), ld_c, width, alpha);
        }
    }
}

/// `x_i = e^{x_i - shift}`, returning the sum of the new values.
#[inline(always)]
pub(super) unsafe fn exp_shifted_sum<S: Simd>(x: &mut [f32], shift: f32) -> f32 {
    let full = x.len() - x.len() % S::W;
    // SAFETY: each access covers x[i..i + W] with i + W <= full <= x.len(), the partial ones the
    // x.len() - full < W elements from full.
    unsafe {
        let shift = S::splat(shift);
        let mut acc = S::zero();
        for i in (0..full).step_by(S::W) {
            let ptr = x.as_mut_ptr().add(i);
            let y = S::exp(S::sub(S::load(ptr), shift));
            S::store(ptr, y);
            acc = S::add(acc, y);
        }
        if full < x.len() {
            let (ptr, len) = (x.as_mut_ptr().add(full), x.len() - full);
            S::store_partial(ptr, S::exp(S::sub(S::load_partial(ptr, len), shift)), len);
            acc = S::add(acc, S::load_partial(ptr, len)); // zero beyond the tail
        }
        S::reduce_add(acc)
    }
}

/// Pointers to the `MR` query rows `i0 + r` (clamped to the last row `n - 1`) of a row-major
/// `n x width` matrix.
#[inline(always)]
pub(super) fn clamped_rows<const MR: usize>(
    x: &[f32],
    n: usize,
    width: usize,
    i0: usize,
) -> [*const f32; MR] {
    core::array::from_fn(|r| x[(i0 + r).min(n - 1) * width..].as_ptr())
}

/// Fills `buffer` (`strip` rows of stride `ld`, `strip` a multiple of `MR`) with `scale X_s Y_b^T` for strip rows
/// `[i0, i0 + strip)` of `x` (`n x width`, rows clamped) against the `panels` of keys
/// `[j0, j0 + bk)` (`j0` a multiple of the panel width), whole panels.
///
/// # Safety
/// The CPU has `S`'s features; `x.len() == n width`, `n > 0`; `panels` holds `ceil((j0 + bk) / NR)`
/// panels of `width x NR`; `buffer` holds `strip ld` elements with `ceil(bk / NR) NR <= ld`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) unsafe fn logits<S: Simd, const MR: usize, const NV: usize>(
    x: &[f32],
    n: usize,
    width: usize,
    i0: usize,
    strip: usize,
    panels: &[f32],
    j0: usize,
    bk: usize,
    scale: f32,
    buffer: &mut [f32],
    ld: usize,
) {
    let nr = NV * S::W;
    for g in (0..strip).step_by(MR) {
        let rows = clamped_rows::<MR>(x, n, width, i0 + g);
        for t in 0..bk.div_ceil(nr) {
            let panel = &panels[(j0 + t * nr) * width..(j0 + (t + 1) * nr) * width];
            let out = &mut buffer[g * ld + t * nr..(g + MR - 1) * ld + (t + 1) * nr];
            // SAFETY: rows are `width` long rows of x; the panel slice has width nr elements; out
            // spans rows g..g + MR of the buffer at columns [t nr, (t + 1) nr), inside each row as
            // (t + 1) nr <= ceil(bk / nr) nr <= ld. The CPU has the features (caller).
            unsafe { panel_product::<S, MR, NV>(&rows, width, panel.as_ptr(), scale, out.as_mut_ptr(), ld) };
        }
    }
}
