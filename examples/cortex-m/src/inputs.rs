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

/// Tokens of the fixed sequence (parts (a) and (b)).
pub const N_TOKENS: usize = 8;
/// Value width of the attention heads of parts (a) and (b).
pub const D_V: usize = 4;
/// Routing rank `r` of the S-D head of part (a): `S = U V^T - V U^T`, `U, V`: `D_MODEL x r`.
pub const RANK_ROUTING: usize = 2;
/// Filtering rank `q` of the S-D head of part (a): `D = -C C^T`, `C`: `D_MODEL x q`.
pub const RANK_FILTERING: usize = 2;
/// Parameters of that S-D head, `U, V, C, W_V`: `D_MODEL (2 r + q + D_V)` (the firmware checks this
/// against the head's own `param_len()`).
pub const SD_PARAM_LEN: usize = D_MODEL * (2 * RANK_ROUTING + RANK_FILTERING + D_V);
/// Key width of the linear-attention stream of part (b).
pub const D_K: usize = 4;
/// Second seed, for the sequence inputs.
pub const SEQUENCE_SEED: u64 = 0x5DA7_7E47_0002;

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

/// Inputs of the attention parts: a sequence `x` (`N_TOKENS x D_MODEL`) with the parameters of
/// an S-D head (part (a)), and queries, keys, values (`N_TOKENS x D_K`, `x D_K`, `x D_V`) streamed one
/// token at a time through recurrent ELU+1 linear attention (part (b)).
pub struct SequenceInputs {
    /// Token vectors, row-major `N_TOKENS x D_MODEL`, `N(0, 1)`.
    pub x: [f32; N_TOKENS * D_MODEL],
    /// S-D head parameters `U, V, C, W_V` as one flat block, `N(0, WEIGHT_STD^2)`.
    pub sd_params: [f32; SD_PARAM_LEN],
    /// Queries of the stream, `N(0, 1)`.
    pub q: [f32; N_TOKENS * D_K],
    /// Keys of the stream, `N(0, 1)`.
    pub k: [f32; N_TOKENS * D_K],
    /// Values of the stream, `N(0, 1)`.
    pub v: [f32; N_TOKENS * D_V],
}

/// Draws the sequence inputs in field order, in `f32`.
pub fn sequence_inputs() -> SequenceInputs {
    let mut rng = SplitMix64::new(SEQUENCE_SEED);
    let mut inputs = SequenceInputs {
        x: [0.0; N_TOKENS * D_MODEL],
        sd_params: [0.0; SD_PARAM_LEN],
        q: [0.0; N_TOKENS * D_K],
        k: [0.0; N_TOKENS * D_K],
        v: [0.0; N_TOKENS * D_V],
    };
    rng.fill_normal(1.0, &mut inputs.x);
    rng.fill_normal(WEIGHT_STD, &mut inputs.sd_params);
    rng.fill_normal(1.0, &mut inputs.q);
    rng.fill_normal(1.0, &mut inputs.k);
    rng.fill_normal(1.0, &mut inputs.v);
    inputs
}

/// FNV-1a (64 bit) over the bit patterns of `values`, in order.
fn fnv1a<'a>(values: impl IntoIterator<Item = &'a f32>) -> u64 {
    let mut hash: u64 = 0xCBF2_9CE4_8422_2325;
    for value in values {
        for byte in value.to_bits().to_le_bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01B3);
        }
    }
    hash
}

/// FNV-1a of the sequence inputs, in field order.
pub fn sequence_fingerprint(inputs: &SequenceInputs) -> u64 {
    fnv1a(inputs.x.iter().chain(&inputs.sd_params).chain(&inputs.q).chain(&inputs.k).chain(&inputs.v))
}

/// FNV-1a (64 bit) over the bit patterns of every input value, in the order drawn.
pub fn fingerprint(inputs: &HeadInputs) -> u64 {
    fnv1a(inputs.w_q.iter().chain(&inputs.w_k).chain(&inputs.x).chain(&KNOWN_SPECTRUM))
}
