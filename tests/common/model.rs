//! Shared helpers of the model and training tests: central finite differences and a trivial
//! attention stand-in (NOT an attention kernel: it only exercises the model's plumbing until the
//! real kernels are plugged in).

use sd_attention::model::config::ModelConfig;
use sd_attention::model::sublayer::{AttentionSublayer, SublayerDims};
use sd_attention::rng::SplitMix64;
use sd_attention::{Result, Scalar};

pub use super::central_differences_at as central_differences;

/// Norm-wise relative error `||a - b|| / max(||a||, ||b||)` (0 if both vanish).
pub fn relative_error(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let diff: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt();
    let scale = a.iter().map(|x| x * x).sum::<f64>().sqrt().max(b.iter().map(|x| x * x).sum::<f64>().sqrt());
    if scale == 0.0 {
        0.0
    } else {
        diff / scale
    }
}

/// Checks `analytic` (the full gradient of `f` at `x`) against central differences on every entry
/// and returns the norm-wise relative error.
pub fn gradient_error(f: &mut dyn FnMut(&[f64]) -> f64, x: &[f64], analytic: &[f64]) -> f64 {
    let all: Vec<usize> = (0..x.len()).collect();
    let numeric = central_differences(f, x, &all, 1e-5);
    relative_error(&numeric, analytic)
}

/// `sum_i w_i y_i`: a scalar test loss whose gradient with respect to `y` is `w`.
pub fn weighted_sum(w: &[f64], y: &[f64]) -> f64 {
    w.iter().zip(y).map(|(a, b)| a * b).sum()
}

/// A trivial, causal (token-local) stand-in for an attention kernel, used only by tests to check the
/// model assembly: for head `h` (columns `c` of its block),
/// `out[i, c] = (1 + theta[h]) v[i, c] + theta[H + h] a[i, c mod d_model]`.
/// Only the first `2 H` entries of `theta` are used; the rest get zero gradient.
pub struct GatedIdentity {
    pub dims: SublayerDims,
    pub param_len: usize,
}

impl<T: Scalar> AttentionSublayer<T> for GatedIdentity {
    fn dims(&self) -> SublayerDims {
        self.dims
    }
    fn param_len(&self) -> usize {
        self.param_len
    }
    fn init_params(&self, _rng: &mut SplitMix64, params: &mut [T]) {
        params.fill(T::zero());
    }
    fn cache_len(&self, _n: usize) -> usize {
        0
    }
    fn workspace_len(&self, _n: usize) -> usize {
        0
    }
    fn forward(
        &self,
        n: usize,
        params: &[T],
        input: &[T],
        values: &[T],
        out: &mut [T],
        _: &mut [T],
        _: &mut [T],
    ) -> Result<()> {
        let SublayerDims { d_model, n_heads, d_head } = self.dims;
        let w = n_heads * d_head;
        assert_eq!(input.len(), n * d_model);
        assert_eq!(values.len(), n * w);
        for i in 0..n {
            for c in 0..w {
                let h = c / d_head;
                out[i * w + c] = (T::one() + params[h]) * values[i * w + c]
                    + params[n_heads + h] * input[i * d_model + c % d_model];
            }
        }
        Ok(())
    }
    fn backward(
        &self,
        n: usize,
        params: &[T],
        input: &[T],
        values: &[T],
        _: &[T],
        d_out: &[T],
        d_input: &mut [T],
        d_values: &mut [T],
        d_params: &mut [T],
        _: &mut [T],
    ) -> Result<()> {
        let SublayerDims { d_model, n_heads, d_head } = self.dims;
        let w = n_heads * d_head;
        for i in 0..n {
            for c in 0..w {
                let h = c / d_head;
                let g = d_out[i * w + c];
                d_values[i * w + c] = (T::one() + params[h]) * g;
                d_params[h] += values[i * w + c] * g;
                d_params[n_heads + h] += input[i * d_model + c % d_model] * g;
                d_input[i * d_model + c % d_model] += params[n_heads + h] * g;
            }
        }
        Ok(())
    }
}

/// A random vector with entries `N(0, std^2)`.
pub fn normal_vec(len: usize, std: f64, seed: u64) -> Vec<f64> {
    let mut rng = SplitMix64::new(seed);
    let mut v = vec![0.0; len];
    rng.fill_normal(std, &mut v);
    v
}

/// One [`GatedIdentity`] per layer of `config`, with the parameter count of each layer's kind.
pub fn stand_ins<T: Scalar>(config: &ModelConfig) -> Vec<Box<dyn AttentionSublayer<T>>> {
    let dims = SublayerDims { d_model: config.d_model, n_heads: config.n_heads, d_head: config.d_head };
    (0..config.n_layers)
        .map(|l| {
            let param_len = config.attention_kernel_len(l).unwrap();
            Box::new(GatedIdentity { dims, param_len }) as Box<dyn AttentionSublayer<T>>
        })
        .collect()
}
