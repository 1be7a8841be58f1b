//! Drives every shape-checked entry point with arbitrary dimensions, slice lengths and values
//! (including NaN and infinities) and asserts that each returns `Ok` or `Err`, never panics, and
//! that `Ok` happens exactly when the lengths match the dimensions.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sd_attention::dense::{gemm, matmul, transpose, Transpose, Update};
use sd_attention::erank::effective_ranks;
use sd_attention::factored::{FactoredKernel, Part};
use sd_attention::split::{energies, split, split_in_place};

/// Takes bytes off the front of the input.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let (first, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        *first
    }
    /// A small dimension, with a rare huge one to exercise overflow checks.
    fn dim(&mut self) -> usize {
        match self.byte() {
            255 => usize::MAX / 3,
            b => (b % 24) as usize,
        }
    }
    /// A vector of a chosen length whose values come from the input (bit patterns, so NaN and
    /// infinities appear).
    fn values(&mut self) -> Vec<f32> {
        let len = self.byte() as usize * 2;
        (0..len)
            .map(|_| {
                let b = [self.byte(), self.byte(), 0, self.byte()];
                f32::from_le_bytes(b)
            })
            .collect()
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let (m, k, n) = (input.dim(), input.dim(), input.dim());
    let (a, b) = (input.values(), input.values());
    let mut c = input.values();
    let mut work = input.values();
    let ok = a.len() == m.wrapping_mul(k) && b.len() == k.wrapping_mul(n) && c.len() == m.wrapping_mul(n);
    let result = matmul(m, k, n, &a, &b, &mut c, Update::Accumulate);
    assert_eq!(result.is_ok(), ok && m.checked_mul(k).is_some() && k.checked_mul(n).is_some() && m.checked_mul(n).is_some());
    let _ = gemm(m, k, n, 2.0, &a, Transpose::Yes, &b, Transpose::Yes, 0.5, &mut c);
    let _ = transpose(m, k, &a, &mut c);
    let _ = split(m, &a, &mut c, &mut work);
    let _ = split_in_place(m, &mut c, &mut work);
    let _ = energies(m, &a);
    let _ = effective_ranks(&a, 1e-6);
    if let Ok(head) = FactoredKernel::new(m, k, &a, &b) {
        let x = input.values();
        let mut y = vec![0.0; x.len()];
        for part in [Part::Kernel, Part::KernelTransposed, Part::Routing, Part::Filtering] {
            let _ = head.apply(part, &x, &mut y, &mut work);
        }
        let _ = head.energies(&mut work);
        let _ = head.to_dense(Part::Routing, &mut c);
    }
});
