//! Products and elementwise kernels over row-major slices, with no knowledge of attention.
//!
//! * [`dense`]: the public slice kernels (gemm wrappers, transpose, dot, axpy, norms).
//! * [`qr`]: thin Householder QR (blocked, compact WY) into caller workspace.
//!
//! Underneath, private to the crate: the unchecked building blocks shared by the validated API
//! (`kernel`), the register-blocked product without packing (`microkernel`), matrix-vector
//! products with split sums for one token at a time (`vector`), and `exp`/`tanh` over slices (`exp`).

pub mod dense;
pub(crate) mod exp;
pub(crate) mod kernel;
pub(crate) mod microkernel;
pub mod qr;
pub(crate) mod vector;
