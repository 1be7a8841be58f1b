//! Head spectra (`docs/math.md` sections 1–3), matrix-free from `W_Q, W_K`, against dense references: the
//! singular values of `S` by one-sided Jacobi, the eigenvalues of `D` by two-sided Jacobi
//! (tests/common/jacobi.rs); exact rank `2r` of `U V^T - V U^T`; the `S^T S` operator; f32 vs f64;
//! stochastic Lanczos quadrature within its standard errors.

mod common;

use common::jacobi::{jacobi_eigenvalues, jacobi_singular_values, symmetric_with_spectrum};
use sd_attention::spectral::erank::{default_rank_tolerance, effective_ranks, entropy_effective_rank};
use sd_attention::spectral::factored::{FactoredKernel, Part};
use sd_attention::spectral::lanczos::lanczos::{lanczos, lanczos_workspace_len, LanczosOptions, Termination};
use sd_attention::spectral::lanczos::operator::{
    routing_gram_workspace_len, DenseSymmetric, Filtering, RoutingGram,
};
use sd_attention::spectral::lanczos::slq::*;
use sd_attention::spectral::spectrum::*;
use sd_attention::Error;

/// Dense singular values of `S` and `|eigenvalues|` of `D` of a head.
fn dense_spectra(head: &FactoredKernel<'_, f64>) -> (Vec<f64>, Vec<f64>) {
    let d = head.d_model();
    let mut s = vec![0.0; d * d];
    head.to_dense(Part::Routing, &mut s).unwrap();
    let mut dd = vec![0.0; d * d];
    head.to_dense(Part::Filtering, &mut dd).unwrap();
    let sigma_s = jacobi_singular_values(d, d, &s);
    let sigma_d: Vec<f64> = jacobi_eigenvalues(d, &dd).iter().map(|v| v.abs()).collect();
    (sigma_s, sigma_d)
}

fn report(head: &FactoredKernel<'_, f64>) -> HeadSpectrum<f64> {
    let mut workspace = vec![0.0; head_spectrum_workspace_len(head.d_model(), head.d_head())];
    head_spectrum(head, &mut workspace).unwrap()
}

#[test]
fn head_erank_matches_dense_jacobi() {
    let mut worst = [0.0f64; 4];
    let mut cases = 0;
    for (seed, &(d_model, d_head)) in
        [(1, 1), (2, 1), (5, 2), (7, 3), (16, 8), (33, 4), (64, 16), (65, 32), (120, 8), (150, 12)]
            .iter()
            .enumerate()
    {
        let w_q = common::seeded_matrix(d_model * d_head, 2 * seed as u64);
        let w_k = common::seeded_matrix(d_model * d_head, 2 * seed as u64 + 1);
        let head = FactoredKernel::new(d_model, d_head, &w_q, &w_k).unwrap();
        let got = report(&head);
        let (sigma_s, sigma_d) = dense_spectra(&head);
        // Numerical rank relative to the kernel's scale max(||S||_2, ||D||_2), as HeadSpectrum does.
        let tol = default_rank_tolerance::<f64>(d_model, d_model);
        let scale = sigma_s[0].max(sigma_d.iter().fold(0.0f64, |m, &v| m.max(v)));
        let rel = |sigma: &[f64]| {
            let top = sigma.iter().fold(0.0f64, |m, &v| m.max(v));
            if top > 0.0 {
                tol * scale / top
            } else {
                tol
            }
        };
        let want_s = effective_ranks(&sigma_s, rel(&sigma_s)).unwrap();
        let want_d = effective_ranks(&sigma_d, rel(&sigma_d)).unwrap();
        let errors = [
            (got.routing.entropy - want_s.entropy).abs(),
            (got.filtering.entropy - want_d.entropy).abs(),
            (got.routing.participation_ratio - want_s.participation_ratio).abs(),
            (got.filtering.participation_ratio - want_d.participation_ratio).abs(),
        ];
        for (w, e) in worst.iter_mut().zip(errors) {
            *w = w.max(e);
        }
        assert!(errors[0] <= 1e-9 && errors[1] <= 1e-9, "d_model {d_model} d_head {d_head}: {errors:?}");
        assert!(errors[2] <= 1e-9 && errors[3] <= 1e-9, "d_model {d_model} d_head {d_head}: {errors:?}");
        assert_eq!(got.routing.numerical, want_s.numerical, "d_model {d_model} d_head {d_head}");
        assert_eq!(got.filtering.numerical, want_d.numerical, "d_model {d_model} d_head {d_head}");
        assert_eq!(got.rank_bound, (2 * d_head).min(d_model));
        assert!(got.routing.numerical <= got.rank_bound && got.filtering.numerical <= got.rank_bound);
        // The spectra account for the energies computed from the factors.
        assert!(got.energy_defect[0].abs() <= 1e-12 && got.energy_defect[1].abs() <= 1e-12, "{got:?}");
        assert!((got.routing_norm - sigma_s[0]).abs() <= 1e-12 * sigma_s[0]);
        cases += 1;
    }
    println!(
        "head erank vs dense over {cases} heads: max |erank S| err {:.2e}, |erank D| err {:.2e}, |PR S| err {:.2e}, |PR D| err {:.2e}",
        worst[0], worst[1], worst[2], worst[3]
    );
}

#[test]
fn singular_values_of_s_match_dense_to_1e_10() {
    let (d_model, d_head) = (96, 12);
    let w_q = common::seeded_matrix(d_model * d_head, 41);
    let w_k = common::seeded_matrix(d_model * d_head, 42);
    let head = FactoredKernel::new(d_model, d_head, &w_q, &w_k).unwrap();
    let steps = head_spectrum_steps(d_model, d_head);
    let mut workspace = vec![0.0; head_values_workspace_len(d_model, d_head)];
    let mut sigma = vec![0.0; steps];
    let info = routing_singular_values(&head, &mut sigma, &mut workspace).unwrap();
    assert_eq!(info.termination, Termination::NullComplement);
    sigma.truncate(info.steps);
    sigma.resize(d_model, 0.0);
    let (want, _) = dense_spectra(&head);
    let err = sigma.iter().zip(&want).fold(0.0f64, |m, (a, b)| m.max((a - b).abs())) / want[0];
    println!("singular values of S (96 x 96, d_head 12) vs one-sided Jacobi: relative error {err:.3e}");
    assert!(err <= 1e-10, "{err:e}");
    // And the eigenvalues of D, signed.
    let mut lambda = vec![0.0; steps];
    let info = filtering_eigenvalues(&head, &mut lambda, &mut workspace).unwrap();
    lambda.truncate(info.steps);
    lambda.resize(d_model, 0.0);
    lambda.sort_by(|x, y| x.partial_cmp(y).unwrap());
    let mut dense_d = vec![0.0; d_model * d_model];
    head.to_dense(Part::Filtering, &mut dense_d).unwrap();
    let want = jacobi_eigenvalues(d_model, &dense_d);
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let err = lambda.iter().zip(&want).fold(0.0f64, |m, (a, b)| m.max((a - b).abs())) / scale;
    println!("eigenvalues of D vs Jacobi: relative error {err:.3e}");
    assert!(err <= 1e-10, "{err:e}");
}

#[test]
fn exact_rank_2r_of_u_vt_minus_v_ut_is_found() {
    // S = U V^T - V U^T is the kernel of the head W_Q = [U, V], W_K = [V, -U] (d_head = 2r),
    // already skew: M = S, D = 0.
    for (d, r) in [(2usize, 1usize), (5, 1), (9, 2), (16, 3), (64, 7), (101, 16), (40, 20)] {
        let u = common::seeded_matrix(d * r, 7 * d as u64);
        let v = common::seeded_matrix(d * r, 7 * d as u64 + 1);
        let (mut w_q, mut w_k) = (vec![0.0; d * 2 * r], vec![0.0; d * 2 * r]);
        for i in 0..d {
            for c in 0..r {
                w_q[i * 2 * r + c] = u[i * r + c];
                w_q[i * 2 * r + r + c] = v[i * r + c];
                w_k[i * 2 * r + c] = v[i * r + c];
                w_k[i * 2 * r + r + c] = -u[i * r + c];
            }
        }
        let head = FactoredKernel::new(d, 2 * r, &w_q, &w_k).unwrap();
        let got = report(&head);
        assert_eq!(got.routing.numerical, (2 * r).min(d), "d {d} r {r}: {got:?}");
        assert_eq!(got.filtering.numerical, 0, "d {d} r {r}");
        assert!((got.routing_fraction - 1.0).abs() < 1e-12);
        // Singular values come in equal pairs.
        let mut workspace = vec![0.0; head_values_workspace_len(d, 2 * r)];
        let mut sigma = vec![0.0; head_spectrum_steps(d, 2 * r)];
        let info = routing_singular_values(&head, &mut sigma, &mut workspace).unwrap();
        for pair in sigma[..2 * r].chunks_exact(2) {
            assert!((pair[0] - pair[1]).abs() <= 1e-12 * sigma[0], "d {d} r {r}: {pair:?}");
        }
        if 2 * r < d {
            assert_eq!(info.termination, Termination::NullComplement, "d {d} r {r}");
            assert!(info.steps <= 2 * r + 3, "d {d} r {r}: {info:?}");
        }
    }
}

#[test]
fn a_single_rotation_plane_has_erank_two() {
    let d = 10;
    let (mut w_q, mut w_k) = (vec![0.0; d], vec![0.0; d]);
    w_q[3] = 2.0;
    w_k[7] = 1.5;
    let head = FactoredKernel::new(d, 1, &w_q, &w_k).unwrap();
    let got = report(&head);
    assert!((got.routing.entropy - 2.0).abs() <= 1e-14);
    assert_eq!(got.routing.numerical, 2);
    assert!((got.routing_fraction - 0.5).abs() <= 1e-15);
}

#[test]
fn routing_gram_operator_gives_squared_singular_values() {
    let (d_model, d_head) = (70, 6);
    let w_q = common::seeded_matrix(d_model * d_head, 51);
    let w_k = common::seeded_matrix(d_model * d_head, 52);
    let head = FactoredKernel::new(d_model, d_head, &w_q, &w_k).unwrap();
    let mut scratch = vec![0.0; routing_gram_workspace_len(d_model, d_head)];
    let mut op = RoutingGram::new(head, &mut scratch).unwrap();
    let mut workspace = vec![0.0; lanczos_workspace_len(d_model, 0, false)];
    let mut lambda = vec![0.0; d_model];
    let info = lanczos(&mut op, &LanczosOptions::default(), &mut lambda, None, &mut workspace).unwrap();
    lambda.truncate(info.steps);
    lambda.resize(d_model, 0.0);
    lambda.sort_by(|x, y| y.partial_cmp(x).unwrap());
    let (sigma, _) = dense_spectra(&head);
    // Eigenvalues of S^T S are sigma^2 (each twice, found through a restart), to eps sigma_max^2.
    let err =
        lambda.iter().zip(&sigma).fold(0.0f64, |m, (l, s)| m.max((l - s * s).abs())) / (sigma[0] * sigma[0]);
    assert!(err <= 1e-10, "{err:e} ({info:?})");
    assert!(info.restarts >= 1);
    // Filtering as a symmetric operator agrees with the dense D.
    let mut scratch = vec![0.0; head.apply_workspace_len()];
    let mut filtering = Filtering::new(head, &mut scratch).unwrap();
    let mut dense = vec![0.0; d_model * d_model];
    head.to_dense(Part::Filtering, &mut dense).unwrap();
    let mut dense_op = DenseSymmetric::new(d_model, &dense).unwrap();
    let x = common::seeded_matrix(d_model, 5);
    let (mut y1, mut y2) = (vec![0.0; d_model], vec![0.0; d_model]);
    sd_attention::spectral::lanczos::operator::SymmetricOperator::apply(&mut filtering, &x, &mut y1).unwrap();
    sd_attention::spectral::lanczos::operator::SymmetricOperator::apply(&mut dense_op, &x, &mut y2).unwrap();
    for (a, b) in y1.iter().zip(&y2) {
        assert!((a - b).abs() <= 1e-12);
    }
}

#[test]
fn f32_head_spectrum_matches_f64() {
    // Each singular value carries an absolute error of about (breakdown level) 8 sqrt(d) eps32 ||S||_2
    // plus the f32 rounding of the products, (2 d_head + 2) eps32 |W_Q||W_K| per entry; erank moves by
    // at most sum_k |dp_k| (1 + |ln p_k|) with dp_k <= tau / sum sigma, computed below from the f64
    // spectrum.
    let (d_model, d_head) = (64, 8);
    let w_q32: Vec<f32> = common::seeded_matrix(d_model * d_head, 61).iter().map(|&v| v as f32).collect();
    let w_k32: Vec<f32> = common::seeded_matrix(d_model * d_head, 62).iter().map(|&v| v as f32).collect();
    let (w_q, w_k) = (common::widen(&w_q32), common::widen(&w_k32));
    let head64 = FactoredKernel::new(d_model, d_head, &w_q, &w_k).unwrap();
    let head32 = FactoredKernel::new(d_model, d_head, &w_q32, &w_k32).unwrap();
    let steps = head_spectrum_steps(d_model, d_head);
    let mut sigma64 = vec![0.0f64; steps];
    let mut sigma32 = vec![0.0f32; steps];
    let mut ws64 = vec![0.0f64; head_values_workspace_len(d_model, d_head)];
    let mut ws32 = vec![0.0f32; head_values_workspace_len(d_model, d_head)];
    let i64_ = routing_singular_values(&head64, &mut sigma64, &mut ws64).unwrap();
    let i32_ = routing_singular_values(&head32, &mut sigma32, &mut ws32).unwrap();
    let eps = f32::EPSILON as f64;
    let sigma_max = sigma64[0];
    let abs_w = |w: &[f64]| w.iter().map(|v| v.abs()).fold(0.0f64, f64::max);
    let tau = 8.0 * (d_model as f64).sqrt() * eps * sigma_max
        + (2 * d_head + 2) as f64 * eps * d_model as f64 * d_head as f64 * abs_w(&w_q) * abs_w(&w_k);
    let n = 2 * d_head;
    let mut worst = 0.0f64;
    for k in 0..n {
        let err = (sigma32[k] as f64 - sigma64[k]).abs();
        worst = worst.max(err);
        assert!(err <= tau, "sigma_{k}: {err:e} > {tau:e}");
    }
    let total: f64 = sigma64[..n].iter().sum();
    let bound: f64 = sigma64[..n].iter().map(|&s| tau / total * (1.0 + (s / total).ln().abs())).sum();
    let erank64 = entropy_effective_rank(&sigma64[..i64_.steps]).unwrap();
    let erank32 = entropy_effective_rank(&sigma32[..i32_.steps]).unwrap() as f64;
    let erank_err = (erank64 - erank32).abs();
    println!(
        "f32 vs f64 head (64, 8): max |d sigma| {:.2e} (tol {:.2e}), |d erank| {:.2e} (tol {:.2e})",
        worst / sigma_max,
        tau / sigma_max,
        erank_err,
        erank64 * bound
    );
    assert!(erank_err <= erank64 * bound, "{erank_err:e}");
}

#[test]
fn slq_trace_and_erank_within_standard_errors() {
    // A PSD spectrum with 12 distinct values (quadrature with 14 steps is exact), n = 240.
    let n = 240;
    let values: Vec<f64> = (0..n).map(|i| if i % 20 == 0 { 0.0 } else { 0.1 + (i % 12) as f64 }).collect();
    let a = symmetric_with_spectrum(&values, 71);
    let mut op = DenseSymmetric::new(n, &a).unwrap();
    let options = SlqOptions { probes: 60, steps: 14, seed: 3 };
    let mut workspace = vec![0.0; slq_workspace_len(n, options.steps)];
    let trace = slq_trace(&mut op, |x| x.max(0.0).sqrt(), &options, &mut workspace).unwrap();
    let exact: f64 = values.iter().map(|v| v.sqrt()).sum();
    println!("SLQ tr sqrt(A), n 240: {:.4} +- {:.4}, exact {exact:.4}", trace.value, trace.std_error);
    assert!((trace.value - exact).abs() <= 4.0 * trace.std_error, "{trace:?} vs {exact}");
    assert!(trace.std_error > 0.0 && trace.std_error < 0.05 * exact);
    // Effective rank of the eigenvalues (sigma = |lambda|) and of A as a Gram matrix (sigma = sqrt).
    let est = slq_effective_rank(&mut op, SingularValuesFrom::Eigenvalues, &options, &mut workspace).unwrap();
    let exact_erank = entropy_effective_rank(&values).unwrap();
    println!(
        "SLQ erank, n 240: {:.3} +- {:.3}, exact {exact_erank:.3}",
        est.effective_rank.value, est.effective_rank.std_error
    );
    assert!((est.effective_rank.value - exact_erank).abs() <= 4.0 * est.effective_rank.std_error + 1e-9);
    let sqrt_values: Vec<f64> = values.iter().map(|v| v.sqrt()).collect();
    let est = slq_effective_rank(&mut op, SingularValuesFrom::Gram, &options, &mut workspace).unwrap();
    let exact_erank = entropy_effective_rank(&sqrt_values).unwrap();
    assert!((est.effective_rank.value - exact_erank).abs() <= 4.0 * est.effective_rank.std_error + 1e-9);
    // Reproducible.
    let again = slq_effective_rank(&mut op, SingularValuesFrom::Gram, &options, &mut workspace).unwrap();
    assert_eq!(again, est);
}

#[test]
fn slq_of_a_head_matches_its_exact_erank() {
    let (d_model, d_head) = (200, 10);
    let w_q = common::seeded_matrix(d_model * d_head, 81);
    let w_k = common::seeded_matrix(d_model * d_head, 82);
    let head = FactoredKernel::new(d_model, d_head, &w_q, &w_k).unwrap();
    let exact = report(&head);
    let mut scratch = vec![0.0; head.apply_workspace_len()];
    let mut op = Filtering::new(head, &mut scratch).unwrap();
    let options = SlqOptions { probes: 40, steps: 30, seed: 9 };
    let mut workspace = vec![0.0; slq_workspace_len(d_model, options.steps)];
    let est = slq_effective_rank(&mut op, SingularValuesFrom::Eigenvalues, &options, &mut workspace).unwrap();
    let (value, se) = (est.effective_rank.value, est.effective_rank.std_error);
    println!("SLQ erank of D (200, 10): {value:.3} +- {se:.3}, Lanczos {:.3}", exact.filtering.entropy);
    assert!(
        (value - exact.filtering.entropy).abs() <= 4.0 * se,
        "{value} +- {se} vs {}",
        exact.filtering.entropy
    );
}

#[test]
fn bad_input_is_an_error() {
    let w = [1.0f64; 6];
    let head = FactoredKernel::new(3, 2, &w, &w).unwrap();
    let mut small = vec![0.0; head_spectrum_workspace_len(3, 2) - 1];
    assert!(matches!(head_spectrum(&head, &mut small), Err(Error::WorkspaceTooSmall { .. })));
    let mut short = vec![0.0; 2];
    assert!(matches!(RoutingGram::new(head, &mut short), Err(Error::WorkspaceTooSmall { .. })));
    // NaN in the factors.
    let bad = [1.0, f64::NAN, 0.0, 1.0, 0.5, 0.5];
    let head = FactoredKernel::new(3, 2, &bad, &w).unwrap();
    let mut workspace = vec![0.0; head_spectrum_workspace_len(3, 2)];
    assert!(matches!(head_spectrum(&head, &mut workspace), Err(Error::NonFinite { .. })));
    // SLQ options.
    let a = [1.0f64, 0.0, 0.0, 1.0];
    let mut op = DenseSymmetric::new(2, &a).unwrap();
    let mut workspace = vec![0.0; slq_workspace_len(2, 2)];
    let one_probe = SlqOptions { probes: 1, steps: 2, seed: 0 };
    assert!(matches!(
        slq_trace(&mut op, |x| x, &one_probe, &mut workspace),
        Err(Error::InvalidParameter { .. })
    ));
    let no_steps = SlqOptions { probes: 2, steps: 0, seed: 0 };
    assert!(matches!(
        slq_trace(&mut op, |x| x, &no_steps, &mut workspace),
        Err(Error::InvalidParameter { .. })
    ));
    let zero = [0.0f64; 4];
    let mut zero_op = DenseSymmetric::new(2, &zero).unwrap();
    let options = SlqOptions { probes: 2, steps: 2, seed: 0 };
    assert!(matches!(
        slq_effective_rank(&mut zero_op, SingularValuesFrom::Eigenvalues, &options, &mut workspace),
        Err(Error::InvalidValue { .. })
    ));
    // A zero head: empty spectra, erank 0, rho 0.
    let zeros = [0.0f64; 12];
    let head = FactoredKernel::new(4, 3, &zeros, &zeros).unwrap();
    let mut workspace = vec![0.0; head_spectrum_workspace_len(4, 3)];
    let got = head_spectrum(&head, &mut workspace).unwrap();
    assert_eq!(got.routing.entropy, 0.0);
    assert_eq!(got.routing.numerical, 0);
    assert_eq!(got.routing_fraction, 0.0);
}
