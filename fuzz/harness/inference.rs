//! Body of the `inference` fuzz target, shared with tests/fuzz_replay.rs (which replays the saved
//! inputs and a seeded sweep through it on stable Rust): arbitrary bytes drive the zero-copy checkpoint view (raw,
//! and a valid checkpoint of a fuzz-chosen shape with one byte changed) and the incremental
//! decoder (shapes with zero and huge dimensions, prompts longer than the context, tokens out of
//! range, short workspaces, states of another shape). Nothing may panic; every rejection is an
//! `Err`, and an accepted prefill or step returns 256 logits.

use sd_attention::inference::{
    prefill_workspace_len, state_len, step_workspace_len, CheckpointView, Decoder, DecoderState, Layers,
    ModelShape, ModelView, Sampler,
};
use sd_attention::model::config::{AttentionKind, ModelConfig, PositionKind};
use sd_attention::model::norm::NormKind;
use sd_attention::train::checkpoint::Checkpoint;
use sd_attention::Error;

/// Buffers above this many elements are not allocated (the harness's own memory cap).
const CAP: usize = 1 << 16;

/// Reads values off the input; an exhausted input reads as zeros.
struct Bytes<'a> {
    data: &'a [u8],
    at: usize,
}

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }
    /// A dimension below `modulus`, or (byte 255) one that overflows products.
    fn dim(&mut self, modulus: usize) -> usize {
        match self.byte() {
            255 => usize::MAX / 3,
            b => b as usize % modulus,
        }
    }
    fn kind(&mut self) -> AttentionKind {
        match self.byte() % 4 {
            0 => AttentionKind::Softmax,
            1 => AttentionKind::Linear,
            2 => AttentionKind::LinearQk { qk_width: self.dim(5) },
            _ => AttentionKind::Sd { routing_rank: self.dim(4), filtering_rank: self.dim(3) },
        }
    }
    fn rest(&self) -> &[u8] {
        &self.data[self.at.min(self.data.len())..]
    }
}

/// Which paths an input reached (for the replay test's coverage check).
#[derive(Clone, Copy, Debug, Default)]
pub struct Reached {
    /// A prefill returned logits.
    pub prefill: bool,
    /// A step returned logits.
    pub step: bool,
    /// A step was refused (token out of range or full context).
    pub step_refused: bool,
    /// A changed checkpoint was accepted and decoded.
    pub checkpoint: bool,
    /// A changed checkpoint was rejected.
    pub checkpoint_rejected: bool,
}

/// Runs one fuzz input.
pub fn run(data: &[u8]) -> Reached {
    let mut reached = Reached::default();
    // 1. The raw bytes as a checkpoint.
    match CheckpointView::new(data) {
        Ok(view) => exercise_checkpoint(&view),
        Err(e) => assert!(matches!(e, Error::Malformed { .. } | Error::ChecksumMismatch { .. }), "{e:?}"),
    }
    let mut input = Bytes { data, at: 0 };
    let kinds: Vec<AttentionKind> = (0..input.byte() % 4).map(|_| input.kind()).collect();
    let shape = ModelShape {
        d_model: input.dim(7),
        n_heads: input.dim(4),
        d_head: input.dim(5),
        d_mlp: input.dim(6),
        context_len: input.dim(9),
        norm: [NormKind::None, NormKind::Rms, NormKind::Layer][input.byte() as usize % 3],
        positions: if input.byte() % 2 == 0 { PositionKind::Learned } else { PositionKind::Sinusoidal },
        tied_unembedding: input.byte() % 2 == 0,
        layers: Layers::from_kinds(&kinds),
    };
    let Ok(total) = shape.param_len() else {
        // An invalid shape is refused everywhere.
        assert!(state_len(&shape).is_err() && step_workspace_len(&shape).is_err());
        return reached;
    };
    if total > CAP {
        return reached;
    }
    let scale = input.byte() as f32 / 64.0;
    let params: Vec<f32> = (0..total).map(|i| (i as f32 * 0.7).sin() * scale).collect();
    let view = ModelView::new(shape, &params).expect("valid shape and length");

    let short = input.byte() % 4 == 0;
    let prompt_len = input.byte() as usize % 12;
    // A valid shape whose dimensions sit near usize::MAX (d_heads = n_heads d_head fits, twice it
    // does not) may have no state or workspace length: the lengths say so with DimensionOverflow.
    let lens = state_len(&shape).and_then(|state| {
        let prefill = prefill_workspace_len(&shape, prompt_len.clamp(1, 12))?;
        Ok((state, prefill.max(step_workspace_len(&shape)?)))
    });
    let (state_elems, mut ws_len) = match lens {
        Ok(lens) => lens,
        Err(e) => {
            assert!(matches!(e, Error::DimensionOverflow { .. }), "{e:?}");
            return reached;
        }
    };
    if short {
        ws_len = ws_len.saturating_sub(1 + input.dim(40));
    }
    if state_elems > CAP || ws_len > CAP {
        return reached;
    }
    let mut state = vec![0.0f32; state_elems];
    let mut workspace = vec![0.0f32; ws_len];
    let decoder = DecoderState::new(&shape, &mut state).and_then(|s| Decoder::new(view, s, &mut workspace));
    let mut decoder = match decoder {
        Ok(d) => d,
        Err(e) => {
            assert!(short, "refused a full workspace: {e:?}");
            return reached;
        }
    };
    let tokens: Vec<u8> = input.rest().iter().copied().take(prompt_len).collect();
    match decoder.prefill(&tokens) {
        Ok(logits) => {
            assert_eq!(logits.len(), 256);
            reached.prefill = true;
        }
        Err(e) => assert!(
            matches!(
                e,
                Error::Empty { .. } | Error::ContextOverflow { .. } | Error::WorkspaceTooSmall { .. }
            ),
            "{e:?}"
        ),
    }
    let mut sampler = Sampler::new(input.byte() as f64 / 50.0, input.dim(8), 1.0, 7).expect("valid sampler");
    for _ in 0..input.byte() % 16 {
        let token = match input.byte() {
            255 => 256 + input.dim(1000),
            b => b as usize,
        };
        let position = decoder.position();
        match decoder.step(token) {
            Ok(logits) => {
                assert_eq!(logits.len(), 256);
                let _ = sampler.sample(logits);
                reached.step = true;
            }
            Err(Error::TokenOutOfRange { .. }) => {
                assert!(token >= 256);
                reached.step_refused = true;
            }
            Err(Error::ContextOverflow { .. }) => {
                assert_eq!(position, shape.context_len);
                reached.step_refused = true;
            }
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    // A state of another shape is refused.
    let other_kinds: Vec<AttentionKind> = kinds.iter().copied().chain([AttentionKind::Linear]).collect();
    let other = ModelShape { layers: Layers::from_kinds(&other_kinds), ..shape };
    if let Ok(len) = state_len(&other) {
        if len <= CAP {
            let mut buf = vec![0.0f32; len];
            let mut ws = vec![0.0f32; step_workspace_len(&shape).expect("valid shape")];
            let refused = Decoder::new(view, DecoderState::new(&other, &mut buf).expect("sized"), &mut ws);
            assert!(matches!(refused, Err(Error::InvalidParameter { what: "state", .. })));
        }
    }
    // 2. A valid checkpoint of this shape with (maybe) one byte changed: valid, Malformed, or (a
    //    change that leaves it well-formed) a checksum mismatch.
    let config = ModelConfig {
        d_model: shape.d_model,
        n_layers: kinds.len(),
        n_heads: shape.n_heads,
        d_head: shape.d_head,
        d_mlp: shape.d_mlp,
        context_len: shape.context_len,
        attention: kinds.clone(),
        norm: shape.norm,
        positions: shape.positions,
        tied_unembedding: shape.tied_unembedding,
    };
    let Ok(mut bytes) = (Checkpoint { config, params: params.clone(), optimizer: None }).encode() else {
        return reached;
    };
    let (at, flip) = ((input.byte() as usize) << 8 | input.byte() as usize, input.byte());
    if !bytes.is_empty() {
        let at = at % bytes.len();
        bytes[at] ^= flip;
    }
    match CheckpointView::new(&bytes) {
        Ok(view) => {
            assert!(flip == 0 || view.param_count() == params.len());
            exercise_checkpoint(&view);
            reached.checkpoint = true;
        }
        Err(e) => {
            let rejected = matches!(e, Error::Malformed { .. } | Error::ChecksumMismatch { .. });
            assert!(rejected && flip != 0, "{e:?}");
            reached.checkpoint_rejected = true;
        }
    }
    reached
}

/// Views an accepted checkpoint's parameters (in place when aligned, else copied) and decodes a
/// few tokens with them.
fn exercise_checkpoint(view: &CheckpointView<'_>) {
    if view.scalar_width() != 4 || view.param_count() > CAP {
        return;
    }
    let shape = view.shape();
    let copied: Vec<f32>;
    let params = match view.params::<f32>() {
        Ok(p) => p,
        Err(_) => {
            let mut out = vec![0.0f32; view.param_count()];
            view.copy_params(&mut out).expect("width checked");
            copied = out;
            &copied
        }
    };
    let model = ModelView::new(shape, params).expect("a validated checkpoint is a valid model");
    let (Ok(state_elems), Ok(ws)) = (state_len(&shape), prefill_workspace_len(&shape, 3)) else {
        panic!("a validated checkpoint's shape has sizes");
    };
    let ws = ws.max(step_workspace_len(&shape).expect("valid"));
    if state_elems > CAP || ws > CAP {
        return;
    }
    let (mut state, mut workspace) = (vec![0.0f32; state_elems], vec![0.0f32; ws]);
    let mut decoder =
        Decoder::new(model, DecoderState::new(&shape, &mut state).expect("sized"), &mut workspace)
            .expect("sized");
    let _ = decoder.prefill(b"abc");
    let _ = decoder.step(b'd' as usize);
}
