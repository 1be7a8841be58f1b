//! Eigenvalues (and optionally eigenvector rows) of a symmetric tridiagonal matrix by the implicit
//! QL algorithm with Wilkinson-type shifts (Golub & Van Loan section 8.3; the QL variant of the
//! EISPACK `tql2` family). Used on the Lanczos matrix `T_k` (`docs/math.md` section 3); no LAPACK, no
//! allocation.

use crate::error::{check_len, check_matrix};
use crate::{Error, Result, Scalar};

/// QL sweeps allowed per eigenvalue before [`Error::NoConvergence`] (about 2 are typical).
const MAX_SWEEPS_PER_VALUE: usize = 60;

/// Eigen-decomposition of the symmetric tridiagonal `T` (`n x n`) with diagonal `diag` (length
/// `n`) and off-diagonal `offdiag` (length `n - 1`, `offdiag[i] = T[i][i+1] = T[i+1][i]`; length 0
/// for `n = 0`).
///
/// On return `diag` holds the eigenvalues in ascending order and `offdiag` is destroyed. `vectors`
/// (`rows x n`, row-major) is multiplied on the right by the orthogonal `Q` of `T = Q Lambda Q^T`,
/// its columns permuted like the eigenvalues: start from the identity (`rows = n`) to get the
/// eigenvectors as columns, from the row `e_{n-1}^T` (`rows = 1`) to get only their last
/// components (what Lanczos residuals need), from `e_0^T` for their first components (the Gauss
/// quadrature weights of SLQ), or pass `rows = 0` and an empty slice for eigenvalues only.
/// Cost `O(n^2)` plus `O(rows n^2)` for the vectors.
///
/// NaN or infinity in `diag`/`offdiag` is rejected with [`Error::NonFinite`]. Each eigenvalue has an
/// absolute error of a few `eps ||T||`.
///
/// ```
/// use sd_attention::spectral::lanczos::tridiagonal::tridiagonal_eigen;
/// // [[2, 1], [1, 2]] has eigenvalues 1 and 3.
/// let (mut diag, mut offdiag) = ([2.0f64, 2.0], [1.0]);
/// tridiagonal_eigen(&mut diag, &mut offdiag, &mut [], 0)?;
/// assert!((diag[0] - 1.0).abs() < 1e-15 && (diag[1] - 3.0).abs() < 1e-15);
/// # Ok::<(), sd_attention::Error>(())
/// ```
pub fn tridiagonal_eigen<T: Scalar>(
    diag: &mut [T],
    offdiag: &mut [T],
    vectors: &mut [T],
    rows: usize,
) -> Result<()> {
    let n = diag.len();
    check_len("offdiag", offdiag.len(), n.saturating_sub(1))?;
    check_matrix("vectors", vectors.len(), rows, n)?;
    if let Some(index) = diag.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite { what: "diag", index });
    }
    if let Some(index) = offdiag.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite { what: "offdiag", index });
    }
    ql_implicit(diag, offdiag, vectors, rows)?;
    sort_ascending(diag, vectors, rows);
    Ok(())
}

/// The implicit QL iteration on validated input (unsorted result).
pub(crate) fn ql_implicit<T: Scalar>(d: &mut [T], e: &mut [T], z: &mut [T], rows: usize) -> Result<()> {
    let n = d.len();
    let two = T::TWO;
    for l in 0..n {
        let mut sweeps = 0;
        loop {
            // Find the first negligible off-diagonal element at or after l: T splits there.
            let mut m = l;
            while m + 1 < n {
                let scale = d[m].abs() + d[m + 1].abs();
                if e[m].abs() <= T::EPS * scale || e[m] == T::zero() {
                    break;
                }
                m += 1;
            }
            if m == l {
                break;
            }
            sweeps += 1;
            if sweeps > MAX_SWEEPS_PER_VALUE {
                return Err(Error::NoConvergence { what: "tridiagonal QL", iterations: sweeps });
            }
            // Shift from the leading 2 x 2 block of the unreduced part.
            let mut g = (d[l + 1] - d[l]) / (two * e[l]);
            let mut r = g.hypot(T::one());
            g = d[m] - d[l] + e[l] / (g + if g >= T::zero() { r } else { -r });
            let (mut s, mut c, mut p) = (T::one(), T::one(), T::zero());
            let mut deflated = false;
            let mut i = m;
            while i > l {
                i -= 1;
                let f = s * e[i];
                let b = c * e[i];
                r = f.hypot(g);
                if i + 1 < m {
                    e[i + 1] = r;
                }
                if r == T::zero() {
                    // Underflow: the rotation is the identity; T splits at i + 1.
                    d[i + 1] -= p;
                    if m < n - 1 {
                        e[m] = T::zero();
                    }
                    deflated = true;
                    break;
                }
                s = f / r;
                c = g / r;
                g = d[i + 1] - p;
                r = (d[i] - g) * s + two * c * b;
                p = s * r;
                d[i + 1] = g + p;
                g = c * r - b;
                for row in 0..rows {
                    let base = row * n;
                    let (zi, zi1) = (z[base + i], z[base + i + 1]);
                    z[base + i + 1] = s * zi + c * zi1;
                    z[base + i] = c * zi - s * zi1;
                }
            }
            if deflated {
                continue;
            }
            d[l] -= p;
            e[l] = g;
            if m < n - 1 {
                e[m] = T::zero();
            }
        }
    }
    Ok(())
}

/// Insertion sort of the eigenvalues, permuting the columns of `z` alike (`O(n^2)` at worst).
pub(crate) fn sort_ascending<T: Scalar>(d: &mut [T], z: &mut [T], rows: usize) {
    let n = d.len();
    for i in 1..n {
        let mut j = i;
        while j > 0 && d[j - 1] > d[j] {
            d.swap(j - 1, j);
            for row in 0..rows {
                z.swap(row * n + j - 1, row * n + j);
            }
            j -= 1;
        }
    }
}
