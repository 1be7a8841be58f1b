//! Naive f64 references and random inputs shared by the integration tests and benches.
//!
//! Each reference is the textbook formula, written for clarity, not speed: the kernels of the crate
//! are checked against these.
#![allow(dead_code)]

/// The proptest configuration of a property test that runs `cases` cases by default. The
/// environment decides the rest: `PROPTEST_CASES` overrides the count (the soak script runs every
/// property at 10,000 and more), `PROPTEST_RNG_SEED` fixes the seed (CI runs with a fixed one, so a
/// failure there is reproducible), and the committed `*.proptest-regressions` files are replayed
/// first.
pub fn proptest_config(cases: u32) -> proptest::test_runner::Config {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(cases);
    proptest::test_runner::Config { cases, ..proptest::test_runner::Config::default() }
}

/// `C = A B` with `A` `m x k`, `B` `k x n`, by the triple loop (i, j, p), accumulated in f64.
pub fn naive_matmul(m: usize, k: usize, n: usize, a: &[f64], b: &[f64]) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0;
            for p in 0..k {
                acc += a[i * k + p] * b[p * n + j];
            }
            c[i * n + j] = acc;
        }
    }
    c
}

/// `|A| |B|` elementwise: the scale of the rounding error of each entry of `A B`.
pub fn naive_abs_matmul(m: usize, k: usize, n: usize, a: &[f64], b: &[f64]) -> Vec<f64> {
    let abs = |x: &[f64]| x.iter().map(|v| v.abs()).collect::<Vec<_>>();
    naive_matmul(m, k, n, &abs(a), &abs(b))
}

/// `A^T` of a `rows x cols` matrix.
pub fn naive_transpose(rows: usize, cols: usize, a: &[f64]) -> Vec<f64> {
    let mut t = vec![0.0; rows * cols];
    for i in 0..rows {
        for j in 0..cols {
            t[j * rows + i] = a[i * cols + j];
        }
    }
    t
}

/// `(S, D) = ((M - M^T)/2, (M + M^T)/2)`.
pub fn naive_split(m: usize, mat: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let t = naive_transpose(m, m, mat);
    let s = mat.iter().zip(&t).map(|(a, b)| (a - b) / 2.0).collect();
    let d = mat.iter().zip(&t).map(|(a, b)| (a + b) / 2.0).collect();
    (s, d)
}

/// `sum x_i^2` in f64.
pub fn naive_sq_norm(x: &[f64]) -> f64 {
    x.iter().map(|v| v * v).sum()
}

/// Widens an f32 slice to f64.
pub fn widen(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// Rounds an f64 slice to f32.
pub fn narrow(x: &[f64]) -> Vec<f32> {
    x.iter().map(|&v| v as f32).collect()
}

/// A deterministic pseudo-random matrix with entries in [-1, 1), for benches and fixed-size tests.
pub fn seeded_matrix(len: usize, seed: u64) -> Vec<f64> {
    let mut rng = sd_attention::rng::SplitMix64::new(seed);
    (0..len).map(|_| rng.uniform(-1.0, 1.0)).collect()
}

#[allow(unused_imports)]
pub use sd_attention::testing::strategies::EDGE_SIZES;

/// Central-difference gradient of `f` at `x`, for the entries `indices`:
/// `(f(x + h e_i) - f(x - h e_i)) / (2 h)`. Truncation error `O(h^2 f''')`, rounding `O(eps |f| / h)`.
pub fn central_differences_at(
    f: &mut dyn FnMut(&[f64]) -> f64,
    x: &[f64],
    indices: &[usize],
    h: f64,
) -> Vec<f64> {
    let mut probe = x.to_vec();
    indices
        .iter()
        .map(|&i| {
            probe[i] = x[i] + h;
            let up = f(&probe);
            probe[i] = x[i] - h;
            let down = f(&probe);
            probe[i] = x[i];
            (up - down) / (2.0 * h)
        })
        .collect()
}

pub mod attention;
pub mod jacobi;
pub mod linear;
#[cfg(feature = "alloc")]
pub mod model;
pub mod rounding;
