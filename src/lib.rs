//! # sd-attention
//!
//! The kernel of an attention head, `M = W_Q W_K^T`, is two computations
//! (arXiv 2605.18826, "The Routing and Filtering Structure of Attention"):
//!
//! * its **skew-symmetric** part `S = (M - M^T) / 2` *routes*: the logit it adds between positions
//!   `i` and `j`, `x_i^T S x_j`, is antisymmetric, so it moves information one way;
//! * its **symmetric** part `D = (M + M^T) / 2` *filters*: `x_i^T D x_j` scales mutual relevance.
//!
//! `S + D = M` and `||M||_F^2 = ||S||_F^2 + ||D||_F^2`, so the routing energy fraction
//! `rho = ||S||_F^2 / ||M||_F^2` says how much of a head is routing. This crate computes the split,
//! its energies and effective ranks over plain slices, on the CPU of a server or of a
//! microcontroller. `SPEC.md` sections are cited in each module.
//!
//! ```
//! use sd_attention::split::{energies, split};
//! let m = [0.0, 2.0, 0.0, 0.0f64]; // [[0, 2], [0, 0]]: a shear, half routing, half filtering
//! let (mut routing, mut filtering) = ([0.0; 4], [0.0; 4]);
//! split(2, &m, &mut routing, &mut filtering)?;
//! assert_eq!(routing, [0.0, 1.0, -1.0, 0.0]);
//! assert_eq!(energies(2, &m)?.routing_fraction(), 0.5);
//! # Ok::<(), sd_attention::Error>(())
//! ```
//!
//! ## Conventions
//! * **Row-major slices with explicit dimensions.** Element `(i, j)` of a `rows x cols` matrix `a`
//!   is `a[i * cols + j]`; a slice's length must equal `rows * cols` exactly. There is no tensor
//!   type.
//! * **Results, not panics.** Public functions check every length against the dimensions and return
//!   [`Error`] (which says what was expected and what came). How each treats NaN and infinity is
//!   stated in its documentation.
//! * **The caller owns scratch.** A function that needs scratch takes a `workspace: &mut [T]` and has
//!   a `*_workspace_len` beside it; kernels never allocate.
//! * **`f32` and `f64`.** Everything is generic over [`Scalar`]; `f64` is the reference precision of
//!   the tests.
//!
//! ## Features
//! * `std` (default): `std::error::Error` for [`Error`], and runtime CPU-feature detection in
//!   `matrixmultiply` (AVX2/FMA/AVX-512 kernels on x86-64). Implies `alloc`.
//! * `alloc`: matrix products through `matrixmultiply`'s packed, cache-blocked kernels. They
//!   allocate their packing buffers on every call, so this needs a global allocator.
//!
//! Without default features the crate is `#![no_std]`, needs neither an OS nor an allocator, and
//! computes matrix products with an allocation-free portable kernel (row-wise axpy and dot loops
//! that the compiler vectorizes for the target's compile-time features):
//! `sd-attention = { version = "0.1", default-features = false }`. Nothing else in the crate
//! allocates in any configuration.
//!
//! ## Modules
//! * [`attention`]: softmax, S-D and ELU+1 linear attention with backward passes.
//! * [`split`]: `S`, `D` of a dense kernel, in caller buffers or in place, and their energies.
//! * [`factored`]: the same for `M = W_Q W_K^T` held as factors, plus matrix-free `x -> M x, S x, D x`.
//! * [`erank`]: entropy effective rank, participation ratio, stable and numerical rank.
//! * [`check`]: invariant checkers that return measured deviations, with their tolerance model.
//! * [`operator`]: matrix-free symmetric and skew-symmetric operators (dense slices, `S^T S`, `S`
//!   and `D` of a factored head, closures).
//! * [`lanczos`]: Lanczos with full reorthogonalization into caller workspace: Ritz values and
//!   vectors, extreme eigenvalues, singular values of skew operators.
//! * [`tridiagonal`]: the symmetric tridiagonal eigensolver (implicit QL) under Lanczos.
//! * [`spectrum`]: singular values of `S` and eigenvalues of `D` of a head from `W_Q, W_K`, and the
//!   [`spectrum::HeadSpectrum`] census report.
//! * [`slq`]: stochastic Lanczos quadrature of `tr f(A)`, spectral entropy and effective rank of
//!   large operators with standard errors.
//! * [`dense`]: the slice kernels underneath (gemm wrappers, transpose, dot, axpy, norms).
//! * `strategies` (feature `proptest`): proptest strategies for users' own property tests.
//! * [`rng`]: SplitMix64, a seedable `no_std` generator (uniform, normal, Rademacher).
//! * [`model`]: a byte-level transformer language model: layers with hand-written backward passes
//!   over slices, and (with `alloc`) the config, flat parameter layout and whole-model assembly.
//! * [`inference`]: allocation-free incremental decoding of a trained model (a borrowed model or
//!   checkpoint, a decoder state in caller buffers, `prefill`/`step`, sampling).
//! * [`train`]: AdamW, gradient clipping, warmup + cosine schedule, checksums; with `alloc`
//!   checkpoints and the Shakespeare corpus loader.

#![no_std]
#![warn(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod attention;
pub mod check;
mod cpu;
pub mod dense;
pub mod erank;
mod error;
mod exp;
pub mod factored;
pub mod inference;
mod kernel;
pub mod lanczos;
mod microkernel;
pub mod model;
pub mod operator;
pub mod rng;
mod scalar;
pub mod slq;
pub mod spectrum;
pub mod split;
#[cfg(feature = "proptest")]
pub mod strategies;
pub mod train;
pub mod tridiagonal;

pub use error::{Error, Result};
pub use scalar::Scalar;

/// The README's examples, run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
