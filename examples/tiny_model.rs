//! Trains the small model that the Cortex-M4F firmware runs (examples/cortex-m): a byte-level model
//! of about 290 KB of `f32` weights with one layer of each attention kind (S-D, ELU+1 linear,
//! softmax), on the shipped Shakespeare corpus; reports validation perplexity on the held-out plays
//! and writes the checkpoint (format of `train::checkpoint`, no optimizer state).
//!
//! ```text
//! cargo run --release --example tiny_model                  # the shipped checkpoint's command
//! cargo run --release --example tiny_model -- --help
//! ```

#[path = "support/cli.rs"]
#[macro_use]
mod cli;
#[path = "support/lm.rs"]
mod lm;

use cli::{fail_on, usage_error};
use lm::*;
use sd_attention::model::config::{AttentionKind, ModelConfig, PositionKind};
use sd_attention::model::norm::NormKind;
use sd_attention::model::transformer::Model;
use sd_attention::train::checkpoint::Checkpoint;
use sd_attention::train::corpus::{Corpus, DEFAULT_DIR};
use sd_attention::train::trainer::Trainer;
use std::time::Instant;

fn main() {
    let mut f = Flags::from_env();
    let d_model = f.at_least("d-model", 48, 1, "width of the residual stream");
    let heads = f.at_least("heads", 4, 1, "heads per layer");
    let d_head = f.at_least("d-head", 12, 1, "value width of a head");
    let d_mlp = f.at_least("d-mlp", 112, 1, "MLP hidden width");
    let rank: usize = f.get("rank", 4, "routing rank r of the S-D layer");
    let filter: usize = f.get("filter", 2, "filtering rank q of the S-D layer");
    let run = RunConfig {
        steps: f.at_least("steps", 3000, 1, "training steps") as u64,
        batch: f.at_least("batch", 32, 1, "sequences per batch"),
        seq: f.at_least("seq", 64, 1, "tokens per sequence (= context length)"),
        lr: f.get("lr", 3e-3, "peak learning rate (warmup, then cosine to lr/10)"),
        warmup: f.get("warmup", 100, "warmup steps"),
        seed: f.get("seed", 1, "seed of initialization and batches"),
    };
    let eval_windows: usize = f.get("eval-windows", 0, "validation windows of seq bytes (0 = all)");
    let out = f.string("out", "examples/cortex-m/model/tiny.ckpt", "checkpoint output");
    let corpus_dir = f.string("corpus", DEFAULT_DIR, "corpus directory");
    f.finish("tiny_model: train the firmware's small model (S-D, linear and softmax layers) on Shakespeare");

    if rank + filter == 0 {
        usage_error("--rank and --filter cannot both be 0 (the S-D head would have no kernel)");
    }
    run.check();
    let corpus = Corpus::load(&corpus_dir).unwrap_or_else(|e| fail_on(&corpus_dir, e));
    let config = ModelConfig {
        d_model,
        n_layers: 3,
        n_heads: heads,
        d_head,
        d_mlp,
        context_len: run.seq,
        attention: vec![
            AttentionKind::Sd { routing_rank: rank, filtering_rank: filter },
            AttentionKind::Linear,
            AttentionKind::Softmax,
        ],
        norm: NormKind::Rms,
        positions: PositionKind::Learned,
        tied_unembedding: true,
    };
    let model = Model::<f32>::with_attention(config).unwrap_or_else(|e| fail_on("model flags", e));
    let params = model.param_len();
    outln!(
        "model: d_model {d_model}, layers S-D (r {rank}, q {filter}) / linear / softmax, {heads} heads x {d_head}, d_mlp {d_mlp}, context {}, RMSNorm, tied",
        run.seq
    );
    outln!("{params} parameters ({:.1} KB of f32)", params as f64 * 4.0 / 1000.0);
    let mut trainer = Trainer::new(model, run.train_config()).unwrap_or_else(|e| fail_on("trainer", e));
    let (seconds, last_loss) = train_with_progress(&mut trainer, &corpus.train, &run, "train");
    outln!(
        "trained {} steps of {} x {} bytes in {:.1} s ({}), final training loss {:.4} nats/byte",
        run.steps,
        run.batch,
        run.seq,
        seconds,
        clock(seconds),
        last_loss
    );
    let t = Instant::now();
    let windows = if eval_windows == 0 { usize::MAX } else { eval_windows };
    let valid = trainer.evaluate(&corpus.valid, windows).unwrap_or_else(|e| fail_on("evaluation", e));
    let used = ((corpus.valid.len() - 1) / run.seq).min(windows);
    outln!(
        "validation (held-out plays, {used} windows of {} bytes): {valid:.4} nats/byte, perplexity {:.3} ({:.1} s)",
        run.seq,
        valid.exp(),
        t.elapsed().as_secs_f64()
    );
    let mut ckpt = trainer.checkpoint();
    ckpt.optimizer = None;
    let bytes: Vec<u8> = Checkpoint::encode(&ckpt).unwrap_or_else(|e| fail_on(&out, e));
    write_file(&out, &bytes);
    outln!("checkpoint: {out} ({} bytes)", bytes.len());
}
