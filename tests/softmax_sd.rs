//! Softmax attention (`docs/math.md` section 4), S-D and standard heads (`docs/math.md` section 5) and the multi-head
//! wrappers, against naive f64 references with the full `n x n` matrix, central finite differences,
//! and their f32 versions.

mod common;
use common::attention::*;
use common::*;
use proptest::prelude::*;
use sd_attention::attention::multihead::{MultiHead, MultiHeadSoftmax};
use sd_attention::attention::sd::{AttentionHead, HeadGrads};
use sd_attention::attention::softmax::{SoftmaxAttention, SoftmaxGrads, TILE_K, TILE_Q};
use sd_attention::attention::Causality;
use sd_attention::testing::check::tolerance_for;
use sd_attention::testing::strategies::{attention_inputs, sd_factors, AttentionInputs};
use sd_attention::Error;

fn causality(causal: bool) -> Causality {
    if causal {
        Causality::Causal
    } else {
        Causality::Bidirectional
    }
}

/// Runs the tiled forward in f64: `(out, lse)`.
fn softmax_fwd(
    head: &SoftmaxAttention<f64>,
    n: usize,
    q: &[f64],
    k: &[f64],
    v: &[f64],
    mask: Option<&[f64]>,
) -> (Vec<f64>, Vec<f64>) {
    let (mut out, mut lse) = (vec![0.0; n * head.d_v], vec![0.0; n]);
    let mut ws = vec![0.0; head.forward_workspace_len(n)];
    head.forward(n, q, k, v, mask, &mut out, &mut lse, &mut ws).unwrap();
    (out, lse)
}

/// Runs the tiled backward in f64: `(dq, dk, dv)`.
#[allow(clippy::too_many_arguments)]
fn softmax_bwd(
    head: &SoftmaxAttention<f64>,
    n: usize,
    q: &[f64],
    k: &[f64],
    v: &[f64],
    mask: Option<&[f64]>,
    out: &[f64],
    lse: &[f64],
    d_out: &[f64],
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (d_k, d_v) = (head.d_k, head.d_v);
    let (mut dq, mut dk, mut dv) = (vec![0.0; n * d_k], vec![0.0; n * d_k], vec![0.0; n * d_v]);
    let mut ws = vec![0.0; head.backward_workspace_len(n)];
    let grads = SoftmaxGrads { d_q: &mut dq, d_k: &mut dk, d_v: &mut dv };
    head.backward(n, q, k, v, mask, out, lse, d_out, grads, &mut ws).unwrap();
    (dq, dk, dv)
}

/// Checks the tiled forward and backward against the naive references on one random case. The
/// forward agrees to a few hundred ulps of f64 (sums of `n` terms in a different order, and
/// rescaling by `exp(m_old - m_new)`); the bound is `(d_k + n) * 64 eps` normwise.
fn check_softmax_case(
    n: usize,
    d_k: usize,
    d_v: usize,
    causal: bool,
    seed: u64,
) -> Result<(), TestCaseError> {
    let q = seeded_matrix(n * d_k, seed);
    let k = seeded_matrix(n * d_k, seed + 1);
    let v = seeded_matrix(n * d_v, seed + 2);
    check_softmax_inputs(n, d_k, d_v, &q, &k, &v, causal, seed)
}

/// As [`check_softmax_case`] on given inputs (`q`, `k`: `n x d_k`, `v`: `n x d_v`).
#[allow(clippy::too_many_arguments)]
fn check_softmax_inputs(
    n: usize,
    d_k: usize,
    d_v: usize,
    q: &[f64],
    k: &[f64],
    v: &[f64],
    causal: bool,
    seed: u64,
) -> Result<(), TestCaseError> {
    let (q, k, v) = (q.to_vec(), k.to_vec(), v.to_vec());
    let d_out = seeded_matrix(n * d_v, seed + 3);
    let head = SoftmaxAttention::new(d_k, d_v, causality(causal));
    let (out, lse) = softmax_fwd(&head, n, &q, &k, &v, None);
    let (out_ref, lse_ref, p) = naive_softmax_attention(n, d_k, d_v, &q, &k, &v, None, causal, head.scale);
    let bound = (d_k + n + 4) as f64 * 64.0 * f64::EPSILON;
    prop_assert!(rel_err(&out, &out_ref) <= bound, "out {} > {}", rel_err(&out, &out_ref), bound);
    prop_assert!(rel_err(&lse, &lse_ref) <= bound);
    let (dq, dk, dv) = softmax_bwd(&head, n, &q, &k, &v, None, &out, &lse, &d_out);
    let (dq_ref, dk_ref, dv_ref) = naive_softmax_backward(n, d_k, d_v, &q, &k, &v, &p, &d_out, head.scale);
    let (dq_mag, dk_mag, dv_mag) =
        naive_softmax_backward_magnitudes(n, d_k, d_v, &q, &k, &v, &p, &d_out, head.scale);
    // dS subtracts delta_i = dO_i . O_i from dP_ij = dO_i . V_j, two length-d_v dot products, and
    // each gradient entry accumulates n such terms times a length-d_k or d_v factor: every entry is
    // within gamma_(d_k + d_v + n + 4) of its magnitude (the same sums over absolute values), up to
    // the relative error of P itself (the forward's bound, a factor n + 1 for the n + 1 rounded
    // probabilities and the rescaled row sums). When the exact gradient vanishes (dQ for one
    // token, dK for one key) only that rounding remains, so the difference is measured against the
    // magnitudes, never against an arbitrary floor.
    let bound = (d_k + d_v + n + 4) as f64 * 64.0 * f64::EPSILON * (n + 1) as f64;
    for (name, got, want, magnitude) in
        [("dq", &dq, &dq_ref, &dq_mag), ("dk", &dk, &dk_ref, &dk_mag), ("dv", &dv, &dv_ref, &dv_mag)]
    {
        let err = rel_err_to_magnitude(got, want, magnitude);
        prop_assert!(err <= bound, "{} {} > {}", name, err, bound);
    }
    Ok(())
}

proptest! {
    #![proptest_config(common::proptest_config(16))]
    #[test]
    fn softmax_matches_naive_on_random_shapes(
        inputs in attention_inputs::<f64>(1..300, 1..96, 1.0), causal: bool, seed in 0u64..1000
    ) {
        let AttentionInputs { n, d_k, d_v, q, k, v } = inputs;
        check_softmax_inputs(n, d_k, d_v, &q, &k, &v, causal, seed)?;
    }
}

/// One key (n = 1): the exact dK is 0, so only rounding remains; a case that once fell outside a
/// bound measured against a fixed floor (d_v = 64, inputs near 0). Also the n = 1, d_v = 14 case.
#[test]
fn softmax_one_key_gradients_are_rounding_only() {
    for (d_v, causal, seed, scale) in
        [(64usize, false, 992u64, 1e-3), (64, true, 7, 1e-9), (14, true, 116, 1.0)]
    {
        let shrink = |x: Vec<f64>| x.into_iter().map(|t| t * scale).collect::<Vec<_>>();
        let (q, k, v) = (
            shrink(seeded_matrix(1, seed)),
            shrink(seeded_matrix(1, seed + 1)),
            seeded_matrix(d_v, seed + 2),
        );
        check_softmax_inputs(1, 1, d_v, &q, &k, &v, causal, seed).unwrap();
    }
}

#[test]
fn softmax_matches_naive_at_edge_sizes() {
    // One, primes, tile boundaries (TILE_Q = 256, TILE_K = 512) and not multiples of them.
    for &n in &[1usize, 2, 7, 13, TILE_Q - 1, TILE_Q, TILE_Q + 1, 97, TILE_K - 1, TILE_K, TILE_K + 1, 299] {
        for &(d_k, d_v) in &[(1usize, 1usize), (5, 3), (64, 64), (95, 17)] {
            for causal in [false, true] {
                check_softmax_case(n, d_k, d_v, causal, n as u64 * 31 + d_k as u64).unwrap();
            }
        }
    }
}

#[test]
fn softmax_empty_and_zero_width() {
    let head = SoftmaxAttention::<f64>::new(4, 4, Causality::Causal);
    let (out, lse) = softmax_fwd(&head, 0, &[], &[], &[], None);
    assert!(out.is_empty() && lse.is_empty());
    // d_k = 0: all logits 0, uniform weights (causal: mean of the visible values).
    let head = SoftmaxAttention::<f64>::new(0, 1, Causality::Causal);
    let (out, lse) = softmax_fwd(&head, 3, &[], &[], &[3.0, 6.0, 9.0], None);
    assert_eq!(out, [3.0, 4.5, 6.0]);
    assert_eq!(lse[2], 3f64.ln());
}

/// Tiles shrink to the sequence: a head on `n <= TILE_Q` tokens needs `n^2 + 3n + 2 n d_k` elements
/// forward (the tile, row statistics, transposed keys and queries) and `2 n^2 + 3n + 2 n (d_k + d_v)`
/// backward (`O(n d + n^2)`, no fixed tile); long sequences need `O(n d)` plus the
/// `TILE_Q x TILE_K` tiles. An S-D head adds its `O(n d)` projections only.
#[test]
fn workspace_is_small_for_short_sequences() {
    let (d_k, d_v) = (16usize, 16usize);
    for n in [0usize, 1, 2, 8, 13, TILE_Q - 1, TILE_Q] {
        for causal in [false, true] {
            let head = SoftmaxAttention::<f32>::new(d_k, d_v, causality(causal));
            assert_eq!(head.forward_workspace_len(n), n * n + 3 * n + 2 * n * d_k, "n = {n}");
            assert_eq!(head.backward_workspace_len(n), 2 * n * n + 3 * n + 2 * n * (d_k + d_v), "n = {n}");
            assert!(head.backward_workspace_len(n) >= head.forward_workspace_len(n));
        }
    }
    // n = 8, d = 16: 344 elements forward (1376 bytes in f32), 664 backward (2656 bytes).
    let head = SoftmaxAttention::<f32>::new(d_k, d_v, Causality::Causal);
    assert_eq!((head.forward_workspace_len(8), head.backward_workspace_len(8)), (344, 664));
    // Between the tile sizes only the key tile grows with n.
    let n = 300;
    let head = SoftmaxAttention::<f32>::new(d_k, d_v, Causality::Causal);
    assert_eq!(head.forward_workspace_len(n), TILE_Q * (n + 3 + d_k) + n * d_k);
    for n in [TILE_K, 4096, 1 << 20] {
        let head = SoftmaxAttention::<f32>::new(64, 64, Causality::Bidirectional);
        assert_eq!(head.forward_workspace_len(n), TILE_Q * (TILE_K + 3 + 64) + n * 64);
        assert_eq!(head.backward_workspace_len(n), TILE_Q * (2 * TILE_K + 3 + 128) + n * 128);
    }
    // n = 4096, d = 64 (the README's figures): 1.57 MiB forward, 3.13 MiB backward in f32.
    let head = SoftmaxAttention::<f32>::new(64, 64, Causality::Bidirectional);
    assert_eq!((head.forward_workspace_len(4096), head.backward_workspace_len(4096)), (410_368, 819_968));
    // S-D head, d_model = d_v = 16, r = q = 2 (w = 6), on 8 tokens: projections n (3w + d_v), the
    // backward twice that, plus the softmax tiles.
    let sd = AttentionHead::<f32>::routing_filtering(16, 2, 2, 16, Causality::Causal);
    let (n, w) = (8usize, sd.qk_width());
    let projections = n * (3 * w + 16);
    assert_eq!(sd.forward_workspace_len(n), projections + n * n + 3 * n + 2 * n * w);
    assert_eq!(sd.backward_workspace_len(n), 2 * projections + 2 * n * n + 3 * n + 2 * n * (w + 16));
    // The forward runs in exactly that much.
    let x: Vec<f32> = narrow(&seeded_matrix(n * 16, 71));
    let params: Vec<f32> = narrow(&seeded_matrix(sd.param_len(), 72));
    let (mut out, mut lse) = (vec![0f32; n * 16], vec![0f32; n]);
    let mut ws = vec![0f32; sd.forward_workspace_len(n)];
    sd.forward(n, &x, &params, &mut out, &mut lse, &mut ws).unwrap();
    assert!(out.iter().chain(&lse).all(|v| v.is_finite()));
    assert!(sd.forward(n, &x, &params, &mut out, &mut lse, &mut ws[1..]).is_err());
}

/// Logits of size 1e4 (differences of 1e4 between keys) and fully masked prefix rows, with a mask,
/// against the naive reference; no NaN anywhere, masked rows give `out = 0`, `lse = -inf` and zero
/// gradients.
#[test]
fn softmax_huge_logits_and_fully_masked_rows() {
    for causal in [false, true] {
        let (n, d_k, d_v) = (TILE_K + 45, 4usize, 3usize); // several query and key tiles
        let mut q = seeded_matrix(n * d_k, 5);
        let k = seeded_matrix(n * d_k, 6);
        let v = seeded_matrix(n * d_v, 7);
        let d_out = seeded_matrix(n * d_v, 8);
        for x in q.iter_mut().take(40 * d_k) {
            *x *= 2e4; // rows 0..40 have logits of order 1e4
        }
        let mut mask = seeded_matrix(n * n, 9);
        for i in 0..n {
            for j in 0..n {
                // The first 5 rows are fully masked; some scattered entries too.
                if i < 5 || (i * 7 + j * 3) % 11 == 0 {
                    mask[i * n + j] = f64::NEG_INFINITY;
                }
            }
        }
        // The last row sees only the key before it (not even itself).
        for j in 0..n {
            mask[(n - 1) * n + j] = if j == n - 2 { 0.0 } else { f64::NEG_INFINITY };
        }
        let head = SoftmaxAttention::new(d_k, d_v, causality(causal));
        let (out, lse) = softmax_fwd(&head, n, &q, &k, &v, Some(&mask));
        let (out_ref, lse_ref, p) =
            naive_softmax_attention(n, d_k, d_v, &q, &k, &v, Some(&mask), causal, head.scale);
        assert!(out.iter().all(|x| x.is_finite()));
        for i in 0..5 {
            assert_eq!(lse[i], f64::NEG_INFINITY);
            assert!(out[i * d_v..(i + 1) * d_v].iter().all(|&x| x == 0.0));
        }
        assert_eq!(&out[(n - 1) * d_v..], &v[(n - 2) * d_v..(n - 1) * d_v]);
        assert!(max_abs_diff(&out, &out_ref) <= 1e-12, "{}", max_abs_diff(&out, &out_ref));
        for (a, b) in lse.iter().zip(&lse_ref) {
            assert!(a == b || (a - b).abs() <= 1e-15 * b.abs().max(1.0), "{a} vs {b}");
        }
        let (dq, dk, dv) = softmax_bwd(&head, n, &q, &k, &v, Some(&mask), &out, &lse, &d_out);
        let (dq_ref, dk_ref, dv_ref) =
            naive_softmax_backward(n, d_k, d_v, &q, &k, &v, &p, &d_out, head.scale);
        for (g, g_ref) in [(&dq, &dq_ref), (&dk, &dk_ref), (&dv, &dv_ref)] {
            assert!(g.iter().all(|x| x.is_finite()));
            assert!(rel_err(g, g_ref) <= 1e-10, "{}", rel_err(g, g_ref));
        }
        assert!(dq[..5 * d_k].iter().all(|&x| x == 0.0));
    }
}

#[test]
fn softmax_rejects_bad_input() {
    let head = SoftmaxAttention::<f64>::new(2, 2, Causality::Bidirectional);
    let (q, v) = (vec![0.0; 6], vec![0.0; 6]);
    let (mut out, mut lse) = (vec![0.0; 6], vec![0.0; 3]);
    let mut ws = vec![0.0; head.forward_workspace_len(3)];
    assert_eq!(
        head.forward(3, &q[..5], &q, &v, None, &mut out, &mut lse, &mut ws),
        Err(Error::ShapeMismatch { what: "q", expected: 6, got: 5 })
    );
    let mut mask = vec![0.0; 9];
    mask[4] = f64::NAN;
    assert!(matches!(
        head.forward(3, &q, &q, &v, Some(&mask), &mut out, &mut lse, &mut ws),
        Err(Error::InvalidValue { what: "mask", index: 4, .. })
    ));
    mask[4] = f64::INFINITY;
    assert!(head.forward(3, &q, &q, &v, Some(&mask), &mut out, &mut lse, &mut ws).is_err());
    let mut short = vec![0.0; head.forward_workspace_len(3) - 1];
    assert!(matches!(
        head.forward(3, &q, &q, &v, None, &mut out, &mut lse, &mut short),
        Err(Error::WorkspaceTooSmall { .. })
    ));
    let bad_scale = head.with_scale(f64::NAN);
    assert!(matches!(
        bad_scale.forward(3, &q, &q, &v, None, &mut out, &mut lse, &mut ws),
        Err(Error::InvalidParameter { what: "scale", .. })
    ));
}

/// Central differences of `L = sum(d_out .* out)` with step `1e-5`: truncation `O(h^2)` ~ 1e-10
/// relative, rounding ~ eps / h ~ 1e-11; the gradients must agree to 1e-6 normwise.
#[test]
fn softmax_backward_matches_finite_differences() {
    for &(n, d_k, d_v, causal, masked) in &[
        (1usize, 3usize, 2usize, false, false),
        (7, 3, 2, true, false),
        (TILE_Q + 6, 3, 2, false, true),
        (TILE_Q + 6, 2, 3, true, true),
    ] {
        let q = seeded_matrix(n * d_k, 11);
        let k = seeded_matrix(n * d_k, 12);
        let v = seeded_matrix(n * d_v, 13);
        let d_out = seeded_matrix(n * d_v, 14);
        let mask: Option<Vec<f64>> = masked.then(|| {
            let mut m = seeded_matrix(n * n, 15);
            m[..n].fill(f64::NEG_INFINITY); // a fully masked first row
            m
        });
        let head = SoftmaxAttention::new(d_k, d_v, causality(causal)).with_scale(0.7);
        let loss = |q: &[f64], k: &[f64], v: &[f64]| {
            let (out, _) = softmax_fwd(&head, n, q, k, v, mask.as_deref());
            out.iter().zip(&d_out).map(|(a, b)| a * b).sum::<f64>()
        };
        let (out, lse) = softmax_fwd(&head, n, &q, &k, &v, mask.as_deref());
        let (dq, dk, dv) = softmax_bwd(&head, n, &q, &k, &v, mask.as_deref(), &out, &lse, &d_out);
        let h = 1e-5;
        let fd_q = central_differences(&q, h, |x| loss(x, &k, &v));
        let fd_k = central_differences(&k, h, |x| loss(&q, x, &v));
        let fd_v = central_differences(&v, h, |x| loss(&q, &k, x));
        for (name, g, fd) in [("dq", &dq, &fd_q), ("dk", &dk, &fd_k), ("dv", &dv, &fd_v)] {
            let err = rel_err(g, fd);
            println!(
                "softmax n={n} d_k={d_k} d_v={d_v} causal={causal} masked={masked}: {name} rel err {err:.2e}"
            );
            assert!(err < 1e-6, "{name}: {err}");
        }
    }
}

/// Random head parameters for `head` (entries in [-1, 1]).
fn head_params(head: &AttentionHead<f64>, seed: u64) -> Vec<f64> {
    seeded_matrix(head.param_len(), seed)
}

fn head_fwd(head: &AttentionHead<f64>, n: usize, x: &[f64], params: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let (mut out, mut lse) = (vec![0.0; n * head.d_v], vec![0.0; n]);
    let mut ws = vec![0.0; head.forward_workspace_len(n)];
    head.forward(n, x, params, &mut out, &mut lse, &mut ws).unwrap();
    (out, lse)
}

fn head_bwd(
    head: &AttentionHead<f64>,
    n: usize,
    x: &[f64],
    params: &[f64],
    d_out: &[f64],
) -> (Vec<f64>, Vec<f64>) {
    let (out, lse) = head_fwd(head, n, x, params);
    let (mut d_x, mut d_params) = (vec![0.0; x.len()], vec![0.0; params.len()]);
    let mut ws = vec![0.0; head.backward_workspace_len(n)];
    let grads = HeadGrads { d_x: &mut d_x, d_params: &mut d_params };
    head.backward(n, x, params, &out, &lse, d_out, grads, &mut ws).unwrap();
    (d_x, d_params)
}

fn sd_and_standard_heads(d: usize, causal: bool) -> [AttentionHead<f64>; 3] {
    [
        AttentionHead::routing_filtering(d, 2, 3, 4, causality(causal)),
        AttentionHead::routing_filtering(d, 3, 0, 2, causality(causal)).with_scale(0.9),
        AttentionHead::standard(d, 3, 4, causality(causal)),
    ]
}

/// Each head's forward against the naive reference built from its dense kernel (`S + D`, or
/// `W_Q W_K^T`), which ties the factorized logits to the kernel they claim to compute.
#[test]
fn heads_match_naive_dense_kernel() {
    for &(n, d) in &[(1usize, 1usize), (13, 5), (67, 17), (257, 8)] {
        for causal in [false, true] {
            for head in sd_and_standard_heads(d, causal) {
                let x = seeded_matrix(n * d, 21);
                let params = head_params(&head, 22);
                let mut kernel = vec![0.0; d * d];
                head.kernel_dense(&params, &mut kernel).unwrap();
                let w_v = &params[head.param_block("w_v").unwrap().range()];
                let (out, lse) = head_fwd(&head, n, &x, &params);
                let (out_ref, lse_ref) =
                    naive_head_forward(n, d, head.d_v, &x, &kernel, w_v, causal, head.scale);
                assert!(rel_err(&out, &out_ref) < 1e-12, "{:?}: {}", head.kind, rel_err(&out, &out_ref));
                assert!(rel_err(&lse, &lse_ref) < 1e-12);
            }
        }
    }
    // The S-D kernel against the naive formula U V^T - V U^T - C C^T.
    let head = AttentionHead::<f64>::routing_filtering(6, 2, 3, 1, Causality::Causal);
    let params = head_params(&head, 23);
    let mut kernel = vec![0.0; 36];
    head.kernel_dense(&params, &mut kernel).unwrap();
    let block = |name| &params[head.param_block(name).unwrap().range()];
    let kernel_ref = naive_sd_kernel(6, 2, 3, block("u"), block("v"), block("c"));
    assert!(max_abs_diff(&kernel, &kernel_ref) < 1e-14);
}

/// Gradients of every head kind with respect to `X` and each parameter block, against central
/// differences (relative error < 1e-6 per block).
#[test]
fn head_backward_matches_finite_differences() {
    let (n, d) = (9usize, 5usize);
    for causal in [false, true] {
        for head in sd_and_standard_heads(d, causal) {
            let x = seeded_matrix(n * d, 31);
            let params = head_params(&head, 32);
            let d_out = seeded_matrix(n * head.d_v, 33);
            let loss = |x: &[f64], params: &[f64]| {
                let (out, _) = head_fwd(&head, n, x, params);
                out.iter().zip(&d_out).map(|(a, b)| a * b).sum::<f64>()
            };
            let (d_x, d_params) = head_bwd(&head, n, &x, &params, &d_out);
            let h = 1e-5;
            let fd_x = central_differences(&x, h, |x| loss(x, &params));
            let fd_params = central_differences(&params, h, |p| loss(&x, p));
            let err = rel_err(&d_x, &fd_x);
            println!("{:?} causal={causal}: dX rel err {err:.2e}", head.kind);
            assert!(err < 1e-6);
            let (blocks, count) = head.param_blocks();
            for block in &blocks[..count] {
                let err = rel_err(&d_params[block.range()], &fd_params[block.range()]);
                println!("{:?} causal={causal}: d{} rel err {err:.2e}", head.kind, block.name);
                assert!(err < 1e-6, "{}: {err}", block.name);
            }
        }
    }
}

/// Unit roundoff of f32.
const U32: f64 = f32::EPSILON as f64 / 2.0;

/// f32 against f64 on the same (f32-representable) inputs. Derivation of the forward bound: each
/// logit is a `d_k`-term dot product, `|dA_ij| <= d_k u L` with `L = max_ij scale sum_p |q_ip k_jp|`;
/// softmax turns logit errors into `|dP_ij| <= 2 max_j |dA_ij| P_ij`; normalizing and the value
/// product are sums of `n` terms (`n u` each), exp adds a few `u`. So
/// `|dO_ij| <= (2 d_k L + 2 n + 8) u max|v|`. The backward chains three such products
/// (`dP`, `dS = P (dP - delta)`, `dS K`), each of the same order, and `delta` cancels against `dP`:
/// normwise `||dG|| <= 4 (2 d_k L + 2 n + 8) u ||G_terms||`, with `||G_terms||` the gradient norm.
#[test]
fn softmax_f32_matches_f64() {
    for &(n, d_k, d_v, causal) in &[(1usize, 8usize, 8usize, false), (97, 64, 64, true), (300, 33, 17, false)]
    {
        let q = widen(&narrow(&seeded_matrix(n * d_k, 41)));
        let k = widen(&narrow(&seeded_matrix(n * d_k, 42)));
        let v = widen(&narrow(&seeded_matrix(n * d_v, 43)));
        let d_out = widen(&narrow(&seeded_matrix(n * d_v, 44)));
        let head = SoftmaxAttention::new(d_k, d_v, causality(causal));
        let head32 = SoftmaxAttention::<f32>::new(d_k, d_v, causality(causal));
        let (out, lse) = softmax_fwd(&head, n, &q, &k, &v, None);
        let (dq, dk, dv) = softmax_bwd(&head, n, &q, &k, &v, None, &out, &lse, &d_out);
        let (mut out32, mut lse32) = (vec![0f32; n * d_v], vec![0f32; n]);
        let mut ws = vec![0f32; head32.backward_workspace_len(n)];
        let (q32, k32, v32, do32) = (narrow(&q), narrow(&k), narrow(&v), narrow(&d_out));
        head32.forward(n, &q32, &k32, &v32, None, &mut out32, &mut lse32, &mut ws).unwrap();
        let (mut dq32, mut dk32, mut dv32) = (vec![0f32; n * d_k], vec![0f32; n * d_k], vec![0f32; n * d_v]);
        let grads = SoftmaxGrads { d_q: &mut dq32, d_k: &mut dk32, d_v: &mut dv32 };
        head32.backward(n, &q32, &k32, &v32, None, &out32, &lse32, &do32, grads, &mut ws).unwrap();
        let l = head.scale * d_k as f64; // entries in [-1, 1]: sum_p |q k| <= d_k
        let fwd_bound = (2.0 * d_k as f64 * l + 2.0 * n as f64 + 8.0) * U32;
        let out_err = max_abs_diff(&widen(&out32), &out);
        println!("f32 vs f64 n={n} d_k={d_k}: out max abs err {out_err:.2e} (bound {fwd_bound:.2e})");
        assert!(out_err <= fwd_bound);
        for (name, g32, g) in [("dq", &dq32, &dq), ("dk", &dk32, &dk), ("dv", &dv32, &dv)] {
            // For one token dQ = dK = 0 exactly (P = 1): compare absolutely, entries are O(1).
            let err = if n == 1 { max_abs_diff(&widen(g32), g) } else { rel_err(&widen(g32), g) };
            println!("f32 vs f64 n={n}: {name} rel err {err:.2e} (bound {:.2e})", 4.0 * fwd_bound);
            assert!(err <= 4.0 * fwd_bound, "{name}: {err}");
        }
    }
}

/// Heads in f32 against f64: the projections add `d_model u` relative error to queries, keys and
/// values, which enters the logits multiplied by `L`; bound `(2 (d_k + 2 d) L + 2 n + 8) u` as above.
#[test]
fn heads_f32_match_f64() {
    let (n, d) = (50usize, 16usize);
    for head in sd_and_standard_heads(d, true) {
        let x = widen(&narrow(&seeded_matrix(n * d, 51)));
        let params = widen(&narrow(&head_params(&head, 52)));
        let d_out = widen(&narrow(&seeded_matrix(n * head.d_v, 53)));
        let (out, _) = head_fwd(&head, n, &x, &params);
        let (d_x, d_params) = head_bwd(&head, n, &x, &params, &d_out);
        let head32 = AttentionHead::<f32> {
            kind: head.kind,
            d_model: d,
            d_v: head.d_v,
            causality: head.causality,
            scale: head.scale as f32,
        };
        let (x32, p32, do32) = (narrow(&x), narrow(&params), narrow(&d_out));
        let (mut out32, mut lse32) = (vec![0f32; n * head.d_v], vec![0f32; n]);
        let mut ws = vec![0f32; head32.backward_workspace_len(n)];
        head32.forward(n, &x32, &p32, &mut out32, &mut lse32, &mut ws).unwrap();
        let (mut dx32, mut dp32) = (vec![0f32; n * d], vec![0f32; params.len()]);
        let grads = HeadGrads { d_x: &mut dx32, d_params: &mut dp32 };
        head32.backward(n, &x32, &p32, &out32, &lse32, &do32, grads, &mut ws).unwrap();
        // |x_i^T M x_j| <= d^2 max|M|, max|M| <= 2r + q (entries of factors in [-1, 1]).
        let w = head.qk_width() as f64;
        let l = head.scale * (d * d) as f64 * w;
        let v_scale = d as f64; // |x W_V| <= d
        let bound = (2.0 * (w + 2.0 * d as f64) * l + 2.0 * n as f64 + 8.0) * U32;
        let out_err = max_abs_diff(&widen(&out32), &out) / v_scale;
        println!("{:?} f32 vs f64: out err {out_err:.2e} (bound {bound:.2e})", head.kind);
        assert!(out_err <= bound);
        let gx = rel_err(&widen(&dx32), &d_x);
        let gp = rel_err(&widen(&dp32), &d_params);
        println!(
            "{:?} f32 vs f64: dX rel {gx:.2e}, dparams rel {gp:.2e} (bound {:.2e})",
            head.kind,
            4.0 * bound
        );
        assert!(gx <= 4.0 * bound && gp <= 4.0 * bound);
    }
}

proptest! {
    #![proptest_config(common::proptest_config(32))]
    /// `docs/math.md` section 5: `x_i^T S x_j = -x_j^T S x_i` (routing logits antisymmetric),
    /// `x^T (S + D) x = -|C^T x|^2 <= 0`, and the head's stability bound (Lanczos on the symmetric
    /// part) gives `Re(lambda) <= 0` within `tolerance_for(d, ||S + D||_F)`, the rounding of
    /// forming `D` and of the Lanczos residual (see `check::stability_bound`).
    #[test]
    fn sd_kernel_invariants(factors in sd_factors::<f64>(1..24, 0..6, 0..6), seed in 0u64..1000) {
        let (d, r, q) = (factors.d, factors.routing_rank, factors.filtering_rank);
        let head = AttentionHead::<f64>::routing_filtering(d, r, q, 1, Causality::Bidirectional);
        let mut params = head_params(&head, seed);
        for (name, block) in [("u", &factors.u), ("v", &factors.v), ("c", &factors.c)] {
            params[head.param_block(name).unwrap().range()].copy_from_slice(block);
        }
        let mut kernel = vec![0.0; d * d];
        head.kernel_dense(&params, &mut kernel).unwrap();
        let block = |name| &params[head.param_block(name).unwrap().range()];
        let routing_only = naive_sd_kernel(d, r, 0, block("u"), block("v"), &[]);
        let xs = seeded_matrix(4 * d, seed + 7);
        let (xi, xj) = (&xs[..d], &xs[d..2 * d]);
        let bilinear = |m: &[f64], a: &[f64], b: &[f64]| -> f64 {
            (0..d).map(|i| a[i] * (0..d).map(|j| m[i * d + j] * b[j]).sum::<f64>()).sum()
        };
        let scale = 1.0 + (r * d) as f64;
        prop_assert!((bilinear(&routing_only, xi, xj) + bilinear(&routing_only, xj, xi)).abs() <= 1e-13 * scale);
        let quad = bilinear(&kernel, xi, xi);
        prop_assert!(quad <= 1e-13 * scale, "x^T (S + D) x = {}", quad);
        let mut ws = vec![0.0; head.stability_bound_workspace_len()];
        let bound = head.stability_bound(&params, &mut ws).unwrap();
        let norm = kernel.iter().map(|x| x * x).sum::<f64>().sqrt();
        prop_assert!(bound <= tolerance_for(d, norm), "bound {} > {}", bound, tolerance_for(d, norm));
        // With filtering, D = -C C^T has C^T's rank; when C has full column rank q >= d, D is
        // negative definite and the bound is strictly negative: -lambda_min(C C^T) up to rounding.
        if q == 0 {
            prop_assert!(bound.abs() <= tolerance_for(d, norm), "pure routing: bound {}", bound);
        }
    }
}

/// The stability bound tells stable from unstable kernels: a standard head with
/// `W_Q = W_K = (1, 0)^T` has `M = e_0 e_0^T`, eigenvalue 1; a pure-routing S-D head (`q = 0`) has a
/// skew kernel, real parts exactly 0; filtering pushes the bound below 0 (here `D = -diag(4, 0)`
/// with `C = (2, 0)^T`, so the symmetric part has largest eigenvalue 0, and with `C` spanning both
/// axes `-1`). Bad input gives errors.
#[test]
fn stability_bound_separates_kernels() {
    let tol = tolerance_for::<f64>(2, 10.0);
    let standard = AttentionHead::<f64>::standard(2, 1, 1, Causality::Causal);
    let mut ws = vec![0.0; standard.stability_bound_workspace_len()];
    let bound = standard.stability_bound(&[1.0, 0.0, 1.0, 0.0, 0.5, 0.5], &mut ws).unwrap();
    assert!((bound - 1.0).abs() <= tol, "{bound}");
    // U = e_0, V = e_1: S = e_0 e_1^T - e_1 e_0^T, a rotation generator (eigenvalues +-i).
    let routing = AttentionHead::<f64>::routing_filtering(2, 1, 0, 1, Causality::Causal);
    let mut ws = vec![0.0; routing.stability_bound_workspace_len()];
    let bound = routing.stability_bound(&[1.0, 0.0, 0.0, 1.0, 1.0, 1.0], &mut ws).unwrap();
    assert!(bound.abs() <= tol, "{bound}");
    let sd = AttentionHead::<f64>::routing_filtering(2, 1, 1, 1, Causality::Causal);
    let mut ws = vec![0.0; sd.stability_bound_workspace_len()];
    // U = e_0, V = e_1, C = 2 e_0: symmetric part -diag(4, 0).
    let bound = sd.stability_bound(&[1.0, 0.0, 0.0, 1.0, 2.0, 0.0, 1.0, 1.0], &mut ws).unwrap();
    assert!(bound.abs() <= tol, "{bound}");
    // d = 2, q = 2 with C = I: symmetric part -I, bound -1.
    let definite = AttentionHead::<f64>::routing_filtering(2, 1, 2, 1, Causality::Causal);
    let mut ws = vec![0.0; definite.stability_bound_workspace_len()];
    let params = [1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0];
    let bound = definite.stability_bound(&params, &mut ws).unwrap();
    assert!((bound + 1.0).abs() <= tol, "{bound}");
    // Errors: NaN in the factors, wrong lengths, a short workspace.
    let mut bad = params;
    bad[4] = f64::NAN;
    assert!(matches!(definite.stability_bound(&bad, &mut ws), Err(Error::NonFinite { .. })));
    assert!(definite.stability_bound(&params[1..], &mut ws).is_err());
    let short = definite.stability_bound_workspace_len() - 1;
    assert!(matches!(
        definite.stability_bound(&params, &mut ws[..short]),
        Err(Error::WorkspaceTooSmall { .. })
    ));
    // d_model = 0: no eigenvalues.
    let empty = AttentionHead::<f64>::routing_filtering(0, 1, 1, 1, Causality::Causal);
    assert_eq!(empty.stability_bound(&[], &mut []).unwrap(), f64::NEG_INFINITY);
}

#[test]
fn heads_reject_bad_input() {
    let head = AttentionHead::<f64>::routing_filtering(4, 2, 1, 3, Causality::Causal);
    assert_eq!(head.param_len(), 4 * (5 + 3));
    let (x, params) = (vec![0.0; 8], vec![0.0; head.param_len()]);
    let (mut out, mut lse) = (vec![0.0; 6], vec![0.0; 2]);
    let mut ws = vec![0.0; head.forward_workspace_len(2)];
    assert!(head.forward(2, &x, &params[1..], &mut out, &mut lse, &mut ws).is_err());
    assert!(head.forward(3, &x, &params, &mut out, &mut lse, &mut ws).is_err());
    assert!(head.forward(2, &x, &params, &mut out, &mut lse, &mut ws[1..]).is_err());
    assert!(head.forward(2, &x, &params, &mut out, &mut lse, &mut ws).is_ok());
    let mut kernel = vec![0.0; 15];
    assert!(head.kernel_dense(&params, &mut kernel).is_err());
}

/// The packed wrappers against single heads run on gathered columns.
#[test]
fn multihead_matches_single_heads() {
    let (n, h, d_k, d_v) = (TILE_Q + 6, 3usize, 5usize, 4usize);
    let head = SoftmaxAttention::<f64>::new(d_k, d_v, Causality::Causal);
    let multi = MultiHeadSoftmax { n_heads: h, head };
    let q = seeded_matrix(n * h * d_k, 61);
    let k = seeded_matrix(n * h * d_k, 62);
    let v = seeded_matrix(n * h * d_v, 63);
    let d_out = seeded_matrix(n * h * d_v, 64);
    let (mut out, mut lse) = (vec![0.0; n * h * d_v], vec![0.0; h * n]);
    let mut ws = vec![0.0; multi.backward_workspace_len(n).max(multi.forward_workspace_len(n))];
    multi.forward(n, &q, &k, &v, None, &mut out, &mut lse, &mut ws).unwrap();
    let (mut dq, mut dk, mut dv) = (vec![0.0; q.len()], vec![0.0; k.len()], vec![0.0; v.len()]);
    let grads = SoftmaxGrads { d_q: &mut dq, d_k: &mut dk, d_v: &mut dv };
    multi.backward(n, &q, &k, &v, None, &out, &lse, &d_out, grads, &mut ws).unwrap();
    let cols = |m: &[f64], width: usize, t: usize| -> Vec<f64> {
        (0..n).flat_map(|i| m[i * h * width + t * width..i * h * width + (t + 1) * width].to_vec()).collect()
    };
    for t in 0..h {
        let (qt, kt, vt, dot) = (cols(&q, d_k, t), cols(&k, d_k, t), cols(&v, d_v, t), cols(&d_out, d_v, t));
        let (o, l) = softmax_fwd(&head, n, &qt, &kt, &vt, None);
        assert_eq!(cols(&out, d_v, t), o);
        assert_eq!(&lse[t * n..(t + 1) * n], &l[..]);
        let (gq, gk, gv) = softmax_bwd(&head, n, &qt, &kt, &vt, None, &o, &l, &dot);
        assert_eq!(cols(&dq, d_k, t), gq);
        assert_eq!(cols(&dk, d_k, t), gk);
        assert_eq!(cols(&dv, d_v, t), gv);
    }

    // S-D heads reading the same tokens.
    let d = 6;
    let sd = AttentionHead::<f64>::routing_filtering(d, 2, 1, d_v, Causality::Bidirectional);
    let multi = MultiHead { n_heads: h, head: sd };
    let x = seeded_matrix(n * d, 65);
    let params = seeded_matrix(multi.param_len(), 66);
    let (mut out, mut lse) = (vec![0.0; n * h * d_v], vec![0.0; h * n]);
    let mut ws = vec![0.0; multi.backward_workspace_len(n)];
    multi.forward(n, &x, &params, &mut out, &mut lse, &mut ws).unwrap();
    let (mut d_x, mut d_params) = (vec![0.0; x.len()], vec![0.0; params.len()]);
    let grads = HeadGrads { d_x: &mut d_x, d_params: &mut d_params };
    multi.backward(n, &x, &params, &out, &lse, &d_out, grads, &mut ws).unwrap();
    let p = sd.param_len();
    let mut d_x_sum = vec![0.0; x.len()];
    for t in 0..h {
        let head_params = &params[t * p..(t + 1) * p];
        let (o, _) = head_fwd(&sd, n, &x, head_params);
        assert_eq!(cols(&out, d_v, t), o);
        let (gx, gp) = head_bwd(&sd, n, &x, head_params, &cols(&d_out, d_v, t));
        assert_eq!(&d_params[t * p..(t + 1) * p], &gp[..]);
        for (s, g) in d_x_sum.iter_mut().zip(&gx) {
            *s += g;
        }
    }
    assert!(max_abs_diff(&d_x, &d_x_sum) <= 1e-14 * h as f64);
}
