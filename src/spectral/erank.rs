//! Effective-rank measures of a spectrum (`docs/math.md` section 2).
//!
//! Every function takes nonnegative values `sigma_1..sigma_r` (singular values; pass `|lambda|`
//! for the eigenvalues of a symmetric matrix), in any order. NaN or infinity is rejected with
//! [`Error::NonFinite`], a negative value with [`Error::InvalidValue`]. Every measure is `0` for an
//! empty or all-zero spectrum. Sums are taken after dividing by `max sigma`, so no measure
//! overflows or underflows for any finite input.

use crate::{Error, Result, Scalar};

/// Validates the spectrum and returns its largest value (`0` when empty).
fn largest<T: Scalar>(sigma: &[T]) -> Result<T> {
    let mut largest = T::zero();
    for (index, &s) in sigma.iter().enumerate() {
        if !s.is_finite() {
            return Err(Error::NonFinite { what: "sigma", index });
        }
        if s < T::zero() {
            return Err(Error::InvalidValue { what: "sigma", index, expected: "nonnegative" });
        }
        largest = largest.max(s);
    }
    Ok(largest)
}

/// Entropy effective rank (Roy & Vetterli 2007): `exp(-sum_k p_k ln p_k)` with
/// `p_k = sigma_k / sum_j sigma_j` (and `0 ln 0 = 0`). One rotation plane (values `s, s`) gives
/// exactly 2; `k` equal values give `k`.
///
/// ```
/// use sd_attention::spectral::erank::entropy_effective_rank;
/// let erank = entropy_effective_rank(&[3.0f64, 3.0, 0.0])?;
/// assert!((erank - 2.0).abs() < 1e-15);
/// # Ok::<(), sd_attention::Error>(())
/// ```
pub fn entropy_effective_rank<T: Scalar>(sigma: &[T]) -> Result<T> {
    let largest = largest(sigma)?;
    if largest == T::zero() {
        return Ok(T::zero());
    }
    let total: T = sigma.iter().map(|&s| s / largest).sum();
    let mut entropy = T::zero();
    for &s in sigma {
        let p = (s / largest) / total;
        if p > T::zero() {
            entropy -= p * p.ln();
        }
    }
    Ok(entropy.max(T::zero()).exp())
}

/// Participation ratio `(sum sigma_k^2)^2 / sum sigma_k^4`, between 1 and the number of nonzero
/// values (equal to it when they are all equal).
pub fn participation_ratio<T: Scalar>(sigma: &[T]) -> Result<T> {
    let largest = largest(sigma)?;
    if largest == T::zero() {
        return Ok(T::zero());
    }
    let (mut second, mut fourth) = (T::zero(), T::zero());
    for &s in sigma {
        let r2 = (s / largest) * (s / largest);
        second += r2;
        fourth += r2 * r2;
    }
    Ok(second * second / fourth)
}

/// Stable rank `||X||_F^2 / ||X||_2^2 = sum sigma_k^2 / max sigma_k^2`.
pub fn stable_rank<T: Scalar>(sigma: &[T]) -> Result<T> {
    let largest = largest(sigma)?;
    if largest == T::zero() {
        return Ok(T::zero());
    }
    Ok(sigma.iter().map(|&s| (s / largest) * (s / largest)).sum())
}

/// Numerical rank `#{k : sigma_k > rel_tol * max sigma}`; `rel_tol` must be finite and
/// nonnegative ([`Error::InvalidParameter`] otherwise). A common choice is
/// `max(rows, cols) * T::EPS`, see [`default_rank_tolerance`].
pub fn numerical_rank<T: Scalar>(sigma: &[T], rel_tol: T) -> Result<usize> {
    if !(rel_tol >= T::zero() && rel_tol.is_finite()) {
        return Err(Error::InvalidParameter { what: "rel_tol", expected: "a finite, nonnegative tolerance" });
    }
    let largest = largest(sigma)?;
    if largest == T::zero() {
        return Ok(0);
    }
    let threshold = rel_tol * largest;
    Ok(sigma.iter().filter(|&&s| s > threshold).count())
}

/// The usual relative tolerance for a numerical rank of an `rows x cols` matrix:
/// `max(rows, cols) * eps` (the LAPACK / NumPy `matrix_rank` convention).
pub fn default_rank_tolerance<T: Scalar>(rows: usize, cols: usize) -> T {
    T::of_usize(rows.max(cols).max(1)) * T::EPS
}

/// All four measures of one spectrum.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EffectiveRanks<T> {
    /// [`entropy_effective_rank`].
    pub entropy: T,
    /// [`participation_ratio`].
    pub participation_ratio: T,
    /// [`stable_rank`].
    pub stable: T,
    /// [`numerical_rank`] at the tolerance passed to [`effective_ranks`].
    pub numerical: usize,
}

/// Computes every measure of `sigma` at once (numerical rank at `rel_tol`).
pub fn effective_ranks<T: Scalar>(sigma: &[T], rel_tol: T) -> Result<EffectiveRanks<T>> {
    Ok(EffectiveRanks {
        numerical: numerical_rank(sigma, rel_tol)?,
        entropy: entropy_effective_rank(sigma)?,
        participation_ratio: participation_ratio(sigma)?,
        stable: stable_rank(sigma)?,
    })
}
