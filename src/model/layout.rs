//! Where each tensor of a model lives in the flat parameter buffer (and, at the same offsets, in
//! the flat gradient and optimizer-state buffers).
//!
//! Order: byte embedding, learned positions; per layer: norm 1, attention kernel `theta`, `W_V`,
//! `W_O`, norm 2, `W_1`, `b_1`, `W_2`, `b_2`; final norm; untied unembedding. Every tensor is
//! row-major. Weight decay applies to the matrices `theta`, `W_V`, `W_O`, `W_1`, `W_2` and the untied
//! unembedding; not to embeddings, positions, norms or biases ([`TensorSpec::decay`]).

use super::config::{ModelConfig, PositionKind};
use super::embedding::VOCAB;
use crate::Result;
use alloc::vec::Vec;
use core::ops::Range;

/// One tensor of the flat buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    /// Name: `embedding`, `positions`, `norm1`, `attention`, `w_v`, `w_o`, `norm2`, `w_1`, `b_1`,
    /// `w_2`, `b_2`, `final_norm`, `unembedding`.
    pub name: &'static str,
    /// The block it belongs to (`None` for embedding, positions, final norm, unembedding).
    pub layer: Option<usize>,
    /// Rows and columns (a vector is `1 x len`; a norm is `1 x d` or `2 x d` with gain then bias;
    /// `attention` is `1 x param_len`, laid out by its kernel).
    pub shape: (usize, usize),
    /// Its elements in the flat buffer.
    pub range: Range<usize>,
    /// Whether AdamW applies weight decay to it.
    pub decay: bool,
}

/// Offsets of one block's tensors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerOffsets {
    /// Norm before attention (empty without norm).
    pub norm1: Range<usize>,
    /// Attention kernel parameters `theta`.
    pub attention: Range<usize>,
    /// `W_V`, `d_model x n_heads d_head`.
    pub w_v: Range<usize>,
    /// `W_O`, `n_heads d_head x d_model`.
    pub w_o: Range<usize>,
    /// Norm before the MLP (empty without norm).
    pub norm2: Range<usize>,
    /// `W_1`, `d_model x d_mlp`.
    pub w_1: Range<usize>,
    /// `b_1`, `d_mlp`.
    pub b_1: Range<usize>,
    /// `W_2`, `d_mlp x d_model`.
    pub w_2: Range<usize>,
    /// `b_2`, `d_model`.
    pub b_2: Range<usize>,
}

/// The layout of a whole model's parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamLayout {
    /// Every tensor in buffer order.
    pub tensors: Vec<TensorSpec>,
    /// Byte embedding `256 x d_model`.
    pub embedding: Range<usize>,
    /// Learned positions `context_len x d_model` (empty for sinusoidal).
    pub positions: Range<usize>,
    /// Per block.
    pub layers: Vec<LayerOffsets>,
    /// Final norm (empty without norm).
    pub final_norm: Range<usize>,
    /// Untied unembedding `d_model x 256` (empty if tied).
    pub unembedding: Range<usize>,
    /// Length of the flat buffer.
    pub total: usize,
}

struct Builder {
    tensors: Vec<TensorSpec>,
    next: usize,
}

impl Builder {
    fn push(
        &mut self,
        name: &'static str,
        layer: Option<usize>,
        shape: (usize, usize),
        decay: bool,
    ) -> Range<usize> {
        // `ModelConfig::param_counts` has checked that every product and the total fit in usize.
        let range = self.next..self.next + shape.0 * shape.1;
        self.next = range.end;
        self.tensors.push(TensorSpec { name, layer, shape, range: range.clone(), decay });
        range
    }
}

impl ParamLayout {
    /// The layout of `config`'s parameters; errors as [`ModelConfig::validate`].
    pub fn new(config: &ModelConfig) -> Result<Self> {
        let counts = config.param_counts()?;
        let d = config.d_model;
        let norm_rows = config.norm.param_len(d) / d;
        let d_heads = config.d_heads();
        let mut b = Builder { tensors: Vec::new(), next: 0 };
        let embedding = b.push("embedding", None, (VOCAB, d), false);
        let pos_rows = if config.positions == PositionKind::Learned { config.context_len } else { 0 };
        let positions = b.push("positions", None, (pos_rows, d), false);
        let mut layers = Vec::with_capacity(config.n_layers);
        for l in 0..config.n_layers {
            let layer = Some(l);
            layers.push(LayerOffsets {
                norm1: b.push("norm1", layer, (norm_rows, d), false),
                attention: b.push("attention", layer, (1, config.attention_kernel_len(l)?), true),
                w_v: b.push("w_v", layer, (d, d_heads), true),
                w_o: b.push("w_o", layer, (d_heads, d), true),
                norm2: b.push("norm2", layer, (norm_rows, d), false),
                w_1: b.push("w_1", layer, (d, config.d_mlp), true),
                b_1: b.push("b_1", layer, (1, config.d_mlp), false),
                w_2: b.push("w_2", layer, (config.d_mlp, d), true),
                b_2: b.push("b_2", layer, (1, d), false),
            });
        }
        let final_norm = b.push("final_norm", None, (norm_rows, d), false);
        let unembedding =
            b.push("unembedding", None, (if config.tied_unembedding { 0 } else { d }, VOCAB), true);
        debug_assert_eq!(b.next, counts.total);
        Ok(ParamLayout {
            tensors: b.tensors,
            embedding,
            positions,
            layers,
            final_norm,
            unembedding,
            total: b.next,
        })
    }
}
