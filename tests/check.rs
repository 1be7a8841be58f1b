//! The invariant checkers measure what they claim: zero on exact constructions, within their
//! documented tolerance on rounded ones, exactly the injected defect on broken ones, NaN on NaN.

mod common;
use common::*;
use proptest::prelude::*;
use sd_attention::check::*;
use sd_attention::dense::{matmul_nt, Update};
use sd_attention::split::split;
use sd_attention::strategies::{sd_factors, square_matrix, symmetric, Definiteness, Matrix};

fn parts(m: &Matrix<f64>) -> (Vec<f64>, Vec<f64>) {
    let (mut s, mut d) = (vec![0.0; m.data.len()], vec![0.0; m.data.len()]);
    split(m.rows, &m.data, &mut s, &mut d).unwrap();
    (s, d)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn exact_split_has_zero_deviation_and_tolerable_residuals(square in square_matrix::<f64>(0..80, 1.0)) {
        let m = square.rows;
        let (s, d) = parts(&square);
        prop_assert_eq!(skew_deviation(m, &s).unwrap(), 0.0);
        prop_assert_eq!(symmetry_deviation(m, &d).unwrap(), 0.0);
        let max_entry = square.data.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        prop_assert!(split_residual(m, &square.data, &s, &d).unwrap() <= tolerance_for(1, max_entry));
        let energy = naive_sq_norm(&square.data);
        prop_assert!(energy_identity_residual(m, &square.data, &s, &d).unwrap() <= tolerance_for(m * m, energy));
    }

    #[test]
    fn sd_kernel_formed_in_f32_stays_within_its_tolerance(f in sd_factors::<f32>(1..70, 0..9, 0..9)) {
        let (d, r, q) = (f.d, f.routing_rank, f.filtering_rank);
        // S = U V^T - V U^T and D = -C C^T formed with products, as a user's code would.
        let (mut uv, mut vu, mut cc) = (vec![0.0f32; d * d], vec![0.0f32; d * d], vec![0.0f32; d * d]);
        matmul_nt(d, r, d, &f.u, &f.v, &mut uv, Update::Overwrite).unwrap();
        matmul_nt(d, r, d, &f.v, &f.u, &mut vu, Update::Overwrite).unwrap();
        matmul_nt(d, q, d, &f.c, &f.c, &mut cc, Update::Overwrite).unwrap();
        let routing: Vec<f32> = uv.iter().zip(&vu).map(|(a, b)| a - b).collect();
        let filtering: Vec<f32> = cc.iter().map(|v| -v).collect();
        let norm_u = widen(&f.u).iter().map(|v| v * v).sum::<f64>().sqrt() as f32;
        let norm_v = widen(&f.v).iter().map(|v| v * v).sum::<f64>().sqrt() as f32;
        let norm_c_sq = widen(&f.c).iter().map(|v| v * v).sum::<f64>() as f32;
        prop_assert!(skew_deviation(d, &routing).unwrap() <= tolerance_for(2 * r, norm_u * norm_v));
        prop_assert!(symmetry_deviation(d, &filtering).unwrap() <= tolerance_for(q, norm_c_sq));
    }

    #[test]
    fn generated_definite_matrices_have_the_promised_sign(
        psd in symmetric::<f64>(1..40, 0..6, Definiteness::PositiveSemidefinite),
        nsd in symmetric::<f64>(1..40, 0..6, Definiteness::NegativeSemidefinite),
        seed in any::<u64>(),
    ) {
        for (mat, sign) in [(&psd, 1.0), (&nsd, -1.0)] {
            let m = mat.rows;
            prop_assert_eq!(symmetry_deviation(m, &mat.data).unwrap(), 0.0);
            let x = seeded_matrix(m, seed);
            let ax = naive_matmul(m, m, 1, &mat.data, &x);
            let quadratic: f64 = x.iter().zip(&ax).map(|(a, b)| a * b).sum();
            let scale = naive_sq_norm(&x) * naive_sq_norm(&mat.data).sqrt();
            prop_assert!(sign * quadratic >= -tolerance_for(m, scale));
        }
    }
}

#[test]
fn injected_defects_are_measured_exactly() {
    let mut a = vec![0.0f64, 1.0, -1.0, 0.0]; // exactly skew
    assert_eq!(skew_deviation(2, &a).unwrap(), 0.0);
    a[1] += 0.25;
    assert_eq!(skew_deviation(2, &a).unwrap(), 0.25);
    assert_eq!(symmetry_deviation(2, &a).unwrap(), 2.25);
    a[0] = f64::NAN;
    assert!(skew_deviation(2, &a).unwrap().is_nan());
    // Row-stochastic weights: exact rows pass, a negative weight or a wrong sum is measured.
    let p = [0.25f32, 0.75, 1.0, 0.0];
    assert_eq!(row_stochasticity_deviation(2, 2, &p).unwrap(), 0.0);
    assert_eq!(row_stochasticity_deviation(1, 2, &[1.5f32, -0.5]).unwrap(), 0.5);
    assert_eq!(row_stochasticity_deviation(1, 2, &[0.5f32, 0.25]).unwrap(), 0.25);
    assert_eq!(row_stochasticity_deviation::<f32>(3, 0, &[]).unwrap(), 1.0);
    assert!(row_stochasticity_deviation(1, 2, &[f64::NAN, 1.0]).unwrap().is_nan());
    // Shape errors, not panics.
    assert!(skew_deviation(3, &a).is_err());
    assert!(split_residual(2, &a, &a[..3], &a).is_err());
}

#[test]
fn softmax_rows_are_stochastic_within_tolerance() {
    for cols in [1usize, 7, 64, 257] {
        let logits = seeded_matrix(cols, cols as u64);
        let max = logits.iter().cloned().fold(f64::MIN, f64::max);
        let exps: Vec<f32> = logits.iter().map(|l| ((l - max) * 10.0).exp() as f32).collect();
        let total: f32 = exps.iter().sum();
        let row: Vec<f32> = exps.iter().map(|e| e / total).collect();
        assert!(row_stochasticity_deviation(1, cols, &row).unwrap() <= tolerance_for(cols, 1.0f32));
    }
}
