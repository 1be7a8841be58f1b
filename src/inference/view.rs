//! A borrowed model: its shape (dimensions and one attention kind per layer) and a slice of its
//! flat parameters, with no copy and no allocation.
//!
//! The parameters are laid out as the training code lays them out (`model::layout`): byte
//! embedding `E` (`256 x d`), learned positions `P` (`context x d`, absent for sinusoidal), then per
//! layer `norm1, theta, W_V, W_O, norm2, W_1, b_1, W_2, b_2`, then the final norm and an untied
//! unembedding `W_U` (`d x 256`). [`ModelView`] walks them layer by layer instead of a
//! table of ranges, so the whole path runs without an allocator: the parameters may be a `Vec` on
//! a host or a `&'static` slice in a microcontroller's flash (through
//! [`super::checkpoint::CheckpointView`]).

use crate::model::embedding::VOCAB;
use crate::model::kinds::{AttentionKind, PositionKind};
use crate::model::norm::NormKind;
use crate::train::checksum::fnv1a64;
use crate::{Error, Result, Scalar};

/// Bytes per layer in a checkpoint's layer table (three little-endian `u32`: kind, `r`, `q`).
pub(crate) const LAYER_RECORD: usize = 12;

/// The attention kind of every layer, borrowed: a slice of kinds, or the layer table of a
/// checkpoint's bytes (validated when the view was made, so reading it cannot fail).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layers<'a> {
    repr: LayersRepr<'a>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LayersRepr<'a> {
    Kinds(&'a [AttentionKind]),
    /// `LAYER_RECORD` bytes per layer, every record already validated.
    Encoded(&'a [u8]),
}

fn u32_at(bytes: &[u8], at: usize) -> usize {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize
}

/// One record of a checkpoint's layer table: `(0, 0, 0)` softmax, `(1, r, q)` S-D, `(2, 0, 0)`
/// linear, `(3, w, 0)` linear with query/key width `w`; `None` for anything else.
pub(crate) fn decode_kind(record: &[u8]) -> Option<AttentionKind> {
    match (u32_at(record, 0), u32_at(record, 4), u32_at(record, 8)) {
        (0, 0, 0) => Some(AttentionKind::Softmax),
        (1, r, q) => Some(AttentionKind::Sd { routing_rank: r, filtering_rank: q }),
        (2, 0, 0) => Some(AttentionKind::Linear),
        (3, w, 0) => Some(AttentionKind::LinearQk { qk_width: w }),
        _ => None,
    }
}

impl<'a> Layers<'a> {
    /// The kinds of a slice, layer `l` at index `l`.
    pub fn from_kinds(kinds: &'a [AttentionKind]) -> Self {
        Layers { repr: LayersRepr::Kinds(kinds) }
    }

    /// A validated layer table (`LAYER_RECORD` bytes per layer, each decoding to a kind).
    pub(crate) fn from_validated_table(table: &'a [u8]) -> Self {
        Layers { repr: LayersRepr::Encoded(table) }
    }

    /// Number of layers.
    pub fn len(&self) -> usize {
        match self.repr {
            LayersRepr::Kinds(k) => k.len(),
            LayersRepr::Encoded(t) => t.len() / LAYER_RECORD,
        }
    }

    /// Whether there are no layers.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The kind of layer `layer` (`None` past the last layer).
    pub fn get(&self, layer: usize) -> Option<AttentionKind> {
        match self.repr {
            LayersRepr::Kinds(k) => k.get(layer).copied(),
            LayersRepr::Encoded(t) => {
                let start = layer.checked_mul(LAYER_RECORD)?;
                // Validated when the table was accepted: every record decodes.
                decode_kind(t.get(start..start.checked_add(LAYER_RECORD)?)?)
            }
        }
    }

    /// The kinds in layer order.
    pub fn iter(&self) -> impl Iterator<Item = AttentionKind> + 'a {
        let layers = *self;
        (0..layers.len()).filter_map(move |l| layers.get(l))
    }
}

/// The shape of a byte-level model without allocation: what `model::config::ModelConfig` holds,
/// with the per-layer kinds borrowed ([`Layers`]). The model is `L` pre-norm blocks
/// `x += Attn(norm1(x)); x += MLP(norm2(x))` on `x_0 = E[t] + P[i]`, then `logits = norm_f(x_L) W_U`
/// (`W_U = E^T` when tied).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelShape<'a> {
    /// Width of the residual stream `d`.
    pub d_model: usize,
    /// Heads per attention layer `h`.
    pub n_heads: usize,
    /// Width of a head's values (and of `W_Q, W_K` for the softmax and linear kinds).
    pub d_head: usize,
    /// Hidden width of the MLP.
    pub d_mlp: usize,
    /// Positions the model has: a sequence holds at most this many tokens.
    pub context_len: usize,
    /// Normalization before each sub-layer and before the unembedding.
    pub norm: NormKind,
    /// How positions are encoded.
    pub positions: PositionKind,
    /// Whether the unembedding is `E^T`.
    pub tied_unembedding: bool,
    /// Attention kind per layer.
    pub layers: Layers<'a>,
}

/// The element counts of one block's tensors in buffer order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BlockSizes {
    pub norm: usize,
    pub theta: usize,
    pub w_v: usize,
    pub w_o: usize,
    pub w_1: usize,
    pub b_1: usize,
    pub w_2: usize,
    pub b_2: usize,
}

impl BlockSizes {
    fn total(&self) -> Option<usize> {
        let parts =
            [self.norm, self.theta, self.w_v, self.w_o, self.norm, self.w_1, self.b_1, self.w_2, self.b_2];
        parts.iter().try_fold(0usize, |acc, &p| acc.checked_add(p))
    }
}

fn positive(what: &'static str, value: usize) -> Result<()> {
    if value == 0 {
        Err(Error::InvalidParameter { what, expected: "at least 1" })
    } else {
        Ok(())
    }
}

/// Width of one head's queries and keys: `d_head`, `2r + q` for S-D, `qk_width` for a linear
/// layer of its own query/key width.
pub(crate) fn qk_width(kind: AttentionKind, d_head: usize) -> usize {
    match kind {
        AttentionKind::Sd { routing_rank, filtering_rank } => {
            routing_rank.saturating_mul(2).saturating_add(filtering_rank)
        }
        AttentionKind::LinearQk { qk_width } => qk_width,
        AttentionKind::Softmax | AttentionKind::Linear => d_head,
    }
}

impl<'a> ModelShape<'a> {
    /// The shape of a `model::config::ModelConfig` (borrowing its per-layer kinds).
    #[cfg(feature = "alloc")]
    pub fn of_config(config: &'a crate::model::config::ModelConfig) -> Self {
        ModelShape {
            d_model: config.d_model,
            n_heads: config.n_heads,
            d_head: config.d_head,
            d_mlp: config.d_mlp,
            context_len: config.context_len,
            norm: config.norm,
            positions: config.positions,
            tied_unembedding: config.tied_unembedding,
            layers: Layers::from_kinds(&config.attention),
        }
    }

    /// Number of blocks `L`.
    pub fn n_layers(&self) -> usize {
        self.layers.len()
    }

    /// `h d_head`: the width of the values and mixed outputs of a layer.
    pub fn d_heads(&self) -> usize {
        self.n_heads.saturating_mul(self.d_head)
    }

    /// The sizes of block `layer`'s tensors (validated shapes only).
    pub(crate) fn block_sizes(&self, kind: AttentionKind) -> BlockSizes {
        let (d, hw) = (self.d_model, self.d_heads());
        BlockSizes {
            norm: self.norm.param_len(d),
            theta: kind.params_per_head(d, self.d_head).unwrap_or(usize::MAX).saturating_mul(self.n_heads),
            w_v: d * hw,
            w_o: hw * d,
            w_1: d * self.d_mlp,
            b_1: self.d_mlp,
            w_2: self.d_mlp * d,
            b_2: d,
        }
    }

    /// Checks the shape as `ModelConfig::validate` does (every dimension `>= 1`, S-D routing rank
    /// `>= 1`; zero layers are allowed) and that every size the decoder computes fits in `usize`;
    /// returns the number of parameters.
    pub fn param_len(&self) -> Result<usize> {
        positive("d_model", self.d_model)?;
        positive("n_heads", self.n_heads)?;
        positive("d_head", self.d_head)?;
        positive("d_mlp", self.d_mlp)?;
        positive("context_len", self.context_len)?;
        let overflow = Error::DimensionOverflow { what: "model" };
        let mul = |a: usize, b: usize| a.checked_mul(b).ok_or(overflow);
        let d = self.d_model;
        let hw = mul(self.n_heads, self.d_head)?;
        // Sizes of the decoder's buffers: d x max(hw, d_mlp, 256) products and context x widths.
        mul(d, hw.max(self.d_mlp).max(VOCAB))?;
        mul(self.context_len, d.max(hw).max(self.d_mlp))?;
        let mut total = mul(VOCAB, d)?;
        if self.positions == PositionKind::Learned {
            total = total.checked_add(mul(self.context_len, d)?).ok_or(overflow)?;
        }
        for kind in self.layers.iter() {
            match kind {
                AttentionKind::Sd { routing_rank, .. } => positive("routing_rank", routing_rank)?,
                AttentionKind::LinearQk { qk_width } => positive("qk_width", qk_width)?,
                AttentionKind::Softmax | AttentionKind::Linear => {}
            }
            let theta = kind
                .params_per_head(d, self.d_head)
                .and_then(|p| p.checked_mul(self.n_heads))
                .ok_or(Error::DimensionOverflow { what: "attention" })?;
            let w = qk_width(kind, self.d_head);
            // The packed queries and keys of a layer, over the whole context.
            mul(mul(self.n_heads, w.max(self.d_head))?, self.context_len.max(d))?;
            // d hw, d d_mlp fit (checked above), so the other sizes of the block do too.
            let block = BlockSizes { theta, ..self.block_sizes(kind) };
            total = total.checked_add(block.total().ok_or(overflow)?).ok_or(overflow)?;
        }
        total = total.checked_add(self.norm.param_len(d)).ok_or(overflow)?;
        if !self.tied_unembedding {
            total = total.checked_add(mul(d, VOCAB)?).ok_or(overflow)?;
        }
        Ok(total)
    }

    /// A 64-bit fingerprint of the shape (FNV-1a over every dimension and kind): a decoder state
    /// remembers the fingerprint of the shape it was made for and is refused by another.
    pub fn fingerprint(&self) -> u64 {
        let mut bytes = [0u8; 8 * 8];
        let dims = [
            self.d_model,
            self.n_heads,
            self.d_head,
            self.d_mlp,
            self.context_len,
            self.norm as usize,
            self.positions as usize,
            self.tied_unembedding as usize,
        ];
        for (chunk, v) in bytes.chunks_exact_mut(8).zip(dims) {
            chunk.copy_from_slice(&(v as u64).to_le_bytes());
        }
        let mut h = fnv1a64(&bytes);
        for kind in self.layers.iter() {
            let (tag, r, q) = match kind {
                AttentionKind::Softmax => (0u64, 0, 0),
                AttentionKind::Sd { routing_rank, filtering_rank } => (1, routing_rank, filtering_rank),
                AttentionKind::Linear => (2, 0, 0),
                AttentionKind::LinearQk { qk_width } => (3, qk_width, 0),
            };
            let mut record = [0u8; 24];
            record[..8].copy_from_slice(&(h ^ tag).to_le_bytes());
            record[8..16].copy_from_slice(&(r as u64).to_le_bytes());
            record[16..].copy_from_slice(&(q as u64).to_le_bytes());
            h = fnv1a64(&record);
        }
        h
    }
}

/// The parameters of one block, borrowed from the flat buffer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BlockParams<'a, T> {
    pub kind: AttentionKind,
    pub norm1: &'a [T],
    pub theta: &'a [T],
    pub w_v: &'a [T],
    pub w_o: &'a [T],
    pub norm2: &'a [T],
    pub w_1: &'a [T],
    pub b_1: &'a [T],
    pub w_2: &'a [T],
    pub b_2: &'a [T],
}

/// A model to run: a validated [`ModelShape`] and its flat parameters, both borrowed.
///
/// ```
/// use sd_attention::inference::{Layers, ModelShape, ModelView};
/// use sd_attention::model::kinds::{AttentionKind, PositionKind};
/// use sd_attention::model::norm::NormKind;
/// let kinds = [AttentionKind::Linear, AttentionKind::Softmax];
/// let shape = ModelShape {
///     d_model: 8, n_heads: 2, d_head: 4, d_mlp: 16, context_len: 32,
///     norm: NormKind::Rms, positions: PositionKind::Learned, tied_unembedding: true,
///     layers: Layers::from_kinds(&kinds),
/// };
/// let params = vec![0.01f32; shape.param_len()?];
/// let view = ModelView::new(shape, &params)?;
/// assert_eq!(view.params().len(), params.len());
/// assert!(ModelView::new(shape, &params[1..]).is_err()); // one short
/// # Ok::<(), sd_attention::Error>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct ModelView<'a, T> {
    shape: ModelShape<'a>,
    params: &'a [T],
}

impl<'a, T: Scalar> ModelView<'a, T> {
    /// A view of `params` as a model of `shape`: errors if the shape is invalid
    /// ([`ModelShape::param_len`]) or `params` does not hold exactly its parameter count.
    pub fn new(shape: ModelShape<'a>, params: &'a [T]) -> Result<Self> {
        let total = shape.param_len()?;
        crate::error::check_len("params", params.len(), total)?;
        Ok(ModelView { shape, params })
    }

    /// The shape.
    pub fn shape(&self) -> &ModelShape<'a> {
        &self.shape
    }

    /// The flat parameters.
    pub fn params(&self) -> &'a [T] {
        self.params
    }

    /// The byte embedding `E` (`256 x d`).
    pub(crate) fn embedding(&self) -> &'a [T] {
        &self.params[..VOCAB * self.shape.d_model]
    }

    /// The learned positions (`context x d`), empty for sinusoidal.
    pub(crate) fn positions(&self) -> &'a [T] {
        let d = self.shape.d_model;
        let rows = if self.shape.positions == PositionKind::Learned { self.shape.context_len } else { 0 };
        &self.params[VOCAB * d..(VOCAB + rows) * d]
    }

    /// The blocks' parameters, in layer order.
    pub(crate) fn blocks(&self) -> impl Iterator<Item = BlockParams<'a, T>> + 'a {
        let shape = self.shape;
        let mut rest = &self.params[VOCAB * shape.d_model + self.positions().len()..];
        shape.layers.iter().map(move |kind| {
            let s = shape.block_sizes(kind);
            let mut take = |len: usize| {
                let (head, tail) = rest.split_at(len);
                rest = tail;
                head
            };
            BlockParams {
                kind,
                norm1: take(s.norm),
                theta: take(s.theta),
                w_v: take(s.w_v),
                w_o: take(s.w_o),
                norm2: take(s.norm),
                w_1: take(s.w_1),
                b_1: take(s.b_1),
                w_2: take(s.w_2),
                b_2: take(s.b_2),
            }
        })
    }

    /// The final norm and the untied unembedding (`d x 256`; empty when tied).
    pub(crate) fn head(&self) -> (&'a [T], &'a [T]) {
        let d = self.shape.d_model;
        let unembedding = if self.shape.tied_unembedding { 0 } else { d * VOCAB };
        let end = self.params.len();
        let norm = self.shape.norm.param_len(d);
        (&self.params[end - unembedding - norm..end - unembedding], &self.params[end - unembedding..])
    }
}
