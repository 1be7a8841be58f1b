//! Build-time probe: `target_feature(enable = "avx512f")` became stable in Rust 1.89, above the
//! crate's MSRV (1.75). On a compiler that has it, and with the `std` feature (whose run-time CPU
//! detection guards every AVX-512 call), this script sets `cfg(sda_avx512)`, which compiles the
//! AVX-512 variants of the hot loops. Older compilers build the AVX2/FMA and portable variants only.
//! The same probe decides matrixmultiply's own AVX-512 kernels.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // Declares the cfg for `unexpected_cfgs` (1.80+; older compilers ignore unknown instructions).
    println!("cargo:rustc-check-cfg=cfg(sda_avx512)");
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let std_feature = std::env::var_os("CARGO_FEATURE_STD").is_some();
    if arch != "x86_64" || !std_feature {
        return;
    }
    match autocfg::AutoCfg::new() {
        Ok(probe) if probe.probe_rustc_version(1, 89) => println!("cargo:rustc-cfg=sda_avx512"),
        Ok(_) => {}
        Err(error) => println!("cargo:warning=compiler version probe failed ({error}); AVX-512 variants off"),
    }
}
