//! Exact spectra of a head's routing `S` and filtering `D` from its factors (`docs/math.md`
//! section 9), by a thin QR and an eigenproblem of order `2 d_head`.
//!
//! With `A = [W_Q  W_K]` (`d_model x 2 d_head`), `S = A J_s A^T` and `D = A J_d A^T` where
//! `J_s = 1/2 [[0, I], [-I, 0]]` and `J_d = 1/2 [[0, I], [I, 0]]`. With `A = Q R`
//! ([`crate::linalg::qr`], `R` of order `k = min(d_model, 2 d_head)`), `S = Q (R J_s R^T) Q^T`: the nonzero
//! singular values of `S` are those of the small skew *core* `R J_s R^T`, the nonzero eigenvalues
//! of `D` those of the symmetric core `R J_d R^T`, and the other `d_model - k` values are zero.
//! With `R = [R_1  R_2]` (columns of `W_Q` and of `W_K`), both cores are the parts of one matrix,
//! `M_c = R_1 R_2^T`: `R J_s R^T = (M_c - M_c^T) / 2`, `R J_d R^T = (M_c + M_c^T) / 2`. An S-D
//! head is the same with `A = [U  V]` and `M_c - M_c^T` for routing, and `-R R^T` of the QR of `C`
//! for filtering. `Q` is never formed.
//!
//! ## The small eigenproblems
//! * **Skew core** ([`skew_singular_values`]): Householder reductions `K -> H K H` to a skew
//!   tridiagonal form with zero diagonal and off-diagonal `e_0..e_{k-2}` (the skew analogue of
//!   Golub & Van Loan section 8.3.1: for skew `K`, `H K H = K + tau (v p^T - p v^T)` with
//!   `p = K v`). Ordering the indices odd/even turns it into `[[0, B], [-B^T, 0]]` with `B`
//!   bidiagonal (entries `e_0, e_1, e_2, ...` alternating between its diagonal and superdiagonal),
//!   so the singular values of `K` are those of `B`, each twice. They are computed once, as the
//!   nonnegative eigenvalues of the Golub–Kahan form of `B` (zero diagonal, off-diagonal `e`), by
//!   the root-free QL/QR iteration of Pal, Walker and Kahan (as LAPACK's `dsterf`, beside the
//!   implicit QL of [`crate::spectral::lanczos::tridiagonal`]), and each is written twice: the
//!   pairs `+-i sigma` of the skew core are equal exactly, not to rounding.
//! * **Symmetric core** ([`symmetric_eigenvalues`]): Householder tridiagonalization (Golub & Van Loan
//!   section 8.3.1) and the same root-free iteration.
//!
//! Both reductions run their matrix-vector products and rank-2 updates through the crate's
//! register-blocked product kernel.
//!
//! ## Accuracy
//! Every step is backward stable: the QR (see [`crate::linalg::qr`]), the product `M_c`, the reductions and
//! QL each perturb the operator by a few `eps` times its norm, so every singular value of `S` (and
//! eigenvalue of `D`) carries an absolute error of order `eps (d_model + k) ||A||^2` (Weyl), the
//! accuracy of LAPACK's dense SVD of the formed `S`. Small values are accurate relative to the
//! largest, not to themselves.
//!
//! ## Which path pays
//! * **This module** whenever the operator has a factor form of small width: `O(d_model d_head^2)`
//!   for the QR plus `O(d_head^3)` for the cores, the whole spectrum, deterministic. At
//!   `d_model 768, d_head 64` it gives `S` and `D` together in about a sixth of the CPU time
//!   Lanczos takes for `S` alone (11x against Lanczos for both), and about twice as fast as LAPACK
//!   (through numpy) on the same QR-plus-cores route (`docs/performance.md`; `benches/spectra.rs`,
//!   `benches/numpy_spectra.py`).
//! * **Lanczos** ([`crate::spectral::spectrum::head_spectrum_lanczos`], [`crate::spectral::lanczos`]) for operators known
//!   only through products `x -> A x` (no factor form), or when a few extreme values suffice.
//! * **Stochastic Lanczos quadrature** ([`crate::spectral::lanczos::slq`]) for operators of high rank (thousands),
//!   where neither the whole spectrum nor a core of small order is within reach; it returns an
//!   estimate with a standard error. A head's rank is at most `2 d_head`, so SLQ does not pay there.

use crate::error::{check_len, check_matrix, check_workspace};
use crate::linalg::kernel;
use crate::linalg::microkernel::gemm_rows;
use crate::linalg::qr::{qr_in_place_unchecked, qr_in_place_workspace_len, r_from_factored, reflector};
use crate::spectral::erank::{default_rank_tolerance, effective_ranks};
use crate::spectral::factored::FactoredKernel;
use crate::spectral::lanczos::tridiagonal::{eigenvalues_root_free, sort_ascending};
use crate::spectral::spectrum::HeadSpectrum;
use crate::spectral::split::Energies;
use crate::workspace::{carve, Req};
use crate::{Error, Result, Scalar};

/// Scratch elements of [`skew_singular_values`] and [`symmetric_eigenvalues`] for order `n`:
/// `100 n + 64` (the reduction's panels of 16 vectors, and the tridiagonal form).
pub fn core_workspace_len(n: usize) -> usize {
    core_req(n).saturating()
}

/// [`core_workspace_len`] as a requirement: the panels' `V^T, Y^T` (`PANEL x n` each) and their
/// packed copies (`2 PANEL x n` each), a row and `K v` (`n` each), two short vectors, and the
/// tridiagonal form (`2 n`).
fn core_req(n: usize) -> Req {
    Req::all_of([Req::array(n, 6 * PANEL + 4), Req::new(4 * PANEL)])
}

/// Singular values (descending) of the skew-symmetric `n x n` row-major `skew`, which is destroyed:
/// each nonzero value appears twice, in exactly equal pairs (the eigenvalues of a real skew matrix
/// are `+-i sigma`), and an odd order adds one zero. `sigma` has length `n`, `workspace`
/// [`core_workspace_len`]`(n)` elements.
///
/// Errors: NaN or infinity in `skew` ([`Error::NonFinite`]); [`Error::NoConvergence`] from the QL
/// iteration (not observed in practice).
///
/// ```
/// use sd_attention::spectral::exact::{core_workspace_len, skew_singular_values};
/// // One rotation plane of angle speed 3, plus a null direction.
/// let mut skew = [0.0, 3.0, 0.0, -3.0, 0.0, 0.0, 0.0, 0.0, 0.0f64];
/// let mut sigma = [0.0; 3];
/// let mut workspace = vec![0.0; core_workspace_len(3)];
/// skew_singular_values(3, &mut skew, &mut sigma, &mut workspace)?;
/// assert_eq!(sigma, [3.0, 3.0, 0.0]);
/// # Ok::<(), sd_attention::Error>(())
/// ```
pub fn skew_singular_values<T: Scalar>(
    n: usize,
    skew: &mut [T],
    sigma: &mut [T],
    workspace: &mut [T],
) -> Result<()> {
    check_matrix("skew", skew.len(), n, n)?;
    check_len("sigma", sigma.len(), n)?;
    check_workspace(workspace.len(), core_workspace_len(n))?;
    if let Some(index) = skew.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite { what: "skew", index });
    }
    skew_values(n, skew, sigma, workspace)
}

/// Eigenvalues (ascending) of the symmetric `n x n` row-major `symmetric`, which is destroyed, by
/// Householder tridiagonalization and the root-free QL/QR iteration. `lambda` has length `n`, `workspace`
/// [`core_workspace_len`]`(n)` elements. Errors as in [`skew_singular_values`].
///
/// ```
/// use sd_attention::spectral::exact::{core_workspace_len, symmetric_eigenvalues};
/// let mut symmetric = [2.0, 1.0, 0.0, 1.0, 2.0, 0.0, 0.0, 0.0, -1.0f64];
/// let mut lambda = [0.0; 3];
/// let mut workspace = vec![0.0; core_workspace_len(3)];
/// symmetric_eigenvalues(3, &mut symmetric, &mut lambda, &mut workspace)?;
/// assert!((lambda[0] + 1.0).abs() < 1e-15 && (lambda[1] - 1.0).abs() < 1e-15);
/// assert!((lambda[2] - 3.0).abs() < 1e-15);
/// # Ok::<(), sd_attention::Error>(())
/// ```
pub fn symmetric_eigenvalues<T: Scalar>(
    n: usize,
    symmetric: &mut [T],
    lambda: &mut [T],
    workspace: &mut [T],
) -> Result<()> {
    check_matrix("symmetric", symmetric.len(), n, n)?;
    check_len("lambda", lambda.len(), n)?;
    check_workspace(workspace.len(), core_workspace_len(n))?;
    if let Some(index) = symmetric.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite { what: "symmetric", index });
    }
    symmetric_values(n, symmetric, lambda, workspace)
}

/// Reflections accumulated before the trailing block is updated (see [`tridiagonalize`]).
const PANEL: usize = 16;

/// Reduces `K` (`n x n`, skew or symmetric) by `n - 2` two-sided reflections to tridiagonal form:
/// `offdiag[j] = K[j][j+1]` after the reduction, and `diag[j] = K[j][j]` for the symmetric case.
///
/// Blocked as LAPACK's `sytrd`/`latrd` (Golub & Van Loan section 8.3.1 with the WY idea): within a
/// panel of [`PANEL`] steps the matrix is left as it was at the panel's start, `K_0`, and the
/// current one is `K = K_0 + V Y^T + s Y V^T`, with the reflection vectors as the columns of `V`
/// and `s = 1`, `Y = -W` (symmetric: `K -= v w^T + w v^T`) or `s = -1`, `Y = tau K v` (skew:
/// `K += tau (v p^T - p v^T)`). Each step reads its row of `K` and multiplies `K v` through `K_0`
/// plus the corrections, and the trailing block takes the panel's `V Y^T + s Y V^T` in one product
/// of inner dimension `2 PANEL`: the matrix is streamed once per step instead of three times.
fn tridiagonalize<T: Scalar>(
    n: usize,
    k: &mut [T],
    skew: bool,
    diag: &mut [T],
    offdiag: &mut [T],
    scratch: &mut [T],
) {
    let (vt, rest) = scratch.split_at_mut(PANEL * n);
    let (yt, rest) = rest.split_at_mut(PANEL * n);
    let (vy, rest) = rest.split_at_mut(2 * PANEL * n);
    let (yvt, rest) = rest.split_at_mut(2 * PANEL * n);
    let (row, rest) = rest.split_at_mut(n);
    let (q, rest) = rest.split_at_mut(n);
    let (coef, rest) = rest.split_at_mut(2 * PANEL);
    let dots = &mut rest[..2 * PANEL];
    let s = if skew { -T::one() } else { T::one() };
    let mut panel_start = 0;
    while panel_start < n {
        let panel_end = (panel_start + PANEL).min(n);
        for j in panel_start..panel_end {
            let i = j - panel_start;
            let len = n - j;
            // Row j of the current K, from column j: K_0[j] + V[j] Y^T + s Y[j] V^T.
            let row = &mut row[..len];
            row.copy_from_slice(&k[j * n + j..(j + 1) * n]);
            if i > 0 {
                let (cv, cy) = coef.split_at_mut(PANEL);
                for l in 0..i {
                    cv[l] = vt[l * n + j];
                    cy[l] = yt[l * n + j];
                }
                gemm_rows(1, i, len, T::one(), &cv[..i], i, &yt[j..], n, row, len, true);
                gemm_rows(1, i, len, s, &cy[..i], i, &vt[j..], n, row, len, true);
            }
            diag[j] = if skew { T::zero() } else { row[0] };
            vt[i * n..(i + 1) * n].fill(T::zero());
            yt[i * n..(i + 1) * n].fill(T::zero());
            if j + 1 == n {
                break;
            }
            let m = len - 1;
            let v = &mut row[1..];
            let (beta, tau) = reflector(v);
            offdiag[j] = beta;
            if tau == T::zero() {
                // H = I: this step's V and Y columns are zero.
                for vy_row in vy[(j + 1) * 2 * PANEL..].chunks_exact_mut(2 * PANEL) {
                    vy_row[i] = T::zero();
                    vy_row[PANEL + i] = T::zero();
                }
                continue;
            }
            // q = K v = K_0 v + V (Y^T v) + s Y (V^T v), the first as a row: K_0^T = -+K_0. The
            // inner products Y^T v and V^T v are row-vector products with the columns of `vy`.
            let q = &mut q[..m];
            let sign = if skew { -T::one() } else { T::one() };
            gemm_rows(1, m, m, sign, v, m, &k[(j + 1) * n + j + 1..], n, q, m, false);
            if i > 0 {
                let (t1, t2) = dots.split_at_mut(PANEL);
                let below = &vy[(j + 1) * 2 * PANEL..];
                gemm_rows(1, m, i, T::one(), v, m, &below[PANEL..], 2 * PANEL, t1, i, false);
                gemm_rows(1, m, i, T::one(), v, m, below, 2 * PANEL, t2, i, false);
                gemm_rows(1, i, m, T::one(), &t1[..i], i, &vt[j + 1..], n, q, m, true);
                gemm_rows(1, i, m, s, &t2[..i], i, &yt[j + 1..], n, q, m, true);
            }
            let y = &mut yt[i * n + j + 1..(i + 1) * n];
            if skew {
                for (yl, &ql) in y.iter_mut().zip(q.iter()) {
                    *yl = tau * ql;
                }
            } else {
                // w = tau q - (tau^2 / 2) (q . v) v, and Y = -w.
                let half = T::HALF * tau * tau * kernel::dot(q, v);
                for ((yl, &ql), &vl) in y.iter_mut().zip(q.iter()).zip(v.iter()) {
                    *yl = half * vl - tau * ql;
                }
            }
            vt[i * n + j + 1..(i + 1) * n].copy_from_slice(v);
            for (r, vy_row) in vy[(j + 1) * 2 * PANEL..].chunks_exact_mut(2 * PANEL).enumerate() {
                vy_row[i] = v[r];
                vy_row[PANEL + i] = yt[i * n + j + 1 + r];
            }
        }
        // Trailing block: K_0 += [V Y] [Y^T; s V^T] on rows and columns panel_end... (a full
        // panel: only the last one can be shorter, and nothing trails it).
        let (t, ip) = (panel_end, panel_end - panel_start);
        if t < n {
            debug_assert_eq!(ip, PANEL);
            let rest_len = n - t;
            let width = 2 * ip;
            for l in 0..ip {
                yvt[l * rest_len..(l + 1) * rest_len].copy_from_slice(&yt[l * n + t..(l + 1) * n]);
                for (out, &x) in yvt[(ip + l) * rest_len..(ip + l + 1) * rest_len]
                    .iter_mut()
                    .zip(&vt[l * n + t..(l + 1) * n])
                {
                    *out = s * x;
                }
            }
            let (a, b) = (&vy[t * width..n * width], &yvt[..width * rest_len]);
            gemm_rows(
                rest_len,
                width,
                rest_len,
                T::one(),
                a,
                width,
                b,
                rest_len,
                &mut k[t * n + t..],
                n,
                true,
            );
        }
        panel_start = panel_end;
    }
}

/// [`skew_singular_values`] on validated input.
pub(crate) fn skew_values<T: Scalar>(
    n: usize,
    k: &mut [T],
    sigma: &mut [T],
    workspace: &mut [T],
) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let (diag, rest) = workspace.split_at_mut(n);
    let (offdiag, scratch) = rest.split_at_mut(n);
    tridiagonalize(n, k, true, diag, offdiag, scratch);
    // Golub–Kahan form of the bidiagonal B: zero diagonal, off-diagonal e. Its eigenvalues are
    // +-sigma_k(B) (and a zero for odd n); the top half are the singular values, each once.
    diag.fill(T::zero());
    eigenvalues_root_free(diag, &mut offdiag[..n - 1])?;
    // Values at rounding level may come out on either side of zero: make them nonnegative and sort
    // the top half again (descending) before writing each twice.
    let pairs = n / 2;
    let top = &mut diag[n - pairs..];
    for value in top.iter_mut() {
        *value = value.abs();
    }
    sort_ascending(top, &mut [], 0);
    for i in 0..pairs {
        let value = top[pairs - 1 - i];
        sigma[2 * i] = value;
        sigma[2 * i + 1] = value;
    }
    if n % 2 == 1 {
        sigma[n - 1] = T::zero();
    }
    Ok(())
}

/// [`symmetric_eigenvalues`] on validated input.
pub(crate) fn symmetric_values<T: Scalar>(
    n: usize,
    k: &mut [T],
    lambda: &mut [T],
    workspace: &mut [T],
) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let (offdiag, scratch) = workspace.split_at_mut(n);
    tridiagonalize(n, k, false, lambda, offdiag, scratch);
    eigenvalues_root_free(lambda, &mut offdiag[..n - 1])
}

/// Order of the cores of a pair `[X  Y]` of `d_model x width` factors: `min(d_model, 2 width)`.
pub fn pair_core_order(d_model: usize, width: usize) -> usize {
    d_model.min(width.saturating_mul(2))
}

/// Scratch of [`pair_core`]: `A^T`, `tau`, the QR's, `R_1`, `R_2^T`.
fn pair_core_req(d_model: usize, width: usize) -> Req {
    let cols = width.saturating_mul(2);
    let k = d_model.min(cols);
    Req::all_of([
        Req::array(d_model, cols),
        Req::new(k),
        Req::new(qr_in_place_workspace_len(d_model, cols)),
        Req::array(k, width).times(2),
    ])
}
/// `M_c = R_1 R_2^T` (`k x k`, `k = min(d_model, 2 width)`) of the thin QR of `[X  Y]`, written to
/// `core`; `x`, `y` are `d_model x width` row-major and finite.
fn pair_core<T: Scalar>(d_model: usize, width: usize, x: &[T], y: &[T], core: &mut [T], workspace: &mut [T]) {
    let cols = 2 * width;
    let k = d_model.min(cols);
    let qr_len = qr_in_place_workspace_len(d_model, cols);
    let ([a_t, tau, qr_scratch, r1, r2t], _) =
        carve(workspace, [d_model * cols, k, qr_len, k * width, width * k]).expect("sized by pair_core_req");
    kernel::transpose(d_model, width, x, &mut a_t[..width * d_model]);
    kernel::transpose(d_model, width, y, &mut a_t[width * d_model..]);
    qr_in_place_unchecked(d_model, cols, a_t, tau, qr_scratch);
    // R_1 (k x width): R[i][j] = a_t[j d_model + i] for i <= j; R_2^T (width x k): row j is column
    // width + j of R, whose entries below the diagonal hold Householder vectors (zeroed here).
    for i in 0..k {
        for j in 0..width {
            r1[i * width + j] = if i <= j { a_t[j * d_model + i] } else { T::zero() };
        }
    }
    for j in 0..width {
        let column = &a_t[(width + j) * d_model..(width + j) * d_model + k];
        let out = &mut r2t[j * k..(j + 1) * k];
        let last = (width + j + 1).min(k);
        out[..last].copy_from_slice(&column[..last]);
        out[last..].fill(T::zero());
    }
    // Rows of R_1 below `width` are zero, so only its first min(k, width) rows contribute.
    let top = k.min(width);
    gemm_rows(top, width, k, T::one(), r1, width, r2t, k, core, k, false);
    core[top * k..k * k].fill(T::zero());
}

/// Scratch elements of [`head_values`]: the QR of `[W_Q  W_K]` and two cores of order
/// `k = min(d_model, 2 d_head)`; `usize::MAX` on overflow.
pub fn head_values_workspace_len(d_model: usize, d_head: usize) -> usize {
    head_values_req(d_model, d_head).saturating()
}

fn head_values_req(d_model: usize, d_head: usize) -> Req {
    let k = pair_core_order(d_model, d_head);
    Req::all_of([Req::array(k, k).times(3), core_req(k), pair_core_req(d_model, d_head)])
}
/// The exact spectra of a softmax head's `S` and `D` (`docs/math.md` section 9): the singular values
/// of routing `S` (descending, in exactly equal pairs) into `routing` and the eigenvalues of
/// filtering `D` (ascending) into `filtering`, both of length [`pair_core_order`]`(d_model, d_head)`
/// `= k`; the other `d_model - k` values of each are zero. Returns `(||S||_F^2, ||D||_F^2)` as
/// [`Energies`], from the cores (accurate to a few `eps ||M||_F^2`, without the cancellation of
/// [`FactoredKernel::energies`]).
///
/// `workspace` needs [`head_values_workspace_len`] elements. NaN or infinity in the factors is
/// rejected with [`Error::NonFinite`].
///
/// ```
/// use sd_attention::spectral::exact::{head_values, head_values_workspace_len};
/// use sd_attention::spectral::factored::FactoredKernel;
/// // d_model 3, d_head 1: M = q k^T with q = e_0, k = 2 e_1: S is one rotation plane of speed 1.
/// let (w_q, w_k) = ([1.0f64, 0.0, 0.0], [0.0f64, 2.0, 0.0]);
/// let head = FactoredKernel::new(3, 1, &w_q, &w_k)?;
/// let (mut routing, mut filtering) = ([0.0; 2], [0.0; 2]);
/// let mut workspace = vec![0.0; head_values_workspace_len(3, 1)];
/// head_values(&head, &mut routing, &mut filtering, &mut workspace)?;
/// assert!((routing[0] - 1.0).abs() < 1e-15 && routing[0] == routing[1]);
/// assert!((filtering[0] + 1.0).abs() < 1e-15 && (filtering[1] - 1.0).abs() < 1e-15);
/// # Ok::<(), sd_attention::Error>(())
/// ```
pub fn head_values<T: Scalar>(
    head: &FactoredKernel<'_, T>,
    routing: &mut [T],
    filtering: &mut [T],
    workspace: &mut [T],
) -> Result<Energies<T>> {
    let (d_model, d_head) = (head.d_model(), head.d_head());
    let k = pair_core_order(d_model, d_head);
    check_len("routing", routing.len(), k)?;
    check_len("filtering", filtering.len(), k)?;
    check_workspace(workspace.len(), head_values_workspace_len(d_model, d_head))?;
    check_finite("w_q", head.w_q())?;
    check_finite("w_k", head.w_k())?;
    let ([core, skew, symmetric, core_scratch], qr_scratch) =
        carve(workspace, [k * k, k * k, k * k, core_workspace_len(k)])?;
    pair_core(d_model, d_head, head.w_q(), head.w_k(), core, qr_scratch);
    let energies = split_core(k, core, T::HALF, skew, Some(symmetric));
    finish_values(k, skew, symmetric, routing, filtering, core_scratch)?;
    Ok(energies)
}

/// Writes `scale (M_c - M_c^T)` into `skew` and `scale (M_c + M_c^T)` into `symmetric` (when given);
/// returns their squared Frobenius norms.
fn split_core<T: Scalar>(
    k: usize,
    core: &[T],
    scale: T,
    skew: &mut [T],
    symmetric: Option<&mut [T]>,
) -> Energies<T> {
    let mut energies = Energies { routing: T::zero(), filtering: T::zero() };
    for i in 0..k {
        for j in 0..k {
            let (m_ij, m_ji) = (core[i * k + j], core[j * k + i]);
            let s = scale * (m_ij - m_ji);
            skew[i * k + j] = s;
            energies.routing += s * s;
        }
    }
    if let Some(symmetric) = symmetric {
        for i in 0..k {
            for j in 0..k {
                let d = scale * (core[i * k + j] + core[j * k + i]);
                symmetric[i * k + j] = d;
                energies.filtering += d * d;
            }
        }
    }
    energies
}

fn finish_values<T: Scalar>(
    k: usize,
    skew: &mut [T],
    symmetric: &mut [T],
    routing: &mut [T],
    filtering: &mut [T],
    scratch: &mut [T],
) -> Result<()> {
    skew_values(k, skew, routing, scratch)?;
    let n = filtering.len();
    symmetric_values(n, &mut symmetric[..n * n], filtering, scratch)
}

fn check_finite<T: Scalar>(what: &'static str, x: &[T]) -> Result<()> {
    match x.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(Error::NonFinite { what, index }),
        None => Ok(()),
    }
}

/// Scratch elements of [`sd_values`] for an S-D head with `U, V`: `d_model x rank_routing` and
/// `C`: `d_model x rank_filtering`; `usize::MAX` on overflow.
pub fn sd_values_workspace_len(d_model: usize, rank_routing: usize, rank_filtering: usize) -> usize {
    sd_values_req(d_model, rank_routing, rank_filtering).saturating()
}

/// Routing (two cores and the QR of `[U V]`), then filtering in the same memory (one core, the QR
/// of `C`, `R` and `R^T`).
fn sd_values_req(d_model: usize, rank_routing: usize, rank_filtering: usize) -> Req {
    let k = pair_core_order(d_model, rank_routing);
    let routing = Req::all_of([Req::array(k, k).times(2), core_req(k), pair_core_req(d_model, rank_routing)]);
    Req::any_of([routing, filtering_req(d_model, rank_filtering)])
}

fn filtering_req(d_model: usize, width: usize) -> Req {
    let kc = d_model.min(width);
    Req::all_of([
        Req::array(kc, kc),
        core_req(kc),
        Req::array(d_model, width),
        Req::new(kc),
        Req::new(qr_in_place_workspace_len(d_model, width)),
        Req::array(kc, width).times(2),
    ])
}

/// The exact spectra of an S-D head (`S = U V^T - V U^T`, `D = -C C^T`; `docs/math.md` sections 5
/// and 9): singular values of `S` (descending, exactly equal pairs) into `routing`, of length
/// `min(d_model, 2 rank_routing)`, and eigenvalues of `D` (ascending, all `<= 0`) into `filtering`,
/// of length `min(d_model, rank_filtering)`; the other values are zero. `u`, `v` are
/// `d_model x rank_routing`, `c` is `d_model x rank_filtering`, row-major. Returns the energies
/// from the cores. `workspace` needs [`sd_values_workspace_len`] elements; NaN or infinity in a
/// factor is rejected with [`Error::NonFinite`].
#[allow(clippy::too_many_arguments)]
pub fn sd_values<T: Scalar>(
    d_model: usize,
    rank_routing: usize,
    rank_filtering: usize,
    u: &[T],
    v: &[T],
    c: &[T],
    routing: &mut [T],
    filtering: &mut [T],
    workspace: &mut [T],
) -> Result<Energies<T>> {
    let k = pair_core_order(d_model, rank_routing);
    let kc = d_model.min(rank_filtering);
    check_matrix("u", u.len(), d_model, rank_routing)?;
    check_matrix("v", v.len(), d_model, rank_routing)?;
    check_matrix("c", c.len(), d_model, rank_filtering)?;
    check_len("routing", routing.len(), k)?;
    check_len("filtering", filtering.len(), kc)?;
    check_workspace(workspace.len(), sd_values_workspace_len(d_model, rank_routing, rank_filtering))?;
    check_finite("u", u)?;
    check_finite("v", v)?;
    check_finite("c", c)?;
    // Routing: the core of [U V] with J = [[0, I], [-I, 0]], i.e. M_c - M_c^T.
    let ([core, skew, core_scratch], qr_scratch) = carve(workspace, [k * k, k * k, core_workspace_len(k)])?;
    pair_core(d_model, rank_routing, u, v, core, qr_scratch);
    let mut energies = split_core(k, core, T::one(), skew, None);
    skew_values(k, skew, routing, core_scratch)?;
    // Filtering: -R R^T of the QR of C (order kc = min(d_model, q)).
    let q = rank_filtering;
    let lens = [
        kc * kc,
        core_workspace_len(kc),
        d_model * q,
        kc,
        qr_in_place_workspace_len(d_model, q),
        kc * q,
        q * kc,
    ];
    let ([symmetric, core_scratch, a_t, tau, qr_scratch, r, r_t], _) = carve(workspace, lens)?;
    kernel::transpose(d_model, q, c, a_t);
    qr_in_place_unchecked(d_model, q, a_t, tau, qr_scratch);
    r_from_factored(d_model, q, a_t, r);
    kernel::transpose(kc, q, r, r_t);
    gemm_rows(kc, q, kc, -T::one(), r, q, r_t, kc, symmetric, kc, false);
    energies.filtering = symmetric.iter().map(|&x| x * x).sum();
    symmetric_values(kc, symmetric, filtering, core_scratch)?;
    Ok(energies)
}

/// Scratch elements of [`head_spectrum`]: [`head_values_workspace_len`] plus the two value lists.
pub fn head_spectrum_workspace_len(d_model: usize, d_head: usize) -> usize {
    let k = pair_core_order(d_model, d_head);
    Req::array(k, 2).and(head_values_req(d_model, d_head)).saturating()
}
/// The spectrum report of a softmax head ([`HeadSpectrum`], `docs/math.md` sections 1, 2 and 9)
/// from the exact spectra of [`head_values`]: `O(d_model d_head^2 + d_head^3)`, deterministic.
/// `steps` holds the order of the two cores. The numerical ranks count the values above both
/// `d_model eps max(||S||_2, ||D||_2)` (as the Lanczos report) and the rounding level of this
/// path, `k eps ||A||_F^2 / 2` with `||A||_F^2 = ||W_Q||_F^2 + ||W_K||_F^2`, below which a computed
/// value cannot be told from zero. `workspace` needs [`head_spectrum_workspace_len`].
///
/// ```
/// use sd_attention::spectral::exact::{head_spectrum, head_spectrum_workspace_len};
/// use sd_attention::spectral::factored::FactoredKernel;
/// // d_model 3, d_head 1: M = q k^T with q = e_0, k = e_1, a shear: S is one rotation plane.
/// let (w_q, w_k) = ([1.0f64, 0.0, 0.0], [0.0f64, 1.0, 0.0]);
/// let head = FactoredKernel::new(3, 1, &w_q, &w_k)?;
/// let mut workspace = vec![0.0; head_spectrum_workspace_len(3, 1)];
/// let report = head_spectrum(&head, &mut workspace)?;
/// assert!((report.routing.entropy - 2.0).abs() < 1e-12); // one plane: erank exactly 2
/// assert_eq!(report.routing.numerical, 2);
/// # Ok::<(), sd_attention::Error>(())
/// ```
pub fn head_spectrum<T: Scalar>(
    head: &FactoredKernel<'_, T>,
    workspace: &mut [T],
) -> Result<HeadSpectrum<T>> {
    let (d_model, d_head) = (head.d_model(), head.d_head());
    check_workspace(workspace.len(), head_spectrum_workspace_len(d_model, d_head))?;
    let k = pair_core_order(d_model, d_head);
    let ([routing, filtering], rest) = carve(workspace, [k, k])?;
    let energies = head_values(head, routing, filtering, rest)?;
    // Rounding level of the values: k eps ||A||_F^2 ||J|| with ||J|| = 1/2.
    let a_norm_sq = kernel::sum_of_squares(head.w_q()) + kernel::sum_of_squares(head.w_k());
    let noise = T::of_usize(k) * T::EPS * a_norm_sq * T::HALF;
    report(d_model, head.routing_rank_bound(), energies, routing, filtering, [k, k], [noise, noise])
}

/// Scratch elements of [`sd_head_spectrum`].
pub fn sd_head_spectrum_workspace_len(d_model: usize, rank_routing: usize, rank_filtering: usize) -> usize {
    let values = Req::new(pair_core_order(d_model, rank_routing)).and(Req::new(d_model.min(rank_filtering)));
    values.and(sd_values_req(d_model, rank_routing, rank_filtering)).saturating()
}
/// The spectrum report of an S-D head from [`sd_values`]; `rank_bound` is `min(d_model, 2 r)`.
#[allow(clippy::too_many_arguments)]
pub fn sd_head_spectrum<T: Scalar>(
    d_model: usize,
    rank_routing: usize,
    rank_filtering: usize,
    u: &[T],
    v: &[T],
    c: &[T],
    workspace: &mut [T],
) -> Result<HeadSpectrum<T>> {
    check_workspace(workspace.len(), sd_head_spectrum_workspace_len(d_model, rank_routing, rank_filtering))?;
    let (k, kc) = (pair_core_order(d_model, rank_routing), d_model.min(rank_filtering));
    let ([routing, filtering], rest) = carve(workspace, [k, kc])?;
    let energies = sd_values(d_model, rank_routing, rank_filtering, u, v, c, routing, filtering, rest)?;
    let noise_s = T::of_usize(k) * T::EPS * (kernel::sum_of_squares(u) + kernel::sum_of_squares(v));
    let noise_d = T::of_usize(kc) * T::EPS * kernel::sum_of_squares(c);
    report(d_model, k, energies, routing, filtering, [k, kc], [noise_s, noise_d])
}

/// Effective ranks and norms from exact spectra (filtering eigenvalues are made absolute in place).
fn report<T: Scalar>(
    d_model: usize,
    rank_bound: usize,
    energies: Energies<T>,
    sigma_s: &mut [T],
    sigma_d: &mut [T],
    steps: [usize; 2],
    noise: [T; 2],
) -> Result<HeadSpectrum<T>> {
    for value in sigma_d.iter_mut() {
        *value = value.abs();
    }
    let largest = |sigma: &[T]| sigma.iter().fold(T::zero(), |m, &s| m.max(s));
    let (routing_norm, filtering_norm) = (largest(sigma_s), largest(sigma_d));
    // Numerical ranks count the values above `d_model eps max(||S||_2, ||D||_2)` (the kernel's
    // scale, so that a part at rounding level, e.g. D of an exactly skew kernel, has rank 0) and
    // above the rounding level of this path, `k eps ||A||_F^2 ||J||` (`noise`).
    let scale = routing_norm.max(filtering_norm);
    let tol = default_rank_tolerance::<T>(d_model, d_model);
    let relative = |norm: T, noise: T| {
        let threshold = (tol * scale).max(noise);
        if norm > T::zero() {
            threshold / norm
        } else {
            tol
        }
    };
    let routing = effective_ranks(sigma_s, relative(routing_norm, noise[0]))?;
    let filtering = effective_ranks(sigma_d, relative(filtering_norm, noise[1]))?;
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
        rank_bound,
        routing_norm,
        filtering_norm,
        energy_defect: [defect(sigma_s, energies.routing), defect(sigma_d, energies.filtering)],
        steps,
    })
}
