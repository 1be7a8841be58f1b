//! Replays the `inference` fuzz target's logic (fuzz/fuzz_targets/inference_harness.rs) on seeded
//! random inputs and on inputs built to reach each branch: valid shapes with long prompts, tokens
//! out of range, short workspaces, and checkpoints with one byte changed. Nothing may panic.

#[path = "../fuzz/fuzz_targets/inference_harness.rs"]
mod inference_harness;

use sd_attention::rng::SplitMix64;

#[test]
fn replays_random_and_crafted_inputs() {
    let mut rng = SplitMix64::new(13);
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(400usize);
    let mut seen = [false; 5];
    for case in 0..cases {
        let len = (rng.next_u64() % 96) as usize;
        let mut data: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        if case % 2 == 0 && data.len() > 12 {
            // A small valid shape: layers 1..3, dimensions >= 1, so the decoder runs.
            data[0] = 1 + (case % 3) as u8;
            for b in &mut data[1..12] {
                *b = 1 + *b % 3;
            }
        }
        let r = inference_harness::run(&data);
        seen = [
            seen[0] | r.prefill,
            seen[1] | r.step,
            seen[2] | r.step_refused,
            seen[3] | r.checkpoint,
            seen[4] | r.checkpoint_rejected,
        ];
    }
    assert_eq!(seen, [true; 5], "prefill, step, refused step, accepted and rejected checkpoint all reached");
    inference_harness::run(b"");
    inference_harness::run(b"SDATCKPT\x01\x00\x00\x00\x04\x00\x00\x00");
    inference_harness::run(&[255; 64]);
}
