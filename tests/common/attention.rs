//! Naive f64 references for softmax and S-D attention (`docs/math.md` sections 4 and 5): the `n x n`
//! probability matrix is materialized, every formula written out.

/// Forward of softmax attention with the full `P`: returns `(out, lse, p)`. `mask` is an additive
/// `n x n` matrix (row = query) or `None`; causal hides `j > i`. Fully masked rows: `out = 0`,
/// `lse = -inf`, `P = 0`.
#[allow(clippy::too_many_arguments)]
pub fn naive_softmax_attention(
    n: usize,
    d_k: usize,
    d_v: usize,
    q: &[f64],
    k: &[f64],
    v: &[f64],
    mask: Option<&[f64]>,
    causal: bool,
    scale: f64,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut p = vec![0.0; n * n];
    let mut lse = vec![f64::NEG_INFINITY; n];
    let mut out = vec![0.0; n * d_v];
    for i in 0..n {
        let mut logits = vec![f64::NEG_INFINITY; n];
        for j in 0..n {
            if causal && j > i {
                continue;
            }
            let dot: f64 = (0..d_k).map(|t| q[i * d_k + t] * k[j * d_k + t]).sum();
            logits[j] = scale * dot + mask.map_or(0.0, |m| m[i * n + j]);
        }
        let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        if max == f64::NEG_INFINITY {
            continue;
        }
        let sum: f64 = logits.iter().map(|a| (a - max).exp()).sum();
        lse[i] = max + sum.ln();
        for j in 0..n {
            p[i * n + j] = (logits[j] - max).exp() / sum;
            for t in 0..d_v {
                out[i * d_v + t] += p[i * n + j] * v[j * d_v + t];
            }
        }
    }
    (out, lse, p)
}

/// Backward of softmax attention from the materialized `P` (`docs/math.md` section 4): `(dq, dk, dv)`.
#[allow(clippy::too_many_arguments)]
pub fn naive_softmax_backward(
    n: usize,
    d_k: usize,
    d_v: usize,
    q: &[f64],
    k: &[f64],
    v: &[f64],
    p: &[f64],
    d_out: &[f64],
    scale: f64,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (mut dq, mut dk, mut dv) = (vec![0.0; n * d_k], vec![0.0; n * d_k], vec![0.0; n * d_v]);
    for i in 0..n {
        let dp: Vec<f64> =
            (0..n).map(|j| (0..d_v).map(|t| d_out[i * d_v + t] * v[j * d_v + t]).sum()).collect();
        let row_dot: f64 = (0..n).map(|j| p[i * n + j] * dp[j]).sum();
        for j in 0..n {
            let pij = p[i * n + j];
            for t in 0..d_v {
                dv[j * d_v + t] += pij * d_out[i * d_v + t];
            }
            let ds = pij * (dp[j] - row_dot);
            for t in 0..d_k {
                dq[i * d_k + t] += scale * ds * k[j * d_k + t];
                dk[j * d_k + t] += scale * ds * q[i * d_k + t];
            }
        }
    }
    (dq, dk, dv)
}

/// The magnitudes behind [`naive_softmax_backward`]: the same sums with every term replaced by its
/// absolute value (`|dO_i . V_j|` by `sum_t |dO_it| |V_jt|`, `dP_ij - delta_i` by
/// `|dP|_ij + |delta|_i`, and so on). A rounded gradient entry differs from the exact one by at most
/// `gamma_K` times its magnitude entry (`K` the length of the longest chain of accumulated
/// products), whatever cancels; this is the scale against which a gradient that vanishes exactly,
/// such as `dK` with one key, is compared.
#[allow(clippy::too_many_arguments)]
pub fn naive_softmax_backward_magnitudes(
    n: usize,
    d_k: usize,
    d_v: usize,
    q: &[f64],
    k: &[f64],
    v: &[f64],
    p: &[f64],
    d_out: &[f64],
    scale: f64,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let abs = |x: &[f64]| x.iter().map(|t| t.abs()).collect::<Vec<_>>();
    let (q, k, v, d_out) = (abs(q), abs(k), abs(v), abs(d_out));
    let (mut dq, mut dk, mut dv) = (vec![0.0; n * d_k], vec![0.0; n * d_k], vec![0.0; n * d_v]);
    for i in 0..n {
        let dp: Vec<f64> =
            (0..n).map(|j| (0..d_v).map(|t| d_out[i * d_v + t] * v[j * d_v + t]).sum()).collect();
        let row_dot: f64 = (0..n).map(|j| p[i * n + j] * dp[j]).sum();
        for j in 0..n {
            let pij = p[i * n + j];
            for t in 0..d_v {
                dv[j * d_v + t] += pij * d_out[i * d_v + t];
            }
            let ds = pij * (dp[j] + row_dot);
            for t in 0..d_k {
                dq[i * d_k + t] += scale.abs() * ds * k[j * d_k + t];
                dk[j * d_k + t] += scale.abs() * ds * q[i * d_k + t];
            }
        }
    }
    (dq, dk, dv)
}

/// `||a - b||_2 / max(||a||_2, ||b||_2, ||magnitude||_2)`: the normwise difference relative to the
/// larger of the results and the magnitudes of the terms summed into them (see
/// [`naive_softmax_backward_magnitudes`]), so that exact cancellation is measured against the size
/// of what cancelled, not against an arbitrary floor. `0` when all three vanish and `a == b`.
pub fn rel_err_to_magnitude(a: &[f64], b: &[f64], magnitude: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    assert_eq!(a.len(), magnitude.len());
    let diff: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt();
    let norm = |x: &[f64]| super::naive_sq_norm(x).sqrt();
    let scale = norm(a).max(norm(b)).max(norm(magnitude));
    if diff == 0.0 {
        0.0
    } else {
        diff / scale
    }
}

/// The dense S-D kernel `U V^T - V U^T - C C^T` (`d x d`) from its factors.
pub fn naive_sd_kernel(d: usize, r: usize, q: usize, u: &[f64], v: &[f64], c: &[f64]) -> Vec<f64> {
    let mut m = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..d {
            let mut acc = 0.0;
            for t in 0..r {
                acc += u[i * r + t] * v[j * r + t] - v[i * r + t] * u[j * r + t];
            }
            for t in 0..q {
                acc -= c[i * q + t] * c[j * q + t];
            }
            m[i * d + j] = acc;
        }
    }
    m
}

/// A head's forward from its dense kernel `M` (`d x d`) and `W_V` (`d x d_v`): logits
/// `scale x_i^T M x_j` materialized, then [`naive_softmax_attention`] with queries `X M` and keys `X`.
#[allow(clippy::too_many_arguments)]
pub fn naive_head_forward(
    n: usize,
    d: usize,
    d_v: usize,
    x: &[f64],
    kernel: &[f64],
    w_v: &[f64],
    causal: bool,
    scale: f64,
) -> (Vec<f64>, Vec<f64>) {
    let xm = super::naive_matmul(n, d, d, x, kernel);
    let vp = super::naive_matmul(n, d, d_v, x, w_v);
    let (out, lse, _) = naive_softmax_attention(n, d, d_v, &xm, x, &vp, None, causal, scale);
    (out, lse)
}

/// `||a - b||_2 / max(||a||_2, ||b||_2, 1e-3)`: normwise relative difference (gradients that vanish
/// identically, such as `dQ` for one token, are compared absolutely at the scale 1e-3).
pub fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let diff: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt();
    let scale = super::naive_sq_norm(a).sqrt().max(super::naive_sq_norm(b).sqrt()).max(1e-3);
    diff / scale
}

/// `max_i |a_i - b_i|`.
pub fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// Central finite differences of `f` at `x`, step `h`: `(f(x + h e_i) - f(x - h e_i)) / 2h`.
pub fn central_differences(x: &[f64], h: f64, mut f: impl FnMut(&[f64]) -> f64) -> Vec<f64> {
    let all: Vec<usize> = (0..x.len()).collect();
    super::central_differences_at(&mut f, x, &all, h)
}
