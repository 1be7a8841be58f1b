//! ELU+1 linear attention against PyTorch autograd: outputs and gradients of the fixed cases in
//! tests/reference/fixtures/linear_attention.safetensors (written by
//! tests/reference/torch_linear.py with the cumulative-sum formulation in float64; see that script
//! to regenerate).
//!
//! Tolerance: both sides compute in f64 with sums of depth at most `m = n + d_k + d_v + 10` over
//! terms of the size of the tensor's entries (inputs of order 1, normalized weights), each side
//! within `m eps` per stage; two stages (forward quantities, then the gradient sums) and two sides
//! give `4 m eps` relative to the largest magnitude of the tensor.

use safetensors::{Dtype, SafeTensors};
use sd_attention::attention::linear::LinearAttention;
use sd_attention::attention::Causality;

const FIXTURES: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/reference/fixtures/linear_attention.safetensors");

fn read(tensors: &SafeTensors<'_>, name: &str) -> Vec<f64> {
    let view = tensors.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(view.dtype(), Dtype::F64, "{name}");
    view.data().chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect()
}

fn relative_error(ours: &[f64], theirs: &[f64]) -> f64 {
    assert_eq!(ours.len(), theirs.len());
    let scale = theirs.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    ours.iter().zip(theirs).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max) / scale
}

#[test]
fn matches_pytorch_autograd_fixtures() {
    let bytes = std::fs::read(FIXTURES).expect("fixtures present (see tests/reference/torch_linear.py)");
    let tensors = SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> =
        tensors.names().iter().filter_map(|n| n.strip_suffix(".params").map(str::to_string)).collect();
    names.sort();
    assert_eq!(names.len(), 6, "every case of the script");
    let mut worst: f64 = 0.0;
    for name in &names {
        let params = read(&tensors, &format!("{name}.params"));
        let (n, d_k, d_v, heads) =
            (params[0] as usize, params[1] as usize, params[2] as usize, params[3] as usize);
        let causality = if params[4] != 0.0 { Causality::Causal } else { Causality::Bidirectional };
        let att =
            LinearAttention::new(d_k, d_v, causality).with_heads(heads).with_eps(params[5]).with_chunk(5);
        let get = |key: &str| read(&tensors, &format!("{name}.{key}"));
        let (q, k, v, d_out) = (get("q"), get("k"), get("v"), get("d_out"));
        let mut out = vec![0.0; v.len()];
        let mut workspace = vec![0.0; att.forward_workspace_len(n)];
        att.forward(n, &q, &k, &v, &mut out, &mut workspace).unwrap();
        let (mut dq, mut dk, mut dv) = (vec![0.0; q.len()], vec![0.0; k.len()], vec![0.0; v.len()]);
        let mut workspace = vec![0.0; att.backward_workspace_len(n)];
        att.backward(n, &q, &k, &v, &d_out, &mut dq, &mut dk, &mut dv, &mut workspace).unwrap();
        for (key, ours) in [("out", &out), ("d_q", &dq), ("d_k", &dk), ("d_v", &dv)] {
            let err = relative_error(ours, &get(key));
            eprintln!("{name} {key}: max |ours - torch| / max |torch| = {err:.2e}");
            let tolerance = 4.0 * (n + d_k + d_v + 10) as f64 * f64::EPSILON;
            assert!(err < tolerance, "{name} {key}: {err} (tolerance {tolerance:.1e})");
            worst = worst.max(err);
        }
    }
    eprintln!("worst relative difference to PyTorch: {worst:.2e}");
}
