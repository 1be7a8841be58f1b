//! Drives every shape-checked entry point with arbitrary dimensions, slice lengths and values
//! (including NaN and infinities) and asserts that each returns `Ok` or `Err`, never panics, and
//! that `Ok` happens exactly when the lengths match the dimensions.

use crate::input::Input;
use sd_attention::linalg::dense::{gemm, matmul, matmul_strided, transpose, Transpose, Update};
use sd_attention::spectral::erank::effective_ranks;
use sd_attention::spectral::factored::{FactoredKernel, Part};
use sd_attention::split::{energies, split, split_in_place};

/// Runs one input; a panic is a finding (the API panicked or broke a promise checked here).
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let (m, k, n) = (input.dim(24), input.dim(24), input.dim(24));
    let (a, b) = (input.f32_vec(2), input.f32_vec(2));
    let mut c = input.f32_vec(2);
    let mut work = input.f32_vec(2);
    let ok = a.len() == m.wrapping_mul(k) && b.len() == k.wrapping_mul(n) && c.len() == m.wrapping_mul(n);
    let result = matmul(m, k, n, &a, &b, &mut c, Update::Accumulate);
    assert_eq!(
        result.is_ok(),
        ok && m.checked_mul(k).is_some() && k.checked_mul(n).is_some() && m.checked_mul(n).is_some()
    );
    let _ = gemm(m, k, n, 2.0, &a, Transpose::Yes, &b, Transpose::Yes, 0.5, &mut c);
    // Strided: Ok exactly when every leading dimension covers its row and every slice its extent.
    let (lda, ldb, ldc) = (input.dim(30), input.dim(30), input.dim(30));
    let extent = |rows: usize, ld: usize, cols: usize| -> Option<usize> {
        if rows == 0 || cols == 0 {
            Some(0)
        } else {
            (rows - 1).checked_mul(ld)?.checked_add(cols)
        }
    };
    let reads = m > 0 && n > 0;
    let fits = |rows, ld, cols, len| extent(rows, ld, cols).is_some_and(|e| e <= len);
    let strided_ok = lda >= k
        && ldb >= n
        && ldc >= n
        && fits(m, ldc, n, c.len())
        && (!reads || (fits(m, lda, k, a.len()) && fits(k, ldb, n, b.len())));
    let result = matmul_strided(m, k, n, 0.5, &a, lda, &b, ldb, &mut c, ldc, Update::Accumulate);
    assert_eq!(result.is_ok(), strided_ok);
    let _ = transpose(m, k, &a, &mut c);
    let _ = split(m, &a, &mut c, &mut work);
    let _ = split_in_place(m, &mut c, &mut work);
    let _ = energies(m, &a);
    let _ = effective_ranks(&a, 1e-6);
    if let Ok(head) = FactoredKernel::new(m, k, &a, &b) {
        let x = input.f32_vec(2);
        let mut y = vec![0.0; x.len()];
        for part in [Part::Kernel, Part::KernelTransposed, Part::Routing, Part::Filtering] {
            let _ = head.apply(part, &x, &mut y, &mut work);
        }
        let _ = head.energies(&mut work);
        let _ = head.to_dense(Part::Routing, &mut c);
    }
}
