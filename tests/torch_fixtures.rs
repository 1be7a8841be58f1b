//! Cross-check against PyTorch autograd (float64): fixtures written by
//! `tests/reference/torch_softmax_sd.py` (format documented there; regenerate with
//! `python3 tests/reference/torch_softmax_sd.py` in a Python with torch and numpy). Outputs, log-sum-exps and every
//! gradient must agree to 1e-12 normwise (both sides compute in f64; the sums run in different
//! orders), and the fixtures' numpy eigenvalues of `S + D` must have real parts `<= 0`.

mod common;
use common::attention::{max_abs_diff, rel_err};
use sd_attention::attention::sd::{AttentionHead, HeadGrads};
use sd_attention::attention::softmax::{SoftmaxAttention, SoftmaxGrads};
use sd_attention::attention::Causality;
use std::collections::HashMap;

/// The named matrices of one fixture file.
struct Fixture(HashMap<String, Vec<f64>>);

impl Fixture {
    fn parse(text: &str) -> Fixture {
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
        Fixture(entries)
    }
    fn get(&self, name: &str) -> &[f64] {
        &self.0[name]
    }
    fn usize(&self, name: &str) -> usize {
        self.get(name)[0] as usize
    }
    fn causality(&self) -> Causality {
        if self.get("causal")[0] == 1.0 {
            Causality::Causal
        } else {
            Causality::Bidirectional
        }
    }
}

const TOL: f64 = 1e-12;

fn check(name: &str, ours: &[f64], torch: &[f64]) -> f64 {
    let err = rel_err(ours, torch);
    println!("{name}: rel err vs torch {err:.2e}");
    assert!(err <= TOL, "{name}: {err}");
    err
}

#[test]
fn softmax_matches_torch() {
    for text in [
        include_str!("reference/fixtures/softmax_bidirectional_masked.txt"),
        include_str!("reference/fixtures/softmax_causal.txt"),
    ] {
        let f = Fixture::parse(text);
        let (n, d_k, d_v) = (f.usize("n"), f.usize("d_k"), f.usize("d_v"));
        let head = SoftmaxAttention::new(d_k, d_v, f.causality()).with_scale(f.get("scale")[0]);
        let mask = f.0.get("mask").map(|m| m.as_slice());
        let (q, k, v) = (f.get("q"), f.get("k"), f.get("v"));
        let (mut out, mut lse) = (vec![0.0; n * d_v], vec![0.0; n]);
        let mut ws = vec![0.0; head.backward_workspace_len(n)];
        head.forward(n, q, k, v, mask, &mut out, &mut lse, &mut ws).unwrap();
        check("softmax out", &out, f.get("out"));
        check("softmax lse", &lse, f.get("lse"));
        let (mut dq, mut dk, mut dv) = (vec![0.0; n * d_k], vec![0.0; n * d_k], vec![0.0; n * d_v]);
        let grads = SoftmaxGrads { d_q: &mut dq, d_k: &mut dk, d_v: &mut dv };
        head.backward(n, q, k, v, mask, &out, &lse, f.get("d_out"), grads, &mut ws).unwrap();
        check("softmax dq", &dq, f.get("grad_q"));
        check("softmax dk", &dk, f.get("grad_k"));
        check("softmax dv", &dv, f.get("grad_v"));
    }
}

#[test]
fn heads_match_torch() {
    for (kind, text) in [
        ("sd", include_str!("reference/fixtures/sd_causal.txt")),
        ("sd", include_str!("reference/fixtures/sd_bidirectional.txt")),
        ("standard", include_str!("reference/fixtures/standard_causal.txt")),
    ] {
        let f = Fixture::parse(text);
        let (n, d, r, q, d_v) =
            (f.usize("n"), f.usize("d_model"), f.usize("rank"), f.usize("rank_filtering"), f.usize("d_v"));
        let head = if kind == "sd" {
            AttentionHead::<f64>::routing_filtering(d, r, q, d_v, f.causality())
        } else {
            AttentionHead::standard(d, r, d_v, f.causality())
        };
        // The default scale is the one the fixture used.
        assert!((head.scale - f.get("scale")[0]).abs() <= 1e-16);
        let (blocks, count) = head.param_blocks();
        let mut params = vec![0.0; head.param_len()];
        for block in &blocks[..count] {
            params[block.range()].copy_from_slice(f.get(block.name));
        }
        let x = f.get("x");
        let (mut out, mut lse) = (vec![0.0; n * d_v], vec![0.0; n]);
        let mut ws = vec![0.0; head.backward_workspace_len(n)];
        head.forward(n, x, &params, &mut out, &mut lse, &mut ws).unwrap();
        check(&format!("{kind} out"), &out, f.get("out"));
        check(&format!("{kind} lse"), &lse, f.get("lse"));
        let (mut d_x, mut d_params) = (vec![0.0; x.len()], vec![0.0; params.len()]);
        let grads = HeadGrads { d_x: &mut d_x, d_params: &mut d_params };
        head.backward(n, x, &params, &out, &lse, f.get("d_out"), grads, &mut ws).unwrap();
        check(&format!("{kind} dX"), &d_x, f.get("grad_x"));
        for block in &blocks[..count] {
            check(
                &format!("{kind} d{}", block.name),
                &d_params[block.range()],
                f.get(&format!("grad_{}", block.name)),
            );
        }
        let mut kernel = vec![0.0; d * d];
        head.kernel_dense(&params, &mut kernel).unwrap();
        let kernel_err = max_abs_diff(&kernel, f.get("kernel"));
        println!("{kind} kernel: max abs err vs torch {kernel_err:.2e}");
        assert!(kernel_err <= 1e-13);
        if kind == "sd" {
            // numpy's eigenvalues: real parts <= 0 up to rounding of the eigensolver
            // (d eps ||K||_F), and our bound (Lanczos on the symmetric part) agrees, within
            // tolerance_for(d, ||K||_F) = 2 d eps ||K||_F, and lies above numpy's largest real part.
            let bound = d as f64 * f64::EPSILON * common::naive_sq_norm(&kernel).sqrt();
            let max_re = f.get("eig_real").iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            println!("{kind}: max Re(lambda) from numpy {max_re:.2e}");
            assert!(max_re <= bound);
            let mut ws = vec![0.0; head.stability_bound_workspace_len()];
            let ours = head.stability_bound(&params, &mut ws).unwrap();
            println!("{kind}: stability bound {ours:.2e}");
            assert!(ours <= 2.0 * bound);
            assert!(ours >= max_re - 2.0 * bound);
        }
    }
}
