//! Incremental decoding speed of the cascade demo's model (examples/cascade.rs with its default
//! shape: S-D, d_model 64, 8 layers x 4 heads, d_head 16, r 8, q 8, d_mlp 256, context 128, learned
//! positions, tied unembedding, no norm; f32, one thread), read from
//! `target/cascade.ckpt` when it exists (else the same shape initialized at random: the speed does
//! not depend on the values).
//!
//! * `decode/step`: per-token latency of `Decoder::step`, averaged over the 112 positions after a
//!   16-byte prompt (prefill excluded), up to the full context; criterion's "elem/s" is tokens/s;
//! * `decode/prefill_128`: `Decoder::prefill` of 128 bytes.
//!
//! `benches/torch_decode.py` runs the same model from the same checkpoint in PyTorch eager with a
//! K/V (feature) cache, same protocol, one thread. The decoder state's bytes per layer are printed
//! once. Times are the thread's CPU time (the machine is shared; see `thread_time`).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sd_attention::inference::{
    layer_state_bytes, state_len, workspace_len, Decoder, DecoderState, ModelShape, ModelView,
};
use sd_attention::model::config::{AttentionKind, ModelConfig, PositionKind};
use sd_attention::model::norm::NormKind;
use sd_attention::model::transformer::Model;
use std::time::{Duration, Instant};

const PROMPT: usize = 16;

/// CPU time of the calling thread (`/proc/thread-self/schedstat`, nanoseconds on the CPU): the
/// machine these benches run on is shared, and wall time would count the other processes' turns.
/// Falls back to wall time where the file does not exist.
fn thread_time() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

/// Runs `f` and returns its thread CPU time (or wall time without schedstat).
fn timed(f: impl FnOnce()) -> Duration {
    let (cpu, wall) = (thread_time(), Instant::now());
    f();
    match (cpu, thread_time()) {
        (Some(a), Some(b)) => b - a,
        _ => wall.elapsed(),
    }
}
const CHECKPOINT: &str = "target/cascade.ckpt";

/// The demo's parameters and config: from the checkpoint, or initialized.
fn demo_model() -> (ModelConfig, Vec<f32>, &'static str) {
    if let Ok(bytes) = std::fs::read(CHECKPOINT) {
        if let Ok(ckpt) = sd_attention::train::checkpoint::Checkpoint::<f32>::decode(&bytes) {
            return (ckpt.config, ckpt.params, "target/cascade.ckpt");
        }
    }
    let kind = AttentionKind::Sd { routing_rank: 8, filtering_rank: 8 };
    let config =
        ModelConfig::uniform(64, 8, 4, 16, 256, 128, kind, NormKind::None, PositionKind::Learned, true);
    let model = Model::<f32>::with_attention(config.clone()).unwrap();
    let mut params = vec![0.0; model.param_len()];
    model.init_params(1, &mut params).unwrap();
    (config, params, "random parameters of the demo's shape (no target/cascade.ckpt)")
}

fn text(n: usize) -> Vec<u8> {
    let corpus = b"ROMEO:\nBut, soft! what light through yonder window breaks?\nIt is the east, and Juliet is the sun.\nArise, fair sun, and kill the envious moon,\nWho is already sick and pale with grief";
    corpus.iter().copied().cycle().take(n).collect()
}

fn bench_decode(c: &mut Criterion) {
    let (config, params, source) = demo_model();
    let shape = ModelShape::of_config(&config);
    let context = config.context_len;
    let view = ModelView::new(shape, &params).unwrap();
    let mut state = vec![0.0f32; state_len(&shape).unwrap()];
    let mut workspace = vec![0.0f32; workspace_len(&shape, context).unwrap()];
    let mut decoder =
        Decoder::new(view, DecoderState::new(&shape, &mut state).unwrap(), &mut workspace).unwrap();
    println!("model: {source}; context {context}");
    for (l, kind) in shape.layers.iter().enumerate() {
        println!("state bytes, layer {} ({kind:?}): {}", l + 1, layer_state_bytes::<f32>(&shape, kind));
    }
    let tokens = text(context);
    let logits = decoder.prefill(&tokens[..PROMPT]).unwrap();
    println!(
        "checksum of the logits after the {PROMPT}-byte prompt: {:.6}",
        logits.iter().map(|&v| v as f64).sum::<f64>()
    );

    let mut group = c.benchmark_group("decode");
    group.sample_size(20);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    let steps = context - PROMPT;
    group.throughput(Throughput::Elements(steps as u64));
    group.bench_function("step", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                decoder.prefill(&tokens[..PROMPT]).unwrap();
                total += timed(|| {
                    for &t in &tokens[PROMPT..] {
                        std::hint::black_box(decoder.step(t as usize).unwrap());
                    }
                });
            }
            total
        })
    });
    group.throughput(Throughput::Elements(context as u64));
    group.bench_function("prefill_128", |b| {
        b.iter_custom(|iterations| {
            timed(|| {
                for _ in 0..iterations {
                    std::hint::black_box(decoder.prefill(&tokens[..context]).unwrap()[0]);
                }
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench_decode);
criterion_main!(benches);
