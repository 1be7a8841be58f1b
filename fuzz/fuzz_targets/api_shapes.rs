//! cargo-fuzz entry of the `api_shapes` harness (fuzz/harness/api_shapes.rs), which tests/fuzz_replay.rs also
//! runs on every saved input under stable Rust.
#![no_main]

#[path = "../harness/input.rs"]
#[allow(dead_code)]
mod input;
#[path = "../harness/api_shapes.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
