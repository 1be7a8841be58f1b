//! A tiny seedable random number generator for `no_std`: SplitMix64 (Steele, Lea & Flood 2014,
//! "Fast splittable pseudorandom number generators"; the constants are Vigna's).
//!
//! Used for Rademacher probes in stochastic trace estimation and for weight initialization. Not
//! cryptographic. The same seed gives the same stream on every platform.

use crate::Scalar;

/// SplitMix64: a 64-bit state advanced by a Weyl increment, output through a bit mixer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose stream is determined by `seed` (every seed, including 0, is fine).
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64 uniformly distributed bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform on `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform on `[low, high)`.
    pub fn uniform<T: Scalar>(&mut self, low: T, high: T) -> T {
        low + (high - low) * T::of_f64(self.next_f64())
    }

    /// `+1` or `-1` with equal probability (a Rademacher variable).
    pub fn rademacher<T: Scalar>(&mut self) -> T {
        if self.next_u64() >> 63 == 0 {
            T::one()
        } else {
            -T::one()
        }
    }

    /// A standard normal variate (Box–Muller on two uniforms; `1 - u` keeps the logarithm finite).
    pub fn normal<T: Scalar>(&mut self) -> T {
        let radius = libm::sqrt(-2.0 * libm::log(1.0 - self.next_f64()));
        let angle = 2.0 * core::f64::consts::PI * self.next_f64();
        T::of_f64(radius * libm::cos(angle))
    }

    /// Fills `out` with independent `N(0, std^2)` values.
    pub fn fill_normal<T: Scalar>(&mut self, std: T, out: &mut [T]) {
        for v in out {
            *v = std * self.normal::<T>();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_outputs_match_the_reference_stream_for_seed_zero() {
        // SplitMix64 with seed 0: the published first outputs of Vigna's reference implementation.
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn moments_of_the_distributions() {
        let mut rng = SplitMix64::new(42);
        let n = 200_000;
        let (mut sum, mut sum_sq, mut signs) = (0.0f64, 0.0f64, 0.0f64);
        for _ in 0..n {
            let z: f64 = rng.normal();
            sum += z;
            sum_sq += z * z;
            signs += rng.rademacher::<f64>();
        }
        let n = n as f64;
        // Standard errors: mean 1/sqrt(n) = 0.0022, variance sqrt(2/n) = 0.0032; allow 5 of them.
        assert!((sum / n).abs() < 0.011, "mean {}", sum / n);
        assert!((sum_sq / n - 1.0).abs() < 0.016, "variance {}", sum_sq / n);
        assert!((signs / n).abs() < 0.011);
        let u: f32 = rng.uniform(2.0, 3.0);
        assert!((2.0..3.0).contains(&u));
    }
}
