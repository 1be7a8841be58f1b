//! The spectral cascade (`docs/math.md` section 7; the main demo): train a small S-D language model
//! WITHOUT layer norm on the shipped Shakespeare corpus (training plays), report validation
//! perplexity on the held-out plays, then the entropy effective rank of the learned routing
//! `S = U V^T - V U^T` (and of filtering `D = -C C^T`) of every head, per layer, computed
//! matrix-free from the factors by Lanczos. Prints a table, writes an SVG line plot and a
//! checkpoint (train::checkpoint) that the other experiments can load.
//!
//! The model: d_model 64, 8 layers of 4 heads, d_head 16, r 8, q 8, MLP 256, context 128 (see
//! `support/experiment.rs`). With `--seeds N` it trains one model per seed (seeds `--seed`,
//! `--seed + 1`, ...; `--jobs` of them at a time, one thread each) and the table gives the mean and
//! standard deviation over seeds; the plot draws the spread. Seed 1's checkpoint is
//! `target/cascade.ckpt`, seed N's `target/cascade-seedN.ckpt`.
//!
//! ```text
//! cargo run --release --example cascade                      # the demo: one seed, about 3 minutes on one core
//! cargo run --release --example cascade -- --seeds 3 --steps 2500 --jobs 3
//! cargo run --release --example cascade -- --help
//! ```

#[path = "support/cli.rs"]
#[macro_use]
mod cli;
#[path = "support/experiment.rs"]
mod experiment;
#[path = "support/lm.rs"]
mod lm;

use cli::{fail, fail_on};
use experiment::*;
use lm::*;
use sd_attention::model::config::{AttentionKind, ModelConfig};
use sd_attention::model::transformer::Model;
use sd_attention::train::checkpoint::Checkpoint;
use sd_attention::train::corpus::{Corpus, DEFAULT_DIR};
use sd_attention::train::trainer::Trainer;
use std::sync::Mutex;

/// What one seed's run measured.
struct SeedRun {
    seed: u64,
    valid: f64,
    seconds: f64,
    loss: f64,
    trained: Vec<LayerSpectrum>,
    at_init: Vec<LayerSpectrum>,
    steps: u64,
    config: ModelConfig,
}

fn main() {
    let mut f = Flags::from_env();
    let shape = Shape::from_flags(&mut f);
    let run = RunConfig {
        steps: f.at_least("steps", 2000, 1, "training steps") as u64,
        batch: f.at_least("batch", 16, 1, "sequences per batch"),
        seq: shape.seq,
        lr: f.get("lr", 3e-3, "peak learning rate (warmup, then cosine to lr/10)"),
        warmup: f.get("warmup", 100, "warmup steps"),
        seed: 1,
    };
    let seeds = Seeds::from_flags(&mut f, 1);
    let eval_windows: usize = f.get("eval-windows", 1000, "validation windows of seq bytes (0 = all)");
    let svg = f.string("svg", "target/cascade.svg", "SVG plot output");
    let ckpt_path =
        f.string("checkpoint", "target/cascade.ckpt", "checkpoint output (seed N > 1: -seedN added)");
    let load = f.string("load", "", "skip training: load this checkpoint (seed N > 1: -seedN added)");
    let corpus_dir = f.string("corpus", DEFAULT_DIR, "corpus directory");
    let threads = threads_flag(&mut f);
    f.finish("cascade: train a small S-D model without norm on Shakespeare and measure the spectral cascade");
    shape.check();
    run.check();
    use_threads(threads);

    // Everything the run needs is read and checked before any work: the checkpoints (one per seed)
    // or the model of the flags, and the corpus.
    let list = seeds.list();
    let config = shape.sd();
    let model = Model::<f32>::with_attention(config.clone()).unwrap_or_else(|e| fail_on("model flags", e));
    let loaded: Vec<Mutex<Option<Checkpoint<f32>>>> = if load.is_empty() {
        list.iter().map(|_| Mutex::new(None)).collect()
    } else {
        list.iter().map(|&seed| Mutex::new(Some(load_sd_checkpoint(&seed_path(&load, seed))))).collect()
    };
    let corpus = Corpus::load(&corpus_dir).unwrap_or_else(|e| fail_on(&corpus_dir, e));
    if load.is_empty() {
        outln!("S-D model without norm: {}", describe(&config));
        out!("{}", model.param_counts());
        outln!(
            "training {} steps of {} x {} bytes on {} training bytes (34 plays), seeds {:?}",
            run.steps,
            run.batch,
            run.seq,
            corpus.train.len(),
            list
        );
    } else {
        for (&seed, ckpt) in list.iter().zip(&loaded) {
            let ckpt = ckpt.lock().unwrap();
            let ckpt = ckpt.as_ref().expect("loaded above");
            let trained = ckpt.optimizer.as_ref().map_or(0, |o| o.step);
            outln!(
                "checkpoint {}: S-D model without norm: {}, {trained} training steps",
                seed_path(&load, seed),
                describe(&ckpt.config)
            );
        }
    }
    let windows = if eval_windows == 0 { usize::MAX } else { eval_windows };
    let runs: Vec<SeedRun> = run_tasks(list.len(), seeds.jobs, |i| {
        let seed = list[i];
        let run = RunConfig { seed, ..run };
        let label = format!("seed {seed}");
        let mut trainer = match loaded[i].lock().unwrap().take() {
            None => {
                let model =
                    Model::<f32>::with_attention(config.clone()).unwrap_or_else(|e| fail_on("model", e));
                Trainer::new(model, run.train_config()).unwrap_or_else(|e| fail_on("trainer", e))
            }
            Some(ckpt) => {
                let path = seed_path(&load, seed);
                let model =
                    Model::<f32>::with_attention(ckpt.config.clone()).unwrap_or_else(|e| fail_on(&path, e));
                // Evaluation reads windows of the checkpoint's context length.
                let run = RunConfig { seq: ckpt.config.context_len, ..run };
                Trainer::from_checkpoint(model, run.train_config(), ckpt)
                    .unwrap_or_else(|e| fail_on(&path, e))
            }
        };
        let config = trainer.model().config().clone();
        // The spectra of a fresh model of the same shape and seed (for a checkpoint: where its
        // training would have started from with this seed).
        let fresh = Model::<f32>::with_attention(config.clone()).unwrap_or_else(|e| fail_on("model", e));
        let run_init = RunConfig { seq: config.context_len, ..run };
        let fresh = Trainer::new(fresh, run_init.train_config()).unwrap_or_else(|e| fail_on("trainer", e));
        let at_init = layer_spectra(&config, &attention_params(&fresh));
        let (mut seconds, mut loss) = (0.0, f64::NAN);
        if load.is_empty() {
            (seconds, loss) = train(&mut trainer, &corpus.train, &run, &label, seeds.jobs);
            let path = seed_path(&ckpt_path, seed);
            let encoded = trainer.checkpoint().encode().unwrap_or_else(|e| fail_on("checkpoint", e));
            write_file(&path, &encoded);
            eprintln!(
                "{label}: trained in {seconds:.1} s ({}), {:.0} tokens/s, final training loss {loss:.4} nats/byte; checkpoint: {path}",
                clock(seconds),
                run.steps as f64 * (run.batch * run.seq) as f64 / seconds,
            );
        }
        let valid = trainer
            .evaluate(&corpus.valid, windows)
            .unwrap_or_else(|e| fail_on(format!("{label}: evaluation"), e));
        let trained = layer_spectra(&config, &attention_params(&trainer));
        SeedRun { seed, valid, seconds, loss, trained, at_init, steps: trainer.steps_done(), config }
    });
    report(&runs, &corpus, windows, &svg);
}

/// Reads and checks a checkpoint for the cascade: a valid file of an S-D model in every layer.
fn load_sd_checkpoint(path: &str) -> Checkpoint<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| fail_on(path, e));
    let ckpt = Checkpoint::<f32>::decode(&bytes).unwrap_or_else(|e| fail_on(path, e));
    if ckpt.config.n_layers == 0
        || ckpt.config.attention.iter().any(|k| !matches!(k, AttentionKind::Sd { .. }))
    {
        fail(&format!("{path}: not an S-D model in every layer ({})", describe(&ckpt.config)));
    }
    ckpt
}

fn report(runs: &[SeedRun], corpus: &Corpus, windows: usize, svg: &str) {
    let config = &runs[0].config;
    let used = ((corpus.valid.len() - 1) / config.context_len).min(windows);
    outln!("\nper seed (validation: held-out plays, {used} windows of {} bytes):", config.context_len);
    outln!("seed   steps   train s   train loss   valid nats/byte   valid ppl   erank S by layer");
    for r in runs {
        let e: Vec<String> = r.trained.iter().map(|s| format!("{:.2}", s.mean(0))).collect();
        // A loaded checkpoint was not trained here: no time or loss of this run.
        let (seconds, loss) = if r.loss.is_nan() {
            ("-".to_string(), "-".to_string())
        } else {
            (format!("{:.1}", r.seconds), format!("{:.4}", r.loss))
        };
        outln!(
            "{:>4}  {:>6}  {:>8}  {:>11}  {:>16.4}  {:>10.3}   {}",
            r.seed,
            r.steps,
            seconds,
            loss,
            r.valid,
            r.valid.exp(),
            e.join(" ")
        );
    }
    let ppl: Vec<f64> = runs.iter().map(|r| r.valid.exp()).collect();
    outln!("validation perplexity over {} seed(s): {}", runs.len(), pm(&ppl, 3));

    // rows[seed][layer] of the per-seed means over heads.
    let per = |part: usize, init: bool| -> Vec<Vec<f64>> {
        runs.iter()
            .map(|r| (if init { &r.at_init } else { &r.trained }).iter().map(|s| s.mean(part)).collect())
            .collect()
    };
    let (s_tr, d_tr, rho_tr, s_in, d_in) =
        (per(0, false), per(1, false), per(2, false), per(0, true), per(1, true));
    let capacity = runs[0].trained.first().map_or(0, |s| s.capacity);
    outln!(
        "\nspectral cascade: entropy effective rank per layer, mean over heads, then mean ± std over {} seed(s) [min, max over heads and seeds]; capacity of S = 2r = {capacity}",
        runs.len()
    );
    outln!(
        "{:>5}  {:<31} {:<31} {:<15} | {:<15} {:<15}",
        "layer",
        "erank S (trained)",
        "erank D (trained)",
        "rho",
        "erank S at init",
        "erank D at init"
    );
    let layers = runs[0].trained.len();
    for l in 0..layers {
        let heads = |part: usize| {
            let lo = runs.iter().map(|r| r.trained[l].min(part)).fold(f64::INFINITY, f64::min);
            let hi = runs.iter().map(|r| r.trained[l].max(part)).fold(f64::NEG_INFINITY, f64::max);
            format!("[{lo:.2}, {hi:.2}]")
        };
        outln!(
            "{:>5}  {:<16}{:<15} {:<16}{:<15} {:<15} | {:<15} {:<15}",
            runs[0].trained[l].layer + 1,
            pm(&column(&s_tr, l), 3),
            heads(0),
            pm(&column(&d_tr, l), 3),
            heads(1),
            pm(&column(&rho_tr, l), 3),
            pm(&column(&s_in, l), 3),
            pm(&column(&d_in, l), 3)
        );
    }
    let (s_mean, s_std) = mean_std_columns(&s_tr);
    let depth: Vec<f64> = (1..=layers).map(|l| l as f64).collect();
    let per_seed_rho: Vec<f64> = s_tr.iter().map(|e| spearman(&depth, e)).collect();
    let rising = s_mean.windows(2).filter(|w| w[1] > w[0]).count();
    if layers > 0 {
        outln!(
            "routing erank (mean over seeds): layer 1 {:.3}, layer {layers} {:.3}; rises between {rising} of {} consecutive layer pairs",
            s_mean[0],
            s_mean[layers - 1],
            layers - 1
        );
        outln!(
            "Spearman correlation of erank S with depth: {:.3} (of the seed means), {} (per seed)",
            spearman(&depth, &s_mean),
            pm(&per_seed_rho, 3)
        );
    }
    let (d_mean, d_std) = mean_std_columns(&d_tr);
    let (si_mean, _) = mean_std_columns(&s_in);
    let (di_mean, _) = mean_std_columns(&d_in);
    let pts = |v: &[f64]| v.iter().enumerate().map(|(l, &e)| ((l + 1) as f64, e)).collect();
    let spread = |v: &[f64]| if runs.len() > 1 { v.to_vec() } else { Vec::new() };
    let series = vec![
        Series {
            name: "erank S (routing)".into(),
            color: "#d62728",
            points: pts(&s_mean),
            dashed: false,
            spread: spread(&s_std),
        },
        Series {
            name: "erank D (filtering)".into(),
            color: "#1f77b4",
            points: pts(&d_mean),
            dashed: false,
            spread: spread(&d_std),
        },
        Series {
            name: "S at init".into(),
            color: "#d62728",
            points: pts(&si_mean),
            dashed: true,
            spread: vec![],
        },
        Series {
            name: "D at init".into(),
            color: "#1f77b4",
            points: pts(&di_mean),
            dashed: true,
            spread: vec![],
        },
    ];
    let (rank, filter) = match config.attention.first() {
        Some(AttentionKind::Sd { routing_rank, filtering_rank }) => (*routing_rank, *filtering_rank),
        _ => (0, 0),
    };
    let seeds_note =
        if runs.len() > 1 { format!(", {} seeds (mean ± std)", runs.len()) } else { String::new() };
    let title = format!(
        "Spectral cascade: S-D, no norm, d={}, L={layers}, r={rank}, q={filter}, {} steps, val ppl {:.2}{seeds_note}",
        config.d_model,
        runs[0].steps,
        mean_std(&ppl).0
    );
    write_file(
        svg,
        line_plot(&title, "layer", "entropy effective rank (mean over heads)", &series, true).as_bytes(),
    );
    outln!("plot: {svg}");
}
