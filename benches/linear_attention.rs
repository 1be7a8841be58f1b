//! ELU+1 linear attention, f32, single thread, d_k = d_v = 64: causal forward and forward+backward
//! at n = 128, 512, 2048, 4096 (default chunk), and one recurrent step.
//!
//! Criterion's "elem/s" is flop/s counted in the recurrent form (what any implementation must do):
//! forward `4 n d_k d_v` (state update and read-out), backward `8 n d_k d_v` (`dQ`, `dK`, `dV` and
//! the suffix state), a step `4 d_k d_v`. The chunked kernels execute more (the diagonal blocks
//! and, in the backward, the recomputed forward); `--times` prints both counts.
//!
//! Two more modes, for `benches/torch_linear.py` (which runs them alternately with PyTorch):
//!
//! ```text
//! cargo bench --bench linear_attention -- --times [REPS]   one JSON line per shape: median wall and
//!                                                          thread-CPU seconds, executed flops
//! cargo bench --bench linear_attention -- --fma-peak       the core's f32 FMA peak: a loop of
//!                                                          independent vector FMAs (no loads)
//! ```

use criterion::{BenchmarkId, Criterion, Throughput};
use sd_attention::attention::linear::{LinearAttention, State};
use sd_attention::attention::Causality;
use std::hint::black_box;
use std::time::{Duration, Instant};

#[path = "../tests/common/mod.rs"]
mod common;

const D: usize = 64;
const SIZES: [usize; 4] = [128, 512, 2048, 4096];

fn inputs(len: usize, seed: u64) -> Vec<f32> {
    common::seeded_matrix(len, seed).into_iter().map(|x| x as f32).collect()
}

/// One shape's buffers and the two timed calls.
struct Case {
    n: usize,
    att: LinearAttention<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    d_out: Vec<f32>,
    out: Vec<f32>,
    grads: [Vec<f32>; 3],
    workspace: Vec<f32>,
}

impl Case {
    fn new(n: usize) -> Self {
        // `LINEAR_CHUNK` overrides the default chunk length (for choosing it by measurement).
        let chunk = std::env::var("LINEAR_CHUNK").ok().and_then(|c| c.parse().ok());
        let att = LinearAttention::<f32>::new(D, D, Causality::Causal);
        let att = chunk.map_or(att, |c| att.with_chunk(c));
        let len = att.forward_workspace_len(n).max(att.backward_workspace_len(n));
        Case {
            n,
            att,
            q: inputs(n * D, 1),
            k: inputs(n * D, 2),
            v: inputs(n * D, 3),
            d_out: inputs(n * D, 4),
            out: vec![0.0; n * D],
            grads: [vec![0.0; n * D], vec![0.0; n * D], vec![0.0; n * D]],
            workspace: vec![0.0; len],
        }
    }

    fn forward(&mut self) {
        let (q, k, v) = (black_box(&self.q), black_box(&self.k), black_box(&self.v));
        self.att.forward(self.n, q, k, v, &mut self.out, &mut self.workspace).unwrap();
    }

    fn forward_backward(&mut self) {
        self.forward();
        let [d_q, d_k, d_v] = &mut self.grads;
        let d_out = black_box(&self.d_out);
        self.att
            .backward(self.n, &self.q, &self.k, &self.v, d_out, d_q, d_k, d_v, &mut self.workspace)
            .unwrap();
    }
}

fn causal(c: &mut Criterion) {
    let mut forward = c.benchmark_group("linear_causal_fwd");
    forward.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    for &n in &SIZES {
        let mut case = Case::new(n);
        forward.throughput(Throughput::Elements((4 * n * D * D) as u64));
        forward
            .bench_with_input(BenchmarkId::from_parameter(n), &n, |bench, _| bench.iter(|| case.forward()));
    }
    forward.finish();
    let mut both = c.benchmark_group("linear_causal_fwd_bwd");
    both.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    for &n in &SIZES {
        let mut case = Case::new(n);
        both.throughput(Throughput::Elements((12 * n * D * D) as u64));
        both.bench_with_input(BenchmarkId::from_parameter(n), &n, |bench, _| {
            bench.iter(|| case.forward_backward())
        });
    }
    both.finish();
}

fn recurrent(c: &mut Criterion) {
    let mut group = c.benchmark_group("linear_recurrent_step");
    group.sample_size(50).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    let (q, k, v) = (inputs(D, 5), inputs(D, 6), inputs(D, 7));
    let (mut s, mut z) = (vec![0.0f32; D * D], vec![0.0f32; D]);
    let mut state = State::new(D, D, &mut s, &mut z).unwrap();
    let mut out = vec![0.0f32; D];
    group.throughput(Throughput::Elements((4 * D * D) as u64));
    group.bench_function(BenchmarkId::from_parameter("64x64"), |bench| {
        bench.iter(|| state.step(black_box(&q), black_box(&k), black_box(&v), 1e-6, &mut out).unwrap())
    });
    group.finish();
}

/// CPU time of the calling thread (Linux `CLOCK_THREAD_CPUTIME_ID`), in seconds: time the thread
/// actually ran, which other processes on a shared machine do not inflate (their cache pressure
/// still can).
fn thread_cpu_seconds() -> f64 {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec (two 64-bit fields on x86-64 Linux); the call
    // only writes it.
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts.sec as f64 + ts.nsec as f64 * 1e-9
}

/// Median wall and thread-CPU seconds of `reps` calls (after two warm-up calls), and the least
/// thread-CPU seconds (the call least disturbed by other processes on a shared machine).
fn time(reps: usize, mut run: impl FnMut()) -> (f64, f64, f64) {
    run();
    run();
    let (mut wall, mut cpu) = (Vec::with_capacity(reps), Vec::with_capacity(reps));
    for _ in 0..reps {
        let (w0, c0) = (Instant::now(), thread_cpu_seconds());
        run();
        cpu.push(thread_cpu_seconds() - c0);
        wall.push(w0.elapsed().as_secs_f64());
    }
    let median = |x: &mut Vec<f64>| {
        x.sort_by(f64::total_cmp);
        x[x.len() / 2]
    };
    (median(&mut wall), median(&mut cpu), cpu[0])
}

/// Flops the chunked causal kernels execute for `n` tokens with chunk `c`, `d = d_k = d_v`, row
/// blocks of `rows` and panels of `width` (masked scores cover bands of `width` rows up to the
/// band's end, masked products blocks of `rows` rows inside those bands up to the block's end):
/// per chunk, state products (`2 c d^2` each: forward `A S`, `B^T V`; backward `dO S^T`, `B^T V`,
/// `V R^T`, `B R`, `A^T g`, less the ones against a zero state: `A S` and `dO S^T` in the first
/// chunk, `V R^T` and `B R` in the last) and masked products (`2 d` per entry of the areas that
/// `lower_*`/`upper_*` of the kernels cover: forward `P`, `P V`; backward `P`, `M = dO V^T`,
/// `G B` lower and `G^T A` (over `G` transposed), `P^T`, `P^T g` upper).
fn executed_flops(n: usize, c: usize, rows: usize, width: usize, backward: bool) -> f64 {
    let d = D as f64;
    let mut flops = 0.0;
    let chunks = n.div_ceil(c);
    for (index, t0) in (0..n).step_by(c).enumerate() {
        let len = c.min(n - t0);
        let (mut lower_scores, mut lower, mut upper_scores, mut upper) = (0.0, 0.0, 0.0, 0.0);
        for i0 in (0..len).step_by(width) {
            let band = width.min(len - i0);
            lower_scores += (band * len.min(i0 + width)) as f64;
            upper_scores += (band * (len - i0)) as f64;
        }
        for b0 in (0..len).step_by(width) {
            let b1 = len.min(b0 + width);
            for i0 in (b0..b1).step_by(rows) {
                let block = rows.min(b1 - i0);
                lower += (block * (i0 + block)) as f64;
                upper += (block * (len - i0)) as f64;
            }
        }
        let state = 2.0 * len as f64 * d * d;
        let (first, last) = (index == 0, index + 1 == chunks);
        flops += if backward {
            let skipped = if first { 1.0 } else { 0.0 } + if last { 2.0 } else { 0.0 };
            (5.0 - skipped) * state + 2.0 * d * (2.0 * lower_scores + lower + upper_scores + 2.0 * upper)
        } else {
            (if first { 1.0 } else { 2.0 }) * state + 2.0 * d * (lower_scores + lower)
        };
    }
    flops
}

/// `--times`: one JSON line per shape.
fn times(reps: usize) {
    let (rows, width) = if std::is_x86_feature_detected!("avx512f") { (8, 32) } else { (6, 16) };
    for &n in &[512usize, 2048, 4096] {
        let mut case = Case::new(n);
        let chunk = case.att.chunk;
        let (fwd_wall, fwd_cpu, fwd_cpu_min) = time(reps, || case.forward());
        let (both_wall, both_cpu, both_cpu_min) = time(reps, || case.forward_backward());
        let executed_fwd = executed_flops(n, chunk, rows, width, false);
        let executed_both = executed_fwd + executed_flops(n, chunk, rows, width, true);
        println!(
            "{{\"n\": {n}, \"fwd_wall\": {fwd_wall:e}, \"fwd_cpu\": {fwd_cpu:e}, \"both_wall\": {both_wall:e}, \
             \"both_cpu\": {both_cpu:e}, \"fwd_cpu_min\": {fwd_cpu_min:e}, \"both_cpu_min\": {both_cpu_min:e}, \
             \"executed_fwd\": {executed_fwd:e}, \"executed_both\": {executed_both:e}}}"
        );
    }
    let (q, k, v) = (inputs(D, 5), inputs(D, 6), inputs(D, 7));
    let (mut s, mut z) = (vec![0.0f32; D * D], vec![0.0f32; D]);
    let mut state = State::new(D, D, &mut s, &mut z).unwrap();
    let mut out = vec![0.0f32; D];
    let (wall, cpu, cpu_min) = time(reps.max(20), || {
        for _ in 0..1000 {
            state.step(black_box(&q), black_box(&k), black_box(&v), 1e-6, &mut out).unwrap();
        }
    });
    println!(
        "{{\"step_wall\": {:e}, \"step_cpu\": {:e}, \"step_cpu_min\": {:e}}}",
        wall / 1000.0,
        cpu / 1000.0,
        cpu_min / 1000.0
    );
}

/// `--fma-peak`: f32 flop/s of a loop of independent FMAs on 12 (AVX2) or 24 (AVX-512) vector
/// accumulators, enough to cover the FMA latency on both ports; no memory operands. Prints the
/// median of 21 runs of 20 million iterations... scaled to about 0.1 s each, in wall and thread-CPU
/// time.
// The AVX-512 intrinsics need Rust 1.89, above the library's MSRV; benches build with the current
// toolchain only.
#[allow(clippy::incompatible_msrv)]
fn fma_peak() {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        /// # Safety
        /// The CPU must have AVX2 and FMA.
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2(iterations: u64, x: f32) -> f32 {
            let (a, b) = (_mm256_set1_ps(x), _mm256_set1_ps(0.999_999));
            let mut acc = [_mm256_set1_ps(0.0); 12];
            for _ in 0..iterations {
                for v in acc.iter_mut() {
                    *v = _mm256_fmadd_ps(*v, b, a);
                }
            }
            let mut sum = _mm256_setzero_ps();
            for v in acc {
                sum = _mm256_add_ps(sum, v);
            }
            let mut lanes = [0.0f32; 8];
            _mm256_storeu_ps(lanes.as_mut_ptr(), sum);
            lanes.iter().sum()
        }
        /// # Safety
        /// The CPU must have AVX-512F.
        #[cfg(sda_avx512)]
        #[allow(clippy::incompatible_msrv)] // Rust >= 1.89 only (build.rs)
        #[target_feature(enable = "avx512f")]
        unsafe fn avx512(iterations: u64, x: f32) -> f32 {
            let (a, b) = (_mm512_set1_ps(x), _mm512_set1_ps(0.999_999));
            let mut acc = [_mm512_set1_ps(0.0); 24];
            for _ in 0..iterations {
                for v in acc.iter_mut() {
                    *v = _mm512_fmadd_ps(*v, b, a);
                }
            }
            let mut sum = _mm512_setzero_ps();
            for v in acc {
                sum = _mm512_add_ps(sum, v);
            }
            _mm512_reduce_add_ps(sum)
        }
        let wide = cfg!(sda_avx512) && std::is_x86_feature_detected!("avx512f");
        let (flops_per_iteration, name) =
            if wide { (24.0 * 16.0 * 2.0, "avx512") } else { (12.0 * 8.0 * 2.0, "avx2") };
        let iterations = 10_000_000u64;
        let run = || {
            #[cfg(sda_avx512)]
            if wide {
                // SAFETY: AVX-512F was just detected.
                black_box(unsafe { avx512(iterations, black_box(1e-3)) });
                return;
            }
            // SAFETY: the machines this bench runs on have AVX2 and FMA (checked below).
            black_box(unsafe { avx2(iterations, black_box(1e-3)) });
        };
        assert!(std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma"), "no AVX2/FMA");
        let (wall, cpu, _) = time(21, run);
        let flops = flops_per_iteration * iterations as f64;
        println!(
            "{{\"fma_peak_isa\": \"{name}\", \"fma_peak_wall\": {:e}, \"fma_peak_cpu\": {:e}}}",
            flops / wall,
            flops / cpu
        );
    }
}

/// Causal multi-head ELU+1 linear attention, forward + backward, 8 heads of 64 at n = 2048
/// (packed `n x 512` layouts). With the `parallel` feature the heads run on rayon's pool
/// (`RAYON_NUM_THREADS`); `benches/torch_scaling.py` runs the same shapes in PyTorch.
fn multihead(c: &mut Criterion) {
    let (n, h) = (2048, 8);
    let att = LinearAttention::<f32>::new(D, D, Causality::Causal).with_heads(h);
    let mut group = c.benchmark_group("linear_multihead_causal_f32");
    group.sample_size(10);
    let len = n * h * D;
    let (q, k, v, d_out) = (inputs(len, 1), inputs(len, 2), inputs(len, 3), inputs(len, 4));
    let mut out = vec![0.0f32; len];
    let (mut d_q, mut d_k, mut d_v) = (out.clone(), out.clone(), out.clone());
    let mut workspace = vec![0.0f32; att.forward_workspace_len(n).max(att.backward_workspace_len(n))];
    group.throughput(Throughput::Elements((12 * n * D * D * h) as u64));
    group.bench_with_input(BenchmarkId::new("fwd_bwd_8x64", n), &n, |bench, &n| {
        bench.iter(|| {
            att.forward(n, black_box(&q), black_box(&k), black_box(&v), &mut out, &mut workspace).unwrap();
            att.backward(n, &q, &k, &v, black_box(&d_out), &mut d_q, &mut d_k, &mut d_v, &mut workspace)
                .unwrap();
        })
    });
    group.finish();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--times") {
        let reps = args.get(at + 1).and_then(|r| r.parse().ok()).unwrap_or(15);
        return times(reps);
    }
    if args.iter().any(|a| a == "--fma-peak") {
        return fma_peak();
    }
    let mut criterion = Criterion::default().configure_from_args();
    causal(&mut criterion);
    recurrent(&mut criterion);
    multihead(&mut criterion);
    criterion.final_summary();
}
