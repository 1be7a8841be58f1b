//! Drives the public ELU+1 linear-attention API (forward, backward, recurrent state) with arbitrary
//! shapes, head counts, chunk sizes, eps, slice and workspace lengths and values (including NaN and
//! infinities), and asserts that each call returns `Ok` or `Err`, never panics, and returns `Ok`
//! exactly when every length matches the dimensions and the parameters are valid.

use crate::input::Input;
use sd_attention::attention::linear::{LinearAttention, State};
use sd_attention::attention::Causality;

/// `len` values: NaN, the infinities, or multiples of 1/16 in [-8, 8).
fn small_values(input: &mut Input, len: usize) -> Vec<f32> {
    (0..len)
        .map(|_| match input.byte() {
            0 => f32::NAN,
            1 => f32::INFINITY,
            2 => f32::NEG_INFINITY,
            b => (b as f32 - 128.0) / 16.0,
        })
        .collect()
}

/// Runs one input; a panic is a finding (the API panicked or broke a promise checked here).
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let (n, d_k, d_v, heads) = (input.dim(12), input.dim(12), input.dim(12), input.dim(12) % 4);
    let chunk = input.dim(12);
    let causality = if input.byte() % 2 == 0 { Causality::Causal } else { Causality::Bidirectional };
    let eps = match input.byte() % 4 {
        0 => -1.0,
        1 => f32::NAN,
        2 => 0.0,
        _ => 1e-6,
    };
    let att =
        LinearAttention::<f32>::new(d_k, d_v, causality).with_heads(heads).with_chunk(chunk).with_eps(eps);
    let wk = heads.checked_mul(d_k).and_then(|w| w.checked_mul(n));
    let wv = heads.checked_mul(d_v).and_then(|w| w.checked_mul(n));
    let (len_k, len_v) = (wk.unwrap_or(usize::MAX), wv.unwrap_or(usize::MAX));
    let (lq, lk, lv, lo) = (
        input.len_near(len_k, 4096),
        input.len_near(len_k, 4096),
        input.len_near(len_v, 4096),
        input.len_near(len_v, 4096),
    );
    let (q, k, v) =
        (small_values(&mut input, lq), small_values(&mut input, lk), small_values(&mut input, lv));
    let mut out = vec![0.0f32; lo];
    let forward_len = att.forward_workspace_len(n);
    let mut workspace = vec![0.0f32; input.len_near(forward_len, 4096)];
    let valid_params = chunk >= 1 && eps >= 0.0 && eps.is_finite();
    let lengths_ok = wk.is_some() && wv.is_some() && lq == len_k && lk == len_k && lv == len_v && lo == len_v;
    let result = att.forward(n, &q, &k, &v, &mut out, &mut workspace);
    assert_eq!(result.is_ok(), valid_params && lengths_ok && workspace.len() >= forward_len, "{result:?}");

    let d_out = small_values(&mut input, lo);
    let (mut d_q, mut d_k_grad, mut d_v_grad) = (vec![0.0f32; lq], vec![0.0f32; lk], vec![0.0f32; lv]);
    let backward_len = att.backward_workspace_len(n);
    let mut workspace = vec![0.0f32; input.len_near(backward_len, 4096)];
    let result = att.backward(n, &q, &k, &v, &d_out, &mut d_q, &mut d_k_grad, &mut d_v_grad, &mut workspace);
    assert_eq!(result.is_ok(), valid_params && lengths_ok && workspace.len() >= backward_len, "{result:?}");

    let (ls, lz) = (input.len_near(d_k.saturating_mul(d_v), 4096), input.len_near(d_k, 4096));
    let (mut s, mut z) = (vec![0.0f32; ls], vec![0.0f32; lz]);
    if let Ok(mut state) = State::new(d_k, d_v, &mut s, &mut z) {
        let tokens = input.byte() as usize % 8;
        for _ in 0..tokens {
            let (lq, lk, lv, lo) = (
                input.len_near(d_k, 4096),
                input.len_near(d_k, 4096),
                input.len_near(d_v, 4096),
                input.len_near(d_v, 4096),
            );
            let (q, k, v) =
                (small_values(&mut input, lq), small_values(&mut input, lk), small_values(&mut input, lv));
            let mut out = vec![0.0f32; lo];
            let ok = lq == d_k && lk == d_k && lv == d_v && lo == d_v && eps >= 0.0 && eps.is_finite();
            assert_eq!(state.step(&q, &k, &v, eps, &mut out).is_ok(), ok);
        }
        let _ = state.absorb(n, &k, &v);
    }
}
