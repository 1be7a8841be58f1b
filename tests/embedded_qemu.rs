//! Runs the bare-metal Cortex-M4F example (examples/cortex-m) under QEMU and compares every number
//! it prints with the same quantities computed here, in `f64` (the reference) and in `f32` (the
//! crate on the host, default features).
//!
//! The firmware is built beforehand by `.ci/embedded.sh` (which `.ci/run` calls before the tests):
//! building it here would need Debian's toolchain and a second cargo inside the test, so this test
//! only reads the ELF (`SDA_FIRMWARE_ELF`, default
//! `examples/cortex-m/target/thumbv7em-none-eabihf/release/sd-attention-cortex-m`). When the ELF or
//! `qemu-system-arm` is missing, or the ELF is older than the sources, the test prints why and
//! passes, unless `SDA_REQUIRE_FIRMWARE=1` (set by `.ci/run`), where that is a failure.
//!
//! Tolerances: the firmware computes in `f32` from inputs stored exactly in `f32` (shared with this
//! test through `inputs.rs`). For each printed value, [`Bounded`] carries the `f64` value of the same
//! formula and a bound on the rounding error of any `f32` evaluation of it, built operation by
//! operation (derivation in tests/common/rounding.rs). The firmware must be within that bound of the
//! `f64` value, and the host's `f32` result too, so the two `f32` results are within twice the
//! bound of each other. Nothing is tuned: the bounds are worst cases, usually 10-100x the actual
//! difference, and the test prints both.

mod common;
#[path = "../examples/cortex-m/src/inputs.rs"]
mod inputs;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::jacobi::jacobi_singular_values;
use common::rounding::{dot, exact, gamma, sum, Bounded, CRATE_EXP_F32_REL, U32};
use inputs::{
    fingerprint, head_inputs, sequence_fingerprint, sequence_inputs, SequenceInputs, D_HEAD, D_K, D_MODEL,
    D_V, KNOWN_SPECTRUM, N_TOKENS, RANK_FILTERING, RANK_ROUTING, TAG,
};
use sd_attention::attention::linear::State;
use sd_attention::attention::sd::AttentionHead;
use sd_attention::attention::softmax::forward_flops;
use sd_attention::attention::Causality;
use sd_attention::spectral::erank::{default_rank_tolerance, effective_ranks, EffectiveRanks};
use sd_attention::spectral::factored::{FactoredKernel, Part};
use sd_attention::spectral::spectrum::{
    head_spectrum_steps, head_values_workspace_len, routing_singular_values,
};
use sd_attention::split::energies;

/// Sections with results checked here; a section that prints results without a check fails the
/// test (as does a `SDA pending <section>` placeholder).
const CHECKED_SECTIONS: [&str; 6] =
    ["split", "routing", "erank", "sd_forward", "linear_stream", "routing_spectrum"];
/// `eps` of the firmware's linear-attention stream (`LINEAR_EPS` in main.rs): the same `f32` value on
/// both sides, taken as exact.
const LINEAR_EPS: f32 = 1e-6;
/// Seconds the emulated run may take (it takes well under one).
const QEMU_TIMEOUT: Duration = Duration::from_secs(60);

/// The printed lines, `(section, name) -> values`.
struct Printed {
    lines: BTreeMap<(String, String), Vec<String>>,
}

impl Printed {
    fn parse(text: &str) -> Self {
        let mut lines = BTreeMap::new();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some(TAG) {
                continue;
            }
            let section = words.next().expect("a section after the tag").to_string();
            let name = words.next().expect("a name after the section").to_string();
            let previous = lines.insert((section, name), words.map(str::to_string).collect());
            assert!(previous.is_none(), "line printed twice: {line}");
        }
        Printed { lines }
    }

    fn has(&self, section: &str, name: &str) -> bool {
        self.lines.contains_key(&(section.to_string(), name.to_string()))
    }

    fn words(&self, section: &str, name: &str) -> &[String] {
        self.lines
            .get(&(section.to_string(), name.to_string()))
            .unwrap_or_else(|| panic!("the firmware printed no `{TAG} {section} {name}` line"))
    }

    fn floats(&self, section: &str, name: &str) -> Vec<f32> {
        let parse = |w: &String| w.parse::<f32>().unwrap_or_else(|e| panic!("{section} {name}: {w}: {e}"));
        self.words(section, name).iter().map(parse).collect()
    }

    fn integer(&self, section: &str, name: &str) -> u64 {
        let words = self.words(section, name);
        assert_eq!(words.len(), 1, "{section} {name}: {words:?}");
        words[0].parse().unwrap_or_else(|e| panic!("{section} {name}: {e}"))
    }

    fn sections(&self) -> Vec<&str> {
        let mut sections: Vec<&str> = self.lines.keys().map(|(s, _)| s.as_str()).collect();
        sections.dedup();
        sections
    }
}

/// Largest `|value - reference| / tolerance` over a section, with the worst case for the message.
#[derive(Default)]
struct Worst {
    ratio: f64,
    diff: f64,
    tolerance: f64,
    what: String,
}

impl Worst {
    /// Checks an `f32` result against a bounded reference: within its bound.
    fn check(&mut self, what: &str, value: f32, reference: Bounded) {
        let diff = (value as f64 - reference.v).abs();
        let tolerance = reference.tolerance();
        assert!(
            diff <= tolerance,
            "{what}: {value:e} differs from the f64 reference {:e} by {diff:e} > tolerance {tolerance:e}",
            reference.v
        );
        let ratio = if tolerance > 0.0 { diff / tolerance } else { 0.0 };
        if ratio >= self.ratio {
            *self = Worst { ratio, diff, tolerance, what: what.to_string() };
        }
    }

    fn report(&self, label: &str) {
        println!(
            "  {label:<34} max |diff| {:.3e} (at {}), tolerance there {:.3e}, ratio {:.3}",
            self.diff, self.what, self.tolerance, self.ratio
        );
    }
}

/// Compares firmware and host `f32` values with the bounded reference: the firmware within the
/// bound, the host `f32` within the bound, and so the two within twice the bound of each other.
fn compare(
    section: &str,
    firmware: &[f32],
    host: &[f32],
    reference: &[Bounded],
    vs_f64: &mut Worst,
    vs_host: &mut Worst,
) {
    assert_eq!(firmware.len(), reference.len(), "{section}: number of values");
    assert_eq!(host.len(), reference.len(), "{section}: host values");
    for (i, ((&fw, &h), &r)) in firmware.iter().zip(host).zip(reference).enumerate() {
        let what = format!("{section}[{i}]");
        vs_f64.check(&what, fw, r);
        // The host's f32 result obeys the same bound around the same reference.
        Worst::default().check(&format!("host {what}"), h, r);
        let diff = (fw as f64 - h as f64).abs();
        let tolerance = 2.0 * r.tolerance();
        assert!(diff <= tolerance, "{what}: firmware {fw:e} vs host f32 {h:e}: {diff:e} > {tolerance:e}");
        if tolerance > 0.0 && diff / tolerance >= vs_host.ratio {
            *vs_host = Worst { ratio: diff / tolerance, diff, tolerance, what };
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Bounded references of what the firmware computes (the same formulas as the kernels; the order of
// additions does not matter to the bounds).

/// `M = W_Q W_K^T` entry by entry: `M_ij = sum_a W_Q[i,a] W_K[j,a]` (a dot of length `d_head`).
fn bounded_kernel(w_q: &[Bounded], w_k: &[Bounded]) -> Vec<Bounded> {
    let mut m = Vec::with_capacity(D_MODEL * D_MODEL);
    for i in 0..D_MODEL {
        for j in 0..D_MODEL {
            m.push(dot(&w_q[i * D_HEAD..(i + 1) * D_HEAD], &w_k[j * D_HEAD..(j + 1) * D_HEAD]));
        }
    }
    m
}

/// `split::energies` of the computed `M`: `||S||^2 = (sum_{i<j} (m_ij - m_ji)^2) / 2`,
/// `||D||^2 = sum_i m_ii^2 + (sum_{i<j} (m_ij + m_ji)^2) / 2`, and `rho = ||S||^2 / (||S||^2 + ||D||^2)`.
fn bounded_dense_energies(m: &[Bounded]) -> [Bounded; 3] {
    let n = D_MODEL;
    let pairs = || (0..n).flat_map(|i| (i + 1..n).map(move |j| (i, j)));
    let routing = sum(pairs().map(|(i, j)| {
        let skew = m[i * n + j].sub(m[j * n + i]);
        skew.mul(skew)
    }))
    .half();
    let off_diagonal = sum(pairs().map(|(i, j)| {
        let sym = m[i * n + j].add(m[j * n + i]);
        sym.mul(sym)
    }));
    let diagonal = sum((0..n).map(|i| m[i * n + i].mul(m[i * n + i])));
    let filtering = diagonal.add(off_diagonal.half());
    [routing, filtering, routing.div(routing.add(filtering))]
}

/// `FactoredKernel::energies`: `total = <W_Q^T W_Q, W_K^T W_K>`, `tr(G G)` with `G = W_K^T W_Q`,
/// `||S||^2 = (total - tr(G G)) / 2`, `||D||^2 = (total + tr(G G)) / 2`, and `rho`.
fn bounded_factored_energies(w_q: &[Bounded], w_k: &[Bounded]) -> [Bounded; 3] {
    let h = D_HEAD;
    let column = |w: &[Bounded], a: usize| (0..D_MODEL).map(|i| w[i * h + a]).collect::<Vec<_>>();
    let gram = |x: &[Bounded], y: &[Bounded]| {
        let mut g = Vec::with_capacity(h * h);
        for a in 0..h {
            for b in 0..h {
                g.push(dot(&column(x, a), &column(y, b)));
            }
        }
        g
    };
    let (gram_q, gram_k, cross) = (gram(w_q, w_q), gram(w_k, w_k), gram(w_k, w_q));
    let total = dot(&gram_q, &gram_k);
    let trace_mm = sum((0..h)
        .flat_map(|a| (0..h).map(move |b| (a, b)))
        .map(|(a, b)| cross[a * h + b].mul(cross[b * h + a])));
    let routing = total.sub(trace_mm).half();
    let filtering = total.add(trace_mm).half();
    [routing, filtering, routing.div(routing.add(filtering))]
}

/// `FactoredKernel::apply` for routing and filtering: `u = W_K^T x`, `w = W_Q^T x`,
/// `(S x)_i = (W_Q[i,:] u - W_K[i,:] w) / 2`, `(D x)_i` with `+`; then `x^T (S x)`.
fn bounded_products(
    w_q: &[Bounded],
    w_k: &[Bounded],
    x: &[Bounded],
) -> (Vec<Bounded>, Vec<Bounded>, Bounded) {
    let h = D_HEAD;
    let project = |w: &[Bounded]| {
        (0..h).map(|a| dot(&(0..D_MODEL).map(|i| w[i * h + a]).collect::<Vec<_>>(), x)).collect::<Vec<_>>()
    };
    let (key_proj, query_proj) = (project(w_k), project(w_q));
    let (mut routing_x, mut filtering_x) = (Vec::new(), Vec::new());
    for i in 0..D_MODEL {
        let forward = dot(&w_q[i * h..(i + 1) * h], &key_proj);
        let backward = dot(&w_k[i * h..(i + 1) * h], &query_proj);
        routing_x.push(forward.sub(backward).half());
        filtering_x.push(forward.add(backward).half());
    }
    let x_routing_x = dot(x, &routing_x);
    (routing_x, filtering_x, x_routing_x)
}

/// `erank` of `sigma` as the crate computes it: with `l = max sigma`, `t = sum sigma/l`,
/// `p_k = (sigma_k/l)/t`: entropy `exp(-sum p ln p)`, participation `(sum r)^2 / sum r^2` with
/// `r_k = (sigma_k/l)^2`, stable `sum r`.
fn bounded_eranks(sigma: &[f32]) -> [Bounded; 3] {
    bounded_eranks_of(&exact(sigma))
}

/// [`bounded_eranks`] of values that carry errors themselves. A value whose bound does not exclude
/// zero (`v <= e`, e.g. a singular value that is zero in exact arithmetic) may be computed as `0`
/// (the crate skips `p = 0` in the entropy) or as a tiny positive `p`: its term `-p ln p` then lies
/// in `[0, p_max |ln p_max|]` (increasing on `[0, 1/e]`), with `p_max` the bound on the computed `p`.
fn bounded_eranks_of(sigma: &[Bounded]) -> [Bounded; 3] {
    let largest = sigma.iter().fold(Bounded::exact(0.0), |m, &s| m.max(s));
    let scaled: Vec<Bounded> = sigma.iter().map(|s| s.div(largest)).collect();
    let total = sum(scaled.iter().copied());
    let entropy = sum(scaled.iter().map(|s| {
        if s.mag() == 0.0 {
            // An exact zero: skipped by the crate.
            Bounded::exact(0.0)
        } else if s.v > s.e {
            let p = s.div(total);
            p.mul(p.ln())
        } else {
            let p_max = Bounded { v: 0.0, e: s.e }.div(total).mag();
            assert!(p_max < (-1.0f64).exp(), "p_max {p_max} too large for the monotone bound");
            Bounded { v: 0.0, e: p_max * p_max.ln().abs() }
        }
    }));
    // exp(-entropy); the crate clamps the entropy at 0 first (a no-op here: entropy > 0 by far).
    let entropy_rank = Bounded { v: -entropy.v, e: entropy.e }.exp();
    let squares: Vec<Bounded> = scaled.iter().map(|s| s.mul(*s)).collect();
    let second = sum(squares.iter().copied());
    let fourth = sum(squares.iter().map(|r| r.mul(*r)));
    [entropy_rank, second.mul(second).div(fourth), second]
}

/// The S-D head forward (`AttentionHead::routing_filtering`, causal) as the crate computes it, with
/// `x_j` the tokens and `U, V, C, W_V` the parameters:
/// * projections `a = X U`, `b = X V`, `c = X C`, `Vp = X W_V`: dots of length `d_model` of exact
///   inputs; `Qh = [a, b, c]`, `Kh = [b, -a, -c]` (copies and negations, exact);
/// * `scale = 1 / sqrt(2r + q)` in `f32` (`sqrt` and reciprocal both round);
/// * logits `A_ij = scale (Qh_i . Kh_j)` for `j <= i` (gemm with `alpha = scale`: the dot, then one
///   product);
/// * one tile holds all 8 keys, so the online softmax is one pass: `m_i = max_j A_ij` (no rounding:
///   a computed maximum is off by at most the largest error), `p_ij = exp(A_ij - m_i)` through the
///   crate's own `f32` exp ([`CRATE_EXP_F32_REL`]), `s_i = sum_j p_ij` (the rescaling by
///   `exp(-inf) = 0` of the empty accumulator is exact), `acc_i = sum_j p_ij Vp_j`;
/// * `out_i = acc_i * (1 / s_i)` (reciprocal, then product), `lse_i = m_i + ln s_i`.
fn bounded_sd_forward(sequence: &SequenceInputs) -> (Vec<Bounded>, Vec<Bounded>) {
    let (d, r, q) = (D_MODEL, RANK_ROUTING, RANK_FILTERING);
    let params = exact(&sequence.sd_params);
    let x = exact(&sequence.x);
    // Blocks [U (d x r), V (d x r), C (d x q), W_V (d x d_v)], row-major.
    let offsets = [0, d * r, 2 * d * r, d * (2 * r + q)];
    let project = |block: usize, cols: usize, i: usize, col: usize| {
        let column: Vec<Bounded> = (0..d).map(|row| params[offsets[block] + row * cols + col]).collect();
        dot(&x[i * d..(i + 1) * d], &column)
    };
    let negate = |b: Bounded| Bounded { v: -b.v, e: b.e };
    let (mut qh, mut kh, mut vp) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..N_TOKENS {
        let a: Vec<Bounded> = (0..r).map(|t| project(0, r, i, t)).collect();
        let b: Vec<Bounded> = (0..r).map(|t| project(1, r, i, t)).collect();
        let c: Vec<Bounded> = (0..q).map(|t| project(2, q, i, t)).collect();
        qh.push([a.clone(), b.clone(), c.clone()].concat());
        kh.push([b, a.into_iter().map(negate).collect(), c.into_iter().map(negate).collect()].concat());
        vp.push((0..D_V).map(|t| project(3, D_V, i, t)).collect::<Vec<_>>());
    }
    let scale = Bounded::exact(1.0).div(Bounded::exact((2 * r + q) as f32).sqrt());
    let (mut out, mut lse) = (Vec::new(), Vec::new());
    for (i, q_i) in qh.iter().enumerate() {
        let logits: Vec<Bounded> = kh[..=i].iter().map(|k_j| dot(q_i, k_j).mul(scale)).collect();
        let row_max = logits.iter().skip(1).fold(logits[0], |m, &a| m.max(a));
        // The exp bound holds for arguments in [-86.5, 0]; these are far inside.
        assert!(logits.iter().all(|a| a.v - row_max.v - a.e - row_max.e > -86.5));
        let weights: Vec<Bounded> =
            logits.iter().map(|a| a.sub(row_max).exp_with_relative_error(CRATE_EXP_F32_REL)).collect();
        let row_sum = sum(weights.iter().copied());
        let inverse = Bounded::exact(1.0).div(row_sum);
        for t in 0..D_V {
            let column: Vec<Bounded> = vp[..=i].iter().map(|v_j| v_j[t]).collect();
            out.push(dot(&weights, &column).mul(inverse));
        }
        lse.push(row_max.add(row_sum.ln()));
    }
    (out, lse)
}

/// `phi(x) = elu(x) + 1`: `x + 1` (one addition) for `x > 0`, else `expf(x)` (libm).
fn bounded_phi(x: f32) -> Bounded {
    if x > 0.0 {
        Bounded::exact(x).add(Bounded::exact(1.0))
    } else {
        Bounded::exact(x).exp()
    }
}

/// The recurrent stream (`State::step`, `docs/math.md` section 6) operation by operation: per token,
/// `z_p += phi(k_p)`, `S_pv += phi(k_p) v_v`, `den = sum_p phi(q_p) z_p + eps`,
/// `out_v = (sum_p phi(q_p) S_pv) / den`. The state's errors carry from token to token.
fn bounded_linear_stream(sequence: &SequenceInputs) -> Vec<Bounded> {
    let zero = Bounded::exact(0.0);
    let (mut s, mut z) = (vec![zero; D_K * D_V], vec![zero; D_K]);
    let mut out = Vec::new();
    for t in 0..N_TOKENS {
        let (q, k, v) = (
            &sequence.q[t * D_K..(t + 1) * D_K],
            &sequence.k[t * D_K..(t + 1) * D_K],
            &sequence.v[t * D_V..(t + 1) * D_V],
        );
        let (mut den_terms, mut num_terms) = (Vec::new(), vec![Vec::new(); D_V]);
        for p in 0..D_K {
            let (weight_k, weight_q) = (bounded_phi(k[p]), bounded_phi(q[p]));
            z[p] = z[p].add(weight_k);
            den_terms.push(weight_q.mul(z[p]));
            for c in 0..D_V {
                s[p * D_V + c] = s[p * D_V + c].add(weight_k.mul(Bounded::exact(v[c])));
                num_terms[c].push(weight_q.mul(s[p * D_V + c]));
            }
        }
        let den = sum(den_terms).add(Bounded::exact(LINEAR_EPS));
        out.extend(num_terms.into_iter().map(|terms| sum(terms).div(den)));
    }
    out
}

/// Absolute bound on the error of each singular value of routing `S` from the crate's Lanczos
/// (`routing_singular_values`) in `f32`, and the dense `f64` singular values of `S` it applies to.
///
/// Weyl: if the computed values are the exact singular values of `S + E`, each is within `||E||_2`
/// of the matching (sorted) exact one. `E` has two parts:
/// * the products `y = S x` from the factors: `u = W_K^T x` has `|u' - u| <= gamma(d) |W_K|^T |x|`,
///   then `W_Q u'` adds `gamma(h)`: `|(W_Q u)' - W_Q u| <= gamma(d + h) |W_Q| |W_K|^T |x|`; the
///   difference of the two terms rounds once more and the halving is exact, so
///   `|y' - y| <= gamma(d + h + 1) (|W_Q||W_K|^T + |W_K||W_Q|^T) |x| / 2`, in norm at most
///   `gamma(d + h + 1) ||W_Q||_F ||W_K||_F ||x||` (`|| |A| ||_2 <= ||A||_F`);
/// * the Lanczos recurrence itself (full reorthogonalization, two Gram-Schmidt passes, the
///   tridiagonal eigensolver): its computed Ritz values are those of a perturbation of norm of the
///   level at which the crate declares breakdown, `8 sqrt(n) eps ||S||_2` (the model behind
///   src/lanczos.rs's breakdown test and the f32-vs-f64 checks of tests/lanczos.rs and
///   tests/spectrum.rs; `eps = 2u`). Unlike the others, this term is the standard model for
///   Lanczos with full reorthogonalization, not an operation-by-operation worst case.
fn routing_spectrum_reference(inputs: &inputs::HeadInputs) -> (Vec<f64>, f64) {
    let (w_q, w_k) = (common::widen(&inputs.w_q), common::widen(&inputs.w_k));
    let head = FactoredKernel::new(D_MODEL, D_HEAD, &w_q, &w_k).unwrap();
    let mut s = vec![0.0; D_MODEL * D_MODEL];
    head.to_dense(Part::Routing, &mut s).unwrap();
    let mut sigma = jacobi_singular_values(D_MODEL, D_MODEL, &s);
    sigma.sort_by(|a, b| b.partial_cmp(a).unwrap());
    let frobenius = |w: &[f64]| w.iter().map(|v| v * v).sum::<f64>().sqrt();
    let products = gamma(D_MODEL + D_HEAD + 1) * frobenius(&w_q) * frobenius(&w_k);
    let lanczos = 8.0 * (D_MODEL as f64).sqrt() * (2.0 * U32) * sigma[0];
    (sigma, products + lanczos)
}

// ---------------------------------------------------------------------------------------------

/// The firmware's printed output, or `None` (with the reason printed) when it cannot run here.
fn run_firmware() -> Option<String> {
    let required = std::env::var("SDA_REQUIRE_FIRMWARE").is_ok_and(|v| v == "1");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let elf = std::env::var_os("SDA_FIRMWARE_ELF").map(PathBuf::from).unwrap_or_else(|| {
        root.join("examples/cortex-m/target/thumbv7em-none-eabihf/release/sd-attention-cortex-m")
    });
    let skip = |why: String| {
        assert!(!required, "SDA_REQUIRE_FIRMWARE=1 but {why}");
        println!("SKIPPED: the Cortex-M firmware comparison: {why}");
        println!("         (bash .ci/embedded.sh installs the toolchain and QEMU, and builds and runs it)");
        None
    };
    let Ok(built) = std::fs::metadata(&elf).and_then(|m| m.modified()) else {
        return skip(format!("no firmware at {}", elf.display()));
    };
    if let Some(newer) = newest_source(root, &elf).filter(|(time, _)| *time > built) {
        return skip(format!("the firmware is older than {}", newer.1.display()));
    }
    let spawned = Command::new("qemu-system-arm")
        .args(["-machine", "mps2-an386", "-cpu", "cortex-m4", "-nographic"])
        .args(["-semihosting-config", "enable=on,target=native", "-kernel"])
        .arg(&elf)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => return skip(format!("qemu-system-arm cannot be started ({e})")),
    };
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).map(|_| text)
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for QEMU") {
            break status;
        }
        if start.elapsed() > QEMU_TIMEOUT {
            child.kill().expect("QEMU can be killed");
            child.wait().expect("QEMU exits after kill");
            panic!("the firmware did not finish within {QEMU_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = reader.join().expect("reader thread").expect("QEMU output is UTF-8");
    let mut stderr = String::new();
    child.stderr.take().expect("piped").read_to_string(&mut stderr).expect("QEMU stderr");
    println!("firmware output ({}):\n{text}", elf.display());
    assert!(status.success(), "QEMU exited with {status}: the firmware reported a failure\n{stderr}");
    Some(text)
}

/// The most recently modified source the firmware is built from: the files listed in the dep-info
/// file cargo writes beside the ELF (`<elf>.d`: exactly what the thumbv7em build compiled, so a
/// change to an x86-only file such as `src/attention/fused.rs`, which cargo rightly does not
/// rebuild the firmware for, does not count), or, without it, everything under the crate's `src/`,
/// the example's `src/` and both manifests.
fn newest_source(root: &Path, elf: &Path) -> Option<(SystemTime, PathBuf)> {
    fn consider(path: &Path, newest: &mut Option<(SystemTime, PathBuf)>) {
        if path.is_dir() {
            for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
                consider(&entry.path(), newest);
            }
        } else if let Ok(time) = std::fs::metadata(path).and_then(|m| m.modified()) {
            if newest.as_ref().map_or(true, |(t, _)| time > *t) {
                *newest = Some((time, path.to_path_buf()));
            }
        }
    }
    let mut newest = None;
    let dep_info = elf.with_file_name(format!("{}.d", elf.file_name()?.to_string_lossy()));
    if let Ok(text) = std::fs::read_to_string(&dep_info) {
        // `target: dep dep ...` on the first line; spaces inside paths are escaped as `\ `.
        let deps = text.lines().next().and_then(|line| line.split_once(": ")).map(|(_, deps)| deps);
        for dep in deps.unwrap_or("").replace("\\ ", "\u{0}").split_whitespace() {
            consider(Path::new(&dep.replace('\u{0}', " ")), &mut newest);
        }
        for manifest in ["Cargo.toml", "examples/cortex-m/Cargo.toml"] {
            consider(&root.join(manifest), &mut newest);
        }
        return newest;
    }
    for part in ["src", "Cargo.toml", "examples/cortex-m/src", "examples/cortex-m/Cargo.toml"] {
        consider(&root.join(part), &mut newest);
    }
    newest
}

#[test]
fn firmware_matches_the_host() {
    let Some(text) = run_firmware() else { return };
    check_printed(&Printed::parse(&text));
}

/// Every check of the printed output against the host.
fn check_printed(printed: &Printed) {
    assert!(printed.has("end", "ok"), "the firmware did not end with `{TAG} end ok`");

    let inputs = head_inputs();
    assert_eq!(
        printed.words("input", "fingerprint"),
        [format!("{:016x}", fingerprint(&inputs))],
        "the firmware drew other inputs than this test (stale build? run bash .ci/embedded.sh)"
    );
    assert_eq!(
        printed.words("input", "sequence_fingerprint"),
        [format!("{:016x}", sequence_fingerprint(&sequence_inputs()))],
        "the firmware drew other sequence inputs than this test (stale build? run bash .ci/embedded.sh)"
    );
    assert_eq!(printed.words("input", "dims"), [D_MODEL.to_string(), D_HEAD.to_string()]);

    println!("firmware (f32, Cortex-M4F under QEMU) against f64, and against f32 on the host:");
    check_split(printed, &inputs);
    check_routing(printed, &inputs);
    check_erank(printed);
    let sequence = sequence_inputs();
    check_sd_forward(printed, &sequence);
    check_linear_stream(printed, &sequence);
    check_routing_spectrum(printed, &inputs);

    for section in printed.sections() {
        let known = ["begin", "input", "stack", "heap", "end"].contains(&section)
            || CHECKED_SECTIONS.contains(&section);
        assert!(known, "the firmware printed section `{section}`, which this test does not check");
    }
    for section in CHECKED_SECTIONS.iter().chain(&["total"]) {
        let bytes = printed.integer("stack", section);
        // The firmware itself fails when a part reaches the bottom of its 1 MiB painted window.
        assert!(bytes > 0 && bytes < 1024 * 1024, "stack {section}: {bytes} bytes");
        println!("  peak stack {section:<23} {bytes} bytes");
    }
    assert_eq!(printed.integer("heap", "total"), 0, "the firmware has no allocator");
}

/// What the firmware prints, computed by the crate on the host in `f32` (stack figures made up):
/// the checks must accept it, and must reject it with one value moved outside its bound. These two
/// tests run without QEMU and show that the comparison can fail.
fn host_output() -> String {
    let inputs = head_inputs();
    let head = FactoredKernel::new(D_MODEL, D_HEAD, &inputs.w_q, &inputs.w_k).unwrap();
    let mut m = vec![0.0f32; D_MODEL * D_MODEL];
    head.to_dense(Part::Kernel, &mut m).unwrap();
    let dense = energies(D_MODEL, &m).unwrap();
    let factored = head.energies(&mut vec![0.0; head.energies_workspace_len()]).unwrap();
    let mut workspace = vec![0.0f32; head.apply_workspace_len()];
    let (mut s_x, mut d_x) = (vec![0.0f32; D_MODEL], vec![0.0f32; D_MODEL]);
    head.apply(Part::Routing, &inputs.x, &mut s_x, &mut workspace).unwrap();
    head.apply(Part::Filtering, &inputs.x, &mut d_x, &mut workspace).unwrap();
    let xsx = sd_attention::linalg::dense::dot(&inputs.x, &s_x).unwrap();
    let n = KNOWN_SPECTRUM.len();
    let ranks = effective_ranks(&KNOWN_SPECTRUM, default_rank_tolerance::<f32>(n, n)).unwrap();
    let join = |v: &[f32]| v.iter().map(|x| format!("{x:e}")).collect::<Vec<_>>().join(" ");
    let mut lines = vec![
        "begin v1".to_string(),
        format!("input fingerprint {:016x}", fingerprint(&inputs)),
        format!("input sequence_fingerprint {:016x}", sequence_fingerprint(&sequence_inputs())),
        format!("input dims {D_MODEL} {D_HEAD}"),
        format!("split energy_dense {}", join(&[dense.routing, dense.filtering])),
        format!("split energy_factored {}", join(&[factored.routing, factored.filtering])),
        format!("split rho_dense {:e}", dense.routing_fraction()),
        format!("split rho_factored {:e}", factored.routing_fraction()),
        "split symmetry_defect 0e0 0e0".to_string(),
        format!("routing routing_x {}", join(&s_x)),
        format!("routing filtering_x {}", join(&d_x)),
        format!("routing x_routing_x {xsx:e}"),
        format!("erank known_spectrum {}", join(&[ranks.entropy, ranks.participation_ratio, ranks.stable])),
        format!("erank numerical_rank {}", ranks.numerical),
    ];
    let sequence = sequence_inputs();
    let (out, lse) = host_sd_forward::<f32>(&sequence);
    lines.push(format!("sd_forward out {}", join(&out)));
    lines.push(format!("sd_forward lse {}", join(&lse)));
    lines.push(format!("sd_forward workspace {}", sd_head::<f32>().forward_workspace_len(N_TOKENS)));
    lines.push(format!("sd_forward flops {}", sd_forward_flops()));
    lines.push(format!("linear_stream out {}", join(&host_linear_stream::<f32>(&sequence))));
    lines.push(format!("linear_stream state_bytes {}", 4 * (D_K * D_V + D_K)));
    lines.push(format!("linear_stream flops {}", linear_stream_flops()));
    let spectrum = host_routing_spectrum::<f32>(&inputs.w_q, &inputs.w_k);
    lines.push(format!("routing_spectrum sigma {}", join(&spectrum.sigma[..spectrum.steps])));
    lines.push(format!("routing_spectrum steps {} {}", spectrum.steps, spectrum.inferred_zeros));
    let r = &spectrum.ranks;
    lines.push(format!("routing_spectrum erank {}", join(&[r.entropy, r.participation_ratio, r.stable])));
    lines.push(format!("routing_spectrum numerical_rank {}", r.numerical));
    lines.push(format!("routing_spectrum workspace {}", head_values_workspace_len(D_MODEL, D_HEAD)));
    lines.extend(CHECKED_SECTIONS.iter().chain(&["total"]).map(|s| format!("stack {s} 100")));
    lines.extend(["heap total 0".to_string(), "end ok".to_string()]);
    lines.iter().map(|l| format!("{TAG} {l}\n")).collect()
}

#[test]
fn checks_accept_the_host_f32_output() {
    check_printed(&Printed::parse(&host_output()));
}

/// The host output with the first value of `SDA <section> <name>` moved by `delta`.
fn host_output_moved(section: &str, name: &str, delta: f32) -> String {
    let text = host_output();
    let prefix = format!("{TAG} {section} {name} ");
    let line = text.lines().find(|l| l.starts_with(&prefix)).unwrap();
    let first = line[prefix.len()..].split(' ').next().unwrap();
    let moved =
        format!("{prefix}{:e}{}", first.parse::<f32>().unwrap() + delta, &line[prefix.len() + first.len()..]);
    text.replace(line, &moved)
}

#[test]
#[should_panic(expected = "differs from the f64 reference")]
fn checks_reject_a_value_outside_its_bound() {
    // rho of the dense split is about 0.46 with a bound of about 1.5e-5: 1e-4 is outside.
    check_printed(&Printed::parse(&host_output_moved("split", "rho_dense", 1e-4)));
}

#[test]
#[should_panic(expected = "S-D out[0]: 6.1")]
fn checks_reject_an_sd_forward_output_outside_its_bound() {
    // out[0] is about 0.61 with a bound of a few 1e-5: 1e-3 is outside.
    check_printed(&Printed::parse(&host_output_moved("sd_forward", "out", 1e-3)));
}

#[test]
#[should_panic(expected = "linear out[0]: 1.7")]
fn checks_reject_a_linear_stream_output_outside_its_bound() {
    // out[0] is about 0.17 with a bound below 1e-6: 1e-5 is outside.
    check_printed(&Printed::parse(&host_output_moved("linear_stream", "out", 1e-5)));
}

#[test]
#[should_panic(expected = "sigma(S)[0]: 7.6")]
fn checks_reject_a_singular_value_outside_its_bound() {
    // sigma_1 is about 0.76 with a bound of about 8e-6: 1e-4 is outside.
    check_printed(&Printed::parse(&host_output_moved("routing_spectrum", "sigma", 1e-4)));
}

fn check_split(printed: &Printed, inputs: &inputs::HeadInputs) {
    let (w_q, w_k) = (exact(&inputs.w_q), exact(&inputs.w_k));
    let dense = bounded_dense_energies(&bounded_kernel(&w_q, &w_k));
    let factored = bounded_factored_energies(&w_q, &w_k);

    // The crate on the host, f32 and f64 (default features: matrixmultiply's products).
    let head = FactoredKernel::new(D_MODEL, D_HEAD, &inputs.w_q, &inputs.w_k).unwrap();
    let mut m = vec![0.0f32; D_MODEL * D_MODEL];
    head.to_dense(Part::Kernel, &mut m).unwrap();
    let host_dense = energies(D_MODEL, &m).unwrap();
    let host_factored = head.energies(&mut vec![0.0; head.energies_workspace_len()]).unwrap();
    let (w_q64, w_k64) = (common::widen(&inputs.w_q), common::widen(&inputs.w_k));
    let head64 = FactoredKernel::new(D_MODEL, D_HEAD, &w_q64, &w_k64).unwrap();
    let factored64 = head64.energies(&mut vec![0.0; head64.energies_workspace_len()]).unwrap();
    // The bounded reference is the same formula in f64: it agrees with the crate's f64 result.
    for (a, b) in [(factored[0].v, factored64.routing), (factored[1].v, factored64.filtering)] {
        assert!((a - b).abs() <= 1e-12 * b.abs(), "f64 reference {a} vs crate f64 {b}");
    }

    let (mut vs_f64, mut vs_host) = (Worst::default(), Worst::default());
    let fw_dense = [printed.floats("split", "energy_dense"), printed.floats("split", "rho_dense")].concat();
    let fw_factored =
        [printed.floats("split", "energy_factored"), printed.floats("split", "rho_factored")].concat();
    let host_dense = [host_dense.routing, host_dense.filtering, host_dense.routing_fraction()];
    let host_factored = [host_factored.routing, host_factored.filtering, host_factored.routing_fraction()];
    compare("dense energies, rho", &fw_dense, &host_dense, &dense, &mut vs_f64, &mut vs_host);
    compare("factored energies, rho", &fw_factored, &host_factored, &factored, &mut vs_f64, &mut vs_host);
    assert_eq!(printed.floats("split", "symmetry_defect"), [0.0, 0.0], "S^T = -S and D^T = D exactly");
    vs_f64.report("split vs f64");
    vs_host.report("split vs host f32");
}

fn check_routing(printed: &Printed, inputs: &inputs::HeadInputs) {
    let (w_q, w_k, x) = (exact(&inputs.w_q), exact(&inputs.w_k), exact(&inputs.x));
    let (routing_x, filtering_x, x_routing_x) = bounded_products(&w_q, &w_k, &x);

    let head = FactoredKernel::new(D_MODEL, D_HEAD, &inputs.w_q, &inputs.w_k).unwrap();
    let mut workspace = vec![0.0f32; head.apply_workspace_len()];
    let (mut host_s, mut host_d) = (vec![0.0f32; D_MODEL], vec![0.0f32; D_MODEL]);
    head.apply(Part::Routing, &inputs.x, &mut host_s, &mut workspace).unwrap();
    head.apply(Part::Filtering, &inputs.x, &mut host_d, &mut workspace).unwrap();
    let host_xsx = sd_attention::linalg::dense::dot(&inputs.x, &host_s).unwrap();

    let (mut vs_f64, mut vs_host) = (Worst::default(), Worst::default());
    compare("S x", &printed.floats("routing", "routing_x"), &host_s, &routing_x, &mut vs_f64, &mut vs_host);
    compare(
        "D x",
        &printed.floats("routing", "filtering_x"),
        &host_d,
        &filtering_x,
        &mut vs_f64,
        &mut vs_host,
    );
    // x^T S x = 0 exactly (antisymmetry); the f64 value is a rounding residue of order 1e-17.
    assert!(x_routing_x.v.abs() < 1e-12, "x^T S x in f64: {}", x_routing_x.v);
    compare(
        "x^T S x",
        &printed.floats("routing", "x_routing_x"),
        &[host_xsx],
        &[x_routing_x],
        &mut vs_f64,
        &mut vs_host,
    );
    vs_f64.report("routing products vs f64");
    vs_host.report("routing products vs host f32");
}

fn check_erank(printed: &Printed) {
    let reference = bounded_eranks(&KNOWN_SPECTRUM);
    // Closed forms of the known spectrum 3, 3, 1, 1, 1/4, 1/4, 0, 0: p = (3, 3, 1, 1, 1/4, 1/4)/8.5.
    let p = [3.0, 3.0, 1.0, 1.0, 0.25, 0.25].map(|s: f64| s / 8.5);
    let entropy = (-p.iter().map(|p| p * p.ln()).sum::<f64>()).exp();
    let squares = [9.0, 9.0, 1.0, 1.0, 0.0625, 0.0625];
    let second: f64 = squares.iter().sum();
    let fourth: f64 = squares.iter().map(|s| s * s).sum();
    let closed = [entropy, second * second / fourth, second / 9.0];
    for (r, c) in reference.iter().zip(closed) {
        assert!((r.v - c).abs() <= 1e-14 * c, "reference {} vs closed form {c}", r.v);
    }

    let n = KNOWN_SPECTRUM.len();
    let host = effective_ranks(&KNOWN_SPECTRUM, default_rank_tolerance::<f32>(n, n)).unwrap();
    let (mut vs_f64, mut vs_host) = (Worst::default(), Worst::default());
    compare(
        "erank (entropy, participation, stable)",
        &printed.floats("erank", "known_spectrum"),
        &[host.entropy, host.participation_ratio, host.stable],
        &reference,
        &mut vs_f64,
        &mut vs_host,
    );
    assert_eq!(printed.integer("erank", "numerical_rank"), 6);
    assert_eq!(host.numerical, 6);
    vs_f64.report("erank vs f64");
    vs_host.report("erank vs host f32");
}

proptest::proptest! {
    /// The bounds hold for actual `f32` evaluations: sums in two orders, products, quotients,
    /// logarithms and exponentials of random values (a bound that failed here would be unsound).
    #[test]
    fn rounding_bounds_cover_f32_evaluations(
        a in proptest::collection::vec(-4.0f32..4.0, 1..40),
        b in proptest::collection::vec(-4.0f32..4.0, 40),
        positive in 0.01f32..100.0,
    ) {
        let b = &b[..a.len()];
        let bound = dot(&exact(&a), &exact(b));
        let forward: f32 = a.iter().zip(b).fold(0.0, |acc, (x, y)| acc + x * y);
        let backward: f32 = a.iter().zip(b).rev().fold(0.0, |acc, (x, y)| acc + x * y);
        for value in [forward, backward] {
            proptest::prop_assert!((value as f64 - bound.v).abs() <= bound.tolerance());
        }
        let p = Bounded::exact(positive);
        let quotient = bound.div(p);
        proptest::prop_assert!(((forward / positive) as f64 - quotient.v).abs() <= quotient.tolerance());
        let log = p.ln();
        proptest::prop_assert!((positive.ln() as f64 - log.v).abs() <= log.tolerance());
        let scaled = Bounded::exact(positive).div(Bounded::exact(25.0));
        let exp = scaled.exp();
        proptest::prop_assert!(((positive / 25.0).exp() as f64 - exp.v).abs() <= exp.tolerance());
        let root = p.sqrt();
        proptest::prop_assert!((positive.sqrt() as f64 - root.v).abs() <= root.tolerance());
        // The crate's own f32 exp (softmax path) on arguments in [-86.5, 0], the domain of its bound
        // (the softmax kernels shift by the row maximum; below -86.5 results flush to zero).
        let shift_f32 = 4.0 + positive * 0.78; // in [4, 82]: arguments in [-86, 0]
        let shift = Bounded::exact(shift_f32);
        let mut shifted = a.clone();
        <f32 as sd_attention::Scalar>::exp_shifted_sum(&mut shifted, shift_f32);
        for (&x, &y) in a.iter().zip(&shifted) {
            let bound = Bounded::exact(x).sub(shift).exp_with_relative_error(CRATE_EXP_F32_REL);
            proptest::prop_assert!((y as f64 - bound.v).abs() <= bound.tolerance(), "exp({x} - {shift:?})");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Parts (a), (b), (c): the crate on the host, the bounded references, and the checks.

/// The firmware's S-D head: causal, `d_model = 16`, `r = q = 2`, `d_v = 4`.
fn sd_head<T: sd_attention::Scalar>() -> AttentionHead<T> {
    AttentionHead::routing_filtering(D_MODEL, RANK_ROUTING, RANK_FILTERING, D_V, Causality::Causal)
}

/// Projections `2 n d_model (2r + q + d_v)` plus the softmax forward's count (as the firmware).
fn sd_forward_flops() -> u64 {
    let width = 2 * RANK_ROUTING + RANK_FILTERING;
    (2 * N_TOKENS * D_MODEL * (width + D_V)) as u64 + forward_flops(N_TOKENS, width, D_V, Causality::Causal)
}

/// `State::step`'s `4 d_k d_v + 4 d_k` per token plus `d_v` divisions (as the firmware).
fn linear_stream_flops() -> u64 {
    (N_TOKENS * (4 * D_K * D_V + 4 * D_K + D_V)) as u64
}

/// `(out, lse)` of the S-D head forward on the host in precision `T`.
fn host_sd_forward<T: sd_attention::Scalar>(sequence: &SequenceInputs) -> (Vec<T>, Vec<T>) {
    let cast = |v: &[f32]| v.iter().map(|&x| T::from(x).unwrap()).collect::<Vec<T>>();
    let head = sd_head::<T>();
    let (mut out, mut lse) = (vec![T::zero(); N_TOKENS * D_V], vec![T::zero(); N_TOKENS]);
    let mut workspace = vec![T::zero(); head.forward_workspace_len(N_TOKENS)];
    head.forward(
        N_TOKENS,
        &cast(&sequence.x),
        &cast(&sequence.sd_params),
        &mut out,
        &mut lse,
        &mut workspace,
    )
    .unwrap();
    (out, lse)
}

/// The outputs of the recurrent stream on the host in precision `T`, one `State::step` per token.
fn host_linear_stream<T: sd_attention::Scalar>(sequence: &SequenceInputs) -> Vec<T> {
    let cast = |v: &[f32]| v.iter().map(|&x| T::from(x).unwrap()).collect::<Vec<T>>();
    let (q, k, v) = (cast(&sequence.q), cast(&sequence.k), cast(&sequence.v));
    let (mut s, mut z) = (vec![T::zero(); D_K * D_V], vec![T::zero(); D_K]);
    let mut state = State::new(D_K, D_V, &mut s, &mut z).unwrap();
    let mut out = vec![T::zero(); N_TOKENS * D_V];
    let eps = T::from(LINEAR_EPS).unwrap();
    for t in 0..N_TOKENS {
        let (q_t, k_t, v_t) =
            (&q[t * D_K..(t + 1) * D_K], &k[t * D_K..(t + 1) * D_K], &v[t * D_V..(t + 1) * D_V]);
        state.step(q_t, k_t, v_t, eps, &mut out[t * D_V..(t + 1) * D_V]).unwrap();
    }
    out
}

struct HostSpectrum<T> {
    sigma: Vec<T>,
    steps: usize,
    inferred_zeros: usize,
    ranks: EffectiveRanks<T>,
}

/// Lanczos singular values of the head's routing part and their effective ranks (as the firmware).
fn host_routing_spectrum<T: sd_attention::Scalar>(w_q: &[T], w_k: &[T]) -> HostSpectrum<T> {
    let head = FactoredKernel::new(D_MODEL, D_HEAD, w_q, w_k).unwrap();
    let mut sigma = vec![T::zero(); head_spectrum_steps(D_MODEL, D_HEAD)];
    let mut workspace = vec![T::zero(); head_values_workspace_len(D_MODEL, D_HEAD)];
    let info = routing_singular_values(&head, &mut sigma, &mut workspace).unwrap();
    let ranks = effective_ranks(&sigma[..info.steps], default_rank_tolerance::<T>(D_MODEL, D_MODEL)).unwrap();
    HostSpectrum { sigma, steps: info.steps, inferred_zeros: info.inferred_zeros, ranks }
}

/// `|a - b| <= 1e-12 max(|b|, 1)` for every pair: the bounded reference (the formula in `f64`) and
/// the crate's own `f64` result agree to rounding.
fn assert_f64_agrees(what: &str, reference: &[Bounded], crate_f64: &[f64]) {
    assert_eq!(reference.len(), crate_f64.len(), "{what}");
    for (i, (r, &c)) in reference.iter().zip(crate_f64).enumerate() {
        assert!(
            (r.v - c).abs() <= 1e-12 * c.abs().max(1.0),
            "{what}[{i}]: f64 reference {} vs crate f64 {c}",
            r.v
        );
    }
}

fn check_sd_forward(printed: &Printed, sequence: &SequenceInputs) {
    let (out, lse) = bounded_sd_forward(sequence);
    let (out64, lse64) = host_sd_forward::<f64>(sequence);
    assert_f64_agrees("sd_forward out", &out, &out64);
    assert_f64_agrees("sd_forward lse", &lse, &lse64);
    let (out32, lse32) = host_sd_forward::<f32>(sequence);
    let (mut vs_f64, mut vs_host) = (Worst::default(), Worst::default());
    compare("S-D out", &printed.floats("sd_forward", "out"), &out32, &out, &mut vs_f64, &mut vs_host);
    compare("S-D lse", &printed.floats("sd_forward", "lse"), &lse32, &lse, &mut vs_f64, &mut vs_host);
    assert_eq!(
        printed.integer("sd_forward", "workspace") as usize,
        sd_head::<f32>().forward_workspace_len(N_TOKENS)
    );
    assert_eq!(printed.integer("sd_forward", "flops"), sd_forward_flops());
    vs_f64.report("sd_forward vs f64");
    vs_host.report("sd_forward vs host f32");
}

fn check_linear_stream(printed: &Printed, sequence: &SequenceInputs) {
    let reference = bounded_linear_stream(sequence);
    assert_f64_agrees("linear_stream out", &reference, &host_linear_stream::<f64>(sequence));
    let host = host_linear_stream::<f32>(sequence);
    let (mut vs_f64, mut vs_host) = (Worst::default(), Worst::default());
    compare(
        "linear out",
        &printed.floats("linear_stream", "out"),
        &host,
        &reference,
        &mut vs_f64,
        &mut vs_host,
    );
    // The state: S (d_k x d_v) and z (d_k) in f32, nothing else.
    assert_eq!(printed.integer("linear_stream", "state_bytes") as usize, 4 * (D_K * D_V + D_K));
    assert_eq!(printed.integer("linear_stream", "flops"), linear_stream_flops());
    vs_f64.report("linear_stream vs f64");
    vs_host.report("linear_stream vs host f32");
}

fn check_routing_spectrum(printed: &Printed, inputs: &inputs::HeadInputs) {
    let (dense, tau) = routing_spectrum_reference(inputs);
    // The crate's f64 Lanczos agrees with the dense one-sided Jacobi reference.
    let (w_q64, w_k64) = (common::widen(&inputs.w_q), common::widen(&inputs.w_k));
    let host64 = host_routing_spectrum::<f64>(&w_q64, &w_k64);
    let mut sigma64 = host64.sigma[..host64.steps].to_vec();
    sigma64.resize(D_MODEL, 0.0);
    for (k, (a, b)) in sigma64.iter().zip(&dense).enumerate() {
        assert!((a - b).abs() <= 1e-12 * dense[0], "f64 Lanczos sigma_{k} {a} vs dense Jacobi {b}");
    }
    // The whole singular spectrum: the printed Ritz values, then the inferred zeros.
    let words = printed.words("routing_spectrum", "steps");
    let (steps, zeros): (usize, usize) = (words[0].parse().unwrap(), words[1].parse().unwrap());
    assert_eq!(steps + zeros, D_MODEL, "Ritz values and inferred zeros make the whole spectrum");
    let mut firmware = printed.floats("routing_spectrum", "sigma");
    assert_eq!(firmware.len(), steps);
    firmware.resize(D_MODEL, 0.0);
    let host32 = host_routing_spectrum::<f32>(&inputs.w_q, &inputs.w_k);
    let mut host = host32.sigma[..host32.steps].to_vec();
    host.resize(D_MODEL, 0.0);
    let reference: Vec<Bounded> = dense.iter().map(|&v| Bounded { v, e: tau }).collect();
    let (mut vs_f64, mut vs_host) = (Worst::default(), Worst::default());
    compare("sigma(S)", &firmware, &host, &reference, &mut vs_f64, &mut vs_host);
    vs_f64.report("routing_spectrum sigma vs f64");
    vs_host.report("routing_spectrum sigma vs host f32");

    // Effective ranks of the values the firmware used (its Ritz values; the inferred zeros add
    // nothing), each within tau of the dense value, then the crate's formulas with their rounding.
    let ranks = bounded_eranks_of(&reference[..steps]);
    let ranks64 = effective_ranks(&dense[..steps], default_rank_tolerance::<f64>(D_MODEL, D_MODEL)).unwrap();
    let crate64 = [ranks64.entropy, ranks64.participation_ratio, ranks64.stable];
    for (r, c) in ranks.iter().zip(crate64) {
        assert!((r.v - c).abs() <= 1e-12 * c, "erank reference {} vs crate f64 {c}", r.v);
    }
    let r32 = &host32.ranks;
    let (mut vs_f64, mut vs_host) = (Worst::default(), Worst::default());
    compare(
        "erank(S) (entropy, participation, stable)",
        &printed.floats("routing_spectrum", "erank"),
        &[r32.entropy, r32.participation_ratio, r32.stable],
        &ranks,
        &mut vs_f64,
        &mut vs_host,
    );
    vs_f64.report("routing_spectrum erank vs f64");
    vs_host.report("routing_spectrum erank vs host f32");
    // Numerical rank #{sigma > tol sigma_max}: every dense value farther than the bounds from the
    // threshold is counted (or not) with certainty; values within them may go either way.
    let threshold = default_rank_tolerance::<f32>(D_MODEL, D_MODEL) as f64 * dense[0];
    let threshold_error = default_rank_tolerance::<f32>(D_MODEL, D_MODEL) as f64 * tau + U32 * threshold;
    let margin = tau + threshold_error;
    let surely = dense.iter().filter(|&&s| s > threshold + margin).count();
    let maybe = dense.iter().filter(|&&s| s > threshold - margin).count();
    let numerical = printed.integer("routing_spectrum", "numerical_rank") as usize;
    assert!((surely..=maybe).contains(&numerical), "numerical rank {numerical} outside {surely}..={maybe}");
    assert_eq!(ranks64.numerical, 2 * D_HEAD, "rank(S) = 2 d_head for generic factors");
    println!(
        "  routing_spectrum numerical rank     {numerical} (certain bounds {surely}..={maybe}; f64: {})",
        ranks64.numerical
    );
    assert_eq!(
        printed.integer("routing_spectrum", "workspace") as usize,
        head_values_workspace_len(D_MODEL, D_HEAD)
    );
}

// ---------------------------------------------------------------------------------------------
// The trained model on the microcontroller (examples/cortex-m/src/generate.rs).

/// Flash the generation firmware may occupy (vector table, code, read-only data with the
/// embedded checkpoint, initial values of `.data`).
const FLASH_BUDGET: usize = 512 * 1024;
/// RAM it may use: statics (`.data`, `.bss`, `.uninit`) plus the peak stack, which holds the
/// decoder state and workspace.
const RAM_BUDGET: usize = 64 * 1024;
/// The clock the per-token estimate is quoted at.
const ESTIMATE_HZ: f64 = 168e6;

/// Sizes of the allocated sections of an ELF32 file, by name.
fn elf32_sections(elf: &[u8]) -> BTreeMap<String, usize> {
    let u16_at = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]) as usize;
    let u32_at = |at: usize| u32::from_le_bytes([elf[at], elf[at + 1], elf[at + 2], elf[at + 3]]) as usize;
    assert_eq!(&elf[..5], b"\x7fELF\x01", "an ELF32 file");
    let (sh_off, sh_size, sh_num, sh_str) = (u32_at(0x20), u16_at(0x2E), u16_at(0x30), u16_at(0x32));
    let header = |i: usize| sh_off + i * sh_size;
    let names = u32_at(header(sh_str) + 0x10);
    let mut sections = BTreeMap::new();
    for i in 0..sh_num {
        let h = header(i);
        let name_at = names + u32_at(h);
        let end = elf[name_at..].iter().position(|&b| b == 0).expect("a terminated name");
        let name = String::from_utf8_lossy(&elf[name_at..name_at + end]).to_string();
        const SHF_ALLOC: usize = 2;
        if u32_at(h + 0x08) & SHF_ALLOC != 0 {
            sections.insert(name, u32_at(h + 0x14));
        }
    }
    sections
}

/// Runs the generation firmware under QEMU with `-icount shift=0` (every instruction one
/// nanosecond of virtual time, so that its SysTick counts instructions at a fixed ratio), or
/// `None` with the reason when it cannot run here (a failure with `SDA_REQUIRE_FIRMWARE=1`).
fn run_generation_firmware(elf: &Path) -> Option<String> {
    let required = std::env::var("SDA_REQUIRE_FIRMWARE").is_ok_and(|v| v == "1");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let skip = |why: String| {
        assert!(!required, "SDA_REQUIRE_FIRMWARE=1 but {why}");
        println!("SKIPPED: the Cortex-M generation comparison: {why}");
        println!("         (bash .ci/embedded.sh builds and runs the firmware)");
        None
    };
    let Ok(built) = std::fs::metadata(elf).and_then(|m| m.modified()) else {
        return skip(format!("no firmware at {}", elf.display()));
    };
    if let Some(newer) = newest_source(root, elf).filter(|(time, _)| *time > built) {
        return skip(format!("the firmware is older than {}", newer.1.display()));
    }
    let output = Command::new("timeout")
        .arg(QEMU_TIMEOUT.as_secs().to_string())
        .args(["qemu-system-arm", "-machine", "mps2-an386", "-cpu", "cortex-m4", "-nographic"])
        .args(["-semihosting-config", "enable=on,target=native", "-icount", "shift=0", "-kernel"])
        .arg(elf)
        .stdin(Stdio::null())
        .output();
    let output = match output {
        Ok(o) => o,
        Err(e) => return skip(format!("qemu-system-arm cannot be started ({e})")),
    };
    let text = String::from_utf8(output.stdout).expect("QEMU output is UTF-8");
    println!("generation firmware output ({}):\n{text}", elf.display());
    assert!(
        output.status.success(),
        "QEMU exited with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Some(text)
}

/// The host replay (examples/cortex-m/host: the same decoder calls, sd-attention without default
/// features, so the same portable kernels as the firmware), built here like tests/no_std_link.rs
/// builds its probe; its output for the checkpoint and the firmware's bytes.
fn host_replay(checkpoint: &Path, forced_hex: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = root.join("target/generate_host");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--manifest-path"])
        .arg(root.join("examples/cortex-m/host/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "the host replay failed to build");
    let output = Command::new(target.join("debug/generate-host"))
        .arg(checkpoint)
        .arg(forced_hex)
        .output()
        .expect("the host replay runs");
    assert!(output.status.success(), "host replay: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("UTF-8")
}

/// The firmware generates at least 64 bytes from the fixed prompt with the shipped checkpoint, and
/// the host running the same decoder calls through the same portable kernels on the same
/// checkpoint produces the same bytes. Both compute in `f32` with the same operations in the same
/// order (the portable kernels, no fused multiply-adds, libm's `expf` on both sides), so the
/// logits agree bit for bit and the bytes must be identical: any difference fails, with the
/// host's logit gap at each differing choice (made on the firmware's own prefix) in the message.
/// Also asserted: the budget (flash, and statics plus peak stack), and the printed state size.
/// Printed: sizes, stack, state bytes, instructions per token (from SysTick under `-icount`,
/// calibrated against a loop of known length) and the tokens/s that implies at 168 MHz, an
/// estimate that assumes one cycle per instruction (QEMU models no timing).
#[test]
fn generation_firmware_matches_the_host_replay() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let elf = std::env::var_os("SDA_GENERATE_ELF")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("examples/cortex-m/target/thumbv7em-none-eabihf/release/generate"));
    let Some(text) = run_generation_firmware(&elf) else { return };
    let printed = Printed::parse(&text);
    let firmware_hex = printed.words("generate", "bytes")[0].clone();
    assert!(firmware_hex.len() / 2 >= 64, "at least 64 generated bytes, got {}", firmware_hex.len() / 2);
    let checkpoint = root.join("examples/cortex-m/model/tiny.ckpt");
    let host = host_replay(&checkpoint, &firmware_hex);
    let host_hex = host
        .lines()
        .find_map(|l| l.strip_prefix("SDA generate bytes "))
        .expect("the replay prints its bytes")
        .to_string();
    let mut differing = Vec::new();
    for line in host.lines().filter_map(|l| l.strip_prefix("SDA replay ")) {
        let w: Vec<&str> = line.split_whitespace().collect();
        let (i, best): (usize, usize) = (w[0].parse().unwrap(), w[1].parse().unwrap());
        let chosen = u8::from_str_radix(&firmware_hex[2 * i..2 * i + 2], 16).unwrap() as usize;
        if best != chosen {
            differing
                .push(format!("byte {i}: firmware {chosen}, host {best}, host logits {} vs {}", w[2], w[3]));
        }
    }
    println!(
        "generated bytes: {} from the firmware, identical to the host replay: {}",
        firmware_hex.len() / 2,
        firmware_hex == host_hex
    );
    println!("  differing choices: {} {differing:?}", differing.len());
    assert!(
        differing.is_empty() && firmware_hex == host_hex,
        "firmware {firmware_hex}\nhost     {host_hex}\n{differing:?}"
    );

    let sections = elf32_sections(&std::fs::read(&elf).expect("the ELF"));
    let size = |name: &str| sections.get(name).copied().unwrap_or(0);
    let flash = size(".vector_table") + size(".text") + size(".rodata") + size(".data");
    let statics = size(".data") + size(".bss") + size(".uninit");
    let stack = printed.integer("generate", "stack") as usize;
    let state: Vec<usize> =
        printed.words("generate", "state_bytes").iter().map(|w| w.parse().unwrap()).collect();
    let steps: Vec<u64> = printed.words("generate", "steps").iter().map(|w| w.parse().unwrap()).collect();
    let ticks = printed.integer("generate", "ticks") as f64;
    let calibration: Vec<f64> =
        printed.words("generate", "calibration").iter().map(|w| w.parse().unwrap()).collect();
    let instructions_per_tick = calibration[1] / calibration[0];
    let per_token = ticks * instructions_per_tick / steps[0] as f64;
    println!("  flash {flash} bytes (budget {FLASH_BUDGET}): vector table {}, text {}, rodata {} (checkpoint {} bytes), data {}", size(".vector_table"), size(".text"), size(".rodata"), std::fs::metadata(&checkpoint).unwrap().len(), size(".data"));
    println!("  RAM {} bytes (budget {RAM_BUDGET}): statics {statics}, peak stack {stack} (painted; holds the state and workspace)", statics + stack);
    println!("  decoder state {} bytes, per layer {:?}", state[0], &state[1..]);
    println!(
        "  {} steps ({} context refills): {:.0} instructions per token (SysTick under -icount, {:.1} instructions per tick); \
         estimate at 168 MHz, one cycle per instruction: {:.0} tokens/s",
        steps[0], steps[1], per_token, instructions_per_tick, ESTIMATE_HZ / per_token
    );
    assert!(flash <= FLASH_BUDGET, "flash {flash} > {FLASH_BUDGET}");
    assert!(statics + stack <= RAM_BUDGET, "RAM {} > {RAM_BUDGET}", statics + stack);
    let checkpoint_bytes = std::fs::read(&checkpoint).unwrap();
    let shape = sd_attention::inference::CheckpointView::new(&checkpoint_bytes).unwrap().shape();
    assert_eq!(state[0], 4 * sd_attention::inference::state_len(&shape).unwrap());
}
