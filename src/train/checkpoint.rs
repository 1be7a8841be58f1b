//! Checkpoints: a model's config, flat parameters and (optionally) AdamW state in one small binary
//! file, version 1. All integers and floats are little-endian.
//!
//! ```text
//! offset  size        field
//! 0       8           magic  b"SDATCKPT"
//! 8       4   u32     format version (1)
//! 12      4   u32     scalar width in bytes: 4 (f32) or 8 (f64)
//! 16      36  9 x u32 config: d_model, n_layers, n_heads, d_head, d_mlp, context_len,
//!                     norm (0 none, 1 RMSNorm, 2 LayerNorm), positions (0 learned, 1 sinusoidal),
//!                     tied unembedding (0 or 1)
//! 52      12 L        per layer 3 x u32: attention kind (0 softmax, 1 S-D, 2 linear,
//!                     3 linear of its own query/key width), then routing rank r and filtering
//!                     rank q (S-D), or the query/key width and 0 (kind 3), or 0 and 0
//! ..      8   u64     optimizer step count (must be 0 without optimizer state)
//! ..      4   u32     number of buffers: 1 (parameters) or 3 (parameters, AdamW m, AdamW v)
//! ..      per buffer: u64 element count (= the config's parameter count), then the elements
//! end-4   4   u32     CRC-32 (IEEE, see `checksum`) of every preceding byte
//! ```
//!
//! [`Checkpoint::decode`] never panics and never allocates more than the input could describe: it
//! rejects truncated, foreign (wrong magic, version or scalar width), inconsistent (invalid config,
//! wrong buffer length, trailing bytes) input with [`Error::Malformed`], naming the byte offset where
//! the problem was found, and corrupted input (a well-formed file whose CRC-32 differs from the
//! stored one) with [`Error::ChecksumMismatch`], which covers the whole file: a checksum says that
//! the bytes changed, not where.

use super::checksum::crc32;
use crate::model::config::{AttentionKind, ModelConfig, PositionKind};
use crate::model::norm::NormKind;
use crate::{Error, Result, Scalar};
use alloc::vec::Vec;
use core::any::Any;

/// The first 8 bytes of a checkpoint.
pub const MAGIC: [u8; 8] = *b"SDATCKPT";
/// The format version this code writes and reads.
pub const VERSION: u32 = 1;

/// AdamW state as stored in a checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct OptimizerState<T> {
    /// Steps taken.
    pub step: u64,
    /// First moments (same layout as the parameters).
    pub m: Vec<T>,
    /// Second moments.
    pub v: Vec<T>,
}

/// Everything a checkpoint holds.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint<T> {
    /// The model.
    pub config: ModelConfig,
    /// Flat parameters (`config.param_counts()?.total` elements, laid out by `ParamLayout`).
    pub params: Vec<T>,
    /// Optional optimizer state.
    pub optimizer: Option<OptimizerState<T>>,
}

fn width<T: Scalar>() -> usize {
    core::mem::size_of::<T>()
}

fn put_u32(out: &mut Vec<u8>, what: &'static str, v: usize) -> Result<()> {
    let v =
        u32::try_from(v).map_err(|_| Error::InvalidParameter { what, expected: "< 2^32 to be stored" })?;
    out.extend_from_slice(&v.to_le_bytes());
    Ok(())
}

fn put_scalars<T: Scalar>(out: &mut Vec<u8>, values: &[T]) {
    out.extend_from_slice(&(values.len() as u64).to_le_bytes());
    for v in values {
        // Bits, not values: `Scalar` is sealed to f32 and f64, and going through the concrete type
        // keeps every bit (NaN payloads included) instead of converting through f64.
        let any = v as &dyn Any;
        if let Some(x) = any.downcast_ref::<f32>() {
            out.extend_from_slice(&x.to_bits().to_le_bytes());
        } else if let Some(x) = any.downcast_ref::<f64>() {
            out.extend_from_slice(&x.to_bits().to_le_bytes());
        }
    }
}

/// The scalar stored in `bytes` (4 or 8 little-endian bytes, the width of `T`), bit for bit.
fn scalar_from_le<T: Scalar>(bytes: &[u8]) -> T {
    let mut value = T::zero();
    let slot = &mut value as &mut dyn Any;
    if let Some(x) = slot.downcast_mut::<f32>() {
        let mut b = [0u8; 4];
        b.copy_from_slice(&bytes[..4]);
        *x = f32::from_bits(u32::from_le_bytes(b));
    } else if let Some(x) = slot.downcast_mut::<f64>() {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[..8]);
        *x = f64::from_bits(u64::from_le_bytes(b));
    }
    value
}

/// Reads fields off the front of the input, tracking the offset for error messages.
struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8]> {
        if self.bytes.len() - self.offset < n {
            return Err(Error::Malformed { what, offset: self.bytes.len() });
        }
        let s = &self.bytes[self.offset..self.offset + n];
        self.offset += n;
        Ok(s)
    }
    fn u32(&mut self, what: &'static str) -> Result<u32> {
        let s = self.take(4, what)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn usize32(&mut self, what: &'static str) -> Result<usize> {
        Ok(self.u32(what)? as usize)
    }
    fn u64(&mut self, what: &'static str) -> Result<u64> {
        let s = self.take(8, what)?;
        let mut b = [0u8; 8];
        b.copy_from_slice(s);
        Ok(u64::from_le_bytes(b))
    }
    fn remaining(&self) -> usize {
        self.bytes.len() - self.offset
    }
    fn scalars<T: Scalar>(&mut self, expected: usize) -> Result<Vec<T>> {
        let at = self.offset;
        let count = self.u64("truncated: buffer length")?;
        if count != expected as u64 {
            return Err(Error::Malformed {
                what: "buffer length differs from the config's parameter count",
                offset: at,
            });
        }
        let w = width::<T>();
        let bytes = expected
            .checked_mul(w)
            .filter(|&b| b <= self.remaining())
            .ok_or(Error::Malformed { what: "truncated: buffer data", offset: self.bytes.len() })?;
        let data = self.take(bytes, "truncated: buffer data")?;
        let mut out = Vec::with_capacity(expected);
        for c in data.chunks_exact(w) {
            out.push(scalar_from_le::<T>(c));
        }
        Ok(out)
    }
}

impl<T: Scalar> Checkpoint<T> {
    /// The checkpoint as bytes (format above). Errors if the config is invalid, a dimension does
    /// not fit in `u32`, or a buffer's length differs from the parameter count.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let c = &self.config;
        let total = c.param_counts()?.total;
        crate::error::check_len("params", self.params.len(), total)?;
        if let Some(o) = &self.optimizer {
            crate::error::check_len("m", o.m.len(), total)?;
            crate::error::check_len("v", o.v.len(), total)?;
        }
        let mut out = Vec::with_capacity(64 + 12 * c.n_layers + 3 * (8 + total * width::<T>()));
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        put_u32(&mut out, "scalar width", width::<T>())?;
        put_u32(&mut out, "d_model", c.d_model)?;
        put_u32(&mut out, "n_layers", c.n_layers)?;
        put_u32(&mut out, "n_heads", c.n_heads)?;
        put_u32(&mut out, "d_head", c.d_head)?;
        put_u32(&mut out, "d_mlp", c.d_mlp)?;
        put_u32(&mut out, "context_len", c.context_len)?;
        let norm = match c.norm {
            NormKind::None => 0,
            NormKind::Rms => 1,
            NormKind::Layer => 2,
        };
        put_u32(&mut out, "norm", norm)?;
        put_u32(&mut out, "positions", (c.positions == PositionKind::Sinusoidal) as usize)?;
        put_u32(&mut out, "tied", c.tied_unembedding as usize)?;
        for kind in &c.attention {
            let (tag, r, q) = match *kind {
                AttentionKind::Softmax => (0, 0, 0),
                AttentionKind::Sd { routing_rank, filtering_rank } => (1, routing_rank, filtering_rank),
                AttentionKind::Linear => (2, 0, 0),
                AttentionKind::LinearQk { qk_width } => (3, qk_width, 0),
            };
            put_u32(&mut out, "attention kind", tag)?;
            put_u32(&mut out, "routing_rank", r)?;
            put_u32(&mut out, "filtering_rank", q)?;
        }
        let step = self.optimizer.as_ref().map_or(0, |o| o.step);
        out.extend_from_slice(&step.to_le_bytes());
        out.extend_from_slice(&(if self.optimizer.is_some() { 3u32 } else { 1 }).to_le_bytes());
        put_scalars(&mut out, &self.params);
        if let Some(o) = &self.optimizer {
            put_scalars(&mut out, &o.m);
            put_scalars(&mut out, &o.v);
        }
        let crc = crc32(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    /// Parses bytes written by [`Self::encode`] for the same scalar type `T`. Never panics; a
    /// rejection is an [`Error::Malformed`] with the offset of the offending field, or an
    /// [`Error::ChecksumMismatch`] for a well-formed file whose bytes changed.
    ///
    /// ```
    /// use sd_attention::train::checkpoint::Checkpoint;
    /// assert!(Checkpoint::<f32>::decode(b"not a checkpoint").is_err());
    /// ```
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader { bytes, offset: 0 };
        if r.take(8, "truncated: magic")? != MAGIC {
            return Err(Error::Malformed { what: "not a checkpoint (magic)", offset: 0 });
        }
        if r.u32("truncated: version")? != VERSION {
            return Err(Error::Malformed { what: "unsupported version", offset: 8 });
        }
        if r.usize32("truncated: scalar width")? != width::<T>() {
            return Err(Error::Malformed {
                what: "scalar width differs from the requested type",
                offset: 12,
            });
        }
        let mut dims = [0usize; 9];
        for d in dims.iter_mut() {
            *d = r.usize32("truncated: config")?;
        }
        let [d_model, n_layers, n_heads, d_head, d_mlp, context_len, norm, positions, tied] = dims;
        let field = |index: usize| 16 + 4 * index;
        let norm = match norm {
            0 => NormKind::None,
            1 => NormKind::Rms,
            2 => NormKind::Layer,
            _ => return Err(Error::Malformed { what: "unknown norm kind", offset: field(6) }),
        };
        let positions = match positions {
            0 => PositionKind::Learned,
            1 => PositionKind::Sinusoidal,
            _ => return Err(Error::Malformed { what: "unknown position kind", offset: field(7) }),
        };
        let tied_unembedding = match tied {
            0 => false,
            1 => true,
            _ => return Err(Error::Malformed { what: "tied flag is not 0 or 1", offset: field(8) }),
        };
        if n_layers.saturating_mul(12) > r.remaining() {
            return Err(Error::Malformed { what: "truncated: layer table", offset: bytes.len() });
        }
        let mut attention = Vec::with_capacity(n_layers);
        for _ in 0..n_layers {
            let at = r.offset;
            let tag = r.u32("truncated: layer table")?;
            let (routing_rank, filtering_rank) =
                (r.usize32("truncated: layer table")?, r.usize32("truncated: layer table")?);
            attention.push(match (tag, routing_rank, filtering_rank) {
                (0, 0, 0) => AttentionKind::Softmax,
                (1, r, q) => AttentionKind::Sd { routing_rank: r, filtering_rank: q },
                (2, 0, 0) => AttentionKind::Linear,
                (3, w, 0) => AttentionKind::LinearQk { qk_width: w },
                _ => {
                    return Err(Error::Malformed {
                        what: "unknown attention kind or stray ranks",
                        offset: at,
                    })
                }
            });
        }
        let config = ModelConfig {
            d_model,
            n_layers,
            n_heads,
            d_head,
            d_mlp,
            context_len,
            attention,
            norm,
            positions,
            tied_unembedding,
        };
        let total = config
            .param_counts()
            .map_err(|_| Error::Malformed { what: "invalid model config", offset: 16 })?
            .total;
        let step = r.u64("truncated: optimizer step")?;
        let at = r.offset;
        let buffers = r.u32("truncated: buffer count")?;
        if buffers != 1 && buffers != 3 {
            return Err(Error::Malformed { what: "buffer count is not 1 or 3", offset: at });
        }
        if buffers == 1 && step != 0 {
            // Only an optimizer has a step count; accepting one here would not round-trip.
            return Err(Error::Malformed { what: "optimizer step without optimizer state", offset: at - 8 });
        }
        // Every buffer's data must fit in what is left before anything is allocated for it.
        let params = r.scalars::<T>(total)?;
        let optimizer = if buffers == 3 {
            let m = r.scalars::<T>(total)?;
            let v = r.scalars::<T>(total)?;
            Some(OptimizerState { step, m, v })
        } else {
            None
        };
        let at = r.offset;
        let stored = r.u32("truncated: checksum")?;
        if r.remaining() != 0 {
            return Err(Error::Malformed { what: "trailing bytes after the checksum", offset: r.offset });
        }
        if crc32(&bytes[..at]) != stored {
            return Err(Error::ChecksumMismatch { what: "checkpoint", covered: at });
        }
        Ok(Checkpoint { config, params, optimizer })
    }
}
