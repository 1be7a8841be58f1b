//! ELU+1 linear attention, f32, single thread, d_k = d_v = 64: causal forward and forward+backward
//! at n = 128, 512, 2048, 4096 (default chunk 32), and one recurrent step.
//!
//! Criterion's "elem/s" is flop/s counted in the recurrent form (what any implementation must do):
//! forward `4 n d_k d_v` (state update and read-out), backward `8 n d_k d_v` (`dQ`, `dK`, `dV` and
//! the suffix state), a step `4 d_k d_v`. The chunked kernels do more (the diagonal blocks), which
//! is not counted. `benches/torch_linear.py` runs PyTorch's cumsum implementation on the same shapes
//! and prints the ratio table from this bench's medians.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sd_attention::attention::linear::{LinearAttention, State};
use sd_attention::attention::Causality;
use std::hint::black_box;
use std::time::Duration;

#[path = "../tests/common/mod.rs"]
mod common;

const D: usize = 64;
const SIZES: [usize; 4] = [128, 512, 2048, 4096];

fn inputs(len: usize, seed: u64) -> Vec<f32> {
    common::seeded_matrix(len, seed).into_iter().map(|x| x as f32).collect()
}

fn causal(c: &mut Criterion) {
    let att = LinearAttention::<f32>::new(D, D, Causality::Causal);
    let mut forward = c.benchmark_group("linear_causal_fwd");
    forward.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    for &n in &SIZES {
        let (q, k, v) = (inputs(n * D, 1), inputs(n * D, 2), inputs(n * D, 3));
        let mut out = vec![0.0f32; n * D];
        let mut workspace = vec![0.0f32; att.forward_workspace_len(n)];
        forward.throughput(Throughput::Elements((4 * n * D * D) as u64));
        forward.bench_with_input(BenchmarkId::from_parameter(n), &n, |bench, &n| {
            bench.iter(|| {
                att.forward(n, black_box(&q), black_box(&k), black_box(&v), &mut out, &mut workspace).unwrap()
            })
        });
    }
    forward.finish();
    let mut both = c.benchmark_group("linear_causal_fwd_bwd");
    both.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    for &n in &SIZES {
        let (q, k, v, d_out) = (inputs(n * D, 1), inputs(n * D, 2), inputs(n * D, 3), inputs(n * D, 4));
        let mut out = vec![0.0f32; n * D];
        let (mut d_q, mut d_k, mut d_v) = (out.clone(), out.clone(), out.clone());
        let len = att.forward_workspace_len(n).max(att.backward_workspace_len(n));
        let mut workspace = vec![0.0f32; len];
        both.throughput(Throughput::Elements((12 * n * D * D) as u64));
        both.bench_with_input(BenchmarkId::from_parameter(n), &n, |bench, &n| {
            bench.iter(|| {
                att.forward(n, black_box(&q), black_box(&k), black_box(&v), &mut out, &mut workspace)
                    .unwrap();
                att.backward(n, &q, &k, &v, black_box(&d_out), &mut d_q, &mut d_k, &mut d_v, &mut workspace)
                    .unwrap();
            })
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

criterion_group!(linear_attention, causal, recurrent, multihead);
criterion_main!(linear_attention);
