//! Thin Householder QR (`sd_attention::qr`) against f64 references: the Gram identity
//! `R^T R = A^T A`, the reconstruction `A = Q R` and the orthogonality of the formed `Q`, all within
//! the backward-error bound of Householder QR (Higham, theorem 19.4: `||dA_j|| <= gamma ||A_j||`
//! with `gamma = rows cols eps`, the constant taken as 1), and `R` itself against classical
//! Gram–Schmidt run twice in f64 on well-conditioned matrices. Shapes include 0, 1, odd, prime
//! and sizes beyond the blocks of 4 and 16; rank-deficient and zero matrices factor without NaN.

mod common;

use common::jacobi::jacobi_singular_values;
use proptest::prelude::*;
use sd_attention::linalg::qr::*;
use sd_attention::rng::SplitMix64;
use sd_attention::Error;

const SIZES: [usize; 16] = [0, 1, 2, 3, 5, 7, 8, 9, 13, 31, 32, 33, 37, 64, 71, 97];

fn frobenius(x: &[f64]) -> f64 {
    x.iter().map(|v| v * v).sum::<f64>().sqrt()
}

/// `X^T Y` for `rows x cols` row-major `x`, `y`.
fn gram(rows: usize, cols: usize, x: &[f64], y: &[f64]) -> Vec<f64> {
    let mut g = vec![0.0; cols * cols];
    for i in 0..cols {
        for j in 0..cols {
            g[i * cols + j] = (0..rows).map(|p| x[p * cols + i] * y[p * cols + j]).sum();
        }
    }
    g
}

/// Normal entries; `kind` 1 makes the matrix rank-deficient (every third column a combination of
/// the two before it, the last column zero), 2 grades the columns over 8 decades.
fn matrix(rows: usize, cols: usize, seed: u64, kind: u8) -> Vec<f64> {
    let mut rng = SplitMix64::new(seed);
    let mut a: Vec<f64> = (0..rows * cols).map(|_| rng.normal()).collect();
    for i in 0..rows {
        for j in 0..cols {
            match kind {
                1 if j >= 2 && j % 3 == 2 => {
                    a[i * cols + j] = a[i * cols + j - 1] - 2.0 * a[i * cols + j - 2]
                }
                2 => a[i * cols + j] *= 10f64.powf(-8.0 * j as f64 / cols.max(1) as f64),
                _ => {}
            }
        }
        if kind == 1 && cols > 0 {
            a[i * cols + cols - 1] = 0.0;
        }
    }
    a
}

/// Factors `a` both ways (copy-in `qr_r` and column-major in place) and returns `(R, Q)`.
fn factor(rows: usize, cols: usize, a: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let k = rows.min(cols);
    let mut r = vec![f64::NAN; k * cols];
    let mut workspace = vec![f64::NAN; qr_r_workspace_len(rows, cols)];
    qr_r(rows, cols, a, &mut r, &mut workspace).unwrap();
    let mut a_t = common::naive_transpose(rows, cols, a);
    let mut tau = vec![0.0; k];
    let mut workspace = vec![f64::NAN; qr_in_place_workspace_len(rows, cols)];
    qr_in_place(rows, cols, &mut a_t, &mut tau, &mut workspace).unwrap();
    // The in-place form holds the same R (same arithmetic) in its upper trapezoid.
    for i in 0..k {
        for j in 0..cols {
            let want = if i <= j { a_t[j * rows + i] } else { 0.0 };
            assert_eq!(r[i * cols + j], want, "R[{i}][{j}] of qr_r and qr_in_place");
        }
    }
    let mut q = vec![f64::NAN; rows * k];
    let mut workspace = vec![f64::NAN; qr_form_q_workspace_len(rows, cols)];
    qr_form_q(rows, cols, &a_t, &tau, &mut q, &mut workspace).unwrap();
    (r, q)
}

/// Checks the three backward-error bounds; returns the measured errors relative to `eps ||A||`.
fn check_bounds(rows: usize, cols: usize, a: &[f64]) -> [f64; 3] {
    let k = rows.min(cols);
    let (r, q) = factor(rows, cols, a);
    assert!(r.iter().chain(&q).all(|v| v.is_finite()), "{rows}x{cols}: non-finite output");
    let norm_a = frobenius(a);
    let gamma = (rows * cols).max(1) as f64 * f64::EPSILON;
    // R^T R = (A + dA)^T (A + dA): off by 2 gamma ||A||^2 (+ gamma^2 ||A||^2).
    let gram_a = gram(rows, cols, a, a);
    let gram_r = gram(k, cols, &r, &r);
    let gram_err = frobenius(&gram_a.iter().zip(&gram_r).map(|(x, y)| x - y).collect::<Vec<_>>());
    let gram_tol = (2.0 * gamma + gamma * gamma) * norm_a * norm_a;
    assert!(gram_err <= gram_tol, "{rows}x{cols}: ||R^T R - A^T A|| = {gram_err:e} > {gram_tol:e}");
    // A - Q R: dA plus the formed Q's own error (sqrt(k) gamma, Higham 19.3) times ||R|| = ||A + dA||.
    let qr = common::naive_matmul(rows, k, cols, &q, &r);
    let recon_err = frobenius(&qr.iter().zip(a).map(|(x, y)| x - y).collect::<Vec<_>>());
    let recon_tol = (1.0 + (k as f64).sqrt()) * gamma * norm_a * (1.0 + gamma);
    assert!(recon_err <= recon_tol, "{rows}x{cols}: ||A - QR|| = {recon_err:e} > {recon_tol:e}");
    // Q^T Q - I: 2 sqrt(k) gamma to first order.
    let mut orth = gram(rows, k, &q, &q);
    for i in 0..k {
        orth[i * k + i] -= 1.0;
    }
    let orth_err = frobenius(&orth);
    let orth_tol = 2.0 * (k as f64).sqrt() * gamma * (1.0 + gamma);
    assert!(orth_err <= orth_tol, "{rows}x{cols}: ||Q^T Q - I|| = {orth_err:e} > {orth_tol:e}");
    for i in 0..k {
        assert!(r[i * cols..i * cols + i].iter().all(|&v| v == 0.0), "R not upper trapezoidal");
    }
    let unit = f64::EPSILON * norm_a.max(f64::MIN_POSITIVE);
    [gram_err / (unit * norm_a.max(f64::MIN_POSITIVE)), recon_err / unit, orth_err / f64::EPSILON]
}

/// Classical Gram–Schmidt run twice, in f64: `R` with a positive diagonal (full column rank).
fn gram_schmidt_r(rows: usize, cols: usize, a: &[f64]) -> Vec<f64> {
    let mut q = vec![0.0; rows * cols]; // columns stored contiguously
    let mut r = vec![0.0; cols * cols];
    for j in 0..cols {
        let mut v: Vec<f64> = (0..rows).map(|i| a[i * cols + j]).collect();
        for _pass in 0..2 {
            for p in 0..j {
                let qp = &q[p * rows..(p + 1) * rows];
                let c: f64 = qp.iter().zip(&v).map(|(x, y)| x * y).sum();
                r[p * cols + j] += c;
                for (vi, qi) in v.iter_mut().zip(qp) {
                    *vi -= c * qi;
                }
            }
        }
        let norm = frobenius(&v);
        r[j * cols + j] = norm;
        for (qi, vi) in q[j * rows..(j + 1) * rows].iter_mut().zip(&v) {
            *qi = vi / norm;
        }
    }
    r
}

proptest! {
    #![proptest_config(common::proptest_config(96))]

    #[test]
    fn backward_error_bounds_hold(
        rows in prop::sample::select(SIZES.to_vec()),
        cols in prop::sample::select(SIZES.to_vec()),
        kind in 0u8..3,
        seed in any::<u64>(),
    ) {
        check_bounds(rows, cols, &matrix(rows, cols, seed, kind));
    }

    #[test]
    fn r_matches_gram_schmidt_on_well_conditioned_matrices(
        cols in prop::sample::select(vec![1usize, 2, 3, 5, 8, 13, 31, 33, 40]),
        extra in prop::sample::select(vec![0usize, 1, 7, 64]),
        seed in any::<u64>(),
    ) {
        // rows >= 2 cols + 3: a Gaussian matrix this tall has kappa below about 20.
        let rows = 2 * cols + 3 + extra;
        let a = matrix(rows, cols, seed, 0);
        let sigma = jacobi_singular_values(rows, cols, &a);
        let kappa = sigma[0] / sigma[cols - 1];
        let (r, _) = factor(rows, cols, &a);
        let reference = gram_schmidt_r(rows, cols, &a);
        // Both are exact R factors of matrices within gamma ||A|| of A (CGS2 is backward stable
        // too); the R factor's condition is at most sqrt(2) kappa (Sun 1991), so the two differ
        // by at most 2 sqrt(2) kappa gamma ||A||_F after normalizing signs.
        let gamma = (rows * cols) as f64 * f64::EPSILON;
        let tol = 2.0 * 2f64.sqrt() * kappa * gamma * frobenius(&a);
        let mut err = 0.0f64;
        for i in 0..cols {
            let sign = r[i * cols + i].signum();
            for j in 0..cols {
                err = err.max((sign * r[i * cols + j] - reference[i * cols + j]).abs());
            }
        }
        prop_assert!(err <= tol, "{}x{}: |R - R_cgs2| = {:e} > {:e} (kappa {})", rows, cols, err, tol, kappa);
    }
}

#[test]
fn sizes_across_the_blocks_and_the_worst_errors() {
    let mut worst = [0.0f64; 3];
    for (rows, cols) in [(768, 128), (300, 97), (97, 300), (129, 129), (256, 33), (65, 64)] {
        for kind in 0..3 {
            let errors = check_bounds(rows, cols, &matrix(rows, cols, 7 + rows as u64, kind));
            for (w, e) in worst.iter_mut().zip(errors) {
                *w = w.max(e);
            }
        }
    }
    // The bounds above allow rows cols (e.g. 98304); the errors are a few sqrt(rows) eps.
    println!("worst in units of eps: ||R^T R - A^T A|| / ||A||^2 {:.1}, ||A - QR|| / ||A|| {:.1}, ||Q^T Q - I|| {:.1}", worst[0], worst[1], worst[2]);
}

#[test]
fn zero_and_rank_one_matrices_have_no_nan() {
    for (rows, cols) in [(5, 3), (3, 5), (40, 40), (1, 1), (100, 1)] {
        let zero = vec![0.0; rows * cols];
        let (r, q) = factor(rows, cols, &zero);
        assert!(r.iter().all(|&v| v == 0.0), "zero matrix: R = 0");
        assert!(q.iter().all(|v| v.is_finite()));
        // Rank one: every column a multiple of the first; R is zero below row 0.
        let a: Vec<f64> =
            (0..rows * cols).map(|i| ((i / cols) as f64 + 1.0) * ((i % cols) as f64 - 1.0)).collect();
        check_bounds(rows, cols, &a);
        let (r, _) = factor(rows, cols, &a);
        let scale = frobenius(&a);
        for i in 1..rows.min(cols) {
            for j in 0..cols {
                assert!(
                    r[i * cols + j].abs() <= (rows * cols) as f64 * f64::EPSILON * scale,
                    "rank one: R[{i}][{j}]"
                );
            }
        }
    }
    // Tiny and huge entries: the norms are scaled, so nothing under- or overflows.
    for scale in [1e-300, 1e-160, 1e150, 1e300] {
        let a: Vec<f64> = matrix(20, 7, 3, 0).iter().map(|v| v * scale).collect();
        let (r, _) = factor(20, 7, &a);
        let unscaled: Vec<f64> = r.iter().map(|v| v / scale).collect();
        let (reference, _) = factor(20, 7, &matrix(20, 7, 3, 0));
        for (x, y) in unscaled.iter().zip(&reference) {
            assert!((x - y).abs() <= 1e-13 * (1.0 + y.abs()), "scale {scale:e}: {x} vs {y}");
        }
    }
}

#[test]
fn f32_gram_within_its_bound() {
    for (rows, cols) in [(768, 128), (50, 17), (17, 50), (33, 33)] {
        let a64 = matrix(rows, cols, 11, 0);
        let a: Vec<f32> = a64.iter().map(|&v| v as f32).collect();
        let k = rows.min(cols);
        let mut r = vec![0.0f32; k * cols];
        let mut workspace = vec![0.0f32; qr_r_workspace_len(rows, cols)];
        qr_r(rows, cols, &a, &mut r, &mut workspace).unwrap();
        // The bound of f64 with eps of f32, against the Gram of the f32 input computed in f64.
        let a_rounded: Vec<f64> = a.iter().map(|&v| v as f64).collect();
        let r64: Vec<f64> = r.iter().map(|&v| v as f64).collect();
        let gram_a = gram(rows, cols, &a_rounded, &a_rounded);
        let gram_r = gram(k, cols, &r64, &r64);
        let err = frobenius(&gram_a.iter().zip(&gram_r).map(|(x, y)| x - y).collect::<Vec<_>>());
        let gamma = (rows * cols) as f64 * f32::EPSILON as f64;
        let norm = frobenius(&a_rounded);
        assert!(err <= 2.0 * gamma * norm * norm, "{rows}x{cols} f32: {err:e}");
    }
}

#[test]
fn bad_input_is_an_error() {
    let a = [1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0];
    let mut r = [0.0; 4];
    let mut workspace = vec![0.0; qr_r_workspace_len(3, 2)];
    assert!(matches!(
        qr_r(3, 2, &a[..5], &mut r, &mut workspace),
        Err(Error::ShapeMismatch { what: "a", .. })
    ));
    assert!(matches!(
        qr_r(3, 2, &a, &mut r[..3], &mut workspace),
        Err(Error::ShapeMismatch { what: "r", .. })
    ));
    let short = qr_r(3, 2, &a, &mut r, &mut workspace[..1]);
    assert!(matches!(short, Err(Error::WorkspaceTooSmall { .. })));
    let nan = [1.0, f64::NAN, 3.0, 4.0, 5.0, 6.0];
    assert_eq!(qr_r(3, 2, &nan, &mut r, &mut workspace), Err(Error::NonFinite { what: "a", index: 1 }));
    let mut a_t = [1.0, f64::INFINITY, 3.0, 4.0, 5.0, 6.0];
    let mut tau = [0.0; 2];
    let mut ws = vec![0.0; qr_in_place_workspace_len(3, 2)];
    assert_eq!(
        qr_in_place(3, 2, &mut a_t, &mut tau, &mut ws),
        Err(Error::NonFinite { what: "a_t", index: 1 })
    );
    assert!(matches!(
        qr_in_place(3, 2, &mut a_t, &mut tau[..1], &mut ws),
        Err(Error::ShapeMismatch { what: "tau", .. })
    ));
    assert_eq!(qr_in_place_workspace_len(usize::MAX, 2), usize::MAX);
    assert_eq!(qr_r_workspace_len(usize::MAX, 2), usize::MAX);
}
