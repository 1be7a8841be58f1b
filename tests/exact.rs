//! Exact spectra from the factors (`sd_attention::exact`) against the dense Jacobi references of
//! tests/common/jacobi.rs (on the formed `S` and `D`) and against the Lanczos path, over random
//! and structured heads (rank-deficient, repeated, graded), softmax and S-D; the small skew and
//! symmetric solvers on their own; f32 against f64; errors.
//!
//! Tolerances follow the backward errors of the steps (`docs/math.md` section 9): the QR perturbs
//! `A = [W_Q W_K]` by `gamma_QR ||A||_F` with `gamma_QR = d_model 2 d_head eps` (Higham 19.4, constant
//! 1), so `S = A J A^T` moves by `gamma_QR ||A||_F^2` (`||J|| <= 1`); the core product
//! `R_1 R_2^T` adds `d_head eps ||A||_F^2`; the reduction and QL of an order-`k` core add
//! `(k^2 + k) eps ||core||_F` (two-sided Householder steps, Higham 19.3, and implicit QL). By Weyl
//! each singular value (eigenvalue) moves by at most the sum. The Jacobi reference on the dense
//! `S` adds `1e-15 ||S||_F` plus the rounding of forming `S` (`d_head eps |W_Q| |W_K|^T` per entry).

mod common;

use common::jacobi::{jacobi_eigenvalues, jacobi_singular_values, test_spectra};
use proptest::prelude::*;
use sd_attention::rng::SplitMix64;
use sd_attention::spectral::exact::*;
use sd_attention::spectral::factored::{FactoredKernel, Part};
use sd_attention::Error;

fn frobenius(x: &[f64]) -> f64 {
    x.iter().map(|v| v * v).sum::<f64>().sqrt()
}

/// The absolute error allowed on each value of a head's spectra (module documentation).
fn head_tolerance(d_model: usize, width: usize, a_norm_sq: f64, dense_norm: f64) -> f64 {
    let k = d_model.min(2 * width) as f64;
    let eps = f64::EPSILON;
    let steps = (d_model * 2 * width) as f64 + width as f64 + k * k + k;
    steps * eps * a_norm_sq + 1e-15 * dense_norm + (width as f64) * eps * a_norm_sq
}

/// Structured factors: 0 random, 1 rank-deficient (W_K's columns in a span of 2 of W_Q's, plus a
/// zero column), 2 repeated (W_K an orthogonal mix of W_Q's columns: repeated |values|), 3 graded
/// (columns scaled over 10 decades), 4 W_K = W_Q (S = 0), 5 W_K = 0 (M = 0).
fn factors(d_model: usize, d_head: usize, seed: u64, kind: u8) -> (Vec<f64>, Vec<f64>) {
    let mut rng = SplitMix64::new(seed);
    let mut w_q: Vec<f64> = (0..d_model * d_head).map(|_| rng.normal()).collect();
    let mut w_k: Vec<f64> = (0..d_model * d_head).map(|_| rng.normal()).collect();
    match kind {
        1 => {
            for i in 0..d_model {
                for j in 0..d_head {
                    let (a, b) = (w_q[i * d_head], w_q[i * d_head + (1 % d_head)]);
                    w_k[i * d_head + j] = if j + 1 == d_head { 0.0 } else { (j as f64 + 1.0) * a - b };
                }
            }
        }
        2 => {
            // W_K = W_Q P with P a signed permutation: the core has repeated magnitudes.
            for i in 0..d_model {
                for j in 0..d_head {
                    let sign = if j % 2 == 0 { 1.0 } else { -1.0 };
                    w_k[i * d_head + j] = sign * w_q[i * d_head + (j + 1) % d_head];
                }
            }
        }
        3 => {
            for i in 0..d_model {
                for j in 0..d_head {
                    let g = 10f64.powf(-10.0 * j as f64 / d_head as f64);
                    w_q[i * d_head + j] *= g;
                    w_k[i * d_head + j] *= g;
                }
            }
        }
        4 => w_k.copy_from_slice(&w_q),
        5 => w_k.fill(0.0),
        _ => {}
    }
    (w_q, w_k)
}

/// Dense references: singular values of S (descending, all d_model) and eigenvalues of D
/// (ascending, all d_model), by Jacobi on the formed matrices.
fn dense_spectra(head: &FactoredKernel<'_, f64>) -> (Vec<f64>, Vec<f64>, f64, f64) {
    let d = head.d_model();
    let (mut s, mut dd) = (vec![0.0; d * d], vec![0.0; d * d]);
    head.to_dense(Part::Routing, &mut s).unwrap();
    head.to_dense(Part::Filtering, &mut dd).unwrap();
    (jacobi_singular_values(d, d, &s), jacobi_eigenvalues(d, &dd), frobenius(&s), frobenius(&dd))
}

/// Ours padded with zeros to all d_model values, in the references' orders.
fn exact_spectra(head: &FactoredKernel<'_, f64>) -> (Vec<f64>, Vec<f64>) {
    let (d, h) = (head.d_model(), head.d_head());
    let k = pair_core_order(d, h);
    let (mut routing, mut filtering) = (vec![f64::NAN; k], vec![f64::NAN; k]);
    let mut workspace = vec![f64::NAN; head_values_workspace_len(d, h)];
    head_values(head, &mut routing, &mut filtering, &mut workspace).unwrap();
    for i in 0..k / 2 {
        assert_eq!(routing[2 * i], routing[2 * i + 1], "pairs of S exactly equal");
    }
    assert!(routing.windows(2).all(|w| w[0] >= w[1]), "descending");
    assert!(filtering.windows(2).all(|w| w[0] <= w[1]), "ascending");
    routing.resize(d, 0.0);
    filtering.resize(d, 0.0);
    filtering.sort_by(|x, y| x.partial_cmp(y).unwrap());
    (routing, filtering)
}

fn max_abs_diff(x: &[f64], y: &[f64]) -> f64 {
    assert_eq!(x.len(), y.len());
    x.iter().zip(y).fold(0.0f64, |m, (a, b)| m.max((a - b).abs()))
}

/// Compares a head with the dense references; returns the errors relative to the largest value.
fn check_head(d_model: usize, d_head: usize, seed: u64, kind: u8) -> [f64; 2] {
    let (w_q, w_k) = factors(d_model, d_head, seed, kind);
    let head = FactoredKernel::new(d_model, d_head, &w_q, &w_k).unwrap();
    let (sigma_ref, lambda_ref, s_norm, d_norm) = dense_spectra(&head);
    let (sigma, lambda) = exact_spectra(&head);
    let a_norm_sq = frobenius(&w_q).powi(2) + frobenius(&w_k).powi(2);
    let tol = head_tolerance(d_model, d_head, a_norm_sq, s_norm.max(d_norm));
    let (err_s, err_d) = (max_abs_diff(&sigma, &sigma_ref), max_abs_diff(&lambda, &lambda_ref));
    let at = format!("{d_model}x{d_head} kind {kind} seed {seed}");
    assert!(err_s <= tol, "{at}: singular values of S off by {err_s:e} > {tol:e}");
    assert!(err_d <= tol, "{at}: eigenvalues of D off by {err_d:e} > {tol:e}");
    let rel = |err: f64, scale: f64| if scale > 0.0 { err / scale } else { err };
    [rel(err_s, sigma_ref[0]), rel(err_d, lambda_ref.iter().fold(0.0f64, |m, v| m.max(v.abs())))]
}

proptest! {
    #![proptest_config(common::proptest_config(48))]

    #[test]
    fn head_spectra_match_dense_jacobi(
        d_model in prop::sample::select(vec![1usize, 2, 3, 5, 8, 17, 33, 64, 97]),
        d_head in prop::sample::select(vec![1usize, 2, 3, 5, 8, 13, 20]),
        kind in 0u8..6,
        seed in any::<u64>(),
    ) {
        check_head(d_model, d_head, seed, kind);
    }

    #[test]
    fn skew_solver_matches_jacobi(n in 0usize..70, spectrum in 0usize..8, seed in any::<u64>()) {
        // K = Q blockdiag([[0, s_i], [-s_i, 0]]) Q^T with the test spectra as s_i.
        let values: Vec<f64> = test_spectra(n / 2, seed).into_iter().nth(spectrum).map(|(_, v)| v).unwrap_or_default();
        let k = skew_with_values(n, &values, seed);
        let reference = jacobi_singular_values(n, n, &k);
        let mut sigma = vec![f64::NAN; n];
        let mut workspace = vec![f64::NAN; core_workspace_len(n)];
        skew_singular_values(n, &mut k.clone(), &mut sigma, &mut workspace).unwrap();
        let tol = ((n * n + n) as f64 * f64::EPSILON + 1e-15) * frobenius(&k);
        let err = max_abs_diff(&sigma, &reference);
        prop_assert!(err <= tol, "n {}: {:e} > {:e}", n, err, tol);
        for i in 0..n / 2 {
            prop_assert_eq!(sigma[2 * i], sigma[2 * i + 1]);
        }
    }

    #[test]
    fn symmetric_solver_matches_jacobi(n in 0usize..70, spectrum in 0usize..8, seed in any::<u64>()) {
        let values: Vec<f64> = test_spectra(n, seed).into_iter().nth(spectrum).map(|(_, v)| v).unwrap_or_else(|| vec![0.0; n]);
        let a = common::jacobi::symmetric_with_spectrum(&values, seed);
        let reference = jacobi_eigenvalues(n, &a);
        let mut lambda = vec![f64::NAN; n];
        let mut workspace = vec![f64::NAN; core_workspace_len(n)];
        symmetric_eigenvalues(n, &mut a.clone(), &mut lambda, &mut workspace).unwrap();
        let tol = ((n * n + n) as f64 * f64::EPSILON + 1e-15) * frobenius(&a);
        let err = max_abs_diff(&lambda, &reference);
        prop_assert!(err <= tol, "n {}: {:e} > {:e}", n, err, tol);
    }
}

/// A skew `n x n` matrix with singular values `values` (each twice; zero for the rest), rotated by
/// a random orthogonal matrix (products of reflections).
fn skew_with_values(n: usize, values: &[f64], seed: u64) -> Vec<f64> {
    let mut k = vec![0.0; n * n];
    for (i, &s) in values.iter().enumerate().take(n / 2) {
        k[(2 * i) * n + 2 * i + 1] = s;
        k[(2 * i + 1) * n + 2 * i] = -s;
    }
    let mut rng = SplitMix64::new(seed ^ 0xABCD);
    for _ in 0..3 {
        let v: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
        let vv: f64 = v.iter().map(|x| x * x).sum();
        if vv == 0.0 {
            continue;
        }
        // K -> H K H with H = I - 2 v v^T / (v^T v).
        let mut h = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                h[i * n + j] = if i == j { 1.0 } else { 0.0 } - 2.0 * v[i] * v[j] / vv;
            }
        }
        k = common::naive_matmul(n, n, n, &common::naive_matmul(n, n, n, &h, &k), &h);
        // Keep it exactly skew.
        for i in 0..n {
            for j in 0..i {
                let s = 0.5 * (k[i * n + j] - k[j * n + i]);
                k[i * n + j] = s;
                k[j * n + i] = -s;
            }
            k[i * n + i] = 0.0;
        }
    }
    k
}

#[test]
fn structured_heads_and_worst_relative_errors() {
    let names = ["random", "rank-deficient", "repeated", "graded", "S = 0", "M = 0"];
    for (kind, name) in names.iter().enumerate() {
        let mut worst = [0.0f64; 2];
        for (d_model, d_head) in [(64, 8), (97, 13), (130, 16), (20, 16)] {
            let errors = check_head(d_model, d_head, 5 + kind as u64, kind as u8);
            worst = [worst[0].max(errors[0]), worst[1].max(errors[1])];
        }
        println!(
            "{name}: max |sigma - jacobi| / sigma_max {:.1e}, max |lambda - jacobi| / |lambda|_max {:.1e}",
            worst[0], worst[1]
        );
    }
}

#[test]
fn exact_matches_lanczos_on_a_large_head() {
    let (d_model, d_head) = (300, 24);
    let (w_q, w_k) = factors(d_model, d_head, 3, 0);
    let head = FactoredKernel::new(d_model, d_head, &w_q, &w_k).unwrap();
    let mut workspace = vec![0.0; head_spectrum_workspace_len(d_model, d_head)];
    let exact = head_spectrum(&head, &mut workspace).unwrap();
    let mut workspace =
        vec![0.0; sd_attention::spectral::spectrum::head_spectrum_lanczos_workspace_len(d_model, d_head)];
    let lanczos = sd_attention::spectral::spectrum::head_spectrum_lanczos(&head, &mut workspace).unwrap();
    // Both are accurate to a few hundred eps in each value; the eranks (values up to 48) agree to
    // far better than 1e-9.
    assert!((exact.routing.entropy - lanczos.routing.entropy).abs() < 1e-9);
    assert!((exact.filtering.entropy - lanczos.filtering.entropy).abs() < 1e-9);
    assert!((exact.routing.participation_ratio - lanczos.routing.participation_ratio).abs() < 1e-9);
    assert_eq!(exact.routing.numerical, lanczos.routing.numerical);
    assert_eq!(exact.filtering.numerical, lanczos.filtering.numerical);
    assert!((exact.routing_norm - lanczos.routing_norm).abs() <= 1e-12 * lanczos.routing_norm);
    let e = exact.energies;
    let l = lanczos.energies;
    assert!(
        (e.routing - l.routing).abs() <= 1e-12 * e.total()
            && (e.filtering - l.filtering).abs() <= 1e-12 * e.total()
    );
    assert!(exact.energy_defect[0].abs() < 1e-13 && exact.energy_defect[1].abs() < 1e-13);
    // The default report is the exact one.
    let mut workspace =
        vec![0.0; sd_attention::spectral::spectrum::head_spectrum_workspace_len(d_model, d_head)];
    assert_eq!(sd_attention::spectral::spectrum::head_spectrum(&head, &mut workspace).unwrap(), exact);
}

#[test]
fn sd_head_spectra_match_dense_jacobi() {
    for (d_model, r, q, seed) in [(40, 4, 3, 1), (17, 9, 20, 2), (64, 16, 16, 3), (5, 1, 1, 4), (3, 0, 2, 5)]
    {
        let mut rng = SplitMix64::new(seed);
        let mut normal = |len: usize| (0..len).map(|_| rng.normal()).collect::<Vec<f64>>();
        let (u, v, c) = (normal(d_model * r), normal(d_model * r), normal(d_model * q));
        let k = pair_core_order(d_model, r);
        let kc = d_model.min(q);
        let (mut routing, mut filtering) = (vec![0.0; k], vec![0.0; kc]);
        let mut workspace = vec![f64::NAN; sd_values_workspace_len(d_model, r, q)];
        let energies =
            sd_values(d_model, r, q, &u, &v, &c, &mut routing, &mut filtering, &mut workspace).unwrap();
        let uvt = common::naive_matmul(d_model, r, d_model, &u, &common::naive_transpose(d_model, r, &v));
        let s: Vec<f64> =
            (0..d_model * d_model).map(|i| uvt[i] - uvt[(i % d_model) * d_model + i / d_model]).collect();
        let ct = common::naive_transpose(d_model, q, &c);
        let dd: Vec<f64> = common::naive_matmul(d_model, q, d_model, &c, &ct).iter().map(|x| -x).collect();
        let mut sigma_ref = jacobi_singular_values(d_model, d_model, &s);
        let lambda_ref = jacobi_eigenvalues(d_model, &dd);
        routing.resize(d_model, 0.0);
        sigma_ref.truncate(d_model);
        let mut lambda = filtering.clone();
        lambda.resize(d_model, 0.0);
        lambda.sort_by(|x, y| x.partial_cmp(y).unwrap());
        let a_sq = frobenius(&u).powi(2) + frobenius(&v).powi(2) + frobenius(&c).powi(2);
        let tol = 2.0 * head_tolerance(d_model, r.max(q), a_sq, frobenius(&s).max(frobenius(&dd)));
        assert!(max_abs_diff(&routing, &sigma_ref) <= tol, "{d_model} {r} {q}: S");
        assert!(max_abs_diff(&lambda, &lambda_ref) <= tol, "{d_model} {r} {q}: D");
        assert!(filtering.iter().all(|&x| x <= 0.0), "D = -C C^T is negative semidefinite");
        assert!((energies.routing - frobenius(&s).powi(2)).abs() <= tol * frobenius(&s).max(1.0));
        assert!((energies.filtering - frobenius(&dd).powi(2)).abs() <= tol * frobenius(&dd).max(1.0));
        let mut workspace = vec![0.0; sd_head_spectrum_workspace_len(d_model, r, q)];
        let report = sd_head_spectrum(d_model, r, q, &u, &v, &c, &mut workspace).unwrap();
        assert_eq!(report.rank_bound, k);
        assert!(report.routing.numerical % 2 == 0 && report.routing.numerical <= k);
    }
}

#[test]
fn f32_within_the_f64_bound() {
    // The same bound with the eps of f32 (the f64 values' own error is negligible beside it).
    for (d_model, d_head, kind) in [(768, 64, 0), (97, 13, 1), (64, 8, 3), (20, 16, 2)] {
        let (w_q, w_k) = factors(d_model, d_head, 9, kind);
        let head = FactoredKernel::new(d_model, d_head, &w_q, &w_k).unwrap();
        let (sigma, lambda) = exact_spectra(&head);
        let (q32, k32): (Vec<f32>, Vec<f32>) =
            (w_q.iter().map(|&x| x as f32).collect(), w_k.iter().map(|&x| x as f32).collect());
        let head32 = FactoredKernel::new(d_model, d_head, &q32, &k32).unwrap();
        let k = pair_core_order(d_model, d_head);
        let (mut routing, mut filtering) = (vec![0.0f32; k], vec![0.0f32; k]);
        let mut workspace = vec![0.0f32; head_values_workspace_len(d_model, d_head)];
        head_values(&head32, &mut routing, &mut filtering, &mut workspace).unwrap();
        for i in 0..k / 2 {
            assert_eq!(routing[2 * i], routing[2 * i + 1]);
        }
        let a_sq = frobenius(&w_q).powi(2) + frobenius(&w_k).powi(2);
        let kf = k as f64;
        // Rounding the factors to f32 moves S by eps32 ||A||^2 as well: one more term.
        let steps = (d_model * 2 * d_head) as f64 + d_head as f64 + kf * kf + kf + 1.0;
        let tol = steps * f32::EPSILON as f64 * a_sq;
        let mut lambda32: Vec<f64> = filtering.iter().map(|&x| x as f64).collect();
        lambda32.resize(d_model, 0.0);
        lambda32.sort_by(|x, y| x.partial_cmp(y).unwrap());
        let mut sigma32: Vec<f64> = routing.iter().map(|&x| x as f64).collect();
        sigma32.resize(d_model, 0.0);
        let (err_s, err_d) = (max_abs_diff(&sigma32, &sigma), max_abs_diff(&lambda32, &lambda));
        assert!(err_s <= tol && err_d <= tol, "{d_model}x{d_head}: f32 errors {err_s:e} {err_d:e} > {tol:e}");
        println!(
            "{d_model}x{d_head} kind {kind}: f32 - f64 {:.1e} / {:.1e} of sigma_max (bound {:.1e})",
            err_s / sigma[0],
            err_d / sigma[0].max(lambda[d_model - 1]),
            tol / sigma[0]
        );
    }
}

#[test]
fn bad_input_is_an_error() {
    let (w_q, mut w_k) = factors(6, 2, 1, 0);
    let head = FactoredKernel::new(6, 2, &w_q, &w_k).unwrap();
    let (mut routing, mut filtering) = (vec![0.0; 4], vec![0.0; 4]);
    let mut workspace = vec![0.0; head_values_workspace_len(6, 2)];
    assert!(matches!(
        head_values(&head, &mut routing[..3], &mut filtering, &mut workspace),
        Err(Error::ShapeMismatch { what: "routing", .. })
    ));
    assert!(matches!(
        head_values(&head, &mut routing, &mut filtering, &mut workspace[..10]),
        Err(Error::WorkspaceTooSmall { .. })
    ));
    w_k[5] = f64::NAN;
    let head = FactoredKernel::new(6, 2, &w_q, &w_k).unwrap();
    assert_eq!(
        head_values(&head, &mut routing, &mut filtering, &mut workspace),
        Err(Error::NonFinite { what: "w_k", index: 5 })
    );
    let mut skew = vec![0.0, 1.0, f64::INFINITY, 0.0];
    let mut sigma = vec![0.0; 2];
    let mut ws = vec![0.0; core_workspace_len(2)];
    assert_eq!(
        skew_singular_values(2, &mut skew, &mut sigma, &mut ws),
        Err(Error::NonFinite { what: "skew", index: 2 })
    );
    assert!(matches!(
        symmetric_eigenvalues(2, &mut skew[..3], &mut sigma, &mut ws),
        Err(Error::ShapeMismatch { .. })
    ));
    assert_eq!(head_values_workspace_len(usize::MAX, 2), usize::MAX);
    let (u, c) = (vec![0.0; 6], vec![0.0; 6]);
    let mut ws = vec![0.0; sd_values_workspace_len(6, 1, 1)];
    let (mut r2, mut f1) = (vec![0.0; 2], vec![0.0; 1]);
    assert!(matches!(
        sd_values(6, 1, 1, &u[..5], &u, &c, &mut r2, &mut f1, &mut ws),
        Err(Error::ShapeMismatch { what: "u", .. })
    ));
    sd_values(6, 1, 1, &u, &u, &c, &mut r2, &mut f1, &mut ws).unwrap();
    assert_eq!((r2, f1), (vec![0.0; 2], vec![0.0]));
}
