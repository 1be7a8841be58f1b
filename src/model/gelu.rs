//! GELU activation, tanh form (Hendrycks & Gimpel 2016, eq. for the fast approximation):
//! `gelu(u) = u/2 (1 + tanh(k (u + c u^3)))`, `k = sqrt(2/pi)`, `c = 0.044715`.
//!
//! Derivative: with `t = tanh(k (u + c u^3))`,
//! `gelu'(u) = (1 + t)/2 + u/2 (1 - t^2) k (1 + 3 c u^2)`.
//! Elementwise, allocation-free; NaN in gives NaN out. For `|u|` large `t` saturates to `±1`
//! (no overflow: `tanh` is bounded), so `gelu(u) -> u` or `0`.

use crate::error::check_len;
use crate::{Result, Scalar};

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
