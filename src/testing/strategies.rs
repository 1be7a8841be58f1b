//! `proptest` strategies for property tests of attention heads (feature `proptest`).
//!
//! Each strategy draws its sizes from proptest (so failures shrink to small shapes) and its values
//! from a [`SplitMix64`] stream seeded by proptest (so a failing case is reproducible from its seed;
//! values do not shrink). Structured matrices are built in `f64` so that their structure is exact
//! before rounding to `T`: rounding preserves skew-symmetry and symmetry bit for bit, and the
//! singular values of [`low_rank_matrix`] are returned in `f64`.

use crate::linalg::dense::{matmul_nt, Update};
use crate::rng::SplitMix64;
use crate::Scalar;
use core::ops::Range;
use proptest::prelude::*;
use std::vec::Vec;

/// Sizes every kernel should meet: empty, one, odd, prime, a tile (64), a tile plus one, several
/// tiles.
pub const EDGE_SIZES: [usize; 6] = [0, 1, 7, 64, 65, 257];

/// A row-major `rows x cols` matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct Matrix<T> {
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// `rows * cols` entries, row-major.
    pub data: Vec<T>,
}

fn round<T: Scalar>(values: &[f64]) -> Vec<T> {
    values.iter().map(|&v| T::of_f64(v)).collect()
}

fn gaussian(len: usize, std: f64, rng: &mut SplitMix64) -> Vec<f64> {
    let mut values = std::vec![0.0; len];
    rng.fill_normal(std, &mut values);
    values
}

/// A size in `range`, drawn half the time from the [`EDGE_SIZES`] (and the range's ends) that lie
/// in it, otherwise uniformly.
pub fn size_in(range: Range<usize>) -> BoxedStrategy<usize> {
    let mut edges: Vec<usize> = EDGE_SIZES.iter().copied().filter(|s| range.contains(s)).collect();
    if !range.is_empty() {
        edges.push(range.start);
        edges.push(range.end - 1);
    }
    if edges.is_empty() {
        return range.boxed();
    }
    prop_oneof![range, prop::sample::select(edges)].boxed()
}

/// A dense matrix with independent entries uniform on `[-scale, scale]`.
pub fn dense_matrix<T: Scalar>(
    rows: Range<usize>,
    cols: Range<usize>,
    scale: f64,
) -> BoxedStrategy<Matrix<T>> {
    (size_in(rows), size_in(cols), any::<u64>())
        .prop_map(move |(rows, cols, seed)| {
            let mut rng = SplitMix64::new(seed);
            let data = (0..rows * cols).map(|_| T::of_f64(rng.uniform(-scale, scale))).collect();
            Matrix { rows, cols, data }
        })
        .boxed()
}

/// A square `m x m` matrix with independent entries uniform on `[-scale, scale]`.
pub fn square_matrix<T: Scalar>(size: Range<usize>, scale: f64) -> BoxedStrategy<Matrix<T>> {
    (size_in(size), any::<u64>())
        .prop_map(move |(m, seed)| {
            let mut rng = SplitMix64::new(seed);
            let data = (0..m * m).map(|_| T::of_f64(rng.uniform(-scale, scale))).collect();
            Matrix { rows: m, cols: m, data }
        })
        .boxed()
}

/// A random `rows x cols` column-orthonormal `f64` matrix (`cols <= rows`) from `seed`: Gram–Schmidt
/// applied twice to Gaussian columns (orthonormal to a few `rows eps`).
pub fn random_orthonormal_columns(rows: usize, cols: usize, seed: u64) -> Vec<f64> {
    orthonormal_columns(rows, cols, &mut SplitMix64::new(seed))
}

/// `Q diag(values) Q^T` with a random orthogonal `Q` from `seed`: an exactly symmetric
/// `n x n` matrix (`n = values.len()`) whose spectrum is `values` up to a few `n eps max |value|`.
pub fn symmetric_with_spectrum(values: &[f64], seed: u64) -> Vec<f64> {
    let n = values.len();
    let q = random_orthonormal_columns(n, n, seed);
    let mut a = std::vec![0.0; n * n];
    for i in 0..n {
        for j in i..n {
            let entry: f64 = (0..n).map(|k| q[i * n + k] * values[k] * q[j * n + k]).sum();
            a[i * n + j] = entry;
            a[j * n + i] = entry;
        }
    }
    a
}

fn orthonormal_columns(rows: usize, cols: usize, rng: &mut SplitMix64) -> Vec<f64> {
    let mut q = gaussian(rows * cols, 1.0, rng);
    for j in 0..cols {
        for _pass in 0..2 {
            for p in 0..j {
                let proj: f64 = (0..rows).map(|i| q[i * cols + p] * q[i * cols + j]).sum();
                for i in 0..rows {
                    q[i * cols + j] -= proj * q[i * cols + p];
                }
            }
        }
        let norm = (0..rows).map(|i| q[i * cols + j] * q[i * cols + j]).sum::<f64>().sqrt();
        for i in 0..rows {
            q[i * cols + j] /= norm;
        }
    }
    q
}

/// A matrix with prescribed rank and condition, and its exact singular values.
#[derive(Clone, Debug, PartialEq)]
pub struct LowRank<T> {
    /// `Q1 diag(sigma) Q2^T` rounded to `T`.
    pub matrix: Matrix<T>,
    /// `sigma`, descending from 1 to `1 / condition` geometrically (before rounding to `T`).
    pub singular_values: Vec<f64>,
}

/// `Q1 diag(sigma) Q2^T` with random orthonormal `Q1` (`rows x r`), `Q2` (`cols x r`), rank
/// `r` drawn from `rank` (clamped to `min(rows, cols)`), and singular values spaced geometrically
/// from `1` to `1 / condition` (`condition >= 1`).
pub fn low_rank_matrix<T: Scalar>(
    rows: Range<usize>,
    cols: Range<usize>,
    rank: Range<usize>,
    condition: f64,
) -> BoxedStrategy<LowRank<T>> {
    assert!(condition >= 1.0, "condition must be at least 1");
    (size_in(rows), size_in(cols), rank, any::<u64>())
        .prop_map(move |(rows, cols, rank, seed)| {
            let rank = rank.min(rows).min(cols);
            let mut rng = SplitMix64::new(seed);
            let left = orthonormal_columns(rows, rank, &mut rng);
            let right = orthonormal_columns(cols, rank, &mut rng);
            let singular_values: Vec<f64> = (0..rank)
                .map(|k| if rank == 1 { 1.0 } else { condition.powf(-(k as f64) / (rank - 1) as f64) })
                .collect();
            let mut scaled_left = left.clone();
            for (index, value) in scaled_left.iter_mut().enumerate() {
                *value *= singular_values[index % rank.max(1)];
            }
            let mut product = std::vec![0.0; rows * cols];
            matmul_nt(rows, rank, cols, &scaled_left, &right, &mut product, Update::Overwrite)
                .expect("shapes are consistent by construction");
            LowRank { matrix: Matrix { rows, cols, data: round(&product) }, singular_values }
        })
        .boxed()
}

/// An exactly skew-symmetric `m x m` matrix `U V^T - V U^T` with Gaussian `d x r` factors
/// (entries `N(0, 1/m)`), so its rank is `min(2 r, m)` (even) with probability one.
pub fn skew_symmetric<T: Scalar>(size: Range<usize>, rank: Range<usize>) -> BoxedStrategy<Matrix<T>> {
    (size_in(size), rank, any::<u64>())
        .prop_map(|(m, r, seed)| {
            let mut rng = SplitMix64::new(seed);
            let std = 1.0 / (m.max(1) as f64).sqrt();
            let (u, v) = (gaussian(m * r, std, &mut rng), gaussian(m * r, std, &mut rng));
            let mut w = std::vec![0.0; m * m];
            matmul_nt(m, r, m, &u, &v, &mut w, Update::Overwrite).expect("consistent shapes");
            let mut skew = std::vec![0.0; m * m];
            for i in 0..m {
                for j in 0..m {
                    // w_ij - w_ji is exactly the negation of w_ji - w_ij: skew bit for bit.
                    skew[i * m + j] = w[i * m + j] - w[j * m + i];
                }
            }
            Matrix { rows: m, cols: m, data: round(&skew) }
        })
        .boxed()
}

/// Sign structure of a [`symmetric`] matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Definiteness {
    /// `B B^T`: every eigenvalue `>= 0`.
    PositiveSemidefinite,
    /// `-B B^T`: every eigenvalue `<= 0` (a filtering part of an S-D head).
    NegativeSemidefinite,
    /// `B diag(+-1) B^T`: eigenvalues of both signs.
    Indefinite,
}

/// An exactly symmetric `m x m` matrix `B diag(signs) B^T`, `B` Gaussian `m x r` with entries
/// `N(0, 1/m)`, signs per `definiteness`; rank `min(r, m)` with probability one.
pub fn symmetric<T: Scalar>(
    size: Range<usize>,
    rank: Range<usize>,
    definiteness: Definiteness,
) -> BoxedStrategy<Matrix<T>> {
    (size_in(size), rank, any::<u64>())
        .prop_map(move |(m, r, seed)| {
            let mut rng = SplitMix64::new(seed);
            let b = gaussian(m * r, 1.0 / (m.max(1) as f64).sqrt(), &mut rng);
            let sign = |k: usize| match definiteness {
                Definiteness::PositiveSemidefinite => 1.0,
                Definiteness::NegativeSemidefinite => -1.0,
                Definiteness::Indefinite => {
                    if k % 2 == 0 {
                        1.0
                    } else {
                        -1.0
                    }
                }
            };
            let mut sym = std::vec![0.0; m * m];
            for i in 0..m {
                for j in i..m {
                    let value: f64 = (0..r).map(|k| sign(k) * b[i * r + k] * b[j * r + k]).sum();
                    sym[i * m + j] = value;
                    sym[j * m + i] = value;
                }
            }
            Matrix { rows: m, cols: m, data: round(&sym) }
        })
        .boxed()
}

/// Factors of an S-D head kernel (`docs/math.md` section 5): routing `S = U V^T - V U^T`, filtering
/// `D = -C C^T`.
#[derive(Clone, Debug, PartialEq)]
pub struct SdFactors<T> {
    /// Model width `d`.
    pub d: usize,
    /// Routing rank `r` (`rank(S) <= 2 r`).
    pub routing_rank: usize,
    /// Filtering rank `q` (`rank(D) <= q`).
    pub filtering_rank: usize,
    /// `U`, `d x r`.
    pub u: Vec<T>,
    /// `V`, `d x r`.
    pub v: Vec<T>,
    /// `C`, `d x q`.
    pub c: Vec<T>,
}

/// S-D factor sets with Gaussian entries `N(0, 1/d)` and ranks drawn from the given ranges.
pub fn sd_factors<T: Scalar>(
    d: Range<usize>,
    routing_rank: Range<usize>,
    filtering_rank: Range<usize>,
) -> BoxedStrategy<SdFactors<T>> {
    (size_in(d), routing_rank, filtering_rank, any::<u64>())
        .prop_map(|(d, r, q, seed)| {
            let mut rng = SplitMix64::new(seed);
            let std = 1.0 / (d.max(1) as f64).sqrt();
            SdFactors {
                d,
                routing_rank: r,
                filtering_rank: q,
                u: round(&gaussian(d * r, std, &mut rng)),
                v: round(&gaussian(d * r, std, &mut rng)),
                c: round(&gaussian(d * q, std, &mut rng)),
            }
        })
        .boxed()
}

/// Inputs of one attention head: queries and keys `n x d_k`, values `n x d_v`.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionInputs<T> {
    /// Sequence length.
    pub n: usize,
    /// Query/key width.
    pub d_k: usize,
    /// Value width.
    pub d_v: usize,
    /// Queries, `n x d_k`.
    pub q: Vec<T>,
    /// Keys, `n x d_k`.
    pub k: Vec<T>,
    /// Values, `n x d_v`.
    pub v: Vec<T>,
}

/// Attention inputs with `n` from `n`, `d_k` and `d_v` from `d` (edge sizes favoured), entries
/// uniform on `[-scale, scale]`.
pub fn attention_inputs<T: Scalar>(
    n: Range<usize>,
    d: Range<usize>,
    scale: f64,
) -> BoxedStrategy<AttentionInputs<T>> {
    (size_in(n), size_in(d.clone()), size_in(d), any::<u64>())
        .prop_map(move |(n, d_k, d_v, seed)| {
            let mut rng = SplitMix64::new(seed);
            let mut draw = |len: usize| (0..len).map(|_| T::of_f64(rng.uniform(-scale, scale))).collect();
            AttentionInputs { n, d_k, d_v, q: draw(n * d_k), k: draw(n * d_k), v: draw(n * d_v) }
        })
        .boxed()
}

/// Hostile scalars for error-path tests: zeros of both signs, the largest and smallest normal
/// values, a subnormal, NaN, both infinities, and ordinary values.
pub fn hostile_scalar<T: Scalar>() -> BoxedStrategy<T> {
    let specials = std::vec![
        T::zero(),
        -T::zero(),
        T::max_value(),
        -T::max_value(),
        T::min_positive_value(),
        T::min_positive_value() * T::EPS, // subnormal
        T::nan(),
        T::infinity(),
        T::neg_infinity(),
        T::one(),
        -T::EPS,
    ];
    prop_oneof![prop::sample::select(specials), (-1e3f64..1e3).prop_map(T::of_f64)].boxed()
}

/// A vector of [`hostile_scalar`]s with a length drawn from `len`.
pub fn hostile_values<T: Scalar>(len: Range<usize>) -> BoxedStrategy<Vec<T>> {
    prop::collection::vec(hostile_scalar::<T>(), len).boxed()
}
