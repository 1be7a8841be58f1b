//! Attention kernels over row-major `n x d` slices, with forward and hand-written backward passes
//! (`docs/math.md` sections 4-6).
//!
//! * [`softmax`]: softmax attention, tiled online-softmax forward, flash-style backward.
//! * [`sd`]: S-D attention (routing `S = U V^T - V U^T`, filtering `D = -C C^T`) and the standard
//!   `W_Q, W_K` head in the same form.
//! * [`linear`]: ELU+1 linear attention: parallel, causal (chunked) and recurrent.
//! * [`multihead`]: softmax and S-D/standard heads over packed multi-head layouts.

pub mod linear;
pub mod multihead;
pub mod sd;
pub mod softmax;

/// Which keys a query may attend to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Causality {
    /// Every query sees every key.
    Bidirectional,
    /// Query `i` sees keys `j <= i` only.
    Causal,
}
