//! Dense slice kernels: matrix products (over `matrixmultiply`), transpose, and vector operations.
//!
//! Matrices are row-major slices with explicit dimensions: element `(i, j)` of an `rows x cols`
//! matrix `a` is `a[i * cols + j]`, and `a.len()` must equal `rows * cols` exactly. Every function
//! here validates lengths and returns [`Error::ShapeMismatch`] (or [`Error::DimensionOverflow`])
//! instead of panicking. None allocates. Non-finite values flow through as IEEE arithmetic says
//! (NaN in, NaN out); nothing here rejects them, except that an overwritten output is never read.

use crate::error::{check_len, check_matrix};
use crate::kernel;
pub use crate::kernel::Transpose;
use crate::{Error, Result, Scalar};

/// Whether a product overwrites its output or adds to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Update {
    /// `C = product` (the old contents of `C` are not read, so NaN there does not propagate).
    Overwrite,
    /// `C = C + product`.
    Accumulate,
}

impl Update {
    fn beta<T: Scalar>(self) -> T {
        match self {
            Update::Overwrite => T::zero(),
            Update::Accumulate => T::one(),
        }
    }
}

/// The shape contract of [`gemm`]: `a` holds `m k`, `b` `k n`, `c` `m n` elements.
fn check_gemm_shapes(m: usize, k: usize, n: usize, a_len: usize, b_len: usize, c_len: usize) -> Result<()> {
    check_matrix("a", a_len, m, k)?;
    check_matrix("b", b_len, k, n)?;
    check_matrix("c", c_len, m, n)
}

/// General matrix product `C = alpha * op(A) op(B) + beta * C`.
///
/// `op(A)` is `m x k` and `a` is stored `m x k` (`op_a = No`) or `k x m` (`op_a = Yes`); `op(B)` is
/// `k x n` and `b` is stored `k x n` or `n x k`; `c` is `m x n`. With `beta == 0` the old `C` is not
/// read. Cost `2 m k n` flops; blocked and vectorized by `matrixmultiply` (runtime AVX/FMA
/// detection under the `std` feature, compile-time target features without it).
#[allow(clippy::too_many_arguments)]
pub fn gemm<T: Scalar>(
    m: usize,
    k: usize,
    n: usize,
    alpha: T,
    a: &[T],
    op_a: Transpose,
    b: &[T],
    op_b: Transpose,
    beta: T,
    c: &mut [T],
) -> Result<()> {
    check_gemm_shapes(m, k, n, a.len(), b.len(), c.len())?;
    kernel::gemm(m, k, n, alpha, a, op_a, b, op_b, beta, c);
    Ok(())
}

/// [`gemm`] through the allocation-free portable kernel, whatever the features: row-wise axpy
/// (or dot) loops over contiguous rows, no packing, no heap. It is the kernel every product uses
/// without the `alloc` feature; with `alloc` it stays available for small products in hot loops
/// that must not touch the allocator. Same contract and errors as [`gemm`].
#[allow(clippy::too_many_arguments)]
pub fn gemm_portable<T: Scalar>(
    m: usize,
    k: usize,
    n: usize,
    alpha: T,
    a: &[T],
    op_a: Transpose,
    b: &[T],
    op_b: Transpose,
    beta: T,
    c: &mut [T],
) -> Result<()> {
    check_gemm_shapes(m, k, n, a.len(), b.len(), c.len())?;
    kernel::gemm_portable(m, k, n, alpha, a, op_a, b, op_b, beta, c);
    Ok(())
}

/// `C (+)= A B` with `A` `m x k`, `B` `k x n`, `C` `m x n`.
///
/// ```
/// use sd_attention::dense::{matmul, Update};
/// let a = [1.0, 2.0, 3.0, 4.0]; // 2 x 2
/// let b = [1.0, 0.0, 0.0, 1.0]; // identity
/// let mut c = [0.0f64; 4];
/// matmul(2, 2, 2, &a, &b, &mut c, Update::Overwrite)?;
/// assert_eq!(c, a);
/// # Ok::<(), sd_attention::Error>(())
/// ```
pub fn matmul<T: Scalar>(
    m: usize,
    k: usize,
    n: usize,
    a: &[T],
    b: &[T],
    c: &mut [T],
    update: Update,
) -> Result<()> {
    gemm(m, k, n, T::one(), a, Transpose::No, b, Transpose::No, update.beta(), c)
}

/// `C (+)= A^T B` with `A` stored `k x m`, `B` `k x n`, `C` `m x n` (e.g. a Gram matrix `W^T W`).
pub fn matmul_tn<T: Scalar>(
    m: usize,
    k: usize,
    n: usize,
    a: &[T],
    b: &[T],
    c: &mut [T],
    update: Update,
) -> Result<()> {
    // `a` is stored k x m: the same element count `gemm` checks.
    gemm(m, k, n, T::one(), a, Transpose::Yes, b, Transpose::No, update.beta(), c)
}

/// `C (+)= A B^T` with `A` `m x k`, `B` stored `n x k`, `C` `m x n` (e.g. logits `Q K^T`).
pub fn matmul_nt<T: Scalar>(
    m: usize,
    k: usize,
    n: usize,
    a: &[T],
    b: &[T],
    c: &mut [T],
    update: Update,
) -> Result<()> {
    // `b` is stored n x k: the same element count `gemm` checks.
    gemm(m, k, n, T::one(), a, Transpose::No, b, Transpose::Yes, update.beta(), c)
}

/// `out = A^T`, with `A` `rows x cols` and `out` `cols x rows`.
pub fn transpose<T: Scalar>(rows: usize, cols: usize, a: &[T], out: &mut [T]) -> Result<()> {
    check_matrix("a", a.len(), rows, cols)?;
    check_matrix("out", out.len(), cols, rows)?;
    kernel::transpose(rows, cols, a, out);
    Ok(())
}

/// `x . y = sum_i x_i y_i` (eight interleaved partial sums, so the rounding differs from a strict
/// left-to-right sum by at most the usual `n eps sum |x_i y_i|` bound).
pub fn dot<T: Scalar>(x: &[T], y: &[T]) -> Result<T> {
    check_len("y", y.len(), x.len())?;
    Ok(kernel::dot(x, y))
}

/// `y = y + alpha x`.
pub fn axpy<T: Scalar>(alpha: T, x: &[T], y: &mut [T]) -> Result<()> {
    check_len("y", y.len(), x.len())?;
    kernel::axpy(alpha, x, y);
    Ok(())
}

/// `x = alpha x`.
pub fn scale<T: Scalar>(alpha: T, x: &mut [T]) {
    kernel::scale(alpha, x);
}

/// `sum_i x_i^2`: the squared Euclidean norm of a vector, or the squared Frobenius norm of a matrix
/// stored in `x`. Unscaled: it overflows to `+inf` once the sum exceeds the type's range.
pub fn squared_norm<T: Scalar>(x: &[T]) -> T {
    kernel::sum_of_squares(x)
}

/// `||x||_F = sqrt(sum_i x_i^2)`, scaled internally so that it neither overflows nor underflows
/// while the result is representable. NaN if any element is NaN; `+inf` if any is infinite.
/// `0` for an empty slice.
pub fn frobenius_norm<T: Scalar>(x: &[T]) -> T {
    kernel::norm(x)
}

/// Index of the first element of `x` that is NaN or infinite, as an [`Error::NonFinite`].
pub fn check_finite<T: Scalar>(what: &'static str, x: &[T]) -> Result<()> {
    match x.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(index) => Err(Error::NonFinite { what, index }),
    }
}
