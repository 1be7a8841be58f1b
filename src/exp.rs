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
