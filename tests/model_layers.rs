//! Layer kernels of the model: forward values against hand-computed numbers, backward passes
//! against central finite differences in f64 (norm-wise relative error < 1e-6), f32 against f64
//! within tolerances derived from the operations, and shape errors.
#![cfg(feature = "alloc")]

mod common;
use common::model::*;
use common::{narrow, widen};
use sd_attention::linalg::dense::Update;
use sd_attention::model::embedding::{embed_backward, embed_forward, sinusoidal_positions, VOCAB};
use sd_attention::model::gelu::{gelu_backward, gelu_forward};
use sd_attention::model::linear::{linear_backward, linear_forward};
use sd_attention::model::loss::cross_entropy;
use sd_attention::model::mlp::{
    mlp_backward, mlp_cache_len, mlp_forward, mlp_workspace_len, MlpGrads, MlpParams, ROW_BLOCK,
};
use sd_attention::model::norm::{norm_backward, norm_forward, norm_stats_len, NormKind};
use sd_attention::Error;

const GRAD_TOL: f64 = 1e-6;
const EPS32: f64 = f32::EPSILON as f64;

fn linear_y(n: usize, di: usize, dout: usize, x: &[f64], w: &[f64], b: &[f64]) -> Vec<f64> {
    let mut y = vec![0.0; n * dout];
    linear_forward(n, di, dout, x, w, Some(b), &mut y).unwrap();
    y
}

#[test]
fn linear_backward_matches_finite_differences() {
    for &(n, di, dout) in &[(1, 1, 1), (5, 3, 4), (7, 8, 5)] {
        let x = normal_vec(n * di, 1.0, 1);
        let w = normal_vec(di * dout, 1.0, 2);
        let b = normal_vec(dout, 1.0, 3);
        let r = normal_vec(n * dout, 1.0, 4); // dL/dy
        let (mut dx, mut dw, mut db) = (vec![0.0; n * di], vec![0.0; di * dout], vec![0.0; dout]);
        linear_backward(n, di, dout, &x, &w, &r, Some(&mut dx), Update::Overwrite, &mut dw, Some(&mut db))
            .unwrap();
        let ex = gradient_error(&mut |p| weighted_sum(&r, &linear_y(n, di, dout, p, &w, &b)), &x, &dx);
        let ew = gradient_error(&mut |p| weighted_sum(&r, &linear_y(n, di, dout, &x, p, &b)), &w, &dw);
        let eb = gradient_error(&mut |p| weighted_sum(&r, &linear_y(n, di, dout, &x, &w, p)), &b, &db);
        println!("linear {n}x{di}->{dout}: rel err dx {ex:.2e} dW {ew:.2e} db {eb:.2e}");
        assert!(ex < GRAD_TOL && ew < GRAD_TOL && eb < GRAD_TOL, "{ex} {ew} {eb}");
    }
}

#[test]
fn linear_forward_hand_values_and_accumulation() {
    // [1 2; 3 4] * [1 0 2; 0 1 3] + [1 1 1]
    let mut y = [0.0f64; 6];
    linear_forward(2, 2, 3, &[1.0, 2.0, 3.0, 4.0], &[1.0, 0.0, 2.0, 0.0, 1.0, 3.0], Some(&[1.0; 3]), &mut y)
        .unwrap();
    assert_eq!(y, [2.0, 3.0, 9.0, 4.0, 5.0, 19.0]);
    // Backward accumulates into dW and db, and into dx with Update::Accumulate.
    let (mut dx, mut dw, mut db) = ([1.0f64; 2], [1.0f64; 2], [1.0f64; 1]);
    linear_backward(
        1,
        2,
        1,
        &[2.0, 3.0],
        &[5.0, 7.0],
        &[1.0],
        Some(&mut dx),
        Update::Accumulate,
        &mut dw,
        Some(&mut db),
    )
    .unwrap();
    assert_eq!(dx, [6.0, 8.0]);
    assert_eq!(dw, [3.0, 4.0]);
    assert_eq!(db, [2.0]);
}

#[test]
fn linear_f32_matches_f64_within_the_product_bound() {
    let (n, di, dout) = (9, 33, 7);
    let x = narrow(&normal_vec(n * di, 1.0, 5));
    let w = narrow(&normal_vec(di * dout, 1.0, 6));
    let b = narrow(&normal_vec(dout, 1.0, 7));
    let mut y32 = vec![0.0f32; n * dout];
    linear_forward(n, di, dout, &x, &w, Some(&b), &mut y32).unwrap();
    let (x64, w64, b64) = (widen(&x), widen(&w), widen(&b));
    let y64 = linear_y(n, di, dout, &x64, &w64, &b64);
    let abs = common::naive_abs_matmul(n, di, dout, &x64, &w64);
    for i in 0..n * dout {
        // Each entry is a length-d_in dot product plus a bias: |err| <= (d_in + 2) eps (|x||w| + |b|).
        let bound = (di as f64 + 2.0) * EPS32 * (abs[i] + b64[i % dout].abs());
        assert!((y32[i] as f64 - y64[i]).abs() <= bound, "entry {i}");
    }
}

#[test]
fn gelu_values_derivative_and_f32() {
    // Reference values of the tanh form computed in f64 by hand-expanded formula.
    let u = [-3.0, -1.0, 0.0, 0.5, 1.0, 3.0];
    let mut y = [0.0f64; 6];
    gelu_forward(&u, &mut y).unwrap();
    for (&ui, &yi) in u.iter().zip(&y) {
        let k = (2.0 / std::f64::consts::PI).sqrt();
        let expect = 0.5 * ui * (1.0 + (k * (ui + 0.044715 * ui * ui * ui)).tanh());
        assert!((yi - expect).abs() < 1e-15);
    }
    assert_eq!(y[2], 0.0);
    assert!((y[4] - 0.841_191_990_607_477_3).abs() < 1e-12, "gelu(1) = {}", y[4]);
    let u = normal_vec(50, 2.0, 8);
    let r = normal_vec(50, 1.0, 9);
    let mut du = vec![0.0; 50];
    gelu_backward(&u, &r, &mut du).unwrap();
    let f = |p: &[f64]| {
        let mut y = vec![0.0; p.len()];
        gelu_forward(p, &mut y).unwrap();
        weighted_sum(&r, &y)
    };
    let err = gradient_error(&mut { f }, &u, &du);
    println!("gelu rel err {err:.2e}");
    assert!(err < GRAD_TOL);
    // f32: tanh and a cubic, each a few roundings: |err| <= 8 eps (|u| + 1).
    let u32s = narrow(&u);
    let mut y32 = vec![0.0f32; 50];
    gelu_forward(&u32s, &mut y32).unwrap();
    let mut y64 = vec![0.0f64; 50];
    gelu_forward(&widen(&u32s), &mut y64).unwrap();
    for i in 0..50 {
        assert!((y32[i] as f64 - y64[i]).abs() <= 8.0 * EPS32 * (u32s[i].abs() as f64 + 1.0));
    }
    assert!(matches!(gelu_forward(&[1.0f64], &mut [0.0; 2]), Err(Error::ShapeMismatch { .. })));
}

fn run_mlp(n: usize, d: usize, f: usize, x: &[f64], p: &[Vec<f64>; 4]) -> Vec<f64> {
    let mut y = vec![0.0; n * d];
    let mut cache = vec![0.0; mlp_cache_len(n, f)];
    let params = MlpParams { w_1: &p[0], b_1: &p[1], w_2: &p[2], b_2: &p[3] };
    mlp_forward(n, d, f, params, x, &mut y, &mut cache).unwrap();
    y
}

#[test]
fn mlp_backward_matches_finite_differences() {
    let (n, d, f) = (6, 5, 11);
    let x = normal_vec(n * d, 1.0, 10);
    let p = [
        normal_vec(d * f, 0.5, 11),
        normal_vec(f, 0.5, 12),
        normal_vec(f * d, 0.5, 13),
        normal_vec(d, 0.5, 14),
    ];
    let r = normal_vec(n * d, 1.0, 15);
    let mut cache = vec![0.0; mlp_cache_len(n, f)];
    let mut y = vec![0.0; n * d];
    let params = MlpParams { w_1: &p[0], b_1: &p[1], w_2: &p[2], b_2: &p[3] };
    mlp_forward(n, d, f, params, &x, &mut y, &mut cache).unwrap();
    let mut g = [vec![0.0; d * f], vec![0.0; f], vec![0.0; f * d], vec![0.0; d]];
    let mut dx = vec![0.0; n * d];
    let mut ws = vec![0.0; mlp_workspace_len(n, d, f)];
    let [g0, g1, g2, g3] = &mut g;
    let grads = MlpGrads { w_1: g0, b_1: g1, w_2: g2, b_2: g3 };
    mlp_backward(n, d, f, params, &x, &cache, &r, &mut dx, Update::Overwrite, grads, &mut ws).unwrap();
    let ex = gradient_error(&mut |q| weighted_sum(&r, &run_mlp(n, d, f, q, &p)), &x, &dx);
    println!("mlp dx rel err {ex:.2e}");
    assert!(ex < GRAD_TOL);
    for k in 0..4 {
        let e = gradient_error(
            &mut |q| {
                let mut pp = p.clone();
                pp[k] = q.to_vec();
                weighted_sum(&r, &run_mlp(n, d, f, &x, &pp))
            },
            &p[k],
            &g[k],
        );
        println!("mlp param {k} rel err {e:.2e}");
        assert!(e < GRAD_TOL);
    }
    // Too small a cache is an error, not a panic.
    let mut short = vec![0.0; mlp_cache_len(n, f) - 1];
    assert!(matches!(
        mlp_forward(n, d, f, params, &x, &mut y, &mut short),
        Err(Error::WorkspaceTooSmall { .. })
    ));
}

/// The row-blocked MLP (two full blocks and a ragged one) against the unblocked composition of
/// the public layers in f64 (`linear`, `gelu`, and their backward passes): outputs and every
/// gradient agree to rounding (only the order of the sums over rows differs).
#[test]
fn mlp_blocks_match_unblocked_layers() {
    let (n, d, f) = (2 * ROW_BLOCK + 3, 6, 9);
    let x = normal_vec(n * d, 1.0, 30);
    let p = [
        normal_vec(d * f, 0.5, 31),
        normal_vec(f, 0.5, 32),
        normal_vec(f * d, 0.5, 33),
        normal_vec(d, 0.5, 34),
    ];
    let r = normal_vec(n * d, 1.0, 35);
    let params = MlpParams { w_1: &p[0], b_1: &p[1], w_2: &p[2], b_2: &p[3] };
    let (mut y, mut cache) = (vec![0.0; n * d], vec![0.0; mlp_cache_len(n, f)]);
    mlp_forward(n, d, f, params, &x, &mut y, &mut cache).unwrap();
    let mut g = [vec![0.0; d * f], vec![0.0; f], vec![0.0; f * d], vec![0.0; d]];
    let (mut dx, mut ws) = (vec![0.0; n * d], vec![0.0; mlp_workspace_len(n, d, f)]);
    // One block of dG and the two transposed weights; with `parallel`, dG of all rows and each
    // block's partial weight gradients and bias row (one task per block).
    let blocks = n.div_ceil(ROW_BLOCK);
    let expected = if cfg!(feature = "parallel") {
        n * f + 2 * d * f + blocks * (2 * d * f + f)
    } else {
        ROW_BLOCK * f + 2 * d * f
    };
    assert_eq!(ws.len(), expected);
    let [g0, g1, g2, g3] = &mut g;
    let grads = MlpGrads { w_1: g0, b_1: g1, w_2: g2, b_2: g3 };
    mlp_backward(n, d, f, params, &x, &cache, &r, &mut dx, Update::Overwrite, grads, &mut ws).unwrap();
    // Reference, unblocked.
    let (mut u, mut h, mut y_ref) = (vec![0.0; n * f], vec![0.0; n * f], vec![0.0; n * d]);
    linear_forward(n, d, f, &x, &p[0], Some(&p[1]), &mut u).unwrap();
    gelu_forward(&u, &mut h).unwrap();
    linear_forward(n, f, d, &h, &p[2], Some(&p[3]), &mut y_ref).unwrap();
    let mut e = [vec![0.0; d * f], vec![0.0; f], vec![0.0; f * d], vec![0.0; d]];
    let (mut dh, mut du, mut dx_ref) = (vec![0.0; n * f], vec![0.0; n * f], vec![0.0; n * d]);
    let [e0, e1, e2, e3] = &mut e;
    linear_backward(n, f, d, &h, &p[2], &r, Some(&mut dh), Update::Overwrite, e2, Some(e3)).unwrap();
    gelu_backward(&u, &dh, &mut du).unwrap();
    linear_backward(n, d, f, &x, &p[0], &du, Some(&mut dx_ref), Update::Overwrite, e0, Some(e1)).unwrap();
    let close = |a: &[f64], b: &[f64], what: &str| {
        let scale = b.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        for (i, (&ai, &bi)) in a.iter().zip(b).enumerate() {
            assert!((ai - bi).abs() <= 1e-12 * scale, "{what}[{i}]: {ai} vs {bi}");
        }
    };
    close(&y, &y_ref, "y");
    close(&dx, &dx_ref, "dx");
    for k in 0..4 {
        close(&g[k], &e[k], "grads");
    }
}

fn run_norm(kind: NormKind, n: usize, d: usize, p: &[f64], x: &[f64]) -> Vec<f64> {
    let mut y = vec![0.0; n * d];
    let mut stats = vec![0.0; norm_stats_len(n)];
    norm_forward(kind, n, d, p, x, &mut y, &mut stats).unwrap();
    y
}

#[test]
fn norms_backward_match_finite_differences() {
    let (n, d) = (5, 7);
    for kind in [NormKind::None, NormKind::Rms, NormKind::Layer] {
        let x = normal_vec(n * d, 1.5, 16);
        let mut p = normal_vec(kind.param_len(d), 0.3, 17);
        p.iter_mut().take(d).for_each(|g| *g += 1.0);
        let r = normal_vec(n * d, 1.0, 18);
        let mut stats = vec![0.0; norm_stats_len(n)];
        let mut y = vec![0.0; n * d];
        norm_forward(kind, n, d, &p, &x, &mut y, &mut stats).unwrap();
        let mut dx = vec![0.5; n * d]; // accumulate onto 0.5
        let mut dp = vec![0.0; p.len()];
        norm_backward(kind, n, d, &p, &x, &stats, &r, &mut dx, Update::Accumulate, &mut dp).unwrap();
        dx.iter_mut().for_each(|v| *v -= 0.5);
        let ex = gradient_error(&mut |q| weighted_sum(&r, &run_norm(kind, n, d, &p, q)), &x, &dx);
        let ep = gradient_error(&mut |q| weighted_sum(&r, &run_norm(kind, n, d, q, &x)), &p, &dp);
        println!("{kind:?}: rel err dx {ex:.2e} dparams {ep:.2e}");
        assert!(ex < GRAD_TOL && ep < GRAD_TOL);
    }
}

#[test]
fn norm_values_and_f32() {
    // RMSNorm of [3, 4] (mean square 12.5) with unit gain; LayerNorm of [1, 3] -> [-1, 1].
    let y = run_norm(NormKind::Rms, 1, 2, &[1.0, 1.0], &[3.0, 4.0]);
    let r = 1.0 / (12.5f64 + 1e-5).sqrt();
    assert!((y[0] - 3.0 * r).abs() < 1e-15 && (y[1] - 4.0 * r).abs() < 1e-15);
    let y = run_norm(NormKind::Layer, 1, 2, &[1.0, 1.0, 0.0, 0.5], &[1.0, 3.0]);
    let s = 1.0 / (1.0f64 + 1e-5).sqrt();
    assert!((y[0] + s).abs() < 1e-15 && (y[1] - s - 0.5).abs() < 1e-15);
    // f32 vs f64: a mean and a mean square of d terms, then a square root and a product:
    // |err| <= (d + 8) eps (|g| |xhat| + |b|) per element, with |xhat| <= sqrt(d).
    let (n, d) = (4, 64);
    for kind in [NormKind::Rms, NormKind::Layer] {
        let x = narrow(&normal_vec(n * d, 3.0, 19));
        let p = narrow(&normal_vec(kind.param_len(d), 1.0, 20));
        let mut y32 = vec![0.0f32; n * d];
        let mut st = vec![0.0f32; norm_stats_len(n)];
        norm_forward(kind, n, d, &p, &x, &mut y32, &mut st).unwrap();
        let y64 = run_norm(kind, n, d, &widen(&p), &widen(&x));
        for i in 0..n * d {
            let j = i % d;
            let b = if kind == NormKind::Layer { p[d + j].abs() as f64 } else { 0.0 };
            let bound = (d as f64 + 8.0) * EPS32 * (p[j].abs() as f64 * (d as f64).sqrt() + b);
            assert!((y32[i] as f64 - y64[i]).abs() <= bound, "{kind:?} {i}");
        }
    }
}

#[test]
fn embedding_backward_scatters_and_matches_finite_differences() {
    let (d, tokens) = (3, b"abca");
    let table = normal_vec(VOCAB * d, 1.0, 21);
    let pos = normal_vec(tokens.len() * d, 1.0, 22);
    let r = normal_vec(tokens.len() * d, 1.0, 23);
    let run = |t: &[f64], p: &[f64]| {
        let mut out = vec![0.0; tokens.len() * d];
        embed_forward(d, tokens, t, Some(p), &mut out).unwrap();
        weighted_sum(&r, &out)
    };
    let mut dt = vec![0.0; VOCAB * d];
    let mut dp = vec![0.0; tokens.len() * d];
    embed_backward(d, tokens, &r, &mut dt, Some(&mut dp)).unwrap();
    // 'a' appears at positions 0 and 3: its row gets both rows of dL/dout.
    for j in 0..d {
        assert_eq!(dt[b'a' as usize * d + j], r[j] + r[3 * d + j]);
    }
    assert_eq!(dp, r);
    let et = gradient_error(&mut |q| run(q, &pos), &table, &dt);
    let ep = gradient_error(&mut |q| run(&table, q), &pos, &dp);
    println!("embedding rel err {et:.2e}, positions {ep:.2e}");
    assert!(et < GRAD_TOL && ep < GRAD_TOL);
    assert!(matches!(
        embed_forward(d, tokens, &table[1..], None, &mut [0.0; 12]),
        Err(Error::ShapeMismatch { .. })
    ));
}

#[test]
fn sinusoidal_table_values() {
    let (n, d) = (5, 4);
    let mut p = vec![0.0f64; n * d];
    sinusoidal_positions(n, d, &mut p).unwrap();
    assert_eq!(&p[..4], &[0.0, 1.0, 0.0, 1.0]); // position 0: sin 0, cos 0
                                                // position 3, pair k = 1: angle 3 / 10000^(2/4) = 0.03.
    assert!((p[3 * d + 2] - 0.03f64.sin()).abs() < 1e-16);
    assert!((p[3 * d + 3] - 0.03f64.cos()).abs() < 1e-16);
    assert!((p[3 * d] - 3.0f64.sin()).abs() < 1e-16);
}

#[test]
fn cross_entropy_values_gradient_stability_and_errors() {
    let (n, v) = (4, 7);
    let z = normal_vec(n * v, 2.0, 24);
    let targets = [0u8, 6, 3, 3];
    let mut dz = vec![0.0; n * v];
    let loss = cross_entropy(v, &z, &targets, &mut dz).unwrap();
    // Reference: direct log-softmax in f64.
    let mut expect = 0.0;
    for i in 0..n {
        let row = &z[i * v..(i + 1) * v];
        let lse = row.iter().map(|a| a.exp()).sum::<f64>().ln();
        expect += lse - row[targets[i] as usize];
    }
    assert!((loss - expect / n as f64).abs() < 1e-14);
    let mut scratch = vec![0.0; n * v];
    let err = gradient_error(&mut |q| cross_entropy(v, q, &targets, &mut scratch).unwrap(), &z, &dz);
    println!("cross-entropy rel err {err:.2e}");
    assert!(err < GRAD_TOL);
    // Rows of the gradient sum to zero.
    for i in 0..n {
        assert!(dz[i * v..(i + 1) * v].iter().sum::<f64>().abs() < 1e-16);
    }
    // Huge logits do not overflow: shifting every logit by 1e30 in f32 / 1e300 in f64 keeps the loss.
    let mut d2 = [0.0f64; 2];
    assert!(
        (cross_entropy(2, &[1e300, 1e300], &[0], &mut d2).unwrap() - std::f64::consts::LN_2).abs() < 1e-15
    );
    let mut d3 = [0.0f32; 2];
    assert_eq!(cross_entropy(2, &[1e30f32, 0.0], &[0], &mut d3).unwrap(), 0.0);
    // f32 vs f64: a log-sum-exp over V terms: |err| <= (V + 4) eps (max|z| + 1).
    let z32 = narrow(&z);
    let mut dz32 = vec![0.0f32; n * v];
    let l32 = cross_entropy(v, &z32, &targets, &mut dz32).unwrap();
    let mut dz64 = vec![0.0; n * v];
    let l64 = cross_entropy(v, &widen(&z32), &targets, &mut dz64).unwrap();
    let zmax = z.iter().fold(0.0f64, |a, b| a.max(b.abs()));
    assert!((l32 as f64 - l64).abs() <= (v as f64 + 4.0) * EPS32 * (zmax + 1.0));
    // The same bound over rows wider than the 16 lanes of the vectorized maximum and exp (odd V).
    let (n2, v2) = (3, 37);
    let z2 = narrow(&normal_vec(n2 * v2, 3.0, 25));
    let (mut d32, mut d64) = (vec![0.0f32; n2 * v2], vec![0.0; n2 * v2]);
    let t2 = [36u8, 0, 17];
    let l32 = cross_entropy(v2, &z2, &t2, &mut d32).unwrap();
    let l64 = cross_entropy(v2, &widen(&z2), &t2, &mut d64).unwrap();
    let zmax = z2.iter().fold(0.0f64, |a, &b| a.max((b as f64).abs()));
    assert!((l32 as f64 - l64).abs() <= (v2 as f64 + 4.0) * EPS32 * (zmax + 1.0));
    for (&g32, &g64) in d32.iter().zip(&d64) {
        assert!((g32 as f64 - g64).abs() <= (v2 as f64 + 4.0) * EPS32 * (zmax + 1.0) / n2 as f64);
    }
    // NaN anywhere in a row (a vector lane or the tail) makes the loss and that row NaN.
    for at in [5usize, 20, 36] {
        let mut zn = z2.clone();
        zn[v2 + at] = f32::NAN;
        assert!(cross_entropy(v2, &zn, &t2, &mut d32).unwrap().is_nan());
        assert!(d32[v2..2 * v2].iter().all(|g| g.is_nan()) && d32[..v2].iter().all(|g| g.is_finite()));
    }
    // NaN logits give a NaN loss (documented), bad targets and empty input are errors.
    assert!(cross_entropy(2, &[f64::NAN, 0.0], &[0], &mut d2).unwrap().is_nan());
    assert!(matches!(cross_entropy(2, &[0.0f64, 0.0], &[2], &mut d2), Err(Error::InvalidValue { .. })));
    assert!(matches!(cross_entropy::<f64>(2, &[], &[], &mut []), Err(Error::Empty { .. })));
}

/// `|A| |B|` for `A` stored transposed (`k x m`): the rounding scale of `A^T B`.
fn abs_matmul_tn(m: usize, k: usize, n: usize, a: &[f64], b: &[f64]) -> Vec<f64> {
    common::naive_abs_matmul(m, k, n, &common::naive_transpose(k, m, a), b)
}

#[test]
fn backward_passes_in_f32_match_f64() {
    // Linear: dW = X^T dY and dX = dY W^T are length-n and length-d_out dot products:
    // |err| <= (k + 2) eps (|A||B|)_ij with k the inner dimension.
    let (n, di, dout) = (13, 9, 6);
    let x = narrow(&normal_vec(n * di, 1.0, 30));
    let w = narrow(&normal_vec(di * dout, 1.0, 31));
    let dy = narrow(&normal_vec(n * dout, 1.0, 32));
    let (mut dx32, mut dw32, mut db32) = (vec![0.0f32; n * di], vec![0.0f32; di * dout], vec![0.0f32; dout]);
    linear_backward(n, di, dout, &x, &w, &dy, Some(&mut dx32), Update::Overwrite, &mut dw32, Some(&mut db32))
        .unwrap();
    let (x6, w6, dy6) = (widen(&x), widen(&w), widen(&dy));
    let (mut dx, mut dw, mut db) = (vec![0.0; n * di], vec![0.0; di * dout], vec![0.0; dout]);
    linear_backward(n, di, dout, &x6, &w6, &dy6, Some(&mut dx), Update::Overwrite, &mut dw, Some(&mut db))
        .unwrap();
    let dw_scale = abs_matmul_tn(di, n, dout, &x6, &dy6);
    let dx_scale = common::naive_abs_matmul(n, dout, di, &dy6, &common::naive_transpose(di, dout, &w6));
    for i in 0..di * dout {
        assert!((dw32[i] as f64 - dw[i]).abs() <= (n as f64 + 2.0) * EPS32 * dw_scale[i]);
    }
    for i in 0..n * di {
        assert!((dx32[i] as f64 - dx[i]).abs() <= (dout as f64 + 2.0) * EPS32 * dx_scale[i]);
    }
    for j in 0..dout {
        let scale: f64 = (0..n).map(|i| dy6[i * dout + j].abs()).sum();
        assert!((db32[j] as f64 - db[j]).abs() <= (n as f64 + 2.0) * EPS32 * scale);
    }

    // GELU': tanh, a cubic and a handful of products: |err| <= 16 eps (1 + u^2) |dy|.
    let u = narrow(&normal_vec(64, 2.0, 33));
    let g = narrow(&normal_vec(64, 1.0, 34));
    let mut du32 = vec![0.0f32; 64];
    gelu_backward(&u, &g, &mut du32).unwrap();
    let mut du = vec![0.0; 64];
    gelu_backward(&widen(&u), &widen(&g), &mut du).unwrap();
    for i in 0..64 {
        let (ui, gi) = (u[i] as f64, g[i] as f64);
        assert!((du32[i] as f64 - du[i]).abs() <= 16.0 * EPS32 * (1.0 + ui * ui) * gi.abs(), "{i}");
    }

    // Norms: the row statistics carry (d + 8) eps relative error, and dx combines three terms of
    // sizes |g dy|, mean |g dy| and |xhat| mean |g dy xhat|, each scaled by r.
    let (n, d) = (5, 48);
    for kind in [NormKind::Rms, NormKind::Layer] {
        let x = narrow(&normal_vec(n * d, 2.0, 35));
        let p = narrow(&normal_vec(kind.param_len(d), 1.0, 36));
        let dy = narrow(&normal_vec(n * d, 1.0, 37));
        let run = |x: &[f64], p: &[f64], dy: &[f64]| {
            let (mut y, mut st) = (vec![0.0; n * d], vec![0.0; norm_stats_len(n)]);
            norm_forward(kind, n, d, p, x, &mut y, &mut st).unwrap();
            let (mut dx, mut dp) = (vec![0.0; n * d], vec![0.0; p.len()]);
            norm_backward(kind, n, d, p, x, &st, dy, &mut dx, Update::Overwrite, &mut dp).unwrap();
            (dx, dp, st)
        };
        let (mut y32, mut st32) = (vec![0.0f32; n * d], vec![0.0f32; norm_stats_len(n)]);
        norm_forward(kind, n, d, &p, &x, &mut y32, &mut st32).unwrap();
        let (mut dx32, mut dp32) = (vec![0.0f32; n * d], vec![0.0f32; p.len()]);
        norm_backward(kind, n, d, &p, &x, &st32, &dy, &mut dx32, Update::Overwrite, &mut dp32).unwrap();
        let (dx, dp, st) = run(&widen(&x), &widen(&p), &widen(&dy));
        let k = (d as f64 + 8.0) * EPS32;
        for i in 0..n {
            let (mu, r) = (st[2 * i], st[2 * i + 1]);
            let xhat: Vec<f64> = (0..d).map(|j| (x[i * d + j] as f64 - mu) * r).collect();
            let gdy: Vec<f64> = (0..d).map(|j| (p[j] as f64 * dy[i * d + j] as f64).abs()).collect();
            let mean_gdy = gdy.iter().sum::<f64>() / d as f64;
            let mean_gdy_xhat = gdy.iter().zip(&xhat).map(|(a, b)| a * b.abs()).sum::<f64>() / d as f64;
            for j in 0..d {
                let bound = k * r * (gdy[j] + mean_gdy + xhat[j].abs() * mean_gdy_xhat);
                assert!((dx32[i * d + j] as f64 - dx[i * d + j]).abs() <= bound, "{kind:?} dx {i} {j}");
            }
        }
        for j in 0..p.len() {
            // Sums over n rows of dy * xhat (or dy): n terms each with (d + 8) eps relative error.
            let col = j % d;
            let scale: f64 = (0..n)
                .map(|i| {
                    (dy[i * d + col] as f64 * ((x[i * d + col] as f64 - st[2 * i]) * st[2 * i + 1])).abs()
                })
                .sum::<f64>()
                + (0..n).map(|i| (dy[i * d + col] as f64).abs()).sum::<f64>();
            assert!(
                (dp32[j] as f64 - dp[j]).abs() <= (n as f64 + d as f64 + 8.0) * EPS32 * scale,
                "{kind:?} dp {j}"
            );
        }
    }

    // Cross-entropy gradient (p - onehot) / n: exp(z - m) carries (|z - m| + 2) eps relative error
    // and the normalizing sum (V + 2) eps.
    let (n, v) = (3, 256);
    let z = narrow(&normal_vec(n * v, 3.0, 38));
    let targets = [1u8, 200, 255];
    let mut dz32 = vec![0.0f32; n * v];
    cross_entropy(v, &z, &targets, &mut dz32).unwrap();
    let mut dz = vec![0.0; n * v];
    cross_entropy(v, &widen(&z), &targets, &mut dz).unwrap();
    for i in 0..n {
        let m = (0..v).map(|j| z[i * v + j] as f64).fold(f64::NEG_INFINITY, f64::max);
        for j in 0..v {
            let p = dz[i * v + j] * n as f64 + if j == targets[i] as usize { 1.0 } else { 0.0 };
            let bound = (v as f64 + 6.0 + (z[i * v + j] as f64 - m).abs()) * EPS32 * (p + 1e-30) / n as f64
                + if j == targets[i] as usize { EPS32 / n as f64 } else { 0.0 };
            assert!((dz32[i * v + j] as f64 - dz[i * v + j]).abs() <= bound, "{i} {j}");
        }
    }
}
