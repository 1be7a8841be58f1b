//! ELU+1 linear attention (`docs/math.md` section 6; Katharopoulos et al. 2020, "Transformers are RNNs").
//!
//! With `phi(x) = elu(x) + 1` (`x + 1` for `x > 0`, `exp(x)` otherwise) applied to every entry of the
//! queries `Q` (`n x d_k`) and keys `K` (`n x d_k`), and values `V` (`n x d_v`):
//!
//! ```text
//! non-causal:  O_i = phi(q_i)^T S / (phi(q_i)^T z + eps),  S = sum_j phi(k_j) v_j^T,  z = sum_j phi(k_j)
//! causal:      the same with S_i, z_i summed over j <= i only
//! ```
//!
//! Three ways to compute it, which agree to rounding:
//! * [`LinearAttention::forward`]: causal or not, over whole sequences, in chunks of `chunk` tokens
//!   (default 64): inside a chunk the masked `chunk x chunk` weights `tril(phi(Q) phi(K)^T)` are a
//!   matrix product; across chunks the state `S` (`d_k x d_v`) and `z` (`d_k`) carries the past.
//!   Any `chunk >= 1` gives the same result up to rounding.
//! * [`LinearAttention::backward`]: gradients with respect to `Q`, `K`, `V` in `O(n d_k d_v)` time and
//!   `O(d_k d_v + chunk (d_k + d_v + chunk))` extra memory, never `n x n` (a forward sweep for `dQ`
//!   with the prefix state, a reverse sweep for `dK`, `dV` with the suffix sums
//!   `R_j = sum_{i >= j} phi(q_i) g_i^T`; section 3.3 of the paper), every piece a matrix product.
//! * [`State::step`]: recurrent streaming, one token in and one out, `O(d_k d_v)` time, over state
//!   held in caller memory; no workspace, no allocation, `no_std` without an allocator.
//!
//! Layouts are row-major. With `n_heads > 1` ([`LinearAttention::with_heads`]) the inputs are packed
//! `n x (n_heads d_k)` (and `n x (n_heads d_v)`): head `h` of token `i` occupies columns
//! `h d_k .. (h + 1) d_k` of row `i`, as a projection `X W_Q` produces them. One head is the case
//! `n_heads = 1`.
//!
//! Scratch comes from the caller: [`LinearAttention::forward_workspace_len`] and
//! [`LinearAttention::backward_workspace_len`] (independent of `n` once `n >= chunk`, except with the
//! `parallel` feature and several heads, where each head's task also holds copies of its columns). The kernels do
//! not allocate: every block product runs on the crate's register-blocked kernel over operands read
//! where they lie (no packing), and `phi` is a vectorized exponential for `f32`. With `std` on
//! x86-64 the chunk loops are compiled for AVX-512, for AVX2 with FMA and portably, and the widest
//! variant the CPU has is chosen at run time.
//!
//! ## NaN and infinity
//! Nothing is rejected; values propagate as IEEE arithmetic says, and causality holds for them too:
//! a NaN or infinity in `q_i` reaches row `i` of the output only, one in `k_j` or `v_j` reaches rows
//! `i >= j` (causal) or every row (non-causal), never an earlier row. `q = -inf` or `k = -inf` gives
//! `phi = 0` (that feature contributes nothing); `+inf` gives `phi = +inf` and usually NaN outputs
//! (`inf / inf`). With `eps = 0` a row whose weights all underflow (`phi(q_i)^T z_i = 0`, e.g. keys
//! below `-745` in f64) is `0 / 0 = NaN`; with `eps > 0` it is `0`.

mod chunked;
mod recurrent;
#[cfg(test)]
mod tests;

pub use recurrent::State;

use crate::attention::multihead::{gather, scatter};
use crate::attention::Causality;
use crate::error::{check_matrix, check_workspace};
use crate::{Error, Result, Scalar};

/// The default `eps` added to the normalizer `phi(q_i)^T z_i`, as an `f64`; [`default_eps`] gives
/// it in any scalar type.
pub const DEFAULT_EPS: f64 = 1e-6;

/// [`DEFAULT_EPS`] (`1e-6`) rounded to `T`, for calls generic over the scalar type:
///
/// ```
/// use sd_attention::attention::linear::{default_eps, State};
/// let (mut s, mut z) = ([0.0f32; 2], [0.0f32; 2]);
/// let mut state = State::new(2, 1, &mut s, &mut z)?;
/// let mut out = [0.0f32];
/// state.step(&[0.5, -1.0], &[1.0, 0.0], &[3.0], default_eps(), &mut out)?;
/// assert!((out[0] - 3.0).abs() < 1e-5); // one token: its own value
/// # Ok::<(), sd_attention::Error>(())
/// ```
pub fn default_eps<T: Scalar>() -> T {
    T::of_f64(DEFAULT_EPS)
}
/// The default chunk length of the chunked kernels.
pub const DEFAULT_CHUNK: usize = 64;

/// `phi(x) = elu(x) + 1`: `x + 1` for `x > 0`, `exp(x)` otherwise (so `phi > 0`, continuous with a
/// continuous first derivative). NaN maps to NaN.
#[inline(always)]
pub fn phi<T: Scalar>(x: T) -> T {
    if x > T::zero() {
        x + T::one()
    } else {
        x.exp()
    }
}

/// `phi'(x)`: `1` for `x > 0`, `exp(x)` otherwise. NaN maps to NaN.
#[inline(always)]
pub fn phi_derivative<T: Scalar>(x: T) -> T {
    if x > T::zero() {
        T::one()
    } else {
        x.exp()
    }
}

/// `phi'(x)` from `x` and `phi(x)`, without a second `exp`.
#[inline(always)]
pub(crate) fn phi_derivative_from<T: Scalar>(x: T, phi_x: T) -> T {
    if x > T::zero() {
        T::one()
    } else {
        phi_x
    }
}

/// Configuration of ELU+1 linear attention: head dimensions, number of packed heads, causality,
/// chunk length and `eps`.
///
/// ```
/// use sd_attention::attention::{linear::LinearAttention, Causality};
/// let (n, d_k, d_v) = (3, 2, 1);
/// let q = [0.5, -1.0, 0.0, 0.0, 1.0, 2.0f64];
/// let k = [1.0, 0.0, -0.5, 0.5, 0.0, 0.0f64];
/// let v = [1.0, 2.0, 3.0f64];
/// let attention = LinearAttention::new(d_k, d_v, Causality::Causal);
/// let mut out = [0.0; 3];
/// let mut workspace = vec![0.0; attention.forward_workspace_len(n)];
/// attention.forward(n, &q, &k, &v, &mut out, &mut workspace)?;
/// assert!((out[0] - 1.0).abs() < 1e-6); // the first token sees only itself
/// let mut d_q = [0.0; 6];
/// let mut d_k = [0.0; 6];
/// let mut d_v = [0.0; 3];
/// let d_out = [1.0, 1.0, 1.0];
/// let mut workspace = vec![0.0; attention.backward_workspace_len(n)];
/// attention.backward(n, &q, &k, &v, &d_out, &mut d_q, &mut d_k, &mut d_v, &mut workspace)?;
/// assert!((d_v.iter().sum::<f64>() - 3.0).abs() < 1e-5); // each row's weights sum to ~1
/// # Ok::<(), sd_attention::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinearAttention<T> {
    /// Query/key features per head.
    pub d_k: usize,
    /// Value features per head.
    pub d_v: usize,
    /// Heads packed side by side in each row (`1`: a single head).
    pub n_heads: usize,
    /// Whether token `i` sees keys `j <= i` only.
    pub causality: Causality,
    /// Tokens per chunk of the chunked kernels (`>= 1`); the result does not depend on it beyond
    /// rounding. Default [`DEFAULT_CHUNK`].
    pub chunk: usize,
    /// Added to the normalizer `phi(q_i)^T z_i` (finite, `>= 0`). Default [`default_eps`].
    pub eps: T,
}

impl<T: Scalar> LinearAttention<T> {
    /// One head of the given dimensions, with `chunk = 64` and `eps = 1e-6`.
    pub fn new(d_k: usize, d_v: usize, causality: Causality) -> Self {
        LinearAttention { d_k, d_v, n_heads: 1, causality, chunk: DEFAULT_CHUNK, eps: default_eps() }
    }

    /// The same with `n_heads` heads packed per row.
    pub fn with_heads(self, n_heads: usize) -> Self {
        LinearAttention { n_heads, ..self }
    }

    /// The same with another chunk length.
    pub fn with_chunk(self, chunk: usize) -> Self {
        LinearAttention { chunk, ..self }
    }

    /// The same with another `eps`.
    pub fn with_eps(self, eps: T) -> Self {
        LinearAttention { eps, ..self }
    }

    /// The chunk length actually used for `n_tokens` tokens: `min(chunk, n_tokens)`, at least 1.
    fn effective_chunk(&self, n_tokens: usize) -> usize {
        self.chunk.min(n_tokens).max(1)
    }

    /// Workspace elements [`forward`](Self::forward) needs for `n_tokens` tokens:
    /// `d_k d_v + d_k + c (3 d_k + c + 1)` with `c = min(chunk, n_tokens)`, whatever the
    /// number of heads (they run one after the other). Saturates instead of overflowing.
    ///
    /// With the `parallel` feature and more than one head, the heads run as separate tasks on
    /// copies of their columns: `n_heads (n (2 d_k + 2 d_v) + that)`.
    pub fn forward_workspace_len(&self, n_tokens: usize) -> usize {
        let one = chunked::forward_workspace_len(self.d_k, self.d_v, self.effective_chunk(n_tokens));
        if self.head_tasks() {
            let copies = self.d_k.saturating_add(self.d_v).saturating_mul(2).saturating_mul(n_tokens);
            return self.n_heads.saturating_mul(one.saturating_add(copies));
        }
        one
    }

    /// Whether the heads run as separate tasks (`parallel`, more than one head).
    fn head_tasks(&self) -> bool {
        crate::parallel::ENABLED && self.n_heads > 1
    }

    /// Workspace elements [`backward`](Self::backward) needs for `n_tokens` tokens:
    /// `3 d_k d_v + 2 d_k + c (4 d_k + 3 d_v + 2 c + 2)` with `c = min(chunk, n_tokens)`.
    /// Saturates instead of overflowing.
    ///
    /// With `parallel` and more than one head: `n_heads (n (4 d_k + 3 d_v) + that)` (one task
    /// per head, on copies of its columns).
    pub fn backward_workspace_len(&self, n_tokens: usize) -> usize {
        let one = chunked::backward_workspace_len(self.d_k, self.d_v, self.effective_chunk(n_tokens));
        if self.head_tasks() {
            let copies = self
                .d_k
                .saturating_mul(4)
                .saturating_add(self.d_v.saturating_mul(3))
                .saturating_mul(n_tokens);
            return self.n_heads.saturating_mul(one.saturating_add(copies));
        }
        one
    }

    /// Checks the parameters and the lengths of `q`, `k` (`n x (n_heads d_k)`) and `v`
    /// (`n x (n_heads d_v)`); returns the packed row widths.
    fn check(&self, n_tokens: usize, q: &[T], k: &[T], v: &[T]) -> Result<(usize, usize)> {
        if self.chunk == 0 {
            return Err(Error::InvalidParameter { what: "chunk", expected: "at least 1" });
        }
        if !(self.eps >= T::zero() && self.eps.is_finite()) {
            return Err(Error::InvalidParameter { what: "eps", expected: "finite and >= 0" });
        }
        let width_k = self.n_heads.checked_mul(self.d_k).ok_or(Error::DimensionOverflow { what: "q" })?;
        let width_v = self.n_heads.checked_mul(self.d_v).ok_or(Error::DimensionOverflow { what: "v" })?;
        check_matrix("q", q.len(), n_tokens, width_k)?;
        check_matrix("k", k.len(), n_tokens, width_k)?;
        check_matrix("v", v.len(), n_tokens, width_v)?;
        Ok((width_k, width_v))
    }

    /// The heads of [`forward`](Self::forward) as separate tasks (validated, non-empty
    /// features): each copies its columns into its own scratch, runs as a one-head problem there
    /// (the same arithmetic), and the outputs are copied back after all have finished.
    #[allow(clippy::too_many_arguments)]
    fn forward_tasks(
        &self,
        n: usize,
        q: &[T],
        k: &[T],
        v: &[T],
        out: &mut [T],
        workspace: &mut [T],
    ) -> Result<()> {
        let (h, dk, dv) = (self.n_heads, self.d_k, self.d_v);
        let geometry = chunked::Geometry { n_heads: 1, ..self.geometry(n) };
        let isa = crate::arch::isa();
        let task = self.forward_workspace_len(n) / h;
        let ws = &mut workspace[..h * task];
        crate::parallel::try_chunks(ws, task, |t, ws| {
            let (q_t, rest) = ws.split_at_mut(n * dk);
            let (k_t, rest) = rest.split_at_mut(n * dk);
            let (v_t, rest) = rest.split_at_mut(n * dv);
            let (out_t, rest) = rest.split_at_mut(n * dv);
            gather(n, h * dk, t * dk, dk, q, q_t);
            gather(n, h * dk, t * dk, dk, k, k_t);
            gather(n, h * dv, t * dv, dv, v, v_t);
            let pass = chunked::Pass { geometry: &geometry, head: 0, causality: self.causality };
            chunked::forward_head(isa, &pass, self.eps, q_t, k_t, v_t, out_t, rest)
        })?;
        let at = n * (2 * dk + dv);
        for (t, ws) in ws.chunks_exact(task).enumerate() {
            scatter(n, h * dv, t * dv, dv, &ws[at..at + n * dv], out);
        }
        Ok(())
    }

    /// The heads of [`backward`](Self::backward) as separate tasks (see
    /// [`forward_tasks`](Self::forward_tasks)).
    #[allow(clippy::too_many_arguments)]
    fn backward_tasks(
        &self,
        n: usize,
        x: chunked::Inputs<'_, T>,
        d_q: &mut [T],
        d_k: &mut [T],
        d_v: &mut [T],
        workspace: &mut [T],
    ) -> Result<()> {
        let (h, dk, dv) = (self.n_heads, self.d_k, self.d_v);
        let geometry = chunked::Geometry { n_heads: 1, ..self.geometry(n) };
        let isa = crate::arch::isa();
        let task = self.backward_workspace_len(n) / h;
        let ws = &mut workspace[..h * task];
        crate::parallel::try_chunks(ws, task, |t, ws| {
            let (q_t, rest) = ws.split_at_mut(n * dk);
            let (k_t, rest) = rest.split_at_mut(n * dk);
            let (v_t, rest) = rest.split_at_mut(n * dv);
            let (d_out_t, rest) = rest.split_at_mut(n * dv);
            let (d_q_t, rest) = rest.split_at_mut(n * dk);
            let (d_k_t, rest) = rest.split_at_mut(n * dk);
            let (d_v_t, rest) = rest.split_at_mut(n * dv);
            gather(n, h * dk, t * dk, dk, x.q, q_t);
            gather(n, h * dk, t * dk, dk, x.k, k_t);
            gather(n, h * dv, t * dv, dv, x.v, v_t);
            gather(n, h * dv, t * dv, dv, x.d_out, d_out_t);
            let inputs = chunked::Inputs { q: q_t, k: k_t, v: v_t, d_out: d_out_t };
            let mut grads = chunked::Grads { d_q: d_q_t, d_k: d_k_t, d_v: d_v_t };
            let pass = chunked::Pass { geometry: &geometry, head: 0, causality: self.causality };
            chunked::backward_head(isa, &pass, self.eps, &inputs, &mut grads, rest)
        })?;
        let at = n * (2 * dk + 2 * dv);
        for (t, ws) in ws.chunks_exact(task).enumerate() {
            let (g_q, rest) = ws[at..].split_at(n * dk);
            let (g_k, rest) = rest.split_at(n * dk);
            scatter(n, h * dk, t * dk, dk, g_q, d_q);
            scatter(n, h * dk, t * dk, dk, g_k, d_k);
            scatter(n, h * dv, t * dv, dv, &rest[..n * dv], d_v);
        }
        Ok(())
    }

    fn geometry(&self, n_tokens: usize) -> chunked::Geometry {
        chunked::Geometry {
            n_tokens,
            d_k: self.d_k,
            d_v: self.d_v,
            n_heads: self.n_heads,
            chunk: self.effective_chunk(n_tokens),
        }
    }

    /// Output `out` (`n x (n_heads d_v)`) of every head:
    /// `O_i = phi(q_i)^T S_i / (phi(q_i)^T z_i + eps)` with `S_i = sum_j phi(k_j) v_j^T`,
    /// `z_i = sum_j phi(k_j)` over `j <= i` (causal) or all `j`.
    ///
    /// `q`, `k`: `n x (n_heads d_k)`; `v`, `out`: `n x (n_heads d_v)`; `workspace` at least
    /// [`forward_workspace_len`](Self::forward_workspace_len). Cost `4 n d_k d_v` flops per head for
    /// the state, plus `2 n chunk (d_k + d_v)` (causal) for the diagonal blocks.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        n_tokens: usize,
        q: &[T],
        k: &[T],
        v: &[T],
        out: &mut [T],
        workspace: &mut [T],
    ) -> Result<()> {
        let (_, width_v) = self.check(n_tokens, q, k, v)?;
        check_matrix("out", out.len(), n_tokens, width_v)?;
        check_workspace(workspace.len(), self.forward_workspace_len(n_tokens))?;
        if self.d_k == 0 || self.d_v == 0 {
            // No features on one side: every output entry is `0 / (0 + eps)`. Returning here also
            // keeps the work bounded by the slice lengths when `n_tokens` is huge and the slices empty.
            out.fill(T::zero() / self.eps);
            return Ok(());
        }
        if self.head_tasks() {
            return self.forward_tasks(n_tokens, q, k, v, out, workspace);
        }
        let geometry = self.geometry(n_tokens);
        for head in 0..self.n_heads {
            let pass = chunked::Pass { geometry: &geometry, head, causality: self.causality };
            chunked::forward_head(crate::arch::isa(), &pass, self.eps, q, k, v, out, workspace)?;
        }
        Ok(())
    }

    /// Gradients `d_q`, `d_k` (`n x (n_heads d_k)`) and `d_v` (`n x (n_heads d_v)`) of a loss
    /// `L(O)` given `d_out = dL/dO` (`n x (n_heads d_v)`); they are overwritten, not accumulated.
    ///
    /// With `den_i = phi(q_i)^T z_i + eps`, `g_i = dO_i / den_i` and `h_i = -(g_i . O_i)`:
    /// `dQ_i = phi'(q_i) * (S_i g_i + z_i h_i)`,
    /// `dK_j = phi'(k_j) * (R_j v_j + r_j)`, `dV_j = R_j^T phi(k_j)`, where
    /// `R_j = sum_i phi(q_i) g_i^T`, `r_j = sum_i h_i phi(q_i)` over `i >= j` (causal) or all `i`.
    /// The forward quantities are recomputed, so the output `O` is not an argument. `O(n d_k d_v)`
    /// time; `d_v` and `d_k` also hold intermediate values during the call (so they must not alias
    /// anything, which Rust guarantees). Workspace at least
    /// [`backward_workspace_len`](Self::backward_workspace_len).
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        n_tokens: usize,
        q: &[T],
        k: &[T],
        v: &[T],
        d_out: &[T],
        d_q: &mut [T],
        d_k: &mut [T],
        d_v: &mut [T],
        workspace: &mut [T],
    ) -> Result<()> {
        let (width_k, width_v) = self.check(n_tokens, q, k, v)?;
        check_matrix("d_out", d_out.len(), n_tokens, width_v)?;
        check_matrix("d_q", d_q.len(), n_tokens, width_k)?;
        check_matrix("d_k", d_k.len(), n_tokens, width_k)?;
        check_matrix("d_v", d_v.len(), n_tokens, width_v)?;
        check_workspace(workspace.len(), self.backward_workspace_len(n_tokens))?;
        if self.d_k == 0 || self.d_v == 0 {
            // Every output is `0 / (0 + eps)`, constant in all inputs.
            d_q.fill(T::zero());
            d_k.fill(T::zero());
            d_v.fill(T::zero());
            return Ok(());
        }
        if self.head_tasks() {
            return self.backward_tasks(
                n_tokens,
                chunked::Inputs { q, k, v, d_out },
                d_q,
                d_k,
                d_v,
                workspace,
            );
        }
        let geometry = self.geometry(n_tokens);
        let inputs = chunked::Inputs { q, k, v, d_out };
        let mut grads = chunked::Grads { d_q, d_k, d_v };
        for head in 0..self.n_heads {
            let pass = chunked::Pass { geometry: &geometry, head, causality: self.causality };
            chunked::backward_head(crate::arch::isa(), &pass, self.eps, &inputs, &mut grads, workspace)?;
        }
        Ok(())
    }
}
