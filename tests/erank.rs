//! Effective-rank measures (`docs/math.md` section 2) on spectra whose values are known in closed form.

use proptest::prelude::*;
use sd_attention::spectral::erank::*;
use sd_attention::Error;

#[test]
fn equal_values_give_their_count() {
    for k in 1..20usize {
        let mut sigma = vec![2.5f64; k];
        sigma.extend([0.0; 3]);
        assert!((entropy_effective_rank(&sigma).unwrap() - k as f64).abs() <= 8.0 * k as f64 * f64::EPSILON);
        assert!((participation_ratio(&sigma).unwrap() - k as f64).abs() <= 8.0 * k as f64 * f64::EPSILON);
        assert!((stable_rank(&sigma).unwrap() - k as f64).abs() <= 8.0 * k as f64 * f64::EPSILON);
        assert_eq!(numerical_rank(&sigma, 1e-12).unwrap(), k);
    }
}

#[test]
fn a_single_rotation_plane_has_erank_two() {
    assert_eq!(entropy_effective_rank(&[0.7f64, 0.7]).unwrap(), 2.0);
    assert_eq!(entropy_effective_rank(&[0.7f32, 0.7]).unwrap(), 2.0);
}

#[test]
fn known_unequal_spectrum() {
    // p = (1/2, 1/4, 1/4): H = 1.5 ln 2, erank = 2^1.5.
    let sigma = [2.0f64, 1.0, 1.0];
    assert!((entropy_effective_rank(&sigma).unwrap() - 2f64.powf(1.5)).abs() < 4.0 * f64::EPSILON);
    // (4 + 1 + 1)^2 / (16 + 1 + 1) = 2.
    assert!((participation_ratio(&sigma).unwrap() - 2.0).abs() < 4.0 * f64::EPSILON);
    // (4 + 1 + 1) / 4.
    assert_eq!(stable_rank(&sigma).unwrap(), 1.5);
    assert_eq!(numerical_rank(&sigma, 0.4).unwrap(), 3);
    assert_eq!(numerical_rank(&sigma, 0.6).unwrap(), 1);
    let all = effective_ranks(&sigma, 0.6).unwrap();
    assert_eq!(all.numerical, 1);
    assert_eq!(all.stable, 1.5);
}

#[test]
fn empty_and_zero_spectra_are_rank_zero() {
    for sigma in [&[][..], &[0.0f64, 0.0][..]] {
        assert_eq!(entropy_effective_rank(sigma).unwrap(), 0.0);
        assert_eq!(participation_ratio(sigma).unwrap(), 0.0);
        assert_eq!(stable_rank(sigma).unwrap(), 0.0);
        assert_eq!(numerical_rank(sigma, 0.0).unwrap(), 0);
    }
}

#[test]
fn bad_values_are_rejected() {
    assert_eq!(
        entropy_effective_rank(&[1.0f64, f64::NAN]),
        Err(Error::NonFinite { what: "sigma", index: 1 })
    );
    assert_eq!(stable_rank(&[f32::INFINITY]), Err(Error::NonFinite { what: "sigma", index: 0 }));
    assert_eq!(
        participation_ratio(&[1.0f64, 2.0, -1e-300]),
        Err(Error::InvalidValue { what: "sigma", index: 2, expected: "nonnegative" })
    );
    for tol in [-1.0, f64::NAN, f64::INFINITY] {
        assert!(matches!(
            numerical_rank(&[1.0f64], tol),
            Err(Error::InvalidParameter { what: "rel_tol", .. })
        ));
    }
}

#[test]
fn extreme_scales_do_not_overflow() {
    let big = [f64::MAX, f64::MAX / 2.0];
    let small = [1.0f64, 0.5];
    assert_eq!(entropy_effective_rank(&big).unwrap(), entropy_effective_rank(&small).unwrap());
    assert_eq!(participation_ratio(&big).unwrap(), participation_ratio(&small).unwrap());
    let tiny = [f64::from_bits(2), f64::from_bits(1)]; // subnormals in ratio 2:1
    assert_eq!(stable_rank(&tiny).unwrap(), 1.25);
}

proptest! {
    #[test]
    fn measures_are_scale_invariant_and_bounded(
        sigma in prop::collection::vec(0.0f64..10.0, 0..50), scale_exp in -40i32..40,
    ) {
        let factor = 2f64.powi(scale_exp);
        let scaled: Vec<f64> = sigma.iter().map(|s| s * factor).collect();
        let nonzero = sigma.iter().filter(|&&s| s > 0.0).count() as f64;
        let (e, p, s) = (entropy_effective_rank(&sigma).unwrap(), participation_ratio(&sigma).unwrap(), stable_rank(&sigma).unwrap());
        let tol = 64.0 * f64::EPSILON * (nonzero + 1.0);
        prop_assert!((entropy_effective_rank(&scaled).unwrap() - e).abs() <= tol * e.max(1.0));
        prop_assert!((participation_ratio(&scaled).unwrap() - p).abs() <= tol * p.max(1.0));
        prop_assert!((stable_rank(&scaled).unwrap() - s).abs() <= tol * s.max(1.0));
        if nonzero > 0.0 {
            // 1 <= stable <= PR <= ... each measure lies between 1 and the count of nonzero values.
            for v in [e, p, s] {
                prop_assert!(v >= 1.0 - tol && v <= nonzero + tol);
            }
            prop_assert!(s <= p + tol);
        }
    }
}

proptest! {
    /// Hostile spectra (zeros of both signs, extremes, subnormals, NaN, infinities) from the public
    /// strategy: every measure returns `Err` exactly when a value is non-finite or negative, and
    /// otherwise a finite value in `[0, count of nonzero values]`.
    #[test]
    fn hostile_spectra_give_errors_or_bounded_ranks(
        sigma in sd_attention::testing::strategies::hostile_values::<f32>(0..24),
    ) {
        let bad = sigma.iter().any(|s| !s.is_finite() || *s < 0.0);
        let nonzero = sigma.iter().filter(|s| **s != 0.0).count() as f32;
        for result in [entropy_effective_rank(&sigma), participation_ratio(&sigma), stable_rank(&sigma)] {
            prop_assert_eq!(result.is_err(), bad);
            if let Ok(rank) = result {
                prop_assert!(rank.is_finite() && rank >= 0.0 && rank <= nonzero * (1.0 + 1e-5));
            }
        }
        prop_assert_eq!(numerical_rank(&sigma, 1e-3).is_err(), bad);
    }
}
