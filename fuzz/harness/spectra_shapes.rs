//! Drives the spectral entry points (operators, Lanczos, extremes, skew singular values, the
//! tridiagonal solver, head spectra, SLQ) with arbitrary dimensions, slice and workspace lengths,
//! step counts and values (including NaN and infinities), and asserts that each returns `Ok` or
//! `Err`, never panics, and writes no more values than it reports.

use crate::input::Input;
use sd_attention::spectral::factored::FactoredKernel;
use sd_attention::spectral::lanczos::lanczos::{
    extreme_eigenvalues, lanczos, skew_singular_values, LanczosOptions,
};
use sd_attention::spectral::lanczos::operator::{DenseSymmetric, FnOperator, RoutingGram};
use sd_attention::spectral::lanczos::slq::{slq_effective_rank, slq_trace, SingularValuesFrom, SlqOptions};
use sd_attention::spectral::lanczos::tridiagonal::tridiagonal_eigen;
use sd_attention::spectral::spectrum::head_spectrum;

/// Runs one input; a panic is a finding (the API panicked or broke a promise checked here).
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let n = input.dim(24);
    let steps = input.dim(24);
    let seed = input.byte() as u64;
    let len = input.len_near(n.saturating_mul(n), 1 << 12);
    let matrix = input.f64_bits((len).min(1 << 12));
    let work_len = input.byte() as usize * 16;
    let mut workspace = vec![0.0; work_len];
    let mut values = vec![0.0; input.byte() as usize % 32];
    if let Ok(mut op) = DenseSymmetric::new(n, &matrix) {
        let options = LanczosOptions {
            max_steps: steps,
            largest: input.dim(24) % 3,
            smallest: input.dim(24) % 3,
            tol: 1e-8,
            seed,
        };
        if let Ok(info) = lanczos(&mut op, &options, &mut values, None, &mut workspace) {
            assert!(info.steps <= values.len() && info.steps + info.inferred_zeros <= n);
        }
        let _ = extreme_eigenvalues(&mut op, 1e-8, steps, seed, &mut workspace);
        let slq = SlqOptions { probes: input.dim(24) % 8, steps, seed };
        let _ = slq_trace(&mut op, |x| x, &slq, &mut workspace);
        let _ = slq_effective_rank(&mut op, SingularValuesFrom::Eigenvalues, &slq, &mut workspace);
    }
    let mut skew = FnOperator::new(n, |x: &[f64], y: &mut [f64]| {
        for (i, yi) in y.iter_mut().enumerate() {
            *yi = if i + 1 < x.len() { x[i + 1] } else { 0.0 } - if i > 0 { x[i - 1] } else { 0.0 };
        }
    });
    let _ = skew_singular_values(
        &mut skew,
        &LanczosOptions { max_steps: steps, seed, ..Default::default() },
        &mut values,
        &mut workspace,
    );
    // Tridiagonal solver with arbitrary lengths.
    let mut diag = input.f64_bits((n).min(1 << 12));
    let off_len = input.len_near(n.saturating_sub(1), 1 << 12);
    let mut offdiag = input.f64_bits((off_len).min(1 << 12));
    let rows = input.dim(24) % 3;
    let mut vectors = vec![0.0; input.len_near(rows.saturating_mul(n), 1 << 12).min(1 << 12)];
    let _ = tridiagonal_eigen(&mut diag, &mut offdiag, &mut vectors, rows);
    // Heads.
    let d_head = input.dim(24);
    let w_len = input.len_near(n.saturating_mul(d_head), 1 << 12);
    let (w_q, w_k) = (input.f64_bits((w_len).min(1 << 12)), input.f64_bits((w_len).min(1 << 12)));
    if let Ok(head) = FactoredKernel::new(n, d_head, &w_q, &w_k) {
        let _ = head_spectrum(&head, &mut workspace);
        let mut scratch = vec![0.0; input.byte() as usize * 4];
        if let Ok(mut gram) = RoutingGram::new(head, &mut scratch) {
            let _ = lanczos(&mut gram, &LanczosOptions::default(), &mut values, None, &mut workspace);
        }
    }
}
