//! Recurrent (streaming) ELU+1 linear attention (`docs/math.md` section 6): one token in, one out.
//!
//! `S_i = S_{i-1} + phi(k_i) v_i^T`, `z_i = z_{i-1} + phi(k_i)`,
//! `o_i = phi(q_i)^T S_i / (phi(q_i)^T z_i + eps)`. The state lives in caller memory; a step reads
//! and writes it once (`4 d_k d_v + 4 d_k` flops), needs no workspace and never allocates, so it
//! runs on a microcontroller without an allocator (`default-features = false`).

use super::phi;
use crate::error::check_len;
use crate::{Error, Result, Scalar};

/// The running state of one causal head over borrowed buffers: `s` (`d_k x d_v`, row-major,
/// `sum_j phi(k_j) v_j^T`) and `z` (`d_k`, `sum_j phi(k_j)`).
///
/// ```
/// use sd_attention::attention::linear::State;
/// let (d_k, d_v) = (2, 2);
/// let (mut s, mut z) = ([0.0f32; 4], [0.0f32; 2]);
/// let mut state = State::new(d_k, d_v, &mut s, &mut z)?;
/// let mut out = [0.0f32; 2];
/// state.step(&[0.1, -0.2], &[0.3, 0.0], &[1.0, -1.0], 1e-6, &mut out)?;
/// assert!((out[0] - 1.0).abs() < 1e-5 && (out[1] + 1.0).abs() < 1e-5); // one token: its own value
/// # Ok::<(), sd_attention::Error>(())
/// ```
#[derive(Debug)]
pub struct State<'a, T> {
    d_k: usize,
    d_v: usize,
    s: &'a mut [T],
    z: &'a mut [T],
}

impl<'a, T: Scalar> State<'a, T> {
    /// A fresh state (the buffers are zeroed) over `s` (`d_k d_v` elements) and `z` (`d_k`).
    pub fn new(d_k: usize, d_v: usize, s: &'a mut [T], z: &'a mut [T]) -> Result<Self> {
        let mut state = Self::resume(d_k, d_v, s, z)?;
        state.reset();
        Ok(state)
    }

    /// A state over buffers that already hold `S` and `z` (e.g. saved from an earlier stream);
    /// their contents are kept.
    pub fn resume(d_k: usize, d_v: usize, s: &'a mut [T], z: &'a mut [T]) -> Result<Self> {
        let len = d_k.checked_mul(d_v).ok_or(Error::DimensionOverflow { what: "s" })?;
        check_len("s", s.len(), len)?;
        check_len("z", z.len(), d_k)?;
        Ok(State { d_k, d_v, s, z })
    }

    /// Forgets every token: `S = 0`, `z = 0`.
    pub fn reset(&mut self) {
        self.s.fill(T::zero());
        self.z.fill(T::zero());
    }

    /// `S` (`d_k x d_v`, row-major).
    pub fn s(&self) -> &[T] {
        self.s
    }

    /// `z` (`d_k`).
    pub fn z(&self) -> &[T] {
        self.z
    }

    /// Adds the keys `k` (`n x d_k`) and values `v` (`n x d_v`) of `n_tokens` tokens to the state
    /// without producing outputs (a prompt before streaming): `S += phi(K)^T V`, `z += phi(K)^T 1`.
    pub fn absorb(&mut self, n_tokens: usize, k: &[T], v: &[T]) -> Result<()> {
        crate::error::check_matrix("k", k.len(), n_tokens, self.d_k)?;
        crate::error::check_matrix("v", v.len(), n_tokens, self.d_v)?;
        let (d_k, d_v) = (self.d_k, self.d_v);
        if d_k == 0 {
            // Nothing to add (and `n_tokens` is not bounded by the empty slices).
            return Ok(());
        }
        for i in 0..n_tokens {
            let (k_i, v_i) = (&k[i * d_k..(i + 1) * d_k], &v[i * d_v..(i + 1) * d_v]);
            for (p, &key) in k_i.iter().enumerate() {
                let weight = phi(key);
                self.z[p] += weight;
                for (s_pv, &value) in self.s[p * d_v..(p + 1) * d_v].iter_mut().zip(v_i) {
                    *s_pv += weight * value;
                }
            }
        }
        Ok(())
    }

    /// One token: adds `phi(k) v^T` to `S` and `phi(k)` to `z`, then writes
    /// `out = phi(q)^T S / (phi(q)^T z + eps)` (`q`, `k`: `d_k`; `v`, `out`: `d_v`).
    ///
    /// `eps` must be finite and `>= 0`. NaN or infinity in `q` affects this output only; in `k` or
    /// `v` it enters the state and every later output (call [`reset`](Self::reset) to recover).
    pub fn step(&mut self, q: &[T], k: &[T], v: &[T], eps: T, out: &mut [T]) -> Result<()> {
        check_len("q", q.len(), self.d_k)?;
        check_len("k", k.len(), self.d_k)?;
        check_len("v", v.len(), self.d_v)?;
        check_len("out", out.len(), self.d_v)?;
        if !(eps >= T::zero() && eps.is_finite()) {
            return Err(Error::InvalidParameter { what: "eps", expected: "finite and >= 0" });
        }
        let d_v = self.d_v;
        out.fill(T::zero());
        let mut den = T::zero();
        for (p, (&query, &key)) in q.iter().zip(k).enumerate() {
            let (weight_k, weight_q) = (phi(key), phi(query));
            let z_p = self.z[p] + weight_k;
            self.z[p] = z_p;
            den += weight_q * z_p;
            // One pass over row p of S: update it and read it out.
            for ((s_pv, &value), o) in self.s[p * d_v..(p + 1) * d_v].iter_mut().zip(v).zip(out.iter_mut()) {
                let updated = *s_pv + weight_k * value;
                *s_pv = updated;
                *o += weight_q * updated;
            }
        }
        let den = den + eps;
        for o in out.iter_mut() {
            *o /= den;
        }
        Ok(())
    }
}
