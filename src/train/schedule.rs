//! Learning-rate schedule: linear warmup, then cosine decay (Loshchilov & Hutter 2017, without
//! restarts).
//!
//! For 0-based step `s`, warmup `W`, total `N`, peak `lr_max`, floor `lr_min`:
//! ```text
//! s < W:        lr = lr_max (s + 1) / W
//! W <= s < N:   lr = lr_min + (lr_max - lr_min) (1 + cos(pi (s - W) / (N - W))) / 2
//! s >= N:       lr = lr_min
//! ```

use crate::{Error, Result};

/// Warmup + cosine schedule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WarmupCosine {
    /// Peak learning rate `lr_max`, reached at the end of warmup.
    pub peak_lr: f64,
    /// Final learning rate `lr_min` (`0 <= lr_min <= lr_max`).
    pub min_lr: f64,
    /// Warmup steps `W` (0 for none).
    pub warmup_steps: u64,
    /// Total steps `N >= W`.
    pub total_steps: u64,
}

impl WarmupCosine {
    /// A validated schedule (finite rates, `0 <= min_lr <= peak_lr`, `warmup_steps <= total_steps`).
    pub fn new(peak_lr: f64, min_lr: f64, warmup_steps: u64, total_steps: u64) -> Result<Self> {
        if !(peak_lr.is_finite() && min_lr.is_finite() && min_lr >= 0.0 && min_lr <= peak_lr) {
            return Err(Error::InvalidParameter {
                what: "learning rates",
                expected: "finite, 0 <= min_lr <= peak_lr",
            });
        }
        if warmup_steps > total_steps {
            return Err(Error::InvalidParameter { what: "warmup_steps", expected: "<= total_steps" });
        }
        Ok(WarmupCosine { peak_lr, min_lr, warmup_steps, total_steps })
    }

    /// The learning rate at 0-based step `step`.
    ///
    /// ```
    /// use sd_attention::train::schedule::WarmupCosine;
    /// let s = WarmupCosine::new(1e-3, 1e-4, 10, 110)?;
    /// assert_eq!(s.lr(0), 1e-4);        // (0 + 1) / 10 of the peak
    /// assert_eq!(s.lr(10), 1e-3);       // peak
    /// assert!((s.lr(60) - 5.5e-4).abs() < 1e-15); // halfway down the cosine
    /// assert_eq!(s.lr(500), 1e-4);
    /// # Ok::<(), sd_attention::Error>(())
    /// ```
    pub fn lr(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.peak_lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        if step >= self.total_steps {
            return self.min_lr;
        }
        let progress = (step - self.warmup_steps) as f64 / (self.total_steps - self.warmup_steps) as f64;
        self.min_lr + (self.peak_lr - self.min_lr) * 0.5 * (1.0 + libm::cos(core::f64::consts::PI * progress))
    }
}
