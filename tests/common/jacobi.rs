//! Dense f64 references for the spectral kernels: cyclic two-sided Jacobi for the eigenvalues of a
//! symmetric matrix, one-sided (Hestenes) Jacobi for singular values, and random matrices with a
//! prescribed spectrum. Shared by tests/lanczos.rs, tests/spectrum.rs and benches/spectra.rs (the
//! latter includes this file by `#[path]`, so it depends on nothing but std and the crate).
#![allow(dead_code)]

/// Eigenvalues (ascending) of the symmetric `n x n` row-major `a`, by cyclic Jacobi rotations
/// (Golub & Van Loan 8.5) until the off-diagonal mass is below `1e-15 ||A||_F` (each eigenvalue is
/// then off by less than that, Weyl); entries below `1e-18 ||A||_F / n` are not rotated.
pub fn jacobi_eigenvalues(n: usize, a: &[f64]) -> Vec<f64> {
    assert_eq!(a.len(), n * n);
    let mut a = a.to_vec();
    let frobenius: f64 = a.iter().map(|v| v * v).sum::<f64>().sqrt();
    for _sweep in 0..80 {
        let mut off = 0.0;
        for p in 0..n {
            for q in p + 1..n {
                off += a[p * n + q] * a[p * n + q];
            }
        }
        if off.sqrt() <= 1e-15 * frobenius || off == 0.0 {
            break;
        }
        let negligible = 1e-18 * frobenius / n as f64;
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq.abs() <= negligible {
                    continue;
                }
                let tau = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = tau.signum() / (tau.abs() + (1.0 + tau * tau).sqrt());
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
            }
        }
    }
    let mut values: Vec<f64> = (0..n).map(|i| a[i * n + i]).collect();
    values.sort_by(|x, y| x.partial_cmp(y).unwrap());
    values
}

/// Singular values (descending) of the `rows x cols` row-major `a`, by one-sided Jacobi
/// (Hestenes): rotate pairs of columns until all are orthogonal to `1e-15` relative; the singular
/// values are the column norms. Zero singular values come out with an absolute error of a few
/// `eps ||A||` (no squaring, unlike the eigenvalues of `A^T A`).
pub fn jacobi_singular_values(rows: usize, cols: usize, a: &[f64]) -> Vec<f64> {
    assert_eq!(a.len(), rows * cols);
    // Columns stored contiguously.
    let mut u = vec![0.0; rows * cols];
    for i in 0..rows {
        for j in 0..cols {
            u[j * rows + i] = a[i * cols + j];
        }
    }
    let frobenius_sq: f64 = a.iter().map(|v| v * v).sum();
    let negligible = frobenius_sq * 1e-34;
    for _sweep in 0..80 {
        let mut rotated = false;
        for i in 0..cols {
            for j in i + 1..cols {
                let (ci, cj) = (&u[i * rows..(i + 1) * rows], &u[j * rows..(j + 1) * rows]);
                let (mut alpha, mut beta, mut gamma) = (0.0, 0.0, 0.0);
                for (x, y) in ci.iter().zip(cj) {
                    alpha += x * x;
                    beta += y * y;
                    gamma += x * y;
                }
                if gamma.abs() <= 1e-15 * (alpha * beta).sqrt() || alpha * beta <= negligible * negligible {
                    continue;
                }
                rotated = true;
                let zeta = (beta - alpha) / (2.0 * gamma);
                let t = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt());
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = c * t;
                for k in 0..rows {
                    let (x, y) = (u[i * rows + k], u[j * rows + k]);
                    u[i * rows + k] = c * x - s * y;
                    u[j * rows + k] = s * x + c * y;
                }
            }
        }
        if !rotated {
            break;
        }
    }
    let mut sigma: Vec<f64> =
        (0..cols).map(|j| u[j * rows..(j + 1) * rows].iter().map(|v| v * v).sum::<f64>().sqrt()).collect();
    sigma.sort_by(|x, y| y.partial_cmp(x).unwrap());
    sigma.truncate(rows.min(cols));
    sigma
}

/// Symmetric matrices with a prescribed spectrum come from the public strategies module, the one
/// generator of structured matrices in the crate.
#[allow(unused_imports)]
pub use sd_attention::testing::strategies::symmetric_with_spectrum;

/// The spectra the Lanczos tests run on, for size `n`: (name, values).
pub fn test_spectra(n: usize, seed: u64) -> Vec<(&'static str, Vec<f64>)> {
    let mut rng = sd_attention::rng::SplitMix64::new(seed);
    let mut out = Vec::new();
    out.push(("full random", (0..n).map(|_| rng.uniform(-1.0, 1.0)).collect()));
    for (name, rank) in [("rank 0", 0), ("rank 1", 1), ("rank n/3", n / 3), ("rank n-1", n.saturating_sub(1))]
    {
        let mut v = vec![0.0; n];
        for x in v.iter_mut().take(rank) {
            *x = rng.uniform(0.1, 2.0) * if rng.next_u64() % 2 == 0 { 1.0 } else { -1.0 };
        }
        out.push((name, v));
    }
    // A tight cluster of 5 values at 1 (gaps 1e-9) among spread values.
    out.push((
        "clustered",
        (0..n).map(|i| if i < 5 { 1.0 + 1e-9 * i as f64 } else { rng.uniform(-3.0, 3.0) }).collect(),
    ));
    // Three values with multiplicities about n/3 each, plus zeros.
    out.push(("repeated", (0..n).map(|i| [2.0, -1.0, 0.5, 0.0][i % 4]).collect()));
    // Geometric decay over 12 decades (a numerically low-rank PSD matrix).
    out.push(("graded", (0..n).map(|i| 10f64.powf(-12.0 * i as f64 / n.max(1) as f64)).collect()));
    out
}
