//! Unchecked building blocks shared by the validated public API.
//!
//! These functions assume their callers validated the shapes. They stay memory-safe on any input:
//! slices are indexed with bounds checks (or zipped), and the one `unsafe` call, into
//! `matrixmultiply`, sits behind `assert!`s that establish its contract. Loops run over
//! `chunks_exact` with independent accumulators, which lets the compiler keep them in vector
//! registers without reassociating a single running sum.

use crate::Scalar;

/// Lanes of independent accumulators in reductions.
const LANES: usize = 8;

/// Adds the lanes pairwise: `((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7))`.
#[inline(always)]
fn reduce_lanes<T: Scalar>(acc: [T; LANES]) -> T {
    let q = [acc[0] + acc[4], acc[1] + acc[5], acc[2] + acc[6], acc[3] + acc[7]];
    (q[0] + q[2]) + (q[1] + q[3])
}

/// `sum_i x_i y_i` over the common length of `x` and `y`.
#[inline]
pub(crate) fn dot<T: Scalar>(x: &[T], y: &[T]) -> T {
    let len = x.len().min(y.len());
    let (x, y) = (&x[..len], &y[..len]);
    let mut acc = [T::zero(); LANES];
    let x_chunks = x.chunks_exact(LANES);
    let y_chunks = y.chunks_exact(LANES);
    let mut tail = T::zero();
    for (a, b) in x_chunks.remainder().iter().zip(y_chunks.remainder()) {
        tail += *a * *b;
    }
    for (a, b) in x_chunks.zip(y_chunks) {
        for lane in 0..LANES {
            acc[lane] += a[lane] * b[lane];
        }
    }
    reduce_lanes(acc) + tail
}

/// `sum_i x_i^2`.
#[inline]
pub(crate) fn sum_of_squares<T: Scalar>(x: &[T]) -> T {
    dot(x, x)
}

/// `max_i |x_i|`, ignoring NaN (which callers must detect separately); `0` for an empty slice.
#[inline]
pub(crate) fn max_abs<T: Scalar>(x: &[T]) -> T {
    let mut acc = [T::zero(); LANES];
    let chunks = x.chunks_exact(LANES);
    let mut tail = T::zero();
    for v in chunks.remainder() {
        tail = tail.max(v.abs());
    }
    for c in chunks {
        for lane in 0..LANES {
            acc[lane] = acc[lane].max(c[lane].abs());
        }
    }
    acc.iter().fold(tail, |m, &v| m.max(v))
}

/// `y += alpha * x` over the common length.
#[inline]
pub(crate) fn axpy<T: Scalar>(alpha: T, x: &[T], y: &mut [T]) {
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

/// `x *= alpha`.
#[inline]
pub(crate) fn scale<T: Scalar>(alpha: T, x: &mut [T]) {
    for xi in x.iter_mut() {
        *xi *= alpha;
    }
}

/// `||x||_2`, scaled by `max |x_i|` so that it neither overflows nor underflows; NaN if any element
/// is NaN, `+inf` if any is infinite (and none is NaN).
pub(crate) fn norm<T: Scalar>(x: &[T]) -> T {
    let largest = max_abs(x);
    if largest == T::zero() || !largest.is_finite() {
        // All zeros (or NaNs, which `max_abs` skipped): the plain sum keeps NaN. Infinite: the sum is
        // +inf unless a NaN is present, and then NaN.
        return sum_of_squares(x).sqrt();
    }
    let inv = largest.recip();
    if !inv.is_finite() {
        // `largest` is subnormal and its reciprocal overflows: lift everything by 2^64 first (exact),
        // after which the reciprocal fits in both f32 and f64. A rare path, so one plain loop.
        let lift = T::of_f64(18_446_744_073_709_551_616.0); // 2^64
        let inv = (largest * lift).recip();
        let mut acc = T::zero();
        for &v in x {
            let s = (v * lift) * inv;
            acc += s * s;
        }
        return acc.sqrt() * largest;
    }
    let mut acc = [T::zero(); LANES];
    let chunks = x.chunks_exact(LANES);
    let mut tail = T::zero();
    for &v in chunks.remainder() {
        let s = v * inv;
        tail += s * s;
    }
    for c in chunks {
        for lane in 0..LANES {
            let s = c[lane] * inv;
            acc[lane] += s * s;
        }
    }
    (reduce_lanes(acc) + tail).sqrt() * largest
}

/// Writes the transpose of the row-major `rows x cols` matrix `a` into `out` (`cols x rows`), eight
/// rows of `a` at a time: the eight rows are read in order, and each column's eight entries are
/// written as one contiguous run of a row of `out` (a cache line of `f64`). Measured 1.6x faster
/// than square 8 x 8 blocks on `768 x 64` (whose output rows lie 6 KB apart).
pub(crate) fn transpose<T: Scalar>(rows: usize, cols: usize, a: &[T], out: &mut [T]) {
    const BLOCK: usize = 8;
    if rows == 0 || cols == 0 {
        // Nothing to move; and without this return an empty `usize::MAX / 3 x 0` matrix would
        // spin through its row loops (found by the `api_shapes` fuzz target).
        return;
    }
    let (a, out) = (&a[..rows * cols], &mut out[..rows * cols]);
    let full_rows = rows - rows % BLOCK;
    for row0 in (0..full_rows).step_by(BLOCK) {
        let block = &a[row0 * cols..(row0 + BLOCK) * cols];
        for (j, out_row) in out.chunks_exact_mut(rows).enumerate() {
            for (r, o) in out_row[row0..row0 + BLOCK].iter_mut().enumerate() {
                *o = block[r * cols + j];
            }
        }
    }
    // The last rows % 8 rows, element by element.
    for i in full_rows..rows {
        for (j, &value) in a[i * cols..(i + 1) * cols].iter().enumerate() {
            out[j * rows + i] = value;
        }
    }
}

/// Whether a gemm operand is used as stored or transposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transpose {
    /// `op(X) = X`.
    No,
    /// `op(X) = X^T`.
    Yes,
}

/// `C = alpha * op(A) op(B) + beta * C`, row-major; `op(A)` is `m x k` (stored `m x k`, or `k x m`
/// when transposed), `op(B)` is `k x n` (stored `k x n`, or `n x k`), `C` is `m x n`. With
/// `beta == 0`, `C` is overwritten without being read (NaN in `C` does not propagate).
///
/// Panics if a slice is shorter than its dimensions imply (validated callers never trigger this).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm<T: Scalar>(
    m: usize,
    k: usize,
    n: usize,
    alpha: T,
    a: &[T],
    op_a: Transpose,
    b: &[T],
    op_b: Transpose,
    beta: T,
    c: &mut [T],
) {
    let mk = m.checked_mul(k).expect("gemm: m * k overflows");
    let kn = k.checked_mul(n).expect("gemm: k * n overflows");
    let mn = m.checked_mul(n).expect("gemm: m * n overflows");
    assert!(a.len() >= mk && b.len() >= kn && c.len() >= mn, "gemm: slice shorter than its dimensions");
    if mn == 0 {
        return;
    }
    if k == 0 {
        // op(A) op(B) is the zero matrix.
        let c = &mut c[..mn];
        if beta == T::zero() {
            c.fill(T::zero());
        } else {
            scale(beta, c);
        }
        return;
    }
    #[cfg(feature = "parallel")]
    if m.saturating_mul(n).saturating_mul(k) >= PARALLEL_MIN_MACS && (m > TILE || n > TILE) {
        return gemm_tiles(m, k, n, alpha, a, op_a, b, op_b, beta, c);
    }
    #[cfg(feature = "alloc")]
    gemm_matrixmultiply(m, k, n, alpha, a, op_a, b, op_b, beta, c);
    #[cfg(not(feature = "alloc"))]
    gemm_portable(m, k, n, alpha, a, op_a, b, op_b, beta, c);
}

/// The `alloc` path: `matrixmultiply`'s packed, cache-blocked kernels (which allocate their packing
/// buffers per call). Same contract as [`gemm`], with `m, n, k > 0` and lengths already asserted.
#[cfg(feature = "alloc")]
#[allow(clippy::too_many_arguments)]
fn gemm_matrixmultiply<T: Scalar>(
    m: usize,
    k: usize,
    n: usize,
    alpha: T,
    a: &[T],
    op_a: Transpose,
    b: &[T],
    op_b: Transpose,
    beta: T,
    c: &mut [T],
) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
    // Row-major strides of op(A) and op(B) as matrixmultiply reads them.
    let (rsa, csa) = match op_a {
        Transpose::No => (k as isize, 1),
        Transpose::Yes => (1, m as isize),
    };
    let (rsb, csb) = match op_b {
        Transpose::No => (n as isize, 1),
        Transpose::Yes => (1, k as isize),
    };
    // SAFETY: the assert above gives a.len() >= m*k, b.len() >= k*n, c.len() >= m*n. For op_a = No
    // the largest offset read is (m-1)*k + (k-1) = m*k - 1; for Yes it is (m-1) + (k-1)*m = m*k - 1;
    // likewise k*n - 1 for B and (m-1)*n + (n-1) = m*n - 1 for C, all in bounds. Every length is at
    // most isize::MAX (a slice's length is), so the `as isize` strides are exact. `c` comes from a
    // `&mut` borrow, so it is writable and disjoint from `a` and `b`.
    unsafe {
        T::gemm_strided(
            m,
            k,
            n,
            alpha,
            a.as_ptr(),
            rsa,
            csa,
            b.as_ptr(),
            rsb,
            csb,
            beta,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// Products of at least this many multiply-adds are split into tiles (`parallel` only).
#[cfg(feature = "parallel")]
const PARALLEL_MIN_MACS: usize = 1 << 20;

/// Rows and columns of the tiles of `C` that [`gemm_tiles`] hands to separate tasks.
#[cfg(feature = "parallel")]
const TILE: usize = 32;

/// A raw pointer that may cross threads: the tiles of `C` written through it are disjoint.
#[cfg(feature = "parallel")]
#[derive(Clone, Copy)]
struct SharedMut<T>(*mut T);
// SAFETY: only `gemm_tiles` makes one, from a `&mut [T]` it holds for the whole parallel region,
// and each task writes a tile of `C` no other task touches (see there).
#[cfg(feature = "parallel")]
unsafe impl<T: Send> Send for SharedMut<T> {}
#[cfg(feature = "parallel")]
unsafe impl<T: Send> Sync for SharedMut<T> {}

/// [`gemm`] with `C` cut into `TILE x TILE` tiles computed as separate rayon tasks, each the full
/// `k`-long product for its rows and columns. The tiling depends on `m` and `n` only. Each entry
/// of `C` is computed by the same kernel over the same `k` in the same order as by one whole call
/// (the packed kernels keep one accumulator per entry and add the `k` blocks in order), so the
/// result does not depend on the tiling either: it equals the untiled product's.
#[cfg(feature = "parallel")]
#[allow(clippy::too_many_arguments)]
fn gemm_tiles<T: Scalar>(
    m: usize,
    k: usize,
    n: usize,
    alpha: T,
    a: &[T],
    op_a: Transpose,
    b: &[T],
    op_b: Transpose,
    beta: T,
    c: &mut [T],
) {
    use rayon::prelude::*;
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
    let (rsa, csa) = match op_a {
        Transpose::No => (k, 1),
        Transpose::Yes => (1, m),
    };
    let (rsb, csb) = match op_b {
        Transpose::No => (n, 1),
        Transpose::Yes => (1, k),
    };
    let (tiles_m, tiles_n) = (m.div_ceil(TILE), n.div_ceil(TILE));
    let c_ptr = SharedMut(c.as_mut_ptr());
    (0..tiles_m * tiles_n).into_par_iter().for_each(move |t| {
        let c_ptr = c_ptr;
        let (i0, j0) = ((t / tiles_n) * TILE, (t % tiles_n) * TILE);
        let (mt, nt) = (TILE.min(m - i0), TILE.min(n - j0));
        // SAFETY: the tile reads rows i0..i0+mt of op(A), i.e. offsets i0*rsa + p*csa for
        // p < k, at most (m-1)*rsa + (k-1)*csa = m*k - 1 (as in `gemm_matrixmultiply`); likewise
        // B's columns j0..j0+nt at most k*n - 1; and C's entries (i, j) with i0 <= i < i0+mt,
        // j0 <= j < j0+nt at offset i*n + j <= m*n - 1: all inside the slices (asserted above).
        // Tiles partition C, so no two tasks write the same entry, and `c` stays mutably borrowed
        // by this function until every task has finished (`for_each` joins them); `a` and `b` are
        // only read. Strides are at most a slice length, so they fit in isize.
        unsafe {
            T::gemm_strided(
                mt,
                k,
                nt,
                alpha,
                a.as_ptr().add(i0 * rsa),
                rsa as isize,
                csa as isize,
                b.as_ptr().add(j0 * csb),
                rsb as isize,
                csb as isize,
                beta,
                c_ptr.0.add(i0 * n + j0),
                n as isize,
                1,
            );
        }
    });
}

/// The allocation-free path (without the `alloc` feature): row-oriented loops over slices.
/// `C` is first scaled by `beta` (or zeroed); then, for `op(B) = B`, each row of `C` accumulates
/// `alpha op(A)_ip` times row `p` of `B` (an axpy over contiguous rows); for `op(B) = B^T`, each
/// entry is a dot product of a row of `op(A)` with a row of the stored `B`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_portable<T: Scalar>(
    m: usize,
    k: usize,
    n: usize,
    alpha: T,
    a: &[T],
    op_a: Transpose,
    b: &[T],
    op_b: Transpose,
    beta: T,
    c: &mut [T],
) {
    let a_at = |i: usize, p: usize| match op_a {
        Transpose::No => a[i * k + p],
        Transpose::Yes => a[p * m + i],
    };
    for i in 0..m {
        let c_row = &mut c[i * n..(i + 1) * n];
        if beta == T::zero() {
            c_row.fill(T::zero());
        } else if beta != T::one() {
            scale(beta, c_row);
        }
        match (op_a, op_b) {
            (_, Transpose::No) => {
                for p in 0..k {
                    axpy(alpha * a_at(i, p), &b[p * n..(p + 1) * n], c_row);
                }
            }
            (Transpose::No, Transpose::Yes) => {
                let a_row = &a[i * k..(i + 1) * k];
                for (j, c_ij) in c_row.iter_mut().enumerate() {
                    *c_ij += alpha * dot(a_row, &b[j * k..(j + 1) * k]);
                }
            }
            (Transpose::Yes, Transpose::Yes) => {
                for (j, c_ij) in c_row.iter_mut().enumerate() {
                    let b_row = &b[j * k..(j + 1) * k];
                    let mut acc = T::zero();
                    for (p, &b_jp) in b_row.iter().enumerate() {
                        acc += a[p * m + i] * b_jp;
                    }
                    *c_ij += alpha * acc;
                }
            }
        }
    }
}
