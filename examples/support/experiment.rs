//! Shared by the experiments (cascade, linearize, allocate): the setting where the paper's effects
//! show (8 layers; S-D without norm; the standard baseline, softmax with pre-norm LayerNorm), several
//! seeds trained side by side (one thread each), and statistics over seeds (mean, standard
//! deviation, Spearman rank correlation).
#![allow(dead_code)]

use crate::cli::{fail, usage_error};
use crate::lm::{clock, train_with_progress, Flags, RunConfig};
use sd_attention::model::config::{AttentionKind, ModelConfig, PositionKind};
use sd_attention::model::norm::NormKind;
use sd_attention::train::trainer::Trainer;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// The shape of the experiments' models: d_model 64, 8 layers of 4 heads, d_head 16 (values, and
/// softmax queries/keys), S-D routing rank r 8 and filtering rank q 8 (queries/keys of width
/// 2r + q = 24), MLP width 256, context 128.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub d_model: usize,
    pub layers: usize,
    pub heads: usize,
    pub d_head: usize,
    pub d_mlp: usize,
    pub rank: usize,
    pub filter: usize,
    pub seq: usize,
}

impl Shape {
    /// Reads `--d-model`, `--layers`, `--heads`, `--d-head`, `--d-mlp`, `--rank`, `--filter`,
    /// `--seq` (the defaults above).
    pub fn from_flags(f: &mut Flags) -> Self {
        Shape {
            d_model: f.at_least("d-model", 64, 1, "width of the residual stream"),
            layers: f.at_least("layers", 8, 1, "number of blocks"),
            heads: f.at_least("heads", 4, 1, "heads per layer"),
            d_head: f.at_least("d-head", 16, 1, "value width of a head (and softmax query/key width)"),
            d_mlp: f.at_least("d-mlp", 256, 1, "MLP hidden width"),
            rank: f.get("rank", 8, "S-D routing rank r per head (rank S <= 2r)"),
            filter: f.get("filter", 8, "S-D filtering rank q per head (rank D <= q)"),
            seq: f.at_least("seq", 128, 1, "tokens per sequence (= context length)"),
        }
    }

    /// Checks what the flags alone cannot: an S-D head needs a kernel (`r + q > 0`). Call after
    /// [`Flags::finish`], before any work.
    pub fn check(&self) {
        if self.rank + self.filter == 0 {
            usage_error("--rank and --filter cannot both be 0 (an S-D head would have no kernel)");
        }
    }

    fn config(&self, kind: AttentionKind, norm: NormKind) -> ModelConfig {
        ModelConfig::uniform(
            self.d_model,
            self.layers,
            self.heads,
            self.d_head,
            self.d_mlp,
            self.seq,
            kind,
            norm,
            PositionKind::Learned,
            true,
        )
    }

    /// The S-D model without norm.
    pub fn sd(&self) -> ModelConfig {
        self.config(
            AttentionKind::Sd { routing_rank: self.rank, filtering_rank: self.filter },
            NormKind::None,
        )
    }

    /// The softmax baseline with pre-norm `norm` (LayerNorm: the standard transformer).
    pub fn softmax(&self, norm: NormKind) -> ModelConfig {
        self.config(AttentionKind::Softmax, norm)
    }
}

/// `none`, `rms` or `layer`.
pub fn parse_norm(s: &str) -> NormKind {
    match s {
        "none" => NormKind::None,
        "rms" => NormKind::Rms,
        "layer" => NormKind::Layer,
        _ => usage_error(&format!("--baseline-norm: {s:?} is not none, rms or layer")),
    }
}

/// Short name of a norm kind.
pub fn norm_name(n: NormKind) -> &'static str {
    match n {
        NormKind::None => "no norm",
        NormKind::Rms => "RMSNorm",
        NormKind::Layer => "LayerNorm",
    }
}

/// Which seeds to run and how many at the same time.
#[derive(Clone, Copy, Debug)]
pub struct Seeds {
    /// The first seed; the others follow it (`first, first + 1, ..`).
    pub first: u64,
    /// How many seeds.
    pub count: usize,
    /// Trainings run at the same time, one thread each.
    pub jobs: usize,
}

impl Seeds {
    /// Reads `--seeds` (default `count`), `--seed` (first seed, 1) and `--jobs` (1).
    pub fn from_flags(f: &mut Flags, count: usize) -> Self {
        let s = Seeds {
            count: f.get(
                "seeds",
                count,
                "number of seeds; tables give mean and standard deviation over them",
            ),
            first: f.get("seed", 1, "first seed (the others follow it)"),
            jobs: f.get("jobs", 1, "trainings run at the same time, one thread each"),
        };
        if s.count == 0 {
            usage_error("--seeds must be at least 1, got 0");
        }
        if s.jobs == 0 {
            usage_error("--jobs must be at least 1, got 0");
        }
        s
    }

    pub fn list(&self) -> Vec<u64> {
        (0..self.count as u64).map(|i| self.first + i).collect()
    }
}

/// The path of seed `seed`'s file: `base` itself for seed 1, else `-seed<N>` inserted before the
/// extension (`target/cascade.ckpt`, `target/cascade-seed2.ckpt`, ...).
pub fn seed_path(base: &str, seed: u64) -> String {
    if seed == 1 {
        return base.to_string();
    }
    let p = std::path::Path::new(base);
    match (p.file_stem(), p.extension()) {
        (Some(stem), Some(ext)) => p
            .with_file_name(format!("{}-seed{seed}.{}", stem.to_string_lossy(), ext.to_string_lossy()))
            .to_string_lossy()
            .into_owned(),
        _ => format!("{base}-seed{seed}"),
    }
}

/// Runs `task(i)` for `i` in `0..tasks`, `jobs` at a time on their own threads, and returns the
/// results in task order.
pub fn run_tasks<R: Send, F: Fn(usize) -> R + Sync>(tasks: usize, jobs: usize, task: F) -> Vec<R> {
    if jobs <= 1 || tasks <= 1 {
        return (0..tasks).map(task).collect();
    }
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..tasks).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..jobs.min(tasks) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= tasks {
                    break;
                }
                let r = task(i);
                results.lock().unwrap()[i] = Some(r);
            });
        }
    });
    results.into_inner().unwrap().into_iter().map(|r| r.unwrap()).collect()
}

/// Trains `run.steps` steps: with one job the progress bar of `train_with_progress`; with several
/// (threads side by side) one progress line per tenth of the run on stderr, prefixed by `label`.
/// Returns the wall time in seconds and the mean loss of the last 50 steps.
pub fn train(
    trainer: &mut Trainer<f32>,
    text: &[u8],
    run: &RunConfig,
    label: &str,
    jobs: usize,
) -> (f64, f64) {
    if jobs <= 1 {
        return train_with_progress(trainer, text, run, label);
    }
    let start = Instant::now();
    let mut recent: Vec<f64> = Vec::new();
    let every = (run.steps / 10).max(1);
    for s in 0..run.steps {
        let stats = trainer.step(text).unwrap_or_else(|e| fail(&format!("{label}: step {s}: {e}")));
        recent.push(stats.loss);
        if recent.len() > 50 {
            recent.remove(0);
        }
        let done = s + 1;
        if done % every == 0 || done == run.steps {
            let elapsed = start.elapsed().as_secs_f64();
            let mean = recent.iter().sum::<f64>() / recent.len() as f64;
            let eta = elapsed / done as f64 * (run.steps - done) as f64;
            eprintln!(
                "{label}: step {done}/{} loss {mean:.3} ({:.0} ms/step, ETA {})",
                run.steps,
                1e3 * elapsed / done as f64,
                clock(eta)
            );
            let _ = std::io::stderr().flush();
        }
    }
    let mean = recent.iter().sum::<f64>() / recent.len().max(1) as f64;
    (start.elapsed().as_secs_f64(), mean)
}

/// Mean and sample standard deviation (`n - 1` in the denominator; 0 for one value).
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len();
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mean = v.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return (mean, 0.0);
    }
    let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1) as f64;
    (mean, var.sqrt())
}

/// `mean ± std` with `digits` decimals (`mean` alone for one value).
pub fn pm(v: &[f64], digits: usize) -> String {
    let (m, s) = mean_std(v);
    if v.len() <= 1 {
        format!("{m:.digits$}")
    } else {
        format!("{m:.digits$} ± {s:.digits$}")
    }
}

/// `mean ± std` of percentages with a sign (`+1.2 ± 0.3%`).
pub fn pm_percent(v: &[f64], digits: usize) -> String {
    let (m, s) = mean_std(v);
    if v.len() <= 1 {
        format!("{m:+.digits$}%")
    } else {
        format!("{m:+.digits$} ± {s:.digits$}%")
    }
}

/// Ranks `1..=n` of `v` (ties get the mean of their ranks).
fn ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].partial_cmp(&v[b]).unwrap_or(std::cmp::Ordering::Equal));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            r[k] = rank;
        }
        i = j + 1;
    }
    r
}

/// Spearman's rank correlation of `x` and `y`: the Pearson correlation of their ranks (ties
/// averaged). NaN when either is constant or shorter than 2.
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().min(y.len());
    if n < 2 {
        return f64::NAN;
    }
    let (rx, ry) = (ranks(&x[..n]), ranks(&y[..n]));
    let (mx, my) = (rx.iter().sum::<f64>() / n as f64, ry.iter().sum::<f64>() / n as f64);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for i in 0..n {
        let (a, b) = (rx[i] - mx, ry[i] - my);
        sxy += a * b;
        sxx += a * a;
        syy += b * b;
    }
    sxy / (sxx * syy).sqrt()
}

/// The column `j` of rows of per-seed values: `rows[seed][j]`.
pub fn column(rows: &[Vec<f64>], j: usize) -> Vec<f64> {
    rows.iter().map(|r| r[j]).collect()
}

/// Per-point mean and standard deviation over seeds of `rows[seed][point]`.
pub fn mean_std_columns(rows: &[Vec<f64>]) -> (Vec<f64>, Vec<f64>) {
    let n = rows.iter().map(|r| r.len()).min().unwrap_or(0);
    (0..n).map(|j| mean_std(&column(rows, j))).unzip()
}
