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

use common::rounding::{dot, exact, sum, Bounded};
use inputs::{
    fingerprint, head_inputs, sequence_fingerprint, sequence_inputs, D_HEAD, D_MODEL, KNOWN_SPECTRUM, TAG,
};
use sd_attention::erank::{default_rank_tolerance, effective_ranks};
use sd_attention::factored::{FactoredKernel, Part};
use sd_attention::split::energies;

/// The firmware's sections that are still placeholders (`SDA pending <section>`) until their
/// kernels land. When one lands, remove it here, add `check_<section>` below and call it from
/// `firmware_matches_the_host`; a section that prints results without a check fails the test.
const PENDING_SECTIONS: [&str; 3] = ["sd_forward", "linear_stream", "routing_spectrum"];
/// Sections with results checked here.
const CHECKED_SECTIONS: [&str; 3] = ["split", "routing", "erank"];
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
    let largest = sigma.iter().fold(0.0f32, |m, &s| m.max(s));
    let largest = Bounded::exact(largest);
    let scaled: Vec<Bounded> = sigma.iter().map(|&s| Bounded::exact(s).div(largest)).collect();
    let total = sum(scaled.iter().copied());
    let entropy = sum(scaled.iter().filter(|s| s.v > 0.0).map(|s| {
        let p = s.div(total);
        p.mul(p.ln())
    }));
    // exp(-entropy); the crate clamps the entropy at 0 first (a no-op here: entropy > 0 by far).
    let entropy_rank = Bounded { v: -entropy.v, e: entropy.e }.exp();
    let squares: Vec<Bounded> = scaled.iter().map(|s| s.mul(*s)).collect();
    let second = sum(squares.iter().copied());
    let fourth = sum(squares.iter().map(|r| r.mul(*r)));
    [entropy_rank, second.mul(second).div(fourth), second]
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
    if let Some(newer) = newest_source(root).filter(|(time, _)| *time > built) {
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

/// The most recently modified source the firmware is built from (the crate's `src/`, the example's
/// `src/`, and both manifests).
fn newest_source(root: &Path) -> Option<(SystemTime, PathBuf)> {
    fn visit(path: &Path, newest: &mut Option<(SystemTime, PathBuf)>) {
        if path.is_dir() {
            for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
                visit(&entry.path(), newest);
            }
        } else if let Ok(time) = std::fs::metadata(path).and_then(|m| m.modified()) {
            if newest.as_ref().map_or(true, |(t, _)| time > *t) {
                *newest = Some((time, path.to_path_buf()));
            }
        }
    }
    let mut newest = None;
    for part in ["src", "Cargo.toml", "examples/cortex-m/src", "examples/cortex-m/Cargo.toml"] {
        visit(&root.join(part), &mut newest);
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

    for section in printed.sections() {
        let known = ["begin", "input", "stack", "heap", "pending", "end"].contains(&section)
            || CHECKED_SECTIONS.contains(&section);
        assert!(known, "the firmware printed section `{section}`, which this test does not check");
    }
    for section in PENDING_SECTIONS {
        assert!(printed.has("pending", section), "section {section} is neither pending nor checked");
        println!("  {section:<34} pending: its kernel has not landed on this branch");
    }
    for section in CHECKED_SECTIONS.iter().chain(&["total"]) {
        let bytes = printed.integer("stack", section);
        // The firmware itself fails when a part reaches the bottom of its 256 KiB painted window.
        assert!(bytes > 0 && bytes < 256 * 1024, "stack {section}: {bytes} bytes");
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
    let xsx = sd_attention::dense::dot(&inputs.x, &s_x).unwrap();
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
    lines.extend(["split", "routing", "erank", "total"].map(|s| format!("stack {s} 100")));
    lines.extend(PENDING_SECTIONS.map(|s| format!("pending {s}")));
    lines.extend(["heap total 0".to_string(), "end ok".to_string()]);
    lines.iter().map(|l| format!("{TAG} {l}\n")).collect()
}

#[test]
fn checks_accept_the_host_f32_output() {
    check_printed(&Printed::parse(&host_output()));
}

#[test]
#[should_panic(expected = "differs from the f64 reference")]
fn checks_reject_a_value_outside_its_bound() {
    // rho of the dense split is about 0.46 with a bound of about 1.5e-5: 1e-4 is outside.
    let text = host_output();
    let rho = text.lines().find(|l| l.contains("rho_dense")).unwrap().split(' ').nth(3).unwrap();
    let moved = rho.parse::<f32>().unwrap() + 1e-4;
    check_printed(&Printed::parse(&text.replace(rho, &format!("{moved:e}"))));
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
    let host_xsx = sd_attention::dense::dot(&inputs.x, &host_s).unwrap();

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
    }
}
