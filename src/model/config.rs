//! The configuration of a byte-level transformer language model and its parameter count per part.

use super::embedding::VOCAB;
pub use super::kinds::{AttentionKind, PositionKind};
use super::norm::NormKind;
use crate::{Error, Result};
use alloc::vec::Vec;

/// A whole model: `n_layers` pre-norm blocks `x += Attn(norm(x)); x += MLP(norm(x))` on a byte
/// embedding, then a final norm and the unembedding to 256 logits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelConfig {
    /// Width of the residual stream.
    pub d_model: usize,
    /// Number of blocks.
    pub n_layers: usize,
    /// Heads per attention layer.
    pub n_heads: usize,
    /// Width of a head's values (and of `W_Q, W_K` for softmax and linear kinds).
    pub d_head: usize,
    /// Hidden width of the MLP.
    pub d_mlp: usize,
    /// Longest sequence the model accepts (rows of the learned position table).
    pub context_len: usize,
    /// Attention kind per layer; `attention.len() == n_layers`.
    pub attention: Vec<AttentionKind>,
    /// Normalization before each sub-layer and before the unembedding.
    pub norm: NormKind,
    /// How positions are encoded.
    pub positions: PositionKind,
    /// Whether the unembedding is the transposed byte embedding (`logits = h E^T`).
    pub tied_unembedding: bool,
}

/// Parameter count per part of a model (elements of the flat parameter buffer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ParamCounts {
    /// Byte embedding `256 x d_model`.
    pub embedding: usize,
    /// Learned positions `context_len x d_model` (0 for sinusoidal).
    pub positions: usize,
    /// Attention kernels `theta` (`W_Q, W_K` or `U, V, C`) over all layers.
    pub attention_kernels: usize,
    /// Value and output projections `W_V`, `W_O` over all layers (`2 d_model n_heads d_head` each).
    pub value_output: usize,
    /// MLP weights and biases over all layers.
    pub mlp: usize,
    /// All norm gains and biases (per layer and final).
    pub norms: usize,
    /// Untied unembedding `d_model x 256` (0 if tied).
    pub unembedding: usize,
    /// Sum of the above.
    pub total: usize,
}

impl core::fmt::Display for ParamCounts {
    /// One `part: count` line per part, then the total.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let rows = [
            ("embedding", self.embedding),
            ("positions", self.positions),
            ("attention kernels", self.attention_kernels),
            ("value/output projections", self.value_output),
            ("mlp", self.mlp),
            ("norms", self.norms),
            ("unembedding", self.unembedding),
            ("total", self.total),
        ];
        for (name, count) in rows {
            writeln!(f, "{name:>24}: {count}")?;
        }
        Ok(())
    }
}

fn positive(what: &'static str, value: usize) -> Result<()> {
    if value == 0 {
        Err(Error::InvalidParameter { what, expected: "at least 1" })
    } else {
        Ok(())
    }
}

impl ModelConfig {
    /// A config with the same attention kind in every layer.
    #[allow(clippy::too_many_arguments)]
    pub fn uniform(
        d_model: usize,
        n_layers: usize,
        n_heads: usize,
        d_head: usize,
        d_mlp: usize,
        context_len: usize,
        attention: AttentionKind,
        norm: NormKind,
        positions: PositionKind,
        tied_unembedding: bool,
    ) -> Self {
        ModelConfig {
            d_model,
            n_layers,
            n_heads,
            d_head,
            d_mlp,
            context_len,
            attention: alloc::vec![attention; n_layers],
            norm,
            positions,
            tied_unembedding,
        }
    }

    /// Checks every dimension (>= 1; S-D routing rank >= 1, filtering rank >= 0, linear query/key
    /// width >= 1), that there is one
    /// attention kind per layer, and that the parameter count fits in `usize`.
    pub fn validate(&self) -> Result<()> {
        self.param_counts().map(|_| ())
    }

    /// Width of the values and outputs of all heads of a layer: `n_heads d_head`.
    pub fn d_heads(&self) -> usize {
        self.n_heads.saturating_mul(self.d_head)
    }

    /// Parameters of layer `layer`'s attention kernel (all heads).
    pub fn attention_kernel_len(&self, layer: usize) -> Result<usize> {
        let kind = *self
            .attention
            .get(layer)
            .ok_or(Error::InvalidParameter { what: "layer", expected: "< n_layers" })?;
        match kind {
            AttentionKind::Sd { routing_rank, .. } => positive("routing_rank", routing_rank)?,
            AttentionKind::LinearQk { qk_width } => positive("qk_width", qk_width)?,
            AttentionKind::Softmax | AttentionKind::Linear => {}
        }
        kind.params_per_head(self.d_model, self.d_head)
            .and_then(|p| p.checked_mul(self.n_heads))
            .ok_or(Error::DimensionOverflow { what: "attention" })
    }

    /// The parameter count per part; an error if the config is invalid (see [`Self::validate`]).
    ///
    /// ```
    /// use sd_attention::model::config::{AttentionKind, ModelConfig, PositionKind};
    /// use sd_attention::model::norm::NormKind;
    /// let sd = AttentionKind::Sd { routing_rank: 4, filtering_rank: 2 };
    /// let c = ModelConfig::uniform(64, 4, 4, 16, 256, 128, sd, NormKind::None, PositionKind::Learned, true);
    /// let counts = c.param_counts()?;
    /// assert_eq!(counts.attention_kernels, 4 * 4 * 64 * (2 * 4 + 2)); // layers * heads * d (2r + q)
    /// assert_eq!(counts.embedding, 256 * 64);
    /// assert_eq!(counts.unembedding, 0); // tied
    /// # Ok::<(), sd_attention::Error>(())
    /// ```
    pub fn param_counts(&self) -> Result<ParamCounts> {
        positive("d_model", self.d_model)?;
        positive("n_heads", self.n_heads)?;
        positive("d_head", self.d_head)?;
        positive("d_mlp", self.d_mlp)?;
        positive("context_len", self.context_len)?;
        if self.attention.len() != self.n_layers {
            return Err(Error::ShapeMismatch {
                what: "attention",
                expected: self.n_layers,
                got: self.attention.len(),
            });
        }
        let overflow = Error::DimensionOverflow { what: "model" };
        let mul = |a: usize, b: usize| a.checked_mul(b).ok_or(overflow);
        let d = self.d_model;
        let mut counts = ParamCounts { embedding: mul(VOCAB, d)?, ..Default::default() };
        if self.positions == PositionKind::Learned {
            counts.positions = mul(self.context_len, d)?;
        }
        let d_heads = mul(self.n_heads, self.d_head)?;
        let value_output = mul(mul(d, d_heads)?, 2)?;
        let mlp = mul(mul(d, self.d_mlp)?, 2)?.checked_add(self.d_mlp + d).ok_or(overflow)?;
        let norm = self.norm.param_len(d);
        for layer in 0..self.n_layers {
            counts.attention_kernels =
                counts.attention_kernels.checked_add(self.attention_kernel_len(layer)?).ok_or(overflow)?;
        }
        let layers = self.n_layers;
        counts.value_output = mul(value_output, layers)?;
        counts.mlp = mul(mlp, layers)?;
        counts.norms = mul(norm, mul(layers, 2)?.checked_add(1).ok_or(overflow)?)?;
        if !self.tied_unembedding {
            counts.unembedding = mul(d, VOCAB)?;
        }
        let parts = [
            counts.embedding,
            counts.positions,
            counts.attention_kernels,
            counts.value_output,
            counts.mlp,
            counts.norms,
            counts.unembedding,
        ];
        counts.total = parts.iter().try_fold(0usize, |acc, &p| acc.checked_add(p)).ok_or(overflow)?;
        Ok(counts)
    }
}
