//! GELU activation, tanh form (Hendrycks & Gimpel 2016, eq. for the fast approximation):
//! `gelu(u) = u/2 (1 + tanh(k (u + c u^3)))`, `k = sqrt(2/pi)`, `c = 0.044715`.
//!
//! Derivative: with `t = tanh(k (u + c u^3))`,
//! `gelu'(u) = (1 + t)/2 + u/2 (1 - t^2) k (1 + 3 c u^2)`.
//! Elementwise, allocation-free; NaN in gives NaN out. For `|u|` large `t` saturates to `±1`
//! (no overflow: `tanh` is bounded), so `gelu(u) -> u` or `0`.
//!
//! The MLP uses the fused pair [`bias_gelu_forward`] (bias, GELU and its slope in one pass, the
//! slope kept for the backward pass, so that the backward computes no `tanh`) and
//! [`gelu_backward_cached`]. In `f32` the fused forward runs one loop with `tanh` in registers,
//! compiled for AVX-512, AVX2/FMA or portable (run-time detection, as `crate::linalg::exp`).

use crate::error::{check_len, check_matrix};
use crate::linalg::exp::tanh1;
use crate::{Error, Result, Scalar};

const CUBIC: f64 = 0.044715;

#[inline]
fn inner<T: Scalar>(u: T) -> T {
    let k = T::of_f64(core::f64::consts::FRAC_2_SQRT_PI * core::f64::consts::FRAC_1_SQRT_2);
    k * (u + T::of_f64(CUBIC) * u * u * u)
}

/// `out_i = gelu(u_i)` (tanh form); `out.len() == u.len()`.
pub fn gelu_forward<T: Scalar>(u: &[T], out: &mut [T]) -> Result<()> {
    check_len("out", out.len(), u.len())?;
    for (o, &x) in out.iter_mut().zip(u) {
        *o = inner(x);
    }
    T::tanh_in_place(out); // vectorized (Scalar::tanh_in_place)
    for (o, &x) in out.iter_mut().zip(u) {
        *o = T::HALF * x * (T::one() + *o);
    }
    Ok(())
}

/// Elements per block of the backward passes' `tanh` scratch (on the stack).
const BLOCK: usize = 256;

/// `gelu'(u)` for one element, given `t = tanh(inner(u))`.
#[inline]
fn slope<T: Scalar>(u: T, t: T) -> T {
    let k = T::of_f64(core::f64::consts::FRAC_2_SQRT_PI * core::f64::consts::FRAC_1_SQRT_2);
    T::HALF * (T::one() + t)
        + T::HALF * u * (T::one() - t * t) * k * (T::one() + T::of_f64(3.0 * CUBIC) * u * u)
}

/// `d_u_i = gelu'(u_i) d_out_i`, overwritten; all three slices have the same length.
pub fn gelu_backward<T: Scalar>(u: &[T], d_out: &[T], d_u: &mut [T]) -> Result<()> {
    check_len("d_out", d_out.len(), u.len())?;
    check_len("d_u", d_u.len(), u.len())?;
    d_u.copy_from_slice(d_out);
    gelu_backward_in_place(u, d_u)
}

/// `grad_i = gelu'(u_i) grad_i` in place (the backward pass when `dG` may be overwritten by `dU`).
pub fn gelu_backward_in_place<T: Scalar>(u: &[T], grad: &mut [T]) -> Result<()> {
    check_len("grad", grad.len(), u.len())?;
    let mut t = [T::zero(); BLOCK];
    for (grad, u) in grad.chunks_mut(BLOCK).zip(u.chunks(BLOCK)) {
        let t = &mut t[..u.len()];
        for (ti, &x) in t.iter_mut().zip(u) {
            *ti = inner(x);
        }
        T::tanh_in_place(t);
        for ((g, &x), &ti) in grad.iter_mut().zip(u).zip(t.iter()) {
            *g = slope(x, ti) * *g;
        }
    }
    Ok(())
}

/// Fused bias and GELU with its slope, for rows of `d` elements: for each element of the
/// `n x d` matrix `hidden` (holding `X W_1` on entry), with `v = hidden_ij + bias_j`,
/// writes `g_ij = gelu(v)` and overwrites `hidden_ij` with `gelu'(v)` (the backward pass's factor,
/// see [`gelu_backward_cached`]). `bias` has `d` elements, `g` as many as `hidden`.
///
/// `f64`: the formulas of [`gelu_forward`] and [`gelu_backward`] (libm `tanh`). `f32`: one fused
/// loop (`tanh` of `crate::linalg::exp`, absolute error about `4e-7`); against the exact values at the
/// same `v`, `|g - gelu(v)| <= 4 eps (1 + |v|)` and `|g' - gelu'(v)| <= 8 eps (1 + |v|)`
/// (`eps = 2^-23`; tested). NaN in gives NaN out.
///
/// ```
/// use sd_attention::model::gelu::bias_gelu_forward;
/// let mut hidden = [1.0f64, -1.0]; // one row, d = 2
/// let mut g = [0.0; 2];
/// bias_gelu_forward(2, &[0.0, 1.0], &mut hidden, &mut g)?;
/// assert!((g[0] - 0.841_191_990_607_477_3).abs() < 1e-12 && g[1] == 0.0);
/// assert!(hidden[1] == 0.5); // gelu'(0) = 1/2
/// # Ok::<(), sd_attention::Error>(())
/// ```
pub fn bias_gelu_forward<T: Scalar>(d: usize, bias: &[T], hidden: &mut [T], g: &mut [T]) -> Result<()> {
    check_len("bias", bias.len(), d)?;
    check_len("g", g.len(), hidden.len())?;
    if d == 0 {
        return if hidden.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidParameter { what: "d", expected: "at least 1 for a non-empty hidden" })
        };
    }
    check_matrix("hidden", hidden.len(), hidden.len() / d, d)?;
    if let (Some(b), Some(h), Some(out)) = (T::f32_slice(bias), T::f32_slice_mut(hidden), T::f32_slice_mut(g))
    {
        bias_gelu_f32(b, h, out);
        return Ok(());
    }
    let mut t = [T::zero(); BLOCK];
    for (h_row, g_row) in hidden.chunks_exact_mut(d).zip(g.chunks_exact_mut(d)) {
        for ((h, g), b) in h_row.chunks_mut(BLOCK).zip(g_row.chunks_mut(BLOCK)).zip(bias.chunks(BLOCK)) {
            let t = &mut t[..h.len()];
            for ((ti, hi), &bi) in t.iter_mut().zip(h.iter_mut()).zip(b) {
                *hi += bi;
                *ti = inner(*hi);
            }
            T::tanh_in_place(t);
            for ((gi, hi), &ti) in g.iter_mut().zip(h.iter_mut()).zip(t.iter()) {
                let v = *hi;
                *gi = T::HALF * v * (T::one() + ti);
                *hi = slope(v, ti);
            }
        }
    }
    Ok(())
}

/// The GELU backward from the slope [`bias_gelu_forward`] cached, with the bias gradient: for rows
/// of `d` elements, `grad_ij = slope_ij grad_ij` in place (`dU = gelu'(U) .* dG`) and
/// `d_bias_j += sum_i grad_ij` (the new `grad`, rows in order). `slope` and `grad` have the same
/// length, a multiple of `d`; `d_bias` has `d` elements. One pass; in `f32` compiled for
/// AVX-512 or AVX2 when the CPU has them (same operations in the same order: identical results).
pub fn gelu_backward_cached<T: Scalar>(
    d: usize,
    slope: &[T],
    grad: &mut [T],
    d_bias: &mut [T],
) -> Result<()> {
    check_len("grad", grad.len(), slope.len())?;
    check_len("d_bias", d_bias.len(), d)?;
    if d == 0 {
        return if grad.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidParameter { what: "d", expected: "at least 1 for a non-empty grad" })
        };
    }
    check_matrix("grad", grad.len(), grad.len() / d, d)?;
    if let (Some(s), Some(g), Some(db)) =
        (T::f32_slice(slope), T::f32_slice_mut(grad), T::f32_slice_mut(d_bias))
    {
        slope_backward_f32(s, g, db);
        return Ok(());
    }
    slope_backward_body(slope, grad, d_bias);
    Ok(())
}

/// The loop of [`gelu_backward_cached`] (rows of `d_bias.len()`), shared by every variant.
#[inline(always)]
fn slope_backward_body<T: Scalar>(slope: &[T], grad: &mut [T], d_bias: &mut [T]) {
    let d = d_bias.len();
    for (g_row, s_row) in grad.chunks_exact_mut(d).zip(slope.chunks_exact(d)) {
        for ((g, &s), db) in g_row.iter_mut().zip(s_row).zip(d_bias.iter_mut()) {
            *g *= s;
            *db += *g;
        }
    }
}

crate::arch::multiversion! {
    /// [`slope_backward_f32`] in the variant `isa` (the same multiplies and adds in every one).
    fn slope_backward_isa(slope: &[f32], grad: &mut [f32], d_bias: &mut [f32]);
    avx512("avx512f") => slope_backward_body(slope, grad, d_bias);
    avx2("avx2") => slope_backward_body(slope, grad, d_bias);
    portable => slope_backward_body(slope, grad, d_bias);
}

/// The `f32` path of [`gelu_backward_cached`], in the variant [`crate::arch`] chooses.
fn slope_backward_f32(slope: &[f32], grad: &mut [f32], d_bias: &mut [f32]) {
    slope_backward_isa(crate::arch::isa(), slope, grad, d_bias)
}

/// `k = sqrt(2/pi)` in `f32`.
const K_F32: f32 = 0.797_884_6;

/// One row of the fused `f32` bias-GELU (shared by every instruction-set variant): `v = h + b`,
/// `z = k v (1 + c v^2)`, `t = tanh z`, `g = v/2 (1 + t)`, `h = (1 + t)/2 + v/2 (1 - t^2) k (1 + 3 c v^2)`.
#[inline(always)]
fn bias_gelu_row<const FUSED: bool>(bias: &[f32], hidden: &mut [f32], g: &mut [f32]) {
    const KC: f32 = K_F32 * CUBIC as f32;
    for ((h, gi), &b) in hidden.iter_mut().zip(g.iter_mut()).zip(bias) {
        let v = *h + b;
        let v2 = v * v;
        let t = tanh1::<FUSED>(v * f32::multiply_add::<FUSED>(KC, v2, K_F32));
        let half_v = 0.5 * v;
        *gi = f32::multiply_add::<FUSED>(half_v, t, half_v);
        let dz = f32::multiply_add::<FUSED>(3.0 * KC, v2, K_F32);
        *h = f32::multiply_add::<FUSED>(
            half_v * f32::multiply_add::<FUSED>(-t, t, 1.0),
            dz,
            f32::multiply_add::<FUSED>(0.5, t, 0.5),
        );
    }
}

#[inline(always)]
fn bias_gelu_body<const FUSED: bool>(bias: &[f32], hidden: &mut [f32], g: &mut [f32]) {
    let d = bias.len();
    for (h, g) in hidden.chunks_exact_mut(d).zip(g.chunks_exact_mut(d)) {
        bias_gelu_row::<FUSED>(bias, h, g);
    }
}

crate::arch::multiversion! {
    /// [`bias_gelu_f32`] in the variant `isa`: fused multiply-adds in the AVX variants.
    fn bias_gelu_isa(bias: &[f32], hidden: &mut [f32], g: &mut [f32]);
    avx512("avx512f,fma") => bias_gelu_body::<true>(bias, hidden, g);
    avx2("avx2,fma") => bias_gelu_body::<true>(bias, hidden, g);
    portable => bias_gelu_body::<false>(bias, hidden, g);
}

/// The `f32` path of [`bias_gelu_forward`] (`bias.len() >= 1`, `hidden.len()` a multiple of it,
/// `g` as long), in the variant [`crate::arch`] chooses.
fn bias_gelu_f32(bias: &[f32], hidden: &mut [f32], g: &mut [f32]) {
    bias_gelu_isa(crate::arch::isa(), bias, hidden, g)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::boxed::Box;
    use std::vec;
    use std::vec::Vec;

    /// `(gelu(v), gelu'(v))` in f64 from libm's `tanh`: the reference.
    fn reference(v: f64) -> (f64, f64) {
        let k = (2.0 / core::f64::consts::PI).sqrt();
        let t = libm::tanh(k * (v + CUBIC * v * v * v));
        (0.5 * v * (1.0 + t), 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * k * (1.0 + 3.0 * CUBIC * v * v))
    }

    type Variant = Box<dyn Fn(&[f32], &mut [f32], &mut [f32])>;

    /// Every `f32` variant the CPU has (portable, AVX2/FMA, AVX-512), whatever the dispatch
    /// chooses, and the dispatched path, against the f64 reference at the same `v = h + b`
    /// (rounded in f32, as the kernel forms it), on rows of edge widths, within the documented
    /// bounds; NaN propagates; saturation gives exact limits.
    #[test]
    fn bias_gelu_f32_variants_match_f64_reference() {
        let mut variants: Vec<(&str, Variant)> = vec![("dispatched", Box::new(bias_gelu_f32))];
        for isa in crate::arch::available() {
            variants.push((
                isa.name(),
                Box::new(move |b: &[f32], h: &mut [f32], g: &mut [f32]| bias_gelu_isa(isa, b, h, g)),
            ));
        }
        let eps = f32::EPSILON as f64;
        for (name, kernel) in variants {
            for d in [1usize, 2, 7, 16, 17, 31, 256, 257] {
                let rows = 3;
                let bias: Vec<f32> = (0..d).map(|j| (j as f32 * 0.37).sin()).collect();
                let pre: Vec<f32> = (0..rows * d).map(|i| (i as f32 * 0.173).sin() * 7.0 - 0.5).collect();
                let (mut h, mut g) = (pre.clone(), vec![0.0f32; rows * d]);
                kernel(&bias, &mut h, &mut g);
                for i in 0..rows * d {
                    let v = pre[i] + bias[i % d];
                    let (ge, se) = reference(v as f64);
                    let bound = 1.0 + (v as f64).abs();
                    assert!(
                        (g[i] as f64 - ge).abs() <= 4.0 * eps * bound,
                        "{name} d {d} gelu({v}) = {}",
                        g[i]
                    );
                    assert!(
                        (h[i] as f64 - se).abs() <= 8.0 * eps * bound,
                        "{name} d {d} gelu'({v}) = {}",
                        h[i]
                    );
                }
            }
            let (mut h, mut g) = ([f32::NAN, 1e4, -1e4, 0.0], [0.0f32; 4]);
            kernel(&[0.0], &mut h, &mut g);
            assert!(h[0].is_nan() && g[0].is_nan(), "{name}");
            assert_eq!((g[1], h[1], g[2], h[2], g[3], h[3]), (1e4, 1.0, 0.0, 0.0, 0.0, 0.5), "{name}");
        }
    }

    /// Every f32 variant of the slope backward the CPU has, whatever the dispatch chooses, gives exactly the
    /// portable loop's results (the same multiplies and adds in the same order), and matches an f64
    /// reference within one rounding per operation; ragged widths.
    #[test]
    fn slope_backward_variants_agree() {
        let mut variants: Vec<(&str, Variant)> = vec![("dispatched", Box::new(slope_backward_f32))];
        for isa in crate::arch::available() {
            variants.push((
                isa.name(),
                Box::new(move |s: &[f32], g: &mut [f32], d: &mut [f32]| slope_backward_isa(isa, s, g, d)),
            ));
        }
        for d in [1usize, 7, 16, 33, 256] {
            let rows = 5;
            let slope: Vec<f32> = (0..rows * d).map(|i| (i as f32 * 0.31).cos()).collect();
            let grad: Vec<f32> = (0..rows * d).map(|i| (i as f32 * 0.77).sin()).collect();
            let (mut g_ref, mut db_ref) = (grad.clone(), vec![0.5f32; d]);
            slope_backward_body(&slope, &mut g_ref, &mut db_ref);
            for j in 0..d {
                let exact: f64 =
                    (0..rows).map(|i| slope[i * d + j] as f64 * grad[i * d + j] as f64).sum::<f64>() + 0.5;
                assert!(
                    (db_ref[j] as f64 - exact).abs()
                        <= (rows as f64 + 1.0) * f32::EPSILON as f64 * (rows as f64 + 0.5)
                );
            }
            for (name, kernel) in &variants {
                let (mut g, mut db) = (grad.clone(), vec![0.5f32; d]);
                kernel(&slope, &mut g, &mut db);
                assert_eq!((&g, &db), (&g_ref, &db_ref), "{name} d {d}");
            }
        }
    }

    /// The generic (f64) path and the f32 path against the reference, through the public entry,
    /// on a dense grid; shape errors.
    #[test]
    fn bias_gelu_forward_matches_reference_and_checks_shapes() {
        let d = 5;
        let pre: Vec<f64> = (0..4000).map(|i| (i as f64 - 2000.0) * 0.004).collect();
        let bias = [0.0, 0.5, -0.5, 1.0, -1.0];
        let (mut h, mut g) = (pre.clone(), vec![0.0; pre.len()]);
        bias_gelu_forward(d, &bias, &mut h, &mut g).unwrap();
        for i in 0..pre.len() {
            let (ge, se) = reference(pre[i] + bias[i % d]);
            assert!((g[i] - ge).abs() <= 1e-14 && (h[i] - se).abs() <= 1e-14, "{i}");
        }
        let mut h32: Vec<f32> = pre.iter().map(|&x| x as f32).collect();
        let mut g32 = vec![0.0f32; pre.len()];
        let bias32 = bias.map(|b| b as f32);
        bias_gelu_forward(d, &bias32, &mut h32, &mut g32).unwrap();
        for i in 0..pre.len() {
            let v = pre[i] as f32 + bias32[i % d];
            let (ge, _) = reference(v as f64);
            assert!((g32[i] as f64 - ge).abs() <= 4.0 * f32::EPSILON as f64 * (1.0 + (v as f64).abs()));
        }
        assert!(matches!(
            bias_gelu_forward(2, &[0.0], &mut [0.0f64; 2], &mut [0.0; 2]),
            Err(Error::ShapeMismatch { .. })
        ));
        assert!(matches!(
            bias_gelu_forward(2, &[0.0; 2], &mut [0.0f64; 3], &mut [0.0; 3]),
            Err(Error::ShapeMismatch { .. })
        ));
        assert!(matches!(
            bias_gelu_forward(2, &[0.0; 2], &mut [0.0f64; 2], &mut [0.0; 4]),
            Err(Error::ShapeMismatch { .. })
        ));
        assert!(bias_gelu_forward::<f64>(0, &[], &mut [], &mut []).is_ok());
        let (mut grad, mut db) = ([2.0, 3.0, 4.0, 5.0], [1.0, 0.0]);
        gelu_backward_cached(2, &[0.5, -1.0, 0.25, 2.0], &mut grad, &mut db).unwrap();
        assert_eq!((grad, db), ([1.0, -3.0, 1.0, 10.0], [3.0, 7.0]));
        assert!(gelu_backward_cached(2, &[0.5], &mut grad, &mut db).is_err());
        assert!(gelu_backward_cached(3, &[0.5; 4], &mut grad, &mut [0.0; 3]).is_err());
        assert!(gelu_backward_cached(2, &[0.5; 4], &mut grad, &mut [0.0; 3]).is_err());
    }
}
