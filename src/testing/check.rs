//! Invariant checkers for users' own heads: each returns a *measured deviation*, not a bool, so a
//! test can print how far from the invariant a computation landed and compare it with a tolerance
//! from [`tolerance_for`].
//!
//! Tolerance model. A quantity computed in floating point from sums of `dims` products whose
//! magnitudes are bounded by `norm` carries a rounding error of at most about
//! `2 dims eps norm` (`gamma_dims = dims eps / (1 - dims eps)` per accumulated product, twice for a
//! difference of two such results). [`tolerance_for`] returns exactly that bound; each checker says
//! which `dims` and `norm` apply to it. An exact construction (e.g. [`crate::spectral::split::split`]) has
//! deviation `0`.
//!
//! NaN semantics: a NaN anywhere in the input makes the deviation NaN, so every `deviation <= tol`
//! comparison fails, as it should (the Lanczos-based checkers reject NaN with
//! [`crate::Error::NonFinite`] instead). No function here allocates.

use crate::error::check_matrix;
use crate::workspace::{carve, Req};
use crate::{Result, Scalar};

/// `2 * dims * eps(T) * norm`: the rounding bound of a difference of two length-`dims` accumulated
/// products whose terms are bounded by `norm` (see the module docs). `dims = 0` gives `0`.
///
/// ```
/// use sd_attention::testing::check::tolerance_for;
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
    let whole = crate::linalg::kernel::sum_of_squares(mat);
    let parts =
        crate::linalg::kernel::sum_of_squares(routing) + crate::linalg::kernel::sum_of_squares(filtering);
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

/// Fixed Lanczos seed of the spectral checkers, so that a check is reproducible.
const CHECK_SEED: u64 = 0x5DA7_7E57_C0DE_0001;

/// Scratch elements [`positive_semidefinite_deviation`] and [`negative_semidefinite_deviation`]
/// need for an `n x n` matrix: a Lanczos run of up to `n` steps.
pub fn semidefinite_workspace_len(n: usize) -> usize {
    crate::spectral::lanczos::lanczos::extreme_eigenvalues_workspace_len(n, 0)
}

/// Runs Lanczos to the extreme eigenvalues of the dense symmetric `n x n` matrix `a`, asking for
/// a relative residual of `n eps`.
fn extremes_of_dense<T: Scalar>(
    n: usize,
    a: &[T],
    workspace: &mut [T],
) -> Result<crate::spectral::lanczos::lanczos::Extremes<T>> {
    let mut operator = crate::spectral::lanczos::operator::DenseSymmetric::new(n, a)?;
    let tol = T::of_usize(n.max(1)) * T::EPS;
    crate::spectral::lanczos::lanczos::extreme_eigenvalues(&mut operator, tol, 0, CHECK_SEED, workspace)
}

/// Positive-semidefiniteness deviation of the symmetric `n x n` matrix `a`:
/// `max(0, -(lambda_min - r))`, with `lambda_min` the smallest Ritz value of a Lanczos run
/// ([`crate::spectral::lanczos::lanczos::extreme_eigenvalues`]) and `r` its residual (an eigenvalue
/// lies within `r` of it). `0` for a PSD matrix computed exactly. Against an exact eigenvalue the
/// result can be off by `2 r` plus rounding: the run stops at `r <= n eps ||A||_2`, and Lanczos with
/// full reorthogonalization resolves eigenvalues to `n eps ||A||_F`, so compare with
/// `2 tolerance_for(n, ||A||_F)`. Only the
/// symmetry of `a` is assumed (see [`symmetry_deviation`]). NaN in `a` gives
/// [`crate::Error::NonFinite`]. `workspace`: [`semidefinite_workspace_len`].
pub fn positive_semidefinite_deviation<T: Scalar>(n: usize, a: &[T], workspace: &mut [T]) -> Result<T> {
    check_matrix("a", a.len(), n, n)?;
    if n == 0 {
        return Ok(T::zero());
    }
    let ends = extremes_of_dense(n, a, workspace)?;
    Ok((ends.smallest_residual - ends.smallest).max(T::zero()))
}

/// Negative-semidefiniteness deviation `max(0, lambda_max + r)` of the symmetric `n x n` matrix
/// `a` (the filtering part `D = -C C^T` of an S-D head must pass); as
/// [`positive_semidefinite_deviation`] otherwise.
pub fn negative_semidefinite_deviation<T: Scalar>(n: usize, a: &[T], workspace: &mut [T]) -> Result<T> {
    check_matrix("a", a.len(), n, n)?;
    if n == 0 {
        return Ok(T::zero());
    }
    let ends = extremes_of_dense(n, a, workspace)?;
    Ok((ends.largest + ends.largest_residual).max(T::zero()))
}

/// Scratch elements [`stability_bound`] needs for a `d x d` kernel: the symmetric part and a
/// Lanczos run.
pub fn stability_bound_workspace_len(d: usize) -> usize {
    Req::array(d, d).and(Req::new(semidefinite_workspace_len(d))).saturating()
}

/// Upper bound on `max Re(lambda)` over the eigenvalues of the `d x d` kernel `a` (e.g. `S + D`):
/// `lambda_max((A + A^T)/2) + r`. For real `A` and an eigenpair `A z = lambda z` with
/// `z = x + i y`, `Re(lambda) |z|^2 = x^T A x + y^T A y`, which only the symmetric part reaches
/// (Bendixson), so this bounds every real part. For an S-D kernel the symmetric part is
/// `D = -C C^T`, so the bound is `<= 0` up to rounding and the residual `r`: compare with
/// `2 tolerance_for(d, ||A||_F)` (see [`positive_semidefinite_deviation`]). `-inf` for `d = 0` (no eigenvalues). NaN in `a` gives
/// [`crate::Error::NonFinite`]. `workspace`: [`stability_bound_workspace_len`].
pub fn stability_bound<T: Scalar>(d: usize, a: &[T], workspace: &mut [T]) -> Result<T> {
    check_matrix("a", a.len(), d, d)?;
    crate::error::check_workspace(workspace.len(), stability_bound_workspace_len(d))?;
    if d == 0 {
        return Ok(T::neg_infinity());
    }
    let ([symmetric], lanczos_workspace) = carve(workspace, [d * d])?;
    symmetric.copy_from_slice(a);
    crate::spectral::split::filtering_in_place(d, symmetric)?;
    let ends = extremes_of_dense(d, symmetric, lanczos_workspace)?;
    Ok(ends.largest + ends.largest_residual)
}

/// Scratch elements [`causal_recurrent_residual`] needs: the chunked forward's workspace, its
/// output (`n (h d_v)`), and one recurrent state with its output (`d_k d_v + d_k + d_v`).
pub fn causal_recurrent_residual_workspace_len<T: Scalar>(
    attention: &crate::attention::linear::LinearAttention<T>,
    n_tokens: usize,
) -> usize {
    let (d_k, d_v) = (attention.d_k, attention.d_v);
    Req::all_of([
        Req::new(attention.forward_workspace_len(n_tokens)),
        Req::array(n_tokens, attention.n_heads).times(d_v),
        Req::array(d_k, d_v),
        Req::new(d_k),
        Req::new(d_v),
    ])
    .saturating()
}

/// Causal-equals-recurrent residual of ELU+1 linear attention: `max |O_chunked - O_recurrent|`
/// between the causal chunked forward of `attention` (its causality is taken as causal whatever
/// it says) and the recurrent form that feeds the tokens one by one through
/// [`crate::attention::linear::State::step`]. Packed `q`, `k` (`n x (h d_k)`), `v`
/// (`n x (h d_v)`). Both are weighted averages of the values accumulated over at most
/// `n_tokens` terms in different orders, so `tolerance_for(n_tokens + d_k, max |v|)` bounds the
/// residual (weights are positive: no cancellation). NaN inputs give a NaN residual.
/// `workspace`: [`causal_recurrent_residual_workspace_len`].
pub fn causal_recurrent_residual<T: Scalar>(
    attention: &crate::attention::linear::LinearAttention<T>,
    n_tokens: usize,
    q: &[T],
    k: &[T],
    v: &[T],
    workspace: &mut [T],
) -> Result<T> {
    use crate::attention::{linear::State, Causality};
    let causal = crate::attention::linear::LinearAttention { causality: Causality::Causal, ..*attention };
    crate::error::check_workspace(
        workspace.len(),
        causal_recurrent_residual_workspace_len(&causal, n_tokens),
    )?;
    let (d_k, d_v, heads) = (causal.d_k, causal.d_v, causal.n_heads);
    let (width_k, width_v) = (heads * d_k, heads * d_v);
    let forward_len = causal.forward_workspace_len(n_tokens);
    let ([forward_workspace, parallel, state_s, state_z, step_out], _) =
        carve(workspace, [forward_len, n_tokens * width_v, d_k * d_v, d_k, d_v])?;
    causal.forward(n_tokens, q, k, v, parallel, forward_workspace)?;
    let mut worst = T::zero();
    for head in 0..heads {
        let mut state = State::new(d_k, d_v, &mut *state_s, &mut *state_z)?;
        for token in 0..n_tokens {
            let key_cols = token * width_k + head * d_k..token * width_k + (head + 1) * d_k;
            let value_cols = token * width_v + head * d_v..token * width_v + (head + 1) * d_v;
            state.step(&q[key_cols.clone()], &k[key_cols], &v[value_cols.clone()], causal.eps, step_out)?;
            for (&recurrent, &chunked) in step_out.iter().zip(&parallel[value_cols]) {
                worst = max_nan(worst, (recurrent - chunked).abs());
            }
        }
    }
    Ok(worst)
}
