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
use sd_attention::linalg::dense::{
    gemm, gemm_portable, matmul, matmul_nt, matmul_strided, matmul_tn, transpose, Transpose, Update,
};
use sd_attention::Error;
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
    /// `A B` through `matmul_strided` (register blocks, no packing), leading dimensions = widths.
    Strided,
}

const ALL_VARIANTS: [Variant; 8] = [
    Variant::Nn,
    Variant::Tn,
    Variant::Nt,
    Variant::PortableTt,
    Variant::PortableNn,
    Variant::PortableNt,
    Variant::PortableTn,
    Variant::Strided,
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
        Variant::Strided => matmul_strided(m, k, n, T::one(), &a, k, &b, n, &mut c, n, update),
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
    // Empty matrices with a huge other dimension return at once (fuzz regression: this spun through
    // usize::MAX / 3 empty rows).
    let mut empty: [f64; 0] = [];
    transpose(usize::MAX / 3, 0, &[], &mut empty).unwrap();
    transpose(0, usize::MAX / 3, &[], &mut empty).unwrap();
}

/// Sub-matrices of larger storage: `matmul_strided` on a block of `A`, `B` and `C` with leading
/// dimensions beyond the row lengths equals the naive product of the copied-out blocks (within the
/// dot-product bound), `alpha` included, and leaves every entry of `C` outside the block as it was.
#[test]
fn strided_products_touch_only_their_block() {
    let mut seed = 500;
    for &(m, k, n) in &[(1usize, 1usize, 1usize), (7, 13, 5), (9, 64, 33), (17, 3, 70), (40, 129, 16)] {
        seed += 7;
        let (lda, ldb, ldc) = (k + 3, n + 5, n + 2);
        let a = seeded_matrix((m + 1) * lda, seed);
        let b = seeded_matrix((k + 1) * ldb, seed + 1);
        let c0 = seeded_matrix((m + 1) * ldc, seed + 2);
        // The blocks start at row 1, column 2 of A; row 1, column 1 of B; row 1, column 1 of C.
        let (a_off, b_off, c_off) = (lda + 2, ldb + 1, ldc + 1);
        let a_blk: Vec<f64> = (0..m).flat_map(|i| a[a_off + i * lda..a_off + i * lda + k].to_vec()).collect();
        let b_blk: Vec<f64> = (0..k).flat_map(|p| b[b_off + p * ldb..b_off + p * ldb + n].to_vec()).collect();
        let product = naive_matmul(m, k, n, &a_blk, &b_blk);
        let magnitude = naive_abs_matmul(m, k, n, &a_blk, &b_blk);
        let mut c = c0.clone();
        matmul_strided(
            m,
            k,
            n,
            -0.5,
            &a[a_off..],
            lda,
            &b[b_off..],
            ldb,
            &mut c[c_off..],
            ldc,
            Update::Accumulate,
        )
        .unwrap();
        for (at, (&got, &old)) in c.iter().zip(&c0).enumerate() {
            let relative = at as isize - c_off as isize;
            let (row, col) = (relative.div_euclid(ldc as isize), relative.rem_euclid(ldc as isize) as usize);
            if row >= 0 && (row as usize) < m && col < n {
                let idx = row as usize * n + col;
                let want = old - 0.5 * product[idx];
                let bound = (k as f64 + 2.0) * f64::EPSILON * (0.5 * magnitude[idx] + old.abs());
                assert!((got - want).abs() <= bound, "{m}x{k}x{n} ({row}, {col}): {got} vs {want}");
            } else {
                assert_eq!(got, old, "{m}x{k}x{n}: entry {at} outside the block changed");
            }
        }
    }
}

/// Leading dimensions below the row lengths and slices shorter than `(rows - 1) ld + cols` are
/// named errors; exactly that minimum is accepted; empty operands are fine where nothing is read.
#[test]
fn strided_products_reject_bad_shapes() {
    let (a, b) = ([1.0f64; 12], [1.0f64; 12]);
    let mut c = [0.0f64; 12];
    let bad_ld = |what| Error::InvalidParameter { what, expected: "" };
    let same_kind = |got: Error, want: Error| match (got, want) {
        (Error::InvalidParameter { what: w1, .. }, Error::InvalidParameter { what: w2, .. }) => w1 == w2,
        (got, want) => got == want,
    };
    // (m, k, n, lda, ldb, ldc, length of a, length of c, the error).
    type Case = (usize, usize, usize, usize, usize, usize, usize, usize, Error);
    let cases: [Case; 5] = [
        (2, 3, 2, 2, 2, 2, 12, 12, bad_ld("lda")),
        (2, 3, 2, 3, 1, 2, 12, 12, bad_ld("ldb")),
        (2, 3, 2, 3, 2, 1, 12, 12, bad_ld("ldc")),
        (2, 3, 2, 5, 2, 2, 7, 12, Error::ShapeMismatch { what: "a", expected: 8, got: 7 }),
        (2, 3, 2, 3, 4, 4, 12, 5, Error::ShapeMismatch { what: "c", expected: 6, got: 5 }),
    ];
    for (m, k, n, lda, ldb, ldc, a_len, c_len, want) in cases {
        let got =
            matmul_strided(m, k, n, 1.0, &a[..a_len], lda, &b, ldb, &mut c[..c_len], ldc, Update::Overwrite)
                .unwrap_err();
        assert!(same_kind(got, want), "{got:?} vs {want:?}");
    }
    // (rows - 1) ld + cols exactly: 2 x 3 A with lda 5 needs 8; B 3 x 2 with ldb 4 needs 10.
    matmul_strided(2, 3, 2, 1.0, &a[..8], 5, &b[..10], 4, &mut c[..6], 4, Update::Overwrite).unwrap();
    assert_eq!(c[..6], [3.0, 3.0, 0.0, 0.0, 3.0, 3.0]);
    matmul_strided::<f64>(0, 3, 2, 1.0, &[], 3, &[], 2, &mut [], 2, Update::Overwrite).unwrap();
    matmul_strided::<f64>(2, 0, 2, 1.0, &[], 0, &[], 2, &mut c[..4], 2, Update::Overwrite).unwrap();
    assert_eq!(c[..4], [0.0; 4]);
}

proptest! {
    #![proptest_config(common::proptest_config(64))]

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
