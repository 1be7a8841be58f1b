//! Training throughput of the cascade demo's model (examples/cascade.rs defaults): one full
//! training step (batch 16 x 128 bytes of Shakespeare: forward, backward, clipping, AdamW) of an
//! S-D model without norm, d_model 64, 6 layers x 4 heads, d_head 16, r 8, q 8, d_mlp 256, tied
//! unembedding, f32, single thread (`sd_demo_step`); and the same model with every layer ELU+1
//! linear attention (`linear_demo_step`: per head `W_Q`, `W_K` of 64 x 16). Criterion's "elem/s" is
//! tokens/s. `benches/torch_train.py` (`--kind linear` for the second) runs the same model and step
//! in PyTorch CPU eager (one thread) and prints both side by side. `sd_demo_forward` and
//! `sd_demo_forward_backward` time the parts of the S-D step.
//!
//! Threads: one without the `parallel` feature; with it, rayon's global pool, whose size
//! `RAYON_NUM_THREADS` sets (`RAYON_NUM_THREADS=2 cargo bench --features parallel --bench train`;
//! `benches/torch_scaling.py` compares thread counts). Warm-up and measurement times can be
//! shortened from the command line (`-- --warm-up-time 1 --measurement-time 3`), and the corpus
//! read from another directory with `SDA_CORPUS` (for a bench binary run on another machine).
//!
//! `--serial-share [STEPS]` (no criterion) runs demo S-D steps and splits their CPU time between
//! the calling thread and the rest of the process: with the `parallel` feature and
//! `RAYON_NUM_THREADS=1`, rayon's one worker runs every parallel region while the caller waits, so
//! the caller's share is the part of the step that runs on one thread whatever the pool's size
//! (Amdahl's serial fraction `s`; 2 threads can then be at most `2 / (1 + s)` times faster). Per
//! phase: forward, backward, clipping, AdamW.

use criterion::{Criterion, Throughput};
use sd_attention::model::config::{AttentionKind, ModelConfig, PositionKind};
use sd_attention::model::norm::NormKind;
use sd_attention::model::transformer::Model;
use sd_attention::train::adamw::AdamWConfig;
use sd_attention::train::corpus::{Corpus, DEFAULT_DIR};
use sd_attention::train::schedule::WarmupCosine;
use sd_attention::train::trainer::{TrainConfig, Trainer};
use std::time::{Duration, Instant};

/// The demo's model and batch with attention `kind` (keep in sync with examples/cascade.rs and
/// benches/torch_train.py).
pub fn demo_config(kind: AttentionKind) -> (ModelConfig, usize, usize) {
    let (batch, seq) = (16, 128);
    let config =
        ModelConfig::uniform(64, 6, 4, 16, 256, seq, kind, NormKind::None, PositionKind::Learned, true);
    (config, batch, seq)
}

fn bench_train(c: &mut Criterion) {
    let sd = AttentionKind::Sd { routing_rank: 8, filtering_rank: 8 };
    bench_kind(c, "sd_demo_step", sd);
    bench_kind(c, "linear_demo_step", AttentionKind::Linear);
}

fn bench_kind(c: &mut Criterion, name: &str, kind: AttentionKind) {
    let dir = std::env::var("SDA_CORPUS").unwrap_or_else(|_| DEFAULT_DIR.to_string());
    let corpus = Corpus::load(&dir).unwrap();
    let (config, batch, seq) = demo_config(kind);
    let train = TrainConfig {
        batch,
        seq,
        schedule: WarmupCosine::new(3e-3, 3e-4, 100, 2500).unwrap(),
        adamw: AdamWConfig::default(),
        clip_norm: 1.0,
        seed: 1,
    };
    let mut trainer = Trainer::<f32>::new(Model::with_attention(config).unwrap(), train).unwrap();
    let mut group = c.benchmark_group("train");
    group.sample_size(20);
    group.throughput(Throughput::Elements((batch * seq) as u64));
    group.bench_function(name, |b| b.iter(|| trainer.step(&corpus.train).unwrap()));
    if name == "sd_demo_step" {
        // The parts of a step, to see where its time goes: the forward pass alone, and forward
        // plus backward (the rest of a step is clipping and AdamW).
        let model = trainer.model();
        let params = trainer.params().to_vec();
        let mut state = model.activations(batch, seq).unwrap();
        let mut grads = vec![0.0f32; params.len()];
        let text = &corpus.train[..batch * seq + 1];
        let (tokens, targets) = (&text[..batch * seq], &text[1..]);
        group.bench_function("sd_demo_forward", |b| {
            b.iter(|| model.forward(&params, tokens, targets, &mut state).unwrap())
        });
        group.bench_function("sd_demo_forward_backward", |b| {
            b.iter(|| {
                model.forward(&params, tokens, targets, &mut state).unwrap();
                model.backward(&params, &mut state, &mut grads).unwrap();
            })
        });
    }
    group.finish();
}

/// CPU seconds of the calling thread (`which` = 3, `CLOCK_THREAD_CPUTIME_ID`) or of the whole
/// process, all threads (`which` = 2, `CLOCK_PROCESS_CPUTIME_ID`), Linux.
fn cpu_seconds(which: i32) -> f64 {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
    }
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec (two 64-bit fields on x86-64 Linux); the call
    // only writes it.
    let rc = unsafe { clock_gettime(which, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts.sec as f64 + ts.nsec as f64 * 1e-9
}

/// Voluntary context switches of all the process's threads so far (Linux; 0 elsewhere).
fn switches() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0 };
    let mut total = 0;
    for task in tasks.flatten() {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        for line in status.lines() {
            if let Some(v) = line.strip_prefix("voluntary_ctxt_switches:") {
                total += v.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    total
}

/// `--serial-share`: see the module documentation.
fn serial_share(steps: usize) {
    use sd_attention::train::adamw::AdamW;
    use sd_attention::train::clip::clip_global_norm;
    const THREAD: i32 = 3;
    const PROCESS: i32 = 2;
    let dir = std::env::var("SDA_CORPUS").unwrap_or_else(|_| DEFAULT_DIR.to_string());
    let corpus = Corpus::load(&dir).unwrap();
    let (config, batch, seq) = demo_config(AttentionKind::Sd { routing_rank: 8, filtering_rank: 8 });
    let model = Model::<f32>::with_attention(config).unwrap();
    let mut params = vec![0.0f32; model.param_len()];
    model.init_params(1, &mut params).unwrap();
    let mut grads = vec![0.0f32; params.len()];
    let mut state = model.activations(batch, seq).unwrap();
    let mut adamw = AdamW::<f32>::new(AdamWConfig::default(), params.len()).unwrap();
    let text = &corpus.train[..batch * seq + 1];
    let (tokens, targets) = (&text[..batch * seq], &text[1..]);
    // [caller CPU, process CPU, wall] per phase.
    let mut phases = [[0.0f64; 3]; 4];
    let names = ["forward", "backward", "clip", "adamw"];
    let mut hand_offs = 0;
    for step in 0..steps + 3 {
        let switches_before = switches();
        let mut run = |phase: usize, f: &mut dyn FnMut()| {
            let (c0, p0, w0) = (cpu_seconds(THREAD), cpu_seconds(PROCESS), Instant::now());
            f();
            if step >= 3 {
                // The first three steps warm caches and the pool up.
                let t = &mut phases[phase];
                t[0] += cpu_seconds(THREAD) - c0;
                t[1] += cpu_seconds(PROCESS) - p0;
                t[2] += w0.elapsed().as_secs_f64();
            }
        };
        run(0, &mut || {
            model.forward(&params, tokens, targets, &mut state).unwrap();
        });
        run(1, &mut || model.backward(&params, &mut state, &mut grads).unwrap());
        run(2, &mut || {
            clip_global_norm(&mut grads, 1.0).unwrap();
        });
        run(3, &mut || adamw.step(model.layout(), 1e-3, &mut params, &grads).unwrap());
        if step >= 3 {
            hand_offs += switches() - switches_before;
        }
    }
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "default".into());
    println!(
        "demo S-D step, {steps} steps, parallel feature {}, RAYON_NUM_THREADS {threads}",
        cfg!(feature = "parallel")
    );
    println!("{:<9} {:>12} {:>12} {:>12} {:>8}", "phase", "caller ms", "process ms", "wall ms", "caller %");
    let per = |x: f64| x * 1e3 / steps as f64;
    let mut total = [0.0f64; 3];
    for (name, t) in names.iter().zip(&phases) {
        println!(
            "{name:<9} {:>12.3} {:>12.3} {:>12.3} {:>7.1}%",
            per(t[0]),
            per(t[1]),
            per(t[2]),
            100.0 * t[0] / t[1]
        );
        for (acc, v) in total.iter_mut().zip(t) {
            *acc += v;
        }
    }
    println!(
        "{:<9} {:>12.3} {:>12.3} {:>12.3} {:>7.1}%",
        "step",
        per(total[0]),
        per(total[1]),
        per(total[2]),
        100.0 * total[0] / total[1]
    );
    // The same steps through `Trainer::step`, which runs the whole step on one worker of the pool:
    // process CPU, wall time and thread switches (all threads' voluntary context switches, each a
    // sleep on a hand-off) per step.
    let train = TrainConfig {
        batch,
        seq,
        schedule: WarmupCosine::new(3e-3, 3e-4, 100, 2500).unwrap(),
        adamw: AdamWConfig::default(),
        clip_norm: 1.0,
        seed: 1,
    };
    let (config, _, _) = demo_config(AttentionKind::Sd { routing_rank: 8, filtering_rank: 8 });
    let mut trainer = Trainer::<f32>::new(Model::with_attention(config).unwrap(), train).unwrap();
    for _ in 0..3 {
        trainer.step(&corpus.train).unwrap();
    }
    let (p0, w0, s0) = (cpu_seconds(PROCESS), Instant::now(), switches());
    for _ in 0..steps {
        trainer.step(&corpus.train).unwrap();
    }
    let (p1, w1, s1) = (cpu_seconds(PROCESS), w0.elapsed().as_secs_f64(), switches());
    println!(
        "Trainer::step: {:.3} ms process CPU, {:.3} ms wall, {:.0} voluntary switches per step",
        per(p1 - p0),
        per(w1),
        (s1 - s0) as f64 / steps as f64
    );
    println!(
        "(the phases above, called from outside the pool: {:.0} voluntary switches per step)",
        hand_offs as f64 / steps as f64
    );
    let s = total[0] / total[1];
    println!(
        "serial fraction s = {s:.3}: at most {:.2}x on 2 threads, {:.2}x on 16",
        2.0 / (1.0 + s),
        1.0 / (s + (1.0 - s) / 16.0)
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--serial-share") {
        let steps = args.get(at + 1).and_then(|s| s.parse().ok()).unwrap_or(50);
        serial_share(steps);
        return;
    }
    // Defaults that the command line's --warm-up-time / --measurement-time override.
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(8))
        .configure_from_args();
    bench_train(&mut criterion);
    criterion.final_summary();
}
