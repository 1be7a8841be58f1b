//! Cascade allocation (`docs/math.md` section 7): give each layer the routing rank its measured cascade asks
//! for, train that model, and compare attention parameter counts and validation perplexity with
//! the uniform model.
//!
//! Reads the uniform S-D model that `cargo run --release --example cascade` saved
//! (`target/cascade.ckpt` by default), measures the entropy effective rank `e_l` of its routing `S`
//! per layer (mean over heads), and sets `r_l = clamp(ceil(e_l / 2), 1, r)`: `S` has rank `2 r_l`
//! and its singular values come in pairs, so `e_l / 2` is the effective number of rotation planes
//! (this rule is ours; the paper's is not known here, `docs/math.md` section 8). The filtering rank stays `q`.
//! The allocated model is then trained from scratch with the same schedule, batches and seed as the
//! cascade demo's defaults.
//!
//! ```text
//! cargo run --release --example cascade      # first: the uniform model and its checkpoint
//! cargo run --release --example allocate
//! ```

#[path = "support/lm.rs"]
mod lm;

use lm::*;
use sd_attention::model::config::{AttentionKind, ModelConfig};
use sd_attention::model::transformer::Model;
use sd_attention::train::checkpoint::Checkpoint;
use sd_attention::train::corpus::{Corpus, DEFAULT_DIR};
use sd_attention::train::trainer::Trainer;

fn main() {
    let mut f = Flags::from_env();
    let load = f.string("load", "target/cascade.ckpt", "the uniform S-D model (from the cascade example)");
    let run = RunConfig {
        steps: f.get("steps", 2500, "training steps of the allocated model (use the cascade run's)"),
        batch: f.get("batch", 16, "sequences per batch"),
        seq: f.get("seq", 128, "tokens per sequence"),
        lr: f.get("lr", 3e-3, "peak learning rate"),
        warmup: f.get("warmup", 100, "warmup steps"),
        seed: f.get("seed", 1, "seed"),
    };
    let eval_windows: usize = f.get("eval-windows", 1000, "validation windows (0 = all)");
    let svg = f.string("svg", "target/allocate.svg", "SVG plot output");
    let threads = threads_flag(&mut f);
    f.finish("allocate: per-layer routing rank from the measured cascade vs the uniform model");
    use_threads(threads);

    let corpus = Corpus::load(DEFAULT_DIR).unwrap_or_else(|e| fail(&format!("corpus: {e}")));
    let bytes = std::fs::read(&load).unwrap_or_else(|e| {
        fail(&format!("{load}: {e} (run `cargo run --release --example cascade` first)"))
    });
    let ckpt = Checkpoint::<f32>::decode(&bytes).unwrap_or_else(|e| fail(&format!("{load}: {e}")));
    let uniform_config = ckpt.config.clone();
    if uniform_config.context_len != run.seq {
        fail("--seq must equal the checkpoint's context length");
    }
    let uniform_model = Model::<f32>::with_attention(uniform_config.clone()).unwrap();
    let uniform_counts = uniform_model.param_counts();
    let mut uniform = Trainer::from_checkpoint(uniform_model, run.train_config(), ckpt).unwrap();
    let windows = if eval_windows == 0 { usize::MAX } else { eval_windows };
    let uniform_ppl = uniform.evaluate(&corpus.valid, windows).unwrap().exp();
    let spectra = layer_spectra(&uniform_config, &attention_params(&uniform));

    let mut config: ModelConfig = uniform_config.clone();
    let mut ranks = Vec::new();
    for (kind, s) in config.attention.iter_mut().zip(&spectra) {
        if let AttentionKind::Sd { routing_rank, filtering_rank } = *kind {
            let r = ((s.mean(0) / 2.0).ceil() as usize).clamp(1, routing_rank);
            ranks.push((routing_rank, r, s.mean(0)));
            *kind = AttentionKind::Sd { routing_rank: r, filtering_rank };
        } else {
            fail("the checkpoint must be an S-D model in every layer");
        }
    }
    let model = Model::<f32>::with_attention(config.clone()).unwrap();
    let counts = model.param_counts();
    println!("uniform model: {load}, validation perplexity {uniform_ppl:.3}");
    println!(
        "allocated routing ranks r_l = clamp(ceil(erank S_l / 2), 1, r): {:?}",
        ranks.iter().map(|r| r.1).collect::<Vec<_>>()
    );
    let mut trainer = Trainer::new(model, run.train_config()).unwrap();
    let (seconds, _) = train_with_progress(&mut trainer, &corpus.train, &run, "allocated");
    let ppl = trainer.evaluate(&corpus.valid, windows).unwrap().exp();
    let after = layer_spectra(&config, &attention_params(&trainer));
    println!("trained the allocated model in {seconds:.1} s");

    println!("\nlayer  erank S (uniform)  r uniform  r allocated  erank S (allocated, trained)");
    for ((r_u, r_a, e), s) in ranks.iter().zip(&after) {
        println!("{:>5}  {:>17.3}  {:>9}  {:>11}  {:>12.3}", s.layer + 1, e, r_u, r_a, s.mean(0));
    }
    println!("\nmodel       attention kernel params  total params  validation ppl");
    println!(
        "uniform     {:>23}  {:>12}  {:>14.3}",
        uniform_counts.attention_kernels, uniform_counts.total, uniform_ppl
    );
    println!("allocated   {:>23}  {:>12}  {:>14.3}", counts.attention_kernels, counts.total, ppl);
    println!(
        "allocated vs uniform: {:+.1}% attention kernel parameters, {:+.2}% perplexity",
        100.0 * (counts.attention_kernels as f64 / uniform_counts.attention_kernels as f64 - 1.0),
        100.0 * (ppl / uniform_ppl - 1.0)
    );
    let series = vec![
        Series {
            name: "erank S, uniform".into(),
            color: "#d62728",
            points: ranks.iter().enumerate().map(|(l, r)| ((l + 1) as f64, r.2)).collect(),
            dashed: false,
        },
        Series {
            name: "2 r uniform".into(),
            color: "#7f7f7f",
            points: ranks.iter().enumerate().map(|(l, r)| ((l + 1) as f64, 2.0 * r.0 as f64)).collect(),
            dashed: true,
        },
        Series {
            name: "2 r allocated".into(),
            color: "#2ca02c",
            points: ranks.iter().enumerate().map(|(l, r)| ((l + 1) as f64, 2.0 * r.1 as f64)).collect(),
            dashed: true,
        },
        Series {
            name: "erank S, allocated".into(),
            color: "#1f77b4",
            points: after.iter().map(|s| ((s.layer + 1) as f64, s.mean(0))).collect(),
            dashed: false,
        },
    ];
    let title = format!("Cascade allocation: ppl {uniform_ppl:.2} (uniform) vs {ppl:.2} (allocated)");
    write_file(&svg, line_plot(&title, "layer", "rank", &series, true).as_bytes());
    println!("plot: {svg}");
}
