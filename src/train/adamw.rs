//! AdamW (Loshchilov & Hutter 2019, "Decoupled weight decay regularization"), the form PyTorch's
//! `torch.optim.AdamW` computes.
//!
//! At step `t = 1, 2, ...` with gradient `g`, learning rate `lr`:
//! ```text
//! m = beta1 m + (1 - beta1) g             v = beta2 v + (1 - beta2) g^2
//! m_hat = m / (1 - beta1^t)               v_hat = v / (1 - beta2^t)
//! p = p - lr wd p [if decayed] - lr m_hat / (sqrt(v_hat) + eps)
//! ```
//! The decay is decoupled (it does not pass through `m`, `v`) and applies only to tensors marked
//! `decay` in the model's [`ParamLayout`](crate::model::layout::ParamLayout): weight matrices, not
//! embeddings, positions, norms or biases.

use crate::error::check_len;
use crate::{Error, Result, Scalar};

/// Hyperparameters of AdamW.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    /// Decay of the first moment, `0 <= beta1 < 1` (default 0.9).
    pub beta1: f64,
    /// Decay of the second moment, `0 <= beta2 < 1` (default 0.95).
    pub beta2: f64,
    /// Added to `sqrt(v_hat)`, `> 0` (default `1e-8`).
    pub eps: f64,
    /// Decoupled weight decay `wd >= 0` (default 0.1).
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1 }
    }
}

impl AdamWConfig {
    /// Checks the domains stated on each field.
    pub fn validate(&self) -> Result<()> {
        let beta = |b: f64| (0.0..1.0).contains(&b);
        if !beta(self.beta1) {
            return Err(Error::InvalidParameter { what: "beta1", expected: "in [0, 1)" });
        }
        if !beta(self.beta2) {
            return Err(Error::InvalidParameter { what: "beta2", expected: "in [0, 1)" });
        }
        if !(self.eps > 0.0 && self.eps.is_finite()) {
            return Err(Error::InvalidParameter { what: "eps", expected: "finite and > 0" });
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return Err(Error::InvalidParameter { what: "weight_decay", expected: "finite and >= 0" });
        }
        Ok(())
    }
}

/// One AdamW step on one tensor: updates `params`, `m`, `v` in place from `grads` (all the same
/// length). `step` is the 1-based step count `t`; `decay` says whether weight decay applies.
/// Bias corrections are computed in f64. Non-finite gradients propagate into the parameters (the
/// trainer rejects them first, see [`clip_global_norm`](super::clip::clip_global_norm)).
///
/// ```
/// use sd_attention::train::adamw::{adamw_update, AdamWConfig};
/// let (mut p, mut m, mut v) = ([1.0f64], [0.0], [0.0]);
/// adamw_update(&AdamWConfig::default(), 1, 0.1, false, &mut p, &[0.5], &mut m, &mut v)?;
/// // First step: m_hat = g, v_hat = g^2, so the step is lr * g / (|g| + eps) ~ 0.1.
/// assert!((p[0] - 0.9).abs() < 1e-7);
/// # Ok::<(), sd_attention::Error>(())
/// ```
#[allow(clippy::too_many_arguments)]
pub fn adamw_update<T: Scalar>(
    config: &AdamWConfig,
    step: u64,
    lr: f64,
    decay: bool,
    params: &mut [T],
    grads: &[T],
    m: &mut [T],
    v: &mut [T],
) -> Result<()> {
    config.validate()?;
    if step == 0 {
        return Err(Error::InvalidParameter { what: "step", expected: "at least 1 (1-based)" });
    }
    check_len("grads", grads.len(), params.len())?;
    check_len("m", m.len(), params.len())?;
    check_len("v", v.len(), params.len())?;
    let t = step.min(i32::MAX as u64) as i32;
    let correction1 = 1.0 - libm::pow(config.beta1, t as f64);
    let correction2 = 1.0 - libm::pow(config.beta2, t as f64);
    let (b1, b2) = (T::of_f64(config.beta1), T::of_f64(config.beta2));
    let (one_b1, one_b2) = (T::of_f64(1.0 - config.beta1), T::of_f64(1.0 - config.beta2));
    let inv_c1 = T::of_f64(1.0 / correction1);
    let inv_c2 = T::of_f64(1.0 / correction2);
    let eps = T::of_f64(config.eps);
    let lr_t = T::of_f64(lr);
    let shrink = T::of_f64(if decay { 1.0 - lr * config.weight_decay } else { 1.0 });
    for (((p, &g), mi), vi) in params.iter_mut().zip(grads).zip(m.iter_mut()).zip(v.iter_mut()) {
        *mi = b1 * *mi + one_b1 * g;
        *vi = b2 * *vi + one_b2 * g * g;
        let m_hat = *mi * inv_c1;
        let v_hat = *vi * inv_c2;
        *p = *p * shrink - lr_t * m_hat / (v_hat.sqrt() + eps);
    }
    Ok(())
}

#[cfg(feature = "alloc")]
pub use self::state::AdamW;

#[cfg(feature = "alloc")]
mod state {
    use super::{adamw_update, AdamWConfig};
    use crate::error::check_len;
    use crate::model::layout::ParamLayout;
    use crate::{Result, Scalar};
    use alloc::vec;
    use alloc::vec::Vec;

    /// AdamW with its state (`m`, `v` as flat buffers laid out like the parameters, and the step
    /// count).
    #[derive(Clone, Debug, PartialEq)]
    pub struct AdamW<T> {
        /// Hyperparameters.
        pub config: AdamWConfig,
        /// Steps taken so far.
        pub step: u64,
        /// First moments.
        pub m: Vec<T>,
        /// Second moments.
        pub v: Vec<T>,
    }

    impl<T: Scalar> AdamW<T> {
        /// Fresh state (zero moments, step 0) for `len` parameters.
        pub fn new(config: AdamWConfig, len: usize) -> Result<Self> {
            config.validate()?;
            Ok(AdamW { config, step: 0, m: vec![T::zero(); len], v: vec![T::zero(); len] })
        }

        /// One step over the whole flat buffer with learning rate `lr`, tensor by tensor so that
        /// each gets its own `decay` flag from `layout`.
        pub fn step(&mut self, layout: &ParamLayout, lr: f64, params: &mut [T], grads: &[T]) -> Result<()> {
            check_len("params", params.len(), layout.total)?;
            check_len("grads", grads.len(), layout.total)?;
            check_len("m", self.m.len(), layout.total)?;
            check_len("v", self.v.len(), layout.total)?;
            self.step += 1;
            for t in &layout.tensors {
                let r = t.range.clone();
                adamw_update(
                    &self.config,
                    self.step,
                    lr,
                    t.decay,
                    &mut params[r.clone()],
                    &grads[r.clone()],
                    &mut self.m[r.clone()],
                    &mut self.v[r],
                )?;
            }
            Ok(())
        }
    }
}
