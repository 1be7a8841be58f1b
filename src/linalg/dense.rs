//! Dense slice kernels: matrix products (over `matrixmultiply`), transpose, and vector operations.
//!
//! Matrices are row-major slices with explicit dimensions: element `(i, j)` of an `rows x cols`
//! matrix `a` is `a[i * cols + j]`, and `a.len()` must equal `rows * cols` exactly. Every function
//! here validates lengths and returns [`Error::ShapeMismatch`] (or [`Error::DimensionOverflow`])
//! instead of panicking. None allocates. Non-finite values flow through as IEEE arithmetic says
//! (NaN in, NaN out); nothing here rejects them, except that an overwritten output is never read.

use crate::error::{check_len, check_matrix};
use crate::linalg::kernel;
pub use crate::linalg::kernel::Transpose;
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
/// use sd_attention::linalg::dense::{matmul, Update};
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

/// `C (+)= alpha A B` for row-major operands that are sub-matrices of larger storage: `A` is
/// `m x k` with row `i` at `a[i lda..i lda + k]`, `B` is `k x n` with row `p` at `b[p ldb..]`, `C`
/// is `m x n` with row `i` at `c[i ldc..]`. Entries between the rows are neither read nor written.
///
/// Register-blocked loops read the operands where they lie (no packing, no allocation, with or
/// without `alloc`): faster than [`matmul`] when `k` is small (tens to a few hundred) and the
/// operands are cache-resident, e.g. per-head slices of a packed `n x (h d)` layout; slower for
/// large square products. Each entry is `alpha sum_p a_ip b_pj` summed in order of `p` (fused
/// multiply-adds where the CPU has FMA), so blocking never changes a result.
///
/// Errors: [`Error::InvalidParameter`] if a leading dimension is below its row length (`lda < k`,
/// `ldb < n`, `ldc < n`); [`Error::ShapeMismatch`] if a slice is shorter than
/// `(rows - 1) ld + cols`, the minimum it must hold (`expected` carries that minimum; longer slices
/// are fine); [`Error::DimensionOverflow`] if that extent overflows. With `m = 0`, `n = 0` or
/// `k = 0` the operands that are not read may be empty.
///
/// ```
/// use sd_attention::linalg::dense::{matmul_strided, Update};
/// // Columns 1..3 of a 2 x 3 matrix (leading dimension 3) times a 2 x 1 vector.
/// let a = [9.0, 1.0, 2.0, 9.0, 3.0, 4.0];
/// let b = [1.0, 10.0];
/// let mut c = [0.0f64; 2];
/// matmul_strided(2, 2, 1, 1.0, &a[1..], 3, &b, 1, &mut c, 1, Update::Overwrite)?;
/// assert_eq!(c, [21.0, 43.0]);
/// # Ok::<(), sd_attention::Error>(())
/// ```
#[allow(clippy::too_many_arguments)]
pub fn matmul_strided<T: Scalar>(
    m: usize,
    k: usize,
    n: usize,
    alpha: T,
    a: &[T],
    lda: usize,
    b: &[T],
    ldb: usize,
    c: &mut [T],
    ldc: usize,
    update: Update,
) -> Result<()> {
    if lda < k {
        return Err(Error::InvalidParameter {
            what: "lda",
            expected: "at least k, the length of a row of A",
        });
    }
    if ldb < n {
        return Err(Error::InvalidParameter {
            what: "ldb",
            expected: "at least n, the length of a row of B",
        });
    }
    if ldc < n {
        return Err(Error::InvalidParameter {
            what: "ldc",
            expected: "at least n, the length of a row of C",
        });
    }
    let check = |what: &'static str, got: usize, rows: usize, ld: usize, cols: usize| -> Result<()> {
        if rows == 0 || cols == 0 {
            return Ok(());
        }
        let needed = (rows - 1)
            .checked_mul(ld)
            .and_then(|start| start.checked_add(cols))
            .ok_or(Error::DimensionOverflow { what })?;
        if got < needed {
            return Err(Error::ShapeMismatch { what, expected: needed, got });
        }
        Ok(())
    };
    check("c", c.len(), m, ldc, n)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    check("a", a.len(), m, lda, k)?;
    check("b", b.len(), k, ldb, n)?;
    crate::linalg::microkernel::gemm_rows(
        m,
        k,
        n,
        alpha,
        a,
        lda,
        b,
        ldb,
        c,
        ldc,
        update == Update::Accumulate,
    );
    Ok(())
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
