//! cargo-fuzz entry of the `checkpoint` harness (fuzz/harness/checkpoint.rs), which tests/fuzz_replay.rs also
//! runs on every saved input under stable Rust.
#![no_main]

#[path = "../harness/input.rs"]
#[allow(dead_code)]
mod input;
#[path = "../harness/checkpoint.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
