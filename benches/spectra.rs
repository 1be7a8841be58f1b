//! Spectra of a head: erank of the routing part of a `d_model = 768, d_head = 64` head by the exact
//! path (thin QR of `[W_Q W_K]` plus the skew core of order 128, `spectral::exact`), by
//! matrix-free Lanczos from `W_Q, W_K`, and by forming `S` (`O(d_model^2 d_head)`) and running the
//! dense one-sided Jacobi solver of the tests (tests/common/jacobi.rs); the erank of `S` and of `D`
//! together, exact against Lanczos (the census report); and stochastic Lanczos quadrature of the
//! erank of `S^T S` for `d_model = 4096`. The paths are checked to agree before timing (erank to
//! 1e-9; SLQ within 4 standard errors of the exact Lanczos value), and printed. LAPACK through
//! numpy on the same head: benches/numpy_spectra.py.

use criterion::{criterion_group, criterion_main, Criterion};
use sd_attention::spectral::erank::entropy_effective_rank;
use sd_attention::spectral::exact;
use sd_attention::spectral::factored::{FactoredKernel, Part};
use sd_attention::spectral::lanczos::operator::{routing_gram_workspace_len, RoutingGram};
use sd_attention::spectral::lanczos::slq::{
    slq_effective_rank, slq_workspace_len, SingularValuesFrom, SlqOptions,
};
use sd_attention::spectral::spectrum::{
    head_spectrum_lanczos, head_spectrum_lanczos_workspace_len, head_spectrum_steps,
    head_values_workspace_len, routing_singular_values,
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

/// Erank of S by the exact path: the skew core's singular values (the D core is computed too, as
/// `head_values` returns both).
fn exact_erank(head: &FactoredKernel<'_, f64>, values: &mut [f64], workspace: &mut [f64]) -> f64 {
    let (routing, filtering) = values.split_at_mut(values.len() / 2);
    exact::head_values(head, routing, filtering, workspace).unwrap();
    entropy_effective_rank(routing).unwrap()
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
    let k = exact::pair_core_order(d_model, d_head);
    let mut values = vec![0.0; 2 * k];
    let mut exact_workspace = vec![0.0; exact::head_values_workspace_len(d_model, d_head)];
    let exact_value = exact_erank(&head, &mut values, &mut exact_workspace);
    println!(
        "routing erank 768x64: exact {exact_value:.12}, |exact - dense| {:.2e}",
        (exact_value - dense_value).abs()
    );
    assert!((exact_value - dense_value).abs() <= 1e-9);

    let mut group = c.benchmark_group("routing_erank_768x64");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    group.bench_function("exact_qr_and_core", |bench| {
        bench.iter(|| exact_erank(black_box(&head), &mut values, &mut exact_workspace))
    });
    group.bench_function("matrix_free_lanczos", |bench| {
        bench.iter(|| lanczos_erank(black_box(&head), &mut sigma, &mut workspace))
    });
    group.bench_function("dense_form_s_then_jacobi", |bench| {
        bench.iter(|| dense_erank(black_box(&head), &mut dense))
    });
    group.finish();
}

/// The census report of one head (erank, participation, stable and numerical rank of S and D):
/// exact against Lanczos.
fn bench_head_report(c: &mut Criterion) {
    let (d_model, d_head) = (768, 64);
    let (w_q, w_k) = (weights(d_model, d_head, 1), weights(d_model, d_head, 2));
    let head = FactoredKernel::new(d_model, d_head, &w_q, &w_k).unwrap();
    let mut exact_workspace = vec![0.0; exact::head_spectrum_workspace_len(d_model, d_head)];
    let mut lanczos_workspace = vec![0.0; head_spectrum_lanczos_workspace_len(d_model, d_head)];
    let exact_report = exact::head_spectrum(&head, &mut exact_workspace).unwrap();
    let lanczos_report = head_spectrum_lanczos(&head, &mut lanczos_workspace).unwrap();
    println!(
        "erank S, D 768x64: exact {:.12} {:.12}, Lanczos {:.12} {:.12}",
        exact_report.routing.entropy,
        exact_report.filtering.entropy,
        lanczos_report.routing.entropy,
        lanczos_report.filtering.entropy
    );
    assert!((exact_report.routing.entropy - lanczos_report.routing.entropy).abs() <= 1e-9);
    assert!((exact_report.filtering.entropy - lanczos_report.filtering.entropy).abs() <= 1e-9);
    let mut group = c.benchmark_group("head_report_s_and_d_768x64");
    group.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    group.bench_function("exact", |bench| {
        bench.iter(|| exact::head_spectrum(black_box(&head), &mut exact_workspace).unwrap())
    });
    group.bench_function("lanczos", |bench| {
        bench.iter(|| head_spectrum_lanczos(black_box(&head), &mut lanczos_workspace).unwrap())
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

criterion_group!(benches, bench_routing_erank, bench_head_report, bench_slq);
criterion_main!(benches);
