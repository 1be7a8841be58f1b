//! cargo-fuzz entry of the `inference` harness (fuzz/harness/inference.rs), which tests/fuzz_replay.rs
//! also runs on every saved input under stable Rust.
#![no_main]

#[path = "../harness/inference.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::run(data);
});
