//! Throughput of the routing/filtering split and its energies (dense and factored).
//! Criterion's "elem/s" counts matrix entries of `M` per second.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sd_attention::spectral::factored::FactoredKernel;
use sd_attention::split::{energies, split, split_in_place};
use std::hint::black_box;

#[path = "../tests/common/mod.rs"]
mod common;

fn bench_split(c: &mut Criterion) {
    let mut group = c.benchmark_group("split_f32");
    for &m in &[64usize, 256, 1024] {
        let mat: Vec<f32> = common::narrow(&common::seeded_matrix(m * m, 3));
        let (mut routing, mut filtering) = (vec![0.0f32; m * m], vec![0.0f32; m * m]);
        group.throughput(Throughput::Elements((m * m) as u64));
        group.bench_with_input(BenchmarkId::new("split", m), &m, |bench, &m| {
            bench.iter(|| split(m, black_box(&mat), &mut routing, &mut filtering).unwrap())
        });
        let mut work = mat.clone();
        group.bench_with_input(BenchmarkId::new("split_in_place", m), &m, |bench, &m| {
            bench.iter(|| split_in_place(m, black_box(&mut work), &mut filtering).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("energies", m), &m, |bench, &m| {
            bench.iter(|| energies(m, black_box(&mat)).unwrap())
        });
    }
    group.finish();

    // A BERT-base head: the dense path forms M (d_model^2) first, the factored one never does.
    let mut group = c.benchmark_group("head_energies_f32_768x64");
    let (d_model, d_head) = (768, 64);
    let w_q = common::narrow(&common::seeded_matrix(d_model * d_head, 4));
    let w_k = common::narrow(&common::seeded_matrix(d_model * d_head, 5));
    let head = FactoredKernel::new(d_model, d_head, &w_q, &w_k).unwrap();
    let mut workspace = vec![0.0f32; head.energies_workspace_len()];
    group.bench_function("factored", |bench| {
        bench.iter(|| black_box(&head).energies(&mut workspace).unwrap())
    });
    let mut dense = vec![0.0f32; d_model * d_model];
    group.bench_function("form_then_split", |bench| {
        bench.iter(|| {
            black_box(&head).to_dense(sd_attention::spectral::factored::Part::Kernel, &mut dense).unwrap();
            energies(d_model, &dense).unwrap()
        })
    });
    group.finish();
}

criterion_group!(split_benches, bench_split);
criterion_main!(split_benches);
