//! Fixed inputs of the Cortex-M example and the names of the lines it prints.
//!
//! Shared verbatim by the firmware (`examples/cortex-m/src/main.rs`) and the host test
//! (`tests/embedded_qemu.rs` includes this file with `#[path]`), so both sides generate the same
//! bits: `f32` values drawn from `sd_attention::rng::SplitMix64`, which is deterministic on every
//! platform. The firmware prints [`fingerprint`] of what it generated; the host test refuses to
//! compare against a firmware whose inputs differ from its own (a stale build).
//!
//! Output format: one result per line, `SDA <section> <name> <value> <value> ...`, values printed
//! with `{:e}` (the shortest decimal that parses back to the same `f32`) or as integers.

use sd_attention::rng::SplitMix64;

/// Prefix of every machine-readable line.
pub const TAG: &str = "SDA";

/// Model width of the fixed head.
pub const D_MODEL: usize = 16;
/// Head width of the fixed head.
pub const D_HEAD: usize = 4;
/// Seed of the weights and the probe vector.
pub const SEED: u64 = 0x5DA7_7E47_0001;
/// Standard deviation of the weights: `1/sqrt(D_MODEL) = 0.25` (exact in `f32`, so scaling by it
/// does not round).
pub const WEIGHT_STD: f32 = 0.25;

/// A known spectrum for the effective-rank section: three rotation planes with singular values
/// `3, 1, 1/4` (each twice, as for a skew-symmetric matrix) and two zeros. Every value is exact in
/// `f32`, so firmware and host measure the same numbers.
pub const KNOWN_SPECTRUM: [f32; 8] = [3.0, 3.0, 1.0, 1.0, 0.25, 0.25, 0.0, 0.0];

/// The weights `W_Q`, `W_K` (row-major `D_MODEL x D_HEAD`) of one head and a probe vector `x`.
pub struct HeadInputs {
    /// Query factor `W_Q`.
    pub w_q: [f32; D_MODEL * D_HEAD],
    /// Key factor `W_K`.
    pub w_k: [f32; D_MODEL * D_HEAD],
    /// Probe vector for the matrix-free products (`D_MODEL`).
    pub x: [f32; D_MODEL],
}

/// Draws the head: `W_Q`, then `W_K`, then `x`, each `N(0, WEIGHT_STD^2)` (x: `N(0, 1)`), in `f32`.
pub fn head_inputs() -> HeadInputs {
    let mut rng = SplitMix64::new(SEED);
    let mut inputs =
        HeadInputs { w_q: [0.0; D_MODEL * D_HEAD], w_k: [0.0; D_MODEL * D_HEAD], x: [0.0; D_MODEL] };
    rng.fill_normal(WEIGHT_STD, &mut inputs.w_q);
    rng.fill_normal(WEIGHT_STD, &mut inputs.w_k);
    rng.fill_normal(1.0, &mut inputs.x);
    inputs
}

/// FNV-1a (64 bit) over the bit patterns of every input value, in the order drawn.
pub fn fingerprint(inputs: &HeadInputs) -> u64 {
    let mut hash: u64 = 0xCBF2_9CE4_8422_2325;
    let values = inputs.w_q.iter().chain(&inputs.w_k).chain(&inputs.x).chain(&KNOWN_SPECTRUM);
    for value in values {
        for byte in value.to_bits().to_le_bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01B3);
        }
    }
    hash
}
