//! The statistics and seed plumbing the experiment examples share (`examples/support/`): mean and
//! sample standard deviation, Spearman's rank correlation with ties, per-seed file names, the
//! side-by-side task runner, and the spread drawn in the SVG plots.
#![cfg(feature = "std")]

#[path = "../examples/support/cli.rs"]
#[macro_use]
mod cli;
#[path = "../examples/support/experiment.rs"]
mod experiment;
#[path = "../examples/support/lm.rs"]
mod lm;

use experiment::*;

#[test]
fn mean_and_sample_standard_deviation() {
    let (m, s) = mean_std(&[1.0, 2.0, 3.0, 4.0]);
    // Sum of squared deviations 5, over n - 1 = 3.
    assert!((m - 2.5).abs() < 1e-15 && (s - (5.0f64 / 3.0).sqrt()).abs() < 1e-15, "{m} {s}");
    assert_eq!(mean_std(&[7.0]), (7.0, 0.0));
    assert!(mean_std(&[]).0.is_nan());
    assert_eq!(pm(&[1.0, 3.0], 2), "2.00 ± 1.41");
    assert_eq!(pm(&[1.0], 1), "1.0");
    assert_eq!(pm_percent(&[-1.0, 3.0], 1), "+1.0 ± 2.8%");
    let (means, stds) = mean_std_columns(&[vec![1.0, 10.0], vec![3.0, 10.0]]);
    assert_eq!(means, vec![2.0, 10.0]);
    assert!((stds[0] - 2f64.sqrt()).abs() < 1e-15 && stds[1] == 0.0);
}

#[test]
fn spearman_rank_correlation() {
    assert_eq!(spearman(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]), 1.0);
    assert_eq!(spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]), -1.0);
    // Monotone but not linear: still 1.
    assert_eq!(spearman(&[1.0, 2.0, 3.0, 4.0], &[1.0, 8.0, 27.0, 1000.0]), 1.0);
    // Ties share their mean rank: ranks of y are 1, 2.5, 2.5, 4; Pearson of (1..4) with them is
    // 4.5 / sqrt(5 * 4.5).
    let r = spearman(&[1.0, 2.0, 3.0, 4.0], &[1.0, 5.0, 5.0, 9.0]);
    let expect = 4.5 / (5.0f64 * 4.5).sqrt();
    assert!((r - expect).abs() < 1e-15, "{r} vs {expect}");
    // One swap among 5: 1 - 6 * 2 / (5 * 24) = 0.9.
    let r = spearman(&[1.0, 2.0, 3.0, 4.0, 5.0], &[1.0, 3.0, 2.0, 4.0, 5.0]);
    assert!((r - 0.9).abs() < 1e-15, "{r}");
    assert!(spearman(&[1.0, 2.0], &[3.0, 3.0]).is_nan());
    assert!(spearman(&[1.0], &[3.0]).is_nan());
}

#[test]
fn seed_files_and_tasks() {
    assert_eq!(seed_path("target/cascade.ckpt", 1), "target/cascade.ckpt");
    assert_eq!(seed_path("target/cascade.ckpt", 3), "target/cascade-seed3.ckpt");
    assert_eq!(seed_path("out", 2), "out-seed2");
    for jobs in [1, 2, 3, 8] {
        assert_eq!(run_tasks(7, jobs, |i| i * i), vec![0, 1, 4, 9, 16, 25, 36], "jobs {jobs}");
    }
    assert!(run_tasks(0, 4, |i| i).is_empty());
}

#[test]
fn plots_draw_the_spread() {
    let with = lm::Series {
        name: "erank".into(),
        color: "#d62728",
        points: vec![(1.0, 2.0), (2.0, 3.0), (3.0, 4.0)],
        dashed: false,
        spread: vec![0.5, 0.25, 3.0],
    };
    let svg = lm::line_plot("t", "x", "y", &[with], true);
    // One band and one error bar per point; the axis reaches the top of the last bar (4 + 3 = 7).
    assert_eq!(svg.matches("<polygon").count(), 1);
    assert_eq!(svg.matches("<path d=").count(), 3);
    assert!(svg.contains(">7</text>"), "{svg}");
    let without = lm::Series {
        name: "plain".into(),
        color: "#1f77b4",
        points: vec![(1.0, 2.0), (2.0, 3.0)],
        dashed: true,
        spread: vec![],
    };
    let svg = lm::line_plot("t", "x", "y", &[without], true);
    assert_eq!(svg.matches("<polygon").count() + svg.matches("<path d=").count(), 0);
}

#[test]
fn plot_axes_start_at_a_tick() {
    let series = |points: Vec<(f64, f64)>, spread: Vec<f64>| lm::Series {
        name: "s".into(),
        color: "#000000",
        points,
        dashed: false,
        spread,
    };
    // A mean of -0.001 next to 800: the axis starts at 0 (no "-0" tick).
    let svg =
        lm::line_plot("t", "x", "y", &[series(vec![(0.0, 0.0), (1.0, -0.001), (2.0, 800.0)], vec![])], true);
    assert!(!svg.contains(">-0<"), "{svg}");
    assert!(svg.contains(">0</text>"));
    // A real dip: the axis starts at the multiple of the step below it (step 2 for a range of 12).
    let svg = lm::line_plot("t", "x", "y", &[series(vec![(0.0, 1.0), (1.0, 9.0)], vec![3.0, 0.0])], true);
    assert!(svg.contains(">-2</text>") && !svg.contains(">-4</text>"), "{svg}");
}
