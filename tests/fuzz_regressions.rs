//! Inputs the cargo-fuzz targets found to panic or spin, kept as tests: empty problems with huge
//! other dimensions, and heads or layers with empty parameter blocks. Each must return (`Ok` or a
//! named error) at once and, where it computes anything, the right numbers.

use sd_attention::attention::sd::{AttentionHead, HeadGrads};
use sd_attention::attention::softmax::{SoftmaxAttention, SoftmaxGrads};
use sd_attention::attention::Causality;
use sd_attention::model::mlp::{mlp_forward, MlpParams};
use sd_attention::Error;

const HUGE: usize = usize::MAX / 3;

/// An S-D head with no routing or filtering columns (`r = q = 0`): every logit is 0, so each output
/// is the mean of the value rows `x W_V` (bidirectional), and the gradients are finite. It made the
/// assembly of `[a | b | c]` call `chunks_exact(0)`.
#[test]
fn sd_head_without_routing_or_filtering_columns_averages_the_values() {
    let (n, d_model, d_v) = (4usize, 3usize, 2usize);
    let head = AttentionHead::<f64>::routing_filtering(d_model, 0, 0, d_v, Causality::Bidirectional);
    let x: Vec<f64> = (0..n * d_model).map(|i| (i as f64 * 0.7).sin()).collect();
    let params: Vec<f64> = (0..head.param_len()).map(|i| (i as f64 * 1.3).cos()).collect();
    let w_v = &params[head.param_block("w_v").unwrap().range()];
    let (mut out, mut lse) = (vec![0.0; n * d_v], vec![0.0; n]);
    let mut ws = vec![0.0; head.forward_workspace_len(n).max(head.backward_workspace_len(n))];
    head.forward(n, &x, &params, &mut out, &mut lse, &mut ws).unwrap();
    for j in 0..d_v {
        let mean: f64 = (0..n)
            .map(|i| (0..d_model).map(|p| x[i * d_model + p] * w_v[p * d_v + j]).sum::<f64>())
            .sum::<f64>()
            / n as f64;
        for i in 0..n {
            assert!(
                (out[i * d_v + j] - mean).abs() < 1e-14,
                "out[{i}, {j}] = {} vs {mean}",
                out[i * d_v + j]
            );
        }
    }
    for l in &lse {
        assert!((l - (n as f64).ln()).abs() < 1e-14, "lse {l}");
    }
    let d_out = vec![1.0; n * d_v];
    let (mut d_x, mut d_params) = (vec![0.0; n * d_model], vec![0.0; params.len()]);
    let grads = HeadGrads { d_x: &mut d_x, d_params: &mut d_params };
    head.backward(n, &x, &params, &out, &lse, &d_out, grads, &mut ws).unwrap();
    assert!(d_x.iter().chain(&d_params).all(|g| g.is_finite()));
}

/// Empty sequences with huge widths: the fused kernels' workspace formulas saturate instead of
/// overflowing, and the S-D head no longer computes a workspace split as a difference of
/// overflowing products. Every call returns at once.
#[test]
fn empty_sequences_with_huge_widths_return() {
    let head = SoftmaxAttention::<f32>::new(HUGE, HUGE, Causality::Bidirectional);
    let ws_len = head.forward_workspace_len(0).max(head.backward_workspace_len(0));
    let mut ws = vec![0.0f32; ws_len.min(1 << 16)];
    let (mut out, mut lse) = (vec![], vec![]);
    let forward = head.forward(0, &[], &[], &[], None, &mut out, &mut lse, &mut ws);
    assert!(matches!(forward, Ok(()) | Err(Error::WorkspaceTooSmall { .. })), "{forward:?}");
    let (mut dq, mut dk, mut dv) = (vec![], vec![], vec![]);
    let grads = SoftmaxGrads { d_q: &mut dq, d_k: &mut dk, d_v: &mut dv };
    let backward = head.backward(0, &[], &[], &[], None, &[], &[], &[], grads, &mut ws);
    assert!(matches!(backward, Ok(()) | Err(Error::WorkspaceTooSmall { .. })), "{backward:?}");

    let sd = AttentionHead::<f32>::routing_filtering(0, HUGE, HUGE, 0, Causality::Causal);
    let mut ws = vec![0.0f32; sd.forward_workspace_len(0).min(1 << 16)];
    let params = vec![0.0f32; sd.param_len().min(1 << 16)];
    let result = sd.forward(0, &[], &params, &mut [], &mut [], &mut ws);
    assert_eq!(result, Ok(()));
}

/// An MLP of width 0 over `usize::MAX / 3` empty rows returns at once (it looped over the rows in
/// blocks of 128, about 2^55 iterations).
#[test]
fn empty_mlp_rows_return_at_once() {
    let params = MlpParams::<f32> { w_1: &[], b_1: &[], w_2: &[], b_2: &[] };
    assert_eq!(mlp_forward(HUGE, 0, 0, params, &[], &mut [], &mut []), Ok(()));
}

/// The sinusoidal table of `usize::MAX / 3` positions of width 0 (fuzz input `ff 00 ff`, kept in
/// fuzz/regressions/model_inputs/): it is empty, so the call returns at once. It looped over the
/// empty rows; the fuzzer's optimized build removed the empty loop, so only the replay of the
/// corpus under the test profile (tests/fuzz_replay.rs) saw it spin.
#[test]
fn empty_sinusoidal_table_with_huge_row_count_returns() {
    let mut out: Vec<f32> = vec![];
    assert_eq!(sd_attention::model::embedding::sinusoidal_positions(HUGE, 0, &mut out), Ok(()));
    // A nonempty table is still the formula: row 1 of width 2 is (sin 1, cos 1).
    let mut table = [0.0f64; 4];
    sd_attention::model::embedding::sinusoidal_positions(2, 2, &mut table).unwrap();
    assert_eq!(table, [0.0, 1.0, 1f64.sin(), 1f64.cos()]);
}
