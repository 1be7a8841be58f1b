//! The fuzz harnesses' shared reader of the raw input: bytes taken in order from the front. Every
//! read succeeds: an exhausted input reads as zeros. It needs no crate beyond the standard library,
//! so the same harnesses run under cargo-fuzz and in `cargo test` (tests/fuzz_replay.rs).

/// Reads dimensions, lengths and values off a fuzz input.
pub struct Input<'a>(&'a [u8]);

#[allow(dead_code)] // each target uses the readers it needs
impl<'a> Input<'a> {
    /// A reader over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Input(data)
    }

    /// The next byte (0 once the input is exhausted).
    pub fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    /// A dimension below `modulus`, or (rarely) a huge one that overflows any product with a
    /// dimension above 2, to exercise the overflow checks.
    pub fn dim(&mut self, modulus: usize) -> usize {
        match self.byte() {
            255 => usize::MAX / 3,
            b => b as usize % modulus,
        }
    }

    /// As [`Input::dim`], with one more value, `large` (e.g. one past a tile size).
    pub fn dim_or_large(&mut self, modulus: usize, large: usize) -> usize {
        match self.byte() {
            255 => usize::MAX / 3,
            254 => large,
            b => b as usize % modulus,
        }
    }

    /// A length that is usually `exact` and sometimes one off or arbitrary, capped at `cap`, so
    /// that both the `Ok` and the `Err` paths run.
    pub fn len_near(&mut self, exact: usize, cap: usize) -> usize {
        match self.byte() % 8 {
            0 => self.byte() as usize,
            1 => exact.saturating_add(1),
            2 => exact.saturating_sub(1),
            _ => exact,
        }
        .min(cap)
    }

    /// `len` f32 values from input bits (sign, exponent and the high mantissa bits), so NaN,
    /// infinities, zeros and subnormals all appear.
    pub fn f32_bits(&mut self, len: usize) -> Vec<f32> {
        (0..len).map(|_| f32::from_le_bytes([0, self.byte(), self.byte(), self.byte()])).collect()
    }

    /// A vector of [`Input::f32_bits`] whose length, `per_byte` times a byte, comes first.
    pub fn f32_vec(&mut self, per_byte: usize) -> Vec<f32> {
        let len = self.byte() as usize * per_byte;
        self.f32_bits(len)
    }

    /// `len` f64 values from input bits, as [`Input::f32_bits`].
    pub fn f64_bits(&mut self, len: usize) -> Vec<f64> {
        (0..len)
            .map(|_| f64::from_le_bytes([0, 0, 0, 0, self.byte(), self.byte(), self.byte(), self.byte()]))
            .collect()
    }

    /// Up to 255 bytes, the count read first.
    pub fn bytes(&mut self) -> Vec<u8> {
        let len = self.byte() as usize;
        (0..len).map(|_| self.byte()).collect()
    }

    /// Whatever input remains.
    pub fn rest(self) -> &'a [u8] {
        self.0
    }
}
