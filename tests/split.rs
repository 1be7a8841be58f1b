//! Invariants of the routing/filtering split (`docs/math.md` section 1), dense and factored, in f64 and f32.

mod common;
use common::*;
use proptest::prelude::*;
use sd_attention::spectral::factored::{FactoredKernel, Part};
use sd_attention::split::{energies, filtering_in_place, routing_in_place, split, split_in_place, Energies};
use sd_attention::testing::strategies::square_matrix;

fn split_f64(m: usize, mat: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let (mut s, mut d) = (vec![0.0; m * m], vec![0.0; m * m]);
    split(m, mat, &mut s, &mut d).unwrap();
    (s, d)
}

/// Checks every identity of the split of one matrix.
fn check_split_identities(m: usize, mat: &[f64]) -> Result<(), TestCaseError> {
    let (s, d) = split_f64(m, mat);
    for i in 0..m {
        prop_assert_eq!(s[i * m + i], 0.0);
        for j in 0..m {
            // S^T = -S and D^T = D hold exactly, by construction.
            prop_assert_eq!(s[j * m + i], -s[i * m + j]);
            prop_assert_eq!(d[j * m + i], d[i * m + j]);
            // S + D = M up to one rounding of each half-sum.
            let (a, b) = (mat[i * m + j], mat[j * m + i]);
            prop_assert!((s[i * m + j] + d[i * m + j] - a).abs() <= 2.0 * f64::EPSILON * (a.abs() + b.abs()));
        }
    }
    // Against the naive formulas.
    let (s_ref, d_ref) = naive_split(m, mat);
    prop_assert_eq!(&s, &s_ref);
    prop_assert_eq!(&d, &d_ref);
    // Energy identity ||S||^2 + ||D||^2 = ||M||^2: sums of m^2 nonnegative terms, relative error
    // at most m^2 eps each.
    let e = energies(m, mat).unwrap();
    let total = naive_sq_norm(mat);
    let bound = (m * m + 4) as f64 * f64::EPSILON;
    prop_assert!((e.total() - total).abs() <= bound * total);
    prop_assert!((e.routing - naive_sq_norm(&s)).abs() <= bound * e.routing);
    prop_assert!((e.filtering - naive_sq_norm(&d)).abs() <= bound * e.filtering);
    // <S, D>_F = 0 up to rounding.
    let inner: f64 = s.iter().zip(&d).map(|(a, b)| a * b).sum();
    prop_assert!(inner.abs() <= bound * total);
    // In-place variants give bit-identical parts.
    let mut in_place = mat.to_vec();
    let mut d_in_place = vec![0.0; m * m];
    split_in_place(m, &mut in_place, &mut d_in_place).unwrap();
    prop_assert_eq!(&in_place, &s);
    prop_assert_eq!(&d_in_place, &d);
    let mut only_s = mat.to_vec();
    routing_in_place(m, &mut only_s).unwrap();
    prop_assert_eq!(&only_s, &s);
    let mut only_d = mat.to_vec();
    filtering_in_place(m, &mut only_d).unwrap();
    prop_assert_eq!(&only_d, &d);
    Ok(())
}

#[test]
fn split_identities_on_edge_sizes() {
    for &m in &EDGE_SIZES {
        check_split_identities(m, &seeded_matrix(m * m, m as u64)).unwrap();
    }
}

proptest! {
    #[test]
    fn split_identities_on_random_matrices(mat in square_matrix::<f64>(0..80, 1.0)) {
        check_split_identities(mat.rows, &mat.data)?;
    }

    #[test]
    fn split_f32_agrees_with_f64(mat in square_matrix::<f32>(0..70, 1.0)) {
        let (m, mat32) = (mat.rows, mat.data);
        let mat64 = widen(&mat32);
        let (s64, d64) = split_f64(m, &mat64);
        let (mut s32, mut d32) = (vec![0.0f32; m * m], vec![0.0f32; m * m]);
        split(m, &mat32, &mut s32, &mut d32).unwrap();
        for i in 0..m * m {
            let (row, col) = (i / m, i % m);
            let scale = mat64[row * m + col].abs() + mat64[col * m + row].abs();
            prop_assert!((s32[i] as f64 - s64[i]).abs() <= f32::EPSILON as f64 * scale);
            prop_assert!((d32[i] as f64 - d64[i]).abs() <= f32::EPSILON as f64 * scale);
        }
        let e32 = energies(m, &mat32).unwrap();
        let e64 = energies(m, &mat64).unwrap();
        let bound = (m * m + 4) as f64 * f32::EPSILON as f64;
        prop_assert!((e32.routing as f64 - e64.routing).abs() <= bound * e64.routing);
        prop_assert!((e32.filtering as f64 - e64.filtering).abs() <= bound * e64.filtering);
    }

    #[test]
    fn factored_energies_equal_dense_ones(
        d_model in 1usize..70, d_head in 0usize..20, seed in 0u64..10_000,
    ) {
        let w_q = seeded_matrix(d_model * d_head, seed);
        let w_k = seeded_matrix(d_model * d_head, seed + 1);
        let head = FactoredKernel::new(d_model, d_head, &w_q, &w_k).unwrap();
        let mut workspace = vec![0.0; head.energies_workspace_len()];
        let factored = head.energies(&mut workspace).unwrap();
        let dense_m = naive_matmul(d_model, d_head, d_model, &w_q, &naive_transpose(d_model, d_head, &w_k));
        let dense = energies(d_model, &dense_m).unwrap();
        // Gram products of length d_model, then a length-d_head^2 inner product: absolute error
        // within (2 d_model + d_head^2 + 8) eps ||W_Q||^2 ||W_K||^2.
        let bound = (2 * d_model + d_head * d_head + 8) as f64 * f64::EPSILON
            * naive_sq_norm(&w_q) * naive_sq_norm(&w_k);
        prop_assert!((factored.routing - dense.routing).abs() <= bound);
        prop_assert!((factored.filtering - dense.filtering).abs() <= bound);
        prop_assert!(factored.routing >= 0.0 && factored.filtering >= 0.0);
    }

    #[test]
    fn matrix_free_products_equal_dense_ones(
        d_model in 1usize..60, d_head in 0usize..12, seed in 0u64..10_000,
    ) {
        let w_q = seeded_matrix(d_model * d_head, seed);
        let w_k = seeded_matrix(d_model * d_head, seed + 1);
        let x = seeded_matrix(d_model, seed + 2);
        let head = FactoredKernel::new(d_model, d_head, &w_q, &w_k).unwrap();
        let dense_m = naive_matmul(d_model, d_head, d_model, &w_q, &naive_transpose(d_model, d_head, &w_k));
        let (s_ref, d_ref) = naive_split(d_model, &dense_m);
        let m_t = naive_transpose(d_model, d_model, &dense_m);
        let mut workspace = vec![0.0; head.apply_workspace_len()];
        let mut dense = vec![0.0; d_model * d_model];
        for (part, reference) in [(Part::Kernel, &dense_m), (Part::KernelTransposed, &m_t), (Part::Routing, &s_ref), (Part::Filtering, &d_ref)] {
            let want = naive_matmul(d_model, d_model, 1, reference, &x);
            let mut got = vec![0.0; d_model];
            head.apply(part, &x, &mut got, &mut workspace).unwrap();
            let scale: f64 = w_q.iter().chain(&w_k).map(|v| v.abs()).fold(0.0, f64::max).powi(2) * (d_head * d_model) as f64 * 2.0;
            for (g, w) in got.iter().zip(&want) {
                prop_assert!((g - w).abs() <= 4.0 * (d_model + d_head) as f64 * f64::EPSILON * scale, "{:?}: {} vs {}", part, g, w);
            }
            head.to_dense(part, &mut dense).unwrap();
            for (g, w) in dense.iter().zip(reference.iter()) {
                prop_assert!((g - w).abs() <= 4.0 * (d_head + 1) as f64 * f64::EPSILON * scale);
            }
        }
    }
}

#[test]
fn rotation_plane_is_pure_routing_and_shear_is_half() {
    // M = [[0, -1], [1, 0]]: a rotation generator, all routing.
    let e = energies(2, &[0.0f64, -1.0, 1.0, 0.0]).unwrap();
    assert_eq!(e, Energies { routing: 2.0, filtering: 0.0 });
    assert_eq!(e.routing_fraction(), 1.0);
    // The zero kernel routes nothing: rho is defined as 0.
    let zero = energies(3, &[0.0f32; 9]).unwrap();
    assert_eq!(zero.routing_fraction(), 0.0);
    assert_eq!(energies::<f64>(0, &[]).unwrap().routing_fraction(), 0.0);
    // NaN propagates into the energies and rho.
    let nan = energies(2, &[f64::NAN, 0.0, 0.0, 1.0]).unwrap();
    assert!(nan.filtering.is_nan() && nan.routing_fraction().is_nan());
}
