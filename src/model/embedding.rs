//! Byte embedding and positions: `h_i = E[t_i] + P[i]` for tokens `t_i` in `0..256`.
//!
//! `E` is `256 x d` (one row per byte value, [`VOCAB`]); `P` is `n x d`, either learned (a
//! parameter, the first `n` rows of a `context x d` table) or the fixed sinusoidal table of Vaswani
//! et al. 2017: `P[p, 2k] = sin(p / 10000^(2k/d))`, `P[p, 2k+1] = cos(p / 10000^(2k/d))`.
//! Backward: `dE[t_i] += dh_i` (a scatter-add over tokens), `dP[i] += dh_i` (learned positions only).
//! Tokens are bytes, so every token is in range by construction. Allocation-free.

use crate::error::check_matrix;
use crate::{Result, Scalar};

/// Vocabulary size of a byte-level model: 256.
pub const VOCAB: usize = 256;

/// `out[i] = E[tokens[i]] (+ positions[i])`: `embedding` `256 x d`, `positions` `n x d` or `None`,
/// `out` `n x d` (overwritten), with `n = tokens.len()`.
///
/// ```
/// use sd_attention::model::embedding::embed_forward;
/// let mut table = [0.0f64; 256 * 2];
/// table[2 * 65] = 1.0; // byte 'A' -> [1, 0]
/// let mut out = [9.0; 2];
/// embed_forward(2, b"A", &table, None, &mut out)?;
/// assert_eq!(out, [1.0, 0.0]);
/// # Ok::<(), sd_attention::Error>(())
/// ```
pub fn embed_forward<T: Scalar>(
    d: usize,
    tokens: &[u8],
    embedding: &[T],
    positions: Option<&[T]>,
    out: &mut [T],
) -> Result<()> {
    let n = tokens.len();
    check_matrix("embedding", embedding.len(), VOCAB, d)?;
    check_matrix("out", out.len(), n, d)?;
    if let Some(p) = positions {
        check_matrix("positions", p.len(), n, d)?;
    }
    for (i, &t) in tokens.iter().enumerate() {
        let row = &embedding[t as usize * d..(t as usize + 1) * d];
        let dst = &mut out[i * d..(i + 1) * d];
        dst.copy_from_slice(row);
        if let Some(p) = positions {
            for (v, &q) in dst.iter_mut().zip(&p[i * d..(i + 1) * d]) {
                *v += q;
            }
        }
    }
    Ok(())
}

/// Backward of [`embed_forward`]: `d_embedding[tokens[i]] += d_out[i]` and, if given,
/// `d_positions[i] += d_out[i]` (`d_positions` `n x d`).
pub fn embed_backward<T: Scalar>(
    d: usize,
    tokens: &[u8],
    d_out: &[T],
    d_embedding: &mut [T],
    d_positions: Option<&mut [T]>,
) -> Result<()> {
    let n = tokens.len();
    check_matrix("d_embedding", d_embedding.len(), VOCAB, d)?;
    check_matrix("d_out", d_out.len(), n, d)?;
    for (i, &t) in tokens.iter().enumerate() {
        let src = &d_out[i * d..(i + 1) * d];
        for (g, &v) in d_embedding[t as usize * d..(t as usize + 1) * d].iter_mut().zip(src) {
            *g += v;
        }
    }
    if let Some(dp) = d_positions {
        check_matrix("d_positions", dp.len(), n, d)?;
        for (g, &v) in dp.iter_mut().zip(d_out) {
            *g += v;
        }
    }
    Ok(())
}

/// Fills `out` (`n x d`) with the sinusoidal table `P[p, 2k] = sin(p w_k)`, `P[p, 2k+1] = cos(p w_k)`,
/// `w_k = 10000^(-2k/d)` (computed in f64, then rounded).
pub fn sinusoidal_positions<T: Scalar>(n: usize, d: usize, out: &mut [T]) -> Result<()> {
    check_matrix("out", out.len(), n, d)?;
    if d == 0 {
        // An empty table: nothing to fill, however many (empty) rows it has.
        return Ok(());
    }
    for (p, row) in out.chunks_exact_mut(d).enumerate() {
        for (j, value) in row.iter_mut().enumerate() {
            let k2 = (j - j % 2) as f64;
            let angle = p as f64 * libm::pow(10_000.0, -k2 / d as f64);
            *value = T::of_f64(if j % 2 == 0 { libm::sin(angle) } else { libm::cos(angle) });
        }
    }
    Ok(())
}
