//! The spectral analysis of a head's kernel `M = W_Q W_K^T` (`docs/math.md` sections 1-3): its
//! routing/filtering split, the split of a factored head, effective ranks, and spectra.
//!
//! * [`split`]: `S`, `D` of a dense kernel, in caller buffers or in place, and their energies.
//! * [`factored`]: the same for `M = W_Q W_K^T` held as factors, plus matrix-free `x -> M x, S x, D x`.
//! * [`erank`]: entropy effective rank, participation ratio, stable and numerical rank.
//! * [`spectrum`]: singular values of `S` and eigenvalues of `D` of a head from `W_Q, W_K`, and the
//!   [`spectrum::HeadSpectrum`] census report.
//! * [`lanczos`]: matrix-free operators, Lanczos, the tridiagonal eigensolver under it, and
//!   stochastic Lanczos quadrature.

pub mod erank;
pub mod factored;
pub mod lanczos;
pub mod spectrum;
pub mod split;
