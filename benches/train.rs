//! Training throughput of the cascade demo's model (examples/cascade.rs defaults): one full
//! training step (batch 16 x 128 bytes of Shakespeare: forward, backward, clipping, AdamW) of an
//! S-D model without norm, d_model 64, 6 layers x 4 heads, d_head 16, r 8, q 8, d_mlp 256, tied
//! unembedding, f32, single thread (`sd_demo_step`); and the same model with every layer ELU+1
//! linear attention (`linear_demo_step`: per head `W_Q`, `W_K` of 64 x 16). Criterion's "elem/s" is
//! tokens/s. `benches/torch_train.py` (`--kind linear` for the second) runs the same model and step
//! in PyTorch CPU eager (one thread) and prints both side by side. `sd_demo_forward` and
//! `sd_demo_forward_backward` time the parts of the S-D step.
//!
//! Threads: one without the `parallel` feature; with it, rayon's global pool, whose size
//! `RAYON_NUM_THREADS` sets (`RAYON_NUM_THREADS=2 cargo bench --features parallel --bench train`;
//! `benches/torch_scaling.py` compares thread counts). Warm-up and measurement times can be
//! shortened from the command line (`-- --warm-up-time 1 --measurement-time 3`), and the corpus
//! read from another directory with `SDA_CORPUS` (for a bench binary run on another machine).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sd_attention::model::config::{AttentionKind, ModelConfig, PositionKind};
use sd_attention::model::norm::NormKind;
use sd_attention::model::transformer::Model;
use sd_attention::train::adamw::AdamWConfig;
use sd_attention::train::corpus::{Corpus, DEFAULT_DIR};
use sd_attention::train::schedule::WarmupCosine;
use sd_attention::train::trainer::{TrainConfig, Trainer};
use std::time::Duration;

/// The demo's model and batch with attention `kind` (keep in sync with examples/cascade.rs and
/// benches/torch_train.py).
pub fn demo_config(kind: AttentionKind) -> (ModelConfig, usize, usize) {
    let (batch, seq) = (16, 128);
    let config =
        ModelConfig::uniform(64, 6, 4, 16, 256, seq, kind, NormKind::None, PositionKind::Learned, true);
    (config, batch, seq)
}

fn bench_train(c: &mut Criterion) {
    let sd = AttentionKind::Sd { routing_rank: 8, filtering_rank: 8 };
    bench_kind(c, "sd_demo_step", sd);
    bench_kind(c, "linear_demo_step", AttentionKind::Linear);
}

fn bench_kind(c: &mut Criterion, name: &str, kind: AttentionKind) {
    let dir = std::env::var("SDA_CORPUS").unwrap_or_else(|_| DEFAULT_DIR.to_string());
    let corpus = Corpus::load(&dir).unwrap();
    let (config, batch, seq) = demo_config(kind);
    let train = TrainConfig {
        batch,
        seq,
        schedule: WarmupCosine::new(3e-3, 3e-4, 100, 2500).unwrap(),
        adamw: AdamWConfig::default(),
        clip_norm: 1.0,
        seed: 1,
    };
    let mut trainer = Trainer::<f32>::new(Model::with_attention(config).unwrap(), train).unwrap();
    let mut group = c.benchmark_group("train");
    group.sample_size(20);
    group.throughput(Throughput::Elements((batch * seq) as u64));
    group.bench_function(name, |b| b.iter(|| trainer.step(&corpus.train).unwrap()));
    if name == "sd_demo_step" {
        // The parts of a step, to see where its time goes: the forward pass alone, and forward
        // plus backward (the rest of a step is clipping and AdamW).
        let model = trainer.model();
        let params = trainer.params().to_vec();
        let mut state = model.activations(batch, seq).unwrap();
        let mut grads = vec![0.0f32; params.len()];
        let text = &corpus.train[..batch * seq + 1];
        let (tokens, targets) = (&text[..batch * seq], &text[1..]);
        group.bench_function("sd_demo_forward", |b| {
            b.iter(|| model.forward(&params, tokens, targets, &mut state).unwrap())
        });
        group.bench_function("sd_demo_forward_backward", |b| {
            b.iter(|| {
                model.forward(&params, tokens, targets, &mut state).unwrap();
                model.backward(&params, &mut state, &mut grads).unwrap();
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    // Defaults that the command line's --warm-up-time / --measurement-time override.
    config = Criterion::default().warm_up_time(Duration::from_secs(2)).measurement_time(Duration::from_secs(8));
    targets = bench_train
}
criterion_main!(benches);
