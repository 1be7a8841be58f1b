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
//! microcontroller. Each module cites the sections of `docs/math.md` that define what it computes.
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
//! * `parallel` (implies `std`): runs independent work as tasks on rayon's *current* pool (the
//!   global one, sized by `RAYON_NUM_THREADS`, or one the application `install`s; the crate never
//!   builds a pool): sequences and heads of the attention sub-layers and multi-head kernels, row
//!   blocks of the products and of the MLP, tiles of the weight-gradient products, chunks of
//!   AdamW. The splits depend on the problem's sizes only and partial sums are added in a fixed
//!   order, so results are bit-identical whatever the number of threads. Scratch is still the
//!   caller's: the `*_workspace_len` functions then count one block of scratch per task (a
//!   function of the sizes, not of the thread count).
//!
//! On x86-64 with `std`, the hot loops (fused softmax tiles, `exp`, GELU, the register-blocked
//! product, AdamW, the S-D assembly) run in an AVX-512, AVX2/FMA or portable variant, chosen once
//! from what the CPU has. The environment variable `SD_ATTENTION_ISA=portable|avx2|avx512` lowers
//! that choice (to test or compare the variants on one machine); a request above what the CPU has
//! is clamped to what it has, and an unknown value is ignored.
//!
//! Without default features the crate is `#![no_std]`, needs neither an OS nor an allocator, and
//! computes matrix products with an allocation-free portable kernel (row-wise axpy and dot loops
//! that the compiler vectorizes for the target's compile-time features):
//! `sd-attention = { version = "0.1", default-features = false }`. Nothing else in the crate
//! allocates in any configuration.
//!
//! ## Modules
//! Bottom to top (an import never climbs):
//! * [`linalg`]: products and elementwise kernels over slices ([`linalg::dense`]: gemm wrappers,
//!   transpose, dot, axpy, norms; [`linalg::qr`]: thin Householder QR).
//! * [`spectral`]: the analysis of a head: [`split`] (`S`, `D` of a dense kernel and their
//!   energies, also at [`spectral::split`]), [`spectral::factored`] (the same for
//!   `M = W_Q W_K^T` held as factors), [`spectral::erank`] (effective ranks),
//!   [`spectral::spectrum`] (singular values of `S`, eigenvalues of `D`, the
//!   [`spectral::spectrum::HeadSpectrum`] census report), [`spectral::exact`] (the exact spectra
//!   from the factors: QR plus an eigenproblem of order `2 d_head`) and [`spectral::lanczos`]
//!   (matrix-free operators, Lanczos, the tridiagonal eigensolver, stochastic Lanczos quadrature).
//! * [`attention`]: softmax, S-D and ELU+1 linear attention with backward passes.
//! * [`model`]: a byte-level transformer language model: layers with hand-written backward passes
//!   over slices, and (with `alloc`) the config, flat parameter layout and whole-model assembly.
//! * [`inference`]: allocation-free incremental decoding of a trained model (a borrowed model or
//!   checkpoint, a decoder state in caller buffers, `prefill`/`step`, sampling).
//! * [`train`]: AdamW, gradient clipping, warmup + cosine schedule, checksums; with `alloc`
//!   checkpoints and the Shakespeare corpus loader.
//! * [`testing`]: invariant checkers that return measured deviations ([`testing::check`]), and with
//!   the `proptest` feature proptest strategies for users' own property tests.
//! * [`rng`]: SplitMix64, a seedable `no_std` generator (uniform, normal, Rademacher).

#![no_std]
#![warn(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod arch;
pub mod attention;
mod error;
pub mod inference;
pub mod linalg;
pub mod model;
mod parallel;
pub mod rng;
mod scalar;
pub mod spectral;
pub mod testing;
pub mod train;
mod workspace;

pub use error::{Error, Result};
pub use scalar::Scalar;
pub use spectral::split;

/// The README's examples, run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
