//! Lanczos with full reorthogonalization (`docs/math.md` section 3; Golub & Van Loan ch. 10), matrix-free and
//! allocation-free: the caller passes the workspace ([`lanczos_workspace_len`]).
//!
//! Step `k` computes `w = A v_k`, removes its components along every basis vector
//! `v_0..v_k` by two passes of classical Gram–Schmidt (the coefficient on `v_k` is `alpha_k`), and
//! sets `beta_k = ||w||`, `v_{k+1} = w / beta_k`. The Ritz values are the eigenvalues of the
//! tridiagonal `T_k` (diagonal `alpha`, off-diagonal `beta`), computed by
//! [`crate::spectral::lanczos::tridiagonal::tridiagonal_eigen`].
//!
//! The run stops
//! * at `k = n` ([`Termination::Exhausted`]);
//! * when the requested extreme Ritz values have converged, `|beta_k e_k^T y| <= tol |theta|`
//!   ([`Termination::Converged`]);
//! * at breakdown, `beta_k <= 8 sqrt(n) eps ||T||` (an invariant subspace). Exact low rank is a normal
//!   outcome, not an error: the run restarts from a random vector orthogonal to the basis (so that
//!   repeated eigenvalues are found with their multiplicity, `T` becoming block diagonal), and if
//!   `A` maps that random vector to (numerically) zero, the whole orthogonal complement of the basis
//!   is taken as the null space: [`Termination::NullComplement`], with
//!   [`LanczosInfo::inferred_zeros`] `= n - k` zero eigenvalues not listed among the Ritz values;
//! * at `max_steps` ([`Termination::MaxSteps`]).
//!
//! For a skew-symmetric `A` ([`SkewOperator`]) the same process has `alpha_k = 0` and is the
//! Golub–Kahan bidiagonalization of `A` in disguise: the skew tridiagonal `T_k` is similar to `i`
//! times the symmetric tridiagonal with zero diagonal and off-diagonal `beta`, whose eigenvalues
//! `±s_j` give the singular values of `A` with absolute accuracy `eps ||A||` (no squaring as in
//! `A^T A`). See [`skew_singular_values`].
//!
//! NaN or infinity produced by the operator stops the run with [`Error::NonFinite`]
//! (`what = "operator output"`, `index` = the step).

use crate::error::{check_workspace, Error};
use crate::linalg::kernel;
use crate::rng::SplitMix64;
use crate::spectral::lanczos::operator::{SkewOperator, SymmetricOperator};
use crate::spectral::lanczos::tridiagonal::{ql_implicit, sort_ascending};
use crate::workspace::{carve, Req};
use crate::{Result, Scalar};

/// Why a Lanczos run stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Termination {
    /// The basis reached dimension `n`: the Ritz values are the whole spectrum.
    Exhausted,
    /// After a breakdown, the operator maps a random vector of the complement of the basis to
    /// zero: the complement is its null space ([`LanczosInfo::inferred_zeros`] zero eigenvalues).
    NullComplement,
    /// The plain Krylov space of a given start vector is invariant (breakdown without restart, as
    /// in stochastic quadrature): the Ritz values are exact for it.
    InvariantSubspace,
    /// The requested extreme Ritz values met the residual tolerance.
    Converged,
    /// `max_steps` steps were taken first.
    MaxSteps,
}

/// What a run did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LanczosInfo<T> {
    /// `k`: the basis size, the size of `T_k`, and how many Ritz values were written.
    pub steps: usize,
    /// Why it stopped.
    pub termination: Termination,
    /// Zero eigenvalues inferred on [`Termination::NullComplement`] (`n - steps`), else 0. With
    /// them, the Ritz values are the whole spectrum.
    pub inferred_zeros: usize,
    /// How many times the run restarted after a breakdown.
    pub restarts: usize,
    /// `max_k ||A v_k||`, a lower bound of `||A||_2` used in the breakdown test.
    pub norm_estimate: T,
}

/// Options of [`lanczos`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LanczosOptions<T> {
    /// Largest basis size (clamped to `n`); `0` means `n`.
    pub max_steps: usize,
    /// How many of the largest Ritz values must converge before stopping (`0`: none).
    pub largest: usize,
    /// How many of the smallest Ritz values must converge before stopping (`0`: none). With both
    /// `0` the run computes the whole spectrum (up to `max_steps`).
    pub smallest: usize,
    /// Relative residual tolerance of convergence: `|beta_k e_k^T y| <= tol |theta|` (or below the
    /// breakdown level `8 sqrt(n) eps ||T||`). The error of a converged Ritz value is about
    /// `residual^2 / gap`, and at most the residual.
    pub tol: T,
    /// Seed of the random start vector and of the restart vectors ([`SplitMix64`]).
    pub seed: u64,
}

impl<T: Scalar> Default for LanczosOptions<T> {
    /// Whole spectrum, `tol = sqrt(eps)`, seed 0.
    fn default() -> Self {
        LanczosOptions { max_steps: 0, largest: 0, smallest: 0, tol: T::EPS.sqrt(), seed: 0 }
    }
}

/// Scratch elements a run on an `n x n` operator with at most `max_steps` steps needs (`max_steps`
/// clamped to `n`, `0` meaning `n`): the basis `(m + 1) n`, `6 m` for `T` and its eigenvalues, and
/// `m^2` more when Ritz vectors are wanted.
pub fn lanczos_workspace_len(n: usize, max_steps: usize, ritz_vectors: bool) -> usize {
    // Saturating: a size that does not fit in memory asks for usize::MAX (and is refused).
    let m = clamp_steps(n, max_steps);
    let vectors = if ritz_vectors { Req::array(m, m) } else { Req::EMPTY };
    Req::all_of([Req::array(n, m).and(Req::new(n)), Req::array(m, 6), vectors]).saturating()
}

fn clamp_steps(n: usize, max_steps: usize) -> usize {
    if max_steps == 0 {
        n
    } else {
        max_steps.min(n)
    }
}

/// The breakdown level relative to `||T||`: `8 sqrt(n) eps`.
pub(crate) fn breakdown_level<T: Scalar>(n: usize) -> T {
    T::of_f64(8.0) * T::of_usize(n.max(1)).sqrt() * T::EPS
}

/// How the first basis vector is chosen.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// A random (normal) vector from the run's generator.
    Random,
    /// The caller wrote it into the first `n` elements of the basis (normalized here).
    Given,
}

/// Borrowed pieces of the workspace.
pub(crate) struct Parts<'w, T> {
    pub basis: &'w mut [T],
    pub alpha: &'w mut [T],
    pub beta: &'w mut [T],
    pub coef: &'w mut [T],
    pub eig: &'w mut [T],
    pub off: &'w mut [T],
    pub row: &'w mut [T],
    pub vectors: &'w mut [T],
}

/// Splits a workspace of at least `lanczos_workspace_len(n, m, vectors)` elements (the caller
/// checked it, so that a short workspace reports that length).
pub(crate) fn split_workspace<T>(
    workspace: &mut [T],
    n: usize,
    m: usize,
    vectors: bool,
) -> Result<Parts<'_, T>> {
    let vectors = if vectors { m * m } else { 0 };
    let ([basis, alpha, beta, coef, eig, off, row, vectors], _) =
        carve(workspace, [(m + 1) * n, m, m, m, m, m, m, vectors])?;
    Ok(Parts { basis, alpha, beta, coef, eig, off, row, vectors })
}

/// Stopping rules of the core.
pub(crate) struct Plan<T> {
    pub max_steps: usize,
    pub largest: usize,
    pub smallest: usize,
    pub tol: T,
    pub skew: bool,
    pub restart: bool,
    pub start: Start,
}

/// Two passes of classical Gram–Schmidt of `w` against the first `k` rows of `basis`; returns the
/// summed coefficient on row `k - 1`.
fn reorthogonalize<T: Scalar>(basis: &[T], n: usize, k: usize, w: &mut [T], coef: &mut [T]) -> T {
    let mut last = T::zero();
    for _pass in 0..2 {
        for j in 0..k {
            coef[j] = kernel::dot(&basis[j * n..(j + 1) * n], w);
        }
        for j in 0..k {
            kernel::axpy(-coef[j], &basis[j * n..(j + 1) * n], w);
        }
        if k > 0 {
            last += coef[k - 1];
        }
    }
    last
}

/// The Lanczos core. `apply(x, y)` computes `y = A x`. On return `alpha[..k]`, `beta[..k-1]` hold
/// `T_k` (block boundaries of restarts have `beta = 0`) and `basis` its first `k` vectors.
pub(crate) fn run<T: Scalar>(
    n: usize,
    mut apply: impl FnMut(&[T], &mut [T]) -> Result<()>,
    plan: &Plan<T>,
    rng: &mut SplitMix64,
    parts: &mut Parts<'_, T>,
) -> Result<LanczosInfo<T>> {
    let m = plan.max_steps;
    let level = breakdown_level::<T>(n);
    let mut info = LanczosInfo {
        steps: 0,
        termination: Termination::Exhausted,
        inferred_zeros: 0,
        restarts: 0,
        norm_estimate: T::zero(),
    };
    if n == 0 || m == 0 {
        info.termination = if n == 0 { Termination::Exhausted } else { Termination::MaxSteps };
        return Ok(info);
    }
    match plan.start {
        Start::Random => {
            if !fresh_vector(parts.basis, n, 0, parts.coef, rng) {
                return Err(Error::InvalidParameter { what: "start vector", expected: "a nonzero vector" });
            }
        }
        Start::Given => {
            let v = &mut parts.basis[..n];
            let norm = kernel::norm(v);
            if !(norm > T::zero() && norm.is_finite()) {
                return Err(Error::InvalidParameter {
                    what: "start vector",
                    expected: "a nonzero, finite vector",
                });
            }
            kernel::scale(norm.recip(), v);
        }
    }
    // A random start (first or restart) may conclude "null complement" when A maps it to zero.
    let mut random_start = plan.start == Start::Random;
    let mut k = 0;
    loop {
        let (done, rest) = parts.basis.split_at_mut((k + 1) * n);
        let w = &mut rest[..n];
        apply(&done[k * n..], w)?;
        let image_norm = kernel::norm(w);
        if !image_norm.is_finite() {
            return Err(Error::NonFinite { what: "operator output", index: k });
        }
        let diagonal = reorthogonalize(done, n, k + 1, w, parts.coef);
        parts.alpha[k] = if plan.skew { T::zero() } else { diagonal };
        let beta = kernel::norm(w);
        let previous_norm = info.norm_estimate;
        info.norm_estimate = info.norm_estimate.max(image_norm);
        k += 1;
        info.steps = k;
        if random_start && image_norm <= level * previous_norm {
            // A random vector of the complement maps to zero: the complement is the null space.
            // (With previous_norm = 0, i.e. on the first step, only an exactly zero image counts.)
            parts.beta[k - 1] = T::zero();
            info.inferred_zeros = n - k;
            info.termination = Termination::NullComplement;
            return Ok(info);
        }
        random_start = false;
        let breakdown = beta <= level * info.norm_estimate;
        parts.beta[k - 1] = if breakdown { T::zero() } else { beta };
        if k == n {
            info.termination = Termination::Exhausted;
            return Ok(info);
        }
        if (plan.largest > 0 || plan.smallest > 0)
            && converged(plan, k, beta, level * info.norm_estimate, parts)?
        {
            info.termination = Termination::Converged;
            return Ok(info);
        }
        if k == m {
            info.termination = Termination::MaxSteps;
            return Ok(info);
        }
        if breakdown {
            if !plan.restart {
                info.termination = Termination::InvariantSubspace;
                return Ok(info);
            }
            if !fresh_vector(parts.basis, n, k, parts.coef, rng) {
                // The basis spans the space numerically: nothing is left to find.
                info.termination = Termination::Exhausted;
                return Ok(info);
            }
            info.restarts += 1;
            random_start = true;
        } else {
            kernel::scale(beta.recip(), &mut parts.basis[k * n..(k + 1) * n]);
        }
    }
}

/// Writes a random unit vector orthogonal to the first `k` basis rows into row `k`; false when
/// three draws found no direction left (the rows span the space numerically).
fn fresh_vector<T: Scalar>(
    basis: &mut [T],
    n: usize,
    k: usize,
    coef: &mut [T],
    rng: &mut SplitMix64,
) -> bool {
    for _attempt in 0..3 {
        let (done, rest) = basis.split_at_mut(k * n);
        let v = &mut rest[..n];
        for x in v.iter_mut() {
            *x = rng.normal();
        }
        let drawn = kernel::norm(v);
        reorthogonalize(done, n, k, v, coef);
        let left = kernel::norm(v);
        if left > T::of_usize(n) * T::EPS * drawn && left > T::zero() {
            kernel::scale(left.recip(), v);
            return true;
        }
    }
    false
}

/// Whether the requested extreme Ritz values of `T_k` have converged, with `beta` the last
/// off-diagonal (residual factor) and `floor` the breakdown level.
fn converged<T: Scalar>(
    plan: &Plan<T>,
    k: usize,
    beta: T,
    floor: T,
    parts: &mut Parts<'_, T>,
) -> Result<bool> {
    if k < plan.largest + plan.smallest {
        return Ok(false);
    }
    let (eig, off, row) = (&mut parts.eig[..k], &mut parts.off[..k - 1], &mut parts.row[..k]);
    eig.copy_from_slice(&parts.alpha[..k]);
    off.copy_from_slice(&parts.beta[..k - 1]);
    row.fill(T::zero());
    row[k - 1] = T::one();
    ql_implicit(eig, off, row, 1)?;
    sort_ascending(eig, row, 1);
    let ok = |j: usize| {
        let residual = (beta * row[j]).abs();
        residual <= plan.tol * eig[j].abs() || residual <= floor
    };
    Ok((0..plan.smallest).all(ok) && (k - plan.largest..k).all(ok))
}

/// Eigenvalues (ascending) and optionally eigenvectors of `T_k` into `parts.eig` / `parts.vectors`
/// (`k x k`, column `j` the eigenvector of value `j`).
pub(crate) fn ritz_decomposition<T: Scalar>(parts: &mut Parts<'_, T>, k: usize, vectors: bool) -> Result<()> {
    let eig = &mut parts.eig[..k];
    eig.copy_from_slice(&parts.alpha[..k]);
    let off = &mut parts.off[..k.saturating_sub(1)];
    off.copy_from_slice(&parts.beta[..k.saturating_sub(1)]);
    let rows = if vectors { k } else { 0 };
    let z = &mut parts.vectors[..rows * k];
    for (idx, v) in z.iter_mut().enumerate() {
        *v = if idx / k == idx % k { T::one() } else { T::zero() };
    }
    ql_implicit(eig, off, z, rows)?;
    sort_ascending(eig, z, rows);
    Ok(())
}

/// Lanczos on a symmetric operator: writes the Ritz values (ascending) into
/// `ritz_values[..info.steps]` and, if asked, the Ritz vectors into `ritz_vectors` (`steps x n`,
/// row `j` the unit vector of value `j`).
///
/// `ritz_values` must hold at least `m = min(max_steps, n)` values (`m = n` for `max_steps = 0`),
/// `ritz_vectors` at least `m n`, `workspace` at least [`lanczos_workspace_len`]`(n, max_steps,
/// ritz_vectors.is_some())`. With `largest = smallest = 0` the run computes the whole spectrum:
/// together with [`LanczosInfo::inferred_zeros`] zeros, the Ritz values are all `n` eigenvalues
/// (to a few `eps ||A||`). Repeated eigenvalues are found with their multiplicity only through
/// restarts, i.e. in whole-spectrum runs; a run stopped early on convergence lists each distinct
/// extreme value once.
///
/// ```
/// use sd_attention::spectral::lanczos::lanczos::{lanczos, lanczos_workspace_len, LanczosOptions};
/// use sd_attention::spectral::lanczos::operator::DenseSymmetric;
/// let a = [2.0, 1.0, 0.0, 1.0, 2.0, 0.0, 0.0, 0.0, 5.0f64]; // eigenvalues 1, 3, 5
/// let mut op = DenseSymmetric::new(3, &a)?;
/// let mut workspace = vec![0.0; lanczos_workspace_len(3, 0, false)];
/// let mut values = [0.0; 3];
/// let info = lanczos(&mut op, &LanczosOptions::default(), &mut values, None, &mut workspace)?;
/// assert_eq!(info.steps, 3);
/// for (got, want) in values.iter().zip([1.0, 3.0, 5.0]) {
///     assert!((got - want).abs() < 1e-14);
/// }
/// # Ok::<(), sd_attention::Error>(())
/// ```
pub fn lanczos<T: Scalar, A: SymmetricOperator<T> + ?Sized>(
    op: &mut A,
    options: &LanczosOptions<T>,
    ritz_values: &mut [T],
    ritz_vectors: Option<&mut [T]>,
    workspace: &mut [T],
) -> Result<LanczosInfo<T>> {
    let n = op.size();
    let m = clamp_steps(n, options.max_steps);
    check_options(options, m)?;
    check_workspace(ritz_values.len(), m).map_err(|_| short("ritz_values", m, ritz_values.len()))?;
    if let Some(vectors) = ritz_vectors.as_deref() {
        let needed = m.checked_mul(n).ok_or(Error::DimensionOverflow { what: "ritz_vectors" })?;
        check_workspace(vectors.len(), needed).map_err(|_| short("ritz_vectors", needed, vectors.len()))?;
    }
    let want_vectors = ritz_vectors.is_some();
    check_workspace(workspace.len(), lanczos_workspace_len(n, m, want_vectors))?;
    let mut parts = split_workspace(workspace, n, m, want_vectors)?;
    let plan = Plan {
        max_steps: m,
        largest: options.largest,
        smallest: options.smallest,
        tol: options.tol,
        skew: false,
        restart: true,
        start: Start::Random,
    };
    let mut rng = SplitMix64::new(options.seed);
    let info = run(n, |x, y| op.apply(x, y), &plan, &mut rng, &mut parts)?;
    let k = info.steps;
    ritz_decomposition(&mut parts, k, want_vectors)?;
    ritz_values[..k].copy_from_slice(&parts.eig[..k]);
    if let Some(out) = ritz_vectors {
        for j in 0..k {
            let target = &mut out[j * n..(j + 1) * n];
            target.fill(T::zero());
            for i in 0..k {
                kernel::axpy(parts.vectors[i * k + j], &parts.basis[i * n..(i + 1) * n], target);
            }
        }
    }
    Ok(info)
}

fn short(what: &'static str, expected: usize, got: usize) -> Error {
    Error::ShapeMismatch { what, expected, got }
}

fn check_options<T: Scalar>(options: &LanczosOptions<T>, m: usize) -> Result<()> {
    if !(options.tol >= T::zero() && options.tol.is_finite()) {
        return Err(Error::InvalidParameter { what: "tol", expected: "a finite, nonnegative tolerance" });
    }
    if options.largest.saturating_add(options.smallest) > m.max(1) && m > 0 {
        return Err(Error::InvalidParameter {
            what: "largest + smallest",
            expected: "at most the number of steps (min(max_steps, n))",
        });
    }
    Ok(())
}

/// The tridiagonal `T_k` of the last run that used `workspace` (by [`lanczos`],
/// [`skew_singular_values`] or [`extreme_eigenvalues`] with the same `n` and `max_steps`): its
/// diagonal `alpha` (length `steps`) and off-diagonal `beta` (length `steps - 1`; zeros mark the
/// block boundaries of restarts). Both stay in the workspace until it is reused.
pub fn lanczos_tridiagonal<T: Scalar>(
    workspace: &[T],
    n: usize,
    max_steps: usize,
    steps: usize,
) -> Result<(&[T], &[T])> {
    let m = clamp_steps(n, max_steps);
    if steps > m {
        return Err(Error::InvalidParameter { what: "steps", expected: "at most min(max_steps, n)" });
    }
    check_workspace(workspace.len(), lanczos_workspace_len(n, m, false))?;
    let start = (m + 1) * n;
    let alpha = &workspace[start..start + steps];
    let beta = &workspace[start + m..start + m + steps.saturating_sub(1)];
    Ok((alpha, beta))
}

/// Singular values of a skew-symmetric operator (descending) into `singular_values[..info.steps]`,
/// by Lanczos on `A` itself (Golub–Kahan in disguise, see the module docs): `|theta|` of the
/// eigenvalues `theta` of the symmetric tridiagonal with zero diagonal and the Lanczos `beta`s.
/// Each singular value of `A` appears twice, as it should; with [`LanczosInfo::inferred_zeros`]
/// zeros, the list is the whole singular spectrum.
///
/// Sizes and workspace as in [`lanczos`] (without vectors). Only `max_steps` and `seed` of
/// `options` are used: the run always goes to the whole spectrum (or `max_steps`).
pub fn skew_singular_values<T: Scalar, A: SkewOperator<T> + ?Sized>(
    op: &mut A,
    options: &LanczosOptions<T>,
    singular_values: &mut [T],
    workspace: &mut [T],
) -> Result<LanczosInfo<T>> {
    let n = op.size();
    let m = clamp_steps(n, options.max_steps);
    check_workspace(singular_values.len(), m)
        .map_err(|_| short("singular_values", m, singular_values.len()))?;
    check_workspace(workspace.len(), lanczos_workspace_len(n, m, false))?;
    let mut parts = split_workspace(workspace, n, m, false)?;
    let plan = Plan {
        max_steps: m,
        largest: 0,
        smallest: 0,
        tol: T::zero(),
        skew: true,
        restart: true,
        start: Start::Random,
    };
    let mut rng = SplitMix64::new(options.seed);
    let info = run(n, |x, y| op.apply(x, y), &plan, &mut rng, &mut parts)?;
    let k = info.steps;
    ritz_decomposition(&mut parts, k, false)?;
    let out = &mut singular_values[..k];
    for (o, &theta) in out.iter_mut().zip(parts.eig[..k].iter()) {
        *o = theta.abs();
    }
    out.sort_unstable_by(|a, b| b.partial_cmp(a).unwrap_or(core::cmp::Ordering::Equal));
    Ok(info)
}

/// The two ends of a symmetric operator's spectrum, from [`extreme_eigenvalues`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Extremes<T> {
    /// Smallest Ritz value (or `0` if zeros were inferred and all Ritz values are positive).
    /// A Ritz value never lies below `lambda_min`, so `smallest >= lambda_min`.
    pub smallest: T,
    /// Largest Ritz value (or `0` as above); `largest <= lambda_max`.
    pub largest: T,
    /// Residual `|beta_k e_k^T y|` of the smallest value: an eigenvalue lies within it.
    pub smallest_residual: T,
    /// Residual of the largest value.
    pub largest_residual: T,
    /// Whether both met the tolerance (false when `max_steps` came first).
    pub converged: bool,
    /// The run's information.
    pub info: LanczosInfo<T>,
}

/// Scratch elements [`extreme_eigenvalues`] needs: `lanczos_workspace_len(n, max_steps, false)`.
pub fn extreme_eigenvalues_workspace_len(n: usize, max_steps: usize) -> usize {
    lanczos_workspace_len(n, max_steps, false)
}

/// Smallest and largest eigenvalue of a symmetric operator, stopping when both Ritz values meet the
/// relative residual `tol` (see [`LanczosOptions::tol`]); for a semidefiniteness check
/// (`smallest >= -margin`) or a stability bound (`largest` of the symmetric part).
///
/// ```
/// use sd_attention::spectral::lanczos::lanczos::{extreme_eigenvalues, extreme_eigenvalues_workspace_len};
/// use sd_attention::spectral::lanczos::operator::FnOperator;
/// let n = 100; // A = diag(-1, 0, 1, ..., 98)
/// let mut op = FnOperator::new(n, |x: &[f64], y: &mut [f64]| {
///     for i in 0..x.len() {
///         y[i] = (i as f64 - 1.0) * x[i];
///     }
/// });
/// let mut workspace = vec![0.0; extreme_eigenvalues_workspace_len(n, 0)];
/// let ends = extreme_eigenvalues(&mut op, 1e-10, 0, 7, &mut workspace)?;
/// assert!((ends.smallest + 1.0).abs() < 1e-9 && (ends.largest - 98.0).abs() < 1e-9);
/// # Ok::<(), sd_attention::Error>(())
/// ```
pub fn extreme_eigenvalues<T: Scalar, A: SymmetricOperator<T> + ?Sized>(
    op: &mut A,
    tol: T,
    max_steps: usize,
    seed: u64,
    workspace: &mut [T],
) -> Result<Extremes<T>> {
    let n = op.size();
    if n == 0 {
        return Err(Error::Empty { what: "operator" });
    }
    let m = clamp_steps(n, max_steps);
    check_options(&LanczosOptions { max_steps: m, largest: 0, smallest: 0, tol, seed }, m)?;
    check_workspace(workspace.len(), lanczos_workspace_len(n, m, false))?;
    let mut parts = split_workspace(workspace, n, m, false)?;
    let largest_smallest = if m >= 2 { (1, 1) } else { (0, 0) };
    let plan = Plan {
        max_steps: m,
        largest: largest_smallest.0,
        smallest: largest_smallest.1,
        tol,
        skew: false,
        restart: false,
        start: Start::Random,
    };
    let mut rng = SplitMix64::new(seed);
    let info = run(n, |x, y| op.apply(x, y), &plan, &mut rng, &mut parts)?;
    let k = info.steps;
    // Residual factor: the last beta (zero at an invariant subspace or at k = n).
    let last_beta = parts.beta[k - 1];
    let (eig, off, row) = (&mut parts.eig[..k], &mut parts.off[..k - 1], &mut parts.row[..k]);
    eig.copy_from_slice(&parts.alpha[..k]);
    off.copy_from_slice(&parts.beta[..k - 1]);
    row.fill(T::zero());
    row[k - 1] = T::one();
    ql_implicit(eig, off, row, 1)?;
    sort_ascending(eig, row, 1);
    let (mut smallest, mut largest) = (eig[0], eig[k - 1]);
    let smallest_residual = (last_beta * row[0]).abs();
    let largest_residual = (last_beta * row[k - 1]).abs();
    if info.inferred_zeros > 0 {
        smallest = smallest.min(T::zero());
        largest = largest.max(T::zero());
    }
    let converged = info.termination != Termination::MaxSteps
        || (smallest_residual <= tol * smallest.abs() && largest_residual <= tol * largest.abs());
    Ok(Extremes { smallest, largest, smallest_residual, largest_residual, converged, info })
}
