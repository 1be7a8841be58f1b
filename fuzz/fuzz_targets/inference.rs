//! Drives the zero-copy checkpoint view and the incremental decoder (`prefill`, `step`, sampling)
//! with arbitrary bytes: see inference_harness.rs (replayed by tests/fuzz_inference.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;
#[path = "inference_harness.rs"]
mod inference_harness;

fuzz_target!(|data: &[u8]| {
    inference_harness::run(data);
});
