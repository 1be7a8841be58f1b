use super::tiles::pack_panels;
use super::*;
use crate::arch::Isa;

/// Every variant the CPU has that has tile kernels (whatever the dispatch chooses).
fn tile_isas() -> Vec<Isa> {
    crate::arch::available().filter(|&isa| blocking(isa).is_some()).collect()
}
use std::format;
use std::vec;
use std::vec::Vec;

/// Unit roundoff of f32.
const U32: f64 = f32::EPSILON as f64 / 2.0;

/// Deterministic entries in `[-1, 1]`, exactly representable in f32.
fn entries(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = crate::rng::SplitMix64::new(seed);
    (0..len).map(|_| (rng.next_f64() * 2.0 - 1.0) as f32).collect()
}

/// The reference in f64 with the full `n x n` probabilities (as `tests/common/attention.rs`,
/// which unit tests cannot reach): `(out, lse, dq, dk, dv)`.
#[allow(clippy::type_complexity)]
fn naive(p: &Problem<'_>, d_out: &[f32]) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let (n, d_k, d_v, scale) = (p.n, p.d_k, p.d_v, p.scale as f64);
    let at = |x: &[f32], i: usize| x[i] as f64;
    let mut prob = vec![0.0; n * n];
    let (mut out, mut lse) = (vec![0.0; n * d_v], vec![f64::NEG_INFINITY; n]);
    for i in 0..n {
        let logits: Vec<f64> = (0..n)
            .map(|j| {
                if p.causal && j > i {
                    return f64::NEG_INFINITY;
                }
                let dot: f64 = (0..d_k).map(|t| at(p.q, i * d_k + t) * at(p.k, j * d_k + t)).sum();
                scale * dot + p.mask.map_or(0.0, |m| m[i * n + j] as f64)
            })
            .collect();
        let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        if max == f64::NEG_INFINITY {
            continue;
        }
        let sum: f64 = logits.iter().map(|a| (a - max).exp()).sum();
        lse[i] = max + sum.ln();
        for j in 0..n {
            prob[i * n + j] = (logits[j] - max).exp() / sum;
            for t in 0..d_v {
                out[i * d_v + t] += prob[i * n + j] * at(p.v, j * d_v + t);
            }
        }
    }
    let (mut dq, mut dk, mut dv) = (vec![0.0; n * d_k], vec![0.0; n * d_k], vec![0.0; n * d_v]);
    for i in 0..n {
        let dp: Vec<f64> =
            (0..n).map(|j| (0..d_v).map(|t| at(d_out, i * d_v + t) * at(p.v, j * d_v + t)).sum()).collect();
        let row_dot: f64 = (0..n).map(|j| prob[i * n + j] * dp[j]).sum();
        for j in 0..n {
            let pij = prob[i * n + j];
            let ds = pij * (dp[j] - row_dot);
            for t in 0..d_v {
                dv[j * d_v + t] += pij * at(d_out, i * d_v + t);
            }
            for t in 0..d_k {
                dq[i * d_k + t] += scale * ds * at(p.k, j * d_k + t);
                dk[j * d_k + t] += scale * ds * at(p.q, i * d_k + t);
            }
        }
    }
    (out, lse, dq, dk, dv)
}

fn max_abs_diff(a: &[f32], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| (x as f64 - y).abs()).fold(0.0, f64::max)
}

fn norm(x: impl Iterator<Item = f64>) -> f64 {
    x.map(|v| v * v).sum::<f64>().sqrt()
}

/// Runs `isa`'s forward and backward (with the exact workspace lengths) and checks them
/// against [`naive`], with the bound of `tests/softmax_sd.rs::softmax_f32_matches_f64`: each
/// logit is a `d_k`-term dot product (`|dA| <= d_k u L`, `L = scale max sum_p |q_ip k_jp|`),
/// softmax maps it to `|dP_ij| <= 2 |dA| P_ij`, the normalization and value products are sums
/// of `n` terms and exp adds a few `u`: `|dO| <= (2 d_k L + 2 n + 8) u max|v|`; gradients chain
/// three such products, normwise within 4 times that relative to the gradient's norm.
fn check_variant(isa: Isa, n: usize, d_k: usize, d_v: usize, causal: bool, mask: Option<&[f32]>, seed: u64) {
    let (q, k, v, d_out) = (
        entries(n * d_k, seed),
        entries(n * d_k, seed + 1),
        entries(n * d_v, seed + 2),
        entries(n * d_v, seed + 3),
    );
    let scale = if d_k == 0 { 1.0 } else { 1.0 / (d_k as f32).sqrt() };
    let problem = Problem { n, d_k, d_v, scale, causal, q: &q, k: &k, v: &v, mask };
    let (out64, lse64, dq64, dk64, dv64) = naive(&problem, &d_out);
    let blocking = blocking(isa).unwrap();
    let what = format!("{isa:?} n={n} d_k={d_k} d_v={d_v} causal={causal} mask={}", mask.is_some());
    let (mut out, mut lse) = (vec![f32::NAN; n * d_v], vec![f32::NAN; n]);
    // Too short a workspace: refused, nothing written.
    let mut short = vec![0.0; blocking.forward_len(n, d_k, d_v) - 1];
    assert!(!forward(isa, &problem, &mut out, &mut lse, &mut short), "{what}");
    assert!(lse.iter().all(|x| x.is_nan()));
    let mut ws = vec![f32::NAN; blocking.forward_len(n, d_k, d_v)];
    assert!(forward(isa, &problem, &mut out, &mut lse, &mut ws), "{what}");
    let l = scale as f64 * d_k as f64; // entries in [-1, 1]
    let bound = (2.0 * d_k as f64 * l + 2.0 * n as f64 + 8.0) * U32;
    let out_err = max_abs_diff(&out, &out64);
    assert!(out_err <= bound, "{what}: out error {out_err:e} > {bound:e}");
    for (i, (&a, &b)) in lse.iter().zip(&lse64).enumerate() {
        if b == f64::NEG_INFINITY {
            assert_eq!(a, f32::NEG_INFINITY, "{what}: row {i} fully masked");
            assert!(out[i * d_v..(i + 1) * d_v].iter().all(|&o| o == 0.0));
        } else {
            assert!((a as f64 - b).abs() <= bound * (1.0 + b.abs()), "{what}: lse {i}: {a} vs {b}");
        }
    }
    let (mut dq, mut dk, mut dv) =
        (vec![f32::NAN; n * d_k], vec![f32::NAN; n * d_k], vec![f32::NAN; n * d_v]);
    let mut ws = vec![f32::NAN; blocking.backward_len(n, d_k, d_v)];
    let io = BackwardIo { out: &out, lse: &lse, d_out: &d_out, d_q: &mut dq, d_k: &mut dk, d_v: &mut dv };
    assert!(backward(isa, &problem, io, &mut ws), "{what}");
    for (name, g, g64) in [("dq", &dq, &dq64), ("dk", &dk, &dk64), ("dv", &dv, &dv64)] {
        let err = norm(g.iter().zip(g64.iter()).map(|(&a, &b)| a as f64 - b));
        // dQ = dK = 0 for one token (P = 1): compare absolutely, entries are O(1).
        let reference = norm(g64.iter().cloned()).max(1.0);
        assert!(err <= 4.0 * bound * reference, "{what}: {name} error {err:e} vs norm {reference:e}");
    }
}

/// Every variant the CPU has, against the f64 reference at sizes that reach every remainder
/// path: partial register blocks of rows (n not a multiple of 4, 6, 12 or the strip), partial
/// panels and key blocks (n not a multiple of 16, 64 or 128, n > 128), widths below, at and
/// above one, two and four vectors (the narrow blocks at d <= 2 W and the wide ones), partial
/// vectors (d = 1, 15, 17, 24, 63, 65), d = 0, ragged causal rows (masked exp and max tails).
#[test]
fn every_variant_matches_the_reference() {
    let isas = tile_isas();
    assert!(!isas.is_empty() || crate::arch::detected() == Isa::Portable);
    for isa in isas {
        for &(n, d_k, d_v) in &[
            (1, 1, 1),
            (2, 64, 64),
            (5, 3, 7),
            (13, 16, 16),
            (47, 63, 65),
            (49, 64, 96),
            (130, 17, 24),
            (131, 64, 64),
            (200, 32, 15),
            (37, 0, 8),
            (29, 8, 0),
        ] {
            for causal in [false, true] {
                check_variant(isa, n, d_k, d_v, causal, None, (n * 131 + d_k * 7 + d_v) as u64);
            }
        }
    }
}

/// Keys and values over 1 MiB take the wide forward strips (their own padding of the last
/// strip, two chunks of register blocks per strip on AVX-512): n = 1037, d = 130.
#[test]
fn every_variant_matches_the_reference_with_wide_strips() {
    for isa in tile_isas() {
        let blocking = blocking(isa).unwrap();
        assert_eq!(blocking.max_forward_strip(1037, 130, 130), 2 * blocking.forward_cols);
        check_variant(isa, 1037, 130, 130, false, None, 11);
    }
}

/// Masks: `-inf` entries, a fully masked row (`out = 0`, `lse = -inf`, no gradient), finite
/// additive values; and huge logits (scale 1e4 / d_k): each exponent is relative to the row
/// maximum, so nothing overflows.
#[test]
fn every_variant_handles_masks_and_large_logits() {
    for isa in tile_isas() {
        let (n, d) = (70usize, 20usize);
        let mut mask = entries(n * n, 9);
        for (idx, m) in mask.iter_mut().enumerate() {
            if idx % 7 == 0 {
                *m = f32::NEG_INFINITY;
            }
        }
        mask[3 * n..4 * n].fill(f32::NEG_INFINITY); // row 3 fully masked
        for causal in [false, true] {
            check_variant(isa, n, d, d, causal, Some(&mask), 5);
        }
        // Large logits: q . k up to 1e4 in magnitude. Forward against the reference, relative
        // to the logit size (the bound above with L = 1e4).
        let (q, k, v) = (entries(n * d, 1), entries(n * d, 2), entries(n * d, 3));
        let problem = Problem {
            n,
            d_k: d,
            d_v: d,
            scale: 1e4 / d as f32,
            causal: false,
            q: &q,
            k: &k,
            v: &v,
            mask: None,
        };
        let (out64, lse64, ..) = naive(&problem, &v);
        let (mut out, mut lse) = (vec![0.0; n * d], vec![0.0; n]);
        let mut ws = vec![0.0; blocking(isa).unwrap().forward_len(n, d, d)];
        assert!(forward(isa, &problem, &mut out, &mut lse, &mut ws));
        assert!(out.iter().chain(&lse).all(|x| x.is_finite()));
        let bound = (2.0 * d as f64 * 1e4 + 2.0 * n as f64 + 8.0) * U32;
        assert!(max_abs_diff(&out, &out64) <= bound, "{isa:?}: {}", max_abs_diff(&out, &out64));
        assert!(max_abs_diff(&lse, &lse64) <= bound * 1e4);
    }
}

/// Each variant's vector exponential against `libm::exp` (within 3 ulp, as `crate::linalg::exp`'s
/// scalar one) on a dense grid, and its special values: `-inf` and anything below -86.5 give
/// 0, overflow gives `+inf`, NaN stays NaN.
#[test]
fn every_variant_exp_matches_libm() {
    fn run<S: Simd>(x: &mut [f32]) {
        for chunk in x.chunks_exact_mut(S::W) {
            // SAFETY: the chunk has W elements; the caller checked the CPU's features.
            unsafe { S::store(chunk.as_mut_ptr(), S::exp(S::load(chunk.as_ptr()))) };
        }
    }
    for isa in tile_isas() {
        let exp = |x: &mut [f32]| run_exp(isa, x);
        let grid: Vec<f32> = (0..126_992).map(|i| -86.5 + i as f32 * 0.001_37).collect(); // to 87.5, 16 | len
        let mut y = grid.clone();
        exp(&mut y);
        let worst = grid
            .iter()
            .zip(&y)
            .map(|(&x, &y)| {
                let exact = libm::exp(x as f64);
                (y as f64 - exact).abs() / exact
            })
            .fold(0.0, f64::max);
        assert!(worst < 3.0 * f32::EPSILON as f64, "{isa:?}: worst relative error {worst:e}");
        let mut special = [
            f32::NEG_INFINITY,
            f32::INFINITY,
            f32::NAN,
            -1e4,
            1e4,
            0.0,
            -100.0,
            88.73,
            -86.6,
            1.0,
            -1.0,
            2.0,
            3.0,
            4.0,
            5.0,
            6.0,
        ];
        exp(&mut special);
        assert_eq!(special[0], 0.0);
        assert_eq!(special[1], f32::INFINITY);
        assert!(special[2].is_nan());
        assert_eq!(&special[3..7], &[0.0, f32::INFINITY, 1.0, 0.0]);
        assert_eq!((special[7], special[8]), (f32::INFINITY, 0.0));
    }

    crate::arch::multiversion! {
        fn run_exp(x: &mut [f32]);
        avx512("avx512f,fma") => run::<Avx512>(x);
        avx2("avx2,fma") => run::<Avx2>(x);
        portable => unreachable!("no vector type for the portable variant");
    }
}

/// The public workspace formulas cover the fused layout where `softmax` documents it:
/// `n >= 135` with widths up to 256 (sampled), and the model's heads at `n = 128`.
#[test]
fn public_workspace_covers_the_fused_layout() {
    use crate::attention::{softmax::SoftmaxAttention, Causality};
    let mut shapes = vec![(128, 16, 16), (128, 24, 16), (128, 16, 24), (512, 64, 64), (4096, 64, 64)];
    for n in (135..700).step_by(37) {
        for d_k in (0..=256).step_by(19) {
            for d_v in (0..=256).step_by(23) {
                shapes.push((n, d_k, d_v));
            }
        }
    }
    for isa in tile_isas() {
        let blocking = blocking(isa).unwrap();
        for &(n, d_k, d_v) in &shapes {
            let head = SoftmaxAttention::<f32>::new(d_k, d_v, Causality::Causal);
            assert!(
                blocking.forward_len(n, d_k, d_v) <= head.forward_workspace_len(n),
                "{isa:?} {n} {d_k} {d_v}"
            );
            assert!(
                blocking.backward_len(n, d_k, d_v) <= head.backward_workspace_len(n),
                "{isa:?} {n} {d_k} {d_v}"
            );
        }
    }
}

/// `pack_panels` writes each panel transposed and zero-pads the last one.
#[test]
fn panels_are_transposed_rows() {
    let (n, width, panel) = (5usize, 3usize, 4usize);
    let x: Vec<f32> = (0..n * width).map(|i| i as f32).collect();
    let mut out = vec![f32::NAN; 8 * width];
    pack_panels(&x, n, width, panel, &mut out);
    for t in 0..2 {
        for p in 0..width {
            for c in 0..panel {
                let row = t * panel + c;
                let expected = if row < n { x[row * width + p] } else { 0.0 };
                assert_eq!(out[t * width * panel + p * panel + c], expected);
            }
        }
    }
}

/// The workspace lengths are the closed forms their documents state, saturating at `usize::MAX`
/// (huge widths of empty problems included), for every blocking and a sweep of shapes.
#[test]
fn workspace_lengths_are_their_closed_forms() {
    let all = [
        #[cfg(sda_avx512)]
        AVX512_BLOCKING,
        AVX2_BLOCKING,
    ];
    let mut shapes =
        vec![(0, usize::MAX / 3, usize::MAX / 3), (0, usize::MAX, usize::MAX), (1, usize::MAX / 2, 1)];
    for n in [0, 1, 2, 7, 15, 16, 17, 47, 48, 49, 97, 128, 129, 500, 2048, 4096, 4099] {
        for d in [0, 1, 3, 16, 17, 64, 100, 257] {
            shapes.push((n, d, d));
            shapes.push((n, d, 2 * d + 1));
        }
    }
    for b in all {
        for &(n, d_k, d_v) in &shapes {
            let per_column = d_k.saturating_add(b.forward_key_block(n)).saturating_add(d_v).saturating_add(2);
            let forward =
                (ALIGN - 1).saturating_add(b.max_forward_strip(n, d_k, d_v).saturating_mul(per_column));
            assert_eq!(b.forward_len(n, d_k, d_v), forward, "{b:?} {n} {d_k} {d_v}");
            let round = |w: usize| w.div_ceil(ALIGN).saturating_mul(ALIGN);
            let per_row = (2 * b.logit_stride(n))
                .saturating_add(round(d_k).saturating_mul(2))
                .saturating_add(round(d_v))
                .saturating_add(1);
            let backward = (ALIGN - 1)
                .saturating_add(b.padded(n).saturating_mul(d_k.saturating_add(d_v)))
                .saturating_add(b.max_strip(n, d_k, d_v).saturating_mul(per_row));
            assert_eq!(b.backward_len(n, d_k, d_v), backward, "{b:?} {n} {d_k} {d_v}");
        }
    }
}
