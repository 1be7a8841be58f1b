//! Forward rounding-error bounds for `f32` computations, carried alongside an `f64` reference.
//!
//! A [`Bounded`] holds the exact (to `f64` precision) value `v` of a quantity and a bound `e` on
//! `|computed - v|` for any `f32` evaluation that performs the same operations, in any order of
//! summation, with or without fused multiply-adds. With `u = 2^-24` (unit roundoff of `f32`) and
//! `|fl(x) - x| <= u |x|` for each rounded operation:
//!
//! * `a +- b`: the computed operands differ by at most `e_a + e_b`; rounding adds `u |result|`,
//!   and `|result| <= mag(a) + mag(b)` with `mag(x) = |v_x| + e_x` (a bound on the computed value).
//! * `a * b`: `|a' b' - a b| <= e_a mag(b) + |v_a| e_b`; rounding adds `u mag(a) mag(b)`.
//! * `sum` of `n` terms, any parenthesization: `sum e_i + gamma(n-1) sum mag_i`, with
//!   `gamma(k) = k u / (1 - k u)` (Higham, *Accuracy and Stability of Numerical Algorithms*, 4.2).
//! * `a / b` (`|v_b| > e_b`): `(e_a + |v_a/v_b| e_b) / (|v_b| - e_b)`, plus `u` times the bound on
//!   the computed quotient.
//! * `ln`, `exp` (libm's `logf`/`expf`, documented below 1 ulp, so within `2 u` relative): the
//!   propagated error by the mean value theorem plus `2 u` of the bound on the result.
//! * the crate's own `f32` exponential over slices (`Scalar::exp_shifted_sum`, src/exp.rs, used by
//!   the softmax kernels): relative error at most [`CRATE_EXP_F32_REL`] (derivation there).
//! * `sqrt` (IEEE, correctly rounded): `|sqrt(a') - sqrt(a)| <= e_a / (sqrt(v_a - e_a) + sqrt(v_a))`,
//!   plus `u` of the bound on the result.
//! * halving is exact (no underflow at the magnitudes used).
//!
//! The `f64` reference itself rounds too, with the same bounds at `u64 = 2^-53`; [`Bounded::tolerance`]
//! adds that (`e * u64 / u`, plus `u64 |v|`), so a comparison with the `f64` value is never tuned.
#![allow(dead_code)]

/// Unit roundoff of `f32`.
pub const U32: f64 = 1.0 / (1u64 << 24) as f64;
/// Unit roundoff of `f64`.
pub const U64: f64 = 1.0 / (1u64 << 53) as f64;

/// Relative error bound of the crate's `f32` `exp` over slices (src/exp.rs, `exp1`) for arguments in
/// `[-86.5, 0]` (the softmax kernels shift by the row maximum, so their arguments are `<= 0`):
/// * reduction `x = k ln2 + r`: `k LN2_HI` is exact (17-bit constant, `|k| <= 125`); the two
///   subtractions and `k LN2_LO` round, and `LN2_LO` is `ln2 - LN2_HI` to `u` relative: `|r' - r|
///   <= u (|r| + |x - k LN2_HI|) + 3 u |k LN2_LO| <= u` for `|r| <= 0.35` (`|k| 1.43e-6 <= 1.8e-4`),
///   which moves `e^r` by at most `(e^u - 1) <= 1.01 u` relative;
/// * Horner on the degree-7 Taylor polynomial with coefficients rounded to `f32` (one more relative
///   `u` each): `|p' - p(r)| <= gamma(15) sum |c_i| |r|^i <= gamma(15) e^|r|` (Higham, Thm 5.1),
///   relative to `p(r) >= e^-|r|` that is `gamma(15) e^(2 |r|) <= 2.014 gamma(15) = 30.2 u`;
/// * truncation `|r|^8 / 8! e^|r|`, relative `<= 0.35^8 / 40320 e^0.7 = 1.1e-8 = 0.19 u`;
/// * the scaling by `2^k` is exact (results stay normal above `e^-86.5 = 2.7e-38`).
///
/// Total `31.4 u`, rounded up to `32 u`. (Fused multiply-adds only remove roundings. The crate's own
/// test measures below `6 u` on a dense grid: the bound is a worst case.)
pub const CRATE_EXP_F32_REL: f64 = 32.0 * U32;

/// `gamma(k) = k u / (1 - k u)` for `f32`.
pub fn gamma(k: usize) -> f64 {
    let ku = k as f64 * U32;
    ku / (1.0 - ku)
}

/// An `f64` value and a bound on the error of its `f32` evaluation.
#[derive(Clone, Copy, Debug)]
pub struct Bounded {
    /// The value, computed in `f64`.
    pub v: f64,
    /// Bound on `|f32 result - v|`.
    pub e: f64,
}

impl Bounded {
    /// An input stored exactly in `f32`.
    pub fn exact(v: f32) -> Self {
        Bounded { v: v as f64, e: 0.0 }
    }

    /// A bound on the magnitude of the computed value.
    pub fn mag(self) -> f64 {
        self.v.abs() + self.e
    }

    /// `a + b`.
    pub fn add(self, b: Bounded) -> Self {
        Bounded { v: self.v + b.v, e: self.e + b.e + U32 * (self.mag() + b.mag()) }
    }

    /// `a - b`.
    pub fn sub(self, b: Bounded) -> Self {
        Bounded { v: self.v - b.v, e: self.e + b.e + U32 * (self.mag() + b.mag()) }
    }

    /// `a * b`.
    pub fn mul(self, b: Bounded) -> Self {
        Bounded { v: self.v * b.v, e: self.e * b.mag() + self.v.abs() * b.e + U32 * self.mag() * b.mag() }
    }

    /// `a / 2` (exact).
    pub fn half(self) -> Self {
        Bounded { v: self.v * 0.5, e: self.e * 0.5 }
    }

    /// `a / b`; panics if the bound cannot exclude `b = 0`.
    pub fn div(self, b: Bounded) -> Self {
        assert!(b.v.abs() > b.e, "divisor {b:?} may be zero");
        let q = self.v / b.v;
        let propagated = (self.e + q.abs() * b.e) / (b.v.abs() - b.e);
        Bounded { v: q, e: propagated + U32 * (q.abs() + propagated) }
    }

    /// `ln a` through `logf` (`a > 0`).
    pub fn ln(self) -> Self {
        assert!(self.v > self.e, "logarithm of {self:?} may be of a nonpositive number");
        let r = self.v.ln();
        let propagated = self.e / (self.v - self.e);
        Bounded { v: r, e: propagated + 2.0 * U32 * (r.abs() + propagated) }
    }

    /// `exp a` through `expf`.
    pub fn exp(self) -> Self {
        self.exp_with_relative_error(2.0 * U32)
    }

    /// `exp a` through an implementation with relative error at most `relative` (e.g.
    /// [`CRATE_EXP_F32_REL`]).
    pub fn exp_with_relative_error(self, relative: f64) -> Self {
        let r = self.v.exp();
        let propagated = r * self.e.exp_m1();
        Bounded { v: r, e: propagated + relative * (r + propagated) }
    }

    /// `sqrt a` (`a >= 0` within its bound).
    pub fn sqrt(self) -> Self {
        assert!(self.v >= self.e, "square root of {self:?} may be of a negative number");
        let r = self.v.sqrt();
        let propagated = if self.e == 0.0 { 0.0 } else { self.e / ((self.v - self.e).sqrt() + r) };
        Bounded { v: r, e: propagated + U32 * (r + propagated) }
    }

    /// `max(a, b)` (no rounding; the error is at most the larger of the two).
    pub fn max(self, b: Bounded) -> Self {
        Bounded { v: self.v.max(b.v), e: self.e.max(b.e) }
    }

    /// The tolerance for comparing an `f32` result with `v`: `e` plus the `f64` reference's own
    /// rounding (the same derivation at `U64`, i.e. `e * U64 / U32`, and the final `U64 |v|`).
    pub fn tolerance(self) -> f64 {
        self.e * (1.0 + U64 / U32) + U64 * self.v.abs()
    }
}

/// `sum_i terms_i`, in any order of additions.
pub fn sum(terms: impl IntoIterator<Item = Bounded>) -> Bounded {
    let (mut v, mut e, mut mag, mut n) = (0.0, 0.0, 0.0, 0usize);
    for t in terms {
        v += t.v;
        e += t.e;
        mag += t.mag();
        n += 1;
    }
    Bounded { v, e: e + gamma(n.saturating_sub(1)) * mag }
}

/// `sum_i a_i b_i`, in any order.
pub fn dot(a: &[Bounded], b: &[Bounded]) -> Bounded {
    assert_eq!(a.len(), b.len());
    sum(a.iter().zip(b).map(|(x, y)| x.mul(*y)))
}

/// Every value of an `f32` slice as an exact [`Bounded`].
pub fn exact(values: &[f32]) -> Vec<Bounded> {
    values.iter().map(|&v| Bounded::exact(v)).collect()
}
