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
    let k = Coefficients { b1, b2, one_b1, one_b2, inv_c1, inv_c2, eps, lr: lr_t, shrink };
    if let (Some(p), Some(g), Some(m), Some(v), Some(k)) =
        (T::f32_slice_mut(params), T::f32_slice(grads), T::f32_slice_mut(m), T::f32_slice_mut(v), k.as_f32())
    {
        update_f32(&k, p, g, m, v);
        return Ok(());
    }
    update_body(&k, params, grads, m, v);
    Ok(())
}

/// The per-step constants of the update, in the parameters' precision.
#[derive(Clone, Copy)]
struct Coefficients<T> {
    b1: T,
    b2: T,
    one_b1: T,
    one_b2: T,
    inv_c1: T,
    inv_c2: T,
    eps: T,
    lr: T,
    shrink: T,
}

impl<T: Scalar> Coefficients<T> {
    /// The same constants as `f32`, when `T` is `f32`.
    fn as_f32(&self) -> Option<Coefficients<f32>> {
        let all = [
            self.b1,
            self.b2,
            self.one_b1,
            self.one_b2,
            self.inv_c1,
            self.inv_c2,
            self.eps,
            self.lr,
            self.shrink,
        ];
        let f = T::f32_slice(&all)?;
        Some(Coefficients {
            b1: f[0],
            b2: f[1],
            one_b1: f[2],
            one_b2: f[3],
            inv_c1: f[4],
            inv_c2: f[5],
            eps: f[6],
            lr: f[7],
            shrink: f[8],
        })
    }
}

/// The update loop, shared by every instruction-set variant (plain multiplies, adds, one square
/// root and one division per element, no fused multiply-add: every variant rounds alike, so the
/// results, and checkpoints resumed from them, are identical on every CPU).
#[inline(always)]
fn update_body<T: Scalar>(k: &Coefficients<T>, params: &mut [T], grads: &[T], m: &mut [T], v: &mut [T]) {
    for (((p, &g), mi), vi) in params.iter_mut().zip(grads).zip(m.iter_mut()).zip(v.iter_mut()) {
        *mi = k.b1 * *mi + k.one_b1 * g;
        *vi = k.b2 * *vi + k.one_b2 * g * g;
        let m_hat = *mi * k.inv_c1;
        let v_hat = *vi * k.inv_c2;
        *p = *p * k.shrink - k.lr * m_hat / (v_hat.sqrt() + k.eps);
    }
}

crate::arch::multiversion! {
    /// The `f32` update in the variant `isa` (the same operations in every one).
    fn update_isa(k: &Coefficients<f32>, params: &mut [f32], grads: &[f32], m: &mut [f32], v: &mut [f32]);
    avx512("avx512f") => update_body(k, params, grads, m, v);
    avx2("avx2") => update_body(k, params, grads, m, v);
    portable => update_body(k, params, grads, m, v);
}

/// The `f32` update, in the variant [`crate::arch`] chooses.
fn update_f32(k: &Coefficients<f32>, params: &mut [f32], grads: &[f32], m: &mut [f32], v: &mut [f32]) {
    update_isa(crate::arch::isa(), k, params, grads, m, v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::boxed::Box;
    use std::vec::Vec;

    /// Every f32 variant the CPU has, whatever the dispatch chooses, gives bit for bit the portable loop's
    /// parameters and moments (same operations, same roundings), over lengths around the vector
    /// widths.
    #[test]
    fn update_variants_are_bit_identical() {
        let k = Coefficients::<f32> {
            b1: 0.9,
            b2: 0.95,
            one_b1: 0.1,
            one_b2: 0.05,
            inv_c1: 10.0,
            inv_c2: 20.0,
            eps: 1e-8,
            lr: 3e-3,
            shrink: 0.9997,
        };
        type Variant = Box<dyn Fn(&Coefficients<f32>, &mut [f32], &[f32], &mut [f32], &mut [f32])>;
        let mut variants: Vec<(&str, Variant)> = Vec::new();
        variants.push(("dispatched", Box::new(update_f32)));
        for isa in crate::arch::available() {
            variants.push((
                isa.name(),
                Box::new(
                    move |k: &Coefficients<f32>, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]| {
                        update_isa(isa, k, p, g, m, v)
                    },
                ),
            ));
        }
        for len in [0usize, 1, 7, 16, 17, 100] {
            let g: Vec<f32> = (0..len).map(|i| (i as f32 * 0.7).sin() * 0.01).collect();
            let start: Vec<f32> = (0..len).map(|i| (i as f32 * 0.3).cos()).collect();
            let (mut p0, mut m0, mut v0) =
                (start.clone(), g.clone(), g.iter().map(|x| x * x).collect::<Vec<_>>());
            update_body(&k, &mut p0, &g, &mut m0, &mut v0);
            for (name, f) in &variants {
                let (mut p, mut m, mut v) =
                    (start.clone(), g.clone(), g.iter().map(|x| x * x).collect::<Vec<_>>());
                f(&k, &mut p, &g, &mut m, &mut v);
                let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    (bits(&p), bits(&m), bits(&v)),
                    (bits(&p0), bits(&m0), bits(&v0)),
                    "{name} len {len}"
                );
            }
        }
    }
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
            if crate::parallel::ENABLED {
                // Fixed chunks of the flat buffer as separate tasks, each updating the parts of the
                // tensors it overlaps with their own decay flags: elementwise, so the same result.
                let (config, step, c) = (&self.config, self.step, crate::parallel::PARTIAL_CHUNK);
                return crate::parallel::try_chunks3(
                    params,
                    c,
                    &mut self.m,
                    c,
                    &mut self.v,
                    c,
                    |i, p, m, v| {
                        let (start, end) = (i * c, i * c + p.len());
                        for t in &layout.tensors {
                            let (lo, hi) = (t.range.start.max(start), t.range.end.min(end));
                            if lo >= hi {
                                continue;
                            }
                            let r = lo - start..hi - start;
                            let (m, v) = (&mut m[r.clone()], &mut v[r.clone()]);
                            adamw_update(config, step, lr, t.decay, &mut p[r], &grads[lo..hi], m, v)?;
                        }
                        Ok(())
                    },
                );
            }
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
