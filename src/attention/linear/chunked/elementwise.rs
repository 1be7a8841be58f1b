//! Elementwise and vector pieces of the chunk loops: reductions, `phi` and its derivative over
//! rows, transposes, and the normalization of the output gradient.

use super::Layout;
use crate::attention::linear::{phi, phi_derivative_from};
use crate::Scalar;

/// Independent partial sums of the reductions below (a multiple of every vector width).
pub(super) const LANES: usize = 16;

/// `sum_i x_i y_i` in [`LANES`] partial sums, so that it vectorizes.
#[inline(always)]
pub(super) fn dot<T: Scalar>(x: &[T], y: &[T]) -> T {
    let mut acc = [T::zero(); LANES];
    let (xc, yc) = (x.chunks_exact(LANES), y.chunks_exact(LANES));
    let mut tail = T::zero();
    for (a, b) in xc.remainder().iter().zip(yc.remainder()) {
        tail += *a * *b;
    }
    for (a, b) in xc.zip(yc) {
        for lane in 0..LANES {
            acc[lane] += a[lane] * b[lane];
        }
    }
    acc.iter().fold(tail, |s, &a| s + a)
}

/// `sum_i x_i` in [`LANES`] partial sums.
#[inline(always)]
pub(super) fn sum<T: Scalar>(x: &[T]) -> T {
    let mut acc = [T::zero(); LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder().iter().fold(T::zero(), |s, &a| s + a);
    for a in chunks {
        for lane in 0..LANES {
            acc[lane] += a[lane];
        }
    }
    acc.iter().fold(tail, |s, &a| s + a)
}

/// `y += alpha x`.
#[inline(always)]
pub(super) fn axpy<T: Scalar>(alpha: T, x: &[T], y: &mut [T]) {
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

/// Whether every entry of the `rows x width` matrix at `x` (leading dimension `ld`) is finite:
/// `0 * x` is `0` exactly for finite `x` and NaN for NaN and infinities.
#[inline(always)]
pub(super) fn all_finite<T: Scalar>(rows: usize, width: usize, x: &[T], ld: usize) -> bool {
    let mut acc = [T::zero(); LANES];
    for r in 0..rows {
        let row = &x[r * ld..r * ld + width];
        let chunks = row.chunks_exact(LANES);
        for (lane, &v) in chunks.remainder().iter().enumerate() {
            acc[lane] += v * T::zero();
        }
        for a in chunks {
            for lane in 0..LANES {
                acc[lane] += a[lane] * T::zero();
            }
        }
    }
    acc.iter().all(|&a| a == T::zero())
}

/// `dst_i = phi(src_i)`; for `f32` the vector exponential ([`crate::linalg::exp::exp1`], fused with FMA).
#[inline(always)]
pub(in crate::attention::linear) fn phi_slice<T: Scalar, const FUSED: bool>(src: &[T], dst: &mut [T]) {
    match T::f32_slice(src) {
        Some(src) => {
            let dst = T::f32_slice_mut(dst).expect("same type as src");
            for (d, &x) in dst.iter_mut().zip(src) {
                let e = crate::linalg::exp::exp1::<FUSED>(x);
                *d = if x > 0.0 { x + 1.0 } else { e };
            }
        }
        None => {
            for (d, &x) in dst.iter_mut().zip(src) {
                *d = phi(x);
            }
        }
    }
}

/// `dst` row `r` = `phi` of row `t0 + r` of `src`, for `c` rows (`dst` contiguous, `width` wide).
#[inline(always)]
pub(super) fn phi_rows<T: Scalar, const FUSED: bool>(
    src: &[T],
    layout: Layout,
    t0: usize,
    c: usize,
    dst: &mut [T],
) {
    let w = layout.width;
    for r in 0..c {
        phi_slice::<T, FUSED>(&src[layout.row(t0 + r)], &mut dst[r * w..(r + 1) * w]);
    }
}

/// `dst` (`cols x rows`, leading dimension `ldd`) = the transpose of `src` (`rows x cols`,
/// leading dimension `lds`). With `SIMD` (only inside the AVX2 and AVX-512 drivers) `f32` runs in
/// 8 x 8 register tiles.
#[inline(always)]
pub(super) fn transpose<T: Scalar, const SIMD: bool>(
    rows: usize,
    cols: usize,
    src: &[T],
    lds: usize,
    dst: &mut [T],
    ldd: usize,
) {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    if SIMD {
        if let Some(src) = T::f32_slice(src) {
            let dst = T::f32_slice_mut(dst).expect("same type as src");
            // SAFETY: `SIMD` is set only by the drivers compiled for AVX2 or AVX-512 (which
            // implies AVX2), called after run-time detection of those features.
            return unsafe { crate::arch::x86_64::transpose_f32(rows, cols, src, lds, dst, ldd) };
        }
    }
    for i in 0..rows {
        for (j, &x) in src[i * lds..i * lds + cols].iter().enumerate() {
            dst[j * ldd + i] = x;
        }
    }
}

/// `d_x` row `t0 + r` = `grad_r * phi'(x_r)` for `c` rows (`fx` holds `phi(x)`; `phi'(x)` is `1`
/// for `x > 0`, else `phi(x)`).
#[inline(always)]
pub(super) fn write_through_phi<T: Scalar>(
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

/// `den_r += eps`, `g_r = dO_r / den_r` (`d_out` rows at `layout`), `h_r = -(g_r . num_r) / den_r`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn normalize_gradient<T: Scalar>(
    c: usize,
    d_v: usize,
    eps: T,
    d_out: &[T],
    layout: Layout,
    t0: usize,
    num: &[T],
    den: &mut [T],
    g: &mut [T],
    h: &mut [T],
) {
    for r in 0..c {
        let denominator = den[r] + eps;
        den[r] = denominator;
        let g_r = &mut g[r * d_v..(r + 1) * d_v];
        for (x, &d) in g_r.iter_mut().zip(&d_out[layout.row(t0 + r)]) {
            *x = d / denominator;
        }
        h[r] = -dot(g_r, &num[r * d_v..(r + 1) * d_v]) / denominator;
    }
}
