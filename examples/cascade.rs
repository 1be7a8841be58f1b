//! The spectral cascade (`docs/math.md` section 7; the main demo): train a small S-D language model
//! WITHOUT layer norm on the shipped Shakespeare corpus (training plays), report validation
//! perplexity on the held-out plays, then the entropy effective rank of the learned routing
//! `S = U V^T - V U^T` (and of filtering `D = -C C^T`) of every head, per layer, computed
//! matrix-free from the factors by Lanczos. Prints a table, writes an SVG line plot and a
//! checkpoint (train::checkpoint) that the other experiments can load.
//!
//! ```text
//! cargo run --release --example cascade                      # defaults: a few minutes on one core
//! cargo run --release --example cascade -- --steps 6000 --layers 6 --d-model 128
//! cargo run --release --example cascade -- --help
//! ```

#[path = "support/lm.rs"]
mod lm;

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
    let d_model: usize = f.get("d-model", 64, "width of the residual stream");
    let layers: usize = f.get("layers", 6, "number of blocks");
    let heads: usize = f.get("heads", 4, "heads per layer");
    let d_head: usize = f.get("d-head", 16, "value width of a head");
    let d_mlp: usize = f.get("d-mlp", 256, "MLP hidden width");
    let rank: usize = f.get("rank", 8, "routing rank r per head (rank S <= 2r)");
    let filter: usize = f.get("filter", 8, "filtering rank q per head (rank D <= q)");
    let run = RunConfig {
        steps: f.get("steps", 2500, "training steps"),
        batch: f.get("batch", 16, "sequences per batch"),
        seq: f.get("seq", 128, "tokens per sequence (= context length)"),
        lr: f.get("lr", 3e-3, "peak learning rate (warmup, then cosine to lr/10)"),
        warmup: f.get("warmup", 100, "warmup steps"),
        seed: f.get("seed", 1, "seed of initialization and batches"),
    };
    let eval_windows: usize = f.get("eval-windows", 1000, "validation windows of seq bytes (0 = all)");
    let svg = f.string("svg", "target/cascade.svg", "SVG plot output");
    let ckpt_path = f.string("checkpoint", "target/cascade.ckpt", "checkpoint output");
    let load = f.string("load", "", "skip training: load this checkpoint");
    let corpus_dir = f.string("corpus", DEFAULT_DIR, "corpus directory");
    let threads = threads_flag(&mut f);
    f.finish("cascade: train a small S-D model without norm on Shakespeare and measure the spectral cascade");
    use_threads(threads);

    let corpus = Corpus::load(&corpus_dir).unwrap_or_else(|e| fail(&format!("{corpus_dir}: {e}")));
    let kind = AttentionKind::Sd { routing_rank: rank, filtering_rank: filter };
    let config = ModelConfig::uniform(
        d_model,
        layers,
        heads,
        d_head,
        d_mlp,
        run.seq,
        kind,
        NormKind::None,
        PositionKind::Learned,
        true,
    );
    let model =
        Model::<f32>::with_attention(config.clone()).unwrap_or_else(|e| fail(&format!("config: {e}")));
    println!("S-D model without norm: d_model {d_model}, {layers} layers x {heads} heads, d_head {d_head}, r {rank}, q {filter}, d_mlp {d_mlp}, context {}", run.seq);
    print!("{}", model.param_counts());
    let mut trainer = if load.is_empty() {
        Trainer::new(model, run.train_config()).unwrap()
    } else {
        let bytes = std::fs::read(&load).unwrap_or_else(|e| fail(&format!("{load}: {e}")));
        let ckpt = Checkpoint::<f32>::decode(&bytes).unwrap_or_else(|e| fail(&format!("{load}: {e}")));
        let model = Model::<f32>::with_attention(ckpt.config.clone()).unwrap();
        Trainer::from_checkpoint(model, run.train_config(), ckpt)
            .unwrap_or_else(|e| fail(&format!("{load}: {e}")))
    };
    let config = trainer.model().config().clone();
    let at_init = layer_spectra(&config, &attention_params(&trainer));

    if load.is_empty() {
        println!(
            "training {} steps of {} x {} bytes on {} training bytes (34 plays)",
            run.steps,
            run.batch,
            run.seq,
            corpus.train.len()
        );
        let (seconds, last_loss) = train_with_progress(&mut trainer, &corpus.train, &run, "train");
        let tokens = run.steps as f64 * (run.batch * run.seq) as f64;
        println!(
            "trained in {:.1} s ({}), {:.0} tokens/s, final training loss {:.4} nats/byte",
            seconds,
            clock(seconds),
            tokens / seconds,
            last_loss
        );
        write_file(&ckpt_path, &trainer.checkpoint().encode().unwrap());
        println!("checkpoint: {ckpt_path}");
    }
    let windows = if eval_windows == 0 { usize::MAX } else { eval_windows };
    let t = Instant::now();
    let valid = trainer.evaluate(&corpus.valid, windows).unwrap();
    let used = (corpus.valid.len() - 1) / config.context_len;
    println!(
        "validation (held-out plays, {} windows of {} bytes): {:.4} nats/byte, perplexity {:.3} ({:.1} s)",
        used.min(windows),
        config.context_len,
        valid,
        valid.exp(),
        t.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    let trained = layer_spectra(&config, &attention_params(&trainer));
    println!("\nspectral cascade: entropy effective rank per layer (mean over heads [min, max]); capacity of S = 2r = {}", trained[0].capacity);
    println!("layer   erank S (trained)         erank D (trained)         rho     | erank S at init  erank D at init");
    for (s, i) in trained.iter().zip(&at_init) {
        println!(
            "{:>5}   {:>6.3} [{:>6.3}, {:>6.3}]  {:>6.3} [{:>6.3}, {:>6.3}]  {:.3}   | {:>6.3}           {:>6.3}",
            s.layer + 1,
            s.mean(0),
            s.min(0),
            s.max(0),
            s.mean(1),
            s.min(1),
            s.max(1),
            s.mean(2),
            i.mean(0),
            i.mean(1)
        );
    }
    println!("(spectra of {} heads in {:.2} s)", trained.len() * config.n_heads, t.elapsed().as_secs_f64());
    let first = trained.first().map(|s| s.mean(0)).unwrap_or(0.0);
    let last = trained.last().map(|s| s.mean(0)).unwrap_or(0.0);
    let rising = trained.windows(2).filter(|w| w[1].mean(0) > w[0].mean(0)).count();
    println!(
        "routing erank: layer 1 {:.3}, layer {} {:.3}; rises between {} of {} consecutive layer pairs",
        first,
        trained.len(),
        last,
        rising,
        trained.len().saturating_sub(1)
    );

    let pts =
        |v: &[LayerSpectrum], part: usize| v.iter().map(|s| ((s.layer + 1) as f64, s.mean(part))).collect();
    let series = vec![
        Series {
            name: "erank S (routing)".into(),
            color: "#d62728",
            points: pts(&trained, 0),
            dashed: false,
        },
        Series {
            name: "erank D (filtering)".into(),
            color: "#1f77b4",
            points: pts(&trained, 1),
            dashed: false,
        },
        Series { name: "S at init".into(), color: "#d62728", points: pts(&at_init, 0), dashed: true },
        Series { name: "D at init".into(), color: "#1f77b4", points: pts(&at_init, 1), dashed: true },
    ];
    let title = format!(
        "Spectral cascade: S-D, no norm, d={d_model}, r={rank}, q={filter}, {} steps, val ppl {:.2}",
        trainer.steps_done(),
        valid.exp()
    );
    write_file(
        &svg,
        line_plot(&title, "layer", "entropy effective rank (mean over heads)", &series, true).as_bytes(),
    );
    println!("plot: {svg}");
}
