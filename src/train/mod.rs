//! Training machinery.
//!
//! Allocation-free, `no_std`:
//! * [`adamw`]: AdamW update over slices (decoupled weight decay), and with `alloc` the
//!   [`adamw::AdamW`] state over a model's flat buffer;
//! * [`clip`]: global-norm gradient clipping;
//! * [`schedule`]: linear warmup then cosine decay;
//! * [`checksum`]: CRC-32 and FNV-1a 64, written by hand for the file formats.
//!
//! With `alloc`:
//! * [`checkpoint`]: a small documented binary checkpoint format (magic, version, config,
//!   little-endian tensors, CRC-32);
//! * [`corpus`]: the Shakespeare corpus (fixed split by play) and deterministic batches;
//! * [`trainer`]: a training step (batch, forward, backward, clip, AdamW, schedule), evaluation,
//!   and checkpoints that resume bit for bit.

pub mod adamw;
#[cfg(feature = "alloc")]
pub mod checkpoint;
pub mod checksum;
pub mod clip;
#[cfg(feature = "alloc")]
pub mod corpus;
pub mod schedule;
#[cfg(feature = "alloc")]
pub mod trainer;
