//! GFLOP/s of the gemm wrappers against a naive loop, at n = 64, 256, 1024 (square), in one run;
//! `gemm_portable` is the allocation-free kernel used without the `alloc` feature. The group
//! `small_k_f32` compares `matmul_strided` (register blocks, no packing) with `matmul`
//! (matrixmultiply, packed) on the thin shapes of attention tiles and of the demo model.
//!
//! The baseline is the cache-friendly naive loop (i, p, j order: a row of `C` accumulates rows of
//! `B`), compiled with the same optimizations; criterion's "elem/s" is flop/s (2 n^3 per product).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sd_attention::linalg::dense::{
    gemm_portable, matmul, matmul_nt, matmul_strided, matmul_tn, Transpose, Update,
};
use std::hint::black_box;

#[path = "../tests/common/mod.rs"]
mod common;

fn naive_ipj<T: sd_attention::Scalar>(n: usize, a: &[T], b: &[T], c: &mut [T]) {
    c.fill(T::zero());
    for i in 0..n {
        let c_row = &mut c[i * n..(i + 1) * n];
        for p in 0..n {
            let a_ip = a[i * n + p];
            for (c_ij, &b_pj) in c_row.iter_mut().zip(&b[p * n..(p + 1) * n]) {
                *c_ij += a_ip * b_pj;
            }
        }
    }
}

fn bench_precision<T: sd_attention::Scalar>(c: &mut Criterion) {
    let mut group = c.benchmark_group(format!("gemm_{}", T::NAME));
    for &n in &[64usize, 256, 1024] {
        let a: Vec<T> = common::seeded_matrix(n * n, 1).into_iter().map(T::of_f64).collect();
        let b: Vec<T> = common::seeded_matrix(n * n, 2).into_iter().map(T::of_f64).collect();
        let mut out = vec![T::zero(); n * n];
        group.throughput(Throughput::Elements(2 * (n as u64).pow(3)));
        if n >= 1024 {
            group.sample_size(10);
        }
        group.bench_with_input(BenchmarkId::new("matmul", n), &n, |bench, &n| {
            bench.iter(|| matmul(n, n, n, black_box(&a), black_box(&b), &mut out, Update::Overwrite).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("matmul_tn", n), &n, |bench, &n| {
            bench.iter(|| {
                matmul_tn(n, n, n, black_box(&a), black_box(&b), &mut out, Update::Overwrite).unwrap()
            })
        });
        group.bench_with_input(BenchmarkId::new("matmul_nt", n), &n, |bench, &n| {
            bench.iter(|| {
                matmul_nt(n, n, n, black_box(&a), black_box(&b), &mut out, Update::Overwrite).unwrap()
            })
        });
        group.bench_with_input(BenchmarkId::new("gemm_portable", n), &n, |bench, &n| {
            bench.iter(|| {
                gemm_portable(
                    n,
                    n,
                    n,
                    T::one(),
                    black_box(&a),
                    Transpose::No,
                    black_box(&b),
                    Transpose::No,
                    T::zero(),
                    &mut out,
                )
                .unwrap()
            })
        });
        group.bench_with_input(BenchmarkId::new("naive_ipj", n), &n, |bench, &n| {
            bench.iter(|| naive_ipj(n, black_box(&a), black_box(&b), &mut out))
        });
    }
    group.finish();
}

/// `m x k x n` products with small `k` or small `n`: `matmul_strided` against `matmul`.
fn bench_small_k(c: &mut Criterion) {
    let mut group = c.benchmark_group("small_k_f32");
    let shapes = [
        (2048, 64, 256),
        (2048, 256, 64),
        (2048, 64, 64),
        (128, 24, 128),
        (128, 128, 16),
        (256, 64, 512),
        (256, 512, 64),
    ];
    for &(m, k, n) in &shapes {
        let a: Vec<f32> = common::seeded_matrix(m * k, 1).into_iter().map(|x| x as f32).collect();
        let b: Vec<f32> = common::seeded_matrix(k * n, 2).into_iter().map(|x| x as f32).collect();
        let mut out = vec![0.0f32; m * n];
        group.throughput(Throughput::Elements(2 * (m * k * n) as u64));
        let label = format!("{m}x{k}x{n}");
        group.bench_with_input(BenchmarkId::new("matmul_strided", &label), &(), |bench, _| {
            bench.iter(|| {
                matmul_strided(
                    m,
                    k,
                    n,
                    1.0,
                    black_box(&a),
                    k,
                    black_box(&b),
                    n,
                    &mut out,
                    n,
                    Update::Overwrite,
                )
                .unwrap()
            })
        });
        group.bench_with_input(BenchmarkId::new("matmul", &label), &(), |bench, _| {
            bench.iter(|| matmul(m, k, n, black_box(&a), black_box(&b), &mut out, Update::Overwrite).unwrap())
        });
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    bench_small_k(c);
    bench_precision::<f32>(c);
    bench_precision::<f64>(c);
}

criterion_group!(gemm, benches);
criterion_main!(gemm);
