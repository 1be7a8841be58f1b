//! Naive f64 references for ELU+1 linear attention (`docs/math.md` section 6): the `n x n` weight
//! matrix is materialized, every sum is a plain loop; and the derived error bounds the kernels are
//! held to. (Also compiled into the crate's own unit tests, which run every instruction-set variant
//! against it.)

#[allow(unused_imports)]
use std::{vec, vec::Vec};

/// `phi(x) = elu(x) + 1`.
pub fn naive_phi(x: f64) -> f64 {
    if x > 0.0 {
        x + 1.0
    } else {
        x.exp()
    }
}

/// `phi'(x)`.
pub fn naive_phi_derivative(x: f64) -> f64 {
    if x > 0.0 {
        1.0
    } else {
        x.exp()
    }
}

/// `W_ij = phi(q_i) . phi(k_j)` for the pairs a query may see (`j <= i` when causal), else 0.
pub fn naive_weights(n: usize, d_k: usize, causal: bool, q: &[f64], k: &[f64]) -> Vec<f64> {
    let mut w = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            if causal && j > i {
                continue;
            }
            w[i * n + j] = (0..d_k).map(|p| naive_phi(q[i * d_k + p]) * naive_phi(k[j * d_k + p])).sum();
        }
    }
    w
}

/// `O_i = sum_j W_ij v_j / (sum_j W_ij + eps)` (`n x d_v`).
#[allow(clippy::too_many_arguments)]
pub fn naive_linear_attention(
    n: usize,
    d_k: usize,
    d_v: usize,
    causal: bool,
    eps: f64,
    q: &[f64],
    k: &[f64],
    v: &[f64],
) -> Vec<f64> {
    let w = naive_weights(n, d_k, causal, q, k);
    let mut out = vec![0.0; n * d_v];
    for i in 0..n {
        let den: f64 = (0..n).map(|j| w[i * n + j]).sum::<f64>() + eps;
        for c in 0..d_v {
            out[i * d_v + c] = (0..n).map(|j| w[i * n + j] * v[j * d_v + c]).sum::<f64>() / den;
        }
    }
    out
}

/// Gradients `(dQ, dK, dV)` of `sum(dO * O)` by the materialized chain rule:
/// `g_i = dO_i / den_i`, `h_i = -g_i . O_i`, `dW_ij = g_i . v_j + h_i`, `dV_j = sum_i W_ij g_i`,
/// `dQ_i = phi'(q_i) * sum_j dW_ij phi(k_j)`, `dK_j = phi'(k_j) * sum_i dW_ij phi(q_i)`.
///
/// With `magnitudes`, every signed quantity is replaced by its absolute value (`|v|`, `|dO|`) and
/// `h_i` by `sum_c |g_ic| (|O_ic| + max_j |v_jc|)` (the size of `h_i` plus the size of its error,
/// since `O_i` itself is only accurate relative to `max |v|`): each entry is then the sum of the
/// magnitudes of the terms that make up that gradient entry, the scale rounding errors are
/// proportional to.
#[allow(clippy::too_many_arguments)]
pub fn naive_linear_attention_backward(
    n: usize,
    d_k: usize,
    d_v: usize,
    causal: bool,
    eps: f64,
    q: &[f64],
    k: &[f64],
    v: &[f64],
    d_out: &[f64],
    magnitudes: bool,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let w = naive_weights(n, d_k, causal, q, k);
    let out = naive_linear_attention(n, d_k, d_v, causal, eps, q, k, v);
    let m = |x: f64| if magnitudes { x.abs() } else { x };
    let mut g = vec![0.0; n * d_v];
    let mut h = vec![0.0; n];
    for i in 0..n {
        let den: f64 = (0..n).map(|j| w[i * n + j]).sum::<f64>() + eps;
        for c in 0..d_v {
            g[i * d_v + c] = m(d_out[i * d_v + c]) / den;
        }
        h[i] = if magnitudes {
            (0..d_v)
                .map(|c| {
                    let v_max = (0..n).map(|j| v[j * d_v + c].abs()).fold(0.0, f64::max);
                    g[i * d_v + c] * (out[i * d_v + c].abs() + v_max)
                })
                .sum()
        } else {
            -(0..d_v).map(|c| g[i * d_v + c] * out[i * d_v + c]).sum::<f64>()
        };
    }
    let mut dw = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            if !(causal && j > i) {
                let gv: f64 = (0..d_v).map(|c| g[i * d_v + c] * m(v[j * d_v + c])).sum();
                dw[i * n + j] = gv + h[i];
            }
        }
    }
    let (mut dq, mut dk, mut dv) = (vec![0.0; n * d_k], vec![0.0; n * d_k], vec![0.0; n * d_v]);
    for i in 0..n {
        for j in 0..n {
            for p in 0..d_k {
                dq[i * d_k + p] += dw[i * n + j] * naive_phi(k[j * d_k + p]);
                dk[j * d_k + p] += dw[i * n + j] * naive_phi(q[i * d_k + p]);
            }
            for c in 0..d_v {
                dv[j * d_v + c] += w[i * n + j] * g[i * d_v + c];
            }
        }
    }
    for p in 0..n * d_k {
        dq[p] *= naive_phi_derivative(q[p]);
        dk[p] *= naive_phi_derivative(k[p]);
    }
    (dq, dk, dv)
}

/// Per-entry forward bound for a computation in precision `unit` (both sides of a comparison):
/// `num_i = sum_j W_ij v_j` and `den_i` are nested sums of depth at most `n + d_k` over products
/// `phi(q_ip) phi(k_jp) v_jc`: two multiplications and two `phi` values, each `phi` within 3 ulp
/// (the `f32` kernels' vector exponential; `libm` in `f64` is within 1), so each has error at most
/// `(n + d_k + 10) unit` times the sum of its terms' magnitudes, `<= den_i max_j |v_jc|` for `num`.
/// Dividing adds one rounding and the error of `den` relative to it:
/// `|O - O_exact| <= (n + d_k + 12) unit (max_j |v_jc| + |O_ic|)`. Two computations compared:
/// twice that.
pub fn forward_tolerance(n: usize, d_k: usize, d_v: usize, v: &[f64], out: &[f64], unit: f64) -> Vec<f64> {
    let v_max: Vec<f64> =
        (0..d_v).map(|c| (0..n).map(|j| v[j * d_v + c].abs()).fold(0.0, f64::max)).collect();
    (0..n * d_v).map(|e| 2.0 * (n + d_k + 12) as f64 * unit * (v_max[e % d_v] + out[e].abs())).collect()
}

/// Per-entry backward bound: every gradient entry is a nested sum of depth at most
/// `n + d_k + d_v` over terms built from `g_i = dO_i / den_i`, `h_i`, `W_ij`, `phi`, `phi'`, each
/// carrying the forward error of `den` and `O` (accounted for in the magnitudes of `h`, see
/// [`naive_linear_attention_backward`]), with at most 10 multiplications or divisions and three
/// `phi`/`phi'` values (3 ulp each, see [`forward_tolerance`]) per term; three such stages
/// (den/O, g/h, the final sums) give `3 (n + d_k + d_v + 19) unit` times the magnitude scale,
/// doubled for two computations.
pub fn backward_tolerance(n: usize, d_k: usize, d_v: usize, scale: &[f64], unit: f64) -> Vec<f64> {
    scale.iter().map(|s| 6.0 * (n + d_k + d_v + 19) as f64 * unit * s + 1e-300).collect()
}

/// Largest `|a - b| / tol` (<= 1 means within tolerance); also fails on NaN.
pub fn worst_ratio(a: &[f64], b: &[f64], tol: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).zip(tol).map(|((x, y), t)| (x - y).abs() / t).fold(0.0, |m, r| {
        if r.is_nan() {
            f64::INFINITY
        } else {
            m.max(r)
        }
    })
}
