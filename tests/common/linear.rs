//! Naive f64 references for ELU+1 linear attention (`docs/math.md` section 6): the `n x n` weight matrix is
//! materialized, every sum is a plain loop.

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
