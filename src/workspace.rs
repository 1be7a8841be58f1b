//! Scratch requirements that compose, and the carving of a caller's workspace into buffers: the
//! one place where workspace sizes are added up (overflow-checked) and split off.
//!
//! A kernel states what it needs as a [`Req`]: buffers side by side ([`Req::all_of`]), phases that
//! reuse the same memory ([`Req::any_of`]), `count` buffers of `len` elements ([`Req::array`]).
//! The public `*_workspace_len` functions report [`Req::saturating`] (a size that overflows
//! `usize` asks for `usize::MAX`, which no slice has, so the call is refused); kernels carve the
//! workspace in the same order with [`carve`], which returns [`Error::WorkspaceTooSmall`] when it
//! is short and [`Error::DimensionOverflow`] when the sizes overflow.

use crate::{Error, Result};

/// A scratch requirement in elements, or the fact that it overflowed `usize`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Req(Option<usize>);

impl Req {
    /// Nothing.
    pub(crate) const EMPTY: Req = Req(Some(0));

    /// One buffer of `len` elements.
    pub(crate) const fn new(len: usize) -> Req {
        Req(Some(len))
    }

    /// `count` buffers of `len` elements each, side by side.
    pub(crate) const fn array(len: usize, count: usize) -> Req {
        Req(len.checked_mul(count))
    }

    /// Every requirement at once, side by side (the sum).
    pub(crate) fn all_of<const N: usize>(reqs: [Req; N]) -> Req {
        reqs.into_iter().fold(Req::EMPTY, Req::and)
    }

    /// One requirement at a time, in the same memory (the maximum).
    pub(crate) fn any_of<const N: usize>(reqs: [Req; N]) -> Req {
        reqs.into_iter().fold(Req::EMPTY, Req::or)
    }

    /// `self` and `other` side by side.
    pub(crate) fn and(self, other: Req) -> Req {
        match (self.0, other.0) {
            (Some(a), Some(b)) => Req(a.checked_add(b)),
            _ => Req(None),
        }
    }

    /// `self` or `other`, in the same memory.
    pub(crate) fn or(self, other: Req) -> Req {
        match (self.0, other.0) {
            (Some(a), Some(b)) => Req(Some(a.max(b))),
            _ => Req(None),
        }
    }

    /// `count` copies of `self` side by side (none when `count = 0`, even of a size that
    /// overflowed: a requirement is its exact size whenever that fits in `usize`).
    pub(crate) fn times(self, count: usize) -> Req {
        if count == 0 {
            return Req::EMPTY;
        }
        Req(self.0.and_then(|len| len.checked_mul(count)))
    }

    /// The number of elements, or [`Error::DimensionOverflow`] naming `what`.
    pub(crate) fn len(self, what: &'static str) -> Result<usize> {
        self.0.ok_or(Error::DimensionOverflow { what })
    }

    /// The number of elements, `usize::MAX` when it overflows (what the public `*_workspace_len`
    /// functions report: no workspace is that long, so the call is refused).
    pub(crate) fn saturating(self) -> usize {
        self.0.unwrap_or(usize::MAX)
    }
}

/// Splits the front of `workspace` into `N` buffers of the given lengths, in order, and returns
/// them with the rest. [`Error::WorkspaceTooSmall`] (needing the sum) when it is shorter than
/// their sum, [`Error::DimensionOverflow`] when the sum overflows.
pub(crate) fn carve<T, const N: usize>(
    workspace: &mut [T],
    lens: [usize; N],
) -> Result<([&mut [T]; N], &mut [T])> {
    let needed = Req::all_of(lens.map(Req::new)).len("workspace")?;
    crate::error::check_workspace(workspace.len(), needed)?;
    let mut rest = workspace;
    let parts = core::array::from_fn(|i| {
        let (part, tail) = core::mem::take(&mut rest).split_at_mut(lens[i]);
        rest = tail;
        part
    });
    Ok((parts, rest))
}

/// `parts` side by side after up to `align - 1` elements skipped so that the first starts on a
/// boundary of `align` elements (what [`carve_aligned`] needs, whatever the workspace's address).
// Used by the fused kernels, which exist on x86-64 with `std` only.
#[cfg_attr(not(all(feature = "std", target_arch = "x86_64")), allow(dead_code))]
pub(crate) fn aligned<const N: usize>(align: usize, parts: [Req; N]) -> Req {
    Req::new(align.saturating_sub(1)).and(Req::all_of(parts))
}

/// [`carve`] after skipping to the first element whose address is a multiple of
/// `align * size_of::<T>()` bytes (at most `align - 1` skipped; none when that is not a power of
/// two, and fewer when the boundary cannot be reached, so alignment is a speed hint, never a
/// condition of soundness). The workspace must hold [`aligned`]`(align, parts)` whatever the
/// skip: [`Error::WorkspaceTooSmall`] when it is shorter, [`Error::DimensionOverflow`] when a part
/// or the sum overflows.
#[cfg_attr(not(all(feature = "std", target_arch = "x86_64")), allow(dead_code))]
pub(crate) fn carve_aligned<T, const N: usize>(
    workspace: &mut [T],
    align: usize,
    parts: [Req; N],
) -> Result<([&mut [T]; N], &mut [T])> {
    let needed = aligned(align, parts).len("workspace")?;
    crate::error::check_workspace(workspace.len(), needed)?;
    let bytes = align.saturating_mul(core::mem::size_of::<T>());
    let offset = if bytes.is_power_of_two() { workspace.as_ptr().align_offset(bytes) } else { 0 };
    let skip = offset.min(align.saturating_sub(1));
    // Every part fits in `usize` (their sum did), so `saturating` is each exact length.
    carve(&mut workspace[skip..], parts.map(Req::saturating))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sums and maxima compose; overflow anywhere is remembered and reported once.
    #[test]
    fn requirements_compose_and_overflow_is_reported() {
        let r = Req::all_of([Req::new(3), Req::array(4, 5), Req::any_of([Req::new(7), Req::new(2)])]);
        assert_eq!(r.len("r"), Ok(30));
        assert_eq!(Req::any_of([]).len("r"), Ok(0));
        assert_eq!(Req::new(2).times(3).saturating(), 6);
        let huge = Req::array(usize::MAX, 2);
        assert_eq!(huge.len("huge"), Err(Error::DimensionOverflow { what: "huge" }));
        assert_eq!(huge.saturating(), usize::MAX);
        assert_eq!(Req::any_of([huge, Req::EMPTY]).saturating(), usize::MAX);
        assert_eq!(Req::all_of([Req::new(usize::MAX), Req::new(1)]).saturating(), usize::MAX);
        assert_eq!(Req::new(usize::MAX).and(Req::EMPTY).saturating(), usize::MAX);
        // Zero copies of anything is nothing: the exact size whenever it fits.
        assert_eq!(huge.times(0), Req::EMPTY);
        assert_eq!(huge.times(1).saturating(), usize::MAX);
    }

    /// Buffers come out in order with their lengths; a short workspace and overflowing lengths are
    /// errors, not panics.
    #[test]
    fn carving_splits_in_order_and_refuses_short_workspaces() {
        let mut ws = [0u8, 1, 2, 3, 4, 5, 6];
        let ([a, b, c], rest) = carve(&mut ws, [2, 0, 3]).unwrap();
        assert_eq!((&*a, &*b, &*c, &*rest), (&[0u8, 1][..], &[][..], &[2u8, 3, 4][..], &[5u8, 6][..]));
        assert_eq!(carve(&mut ws, [4, 4]).err(), Some(Error::WorkspaceTooSmall { needed: 8, got: 7 }));
        assert_eq!(
            carve(&mut ws, [usize::MAX, 1]).err(),
            Some(Error::DimensionOverflow { what: "workspace" })
        );
        let (parts, rest) = carve::<u8, 0>(&mut ws, []).unwrap();
        assert_eq!((parts.len(), rest.len()), (0, 7));
    }

    /// The first buffer starts on the boundary wherever the workspace starts; the slack is asked
    /// for whatever the skip, so the length that suffices does not depend on the address.
    #[test]
    fn aligned_carving_starts_on_the_boundary() {
        let parts = [Req::new(5), Req::new(0), Req::array(3, 2)];
        assert_eq!(aligned(16, parts).len("a"), Ok(15 + 11));
        assert_eq!(aligned(0, parts).len("a"), Ok(11));
        let mut backing = [0.0f32; 64];
        for start in 0..16 {
            let ws = &mut backing[start..start + 26];
            let base = ws.as_ptr() as usize;
            let ([a, b, c], rest) = carve_aligned(ws, 16, parts).unwrap();
            assert_eq!((a.len(), b.len(), c.len()), (5, 0, 6));
            assert_eq!(a.as_ptr() as usize % 64, 0, "start {start}");
            let skipped = (a.as_ptr() as usize - base) / 4;
            assert!(skipped <= 15);
            assert_eq!(rest.len(), 15 - skipped);
            assert_eq!(c.as_ptr() as usize, a.as_ptr() as usize + 4 * 5);
        }
        for start in 0..16 {
            let short = &mut backing[start..start + 25];
            assert_eq!(
                carve_aligned(short, 16, parts).err(),
                Some(Error::WorkspaceTooSmall { needed: 26, got: 25 })
            );
        }
        let huge = [Req::new(usize::MAX - 3), Req::new(1)];
        assert_eq!(
            carve_aligned(&mut backing, 16, huge).err(),
            Some(Error::DimensionOverflow { what: "workspace" })
        );
        // An alignment that is no power of two in bytes: nothing skipped, the slack still asked.
        let start = backing[1..].as_ptr();
        let ([a], rest) = carve_aligned(&mut backing[1..], 3, [Req::new(4)]).unwrap();
        assert_eq!((a.as_ptr(), rest.len()), (start, 63 - 4));
    }
}
