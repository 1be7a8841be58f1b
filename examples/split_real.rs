//! Splits the attention kernels of a real pretrained layer into routing and filtering and prints
//! their energies, dense and from the factors.
//!
//! ```text
//! cargo run --release --example split_real                       # shipped layer 0 of all-MiniLM-L6-v2
//! cargo run --release --example split_real -- MODEL.safetensors 3 12   # any BERT-style layer, 12 heads
//! ```
//!
//! For head `h` with `d_head = d_model / heads`, `W_Q` is rows `h d_head .. (h+1) d_head` of the
//! `nn.Linear` weight `[out, in]`, transposed to `d_model x d_head`; the kernel is
//! `M = W_Q W_K^T` (`d_model x d_model`), formed densely here so that both paths can be compared.

#[path = "support/cli.rs"]
#[macro_use]
mod cli;

use cli::{fail, fail_on, usage_error};
use safetensors::{Dtype, SafeTensors};
use sd_attention::linalg::dense::{matmul_nt, Update};
use sd_attention::spectral::factored::FactoredKernel;
use sd_attention::split::{energies, split};

/// Reads a 2-D f32 tensor as (rows, cols, values).
fn read_matrix(tensors: &SafeTensors, name: &str) -> Result<(usize, usize, Vec<f32>), String> {
    let view = tensors.tensor(name).map_err(|e| format!("{name}: {e}"))?;
    if view.dtype() != Dtype::F32 || view.shape().len() != 2 {
        return Err(format!("{name}: expected a 2-D F32 tensor, got {:?} {:?}", view.dtype(), view.shape()));
    }
    let values = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    Ok((view.shape()[0], view.shape()[1], values))
}

/// Head `h` of an `[out, in]` projection weight as a row-major `d_model x d_head` factor.
fn head_factor(weight: &[f32], d_model: usize, d_head: usize, head: usize) -> Vec<f32> {
    let mut factor = vec![0.0; d_model * d_head];
    for c in 0..d_head {
        let row = &weight[(head * d_head + c) * d_model..(head * d_head + c + 1) * d_model];
        for (i, &w) in row.iter().enumerate() {
            factor[i * d_head + c] = w;
        }
    }
    factor
}

const USAGE: &str = "split_real: routing/filtering energies of every head of one BERT-style layer

usage: split_real [MODEL.safetensors [LAYER [HEADS]]]

  MODEL.safetensors  weights with encoder.layer.LAYER.attention.self.{query,key}.weight, F32
                     (default data/minilm-l6-v2-layer0-qk.safetensors, layer 0 of all-MiniLM-L6-v2)
  LAYER              layer index (default 0)
  HEADS              attention heads of the layer (default 12)
  -h, --help         this help";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if cli::wants_help(&args) {
        outln!("{USAGE}");
        return;
    }
    if let Some(flag) = args.iter().find(|a| a.starts_with('-') && a.len() > 1) {
        usage_error(&format!("unknown flag {flag}"));
    }
    if args.len() > 3 {
        usage_error(&format!("unexpected argument {}", args[3]));
    }
    let path = args.first().map_or("data/minilm-l6-v2-layer0-qk.safetensors", |s| s.as_str());
    let number = |i: usize, name: &str, default: usize| match args.get(i) {
        None => default,
        Some(s) => s.parse().unwrap_or_else(|e| usage_error(&format!("{name}: cannot parse {s:?}: {e}"))),
    };
    let layer = number(1, "LAYER", 0);
    let heads = number(2, "HEADS", 12);
    if heads == 0 {
        usage_error("HEADS must be at least 1");
    }
    let bytes = std::fs::read(path).unwrap_or_else(|e| fail_on(path, e));
    let tensors = SafeTensors::deserialize(&bytes)
        .unwrap_or_else(|e| fail(&format!("{path}: not a safetensors file: {e}")));
    let prefix = format!("encoder.layer.{layer}.attention.self.");
    let read = |name: &str| read_matrix(&tensors, name).unwrap_or_else(|e| fail_on(path, e));
    let (out, d_model, w_query) = read(&format!("{prefix}query.weight"));
    let (key_out, key_in, w_key) = read(&format!("{prefix}key.weight"));
    if (key_out, key_in) != (out, d_model) {
        fail(&format!("{path}: {prefix}key.weight: shape [{key_out}, {key_in}] differs from the query's [{out}, {d_model}]"));
    }
    if out % heads != 0 {
        fail(&format!("{path}: {out} output features do not split into {heads} heads"));
    }
    let d_head = out / heads;
    outln!("{path}: layer {layer}, d_model {d_model}, {heads} heads of d_head {d_head}");
    outln!("routing capacity per head: rank(S) <= min(2 d_head, d_model) = {}\n", (2 * d_head).min(d_model));
    outln!(
        "{:>4} {:>10} {:>10} {:>10} {:>7} {:>9} {:>10} {:>10}",
        "head",
        "||M||^2",
        "||S||^2",
        "||D||^2",
        "rho",
        "rho(fac)",
        "max|S+S^T|",
        "identity"
    );
    let mut kernel = vec![0.0f32; d_model * d_model];
    let (mut routing, mut filtering) = (kernel.clone(), kernel.clone());
    let mut rho_sum = 0.0f64;
    for head in 0..heads {
        let w_q = head_factor(&w_query, d_model, d_head, head);
        let w_k = head_factor(&w_key, d_model, d_head, head);
        let at = format!("{path}: head {head}");
        matmul_nt(d_model, d_head, d_model, &w_q, &w_k, &mut kernel, Update::Overwrite)
            .unwrap_or_else(|e| fail_on(&at, e));
        split(d_model, &kernel, &mut routing, &mut filtering).unwrap_or_else(|e| fail_on(&at, e));
        let dense = energies(d_model, &kernel).unwrap_or_else(|e| fail_on(&at, e));
        let factored_head =
            FactoredKernel::new(d_model, d_head, &w_q, &w_k).unwrap_or_else(|e| fail_on(&at, e));
        let mut workspace = vec![0.0f32; factored_head.energies_workspace_len()];
        let factored = factored_head.energies(&mut workspace).unwrap_or_else(|e| fail_on(&at, e));
        let total: f64 = kernel.iter().map(|&v| (v as f64) * (v as f64)).sum();
        let skew_defect = (0..d_model * d_model)
            .map(|idx| (routing[idx] + routing[(idx % d_model) * d_model + idx / d_model]).abs())
            .fold(0.0f32, f32::max);
        let identity = (dense.total() as f64 - total).abs() / total;
        rho_sum += dense.routing_fraction() as f64;
        outln!(
            "{head:>4} {total:>10.4} {:>10.4} {:>10.4} {:>7.4} {:>9.4} {skew_defect:>10.1e} {identity:>10.1e}",
            dense.routing,
            dense.filtering,
            dense.routing_fraction(),
            factored.routing_fraction()
        );
    }
    outln!("\nmean routing energy fraction rho over {heads} heads: {:.4}", rho_sum / heads as f64);
    outln!("(identity = | ||S||^2 + ||D||^2 - ||M||^2 | / ||M||^2, f32 kernels, f64 reference sum)");
}
