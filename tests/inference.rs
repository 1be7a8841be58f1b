//! Incremental decoding (`sd_attention::inference`, docs/math.md section 10) against the model's
//! parallel forward: `prefill` of a prefix then `step` token by token gives, at every position,
//! the logits of `Model::forward` over the whole sequence. Also the zero-copy checkpoint view,
//! the sampler, and every typed rejection of bad input.

mod common;

use common::model::normal_vec;
use proptest::prelude::*;
use sd_attention::inference::{
    state_len, workspace_len, CheckpointView, Decoder, DecoderState, ModelShape, ModelView, Sampler,
};
use sd_attention::model::config::{AttentionKind, ModelConfig, PositionKind};
use sd_attention::model::norm::NormKind;
use sd_attention::model::transformer::Model;
use sd_attention::train::checkpoint::Checkpoint;
use sd_attention::{Error, Scalar};

const VOCAB: usize = 256;

/// Parameters with `O(1)` effects: every entry `N(0, 0.5^2)`, norm gains `1 + N(0, 0.1^2)` (so the
/// attention is far from uniform and every part of the model matters).
fn params_for(model: &Model<f64>, seed: u64) -> Vec<f64> {
    params_with_std(model, seed, 0.5)
}

/// [`params_for`] with entries `N(0, std^2)`.
fn params_with_std(model: &Model<f64>, seed: u64, std: f64) -> Vec<f64> {
    let mut p = normal_vec(model.param_len(), std, seed);
    let d = model.config().d_model;
    for t in &model.layout().tensors {
        if t.name.contains("norm") {
            for (i, v) in p[t.range.clone()].iter_mut().enumerate() {
                *v = if i < d { 1.0 + *v * 0.2 } else { *v * 0.2 };
            }
        }
    }
    p
}

/// The parallel forward's logits (`n x 256`) of one sequence.
fn parallel_logits<T: Scalar>(model: &Model<T>, params: &[T], tokens: &[u8]) -> Vec<T> {
    let mut acts = model.activations(1, tokens.len()).unwrap();
    model.forward(params, tokens, tokens, &mut acts).unwrap();
    acts.logits().to_vec()
}

/// The decoder's logits (`n x 256`): `prefill_all` of the first `split` tokens, then one `step` per
/// remaining token.
fn decoded_logits<T: Scalar>(config: &ModelConfig, params: &[T], tokens: &[u8], split: usize) -> Vec<T> {
    let shape = ModelShape::of_config(config);
    let view = ModelView::new(shape, params).unwrap();
    let mut state = vec![T::zero(); state_len(&shape).unwrap()];
    let mut workspace = vec![T::zero(); workspace_len(&shape, split).unwrap()];
    let mut decoder =
        Decoder::new(view, DecoderState::new(&shape, &mut state).unwrap(), &mut workspace).unwrap();
    let mut out = vec![T::zero(); tokens.len() * VOCAB];
    decoder.prefill_all(&tokens[..split], &mut out[..split * VOCAB]).unwrap();
    for (i, &t) in tokens.iter().enumerate().skip(split) {
        let logits = decoder.step(t as usize).unwrap();
        out[i * VOCAB..(i + 1) * VOCAB].copy_from_slice(logits);
    }
    assert_eq!(decoder.position(), tokens.len());
    out
}

/// Per position, `max_v |a_v - b_v| / max_v |b_v|`: the logits' error relative to their scale.
fn position_errors(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.chunks_exact(VOCAB)
        .zip(b.chunks_exact(VOCAB))
        .map(|(x, y)| {
            let diff = x.iter().zip(y).map(|(p, q)| (p - q).abs()).fold(0.0, f64::max);
            let scale = y.iter().map(|q| q.abs()).fold(0.0, f64::max);
            if scale == 0.0 {
                diff
            } else {
                diff / scale
            }
        })
        .collect()
}

/// Layer kinds; with `own_qk_width`, also linear layers whose query/key width differs from
/// `d_head` (the bounded f32 reference below models the other kinds only).
fn kind_strategy(own_qk_width: bool) -> impl Strategy<Value = AttentionKind> {
    let max_width = if own_qk_width { 7usize } else { 0 };
    prop_oneof![
        Just(AttentionKind::Softmax),
        Just(AttentionKind::Linear),
        (1usize..=4).prop_map(|w| AttentionKind::LinearQk { qk_width: w }),
        (1usize..=3, 0usize..=2).prop_map(|(r, q)| AttentionKind::Sd { routing_rank: r, filtering_rank: q }),
        (0usize..=max_width).prop_map(move |w| if w == 0 {
            AttentionKind::Linear
        } else {
            AttentionKind::LinearQk { qk_width: w }
        }),
    ]
}

fn config_strategy(own_qk_width: bool) -> impl Strategy<Value = ModelConfig> {
    (
        (1usize..=12, 1usize..=3, 1usize..=5, 1usize..=9, 1usize..=12),
        prop::collection::vec(kind_strategy(own_qk_width), 0..=3),
        (0usize..3, any::<bool>(), any::<bool>()),
    )
        .prop_map(
            |((d_model, n_heads, d_head, d_mlp, context_len), attention, (norm, sinusoidal, tied))| {
                ModelConfig {
                    d_model,
                    n_layers: attention.len(),
                    n_heads,
                    d_head,
                    d_mlp,
                    context_len,
                    attention,
                    norm: [NormKind::None, NormKind::Rms, NormKind::Layer][norm],
                    positions: if sinusoidal { PositionKind::Sinusoidal } else { PositionKind::Learned },
                    tied_unembedding: tied,
                }
            },
        )
}

/// A config, a sequence of 1..=context tokens and a split 1..=n between prefill and step.
fn case_strategy(own_qk_width: bool) -> impl Strategy<Value = (ModelConfig, Vec<u8>, usize, u64)> {
    config_strategy(own_qk_width).prop_flat_map(|c| {
        let context = c.context_len;
        (Just(c), prop::collection::vec(any::<u8>(), 1..=context), any::<u64>()).prop_flat_map(
            |(c, tokens, seed)| {
                let n = tokens.len();
                (Just(c), Just(tokens), 1..=n, Just(seed))
            },
        )
    })
}

/// f64: the two paths sum the attention read in different orders (online softmax over tiles
/// against one row at a time; chunked against recurrent linear sums), each with relative error
/// `O(n eps)` on `O(1)` quantities; everything else (projections, norms, MLP, unembedding) runs
/// through the same kernels row by row and rounds identically. Through at most three layers of
/// `O(1)` gain that stays near `1e-15`; the bound `1e-12` of the issue leaves three orders of
/// magnitude and would catch any mistake (a wrong key, sign, scale or position is `O(1)`).
#[test]
fn f64_decoding_equals_the_parallel_forward() {
    let worst = std::cell::RefCell::new(std::collections::BTreeMap::<&str, f64>::new());
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(160));
    runner
        .run(&case_strategy(true), |(config, tokens, split, seed)| {
            let model = Model::<f64>::with_attention(config.clone()).unwrap();
            let params = params_for(&model, seed);
            let expected = parallel_logits(&model, &params, &tokens);
            let got = decoded_logits(&config, &params, &tokens, split);
            let errors = position_errors(&got, &expected);
            let label = match (
                config.attention.iter().all(|k| *k == AttentionKind::Softmax),
                config.attention.iter().all(|k| k.is_linear()),
                config.attention.iter().all(|k| matches!(k, AttentionKind::Sd { .. })),
            ) {
                _ if config.attention.is_empty() => "no layers",
                (true, _, _) => "softmax",
                (_, true, _) => "linear",
                (_, _, true) => "S-D",
                _ => "mixed",
            };
            let max = errors.iter().copied().fold(0.0, f64::max);
            let mut worst = worst.borrow_mut();
            let entry = worst.entry(label).or_insert(0.0);
            *entry = entry.max(max);
            for (i, e) in errors.iter().enumerate() {
                prop_assert!(*e <= 1e-12, "position {i} of {} (split {split}): rel err {e:e}", tokens.len());
            }
            Ok(())
        })
        .unwrap();
    for (kind, err) in worst.borrow().iter() {
        println!("f64 decode vs parallel forward, {kind}: max relative error {err:.2e}");
    }
}

// ---------------------------------------------------------------------------------------------
// f32: both paths within a derived rounding bound of the f64 value.

use common::rounding::{dot, gamma, sum, Bounded, CRATE_EXP_F32_REL, U32};

/// Largest slope of the tanh-form GELU, `max_u gelu'(u) = 1.1289...` (at `u ~ 1.5`), rounded up.
const GELU_LIPSCHITZ: f64 = 1.13;

fn neg(b: Bounded) -> Bounded {
    Bounded { v: -b.v, e: b.e }
}

/// `a / b`, or an infinite bound when the bound on `b` cannot exclude 0 (that comparison is then
/// vacuous and counted as such).
fn div(a: Bounded, b: Bounded) -> Bounded {
    if b.v.abs() > b.e && a.e.is_finite() {
        a.div(b)
    } else {
        Bounded { v: a.v / b.v, e: f64::INFINITY }
    }
}

/// `sqrt a`, or an infinite bound when the bound on `a` cannot exclude negative values.
fn sqrt(a: Bounded) -> Bounded {
    if a.v >= a.e && a.e.is_finite() {
        a.sqrt()
    } else {
        Bounded { v: a.v.max(0.0).sqrt(), e: f64::INFINITY }
    }
}

/// The crate's `f32` exponential (the softmax kernels' and the decoder's): relative error
/// [`CRATE_EXP_F32_REL`] on `[-86.5, 88.7]`; below `-86.5` it flushes to 0, which is within
/// `e^{-86.5}` absolute of the true value.
fn crate_exp(x: Bounded) -> Bounded {
    let flush = (-86.5f64).exp();
    if x.v + x.e < -86.5 {
        return Bounded { v: x.v.exp(), e: (x.v + x.e).exp() + flush };
    }
    let mut r = x.exp_with_relative_error(CRATE_EXP_F32_REL);
    if x.v - x.e < -86.5 {
        r.e += flush;
    }
    r
}

/// `phi(x) = x + 1` (x > 0) or `expf(x)`: both branches have slope at most 1 and meet at 0, so a
/// computed input off by `e` (possibly on the other side of 0) moves `phi` by at most `e`; then
/// the branch's own rounding, `u` of the addition or `2 u` of `expf`, relative to the result.
fn bounded_phi(x: Bounded) -> Bounded {
    let v = if x.v > 0.0 { x.v + 1.0 } else { x.v.exp() };
    Bounded { v, e: x.e + 2.0 * U32 * (v + x.e) + U32 * (x.v.abs() + x.e + 1.0) }
}

/// The crate's GELU at a computed input: within `4 eps (1 + |u|)` = `8 u (1 + |u|)` of the exact
/// tanh-form GELU at its input (the bound model/gelu.rs documents and checks on every
/// instruction-set variant), plus the propagated input error times the largest slope.
fn bounded_gelu(x: Bounded) -> Bounded {
    let k = (2.0 / std::f64::consts::PI).sqrt();
    let v = 0.5 * x.v * (1.0 + (k * (x.v + 0.044715 * x.v * x.v * x.v)).tanh());
    Bounded { v, e: GELU_LIPSCHITZ * x.e + 8.0 * U32 * (1.0 + x.v.abs() + x.e) }
}

/// `y = x W` for `x` (`d_in`) bounded and `W` (`d_in x d_out`) exact `f32`.
fn matvec(x: &[Bounded], w: &[f32], d_out: usize) -> Vec<Bounded> {
    (0..d_out)
        .map(|j| {
            let column: Vec<Bounded> = (0..x.len()).map(|p| Bounded::exact(w[p * d_out + j])).collect();
            dot(x, &column)
        })
        .collect()
}

/// `norm(x)` of one row (`model::norm`): `mu = (sum x) (1/d)` (LayerNorm), `var = sum (x - mu)^2 (1/d)`,
/// `r = 1 / sqrt(var + eps)`, `y = (g (x - mu)) r (+ b)`; `1/d` and `eps` are the `f32` constants.
fn bounded_norm(kind: NormKind, params: &[f32], x: &[Bounded]) -> Vec<Bounded> {
    if kind == NormKind::None {
        return x.to_vec();
    }
    let d = x.len();
    let inv_d = div(Bounded::exact(1.0), Bounded::exact(d as f32));
    let mu = if kind == NormKind::Layer { sum(x.iter().copied()).mul(inv_d) } else { Bounded::exact(0.0) };
    let centered: Vec<Bounded> = x.iter().map(|v| v.sub(mu)).collect();
    let var = sum(centered.iter().map(|c| c.mul(*c))).mul(inv_d);
    let eps = Bounded::exact(sd_attention::model::norm::NORM_EPS as f32);
    let r = div(Bounded::exact(1.0), sqrt(var.add(eps)));
    (0..d)
        .map(|j| {
            let y = Bounded::exact(params[j]).mul(centered[j]).mul(r);
            if kind == NormKind::Layer {
                y.add(Bounded::exact(params[d + j]))
            } else {
                y
            }
        })
        .collect()
}

/// The model's logits (`n x 256`) in [`Bounded`] arithmetic: the `f64` value of every quantity on
/// the `f32` parameters, and a bound on the error of any `f32` evaluation that performs the same
/// operations in any order of summation, with or without fused multiply-adds
/// (tests/common/rounding.rs). Operation by operation as the kernels compute them:
/// * embedding `E[t] + P[i]` (one addition; the sinusoidal table is the same rounded `f32` values
///   on both paths, so exact inputs here); norms as [`bounded_norm`]; every projection a dot
///   product;
/// * softmax and S-D heads: logits `(q_i . k_j) s` (the scale `s` the `f32` value both use; S-D
///   `q = [a | b | c]`, `k = [b | -a | -c]`, whose products are those of the decoder's
///   `[-b | a | -c] . [a | b | c]` up to sign, in another order), the row maximum `m` (its error
///   cancels: every weight carries the same factor `exp(m - m')` into numerator and denominator,
///   and the relative rounding bounds do not depend on scale, so `m` is taken exact),
///   weights through the crate's exp ([`crate_exp`]), their sum `S`, `o = (sum_j w_j v_j) (1/S)`.
///   One pass: the parallel kernel's key tile holds all `n <= 512` keys, and the decoder reads the
///   whole cache at once;
/// * linear heads: `o = (sum_{j<=i, p} phi(q_p) phi(k_jp) v_j) / (sum_{j<=i, p} phi(q_p) phi(k_jp) + eps)`.
///   The chunked kernel and the recurrent step associate these `N = (i + 1) d_head` triple products
///   differently (`phi(q) (sum_j phi(k_j) v_j)` against `(phi(q) . phi(k_j)) v_j` inside a chunk,
///   plus the carried sums); along any of them a term meets its two products and at most
///   `i + d_head + 1 <= N + 1` additions, so the error is at most that of the plain sum of the
///   rounded triple products ([`sum`]: `gamma(N - 1)` plus two roundings per product) plus
///   `gamma(2)` of the magnitudes for the extra additions (taken as `gamma(4)`);
/// * `m = x + o W_O`, MLP `gelu(h W_1 + b_1) W_2 + b_2` ([`bounded_gelu`]), `x = m + y`; the final
///   norm; the logits `f . E[v]` (tied) or `f W_U`.
fn bounded_logits(
    config: &ModelConfig,
    layout: &sd_attention::model::layout::ParamLayout,
    p: &[f32],
    tokens: &[u8],
) -> Vec<Vec<Bounded>> {
    let (d, h, dh, n) = (config.d_model, config.n_heads, config.d_head, tokens.len());
    let hw = h * dh;
    let slice = |r: &std::ops::Range<usize>| &p[r.clone()];
    let mut sinusoid = vec![0.0f32; config.context_len * d];
    sd_attention::model::embedding::sinusoidal_positions(config.context_len, d, &mut sinusoid).unwrap();
    let mut x: Vec<Vec<Bounded>> = (0..n)
        .map(|i| {
            (0..d)
                .map(|j| {
                    let e = Bounded::exact(p[layout.embedding.start + tokens[i] as usize * d + j]);
                    let pos = match config.positions {
                        PositionKind::Learned => p[layout.positions.start + i * d + j],
                        PositionKind::Sinusoidal => sinusoid[i * d + j],
                    };
                    e.add(Bounded::exact(pos))
                })
                .collect()
        })
        .collect();
    let eps_linear = Bounded::exact(sd_attention::attention::linear::DEFAULT_EPS as f32);
    for (l, off) in layout.layers.iter().enumerate() {
        let kind = config.attention[l];
        let a: Vec<Vec<Bounded>> =
            x.iter().map(|row| bounded_norm(config.norm, slice(&off.norm1), row)).collect();
        let v: Vec<Vec<Bounded>> = a.iter().map(|row| matvec(row, slice(&off.w_v), hw)).collect();
        let theta = slice(&off.attention);
        let mut o = vec![vec![Bounded::exact(0.0); hw]; n];
        match kind {
            kind if kind.is_linear() => {
                let qw = match kind {
                    AttentionKind::LinearQk { qk_width } => qk_width,
                    _ => dh,
                };
                let q: Vec<Vec<Bounded>> =
                    a.iter().map(|r| matvec(r, &theta[..d * h * qw], h * qw)).collect();
                let k: Vec<Vec<Bounded>> =
                    a.iter().map(|r| matvec(r, &theta[d * h * qw..], h * qw)).collect();
                for t in 0..h {
                    for i in 0..n {
                        let phi_q: Vec<Bounded> = (0..qw).map(|p| bounded_phi(q[i][t * qw + p])).collect();
                        let terms = |c: Option<usize>| {
                            let mut all = Vec::new();
                            for j in 0..=i {
                                for pp in 0..qw {
                                    let w = phi_q[pp].mul(bounded_phi(k[j][t * qw + pp]));
                                    all.push(match c {
                                        Some(c) => w.mul(v[j][t * dh + c]),
                                        None => w,
                                    });
                                }
                            }
                            let mag: f64 = all.iter().map(|b| b.mag()).sum();
                            let mut s = sum(all);
                            s.e += gamma(4) * mag;
                            s
                        };
                        let den = terms(None).add(eps_linear);
                        for c in 0..dh {
                            o[i][t * dh + c] = div(terms(Some(c)), den);
                        }
                    }
                }
            }
            _ => {
                let (w, q, k): (usize, Vec<Vec<Bounded>>, Vec<Vec<Bounded>>) = match kind {
                    AttentionKind::Sd { routing_rank: r, filtering_rank: f } => {
                        let proj_u = |row: &Vec<Bounded>| matvec(row, &theta[..d * h * r], h * r);
                        let proj_v =
                            |row: &Vec<Bounded>| matvec(row, &theta[d * h * r..2 * d * h * r], h * r);
                        let proj_c = |row: &Vec<Bounded>| matvec(row, &theta[2 * d * h * r..], h * f);
                        let (mut q, mut k) = (Vec::new(), Vec::new());
                        for row in &a {
                            let (au, av, ac) = (proj_u(row), proj_v(row), proj_c(row));
                            let (mut qr, mut kr) = (Vec::new(), Vec::new());
                            for t in 0..h {
                                let (at, bt, ct) = (
                                    &au[t * r..(t + 1) * r],
                                    &av[t * r..(t + 1) * r],
                                    &ac[t * f..(t + 1) * f],
                                );
                                qr.extend(at.iter().chain(bt).chain(ct).copied());
                                kr.extend(
                                    bt.iter()
                                        .copied()
                                        .chain(at.iter().map(|&b| neg(b)))
                                        .chain(ct.iter().map(|&b| neg(b))),
                                );
                            }
                            q.push(qr);
                            k.push(kr);
                        }
                        (2 * r + f, q, k)
                    }
                    _ => (
                        dh,
                        a.iter().map(|r| matvec(r, &theta[..d * hw], hw)).collect(),
                        a.iter().map(|r| matvec(r, &theta[d * hw..], hw)).collect(),
                    ),
                };
                let scale = Bounded::exact(sd_attention::attention::softmax::default_scale::<f32>(w));
                for t in 0..h {
                    for i in 0..n {
                        let qi = &q[i][t * w..(t + 1) * w];
                        let logits: Vec<Bounded> =
                            (0..=i).map(|j| dot(qi, &k[j][t * w..(t + 1) * w]).mul(scale)).collect();
                        // The computed maximum m' differs from the exact one, but the output is a ratio in
                        // which the common factor exp(m - m') of every weight cancels (the relative
                        // rounding bounds do not depend on the scale): take it exact.
                        let max = Bounded { v: logits.iter().map(|b| b.v).fold(f64::MIN, f64::max), e: 0.0 };
                        let weights: Vec<Bounded> = logits.iter().map(|&b| crate_exp(b.sub(max))).collect();
                        let inverse = div(Bounded::exact(1.0), sum(weights.iter().copied()));
                        for c in 0..dh {
                            let column: Vec<Bounded> = (0..=i).map(|j| v[j][t * dh + c]).collect();
                            o[i][t * dh + c] = dot(&weights, &column).mul(inverse);
                        }
                    }
                }
            }
        }
        for i in 0..n {
            let mixed = matvec(&o[i], slice(&off.w_o), d);
            let m: Vec<Bounded> = x[i].iter().zip(&mixed).map(|(a, b)| a.add(*b)).collect();
            let hn = bounded_norm(config.norm, slice(&off.norm2), &m);
            let (b1, b2) = (slice(&off.b_1), slice(&off.b_2));
            let hidden: Vec<Bounded> = matvec(&hn, slice(&off.w_1), config.d_mlp)
                .into_iter()
                .zip(b1)
                .map(|(u, &b)| bounded_gelu(u.add(Bounded::exact(b))))
                .collect();
            let y: Vec<Bounded> = matvec(&hidden, slice(&off.w_2), d)
                .into_iter()
                .zip(b2)
                .map(|(u, &b)| u.add(Bounded::exact(b)))
                .collect();
            x[i] = m.iter().zip(&y).map(|(a, b)| a.add(*b)).collect();
        }
    }
    x.iter()
        .map(|row| {
            let f = bounded_norm(config.norm, slice(&layout.final_norm), row);
            if config.tied_unembedding {
                (0..VOCAB)
                    .map(|t| {
                        let e: Vec<Bounded> =
                            (0..d).map(|j| Bounded::exact(p[layout.embedding.start + t * d + j])).collect();
                        dot(&f, &e)
                    })
                    .collect()
            } else {
                matvec(&f, slice(&layout.unembedding), VOCAB)
            }
        })
        .collect()
}

/// f32: at every position, the decoder's logits and the parallel forward's are each within the
/// derived bound ([`bounded_logits`]; plus the `f64` reference's own rounding,
/// [`Bounded::tolerance`]) of the `f64` value on the same `f32` parameters, so within twice that of
/// each other. Printed: the largest ratio of a difference to its bound (how loose the worst case is).
///
/// The bound is a worst case compounded operation by operation: each layer multiplies it by the
/// absolute row sums of its weights, so it is informative (well below the logits' size) for up to
/// two layers of entries `N(0, 0.3^2)` and widths up to 8, the regime tested here (deeper models
/// are covered in f64 above). Where a divisor's bound cannot exclude 0 the comparison is vacuous;
/// the test counts those and requires them to be rare.
#[test]
fn f32_decoding_within_the_derived_bound_of_the_parallel_forward() {
    let ratios = std::cell::RefCell::new((0.0f64, 0.0f64, 0.0f64, 0usize, 0usize, 0.0f64));
    let relative_bounds = std::cell::RefCell::new(Vec::new());
    let (vacuous_cases, all_cases) = (std::cell::RefCell::new(0usize), std::cell::RefCell::new(0usize));
    let strategy = case_strategy(false)
        .prop_filter("small enough for the bounded reference", |(c, _, _, _)| {
            c.d_model <= 8 && c.context_len <= 10 && c.n_layers <= 2
        });
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(48));
    runner
        .run(&strategy, |(config, tokens, split, seed)| {
            let m64 = Model::<f64>::with_attention(config.clone()).unwrap();
            let m32 = Model::<f32>::with_attention(config.clone()).unwrap();
            let p32: Vec<f32> = params_with_std(&m64, seed, 0.3).iter().map(|&v| v as f32).collect();
            let parallel = parallel_logits(&m32, &p32, &tokens);
            let decoded = decoded_logits(&config, &p32, &tokens, split);
            let reference = bounded_logits(&config, m64.layout(), &p32, &tokens);
            let mut r = ratios.borrow_mut();
            let vacuous_before = r.3;
            for (i, row) in reference.iter().enumerate() {
                for (v, b) in row.iter().enumerate() {
                    let tol = b.tolerance();
                    r.4 += 1;
                    if !tol.is_finite() {
                        r.3 += 1;
                        continue;
                    }
                    r.5 = r.5.max(tol / b.v.abs().max(1.0));
                    relative_bounds.borrow_mut().push(tol / b.v.abs().max(1.0));
                    let (dp, dd) = (
                        (parallel[i * VOCAB + v] as f64 - b.v).abs(),
                        (decoded[i * VOCAB + v] as f64 - b.v).abs(),
                    );
                    let between = (parallel[i * VOCAB + v] as f64 - decoded[i * VOCAB + v] as f64).abs();
                    prop_assert!(dp <= tol, "parallel, position {i} logit {v}: {dp:e} > {tol:e}");
                    prop_assert!(
                        dd <= tol,
                        "decoder, position {i} logit {v}: {dd:e} > {tol:e} (split {split})"
                    );
                    r.0 = r.0.max(dp / tol);
                    r.1 = r.1.max(dd / tol);
                    r.2 = r.2.max(between / (2.0 * tol));
                }
            }
            *vacuous_cases.borrow_mut() += (r.3 > vacuous_before) as usize;
            *all_cases.borrow_mut() += 1;
            Ok(())
        })
        .unwrap();
    let r = ratios.borrow();
    println!(
        "f32: largest |parallel - f64| / bound {:.3}, |decoder - f64| / bound {:.3}, |decoder - parallel| / (2 bound) {:.3}; \
         largest bound / max(1, |logit|) {:.2e}; {} of {} logits without a finite bound",
        r.0, r.1, r.2, r.5, r.3, r.4
    );
    let (vacuous, cases) = (vacuous_cases.into_inner(), all_cases.into_inner());
    println!("f32: {vacuous} of {cases} cases had a logit without a finite bound");
    assert!(vacuous * 4 <= cases, "too many cases without a finite bound: {vacuous} of {cases}");
    let mut rel = relative_bounds.into_inner();
    rel.sort_by(f64::total_cmp);
    let median = rel[rel.len() / 2];
    let p90 = rel[rel.len() * 9 / 10];
    println!("f32: bound / max(1, |logit|): median {median:.2e}, 90th percentile {p90:.2e}");
    // Informative: for most logits the bound is far below the logits' size (a wrong key or
    // position changes them by O(1)).
    assert!(median < 1e-3, "the derived bound is too loose to test anything: median {median:e}");
}

// ---------------------------------------------------------------------------------------------
// The comparison can fail, checkpoints, sampling, bad input.

fn mixed_config(context_len: usize) -> ModelConfig {
    ModelConfig {
        d_model: 8,
        n_layers: 3,
        n_heads: 2,
        d_head: 3,
        d_mlp: 10,
        context_len,
        attention: vec![
            AttentionKind::Softmax,
            AttentionKind::Sd { routing_rank: 2, filtering_rank: 1 },
            AttentionKind::Linear,
        ],
        norm: NormKind::Rms,
        positions: PositionKind::Learned,
        tied_unembedding: true,
    }
}

/// A decoder that reads one wrong parameter (a key weight of the first layer) is caught by the
/// 1e-12 comparison at every position after the first (where the key meets another query): the
/// equality test can fail.
#[test]
fn a_wrong_parameter_is_caught() {
    let config = mixed_config(12);
    let model = Model::<f64>::with_attention(config.clone()).unwrap();
    let params = params_for(&model, 5);
    let tokens = b"All the world";
    let tokens = &tokens[..12];
    let expected = parallel_logits(&model, &params, tokens);
    let mut wrong = params.clone();
    let key = model.layout().layers[0].attention.start + config.d_model * config.n_heads * config.d_head;
    wrong[key] += 1e-3;
    let got = decoded_logits(&config, &wrong, tokens, 4);
    let errors = position_errors(&got, &expected);
    assert!(errors[1..].iter().all(|&e| e > 1e-9), "{errors:?}");
}

/// A trained-format checkpoint viewed in place decodes exactly as the parameters it was made from.
#[test]
fn checkpoint_view_decodes_like_its_parameters() {
    let config = mixed_config(10);
    let model = Model::<f64>::with_attention(config.clone()).unwrap();
    let p32: Vec<f32> = params_for(&model, 9).iter().map(|&v| v as f32).collect();
    let bytes = Checkpoint { config: config.clone(), params: p32.clone(), optimizer: None }.encode().unwrap();
    // An 8-aligned copy (a Vec<u8> need not be aligned for f32).
    let mut words = vec![0u64; bytes.len().div_ceil(8)];
    let aligned: &mut [u8] = unsafe_free_bytes(&mut words, bytes.len());
    aligned.copy_from_slice(&bytes);
    let view = CheckpointView::new(aligned).unwrap();
    assert_eq!(view.param_count(), p32.len());
    assert_eq!(view.shape().fingerprint(), ModelShape::of_config(&config).fingerprint());
    let in_place = view.params::<f32>().unwrap();
    assert_eq!(in_place, &p32[..]);
    assert_eq!(
        in_place.as_ptr() as usize,
        aligned[view.param_bytes().as_ptr() as usize - aligned.as_ptr() as usize..].as_ptr() as usize
    );
    let tokens = b"Now is the";
    assert_eq!(decoded_logits(&config, in_place, tokens, 3), decoded_logits(&config, &p32, tokens, 3));
}

/// The bytes of `words` (8-aligned), first `len`, through a safe copy-free path: `u64`s viewed by
/// `to_ne_bytes` would copy, so this uses `align_to`, whose middle part is the whole slice for `u8`.
fn unsafe_free_bytes(words: &mut [u64], len: usize) -> &mut [u8] {
    // SAFETY: `u8` has alignment 1 and no invalid bit patterns, so `align_to_mut::<u8>` yields the
    // whole region as the middle slice; it borrows `words` mutably for the returned lifetime.
    let (head, bytes, tail) = unsafe { words.align_to_mut::<u8>() };
    assert!(head.is_empty() && tail.is_empty());
    &mut bytes[..len]
}

/// Sampling: greedy is the argmax; a seed fixes the draws; top-k keeps the k largest; top-p keeps
/// the smallest prefix reaching p; temperature flattens (a low-logit token appears at high
/// temperature, never at a tiny one).
#[test]
fn sampling() {
    let logits: Vec<f32> = (0..256).map(|i| ((i * 37) % 101) as f32 * 0.05).collect();
    let best = (0..256).max_by(|&a, &b| logits[a].partial_cmp(&logits[b]).unwrap().then(b.cmp(&a))).unwrap();
    assert_eq!(Sampler::greedy().sample(&logits).unwrap(), best);
    assert_eq!(Sampler::new(0.0, 0, 1.0, 3).unwrap().sample(&logits).unwrap(), best);
    let draws = |t: f64, k: usize, p: f64, seed: u64| {
        let mut s = Sampler::new(t, k, p, seed).unwrap();
        (0..400).map(|_| s.sample(&logits).unwrap()).collect::<Vec<_>>()
    };
    assert_eq!(draws(0.8, 0, 1.0, 7), draws(0.8, 0, 1.0, 7));
    assert_ne!(draws(0.8, 0, 1.0, 7), draws(0.8, 0, 1.0, 8));
    let mut sorted: Vec<usize> = (0..256).collect();
    sorted.sort_by(|&a, &b| logits[b].partial_cmp(&logits[a]).unwrap().then(a.cmp(&b)));
    let top5: std::collections::BTreeSet<usize> = sorted[..5].iter().copied().collect();
    assert!(draws(1.0, 5, 1.0, 1).iter().all(|i| top5.contains(i)));
    // top-p: the kept prefix by the f64 weights of temperature 1.
    let max = logits.iter().copied().fold(f32::MIN, f32::max) as f64;
    let weights: Vec<f64> = sorted.iter().map(|&i| (logits[i] as f64 - max).exp()).collect();
    let total: f64 = weights.iter().sum();
    let mut running = 0.0;
    let kept = weights
        .iter()
        .position(|w| {
            running += w;
            running >= 0.3 * total
        })
        .unwrap()
        + 1;
    let nucleus: std::collections::BTreeSet<usize> = sorted[..kept].iter().copied().collect();
    let got = draws(1.0, 0, 0.3, 2);
    assert!(got.iter().all(|i| nucleus.contains(i)));
    assert!(nucleus.len() > 1 && got.iter().collect::<std::collections::BTreeSet<_>>().len() > 1);
    let worst = sorted[255];
    assert!(draws(100.0, 0, 1.0, 4).contains(&worst) || draws(100.0, 0, 1.0, 5).contains(&worst));
    assert!(!draws(0.01, 0, 1.0, 4).contains(&worst));
    // Bad parameters and logits.
    assert!(Sampler::new(-1.0, 0, 1.0, 0).is_err() && Sampler::new(f64::NAN, 0, 1.0, 0).is_err());
    assert!(Sampler::new(1.0, 0, 0.0, 0).is_err() && Sampler::new(1.0, 0, 1.5, 0).is_err());
    let mut s = Sampler::new(1.0, 0, 1.0, 0).unwrap();
    assert_eq!(s.sample(&[0.0f32, f32::NAN]), Err(Error::NonFinite { what: "logits", index: 1 }));
    assert!(matches!(s.sample::<f32>(&[]), Err(Error::Empty { .. })));
    assert!(matches!(s.sample(&vec![0.0f32; 257]), Err(Error::ShapeMismatch { .. })));
}

/// Each kind of bad input is a typed error, and a rejected call leaves the state as it was.
#[test]
fn bad_input_is_a_typed_error() {
    let config = mixed_config(6);
    let shape = ModelShape::of_config(&config);
    let model = Model::<f64>::with_attention(config.clone()).unwrap();
    let params = params_for(&model, 1);
    let view = ModelView::new(shape, &params).unwrap();
    let mut state = vec![0.0; state_len(&shape).unwrap()];
    let mut workspace = vec![0.0; workspace_len(&shape, 6).unwrap()];
    let mut decoder =
        Decoder::new(view, DecoderState::new(&shape, &mut state).unwrap(), &mut workspace).unwrap();
    // A prompt longer than the context; an empty one.
    assert_eq!(
        decoder.prefill(b"Macbeth"),
        Err(Error::ContextOverflow { context: 6, tokens: 7 }).map(|_: ()| &[][..])
    );
    assert!(matches!(decoder.prefill(b""), Err(Error::Empty { what: "tokens" })));
    decoder.prefill(b"Ham").unwrap();
    // A token out of range.
    assert!(matches!(decoder.step(256), Err(Error::TokenOutOfRange { token: 256, vocab: 256 })));
    assert!(matches!(decoder.step(usize::MAX), Err(Error::TokenOutOfRange { .. })));
    assert_eq!(decoder.position(), 3);
    for t in b"let" {
        decoder.step(*t as usize).unwrap();
    }
    // The end of the context.
    assert!(matches!(decoder.step(b'!' as usize), Err(Error::ContextOverflow { context: 6, tokens: 7 })));
    assert_eq!(decoder.position(), 6);
    // A state made for another config (a different context).
    let other_config = mixed_config(7);
    let other = ModelShape::of_config(&other_config);
    let mut other_buf = vec![0.0; state_len(&other).unwrap()];
    let other_state = DecoderState::new(&other, &mut other_buf).unwrap();
    let mut ws = vec![0.0; workspace_len(&shape, 6).unwrap()];
    assert!(matches!(
        Decoder::new(view, other_state, &mut ws),
        Err(Error::InvalidParameter { what: "state", .. })
    ));
    // A short state buffer, a short workspace, parameters of the wrong length.
    let mut short = vec![0.0; state_len(&shape).unwrap() - 1];
    assert!(matches!(DecoderState::new(&shape, &mut short), Err(Error::ShapeMismatch { .. })));
    let mut buf = vec![0.0; state_len(&shape).unwrap()];
    let mut tiny = vec![0.0; 3];
    assert!(matches!(
        Decoder::new(view, DecoderState::new(&shape, &mut buf).unwrap(), &mut tiny),
        Err(Error::WorkspaceTooSmall { .. })
    ));
    assert!(matches!(ModelView::new(shape, &params[1..]), Err(Error::ShapeMismatch { .. })));
    // A prompt longer than the workspace was sized for.
    let mut buf = vec![0.0; state_len(&shape).unwrap()];
    let mut step_only = vec![0.0; sd_attention::inference::step_workspace_len(&shape).unwrap()];
    let mut d2 = Decoder::new(view, DecoderState::new(&shape, &mut buf).unwrap(), &mut step_only).unwrap();
    assert!(matches!(d2.prefill(b"Lear"), Err(Error::WorkspaceTooSmall { .. })));
    assert_eq!(d2.position(), 0);
}

/// A checkpoint whose header claims more than its bytes hold is rejected by the view before
/// anything is read or allocated: a huge layer count, huge dimensions, an enormous parameter
/// count; and a truncated or corrupted file.
#[test]
fn checkpoint_headers_claiming_too_much_are_rejected() {
    let config = mixed_config(5);
    let p: Vec<f32> = vec![0.25; config.param_counts().unwrap().total];
    let bytes = Checkpoint { config, params: p, optimizer: None }.encode().unwrap();
    assert!(CheckpointView::new(&bytes).is_ok());
    let set = |at: usize, value: u32| {
        let mut b = bytes.clone();
        b[at..at + 4].copy_from_slice(&value.to_le_bytes());
        b
    };
    let malformed = |b: &[u8]| matches!(CheckpointView::new(b), Err(Error::Malformed { .. }));
    assert!(malformed(&set(20, u32::MAX))); // n_layers
    assert!(malformed(&set(20, 4))); // one more layer than the table holds
    assert!(malformed(&set(16, u32::MAX))); // d_model: parameter data far beyond the bytes
    assert!(malformed(&set(32, 1 << 30))); // d_mlp
    assert!(malformed(&set(36, u32::MAX))); // context
    assert!(malformed(&bytes[..bytes.len() - 1]));
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(malformed(&longer));
    let mut flipped = bytes.clone();
    flipped[100] ^= 1; // the buffer's stored element count
    assert!(malformed(&flipped));
    // A changed parameter byte leaves the file well-formed: the checksum over the whole file differs.
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 1;
    let covered = bytes.len() - 4;
    assert_eq!(
        CheckpointView::new(&flipped).err(),
        Some(Error::ChecksumMismatch { what: "checkpoint", covered })
    );
    assert!(malformed(b"SDATCKPT"));
}
