//! Lanczos (`docs/math.md` section 3) against the dense Jacobi reference of tests/common/jacobi.rs: whole
//! spectra of random symmetric matrices of sizes 1..300 with full rank, low rank, clustered,
//! repeated and graded values; Ritz vectors; early-stopped extremes; breakdown on exact low rank;
//! the tridiagonal solver; errors.

mod common;

use common::jacobi::{jacobi_eigenvalues, symmetric_with_spectrum, test_spectra};
use proptest::prelude::*;
use sd_attention::spectral::lanczos::lanczos::*;
use sd_attention::spectral::lanczos::operator::{DenseSymmetric, FnOperator, SymmetricOperator};
use sd_attention::spectral::lanczos::tridiagonal::tridiagonal_eigen;
use sd_attention::Error;

/// The whole spectrum by Lanczos: Ritz values plus inferred zeros, ascending.
fn lanczos_spectrum(n: usize, a: &[f64], seed: u64) -> (Vec<f64>, LanczosInfo<f64>) {
    let mut op = DenseSymmetric::new(n, a).unwrap();
    let mut workspace = vec![0.0; lanczos_workspace_len(n, 0, false)];
    let mut values = vec![0.0; n];
    let options = LanczosOptions { seed, ..Default::default() };
    let info = lanczos(&mut op, &options, &mut values, None, &mut workspace).unwrap();
    values.truncate(info.steps);
    values.extend(std::iter::repeat(0.0).take(info.inferred_zeros));
    values.sort_by(|x, y| x.partial_cmp(y).unwrap());
    (values, info)
}

/// `max_i |x_i - y_i| / max_i |y_i|` (0 when `y = 0` and `x = 0`).
fn relative_error(x: &[f64], y: &[f64]) -> f64 {
    assert_eq!(x.len(), y.len());
    let scale = y.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let err = x.iter().zip(y).fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
    if scale == 0.0 {
        err
    } else {
        err / scale
    }
}

#[test]
fn whole_spectrum_matches_jacobi_on_sizes_1_to_300() {
    let mut worst = 0.0f64;
    let mut worst_case = String::new();
    let mut cases = 0;
    for (s, &n) in [1usize, 2, 3, 5, 8, 13, 31, 64, 65, 100, 173, 300].iter().enumerate() {
        for (kind, (name, values)) in test_spectra(n, 100 + s as u64).into_iter().enumerate() {
            // Every kind at every size up to 100; above, each kind at one of 173 and 300 (the
            // O(n^3) Jacobi reference dominates the run time).
            if (n == 173 && kind % 2 == 1) || (n == 300 && kind % 2 == 0) {
                continue;
            }
            let a = symmetric_with_spectrum(&values, 7 + n as u64);
            let reference = jacobi_eigenvalues(n, &a);
            // The reference itself reproduces the prescribed spectrum.
            let mut prescribed = values.clone();
            prescribed.sort_by(|x, y| x.partial_cmp(y).unwrap());
            assert!(relative_error(&reference, &prescribed) < 1e-12, "Jacobi reference off, n {n} {name}");
            let (got, info) = lanczos_spectrum(n, &a, 1);
            assert_eq!(got.len(), n, "n {n} {name}: {info:?}");
            let err = relative_error(&got, &reference);
            assert!(err <= 1e-10, "n {n} {name}: relative error {err:e}, {info:?}");
            if err > worst {
                worst = err;
                worst_case = format!("n {n} {name} ({info:?})");
            }
            cases += 1;
        }
    }
    println!("Lanczos vs Jacobi: {cases} matrices, max relative error {worst:.3e} at {worst_case}");
}

#[test]
fn repeated_values_are_found_with_their_multiplicity_through_restarts() {
    let n = 60;
    let values: Vec<f64> = (0..n).map(|i| [3.0, -1.0, 0.5][i % 3]).collect();
    let a = symmetric_with_spectrum(&values, 3);
    let (got, info) = lanczos_spectrum(n, &a, 2);
    // Three distinct values: each Krylov block has 3 vectors, so there were n/3 - 1 restarts.
    assert_eq!(info.restarts, n / 3 - 1, "{info:?}");
    assert_eq!(info.termination, Termination::Exhausted);
    let mut want = values.clone();
    want.sort_by(|x, y| x.partial_cmp(y).unwrap());
    assert!(relative_error(&got, &want) < 1e-12);
}

#[test]
fn low_rank_ends_in_a_null_complement() {
    let n = 120;
    for rank in [0usize, 1, 2, 9, 40] {
        let values: Vec<f64> = (0..n).map(|i| if i < rank { 1.0 + i as f64 } else { 0.0 }).collect();
        let a = symmetric_with_spectrum(&values, 11);
        let (got, info) = lanczos_spectrum(n, &a, 5);
        assert_eq!(info.termination, Termination::NullComplement, "rank {rank}: {info:?}");
        // rank distinct nonzero values and one null direction, then the restart vector that maps to
        // 0; one more step when the rounding of A (its "zero" eigenvalues are ~1e-13) keeps the
        // first residual above the breakdown level.
        let expected = if rank == 0 { 1..=1 } else { rank + 2..=rank + 3 };
        assert!(expected.contains(&info.steps), "rank {rank}: {info:?}");
        let nonzero = got.iter().filter(|v| v.abs() > 1e-10).count();
        assert_eq!(nonzero, rank);
        let mut want = values.clone();
        want.sort_by(|x, y| x.partial_cmp(y).unwrap());
        assert!(relative_error(&got, &want) < 1e-12, "rank {rank}");
    }
}

#[test]
fn ritz_vectors_are_unit_eigenvectors() {
    let n = 80;
    let values: Vec<f64> = (0..n).map(|i| (i as f64 - 30.0) / 7.0).collect();
    let a = symmetric_with_spectrum(&values, 13);
    let mut op = DenseSymmetric::new(n, &a).unwrap();
    let mut workspace = vec![0.0; lanczos_workspace_len(n, 0, true)];
    let (mut theta, mut vectors) = (vec![0.0; n], vec![0.0; n * n]);
    let info =
        lanczos(&mut op, &LanczosOptions::default(), &mut theta, Some(&mut vectors), &mut workspace).unwrap();
    assert_eq!(info.steps, n);
    let norm_a = 49.0 / 7.0;
    let mut y = vec![0.0; n];
    for j in 0..n {
        let v = &vectors[j * n..(j + 1) * n];
        op.apply(v, &mut y).unwrap();
        let residual: f64 = y.iter().zip(v).map(|(a, b)| (a - theta[j] * b).powi(2)).sum::<f64>().sqrt();
        let length: f64 = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!(residual <= 1e-12 * norm_a, "vector {j}: residual {residual:e}");
        assert!((length - 1.0).abs() <= 1e-13, "vector {j}: length {length}");
    }
}

#[test]
fn extreme_values_converge_before_n_steps() {
    let n = 300;
    let mut rng = sd_attention::rng::SplitMix64::new(4);
    let mut values: Vec<f64> = (0..n).map(|_| rng.uniform(-1.0, 1.0)).collect();
    values[0] = -2.0;
    values[1] = 3.0;
    let a = symmetric_with_spectrum(&values, 17);
    let mut op = DenseSymmetric::new(n, &a).unwrap();
    let mut workspace = vec![0.0; extreme_eigenvalues_workspace_len(n, 0)];
    let ends = extreme_eigenvalues(&mut op, 1e-10, 0, 3, &mut workspace).unwrap();
    assert!(ends.converged);
    assert_eq!(ends.info.termination, Termination::Converged);
    assert!(ends.info.steps < n / 2, "{:?}", ends.info);
    assert!((ends.smallest + 2.0).abs() <= 1e-10 * 3.0, "{}", ends.smallest);
    assert!((ends.largest - 3.0).abs() <= 1e-10 * 3.0, "{}", ends.largest);
    // Ritz values never leave the spectrum.
    assert!(ends.smallest >= -2.0 - 1e-13 && ends.largest <= 3.0 + 1e-13);
    println!("extremes of n = 300 after {} steps", ends.info.steps);

    // Through `lanczos`: the 3 largest and 2 smallest.
    let mut values_out = vec![0.0; n];
    let mut workspace = vec![0.0; lanczos_workspace_len(n, 0, false)];
    let options = LanczosOptions { largest: 3, smallest: 2, tol: 1e-10, seed: 9, max_steps: 0 };
    let info = lanczos(&mut op, &options, &mut values_out, None, &mut workspace).unwrap();
    assert_eq!(info.termination, Termination::Converged);
    let mut sorted = values.clone();
    sorted.sort_by(|x, y| x.partial_cmp(y).unwrap());
    let k = info.steps;
    for (got, want) in values_out[..2].iter().zip(&sorted[..2]) {
        assert!((got - want).abs() <= 3e-10, "{got} vs {want}");
    }
    for (got, want) in values_out[k - 3..k].iter().zip(&sorted[n - 3..]) {
        assert!((got - want).abs() <= 3e-10, "{got} vs {want}");
    }
}

#[test]
fn semidefiniteness_check_of_a_low_rank_gram_matrix() {
    // A = B B^T with B 50 x 4: PSD of rank 4; the smallest eigenvalue is 0.
    let n = 50;
    let b = common::seeded_matrix(n * 4, 21);
    let mut op = FnOperator::new(n, |x: &[f64], y: &mut [f64]| {
        let mut t = [0.0; 4];
        for i in 0..n {
            for c in 0..4 {
                t[c] += b[i * 4 + c] * x[i];
            }
        }
        for i in 0..n {
            y[i] = (0..4).map(|c| b[i * 4 + c] * t[c]).sum();
        }
    });
    let mut workspace = vec![0.0; extreme_eigenvalues_workspace_len(n, 0)];
    let ends = extreme_eigenvalues(&mut op, 1e-12, 0, 1, &mut workspace).unwrap();
    assert!(ends.converged);
    assert!(ends.smallest.abs() <= 1e-13 * ends.largest, "{ends:?}");
    assert!(ends.info.steps <= 6, "{:?}", ends.info);
    let dense: Vec<f64> =
        (0..n * n).map(|idx| (0..4).map(|c| b[(idx / n) * 4 + c] * b[(idx % n) * 4 + c]).sum()).collect();
    let reference = jacobi_eigenvalues(n, &dense);
    assert!((ends.largest - reference[n - 1]).abs() <= 1e-12 * reference[n - 1]);
}

#[test]
fn f32_matches_f64_within_the_breakdown_level() {
    // Ritz values carry an absolute error of about (c sqrt(n) eps) ||A||; the breakdown level
    // 8 sqrt(n) eps ||A|| of the f32 run bounds it, plus the rounding of A to f32 (eps ||A||).
    let n = 64;
    let values: Vec<f64> = (0..n).map(|i| ((i * 37) % 64) as f64 / 32.0 - 1.0).collect();
    let a = symmetric_with_spectrum(&values, 23);
    let a32: Vec<f32> = a.iter().map(|&v| v as f32).collect();
    let (reference, _) = lanczos_spectrum(n, &common::widen(&a32), 1);
    let mut op = DenseSymmetric::new(n, &a32).unwrap();
    let mut workspace = vec![0.0f32; lanczos_workspace_len(n, 0, false)];
    let mut got = vec![0.0f32; n];
    let info = lanczos(&mut op, &LanczosOptions::default(), &mut got, None, &mut workspace).unwrap();
    got.truncate(info.steps);
    got.extend(std::iter::repeat(0.0).take(info.inferred_zeros));
    got.sort_by(|x, y| x.partial_cmp(y).unwrap());
    let tol = (8.0 * (n as f64).sqrt() + 1.0) * f32::EPSILON as f64;
    let err = relative_error(&common::widen(&got), &reference);
    println!("f32 vs f64 Lanczos, n = 64: relative error {err:.3e} (tolerance {tol:.3e})");
    assert!(err <= tol, "{err:e} > {tol:e}");
}

#[test]
fn tridiagonal_solver_on_known_matrices() {
    // The 1-D Laplacian tridiag(-1, 2, -1) of size n: eigenvalues 2 - 2 cos(k pi / (n + 1)).
    for n in [1usize, 2, 3, 10, 57] {
        let mut diag = vec![2.0f64; n];
        let mut offdiag = vec![-1.0f64; n.saturating_sub(1)];
        let mut vectors = vec![0.0; n * n];
        for i in 0..n {
            vectors[i * n + i] = 1.0;
        }
        tridiagonal_eigen(&mut diag, &mut offdiag, &mut vectors, n).unwrap();
        for (k, value) in diag.iter().enumerate() {
            let want = 2.0 - 2.0 * ((k + 1) as f64 * std::f64::consts::PI / (n + 1) as f64).cos();
            assert!((value - want).abs() <= 1e-14, "n {n} k {k}: {value} vs {want}");
        }
        // Columns orthonormal.
        for i in 0..n {
            for j in 0..n {
                let dot: f64 = (0..n).map(|r| vectors[r * n + i] * vectors[r * n + j]).sum();
                assert!((dot - if i == j { 1.0 } else { 0.0 }).abs() < 1e-13);
            }
        }
    }
    // Zero diagonal: eigenvalues come in +- pairs (the singular values of the bidiagonal).
    let mut diag = [0.0f64; 4];
    let mut offdiag = [1.0, 2.0, 3.0];
    tridiagonal_eigen(&mut diag, &mut offdiag, &mut [], 0).unwrap();
    assert!((diag[0] + diag[3]).abs() < 1e-14 && (diag[1] + diag[2]).abs() < 1e-14);
    assert!((diag[3] * diag[2] - 3.0).abs() < 1e-13); // |det| = 1 * 3
}

proptest! {
    #![proptest_config(common::proptest_config(64))]

    #[test]
    fn tridiagonal_matches_jacobi(n in 0usize..40, seed in any::<u64>(), split_at in 0usize..40) {
        let mut rng = sd_attention::rng::SplitMix64::new(seed);
        let diag: Vec<f64> = (0..n).map(|_| rng.uniform(-1.0, 1.0)).collect();
        let mut offdiag: Vec<f64> = (0..n.saturating_sub(1)).map(|_| rng.uniform(-1.0, 1.0)).collect();
        if split_at + 1 < n {
            offdiag[split_at] = 0.0;
        }
        let mut dense = vec![0.0; n * n];
        for i in 0..n {
            dense[i * n + i] = diag[i];
            if i + 1 < n {
                dense[i * n + i + 1] = offdiag[i];
                dense[(i + 1) * n + i] = offdiag[i];
            }
        }
        let reference = jacobi_eigenvalues(n, &dense);
        let mut got = diag.clone();
        tridiagonal_eigen(&mut got, &mut offdiag, &mut [], 0).unwrap();
        prop_assert!(relative_error(&got, &reference) < 1e-13);
    }

    #[test]
    fn lanczos_matches_jacobi_on_random_symmetric_matrices(
        matrix in sd_attention::testing::strategies::square_matrix::<f64>(0..40, 1.0), seed in any::<u64>()
    ) {
        let (n, mut a) = (matrix.rows, matrix.data);
        for i in 0..n {
            for j in i + 1..n {
                a[j * n + i] = a[i * n + j];
            }
        }
        let reference = jacobi_eigenvalues(n, &a);
        let (got, _) = lanczos_spectrum(n, &a, seed);
        prop_assert_eq!(got.len(), n);
        prop_assert!(relative_error(&got, &reference) < 1e-10);
    }
}

#[test]
fn bad_input_is_an_error() {
    let a = [1.0f64, 0.0, 0.0, 1.0];
    assert!(matches!(DenseSymmetric::new(3, &a), Err(Error::ShapeMismatch { .. })));
    let mut op = DenseSymmetric::new(2, &a).unwrap();
    let mut values = [0.0; 2];
    // Workspace too small.
    let mut small = vec![0.0; lanczos_workspace_len(2, 0, false) - 1];
    assert!(matches!(
        lanczos(&mut op, &LanczosOptions::default(), &mut values, None, &mut small),
        Err(Error::WorkspaceTooSmall { .. })
    ));
    let mut workspace = vec![0.0; lanczos_workspace_len(2, 0, true)];
    // Output too short.
    assert!(matches!(
        lanczos(&mut op, &LanczosOptions::default(), &mut values[..1], None, &mut workspace),
        Err(Error::ShapeMismatch { what: "ritz_values", .. })
    ));
    let mut vectors = [0.0; 3];
    assert!(matches!(
        lanczos(&mut op, &LanczosOptions::default(), &mut values, Some(&mut vectors), &mut workspace),
        Err(Error::ShapeMismatch { what: "ritz_vectors", .. })
    ));
    // Bad options.
    let negative = LanczosOptions { tol: -1.0, ..Default::default() };
    assert!(matches!(
        lanczos(&mut op, &negative, &mut values, None, &mut workspace),
        Err(Error::InvalidParameter { what: "tol", .. })
    ));
    let too_many = LanczosOptions { largest: 2, smallest: 1, ..Default::default() };
    assert!(matches!(
        lanczos(&mut op, &too_many, &mut values, None, &mut workspace),
        Err(Error::InvalidParameter { .. })
    ));
    // An operator producing NaN.
    let mut nan_op = FnOperator::new(3, |_x: &[f64], y: &mut [f64]| y.fill(f64::NAN));
    let mut workspace = vec![0.0; lanczos_workspace_len(3, 0, false)];
    let mut values = [0.0; 3];
    assert!(matches!(
        lanczos(&mut nan_op, &LanczosOptions::default(), &mut values, None, &mut workspace),
        Err(Error::NonFinite { what: "operator output", index: 0 })
    ));
    // The tridiagonal solver rejects NaN and bad lengths.
    assert!(matches!(
        tridiagonal_eigen(&mut [1.0, f64::NAN], &mut [0.5], &mut [], 0),
        Err(Error::NonFinite { what: "diag", index: 1 })
    ));
    assert!(matches!(
        tridiagonal_eigen(&mut [1.0, 2.0], &mut [], &mut [], 0),
        Err(Error::ShapeMismatch { .. })
    ));
    // A 1 x 1 operator.
    let one = [5.0f64];
    let mut op1 = DenseSymmetric::new(1, &one).unwrap();
    let mut workspace = vec![0.0; extreme_eigenvalues_workspace_len(1, 0)];
    let ends = extreme_eigenvalues(&mut op1, 1e-8, 0, 0, &mut workspace).unwrap();
    assert_eq!((ends.smallest, ends.largest), (5.0, 5.0));
    // Sizes that cannot fit in memory ask for usize::MAX and are refused, without overflow.
    assert_eq!(lanczos_workspace_len(usize::MAX / 3, 8, true), usize::MAX);
    // Empty operators.
    let mut empty = DenseSymmetric::new(0, &[] as &[f64]).unwrap();
    let info = lanczos(&mut empty, &LanczosOptions::default(), &mut [], None, &mut []).unwrap();
    assert_eq!(info.steps, 0);
    assert!(matches!(extreme_eigenvalues(&mut empty, 1e-8, 0, 0, &mut []), Err(Error::Empty { .. })));
}
