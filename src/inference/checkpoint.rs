//! A zero-copy view of a checkpoint's bytes (the format of `train::checkpoint`, version 1): the
//! shape is read from the header, the parameters are the file's own bytes reinterpreted in place,
//! and nothing is allocated, so a checkpoint embedded in flash by `include_bytes!` runs as it is.
//!
//! Checks, in this order, before any parameter is touched:
//! 1. magic, version, scalar width (4 or 8), the nine config fields, and that the header the
//!    config announces (`52 + 12 L + 12` bytes) fits in the bytes;
//! 2. the layer table and the shape (the same rules as `ModelConfig::validate`), giving the
//!    parameter count `P`;
//! 3. the length the header implies, `52 + 12 L + 12 + B (8 + P w) + 4` for `B` buffers of width
//!    `w`, equal to the byte length exactly (so a header claiming more than the bytes hold is
//!    rejected before anything else is read or allocated, here or by a caller);
//! 4. each buffer's stored count equal to `P`, then the CRC-32 of every byte before the checksum.
//!
//! Every rejection is an [`Error::Malformed`] naming the byte offset, except a checksum that
//! differs, an [`Error::ChecksumMismatch`]: the damage can be anywhere in the checksummed bytes.

use super::view::{decode_kind, Layers, ModelShape, ModelView, LAYER_RECORD};
use crate::model::kinds::PositionKind;
use crate::model::norm::NormKind;
use crate::train::checksum::crc32;
use crate::{Error, Result, Scalar};

/// The first 8 bytes of a checkpoint.
const MAGIC: [u8; 8] = *b"SDATCKPT";
/// The version this view reads.
const VERSION: u32 = 1;
/// Bytes before the layer table: magic, version, width, nine config fields.
const FIXED_HEADER: usize = 52;
/// Bytes after the layer table and before the first buffer's data: step (8), buffer count (4),
/// the first buffer's element count (8).
const BEFORE_DATA: usize = 20;

/// Bytes aligned to 8, so that a checkpoint embedded with `include_bytes!` can be viewed in place
/// as `f32` or `f64` parameters (the header before the parameters is `72 + 12 L` bytes: a
/// multiple of 4, and of 8 when `L` is even). See [`include_checkpoint!`](crate::include_checkpoint).
#[repr(C, align(8))]
#[derive(Debug)]
pub struct Aligned<B: ?Sized>(pub B);

/// Embeds a file as `&'static [u8]` starting at an 8-byte boundary (the bytes of
/// `include_bytes!($path)` inside an [`Aligned`]), ready for [`CheckpointView::new`].
///
/// ```ignore
/// static MODEL: &[u8] = sd_attention::include_checkpoint!("model.ckpt");
/// ```
#[macro_export]
macro_rules! include_checkpoint {
    ($path:expr) => {{
        static ALIGNED: &$crate::inference::Aligned<[u8]> =
            &$crate::inference::Aligned(*include_bytes!($path));
        &ALIGNED.0
    }};
}

fn malformed(what: &'static str, offset: usize) -> Error {
    Error::Malformed { what, offset }
}

fn u32_le(bytes: &[u8], at: usize, what: &'static str) -> Result<u32> {
    let s = bytes.get(at..at + 4).ok_or(malformed(what, bytes.len()))?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn u64_le(bytes: &[u8], at: usize, what: &'static str) -> Result<u64> {
    let s = bytes.get(at..at + 8).ok_or(malformed(what, bytes.len()))?;
    let mut b = [0u8; 8];
    b.copy_from_slice(s);
    Ok(u64::from_le_bytes(b))
}

/// A validated checkpoint, borrowed: its shape, scalar width, and where its parameters lie.
///
/// ```
/// use sd_attention::inference::CheckpointView;
/// assert!(CheckpointView::new(b"not a checkpoint").is_err());
/// ```
#[derive(Clone, Copy, Debug)]
pub struct CheckpointView<'a> {
    bytes: &'a [u8],
    shape: ModelShape<'a>,
    width: usize,
    params_at: usize,
    param_count: usize,
    optimizer_step: Option<u64>,
}

impl<'a> CheckpointView<'a> {
    /// Validates `bytes` as a checkpoint (see the module documentation for the checks and their
    /// order). Never panics, never allocates.
    pub fn new(bytes: &'a [u8]) -> Result<Self> {
        if bytes.get(..8).ok_or(malformed("truncated: magic", bytes.len()))? != MAGIC {
            return Err(malformed("not a checkpoint (magic)", 0));
        }
        if u32_le(bytes, 8, "truncated: version")? != VERSION {
            return Err(malformed("unsupported version", 8));
        }
        let width = u32_le(bytes, 12, "truncated: scalar width")? as usize;
        if width != 4 && width != 8 {
            return Err(malformed("scalar width is not 4 or 8", 12));
        }
        let mut dims = [0usize; 9];
        for (i, d) in dims.iter_mut().enumerate() {
            *d = u32_le(bytes, 16 + 4 * i, "truncated: config")? as usize;
        }
        let [d_model, n_layers, n_heads, d_head, d_mlp, context_len, norm, positions, tied] = dims;
        // 1. The header the config announces must fit before anything else is read.
        let table_end = n_layers
            .checked_mul(LAYER_RECORD)
            .and_then(|t| t.checked_add(FIXED_HEADER))
            .filter(|&end| end.checked_add(BEFORE_DATA).is_some_and(|h| h <= bytes.len()))
            .ok_or(malformed(
                "truncated: the header announces more layers than the bytes hold",
                bytes.len(),
            ))?;
        let norm = match norm {
            0 => NormKind::None,
            1 => NormKind::Rms,
            2 => NormKind::Layer,
            _ => return Err(malformed("unknown norm kind", 16 + 4 * 6)),
        };
        let positions = match positions {
            0 => PositionKind::Learned,
            1 => PositionKind::Sinusoidal,
            _ => return Err(malformed("unknown position kind", 16 + 4 * 7)),
        };
        let tied_unembedding = match tied {
            0 => false,
            1 => true,
            _ => return Err(malformed("tied flag is not 0 or 1", 16 + 4 * 8)),
        };
        // 2. The layer table and the shape.
        let table = &bytes[FIXED_HEADER..table_end];
        for (l, record) in table.chunks_exact(LAYER_RECORD).enumerate() {
            if decode_kind(record).is_none() {
                return Err(malformed(
                    "unknown attention kind or stray ranks",
                    FIXED_HEADER + l * LAYER_RECORD,
                ));
            }
        }
        let shape = ModelShape {
            d_model,
            n_heads,
            d_head,
            d_mlp,
            context_len,
            norm,
            positions,
            tied_unembedding,
            layers: Layers::from_validated_table(table),
        };
        let param_count = shape.param_len().map_err(|_| malformed("invalid model config", 16))?;
        let step = u64_le(bytes, table_end, "truncated: optimizer step")?;
        let buffers = u32_le(bytes, table_end + 8, "truncated: buffer count")? as usize;
        if buffers != 1 && buffers != 3 {
            return Err(malformed("buffer count is not 1 or 3", table_end + 8));
        }
        if buffers == 1 && step != 0 {
            return Err(malformed("optimizer step without optimizer state", table_end));
        }
        // 3. The length the header implies, against the byte length.
        let implied = param_count
            .checked_mul(width)
            .and_then(|data| data.checked_add(8))
            .and_then(|buffer| buffer.checked_mul(buffers))
            .and_then(|all| all.checked_add(table_end + 12 + 4));
        match implied {
            Some(len) if len == bytes.len() => {}
            Some(len) if len < bytes.len() => {
                return Err(malformed("trailing bytes after the checksum", len))
            }
            _ => {
                return Err(malformed(
                    "truncated: the header claims more parameter data than the bytes hold",
                    bytes.len(),
                ))
            }
        }
        // 4. Each buffer's count, then the checksum.
        let buffer_len = 8 + param_count * width;
        for b in 0..buffers {
            let at = table_end + 12 + b * buffer_len;
            if u64_le(bytes, at, "truncated: buffer length")? != param_count as u64 {
                return Err(malformed("buffer length differs from the config's parameter count", at));
            }
        }
        let crc_at = bytes.len() - 4;
        if crc32(&bytes[..crc_at]) != u32_le(bytes, crc_at, "truncated: checksum")? {
            return Err(Error::ChecksumMismatch { what: "checkpoint", covered: crc_at });
        }
        Ok(CheckpointView {
            bytes,
            shape,
            width,
            params_at: table_end + BEFORE_DATA,
            param_count,
            optimizer_step: if buffers == 3 { Some(step) } else { None },
        })
    }

    /// The model's shape (its layer kinds read from the checkpoint's bytes).
    pub fn shape(&self) -> ModelShape<'a> {
        self.shape
    }

    /// Bytes per stored scalar: 4 (`f32`) or 8 (`f64`).
    pub fn scalar_width(&self) -> usize {
        self.width
    }

    /// Number of parameters.
    pub fn param_count(&self) -> usize {
        self.param_count
    }

    /// The AdamW step count when the checkpoint also stores optimizer state.
    pub fn optimizer_step(&self) -> Option<u64> {
        self.optimizer_step
    }

    /// The parameters' bytes (`param_count * scalar_width`, little-endian).
    pub fn param_bytes(&self) -> &'a [u8] {
        &self.bytes[self.params_at..self.params_at + self.param_count * self.width]
    }

    /// The parameters as `&[T]`, in place (no copy). Errors: a scalar width other than `T`'s, a
    /// big-endian target (the file is little-endian), or bytes not aligned for `T` (embed with
    /// [`include_checkpoint!`](crate::include_checkpoint), or use [`Self::copy_params`]).
    pub fn params<T: Scalar>(&self) -> Result<&'a [T]> {
        let size = core::mem::size_of::<T>();
        if size != self.width {
            return Err(malformed("scalar width differs from the requested type", 12));
        }
        if cfg!(target_endian = "big") {
            return Err(malformed(
                "in-place view needs a little-endian target (use copy_params)",
                self.params_at,
            ));
        }
        let data = self.param_bytes();
        if data.as_ptr().align_offset(core::mem::align_of::<T>()) != 0 {
            return Err(malformed(
                "parameters not aligned for the scalar type (use copy_params)",
                self.params_at,
            ));
        }
        // SAFETY: `data` is a live borrow of `'a` bytes of length `param_count * size_of::<T>()`
        // (checked against the byte length in `new`), and its start is aligned for `T` (checked
        // just above), so the pointer is valid for `param_count` reads of `T` for `'a`, and the
        // shared borrow keeps the bytes unmodified. `T: Scalar` is sealed to `f32` and `f64`, for
        // which every bit pattern is a valid value, and the target is little-endian like the file,
        // so each element is the stored value bit for bit. Exercised by the unit tests below and
        // by tests/inference.rs (f32 and f64 checkpoints, aligned and misaligned).
        Ok(unsafe { core::slice::from_raw_parts(data.as_ptr().cast::<T>(), self.param_count) })
    }

    /// Copies the parameters into `out` (`param_count` elements), for any alignment or target.
    pub fn copy_params<T: Scalar>(&self, out: &mut [T]) -> Result<()> {
        let size = core::mem::size_of::<T>();
        if size != self.width {
            return Err(malformed("scalar width differs from the requested type", 12));
        }
        crate::error::check_len("out", out.len(), self.param_count)?;
        for (o, chunk) in out.iter_mut().zip(self.param_bytes().chunks_exact(size)) {
            *o = if size == 4 {
                T::of_f64(f32::from_bits(u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]])) as f64)
            } else {
                let mut b = [0u8; 8];
                b.copy_from_slice(chunk);
                T::of_f64(f64::from_bits(u64::from_le_bytes(b)))
            };
        }
        Ok(())
    }

    /// A [`ModelView`] over the parameters in place ([`Self::params`]).
    pub fn model<T: Scalar>(&self) -> Result<ModelView<'a, T>> {
        ModelView::new(self.shape, self.params::<T>()?)
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use crate::model::config::{AttentionKind, ModelConfig};
    use crate::train::checkpoint::Checkpoint;
    use std::vec;
    use std::vec::Vec;

    fn encoded(layers: usize, optimizer: bool) -> (Vec<u8>, Vec<f64>) {
        let kinds = [AttentionKind::Linear, AttentionKind::Sd { routing_rank: 2, filtering_rank: 1 }];
        let config = ModelConfig {
            d_model: 4,
            n_layers: layers,
            n_heads: 2,
            d_head: 2,
            d_mlp: 6,
            context_len: 5,
            attention: (0..layers).map(|l| kinds[l % 2]).collect(),
            norm: NormKind::Rms,
            positions: PositionKind::Learned,
            tied_unembedding: false,
        };
        let total = config.param_counts().unwrap().total;
        let params: Vec<f64> = (0..total).map(|i| i as f64 * 0.25 - 3.0).collect();
        let optimizer = optimizer.then(|| crate::train::checkpoint::OptimizerState {
            step: 7,
            m: vec![1.0; total],
            v: vec![2.0; total],
        });
        let bytes = Checkpoint { config, params: params.clone(), optimizer }.encode().unwrap();
        (bytes, params)
    }

    /// The in-place parameters are the stored ones bit for bit, with and without optimizer state;
    /// at an odd offset the `f64` view is refused (misaligned) and the copy still works.
    #[test]
    fn params_in_place_equal_the_stored_ones() {
        for (layers, optimizer) in [(2, false), (1, true), (0, false)] {
            let (bytes, params) = encoded(layers, optimizer);
            // An 8-aligned copy, and one shifted by one byte.
            let mut storage = vec![0u64; bytes.len() / 8 + 2];
            let raw: &mut [u8] = bytemuck_bytes(&mut storage);
            let view_at = |shift: usize, raw: &mut [u8]| {
                raw[shift..shift + bytes.len()].copy_from_slice(&bytes);
            };
            view_at(0, raw);
            let view = CheckpointView::new(&raw[..bytes.len()]).unwrap();
            assert_eq!(view.optimizer_step(), optimizer.then_some(7));
            if (72 + 12 * layers) % 8 == 0 {
                assert_eq!(view.params::<f64>().unwrap(), &params[..]);
            } else {
                assert!(view.params::<f64>().is_err());
            }
            let mut copy = vec![0.0; params.len()];
            view.copy_params(&mut copy).unwrap();
            assert_eq!(copy, params);
            assert!(view.params::<f32>().is_err(), "wrong width");
            view_at(1, raw);
            let shifted = CheckpointView::new(&raw[1..1 + bytes.len()]).unwrap();
            if (73 + 12 * layers) % 8 != 0 {
                assert!(shifted.params::<f64>().is_err(), "misaligned");
            }
            shifted.copy_params(&mut copy).unwrap();
            assert_eq!(copy, params);
        }
    }

    /// The bytes of a `u64` buffer (8-aligned storage for the test).
    fn bytemuck_bytes(words: &mut [u64]) -> &mut [u8] {
        let len = words.len() * 8;
        // SAFETY: `u8` has alignment 1 and every bit pattern is valid; the region is exactly the
        // `len` bytes of `words`, borrowed mutably for the returned lifetime.
        unsafe { core::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), len) }
    }

    /// Every truncation and every single-byte corruption is rejected without panicking, and the
    /// owned decoder agrees on what is valid.
    #[test]
    fn truncations_and_corruptions_are_rejected() {
        let (bytes, _) = encoded(2, false);
        assert!(CheckpointView::new(&bytes).is_ok());
        for len in 0..bytes.len() {
            assert!(CheckpointView::new(&bytes[..len]).is_err(), "truncated at {len}");
        }
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x5A;
            assert!(CheckpointView::new(&bad).is_err(), "corrupted at {at}");
            assert!(Checkpoint::<f64>::decode(&bad).is_err());
        }
    }
}
