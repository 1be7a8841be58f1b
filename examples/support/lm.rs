//! Shared by the language-model examples (cascade, linearize, allocate): flags, a progress bar on
//! stderr, training on the Shakespeare corpus, the per-layer routing/filtering spectra of a model's
//! attention kernels, and a hand-written SVG line plot.
#![allow(dead_code)]

use crate::cli::{fail, fail_on, usage_error};
use sd_attention::model::attention::AttentionMixer;
use sd_attention::model::config::{AttentionKind, ModelConfig};
use sd_attention::model::sublayer::SublayerDims;
use sd_attention::spectral::factored::FactoredKernel;
use sd_attention::spectral::spectrum::{head_spectrum, head_spectrum_workspace_len};
use sd_attention::train::adamw::AdamWConfig;
use sd_attention::train::schedule::WarmupCosine;
use sd_attention::train::trainer::{TrainConfig, Trainer};
use std::io::{IsTerminal, Write};
use std::time::Instant;

/// `--name value` flags over defaults; `--help` lists them.
pub struct Flags {
    args: Vec<String>,
    pub help: Vec<String>,
}

impl Flags {
    pub fn from_env() -> Self {
        Flags { args: std::env::args().skip(1).collect(), help: Vec::new() }
    }

    fn raw(&mut self, name: &str, default: &str, what: &str) -> String {
        self.help.push(format!("  --{name:<16} {what} (default {default})"));
        let key = format!("--{name}");
        match self.args.iter().position(|a| *a == key) {
            Some(i) => {
                self.args.get(i + 1).cloned().unwrap_or_else(|| usage_error(&format!("{key} needs a value")))
            }
            None => default.to_string(),
        }
    }

    pub fn get<T: std::str::FromStr + std::fmt::Display>(&mut self, name: &str, default: T, what: &str) -> T
    where
        T::Err: std::fmt::Display,
    {
        let s = self.raw(name, &default.to_string(), what);
        s.parse().unwrap_or_else(|e| usage_error(&format!("--{name}: cannot parse {s:?}: {e}")))
    }

    /// As [`Flags::get`] for a count that must be at least `min`.
    pub fn at_least(&mut self, name: &str, default: usize, min: usize, what: &str) -> usize {
        let v = self.get(name, default, what);
        if v < min {
            usage_error(&format!("--{name} must be at least {min}, got {v}"));
        }
        v
    }

    pub fn string(&mut self, name: &str, default: &str, what: &str) -> String {
        self.raw(name, default, what)
    }

    pub fn switch(&mut self, name: &str, what: &str) -> bool {
        self.help.push(format!("  --{name:<16} {what}"));
        self.args.iter().any(|a| *a == format!("--{name}"))
    }

    /// Prints the help and exits if `--help` was given; rejects unknown flags and stray arguments.
    /// Call it before any work, right after the last flag is read.
    pub fn finish(&self, about: &str) {
        if crate::cli::wants_help(&self.args) {
            outln!("{about}\n\nflags:\n{}\n  -h, --help           this help", self.help.join("\n"));
            std::process::exit(0);
        }
        let known = |a: &str| self.help.iter().any(|h| h.trim_start().starts_with(&format!("{a} ")));
        let mut i = 0;
        while i < self.args.len() {
            let a = &self.args[i];
            if !a.starts_with("--") || !known(a) {
                let what = if a.starts_with('-') { "unknown flag" } else { "unexpected argument" };
                usage_error(&format!("{what} {a}"));
            }
            // A flag with a value (its help line shows a default) takes the next argument.
            let takes_value = self
                .help
                .iter()
                .any(|h| h.trim_start().starts_with(&format!("{a} ")) && h.contains("(default "));
            i += if takes_value { 2 } else { 1 };
        }
    }
}

/// `--threads N`: with the `parallel` feature, the size of rayon's global pool, which the crate
/// runs on (0: rayon's default, `RAYON_NUM_THREADS` or one thread per core); without it only one
/// thread is possible. Read before [`Flags::finish`]; the pool is built by [`use_threads`].
pub fn threads_flag(f: &mut Flags) -> usize {
    f.get("threads", 0, "worker threads (0: RAYON_NUM_THREADS or one per core; needs the `parallel` feature)")
}

/// Builds rayon's global pool of `threads` threads (0: leave rayon's default).
pub fn use_threads(threads: usize) {
    #[cfg(feature = "parallel")]
    if threads > 0 {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()
            .unwrap_or_else(|e| usage_error(&format!("--threads {threads}: {e}")));
    }
    #[cfg(not(feature = "parallel"))]
    if threads > 1 {
        usage_error(&format!(
            "--threads {threads}: this build runs on one thread (build with --features parallel)"
        ));
    }
}

/// Hyperparameters of a training run.
#[derive(Clone, Copy, Debug)]
pub struct RunConfig {
    pub steps: u64,
    pub batch: usize,
    pub seq: usize,
    pub lr: f64,
    pub warmup: u64,
    pub seed: u64,
}

impl RunConfig {
    /// Checks the values no flag parser catches (a positive finite learning rate, a valid schedule),
    /// so that a bad run stops before any work.
    pub fn check(&self) {
        self.check_named("--lr");
    }

    /// As [`RunConfig::check`], naming the learning rate's flag `lr_flag` in the error.
    pub fn check_named(&self, lr_flag: &str) {
        if !(self.lr.is_finite() && self.lr > 0.0) {
            usage_error(&format!("{lr_flag} must be a positive number, got {}", self.lr));
        }
        self.train_config();
    }

    pub fn train_config(&self) -> TrainConfig {
        TrainConfig {
            batch: self.batch,
            seq: self.seq,
            schedule: WarmupCosine::new(
                self.lr,
                self.lr / 10.0,
                self.warmup.min(self.steps),
                self.steps.max(1),
            )
            .unwrap_or_else(|e| fail(&format!("schedule: {e}"))),
            adamw: AdamWConfig::default(),
            clip_norm: 1.0,
            seed: self.seed,
        }
    }
}

/// One line describing a model: its widths, depth, heads, context, and the attention kind, norm and
/// positions of its layers.
pub fn describe(config: &ModelConfig) -> String {
    let kind = |k: &AttentionKind| match *k {
        AttentionKind::Sd { routing_rank, filtering_rank } => {
            format!("S-D r {routing_rank} q {filtering_rank}")
        }
        AttentionKind::Softmax => "softmax".to_string(),
        AttentionKind::Linear => "linear".to_string(),
        AttentionKind::LinearQk { qk_width } => format!("linear q/k width {qk_width}"),
    };
    let kinds: Vec<String> = config.attention.iter().map(kind).collect();
    let attention = match kinds.first() {
        Some(first) if kinds.iter().all(|k| k == first) => first.clone(),
        _ => kinds.join(", "),
    };
    format!(
        "d_model {}, {} layers x {} heads, d_head {}, d_mlp {}, context {}, attention {attention}, norm {:?}, positions {:?}",
        config.d_model,
        config.n_layers,
        config.n_heads,
        config.d_head,
        config.d_mlp,
        config.context_len,
        config.norm,
        config.positions
    )
}

/// `h m s` of a duration in seconds.
pub fn clock(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

/// Trains `steps` steps and reports progress on stderr (steps, loss, tokens/s, ETA): as a bar
/// redrawn in place four times a second when stderr is a terminal, otherwise (a log file, a pipe) as
/// one line every `steps / 10` steps (at least 1) and at the last. Returns the wall time in seconds
/// and the mean loss of the last 50 steps.
pub fn train_with_progress(
    trainer: &mut Trainer<f32>,
    text: &[u8],
    run: &RunConfig,
    label: &str,
) -> (f64, f64) {
    let start = Instant::now();
    let tokens_per_step = (run.batch * run.seq) as f64;
    let mut recent: Vec<f64> = Vec::new();
    let mut last_draw = 0.0f64;
    let width = 30;
    let terminal = std::io::stderr().is_terminal();
    let every = (run.steps / 10).max(1);
    for s in 0..run.steps {
        let stats = trainer.step(text).unwrap_or_else(|e| fail(&format!("step {s}: {e}")));
        recent.push(stats.loss);
        if recent.len() > 50 {
            recent.remove(0);
        }
        let elapsed = start.elapsed().as_secs_f64();
        let done = s + 1;
        let due = if terminal { elapsed - last_draw >= 0.25 } else { done % every == 0 };
        if due || done == run.steps {
            last_draw = elapsed;
            let frac = done as f64 / run.steps as f64;
            let rate = done as f64 * tokens_per_step / elapsed.max(1e-9);
            let eta = clock(elapsed / frac - elapsed);
            let mean = recent.iter().sum::<f64>() / recent.len() as f64;
            let steps = run.steps;
            if terminal {
                let filled = (frac * width as f64).round() as usize;
                let bar = format!("{}{}", "#".repeat(filled), " ".repeat(width - filled));
                eprint!("\r{label} [{bar}] step {done}/{steps} loss {mean:.3} {rate:.0} tok/s ETA {eta}   ");
                let _ = std::io::stderr().flush();
            } else {
                eprintln!("{label}: step {done}/{steps} loss {mean:.3} {rate:.0} tok/s ETA {eta}");
            }
        }
    }
    if terminal {
        eprintln!();
    }
    let mean = recent.iter().sum::<f64>() / recent.len().max(1) as f64;
    (start.elapsed().as_secs_f64(), mean)
}

/// Mean and per-head entropy effective ranks of routing `S` and filtering `D`, and the routing
/// energy fraction, of one layer.
#[derive(Clone, Debug)]
pub struct LayerSpectrum {
    pub layer: usize,
    pub kind: AttentionKind,
    /// Per head: (erank S, erank D, rho).
    pub heads: Vec<(f64, f64, f64)>,
    /// Capacity `min(2 r, d_model)` of S (S-D) or `min(2 d_head, d_model)` (softmax).
    pub capacity: usize,
}

impl LayerSpectrum {
    pub fn mean(&self, part: usize) -> f64 {
        let v: Vec<f64> = self.heads.iter().map(|h| [h.0, h.1, h.2][part]).collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    }
    pub fn min(&self, part: usize) -> f64 {
        self.heads.iter().map(|h| [h.0, h.1, h.2][part]).fold(f64::INFINITY, f64::min)
    }
    pub fn max(&self, part: usize) -> f64 {
        self.heads.iter().map(|h| [h.0, h.1, h.2][part]).fold(f64::NEG_INFINITY, f64::max)
    }
}

/// Spectra of every softmax or S-D layer of a model whose parameters are `params` (f32, laid out
/// by `layout`): per head, the factors `(W_Q', W_K')` with `W_Q' W_K'^T = M` from
/// [`AttentionMixer::head_factors`] (for S-D, `M = S + D = U V^T - V U^T - C C^T` exactly), then the
/// exact spectra of [`head_spectrum`] (from the factors: a thin QR and a small core, `docs/math.md`
/// section 9). Linear layers are skipped.
pub fn layer_spectra(config: &ModelConfig, layer_params: &[&[f32]]) -> Vec<LayerSpectrum> {
    let dims = SublayerDims { d_model: config.d_model, n_heads: config.n_heads, d_head: config.d_head };
    let mut out = Vec::new();
    for (l, (&kind, theta)) in config.attention.iter().zip(layer_params).enumerate() {
        if kind == AttentionKind::Linear {
            continue;
        }
        let mixer = AttentionMixer::new(dims, kind).unwrap();
        let theta: Vec<f64> = theta.iter().map(|&v| v as f64).collect();
        let (d, w) = (config.d_model, mixer.qk_width());
        let capacity = match kind {
            AttentionKind::Sd { routing_rank, .. } => (2 * routing_rank).min(d),
            _ => (2 * config.d_head).min(d),
        };
        let mut heads = Vec::new();
        for t in 0..config.n_heads {
            let (mut wq, mut wk) = (vec![0.0; d * w], vec![0.0; d * w]);
            let mut ws = vec![0.0; mixer.head_factors_workspace_len()];
            mixer.head_factors(&theta, t, &mut wq, &mut wk, &mut ws).unwrap();
            let kernel = FactoredKernel::new(d, w, &wq, &wk).unwrap();
            let mut sws = vec![0.0; head_spectrum_workspace_len(d, w)];
            let report = head_spectrum(&kernel, &mut sws).unwrap();
            heads.push((report.routing.entropy, report.filtering.entropy, report.routing_fraction));
        }
        out.push(LayerSpectrum { layer: l, kind, heads, capacity });
    }
    out
}

/// The attention parameters of each layer of a flat parameter buffer.
pub fn attention_params(trainer: &Trainer<f32>) -> Vec<&[f32]> {
    let p = trainer.params();
    trainer.model().layout().layers.iter().map(|l| &p[l.attention.clone()]).collect()
}

/// A series of an SVG line plot.
pub struct Series {
    pub name: String,
    pub color: &'static str,
    pub points: Vec<(f64, f64)>,
    pub dashed: bool,
    /// Spread of each point (e.g. the standard deviation over seeds), drawn as a shaded band and
    /// error bars `y - spread .. y + spread`; empty for none.
    pub spread: Vec<f64>,
}

impl Series {
    /// The band `(x, y - spread, y + spread)` of the finite points that have a spread.
    fn band(&self) -> Vec<(f64, f64, f64)> {
        self.points
            .iter()
            .zip(&self.spread)
            .filter(|(p, s)| p.1.is_finite() && s.is_finite())
            .map(|(&(x, y), &s)| (x, y - s.abs(), y + s.abs()))
            .collect()
    }
}

fn nice_step(range: f64, ticks: f64) -> f64 {
    let raw = range / ticks;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let step = if norm < 1.5 {
        1.0
    } else if norm < 3.0 {
        2.0
    } else if norm < 7.0 {
        5.0
    } else {
        10.0
    };
    step * mag
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A line plot with axes, ticks, markers and a legend, as SVG text (no dependency).
pub fn line_plot(title: &str, x_label: &str, y_label: &str, series: &[Series], integer_x: bool) -> String {
    let (w, h) = (720.0, 440.0);
    let (left, right, top, bottom) = (70.0, 190.0, 40.0, 55.0);
    let mut all: Vec<(f64, f64)> =
        series.iter().flat_map(|s| s.points.iter().copied()).filter(|p| p.1.is_finite()).collect();
    for se in series {
        all.extend(se.band().iter().flat_map(|&(x, lo, hi)| [(x, lo), (x, hi)]));
    }
    let (mut x0, mut x1) =
        all.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |a, p| (a.0.min(p.0), a.1.max(p.0)));
    let (mut y0, mut y1) =
        all.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |a, p| (a.0.min(p.1), a.1.max(p.1)));
    if !(x0.is_finite() && x1.is_finite()) {
        (x0, x1) = (0.0, 1.0);
    }
    if !(y0.is_finite() && y1.is_finite()) {
        (y0, y1) = (0.0, 1.0);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    y0 = y0.min(0.0);
    if y1 <= y0 {
        y1 = y0 + 1.0;
    }
    let ystep = nice_step(y1 - y0, 6.0);
    y1 = (y1 / ystep).ceil() * ystep;
    // The axis starts at a tick: 0, or a negative multiple of the step (a dip below 0 smaller than
    // a thousandth of the range, such as a -0.001 mean, stays at 0 instead of a tick "-0").
    y0 = if -y0 < 1e-3 * (y1 - y0) { 0.0 } else { (y0 / ystep).floor() * ystep };
    let xstep = if integer_x { nice_step(x1 - x0, 8.0).max(1.0) } else { nice_step(x1 - x0, 8.0) };
    let pw = w - left - right;
    let ph = h - top - bottom;
    let sx = |x: f64| left + (x - x0) / (x1 - x0) * pw;
    let sy = |y: f64| top + ph - (y - y0) / (y1 - y0) * ph;
    let mut s = String::new();
    s += &format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"12\">\n"
    );
    s += &format!("<rect width=\"{w}\" height=\"{h}\" fill=\"white\"/>\n");
    s += &format!(
        "<text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n",
        left + pw / 2.0,
        escape(title)
    );
    // Grid and ticks.
    let mut y = y0;
    while y <= y1 + 1e-9 * ystep {
        let py = sy(y);
        s += &format!(
            "<line x1=\"{left}\" y1=\"{py:.1}\" x2=\"{:.1}\" y2=\"{py:.1}\" stroke=\"#e0e0e0\"/>\n",
            left + pw
        );
        s += &format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            left - 6.0,
            py + 4.0,
            fmt_tick(y, ystep)
        );
        y += ystep;
    }
    let mut x = (x0 / xstep).ceil() * xstep;
    while x <= x1 + 1e-9 * xstep {
        let px = sx(x);
        s += &format!(
            "<line x1=\"{px:.1}\" y1=\"{top}\" x2=\"{px:.1}\" y2=\"{:.1}\" stroke=\"#f0f0f0\"/>\n",
            top + ph
        );
        s += &format!(
            "<text x=\"{px:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n",
            top + ph + 18.0,
            fmt_tick(x, xstep)
        );
        x += xstep;
    }
    s += &format!(
        "<rect x=\"{left}\" y=\"{top}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"black\"/>\n"
    );
    s += &format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
        left + pw / 2.0,
        h - 12.0,
        escape(x_label)
    );
    s += &format!(
        "<text x=\"18\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 18 {})\">{}</text>\n",
        top + ph / 2.0,
        top + ph / 2.0,
        escape(y_label)
    );
    for se in series {
        let band = se.band();
        if band.len() >= 2 {
            let outline: Vec<String> = band
                .iter()
                .map(|&(x, _, hi)| format!("{:.1},{:.1}", sx(x), sy(hi)))
                .chain(band.iter().rev().map(|&(x, lo, _)| format!("{:.1},{:.1}", sx(x), sy(lo))))
                .collect();
            s += &format!(
                "<polygon points=\"{}\" fill=\"{}\" fill-opacity=\"0.15\" stroke=\"none\"/>\n",
                outline.join(" "),
                se.color
            );
        }
        for &(x, lo, hi) in &band {
            let px = sx(x);
            s += &format!(
                "<path d=\"M{:.1},{:.1}H{:.1}M{px:.1},{:.1}V{:.1}M{:.1},{:.1}H{:.1}\" stroke=\"{}\" stroke-width=\"1.2\"/>\n",
                px - 4.0,
                sy(lo),
                px + 4.0,
                sy(lo),
                sy(hi),
                px - 4.0,
                sy(hi),
                px + 4.0,
                se.color
            );
        }
    }
    for (i, se) in series.iter().enumerate() {
        let pts: Vec<String> = se
            .points
            .iter()
            .filter(|p| p.1.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let dash = if se.dashed { " stroke-dasharray=\"6 4\"" } else { "" };
        s += &format!(
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"{dash}/>\n",
            pts.join(" "),
            se.color
        );
        for p in &pts {
            let (px, py) = p.split_once(',').unwrap();
            s += &format!("<circle cx=\"{px}\" cy=\"{py}\" r=\"3.5\" fill=\"{}\"/>\n", se.color);
        }
        let ly = top + 10.0 + 20.0 * i as f64;
        let lx = left + pw + 15.0;
        s += &format!(
            "<line x1=\"{lx}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{}\" stroke-width=\"2\"{dash}/>\n",
            lx + 24.0,
            se.color
        );
        s += &format!("<text x=\"{}\" y=\"{}\">{}</text>\n", lx + 30.0, ly + 4.0, escape(&se.name));
    }
    s += "</svg>\n";
    s
}

fn fmt_tick(v: f64, step: f64) -> String {
    if step >= 1.0 && (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        let digits = (-step.log10().floor()).max(0.0) as usize;
        format!("{v:.digits$}")
    }
}

/// Writes `text` to `path`, creating its directory.
pub fn write_file(path: &str, bytes: &[u8]) {
    if let Some(dir) = std::path::Path::new(path).parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).unwrap_or_else(|e| fail_on(dir.display(), e));
        }
    }
    std::fs::write(path, bytes).unwrap_or_else(|e| fail_on(path, e));
}
