//! Every public function given a wrong length (or an impossible dimension) returns the matching
//! `Error` and never panics. Proptest drives random wrong lengths through the whole API.

use proptest::prelude::*;
use sd_attention::linalg::dense::*;
use sd_attention::spectral::factored::{FactoredKernel, Part};
use sd_attention::split::*;
use sd_attention::Error;

fn mismatch(what: &'static str, expected: usize, got: usize) -> Error {
    Error::ShapeMismatch { what, expected, got }
}

#[test]
fn products_name_the_wrong_argument() {
    let (a, b, mut c) = (vec![0.0f64; 6], vec![0.0f64; 12], vec![0.0f64; 8]);
    // m=2, k=3, n=4: a 6, b 12, c 8 is right.
    assert_eq!(matmul(2, 3, 4, &a, &b, &mut c, Update::Overwrite), Ok(()));
    assert_eq!(matmul(2, 3, 4, &a[..5], &b, &mut c, Update::Overwrite), Err(mismatch("a", 6, 5)));
    assert_eq!(matmul(2, 3, 4, &a, &b[..11], &mut c, Update::Overwrite), Err(mismatch("b", 12, 11)));
    assert_eq!(matmul(2, 3, 4, &a, &b, &mut c[..7], Update::Accumulate), Err(mismatch("c", 8, 7)));
    assert_eq!(matmul_tn(2, 3, 4, &a[..4], &b, &mut c, Update::Overwrite), Err(mismatch("a", 6, 4)));
    assert_eq!(matmul_nt(2, 3, 4, &a, &b[..1], &mut c, Update::Overwrite), Err(mismatch("b", 12, 1)));
    assert_eq!(
        gemm(2, 3, 4, 1.0, &a, Transpose::Yes, &b, Transpose::Yes, 0.0, &mut c[..3]),
        Err(mismatch("c", 8, 3))
    );
    assert_eq!(transpose(2, 3, &a, &mut c), Err(mismatch("out", 6, 8)));
    assert_eq!(transpose(3, 3, &a, &mut c), Err(mismatch("a", 9, 6)));
    assert_eq!(dot(&a, &b), Err(mismatch("y", 6, 12)));
    assert_eq!(axpy(1.0, &a, &mut c), Err(mismatch("y", 6, 8)));
    // Dimensions whose product overflows are reported, not wrapped.
    assert_eq!(
        matmul::<f32>(usize::MAX, 2, 1, &[], &[], &mut [], Update::Overwrite),
        Err(Error::DimensionOverflow { what: "a" })
    );
}

#[test]
fn split_functions_check_squareness() {
    let mut out = vec![0.0f32; 9];
    let mut other = vec![0.0f32; 9];
    let mat = vec![0.0f32; 8];
    assert_eq!(split(3, &mat, &mut out, &mut other), Err(mismatch("mat", 9, 8)));
    assert_eq!(split(3, &out.clone(), &mut out[..4], &mut other), Err(mismatch("routing", 9, 4)));
    assert_eq!(split(3, &out.clone(), &mut out, &mut other[..0]), Err(mismatch("filtering", 9, 0)));
    assert_eq!(split_in_place(3, &mut out[..8], &mut other), Err(mismatch("mat", 9, 8)));
    assert_eq!(split_in_place(3, &mut out, &mut other[..8]), Err(mismatch("filtering", 9, 8)));
    assert_eq!(routing_in_place(2, &mut out), Err(mismatch("mat", 4, 9)));
    assert_eq!(filtering_in_place(4, &mut out), Err(mismatch("mat", 16, 9)));
    assert_eq!(energies(4, &mat), Err(mismatch("mat", 16, 8)));
    assert_eq!(energies::<f64>(usize::MAX, &[]), Err(Error::DimensionOverflow { what: "mat" }));
}

#[test]
fn factored_kernel_checks_factors_vectors_and_workspace() {
    let w = vec![1.0f64; 12]; // 4 x 3
    assert_eq!(FactoredKernel::new(4, 3, &w[..11], &w).err(), Some(mismatch("w_q", 12, 11)));
    assert_eq!(FactoredKernel::new(4, 3, &w, &w[..2]).err(), Some(mismatch("w_k", 12, 2)));
    let head = FactoredKernel::new(4, 3, &w, &w).unwrap();
    let (x, mut y, mut ws) = (vec![1.0; 4], vec![0.0; 4], vec![0.0; 6]);
    assert_eq!(head.apply(Part::Routing, &x[..3], &mut y, &mut ws), Err(mismatch("x", 4, 3)));
    assert_eq!(head.apply(Part::Routing, &x, &mut y[..1], &mut ws), Err(mismatch("y", 4, 1)));
    assert_eq!(
        head.apply(Part::Filtering, &x, &mut y, &mut ws[..5]),
        Err(Error::WorkspaceTooSmall { needed: 6, got: 5 })
    );
    assert_eq!(head.to_dense(Part::Kernel, &mut y), Err(mismatch("out", 16, 4)));
    assert_eq!(head.energies(&mut ws[..5]), Err(Error::WorkspaceTooSmall { needed: 18, got: 5 }));
    // Empty factors match any d_head when d_model = 0, but the workspace sizes must still fit
    // (found by the fuzzer: 2 d_head^2 overflowed in energies_workspace_len).
    assert_eq!(
        FactoredKernel::<f32>::new(0, usize::MAX / 3, &[], &[]).err(),
        Some(Error::DimensionOverflow { what: "d_head" })
    );
    let empty = FactoredKernel::<f32>::new(0, 5, &[], &[]).unwrap();
    assert_eq!(empty.energies(&mut [0.0; 50]).unwrap().total(), 0.0);
    // A larger workspace is fine.
    let mut big = vec![0.0; 100];
    assert!(head.energies(&mut big).is_ok());
}

#[test]
fn errors_display_what_was_expected_and_what_came() {
    assert_eq!(mismatch("w_q", 12, 11).to_string(), "w_q: expected length 12, got 11");
    assert_eq!(
        Error::WorkspaceTooSmall { needed: 6, got: 5 }.to_string(),
        "workspace: needs at least 6 elements, got 5"
    );
    assert_eq!(
        Error::NonFinite { what: "sigma", index: 3 }.to_string(),
        "sigma: non-finite value (NaN or infinity) at index 3"
    );
    assert_eq!(Error::Empty { what: "x" }.to_string(), "x: must not be empty");
}

#[cfg(feature = "std")]
#[test]
fn error_is_a_std_error_under_std() {
    let boxed: Box<dyn std::error::Error> = Box::new(Error::Empty { what: "x" });
    assert_eq!(boxed.to_string(), "x: must not be empty");
}

proptest! {
    /// Arbitrary dimensions and lengths through every checked entry point: only `Ok` or `Err`.
    #[test]
    fn arbitrary_dims_and_lengths_never_panic(
        m in 0usize..9, k in 0usize..9, n in 0usize..9,
        la in 0usize..90, lb in 0usize..90, lc in 0usize..90, lw in 0usize..200,
    ) {
        let (a, b, mut c) = (vec![0.5f64; la], vec![0.25f64; lb], vec![1.0f64; lc]);
        let ok = la == m * k && lb == k * n && lc == m * n;
        prop_assert_eq!(matmul(m, k, n, &a, &b, &mut c, Update::Accumulate).is_ok(), ok);
        prop_assert_eq!(matmul_tn(m, k, n, &a, &b, &mut c, Update::Overwrite).is_ok(), ok);
        prop_assert_eq!(matmul_nt(m, k, n, &a, &b, &mut c, Update::Overwrite).is_ok(), ok);
        prop_assert_eq!(transpose(m, k, &a, &mut c).is_ok(), la == m * k && lc == m * k);
        let mut work = vec![0.0f64; lw];
        prop_assert_eq!(split(m, &a, &mut c, &mut work).is_ok(), la == m * m && lc == m * m && lw == m * m);
        prop_assert_eq!(energies(m, &a).is_ok(), la == m * m);
        if let Ok(head) = FactoredKernel::new(m, k, &a, &b) {
            prop_assert!(la == m * k && lb == m * k);
            let needed = 2 * k;
            let x = vec![1.0; lc];
            let mut y = vec![0.0; lc];
            prop_assert_eq!(head.apply(Part::Routing, &x, &mut y, &mut work).is_ok(), lc == m && lw >= needed);
            prop_assert_eq!(head.energies(&mut work).is_ok(), lw >= 2 * k * k);
        }
    }
}
