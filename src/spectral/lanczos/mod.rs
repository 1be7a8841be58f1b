//! Matrix-free spectra of large symmetric and skew-symmetric operators (`docs/math.md` section 3).
//!
//! * [`operator`]: matrix-free symmetric and skew-symmetric operators (dense slices, `S^T S`, `S`
//!   and `D` of a factored head, closures).
//! * [`lanczos`]: Lanczos with full reorthogonalization into caller workspace: Ritz
//!   values and vectors, extreme eigenvalues, singular values of skew operators.
//! * [`tridiagonal`]: the symmetric tridiagonal eigensolver (implicit QL) under Lanczos.
//! * [`slq`]: stochastic Lanczos quadrature of `tr f(A)`, spectral entropy and effective rank of
//!   large operators with standard errors.

#[allow(clippy::module_inception)] // the algorithm names its family
pub mod lanczos;
pub mod operator;
pub mod slq;
pub mod tridiagonal;
