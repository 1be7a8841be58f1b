//! Matrix-free linear operators for Lanczos (`docs/math.md` section 3): anything that computes `y = A x` for
//! an `n x n` matrix `A` that is symmetric ([`SymmetricOperator`]) or skew-symmetric
//! ([`SkewOperator`]).
//!
//! Implemented here for a dense symmetric slice ([`DenseSymmetric`]), for the parts of a factored
//! head kernel ([`RoutingGram`] `= S^T S`, [`Filtering`] `= D`, [`Routing`] `= S`), and for
//! closures ([`FnOperator`]). Operators that need scratch borrow it from the caller at
//! construction (`*_workspace_len` beside each); none allocates.
//!
//! The structure (symmetry or skew-symmetry) is a promise of the implementor; it is not checked,
//! because checking it costs `O(n^2)` products. A Lanczos run on an operator that breaks the promise
//! returns Ritz values of the wrong matrix, not an error.

use crate::error::{check_len, check_matrix, check_workspace};
use crate::linalg::kernel;
use crate::spectral::factored::{FactoredKernel, Part};
use crate::workspace::{carve, Req};
use crate::{Result, Scalar};

/// A symmetric linear operator `A = A^T` (`n x n`), applied matrix-free.
pub trait SymmetricOperator<T: Scalar> {
    /// `n`: the operator maps length-`n` vectors to length-`n` vectors.
    fn size(&self) -> usize;
    /// `y = A x`; `x` and `y` have length [`Self::size`] (implementations check it).
    fn apply(&mut self, x: &[T], y: &mut [T]) -> Result<()>;
}

/// A skew-symmetric linear operator `A = -A^T` (`n x n`), applied matrix-free. Its eigenvalues are
/// `±i s_k` and its singular values come in equal pairs `s_k, s_k` (`docs/math.md` section 1).
pub trait SkewOperator<T: Scalar> {
    /// `n`: the operator maps length-`n` vectors to length-`n` vectors.
    fn size(&self) -> usize;
    /// `y = A x`; `x` and `y` have length [`Self::size`] (implementations check it).
    fn apply(&mut self, x: &[T], y: &mut [T]) -> Result<()>;
}

/// A dense symmetric `n x n` matrix borrowed as a row-major slice; `y = A x` in `O(n^2)`.
///
/// Only the promise of symmetry is taken, not checked. NaN or infinity in the matrix propagates to
/// `y` (and a Lanczos run on it stops with [`crate::Error::NonFinite`]).
#[derive(Clone, Copy, Debug)]
pub struct DenseSymmetric<'a, T> {
    n: usize,
    matrix: &'a [T],
}

impl<'a, T: Scalar> DenseSymmetric<'a, T> {
    /// Borrows `matrix` (`n x n`, row-major) after checking its length.
    pub fn new(n: usize, matrix: &'a [T]) -> Result<Self> {
        check_matrix("matrix", matrix.len(), n, n)?;
        Ok(DenseSymmetric { n, matrix })
    }
}

impl<T: Scalar> SymmetricOperator<T> for DenseSymmetric<'_, T> {
    fn size(&self) -> usize {
        self.n
    }
    fn apply(&mut self, x: &[T], y: &mut [T]) -> Result<()> {
        check_len("x", x.len(), self.n)?;
        check_len("y", y.len(), self.n)?;
        for (i, y_i) in y.iter_mut().enumerate() {
            *y_i = kernel::dot(&self.matrix[i * self.n..(i + 1) * self.n], x);
        }
        Ok(())
    }
}

/// Scratch elements [`RoutingGram::new`] needs for a head: `d_model + 2 d_head`.
pub fn routing_gram_workspace_len(d_model: usize, d_head: usize) -> usize {
    Req::new(d_model).and(Req::array(d_head, 2)).saturating()
}

/// `S^T S = -S^2` of a factored head kernel (symmetric, positive semidefinite, `d_model x d_model`):
/// `y = S^T (S x)` with two matrix-free products of [`FactoredKernel::apply`], `O(d_model d_head)`.
/// Its eigenvalues are the squared singular values of `S`, each (like those) twice.
#[derive(Debug)]
pub struct RoutingGram<'a, 'w, T> {
    head: FactoredKernel<'a, T>,
    scratch: &'w mut [T],
}

impl<'a, 'w, T: Scalar> RoutingGram<'a, 'w, T> {
    /// Wraps `head`, borrowing `scratch` of at least [`routing_gram_workspace_len`] elements.
    pub fn new(head: FactoredKernel<'a, T>, scratch: &'w mut [T]) -> Result<Self> {
        check_workspace(scratch.len(), routing_gram_workspace_len(head.d_model(), head.d_head()))?;
        Ok(RoutingGram { head, scratch })
    }
}

impl<T: Scalar> SymmetricOperator<T> for RoutingGram<'_, '_, T> {
    fn size(&self) -> usize {
        self.head.d_model()
    }
    fn apply(&mut self, x: &[T], y: &mut [T]) -> Result<()> {
        let d_model = self.head.d_model();
        let ([routed], apply_scratch) = carve(self.scratch, [d_model])?;
        self.head.apply(Part::Routing, x, routed, apply_scratch)?;
        // S^T = -S: y = -S (S x).
        self.head.apply(Part::Routing, routed, y, apply_scratch)?;
        kernel::scale(-T::one(), y);
        Ok(())
    }
}

/// Filtering `D = (M + M^T) / 2` of a factored head kernel (symmetric, `d_model x d_model`), applied
/// matrix-free in `O(d_model d_head)`.
#[derive(Debug)]
pub struct Filtering<'a, 'w, T> {
    head: FactoredKernel<'a, T>,
    scratch: &'w mut [T],
}

impl<'a, 'w, T: Scalar> Filtering<'a, 'w, T> {
    /// Wraps `head`, borrowing `scratch` of at least [`FactoredKernel::apply_workspace_len`]
    /// (`2 d_head`) elements.
    pub fn new(head: FactoredKernel<'a, T>, scratch: &'w mut [T]) -> Result<Self> {
        check_workspace(scratch.len(), head.apply_workspace_len())?;
        Ok(Filtering { head, scratch })
    }
}

impl<T: Scalar> SymmetricOperator<T> for Filtering<'_, '_, T> {
    fn size(&self) -> usize {
        self.head.d_model()
    }
    fn apply(&mut self, x: &[T], y: &mut [T]) -> Result<()> {
        self.head.apply(Part::Filtering, x, y, self.scratch)
    }
}

/// Routing `S = (M - M^T) / 2` of a factored head kernel (skew-symmetric, `d_model x d_model`),
/// applied matrix-free in `O(d_model d_head)`.
#[derive(Debug)]
pub struct Routing<'a, 'w, T> {
    head: FactoredKernel<'a, T>,
    scratch: &'w mut [T],
}

impl<'a, 'w, T: Scalar> Routing<'a, 'w, T> {
    /// Wraps `head`, borrowing `scratch` of at least [`FactoredKernel::apply_workspace_len`]
    /// (`2 d_head`) elements.
    pub fn new(head: FactoredKernel<'a, T>, scratch: &'w mut [T]) -> Result<Self> {
        check_workspace(scratch.len(), head.apply_workspace_len())?;
        Ok(Routing { head, scratch })
    }
}

impl<T: Scalar> SkewOperator<T> for Routing<'_, '_, T> {
    fn size(&self) -> usize {
        self.head.d_model()
    }
    fn apply(&mut self, x: &[T], y: &mut [T]) -> Result<()> {
        self.head.apply(Part::Routing, x, y, self.scratch)
    }
}

/// An operator given by a closure `f(x, y)` that writes `y = A x` for vectors of length `n`.
/// Usable as a [`SymmetricOperator`] or a [`SkewOperator`]: the caller vouches for the structure
/// by the function it passes the operator to.
///
/// ```
/// use sd_attention::spectral::lanczos::operator::{FnOperator, SymmetricOperator};
/// // A = diag(1, 2, 3)
/// let mut op = FnOperator::new(3, |x: &[f64], y: &mut [f64]| {
///     for i in 0..3 {
///         y[i] = (i + 1) as f64 * x[i];
///     }
/// });
/// let mut y = [0.0; 3];
/// SymmetricOperator::apply(&mut op, &[1.0, 1.0, 1.0], &mut y)?;
/// assert_eq!(y, [1.0, 2.0, 3.0]);
/// # Ok::<(), sd_attention::Error>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct FnOperator<F> {
    n: usize,
    f: F,
}

impl<F> FnOperator<F> {
    /// An `n x n` operator computing `y = A x` by `f(x, y)`.
    pub fn new(n: usize, f: F) -> Self {
        FnOperator { n, f }
    }
}

impl<T: Scalar, F: FnMut(&[T], &mut [T])> SymmetricOperator<T> for FnOperator<F> {
    fn size(&self) -> usize {
        self.n
    }
    fn apply(&mut self, x: &[T], y: &mut [T]) -> Result<()> {
        check_len("x", x.len(), self.n)?;
        check_len("y", y.len(), self.n)?;
        (self.f)(x, y);
        Ok(())
    }
}

impl<T: Scalar, F: FnMut(&[T], &mut [T])> SkewOperator<T> for FnOperator<F> {
    fn size(&self) -> usize {
        self.n
    }
    fn apply(&mut self, x: &[T], y: &mut [T]) -> Result<()> {
        check_len("x", x.len(), self.n)?;
        check_len("y", y.len(), self.n)?;
        (self.f)(x, y);
        Ok(())
    }
}
