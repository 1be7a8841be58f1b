//! Cross-entropy of next-token logits, mean over tokens, with its gradient.
//!
//! For logits `z` (`n x V`) and targets `t_i`: `L = (1/n) sum_i (logsumexp(z_i) - z_i[t_i])`, where
//! `logsumexp(z) = m + ln sum_j exp(z_j - m)` with `m = max_j z_j`, evaluated as
//! `ln sum_j exp(z_j - m) - (z_i[t_i] - m)` so that no `exp` overflows and a large common offset of
//! the logits cancels exactly instead of absorbing the result.
//! Gradient: `dL/dz_ij = (softmax(z_i)_j - [j = t_i]) / n`. Allocation-free; the exponentials go
//! through [`Scalar::exp_shifted_sum`] (vectorized in `f32`, libm in `f64`).

use crate::error::check_matrix;
use crate::{Error, Result, Scalar};

/// Returns the mean cross-entropy (natural log) and writes `dL/dz` into `d_logits` (`n x vocab`,
/// overwritten), with `n = targets.len()`.
///
/// Errors: shape mismatches; a target `>= vocab` ([`Error::InvalidValue`]); `n == 0` or `vocab == 0`
/// ([`Error::Empty`]). NaN or `+inf` in a row of logits makes the loss NaN (and that row's gradient
/// NaN); it is not rejected, so that a diverging run shows up as a NaN loss.
///
/// ```
/// use sd_attention::model::loss::cross_entropy;
/// let logits = [0.0f64, 0.0]; // one token, two classes, uniform
/// let mut d = [0.0; 2];
/// let loss = cross_entropy(2, &logits, &[1], &mut d)?;
/// assert!((loss - core::f64::consts::LN_2).abs() < 1e-15);
/// assert_eq!(d, [0.5, -0.5]);
/// # Ok::<(), sd_attention::Error>(())
/// ```
pub fn cross_entropy<T: Scalar>(vocab: usize, logits: &[T], targets: &[u8], d_logits: &mut [T]) -> Result<T> {
    let n = targets.len();
    if n == 0 {
        return Err(Error::Empty { what: "targets" });
    }
    if vocab == 0 {
        return Err(Error::Empty { what: "vocab" });
    }
    check_matrix("logits", logits.len(), n, vocab)?;
    check_matrix("d_logits", d_logits.len(), n, vocab)?;
    if let Some(index) = targets.iter().position(|&t| t as usize >= vocab) {
        return Err(Error::InvalidValue { what: "targets", index, expected: "< vocab" });
    }
    let inv_n = T::one() / T::of_usize(n);
    let mut total = T::zero();
    for ((zr, dr), &t) in logits.chunks_exact(vocab).zip(d_logits.chunks_exact_mut(vocab)).zip(targets) {
        total += row(zr, dr, t, inv_n);
    }
    Ok(total * inv_n)
}

/// One row of [`cross_entropy`]: writes its gradient into `dr`, returns its loss term
/// `ln sum_j exp(z_j - m) - (z_t - m)`.
#[inline]
fn row<T: Scalar>(zr: &[T], dr: &mut [T], t: u8, inv_n: T) -> T {
    // NaN is skipped by the maximum but reaches the sum through `exp` (NaN loss and row).
    let m = row_max(zr);
    dr.copy_from_slice(zr);
    let sum = T::exp_shifted_sum(dr, m); // vectorized for f32 (crate::linalg::exp)
    let term = sum.ln() - (zr[t as usize] - m);
    let scale = inv_n / sum;
    for g in dr.iter_mut() {
        *g *= scale;
    }
    dr[t as usize] -= inv_n;
    term
}

/// [`cross_entropy`] with the rows in blocks as separate tasks (the `parallel` feature): each
/// row's loss term goes into `row_loss` (`n` elements), and the terms are then added in row order,
/// so the result is [`cross_entropy`]'s, bit for bit.
#[cfg(feature = "parallel")]
pub(crate) fn cross_entropy_rows<T: Scalar>(
    vocab: usize,
    logits: &[T],
    targets: &[u8],
    d_logits: &mut [T],
    row_loss: &mut [T],
) -> Result<T> {
    let n = targets.len();
    if n == 0 || vocab == 0 || row_loss.len() != n {
        return cross_entropy(vocab, logits, targets, d_logits);
    }
    check_matrix("logits", logits.len(), n, vocab)?;
    check_matrix("d_logits", d_logits.len(), n, vocab)?;
    if let Some(index) = targets.iter().position(|&t| t as usize >= vocab) {
        return Err(Error::InvalidValue { what: "targets", index, expected: "< vocab" });
    }
    const ROWS: usize = 64;
    let inv_n = T::one() / T::of_usize(n);
    crate::parallel::try_chunks2::<_, _, (), _>(
        d_logits,
        ROWS * vocab,
        row_loss,
        ROWS,
        |i, d_blk, loss_blk| {
            let r0 = i * ROWS;
            let rows = logits[r0 * vocab..].chunks_exact(vocab).zip(d_blk.chunks_exact_mut(vocab));
            for (((zr, dr), &t), l) in rows.zip(&targets[r0..]).zip(loss_blk.iter_mut()) {
                *l = row(zr, dr, t, inv_n);
            }
            Ok(())
        },
    )
    .ok();
    let mut total = T::zero();
    for &l in row_loss.iter() {
        total += l;
    }
    Ok(total * inv_n)
}

/// `max_j z_j` ignoring NaN (`-inf` for a row of NaN), in 16 independent lanes so that it
/// vectorizes.
fn row_max<T: Scalar>(z: &[T]) -> T {
    const LANES: usize = 16;
    let mut acc = [T::neg_infinity(); LANES];
    let chunks = z.chunks_exact(LANES);
    let mut m = T::neg_infinity();
    for &v in chunks.remainder() {
        m = if v > m { v } else { m };
    }
    for c in chunks {
        for lane in 0..LANES {
            acc[lane] = if c[lane] > acc[lane] { c[lane] } else { acc[lane] };
        }
    }
    acc.iter().fold(m, |a, &b| if b > a { b } else { a })
}
