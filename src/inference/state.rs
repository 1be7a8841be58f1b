//! The decoder's state in one caller buffer (docs/math.md section 10): what each layer keeps of the
//! tokens seen so far, so that the next token costs one position's work.
//!
//! Per layer, with `h` heads of value width `d_head`, context `C`:
//! * softmax: the keys of every position, per head `k_j` stored transposed (`d_head x C`, so that
//!   the logits of a new query are one row-times-matrix product), and the values `v_j`
//!   (`C x d_head`): `2 h C d_head` elements;
//! * S-D: the features `f_j = [a_j | b_j | c_j] = [x_j U | x_j V | x_j C]` per head (`(2r + q) x C`,
//!   transposed), from which every key `[b_j | -a_j | -c_j]` follows, and the values:
//!   `h C (2r + q + d_head)` elements;
//! * ELU+1 linear: `S = sum_j phi(k_j) v_j^T` (`d_head x d_head`) and `z = sum_j phi(k_j)`
//!   (`d_head`) per head: `h d_head (d_head + 1)` elements, whatever the number of tokens.
//!
//! Only positions `0..position` of a cache hold data; a state knows its position and the
//! fingerprint of the shape it was made for ([`ModelShape::fingerprint`]).

use super::view::{qk_width, ModelShape};
use crate::model::kinds::AttentionKind;
use crate::{Error, Result, Scalar};

/// Elements of one layer's state (see the module documentation). Saturates on overflow (a shape
/// accepted by [`ModelShape::param_len`] never overflows).
pub fn layer_state_len(shape: &ModelShape<'_>, kind: AttentionKind) -> usize {
    let (h, dh, c) = (shape.n_heads, shape.d_head, shape.context_len);
    match kind {
        AttentionKind::Softmax | AttentionKind::Sd { .. } => {
            h.saturating_mul(c).saturating_mul(qk_width(kind, dh).saturating_add(dh))
        }
        AttentionKind::Linear | AttentionKind::LinearQk { .. } => {
            h.saturating_mul(qk_width(kind, dh)).saturating_mul(dh.saturating_add(1))
        }
    }
}

/// Elements of the whole decoder state of `shape`: the sum of [`layer_state_len`] over the layers.
/// Errors if the shape is invalid or the sum overflows.
pub fn state_len(shape: &ModelShape<'_>) -> Result<usize> {
    shape.param_len()?;
    let mut total = 0usize;
    for kind in shape.layers.iter() {
        let len = layer_state_len(shape, kind);
        if len == usize::MAX {
            return Err(Error::DimensionOverflow { what: "state" });
        }
        total = total.checked_add(len).ok_or(Error::DimensionOverflow { what: "state" })?;
    }
    Ok(total)
}

/// Bytes of one layer's state in `T` (what [`layer_state_len`] elements occupy).
pub fn layer_state_bytes<T: Scalar>(shape: &ModelShape<'_>, kind: AttentionKind) -> usize {
    layer_state_len(shape, kind).saturating_mul(core::mem::size_of::<T>())
}

/// A decoder state over a caller buffer of at least [`state_len`] elements.
///
/// ```
/// use sd_attention::inference::{state_len, DecoderState, Layers, ModelShape};
/// use sd_attention::model::kinds::{AttentionKind, PositionKind};
/// use sd_attention::model::norm::NormKind;
/// let kinds = [AttentionKind::Softmax, AttentionKind::Linear];
/// let shape = ModelShape {
///     d_model: 8, n_heads: 2, d_head: 4, d_mlp: 16, context_len: 32,
///     norm: NormKind::None, positions: PositionKind::Learned, tied_unembedding: true,
///     layers: Layers::from_kinds(&kinds),
/// };
/// // softmax: 2 h C d_head = 512; linear: h d_head (d_head + 1) = 40
/// assert_eq!(state_len(&shape)?, 512 + 40);
/// let mut buffer = [0.0f32; 552];
/// let state = DecoderState::new(&shape, &mut buffer)?;
/// assert_eq!(state.position(), 0);
/// # Ok::<(), sd_attention::Error>(())
/// ```
#[derive(Debug)]
pub struct DecoderState<'s, T> {
    pub(crate) buf: &'s mut [T],
    pub(crate) fingerprint: u64,
    pub(crate) position: usize,
}

impl<'s, T: Scalar> DecoderState<'s, T> {
    /// An empty state (position 0) for `shape` over `buffer` (at least [`state_len`] elements;
    /// the first `state_len` are used).
    pub fn new(shape: &ModelShape<'_>, buffer: &'s mut [T]) -> Result<Self> {
        let len = state_len(shape)?;
        if buffer.len() < len {
            return Err(Error::ShapeMismatch { what: "state buffer", expected: len, got: buffer.len() });
        }
        let buf = &mut buffer[..len];
        buf.fill(T::zero());
        Ok(DecoderState { buf, fingerprint: shape.fingerprint(), position: 0 })
    }

    /// Tokens held: the position the next token takes.
    pub fn position(&self) -> usize {
        self.position
    }

    /// Forgets every token: position 0, every element zeroed.
    pub fn reset(&mut self) {
        self.position = 0;
        self.buf.fill(T::zero());
    }

    /// The fingerprint of the shape the state was made for.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// The state's elements (`state_len` of its shape).
    pub fn as_slice(&self) -> &[T] {
        self.buf
    }
}
