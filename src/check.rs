//! Invariant checkers for users' own heads: each returns a *measured deviation*, not a bool, so a
//! test can print how far from the invariant a computation landed and compare it with a tolerance
//! from [`tolerance_for`].
//!
//! Tolerance model. A quantity computed in floating point from sums of `dims` products whose
//! magnitudes are bounded by `norm` carries a rounding error of at most about
//! `2 dims eps norm` (`gamma_dims = dims eps / (1 - dims eps)` per accumulated product, twice for a
//! difference of two such results). [`tolerance_for`] returns exactly that bound; each checker says
//! which `dims` and `norm` apply to it. An exact construction (e.g. [`crate::split::split`]) has
//! deviation `0`.
//!
//! NaN semantics: a NaN anywhere in the input makes the deviation NaN, so every `deviation <= tol`
//! comparison fails, as it should. No function here allocates.

use crate::error::check_matrix;
use crate::{Result, Scalar};

/// `2 * dims * eps(T) * norm`: the rounding bound of a difference of two length-`dims` accumulated
/// products whose terms are bounded by `norm` (see the module docs). `dims = 0` gives `0`.
///
/// ```
/// use sd_attention::check::tolerance_for;
/// assert_eq!(tolerance_for::<f64>(4, 1.0), 8.0 * f64::EPSILON);
/// ```
pub fn tolerance_for<T: Scalar>(dims: usize, norm: T) -> T {
    T::TWO * T::of_usize(dims) * T::EPS * norm
}

/// `max(a, b)` that propagates NaN (unlike `Float::max`, which drops it).
#[inline]
fn max_nan<T: Scalar>(a: T, b: T) -> T {
    if a.is_nan() || b.is_nan() {
        T::nan()
    } else {
        a.max(b)
    }
}

/// Skew-symmetry deviation `max_ij |A_ij + A_ji|` of the `m x m` matrix `a` (includes the
/// diagonal, where it is `2 |A_ii|`). Zero for an exact routing part; for `S` formed as
/// `U V^T - V U^T` from `d x r` factors the rounding bound is
/// `tolerance_for(r, max_i ||u_i|| ||v_i||)`-sized entries, conservatively
/// `tolerance_for(2 r, ||U||_F ||V||_F)`.
pub fn skew_deviation<T: Scalar>(m: usize, a: &[T]) -> Result<T> {
    pairwise_deviation(m, a, |upper, lower| (upper + lower).abs())
}

/// Symmetry deviation `max_ij |A_ij - A_ji|` of the `m x m` matrix `a`. Zero for an exact
/// filtering part; for `D = -C C^T` formed with `q` columns, bounded by
/// `tolerance_for(q, ||C||_F^2)`.
pub fn symmetry_deviation<T: Scalar>(m: usize, a: &[T]) -> Result<T> {
    pairwise_deviation(m, a, |upper, lower| (upper - lower).abs())
}

fn pairwise_deviation<T: Scalar>(m: usize, a: &[T], defect: impl Fn(T, T) -> T) -> Result<T> {
    check_matrix("a", a.len(), m, m)?;
    let mut worst = T::zero();
    for i in 0..m {
        for j in i..m {
            worst = max_nan(worst, defect(a[i * m + j], a[j * m + i]));
        }
    }
    Ok(worst)
}

/// Split residual `max_ij |S_ij + D_ij - M_ij|` of a routing/filtering pair. With the parts
/// computed as half-sums of `M` and `M^T`, each entry is off by at most
/// `eps (|M_ij| + |M_ji|)`, so `tolerance_for(1, max |M|)` bounds it.
pub fn split_residual<T: Scalar>(m: usize, mat: &[T], routing: &[T], filtering: &[T]) -> Result<T> {
    check_matrix("mat", mat.len(), m, m)?;
    check_matrix("routing", routing.len(), m, m)?;
    check_matrix("filtering", filtering.len(), m, m)?;
    let mut worst = T::zero();
    for ((&whole, &s), &d) in mat.iter().zip(routing).zip(filtering) {
        worst = max_nan(worst, (s + d - whole).abs());
    }
    Ok(worst)
}

/// Energy-identity residual `| ||M||_F^2 - ||S||_F^2 - ||D||_F^2 |`. Each squared norm is a sum
/// of `m^2` nonnegative terms, so `tolerance_for(m * m, ||M||_F^2)` bounds it for exact parts.
pub fn energy_identity_residual<T: Scalar>(m: usize, mat: &[T], routing: &[T], filtering: &[T]) -> Result<T> {
    check_matrix("mat", mat.len(), m, m)?;
    check_matrix("routing", routing.len(), m, m)?;
    check_matrix("filtering", filtering.len(), m, m)?;
    let whole = crate::kernel::sum_of_squares(mat);
    let parts = crate::kernel::sum_of_squares(routing) + crate::kernel::sum_of_squares(filtering);
    Ok((whole - parts).abs())
}

/// Row-stochasticity deviation of attention weights `p` (`rows x cols`): the largest of
/// `|sum_j p_ij - 1|` over rows and `-p_ij` over entries (a negative weight). A softmax row of
/// `cols` terms sums to 1 within `tolerance_for(cols, 1)`. An empty row (`cols == 0`) deviates
/// by 1: it cannot sum to 1.
pub fn row_stochasticity_deviation<T: Scalar>(rows: usize, cols: usize, p: &[T]) -> Result<T> {
    check_matrix("p", p.len(), rows, cols)?;
    if cols == 0 {
        return Ok(if rows == 0 { T::zero() } else { T::one() });
    }
    let mut worst = T::zero();
    for row in p.chunks_exact(cols) {
        let sum: T = row.iter().copied().sum();
        worst = max_nan(worst, (sum - T::one()).abs());
        for &value in row {
            worst = max_nan(worst, -value);
        }
    }
    Ok(worst)
}
