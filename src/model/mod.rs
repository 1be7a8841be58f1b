//! A byte-level transformer language model with hand-written backward passes.
//!
//! Layer kernels over row-major slices, allocation-free and `no_std` (each with forward and
//! backward, checked by central finite differences in f64 in `tests/model_layers.rs`):
//! * [`embedding`]: byte embedding (vocabulary 256) and learned or sinusoidal positions;
//! * [`linear`]: `Y = X W + b` (value/output projections `W_V`, `W_O`, MLP layers, unembedding);
//! * [`gelu`]: GELU, tanh form; [`mlp`]: `gelu(X W_1 + b_1) W_2 + b_2`;
//! * [`norm`]: RMSNorm and LayerNorm per row;
//! * [`kinds`]: the attention kind of a layer and the position encoding (used by `config` and by
//!   the allocation-free `crate::inference`);
//! * [`loss`]: numerically stable cross-entropy, mean over tokens;
//! * [`sublayer`]: the interface an attention kernel implements to be plugged into the model.
//!
//! With the `alloc` feature, the assembly:
//! * [`config`]: [`config::ModelConfig`] (dimensions, attention kind per layer, norm, positions,
//!   tying) and the parameter count per part;
//! * [`layout`]: named ranges of every tensor in the flat parameter/gradient buffer;
//! * [`attention`]: [`attention::AttentionMixer`], the softmax, S-D and ELU+1 linear kernels of
//!   [`crate::attention`] as attention sub-layers;
//! * [`transformer`]: [`transformer::Model`], forward to the loss and backward into one flat
//!   gradient buffer.

#[cfg(feature = "alloc")]
pub mod attention;
#[cfg(feature = "alloc")]
pub mod config;
pub mod embedding;
pub mod gelu;
pub mod kinds;
#[cfg(feature = "alloc")]
pub mod layout;
pub mod linear;
pub mod loss;
pub mod mlp;
pub mod norm;
pub mod sublayer;
#[cfg(feature = "alloc")]
pub mod transformer;
