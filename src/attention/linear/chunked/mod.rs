//! The chunked kernels behind [`LinearAttention`](super::LinearAttention) (`docs/math.md` section 6).
//!
//! A sequence is cut into chunks of `c` tokens. For chunk `[t0, t0 + c)`, with `A = phi(Q_chunk)`,
//! `B = phi(K_chunk)` (`c x d_k`) and the state `S`, `z` of all earlier tokens:
//!
//! ```text
//! P   = tril(A B^T)                                  (c x c, entries above the diagonal zeroed)
//! num = A S + P V_chunk,   den = A z + P 1 + eps,    O_chunk = num / den
//! S  += B^T V_chunk,       z  += B^T 1
//! ```
//!
//! The backward pass runs two sweeps. Forward: it recomputes `den` and, from `Y = dO S^T` and
//! `M = tril(dO V^T)` (which the gradient needs anyway), `dO_i . num_i = A_i . Y_i + P_i . M_i`
//! without forming `num`; then `g_i = dO_i / den_i`, `h_i = -(g_i . num_i) / den_i`,
//! `G = tril(g V^T + h 1^T) = tril(M / den + h 1^T)`, `dA = g S^T + h z^T + G B` and, while `G` is
//! at hand, the chunk's own part of `dB`, `G^T A` (into `d_k`); `den` and `h` are parked in the
//! first two columns of `d_v` (the outputs are `n`-sized anyway, so the extra memory stays
//! independent of `n`). Reverse: with `g = dO / den` again and the suffix sums
//! `R = sum_{later chunks} A_i^T g_i`, `r = sum h_i A_i`, `dB = V R^T + 1 r^T + G^T A` and
//! `dV = B R + P^T g`, then `R += A^T g`, `r += A^T h`. With a single value feature (`d_v = 1`,
//! no room for two parked numbers) the forward sweep parks `g` in `d_v` and `h` in the first
//! column of `d_k` instead, and the reverse sweep computes `G^T A` itself. The non-causal form
//! needs no masks: `R`, `r` are full sums, computed in a middle sweep.
//!
//! Every product is the crate's register-blocked kernel over operands read where they lie
//! (`crate::linalg::microkernel::gemm_rows`, no packing): the inputs' rows in place (any head of a
//! packed row), `phi(Q)`, `phi(K)` and their transposes in chunk scratch, the state and its
//! transpose. A masked matrix (`P`, `G` and their transposes) is computed band by band of the
//! kernel's panel width, over the columns the band's rows can see, as a full product; the entries
//! above the diagonal are then overwritten with zeros (a select, not a multiplication, so a NaN or
//! infinity in a later token's `phi(k)` never reaches an earlier row). The masked matrix then
//! multiplies, block by block of the kernel's row height, the rows the block may see, up to the
//! block's end: the zeros above the diagonal multiply rows of that block only when the chunk's
//! operand rows are all finite (checked per chunk); otherwise the diagonal block is summed entry by
//! entry over `j <= i`, so non-finite values follow causality exactly.
//!
//! Per chunk of `c` tokens with `d = d_k = d_v` that is `4 c d^2` flops of state products and about
//! `2 c^2 d` of masked ones forward (half of `P` and `P V` plus the band edges), and `10 c d^2` and
//! about `6 c^2 d` for the backward (which recomputes `den` and the state): at `c = d` about 1.5
//! and 2.0 times the `4 n d^2` and `8 n d^2` of the recurrent form.
//!
//! `phi` and `phi'` are the vectorized exponential of `crate::linalg::exp` for `f32` (within 3 ulp of
//! `libm::exp`), `libm::exp` for `f64`. The chunk drivers are compiled once per instruction set
//! (AVX-512, AVX2 with FMA, portable) and chosen at run time like the products.

mod backward;
mod elementwise;
mod forward;
mod masked;

use core::ops::Range;

use crate::arch::Isa;
use crate::attention::Causality;
use crate::workspace::Req;
use crate::{Result, Scalar};
use backward::backward_body;
use forward::forward_body;

pub(super) use elementwise::phi_slice;

/// Sizes of one call: tokens, per-head dimensions, heads per row, chunk length (`1..=n` or 1).
pub(super) struct Geometry {
    pub n_tokens: usize,
    pub d_k: usize,
    pub d_v: usize,
    pub n_heads: usize,
    pub chunk: usize,
}

/// The inputs of the backward pass.
pub(super) struct Inputs<'a, T> {
    pub q: &'a [T],
    pub k: &'a [T],
    pub v: &'a [T],
    pub d_out: &'a [T],
}

/// The outputs of the backward pass.
pub(super) struct Grads<'a, T> {
    pub d_q: &'a mut [T],
    pub d_k: &'a mut [T],
    pub d_v: &'a mut [T],
}

/// One call of a pass: geometry, head, causality and `eps`.
pub(super) struct Pass<'a> {
    pub geometry: &'a Geometry,
    pub head: usize,
    pub causality: Causality,
}

/// Where one head's row `i` lives in a packed `n x (n_heads width)` matrix.
#[derive(Clone, Copy)]
struct Layout {
    stride: usize,
    offset: usize,
    width: usize,
}

impl Layout {
    fn of_head(n_heads: usize, width: usize, head: usize) -> Self {
        Layout { stride: n_heads * width, offset: head * width, width }
    }
    #[inline(always)]
    fn row(&self, i: usize) -> Range<usize> {
        let start = i * self.stride + self.offset;
        start..start + self.width
    }
    /// The index of the first entry of row `i`: a matrix view with leading dimension `stride`.
    #[inline(always)]
    fn start(&self, i: usize) -> usize {
        i * self.stride + self.offset
    }
}

/// Block shape of the product kernel the driver runs with: its row height and panel width in
/// elements (so that masked products cover whole blocks and panels).
#[derive(Clone, Copy)]
struct Tiles {
    rows: usize,
    width: usize,
}

/// The forward's buffers of one head, in order: the state `S` (`d_k x d_v`) and `z` (`d_k`), then
/// per chunk `phi(Q)`, `phi(K)` (`c x d_k` each), `phi(K)^T` (`d_k x c`), `P` (`c x c`) and the
/// denominators (`c`).
fn forward_lens(d_k: usize, d_v: usize, chunk: usize) -> [usize; 7] {
    [d_k * d_v, d_k, chunk * d_k, chunk * d_k, d_k * chunk, chunk * chunk, chunk]
}

/// `d_k d_v + d_k + c (3 d_k + c + 1)`: the sum of [`forward_lens`], saturating.
pub(super) fn forward_workspace_len(d_k: usize, d_v: usize, chunk: usize) -> usize {
    Req::all_of([
        Req::array(d_k, d_v),
        Req::new(d_k),
        Req::array(chunk, d_k).times(3),
        Req::array(chunk, chunk),
        Req::new(chunk),
    ])
    .saturating()
}

/// The backward's buffers of one head, in order: `S`, the suffix sum `R` and a transposed copy of
/// either (`d_k x d_v` each), `z` and `r` (`d_k` each); per chunk `phi(Q)`, `phi(K)`, a transposed
/// one and `dA` (`c x d_k` each), `V^T` (or `g^T`), `g` and the numerators (`c x d_v` each), `P`
/// and `G` (`c x c` each), the denominators and `h` (`c` each).
fn backward_lens(d_k: usize, d_v: usize, chunk: usize) -> [usize; 16] {
    let (ck, cv, cc, kv) = (chunk * d_k, chunk * d_v, chunk * chunk, d_k * d_v);
    [kv, kv, kv, d_k, d_k, ck, ck, ck, ck, cv, cv, cv, cc, cc, chunk, chunk]
}

/// `3 d_k d_v + 2 d_k + c (4 d_k + 3 d_v + 2 c + 2)`: the sum of [`backward_lens`], saturating.
pub(super) fn backward_workspace_len(d_k: usize, d_v: usize, chunk: usize) -> usize {
    Req::all_of([
        Req::array(d_k, d_v).times(3),
        Req::array(d_k, 2),
        Req::array(chunk, d_k).times(4),
        Req::array(chunk, d_v).times(3),
        Req::array(chunk, chunk).times(2),
        Req::array(chunk, 2),
    ])
    .saturating()
}

/// Product-kernel tiles of each variant for elements of `bytes` bytes: AVX-512 8 rows and
/// 64-byte panels, AVX2 6 rows and 32-byte panels, portable 4 x 8.
fn tiles(isa: Isa, bytes: usize) -> Tiles {
    match isa {
        Isa::Avx512 => Tiles { rows: 8, width: 128 / bytes },
        Isa::Avx2Fma => Tiles { rows: 6, width: 64 / bytes },
        Isa::Portable => Tiles { rows: 4, width: 8 },
    }
}

crate::arch::multiversion! {
    /// [`forward_body`] in `f32` in the variant `isa` (`phi`, transposes and elementwise loops
    /// compiled for its features; the products dispatch the same way).
    fn forward_f32(pass: &Pass<'_>, eps: f32, q: &[f32], k: &[f32], v: &[f32], out: &mut [f32], ws: &mut [f32]) -> Result<()>;
    avx512("avx512f,fma") => forward_body::<f32, true>(tiles(Isa::Avx512, 4), pass, eps, q, k, v, out, ws);
    avx2("avx2,fma") => forward_body::<f32, true>(tiles(Isa::Avx2Fma, 4), pass, eps, q, k, v, out, ws);
    portable => forward_body::<f32, false>(tiles(Isa::Portable, 4), pass, eps, q, k, v, out, ws);
}

crate::arch::multiversion! {
    /// [`backward_body`] in `f32` in the variant `isa`.
    fn backward_f32(pass: &Pass<'_>, eps: f32, x: &Inputs<'_, f32>, grads: &mut Grads<'_, f32>, ws: &mut [f32]) -> Result<()>;
    avx512("avx512f,fma") => backward_body::<f32, true>(tiles(Isa::Avx512, 4), pass, eps, x, grads, ws);
    avx2("avx2,fma") => backward_body::<f32, true>(tiles(Isa::Avx2Fma, 4), pass, eps, x, grads, ws);
    portable => backward_body::<f32, false>(tiles(Isa::Portable, 4), pass, eps, x, grads, ws);
}

/// One head's forward pass in the variant `isa` ([`crate::arch::isa`], or any below it). `f32`
/// runs the variant's drivers; `f64`, the reference precision, runs the portable driver over the
/// variant's products.
#[allow(clippy::too_many_arguments)]
pub(super) fn forward_head<T: Scalar>(
    isa: Isa,
    pass: &Pass<'_>,
    eps: T,
    q: &[T],
    k: &[T],
    v: &[T],
    out: &mut [T],
    workspace: &mut [T],
) -> Result<()> {
    if let (Some(q), Some(k), Some(v)) = (T::f32_slice(q), T::f32_slice(k), T::f32_slice(v)) {
        let (out, workspace) =
            (T::f32_slice_mut(out).expect("f32"), T::f32_slice_mut(workspace).expect("f32"));
        return forward_f32(isa, pass, eps.as_f64() as f32, q, k, v, out, workspace);
    }
    forward_body::<T, false>(
        tiles(isa.clamp(), core::mem::size_of::<T>()),
        pass,
        eps,
        q,
        k,
        v,
        out,
        workspace,
    )
}

/// One head's backward pass in the variant `isa` (as [`forward_head`]).
pub(super) fn backward_head<T: Scalar>(
    isa: Isa,
    pass: &Pass<'_>,
    eps: T,
    x: &Inputs<'_, T>,
    grads: &mut Grads<'_, T>,
    workspace: &mut [T],
) -> Result<()> {
    let inputs = (T::f32_slice(x.q), T::f32_slice(x.k), T::f32_slice(x.v), T::f32_slice(x.d_out));
    if let (Some(q), Some(k), Some(v), Some(d_out)) = inputs {
        let x = Inputs { q, k, v, d_out };
        let mut grads = Grads {
            d_q: T::f32_slice_mut(grads.d_q).expect("f32"),
            d_k: T::f32_slice_mut(grads.d_k).expect("f32"),
            d_v: T::f32_slice_mut(grads.d_v).expect("f32"),
        };
        let workspace = T::f32_slice_mut(workspace).expect("f32");
        return backward_f32(isa, pass, eps.as_f64() as f32, &x, &mut grads, workspace);
    }
    backward_body::<T, false>(tiles(isa.clamp(), core::mem::size_of::<T>()), pass, eps, x, grads, workspace)
}
