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
    // ||T|| bound: an off-diagonal entry below eps ||T|| is negligible wherever it sits (the
    // absolute accuracy promised), which also ends the iteration on blocks at rounding level,
    // where the local test below alone may never be met (EISPACK `tql1` uses the same bound).
    let norm =
        (0..n).fold(T::zero(), |m, i| m.max(d[i].abs() + if i + 1 < n { e[i].abs() } else { T::zero() }));
    let negligible = T::EPS * norm;
    for l in 0..n {
        let mut sweeps = 0;
        loop {
            // Find the first negligible off-diagonal element at or after l: T splits there.
            let mut m = l;
            while m + 1 < n {
                let scale = d[m].abs() + d[m + 1].abs();
                if e[m].abs() <= T::EPS * scale || e[m].abs() <= negligible {
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
            let mut r = hypot(g, T::one());
            g = d[m] - d[l] + e[l] / (g + if g >= T::zero() { r } else { -r });
            let (mut s, mut c, mut p) = (T::one(), T::one(), T::zero());
            let mut deflated = false;
            let mut i = m;
            while i > l {
                i -= 1;
                let f = s * e[i];
                let b = c * e[i];
                r = hypot(f, g);
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
                // One division for both (it sits on the iteration's critical path); a subnormal r,
                // whose reciprocal overflows, divides instead.
                let inverse = r.recip();
                (s, c) = if inverse.is_finite() { (f * inverse, g * inverse) } else { (f / r, g / r) };
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

/// `sqrt(x^2 + y^2)` without the cost of a correctly rounded `hypot` where the squares can neither
/// overflow nor underflow (the QL inner loop takes one per rotation; `libm`'s `hypot` made it the
/// largest cost of a whole eigenvalue run), and by the correctly rounded `hypot` elsewhere. Within
/// that range
/// the plain formula is accurate to about one ulp.
#[inline]
fn hypot<T: Scalar>(x: T, y: T) -> T {
    let big = x.abs().max(y.abs());
    // Squares stay normal and finite for 1e-135 < big < 1e135 in f64 (1e-16 < big < 1e16 in f32).
    let (low, high) = if T::EPS < T::of_f64(1e-10) {
        (T::of_f64(1e-135), T::of_f64(1e135))
    } else {
        (T::of_f64(1e-16), T::of_f64(1e16))
    };
    if big > low && big < high {
        (x * x + y * y).sqrt()
    } else {
        x.hypot(y)
    }
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

/// Eigenvalues only (ascending, in `d`; `e` destroyed) of the symmetric tridiagonal `T` by the
/// root-free QL/QR iteration of Pal, Walker and Kahan as LAPACK's `dsterf` runs it: it works on
/// the squares `e_i^2`, so a rotation costs no square root and one reciprocal plus one division,
/// where [`ql_implicit`] needs a square root and a reciprocal; QL or QR is chosen per block so
/// that the iteration chases towards the smaller end. Blocks split where
/// `|e_i| <= eps sqrt(|d_i| |d_{i+1}|)` (LAPACK's test) or `|e_i| <= eps ||T||` (so that blocks at
/// rounding level end, as in [`ql_implicit`]). Absolute error a few `eps ||T||` per eigenvalue.
/// Input must be finite (callers validate).
pub(crate) fn eigenvalues_root_free<T: Scalar>(d: &mut [T], e: &mut [T]) -> Result<()> {
    let n = d.len();
    if n <= 1 {
        return Ok(());
    }
    let eps = T::EPS;
    let eps2 = eps * eps;
    let norm =
        (0..n).fold(T::zero(), |m, i| m.max(d[i].abs() + if i + 1 < n { e[i].abs() } else { T::zero() }));
    if norm == T::zero() {
        return Ok(());
    }
    let negligible = eps * norm;
    let negligible2 = negligible * negligible;
    // Squares of entries stay finite and normal within [small, large] (LAPACK's ssfmin, ssfmax).
    let safe_min = T::min_positive_value();
    let large = (T::one() / safe_min).sqrt() / T::of_f64(3.0);
    let small = safe_min.sqrt() / eps2;
    let max_iterations = 30 * n;
    let mut iterations = 0;
    let mut l1 = 0;
    while l1 < n {
        if l1 > 0 {
            e[l1 - 1] = T::zero();
        }
        // The unreduced block l1..=m.
        let mut m = l1;
        while m + 1 < n {
            let tst = e[m].abs();
            if tst <= d[m].abs().sqrt() * d[m + 1].abs().sqrt() * eps || tst <= negligible {
                e[m] = T::zero();
                break;
            }
            m += 1;
        }
        let (start, end) = (l1, m);
        l1 = m + 1;
        if end == start {
            continue;
        }
        // Scale the block into the safe range of squares.
        let block_norm = (start..=end)
            .fold(T::zero(), |a, i| a.max(d[i].abs()).max(if i < end { e[i].abs() } else { T::zero() }));
        let scale = if block_norm > large {
            large / block_norm
        } else if block_norm < small && block_norm > T::zero() {
            small / block_norm
        } else {
            T::one()
        };
        for i in start..=end {
            d[i] *= scale;
            if i < end {
                e[i] = (e[i] * scale) * (e[i] * scale);
            }
        }
        let tiny2 = negligible2 * scale * scale;
        let (mut l, mut lend) = (start, end);
        if d[end].abs() < d[start].abs() {
            (l, lend) = (end, start);
        }
        if lend >= l {
            // QL: deflate at the top end l.
            'ql: while l <= lend {
                let mut m = l;
                while m < lend {
                    if e[m].abs() <= eps2 * (d[m] * d[m + 1]).abs() || e[m] <= tiny2 {
                        break;
                    }
                    m += 1;
                }
                if m < lend {
                    e[m] = T::zero();
                }
                let mut p = d[l];
                if m == l {
                    d[l] = p;
                    l += 1;
                    continue 'ql;
                }
                if m == l + 1 {
                    let (rt1, rt2) = eigenvalues_2x2(d[l], e[l].sqrt(), d[l + 1]);
                    d[l] = rt1;
                    d[l + 1] = rt2;
                    e[l] = T::zero();
                    l += 2;
                    continue 'ql;
                }
                iterations += 1;
                if iterations > max_iterations {
                    return Err(Error::NoConvergence { what: "tridiagonal QL (root-free)", iterations });
                }
                let rte = e[l].sqrt();
                let mut sigma = (d[l + 1] - p) / (T::TWO * rte);
                let r = hypot(sigma, T::one());
                sigma = p - rte / (sigma + if sigma >= T::zero() { r } else { -r });
                let (mut c, mut s) = (T::one(), T::zero());
                let mut gamma = d[m] - sigma;
                p = gamma * gamma;
                let mut i = m;
                while i > l {
                    i -= 1;
                    let bb = e[i];
                    let r = p + bb;
                    if i + 1 != m {
                        e[i + 1] = s * r;
                    }
                    let old_c = c;
                    // gamma^2 / c = gamma^2 r / p: 1 / p is computed beside 1 / r, so that the
                    // step's chain of dependent operations holds one division instead of two.
                    let inverse = r.recip();
                    let p_inverse = p.recip();
                    c = p * inverse;
                    s = bb * inverse;
                    let old_gamma = gamma;
                    let alpha = d[i];
                    gamma = c * (alpha - sigma) - s * old_gamma;
                    d[i + 1] = old_gamma + (alpha - gamma);
                    p = if c == T::zero() {
                        old_c * bb
                    } else if p_inverse.is_finite() {
                        (gamma * gamma) * (r * p_inverse)
                    } else {
                        (gamma * gamma) / c
                    };
                }
                e[l] = s * p;
                d[l] = sigma + gamma;
            }
        } else {
            // QR: deflate at the bottom end l (> lend).
            'qr: while l >= lend {
                let mut m = l;
                while m > lend {
                    if e[m - 1].abs() <= eps2 * (d[m] * d[m - 1]).abs() || e[m - 1] <= tiny2 {
                        break;
                    }
                    m -= 1;
                }
                if m > lend {
                    e[m - 1] = T::zero();
                }
                let mut p = d[l];
                if m == l {
                    d[l] = p;
                    if l == lend {
                        break 'qr;
                    }
                    l -= 1;
                    continue 'qr;
                }
                if m + 1 == l {
                    let (rt1, rt2) = eigenvalues_2x2(d[l], e[l - 1].sqrt(), d[l - 1]);
                    d[l] = rt1;
                    d[l - 1] = rt2;
                    e[l - 1] = T::zero();
                    if l < lend + 2 {
                        break 'qr;
                    }
                    l -= 2;
                    continue 'qr;
                }
                iterations += 1;
                if iterations > max_iterations {
                    return Err(Error::NoConvergence { what: "tridiagonal QR (root-free)", iterations });
                }
                let rte = e[l - 1].sqrt();
                let mut sigma = (d[l - 1] - p) / (T::TWO * rte);
                let r = hypot(sigma, T::one());
                sigma = p - rte / (sigma + if sigma >= T::zero() { r } else { -r });
                let (mut c, mut s) = (T::one(), T::zero());
                let mut gamma = d[m] - sigma;
                p = gamma * gamma;
                for i in m..l {
                    let bb = e[i];
                    let r = p + bb;
                    if i != m {
                        e[i - 1] = s * r;
                    }
                    let old_c = c;
                    // gamma^2 / c = gamma^2 r / p: 1 / p is computed beside 1 / r, so that the
                    // step's chain of dependent operations holds one division instead of two.
                    let inverse = r.recip();
                    let p_inverse = p.recip();
                    c = p * inverse;
                    s = bb * inverse;
                    let old_gamma = gamma;
                    let alpha = d[i + 1];
                    gamma = c * (alpha - sigma) - s * old_gamma;
                    d[i] = old_gamma + (alpha - gamma);
                    p = if c == T::zero() {
                        old_c * bb
                    } else if p_inverse.is_finite() {
                        (gamma * gamma) * (r * p_inverse)
                    } else {
                        (gamma * gamma) / c
                    };
                }
                e[l - 1] = s * p;
                d[l] = sigma + gamma;
            }
        }
        if scale != T::one() {
            for value in d[start..=end].iter_mut() {
                *value /= scale;
            }
        }
    }
    sort_ascending(d, &mut [], 0);
    Ok(())
}

/// Eigenvalues `(rt1, rt2)` of `[[a, b], [b, c]]`, `|rt1| >= |rt2|` (LAPACK `dlae2`).
fn eigenvalues_2x2<T: Scalar>(a: T, b: T, c: T) -> (T, T) {
    let sm = a + c;
    let df = a - c;
    let adf = df.abs();
    let tb = b + b;
    let ab = tb.abs();
    let (acmx, acmn) = if a.abs() > c.abs() { (a, c) } else { (c, a) };
    let rt = if adf > ab {
        adf * (T::one() + (ab / adf) * (ab / adf)).sqrt()
    } else if adf < ab {
        ab * (T::one() + (adf / ab) * (adf / ab)).sqrt()
    } else {
        ab * T::TWO.sqrt()
    };
    if sm < T::zero() {
        let rt1 = T::HALF * (sm - rt);
        (rt1, (acmx / rt1) * acmn - (b / rt1) * b)
    } else if sm > T::zero() {
        let rt1 = T::HALF * (sm + rt);
        (rt1, (acmx / rt1) * acmn - (b / rt1) * b)
    } else {
        (T::HALF * rt, -T::HALF * rt)
    }
}
