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
//! `G = tril(g V^T + h 1^T) = tril(M / den + h 1^T)` and `dA = g S^T + h z^T + G B`, and parks `g` in `d_v` and `h` in the first column of `d_k` (the
//! outputs are `n`-sized anyway, so the extra memory stays independent of `n`). Reverse: with the
//! suffix sums `R = sum_{later chunks} A_i^T g_i`, `r = sum h_i A_i`,
//! `dB = V R^T + 1 r^T + G^T A` and `dV = B R + P^T g`, then `R += A^T g`, `r += A^T h`. The
//! non-causal form needs no masks: `R`, `r` are full sums, computed in a middle sweep.
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
//! about `7 c^2 d` for the backward (which recomputes `den` and the state): at `c = d` about 1.5
//! and 2.1 times the `4 n d^2` and `8 n d^2` of the recurrent form.
//!
//! `phi` and `phi'` are the vectorized exponential of `crate::linalg::exp` for `f32` (within 3 ulp of
//! `libm::exp`), `libm::exp` for `f64`. The chunk drivers are compiled once per instruction set
//! (AVX-512, AVX2 with FMA, portable) and chosen at run time like the products.

use core::ops::Range;

use super::{phi, phi_derivative_from};
use crate::arch::Isa;
use crate::attention::Causality;
use crate::linalg::microkernel::gemm_rows;
use crate::workspace::{carve, Req};
use crate::{Result, Scalar};

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

/// `C = A B` (or `C += A B`) by the register-blocked kernel (see the module documentation).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn product<T: Scalar>(
    m: usize,
    k: usize,
    n: usize,
    a: &[T],
    lda: usize,
    b: &[T],
    ldb: usize,
    c: &mut [T],
    ldc: usize,
    accumulate: bool,
) {
    gemm_rows(m, k, n, T::one(), a, lda, b, ldb, c, ldc, accumulate);
}

/// Independent partial sums of the reductions below (a multiple of every vector width).
const LANES: usize = 16;

/// `sum_i x_i y_i` in [`LANES`] partial sums, so that it vectorizes.
#[inline(always)]
fn dot<T: Scalar>(x: &[T], y: &[T]) -> T {
    let mut acc = [T::zero(); LANES];
    let (xc, yc) = (x.chunks_exact(LANES), y.chunks_exact(LANES));
    let mut tail = T::zero();
    for (a, b) in xc.remainder().iter().zip(yc.remainder()) {
        tail += *a * *b;
    }
    for (a, b) in xc.zip(yc) {
        for lane in 0..LANES {
            acc[lane] += a[lane] * b[lane];
        }
    }
    acc.iter().fold(tail, |s, &a| s + a)
}

/// `sum_i x_i` in [`LANES`] partial sums.
#[inline(always)]
fn sum<T: Scalar>(x: &[T]) -> T {
    let mut acc = [T::zero(); LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder().iter().fold(T::zero(), |s, &a| s + a);
    for a in chunks {
        for lane in 0..LANES {
            acc[lane] += a[lane];
        }
    }
    acc.iter().fold(tail, |s, &a| s + a)
}

/// `y += alpha x`.
#[inline(always)]
fn axpy<T: Scalar>(alpha: T, x: &[T], y: &mut [T]) {
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

/// Whether every entry of the `rows x width` matrix at `x` (leading dimension `ld`) is finite:
/// `0 * x` is `0` exactly for finite `x` and NaN for NaN and infinities.
#[inline(always)]
fn all_finite<T: Scalar>(rows: usize, width: usize, x: &[T], ld: usize) -> bool {
    let mut acc = [T::zero(); LANES];
    for r in 0..rows {
        let row = &x[r * ld..r * ld + width];
        let chunks = row.chunks_exact(LANES);
        for (lane, &v) in chunks.remainder().iter().enumerate() {
            acc[lane] += v * T::zero();
        }
        for a in chunks {
            for lane in 0..LANES {
                acc[lane] += a[lane] * T::zero();
            }
        }
    }
    acc.iter().all(|&a| a == T::zero())
}

/// `dst_i = phi(src_i)`; for `f32` the vector exponential ([`crate::linalg::exp::exp1`], fused with FMA).
#[inline(always)]
pub(super) fn phi_slice<T: Scalar, const FUSED: bool>(src: &[T], dst: &mut [T]) {
    match T::f32_slice(src) {
        Some(src) => {
            let dst = T::f32_slice_mut(dst).expect("same type as src");
            for (d, &x) in dst.iter_mut().zip(src) {
                let e = crate::linalg::exp::exp1::<FUSED>(x);
                *d = if x > 0.0 { x + 1.0 } else { e };
            }
        }
        None => {
            for (d, &x) in dst.iter_mut().zip(src) {
                *d = phi(x);
            }
        }
    }
}

/// `dst` row `r` = `phi` of row `t0 + r` of `src`, for `c` rows (`dst` contiguous, `width` wide).
#[inline(always)]
fn phi_rows<T: Scalar, const FUSED: bool>(src: &[T], layout: Layout, t0: usize, c: usize, dst: &mut [T]) {
    let w = layout.width;
    for r in 0..c {
        phi_slice::<T, FUSED>(&src[layout.row(t0 + r)], &mut dst[r * w..(r + 1) * w]);
    }
}

/// `dst` (`cols x rows`, leading dimension `ldd`) = the transpose of `src` (`rows x cols`,
/// leading dimension `lds`). With `SIMD` (only inside the AVX2 and AVX-512 drivers) `f32` runs in
/// 8 x 8 register tiles.
#[inline(always)]
fn transpose<T: Scalar, const SIMD: bool>(
    rows: usize,
    cols: usize,
    src: &[T],
    lds: usize,
    dst: &mut [T],
    ldd: usize,
) {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    if SIMD {
        if let Some(src) = T::f32_slice(src) {
            let dst = T::f32_slice_mut(dst).expect("same type as src");
            // SAFETY: `SIMD` is set only by the drivers compiled for AVX2 or AVX-512 (which
            // implies AVX2), called after run-time detection of those features.
            return unsafe { crate::arch::x86_64::transpose_f32(rows, cols, src, lds, dst, ldd) };
        }
    }
    for i in 0..rows {
        for (j, &x) in src[i * lds..i * lds + cols].iter().enumerate() {
            dst[j * ldd + i] = x;
        }
    }
}

/// `t` (`c x c`, leading dimension `c`) = the causal part of `a bt` (`a`: `c x k`, `bt`: `k x c`):
/// per band of `tiles.width` rows (a panel of the product kernel), the columns up to the band's
/// last row by the product kernel, then every entry above the diagonal overwritten with zero.
/// Entries to the right of a band's columns are not written (and never read by
/// [`lower_product`], whose row blocks end at or before their band's end).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn lower_scores<T: Scalar>(
    tiles: Tiles,
    c: usize,
    k: usize,
    a: &[T],
    lda: usize,
    bt: &[T],
    ldb: usize,
    t: &mut [T],
) {
    // Bands of a panel's width: each band's columns end on a panel boundary (or the chunk's end).
    for i0 in (0..c).step_by(tiles.width) {
        let rows = tiles.width.min(c - i0);
        let cols = c.min(i0 + tiles.width);
        product(rows, k, cols, &a[i0 * lda..], lda, bt, ldb, &mut t[i0 * c..], c, false);
        for r in i0..i0 + rows {
            t[r * c + r + 1..r * c + cols].fill(T::zero());
        }
    }
}

/// The row blocks of the masked products: blocks of `tiles.rows` rows inside each band of
/// `tiles.width` rows (the last block of a band may be shorter), so that no block crosses the
/// band boundary at which [`lower_scores`] and [`upper_scores`] stop computing entries.
#[inline(always)]
fn blocks(tiles: Tiles, c: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..c).step_by(tiles.width).flat_map(move |b0| {
        let b1 = c.min(b0 + tiles.width);
        (b0..b1).step_by(tiles.rows).map(move |i0| (i0, tiles.rows.min(b1 - i0)))
    })
}

/// `out_r (+)= sum_{j <= r} t_rj b_j` for `c` rows (`t` from [`lower_scores`]; `b`: rows of `n`
/// at leading dimension `ldb`; `out`: leading dimension `ldo`). With `finite` (every `b_j` of the
/// chunk finite) each row block runs through the end of the block, its zeros above the diagonal
/// included; otherwise the diagonal block is summed over `j <= r` only.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn lower_product<T: Scalar>(
    tiles: Tiles,
    c: usize,
    t: &[T],
    b: &[T],
    ldb: usize,
    n: usize,
    out: &mut [T],
    ldo: usize,
    finite: bool,
    accumulate: bool,
) {
    for (i0, rows) in blocks(tiles, c) {
        let (t_block, out_block) = (&t[i0 * c..], &mut out[i0 * ldo..]);
        if finite {
            product(rows, i0 + rows, n, t_block, c, b, ldb, out_block, ldo, accumulate);
        } else {
            product(rows, i0, n, t_block, c, b, ldb, out_block, ldo, accumulate);
            for r in 0..rows {
                let out_r = &mut out_block[r * ldo..r * ldo + n];
                for j in i0..=i0 + r {
                    axpy(t_block[r * c + j], &b[j * ldb..j * ldb + n], out_r);
                }
            }
        }
    }
}

/// `t` (`c x c`) = the anti-causal part of `a bt`: row `j` holds `a_j . bt_i` for `i >= j` (per
/// band of `tiles.width` rows, from the band's first column; entries left of the diagonal
/// overwritten with zero, entries left of the band not written: [`upper_product`]'s row blocks
/// start at or after their band's start).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn upper_scores<T: Scalar>(
    tiles: Tiles,
    c: usize,
    k: usize,
    a: &[T],
    lda: usize,
    bt: &[T],
    ldb: usize,
    t: &mut [T],
) {
    for j0 in (0..c).step_by(tiles.width) {
        let (rows, col0) = (tiles.width.min(c - j0), j0);
        product(rows, k, c - col0, &a[j0 * lda..], lda, &bt[col0..], ldb, &mut t[j0 * c + col0..], c, false);
        for j in j0..j0 + rows {
            t[j * c + col0..j * c + j].fill(T::zero());
        }
    }
}

/// `out_j (+)= sum_{i >= j} t_ji b_i` for `c` rows (`t` from [`upper_scores`]), the mirror of
/// [`lower_product`]: with `finite` each row block runs from its first row on.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn upper_product<T: Scalar>(
    tiles: Tiles,
    c: usize,
    t: &[T],
    b: &[T],
    ldb: usize,
    n: usize,
    out: &mut [T],
    ldo: usize,
    finite: bool,
    accumulate: bool,
) {
    for (j0, rows) in blocks(tiles, c) {
        let out_block = &mut out[j0 * ldo..];
        if finite {
            product(rows, c - j0, n, &t[j0 * c + j0..], c, &b[j0 * ldb..], ldb, out_block, ldo, accumulate);
        } else {
            let j1 = j0 + rows;
            if j1 < c {
                product(
                    rows,
                    c - j1,
                    n,
                    &t[j0 * c + j1..],
                    c,
                    &b[j1 * ldb..],
                    ldb,
                    out_block,
                    ldo,
                    accumulate,
                );
            } else if !accumulate {
                for r in 0..rows {
                    out_block[r * ldo..r * ldo + n].fill(T::zero());
                }
            }
            for r in 0..rows {
                let j = j0 + r;
                let out_r = &mut out_block[r * ldo..r * ldo + n];
                for i in j..j1 {
                    axpy(t[j * c + i], &b[i * ldb..i * ldb + n], out_r);
                }
            }
        }
    }
}

/// `S += B^T V` (`bt` = `B^T`, `d_k x c`; `V` rows at leading dimension `ldv`), `z += B^T 1`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn absorb<T: Scalar>(
    c: usize,
    d_k: usize,
    d_v: usize,
    b: &[T],
    bt: &[T],
    v: &[T],
    ldv: usize,
    s: &mut [T],
    z: &mut [T],
) {
    product(d_k, c, d_v, bt, c, v, ldv, s, d_v, true);
    for r in 0..c {
        axpy(T::one(), &b[r * d_k..(r + 1) * d_k], z);
    }
}

/// `d_x` row `t0 + r` = `grad_r * phi'(x_r)` for `c` rows (`fx` holds `phi(x)`; `phi'(x)` is `1`
/// for `x > 0`, else `phi(x)`).
#[inline(always)]
fn write_through_phi<T: Scalar>(
    x: &[T],
    fx: &[T],
    grad: &[T],
    layout: Layout,
    t0: usize,
    c: usize,
    d_x: &mut [T],
) {
    let w = layout.width;
    for r in 0..c {
        let rows = layout.row(t0 + r);
        let (x_r, fx_r, grad_r) = (&x[rows.clone()], &fx[r * w..(r + 1) * w], &grad[r * w..(r + 1) * w]);
        for (((out, &x), &f), &gr) in d_x[rows].iter_mut().zip(x_r).zip(fx_r).zip(grad_r) {
            *out = gr * phi_derivative_from(x, f);
        }
    }
}

/// `den_r += eps`, `g_r = dO_r / den_r` (`d_out` rows at `layout`), `h_r = -(g_r . num_r) / den_r`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn normalize_gradient<T: Scalar>(
    c: usize,
    d_v: usize,
    eps: T,
    d_out: &[T],
    layout: Layout,
    t0: usize,
    num: &[T],
    den: &mut [T],
    g: &mut [T],
    h: &mut [T],
) {
    for r in 0..c {
        let denominator = den[r] + eps;
        den[r] = denominator;
        let g_r = &mut g[r * d_v..(r + 1) * d_v];
        for (x, &d) in g_r.iter_mut().zip(&d_out[layout.row(t0 + r)]) {
            *x = d / denominator;
        }
        h[r] = -dot(g_r, &num[r * d_v..(r + 1) * d_v]) / denominator;
    }
}

/// One head's forward pass; `workspace` holds at least [`forward_workspace_len`] elements.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn forward_body<T: Scalar, const FUSED: bool>(
    tiles: Tiles,
    pass: &Pass<'_>,
    eps: T,
    q: &[T],
    k: &[T],
    v: &[T],
    out: &mut [T],
    workspace: &mut [T],
) -> Result<()> {
    let Geometry { n_tokens: n, d_k, d_v, n_heads, chunk } = *pass.geometry;
    let (lk, lv) = (Layout::of_head(n_heads, d_k, pass.head), Layout::of_head(n_heads, d_v, pass.head));
    let ldv = lv.stride;
    let ([s, z, fq, fk, fkt, p, den], _) = carve(workspace, forward_lens(d_k, d_v, chunk))?;
    s.fill(T::zero());
    z.fill(T::zero());
    let normalize = |out: &mut [T], t0: usize, c: usize, den: &[T]| {
        for r in 0..c {
            let denominator = den[r] + eps;
            for o in out[lv.row(t0 + r)].iter_mut() {
                *o /= denominator;
            }
        }
    };
    match pass.causality {
        Causality::Causal => {
            for t0 in (0..n).step_by(chunk) {
                let c = chunk.min(n - t0);
                phi_rows::<T, FUSED>(q, lk, t0, c, fq);
                phi_rows::<T, FUSED>(k, lk, t0, c, fk);
                transpose::<T, FUSED>(c, d_k, fk, d_k, fkt, c);
                let (vb, ob) = (&v[lv.start(t0)..], &mut out[lv.start(t0)..]);
                // Earlier chunks: out = A S, den = A z (zero for the first chunk).
                product(c, if t0 == 0 { 0 } else { d_k }, d_v, fq, d_k, s, d_v, ob, ldv, false);
                for r in 0..c {
                    den[r] = dot(&fq[r * d_k..(r + 1) * d_k], z);
                }
                // This chunk: P = tril(A B^T); out += P V, den += P 1.
                lower_scores(tiles, c, d_k, fq, d_k, fkt, c, p);
                for r in 0..c {
                    den[r] += sum(&p[r * c..r * c + r + 1]);
                }
                let finite = all_finite(c, d_v, vb, ldv);
                lower_product(tiles, c, p, vb, ldv, d_v, ob, ldv, finite, true);
                normalize(out, t0, c, den);
                absorb(c, d_k, d_v, fk, fkt, &v[lv.start(t0)..], ldv, s, z);
            }
        }
        Causality::Bidirectional => {
            for t0 in (0..n).step_by(chunk) {
                let c = chunk.min(n - t0);
                phi_rows::<T, FUSED>(k, lk, t0, c, fk);
                transpose::<T, FUSED>(c, d_k, fk, d_k, fkt, c);
                absorb(c, d_k, d_v, fk, fkt, &v[lv.start(t0)..], ldv, s, z);
            }
            for t0 in (0..n).step_by(chunk) {
                let c = chunk.min(n - t0);
                phi_rows::<T, FUSED>(q, lk, t0, c, fq);
                product(c, d_k, d_v, fq, d_k, s, d_v, &mut out[lv.start(t0)..], ldv, false);
                for r in 0..c {
                    den[r] = dot(&fq[r * d_k..(r + 1) * d_k], z);
                }
                normalize(out, t0, c, den);
            }
        }
    }
    Ok(())
}

/// One head's backward pass; `workspace` holds at least [`backward_workspace_len`] elements.
#[inline(always)]
fn backward_body<T: Scalar, const FUSED: bool>(
    tiles: Tiles,
    pass: &Pass<'_>,
    eps: T,
    x: &Inputs<'_, T>,
    grads: &mut Grads<'_, T>,
    workspace: &mut [T],
) -> Result<()> {
    let Geometry { n_tokens: n, d_k, d_v, n_heads, chunk } = *pass.geometry;
    let (lk, lv) = (Layout::of_head(n_heads, d_k, pass.head), Layout::of_head(n_heads, d_v, pass.head));
    let ldv = lv.stride;
    debug_assert!(d_k > 0 && d_v > 0, "the caller handles empty feature dimensions");
    let ([s, suffix, transposed, z, suffix_z, fq, fk, ft, grad_ab, vt, gc, num, p, mixed, den, h], _) =
        carve(workspace, backward_lens(d_k, d_v, chunk))?;
    s.fill(T::zero());
    z.fill(T::zero());
    suffix.fill(T::zero());
    suffix_z.fill(T::zero());
    let chunk_starts = (0..n).step_by(chunk);

    match pass.causality {
        Causality::Causal => {
            // Forward sweep: dQ, and g, h parked in d_v and column 0 of d_k.
            for t0 in chunk_starts.clone() {
                let c = chunk.min(n - t0);
                phi_rows::<T, FUSED>(x.q, lk, t0, c, fq);
                phi_rows::<T, FUSED>(x.k, lk, t0, c, fk);
                transpose::<T, FUSED>(c, d_k, fk, d_k, ft, c);
                let (vb, ob) = (&x.v[lv.start(t0)..], &x.d_out[lv.start(t0)..]);
                // den = A z + P 1 + eps with P = tril(A B^T).
                lower_scores(tiles, c, d_k, fq, d_k, ft, c, p);
                for r in 0..c {
                    den[r] = dot(&fq[r * d_k..(r + 1) * d_k], z) + sum(&p[r * c..r * c + r + 1]) + eps;
                }
                // Y = dO S^T (into dA) and M = tril(dO V^T) (into G), unnormalized; they give
                // dO_r . num_r = A_r . Y_r + sum_j P_rj M_rj without forming num = A S + P V.
                transpose::<T, FUSED>(d_k, d_v, s, d_v, transposed, d_k);
                product(c, if t0 == 0 { 0 } else { d_v }, d_k, ob, ldv, transposed, d_k, grad_ab, d_k, false);
                transpose::<T, FUSED>(c, d_v, vb, ldv, vt, c);
                lower_scores(tiles, c, d_v, ob, ldv, vt, c, mixed);
                // g = dO / den, h = -(g . num) / den; dA = g S^T + h z^T + G B with
                // G = tril(g V^T + h 1^T) = tril(M / den + h 1^T).
                for r in 0..c {
                    let (grad_r, mixed_r) =
                        (&mut grad_ab[r * d_k..(r + 1) * d_k], &mut mixed[r * c..r * c + r + 1]);
                    let dot_num =
                        dot(&fq[r * d_k..(r + 1) * d_k], grad_r) + dot(&p[r * c..r * c + r + 1], mixed_r);
                    let denominator = den[r];
                    let h_r = -(dot_num / denominator) / denominator;
                    h[r] = h_r;
                    for (g, &d) in gc[r * d_v..(r + 1) * d_v].iter_mut().zip(&x.d_out[lv.row(t0 + r)]) {
                        *g = d / denominator;
                    }
                    for (y, &z_p) in grad_r.iter_mut().zip(z.iter()) {
                        *y = *y / denominator + h_r * z_p;
                    }
                    for m in mixed_r.iter_mut() {
                        *m = *m / denominator + h_r;
                    }
                }
                let finite = all_finite(c, d_k, fk, d_k);
                lower_product(tiles, c, mixed, fk, d_k, d_k, grad_ab, d_k, finite, true);
                write_through_phi(x.q, fq, grad_ab, lk, t0, c, grads.d_q);
                for r in 0..c {
                    grads.d_v[lv.row(t0 + r)].copy_from_slice(&gc[r * d_v..(r + 1) * d_v]);
                    grads.d_k[lk.row(t0 + r).start] = h[r];
                }
                absorb(c, d_k, d_v, fk, ft, vb, ldv, s, z);
            }
            // Reverse sweep: dK, dV from the suffix sums R = sum A_i^T g_i, r = sum h_i A_i.
            for t0 in (0..n.div_ceil(chunk)).rev().map(|index| index * chunk) {
                let c = chunk.min(n - t0);
                phi_rows::<T, FUSED>(x.q, lk, t0, c, fq);
                phi_rows::<T, FUSED>(x.k, lk, t0, c, fk);
                transpose::<T, FUSED>(c, d_k, fq, d_k, ft, c);
                let vb = &x.v[lv.start(t0)..];
                for r in 0..c {
                    gc[r * d_v..(r + 1) * d_v].copy_from_slice(&grads.d_v[lv.row(t0 + r)]);
                    h[r] = grads.d_k[lk.row(t0 + r).start];
                }
                // dB = V R^T + 1 r^T + G^T A, with G^T = triu(V g^T + 1 h^T).
                let later = if t0 + c == n { 0 } else { d_v };
                transpose::<T, FUSED>(d_k, d_v, suffix, d_v, transposed, d_k);
                product(c, later, d_k, vb, ldv, transposed, d_k, grad_ab, d_k, false);
                for j in 0..c {
                    axpy(T::one(), suffix_z, &mut grad_ab[j * d_k..(j + 1) * d_k]);
                }
                transpose::<T, FUSED>(c, d_v, gc, d_v, vt, c);
                upper_scores(tiles, c, d_v, vb, ldv, vt, c, mixed);
                for j in 0..c {
                    for (m, &h_i) in mixed[j * c + j..(j + 1) * c].iter_mut().zip(&h[j..c]) {
                        *m += h_i;
                    }
                }
                let finite = all_finite(c, d_k, fq, d_k);
                upper_product(tiles, c, mixed, fq, d_k, d_k, grad_ab, d_k, finite, true);
                write_through_phi(x.k, fk, grad_ab, lk, t0, c, grads.d_k);
                // dV = B R + P^T g, with P^T = triu(B A^T).
                let dvb = &mut grads.d_v[lv.start(t0)..];
                product(c, if later == 0 { 0 } else { d_k }, d_v, fk, d_k, suffix, d_v, dvb, ldv, false);
                upper_scores(tiles, c, d_k, fk, d_k, ft, c, p);
                let finite = all_finite(c, d_v, gc, d_v);
                upper_product(tiles, c, p, gc, d_v, d_v, dvb, ldv, finite, true);
                // R += A^T g, r += A^T h.
                product(d_k, c, d_v, ft, c, gc, d_v, suffix, d_v, true);
                for i in 0..c {
                    axpy(h[i], &fq[i * d_k..(i + 1) * d_k], suffix_z);
                }
            }
        }
        Causality::Bidirectional => {
            for t0 in chunk_starts.clone() {
                let c = chunk.min(n - t0);
                phi_rows::<T, FUSED>(x.k, lk, t0, c, fk);
                transpose::<T, FUSED>(c, d_k, fk, d_k, ft, c);
                absorb(c, d_k, d_v, fk, ft, &x.v[lv.start(t0)..], ldv, s, z);
            }
            transpose::<T, FUSED>(d_k, d_v, s, d_v, transposed, d_k);
            for t0 in chunk_starts.clone() {
                let c = chunk.min(n - t0);
                phi_rows::<T, FUSED>(x.q, lk, t0, c, fq);
                product(c, d_k, d_v, fq, d_k, s, d_v, num, d_v, false);
                for r in 0..c {
                    den[r] = dot(&fq[r * d_k..(r + 1) * d_k], z);
                }
                normalize_gradient(c, d_v, eps, x.d_out, lv, t0, num, den, gc, h);
                product(c, d_v, d_k, gc, d_v, transposed, d_k, grad_ab, d_k, false);
                for r in 0..c {
                    axpy(h[r], z, &mut grad_ab[r * d_k..(r + 1) * d_k]);
                }
                write_through_phi(x.q, fq, grad_ab, lk, t0, c, grads.d_q);
                transpose::<T, FUSED>(c, d_k, fq, d_k, ft, c);
                product(d_k, c, d_v, ft, c, gc, d_v, suffix, d_v, true);
                for r in 0..c {
                    axpy(h[r], &fq[r * d_k..(r + 1) * d_k], suffix_z);
                }
            }
            transpose::<T, FUSED>(d_k, d_v, suffix, d_v, transposed, d_k);
            for t0 in chunk_starts {
                let c = chunk.min(n - t0);
                phi_rows::<T, FUSED>(x.k, lk, t0, c, fk);
                let vb = &x.v[lv.start(t0)..];
                product(c, d_v, d_k, vb, ldv, transposed, d_k, grad_ab, d_k, false);
                for j in 0..c {
                    axpy(T::one(), suffix_z, &mut grad_ab[j * d_k..(j + 1) * d_k]);
                }
                write_through_phi(x.k, fk, grad_ab, lk, t0, c, grads.d_k);
                product(c, d_k, d_v, fk, d_k, suffix, d_v, &mut grads.d_v[lv.start(t0)..], ldv, false);
            }
        }
    }
    Ok(())
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
