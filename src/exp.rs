//! `exp` over slices, written so that the compiler vectorizes it (plain arithmetic and selects, no
//! calls): the softmax kernels spend a large share of their time here.
//!
//! `f32`: Cody-Waite reduction `x = k ln2 + r`, `|r| <= ln2 / 2`, then the degree-7 Taylor
//! polynomial of `e^r` (truncation `r^8 / 8! < 6e-9`, under 0.1 ulp), scaled by `2^k` assembled from
//! its exponent bits. Relative error about 2 ulp over `[-86.5, 88.7]`; `+inf` above `88.72`
//! (where `e^x` overflows), `0` below `-86.5` (results under `e^-86.5 ~ 2.7e-38`, including
//! subnormals, are flushed to zero), NaN stays NaN, `-inf` gives `0`.
//! `f64`: `libm::exp` element by element (the reference precision; not a hot path).

const LN2_HI: f32 = 0.693_145_75; // ln 2 rounded to 17 bits: k * LN2_HI is exact for |k| < 2^7
const LN2_LO: f32 = 1.428_606_8e-6; // ln 2 - LN2_HI
const ROUND_MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer in the low bits

/// Independent accumulators of the sum (a multiple of every vector width, so that the sum
/// vectorizes without reassociating one running total).
const LANES: usize = 16;

/// `e^x` of one element (see the module documentation); inlined into each vector loop.
#[inline(always)]
fn exp1(input: f32) -> f32 {
    let clamped = input.clamp(-86.5, 88.72); // NaN stays NaN and is selected below
    let shifted = clamped * core::f32::consts::LOG2_E + ROUND_MAGIC;
    let k = shifted - ROUND_MAGIC;
    let k_bits = (shifted.to_bits() as i32).wrapping_sub(ROUND_MAGIC.to_bits() as i32);
    let r = (clamped - k * LN2_HI) - k * LN2_LO;
    let mut p = 1.0 / 5040.0 + r * (1.0 / 40320.0);
    p = 1.0 / 720.0 + r * p;
    p = 1.0 / 120.0 + r * p;
    p = 1.0 / 24.0 + r * p;
    p = 1.0 / 6.0 + r * p;
    p = 0.5 + r * p;
    p = 1.0 + r * p;
    p = 1.0 + r * p;
    // 2^(k-1) from its exponent bits (k - 1 + 127 in 1..=254), times 2: covers k = 128.
    let half_pow2 = f32::from_bits((k_bits.wrapping_add(126) as u32) << 23);
    let y = p * half_pow2 * 2.0;
    if input.is_nan() {
        input
    } else if input > 88.72 {
        f32::INFINITY
    } else if input < -86.5 {
        0.0
    } else {
        y
    }
}

/// The loop body shared by every instruction-set variant.
#[inline(always)]
fn exp_shifted_sum_body(x: &mut [f32], shift: f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut chunks = x.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for lane in 0..LANES {
            let y = exp1(chunk[lane] - shift);
            chunk[lane] = y;
            acc[lane] += y;
        }
    }
    let mut tail = 0.0f32;
    for v in chunks.into_remainder() {
        *v = exp1(*v - shift);
        tail += *v;
    }
    acc.iter().fold(tail, |s, &a| s + a)
}

/// The body compiled for AVX2 with FMA.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(all(feature = "std", target_arch = "x86_64"))]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_shifted_sum_avx2(x: &mut [f32], shift: f32) -> f32 {
    exp_shifted_sum_body(x, shift)
}

/// `x_i = e^{x_i - shift}` for every element, in `f32`, returning `sum_i x_i` (see the module
/// documentation for accuracy). With the `std` feature on x86-64 the loop runs in AVX2/FMA when
/// the CPU has them (detected at run time, like `matrixmultiply`); otherwise in the target's
/// compile-time features. (An AVX-512 variant measured faster, but `target_feature(enable =
/// "avx512f")` needs Rust 1.89, above the crate's MSRV of 1.75.)
pub(crate) fn exp_shifted_sum_f32(x: &mut [f32], shift: f32) -> f32 {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the only precondition of a `target_feature` function is that the CPU has the
            // features, which were just detected.
            return unsafe { exp_shifted_sum_avx2(x, shift) };
        }
    }
    exp_shifted_sum_body(x, shift)
}

/// `tanh` of one `f32` from [`exp1`]: `sign(x) (1 - 2 / (e^{2|x|} + 1))`. Absolute error about
/// 3 `f32` ulps of 1 (`~4e-7`) for every `x` (a relative error near 0, where `tanh x ~ x`, but the
/// model only uses `1 + tanh`); exactly `±1` once `e^{2|x|}` overflows; NaN stays NaN.
#[inline(always)]
fn tanh1(x: f32) -> f32 {
    let e = exp1(2.0 * x.abs());
    let t = 1.0 - 2.0 / (e + 1.0);
    if x < 0.0 {
        -t
    } else {
        t
    }
}

#[inline(always)]
fn tanh_body(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = tanh1(*v);
    }
}

/// The tanh loop compiled for AVX2 with FMA.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(all(feature = "std", target_arch = "x86_64"))]
#[target_feature(enable = "avx2,fma")]
unsafe fn tanh_avx2(x: &mut [f32]) {
    tanh_body(x)
}

/// `x_i = tanh(x_i)` in `f32` (see [`tanh1`] for accuracy), vectorized like
/// [`exp_shifted_sum_f32`] (AVX2/FMA detected at run time with `std` on x86-64).
pub(crate) fn tanh_in_place_f32(x: &mut [f32]) {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has the features, just detected (the only precondition).
            return unsafe { tanh_avx2(x) };
        }
    }
    tanh_body(x)
}

/// `x_i = tanh(x_i)` in `f64` by `libm::tanh` (the reference precision).
pub(crate) fn tanh_in_place_f64(x: &mut [f64]) {
    for v in x.iter_mut() {
        *v = libm::tanh(*v);
    }
}

/// `x_i = e^{x_i - shift}` in `f64`, by `libm::exp`, returning `sum_i x_i`.
pub(crate) fn exp_shifted_sum_f64(x: &mut [f64], shift: f64) -> f64 {
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = libm::exp(*v - shift);
        sum += *v;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exp_f32(x: &mut [f32]) {
        exp_shifted_sum_f32(x, 0.0);
    }

    /// The vectorized f32 tanh against `libm::tanh` in f64 on a dense grid (absolute error, the
    /// documented bound of 3 ulps of 1), the portable body equal to the dispatched path, and the
    /// special values.
    #[test]
    fn tanh_f32_matches_libm() {
        let mut grid: std::vec::Vec<f32> = (0..40_000).map(|i| (i as f32 - 20_000.0) * 0.000_6).collect();
        let exact: std::vec::Vec<f64> = grid.iter().map(|&x| libm::tanh(x as f64)).collect();
        let mut portable = grid.clone();
        tanh_in_place_f32(&mut grid);
        tanh_body(&mut portable);
        assert_eq!(grid, portable);
        let worst = grid.iter().zip(&exact).map(|(&t, &e)| (t as f64 - e).abs()).fold(0.0, f64::max);
        assert!(worst <= 3.0 * f32::EPSILON as f64, "worst absolute error {worst}");
        let mut special = [f32::NEG_INFINITY, f32::INFINITY, f32::NAN, -1e4, 1e4, 0.0, 50.0, -50.0];
        tanh_in_place_f32(&mut special);
        assert_eq!(special[..2], [-1.0, 1.0]);
        assert!(special[2].is_nan());
        assert_eq!(special[3..], [-1.0, 1.0, 0.0, 1.0, -1.0]);
    }

    /// Against `libm::exp` in f64 on a dense grid, and at the special values, through the
    /// dispatched (vector) path and the portable body.
    #[test]
    fn exp_f32_matches_libm() {
        let mut grid: [f32; 37] = core::array::from_fn(|i| i as f32 * 0.37 - 6.0);
        let mut portable = grid;
        let sum = exp_shifted_sum_f32(&mut grid, 1.0);
        let sum_portable = exp_shifted_sum_body(&mut portable, 1.0);
        assert_eq!(grid, portable);
        assert!((sum - sum_portable).abs() <= 1e-6 * sum);
        let mut worst = 0.0f64;
        let mut x = -86.5f32;
        while x < 88.7 {
            let mut v = [x];
            exp_f32(&mut v);
            let exact = libm::exp(x as f64);
            worst = worst.max(((v[0] as f64) - exact).abs() / exact);
            x += 0.001_37;
        }
        assert!(worst < 3.0 * f32::EPSILON as f64, "worst relative error {worst}");
        let mut special = [f32::NEG_INFINITY, f32::INFINITY, f32::NAN, -1e4, 1e4, 0.0, -100.0];
        exp_f32(&mut special);
        assert_eq!(special[0], 0.0);
        assert_eq!(special[1], f32::INFINITY);
        assert!(special[2].is_nan());
        assert_eq!((special[3], special[4], special[5], special[6]), (0.0, f32::INFINITY, 1.0, 0.0));
    }
}
