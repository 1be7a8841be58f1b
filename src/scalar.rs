//! The scalar trait: what the kernels need of `f32` and `f64`.

use core::fmt::{Debug, Display};
use core::iter::Sum;
use core::ops::{AddAssign, DivAssign, MulAssign, SubAssign};
use num_traits::{Float, FloatConst};

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// A real floating-point scalar: implemented for `f32` and `f64` only (the trait is sealed, because
/// each implementation dispatches to a precision-specific matrix-multiply kernel).
///
/// Conversions are named for what they do: [`Scalar::of_f64`] rounds an `f64` constant to `Self`,
/// [`Scalar::as_f64`] widens exactly.
pub trait Scalar:
    Float
    + FloatConst
    + Default
    + Debug
    + Display
    + Send
    + Sync
    + 'static
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + Sum
    + sealed::Sealed
{
    /// Machine epsilon: the gap between 1 and the next representable number (`2^-23`, `2^-52`).
    const EPS: Self;
    /// `0.5`.
    const HALF: Self;
    /// `2`.
    const TWO: Self;
    /// The type's name, for messages and benchmark labels.
    const NAME: &'static str;

    /// `x` rounded to the nearest `Self`.
    fn of_f64(x: f64) -> Self;
    /// `n` as `Self` (rounded for `n > 2^24` in `f32`).
    fn of_usize(n: usize) -> Self;
    /// `self` widened to `f64` (exact).
    fn as_f64(self) -> f64;

    /// `x_i = e^{x_i - shift}` over a slice, returning `sum_i x_i`: a vectorized polynomial for
    /// `f32` (about 2 ulp; results below `2.7e-38` flush to zero), `libm::exp` for `f64`. NaN stays
    /// NaN, `-inf` gives `0`. The softmax kernels' inner loop.
    fn exp_shifted_sum(x: &mut [Self], shift: Self) -> Self;

    /// `x_i = e^{x_i - shift_i}` and `sum_i += x_i` over the common length of the three slices
    /// (same accuracy and special values as [`Scalar::exp_shifted_sum`]): one row of a transposed
    /// logit tile, whose columns carry their own shifts and running sums.
    fn exp_sub_accumulate(x: &mut [Self], shift: &[Self], sum: &mut [Self]);
    /// `x_i = tanh(x_i)` over a slice: vectorized from the same `exp` for `f32` (absolute error
    /// about `4e-7`), `libm::tanh` for `f64`. NaN stays NaN. The GELU's inner loop.
    fn tanh_in_place(x: &mut [Self]);

    /// `Some(x)` when `Self` is `f32`, else `None`: lets generic kernels hand `f32` slices to the
    /// fused f32 kernels (attention tiles, the MLP's bias-GELU) without `unsafe` casts. Not for use outside the crate.
    #[doc(hidden)]
    fn f32_slice(x: &[Self]) -> Option<&[f32]>;
    /// The `&mut` form of [`Scalar::f32_slice`].
    #[doc(hidden)]
    fn f32_slice_mut(x: &mut [Self]) -> Option<&mut [f32]>;

    /// `a * b + c`: one fused multiply-add when `FUSED` (callers instantiate it only where the
    /// target has FMA, inside the FMA variants of `crate::arch`, so that it is one instruction), else a product
    /// and a sum with two roundings. Without `std` it is always the latter.
    fn multiply_add<const FUSED: bool>(a: Self, b: Self, c: Self) -> Self;

    /// `C = alpha A B (+ C)` over row-major operands with leading dimensions, by register-blocked
    /// loops without packing (crate-internal `microkernel::gemm_rows`, which checks the lengths
    /// and documents the contract).
    #[allow(clippy::too_many_arguments)]
    fn product_rows(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: &[Self],
        lda: usize,
        b: &[Self],
        ldb: usize,
        c: &mut [Self],
        ldc: usize,
        accumulate: bool,
    );

    /// `x -= (tau v^T x) v` for each of the `count` columns `x = a[c lda..c lda + v.len()]`: one
    /// Householder reflection applied column by column (crate-internal `linalg::qr`, which checks
    /// the lengths), in the instruction-set variant `crate::arch` chooses.
    #[doc(hidden)]
    fn reflect_columns(tau: Self, v: &[Self], a: &mut [Self], lda: usize, count: usize);

    /// `C = alpha * op(A) op(B) + beta * C` on strided storage (only with the `alloc` feature), dispatched to `matrixmultiply`'s
    /// `sgemm`/`dgemm`. `op(A)` is `m x k`, `op(B)` is `k x n`, `C` is `m x n`; element `(i, j)` of a
    /// matrix with row stride `rs` and column stride `cs` lives at `ptr + i * rs + j * cs`.
    ///
    /// # Safety
    /// Every element the strides address for the given dimensions must lie inside the allocation
    /// behind its pointer; `c` must be valid for writes and must not overlap `a` or `b`. With
    /// `beta == 0`, `C` is overwritten without being read.
    #[cfg(feature = "alloc")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm_strided(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    );
}

macro_rules! impl_scalar {
    ($t:ty, $gemm:path, $exp:path, $exp_columns:path, $tanh:path, $product:path, $reflect:path, $as_f32:ident, $name:expr) => {
        impl Scalar for $t {
            const EPS: Self = <$t>::EPSILON;
            const HALF: Self = 0.5;
            const TWO: Self = 2.0;
            const NAME: &'static str = $name;

            #[inline(always)]
            fn of_f64(x: f64) -> Self {
                x as $t
            }
            #[inline(always)]
            fn of_usize(n: usize) -> Self {
                n as $t
            }
            #[inline(always)]
            fn as_f64(self) -> f64 {
                self as f64
            }
            #[inline]
            fn exp_shifted_sum(x: &mut [Self], shift: Self) -> Self {
                $exp(x, shift)
            }
            #[inline]
            fn exp_sub_accumulate(x: &mut [Self], shift: &[Self], sum: &mut [Self]) {
                $exp_columns(x, shift, sum)
            }
            #[inline]
            fn tanh_in_place(x: &mut [Self]) {
                $tanh(x)
            }
            #[inline(always)]
            fn f32_slice(x: &[Self]) -> Option<&[f32]> {
                $as_f32!(x)
            }
            #[inline(always)]
            fn f32_slice_mut(x: &mut [Self]) -> Option<&mut [f32]> {
                $as_f32!(x)
            }
            #[inline(always)]
            fn multiply_add<const FUSED: bool>(a: Self, b: Self, c: Self) -> Self {
                #[cfg(feature = "std")]
                if FUSED {
                    return a.mul_add(b, c);
                }
                a * b + c
            }
            #[inline]
            fn product_rows(
                m: usize,
                k: usize,
                n: usize,
                alpha: Self,
                a: &[Self],
                lda: usize,
                b: &[Self],
                ldb: usize,
                c: &mut [Self],
                ldc: usize,
                accumulate: bool,
            ) {
                $product(m, k, n, alpha, a, lda, b, ldb, c, ldc, accumulate)
            }
            #[inline]
            fn reflect_columns(tau: Self, v: &[Self], a: &mut [Self], lda: usize, count: usize) {
                $reflect(tau, v, a, lda, count)
            }

            #[cfg(feature = "alloc")]
            #[inline]
            unsafe fn gemm_strided(
                m: usize,
                k: usize,
                n: usize,
                alpha: Self,
                a: *const Self,
                rsa: isize,
                csa: isize,
                b: *const Self,
                rsb: isize,
                csb: isize,
                beta: Self,
                c: *mut Self,
                rsc: isize,
                csc: isize,
            ) {
                // SAFETY: forwarded; the caller upholds matrixmultiply's contract (see the trait doc).
                unsafe { $gemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc) }
            }
        }
    };
}

/// `Some(x)`: the slice is already `f32`.
macro_rules! is_f32 {
    ($x:expr) => {
        Some($x)
    };
}
/// `None`: the slice is not `f32`.
macro_rules! not_f32 {
    ($x:expr) => {{
        let _ = $x;
        None
    }};
}

impl_scalar!(
    f32,
    matrixmultiply::sgemm,
    crate::linalg::exp::exp_shifted_sum_f32,
    crate::linalg::exp::exp_sub_accumulate_f32,
    crate::linalg::exp::tanh_in_place_f32,
    crate::linalg::microkernel::product_f32,
    crate::linalg::qr::reflect_columns_f32,
    is_f32,
    "f32"
);
impl_scalar!(
    f64,
    matrixmultiply::dgemm,
    crate::linalg::exp::exp_shifted_sum_f64,
    crate::linalg::exp::exp_sub_accumulate_f64,
    crate::linalg::exp::tanh_in_place_f64,
    crate::linalg::microkernel::product_f64,
    crate::linalg::qr::reflect_columns_f64,
    not_f32,
    "f64"
);
