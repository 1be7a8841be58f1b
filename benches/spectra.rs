//! Spectra of a head: erank of the routing part of a `d_model = 768, d_head = 64` head by
//! matrix-free Lanczos from `W_Q, W_K` versus forming `S` (`O(d_model^2 d_head)`) and running the
//! dense one-sided Jacobi solver of the tests (tests/common/jacobi.rs); and stochastic Lanczos
//! quadrature of the erank of `S^T S` for `d_model = 4096`. Both paths are checked to agree before
//! timing (erank to 1e-9; SLQ within 4 standard errors of the exact Lanczos value), and printed.

use criterion::{criterion_group, criterion_main, Criterion};
use sd_attention::spectral::erank::entropy_effective_rank;
use sd_attention::spectral::factored::{FactoredKernel, Part};
use sd_attention::spectral::lanczos::operator::{routing_gram_workspace_len, RoutingGram};
use sd_attention::spectral::lanczos::slq::{
    slq_effective_rank, slq_workspace_len, SingularValuesFrom, SlqOptions,
};
use sd_attention::spectral::spectrum::{
    head_spectrum_steps, head_values_workspace_len, routing_singular_values,
};
use std::hint::black_box;
use std::time::Duration;

#[path = "../tests/common/mod.rs"]
mod common;

/// Normal weights with standard deviation 1/sqrt(d_model) (a freshly initialized projection).
fn weights(d_model: usize, d_head: usize, seed: u64) -> Vec<f64> {
    let mut rng = sd_attention::rng::SplitMix64::new(seed);
    let mut w = vec![0.0; d_model * d_head];
    rng.fill_normal(1.0 / (d_model as f64).sqrt(), &mut w);
    w
}

fn lanczos_erank(head: &FactoredKernel<'_, f64>, sigma: &mut [f64], workspace: &mut [f64]) -> f64 {
    let info = routing_singular_values(head, sigma, workspace).unwrap();
    entropy_effective_rank(&sigma[..info.steps]).unwrap()
}

fn dense_erank(head: &FactoredKernel<'_, f64>, dense: &mut [f64]) -> f64 {
    let d = head.d_model();
    head.to_dense(Part::Routing, dense).unwrap();
    let sigma = common::jacobi::jacobi_singular_values(d, d, dense);
    entropy_effective_rank(&sigma).unwrap()
}

fn bench_routing_erank(c: &mut Criterion) {
    let (d_model, d_head) = (768, 64);
    let (w_q, w_k) = (weights(d_model, d_head, 1), weights(d_model, d_head, 2));
    let head = FactoredKernel::new(d_model, d_head, &w_q, &w_k).unwrap();
    let mut sigma = vec![0.0; head_spectrum_steps(d_model, d_head)];
    let mut workspace = vec![0.0; head_values_workspace_len(d_model, d_head)];
    let mut dense = vec![0.0; d_model * d_model];
    let matrix_free = lanczos_erank(&head, &mut sigma, &mut workspace);
    let dense_value = dense_erank(&head, &mut dense);
    println!(
        "routing erank 768x64: matrix-free {matrix_free:.12}, dense {dense_value:.12}, |diff| {:.2e}",
        (matrix_free - dense_value).abs()
    );
    assert!((matrix_free - dense_value).abs() <= 1e-9);

    let mut group = c.benchmark_group("routing_erank_768x64");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    group.bench_function("matrix_free_lanczos", |bench| {
        bench.iter(|| lanczos_erank(black_box(&head), &mut sigma, &mut workspace))
    });
    group.bench_function("dense_form_s_then_jacobi", |bench| {
        bench.iter(|| dense_erank(black_box(&head), &mut dense))
    });
    group.finish();
}

fn bench_slq(c: &mut Criterion) {
    let (d_model, d_head) = (4096, 64);
    let (w_q, w_k) = (weights(d_model, d_head, 3), weights(d_model, d_head, 4));
    let head = FactoredKernel::new(d_model, d_head, &w_q, &w_k).unwrap();
    let mut sigma = vec![0.0; head_spectrum_steps(d_model, d_head)];
    let mut workspace = vec![0.0; head_values_workspace_len(d_model, d_head)];
    let exact = lanczos_erank(&head, &mut sigma, &mut workspace);
    let options = SlqOptions { probes: 10, steps: 30, seed: 5 };
    let mut scratch = vec![0.0; routing_gram_workspace_len(d_model, d_head)];
    let mut slq_workspace = vec![0.0; slq_workspace_len(d_model, options.steps)];
    let mut estimate = || {
        let mut op = RoutingGram::new(head, &mut scratch).unwrap();
        slq_effective_rank(&mut op, SingularValuesFrom::Gram, &options, &mut slq_workspace).unwrap()
    };
    let est = estimate().effective_rank;
    println!(
        "SLQ erank of S, d_model 4096, d_head 64 ({} probes x {} steps): {:.3} +- {:.3}; exact (Lanczos) {exact:.3}",
        options.probes, options.steps, est.value, est.std_error
    );
    assert!((est.value - exact).abs() <= 4.0 * est.std_error);
    let mut group = c.benchmark_group("slq_erank_4096");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    group.bench_function("slq_10x30_routing_gram", |bench| bench.iter(|| black_box(estimate())));
    group.bench_function("exact_lanczos_routing", |bench| {
        bench.iter(|| lanczos_erank(black_box(&head), &mut sigma, &mut workspace))
    });
    group.finish();
}

criterion_group!(benches, bench_routing_erank, bench_slq);
criterion_main!(benches);
