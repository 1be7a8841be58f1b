//! The model with its real attention kernels (`model::attention::AttentionMixer`): each kind against
//! the merged single-head kernels, whole-model gradients by central differences in f64, f32 against
//! f64, and the recurrent ELU+1 path (`attention::linear::State::step`, token by token) against the
//! parallel forward of a briefly trained all-linear model.
#![cfg(feature = "alloc")]

mod common;
use common::model::*;
use sd_attention::attention::linear::State;
use sd_attention::attention::sd::AttentionHead;
use sd_attention::attention::Causality;
use sd_attention::model::attention::AttentionMixer;
use sd_attention::model::config::{AttentionKind, ModelConfig, PositionKind};
use sd_attention::model::embedding::{embed_forward, VOCAB};
use sd_attention::model::linear::linear_forward;
use sd_attention::model::mlp::{mlp_cache_len, mlp_forward, MlpParams};
use sd_attention::model::norm::{norm_forward, norm_stats_len, NormKind};
use sd_attention::model::sublayer::{AttentionSublayer, SublayerDims};
use sd_attention::model::transformer::Model;
use sd_attention::train::adamw::{AdamW, AdamWConfig};

const SD: AttentionKind = AttentionKind::Sd { routing_rank: 2, filtering_rank: 1 };
/// Linear attention with a query/key width (5) other than the tests' d_head (4 or 3).
const LINEAR_QK: AttentionKind = AttentionKind::LinearQk { qk_width: 5 };

fn tiny(kind: AttentionKind, norm: NormKind) -> ModelConfig {
    ModelConfig::uniform(8, 2, 2, 4, 16, 7, kind, norm, PositionKind::Learned, true)
}

/// The mixer of each kind against the merged single-head kernels: for every head `t`, the
/// mixer's columns must equal `AttentionHead` (standard or S-D, causal) on the same tokens with
/// that head's parameters and `W_V` the identity on the head's value block.
#[test]
fn mixer_heads_match_the_single_head_kernels() {
    let dims = SublayerDims { d_model: 6, n_heads: 3, d_head: 4 };
    let n = 9;
    let (d, h, dh) = (dims.d_model, dims.n_heads, dims.d_head);
    // Filtering rank 0 (an empty C block) is a fuzz regression: it made `chunks_exact(0)` panic.
    let kinds = [
        AttentionKind::Softmax,
        AttentionKind::Sd { routing_rank: 2, filtering_rank: 3 },
        AttentionKind::Sd { routing_rank: 2, filtering_rank: 0 },
    ];
    for kind in kinds {
        let mixer = AttentionMixer::new(dims, kind).unwrap();
        let p = AttentionSublayer::<f64>::param_len(&mixer);
        let params = normal_vec(p, 0.7, 1);
        let input = normal_vec(n * d, 1.0, 2);
        let values = normal_vec(n * h * dh, 1.0, 3);
        let mut out = vec![0.0; n * h * dh];
        let mut cache = vec![0.0; AttentionSublayer::<f64>::cache_len(&mixer, n)];
        let mut ws = vec![0.0; AttentionSublayer::<f64>::workspace_len(&mixer, n)];
        mixer.forward(n, &params, &input, &values, &mut out, &mut cache, &mut ws).unwrap();
        let w = mixer.qk_width();
        for t in 0..h {
            // Reference head on tokens [A | V_t] (width d + dh) so that W_V selects V_t exactly.
            let wide = d + dh;
            let x: Vec<f64> = (0..n)
                .flat_map(|i| {
                    let mut row = input[i * d..(i + 1) * d].to_vec();
                    row.extend_from_slice(&values[i * h * dh + t * dh..i * h * dh + (t + 1) * dh]);
                    row
                })
                .collect();
            let (mut wq, mut wk) = (vec![0.0; d * w], vec![0.0; d * w]);
            let mut fws = vec![0.0; mixer.head_factors_workspace_len()];
            mixer.head_factors(&params, t, &mut wq, &mut wk, &mut fws).unwrap();
            let (head, head_params) = match kind {
                AttentionKind::Sd { routing_rank: r, filtering_rank: q } => {
                    // Recover U_t, V_t, C_t from W_Q' = [U | V | C] (zero rows for the value part).
                    let head = AttentionHead::<f64>::routing_filtering(wide, r, q, dh, Causality::Causal);
                    let mut hp = vec![0.0; head.param_len()];
                    for (name, col0, cols) in [("u", 0, r), ("v", r, r), ("c", 2 * r, q)] {
                        let b = head.param_block(name).unwrap();
                        for i in 0..d {
                            for j in 0..cols {
                                hp[b.offset + i * cols + j] = wq[i * w + col0 + j];
                            }
                        }
                    }
                    set_identity_values(&head, d, dh, &mut hp);
                    (head, hp)
                }
                _ => {
                    let head = AttentionHead::<f64>::standard(wide, dh, dh, Causality::Causal);
                    let mut hp = vec![0.0; head.param_len()];
                    for (name, src) in [("w_q", &wq), ("w_k", &wk)] {
                        let b = head.param_block(name).unwrap();
                        hp[b.offset..b.offset + d * dh].copy_from_slice(src);
                    }
                    set_identity_values(&head, d, dh, &mut hp);
                    (head, hp)
                }
            };
            let mut reference = vec![0.0; n * dh];
            let mut lse = vec![0.0; n];
            let mut hws = vec![0.0; head.forward_workspace_len(n)];
            head.forward(n, &x, &head_params, &mut reference, &mut lse, &mut hws).unwrap();
            for i in 0..n {
                for c in 0..dh {
                    let (ours, theirs) = (out[i * h * dh + t * dh + c], reference[i * dh + c]);
                    assert!((ours - theirs).abs() < 1e-13, "{kind:?} head {t} ({i},{c}): {ours} vs {theirs}");
                }
            }
            // The factors give the head's kernel: W_Q' W_K'^T equals the S-D head's dense S + D
            // (restricted to the token block).
            if let AttentionKind::Sd { .. } = kind {
                let mut dense = vec![0.0; wide * wide];
                head.kernel_dense(&head_params, &mut dense).unwrap();
                for i in 0..d {
                    for j in 0..d {
                        let m: f64 = (0..w).map(|c| wq[i * w + c] * wk[j * w + c]).sum();
                        assert!((m - dense[i * wide + j]).abs() < 1e-13);
                    }
                }
            }
        }
    }
}

fn set_identity_values(head: &AttentionHead<f64>, d: usize, dh: usize, hp: &mut [f64]) {
    let b = head.param_block("w_v").unwrap();
    for c in 0..dh {
        hp[b.offset + (d + c) * dh + c] = 1.0;
    }
}

#[test]
fn mixer_rejects_bad_shapes() {
    let dims = SublayerDims { d_model: 4, n_heads: 2, d_head: 3 };
    assert!(AttentionMixer::new(dims, AttentionKind::Sd { routing_rank: 0, filtering_rank: 1 }).is_err());
    assert!(AttentionMixer::new(SublayerDims { d_head: 0, ..dims }, AttentionKind::Softmax).is_err());
    assert!(AttentionMixer::new(dims, AttentionKind::LinearQk { qk_width: 0 }).is_err());
    for kind in [AttentionKind::Softmax, SD, AttentionKind::Linear, LINEAR_QK] {
        let m = AttentionMixer::new(dims, kind).unwrap();
        let n = 5;
        let p = vec![0.0f64; AttentionSublayer::<f64>::param_len(&m)];
        let (x, v) = (vec![0.0; n * 4], vec![0.0; n * 6]);
        let mut out = vec![0.0; n * 6];
        let mut cache = vec![0.0; AttentionSublayer::<f64>::cache_len(&m, n)];
        let mut ws = vec![0.0; AttentionSublayer::<f64>::workspace_len(&m, n)];
        assert!(m.forward(n, &p[1..], &x, &v, &mut out, &mut cache, &mut ws).is_err());
        assert!(m.forward(n, &p, &x[1..], &v, &mut out, &mut cache, &mut ws).is_err());
        assert!(m.forward(n, &p, &x, &v, &mut out[1..], &mut cache, &mut ws).is_err());
        assert!(m.forward(n, &p, &x, &v, &mut out, &mut cache, &mut ws[1..]).is_err());
        m.forward(n, &p, &x, &v, &mut out, &mut cache, &mut ws).unwrap();
        let (mut dx, mut dv, mut dp) = (vec![0.0; n * 4], vec![0.0; n * 6], vec![0.0; p.len()]);
        assert!(m.backward(n, &p, &x, &v, &cache, &out, &mut dx, &mut dv, &mut dp[1..], &mut ws).is_err());
        m.backward(n, &p, &x, &v, &cache, &out, &mut dx, &mut dv, &mut dp, &mut ws).unwrap();
        let mut f = vec![0.0; 4 * m.qk_width()];
        let mut g = f.clone();
        let mut fws = vec![0.0; m.head_factors_workspace_len()];
        assert!(m.head_factors(&p, 2, &mut f, &mut g, &mut fws).is_err());
        // Zero tokens: nothing to do, no error.
        m.forward(0, &p, &[], &[], &mut [], &mut cache, &mut ws).unwrap();
    }
}

/// `forward_batch` / `backward_batch` (S-D: the projections of all rows in one product each way)
/// against one `forward` / `backward` per sequence, for every kind, in f64: outputs, caches,
/// `d_values` to rounding, `d_input` and `d_params` (sums over sequences in another order) to
/// rounding; wrong batched lengths are errors.
#[test]
fn batched_mixer_matches_sequence_by_sequence() {
    let dims = SublayerDims { d_model: 6, n_heads: 2, d_head: 3 };
    let (batch, n) = (3usize, 5usize);
    let (d, hw) = (6usize, 6usize);
    for kind in [AttentionKind::Softmax, SD, AttentionKind::Linear, LINEAR_QK] {
        let m = AttentionMixer::new(dims, kind).unwrap();
        let p = normal_vec(AttentionSublayer::<f64>::param_len(&m), 0.5, 40);
        let (x, v) = (normal_vec(batch * n * d, 1.0, 41), normal_vec(batch * n * hw, 1.0, 42));
        let d_out = normal_vec(batch * n * hw, 1.0, 43);
        let cl = AttentionSublayer::<f64>::cache_len(&m, n);
        // Sequence by sequence.
        let mut ws = vec![0.0; AttentionSublayer::<f64>::workspace_len(&m, n)];
        let (mut out0, mut cache0) = (vec![0.0; batch * n * hw], vec![0.0; batch * cl]);
        let (mut dx0, mut dv0, mut dp0) =
            (vec![0.0; batch * n * d], vec![0.0; batch * n * hw], vec![0.0; p.len()]);
        for b in 0..batch {
            let (rx, rv) = (b * n * d..(b + 1) * n * d, b * n * hw..(b + 1) * n * hw);
            m.forward(
                n,
                &p,
                &x[rx.clone()],
                &v[rv.clone()],
                &mut out0[rv.clone()],
                &mut cache0[b * cl..(b + 1) * cl],
                &mut ws,
            )
            .unwrap();
            m.backward(
                n,
                &p,
                &x[rx.clone()],
                &v[rv.clone()],
                &cache0[b * cl..(b + 1) * cl],
                &d_out[rv.clone()],
                &mut dx0[rx],
                &mut dv0[rv],
                &mut dp0,
                &mut ws,
            )
            .unwrap();
        }
        // Batched.
        let mut ws = vec![0.0; AttentionSublayer::<f64>::batch_workspace_len(&m, batch, n)];
        let (mut out1, mut cache1) = (vec![0.0; batch * n * hw], vec![0.0; batch * cl]);
        let (mut dx1, mut dv1, mut dp1) =
            (vec![0.0; batch * n * d], vec![0.0; batch * n * hw], vec![0.0; p.len()]);
        m.forward_batch(batch, n, &p, &x, &v, &mut out1, &mut cache1, &mut ws).unwrap();
        m.backward_batch(batch, n, &p, &x, &v, &cache1, &d_out, &mut dx1, &mut dv1, &mut dp1, &mut ws)
            .unwrap();
        let close = |a: &[f64], b: &[f64], what: &str| {
            let scale = b.iter().fold(1.0f64, |s, v| s.max(v.abs()));
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                assert!((x - y).abs() <= 1e-12 * scale, "{kind:?} {what}[{i}]: {x} vs {y}");
            }
        };
        close(&out1, &out0, "out");
        close(&cache1, &cache0, "cache");
        close(&dv1, &dv0, "d_values");
        close(&dx1, &dx0, "d_input");
        close(&dp1, &dp0, "d_params");
        // Wrong batched lengths.
        assert!(m.forward_batch(batch, n, &p, &x[1..], &v, &mut out1, &mut cache1, &mut ws).is_err());
        assert!(m.forward_batch(batch, n, &p, &x, &v, &mut out1, &mut cache1[1..], &mut ws).is_err());
        let short = AttentionSublayer::<f64>::batch_workspace_len(&m, batch, n) - 1;
        if kind == SD {
            assert!(m.forward_batch(batch, n, &p, &x, &v, &mut out1, &mut cache1, &mut ws[..short]).is_err());
        }
        assert!(m
            .backward_batch(batch, n, &p, &x, &v, &cache1, &d_out[1..], &mut dx1, &mut dv1, &mut dp1, &mut ws)
            .is_err());
        assert!(m.forward_batch(usize::MAX, 2, &p, &x, &v, &mut out1, &mut cache1, &mut ws).is_err());
    }
}

/// Params at init plus N(0, 0.3^2) noise so that every path carries gradient.
fn perturbed(model: &Model<f64>, seed: u64) -> Vec<f64> {
    let mut params = vec![0.0; model.param_len()];
    model.init_params(seed, &mut params).unwrap();
    for (p, r) in params.iter_mut().zip(normal_vec(model.param_len(), 0.3, seed + 1)) {
        *p += r;
    }
    params
}

/// Relative error of the analytic gradient against central differences on every attention
/// parameter and every 7th other parameter (h = 1e-5).
fn sampled_gradient_error(c: ModelConfig, seed: u64) -> (f64, usize) {
    let model = Model::<f64>::with_attention(c).unwrap();
    let params = perturbed(&model, seed);
    let (batch, seq) = (2, 7);
    let text = b"O Romeo, Romeo! wherefore";
    let (x, y) = (&text[..batch * seq], &text[1..batch * seq + 1]);
    let mut state = model.activations(batch, seq).unwrap();
    model.forward(&params, x, y, &mut state).unwrap();
    let mut grads = vec![0.0; model.param_len()];
    model.backward(&params, &mut state, &mut grads).unwrap();
    let attention: Vec<_> = model.layout().layers.iter().map(|l| l.attention.clone()).collect();
    let indices: Vec<usize> =
        (0..model.param_len()).filter(|i| i % 7 == 0 || attention.iter().any(|r| r.contains(i))).collect();
    let mut probe = model.activations(batch, seq).unwrap();
    let numeric =
        central_differences(&mut |p| model.forward(p, x, y, &mut probe).unwrap(), &params, &indices, 1e-5);
    let analytic: Vec<f64> = indices.iter().map(|&i| grads[i]).collect();
    let attn_analytic: Vec<f64> =
        indices.iter().filter(|i| attention.iter().any(|r| r.contains(i))).map(|&i| grads[i]).collect();
    assert!(attn_analytic.iter().any(|&g| g.abs() > 1e-6), "attention gradients vanish");
    (relative_error(&numeric, &analytic), indices.len())
}

#[test]
fn whole_model_gradient_with_each_kind() {
    let mut mixed = tiny(AttentionKind::Softmax, NormKind::Rms);
    mixed.attention = vec![SD, AttentionKind::Linear];
    let cases = [
        ("softmax, layernorm", tiny(AttentionKind::Softmax, NormKind::Layer)),
        ("S-D, no norm", tiny(SD, NormKind::None)),
        ("linear, rmsnorm", tiny(AttentionKind::Linear, NormKind::Rms)),
        ("linear of query/key width 5, layernorm", tiny(LINEAR_QK, NormKind::Layer)),
        ("S-D then linear, rmsnorm", mixed),
    ];
    for (i, (name, c)) in cases.into_iter().enumerate() {
        let (err, count) = sampled_gradient_error(c, 40 + i as u64);
        println!("gradient check {name}: {count} parameters, rel err {err:.2e}");
        assert!(err < 1e-6, "{name}: {err}");
    }
}

/// f32 against f64 on the same (f32-representable) parameters, each kind.
#[test]
fn f32_matches_f64_with_each_kind() {
    for (i, kind) in [AttentionKind::Softmax, SD, AttentionKind::Linear, LINEAR_QK].into_iter().enumerate() {
        let c = tiny(kind, NormKind::Rms);
        let m64 = Model::<f64>::with_attention(c.clone()).unwrap();
        let m32 = Model::<f32>::with_attention(c).unwrap();
        let p32: Vec<f32> = perturbed(&m64, 70 + i as u64).iter().map(|&v| v as f32).collect();
        let p64: Vec<f64> = common::widen(&p32);
        let text = b"Is this a dagger which I see before me";
        let (batch, seq) = (3, 7);
        let (x, y) = (&text[..batch * seq], &text[1..batch * seq + 1]);
        let mut s32 = m32.activations(batch, seq).unwrap();
        let mut s64 = m64.activations(batch, seq).unwrap();
        let l32 = m32.forward(&p32, x, y, &mut s32).unwrap();
        let l64 = m64.forward(&p64, x, y, &mut s64).unwrap();
        let mut g32 = vec![0.0f32; m32.param_len()];
        let mut g64 = vec![0.0f64; m64.param_len()];
        m32.backward(&p32, &mut s32, &mut g32).unwrap();
        m64.backward(&p64, &mut s64, &mut g64).unwrap();
        let diff = relative_error(&common::widen(&g32), &g64);
        println!("f32 vs f64 {kind:?}: loss {l32} vs {l64:.7}, gradient rel diff {diff:.2e}");
        // As in tests/model_whole.rs: ~4 stages per layer plus 4, each a product or reduction of
        // length <= 256 with relative error <= 258 eps_32; the attention kernels add two stages per
        // layer (logits and their softmax/normalization), so 16 stages here.
        assert!((l32 as f64 - l64).abs() < 16.0 * 258.0 * f32::EPSILON as f64 * l64, "{l32} {l64}");
        assert!(diff < 16.0 * 258.0 * f32::EPSILON as f64, "{kind:?}: {diff}");
    }
}

/// Logits of an all-linear model computed token by token: embedding, then per layer
/// `a = norm1(x)`, `q, k, v` by the projections, `State::step` per head, `W_O`, MLP; final norm and
/// tied unembedding. Uses only public pieces and the layout. Queries and keys are `w` wide per
/// head (`d_head`, or the `qk_width` of [`AttentionKind::LinearQk`]).
fn recurrent_logits(model: &Model<f64>, params: &[f64], tokens: &[u8]) -> Vec<f64> {
    let c = model.config();
    let (d, h, dh) = (c.d_model, c.n_heads, c.d_head);
    let w = match c.attention[0] {
        AttentionKind::LinearQk { qk_width } => qk_width,
        _ => dh,
    };
    let (hw, hq) = (h * dh, h * w);
    let layout = model.layout();
    let mut states: Vec<(Vec<f64>, Vec<f64>)> =
        (0..c.n_layers * h).map(|_| (vec![0.0; w * dh], vec![0.0; w])).collect();
    let mut logits = vec![0.0; tokens.len() * VOCAB];
    let mut stats = vec![0.0; norm_stats_len(1)];
    for (i, &t) in tokens.iter().enumerate() {
        let mut x = vec![0.0; d];
        let pos = &params[layout.positions.start + i * d..layout.positions.start + (i + 1) * d];
        embed_forward(d, &[t], &params[layout.embedding.clone()], Some(pos), &mut x).unwrap();
        for (l, off) in layout.layers.iter().enumerate() {
            let mut a = vec![0.0; d];
            norm_forward(c.norm, 1, d, &params[off.norm1.clone()], &x, &mut a, &mut stats).unwrap();
            let theta = &params[off.attention.clone()];
            let (w_q, w_k) = theta.split_at(d * hq);
            let (mut q, mut k, mut v) = (vec![0.0; hq], vec![0.0; hq], vec![0.0; hw]);
            linear_forward(1, d, hq, &a, w_q, None, &mut q).unwrap();
            linear_forward(1, d, hq, &a, w_k, None, &mut k).unwrap();
            linear_forward(1, d, hw, &a, &params[off.w_v.clone()], None, &mut v).unwrap();
            let mut o = vec![0.0; hw];
            for head in 0..h {
                let (s, z) = &mut states[l * h + head];
                let mut state = State::resume(w, dh, s, z).unwrap();
                let (qk, cols) = (head * w..(head + 1) * w, head * dh..(head + 1) * dh);
                state.step(&q[qk.clone()], &k[qk], &v[cols.clone()], 1e-6, &mut o[cols]).unwrap();
            }
            let mut y = vec![0.0; d];
            linear_forward(1, hw, d, &o, &params[off.w_o.clone()], None, &mut y).unwrap();
            let m: Vec<f64> = x.iter().zip(&y).map(|(a, b)| a + b).collect();
            let mut hn = vec![0.0; d];
            norm_forward(c.norm, 1, d, &params[off.norm2.clone()], &m, &mut hn, &mut stats).unwrap();
            let mlp = MlpParams {
                w_1: &params[off.w_1.clone()],
                b_1: &params[off.b_1.clone()],
                w_2: &params[off.w_2.clone()],
                b_2: &params[off.b_2.clone()],
            };
            let mut cache = vec![0.0; mlp_cache_len(1, c.d_mlp)];
            mlp_forward(1, d, c.d_mlp, mlp, &hn, &mut y, &mut cache).unwrap();
            x = m.iter().zip(&y).map(|(a, b)| a + b).collect();
        }
        let mut f = vec![0.0; d];
        norm_forward(c.norm, 1, d, &params[layout.final_norm.clone()], &x, &mut f, &mut stats).unwrap();
        let emb = &params[layout.embedding.clone()];
        for vtok in 0..VOCAB {
            logits[i * VOCAB + vtok] = (0..d).map(|j| f[j] * emb[vtok * d + j]).sum();
        }
    }
    logits
}

#[test]
fn recurrent_linear_path_gives_the_parallel_logits_after_training() {
    for kind in [AttentionKind::Linear, LINEAR_QK] {
        recurrent_matches_parallel(kind);
    }
}

fn recurrent_matches_parallel(kind: AttentionKind) {
    let mut c = tiny(kind, NormKind::Rms);
    c.context_len = 24;
    let model = Model::<f64>::with_attention(c).unwrap();
    let mut params = vec![0.0; model.param_len()];
    model.init_params(11, &mut params).unwrap();
    let text = b"Shall I compare thee to a summer's day? Thou art more lovely";
    let (batch, seq) = (2, 24);
    let (x, y) = (&text[..batch * seq], &text[1..batch * seq + 1]);
    let mut state = model.activations(batch, seq).unwrap();
    let mut grads = vec![0.0; model.param_len()];
    let mut opt = AdamW::new(AdamWConfig::default(), model.param_len()).unwrap();
    let first = model.forward(&params, x, y, &mut state).unwrap();
    for _ in 0..30 {
        model.forward(&params, x, y, &mut state).unwrap();
        model.backward(&params, &mut state, &mut grads).unwrap();
        opt.step(model.layout(), 1e-2, &mut params, &grads).unwrap();
    }
    let last = model.forward(&params, x, y, &mut state).unwrap();
    assert!(last < first - 1.0, "training did not move the model: {first} -> {last}");
    let parallel = state.logits().to_vec();
    let mut worst = 0.0f64;
    let mut scale = 0.0f64;
    for b in 0..batch {
        let rec = recurrent_logits(&model, &params, &x[b * seq..(b + 1) * seq]);
        for (r, p) in rec.iter().zip(&parallel[b * seq * VOCAB..(b + 1) * seq * VOCAB]) {
            worst = worst.max((r - p).abs());
            scale = scale.max(p.abs());
        }
    }
    println!("{kind:?}: recurrent vs parallel logits (loss {first:.3} -> {last:.3}): max |diff| {worst:.2e}, max |logit| {scale:.2}");
    assert!(worst < 1e-12 * scale.max(1.0), "{kind:?}: {worst}");
}

/// Naive causal ELU+1 linear attention of one head (`docs/math.md` section 6), O(n^2):
/// `o_i = sum_{j <= i} (phi(q_i) . phi(k_j)) v_j / (sum_{j <= i} phi(q_i) . phi(k_j) + 1e-6)`.
fn naive_linear_head(n: usize, w: usize, dv: usize, q: &[f64], k: &[f64], v: &[f64]) -> Vec<f64> {
    let phi = |x: f64| if x > 0.0 { x + 1.0 } else { x.exp() };
    let mut out = vec![0.0; n * dv];
    for i in 0..n {
        let mut den = 0.0;
        for j in 0..=i {
            let s: f64 = (0..w).map(|c| phi(q[i * w + c]) * phi(k[j * w + c])).sum();
            den += s;
            for c in 0..dv {
                out[i * dv + c] += s * v[j * dv + c];
            }
        }
        for c in 0..dv {
            out[i * dv + c] /= den + 1e-6;
        }
    }
    out
}

/// Linearizing an S-D layer: a [`AttentionKind::LinearQk`] layer of width `2r + q` whose `W_Q, W_K`
/// are the S-D head's own factors `[U | V | C]`, `[V | -U | -C]` (from `head_factors`) computes
/// ELU+1 linear attention on exactly the queries and keys the S-D head's softmax used (checked
/// against the naive formula on those queries and keys, f64, 1e-12 relative: sums of <= 9 terms of
/// products of length 6); and `LinearQk { qk_width: d_head }` is `Linear` bit for bit.
#[test]
fn sd_layer_linearizes_into_its_own_query_key_width() {
    let dims = SublayerDims { d_model: 6, n_heads: 2, d_head: 3 };
    let (d, h, dh, n) = (6usize, 2usize, 3usize, 9usize);
    let (r, q) = (2usize, 3usize);
    let w = 2 * r + q;
    let sd = AttentionMixer::new(dims, AttentionKind::Sd { routing_rank: r, filtering_rank: q }).unwrap();
    let lin = AttentionMixer::new(dims, AttentionKind::LinearQk { qk_width: w }).unwrap();
    assert_eq!(lin.qk_width(), w);
    let sd_params = normal_vec(AttentionSublayer::<f64>::param_len(&sd), 0.6, 90);
    let mut lin_params = vec![0.0; AttentionSublayer::<f64>::param_len(&lin)];
    assert_eq!(lin_params.len(), 2 * d * h * w);
    let (wq_all, wk_all) = lin_params.split_at_mut(d * h * w);
    let mut heads = Vec::new();
    for t in 0..h {
        let (mut wq, mut wk) = (vec![0.0; d * w], vec![0.0; d * w]);
        sd.head_factors(&sd_params, t, &mut wq, &mut wk, &mut []).unwrap();
        for i in 0..d {
            wq_all[i * h * w + t * w..i * h * w + (t + 1) * w].copy_from_slice(&wq[i * w..(i + 1) * w]);
            wk_all[i * h * w + t * w..i * h * w + (t + 1) * w].copy_from_slice(&wk[i * w..(i + 1) * w]);
        }
        heads.push((wq, wk));
    }
    let input = normal_vec(n * d, 1.0, 91);
    let values = normal_vec(n * h * dh, 1.0, 92);
    let mut out = vec![0.0; n * h * dh];
    let mut cache = vec![0.0; AttentionSublayer::<f64>::cache_len(&lin, n)];
    let mut ws = vec![0.0; AttentionSublayer::<f64>::workspace_len(&lin, n)];
    lin.forward(n, &lin_params, &input, &values, &mut out, &mut cache, &mut ws).unwrap();
    for (t, (wq, wk)) in heads.iter().enumerate() {
        // The S-D head's queries and keys, a_i [U | V | C] and a_i [V | -U | -C].
        let project = |m: &[f64]| -> Vec<f64> {
            let mut out = vec![0.0; n * w];
            for i in 0..n {
                for c in 0..w {
                    out[i * w + c] = (0..d).map(|p| input[i * d + p] * m[p * w + c]).sum::<f64>();
                }
            }
            out
        };
        let (qt, kt) = (project(wq), project(wk));
        let vt: Vec<f64> =
            (0..n).flat_map(|i| values[i * h * dh + t * dh..i * h * dh + (t + 1) * dh].to_vec()).collect();
        let reference = naive_linear_head(n, w, dh, &qt, &kt, &vt);
        for i in 0..n {
            for c in 0..dh {
                let (ours, theirs) = (out[i * h * dh + t * dh + c], reference[i * dh + c]);
                assert!(
                    (ours - theirs).abs() <= 1e-12 * theirs.abs().max(1.0),
                    "head {t} ({i},{c}): {ours} vs {theirs}"
                );
            }
        }
    }
    // qk_width = d_head: the same layer as Linear.
    let plain = AttentionMixer::new(dims, AttentionKind::Linear).unwrap();
    let same = AttentionMixer::new(dims, AttentionKind::LinearQk { qk_width: dh }).unwrap();
    let p = normal_vec(AttentionSublayer::<f64>::param_len(&plain), 0.6, 93);
    assert_eq!(AttentionSublayer::<f64>::param_len(&same), p.len());
    let mut outs = Vec::new();
    for m in [&plain, &same] {
        let mut o = vec![0.0; n * h * dh];
        let mut cache = vec![0.0; AttentionSublayer::<f64>::cache_len(m, n)];
        let mut ws = vec![0.0; AttentionSublayer::<f64>::workspace_len(m, n)];
        m.forward(n, &p, &input, &values, &mut o, &mut cache, &mut ws).unwrap();
        outs.push(o);
    }
    assert_eq!(outs[0], outs[1]);
}

/// Overfitting one batch with the S-D model without norm (the demo's kind) drives the loss down.
#[test]
fn sd_model_without_norm_overfits_a_batch() {
    let model = Model::<f32>::with_attention(tiny(SD, NormKind::None)).unwrap();
    let mut params = vec![0.0f32; model.param_len()];
    model.init_params(5, &mut params).unwrap();
    let text = b"Friends, Romans, countrymen, lend me your ears";
    let (batch, seq) = (4, 7);
    let (x, y) = (&text[..batch * seq], &text[1..batch * seq + 1]);
    let mut state = model.activations(batch, seq).unwrap();
    let mut grads = vec![0.0f32; model.param_len()];
    let mut opt =
        AdamW::new(AdamWConfig { weight_decay: 0.0, ..Default::default() }, model.param_len()).unwrap();
    let first = model.forward(&params, x, y, &mut state).unwrap();
    let mut last = first;
    for _ in 0..300 {
        last = model.forward(&params, x, y, &mut state).unwrap();
        model.backward(&params, &mut state, &mut grads).unwrap();
        opt.step(model.layout(), 1e-2, &mut params, &grads).unwrap();
    }
    println!("S-D overfit: {first:.3} -> {last:.3}");
    // From ln 256 = 5.55 to well under 1 nat: the batch is being memorized.
    assert!(last < 0.75, "{first} -> {last}");
}
