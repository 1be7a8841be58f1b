//! Dense (affine) layer `Y = X W + b` over row-major slices, forward and backward.
//!
//! Shapes: `X` is `n x d_in`, `W` is `d_in x d_out`, `b` (optional) has `d_out` entries, `Y` is
//! `n x d_out`. Used for the value and output projections `W_V`, `W_O` of attention, the two layers
//! of the MLP, and an untied unembedding. Allocation-free. The forward product runs through the
//! crate's register-blocked microkernel (`product_rows`: no packing; at the model's sizes,
//! `k` = 64..256, faster than the packed path); the weight gradient `X^T dY` and `dX` go through
//! `matrixmultiply` ([`crate::linalg::dense`] and its kernel).
//! NaN and infinity propagate as IEEE arithmetic says (nothing is rejected).

use crate::error::{check_len, check_matrix};
use crate::linalg::dense::{matmul_nt, Update};
use crate::linalg::kernel::Transpose;
use crate::{Result, Scalar};

/// `y = x w (+ b)`: `x` `n x d_in`, `w` `d_in x d_out`, `bias` `d_out` or `None`, `y` `n x d_out`
/// (overwritten).
///
/// ```
/// use sd_attention::model::linear::linear_forward;
/// let x = [1.0, 2.0f64]; // 1 x 2
/// let w = [1.0, 0.0, 1.0, 0.0, 1.0, 1.0]; // 2 x 3: [[1, 0, 1], [0, 1, 1]]
/// let mut y = [0.0; 3];
/// linear_forward(1, 2, 3, &x, &w, Some(&[0.5, 0.5, 0.5]), &mut y)?;
/// assert_eq!(y, [1.5, 2.5, 3.5]);
/// # Ok::<(), sd_attention::Error>(())
/// ```
pub fn linear_forward<T: Scalar>(
    n: usize,
    d_in: usize,
    d_out: usize,
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    y: &mut [T],
) -> Result<()> {
    check_matrix("x", x.len(), n, d_in)?;
    check_matrix("w", w.len(), d_in, d_out)?;
    check_matrix("y", y.len(), n, d_out)?;
    if let Some(b) = bias {
        check_len("bias", b.len(), d_out)?;
    }
    product_rows(n, d_in, d_out, x, w, y, Update::Overwrite);
    if let Some(b) = bias {
        for row in y.chunks_exact_mut(d_out.max(1)) {
            for (v, &bj) in row.iter_mut().zip(b) {
                *v += bj;
            }
        }
    }
    Ok(())
}

/// Gradients of [`linear_forward`] given `dy = dL/dY` (`n x d_out`):
/// `dW += X^T dY` (accumulated, `d_in x d_out`), `db += sum_rows dY` (accumulated, if given),
/// `dX = dY W^T` (`n x d_in`, overwritten or accumulated per `dx_update`; skipped if `None`).
#[allow(clippy::too_many_arguments)]
pub fn linear_backward<T: Scalar>(
    n: usize,
    d_in: usize,
    d_out: usize,
    x: &[T],
    w: &[T],
    dy: &[T],
    dx: Option<&mut [T]>,
    dx_update: Update,
    dw: &mut [T],
    db: Option<&mut [T]>,
) -> Result<()> {
    check_matrix("x", x.len(), n, d_in)?;
    check_matrix("w", w.len(), d_in, d_out)?;
    check_matrix("dy", dy.len(), n, d_out)?;
    check_matrix("dw", dw.len(), d_in, d_out)?;
    if let Some(dx) = dx {
        check_matrix("dx", dx.len(), n, d_in)?;
        matmul_nt(n, d_out, d_in, dy, w, dx, dx_update)?;
    }
    product_tn(d_in, n, d_out, x, dy, dw, Update::Accumulate);
    if let Some(db) = db {
        check_len("db", db.len(), d_out)?;
        for row in dy.chunks_exact(d_out.max(1)) {
            for (g, &v) in db.iter_mut().zip(row) {
                *g += v;
            }
        }
    }
    Ok(())
}

/// `C = A B` (or `C += A B`) for contiguous row-major `A` (`m x k`), `B` (`k x n`), `C` (`m x n`)
/// through the crate's unpacked microkernel (which also keeps `A` in cache by working in bands of
/// rows). Validated callers only (panics if a slice is shorter than its dimensions). Each entry is
/// the in-order sum of `k` products (the microkernel's contract).
pub(crate) fn product_rows<T: Scalar>(
    m: usize,
    k: usize,
    n: usize,
    a: &[T],
    b: &[T],
    c: &mut [T],
    update: Update,
) {
    let acc = update == Update::Accumulate;
    if crate::parallel::ENABLED
        && m > PRODUCT_ROW_BLOCK
        && n > 0
        && m.saturating_mul(k).saturating_mul(n) >= 1 << 18
    {
        // Row blocks as separate tasks (with `parallel`): each entry is still the in-order sum of
        // its `k` products, so the result is the same as one call's.
        let (a, c) = (&a[..m * k], &mut c[..m * n]);
        crate::parallel::chunks(c, PRODUCT_ROW_BLOCK * n, |i, c_blk| {
            let rows = c_blk.len() / n;
            let a_blk = &a[i * PRODUCT_ROW_BLOCK * k..(i * PRODUCT_ROW_BLOCK + rows) * k];
            crate::linalg::microkernel::gemm_rows(rows, k, n, T::one(), a_blk, k, b, n, c_blk, n, acc);
        });
        return;
    }
    crate::linalg::microkernel::gemm_rows(m, k, n, T::one(), a, k, b, n, c, n, acc);
}

/// Rows per task of [`product_rows`] with the `parallel` feature.
const PRODUCT_ROW_BLOCK: usize = 64;

/// `C = A^T B` (or `C += A^T B`) for contiguous row-major `A` stored `k x m`, `B` `k x n`, `C`
/// `m x n`: a weight gradient `X^T dY` summed over `k` rows, through `matrixmultiply`'s packed
/// kernels (with `parallel`, in tiles of `C`) on every instruction set (a register-blocked kernel
/// reading `A` in place made the demo's backward about 3.4x slower on an AVX-512 Xeon).
/// Validated callers only.
pub(crate) fn product_tn<T: Scalar>(
    m: usize,
    k: usize,
    n: usize,
    a: &[T],
    b: &[T],
    c: &mut [T],
    update: Update,
) {
    let acc = update == Update::Accumulate;
    crate::linalg::kernel::gemm(
        m,
        k,
        n,
        T::one(),
        a,
        Transpose::Yes,
        b,
        Transpose::No,
        if acc { T::one() } else { T::zero() },
        c,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;

    /// [`product_tn`] against the textbook triple loop over `A^T`, in f64, on edge and tile-crossing
    /// sizes, overwriting (NaN in `C` must not leak) and accumulating. The products of small
    /// integers are exact in f64, so any order of the sum gives the same value: equality.
    #[test]
    fn product_tn_matches_naive() {
        for (m, k, n) in
            [(0usize, 5usize, 3usize), (3, 0, 4), (1, 1, 1), (17, 255, 9), (40, 513, 33), (64, 256, 64)]
        {
            let a: vec::Vec<f64> = (0..k * m).map(|i| ((i * 7) % 11) as f64 - 5.0).collect();
            let b: vec::Vec<f64> = (0..k * n).map(|i| ((i * 5) % 13) as f64 * 0.5 - 3.0).collect();
            let mut exact = vec![0.0; m * n];
            for i in 0..m {
                for j in 0..n {
                    exact[i * n + j] = (0..k).map(|p| a[p * m + i] * b[p * n + j]).sum();
                }
            }
            let plus_one: vec::Vec<f64> = exact.iter().map(|v| v + 1.0).collect();
            let mut c = vec![f64::NAN; m * n];
            product_tn(m, k, n, &a, &b, &mut c, Update::Overwrite);
            assert_eq!(c, exact, "overwrite {m} x {k} x {n}");
            let mut c = vec![1.0; m * n];
            product_tn(m, k, n, &a, &b, &mut c, Update::Accumulate);
            assert_eq!(c, plus_one, "accumulate {m} x {k} x {n}");
        }
    }

    /// [`product_rows`] against the textbook triple loop in f64, across band boundaries (`m` around
    /// multiples of the microkernel's `ROW_BAND`) and edge sizes (`k = 0`, `n = 0`, `1`), overwriting (the old
    /// `C` is NaN and must not leak) and accumulating.
    #[test]
    fn product_rows_matches_naive() {
        for m in [0usize, 1, 127, 128, 129, 300] {
            for k in [0usize, 1, 7, 64] {
                for n in [0usize, 1, 17] {
                    let a: vec::Vec<f64> = (0..m * k).map(|i| ((i * 7) % 11) as f64 - 5.0).collect();
                    let b: vec::Vec<f64> = (0..k * n).map(|i| ((i * 5) % 13) as f64 * 0.5 - 3.0).collect();
                    let mut exact = vec![0.0; m * n];
                    for i in 0..m {
                        for j in 0..n {
                            exact[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
                        }
                    }
                    let mut c = vec![f64::NAN; m * n];
                    product_rows(m, k, n, &a, &b, &mut c, Update::Overwrite);
                    assert_eq!(c, exact, "overwrite {m} x {k} x {n}");
                    let mut c = vec![1.0; m * n];
                    product_rows(m, k, n, &a, &b, &mut c, Update::Accumulate);
                    let plus_one: vec::Vec<f64> = exact.iter().map(|v| v + 1.0).collect();
                    assert_eq!(c, plus_one, "accumulate {m} x {k} x {n}");
                }
            }
        }
    }
}
