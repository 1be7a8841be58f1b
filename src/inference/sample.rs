//! Choosing the next token from logits, without allocation: greedy, temperature, top-k and top-p
//! (nucleus), driven by a seeded [`SplitMix64`] so that a seed gives the same text on every
//! platform.
//!
//! With logits `l_i` and temperature `T > 0` (computed in `f64`):
//!
//! ```text
//! p_i = exp((l_i - max_j l_j) / T) / sum_j exp((l_j - max_j l_j) / T)
//! top-k: keep the k largest p_i (ties broken by the lower index)
//! top-p: keep the smallest prefix of the p_i sorted in decreasing order whose sum reaches p
//! draw:  u = U[0, 1) * (sum of the kept p_i); the first kept i (in that order) whose running sum exceeds u
//! ```
//!
//! `T = 0` is greedy: the first index of the largest logit.

use crate::rng::SplitMix64;
use crate::{Error, Result, Scalar};

/// The most candidates a [`Sampler`] handles (the byte vocabulary).
pub const MAX_CANDIDATES: usize = 256;

/// How to pick the next token (see the module documentation).
///
/// ```
/// use sd_attention::inference::Sampler;
/// let logits = [0.0f32, 3.0, 1.0, 2.5];
/// assert_eq!(Sampler::greedy().sample(&logits)?, 1);
/// let mut a = Sampler::new(0.8, 2, 1.0, 42)?; // temperature 0.8, top-2, seed 42
/// let mut b = Sampler::new(0.8, 2, 1.0, 42)?;
/// for _ in 0..20 {
///     let (x, y) = (a.sample(&logits)?, b.sample(&logits)?);
///     assert_eq!(x, y); // same seed, same draws
///     assert!(x == 1 || x == 3); // only the two largest
/// }
/// # Ok::<(), sd_attention::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Sampler {
    temperature: f64,
    top_k: usize,
    top_p: f64,
    rng: SplitMix64,
}

impl Sampler {
    /// Greedy decoding (temperature 0).
    pub fn greedy() -> Self {
        Sampler { temperature: 0.0, top_k: 0, top_p: 1.0, rng: SplitMix64::new(0) }
    }

    /// A sampler with `temperature` (finite, `>= 0`; 0 is greedy), `top_k` (0 keeps every
    /// candidate), `top_p` (in `(0, 1]`; 1 keeps every candidate) and a seed.
    pub fn new(temperature: f64, top_k: usize, top_p: f64, seed: u64) -> Result<Self> {
        if !(temperature.is_finite() && temperature >= 0.0) {
            return Err(Error::InvalidParameter { what: "temperature", expected: "finite and >= 0" });
        }
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(Error::InvalidParameter { what: "top_p", expected: "in (0, 1]" });
        }
        Ok(Sampler { temperature, top_k, top_p, rng: SplitMix64::new(seed) })
    }

    /// The index of the next token. Errors: no logits, more than [`MAX_CANDIDATES`], or a NaN
    /// logit ([`Error::NonFinite`]; `-inf` is allowed and never chosen unless all are `-inf`,
    /// `+inf` is not).
    pub fn sample<T: Scalar>(&mut self, logits: &[T]) -> Result<usize> {
        if logits.is_empty() {
            return Err(Error::Empty { what: "logits" });
        }
        if logits.len() > MAX_CANDIDATES {
            return Err(Error::ShapeMismatch { what: "logits", expected: MAX_CANDIDATES, got: logits.len() });
        }
        if let Some(index) = logits.iter().position(|l| l.is_nan() || *l == T::infinity()) {
            return Err(Error::NonFinite { what: "logits", index });
        }
        let mut best = 0;
        for (i, l) in logits.iter().enumerate() {
            if *l > logits[best] {
                best = i;
            }
        }
        if self.temperature == 0.0 || logits[best] == T::neg_infinity() {
            return Ok(best);
        }
        let max = logits[best].as_f64();
        let n = logits.len();
        let mut weight = [0.0f64; MAX_CANDIDATES];
        let mut order = [0u16; MAX_CANDIDATES];
        for (i, l) in logits.iter().enumerate() {
            weight[i] = libm::exp((l.as_f64() - max) / self.temperature);
            order[i] = i as u16;
        }
        let order = &mut order[..n];
        // Decreasing weight, ties by the lower index: a total order, so the result is unique.
        order.sort_unstable_by(|&i, &j| weight[j as usize].total_cmp(&weight[i as usize]).then(i.cmp(&j)));
        let mut kept = if self.top_k == 0 { n } else { self.top_k.min(n) };
        if self.top_p < 1.0 {
            let total: f64 = order[..kept].iter().map(|&i| weight[i as usize]).sum();
            let mut running = 0.0;
            for (rank, &i) in order[..kept].iter().enumerate() {
                running += weight[i as usize];
                if running >= self.top_p * total {
                    kept = rank + 1;
                    break;
                }
            }
        }
        let total: f64 = order[..kept].iter().map(|&i| weight[i as usize]).sum();
        let u = self.rng.next_f64() * total;
        let mut running = 0.0;
        for &i in &order[..kept] {
            running += weight[i as usize];
            if u < running {
                return Ok(i as usize);
            }
        }
        // Rounding can leave u at the very top: the last kept candidate.
        Ok(order[kept - 1] as usize)
    }
}
