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
        step_with(crate::arch::isa(), self.s, self.z, q, k, v, eps, out);
        Ok(())
    }
}

/// One step over checked buffers in the variant `isa` ([`crate::arch::isa`] or below it): `f32`
/// in the variant's compilation, `f64` (the reference precision) portably.
#[allow(clippy::too_many_arguments)]
pub(super) fn step_with<T: Scalar>(
    isa: crate::arch::Isa,
    s: &mut [T],
    z: &mut [T],
    q: &[T],
    k: &[T],
    v: &[T],
    eps: T,
    out: &mut [T],
) {
    if let (Some(q), Some(k), Some(v)) = (T::f32_slice(q), T::f32_slice(k), T::f32_slice(v)) {
        let (s, z, out) = (
            T::f32_slice_mut(s).expect("f32"),
            T::f32_slice_mut(z).expect("f32"),
            T::f32_slice_mut(out).expect("f32"),
        );
        return step_f32(isa, s, z, q, k, v, eps.as_f64() as f32, out);
    }
    step_body::<T, false>(s, z, q, k, v, eps, out)
}

crate::arch::multiversion! {
    /// [`step_body`] in `f32` in the variant `isa`.
    fn step_f32(s: &mut [f32], z: &mut [f32], q: &[f32], k: &[f32], v: &[f32], eps: f32, out: &mut [f32]);
    avx512("avx512f,fma") => step_body::<f32, true>(s, z, q, k, v, eps, out);
    avx2("avx2,fma") => step_body::<f32, true>(s, z, q, k, v, eps, out);
    portable => step_body::<f32, false>(s, z, q, k, v, eps, out);
}

/// `phi` of at most this many features at a time, in stack buffers.
const FEATURES: usize = 64;
/// Columns of `out` held in registers while the rows of `S` pass (4 AVX2 or 2 AVX-512 vectors of
/// `f32`, next to as many of `v`).
const COLUMNS: usize = 32;

/// One step over checked buffers (`s`: `d_k x d_v`, `z`, `q`, `k`: `d_k`, `v`, `out`: `d_v`):
/// `phi(q)`, `phi(k)` in blocks of [`FEATURES`] on the stack (the vector exponential for `f32`),
/// then, per block of [`COLUMNS`] columns, one pass down the rows of `S` that updates each row
/// (`S_p += phi(k_p) v`) and accumulates it into `out` (`out += phi(q_p) S_p`) in registers.
#[inline(always)]
fn step_body<T: Scalar, const FUSED: bool>(
    s: &mut [T],
    z: &mut [T],
    q: &[T],
    k: &[T],
    v: &[T],
    eps: T,
    out: &mut [T],
) {
    let d_v = v.len();
    out.fill(T::zero());
    let mut den = [T::zero(); 8];
    let (mut weights_q, mut weights_k) = ([T::zero(); FEATURES], [T::zero(); FEATURES]);
    for (p0, (q_block, k_block)) in q.chunks(FEATURES).zip(k.chunks(FEATURES)).enumerate() {
        let len = q_block.len();
        let (wq, wk) = (&mut weights_q[..len], &mut weights_k[..len]);
        super::chunked::phi_slice::<T, FUSED>(q_block, wq);
        super::chunked::phi_slice::<T, FUSED>(k_block, wk);
        let p0 = p0 * FEATURES;
        // z += phi(k); den += phi(q) . z, in 8 partial sums (one vector).
        let mut z_blocks = z[p0..p0 + len].chunks_exact_mut(8);
        let (mut q_blocks, mut k_blocks) = (wq.chunks_exact(8), wk.chunks_exact(8));
        for ((z_b, q_b), k_b) in (&mut z_blocks).zip(&mut q_blocks).zip(&mut k_blocks) {
            for lane in 0..8 {
                z_b[lane] += k_b[lane];
                den[lane] = T::multiply_add::<FUSED>(q_b[lane], z_b[lane], den[lane]);
            }
        }
        let tail =
            z_blocks.into_remainder().iter_mut().zip(q_blocks.remainder().iter().zip(k_blocks.remainder()));
        for (lane, (z_p, (&weight_q, &weight_k))) in tail.enumerate() {
            *z_p += weight_k;
            den[lane] = T::multiply_add::<FUSED>(weight_q, *z_p, den[lane]);
        }
        let rows = &mut s[p0 * d_v..(p0 + len) * d_v];
        let mut c0 = 0;
        while c0 + COLUMNS <= d_v {
            // Copies, not `core::array::from_fn`, which is not always inlined into the variants.
            let mut acc: [T; COLUMNS] = out[c0..c0 + COLUMNS].try_into().expect("COLUMNS wide");
            let values: [T; COLUMNS] = v[c0..c0 + COLUMNS].try_into().expect("COLUMNS wide");
            for (row, (&weight_q, &weight_k)) in rows.chunks_exact_mut(d_v).zip(wq.iter().zip(wk.iter())) {
                let row: &mut [T; COLUMNS] = (&mut row[c0..c0 + COLUMNS]).try_into().expect("COLUMNS wide");
                for j in 0..COLUMNS {
                    let updated = T::multiply_add::<FUSED>(weight_k, values[j], row[j]);
                    row[j] = updated;
                    acc[j] = T::multiply_add::<FUSED>(weight_q, updated, acc[j]);
                }
            }
            out[c0..c0 + COLUMNS].copy_from_slice(&acc);
            c0 += COLUMNS;
        }
        if c0 < d_v {
            for (row, (&weight_q, &weight_k)) in rows.chunks_exact_mut(d_v).zip(wq.iter().zip(wk.iter())) {
                for ((s_pv, &value), o) in row[c0..].iter_mut().zip(&v[c0..]).zip(out[c0..].iter_mut()) {
                    let updated = T::multiply_add::<FUSED>(weight_k, value, *s_pv);
                    *s_pv = updated;
                    *o = T::multiply_add::<FUSED>(weight_q, updated, *o);
                }
            }
        }
    }
    let den = den.iter().fold(eps, |sum, &d| sum + d);
    for o in out.iter_mut() {
        *o /= den;
    }
}
