//! Dense (affine) layer `Y = X W + b` over row-major slices, forward and backward.
//!
//! Shapes: `X` is `n x d_in`, `W` is `d_in x d_out`, `b` (optional) has `d_out` entries, `Y` is
//! `n x d_out`. Used for the value and output projections `W_V`, `W_O` of attention, the two layers
//! of the MLP, and an untied unembedding. Allocation-free; products go through [`crate::dense`].
//! NaN and infinity propagate as IEEE arithmetic says (nothing is rejected).

use crate::dense::{matmul, matmul_nt, matmul_tn, Update};
use crate::error::{check_len, check_matrix};
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
    matmul(n, d_in, d_out, x, w, y, Update::Overwrite)?;
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
    matmul_tn(d_in, n, d_out, x, dy, dw, Update::Accumulate)?;
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
