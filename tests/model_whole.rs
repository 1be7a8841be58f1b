//! The assembled model (config, layout, forward to the loss, backward into the flat gradient) with a
//! trivial attention stand-in (`common::model::GatedIdentity`), so that a failure points at the model itself.
#![cfg(feature = "alloc")]

mod common;
use common::model::*;
use sd_attention::model::config::{AttentionKind, ModelConfig, ParamCounts, PositionKind};
use sd_attention::model::layout::ParamLayout;
use sd_attention::model::norm::NormKind;
use sd_attention::model::sublayer::{AttentionSublayer, SublayerDims};
use sd_attention::model::transformer::Model;
use sd_attention::train::adamw::{AdamW, AdamWConfig};
use sd_attention::Error;

fn tiny(norm: NormKind, positions: PositionKind, tied: bool) -> ModelConfig {
    ModelConfig {
        d_model: 8,
        n_layers: 2,
        n_heads: 2,
        d_head: 4,
        d_mlp: 16,
        context_len: 6,
        attention: vec![AttentionKind::Softmax, AttentionKind::Sd { routing_rank: 2, filtering_rank: 1 }],
        norm,
        positions,
        tied_unembedding: tied,
    }
}

#[test]
fn parameter_counts_by_hand() {
    let c = tiny(NormKind::Layer, PositionKind::Learned, false);
    let counts = c.param_counts().unwrap();
    let expect = ParamCounts {
        embedding: 256 * 8,
        positions: 6 * 8,
        attention_kernels: 2 * (2 * 8 * 4) + 2 * 8 * (2 * 2 + 1), // softmax W_Q, W_K; S-D U, V, C
        value_output: 2 * (2 * 8 * 8),
        mlp: 2 * (2 * 8 * 16 + 16 + 8),
        norms: 5 * 2 * 8,
        unembedding: 8 * 256,
        total: 5248,
    };
    assert_eq!(counts, expect);
    let table = counts.to_string();
    assert!(
        table.contains("       attention kernels: 208\n")
            && table.ends_with("                   total: 5248\n"),
        "{table}"
    );
    let tied_rms = tiny(NormKind::Rms, PositionKind::Sinusoidal, true).param_counts().unwrap();
    assert_eq!((tied_rms.positions, tied_rms.norms, tied_rms.unembedding), (0, 5 * 8, 0));
    assert_eq!(tied_rms.total, 5248 - 48 - 40 - 2048);
    // Layout: contiguous, in order, same total, decay only on matrices.
    let layout = ParamLayout::new(&c).unwrap();
    assert_eq!(layout.total, counts.total);
    let mut next = 0;
    for t in &layout.tensors {
        assert_eq!(t.range.start, next, "{}", t.name);
        assert_eq!(t.range.len(), t.shape.0 * t.shape.1);
        next = t.range.end;
        let matrix = matches!(t.name, "attention" | "w_v" | "w_o" | "w_1" | "w_2" | "unembedding");
        assert_eq!(t.decay, matrix, "{}", t.name);
    }
    assert_eq!(next, counts.total);
    assert_eq!(layout.layers[1].attention.len(), 80);
}

#[test]
fn invalid_configs_are_errors() {
    let mut c = tiny(NormKind::None, PositionKind::Learned, true);
    c.attention.pop();
    assert!(matches!(c.validate(), Err(Error::ShapeMismatch { what: "attention", .. })));
    let mut c = tiny(NormKind::None, PositionKind::Learned, true);
    c.d_model = 0;
    assert!(matches!(c.validate(), Err(Error::InvalidParameter { what: "d_model", .. })));
    let mut c = tiny(NormKind::None, PositionKind::Learned, true);
    c.attention[1] = AttentionKind::Sd { routing_rank: 0, filtering_rank: 3 };
    assert!(matches!(c.validate(), Err(Error::InvalidParameter { what: "routing_rank", .. })));
    let mut c = tiny(NormKind::None, PositionKind::Learned, true);
    c.d_model = usize::MAX / 2;
    assert!(matches!(c.validate(), Err(Error::DimensionOverflow { .. })));
    // The model checks its sub-layers against the config.
    let c = tiny(NormKind::None, PositionKind::Learned, true);
    let mut subs = stand_ins::<f64>(&c);
    subs.pop();
    assert!(Model::new(c.clone(), subs).is_err());
    let wrong: Vec<Box<dyn AttentionSublayer<f64>>> = (0..2)
        .map(|_| {
            Box::new(GatedIdentity {
                dims: SublayerDims { d_model: 8, n_heads: 2, d_head: 4 },
                param_len: 128,
            }) as _
        })
        .collect();
    assert!(matches!(Model::new(c.clone(), wrong), Err(Error::ShapeMismatch { .. })));
    let model = Model::<f64>::new(c.clone(), stand_ins(&c)).unwrap();
    assert!(model.activations(1, 7).is_err()); // longer than the context
    let mut state = model.activations(1, 6).unwrap();
    let params = vec![0.0; model.param_len()];
    assert!(matches!(model.forward(&params, b"abc", b"bcd", &mut state), Err(Error::ShapeMismatch { .. })));
}

/// Full gradient of the mean cross-entropy against central differences on every parameter.
fn whole_model_gradient_error(c: ModelConfig, seed: u64) -> f64 {
    let model = Model::<f64>::new(c.clone(), stand_ins(&c)).unwrap();
    let mut params = vec![0.0; model.param_len()];
    model.init_params(seed, &mut params).unwrap();
    // Move every parameter off its initial value (zero gates, unit gains, zero biases) so that
    // every path carries gradient.
    for (p, r) in params.iter_mut().zip(normal_vec(model.param_len(), 0.3, seed + 1)) {
        *p += r;
    }
    let (batch, seq) = (2, 5);
    let tokens = b"To be, or n";
    let (inputs, targets) = (&tokens[..batch * seq], &tokens[1..batch * seq + 1]);
    let mut state = model.activations(batch, seq).unwrap();
    model.forward(&params, inputs, targets, &mut state).unwrap();
    let mut grads = vec![0.0; model.param_len()];
    model.backward(&params, &mut state, &mut grads).unwrap();
    let mut probe = model.activations(batch, seq).unwrap();
    let err =
        gradient_error(&mut |p| model.forward(p, inputs, targets, &mut probe).unwrap(), &params, &grads);
    assert!(grads.iter().any(|&g| g != 0.0));
    err
}

#[test]
fn whole_model_gradient_matches_finite_differences() {
    let cases = [
        (NormKind::None, PositionKind::Sinusoidal, true),
        (NormKind::Rms, PositionKind::Learned, false),
        (NormKind::Layer, PositionKind::Learned, true),
    ];
    for (i, &(norm, pos, tied)) in cases.iter().enumerate() {
        let err = whole_model_gradient_error(tiny(norm, pos, tied), 100 + i as u64);
        println!("whole model {norm:?} {pos:?} tied={tied}: rel err {err:.2e}");
        assert!(err < 1e-6, "{err}");
    }
}

#[test]
fn batch_loss_is_the_mean_of_sequence_losses() {
    let c = tiny(NormKind::Rms, PositionKind::Learned, false);
    let model = Model::<f64>::new(c.clone(), stand_ins(&c)).unwrap();
    let mut params = vec![0.0; model.param_len()];
    model.init_params(7, &mut params).unwrap();
    for (p, r) in params.iter_mut().zip(normal_vec(model.param_len(), 0.1, 8)) {
        *p += r;
    }
    let text = b"Now is the winter";
    let mut both = model.activations(2, 6).unwrap();
    let joint = model.forward(&params, &text[..12], &text[1..13], &mut both).unwrap();
    let mut one = model.activations(1, 6).unwrap();
    let first = model.forward(&params, &text[..6], &text[1..7], &mut one).unwrap();
    let second = model.forward(&params, &text[6..12], &text[7..13], &mut one).unwrap();
    assert!((joint - (first + second) / 2.0).abs() < 1e-14, "{joint} {first} {second}");
    // Deterministic initialization: same seed, same bits; gains 1, biases 0.
    let mut again = vec![0.0; model.param_len()];
    model.init_params(7, &mut again).unwrap();
    let mut fresh = vec![0.0; model.param_len()];
    model.init_params(7, &mut fresh).unwrap();
    assert_eq!(again, fresh);
    let l0 = &model.layout().layers[0];
    assert!(fresh[l0.norm1.clone()].iter().all(|&g| g == 1.0));
    assert!(fresh[l0.b_1.clone()].iter().all(|&b| b == 0.0));
    // Untrained loss is near ln 256 = 5.545 (small initial logits).
    let mut st = model.activations(1, 6).unwrap();
    let l = model.forward(&fresh, &text[..6], &text[1..7], &mut st).unwrap();
    assert!((l - 256f64.ln()).abs() < 0.05, "{l}");
}

#[test]
fn f32_model_matches_f64_and_overfits_a_fixed_batch() {
    let c = tiny(NormKind::Rms, PositionKind::Learned, true);
    let m32 = Model::<f32>::new(c.clone(), stand_ins(&c)).unwrap();
    let m64 = Model::<f64>::new(c.clone(), stand_ins(&c)).unwrap();
    let mut p64 = vec![0.0f64; m64.param_len()];
    m64.init_params(3, &mut p64).unwrap();
    let mut p32: Vec<f32> = p64.iter().map(|&v| v as f32).collect();
    let p64: Vec<f64> = p32.iter().map(|&v| v as f64).collect();
    let text = b"Friends, Romans, countrymen, lend me your ears";
    let (batch, seq) = (4, 6);
    let (x, y) = (&text[..batch * seq], &text[1..batch * seq + 1]);
    let mut s32 = m32.activations(batch, seq).unwrap();
    let mut s64 = m64.activations(batch, seq).unwrap();
    let l32 = m32.forward(&p32, x, y, &mut s32).unwrap();
    let l64 = m64.forward(&p64, x, y, &mut s64).unwrap();
    // About 2 L + 4 stages of products of length <= 256 on O(1) activations: 1e-5 relative is loose
    // by an order of magnitude against 256 eps_32 = 3e-5 per stage on a loss of ~5.5.
    assert!((l32 as f64 - l64).abs() < 1e-4 * l64, "{l32} {l64}");
    // Gradients: norm-wise relative difference. Each of the ~4 L + 4 stages of the backward pass is
    // a product or reduction of length <= 256 with error <= (256 + 2) eps_32 = 3.1e-5 relative to the
    // magnitudes involved; 12 stages give 3.7e-4, the bound asserted (cancellation could exceed it,
    // which would show up here).
    let mut g32 = vec![0.0f32; m32.param_len()];
    let mut g64 = vec![0.0f64; m64.param_len()];
    m32.backward(&p32, &mut s32, &mut g32).unwrap();
    m64.backward(&p64, &mut s64, &mut g64).unwrap();
    let grad_diff = relative_error(&common::widen(&g32), &g64);
    println!("f32 vs f64: loss {l32} vs {l64}, gradient rel diff {grad_diff:.2e}");
    assert!(grad_diff < 12.0 * 258.0 * f32::EPSILON as f64, "{grad_diff}");
    // Overfit: 150 AdamW steps on one batch take the loss from ln 256 far down.
    let mut grads = vec![0.0f32; m32.param_len()];
    let mut opt =
        AdamW::new(AdamWConfig { weight_decay: 0.0, ..Default::default() }, m32.param_len()).unwrap();
    let first = l32;
    let mut last = first;
    for _ in 0..150 {
        last = m32.forward(&p32, x, y, &mut s32).unwrap();
        m32.backward(&p32, &mut s32, &mut grads).unwrap();
        opt.step(m32.layout(), 1e-2, &mut p32, &grads).unwrap();
    }
    println!("overfit: loss {first:.4} -> {last:.4}");
    assert!(last < 0.5, "{first} -> {last}");
}
