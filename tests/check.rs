//! The invariant checkers measure what they claim: zero on exact constructions, within their
//! documented tolerance on rounded ones, exactly the injected defect on broken ones, NaN on NaN.

mod common;
use common::jacobi::jacobi_eigenvalues;
use common::*;
use proptest::prelude::*;
use sd_attention::linalg::dense::{matmul_nt, Update};
use sd_attention::split::split;
use sd_attention::testing::check::*;
use sd_attention::testing::strategies::{sd_factors, square_matrix, symmetric, Definiteness, Matrix};

fn parts(m: &Matrix<f64>) -> (Vec<f64>, Vec<f64>) {
    let (mut s, mut d) = (vec![0.0; m.data.len()], vec![0.0; m.data.len()]);
    split(m.rows, &m.data, &mut s, &mut d).unwrap();
    (s, d)
}

proptest! {
    #![proptest_config(common::proptest_config(96))]

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

/// How far a Lanczos-based checker's value `theta + r` (or `theta - r`) may lie from the dense
/// reference eigenvalue `lambda` of an `n x n` symmetric matrix of Frobenius norm `norm`:
/// `|theta + r - lambda| <= |theta - lambda| + r <= 2 r + (rounding of both solvers)`.
/// * `r` is the Ritz value's residual: an eigenvalue lies within `r` of `theta`, and the checkers
///   stop at a relative residual of `n eps`, so `r <= n eps |theta| <= n eps ||A||_F` (after `n`
///   steps the Krylov space is exhausted and `r` is at the rounding level, below that).
/// * Lanczos with full reorthogonalization and the cyclic Jacobi reference each return the exact
///   eigenvalues of a matrix within `n eps ||A||_F` of `A` (backward stable), which
///   `tolerance_for(n, ||A||_F) = 2 n eps ||A||_F` covers for the two together.
///
/// In all: `2 n eps ||A||_F + 2 n eps ||A||_F = 2 tolerance_for(n, ||A||_F)`.
fn spectral_checker_tolerance(n: usize, norm: f64) -> f64 {
    let residual = n as f64 * f64::EPSILON * norm;
    2.0 * residual + tolerance_for(n, norm)
}

/// The 4 x 4 case whose deviation (2.240307156281533) differed from the dense largest eigenvalue
/// (2.2403071562815375) by 4.4e-15, just over a bound that left out the Lanczos residual.
#[test]
fn semidefiniteness_deviation_regression_4x4() {
    let a = [
        [-0.28747172289120065, -0.9143658484329884, -0.008136676143321427, -0.11904838552236068],
        [-0.9143658484329884, 1.7142374463688301, 0.09491425116742101, -0.5984037965487129],
        [-0.008136676143321427, 0.09491425116742101, 0.03881746177418846, -0.5354416524861093],
        [-0.11904838552236068, -0.5984037965487129, -0.5354416524861093, 0.34842670731488573],
    ];
    let data: Vec<f64> = a.iter().flatten().copied().collect();
    let n = 4;
    let eigenvalues = jacobi_eigenvalues(n, &data);
    let mut workspace = vec![0.0; semidefinite_workspace_len(n)];
    let tol = spectral_checker_tolerance(n, naive_sq_norm(&data).sqrt());
    let nsd_dev = negative_semidefinite_deviation(n, &data, &mut workspace).unwrap();
    let psd_dev = positive_semidefinite_deviation(n, &data, &mut workspace).unwrap();
    assert!((nsd_dev - eigenvalues[n - 1].max(0.0)).abs() <= tol, "{nsd_dev} vs {}", eigenvalues[n - 1]);
    assert!((psd_dev - (-eigenvalues[0]).max(0.0)).abs() <= tol, "{psd_dev} vs {}", eigenvalues[0]);
}

proptest! {
    #![proptest_config(common::proptest_config(48))]

    #[test]
    fn semidefiniteness_deviation_matches_the_dense_spectrum(
        mat in symmetric::<f64>(1..60, 0..12, Definiteness::Indefinite),
        psd in symmetric::<f64>(1..60, 0..12, Definiteness::PositiveSemidefinite),
    ) {
        for m in [&mat, &psd] {
            let n = m.rows;
            let eigenvalues = jacobi_eigenvalues(n, &m.data);
            let (lowest, highest) = (eigenvalues[0], eigenvalues[n - 1]);
            let mut workspace = vec![0.0; semidefinite_workspace_len(n)];
            let tol = spectral_checker_tolerance(n, naive_sq_norm(&m.data).sqrt());
            let psd_dev = positive_semidefinite_deviation(n, &m.data, &mut workspace).unwrap();
            let nsd_dev = negative_semidefinite_deviation(n, &m.data, &mut workspace).unwrap();
            prop_assert!((psd_dev - (-lowest).max(0.0)).abs() <= tol, "{} vs {}", psd_dev, lowest);
            prop_assert!((nsd_dev - highest.max(0.0)).abs() <= tol, "{} vs {}", nsd_dev, highest);
        }
    }

    #[test]
    fn sd_kernels_are_stable_and_the_bound_is_the_symmetric_part_maximum(
        f in sd_factors::<f64>(1..40, 0..5, 0..5), a in square_matrix::<f64>(1..40, 1.0),
    ) {
        let d = f.d;
        let (mut uv, mut cc) = (vec![0.0; d * d], vec![0.0; d * d]);
        matmul_nt(d, f.routing_rank, d, &f.u, &f.v, &mut uv, Update::Overwrite).unwrap();
        matmul_nt(d, f.filtering_rank, d, &f.c, &f.c, &mut cc, Update::Overwrite).unwrap();
        let kernel: Vec<f64> = (0..d * d).map(|i| uv[i] - uv[(i % d) * d + i / d] - cc[i]).collect();
        let mut workspace = vec![0.0; stability_bound_workspace_len(d)];
        let bound = stability_bound(d, &kernel, &mut workspace).unwrap();
        prop_assert!(bound <= tolerance_for(d, naive_sq_norm(&kernel).sqrt()), "bound {}", bound);
        // A general matrix: the bound is the largest eigenvalue of its symmetric part.
        let n = a.rows;
        let (_, sym) = naive_split(n, &a.data);
        let highest = *jacobi_eigenvalues(n, &sym).last().unwrap();
        let mut workspace = vec![0.0; stability_bound_workspace_len(n)];
        let bound = stability_bound(n, &a.data, &mut workspace).unwrap();
        prop_assert!((bound - highest).abs() <= spectral_checker_tolerance(n, naive_sq_norm(&a.data).sqrt()));
    }
}

#[test]
fn spectral_checkers_on_known_matrices() {
    // 1 +- 5i: every real part is 1, and so is the symmetric part's only eigenvalue.
    let mut workspace = vec![0.0; stability_bound_workspace_len(2)];
    let bound = stability_bound(2, &[1.0f64, 5.0, -5.0, 1.0], &mut workspace).unwrap();
    assert!((bound - 1.0).abs() <= 4.0 * f64::EPSILON, "{bound}");
    // diag(2, -3): PSD deviation 3, NSD deviation 2.
    let mut workspace = vec![0.0f32; semidefinite_workspace_len(2)];
    let diag = [2.0f32, 0.0, 0.0, -3.0];
    assert!(
        (positive_semidefinite_deviation(2, &diag, &mut workspace).unwrap() - 3.0).abs()
            <= 4.0 * f32::EPSILON
    );
    assert!(
        (negative_semidefinite_deviation(2, &diag, &mut workspace).unwrap() - 2.0).abs()
            <= 4.0 * f32::EPSILON
    );
    assert_eq!(positive_semidefinite_deviation::<f64>(0, &[], &mut []).unwrap(), 0.0);
    assert!(matches!(
        positive_semidefinite_deviation(
            2,
            &[f64::NAN, 0.0, 0.0, 1.0],
            &mut vec![0.0; semidefinite_workspace_len(2)]
        ),
        Err(sd_attention::Error::NonFinite { .. })
    ));
    assert!(stability_bound(2, &[0.0f64; 4], &mut [0.0; 3]).is_err());
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

proptest! {
    #![proptest_config(common::proptest_config(32))]

    /// The linear-attention checker: chunked and recurrent agree within the stated tolerance for
    /// every chunk size and head count; a NaN input gives a NaN residual.
    #[test]
    fn causal_recurrent_residual_is_within_tolerance(
        inputs in sd_attention::testing::strategies::attention_inputs::<f32>(1..80, 1..24, 2.0),
        chunk in 1usize..40, heads in 1usize..3,
    ) {
        use sd_attention::attention::{linear::LinearAttention, Causality};
        let n = inputs.n / heads;
        let (d_k, d_v) = (inputs.d_k, inputs.d_v);
        prop_assume!(n >= 1);
        let attention = LinearAttention::new(d_k, d_v, Causality::Causal).with_heads(heads).with_chunk(chunk);
        let (q, k, v) = (&inputs.q[..n * heads * d_k], &inputs.k[..n * heads * d_k], &inputs.v[..n * heads * d_v]);
        let mut workspace = vec![0.0f32; causal_recurrent_residual_workspace_len(&attention, n)];
        let residual = causal_recurrent_residual(&attention, n, q, k, v, &mut workspace).unwrap();
        let max_v = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        prop_assert!(residual <= tolerance_for(n + d_k, max_v), "residual {} n {} chunk {}", residual, n, chunk);
        let mut poisoned = v.to_vec();
        poisoned[0] = f32::NAN;
        prop_assert!(causal_recurrent_residual(&attention, n, q, k, &poisoned, &mut workspace).unwrap().is_nan());
    }
}
