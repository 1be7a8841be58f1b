//! Linearization (`docs/math.md` section 7): for k = 0..L, replace the attention of the first k layers of a
//! trained model by causal ELU+1 linear attention and measure validation perplexity on the held-out
//! plays, without and with a short re-fit; for an S-D model and a standard softmax model of the same
//! shape (both without norm; same d_model, layers, heads, d_head, MLP).
//!
//! The replacement keeps each head's query and key maps: a softmax head's `W_Q, W_K` as they are;
//! an S-D head's `W_Q' = [U | V | C]`, `W_K' = [V | -U | -C]` (so that its queries and keys are
//! exactly the ones its softmax used, `AttentionMixer::head_factors`). That needs `2r + q = d_head`,
//! which the defaults satisfy (r 4, q 8, d_head 16). The re-fit trains the whole linearized model
//! for `--refit` steps (the k = 0 row gets the same steps, as the baseline of continued training).
//!
//! ```text
//! cargo run --release --example linearize
//! cargo run --release --example linearize -- --steps 3000 --refit 200
//! ```

#[path = "support/lm.rs"]
mod lm;

use lm::*;
use sd_attention::model::attention::AttentionMixer;
use sd_attention::model::config::{AttentionKind, ModelConfig, PositionKind};
use sd_attention::model::norm::NormKind;
use sd_attention::model::sublayer::SublayerDims;
use sd_attention::model::transformer::Model;
use sd_attention::train::checkpoint::Checkpoint;
use sd_attention::train::corpus::{Corpus, DEFAULT_DIR};
use sd_attention::train::trainer::Trainer;

/// The parameters of `config` with the first `k` attention layers made linear, taken from the
/// trained `params` of `source` (every other tensor copied as is).
fn linearized(source: &Model<f32>, params: &[f32], k: usize) -> (ModelConfig, Vec<f32>) {
    let sc = source.config();
    let mut config = sc.clone();
    for kind in config.attention.iter_mut().take(k) {
        *kind = AttentionKind::Linear;
    }
    let target = Model::<f32>::with_attention(config.clone()).unwrap();
    let mut out = vec![0.0f32; target.param_len()];
    let dims = SublayerDims { d_model: sc.d_model, n_heads: sc.n_heads, d_head: sc.d_head };
    let (d, h, dh) = (sc.d_model, sc.n_heads, sc.d_head);
    for (from, to) in source.layout().tensors.iter().zip(&target.layout().tensors) {
        assert_eq!(from.name, to.name);
        let src = &params[from.range.clone()];
        let dst = &mut out[to.range.clone()];
        let layer = from.layer.unwrap_or(usize::MAX);
        if from.name == "attention" && layer < k && sc.attention[layer] != AttentionKind::Linear {
            let mixer = AttentionMixer::new(dims, sc.attention[layer]).unwrap();
            let w = mixer.qk_width();
            assert_eq!(w, dh, "linearization keeps the query/key maps: needs 2r + q = d_head");
            let (w_q_all, w_k_all) = dst.split_at_mut(d * h * dh);
            let (mut wq, mut wk) = (vec![0.0f32; d * w], vec![0.0f32; d * w]);
            let mut ws = vec![0.0f32; mixer.head_factors_workspace_len()];
            for t in 0..h {
                mixer.head_factors(src, t, &mut wq, &mut wk, &mut ws).unwrap();
                for i in 0..d {
                    w_q_all[i * h * dh + t * dh..i * h * dh + (t + 1) * dh]
                        .copy_from_slice(&wq[i * w..(i + 1) * w]);
                    w_k_all[i * h * dh + t * dh..i * h * dh + (t + 1) * dh]
                        .copy_from_slice(&wk[i * w..(i + 1) * w]);
                }
            }
        } else {
            dst.copy_from_slice(src);
        }
    }
    (config, out)
}

fn main() {
    let mut f = Flags::from_env();
    let d_model: usize = f.get("d-model", 64, "width of the residual stream");
    let layers: usize = f.get("layers", 4, "number of blocks");
    let heads: usize = f.get("heads", 4, "heads per layer");
    let d_head: usize = f.get("d-head", 16, "head width (softmax W_Q, W_K and values)");
    let d_mlp: usize = f.get("d-mlp", 256, "MLP hidden width");
    let rank: usize = f.get("rank", 4, "S-D routing rank r (2r + q must equal d-head)");
    let filter: usize = f.get("filter", 8, "S-D filtering rank q");
    let run = RunConfig {
        steps: f.get("steps", 1500, "training steps per model"),
        batch: f.get("batch", 16, "sequences per batch"),
        seq: f.get("seq", 128, "tokens per sequence"),
        lr: f.get("lr", 3e-3, "peak learning rate"),
        warmup: f.get("warmup", 100, "warmup steps"),
        seed: f.get("seed", 1, "seed"),
    };
    let refit: u64 = f.get("refit", 100, "re-fit steps after linearizing (0: none)");
    let eval_windows: usize = f.get("eval-windows", 400, "validation windows (0 = all)");
    let svg = f.string("svg", "target/linearize.svg", "SVG plot output");
    let threads = threads_flag(&mut f);
    f.finish("linearize: replace the first k attention layers by ELU+1 linear attention, S-D vs softmax");
    use_threads(threads);
    if 2 * rank + filter != d_head {
        fail("needs 2 rank + filter = d-head (the linear layer keeps the head's query/key maps)");
    }
    let corpus = Corpus::load(DEFAULT_DIR).unwrap_or_else(|e| fail(&format!("corpus: {e}")));
    let windows = if eval_windows == 0 { usize::MAX } else { eval_windows };
    let models = [
        ("S-D", AttentionKind::Sd { routing_rank: rank, filtering_rank: filter }),
        ("softmax", AttentionKind::Softmax),
    ];
    // Per model: name, (perplexity, after re-fit) per k, attention kernel parameters.
    type Rows = Vec<(f64, f64)>;
    let mut table: Vec<(String, Rows, usize)> = Vec::new();
    for (name, kind) in models {
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
        let model = Model::<f32>::with_attention(config.clone()).unwrap();
        let counts = model.param_counts();
        println!(
            "{name}: {} parameters ({} in attention kernels), no norm",
            counts.total, counts.attention_kernels
        );
        let mut trainer = Trainer::new(model, run.train_config()).unwrap();
        let (seconds, loss) = train_with_progress(&mut trainer, &corpus.train, &run, name);
        println!("{name}: trained {} steps in {:.1} s, final training loss {loss:.4}", run.steps, seconds);
        let ckpt = trainer.checkpoint();
        write_file(
            &format!(
                "target/linearize_{}.ckpt",
                if kind == AttentionKind::Softmax { "softmax" } else { "sd" }
            ),
            &ckpt.encode().unwrap(),
        );
        let mut rows = Vec::new();
        for k in 0..=layers {
            let (lin_config, params) = linearized(trainer.model(), trainer.params(), k);
            let lin_model = Model::<f32>::with_attention(lin_config.clone()).unwrap();
            let mut refit_run = run;
            refit_run.steps = refit.max(1);
            refit_run.warmup = (refit / 10).max(1);
            refit_run.lr = run.lr / 10.0;
            let ck = Checkpoint { config: lin_config, params, optimizer: None };
            let mut lin = Trainer::from_checkpoint(lin_model, refit_run.train_config(), ck).unwrap();
            let before = lin.evaluate(&corpus.valid, windows).unwrap().exp();
            let after = if refit > 0 {
                for _ in 0..refit {
                    lin.step(&corpus.train).unwrap();
                }
                lin.evaluate(&corpus.valid, windows).unwrap().exp()
            } else {
                f64::NAN
            };
            eprintln!("{name} k={k}: ppl {before:.3}, after re-fit {after:.3}");
            rows.push((before, after));
        }
        table.push((name.to_string(), rows, counts.attention_kernels));
    }
    println!("\nvalidation perplexity with the first k attention layers replaced by ELU+1 linear attention");
    println!(
        "(re-fit: {refit} steps of the whole model at lr {:.0e}; {} validation windows of {} bytes)",
        run.lr / 10.0,
        windows.min((corpus.valid.len() - 1) / run.seq),
        run.seq
    );
    print!("{:>3}", "k");
    for (name, _, _) in &table {
        print!("  {:>12} {:>8} {:>12} {:>8}", format!("{name} ppl"), "vs k=0", "re-fit ppl", "vs k=0");
    }
    println!();
    for k in 0..=layers {
        print!("{k:>3}");
        for (_, rows, _) in &table {
            let (b, a) = rows[k];
            let (b0, a0) = rows[0];
            print!(
                "  {:>12.3} {:>+7.1}% {:>12.3} {:>+7.1}%",
                b,
                100.0 * (b / b0 - 1.0),
                a,
                100.0 * (a / a0 - 1.0)
            );
        }
        println!();
    }
    let colors = ["#d62728", "#1f77b4"];
    let mut series = Vec::new();
    for (i, (name, rows, _)) in table.iter().enumerate() {
        series.push(Series {
            name: name.to_string(),
            color: colors[i % 2],
            points: rows.iter().enumerate().map(|(k, r)| (k as f64, r.0)).collect(),
            dashed: false,
        });
        if refit > 0 {
            series.push(Series {
                name: format!("{name}, re-fit"),
                color: colors[i % 2],
                points: rows.iter().enumerate().map(|(k, r)| (k as f64, r.1)).collect(),
                dashed: true,
            });
        }
    }
    let title = format!("Linearizing the first k layers (d={d_model}, L={layers}, {} steps)", run.steps);
    write_file(
        &svg,
        line_plot(
            &title,
            "k (layers replaced by ELU+1 linear attention)",
            "validation perplexity",
            &series,
            true,
        )
        .as_bytes(),
    );
    println!("plot: {svg}");
}
