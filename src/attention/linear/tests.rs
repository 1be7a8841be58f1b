//! Every instruction-set variant of the chunked kernels and of the recurrent step, called
//! directly (the public entry points reach only the widest one), against the naive f64 reference
//! of the integration tests, within the same derived bounds, in `f64` and `f32`; and the NaN
//! causality of the masked products in each variant.

use super::chunked::{self, Grads, Inputs, Pass};
use super::LinearAttention;
use crate::arch::Isa as Variant;
use crate::attention::Causality;
use crate::rng::SplitMix64;
use crate::Scalar;
use std::vec;
use std::vec::Vec;

#[path = "../../../tests/common/linear.rs"]
#[allow(dead_code)]
mod naive;

use naive::{
    backward_tolerance, forward_tolerance, naive_linear_attention, naive_linear_attention_backward,
    worst_ratio,
};

fn forward<T: Scalar>(
    variant: Variant,
    att: &LinearAttention<T>,
    n: usize,
    q: &[T],
    k: &[T],
    v: &[T],
) -> Vec<T> {
    let mut out = vec![T::nan(); n * att.n_heads * att.d_v];
    let mut workspace = vec![T::nan(); att.forward_workspace_len(n)];
    let geometry = att.geometry(n);
    for head in 0..att.n_heads {
        let pass = Pass { geometry: &geometry, head, causality: att.causality };
        chunked::forward_head(variant, &pass, att.eps, q, k, v, &mut out, &mut workspace).unwrap();
    }
    out
}

type Gradients<T> = (Vec<T>, Vec<T>, Vec<T>);

fn backward<T: Scalar>(
    variant: Variant,
    att: &LinearAttention<T>,
    n: usize,
    inputs: [&[T]; 4],
) -> Gradients<T> {
    let [q, k, v, d_out] = inputs;
    let (mut d_q, mut d_k, mut d_v) =
        (vec![T::nan(); q.len()], vec![T::nan(); k.len()], vec![T::nan(); v.len()]);
    let mut workspace = vec![T::nan(); att.backward_workspace_len(n)];
    let geometry = att.geometry(n);
    let x = Inputs { q, k, v, d_out };
    let mut grads = Grads { d_q: &mut d_q, d_k: &mut d_k, d_v: &mut d_v };
    for head in 0..att.n_heads {
        let pass = Pass { geometry: &geometry, head, causality: att.causality };
        chunked::backward_head(variant, &pass, att.eps, &x, &mut grads, &mut workspace).unwrap();
    }
    (d_q, d_k, d_v)
}

fn input(len: usize, rng: &mut SplitMix64, scale: f64) -> Vec<f64> {
    (0..len).map(|_| rng.uniform(-scale, scale)).collect()
}

fn narrow(x: &[f64]) -> Vec<f32> {
    x.iter().map(|&v| v as f32).collect()
}

fn widen(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// Shapes `(n, d_k, d_v, chunk)`: n 1 and 2, odd and prime, below, equal to and above a chunk
/// (including a ragged last chunk), d 1, odd, prime and 64, chunks 1, 7, 16, 64 and longer than n;
/// with row blocks of 8, 6 and 4 and panels up to 32 wide, every partial block and panel occurs.
const SHAPES: [(usize, usize, usize, usize); 12] = [
    (1, 1, 1, 64),
    (2, 3, 2, 1),
    (7, 5, 3, 7),
    (13, 1, 1, 4),
    (31, 8, 9, 16),
    (64, 64, 64, 64),
    (67, 17, 13, 64),
    (97, 16, 8, 64),
    (130, 64, 64, 64),
    (131, 33, 31, 37),
    (150, 24, 40, 100),
    (200, 64, 64, 64),
];

/// Forward and backward of every variant, f64 and f32, causal and not, against the naive f64
/// reference within the derived bounds of `tests/common/linear.rs`.
#[test]
fn every_variant_matches_the_naive_reference() {
    let mut rng = SplitMix64::new(17);
    let variants = crate::arch::available().collect::<Vec<_>>();
    std::eprintln!("variants: {variants:?}");
    for &(n, d_k, d_v, chunk) in &SHAPES {
        for causal in [true, false] {
            let causality = if causal { Causality::Causal } else { Causality::Bidirectional };
            let (q, k) = (input(n * d_k, &mut rng, 2.0), input(n * d_k, &mut rng, 2.0));
            let (v, d_out) = (input(n * d_v, &mut rng, 1.0), input(n * d_v, &mut rng, 1.0));
            // f32 inputs are the f64 ones rounded; the reference runs on the rounded values.
            let (q32, k32, v32, d32) = (narrow(&q), narrow(&k), narrow(&v), narrow(&d_out));
            let (qr, kr, vr, dr) = (widen(&q32), widen(&k32), widen(&v32), widen(&d32));
            let expected = naive_linear_attention(n, d_k, d_v, causal, 1e-6, &q, &k, &v);
            let expected32 = naive_linear_attention(n, d_k, d_v, causal, 1e-6, &qr, &kr, &vr);
            let grads = naive_linear_attention_backward(n, d_k, d_v, causal, 1e-6, &q, &k, &v, &d_out, false);
            let scale = naive_linear_attention_backward(n, d_k, d_v, causal, 1e-6, &q, &k, &v, &d_out, true);
            let grads32 =
                naive_linear_attention_backward(n, d_k, d_v, causal, 1e-6, &qr, &kr, &vr, &dr, false);
            let scale32 =
                naive_linear_attention_backward(n, d_k, d_v, causal, 1e-6, &qr, &kr, &vr, &dr, true);
            let att = LinearAttention::<f64>::new(d_k, d_v, causality).with_chunk(chunk);
            let att32 = LinearAttention::<f32>::new(d_k, d_v, causality).with_chunk(chunk);
            for &variant in &variants {
                let what =
                    std::format!("{variant:?} n {n} d_k {d_k} d_v {d_v} chunk {chunk} causal {causal}");
                let out = forward(variant, &att, n, &q, &k, &v);
                let tol = forward_tolerance(n, d_k, d_v, &v, &expected, f64::EPSILON);
                assert!(worst_ratio(&out, &expected, &tol) <= 1.0, "f64 forward {what}");
                let out32 = widen(&forward(variant, &att32, n, &q32, &k32, &v32));
                let tol = forward_tolerance(n, d_k, d_v, &vr, &expected32, f32::EPSILON as f64);
                assert!(worst_ratio(&out32, &expected32, &tol) <= 1.0, "f32 forward {what}");
                let got = backward(variant, &att, n, [&q, &k, &v, &d_out]);
                let got32 = backward(variant, &att32, n, [&q32, &k32, &v32, &d32]);
                for (index, (ours, ours32)) in
                    [(&got.0, &got32.0), (&got.1, &got32.1), (&got.2, &got32.2)].into_iter().enumerate()
                {
                    let (reference, magnitude) =
                        ([&grads.0, &grads.1, &grads.2][index], [&scale.0, &scale.1, &scale.2][index]);
                    let tol = backward_tolerance(n, d_k, d_v, magnitude, f64::EPSILON);
                    assert!(worst_ratio(ours, reference, &tol) <= 1.0, "f64 backward {index} {what}");
                    let (reference, magnitude) = (
                        [&grads32.0, &grads32.1, &grads32.2][index],
                        [&scale32.0, &scale32.1, &scale32.2][index],
                    );
                    let tol = backward_tolerance(n, d_k, d_v, magnitude, f32::EPSILON as f64);
                    assert!(
                        worst_ratio(&widen(ours32), reference, &tol) <= 1.0,
                        "f32 backward {index} {what}"
                    );
                }
            }
        }
    }
}

/// In every variant, a NaN or infinity in a later token's key, value or output gradient never
/// reaches an earlier row (the masked products zero by select and fall back to exact sums when
/// a chunk holds non-finite values), and does reach the rows that see it.
#[test]
fn every_variant_keeps_non_finite_values_causal() {
    let (n, d, chunk) = (70, 8, 64);
    let mut rng = SplitMix64::new(5);
    let (q, k, v, d_out) = (
        input(n * d, &mut rng, 2.0),
        input(n * d, &mut rng, 2.0),
        input(n * d, &mut rng, 1.0),
        input(n * d, &mut rng, 1.0),
    );
    let att = LinearAttention::<f32>::new(d, d, Causality::Causal).with_chunk(chunk);
    let row_bad = |x: &[f32], i: usize| x[i * d..(i + 1) * d].iter().any(|v| !v.is_finite());
    for &variant in &crate::arch::available().collect::<Vec<_>>() {
        for bad in [f32::NAN, f32::INFINITY] {
            for (which, token) in
                [(0usize, 9usize), (1, 9), (2, 9), (0, 66), (1, 66), (2, 66), (3, 40), (3, 3)]
            {
                let mut x = [narrow(&q), narrow(&k), narrow(&v), narrow(&d_out)];
                x[which][token * d + 2] = bad;
                let what = std::format!("{variant:?} input {which} token {token} value {bad}");
                let out = forward(variant, &att, n, &x[0], &x[1], &x[2]);
                let (d_q, d_k, d_v) = backward(variant, &att, n, [&x[0], &x[1], &x[2], &x[3]]);
                for i in 0..n {
                    match which {
                        // q_t reaches out_t and dQ_t, and dK_j, dV_j for j <= t only.
                        0 => {
                            assert!(!row_bad(&out, i) || i == token, "{what}: out row {i}");
                            assert!(!row_bad(&d_q, i) || i == token, "{what}: dQ row {i}");
                            assert!(!row_bad(&d_k, i) || i <= token, "{what}: dK row {i}");
                            assert!(!row_bad(&d_v, i) || i <= token, "{what}: dV row {i}");
                        }
                        // k_t, v_t reach out_i and dQ_i for i >= t only (a NaN reaches all of them).
                        1 | 2 => {
                            assert!(!row_bad(&out, i) || i >= token, "{what}: out row {i}");
                            assert!(!row_bad(&d_q, i) || i >= token, "{what}: dQ row {i}");
                            if bad.is_nan() {
                                assert_eq!(row_bad(&out, i), i >= token, "{what}: out row {i}");
                            }
                        }
                        // dO_t reaches dQ_t, and dK_j, dV_j for j <= t only.
                        _ => {
                            assert!(!row_bad(&out, i), "{what}: out row {i}");
                            assert!(!row_bad(&d_q, i) || i == token, "{what}: dQ row {i}");
                            assert!(!row_bad(&d_k, i) || i <= token, "{what}: dK row {i}");
                            assert!(!row_bad(&d_v, i) || i <= token, "{what}: dV row {i}");
                        }
                    }
                }
                if which == 3 && bad.is_nan() {
                    assert!(
                        row_bad(&d_q, token) && row_bad(&d_v, 0) && row_bad(&d_k, 0),
                        "{what}: reaches its rows"
                    );
                }
            }
        }
    }
}

/// The recurrent step of every variant against the naive causal reference, f64 and f32.
#[test]
fn every_variant_steps_like_the_naive_reference() {
    let mut rng = SplitMix64::new(9);
    for (n, d_k, d_v) in [(1, 1, 1), (5, 3, 7), (40, 64, 64), (23, 65, 33), (9, 130, 17)] {
        let (q, k, v) =
            (input(n * d_k, &mut rng, 2.0), input(n * d_k, &mut rng, 2.0), input(n * d_v, &mut rng, 1.0));
        let (q32, k32, v32) = (narrow(&q), narrow(&k), narrow(&v));
        let expected = naive_linear_attention(n, d_k, d_v, true, 1e-6, &q, &k, &v);
        let (qr, kr, vr) = (widen(&q32), widen(&k32), widen(&v32));
        let expected32 = naive_linear_attention(n, d_k, d_v, true, 1e-6, &qr, &kr, &vr);
        for &variant in &crate::arch::available().collect::<Vec<_>>() {
            let out = stream(variant, d_k, d_v, n, &q, &k, &v);
            let tol = forward_tolerance(n, d_k, d_v, &v, &expected, f64::EPSILON);
            assert!(worst_ratio(&out, &expected, &tol) <= 1.0, "{variant:?} f64 n {n} d_k {d_k}");
            let out32 = widen(&stream(variant, d_k, d_v, n, &q32, &k32, &v32));
            let tol = forward_tolerance(n, d_k, d_v, &vr, &expected32, f32::EPSILON as f64);
            assert!(worst_ratio(&out32, &expected32, &tol) <= 1.0, "{variant:?} f32 n {n} d_k {d_k}");
        }
    }
}

fn stream<T: Scalar>(
    variant: Variant,
    d_k: usize,
    d_v: usize,
    n: usize,
    q: &[T],
    k: &[T],
    v: &[T],
) -> Vec<T> {
    let (mut s, mut z) = (vec![T::zero(); d_k * d_v], vec![T::zero(); d_k]);
    let mut out = vec![T::nan(); n * d_v];
    for i in 0..n {
        let (qi, ki, vi) =
            (&q[i * d_k..(i + 1) * d_k], &k[i * d_k..(i + 1) * d_k], &v[i * d_v..(i + 1) * d_v]);
        super::recurrent::step_with(
            variant,
            &mut s,
            &mut z,
            qi,
            ki,
            vi,
            T::of_f64(1e-6),
            &mut out[i * d_v..(i + 1) * d_v],
        );
    }
    out
}
