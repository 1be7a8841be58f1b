//! Exact spectra (`sd_attention::exact`) against LAPACK through numpy (float64 `gesdd` on the
//! formed `S`, `syevd` on the formed `D`), from fixtures written by
//! `tests/reference/exact_spectra.py` (regenerate with `python3 tests/reference/exact_spectra.py`).
//! The factors are regenerated here from the same SplitMix64 stream with exact operations, so both
//! sides see the same bits. Cases: random, rank-deficient, repeated and graded heads at
//! `d_model x d_head` 768x64, 256x32, 97x13 and 40x24.
//!
//! Both sides are backward stable: ours moves each value by at most
//! `(2 d_model d_head + d_head + k^2 + k) eps ||A||_F^2` (tests/exact.rs), LAPACK's by a few
//! `d_model eps ||S||_2` plus the rounding of forming `S` (`d_head eps |W_Q| |W_K|^T` per entry,
//! at most `d_model d_head eps ||A||_F^2` in norm). The issue-level target, `1e-12` of the largest
//! value, is checked as well.

use sd_attention::rng::SplitMix64;
use sd_attention::spectral::exact::{head_values, head_values_workspace_len, pair_core_order};
use sd_attention::spectral::factored::FactoredKernel;
use std::collections::HashMap;

fn fixtures() -> HashMap<String, Vec<f64>> {
    let text = include_str!("reference/fixtures/exact_spectra.txt");
    let mut entries = HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let mut fields = line.split_whitespace();
        let name = fields.next().unwrap().to_string();
        let rows: usize = fields.next().unwrap().parse().unwrap();
        let cols: usize = fields.next().unwrap().parse().unwrap();
        let values: Vec<f64> = fields.map(|v| v.parse().unwrap()).collect();
        assert_eq!(values.len(), rows * cols, "{name}");
        entries.insert(name, values);
    }
    entries
}

/// The factors of exact_spectra.py: uniform [-1, 1) entries, then the kind's exact edits.
fn factors(d_model: usize, d_head: usize, kind: usize, seed: u64) -> (Vec<f64>, Vec<f64>) {
    let mut rng = SplitMix64::new(seed);
    let mut w_q: Vec<f64> = (0..d_model * d_head).map(|_| rng.uniform(-1.0, 1.0)).collect();
    let mut w_k: Vec<f64> = (0..d_model * d_head).map(|_| rng.uniform(-1.0, 1.0)).collect();
    for i in 0..d_model {
        let row = i * d_head;
        for j in 0..d_head {
            match kind {
                1 => {
                    let (a, b) = (w_q[row], w_q[row + 1 % d_head]);
                    w_k[row + j] = if j + 1 == d_head { 0.0 } else { (j + 1) as f64 * a - b };
                }
                2 => {
                    let sign = if j % 2 == 0 { 1.0 } else { -1.0 };
                    w_k[row + j] = sign * w_q[row + (j + 1) % d_head];
                }
                3 => {
                    let scale = 2f64.powi(-((40 * j / d_head) as i32));
                    w_q[row + j] *= scale;
                    w_k[row + j] *= scale;
                }
                _ => {}
            }
        }
    }
    (w_q, w_k)
}

#[test]
fn exact_spectra_match_lapack() {
    let fixtures = fixtures();
    let mut cases: Vec<&String> = fixtures.keys().filter(|k| k.ends_with(".shape")).collect();
    cases.sort();
    assert_eq!(cases.len(), 16);
    let kinds = ["random", "rank-deficient", "repeated", "graded"];
    let mut worst = [[0.0f64; 2]; 4];
    for shape_key in cases {
        let case = shape_key.trim_end_matches(".shape");
        let shape = &fixtures[shape_key.as_str()];
        let (d_model, d_head, kind, seed) =
            (shape[0] as usize, shape[1] as usize, shape[2] as usize, shape[3] as u64);
        let (w_q, w_k) = factors(d_model, d_head, kind, seed);
        let head = FactoredKernel::new(d_model, d_head, &w_q, &w_k).unwrap();
        let k = pair_core_order(d_model, d_head);
        let (mut sigma, mut lambda) = (vec![0.0; k], vec![0.0; k]);
        let mut workspace = vec![0.0; head_values_workspace_len(d_model, d_head)];
        head_values(&head, &mut sigma, &mut lambda, &mut workspace).unwrap();
        let (sigma_ref, lambda_ref) =
            (&fixtures[&format!("{case}.sigma_s")], &fixtures[&format!("{case}.lambda_d")]);
        let diff = |x: &[f64], y: &[f64]| x.iter().zip(y).fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
        let (err_s, err_d) = (diff(&sigma, sigma_ref), diff(&lambda, lambda_ref));
        let a_sq: f64 = w_q.iter().chain(&w_k).map(|v| v * v).sum();
        let eps = f64::EPSILON;
        let kf = k as f64;
        let ours = (2.0 * (d_model * d_head) as f64 + d_head as f64 + kf * kf + kf) * eps * a_sq;
        let lapack = (d_model * d_head) as f64 * eps * a_sq + 10.0 * d_model as f64 * eps * sigma_ref[0];
        assert!(err_s <= ours + lapack, "{case}: sigma(S) off by {err_s:e}");
        assert!(err_d <= ours + lapack, "{case}: lambda(D) off by {err_d:e}");
        let (scale_s, scale_d) = (sigma_ref[0], lambda_ref.iter().fold(0.0f64, |m, v| m.max(v.abs())));
        let (rel_s, rel_d) = (err_s / scale_s, err_d / scale_d);
        assert!(rel_s <= 1e-12 && rel_d <= 1e-12, "{case}: relative errors {rel_s:e}, {rel_d:e} above 1e-12");
        worst[kind] = [worst[kind][0].max(rel_s), worst[kind][1].max(rel_d)];
    }
    for (name, [s, d]) in kinds.iter().zip(worst) {
        println!("{name:>15}: max |sigma - LAPACK| / sigma_max {s:.1e}, max |lambda - LAPACK| / |lambda|_max {d:.1e}");
    }
}
