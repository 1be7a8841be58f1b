//! Times the spectra of one head on this machine, one thread, f64: the exact path
//! (`spectral::exact`, QR plus cores) for `S` and `D` together, the thin QR alone, and the
//! Lanczos path (`spectral::spectrum::head_spectrum_lanczos`, and the routing erank alone). Prints
//! the minimum and median wall time of each over `--reps` runs (the minimum is the least disturbed
//! by other work on a shared machine), the thread's CPU time per run (Linux), and the effective
//! ranks, and can write the exact values for
//! a comparison with LAPACK (`benches/numpy_spectra.py` runs this and numpy side by side).
//!
//! ```text
//! cargo run --release --example spectra_timing -- [--d-model 768] [--d-head 64] [--reps 200]
//!     [--factors W.bin] [--values OUT.txt]
//! ```
//!
//! `--factors` reads `W_Q` then `W_K` (row-major `d_model x d_head` each) as little-endian f64;
//! without it the factors are normal with standard deviation `1/sqrt(d_model)` (seeds 1 and 2).
//! `--values` writes the singular values of `S` (descending) and the eigenvalues of `D`
//! (ascending), one list per line.

use sd_attention::linalg::qr::{qr_in_place, qr_in_place_workspace_len};
use sd_attention::spectral::erank::entropy_effective_rank;
use sd_attention::spectral::exact;
use sd_attention::spectral::factored::FactoredKernel;
use sd_attention::spectral::spectrum::{
    head_spectrum_lanczos, head_spectrum_lanczos_workspace_len, head_spectrum_steps,
    head_values_workspace_len, routing_singular_values,
};
use std::hint::black_box;
use std::time::Instant;

const USAGE: &str =
    "usage: spectra_timing [--d-model N] [--d-head N] [--reps N] [--factors W.bin] [--values OUT.txt]";

struct Args {
    d_model: usize,
    d_head: usize,
    reps: usize,
    factors: Option<String>,
    values: Option<String>,
}

fn parse() -> Result<Option<Args>, String> {
    let mut args = Args { d_model: 768, d_head: 64, reps: 200, factors: None, values: None };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--help" | "-h" => return Ok(None),
            "--d-model" => args.d_model = value()?.parse().map_err(|e| format!("--d-model: {e}"))?,
            "--d-head" => args.d_head = value()?.parse().map_err(|e| format!("--d-head: {e}"))?,
            "--reps" => args.reps = value()?.parse().map_err(|e| format!("--reps: {e}"))?,
            "--factors" => args.factors = Some(value()?),
            "--values" => args.values = Some(value()?),
            _ => return Err(format!("unexpected argument {arg}\n{USAGE}")),
        }
    }
    if args.reps == 0 {
        return Err("--reps must be at least 1".into());
    }
    Ok(Some(args))
}

/// The calling thread's CPU time in nanoseconds, from `/proc/thread-self/schedstat` (Linux; its
/// first field), or `None` where that file cannot be read. On a machine shared with other jobs it
/// leaves out the time the thread waited for a core, which wall time includes. The kernel updates
/// it at scheduler ticks (a few milliseconds), so it is read around a whole series of calls only.
fn thread_cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Times `reps` runs of `f`, in milliseconds: the minimum and median wall time of one run, and the
/// thread's CPU time per run over the whole series (NaN where it is not readable).
fn time(reps: usize, mut f: impl FnMut()) -> (f64, f64, f64) {
    f(); // warm caches and pages
    let cpu_start = thread_cpu_ns();
    let mut wall: Vec<f64> = (0..reps)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    let cpu_mean = match (cpu_start, thread_cpu_ns()) {
        (Some(a), Some(b)) => b.saturating_sub(a) as f64 * 1e-6 / reps as f64,
        _ => f64::NAN,
    };
    wall.sort_by(|a, b| a.total_cmp(b));
    (wall[0], wall[wall.len() / 2], cpu_mean)
}

fn run(args: Args) -> Result<(), String> {
    let (d_model, d_head) = (args.d_model, args.d_head);
    let len = d_model * d_head;
    let (w_q, w_k) = match &args.factors {
        Some(path) => {
            let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
            if bytes.len() != 16 * len {
                return Err(format!(
                    "{path}: expected {} bytes (2 x {d_model} x {d_head} f64), got {}",
                    16 * len,
                    bytes.len()
                ));
            }
            let values: Vec<f64> =
                bytes.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes"))).collect();
            (values[..len].to_vec(), values[len..].to_vec())
        }
        None => {
            let normal = |seed| {
                let mut rng = sd_attention::rng::SplitMix64::new(seed);
                let mut w = vec![0.0; len];
                rng.fill_normal(1.0 / (d_model as f64).sqrt(), &mut w);
                w
            };
            (normal(1), normal(2))
        }
    };
    let head = FactoredKernel::new(d_model, d_head, &w_q, &w_k).map_err(|e| e.to_string())?;
    let k = exact::pair_core_order(d_model, d_head);

    // Exact: S and D together (the report the census prints).
    let mut workspace = vec![0.0; exact::head_spectrum_workspace_len(d_model, d_head)];
    let report = exact::head_spectrum(&head, &mut workspace).map_err(|e| e.to_string())?;
    let exact_time = time(args.reps, || {
        black_box(exact::head_spectrum(black_box(&head), &mut workspace).unwrap());
    });
    // The thin QR of [W_Q W_K] alone (stored by columns, as the exact path builds it).
    let mut a_t = vec![0.0; 2 * len];
    let mut tau = vec![0.0; k];
    let mut qr_workspace = vec![0.0; qr_in_place_workspace_len(d_model, 2 * d_head)];
    let qr_time = time(args.reps, || {
        sd_attention::linalg::dense::transpose(d_model, d_head, &w_q, &mut a_t[..len]).unwrap();
        sd_attention::linalg::dense::transpose(d_model, d_head, &w_k, &mut a_t[len..]).unwrap();
        qr_in_place(d_model, 2 * d_head, &mut a_t, &mut tau, &mut qr_workspace).unwrap();
    });
    // Lanczos: S and D, and the routing erank alone.
    let lanczos_reps = args.reps.div_ceil(4);
    let mut lanczos_workspace = vec![0.0; head_spectrum_lanczos_workspace_len(d_model, d_head)];
    let lanczos = head_spectrum_lanczos(&head, &mut lanczos_workspace).map_err(|e| e.to_string())?;
    let lanczos_time = time(lanczos_reps, || {
        black_box(head_spectrum_lanczos(black_box(&head), &mut lanczos_workspace).unwrap());
    });
    let mut sigma = vec![0.0; head_spectrum_steps(d_model, d_head)];
    let mut values_workspace = vec![0.0; head_values_workspace_len(d_model, d_head)];
    let lanczos_s_time = time(lanczos_reps, || {
        let info = routing_singular_values(black_box(&head), &mut sigma, &mut values_workspace).unwrap();
        black_box(entropy_effective_rank(&sigma[..info.steps]).unwrap());
    });

    println!(
        "head d_model {d_model} d_head {d_head}, f64, one thread, {} runs (Lanczos {lanczos_reps})",
        args.reps
    );
    println!("erank exact   S {:.12} D {:.12}", report.routing.entropy, report.filtering.entropy);
    println!("erank lanczos S {:.12} D {:.12}", lanczos.routing.entropy, lanczos.filtering.entropy);
    for (name, (min, median, cpu_mean)) in [
        ("exact_s_and_d", exact_time),
        ("qr_only", qr_time),
        ("lanczos_s_and_d", lanczos_time),
        ("lanczos_s", lanczos_s_time),
    ] {
        println!("time {name} min_ms {min:.4} median_ms {median:.4} cpu_mean_ms {cpu_mean:.4}");
    }
    if let Some(path) = &args.values {
        let (mut routing, mut filtering) = (vec![0.0; k], vec![0.0; k]);
        let mut workspace = vec![0.0; exact::head_values_workspace_len(d_model, d_head)];
        exact::head_values(&head, &mut routing, &mut filtering, &mut workspace).map_err(|e| e.to_string())?;
        let line = |v: &[f64]| v.iter().map(|x| format!("{x:e}")).collect::<Vec<_>>().join(" ");
        std::fs::write(path, format!("{}\n{}\n", line(&routing), line(&filtering)))
            .map_err(|e| format!("{path}: {e}"))?;
    }
    Ok(())
}

fn main() {
    match parse() {
        Ok(None) => println!("{USAGE}"),
        Ok(Some(args)) => {
            if let Err(message) = run(args) {
                eprintln!("error: spectra_timing: {message}");
                std::process::exit(1);
            }
        }
        Err(message) => {
            eprintln!("error: spectra_timing: {message}");
            std::process::exit(2);
        }
    }
}
