//! With the `parallel` feature, results do not depend on the number of threads: whole training
//! steps (loss, gradients, parameters and moments after AdamW) and the multi-head kernels are
//! compared bit for bit between rayon pools of 1, 2, 3 and 8 threads.
//!
//! The sizes are chosen above the thresholds at which the kernels split their work (more than one
//! MLP row block of 128 rows, products of at least 2^18 multiply-adds, weight gradients of at least
//! 2^20, several sequences per batch), so that every split runs; a race, a task writing outside its
//! block or a split that depended on the thread count would show up as differing bits.
#![cfg(feature = "parallel")]

use sd_attention::attention::linear::LinearAttention;
use sd_attention::attention::multihead::MultiHeadSoftmax;
use sd_attention::attention::softmax::{SoftmaxAttention, SoftmaxGrads};
use sd_attention::attention::Causality;
use sd_attention::model::config::{AttentionKind, ModelConfig, PositionKind};
use sd_attention::model::norm::NormKind;
use sd_attention::model::transformer::Model;
use sd_attention::rng::SplitMix64;
use sd_attention::train::adamw::{AdamW, AdamWConfig};
use sd_attention::train::clip::clip_global_norm;

const THREADS: [usize; 4] = [1, 2, 3, 8];

fn in_pool<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("thread pool").install(f)
}

fn bits32(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

fn bits64(x: &[f64]) -> Vec<u64> {
    x.iter().map(|v| v.to_bits()).collect()
}

/// Everything three training steps produce, as bits: per step the loss, the gradient norm and
/// the gradients; at the end the parameters and AdamW's moments.
#[derive(Debug, PartialEq)]
struct Run {
    losses: Vec<u32>,
    norms: Vec<u32>,
    grads: Vec<Vec<u32>>,
    params: Vec<u32>,
    moments: (Vec<u32>, Vec<u32>),
}

fn train(config: ModelConfig, batch: usize, seq: usize) -> Run {
    let model = Model::<f32>::with_attention(config).unwrap();
    let mut params = vec![0.0f32; model.param_len()];
    model.init_params(7, &mut params).unwrap();
    let mut grads = vec![0.0f32; model.param_len()];
    let mut state = model.activations(batch, seq).unwrap();
    let mut adamw = AdamW::<f32>::new(AdamWConfig::default(), model.param_len()).unwrap();
    let mut rng = SplitMix64::new(11);
    let mut run =
        Run { losses: vec![], norms: vec![], grads: vec![], params: vec![], moments: (vec![], vec![]) };
    for _ in 0..3 {
        // Bytes of a small alphabet, so that the loss moves within three steps.
        let text: Vec<u8> = (0..batch * seq + 1).map(|_| b'a' + (rng.next_u64() % 7) as u8).collect();
        let loss = model.forward(&params, &text[..batch * seq], &text[1..], &mut state).unwrap();
        model.backward(&params, &mut state, &mut grads).unwrap();
        let norm = clip_global_norm(&mut grads, 1.0).unwrap();
        adamw.step(model.layout(), 3e-3, &mut params, &grads).unwrap();
        run.losses.push(loss.to_bits());
        run.norms.push(norm.to_bits());
        run.grads.push(bits32(&grads));
    }
    run.params = bits32(&params);
    run.moments = (bits32(&adamw.m), bits32(&adamw.v));
    run
}

/// Training steps of each attention kind (with and without norms, tied and untied) are the same
/// bits on 1, 2, 3 and 8 threads.
#[test]
fn training_steps_do_not_depend_on_threads() {
    let sd = AttentionKind::Sd { routing_rank: 8, filtering_rank: 8 };
    let cases = [
        (sd, NormKind::None, true),
        (AttentionKind::Softmax, NormKind::Rms, false),
        (AttentionKind::Linear, NormKind::Layer, true),
    ];
    let (batch, seq) = (4, 64);
    for (kind, norm, tied) in cases {
        let config = ModelConfig::uniform(64, 2, 4, 16, 256, seq, kind, norm, PositionKind::Learned, tied);
        let one = in_pool(1, || train(config.clone(), batch, seq));
        assert!(f32::from_bits(one.losses[2]) < f32::from_bits(one.losses[0]), "{kind:?}: the loss moves");
        for threads in &THREADS[1..] {
            let many = in_pool(*threads, || train(config.clone(), batch, seq));
            assert!(many == one, "{kind:?}, {norm:?}: {threads} threads differ from 1");
        }
    }
}

/// `Trainer::step` (which moves the whole step onto a worker of the current pool) gives the same
/// parameters called from outside any pool (rayon's global pool) and inside pools of 1 and 3
/// threads, and the same as stepping the model by hand with the same batches would.
#[test]
fn trainer_steps_do_not_depend_on_threads() {
    use sd_attention::train::schedule::WarmupCosine;
    use sd_attention::train::trainer::{TrainConfig, Trainer};
    let sd = AttentionKind::Sd { routing_rank: 8, filtering_rank: 8 };
    let (batch, seq) = (4, 64);
    let config =
        ModelConfig::uniform(64, 2, 4, 16, 256, seq, sd, NormKind::None, PositionKind::Learned, true);
    let mut rng = SplitMix64::new(13);
    let text: Vec<u8> = (0..4096).map(|_| b'a' + (rng.next_u64() % 7) as u8).collect();
    let run = || {
        let train = TrainConfig {
            batch,
            seq,
            schedule: WarmupCosine::new(3e-3, 3e-4, 2, 10).unwrap(),
            adamw: AdamWConfig::default(),
            clip_norm: 1.0,
            seed: 5,
        };
        let mut trainer = Trainer::<f32>::new(Model::with_attention(config.clone()).unwrap(), train).unwrap();
        let losses: Vec<u64> = (0..3).map(|_| trainer.step(&text).unwrap().loss.to_bits()).collect();
        (losses, bits32(trainer.params()))
    };
    let outside = run();
    assert!(outside.1.iter().any(|&b| b != 0), "the trainer ran");
    for threads in [1, 3] {
        assert!(in_pool(threads, run) == outside, "{threads} threads differ from the global pool");
    }
}

/// The multi-head softmax kernel, forward and backward, in f64 and f32 (8 heads, n = 160).
#[test]
fn multihead_softmax_does_not_depend_on_threads() {
    let (n, h, d_k, d_v) = (160, 8, 24, 16);
    let mh = MultiHeadSoftmax { n_heads: h, head: SoftmaxAttention::<f64>::new(d_k, d_v, Causality::Causal) };
    let mut rng = SplitMix64::new(3);
    let mut fill = |len: usize| -> Vec<f64> { (0..len).map(|_| rng.normal::<f64>()).collect() };
    let (q, k, v, d_out) = (fill(n * h * d_k), fill(n * h * d_k), fill(n * h * d_v), fill(n * h * d_v));
    let run = || {
        let mut out = vec![0.0; n * h * d_v];
        let mut lse = vec![0.0; h * n];
        let mut ws = vec![0.0; mh.forward_workspace_len(n).max(mh.backward_workspace_len(n))];
        mh.forward(n, &q, &k, &v, None, &mut out, &mut lse, &mut ws).unwrap();
        let (mut d_q, mut d_k, mut d_v) = (vec![0.0; q.len()], vec![0.0; k.len()], vec![0.0; v.len()]);
        let grads = SoftmaxGrads { d_q: &mut d_q, d_k: &mut d_k, d_v: &mut d_v };
        mh.backward(n, &q, &k, &v, None, &out, &lse, &d_out, grads, &mut ws).unwrap();
        [bits64(&out), bits64(&lse), bits64(&d_q), bits64(&d_k), bits64(&d_v)]
    };
    let one = in_pool(1, run);
    assert!(one[0].iter().any(|&b| b != 0), "the kernel ran");
    for threads in &THREADS[1..] {
        assert!(in_pool(*threads, run) == one, "{threads} threads differ from 1");
    }
}

/// Multi-head ELU+1 linear attention (8 heads, n = 300), forward and backward, f32.
#[test]
fn multihead_linear_does_not_depend_on_threads() {
    let (n, h, d) = (300, 8, 16);
    let lin = LinearAttention::<f32>::new(d, d, Causality::Causal).with_heads(h);
    let mut rng = SplitMix64::new(5);
    let mut fill = |len: usize| -> Vec<f32> { (0..len).map(|_| rng.normal::<f32>()).collect() };
    let (q, k, v, d_out) = (fill(n * h * d), fill(n * h * d), fill(n * h * d), fill(n * h * d));
    let run = || {
        let mut out = vec![0.0; n * h * d];
        let mut ws = vec![0.0; lin.forward_workspace_len(n).max(lin.backward_workspace_len(n))];
        lin.forward(n, &q, &k, &v, &mut out, &mut ws).unwrap();
        let (mut d_q, mut d_k, mut d_v) = (vec![0.0; q.len()], vec![0.0; k.len()], vec![0.0; v.len()]);
        lin.backward(n, &q, &k, &v, &d_out, &mut d_q, &mut d_k, &mut d_v, &mut ws).unwrap();
        [bits32(&out), bits32(&d_q), bits32(&d_k), bits32(&d_v)]
    };
    let one = in_pool(1, run);
    assert!(one[0].iter().any(|&b| b != 0), "the kernel ran");
    for threads in &THREADS[1..] {
        assert!(in_pool(*threads, run) == one, "{threads} threads differ from 1");
    }
}
