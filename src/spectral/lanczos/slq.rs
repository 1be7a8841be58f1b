//! Stochastic Lanczos quadrature (`docs/math.md` section 3; Ubaru, Chen & Saad 2017): estimates of spectral
//! sums `tr f(A) = sum_k f(lambda_k)` of a large symmetric operator, and from them the spectral
//! entropy and entropy effective rank, with standard errors.
//!
//! For each Rademacher probe `z` (`z_i = ±1`, [`SplitMix64`]), `steps` Lanczos steps from
//! `z / sqrt(n)` give `T_m = Q diag(theta) Q^T`; Gauss quadrature gives
//! `z^T f(A) z ~ n sum_j Q_{0j}^2 f(theta_j)`, an unbiased estimate of `tr f(A)` up to the
//! quadrature error (zero when the Krylov space becomes invariant before `steps`). The estimate is
//! the mean over probes; its standard error is the sample standard deviation over `sqrt(probes)`.

use crate::error::{check_workspace, Error};
use crate::rng::SplitMix64;
use crate::spectral::lanczos::lanczos::{lanczos_workspace_len, run, split_workspace, Plan, Start};
use crate::spectral::lanczos::operator::SymmetricOperator;
use crate::spectral::lanczos::tridiagonal::{ql_implicit, sort_ascending};
use crate::{Result, Scalar};

/// Options of the quadrature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlqOptions {
    /// Number of Rademacher probes (at least 2 for a standard error).
    pub probes: usize,
    /// Lanczos steps per probe (clamped to `n`; the quadrature is exact for polynomials of degree
    /// `2 steps - 1`).
    pub steps: usize,
    /// Seed of the probes.
    pub seed: u64,
}

/// An estimate with its standard error.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate<T> {
    /// The estimate.
    pub value: T,
    /// Its standard error (sample standard deviation over probes / `sqrt(probes)`).
    pub std_error: T,
}

/// Scratch elements of [`slq_trace`] and [`slq_effective_rank`]: the Lanczos workspace for
/// `min(steps, n)` steps (the first quadrature weights use `steps` more).
pub fn slq_workspace_len(n: usize, steps: usize) -> usize {
    lanczos_workspace_len(n, steps.max(1), false)
}

/// Runs every probe and hands `(nodes, weights)` of its quadrature (weights summing to 1) to
/// `visit`.
fn for_each_probe<T: Scalar, A: SymmetricOperator<T> + ?Sized>(
    op: &mut A,
    options: &SlqOptions,
    workspace: &mut [T],
    mut visit: impl FnMut(&[T], &[T]),
) -> Result<()> {
    let n = op.size();
    if n == 0 {
        return Err(Error::Empty { what: "operator" });
    }
    if options.probes < 2 {
        return Err(Error::InvalidParameter { what: "probes", expected: "at least 2" });
    }
    if options.steps == 0 {
        return Err(Error::InvalidParameter { what: "steps", expected: "at least 1" });
    }
    let m = options.steps.min(n);
    check_workspace(workspace.len(), slq_workspace_len(n, m))?;
    let mut parts = split_workspace(workspace, n, m, false)?;
    let plan = Plan {
        max_steps: m,
        largest: 0,
        smallest: 0,
        tol: T::zero(),
        skew: false,
        restart: false,
        start: Start::Given,
    };
    let mut rng = SplitMix64::new(options.seed);
    for _probe in 0..options.probes {
        for v in parts.basis[..n].iter_mut() {
            *v = rng.rademacher();
        }
        let info = run(n, |x, y| op.apply(x, y), &plan, &mut rng, &mut parts)?;
        let k = info.steps;
        let (nodes, off, weights) = (&mut parts.eig[..k], &mut parts.off[..k - 1], &mut parts.row[..k]);
        nodes.copy_from_slice(&parts.alpha[..k]);
        off.copy_from_slice(&parts.beta[..k - 1]);
        weights.fill(T::zero());
        weights[0] = T::one();
        ql_implicit(nodes, off, weights, 1)?;
        sort_ascending(nodes, weights, 1);
        for w in weights.iter_mut() {
            *w = *w * *w;
        }
        visit(nodes, weights);
    }
    Ok(())
}

/// Running mean and (co)variance of per-probe estimates (Welford), allocation-free.
#[derive(Clone, Copy, Default)]
struct Moments {
    count: f64,
    mean: [f64; 2],
    comoment: [[f64; 2]; 2],
}

impl Moments {
    fn push(&mut self, x: [f64; 2]) {
        self.count += 1.0;
        let delta = [x[0] - self.mean[0], x[1] - self.mean[1]];
        self.mean = [self.mean[0] + delta[0] / self.count, self.mean[1] + delta[1] / self.count];
        let after = [x[0] - self.mean[0], x[1] - self.mean[1]];
        for (row, d) in self.comoment.iter_mut().zip(delta) {
            for (c, a) in row.iter_mut().zip(after) {
                *c += d * a;
            }
        }
    }
    /// Covariance of the means.
    fn covariance_of_mean(&self, i: usize, j: usize) -> f64 {
        self.comoment[i][j] / (self.count - 1.0) / self.count
    }
}

/// `tr f(A)` of a symmetric operator by SLQ. `workspace`: [`slq_workspace_len`]. `f` receives Ritz
/// values (inside `[lambda_min, lambda_max]` up to rounding).
///
/// ```
/// use sd_attention::spectral::lanczos::operator::FnOperator;
/// use sd_attention::spectral::lanczos::slq::{slq_trace, slq_workspace_len, SlqOptions};
/// let n = 50; // A = diag(1..=50): tr A^2 = 42925; quadrature with 5 steps is exact for x^2
/// let mut op = FnOperator::new(n, |x: &[f64], y: &mut [f64]| {
///     for i in 0..x.len() {
///         y[i] = (i + 1) as f64 * x[i];
///     }
/// });
/// let options = SlqOptions { probes: 400, steps: 5, seed: 1 };
/// let mut workspace = vec![0.0; slq_workspace_len(n, 5)];
/// let estimate = slq_trace(&mut op, |x| x * x, &options, &mut workspace)?;
/// assert!((estimate.value - 42925.0).abs() < 4.0 * estimate.std_error + 1e-6);
/// # Ok::<(), sd_attention::Error>(())
/// ```
pub fn slq_trace<T: Scalar, A: SymmetricOperator<T> + ?Sized>(
    op: &mut A,
    mut f: impl FnMut(T) -> T,
    options: &SlqOptions,
    workspace: &mut [T],
) -> Result<Estimate<T>> {
    let n = T::of_usize(op.size()).as_f64();
    let mut moments = Moments::default();
    for_each_probe(op, options, workspace, |nodes, weights| {
        let quad: f64 = nodes.iter().zip(weights).map(|(&t, &w)| w.as_f64() * f(t).as_f64()).sum();
        moments.push([n * quad, 0.0]);
    })?;
    Ok(Estimate {
        value: T::of_f64(moments.mean[0]),
        std_error: T::of_f64(libm::sqrt(moments.covariance_of_mean(0, 0).max(0.0))),
    })
}

/// How the singular values `sigma` of the matrix of interest follow from the eigenvalues `lambda`
/// of the operator that SLQ runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SingularValuesFrom {
    /// The operator is the symmetric matrix itself: `sigma = |lambda|` (e.g. filtering `D`).
    Eigenvalues,
    /// The operator is a Gram matrix `X^T X`: `sigma = sqrt(max(lambda, 0))` (e.g.
    /// [`crate::spectral::lanczos::operator::RoutingGram`] for routing `S`).
    Gram,
}

/// Entropy effective rank and spectral entropy from SLQ.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EntropyEstimate<T> {
    /// `erank = exp(H)` (`docs/math.md` section 2).
    pub effective_rank: Estimate<T>,
    /// Spectral entropy `H = ln(sum sigma) - sum(sigma ln sigma) / sum sigma`.
    pub entropy: Estimate<T>,
    /// The nuclear norm `sum sigma = tr g(A)`.
    pub nuclear_norm: Estimate<T>,
}

/// Entropy effective rank of the singular values `sigma` of a matrix reached through `op`
/// (see [`SingularValuesFrom`]), from the two spectral sums `a = sum sigma` and
/// `b = sum sigma ln sigma` estimated on the same probes: `H = ln a - b / a`, `erank = exp(H)`.
/// Standard errors by the delta method from the probes' covariance of `(a, b)`. Returns
/// [`Error::InvalidValue`] if the estimate of `sum sigma` is not positive (e.g. `A = 0`).
pub fn slq_effective_rank<T: Scalar, A: SymmetricOperator<T> + ?Sized>(
    op: &mut A,
    from: SingularValuesFrom,
    options: &SlqOptions,
    workspace: &mut [T],
) -> Result<EntropyEstimate<T>> {
    let n = T::of_usize(op.size()).as_f64();
    let sigma = |lambda: f64| match from {
        SingularValuesFrom::Eigenvalues => libm::fabs(lambda),
        SingularValuesFrom::Gram => libm::sqrt(lambda.max(0.0)),
    };
    let mut moments = Moments::default();
    for_each_probe(op, options, workspace, |nodes, weights| {
        let (mut a, mut b) = (0.0, 0.0);
        for (&t, &w) in nodes.iter().zip(weights) {
            let s = sigma(t.as_f64());
            a += w.as_f64() * s;
            if s > 0.0 {
                b += w.as_f64() * s * libm::log(s);
            }
        }
        moments.push([n * a, n * b]);
    })?;
    let (a, b) = (moments.mean[0], moments.mean[1]);
    if !(a > 0.0 && a.is_finite()) {
        return Err(Error::InvalidValue { what: "sum of singular values", index: 0, expected: "positive" });
    }
    let entropy = libm::log(a) - b / a;
    // Gradient of H with respect to (a, b).
    let grad = [1.0 / a + b / (a * a), -1.0 / a];
    let mut var_h = 0.0;
    for i in 0..2 {
        for j in 0..2 {
            var_h += grad[i] * grad[j] * moments.covariance_of_mean(i, j);
        }
    }
    let se_h = libm::sqrt(var_h.max(0.0));
    let erank = libm::exp(entropy);
    Ok(EntropyEstimate {
        effective_rank: Estimate { value: T::of_f64(erank), std_error: T::of_f64(erank * se_h) },
        entropy: Estimate { value: T::of_f64(entropy), std_error: T::of_f64(se_h) },
        nuclear_norm: Estimate {
            value: T::of_f64(a),
            std_error: T::of_f64(libm::sqrt(moments.covariance_of_mean(0, 0).max(0.0))),
        },
    })
}
