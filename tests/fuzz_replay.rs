//! Replays every saved fuzz input through the fuzz harnesses themselves (fuzz/harness/*.rs, the same
//! code the cargo-fuzz targets run), on stable Rust and without a fuzzing toolchain: the committed
//! seed corpora (fuzz/corpus-seed/TARGET/), the inputs that once made a target fail
//! (fuzz/regressions/TARGET/), and a local corpus of a fuzzing run if there is one
//! (fuzz/corpus/TARGET/, not committed). A harness panics on a finding, so each input must run clean.

#[path = "../fuzz/harness/input.rs"]
#[allow(dead_code)]
mod input;

#[path = "../fuzz/harness/api_shapes.rs"]
mod api_shapes;
#[path = "../fuzz/harness/attention_shapes.rs"]
mod attention_shapes;
#[path = "../fuzz/harness/checkpoint.rs"]
mod checkpoint;
#[path = "../fuzz/harness/inference.rs"]
mod inference;
#[path = "../fuzz/harness/linear_attention.rs"]
mod linear_attention;
#[path = "../fuzz/harness/model_inputs.rs"]
mod model_inputs;
#[path = "../fuzz/harness/spectra_shapes.rs"]
mod spectra_shapes;

use sd_attention::rng::SplitMix64;
use std::path::{Path, PathBuf};

/// The saved inputs of `target`, in a fixed order: seed corpus, regressions, local corpus.
fn saved_inputs(target: &str) -> (Vec<PathBuf>, usize) {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut committed = 0;
    let mut files = Vec::new();
    for (dir, is_committed) in [("corpus-seed", true), ("regressions", true), ("corpus", false)] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(dir).join(target)) else { continue };
        let mut found: Vec<PathBuf> = entries
            .map(|e| e.expect("readable fuzz directory").path())
            .filter(|p| p.is_file() && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
            .collect();
        found.sort();
        if is_committed {
            committed += found.len();
        }
        files.extend(found);
    }
    (files, committed)
}

/// Runs `harness` on every saved input of `target`, naming the input that fails; requires at least
/// one committed input, so that the replay cannot pass by finding nothing.
fn replay(target: &str, harness: fn(&[u8])) {
    let (files, committed) = saved_inputs(target);
    assert!(committed > 0, "no committed inputs for the fuzz target {target} (fuzz/corpus-seed/{target}/)");
    let mut failed = Vec::new();
    for path in &files {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if std::panic::catch_unwind(|| harness(&data)).is_err() {
            failed.push(path.display().to_string());
        }
    }
    println!("{target}: replayed {} inputs ({committed} committed)", files.len());
    assert!(failed.is_empty(), "{target}: {} of {} inputs failed: {failed:#?}", failed.len(), files.len());
}

#[test]
fn replay_api_shapes() {
    replay("api_shapes", api_shapes::run);
}

#[test]
fn replay_attention_shapes() {
    replay("attention_shapes", attention_shapes::run);
}

#[test]
fn replay_checkpoint() {
    replay("checkpoint", checkpoint::run);
}

#[test]
fn replay_inference() {
    replay("inference", |data| {
        inference::run(data);
    });
}

/// The `inference` harness on seeded random inputs, half of them shaped into a small valid model
/// (layers 1..3, dimensions >= 1) so that the decoder runs: every branch the harness reports
/// (prefill, step, refused step, changed checkpoint accepted and rejected) must be reached, so that
/// the sweep cannot pass by rejecting everything at the door.
#[test]
fn inference_sweep_reaches_every_branch() {
    let mut rng = SplitMix64::new(13);
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(400usize);
    let mut seen = [false; 5];
    for case in 0..cases {
        let len = (rng.next_u64() % 96) as usize;
        let mut data: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        if case % 2 == 0 && data.len() > 12 {
            data[0] = 1 + (case % 3) as u8;
            for b in &mut data[1..12] {
                *b = 1 + *b % 3;
            }
        }
        let r = inference::run(&data);
        seen = [
            seen[0] | r.prefill,
            seen[1] | r.step,
            seen[2] | r.step_refused,
            seen[3] | r.checkpoint,
            seen[4] | r.checkpoint_rejected,
        ];
    }
    assert_eq!(seen, [true; 5], "prefill, step, refused step, accepted and rejected checkpoint all reached");
}

#[test]
fn replay_linear_attention() {
    replay("linear_attention", linear_attention::run);
}

#[test]
fn replay_model_inputs() {
    replay("model_inputs", model_inputs::run);
}

#[test]
fn replay_spectra_shapes() {
    replay("spectra_shapes", spectra_shapes::run);
}
