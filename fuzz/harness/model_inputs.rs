//! Drives the model's layer kernels with arbitrary dimensions, slice lengths and values (NaN and
//! infinities included), the model config with arbitrary dimensions, and the corpus manifest parser
//! with arbitrary text, and asserts that none panics: every bad input is an `Err`.

use crate::input::Input;
use sd_attention::linalg::dense::Update;
use sd_attention::model::attention::AttentionMixer;
use sd_attention::model::config::{AttentionKind, ModelConfig, PositionKind};
use sd_attention::model::embedding::{embed_backward, embed_forward, sinusoidal_positions};
use sd_attention::model::gelu::{gelu_backward, gelu_forward};
use sd_attention::model::layout::ParamLayout;
use sd_attention::model::linear::{linear_backward, linear_forward};
use sd_attention::model::loss::cross_entropy;
use sd_attention::model::mlp::{mlp_backward, mlp_forward, MlpGrads, MlpParams};
use sd_attention::model::norm::{norm_backward, norm_forward, NormKind};
use sd_attention::model::sublayer::{AttentionSublayer, SublayerDims};
use sd_attention::train::clip::clip_global_norm;
use sd_attention::train::corpus::Corpus;

/// Runs one input; a panic is a finding (the API panicked or broke a promise checked here).
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let (n, d, e) = (input.dim(12), input.dim(12), input.dim(12));
    let (a, b, c) = (input.f32_vec(1), input.f32_vec(1), input.f32_vec(1));
    let (mut out, mut grad, mut work) = (input.f32_vec(1), input.f32_vec(1), input.f32_vec(1));
    let tokens = input.bytes();
    let _ = linear_forward(n, d, e, &a, &b, Some(&c), &mut out);
    let _ =
        linear_backward(n, d, e, &a, &b, &c, Some(&mut out), Update::Accumulate, &mut grad, Some(&mut work));
    let _ = gelu_forward(&a, &mut out);
    let _ = gelu_backward(&a, &b, &mut out);
    for kind in [NormKind::None, NormKind::Rms, NormKind::Layer] {
        let _ = norm_forward(kind, n, d, &c, &a, &mut out, &mut work);
        let _ = norm_backward(kind, n, d, &c, &a, &work, &b, &mut out, Update::Overwrite, &mut grad);
    }
    let mlp = MlpParams { w_1: &a, b_1: &b, w_2: &c, b_2: &a };
    let _ = mlp_forward(n, d, e, mlp, &b, &mut out, &mut work);
    let mut w1 = input.f32_vec(1);
    let mut b1 = input.f32_vec(1);
    let grads = MlpGrads { w_1: &mut w1, b_1: &mut b1, w_2: &mut grad, b_2: &mut work };
    let _ = mlp_backward(n, d, e, mlp, &a, &c, &b, &mut out, Update::Accumulate, grads, &mut []);
    let _ = embed_forward(d, &tokens, &a, Some(&b), &mut out);
    let _ = embed_backward(d, &tokens, &a, &mut out, Some(&mut grad));
    let _ = sinusoidal_positions(n, d, &mut out);
    let _ = cross_entropy(e, &a, &tokens, &mut out);
    let _ = clip_global_norm(&mut out, 1.0);
    let kinds = [
        AttentionKind::Softmax,
        AttentionKind::Linear,
        AttentionKind::Sd { routing_rank: input.dim(12), filtering_rank: input.dim(12) },
        AttentionKind::LinearQk { qk_width: input.dim(12) },
    ];
    let layers = input.dim(12);
    let config = ModelConfig {
        d_model: d,
        n_layers: layers,
        n_heads: input.dim(12),
        d_head: input.dim(12),
        d_mlp: e,
        context_len: n,
        attention: (0..layers.min(16)).map(|l| kinds[l % kinds.len()]).collect(),
        norm: NormKind::Layer,
        positions: PositionKind::Learned,
        tied_unembedding: input.byte() % 2 == 0,
    };
    if let Ok(layout) = ParamLayout::new(&config) {
        assert_eq!(layout.total, config.param_counts().unwrap().total);
    }
    // The model's attention sub-layers with arbitrary dimensions and slice lengths.
    let dims = SublayerDims { d_model: d, n_heads: input.dim(12), d_head: input.dim(12) };
    for kind in kinds {
        if let Ok(mixer) = AttentionMixer::new(dims, kind) {
            let (p, x, v) = (input.f32_vec(1), input.f32_vec(1), input.f32_vec(1));
            let (mut o, mut cache, mut ws) = (input.f32_vec(1), input.f32_vec(1), input.f32_vec(1));
            if input.byte() % 2 == 0 {
                // Correctly sized buffers half of the time, so that the kernels run.
                let len = |x: usize| x.min(1 << 16);
                cache.resize(len(AttentionSublayer::<f32>::cache_len(&mixer, n)), 0.0);
                ws.resize(len(AttentionSublayer::<f32>::workspace_len(&mixer, n)), 0.0);
            }
            let _ = mixer.forward(n, &p, &x, &v, &mut o, &mut cache, &mut ws);
            let (mut dx, mut dv, mut dp) = (input.f32_vec(1), input.f32_vec(1), input.f32_vec(1));
            let _ = mixer.backward(n, &p, &x, &v, &cache, &o, &mut dx, &mut dv, &mut dp, &mut ws);
            let (mut wq, mut wk, mut fw) = (input.f32_vec(1), input.f32_vec(1), input.f32_vec(1));
            let _ = mixer.head_factors(&p, input.dim(12), &mut wq, &mut wk, &mut fw);
        }
    }
    let manifest = String::from_utf8_lossy(input.rest());
    let _ = Corpus::new(tokens.clone(), tokens, &manifest);
}
