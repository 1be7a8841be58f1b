//! Task splitting shared by the kernels: with the `parallel` feature the tasks run on the current
//! rayon pool (the global pool, or the one a caller `install`s; the crate never builds a pool of
//! its own), without it they run one after the other, in order, on the calling thread.
//!
//! Determinism: every split here is a function of the problem's sizes only, never of the number
//! of threads, and no task reduces into a value another task reads. Where work is split along a
//! sum (weight gradients over row blocks), each block writes its own partial into caller-provided
//! scratch and the partials are added afterwards in block order. So results are bit-identical for
//! any thread count, one thread included.

/// Calls `f(i, chunk_i)` for the consecutive chunks of `chunk` elements of `data` (the last may be
/// shorter), in parallel with `parallel`, stopping at the first error.
pub(crate) fn try_chunks<A, E, F>(data: &mut [A], chunk: usize, f: F) -> Result<(), E>
where
    A: Send,
    E: Send,
    F: Fn(usize, &mut [A]) -> Result<(), E> + Sync + Send,
{
    let chunk = chunk.max(1);
    #[cfg(feature = "parallel")]
    {
        use rayon::prelude::*;
        data.par_chunks_mut(chunk).enumerate().try_for_each(|(i, c)| f(i, c))
    }
    #[cfg(not(feature = "parallel"))]
    {
        data.chunks_mut(chunk).enumerate().try_for_each(|(i, c)| f(i, c))
    }
}

/// [`try_chunks`] without errors.
pub(crate) fn chunks<A, F>(data: &mut [A], chunk: usize, f: F)
where
    A: Send,
    F: Fn(usize, &mut [A]) + Sync + Send,
{
    let _ = try_chunks::<A, (), _>(data, chunk, |i, c| {
        f(i, c);
        Ok(())
    });
}

/// Calls `f(i, a_i, b_i)` for the `i`-th chunks of `a` (`ca` elements each) and `b` (`cb` each),
/// for as many `i` as both have, in parallel with `parallel`, stopping at the first error.
pub(crate) fn try_chunks2<A, B, E, F>(a: &mut [A], ca: usize, b: &mut [B], cb: usize, f: F) -> Result<(), E>
where
    A: Send,
    B: Send,
    E: Send,
    F: Fn(usize, &mut [A], &mut [B]) -> Result<(), E> + Sync + Send,
{
    let (ca, cb) = (ca.max(1), cb.max(1));
    #[cfg(feature = "parallel")]
    {
        use rayon::prelude::*;
        a.par_chunks_mut(ca).zip(b.par_chunks_mut(cb)).enumerate().try_for_each(|(i, (x, y))| f(i, x, y))
    }
    #[cfg(not(feature = "parallel"))]
    {
        a.chunks_mut(ca).zip(b.chunks_mut(cb)).enumerate().try_for_each(|(i, (x, y))| f(i, x, y))
    }
}

/// As [`try_chunks2`] with three slices.
#[allow(clippy::too_many_arguments)]
pub(crate) fn try_chunks3<A, B, C, E, F>(
    a: &mut [A],
    ca: usize,
    b: &mut [B],
    cb: usize,
    c: &mut [C],
    cc: usize,
    f: F,
) -> Result<(), E>
where
    A: Send,
    B: Send,
    C: Send,
    E: Send,
    F: Fn(usize, &mut [A], &mut [B], &mut [C]) -> Result<(), E> + Sync + Send,
{
    let (ca, cb, cc) = (ca.max(1), cb.max(1), cc.max(1));
    #[cfg(feature = "parallel")]
    {
        use rayon::prelude::*;
        a.par_chunks_mut(ca)
            .zip(b.par_chunks_mut(cb))
            .zip(c.par_chunks_mut(cc))
            .enumerate()
            .try_for_each(|(i, ((x, y), z))| f(i, x, y, z))
    }
    #[cfg(not(feature = "parallel"))]
    {
        a.chunks_mut(ca)
            .zip(b.chunks_mut(cb))
            .zip(c.chunks_mut(cc))
            .enumerate()
            .try_for_each(|(i, ((x, y), z))| f(i, x, y, z))
    }
}

/// Runs `f` on a worker thread of the current rayon pool (with `parallel`; without it, here), and
/// returns its result. A caller outside the pool otherwise hands every parallel region to the pool
/// and sleeps until it is done: two thread wake-ups per region, on the critical path of each of the
/// hundreds of regions of a training step. From inside the pool, the thread that reaches a region
/// starts on it at once and the other workers steal from it; the serial parts between regions run on
/// that worker. Calls from a worker thread run `f` directly.
#[cfg_attr(not(feature = "alloc"), allow(dead_code))] // used by the trainer (alloc)
pub(crate) fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    #[cfg(feature = "parallel")]
    {
        rayon::scope(|_| f())
    }
    #[cfg(not(feature = "parallel"))]
    {
        f()
    }
}

/// Whether the `parallel` feature is on: kernels then size their scratch for one task per block
/// (see each `*_workspace_len`); without it one task's scratch is reused.
pub(crate) const ENABLED: bool = cfg!(feature = "parallel");

/// `f(dst_i, src_i)` for every element of `dst` (`src` at least as long), in chunks of
/// [`ELEMENT_CHUNK`] as separate tasks: copies and sums over activations.
pub(crate) fn zip_each<A, B, F>(dst: &mut [A], src: &[B], f: F)
where
    A: Send,
    B: Sync,
    F: Fn(&mut A, &B) + Sync + Send,
{
    chunks(dst, ELEMENT_CHUNK, |i, d| {
        for (x, y) in d.iter_mut().zip(&src[i * ELEMENT_CHUNK..]) {
            f(x, y);
        }
    });
}

/// Elements per task of [`zip_each`] (a copy or a sum of this many is a few microseconds).
pub(crate) const ELEMENT_CHUNK: usize = 1 << 14;

/// Elements per task of the elementwise passes (sums of partials, AdamW).
pub(crate) const PARTIAL_CHUNK: usize = 4096;
