//! Proves that without default features the crate never links `std`: a `#![no_std]` static library
//! with its own `#[panic_handler]` (tests/no_std_probe) must build against it, with and without
//! `alloc`. Linking `std` anywhere in the graph makes that build fail with a duplicate lang item.

use std::path::Path;
use std::process::Command;

fn build_probe(features: &[&str]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut command = Command::new(env!("CARGO"));
    command
        .arg("build")
        .arg("--quiet")
        .arg("--manifest-path")
        .arg(root.join("tests/no_std_probe/Cargo.toml"))
        .arg("--target-dir")
        .arg(root.join("target/no_std_probe"));
    if !features.is_empty() {
        command.arg("--features").arg(features.join(","));
    }
    let output = command.output().expect("cargo runs");
    assert!(
        output.status.success(),
        "no_std probe ({features:?}) failed to build:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn core_builds_and_links_without_std() {
    build_probe(&[]);
}

#[test]
fn alloc_feature_builds_and_links_without_std() {
    build_probe(&["alloc"]);
}
