//! Running a trained model: allocation-free incremental decoding (docs/math.md section 10), `no_std`
//! without an allocator, on a server's CPU or a microcontroller's.
//!
//! * [`view`]: [`ModelView`], a borrowed model (shape and flat parameters, no copy);
//! * [`checkpoint`]: [`CheckpointView`], a checkpoint's bytes validated and viewed in place (the
//!   parameters may stay in flash: [`include_checkpoint!`](crate::include_checkpoint));
//! * [`state`]: [`DecoderState`], what each layer keeps of the past, in a caller buffer of
//!   [`state_len`] elements (softmax: keys and values; S-D: features `[a | b | c]` and values;
//!   linear: the running `(S, z)`, constant in the number of tokens);
//! * [`decoder`]: [`Decoder`], `prefill(prompt)` through the parallel kernels and `step(token)`
//!   one position at a time, both leaving the state ready to continue, with a workspace of
//!   [`workspace_len`] elements;
//! * [`sample`]: [`Sampler`], greedy, temperature, top-k and top-p draws from a seeded generator.
//!
//! ```
//! use sd_attention::inference::*;
//! use sd_attention::model::kinds::{AttentionKind, PositionKind};
//! use sd_attention::model::norm::NormKind;
//! let kinds = [AttentionKind::Softmax, AttentionKind::Linear];
//! let shape = ModelShape {
//!     d_model: 8, n_heads: 2, d_head: 4, d_mlp: 16, context_len: 24,
//!     norm: NormKind::Rms, positions: PositionKind::Learned, tied_unembedding: true,
//!     layers: Layers::from_kinds(&kinds),
//! };
//! let params: Vec<f32> = (0..shape.param_len()?).map(|i| (i as f32 * 0.61).sin() * 0.2).collect();
//! let (mut state, mut workspace) = (vec![0.0; state_len(&shape)?], vec![0.0; workspace_len(&shape, 4)?]);
//! let mut decoder = Decoder::new(ModelView::new(shape, &params)?, DecoderState::new(&shape, &mut state)?, &mut workspace)?;
//! let mut sampler = Sampler::new(0.8, 40, 0.95, 1)?;
//! let mut token = sampler.sample(decoder.prefill(b"Hi, ")?)?;
//! for _ in 0..10 {
//!     token = sampler.sample(decoder.step(token)?)?;
//! }
//! assert_eq!(decoder.position(), 14);
//! # Ok::<(), sd_attention::Error>(())
//! ```

pub mod checkpoint;
pub mod decoder;
pub mod sample;
pub mod state;
pub mod view;

pub use checkpoint::{Aligned, CheckpointView};
pub use decoder::{prefill_workspace_len, step_workspace_len, workspace_len, Decoder};
pub use sample::Sampler;
pub use state::{layer_state_bytes, layer_state_len, state_len, DecoderState};
pub use view::{Layers, ModelShape, ModelView};
