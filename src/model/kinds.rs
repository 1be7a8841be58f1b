//! The kinds a model is built from, per layer and per model: the attention kernel of a layer and
//! how positions are encoded. No allocation: the inference path (which runs without an allocator)
//! reads them too; `model::config::ModelConfig` (with `alloc`) holds one kind per layer.

/// The attention kernel of one layer (all heads of a layer share the kind).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionKind {
    /// Softmax attention with per-head `W_Q, W_K` (`d_model x d_head` each; `docs/math.md` section 4).
    Softmax,
    /// S-D attention (`docs/math.md` section 5): per head, routing `S = U V^T - V U^T` with `U, V`
    /// `d_model x routing_rank`, filtering `D = -C C^T` with `C` `d_model x filtering_rank`.
    Sd {
        /// `r`: rank(S) <= 2 r.
        routing_rank: usize,
        /// `q`: rank(D) <= q.
        filtering_rank: usize,
    },
    /// ELU+1 linear attention with per-head `W_Q, W_K` (`d_model x d_head` each; `docs/math.md` section 6).
    Linear,
    /// ELU+1 linear attention whose per-head `W_Q, W_K` are `d_model x qk_width` (values stay
    /// `d_head` wide): [`AttentionKind::Linear`] is the case `qk_width = d_head`. An S-D head
    /// linearizes into this kind with its own query/key maps `[U | V | C]` and `[V | -U | -C]`, of
    /// width `qk_width = 2r + q` (`docs/math.md` section 5).
    LinearQk {
        /// Width of one head's queries and keys (at least 1).
        qk_width: usize,
    },
}

impl AttentionKind {
    /// Parameters of the kernel `theta` of one head: `2 d_model d_head` (softmax, linear),
    /// `2 d_model qk_width` (linear with its own query/key width) or `d_model (2 r + q)` (S-D).
    /// `None` on overflow.
    pub fn params_per_head(self, d_model: usize, d_head: usize) -> Option<usize> {
        match self {
            AttentionKind::Softmax | AttentionKind::Linear => d_model.checked_mul(d_head)?.checked_mul(2),
            AttentionKind::LinearQk { qk_width } => d_model.checked_mul(qk_width)?.checked_mul(2),
            AttentionKind::Sd { routing_rank, filtering_rank } => {
                d_model.checked_mul(routing_rank.checked_mul(2)?.checked_add(filtering_rank)?)
            }
        }
    }

    /// Whether the heads are ELU+1 linear attention ([`Self::Linear`] or [`Self::LinearQk`]).
    pub fn is_linear(self) -> bool {
        matches!(self, AttentionKind::Linear | AttentionKind::LinearQk { .. })
    }
}

/// How positions enter the residual stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PositionKind {
    /// A learned `context_len x d_model` table added to the embeddings.
    Learned,
    /// The fixed sinusoidal table (no parameters).
    Sinusoidal,
}
