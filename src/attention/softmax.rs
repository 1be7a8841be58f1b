//! Softmax attention (SPEC section 4).
