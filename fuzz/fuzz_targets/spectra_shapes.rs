//! cargo-fuzz entry of the `spectra_shapes` harness (fuzz/harness/spectra_shapes.rs), which tests/fuzz_replay.rs also
//! runs on every saved input under stable Rust.
#![no_main]

#[path = "../harness/input.rs"]
#[allow(dead_code)]
mod input;
#[path = "../harness/spectra_shapes.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
