//! dot, axpy, scale and the norms against naive f64 loops, and their NaN/infinity behaviour.

mod common;
use common::*;
use proptest::prelude::*;
use sd_attention::linalg::dense::{axpy, check_finite, dot, frobenius_norm, scale, squared_norm};
use sd_attention::Error;

proptest! {
    #[test]
    fn dot_matches_naive(len in 0usize..600, seed in 0u64..10_000) {
        let x = seeded_matrix(len, seed);
        let y = seeded_matrix(len, seed + 7);
        let naive: f64 = x.iter().zip(&y).map(|(a, b)| a * b).sum();
        let bound: f64 = x.iter().zip(&y).map(|(a, b)| (a * b).abs()).sum::<f64>() * (len as f64 + 1.0) * f64::EPSILON;
        prop_assert!((dot(&x, &y).unwrap() - naive).abs() <= bound + f64::MIN_POSITIVE);
        // f32 against the f64 result on the same (rounded) values.
        let (x32, y32) = (narrow(&x), narrow(&y));
        let exact: f64 = widen(&x32).iter().zip(widen(&y32)).map(|(a, b)| a * b).sum();
        let bound32 = (len as f64 + 1.0) * f32::EPSILON as f64 * bound / ((len as f64 + 1.0) * f64::EPSILON).max(f64::MIN_POSITIVE);
        prop_assert!((dot(&x32, &y32).unwrap() as f64 - exact).abs() <= bound32 + 1e-30);
    }

    #[test]
    fn axpy_and_scale_are_elementwise(len in 0usize..200, alpha in -3.0f64..3.0, seed in 0u64..1000) {
        let x = seeded_matrix(len, seed);
        let mut y = seeded_matrix(len, seed + 1);
        let expected: Vec<f64> = y.iter().zip(&x).map(|(y, x)| y + alpha * x).collect();
        axpy(alpha, &x, &mut y).unwrap();
        prop_assert_eq!(&y, &expected);
        scale(alpha, &mut y);
        let scaled: Vec<f64> = expected.iter().map(|v| v * alpha).collect();
        prop_assert_eq!(y, scaled);
    }

    #[test]
    fn frobenius_norm_matches_naive_at_any_scale(len in 1usize..300, exponent in -300i32..300, seed in 0u64..1000) {
        let unit = seeded_matrix(len, seed);
        let factor = 2f64.powi(exponent);
        let x: Vec<f64> = unit.iter().map(|v| v * factor).collect();
        // The naive norm of the unscaled vector, scaled back exactly (powers of two).
        let expected = naive_sq_norm(&unit).sqrt() * factor;
        let got = frobenius_norm(&x);
        prop_assert!((got - expected).abs() <= 4.0 * len as f64 * f64::EPSILON * expected, "{} vs {}", got, expected);
    }
}

/// `|got - want| <= 4 eps |want|` in the precision of the arguments.
fn close64(got: f64, want: f64) -> bool {
    (got - want).abs() <= 4.0 * f64::EPSILON * want.abs()
}

fn close32(got: f32, want: f32) -> bool {
    (got - want).abs() <= 4.0 * f32::EPSILON * want.abs()
}

#[test]
fn norms_of_special_vectors() {
    assert_eq!(frobenius_norm::<f64>(&[]), 0.0);
    assert_eq!(frobenius_norm(&[0.0f32; 5]), 0.0);
    assert_eq!(frobenius_norm(&[3.0f64, 4.0]), 5.0);
    assert_eq!(squared_norm(&[3.0f64, 4.0]), 25.0);
    // Far beyond where the squares overflow or underflow.
    assert!(close64(frobenius_norm(&[3e200f64, 4e200]), 5e200));
    assert!(close64(frobenius_norm(&[3e-200f64, 4e-200]), 5e-200));
    assert!(close32(frobenius_norm(&[3e30f32, 4e30]), 5e30));
    // Subnormal-only input (its reciprocal overflows).
    let tiny = f32::from_bits(1); // 2^-149
    assert!(close32(frobenius_norm(&[tiny, tiny, tiny, tiny]), 2.0 * tiny));
    let tiny64 = f64::from_bits(3); // 3 * 2^-1074
    assert!(close64(frobenius_norm(&[tiny64; 9]), 3.0 * tiny64));
    assert_eq!(frobenius_norm(&[f64::INFINITY, 1.0]), f64::INFINITY);
    assert!(frobenius_norm(&[f64::NAN, 1.0]).is_nan());
    assert!(frobenius_norm(&[f64::NAN, 0.0]).is_nan());
    assert!(frobenius_norm(&[f64::INFINITY, f64::NAN]).is_nan());
    assert!(dot(&[f64::NAN], &[0.0]).unwrap().is_nan());
}

#[test]
fn check_finite_reports_the_first_bad_index() {
    assert_eq!(check_finite("x", &[1.0f64, 2.0]), Ok(()));
    assert_eq!(
        check_finite("x", &[1.0f64, f64::INFINITY, f64::NAN]),
        Err(Error::NonFinite { what: "x", index: 1 })
    );
}
