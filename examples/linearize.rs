//! Linearization (`docs/math.md` section 7): for k = 0..L, replace the attention of the first k layers of a
//! trained model by causal ELU+1 linear attention and measure validation perplexity on the held-out
//! plays, without (and optionally with) a short re-fit; for an S-D model without norm and the
//! standard transformer, softmax with pre-norm LayerNorm, of the same shape (d_model 64, 8 layers
//! of 4 heads, d_head 16, r 8, q 8, MLP 256, context 128; see `support/experiment.rs`).
//!
//! The replacement keeps each head's query and key maps: a softmax head's `W_Q, W_K` as they are;
//! an S-D head's `W_Q' = [U | V | C]`, `W_K' = [V | -U | -C]` (so that its queries and keys are
//! exactly the ones its softmax used, `AttentionMixer::head_factors`), in a linear layer of query/key
//! width `2r + q` (`AttentionKind::LinearQk`). Everything else (values, outputs, MLPs, norms) is
//! copied. The re-fit (`--refit N`, default none) trains the whole linearized model for N steps
//! (the k = 0 row gets the same steps, as the baseline of continued training).
//!
//! With `--seeds N` (default 3) both models are trained once per seed, `--jobs` trainings at a
//! time (one thread each), and the table gives the mean and standard deviation over seeds. The
//! trained models are saved (`--save-sd`, `--save-baseline`): `cascade --load` and `allocate --load`
//! read the S-D ones, so that one set of trainings serves all three experiments.
//!
//! ```text
//! cargo run --release --example linearize                    # 3 seeds, 6 trainings (long on one core)
//! cargo run --release --example linearize -- --jobs 6        # the same, 6 trainings side by side
//! cargo run --release --example linearize -- --seeds 1 --steps 1000 --refit 100
//! ```

#[path = "support/cli.rs"]
#[macro_use]
mod cli;
#[path = "support/experiment.rs"]
mod experiment;
#[path = "support/lm.rs"]
mod lm;

use cli::fail_on;
use experiment::*;
use lm::*;
use sd_attention::model::attention::AttentionMixer;
use sd_attention::model::config::{AttentionKind, ModelConfig};
use sd_attention::model::sublayer::SublayerDims;
use sd_attention::model::transformer::Model;
use sd_attention::train::checkpoint::Checkpoint;
use sd_attention::train::corpus::{Corpus, DEFAULT_DIR};
use sd_attention::train::trainer::Trainer;

/// The parameters of `config` with the first `k` attention layers made linear, taken from the
/// trained `params` of `source` (every other tensor copied as is). A softmax layer becomes
/// `Linear` with its `W_Q, W_K`; an S-D layer `LinearQk { qk_width: 2r + q }` with its factors.
fn linearized(source: &Model<f32>, params: &[f32], k: usize) -> (ModelConfig, Vec<f32>) {
    let sc = source.config();
    let dims = SublayerDims { d_model: sc.d_model, n_heads: sc.n_heads, d_head: sc.d_head };
    let mut config = sc.clone();
    for kind in config.attention.iter_mut().take(k) {
        if !kind.is_linear() {
            let w = AttentionMixer::new(dims, *kind).unwrap().qk_width();
            *kind =
                if w == sc.d_head { AttentionKind::Linear } else { AttentionKind::LinearQk { qk_width: w } };
        }
    }
    let target = Model::<f32>::with_attention(config.clone()).unwrap();
    let mut out = vec![0.0f32; target.param_len()];
    let (d, h) = (sc.d_model, sc.n_heads);
    for (from, to) in source.layout().tensors.iter().zip(&target.layout().tensors) {
        assert_eq!(from.name, to.name);
        let src = &params[from.range.clone()];
        let dst = &mut out[to.range.clone()];
        let layer = from.layer.unwrap_or(usize::MAX);
        if from.name == "attention" && layer < k && !sc.attention[layer].is_linear() {
            let mixer = AttentionMixer::new(dims, sc.attention[layer]).unwrap();
            let w = mixer.qk_width();
            let (w_q_all, w_k_all) = dst.split_at_mut(d * h * w);
            let (mut wq, mut wk) = (vec![0.0f32; d * w], vec![0.0f32; d * w]);
            let mut ws = vec![0.0f32; mixer.head_factors_workspace_len()];
            for t in 0..h {
                mixer.head_factors(src, t, &mut wq, &mut wk, &mut ws).unwrap();
                for i in 0..d {
                    w_q_all[i * h * w + t * w..i * h * w + (t + 1) * w]
                        .copy_from_slice(&wq[i * w..(i + 1) * w]);
                    w_k_all[i * h * w + t * w..i * h * w + (t + 1) * w]
                        .copy_from_slice(&wk[i * w..(i + 1) * w]);
                }
            }
        } else {
            dst.copy_from_slice(src);
        }
    }
    (config, out)
}

/// Rows of values per seed: `rows[seed][k]`.
type PerSeed = Vec<Vec<f64>>;

/// One trained model of one seed: validation perplexity per k, before and after the re-fit.
struct ModelRun {
    seconds: f64,
    rows: Vec<(f64, f64)>,
}

fn main() {
    let mut f = Flags::from_env();
    let shape = Shape::from_flags(&mut f);
    let run = RunConfig {
        steps: f.at_least("steps", 2500, 1, "training steps per model") as u64,
        batch: f.at_least("batch", 16, 1, "sequences per batch"),
        seq: shape.seq,
        lr: f.get("lr", 3e-3, "peak learning rate of the S-D model"),
        warmup: f.get("warmup", 100, "warmup steps"),
        seed: 1,
    };
    let lr_baseline: f64 = f.get("lr-baseline", 1e-3, "peak learning rate of the softmax baseline");
    let baseline_norm =
        parse_norm(&f.string("baseline-norm", "layer", "norm of the softmax baseline: layer, rms or none"));
    let seeds = Seeds::from_flags(&mut f, 3);
    let refit: u64 = f.get("refit", 0, "re-fit steps after linearizing (0: none)");
    let eval_windows: usize = f.get("eval-windows", 400, "validation windows (0 = all)");
    let svg = f.string("svg", "target/linearize.svg", "SVG plot output");
    let save_sd =
        f.string("save-sd", "target/linearize_sd.ckpt", "the trained S-D models (seed N > 1: -seedN added)");
    let save_baseline = f.string(
        "save-baseline",
        "target/linearize_softmax.ckpt",
        "the trained baselines (seed N > 1: -seedN added)",
    );
    let corpus_dir = f.string("corpus", DEFAULT_DIR, "corpus directory");
    let threads = threads_flag(&mut f);
    f.finish("linearize: replace the first k attention layers by ELU+1 linear attention, S-D vs softmax");
    shape.check();
    run.check();
    RunConfig { lr: lr_baseline, ..run }.check_named("--lr-baseline");
    use_threads(threads);
    let corpus = Corpus::load(&corpus_dir).unwrap_or_else(|e| fail_on(&corpus_dir, e));
    let windows = if eval_windows == 0 { usize::MAX } else { eval_windows };
    let baseline_name = format!("softmax+{}", norm_name(baseline_norm));
    let models: [(String, ModelConfig, f64); 2] =
        [("S-D".to_string(), shape.sd(), run.lr), (baseline_name, shape.softmax(baseline_norm), lr_baseline)];
    for (name, config, lr) in &models {
        let counts = config.param_counts().unwrap_or_else(|e| fail_on("model flags", e));
        Model::<f32>::with_attention(config.clone()).unwrap_or_else(|e| fail_on("model flags", e));
        outln!(
            "{name}: {} parameters ({} in attention kernels), {}, lr {lr:.0e}",
            counts.total,
            counts.attention_kernels,
            norm_name(config.norm)
        );
    }
    let list = seeds.list();
    outln!(
        "training {} steps of {} x {} bytes per model, seeds {:?}, {} trainings ({} at a time)",
        run.steps,
        run.batch,
        run.seq,
        list,
        2 * list.len(),
        seeds.jobs
    );
    // Task i: model i % 2 of seed list[i / 2].
    let results: Vec<ModelRun> = run_tasks(2 * list.len(), seeds.jobs, |i| {
        let (name, config, lr) = &models[i % 2];
        let seed = list[i / 2];
        let run = RunConfig { seed, lr: *lr, ..run };
        let label = format!("{name} seed {seed}");
        let model = Model::<f32>::with_attention(config.clone()).unwrap_or_else(|e| fail_on(&label, e));
        let mut trainer = Trainer::new(model, run.train_config()).unwrap_or_else(|e| fail_on(&label, e));
        let (seconds, loss) = train(&mut trainer, &corpus.train, &run, &label, seeds.jobs);
        eprintln!("{label}: trained {} steps in {seconds:.1} s, final training loss {loss:.4}", run.steps);
        let path = seed_path(if i % 2 == 0 { &save_sd } else { &save_baseline }, seed);
        let encoded = trainer.checkpoint().encode().unwrap_or_else(|e| fail_on(&path, e));
        write_file(&path, &encoded);
        let mut rows = Vec::new();
        for k in 0..=config.n_layers {
            let (lin_config, params) = linearized(trainer.model(), trainer.params(), k);
            let what = format!("{label} k={k}");
            let lin_model =
                Model::<f32>::with_attention(lin_config.clone()).unwrap_or_else(|e| fail_on(&what, e));
            let mut refit_run = run;
            refit_run.steps = refit.max(1);
            refit_run.warmup = (refit / 10).max(1);
            refit_run.lr = run.lr / 10.0;
            let ck = Checkpoint { config: lin_config, params, optimizer: None };
            let mut lin = Trainer::from_checkpoint(lin_model, refit_run.train_config(), ck)
                .unwrap_or_else(|e| fail_on(&what, e));
            let evaluate = |lin: &mut Trainer<f32>| {
                lin.evaluate(&corpus.valid, windows).unwrap_or_else(|e| fail_on(&what, e)).exp()
            };
            let before = evaluate(&mut lin);
            let after = if refit > 0 {
                for _ in 0..refit {
                    lin.step(&corpus.train).unwrap_or_else(|e| fail_on(&what, e));
                }
                evaluate(&mut lin)
            } else {
                f64::NAN
            };
            eprintln!("{label} k={k}: ppl {before:.3}, after re-fit {after:.3}");
            rows.push((before, after));
        }
        ModelRun { seconds, rows }
    });

    let layers = shape.layers;
    outln!(
        "\nvalidation perplexity with the first k attention layers replaced by ELU+1 linear attention, no re-fit; mean ± std over {} seed(s)",
        list.len()
    );
    outln!("({} validation windows of {} bytes)", windows.min((corpus.valid.len() - 1) / run.seq), run.seq);
    let per_model = |m: usize, after: bool| -> Vec<Vec<f64>> {
        (0..list.len())
            .map(|s| results[2 * s + m].rows.iter().map(|r| if after { r.1 } else { r.0 }).collect())
            .collect()
    };
    let change = |rows: &[Vec<f64>]| -> Vec<Vec<f64>> {
        rows.iter().map(|r| r.iter().map(|p| 100.0 * (p / r[0] - 1.0)).collect()).collect()
    };
    let print_table = |after: bool| {
        out!("{:>3}", "k");
        for (name, _, _) in &models {
            out!("  {:>22} {:>20}", format!("{name} ppl"), "vs k=0");
        }
        outln!();
        let tables: Vec<(PerSeed, PerSeed)> = (0..2)
            .map(|m| {
                let p = per_model(m, after);
                let c = change(&p);
                (p, c)
            })
            .collect();
        for k in 0..=layers {
            out!("{k:>3}");
            for (p, c) in &tables {
                out!("  {:>22} {:>20}", pm(&column(p, k), 3), pm_percent(&column(c, k), 1));
            }
            outln!();
        }
    };
    print_table(false);
    if refit > 0 {
        outln!(
            "\nafter a re-fit of {refit} steps of the whole model at a tenth of each model's learning rate:"
        );
        print_table(true);
    }
    outln!("\nper seed, change of perplexity vs k = 0 (no re-fit):");
    for (m, (name, _, _)) in models.iter().enumerate() {
        for (s, seed) in list.iter().enumerate() {
            let r = &results[2 * s + m];
            let c: Vec<String> =
                r.rows.iter().map(|x| format!("{:+.1}", 100.0 * (x.0 / r.rows[0].0 - 1.0))).collect();
            outln!(
                "{name:>20} seed {seed}: k=0 ppl {:.3}, trained in {:.0} s; % by k: {}",
                r.rows[0].0,
                r.seconds,
                c.join(" ")
            );
        }
    }

    let colors = ["#d62728", "#1f77b4"];
    let mut series = Vec::new();
    for (m, (name, _, _)) in models.iter().enumerate() {
        for after in [false, true] {
            if after && refit == 0 {
                continue;
            }
            let (mean, std) = mean_std_columns(&change(&per_model(m, after)));
            series.push(Series {
                name: if after { format!("{name}, re-fit") } else { name.to_string() },
                color: colors[m % 2],
                points: mean.iter().enumerate().map(|(k, &v)| (k as f64, v)).collect(),
                dashed: after,
                spread: if list.len() > 1 { std } else { Vec::new() },
            });
        }
    }
    let seeds_note =
        if list.len() > 1 { format!(", {} seeds (mean ± std)", list.len()) } else { String::new() };
    let title = format!(
        "Linearizing the first k layers (d={}, L={layers}, {} steps{seeds_note})",
        shape.d_model, run.steps
    );
    write_file(
        &svg,
        line_plot(
            &title,
            "k (layers replaced by ELU+1 linear attention)",
            "validation perplexity change vs k = 0 (%)",
            &series,
            true,
        )
        .as_bytes(),
    );
    outln!("plot: {svg}");
}
