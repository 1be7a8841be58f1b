//! The routing/filtering split of a square kernel (`docs/math.md` section 1).
//!
//! For `M` (`m x m`, row-major): routing `S = (M - M^T) / 2` (skew-symmetric), filtering
//! `D = (M + M^T) / 2` (symmetric). Exactly `S + D = M`, `S^T = -S`, `D^T = D`, `<S, D>_F = 0`,
//! hence `||M||_F^2 = ||S||_F^2 + ||D||_F^2`.
//!
//! All loops walk the matrix in `32 x 32` tile pairs `(I, J)`, `(J, I)`, so that the transposed
//! reads stay in cache. NaN or infinity in `M` propagates to the entries it touches (and to the
//! energies); nothing is rejected.

use crate::error::check_matrix;
use crate::{Result, Scalar};

/// Tile edge of the blocked transposed walks.
const TILE: usize = 32;

/// Calls `visit(i, j)` once for every pair `i < j`, tile by tile.
#[inline(always)]
fn for_each_upper_pair(m: usize, mut visit: impl FnMut(usize, usize)) {
    for row0 in (0..m).step_by(TILE) {
        let row1 = (row0 + TILE).min(m);
        for col0 in (row0..m).step_by(TILE) {
            let col1 = (col0 + TILE).min(m);
            for i in row0..row1 {
                for j in col0.max(i + 1)..col1 {
                    visit(i, j);
                }
            }
        }
    }
}

/// Writes routing `S = (M - M^T)/2` and filtering `D = (M + M^T)/2` of the `m x m` matrix `mat`.
///
/// ```
/// use sd_attention::split::split;
/// let m = [1.0, 2.0, 0.0, 3.0]; // [[1, 2], [0, 3]]
/// let (mut s, mut d) = ([0.0f64; 4], [0.0f64; 4]);
/// split(2, &m, &mut s, &mut d)?;
/// assert_eq!(s, [0.0, 1.0, -1.0, 0.0]);
/// assert_eq!(d, [1.0, 1.0, 1.0, 3.0]);
/// # Ok::<(), sd_attention::Error>(())
/// ```
pub fn split<T: Scalar>(m: usize, mat: &[T], routing: &mut [T], filtering: &mut [T]) -> Result<()> {
    check_matrix("mat", mat.len(), m, m)?;
    check_matrix("routing", routing.len(), m, m)?;
    check_matrix("filtering", filtering.len(), m, m)?;
    for i in 0..m {
        routing[i * m + i] = T::zero();
        filtering[i * m + i] = mat[i * m + i];
    }
    for_each_upper_pair(m, |i, j| {
        let (upper, lower) = (mat[i * m + j], mat[j * m + i]);
        let skew = (upper - lower) * T::HALF;
        let sym = (upper + lower) * T::HALF;
        routing[i * m + j] = skew;
        routing[j * m + i] = -skew;
        filtering[i * m + j] = sym;
        filtering[j * m + i] = sym;
    });
    Ok(())
}

/// In place: `mat` becomes routing `S`, and filtering `D` is written to `filtering`.
pub fn split_in_place<T: Scalar>(m: usize, mat: &mut [T], filtering: &mut [T]) -> Result<()> {
    check_matrix("mat", mat.len(), m, m)?;
    check_matrix("filtering", filtering.len(), m, m)?;
    for i in 0..m {
        filtering[i * m + i] = mat[i * m + i];
        mat[i * m + i] = T::zero();
    }
    for_each_upper_pair(m, |i, j| {
        let (upper, lower) = (mat[i * m + j], mat[j * m + i]);
        let skew = (upper - lower) * T::HALF;
        let sym = (upper + lower) * T::HALF;
        mat[i * m + j] = skew;
        mat[j * m + i] = -skew;
        filtering[i * m + j] = sym;
        filtering[j * m + i] = sym;
    });
    Ok(())
}

/// In place: `mat` becomes its routing part `S = (M - M^T)/2`.
pub fn routing_in_place<T: Scalar>(m: usize, mat: &mut [T]) -> Result<()> {
    check_matrix("mat", mat.len(), m, m)?;
    for i in 0..m {
        mat[i * m + i] = T::zero();
    }
    for_each_upper_pair(m, |i, j| {
        let skew = (mat[i * m + j] - mat[j * m + i]) * T::HALF;
        mat[i * m + j] = skew;
        mat[j * m + i] = -skew;
    });
    Ok(())
}

/// In place: `mat` becomes its filtering part `D = (M + M^T)/2`.
pub fn filtering_in_place<T: Scalar>(m: usize, mat: &mut [T]) -> Result<()> {
    check_matrix("mat", mat.len(), m, m)?;
    for_each_upper_pair(m, |i, j| {
        let sym = (mat[i * m + j] + mat[j * m + i]) * T::HALF;
        mat[i * m + j] = sym;
        mat[j * m + i] = sym;
    });
    Ok(())
}

/// Squared Frobenius norms of the two parts of a kernel.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Energies<T> {
    /// Routing energy `||S||_F^2`.
    pub routing: T,
    /// Filtering energy `||D||_F^2`.
    pub filtering: T,
}

impl<T: Scalar> Energies<T> {
    /// `||M||_F^2 = ||S||_F^2 + ||D||_F^2`.
    pub fn total(&self) -> T {
        self.routing + self.filtering
    }

    /// Routing energy fraction `rho = ||S||_F^2 / ||M||_F^2`, in `[0, 1]`; defined as `0` for
    /// `M = 0` (a kernel with no energy routes nothing). NaN if an energy is NaN.
    pub fn routing_fraction(&self) -> T {
        let total = self.total();
        if total == T::zero() {
            T::zero()
        } else {
            self.routing / total
        }
    }
}

/// `||S||_F^2` and `||D||_F^2` of the `m x m` matrix `mat`, without forming `S` or `D`:
/// `||S||^2 = sum_{i<j} (m_ij - m_ji)^2 / 2`, `||D||^2 = sum_i m_ii^2 + sum_{i<j} (m_ij + m_ji)^2 / 2`.
///
/// Each is a sum of nonnegative terms, so both are accurate to a few units of rounding relative to
/// themselves (no cancellation), and `rho` is accurate even when one part is tiny.
pub fn energies<T: Scalar>(m: usize, mat: &[T]) -> Result<Energies<T>> {
    check_matrix("mat", mat.len(), m, m)?;
    let mut diagonal = T::zero();
    for i in 0..m {
        diagonal += mat[i * m + i] * mat[i * m + i];
    }
    // One partial sum per tile pair (at most TILE^2 terms), added into the totals: the rounding
    // bound grows like (TILE^2 + number of tiles) eps instead of m^2 eps.
    let (mut routing, mut filtering) = (T::zero(), T::zero());
    for row0 in (0..m).step_by(TILE) {
        let row1 = (row0 + TILE).min(m);
        for col0 in (row0..m).step_by(TILE) {
            let col1 = (col0 + TILE).min(m);
            let (mut routing_tile, mut filtering_tile) = (T::zero(), T::zero());
            for i in row0..row1 {
                for j in col0.max(i + 1)..col1 {
                    let (upper, lower) = (mat[i * m + j], mat[j * m + i]);
                    let skew = upper - lower;
                    let sym = upper + lower;
                    routing_tile += skew * skew;
                    filtering_tile += sym * sym;
                }
            }
            routing += routing_tile;
            filtering += filtering_tile;
        }
    }
    Ok(Energies { routing: routing * T::HALF, filtering: diagonal + filtering * T::HALF })
}
