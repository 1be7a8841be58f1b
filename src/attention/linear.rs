//! ELU+1 linear attention (SPEC section 6).
