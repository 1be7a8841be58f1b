//! Tools for users' own tests of attention heads.
//!
//! * [`check`]: invariant checkers that return measured deviations, with their tolerance model.
//! * `strategies` (feature `proptest`): proptest strategies for property tests.

pub mod check;
#[cfg(feature = "proptest")]
pub mod strategies;
