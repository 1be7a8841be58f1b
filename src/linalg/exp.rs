//! `exp` over slices, written so that the compiler vectorizes it (plain arithmetic and selects, no
//! calls): the softmax kernels spend a large share of their time here.
//!
//! `f32`: Cody-Waite reduction `x = k ln2 + r`, `|r| <= ln2 / 2`, then the degree-7 Taylor
//! polynomial of `e^r` (truncation `r^8 / 8! < 6e-9`, under 0.1 ulp), scaled by `2^k` assembled from
//! its exponent bits. Relative error about 2 ulp over `[-86.5, 88.7]`; `+inf` above `88.72`
//! (where `e^x` overflows), `0` below `-86.5` (results under `e^-86.5 ~ 2.7e-38`, including
//! subnormals, are flushed to zero), NaN stays NaN, `-inf` gives `0`.
//! `f64`: `libm::exp` element by element (the reference precision; not a hot path).

use crate::Scalar;

const LN2_HI: f32 = 0.693_145_75; // ln 2 rounded to 17 bits: k * LN2_HI is exact for |k| < 2^7
const LN2_LO: f32 = 1.428_606_8e-6; // ln 2 - LN2_HI
const ROUND_MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer in the low bits

/// Independent accumulators of the sum (a multiple of every vector width, so that the sum
/// vectorizes without reassociating one running total).
const LANES: usize = 16;

/// `a * b + c`, fused when `FUSED` (see [`Scalar::multiply_add`]).
#[inline(always)]
fn madd<const FUSED: bool>(a: f32, b: f32, c: f32) -> f32 {
    f32::multiply_add::<FUSED>(a, b, c)
}

/// `e^x` of one element (see the module documentation); inlined into each vector loop. NaN needs
/// no select: it flows through every operation below (`clamp` keeps it).
#[inline(always)]
pub(crate) fn exp1<const FUSED: bool>(input: f32) -> f32 {
    let clamped = input.clamp(-86.5, 88.72);
    let shifted = madd::<FUSED>(clamped, core::f32::consts::LOG2_E, ROUND_MAGIC);
    let k = shifted - ROUND_MAGIC;
    let k_bits = (shifted.to_bits() as i32).wrapping_sub(ROUND_MAGIC.to_bits() as i32);
    let r = madd::<FUSED>(-k, LN2_LO, madd::<FUSED>(-k, LN2_HI, clamped));
    let mut p = madd::<FUSED>(r, 1.0 / 40320.0, 1.0 / 5040.0);
    p = madd::<FUSED>(r, p, 1.0 / 720.0);
    p = madd::<FUSED>(r, p, 1.0 / 120.0);
    p = madd::<FUSED>(r, p, 1.0 / 24.0);
    p = madd::<FUSED>(r, p, 1.0 / 6.0);
    p = madd::<FUSED>(r, p, 0.5);
    p = madd::<FUSED>(r, p, 1.0);
    p = madd::<FUSED>(r, p, 1.0);
    // 2^(k-1) from its exponent bits (k - 1 + 127 in 1..=254), times 2: covers k = 128.
    let half_pow2 = f32::from_bits((k_bits.wrapping_add(126) as u32) << 23);
    let y = p * half_pow2 * 2.0;
    if input > 88.72 {
        f32::INFINITY
    } else if input < -86.5 {
        0.0
    } else {
        y
    }
}

/// The loop body shared by every instruction-set variant.
#[inline(always)]
fn exp_shifted_sum_body<const FUSED: bool>(x: &mut [f32], shift: f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut chunks = x.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for lane in 0..LANES {
            let y = exp1::<FUSED>(chunk[lane] - shift);
            chunk[lane] = y;
            acc[lane] += y;
        }
    }
    let mut tail = 0.0f32;
    for v in chunks.into_remainder() {
        *v = exp1::<FUSED>(*v - shift);
        tail += *v;
    }
    acc.iter().fold(tail, |s, &a| s + a)
}

crate::arch::multiversion! {
    /// [`exp_shifted_sum_f32`] in the variant `isa`: AVX-512 or AVX2 with their multiply-adds fused
    /// (one rounding each instead of two), or portable (unfused).
    fn exp_shifted_sum_isa(x: &mut [f32], shift: f32) -> f32;
    avx512("avx512f,fma") => exp_shifted_sum_body::<true>(x, shift);
    avx2("avx2,fma") => exp_shifted_sum_body::<true>(x, shift);
    portable => exp_shifted_sum_body::<false>(x, shift);
}

/// `x_i = e^{x_i - shift}` for every element, in `f32`, returning `sum_i x_i` (see the module
/// documentation for accuracy). The loop runs in the variant [`crate::arch`] chooses: AVX-512 or
/// AVX2 with FMA when the CPU has them (with `std` on x86-64), otherwise in the target's
/// compile-time features.
pub(crate) fn exp_shifted_sum_f32(x: &mut [f32], shift: f32) -> f32 {
    exp_shifted_sum_isa(crate::arch::isa(), x, shift)
}

/// The loop of [`exp_sub_accumulate_f32`], shared by every instruction-set variant.
#[inline(always)]
fn exp_sub_accumulate_body<const FUSED: bool>(x: &mut [f32], shift: &[f32], sum: &mut [f32]) {
    for ((v, &s), acc) in x.iter_mut().zip(shift).zip(sum.iter_mut()) {
        let y = exp1::<FUSED>(*v - s);
        *v = y;
        *acc += y;
    }
}

crate::arch::multiversion! {
    /// [`exp_sub_accumulate_f32`] in the variant `isa` (fused multiply-adds in the AVX variants).
    fn exp_sub_accumulate_isa(x: &mut [f32], shift: &[f32], sum: &mut [f32]);
    avx512("avx512f,fma") => exp_sub_accumulate_body::<true>(x, shift, sum);
    avx2("avx2,fma") => exp_sub_accumulate_body::<true>(x, shift, sum);
    portable => exp_sub_accumulate_body::<false>(x, shift, sum);
}

/// `x_i = e^{x_i - shift_i}` and `sum_i += x_i` over the common length of the three slices, in
/// `f32` (accuracy and dispatch as [`exp_shifted_sum_f32`]): one row of a transposed logit tile,
/// whose columns are queries with their own shifts and running sums.
pub(crate) fn exp_sub_accumulate_f32(x: &mut [f32], shift: &[f32], sum: &mut [f32]) {
    exp_sub_accumulate_isa(crate::arch::isa(), x, shift, sum)
}

/// `x_i = e^{x_i - shift_i}`, `sum_i += x_i` in `f64`, by `libm::exp`.
pub(crate) fn exp_sub_accumulate_f64(x: &mut [f64], shift: &[f64], sum: &mut [f64]) {
    for ((v, &s), acc) in x.iter_mut().zip(shift).zip(sum.iter_mut()) {
        *v = libm::exp(*v - s);
        *acc += *v;
    }
}

/// `tanh` of one `f32` from [`exp1`]: `sign(x) (1 - 2 / (e^{2|x|} + 1))`. Absolute error about
/// 3 `f32` ulps of 1 (`~4e-7`) for every `x` (a relative error near 0, where `tanh x ~ x`, but the
/// model only uses `1 + tanh`); exactly `±1` once `e^{2|x|}` overflows; NaN stays NaN.
#[inline(always)]
pub(crate) fn tanh1<const FUSED: bool>(x: f32) -> f32 {
    let e = exp1::<FUSED>(2.0 * x.abs());
    let t = 1.0 - 2.0 / (e + 1.0);
    if x < 0.0 {
        -t
    } else {
        t
    }
}

#[inline(always)]
fn tanh_body<const FUSED: bool>(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = tanh1::<FUSED>(*v);
    }
}

crate::arch::multiversion! {
    /// [`tanh_in_place_f32`] in the variant `isa` (fused multiply-adds in the AVX variants).
    fn tanh_in_place_isa(x: &mut [f32]);
    avx512("avx512f,fma") => tanh_body::<true>(x);
    avx2("avx2,fma") => tanh_body::<true>(x);
    portable => tanh_body::<false>(x);
}

/// `x_i = tanh(x_i)` in `f32` (see [`tanh1`] for accuracy), in the variant [`crate::arch`]
/// chooses, like [`exp_shifted_sum_f32`].
pub(crate) fn tanh_in_place_f32(x: &mut [f32]) {
    tanh_in_place_isa(crate::arch::isa(), x)
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

    /// Worst relative error against `libm::exp` in f64 over a dense grid of `[-86.5, 88.7)`.
    fn worst_error(exp: impl Fn(&mut [f32], f32) -> f32) -> f64 {
        let mut worst = 0.0f64;
        for block in 0..127 {
            let grid: [f32; 1000] = core::array::from_fn(|i| -86.5 + (block * 1000 + i) as f32 * 0.001_37);
            let mut values = grid;
            exp(&mut values, 0.0);
            for (&x, &y) in grid.iter().zip(&values) {
                let exact = libm::exp(x as f64);
                worst = worst.max(((y as f64) - exact).abs() / exact);
            }
        }
        worst
    }

    /// The vectorized f32 tanh against `libm::tanh` in f64 on a dense grid (absolute error, the
    /// documented bound of 3 ulps of 1), through the dispatched path (fused where the CPU has
    /// AVX2/FMA) and the portable unfused body, and the special values.
    #[test]
    fn tanh_f32_matches_libm() {
        let mut grid: std::vec::Vec<f32> = (0..40_000).map(|i| (i as f32 - 20_000.0) * 0.000_6).collect();
        let exact: std::vec::Vec<f64> = grid.iter().map(|&x| libm::tanh(x as f64)).collect();
        let mut portable = grid.clone();
        tanh_in_place_f32(&mut grid);
        tanh_body::<false>(&mut portable);
        for path in [&grid, &portable] {
            let worst = path.iter().zip(&exact).map(|(&t, &e)| (t as f64 - e).abs()).fold(0.0, f64::max);
            assert!(worst <= 3.0 * f32::EPSILON as f64, "worst absolute error {worst}");
        }
        let mut special = [f32::NEG_INFINITY, f32::INFINITY, f32::NAN, -1e4, 1e4, 0.0, 50.0, -50.0];
        tanh_in_place_f32(&mut special);
        assert_eq!(special[..2], [-1.0, 1.0]);
        assert!(special[2].is_nan());
        assert_eq!(special[3..], [-1.0, 1.0, 0.0, 1.0, -1.0]);
    }

    /// Against `libm::exp` in f64 on a dense grid, and at the special values, through the
    /// dispatched path (AVX2/FMA where the CPU has it) and the portable body (unfused): each within
    /// 3 ulp (the polynomial's truncation is under 0.1 ulp; the rest is the rounding of about ten
    /// operations on values in `[0.7, 1.42]`, partly cancelled by the final exact scaling).
    #[test]
    fn exp_f32_matches_libm() {
        let bound = 3.0 * f32::EPSILON as f64;
        let dispatched = worst_error(exp_shifted_sum_f32);
        let portable = worst_error(exp_shifted_sum_body::<false>);
        assert!(dispatched < bound, "dispatched: worst relative error {dispatched}");
        assert!(portable < bound, "portable: worst relative error {portable}");
        // The sum over a shifted grid, both paths, against the f64 sum.
        let grid: [f32; 37] = core::array::from_fn(|i| i as f32 * 0.37 - 6.0);
        let exact: f64 = grid.iter().map(|&x| libm::exp(x as f64 - 1.0)).sum();
        for sum in [
            exp_shifted_sum_f32(&mut grid.clone(), 1.0),
            exp_shifted_sum_body::<false>(&mut grid.clone(), 1.0),
        ] {
            assert!((sum as f64 - exact).abs() <= 40.0 * f32::EPSILON as f64 * exact, "{sum} vs {exact}");
        }
        for exp in [exp_shifted_sum_f32, exp_shifted_sum_body::<false>] {
            let mut special =
                [f32::NEG_INFINITY, f32::INFINITY, f32::NAN, -1e4, 1e4, 0.0, -100.0, 88.72, 88.73];
            exp(&mut special, 0.0);
            assert_eq!(special[0], 0.0);
            assert_eq!(special[1], f32::INFINITY);
            assert!(special[2].is_nan());
            assert_eq!((special[3], special[4], special[5], special[6]), (0.0, f32::INFINITY, 1.0, 0.0));
            assert!(special[7].is_finite() && special[8] == f32::INFINITY);
        }
    }

    /// The per-element shift against the scalar-shift form on the same data, both paths: each
    /// element within 3 ulp of `libm::exp` (as above), so within 6 ulp of each other; sums add.
    #[test]
    fn exp_sub_accumulate_matches_shifted_sum() {
        let x: [f32; 45] = core::array::from_fn(|i| (i as f32 * 0.73).sin() * 30.0);
        let shift: [f32; 45] = core::array::from_fn(|i| (i % 5) as f32 - 2.0);
        for accumulate in [exp_sub_accumulate_f32, exp_sub_accumulate_body::<false>] {
            let mut values = x;
            let mut sums = [1.0f32; 45];
            accumulate(&mut values, &shift, &mut sums);
            for i in 0..45 {
                let exact = libm::exp(x[i] as f64 - shift[i] as f64);
                assert!((values[i] as f64 - exact).abs() <= 3.0 * f32::EPSILON as f64 * exact, "{i}");
                assert_eq!(sums[i], 1.0 + values[i]);
            }
        }
        let (mut x64, mut sums64) = ([0.5f64, f64::NEG_INFINITY, 2.0], [0.0f64; 3]);
        exp_sub_accumulate_f64(&mut x64, &[0.5, 0.0, 0.0], &mut sums64);
        assert_eq!(x64, [1.0, 0.0, libm::exp(2.0)]);
        assert_eq!(sums64, x64);
    }

    /// Each instruction-set variant the CPU has (portable, AVX2/FMA, and AVX-512 when compiled
    /// in), whatever the dispatch chooses: the same bounds as above against libm, for `exp`,
    /// the per-element shift and `tanh`.
    #[test]
    fn every_instruction_set_variant_matches_libm() {
        for isa in crate::arch::available() {
            let name = isa.name();
            let worst = worst_error(|x, s| exp_shifted_sum_isa(isa, x, s));
            assert!(worst < 3.0 * f32::EPSILON as f64, "{name}: exp worst relative error {worst}");
            let x: [f32; 45] = core::array::from_fn(|i| (i as f32 * 0.73).sin() * 30.0);
            let shift: [f32; 45] = core::array::from_fn(|i| (i % 5) as f32 - 2.0);
            let (mut values, mut sums) = (x, [1.0f32; 45]);
            exp_sub_accumulate_isa(isa, &mut values, &shift, &mut sums);
            for i in 0..45 {
                let exact = libm::exp(x[i] as f64 - shift[i] as f64);
                assert!((values[i] as f64 - exact).abs() <= 3.0 * f32::EPSILON as f64 * exact, "{name} {i}");
                assert_eq!(sums[i], 1.0 + values[i]);
            }
            let mut grid: std::vec::Vec<f32> = (0..20_011).map(|i| (i as f32 - 10_000.0) * 0.001_3).collect();
            let exact: std::vec::Vec<f64> = grid.iter().map(|&x| libm::tanh(x as f64)).collect();
            tanh_in_place_isa(isa, &mut grid);
            let worst = grid.iter().zip(&exact).map(|(&t, &e)| (t as f64 - e).abs()).fold(0.0, f64::max);
            assert!(worst <= 3.0 * f32::EPSILON as f64, "{name}: tanh worst absolute error {worst}");
        }
    }
}
