//! cargo-fuzz entry of the `linear_attention` harness (fuzz/harness/linear_attention.rs), which tests/fuzz_replay.rs also
//! runs on every saved input under stable Rust.
#![no_main]

#[path = "../harness/input.rs"]
#[allow(dead_code)]
mod input;
#[path = "../harness/linear_attention.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
