//! ELU+1 linear attention (`docs/math.md` section 6) against the naive f64 references of
//! tests/common/linear.rs: forward on random shapes, causal == chunked (every chunk size) ==
//! recurrent, backward against the materialized chain rule and against central finite differences,
//! f32 against f64 within derived bounds, multi-head packing, NaN/infinity, and errors.

mod common;

use common::linear::{
    backward_tolerance, forward_tolerance, naive_linear_attention, naive_linear_attention_backward,
    worst_ratio,
};
use common::{narrow, seeded_matrix, widen};
use proptest::prelude::*;
use sd_attention::attention::linear::{phi, phi_derivative, LinearAttention, State};
use sd_attention::attention::Causality;
use sd_attention::testing::strategies::{attention_inputs, AttentionInputs};
use sd_attention::{Error, Scalar};

fn causality(causal: bool) -> Causality {
    if causal {
        Causality::Causal
    } else {
        Causality::Bidirectional
    }
}

/// Inputs in [-scale, scale): both branches of `phi` are exercised.
fn input(len: usize, seed: u64, scale: f64) -> Vec<f64> {
    seeded_matrix(len, seed).into_iter().map(|x| x * scale).collect()
}

fn forward<T: Scalar>(att: &LinearAttention<T>, n: usize, q: &[T], k: &[T], v: &[T]) -> Vec<T> {
    let mut out = vec![T::zero(); n * att.n_heads * att.d_v];
    let mut workspace = vec![T::zero(); att.forward_workspace_len(n)];
    att.forward(n, q, k, v, &mut out, &mut workspace).unwrap();
    out
}

type Grads<T> = (Vec<T>, Vec<T>, Vec<T>);

fn backward<T: Scalar>(
    att: &LinearAttention<T>,
    n: usize,
    q: &[T],
    k: &[T],
    v: &[T],
    d_out: &[T],
) -> Grads<T> {
    let (mut d_q, mut d_k, mut d_v) =
        (vec![T::nan(); q.len()], vec![T::nan(); k.len()], vec![T::nan(); v.len()]);
    let mut workspace = vec![T::nan(); att.backward_workspace_len(n)];
    att.backward(n, q, k, v, d_out, &mut d_q, &mut d_k, &mut d_v, &mut workspace).unwrap();
    (d_q, d_k, d_v)
}

/// Outputs of the recurrent form, token by token.
fn stream(d_k: usize, d_v: usize, eps: f64, n: usize, q: &[f64], k: &[f64], v: &[f64]) -> Vec<f64> {
    let (mut s, mut z) = (vec![f64::NAN; d_k * d_v], vec![f64::NAN; d_k]);
    let mut state = State::new(d_k, d_v, &mut s, &mut z).unwrap();
    let mut out = vec![0.0; n * d_v];
    for i in 0..n {
        let (qi, ki, vi) =
            (&q[i * d_k..(i + 1) * d_k], &k[i * d_k..(i + 1) * d_k], &v[i * d_v..(i + 1) * d_v]);
        state.step(qi, ki, vi, eps, &mut out[i * d_v..(i + 1) * d_v]).unwrap();
    }
    out
}

fn max_abs(x: &[f64]) -> f64 {
    x.iter().fold(0.0, |m, v| m.max(v.abs()))
}

proptest! {
    #![proptest_config(common::proptest_config(48))]

    /// Forward == naive f64 on random shapes, n in 1..300, d in 1..96, any chunk.
    #[test]
    fn forward_matches_naive(
        inputs in attention_inputs::<f64>(1..300, 1..96, 2.0), chunk in 1usize..80, causal in any::<bool>(),
    ) {
        let AttentionInputs { n, d_k, d_v, q, k, v } = inputs;
        let att = LinearAttention::new(d_k, d_v, causality(causal)).with_chunk(chunk);
        let out = forward(&att, n, &q, &k, &v);
        let expected = naive_linear_attention(n, d_k, d_v, causal, 1e-6, &q, &k, &v);
        let tol = forward_tolerance(n, d_k, d_v, &v, &expected, f64::EPSILON);
        prop_assert!(worst_ratio(&out, &expected, &tol) <= 1.0);
    }

    /// Causal: chunked with every chunk size 1..=n+1 == recurrent == naive, forward; and the
    /// backward of every chunk size agrees with the naive chain rule.
    #[test]
    fn causal_chunked_equals_recurrent_for_every_chunk(
        n in 1usize..40, d_k in 1usize..9, d_v in 1usize..9, seed in any::<u64>(),
    ) {
        let (q, k, v) = (input(n * d_k, seed, 2.0), input(n * d_k, seed ^ 1, 2.0), input(n * d_v, seed ^ 2, 1.0));
        let d_out = input(n * d_v, seed ^ 3, 1.0);
        let expected = naive_linear_attention(n, d_k, d_v, true, 1e-6, &q, &k, &v);
        let tol = forward_tolerance(n, d_k, d_v, &v, &expected, f64::EPSILON);
        let streamed = stream(d_k, d_v, 1e-6, n, &q, &k, &v);
        prop_assert!(worst_ratio(&streamed, &expected, &tol) <= 1.0);
        let (eq, ek, ev) = naive_linear_attention_backward(n, d_k, d_v, true, 1e-6, &q, &k, &v, &d_out, false);
        let (sq, sk, sv) = naive_linear_attention_backward(n, d_k, d_v, true, 1e-6, &q, &k, &v, &d_out, true);
        for chunk in 1..=n + 1 {
            let att = LinearAttention::new(d_k, d_v, Causality::Causal).with_chunk(chunk);
            let out = forward(&att, n, &q, &k, &v);
            prop_assert!(worst_ratio(&out, &streamed, &tol) <= 1.0, "chunk {}", chunk);
            let (gq, gk, gv) = backward(&att, n, &q, &k, &v, &d_out);
            prop_assert!(worst_ratio(&gq, &eq, &backward_tolerance(n, d_k, d_v, &sq, f64::EPSILON)) <= 1.0);
            prop_assert!(worst_ratio(&gk, &ek, &backward_tolerance(n, d_k, d_v, &sk, f64::EPSILON)) <= 1.0);
            prop_assert!(worst_ratio(&gv, &ev, &backward_tolerance(n, d_k, d_v, &sv, f64::EPSILON)) <= 1.0);
        }
    }

    /// Backward == materialized chain rule on random shapes, causal and not.
    #[test]
    fn backward_matches_naive(
        n in 1usize..120, d_k in 1usize..40, d_v in 1usize..40, chunk in 1usize..70,
        causal in any::<bool>(), seed in any::<u64>(),
    ) {
        let (q, k, v) = (input(n * d_k, seed, 2.0), input(n * d_k, seed ^ 1, 2.0), input(n * d_v, seed ^ 2, 1.0));
        let d_out = input(n * d_v, seed ^ 3, 1.0);
        let att = LinearAttention::new(d_k, d_v, causality(causal)).with_chunk(chunk);
        let (gq, gk, gv) = backward(&att, n, &q, &k, &v, &d_out);
        let (eq, ek, ev) = naive_linear_attention_backward(n, d_k, d_v, causal, 1e-6, &q, &k, &v, &d_out, false);
        let (sq, sk, sv) = naive_linear_attention_backward(n, d_k, d_v, causal, 1e-6, &q, &k, &v, &d_out, true);
        prop_assert!(worst_ratio(&gq, &eq, &backward_tolerance(n, d_k, d_v, &sq, f64::EPSILON)) <= 1.0);
        prop_assert!(worst_ratio(&gk, &ek, &backward_tolerance(n, d_k, d_v, &sk, f64::EPSILON)) <= 1.0);
        prop_assert!(worst_ratio(&gv, &ev, &backward_tolerance(n, d_k, d_v, &sv, f64::EPSILON)) <= 1.0);
    }
}

/// Fixed edge shapes: n = 1, primes, n not a multiple of the chunk, n below and above the chunk,
/// d = 1, and the largest tested sizes.
#[test]
fn forward_edge_shapes() {
    let shapes = [
        (1, 1, 1, 64),
        (1, 7, 3, 1),
        (2, 1, 1, 1),
        (97, 13, 11, 64),
        (257, 96, 95, 64),
        (299, 31, 7, 17),
        (128, 64, 64, 64),
        (65, 5, 3, 64),
    ];
    for (seed, &(n, d_k, d_v, chunk)) in shapes.iter().enumerate() {
        for causal in [true, false] {
            let seed = seed as u64 * 10;
            let (q, k, v) =
                (input(n * d_k, seed, 2.0), input(n * d_k, seed + 1, 2.0), input(n * d_v, seed + 2, 1.0));
            let att = LinearAttention::new(d_k, d_v, causality(causal)).with_chunk(chunk);
            let out = forward(&att, n, &q, &k, &v);
            let expected = naive_linear_attention(n, d_k, d_v, causal, 1e-6, &q, &k, &v);
            let tol = forward_tolerance(n, d_k, d_v, &v, &expected, f64::EPSILON);
            let ratio = worst_ratio(&out, &expected, &tol);
            assert!(ratio <= 1.0, "n {n} d_k {d_k} d_v {d_v} chunk {chunk} causal {causal}: {ratio}");
        }
    }
}

/// `n = 0` and `d = 0` are valid: nothing to do, or outputs `0 / eps = 0` and zero gradients.
#[test]
fn empty_shapes() {
    let att = LinearAttention::<f64>::new(3, 2, Causality::Causal);
    assert_eq!(forward(&att, 0, &[], &[], &[]), Vec::<f64>::new());
    let att = LinearAttention::<f64>::new(0, 2, Causality::Causal);
    assert_eq!(forward(&att, 3, &[], &[], &[1.0; 6]), vec![0.0; 6]);
    assert_eq!(backward(&att, 3, &[], &[], &[1.0; 6], &[1.0; 6]).2, vec![0.0; 6]);
    let att = LinearAttention::<f64>::new(2, 0, Causality::Bidirectional);
    assert_eq!(backward(&att, 3, &[0.5; 6], &[0.5; 6], &[], &[]).0, vec![0.0; 6]);
    assert!(forward(&LinearAttention::new(0, 1, Causality::Causal).with_eps(0.0), 2, &[], &[], &[1.0; 2])
        .iter()
        .all(|x: &f64| x.is_nan()));
    // Found by the fuzzer: a huge token count with empty rows must not loop over the tokens.
    let huge = usize::MAX / 3;
    let att = LinearAttention::<f32>::new(0, 0, Causality::Causal);
    assert_eq!(
        att.forward(huge, &[], &[], &[], &mut [], &mut vec![0.0; att.forward_workspace_len(huge)]),
        Ok(())
    );
    let mut ws = vec![0.0; att.backward_workspace_len(huge)];
    assert_eq!(att.backward(huge, &[], &[], &[], &[], &mut [], &mut [], &mut [], &mut ws), Ok(()));
    let (mut s, mut z) = ([0.0f32; 0], [0.0f32; 0]);
    assert_eq!(State::new(0, 0, &mut s, &mut z).unwrap().absorb(huge, &[], &[]), Ok(()));
}

/// `sum(dO * O)` for the central differences.
fn loss(att: &LinearAttention<f64>, n: usize, q: &[f64], k: &[f64], v: &[f64], d_out: &[f64]) -> f64 {
    forward(att, n, q, k, v).iter().zip(d_out).map(|(o, d)| o * d).sum()
}

/// `max_e |analytic_e - fd_e| / max_e |fd_e|` over all entries of one input.
fn finite_difference_error(
    att: &LinearAttention<f64>,
    n: usize,
    inputs: [&[f64]; 3],
    d_out: &[f64],
    which: usize,
    analytic: &[f64],
) -> f64 {
    let all: Vec<usize> = (0..analytic.len()).collect();
    let mut x: [Vec<f64>; 3] = inputs.map(|s| s.to_vec());
    let base = x[which].clone();
    let fd = common::central_differences_at(
        &mut |probe: &[f64]| {
            x[which].copy_from_slice(probe);
            loss(att, n, &x[0], &x[1], &x[2], d_out)
        },
        &base,
        &all,
        1e-6,
    );
    let worst = analytic.iter().zip(&fd).map(|(a, f)| (a - f).abs()).fold(0.0, f64::max);
    worst / max_abs(&fd)
}

/// Every backward against central finite differences in f64: relative error < 1e-6 for Q, K, V,
/// causal and not, one and several heads, chunks that do and do not divide n. (With one token
/// `dO/dq` and `dO/dk` are proportional to `eps`; those cases use `eps = 0.5` so that they check a
/// gradient and not rounding noise of size `unit |L| / step`.)
#[test]
fn backward_matches_finite_differences() {
    let cases = [
        (1, 1, 1, 1, 1, 0.5),
        (1, 4, 3, 1, 1, 0.5),
        (5, 3, 2, 1, 2, 1e-6),
        (17, 4, 3, 1, 5, 1e-6),
        (23, 6, 5, 1, 64, 1e-6),
        (12, 3, 4, 3, 5, 1e-6),
        (31, 8, 8, 2, 7, 1e-3),
    ];
    let mut worst: f64 = 0.0;
    for (seed, &(n, d_k, d_v, heads, chunk, eps)) in cases.iter().enumerate() {
        for causal in [true, false] {
            let seed = 100 + seed as u64 * 10;
            let (wk, wv) = (heads * d_k, heads * d_v);
            let (q, k, v) =
                (input(n * wk, seed, 2.0), input(n * wk, seed + 1, 2.0), input(n * wv, seed + 2, 1.0));
            let d_out = input(n * wv, seed + 3, 1.0);
            let att = LinearAttention::new(d_k, d_v, causality(causal))
                .with_heads(heads)
                .with_chunk(chunk)
                .with_eps(eps);
            let (gq, gk, gv) = backward(&att, n, &q, &k, &v, &d_out);
            for (which, analytic) in [(0, &gq), (1, &gk), (2, &gv)] {
                let err = finite_difference_error(&att, n, [&q, &k, &v], &d_out, which, analytic);
                eprintln!("fd n {n} d_k {d_k} d_v {d_v} heads {heads} chunk {chunk} causal {causal} input {}: {err:.2e}", ["Q", "K", "V"][which]);
                assert!(err < 1e-6, "input {which}: relative error {err}");
                worst = worst.max(err);
            }
        }
    }
    eprintln!("worst finite-difference relative error: {worst:.2e}");
}

/// f32 within the derived bounds of f64 (same f32-representable inputs), forward and backward.
#[test]
fn f32_matches_f64_within_derived_bounds() {
    let mut worst_forward: f64 = 0.0;
    let mut worst_backward: f64 = 0.0;
    let mut worst_relative: f64 = 0.0;
    for (seed, &(n, d_k, d_v, chunk)) in
        [(1, 4, 4, 64), (33, 16, 8, 8), (200, 64, 64, 64), (299, 31, 17, 50)].iter().enumerate()
    {
        for causal in [true, false] {
            let seed = 200 + seed as u64 * 10;
            let q32 = narrow(&input(n * d_k, seed, 2.0));
            let k32 = narrow(&input(n * d_k, seed + 1, 2.0));
            let v32 = narrow(&input(n * d_v, seed + 2, 1.0));
            let d32 = narrow(&input(n * d_v, seed + 3, 1.0));
            let (q, k, v, d_out) = (widen(&q32), widen(&k32), widen(&v32), widen(&d32));
            let att32 = LinearAttention::<f32>::new(d_k, d_v, causality(causal)).with_chunk(chunk);
            let att64 = LinearAttention::<f64>::new(d_k, d_v, causality(causal)).with_chunk(chunk);
            let out64 = forward(&att64, n, &q, &k, &v);
            let out32 = widen(&forward(&att32, n, &q32, &k32, &v32));
            let ratio =
                worst_ratio(&out32, &out64, &forward_tolerance(n, d_k, d_v, &v, &out64, f32::EPSILON as f64));
            assert!(ratio <= 1.0, "forward n {n}: {ratio}");
            worst_forward = worst_forward.max(ratio);
            let diff = out32.iter().zip(&out64).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            worst_relative = worst_relative.max(diff / max_abs(&out64));
            let g64 = backward(&att64, n, &q, &k, &v, &d_out);
            let g32 = backward(&att32, n, &q32, &k32, &v32, &d32);
            let scale = naive_linear_attention_backward(n, d_k, d_v, causal, 1e-6, &q, &k, &v, &d_out, true);
            for (a, b, s) in
                [(&g32.0, &g64.0, &scale.0), (&g32.1, &g64.1, &scale.1), (&g32.2, &g64.2, &scale.2)]
            {
                let ratio =
                    worst_ratio(&widen(a), b, &backward_tolerance(n, d_k, d_v, s, f32::EPSILON as f64));
                assert!(ratio <= 1.0, "backward n {n} causal {causal}: {ratio}");
                worst_backward = worst_backward.max(ratio);
            }
        }
    }
    eprintln!("f32 vs f64: worst error/bound forward {worst_forward:.3}, backward {worst_backward:.3}; worst max|O32-O64|/max|O64| {worst_relative:.2e}");
}

/// Packed heads give exactly (bitwise) what each head gives alone.
#[test]
fn multihead_equals_heads_one_by_one() {
    let (n, d_k, d_v, heads) = (37, 5, 3, 4);
    let (wk, wv) = (heads * d_k, heads * d_v);
    let (q, k, v, d_out) =
        (input(n * wk, 1, 2.0), input(n * wk, 2, 2.0), input(n * wv, 3, 1.0), input(n * wv, 4, 1.0));
    let column = |x: &[f64], width: usize, h: usize, d: usize| -> Vec<f64> {
        (0..n).flat_map(|i| x[i * width + h * d..i * width + (h + 1) * d].to_vec()).collect()
    };
    for causal in [true, false] {
        let packed = LinearAttention::new(d_k, d_v, causality(causal)).with_heads(heads).with_chunk(8);
        let out = forward(&packed, n, &q, &k, &v);
        let (gq, gk, gv) = backward(&packed, n, &q, &k, &v, &d_out);
        let single = LinearAttention::new(d_k, d_v, causality(causal)).with_chunk(8);
        for h in 0..heads {
            let (qh, kh, vh, dh) = (
                column(&q, wk, h, d_k),
                column(&k, wk, h, d_k),
                column(&v, wv, h, d_v),
                column(&d_out, wv, h, d_v),
            );
            assert_eq!(forward(&single, n, &qh, &kh, &vh), column(&out, wv, h, d_v));
            let (sq, sk, sv) = backward(&single, n, &qh, &kh, &vh, &dh);
            assert_eq!(sq, column(&gq, wk, h, d_k));
            assert_eq!(sk, column(&gk, wk, h, d_k));
            assert_eq!(sv, column(&gv, wv, h, d_v));
        }
    }
}

/// A prompt absorbed into the state, then streamed, equals the causal forward over the whole
/// sequence; `resume` continues from saved buffers.
#[test]
fn absorb_then_stream_equals_forward() {
    let (n, prompt, d_k, d_v) = (40, 25, 6, 4);
    let (q, k, v) = (input(n * d_k, 7, 2.0), input(n * d_k, 8, 2.0), input(n * d_v, 9, 1.0));
    let full = forward(&LinearAttention::new(d_k, d_v, Causality::Causal), n, &q, &k, &v);
    let (mut s, mut z) = (vec![0.0; d_k * d_v], vec![0.0; d_k]);
    State::new(d_k, d_v, &mut s, &mut z)
        .unwrap()
        .absorb(prompt, &k[..prompt * d_k], &v[..prompt * d_v])
        .unwrap();
    let mut state = State::resume(d_k, d_v, &mut s, &mut z).unwrap();
    let tol = forward_tolerance(n, d_k, d_v, &v, &full, f64::EPSILON);
    let mut out = vec![0.0; d_v];
    for i in prompt..n {
        state
            .step(
                &q[i * d_k..(i + 1) * d_k],
                &k[i * d_k..(i + 1) * d_k],
                &v[i * d_v..(i + 1) * d_v],
                1e-6,
                &mut out,
            )
            .unwrap();
        let ratio = worst_ratio(&out, &full[i * d_v..(i + 1) * d_v], &tol[i * d_v..(i + 1) * d_v]);
        assert!(ratio <= 1.0, "token {i}: {ratio}");
    }
    state.reset();
    assert!(state.s().iter().chain(state.z()).all(|&x| x == 0.0));
}

#[test]
fn phi_and_its_derivative() {
    assert_eq!(phi(0.5f64), 1.5);
    assert_eq!(phi(0.0f64), 1.0);
    assert_eq!(phi(-1.0f64), (-1.0f64).exp());
    assert_eq!(phi(f64::NEG_INFINITY), 0.0);
    assert!(phi(f64::NAN).is_nan());
    assert_eq!(phi_derivative(2.0f32), 1.0);
    assert_eq!(phi_derivative(-2.0f32), (-2.0f32).exp());
    assert_eq!(phi_derivative(0.0f64), 1.0); // both one-sided derivatives are 1
}

/// NaN and infinities: causality holds for them too, and `-inf` keys are simply ignored.
#[test]
fn non_finite_values_follow_causality() {
    let (n, d_k, d_v) = (20, 3, 2);
    let (q, k, v) = (input(n * d_k, 11, 2.0), input(n * d_k, 12, 2.0), input(n * d_v, 13, 1.0));
    let d_out = input(n * d_v, 14, 1.0);
    for chunk in [1, 4, 64] {
        let att = LinearAttention::new(d_k, d_v, Causality::Causal).with_chunk(chunk);
        let row_nan = |out: &[f64], d: usize, i: usize| out[i * d..(i + 1) * d].iter().any(|x| x.is_nan());
        // NaN in q_7: output row 7 only.
        let mut bad_q = q.clone();
        bad_q[7 * d_k + 1] = f64::NAN;
        let out = forward(&att, n, &bad_q, &k, &v);
        assert!((0..n).all(|i| row_nan(&out, d_v, i) == (i == 7)));
        // NaN in k_9 or v_9: rows >= 9, never earlier ones; in the backward, dQ rows < 9 stay finite.
        for in_key in [true, false] {
            let (mut bad_k, mut bad_v) = (k.clone(), v.clone());
            if in_key {
                bad_k[9 * d_k] = f64::NAN;
            } else {
                bad_v[9 * d_v] = f64::NAN;
            }
            let out = forward(&att, n, &q, &bad_k, &bad_v);
            assert!((0..n).all(|i| row_nan(&out, d_v, i) == (i >= 9)), "chunk {chunk}");
            let (gq, _, _) = backward(&att, n, &q, &bad_k, &bad_v, &d_out);
            assert!((0..9).all(|i| !row_nan(&gq, d_k, i)) && row_nan(&gq, d_k, 9));
        }
        // A key of -inf in every feature contributes nothing: same as dropping that token's key.
        let mut gone = k.clone();
        gone[5 * d_k..6 * d_k].fill(f64::NEG_INFINITY);
        let out = forward(&att, n, &q, &gone, &v);
        let expected = naive_linear_attention(n, d_k, d_v, true, 1e-6, &q, &gone, &v);
        assert!(out.iter().zip(&expected).all(|(a, b)| (a - b).abs() < 1e-12));
    }
    // All weights underflow: 0 / eps = 0 with eps > 0, 0 / 0 = NaN with eps = 0.
    let tiny = vec![-1000.0; 2];
    let att = LinearAttention::new(1, 1, Causality::Causal);
    assert_eq!(forward(&att, 2, &tiny, &tiny, &[1.0, 2.0]), vec![0.0, 0.0]);
    assert!(forward(&att.with_eps(0.0), 2, &tiny, &tiny, &[1.0, 2.0]).iter().all(|x: &f64| x.is_nan()));
    // +inf query: inf / inf.
    assert!(forward(&att, 1, &[f64::INFINITY], &[0.0], &[1.0])[0].is_nan());
}

#[test]
fn bad_arguments_are_errors() {
    let att = LinearAttention::<f64>::new(2, 3, Causality::Causal).with_heads(2);
    let (n, wk, wv) = (4, 4, 6);
    let (q, k, v) = (vec![0.0; n * wk], vec![0.0; n * wk], vec![0.0; n * wv]);
    let mut out = vec![0.0; n * wv];
    let mut ws = vec![0.0; att.forward_workspace_len(n)];
    let mismatch = |what, expected, got| Err(Error::ShapeMismatch { what, expected, got });
    assert_eq!(att.forward(n, &q[1..], &k, &v, &mut out, &mut ws), mismatch("q", 16, 15));
    assert_eq!(att.forward(n, &q, &k[..2], &v, &mut out, &mut ws), mismatch("k", 16, 2));
    assert_eq!(att.forward(n, &q, &k, &v[..5], &mut out, &mut ws), mismatch("v", 24, 5));
    assert_eq!(att.forward(n, &q, &k, &v, &mut out[..1], &mut ws), mismatch("out", 24, 1));
    let needed = ws.len();
    assert_eq!(
        att.forward(n, &q, &k, &v, &mut out, &mut ws[1..]),
        Err(Error::WorkspaceTooSmall { needed, got: needed - 1 })
    );
    assert_eq!(
        att.with_chunk(0).forward(n, &q, &k, &v, &mut out, &mut ws),
        Err(Error::InvalidParameter { what: "chunk", expected: "at least 1" })
    );
    for eps in [-1.0, f64::NAN, f64::INFINITY] {
        assert!(matches!(
            att.with_eps(eps).forward(n, &q, &k, &v, &mut out, &mut ws),
            Err(Error::InvalidParameter { what: "eps", .. })
        ));
    }
    assert_eq!(
        att.with_heads(usize::MAX).forward(n, &q, &k, &v, &mut out, &mut ws),
        Err(Error::DimensionOverflow { what: "q" })
    );
    let mut ws = vec![0.0; att.backward_workspace_len(n)];
    let (mut dq, mut dk, mut dv) = (q.clone(), k.clone(), v.clone());
    assert_eq!(
        att.backward(n, &q, &k, &v, &v[1..], &mut dq, &mut dk, &mut dv, &mut ws),
        mismatch("d_out", 24, 23)
    );
    assert_eq!(
        att.backward(n, &q, &k, &v, &v, &mut dq[1..], &mut dk, &mut dv, &mut ws),
        mismatch("d_q", 16, 15)
    );
    assert_eq!(
        att.backward(n, &q, &k, &v, &v, &mut dq, &mut dk[1..], &mut dv, &mut ws),
        mismatch("d_k", 16, 15)
    );
    assert_eq!(
        att.backward(n, &q, &k, &v, &v, &mut dq, &mut dk, &mut dv[1..], &mut ws),
        mismatch("d_v", 24, 23)
    );
    let needed = ws.len();
    assert_eq!(
        att.backward(n, &q, &k, &v, &v, &mut dq, &mut dk, &mut dv, &mut ws[..3]),
        Err(Error::WorkspaceTooSmall { needed, got: 3 })
    );
    // The state.
    let (mut s, mut z) = (vec![0.0f32; 6], vec![0.0f32; 2]);
    assert_eq!(
        State::new(2, 3, &mut s[..5], &mut z).err(),
        Some(Error::ShapeMismatch { what: "s", expected: 6, got: 5 })
    );
    assert_eq!(
        State::new(2, 3, &mut s, &mut z[..1]).err(),
        Some(Error::ShapeMismatch { what: "z", expected: 2, got: 1 })
    );
    assert_eq!(
        State::<f32>::new(usize::MAX, 2, &mut [], &mut []).err(),
        Some(Error::DimensionOverflow { what: "s" })
    );
    let mut state = State::new(2, 3, &mut s, &mut z).unwrap();
    let mut o = [0.0f32; 3];
    assert_eq!(
        state.step(&[0.0], &[0.0; 2], &[0.0; 3], 1e-6, &mut o),
        Err(Error::ShapeMismatch { what: "q", expected: 2, got: 1 })
    );
    assert_eq!(
        state.step(&[0.0; 2], &[0.0; 3], &[0.0; 3], 1e-6, &mut o),
        Err(Error::ShapeMismatch { what: "k", expected: 2, got: 3 })
    );
    assert_eq!(
        state.step(&[0.0; 2], &[0.0; 2], &[0.0; 2], 1e-6, &mut o),
        Err(Error::ShapeMismatch { what: "v", expected: 3, got: 2 })
    );
    assert_eq!(
        state.step(&[0.0; 2], &[0.0; 2], &[0.0; 3], 1e-6, &mut o[..2]),
        Err(Error::ShapeMismatch { what: "out", expected: 3, got: 2 })
    );
    assert!(state.step(&[0.0; 2], &[0.0; 2], &[0.0; 3], -1.0, &mut o).is_err());
    assert_eq!(
        state.absorb(2, &[0.0; 3], &[0.0; 6]),
        Err(Error::ShapeMismatch { what: "k", expected: 4, got: 3 })
    );
}

/// The workspaces do not grow with the sequence once it is longer than a chunk.
#[test]
fn workspace_is_independent_of_sequence_length() {
    let att = LinearAttention::<f32>::new(64, 64, Causality::Causal).with_chunk(64);
    assert_eq!(att.forward_workspace_len(64), att.forward_workspace_len(1 << 20));
    assert_eq!(att.backward_workspace_len(64), att.backward_workspace_len(1 << 20));
    // d_k d_v + d_k + 64 (3 64 + 64 + 1) and 3 d_k d_v + 2 d_k + 64 (4 64 + 3 64 + 2 64 + 2).
    assert_eq!(att.forward_workspace_len(4096), 4160 + 64 * 257);
    assert_eq!(att.backward_workspace_len(4096), 12_416 + 64 * 578);
    assert!(att.forward_workspace_len(3) < att.forward_workspace_len(64));
    // The default chunk is 64; with 32: d_k d_v + d_k + 32 (3 64 + 32 + 1), 3 d_k d_v + 2 d_k + 32 (4 64 + 3 64 + 2 32 + 2).
    let att = LinearAttention::<f32>::new(64, 64, Causality::Causal);
    assert_eq!(att.chunk, 64);
    let att = att.with_chunk(32);
    assert_eq!((att.forward_workspace_len(4096), att.backward_workspace_len(4096)), (11_360, 28_864));
}

/// A fixed case of the agreement property, reporting the measured differences: every chunk size
/// 1..=n+1 against the recurrent form and the naive reference (n = 97, a prime; d_k = 16, d_v = 8).
#[test]
fn chunked_recurrent_naive_agreement_fixed_case() {
    let (n, d_k, d_v) = (97, 16, 8);
    let (q, k, v) = (input(n * d_k, 31, 2.0), input(n * d_k, 32, 2.0), input(n * d_v, 33, 1.0));
    let expected = naive_linear_attention(n, d_k, d_v, true, 1e-6, &q, &k, &v);
    let streamed = stream(d_k, d_v, 1e-6, n, &q, &k, &v);
    let tol = forward_tolerance(n, d_k, d_v, &v, &expected, f64::EPSILON);
    let diff = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
    let (mut vs_stream, mut vs_naive) = (0.0f64, diff(&streamed, &expected));
    assert!(worst_ratio(&streamed, &expected, &tol) <= 1.0);
    for chunk in 1..=n + 1 {
        let out =
            forward(&LinearAttention::new(d_k, d_v, Causality::Causal).with_chunk(chunk), n, &q, &k, &v);
        assert!(worst_ratio(&out, &streamed, &tol) <= 1.0, "chunk {chunk}");
        vs_stream = vs_stream.max(diff(&out, &streamed));
        vs_naive = vs_naive.max(diff(&out, &expected));
    }
    eprintln!(
        "n {n}: max |chunked - recurrent| over chunks 1..={} = {vs_stream:.2e}, max |any - naive| = {vs_naive:.2e}, max |O| = {:.2}",
        n + 1,
        max_abs(&expected)
    );
}
