//! Global-norm gradient clipping: if `||g||_2 > max_norm` over all parameters, scale every
//! gradient by `max_norm / ||g||_2` (Pascanu, Mikolov & Bengio 2013).

use crate::linalg::dense::{check_finite, frobenius_norm, scale};
use crate::{Error, Result, Scalar};

/// Clips `grads` (the whole flat gradient buffer) to global norm `max_norm` in place and returns
/// the norm *before* clipping (computed with overflow-safe scaling).
///
/// Errors: `max_norm` not finite and positive ([`Error::InvalidParameter`]); a NaN or infinite
/// gradient ([`Error::NonFinite`], with its index; `grads` is left unchanged), so that a diverged
/// step is reported rather than applied.
///
/// ```
/// use sd_attention::train::clip::clip_global_norm;
/// let mut g = [3.0f64, 4.0];
/// assert_eq!(clip_global_norm(&mut g, 1.0)?, 5.0);
/// assert!((g[0] - 0.6).abs() < 1e-15 && (g[1] - 0.8).abs() < 1e-15);
/// # Ok::<(), sd_attention::Error>(())
/// ```
pub fn clip_global_norm<T: Scalar>(grads: &mut [T], max_norm: T) -> Result<T> {
    if !(max_norm.is_finite() && max_norm > T::zero()) {
        return Err(Error::InvalidParameter { what: "max_norm", expected: "finite and > 0" });
    }
    check_finite("grads", grads)?;
    let norm = frobenius_norm(grads);
    if norm > max_norm {
        scale(max_norm / norm, grads);
    }
    Ok(norm)
}
