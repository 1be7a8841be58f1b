//! Cascade allocation (`docs/math.md` section 7): give each layer the routing rank its measured cascade asks
//! for, train that model, and compare attention parameter counts and validation perplexity with
//! the uniform model.
//!
//! Reads the uniform S-D models that `cargo run --release --example cascade` saved (one per seed:
//! `target/cascade.ckpt` for seed 1, `target/cascade-seedN.ckpt` for seed N), measures the entropy
//! effective rank `e_l` of each one's routing `S` per layer (mean over heads), and sets
//! `r_l = clamp(ceil(e_l / 2), 1, r)`: `S` has rank `2 r_l` and its singular values come in pairs,
//! so `e_l / 2` is the effective number of rotation planes (this rule is ours; the paper's is not
//! known here, `docs/math.md` section 8). The filtering rank stays `q`. The allocated model is then trained
//! from scratch with the same seed, batches, schedule and step count as the uniform one (the step
//! count is read from its checkpoint). With `--seeds N` (default 3) the tables give the mean and
//! standard deviation over seeds; `--jobs` trainings run at a time, one thread each.
//!
//! ```text
//! cargo run --release --example cascade -- --seeds 3 --steps 1250 --jobs 3   # first: the uniform models
//! cargo run --release --example allocate -- --jobs 3
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
use sd_attention::model::config::{AttentionKind, ModelConfig, ParamCounts};
use sd_attention::model::transformer::Model;
use sd_attention::train::checkpoint::Checkpoint;
use sd_attention::train::corpus::{Corpus, DEFAULT_DIR};
use sd_attention::train::trainer::Trainer;

/// One layer of one seed: the routing ranks and the measured routing eranks.
struct LayerRanks {
    r_uniform: usize,
    r_allocated: usize,
    /// erank of `S` of the uniform model (mean over heads).
    erank_uniform: f64,
    /// erank of `S` of the allocated model after its training.
    erank_allocated: f64,
}

/// One seed's uniform and allocated models.
struct SeedRun {
    seed: u64,
    steps: u64,
    uniform_ppl: f64,
    ppl: f64,
    uniform_counts: ParamCounts,
    counts: ParamCounts,
    layers: Vec<LayerRanks>,
    seconds: f64,
}

fn main() {
    let mut f = Flags::from_env();
    let load =
        f.string("load", "target/cascade.ckpt", "the uniform S-D model of seed 1 (seed N: -seedN added)");
    let steps: u64 = f.get("steps", 0, "training steps of the allocated models (0: the uniform model's)");
    let batch = f.at_least("batch", 16, 1, "sequences per batch (use the cascade run's)");
    let lr: f64 = f.get("lr", 3e-3, "peak learning rate (use the cascade run's)");
    let warmup: u64 = f.get("warmup", 100, "warmup steps (use the cascade run's)");
    let seeds = Seeds::from_flags(&mut f, 3);
    let eval_windows: usize = f.get("eval-windows", 1000, "validation windows (0 = all)");
    let svg = f.string("svg", "target/allocate.svg", "SVG plot output");
    let corpus_dir = f.string("corpus", DEFAULT_DIR, "corpus directory");
    let threads = threads_flag(&mut f);
    f.finish("allocate: per-layer routing rank from the measured cascade vs the uniform model");
    use_threads(threads);

    // The schedule of the flags (the step count comes from each checkpoint when --steps is 0).
    RunConfig { steps: steps.max(1), batch, seq: 1, lr, warmup, seed: 1 }.check();
    let corpus = Corpus::load(&corpus_dir).unwrap_or_else(|e| fail_on(&corpus_dir, e));
    let windows = if eval_windows == 0 { usize::MAX } else { eval_windows };
    let list = seeds.list();
    // Read every checkpoint first, so that a missing one stops before any training.
    let checkpoints: Vec<(String, Checkpoint<f32>)> = list
        .iter()
        .map(|&seed| {
            let path = seed_path(&load, seed);
            let bytes = std::fs::read(&path).unwrap_or_else(|e| {
                fail(&format!(
                    "{path}: {e} (run `cargo run --release --example cascade -- --seeds {}` first)",
                    seeds.count
                ))
            });
            let ckpt = Checkpoint::<f32>::decode(&bytes).unwrap_or_else(|e| fail_on(&path, e));
            if ckpt.config.n_layers == 0
                || !ckpt.config.attention.iter().all(|k| matches!(k, AttentionKind::Sd { .. }))
            {
                fail(&format!("{path}: not an S-D model in every layer ({})", describe(&ckpt.config)));
            }
            let trained = ckpt.optimizer.as_ref().map_or(0, |o| o.step);
            outln!("uniform model {path}: {}, {trained} training steps", describe(&ckpt.config));
            (path, ckpt)
        })
        .collect();
    let runs: Vec<SeedRun> = run_tasks(list.len(), seeds.jobs, |i| {
        let seed = list[i];
        let (path, ckpt) = &checkpoints[i];
        let uniform_config = ckpt.config.clone();
        let trained_steps = ckpt.optimizer.as_ref().map_or(0, |o| o.step);
        let run = RunConfig {
            steps: if steps == 0 { trained_steps.max(1) } else { steps },
            batch,
            seq: uniform_config.context_len,
            lr,
            warmup,
            seed,
        };
        let uniform_model =
            Model::<f32>::with_attention(uniform_config.clone()).unwrap_or_else(|e| fail_on(path, e));
        let uniform_counts = uniform_model.param_counts();
        let mut uniform = Trainer::from_checkpoint(uniform_model, run.train_config(), ckpt.clone())
            .unwrap_or_else(|e| fail_on(path, e));
        let evaluate = |t: &mut Trainer<f32>, what: &str| {
            t.evaluate(&corpus.valid, windows)
                .unwrap_or_else(|e| fail_on(format!("{what}: evaluation"), e))
                .exp()
        };
        let uniform_ppl = evaluate(&mut uniform, path);
        let spectra = layer_spectra(&uniform_config, &attention_params(&uniform));
        let mut config: ModelConfig = uniform_config.clone();
        let mut ranks = Vec::new();
        for (kind, s) in config.attention.iter_mut().zip(&spectra) {
            if let AttentionKind::Sd { routing_rank, filtering_rank } = *kind {
                let r = ((s.mean(0) / 2.0).ceil() as usize).clamp(1, routing_rank);
                ranks.push((routing_rank, r, s.mean(0)));
                *kind = AttentionKind::Sd { routing_rank: r, filtering_rank };
            }
        }
        eprintln!(
            "seed {seed}: uniform model {path}, validation perplexity {uniform_ppl:.3}; allocated routing ranks {:?}",
            ranks.iter().map(|r| r.1).collect::<Vec<_>>()
        );
        let label = format!("allocated seed {seed}");
        let model = Model::<f32>::with_attention(config.clone()).unwrap_or_else(|e| fail_on(&label, e));
        let counts = model.param_counts();
        let mut trainer = Trainer::new(model, run.train_config()).unwrap_or_else(|e| fail_on(&label, e));
        let (seconds, _) = train(&mut trainer, &corpus.train, &run, &label, seeds.jobs);
        let ppl = evaluate(&mut trainer, &label);
        let after = layer_spectra(&config, &attention_params(&trainer));
        let layers = ranks
            .iter()
            .zip(&after)
            .map(|(&(r_uniform, r_allocated, erank_uniform), s)| LayerRanks {
                r_uniform,
                r_allocated,
                erank_uniform,
                erank_allocated: s.mean(0),
            })
            .collect();
        SeedRun { seed, steps: run.steps, uniform_ppl, ppl, uniform_counts, counts, layers, seconds }
    });

    outln!("\nper seed:");
    outln!("seed   steps   train s   r_l allocated              uniform ppl   allocated ppl   attention params   ppl");
    for r in &runs {
        let ranks: Vec<String> = r.layers.iter().map(|l| l.r_allocated.to_string()).collect();
        outln!(
            "{:>4}  {:>6}  {:>8.1}   {:<24}  {:>11.3}   {:>13.3}   {:>+15.1}%  {:>+5.2}%",
            r.seed,
            r.steps,
            r.seconds,
            ranks.join(" "),
            r.uniform_ppl,
            r.ppl,
            100.0 * (r.counts.attention_kernels as f64 / r.uniform_counts.attention_kernels as f64 - 1.0),
            100.0 * (r.ppl / r.uniform_ppl - 1.0)
        );
    }
    let n = runs.len();
    let layers = runs[0].layers.len();
    let col = |f: &dyn Fn(&LayerRanks) -> f64, l: usize| -> Vec<f64> {
        runs.iter().map(|r| f(&r.layers[l])).collect()
    };
    outln!("\nper layer, mean ± std over {n} seed(s):");
    outln!("layer  erank S (uniform)   r uniform  r allocated   erank S (allocated, trained)");
    for l in 0..layers {
        outln!(
            "{:>5}  {:<18}  {:>9}  {:<12}  {:<18}",
            l + 1,
            pm(&col(&|x| x.erank_uniform, l), 3),
            runs[0].layers[l].r_uniform,
            pm(&col(&|x| x.r_allocated as f64, l), 2),
            pm(&col(&|x| x.erank_allocated, l), 3)
        );
    }
    let attn_u: Vec<f64> = runs.iter().map(|r| r.uniform_counts.attention_kernels as f64).collect();
    let attn_a: Vec<f64> = runs.iter().map(|r| r.counts.attention_kernels as f64).collect();
    let tot_u: Vec<f64> = runs.iter().map(|r| r.uniform_counts.total as f64).collect();
    let tot_a: Vec<f64> = runs.iter().map(|r| r.counts.total as f64).collect();
    let ppl_u: Vec<f64> = runs.iter().map(|r| r.uniform_ppl).collect();
    let ppl_a: Vec<f64> = runs.iter().map(|r| r.ppl).collect();
    outln!("\nmodel       attention kernel params   total params        validation ppl");
    outln!("uniform     {:<24}  {:<18}  {}", pm(&attn_u, 0), pm(&tot_u, 0), pm(&ppl_u, 3));
    outln!("allocated   {:<24}  {:<18}  {}", pm(&attn_a, 0), pm(&tot_a, 0), pm(&ppl_a, 3));
    let d_attn: Vec<f64> = attn_a.iter().zip(&attn_u).map(|(a, u)| 100.0 * (a / u - 1.0)).collect();
    let d_tot: Vec<f64> = tot_a.iter().zip(&tot_u).map(|(a, u)| 100.0 * (a / u - 1.0)).collect();
    let d_ppl: Vec<f64> = ppl_a.iter().zip(&ppl_u).map(|(a, u)| 100.0 * (a / u - 1.0)).collect();
    outln!(
        "allocated vs uniform: {} attention kernel parameters ({} of all parameters), {} perplexity",
        pm_percent(&d_attn, 1),
        pm_percent(&d_tot, 1),
        pm_percent(&d_ppl, 2)
    );
    outln!("(paper: 47-65% fewer attention parameters at +3.9% to +8.4% perplexity)");

    let spread = |v: Vec<f64>| if n > 1 { v } else { Vec::new() };
    let series_of = |f: &dyn Fn(&LayerRanks) -> f64| -> (Vec<(f64, f64)>, Vec<f64>) {
        let (m, s): (Vec<f64>, Vec<f64>) = (0..layers).map(|l| mean_std(&col(f, l))).unzip();
        (m.iter().enumerate().map(|(l, &v)| ((l + 1) as f64, v)).collect(), s)
    };
    let (eu, eu_s) = series_of(&|x| x.erank_uniform);
    let (ru, _) = series_of(&|x| 2.0 * x.r_uniform as f64);
    let (ra, ra_s) = series_of(&|x| 2.0 * x.r_allocated as f64);
    let (ea, ea_s) = series_of(&|x| x.erank_allocated);
    let series = vec![
        Series {
            name: "erank S, uniform".into(),
            color: "#d62728",
            points: eu,
            dashed: false,
            spread: spread(eu_s),
        },
        Series { name: "2 r uniform".into(), color: "#7f7f7f", points: ru, dashed: true, spread: vec![] },
        Series {
            name: "2 r allocated".into(),
            color: "#2ca02c",
            points: ra,
            dashed: true,
            spread: spread(ra_s),
        },
        Series {
            name: "erank S, allocated".into(),
            color: "#1f77b4",
            points: ea,
            dashed: false,
            spread: spread(ea_s),
        },
    ];
    let seeds_note = if n > 1 { format!(", {n} seeds (mean ± std)") } else { String::new() };
    let title = format!(
        "Cascade allocation: ppl {:.2} (uniform) vs {:.2} (allocated){seeds_note}",
        mean_std(&ppl_u).0,
        mean_std(&ppl_a).0
    );
    write_file(&svg, line_plot(&title, "layer", "rank", &series, true).as_bytes());
    outln!("plot: {svg}");
}
