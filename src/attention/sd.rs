//! S-D attention (SPEC sections 5 and 8).
