//! Run-time CPU-feature detection for the instruction-set variants of the hot loops (x86-64 with
//! `std`; `std` caches each answer). Every `unsafe` call of a `target_feature` function in the
//! crate is guarded by one of these.

/// Whether the running CPU has AVX-512F and FMA (the AVX-512 variants are only compiled with
/// `cfg(sda_avx512)`, see build.rs).
#[cfg(sda_avx512)]
#[inline]
pub(crate) fn has_avx512() -> bool {
    std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("fma")
}

/// Whether the running CPU has AVX2 and FMA.
#[cfg(all(feature = "std", target_arch = "x86_64"))]
#[inline]
pub(crate) fn has_avx2_fma() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

#[cfg(all(feature = "std", target_arch = "x86_64"))]
pub(crate) mod x86_64;
