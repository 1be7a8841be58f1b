//! What a downstream crate writes to property-test its own S-D head with this crate's checkers
//! and strategies (feature `proptest`). Kept short on purpose: it is the README's example.

use proptest::prelude::*;
use sd_attention::testing::check::{skew_deviation, symmetry_deviation, tolerance_for};
use sd_attention::testing::strategies::sd_factors;

/// The user's code under test: dense `S = U V^T - V U^T` and `D = -C C^T` (d x d).
fn my_kernel_parts(d: usize, r: usize, q: usize, u: &[f64], v: &[f64], c: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let (mut s, mut dd) = (vec![0.0; d * d], vec![0.0; d * d]);
    for i in 0..d {
        for j in 0..d {
            s[i * d + j] = (0..r).map(|k| u[i * r + k] * v[j * r + k] - v[i * r + k] * u[j * r + k]).sum();
            dd[i * d + j] = -(0..q).map(|k| c[i * q + k] * c[j * q + k]).sum::<f64>();
        }
    }
    (s, dd)
}

proptest! {
    #[test]
    fn my_head_keeps_routing_skew_and_filtering_symmetric(f in sd_factors::<f64>(1..48, 0..6, 0..6)) {
        let (s, d) = my_kernel_parts(f.d, f.routing_rank, f.filtering_rank, &f.u, &f.v, &f.c);
        let norm = |x: &[f64]| x.iter().map(|v| v * v).sum::<f64>().sqrt();
        let routing_tol = tolerance_for(2 * f.routing_rank, norm(&f.u) * norm(&f.v));
        prop_assert!(skew_deviation(f.d, &s).unwrap() <= routing_tol);
        prop_assert!(symmetry_deviation(f.d, &d).unwrap() <= tolerance_for(f.filtering_rank, norm(&f.c).powi(2)));
    }
}
