//! GFLOP/s of softmax and S-D attention (single thread, f32, d = 64), forward and forward+backward,
//! at n = 128, 512, 2048, 4096. Criterion's "elem/s" is flop/s: the flop counts are those of
//! `softmax::forward_flops` / `backward_flops` (bidirectional) plus, for S-D heads, the projections
//! (`2 n d_model (2r + q + d_v)` forward, twice that backward). `benches/torch_softmax_sd.py` runs
//! PyTorch on the same shapes and prints the ratio table from `target/criterion`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sd_attention::attention::sd::{AttentionHead, HeadGrads};
use sd_attention::attention::softmax::{backward_flops, forward_flops, SoftmaxAttention, SoftmaxGrads};
use sd_attention::attention::Causality;
use std::hint::black_box;
use std::time::Duration;

#[path = "../tests/common/mod.rs"]
mod common;

const D: usize = 64;
const SIZES: [usize; 4] = [128, 512, 2048, 4096];

fn f32_matrix(len: usize, seed: u64) -> Vec<f32> {
    common::seeded_matrix(len, seed).into_iter().map(|x| x as f32).collect()
}

fn configure(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>, n: usize) {
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(if n >= 2048 { 1500 } else { 500 }));
    group.measurement_time(Duration::from_secs(if n >= 2048 { 4 } else { 2 }));
}

fn bench_softmax(c: &mut Criterion) {
    let mut group = c.benchmark_group("softmax_f32");
    for &n in &SIZES {
        configure(&mut group, n);
        let head = SoftmaxAttention::<f32>::new(D, D, Causality::Bidirectional);
        let (q, k, v, d_out) =
            (f32_matrix(n * D, 1), f32_matrix(n * D, 2), f32_matrix(n * D, 3), f32_matrix(n * D, 4));
        let (mut out, mut lse) = (vec![0f32; n * D], vec![0f32; n]);
        let mut ws = vec![0f32; head.backward_workspace_len(n).max(head.forward_workspace_len(n))];
        let (mut dq, mut dk, mut dv) = (vec![0f32; n * D], vec![0f32; n * D], vec![0f32; n * D]);
        let fwd = forward_flops(n, D, D, Causality::Bidirectional);
        group.throughput(Throughput::Elements(fwd));
        group.bench_with_input(BenchmarkId::new("fwd", n), &n, |b, _| {
            b.iter(|| head.forward(n, black_box(&q), &k, &v, None, &mut out, &mut lse, &mut ws).unwrap())
        });
        group.throughput(Throughput::Elements(fwd + backward_flops(n, D, D, Causality::Bidirectional)));
        group.bench_with_input(BenchmarkId::new("fwd_bwd", n), &n, |b, _| {
            b.iter(|| {
                head.forward(n, black_box(&q), &k, &v, None, &mut out, &mut lse, &mut ws).unwrap();
                let grads = SoftmaxGrads { d_q: &mut dq, d_k: &mut dk, d_v: &mut dv };
                head.backward(n, &q, &k, &v, None, &out, &lse, &d_out, grads, &mut ws).unwrap();
            })
        });
    }
    group.finish();
}

fn bench_sd(c: &mut Criterion) {
    for &rank in &[8usize, 32] {
        let mut group = c.benchmark_group(format!("sd_r{rank}_f32"));
        for &n in &SIZES {
            configure(&mut group, n);
            // d_model = d_v = 64, r = q = rank: queries/keys of width 3r.
            let head = AttentionHead::<f32>::routing_filtering(D, rank, rank, D, Causality::Bidirectional);
            let width = head.qk_width();
            let x = f32_matrix(n * D, 5);
            let params: Vec<f32> = f32_matrix(head.param_len(), 6).iter().map(|p| p * 0.2).collect();
            let d_out = f32_matrix(n * D, 7);
            let (mut out, mut lse) = (vec![0f32; n * D], vec![0f32; n]);
            let mut ws = vec![0f32; head.backward_workspace_len(n)];
            let (mut d_x, mut d_params) = (vec![0f32; n * D], vec![0f32; params.len()]);
            let projection = 2 * (n * D * (width + D)) as u64;
            let fwd = forward_flops(n, width, D, Causality::Bidirectional) + projection;
            group.throughput(Throughput::Elements(fwd));
            group.bench_with_input(BenchmarkId::new("fwd", n), &n, |b, _| {
                b.iter(|| head.forward(n, black_box(&x), &params, &mut out, &mut lse, &mut ws).unwrap())
            });
            let bwd = backward_flops(n, width, D, Causality::Bidirectional) + 3 * projection;
            group.throughput(Throughput::Elements(fwd + bwd));
            group.bench_with_input(BenchmarkId::new("fwd_bwd", n), &n, |b, _| {
                b.iter(|| {
                    head.forward(n, black_box(&x), &params, &mut out, &mut lse, &mut ws).unwrap();
                    let grads = HeadGrads { d_x: &mut d_x, d_params: &mut d_params };
                    head.backward(n, &x, &params, &out, &lse, &d_out, grads, &mut ws).unwrap();
                })
            });
        }
        group.finish();
    }
}

/// Causal multi-head softmax attention, forward + backward, 8 heads of 64 at n = 2048 (packed
/// `n x 512` layouts). With the `parallel` feature the heads run on rayon's pool: set
/// `RAYON_NUM_THREADS` for the thread count (`benches/torch_scaling.py` runs PyTorch's
/// `scaled_dot_product_attention` on the same shapes and thread counts).
fn bench_multihead(c: &mut Criterion) {
    use sd_attention::attention::multihead::MultiHeadSoftmax;
    let (n, h) = (2048, 8);
    let mut group = c.benchmark_group("multihead_softmax_causal_f32");
    group.sample_size(10);
    let mh = MultiHeadSoftmax { n_heads: h, head: SoftmaxAttention::<f32>::new(D, D, Causality::Causal) };
    let len = n * h * D;
    let (q, k, v, d_out) = (f32_matrix(len, 1), f32_matrix(len, 2), f32_matrix(len, 3), f32_matrix(len, 4));
    let (mut out, mut lse) = (vec![0f32; len], vec![0f32; h * n]);
    let mut ws = vec![0f32; mh.backward_workspace_len(n).max(mh.forward_workspace_len(n))];
    let (mut dq, mut dk, mut dv) = (vec![0f32; len], vec![0f32; len], vec![0f32; len]);
    let flops = forward_flops(n, D, D, Causality::Causal) + backward_flops(n, D, D, Causality::Causal);
    group.throughput(Throughput::Elements(flops * h as u64));
    group.bench_with_input(BenchmarkId::new("fwd_bwd_8x64", n), &n, |b, _| {
        b.iter(|| {
            mh.forward(n, black_box(&q), &k, &v, None, &mut out, &mut lse, &mut ws).unwrap();
            let grads = SoftmaxGrads { d_q: &mut dq, d_k: &mut dk, d_v: &mut dv };
            mh.backward(n, &q, &k, &v, None, &out, &lse, &d_out, grads, &mut ws).unwrap();
        })
    });
    group.finish();
}

criterion_group!(benches, bench_softmax, bench_sd, bench_multihead);
criterion_main!(benches);
