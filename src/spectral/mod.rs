//! The spectral analysis of a head's kernel `M = W_Q W_K^T` (`docs/math.md` sections 1-3 and 9): its
//! routing/filtering split, the split of a factored head, effective ranks, and spectra.
//!
//! * [`split`]: `S`, `D` of a dense kernel, in caller buffers or in place, and their energies.
//! * [`factored`]: the same for `M = W_Q W_K^T` held as factors, plus matrix-free `x -> M x, S x, D x`.
//! * [`erank`]: entropy effective rank, participation ratio, stable and numerical rank.
//! * [`spectrum`]: singular values of `S` and eigenvalues of `D` of a head from `W_Q, W_K`, and the
//!   [`spectrum::HeadSpectrum`] census report.
//! * [`exact`]: exact spectra of `S` and `D` from a head's factors (`docs/math.md` section 9):
//!   thin QR plus a skew and a symmetric eigenproblem of order `2 d_head`; the default path of
//!   [`spectrum::head_spectrum`].
//! * [`lanczos`]: matrix-free operators, Lanczos, the tridiagonal eigensolver under it, and
//!   stochastic Lanczos quadrature.

pub mod erank;
pub mod exact;
pub mod factored;
pub mod lanczos;
pub mod spectrum;
pub mod split;
