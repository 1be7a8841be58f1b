//! The gemm wrappers against the naive triple loop, on every combination of edge sizes and on
//! random shapes, in f64 and f32, overwriting and accumulating.
//!
//! Tolerance: entry `(i, j)` of a computed `A B` (plus `C0` when accumulating) may differ from the
//! exact one by `gamma * ((|A| |B|)_ij + |C0_ij|)` with `gamma = (k + 2) eps` (the standard bound for
//! a length-k dot product, whatever the summation order). The reference is computed in f64 from the
//! very values the kernel saw, so for f32 the bound applies with eps = 2^-23.

mod common;
use common::*;
use proptest::prelude::*;
use sd_attention::dense::{gemm, gemm_portable, matmul, matmul_nt, matmul_tn, transpose, Transpose, Update};
use sd_attention::Scalar;

#[derive(Clone, Copy, Debug)]
enum Variant {
    Nn,
    Tn,
    Nt,
    /// `A^T B^T` through the allocation-free portable kernel.
    PortableTt,
    /// `A B` through the portable kernel.
    PortableNn,
    /// `A B^T` through the portable kernel.
    PortableNt,
    /// `A^T B` through the portable kernel.
    PortableTn,
}

const ALL_VARIANTS: [Variant; 7] = [
    Variant::Nn,
    Variant::Tn,
    Variant::Nt,
    Variant::PortableTt,
    Variant::PortableNn,
    Variant::PortableNt,
    Variant::PortableTn,
];

fn to_t<T: Scalar>(x: &[f64]) -> Vec<T> {
    x.iter().map(|&v| T::of_f64(v)).collect()
}

fn to_f64<T: Scalar>(x: &[T]) -> Vec<f64> {
    x.iter().map(|v| v.as_f64()).collect()
}

/// Runs one product and returns the largest error divided by its allowed bound (must be <= 1).
fn worst_error_ratio<T: Scalar>(
    m: usize,
    k: usize,
    n: usize,
    variant: Variant,
    update: Update,
    seed: u64,
) -> f64 {
    // Stored operands: A is m x k (or k x m for Tn), B is k x n (or n x k for Nt).
    let a: Vec<T> = to_t(&seeded_matrix(m * k, seed));
    let b: Vec<T> = to_t(&seeded_matrix(k * n, seed + 1));
    let c0: Vec<T> = to_t(&seeded_matrix(m * n, seed + 2));
    let (a64, b64) = (to_f64(&a), to_f64(&b));
    let op_a = match variant {
        Variant::Tn | Variant::PortableTt | Variant::PortableTn => naive_transpose(k, m, &a64),
        _ => a64,
    };
    let op_b = match variant {
        Variant::Nt | Variant::PortableTt | Variant::PortableNt => naive_transpose(n, k, &b64),
        _ => b64,
    };
    let mut expected = naive_matmul(m, k, n, &op_a, &op_b);
    let mut scale = naive_abs_matmul(m, k, n, &op_a, &op_b);
    let mut c = c0.clone();
    if update == Update::Accumulate {
        for ((e, s), &c0) in expected.iter_mut().zip(scale.iter_mut()).zip(&c0) {
            *e += c0.as_f64();
            *s += c0.as_f64().abs();
        }
    }
    match variant {
        Variant::Nn => matmul(m, k, n, &a, &b, &mut c, update),
        Variant::Tn => matmul_tn(m, k, n, &a, &b, &mut c, update),
        Variant::Nt => matmul_nt(m, k, n, &a, &b, &mut c, update),
        Variant::PortableTt | Variant::PortableNn | Variant::PortableNt | Variant::PortableTn => {
            let op = |transposed: bool| if transposed { Transpose::Yes } else { Transpose::No };
            let (op_a, op_b) = match variant {
                Variant::PortableTt => (op(true), op(true)),
                Variant::PortableNn => (op(false), op(false)),
                Variant::PortableTn => (op(true), op(false)),
                _ => (op(false), op(true)),
            };
            let beta = if update == Update::Accumulate { T::one() } else { T::zero() };
            gemm_portable(m, k, n, T::one(), &a, op_a, &b, op_b, beta, &mut c)
        }
    }
    .unwrap();
    let gamma = (k as f64 + 2.0) * T::EPS.as_f64();
    c.iter()
        .zip(&expected)
        .zip(&scale)
        .map(|((got, want), s)| (got.as_f64() - want).abs() / (gamma * s + f64::MIN_POSITIVE))
        .fold(0.0, f64::max)
}

fn check_all_edge_shapes<T: Scalar>() {
    let mut seed = 10;
    for &m in &EDGE_SIZES {
        for &k in &EDGE_SIZES {
            for &n in &EDGE_SIZES {
                for variant in ALL_VARIANTS {
                    for update in [Update::Overwrite, Update::Accumulate] {
                        seed += 3;
                        let ratio = worst_error_ratio::<T>(m, k, n, variant, update, seed);
                        assert!(
                            ratio <= 1.0,
                            "{} {m}x{k}x{n} {variant:?} {update:?}: error/bound {ratio}",
                            T::NAME
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn gemm_wrappers_match_naive_on_edge_shapes_f64() {
    check_all_edge_shapes::<f64>();
}

#[test]
fn gemm_wrappers_match_naive_on_edge_shapes_f32() {
    check_all_edge_shapes::<f32>();
}

#[test]
fn overwrite_ignores_nan_in_output_and_accumulate_keeps_it() {
    let a = [1.0f64, 2.0, 3.0, 4.0];
    let mut c = [f64::NAN; 4];
    matmul(2, 2, 2, &a, &a, &mut c, Update::Overwrite).unwrap();
    assert_eq!(c, [7.0, 10.0, 15.0, 22.0]);
    c[1] = f64::NAN;
    matmul(2, 2, 2, &a, &a, &mut c, Update::Accumulate).unwrap();
    assert_eq!(c[0], 14.0);
    assert!(c[1].is_nan());
}

#[test]
fn inner_dimension_zero_gives_zero_or_keeps_c() {
    let mut c = [5.0f32; 6];
    matmul::<f32>(2, 0, 3, &[], &[], &mut c, Update::Accumulate).unwrap();
    assert_eq!(c, [5.0; 6]);
    matmul::<f32>(2, 0, 3, &[], &[], &mut c, Update::Overwrite).unwrap();
    assert_eq!(c, [0.0; 6]);
}

#[test]
fn general_gemm_applies_alpha_and_beta() {
    // C = 2 * A^T B^T + 3 C with A stored 2 x 1 (op(A) is 1 x 2), B stored 1 x 2 (op(B) is 2 x 1).
    let a = [1.0f64, 2.0];
    let b = [3.0f64, 4.0];
    let mut c = [1.0f64];
    gemm(1, 2, 1, 2.0, &a, Transpose::Yes, &b, Transpose::Yes, 3.0, &mut c).unwrap();
    assert_eq!(c, [2.0 * (3.0 + 8.0) + 3.0]);
}

#[test]
fn transpose_matches_naive_on_edge_shapes() {
    for &rows in &EDGE_SIZES {
        for &cols in &EDGE_SIZES {
            let a = seeded_matrix(rows * cols, (rows * 1000 + cols) as u64);
            let mut out = vec![0.0; rows * cols];
            transpose(rows, cols, &a, &mut out).unwrap();
            assert_eq!(out, naive_transpose(rows, cols, &a), "{rows}x{cols}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn gemm_wrappers_match_naive_on_random_shapes(
        m in 0usize..300, k in 0usize..300, n in 0usize..40, seed in 0u64..1000,
        variant in prop::sample::select(ALL_VARIANTS.to_vec()),
        accumulate in any::<bool>(),
    ) {
        let update = if accumulate { Update::Accumulate } else { Update::Overwrite };
        let ratio64 = worst_error_ratio::<f64>(m, k, n, variant, update, seed);
        prop_assert!(ratio64 <= 1.0, "f64 error/bound {}", ratio64);
        let ratio32 = worst_error_ratio::<f32>(m, k, n, variant, update, seed);
        prop_assert!(ratio32 <= 1.0, "f32 error/bound {}", ratio32);
    }
}
