//! Per-row normalization of the residual stream: RMSNorm (Zhang & Sennrich 2019) and LayerNorm
//! (Ba, Kiros & Hinton 2016), forward and backward. Rows are tokens (`x` is `n x d`).
//!
//! * RMSNorm: `r = 1/sqrt(mean_j x_j^2 + eps)`, `xhat = x r`, `y = g * xhat`.
//!   Backward: `dxhat = g * dy`, `dx = r (dxhat - xhat mean_j(dxhat_j xhat_j))`, `dg += sum_rows dy * xhat`.
//! * LayerNorm: `mu = mean_j x_j`, `r = 1/sqrt(mean_j (x_j - mu)^2 + eps)`, `xhat = (x - mu) r`,
//!   `y = g * xhat + b`. Backward: `dx = r (dxhat - mean(dxhat) - xhat mean(dxhat xhat))`,
//!   `dg += sum_rows dy * xhat`, `db += sum_rows dy`.
//!
//! The forward pass stores `(mu, r)` per row in `stats` (`2 n` elements; `mu = 0` for RMSNorm) for
//! the backward pass. `eps` is [`NORM_EPS`]. Allocation-free. A row holding NaN or infinity gives
//! NaN outputs for that row (nothing is rejected).

use crate::error::{check_len, check_matrix, check_workspace};
use crate::linalg::dense::Update;
use crate::workspace::Req;
use crate::{Result, Scalar};

/// The `eps` inside the square root of both norms: `1e-5`, as an `f64`; [`norm_eps`] gives it in
/// any scalar type.
pub const NORM_EPS: f64 = 1e-5;

/// [`NORM_EPS`] rounded to `T`.
pub fn norm_eps<T: Scalar>() -> T {
    T::of_f64(NORM_EPS)
}

/// Which normalization a layer applies before its attention and MLP sub-layers (pre-norm).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormKind {
    /// No normalization (S-D models train without it): `y = x`.
    None,
    /// RMSNorm with a learned gain `g` (`d` parameters).
    Rms,
    /// LayerNorm with a learned gain `g` and bias `b` (`2 d` parameters).
    Layer,
}

impl NormKind {
    /// Parameters of one norm over `d` features: `0`, `d` or `2 d` (gain, then bias).
    pub fn param_len(self, d: usize) -> usize {
        match self {
            NormKind::None => 0,
            NormKind::Rms => d,
            NormKind::Layer => d.saturating_mul(2),
        }
    }
}

/// `stats` elements needed by [`norm_forward`]: `2 n`.
pub fn norm_stats_len(n: usize) -> usize {
    Req::array(n, 2).saturating()
}

/// `y = norm(x)` row by row (`y` overwritten; a copy of `x` for [`NormKind::None`]). `params` holds
/// `kind.param_len(d)` elements: the gain, then (LayerNorm) the bias.
pub fn norm_forward<T: Scalar>(
    kind: NormKind,
    n: usize,
    d: usize,
    params: &[T],
    x: &[T],
    y: &mut [T],
    stats: &mut [T],
) -> Result<()> {
    check_matrix("x", x.len(), n, d)?;
    check_matrix("y", y.len(), n, d)?;
    check_len("params", params.len(), kind.param_len(d))?;
    if kind == NormKind::None {
        crate::parallel::zip_each(y, x, |a, &b| *a = b);
        return Ok(());
    }
    check_workspace(stats.len(), norm_stats_len(n))?;
    if d == 0 {
        return Ok(());
    }
    let inv_d = T::one() / T::of_usize(d);
    let eps = norm_eps::<T>();
    let gain = &params[..d];
    for (i, (xr, yr)) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)).enumerate() {
        let mu = if kind == NormKind::Layer { xr.iter().copied().sum::<T>() * inv_d } else { T::zero() };
        let var = xr.iter().map(|&v| (v - mu) * (v - mu)).sum::<T>() * inv_d;
        let r = T::one() / (var + eps).sqrt();
        stats[2 * i] = mu;
        stats[2 * i + 1] = r;
        for j in 0..d {
            yr[j] = gain[j] * (xr[j] - mu) * r;
        }
        if kind == NormKind::Layer {
            for (v, &b) in yr.iter_mut().zip(&params[d..]) {
                *v += b;
            }
        }
    }
    Ok(())
}

/// Backward of [`norm_forward`]: `dx` (overwritten or accumulated per `dx_update`) from `dy`, and
/// `d_params += ` the gain (and bias) gradients. `stats` is what the forward pass stored.
#[allow(clippy::too_many_arguments)]
pub fn norm_backward<T: Scalar>(
    kind: NormKind,
    n: usize,
    d: usize,
    params: &[T],
    x: &[T],
    stats: &[T],
    dy: &[T],
    dx: &mut [T],
    dx_update: Update,
    d_params: &mut [T],
) -> Result<()> {
    check_matrix("x", x.len(), n, d)?;
    check_matrix("dy", dy.len(), n, d)?;
    check_matrix("dx", dx.len(), n, d)?;
    check_len("params", params.len(), kind.param_len(d))?;
    check_len("d_params", d_params.len(), kind.param_len(d))?;
    if kind == NormKind::None {
        match dx_update {
            Update::Overwrite => crate::parallel::zip_each(dx, dy, |a, &b| *a = b),
            Update::Accumulate => crate::parallel::zip_each(dx, dy, |a, &b| *a += b),
        }
        return Ok(());
    }
    check_workspace(stats.len(), norm_stats_len(n))?;
    if d == 0 {
        return Ok(());
    }
    let inv_d = T::one() / T::of_usize(d);
    let (d_gain, d_bias) = d_params.split_at_mut(d);
    let gain = &params[..d];
    let rows = x.chunks_exact(d).zip(dy.chunks_exact(d)).zip(dx.chunks_exact_mut(d));
    for (i, ((xr, dyr), dxr)) in rows.enumerate() {
        let (mu, r) = (stats[2 * i], stats[2 * i + 1]);
        let (mut mean_dxhat, mut mean_dxhat_xhat) = (T::zero(), T::zero());
        for j in 0..d {
            let xhat = (xr[j] - mu) * r;
            let dxhat = gain[j] * dyr[j];
            mean_dxhat += dxhat;
            mean_dxhat_xhat += dxhat * xhat;
            d_gain[j] += dyr[j] * xhat;
        }
        mean_dxhat *= inv_d;
        mean_dxhat_xhat *= inv_d;
        if kind == NormKind::Rms {
            mean_dxhat = T::zero();
        } else {
            for (b, &g) in d_bias.iter_mut().zip(dyr) {
                *b += g;
            }
        }
        for j in 0..d {
            let xhat = (xr[j] - mu) * r;
            let g = r * (gain[j] * dyr[j] - mean_dxhat - xhat * mean_dxhat_xhat);
            match dx_update {
                Update::Overwrite => dxr[j] = g,
                Update::Accumulate => dxr[j] += g,
            }
        }
    }
    Ok(())
}
