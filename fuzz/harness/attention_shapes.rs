//! Drives the softmax, S-D/standard head and multi-head entry points with arbitrary dimensions,
//! options, slice lengths and values (NaN and infinities included) and asserts that each returns
//! `Ok` or `Err`, never panics, and that `Ok` outputs of finite inputs are finite where promised.

use crate::input::Input;
use sd_attention::attention::multihead::{MultiHead, MultiHeadSoftmax};
use sd_attention::attention::sd::{AttentionHead, HeadGrads};
use sd_attention::attention::softmax::{SoftmaxAttention, SoftmaxGrads};
use sd_attention::attention::Causality;

/// A slice whose length is usually the one the dimensions imply, sometimes off by a little; its
/// values are NaN, -inf, 1e4 (huge logits) or smooth values in [-0.5, 0.5).
fn values(input: &mut Input, wanted: usize) -> Vec<f32> {
    let len = match input.byte() % 8 {
        0 => input.byte() as usize,
        1 => wanted.saturating_add(1),
        2 => wanted.saturating_sub(1),
        _ => wanted,
    }
    .min(1 << 16);
    let raw = input.byte();
    (0..len)
        .map(|i| match raw {
            0 => f32::NAN,
            1 => f32::NEG_INFINITY,
            2 => 1e4,
            _ => ((i as u32).wrapping_mul(2_654_435_761) >> 8) as f32 / (1u32 << 24) as f32 - 0.5,
        })
        .collect()
}

fn causality(input: &mut Input) -> Causality {
    if input.byte() % 2 == 0 {
        Causality::Causal
    } else {
        Causality::Bidirectional
    }
}

/// Runs one input; a panic is a finding (the API panicked or broke a promise checked here).
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let (n, d_k, d_v) =
        (input.dim_or_large(20, 300), input.dim_or_large(20, 300), input.dim_or_large(20, 300));
    let causality = causality(&mut input);
    let head = SoftmaxAttention::<f32>::new(d_k, d_v, causality);
    let nk = n.saturating_mul(d_k);
    let nv = n.saturating_mul(d_v);
    let (q, k, v) = (values(&mut input, nk), values(&mut input, nk), values(&mut input, nv));
    let mask = if input.byte() % 2 == 0 { Some(values(&mut input, n.saturating_mul(n))) } else { None };
    let mut out = values(&mut input, nv);
    let mut lse = values(&mut input, n);
    let ws_len = head.backward_workspace_len(n).max(head.forward_workspace_len(n));
    // Capped: for huge n the reported length cannot be allocated (the call then rejects the
    // workspace as too small, which is what the target checks it does rather than panic).
    let mut ws = vec![0f32; ws_len.saturating_sub((input.byte() % 2) as usize).min(1 << 22)];
    let _ = head.forward(n, &q, &k, &v, mask.as_deref(), &mut out, &mut lse, &mut ws);
    let d_out = values(&mut input, nv);
    let (mut dq, mut dk, mut dv) = (values(&mut input, nk), values(&mut input, nk), values(&mut input, nv));
    let grads = SoftmaxGrads { d_q: &mut dq, d_k: &mut dk, d_v: &mut dv };
    let _ = head.backward(n, &q, &k, &v, mask.as_deref(), &out, &lse, &d_out, grads, &mut ws);

    // Multi-head softmax over packed columns.
    let n_heads = input.dim_or_large(20, 300);
    let multi = MultiHeadSoftmax { n_heads, head };
    let mut ws = vec![0f32; multi.backward_workspace_len(n).max(multi.forward_workspace_len(n)).min(1 << 20)];
    let (qm, km, vm) = (
        values(&mut input, nk.saturating_mul(n_heads)),
        values(&mut input, nk.saturating_mul(n_heads)),
        values(&mut input, nv.saturating_mul(n_heads)),
    );
    let mut out = values(&mut input, nv.saturating_mul(n_heads));
    let mut lse = values(&mut input, n.saturating_mul(n_heads));
    let _ = multi.forward(n, &qm, &km, &vm, None, &mut out, &mut lse, &mut ws);

    // Heads of both kinds, alone and packed.
    let d_model = input.dim_or_large(20, 300);
    let kind = input.byte();
    let (r, q_rank) = (input.dim_or_large(20, 300), input.dim_or_large(20, 300));
    let attention_head = if kind % 2 == 0 {
        AttentionHead::<f32>::routing_filtering(d_model, r, q_rank, d_v, causality)
    } else {
        AttentionHead::<f32>::standard(d_model, r, d_v, causality)
    };
    let x = values(&mut input, n.saturating_mul(d_model));
    let params = values(&mut input, attention_head.param_len());
    let mut out = values(&mut input, nv);
    let mut lse = values(&mut input, n);
    let mut ws = vec![0f32; attention_head.backward_workspace_len(n).min(1 << 20)];
    let _ = attention_head.forward(n, &x, &params, &mut out, &mut lse, &mut ws);
    let d_out = values(&mut input, nv);
    let (mut d_x, mut d_params) = (values(&mut input, x.len()), values(&mut input, params.len()));
    let grads = HeadGrads { d_x: &mut d_x, d_params: &mut d_params };
    let _ = attention_head.backward(n, &x, &params, &out, &lse, &d_out, grads, &mut ws);
    let mut ws = vec![0f32; attention_head.stability_bound_workspace_len().min(1 << 20)];
    let bound = attention_head.stability_bound(&params, &mut ws);
    // An S-D kernel of finite factors has Re(lambda) <= 0 by construction (up to rounding).
    if kind % 2 == 0 && params.iter().all(|p| p.abs() < 1e3) {
        if let Ok(bound) = bound {
            let mut kernel = vec![0f32; d_model * d_model];
            attention_head.kernel_dense(&params, &mut kernel).unwrap();
            let norm = sd_attention::linalg::dense::frobenius_norm(&kernel);
            assert!(bound <= sd_attention::testing::check::tolerance_for(d_model, norm));
        }
    }
    let multi = MultiHead { n_heads, head: attention_head };
    let params = values(&mut input, multi.param_len());
    let mut out = values(&mut input, nv.saturating_mul(n_heads));
    let mut lse = values(&mut input, n.saturating_mul(n_heads));
    let mut ws = vec![0f32; multi.forward_workspace_len(n).min(1 << 20)];
    let _ = multi.forward(n, &x, &params, &mut out, &mut lse, &mut ws);
}
