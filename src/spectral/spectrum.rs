//! Spectra of a head's routing and filtering parts, matrix-free from its factors `W_Q, W_K`
//! (`docs/math.md` sections 1–3): singular values of `S` and eigenvalues of `D` by Lanczos, each step one
//! product of `O(d_model d_head)` ([`crate::spectral::factored::FactoredKernel::apply`]), and the
//! [`HeadSpectrum`] report of a head (energies, `rho`, effective ranks, rank bound).
//!
//! [`head_spectrum`] reports from the exact spectra of [`crate::spectral::exact`] (thin QR of the factors
//! plus an eigenproblem of order `2 d_head`), the default: faster and exact. The Lanczos functions
//! here remain for operators without a factor form and as a cross-check
//! ([`head_spectrum_lanczos`]); see [`crate::spectral::exact`] for when each path pays.
//!
//! `S` and `D` have rank at most `min(2 d_head, d_model)`, so a run takes at most
//! [`head_spectrum_steps`] `= min(d_model, 2 d_head + 8)` steps: `2 d_head + 1` for the Krylov space
//! of a random start (the nonzero spectrum and one null direction), then a restart that finds the
//! complement null. The extra steps allow restarts for repeated values.

use crate::error::{check_workspace, Error};
use crate::spectral::erank::{default_rank_tolerance, effective_ranks, EffectiveRanks};
use crate::spectral::factored::FactoredKernel;
use crate::spectral::lanczos::lanczos::{
    lanczos, lanczos_workspace_len, skew_singular_values, LanczosInfo, LanczosOptions,
};
use crate::spectral::lanczos::operator::{Filtering, Routing};
use crate::spectral::split::Energies;
use crate::workspace::{carve, Req};
use crate::{Result, Scalar};

/// Largest Lanczos basis a head's spectrum needs: `min(d_model, 2 d_head + 8)`.
pub fn head_spectrum_steps(d_model: usize, d_head: usize) -> usize {
    d_model.min(d_head.saturating_mul(2).saturating_add(8))
}

/// Scratch elements of [`routing_singular_values`] and [`filtering_eigenvalues`]: the Lanczos
/// workspace for [`head_spectrum_steps`] plus `2 d_head` for the products.
pub fn head_values_workspace_len(d_model: usize, d_head: usize) -> usize {
    head_values_req(d_model, d_head).saturating()
}

/// The products' `2 d_head`, then the Lanczos workspace.
fn head_values_req(d_model: usize, d_head: usize) -> Req {
    Req::array(d_head, 2).and(Req::new(lanczos_workspace_len(
        d_model,
        head_spectrum_steps(d_model, d_head),
        false,
    )))
}

/// Scratch elements of [`head_spectrum_lanczos`]: [`head_values_workspace_len`], room for the two
/// value lists, and the energies' `2 d_head^2`.
pub fn head_spectrum_lanczos_workspace_len(d_model: usize, d_head: usize) -> usize {
    let steps = head_spectrum_steps(d_model, d_head);
    let values = Req::array(steps, 2).and(head_values_req(d_model, d_head));
    let energies = Req::array(d_head, d_head).times(2);
    Req::any_of([values, energies]).saturating()
}

/// The fixed seed of the head runs (results are deterministic).
const SEED: u64 = 0x5EED_0003;

/// Singular values of routing `S` (descending) into `singular_values[..info.steps]`; the other
/// `d_model - steps` singular values are zero (numerically, see [`LanczosInfo::inferred_zeros`]).
/// Each nonzero singular value appears twice (the spectrum of a real skew matrix).
/// `singular_values` needs [`head_spectrum_steps`] elements, `workspace`
/// [`head_values_workspace_len`]. NaN or infinity in the factors stops with [`Error::NonFinite`].
pub fn routing_singular_values<T: Scalar>(
    head: &FactoredKernel<'_, T>,
    singular_values: &mut [T],
    workspace: &mut [T],
) -> Result<LanczosInfo<T>> {
    let (d_model, d_head) = (head.d_model(), head.d_head());
    check_workspace(workspace.len(), head_values_workspace_len(d_model, d_head))?;
    let ([product_scratch], lanczos_workspace) = carve(workspace, [2 * d_head])?;
    let mut op = Routing::new(*head, product_scratch)?;
    let options =
        LanczosOptions { max_steps: head_spectrum_steps(d_model, d_head), seed: SEED, ..Default::default() };
    skew_singular_values(&mut op, &options, singular_values, lanczos_workspace)
}

/// Eigenvalues of filtering `D` (ascending) into `eigenvalues[..info.steps]`; the other
/// `d_model - steps` are zero. Sizes as in [`routing_singular_values`].
pub fn filtering_eigenvalues<T: Scalar>(
    head: &FactoredKernel<'_, T>,
    eigenvalues: &mut [T],
    workspace: &mut [T],
) -> Result<LanczosInfo<T>> {
    let (d_model, d_head) = (head.d_model(), head.d_head());
    check_workspace(workspace.len(), head_values_workspace_len(d_model, d_head))?;
    let ([product_scratch], lanczos_workspace) = carve(workspace, [2 * d_head])?;
    let mut op = Filtering::new(*head, product_scratch)?;
    let options =
        LanczosOptions { max_steps: head_spectrum_steps(d_model, d_head), seed: SEED, ..Default::default() };
    lanczos(&mut op, &options, eigenvalues, None, lanczos_workspace)
}

/// What the census reports for one head.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HeadSpectrum<T> {
    /// `||S||_F^2` and `||D||_F^2` from the factors ([`FactoredKernel::energies`]).
    pub energies: Energies<T>,
    /// `rho = ||S||^2 / ||M||^2` (0 for `M = 0`).
    pub routing_fraction: T,
    /// Effective ranks of the singular values of `S` (entropy, participation ratio, stable, and
    /// numerical: `#{s_k > d_model eps max(||S||_2, ||D||_2)}`, relative to the kernel's scale so
    /// that a part at rounding level has rank 0; its entropy-type ranks are then meaningless; the
    /// exact path also needs values above its own rounding level, see [`crate::spectral::exact::head_spectrum`]).
    pub routing: EffectiveRanks<T>,
    /// Effective ranks of the singular values `|lambda_k|` of `D`.
    pub filtering: EffectiveRanks<T>,
    /// Capacity `min(2 d_head, d_model)`: the largest rank `S` (and `D`) can have.
    pub rank_bound: usize,
    /// `||S||_2`, the largest singular value of `S`.
    pub routing_norm: T,
    /// `||D||_2`, the largest `|lambda|` of `D`.
    pub filtering_norm: T,
    /// `(sum s_k^2 - ||S||_F^2) / ||M||_F^2` and the same for `D`: how well the Lanczos spectra
    /// account for the energies computed from the factors (a few `d_model eps` when all is well).
    pub energy_defect: [T; 2],
    /// Lanczos steps taken for `S` and for `D` ([`head_spectrum_lanczos`]), or the orders of the
    /// two cores (exact path).
    pub steps: [usize; 2],
}

/// The spectrum report of one head (`docs/math.md` sections 1–2) from its exact spectra
/// ([`crate::spectral::exact::head_spectrum`]: a thin QR of `[W_Q  W_K]` and eigenproblems of order
/// `2 d_head`, `O(d_model d_head^2)`). [`head_spectrum_lanczos`] is the matrix-free alternative.
/// `workspace` needs [`head_spectrum_workspace_len`] elements.
///
/// ```
/// use sd_attention::spectral::factored::FactoredKernel;
/// use sd_attention::spectral::spectrum::{head_spectrum, head_spectrum_workspace_len};
/// // d_model 3, d_head 1: M = q k^T with q = e_0, k = e_1, a shear: S is one rotation plane.
/// let (w_q, w_k) = ([1.0f64, 0.0, 0.0], [0.0f64, 1.0, 0.0]);
/// let head = FactoredKernel::new(3, 1, &w_q, &w_k)?;
/// let mut workspace = vec![0.0; head_spectrum_workspace_len(3, 1)];
/// let report = head_spectrum(&head, &mut workspace)?;
/// assert!((report.routing.entropy - 2.0).abs() < 1e-12); // one plane: erank exactly 2
/// assert_eq!(report.routing.numerical, 2);
/// assert_eq!(report.rank_bound, 2);
/// # Ok::<(), sd_attention::Error>(())
/// ```
pub fn head_spectrum<T: Scalar>(
    head: &FactoredKernel<'_, T>,
    workspace: &mut [T],
) -> Result<HeadSpectrum<T>> {
    crate::spectral::exact::head_spectrum(head, workspace)
}

/// Scratch elements of [`head_spectrum`] ([`crate::spectral::exact::head_spectrum_workspace_len`]).
pub fn head_spectrum_workspace_len(d_model: usize, d_head: usize) -> usize {
    crate::spectral::exact::head_spectrum_workspace_len(d_model, d_head)
}

/// The spectrum report of one head (`docs/math.md` sections 1–2) by Lanczos, matrix-free: `O(d_model d_head^2)` in all.
///
/// ```
/// use sd_attention::spectral::factored::FactoredKernel;
/// use sd_attention::spectral::spectrum::{head_spectrum_lanczos, head_spectrum_lanczos_workspace_len};
/// // d_model 3, d_head 1: M = q k^T with q = e_0, k = e_1, a shear: S is one rotation plane.
/// let (w_q, w_k) = ([1.0f64, 0.0, 0.0], [0.0f64, 1.0, 0.0]);
/// let head = FactoredKernel::new(3, 1, &w_q, &w_k)?;
/// let mut workspace = vec![0.0; head_spectrum_lanczos_workspace_len(3, 1)];
/// let report = head_spectrum_lanczos(&head, &mut workspace)?;
/// assert!((report.routing.entropy - 2.0).abs() < 1e-12); // one plane: erank exactly 2
/// assert_eq!(report.routing.numerical, 2);
/// assert_eq!(report.rank_bound, 2);
/// # Ok::<(), sd_attention::Error>(())
/// ```
pub fn head_spectrum_lanczos<T: Scalar>(
    head: &FactoredKernel<'_, T>,
    workspace: &mut [T],
) -> Result<HeadSpectrum<T>> {
    let (d_model, d_head) = (head.d_model(), head.d_head());
    check_workspace(workspace.len(), head_spectrum_lanczos_workspace_len(d_model, d_head))?;
    let energies = head.energies(workspace)?;
    if !energies.total().is_finite() {
        return Err(Error::NonFinite { what: "w_q / w_k", index: 0 });
    }
    let steps = head_spectrum_steps(d_model, d_head);
    let ([routing_values, filtering_values], rest) = carve(workspace, [steps, steps])?;
    let routing_info = routing_singular_values(head, routing_values, rest)?;
    let filtering_info = filtering_eigenvalues(head, filtering_values, rest)?;
    let sigma_s = &mut routing_values[..routing_info.steps];
    let sigma_d = &mut filtering_values[..filtering_info.steps];
    for v in sigma_d.iter_mut() {
        *v = v.abs();
    }
    let largest = |sigma: &[T]| sigma.iter().fold(T::zero(), |m, &s| m.max(s));
    let (routing_norm, filtering_norm) = (largest(sigma_s), largest(sigma_d));
    // Numerical ranks at `d_model eps` relative to the kernel's scale max(||S||_2, ||D||_2), so that
    // a part at rounding level (e.g. D of an exactly skew kernel) has rank 0.
    let scale = routing_norm.max(filtering_norm);
    let tol = default_rank_tolerance::<T>(d_model, d_model);
    let relative_to_scale = |norm: T| if norm > T::zero() { tol * (scale / norm) } else { tol };
    let routing = effective_ranks(sigma_s, relative_to_scale(routing_norm))?;
    let filtering = effective_ranks(sigma_d, relative_to_scale(filtering_norm))?;
    let total = energies.total();
    let defect = |sigma: &[T], energy: T| {
        let sum: T = sigma.iter().map(|&s| s * s).sum();
        if total == T::zero() {
            sum
        } else {
            (sum - energy) / total
        }
    };
    Ok(HeadSpectrum {
        energies,
        routing_fraction: energies.routing_fraction(),
        routing,
        filtering,
        rank_bound: head.routing_rank_bound(),
        routing_norm,
        filtering_norm,
        energy_defect: [defect(sigma_s, energies.routing), defect(sigma_d, energies.filtering)],
        steps: [routing_info.steps, filtering_info.steps],
    })
}
