//! Incremental decoding (docs/math.md section 10): [`Decoder::prefill`] runs a prompt through the
//! parallel kernels and leaves the state of every layer behind; [`Decoder::step`] then adds one
//! token at a time, each costing one position's projections and MLP plus an attention read of
//! the cache (softmax, S-D) or an update of the recurrent sums (linear).
//!
//! For the token `t_i` at position `i` (`i < context`):
//!
//! ```text
//! x = E[t_i] + P[i]
//! for each layer:   a = norm1(x),  v = a W_V
//!   softmax:  q = a W_Q, k = a W_K;  cache k, v;  o_h = sum_{j<=i} p_j v_j,  p = softmax_j(s q_h . k_j)
//!   S-D:      f = [a U | a V | a C] per head, cached with v;  with f_i = [a_i | b_i | c_i] the logit of
//!             key j is  s f_i . [b_j | -a_j | -c_j] = s [-b_i | a_i | -c_i] . f_j   (s = 1/sqrt(2r + q))
//!   linear:   S += phi(k) v^T, z += phi(k);  o_h = phi(q)^T S / (phi(q)^T z + eps)
//!   m = x + o W_O;  x = m + MLP(norm2(m))
//! logits = norm_f(x) W_U        (W_U = E^T when tied)
//! ```
//!
//! These are the logits of the parallel forward at position `i` (the model is causal), up to the
//! order of summation inside the attention read and the tied unembedding (one token's products
//! split their sums over vector lanes, `crate::linalg::vector`): projections, norms and MLP run
//! through the same kernels row by row, so they round identically. Positions are learned absolute (or sinusoidal)
//! with `context` rows: a prompt longer than the context, or a step at position `context`, is an
//! [`Error::ContextOverflow`]; start again with [`Decoder::prefill`] (e.g. on the last part of the
//! text) to continue past it.
//!
//! Buffers: the state ([`super::DecoderState`], [`super::state_len`]) and one workspace of
//! [`workspace_len`] elements (enough for [`Decoder::step`] and for prompts of up to the given
//! length). Nothing allocates.

use super::state::{layer_state_len, DecoderState};
use super::view::{qk_width, BlockParams, ModelShape, ModelView};
use crate::attention::linear::{LinearAttention, State, DEFAULT_EPS};
use crate::attention::multihead::{gather, merge_heads};
use crate::attention::sd::{sd_assemble, Cols};
use crate::attention::softmax::{default_scale, SoftmaxAttention};
use crate::attention::Causality;
use crate::linalg::dense::Update;
use crate::linalg::microkernel::gemm_rows;
use crate::linalg::vector::{combine_rows, dot_rows};
use crate::model::embedding::{embed_forward, VOCAB};
use crate::model::kinds::{AttentionKind, PositionKind};
use crate::model::linear::product_rows;
use crate::model::mlp::{mlp_cache_len, mlp_forward, MlpParams};
use crate::model::norm::{norm_forward, norm_stats_len};
use crate::{Error, Result, Scalar};

/// Splits `len` elements off the front of `rest`.
fn take<'a, T>(rest: &mut &'a mut [T], len: usize) -> &'a mut [T] {
    let (head, tail) = core::mem::take(rest).split_at_mut(len);
    *rest = tail;
    head
}

/// Checked sum of products, for the workspace formulas.
fn sum_of(parts: &[(usize, usize)]) -> Result<usize> {
    let overflow = Error::DimensionOverflow { what: "workspace" };
    parts
        .iter()
        .try_fold(0usize, |acc, &(a, b)| a.checked_mul(b).and_then(|p| acc.checked_add(p)).ok_or(overflow))
}

/// Widest packed projection of a layer of `kind`: `[Q | K]` (`2 h d_head`) or `a [U | V | C]`
/// (`h (2r + q)`).
fn proj_width(shape: &ModelShape<'_>, kind: AttentionKind) -> usize {
    match kind {
        AttentionKind::Sd { .. } => shape.n_heads * qk_width(kind, shape.d_head),
        _ => 2 * shape.n_heads * qk_width(kind, shape.d_head),
    }
}

/// Width per head of the prefill's head-major query and key buffers: the widest query/key width
/// of any layer, and at least `d_head` where a linear layer also gathers one head's values there.
fn key_buffer_width(shape: &ModelShape<'_>) -> usize {
    let dh = shape.d_head;
    max_over_layers(shape, |k| if k.is_linear() { qk_width(k, dh).max(dh) } else { qk_width(k, dh) })
}

/// The largest of a per-layer quantity (0 without layers).
fn max_over_layers(shape: &ModelShape<'_>, f: impl Fn(AttentionKind) -> usize) -> usize {
    shape.layers.iter().map(f).max().unwrap_or(0)
}

/// Workspace elements of [`Decoder::step`]: `x, a, m, y` (`4 d`), `v, o` (`2 h d_head`), the widest
/// projection and one head's S-D query, the logits of a full context (`context`), the MLP's
/// hidden cache (`2 d_mlp`), norm statistics (2) and the output logits (256).
pub fn step_workspace_len(shape: &ModelShape<'_>) -> Result<usize> {
    shape.param_len()?;
    let widest = max_over_layers(shape, |k| proj_width(shape, k) + qk_width(k, shape.d_head));
    sum_of(&[
        (4, shape.d_model),
        (2, shape.d_heads()),
        (1, widest),
        (1, shape.context_len),
        (1, mlp_cache_len(1, shape.d_mlp)),
        (1, norm_stats_len(1)),
        (1, VOCAB),
    ])
}

/// Workspace elements of [`Decoder::prefill`] for a prompt of `n` tokens: per row `x, a, m, y`
/// (`4 n d`), `v`, packed and head-major outputs (`2 n h d_head`... `3`), `lse` (`n h`), the widest
/// projection (`n` times [`step_workspace_len`]'s), head-major queries and keys (`2 n h w`), the
/// widest attention kernel's workspace, the MLP cache (`2 n d_mlp`), norm statistics (`2 n`) and
/// the logits (256).
pub fn prefill_workspace_len(shape: &ModelShape<'_>, n: usize) -> Result<usize> {
    shape.param_len()?;
    let (h, dh) = (shape.n_heads, shape.d_head);
    let w = key_buffer_width(shape);
    let proj = max_over_layers(shape, |k| proj_width(shape, k));
    let kernel = max_over_layers(shape, |k| match k {
        AttentionKind::Linear | AttentionKind::LinearQk { .. } => {
            // With all heads, as the prefill calls it (with `parallel` each head's task needs its own).
            LinearAttention::<T0>::new(qk_width(k, dh), dh, Causality::Causal)
                .with_heads(h)
                .forward_workspace_len(n)
        }
        _ => SoftmaxAttention::<T0>::new(qk_width(k, dh), dh, Causality::Causal).forward_workspace_len(n),
    });
    let hw = shape.d_heads();
    sum_of(&[
        (4 * n, shape.d_model),
        (3 * n, hw),
        (n, h),
        (n, proj),
        (2 * n, h.checked_mul(w).ok_or(Error::DimensionOverflow { what: "workspace" })?),
        (1, kernel),
        (1, mlp_cache_len(n, shape.d_mlp)),
        (1, norm_stats_len(n)),
        (1, VOCAB),
    ])
}

/// The workspace type-independent formulas are evaluated with (the lengths do not depend on `T`).
type T0 = f64;

/// Workspace elements for [`Decoder::step`] and for prompts of up to `max_prompt` tokens: the
/// larger of [`step_workspace_len`] and [`prefill_workspace_len`].
pub fn workspace_len(shape: &ModelShape<'_>, max_prompt: usize) -> Result<usize> {
    Ok(step_workspace_len(shape)?.max(prefill_workspace_len(shape, max_prompt)?))
}

/// Row `p` of the sinusoidal table (`P[p, 2k] = sin(p w_k)`, `P[p, 2k+1] = cos(p w_k)`,
/// `w_k = 10000^(-2k/d)`, computed in f64 and rounded, exactly as `model::embedding` does) added
/// to `x`.
fn add_sinusoid<T: Scalar>(p: usize, x: &mut [T]) {
    let d = x.len();
    for (j, v) in x.iter_mut().enumerate() {
        let k2 = (j - j % 2) as f64;
        let angle = p as f64 * libm::pow(10_000.0, -k2 / d as f64);
        *v += T::of_f64(if j % 2 == 0 { libm::sin(angle) } else { libm::cos(angle) });
    }
}

/// An incremental decoder: a model, its state and a workspace, all borrowed.
///
/// ```
/// use sd_attention::inference::{state_len, workspace_len, Decoder, DecoderState, Layers, ModelShape, ModelView};
/// use sd_attention::model::kinds::{AttentionKind, PositionKind};
/// use sd_attention::model::norm::NormKind;
/// let kinds = [AttentionKind::Sd { routing_rank: 2, filtering_rank: 1 }, AttentionKind::Linear];
/// let shape = ModelShape {
///     d_model: 8, n_heads: 2, d_head: 4, d_mlp: 16, context_len: 16,
///     norm: NormKind::Rms, positions: PositionKind::Learned, tied_unembedding: true,
///     layers: Layers::from_kinds(&kinds),
/// };
/// let params: Vec<f64> = (0..shape.param_len()?).map(|i| (i as f64 * 0.37).sin() * 0.1).collect();
/// let view = ModelView::new(shape, &params)?;
/// let mut state = vec![0.0; state_len(&shape)?];
/// let mut workspace = vec![0.0; workspace_len(&shape, 8)?];
/// let mut decoder = Decoder::new(view, DecoderState::new(&shape, &mut state)?, &mut workspace)?;
/// let first = decoder.prefill(b"To be")?.to_vec(); // logits after "To be" (256)
/// let next = decoder.step(b',' as usize)?;          // logits after "To be,"
/// assert_eq!((first.len(), next.len(), decoder.position()), (256, 256, 6));
/// # Ok::<(), sd_attention::Error>(())
/// ```
#[derive(Debug)]
pub struct Decoder<'m, 'b, T> {
    view: ModelView<'m, T>,
    state: DecoderState<'b, T>,
    workspace: &'b mut [T],
}

impl<'m, 'b, T: Scalar> Decoder<'m, 'b, T> {
    /// A decoder of `view` continuing from `state`. Errors if the state was made for another shape
    /// ([`ModelShape::fingerprint`]) or the workspace is shorter than [`step_workspace_len`].
    pub fn new(view: ModelView<'m, T>, state: DecoderState<'b, T>, workspace: &'b mut [T]) -> Result<Self> {
        if state.fingerprint != view.shape().fingerprint() {
            return Err(Error::InvalidParameter { what: "state", expected: "made for this model's shape" });
        }
        crate::error::check_workspace(workspace.len(), step_workspace_len(view.shape())?)?;
        Ok(Decoder { view, state, workspace })
    }

    /// The model.
    pub fn view(&self) -> &ModelView<'m, T> {
        &self.view
    }

    /// The state.
    pub fn state(&self) -> &DecoderState<'b, T> {
        &self.state
    }

    /// The state, given back (e.g. to keep it while the workspace is reused).
    pub fn into_state(self) -> DecoderState<'b, T> {
        self.state
    }

    /// Tokens held: the position the next [`Self::step`] takes.
    pub fn position(&self) -> usize {
        self.state.position
    }

    /// Forgets every token.
    pub fn reset(&mut self) {
        self.state.reset();
    }

    /// Starts a new sequence with `tokens` (the state is overwritten), run through the parallel
    /// kernels, and returns the logits (256) of the next token after the last one; the state then
    /// holds `tokens.len()` positions. Errors: no tokens ([`Error::Empty`]), more tokens than the
    /// context ([`Error::ContextOverflow`]), a workspace shorter than
    /// [`prefill_workspace_len`]`(tokens.len())`. On error the state is unchanged.
    pub fn prefill(&mut self, tokens: &[u8]) -> Result<&[T]> {
        self.run_prefill(tokens, None)?;
        let len = self.workspace.len();
        Ok(&self.workspace[len - VOCAB..])
    }

    /// [`Self::prefill`], writing the logits after every prefix into `logits` (`tokens.len() x 256`,
    /// row `i` predicts token `i + 1`).
    pub fn prefill_all(&mut self, tokens: &[u8], logits: &mut [T]) -> Result<()> {
        crate::error::check_matrix("logits", logits.len(), tokens.len(), VOCAB)?;
        self.run_prefill(tokens, Some(logits))
    }

    /// Adds `token` (a byte value, `< 256`) at the next position and returns the logits (256) of the
    /// token after it. Errors (state unchanged): a token out of range
    /// ([`Error::TokenOutOfRange`]), a full context ([`Error::ContextOverflow`]).
    pub fn step(&mut self, token: usize) -> Result<&[T]> {
        if token >= VOCAB {
            return Err(Error::TokenOutOfRange { token, vocab: VOCAB });
        }
        let shape = *self.view.shape();
        let pos = self.state.position;
        if pos >= shape.context_len {
            return Err(Error::ContextOverflow { context: shape.context_len, tokens: pos + 1 });
        }
        let (d, h, dh, hw, c) =
            (shape.d_model, shape.n_heads, shape.d_head, shape.d_heads(), shape.context_len);
        let mut rest: &mut [T] = &mut *self.workspace;
        let x = take(&mut rest, d);
        let a = take(&mut rest, d);
        let m = take(&mut rest, d);
        let y = take(&mut rest, d);
        let v = take(&mut rest, hw);
        let o = take(&mut rest, hw);
        let scores = take(&mut rest, c);
        let mlp_cache = take(&mut rest, mlp_cache_len(1, shape.d_mlp));
        let stats = take(&mut rest, norm_stats_len(1));
        let len = rest.len();
        let (proj, logits) = rest.split_at_mut(len - VOCAB);
        let learned = shape.positions == PositionKind::Learned;
        let positions = learned.then(|| &self.view.positions()[pos * d..(pos + 1) * d]);
        embed_forward(d, &[token as u8], self.view.embedding(), positions, x)?;
        if !learned {
            add_sinusoid(pos, x);
        }
        let mut state_rest: &mut [T] = &mut *self.state.buf;
        for block in self.view.blocks() {
            let cache = take(&mut state_rest, layer_state_len(&shape, block.kind));
            norm_forward(shape.norm, 1, d, block.norm1, x, a, stats)?;
            // The layer's weights are read in the order they lie in memory (`theta`, then `W_V`,
            // `W_O`, the MLP): one token's products stream them, and a forward stream is what the
            // processor's prefetcher follows.
            match block.kind {
                kind @ (AttentionKind::Linear | AttentionKind::LinearQk { .. }) => {
                    // Queries and keys are `w = qk_width` wide per head (`d_head` for the plain
                    // linear kind); values and outputs `d_head`.
                    let w = qk_width(kind, dh);
                    let hq = h * w;
                    let (q, rest) = proj.split_at_mut(hq);
                    let k = &mut rest[..hq];
                    let (w_q, w_k) = block.theta.split_at(d * hq);
                    product_rows(1, d, hq, a, w_q, q, Update::Overwrite);
                    product_rows(1, d, hq, a, w_k, k, Update::Overwrite);
                    product_rows(1, d, hw, a, block.w_v, v, Update::Overwrite);
                    let eps = T::of_f64(DEFAULT_EPS);
                    for (t, sz) in cache.chunks_exact_mut(w * (dh + 1)).enumerate() {
                        let (s, z) = sz.split_at_mut(w * dh);
                        let keys = t * w..(t + 1) * w;
                        let heads = t * dh..(t + 1) * dh;
                        State::resume(w, dh, s, z)?.step(
                            &q[keys.clone()],
                            &k[keys],
                            &v[heads.clone()],
                            eps,
                            &mut o[heads],
                        )?;
                    }
                }
                kind => {
                    let w = qk_width(kind, dh);
                    let (keys, values) = cache.split_at_mut(h * w * c);
                    let (query, rest) = proj.split_at_mut(w);
                    project_step(&shape, &block, a, &mut rest[..proj_width(&shape, kind)], keys, pos);
                    product_rows(1, d, hw, a, block.w_v, v, Update::Overwrite);
                    let scale: T = default_scale(w);
                    for t in 0..h {
                        let value_cache = &mut values[t * c * dh..(t + 1) * c * dh];
                        value_cache[pos * dh..(pos + 1) * dh].copy_from_slice(&v[t * dh..(t + 1) * dh]);
                        if let AttentionKind::Softmax = kind {
                            query.copy_from_slice(&rest[t * w..(t + 1) * w]);
                        } else {
                            sd_query(&shape, kind, &rest[..proj_width(&shape, kind)], t, query);
                        }
                        let s = &mut scores[..pos + 1];
                        let keys_t = &keys[t * w * c..(t + 1) * w * c];
                        gemm_rows(1, w, pos + 1, scale, query, w, keys_t, c, s, pos + 1, false);
                        let max = s.iter().fold(T::neg_infinity(), |m, &x| if x > m { x } else { m });
                        let total = T::exp_shifted_sum(s, max);
                        let out = &mut o[t * dh..(t + 1) * dh];
                        combine_rows(pos + 1, dh, T::one() / total, s, value_cache, dh, out);
                    }
                }
            }
            finish_block(&shape, &block, x, a, m, y, o, mlp_cache, stats)?;
        }
        let (norm_f, unembedding) = self.view.head();
        norm_forward(shape.norm, 1, d, norm_f, x, a, stats)?;
        unembed(&shape, self.view.embedding(), unembedding, a, logits);
        self.state.position = pos + 1;
        Ok(logits)
    }

    fn run_prefill(&mut self, tokens: &[u8], mut all_logits: Option<&mut [T]>) -> Result<()> {
        let shape = *self.view.shape();
        let n = tokens.len();
        if n == 0 {
            return Err(Error::Empty { what: "tokens" });
        }
        if n > shape.context_len {
            return Err(Error::ContextOverflow { context: shape.context_len, tokens: n });
        }
        crate::error::check_workspace(self.workspace.len(), prefill_workspace_len(&shape, n)?)?;
        let (d, h, dh, hw, c) =
            (shape.d_model, shape.n_heads, shape.d_head, shape.d_heads(), shape.context_len);
        let w_max = key_buffer_width(&shape);
        let mut rest: &mut [T] = &mut *self.workspace;
        let x = take(&mut rest, n * d);
        let a = take(&mut rest, n * d);
        let m = take(&mut rest, n * d);
        let y = take(&mut rest, n * d);
        let v = take(&mut rest, n * hw);
        let o = take(&mut rest, n * hw);
        let heads_out = take(&mut rest, n * hw);
        let lse = take(&mut rest, n * h);
        let proj = take(&mut rest, n * max_over_layers(&shape, |k| proj_width(&shape, k)));
        let qh = take(&mut rest, n * h * w_max);
        let kh = take(&mut rest, n * h * w_max);
        let mlp_cache = take(&mut rest, mlp_cache_len(n, shape.d_mlp));
        let stats = take(&mut rest, norm_stats_len(n));
        let len = rest.len();
        let (kernel_ws, logits) = rest.split_at_mut(len - VOCAB);

        let learned = shape.positions == PositionKind::Learned;
        let positions = learned.then(|| &self.view.positions()[..n * d]);
        embed_forward(d, tokens, self.view.embedding(), positions, x)?;
        if !learned {
            for (p, row) in x.chunks_exact_mut(d).enumerate() {
                add_sinusoid(p, row);
            }
        }
        self.state.buf.fill(T::zero());
        self.state.position = 0;
        let mut state_rest: &mut [T] = &mut *self.state.buf;
        for block in self.view.blocks() {
            let cache = take(&mut state_rest, layer_state_len(&shape, block.kind));
            norm_forward(shape.norm, n, d, block.norm1, x, a, stats)?;
            product_rows(n, d, hw, a, block.w_v, v, Update::Overwrite);
            match block.kind {
                kind @ (AttentionKind::Linear | AttentionKind::LinearQk { .. }) => {
                    let w = qk_width(kind, dh);
                    let hq = h * w;
                    let (q, rest) = proj.split_at_mut(n * hq);
                    let k = &mut rest[..n * hq];
                    let (w_q, w_k) = block.theta.split_at(d * hq);
                    product_rows(n, d, hq, a, w_q, q, Update::Overwrite);
                    product_rows(n, d, hq, a, w_k, k, Update::Overwrite);
                    let attention = LinearAttention::new(w, dh, Causality::Causal).with_heads(h);
                    attention.forward(n, q, k, v, o, kernel_ws)?;
                    for (t, sz) in cache.chunks_exact_mut(w * (dh + 1)).enumerate() {
                        let (s, z) = sz.split_at_mut(w * dh);
                        let (k_t, v_t) = (&mut qh[..n * w], &mut kh[..n * dh]);
                        gather(n, hq, t * w, w, k, k_t);
                        gather(n, hw, t * dh, dh, v, v_t);
                        State::new(w, dh, s, z)?.absorb(n, k_t, v_t)?;
                    }
                }
                kind => {
                    let w = qk_width(kind, dh);
                    let (keys, values) = cache.split_at_mut(h * w * c);
                    let (qh, kh) = (&mut qh[..n * h * w], &mut kh[..n * h * w]);
                    project_prefill(&shape, &block, n, a, proj, qh, kh);
                    let attention =
                        SoftmaxAttention::new(w, dh, Causality::Causal).with_scale(default_scale(w));
                    for t in 0..h {
                        let head = t * n * w..(t + 1) * n * w;
                        // Keys cached transposed: the softmax kind's keys, S-D's features (its queries).
                        let cached = if kind == AttentionKind::Softmax {
                            &kh[head.clone()]
                        } else {
                            &qh[head.clone()]
                        };
                        let keys_t = &mut keys[t * w * c..(t + 1) * w * c];
                        for (j, row) in cached.chunks_exact(w).enumerate() {
                            for (p, &value) in row.iter().enumerate() {
                                keys_t[p * c + j] = value;
                            }
                        }
                        let value_cache = &mut values[t * c * dh..t * c * dh + n * dh];
                        gather(n, hw, t * dh, dh, v, value_cache);
                        attention.forward(
                            n,
                            &qh[head.clone()],
                            &kh[head],
                            value_cache,
                            None,
                            &mut heads_out[t * n * dh..(t + 1) * n * dh],
                            &mut lse[t * n..(t + 1) * n],
                            kernel_ws,
                        )?;
                    }
                    merge_heads(n, h, dh, heads_out, o);
                }
            }
            finish_block(&shape, &block, x, a, m, y, o, mlp_cache, stats)?;
        }
        let (norm_f, unembedding) = self.view.head();
        let rows = if all_logits.is_some() { 0..n } else { n - 1..n };
        for i in rows {
            let f = &mut a[..d];
            norm_forward(shape.norm, 1, d, norm_f, &x[i * d..(i + 1) * d], f, &mut stats[..2])?;
            unembed(&shape, self.view.embedding(), unembedding, f, logits);
            if let Some(all) = all_logits.as_deref_mut() {
                all[i * VOCAB..(i + 1) * VOCAB].copy_from_slice(logits);
            }
        }
        self.state.position = n;
        Ok(())
    }
}

/// Projections of one token for a softmax or S-D layer: softmax `[q | k]` into `proj`, the key of
/// each head written into column `pos` of its transposed key cache; S-D `[a U | a V | a C]` into
/// `proj`, each head's features `[a_t | b_t | c_t]` into column `pos` of its feature cache.
fn project_step<T: Scalar>(
    shape: &ModelShape<'_>,
    block: &BlockParams<'_, T>,
    a: &[T],
    proj: &mut [T],
    keys: &mut [T],
    pos: usize,
) {
    let (d, h, dh, c) = (shape.d_model, shape.n_heads, shape.d_head, shape.context_len);
    let w = qk_width(block.kind, dh);
    match block.kind {
        AttentionKind::Sd { routing_rank: r, filtering_rank: q } => {
            sd_projections(shape, block, 1, a, proj, r, q);
            for t in 0..h {
                // The features are the head's query row of the assembly: [a_t | b_t | c_t].
                let column = &mut keys[t * w * c..(t + 1) * w * c];
                let parts = [(t * r, r), (h * r + t * r, r), (2 * h * r + t * q, q)];
                let mut p = 0;
                for (start, len) in parts {
                    for &value in &proj[start..start + len] {
                        column[p * c + pos] = value;
                        p += 1;
                    }
                }
                debug_assert_eq!(p, w);
            }
        }
        _ => {
            let hw = shape.d_heads();
            let (w_q, w_k) = block.theta.split_at(d * hw);
            let (q, k) = proj.split_at_mut(hw);
            product_rows(1, d, hw, a, w_q, q, Update::Overwrite);
            product_rows(1, d, hw, a, w_k, &mut k[..hw], Update::Overwrite);
            for t in 0..h {
                let column = &mut keys[t * w * c..(t + 1) * w * c];
                for (p, &value) in k[t * dh..(t + 1) * dh].iter().enumerate() {
                    column[p * c + pos] = value;
                }
            }
        }
    }
}

/// The S-D query of head `t` against cached features: `[-b_t | a_t | -c_t]` from the packed
/// projection row `[a U | a V | a C]`, so that `query . f_j = a_t . b_j - b_t . a_j - c_t . c_j`,
/// the logit of the assembled query `[a_t | b_t | c_t]` against the key `[b_j | -a_j | -c_j]`.
fn sd_query<T: Scalar>(shape: &ModelShape<'_>, kind: AttentionKind, proj: &[T], t: usize, query: &mut [T]) {
    let AttentionKind::Sd { routing_rank: r, filtering_rank: q } = kind else {
        return;
    };
    let h = shape.n_heads;
    let (a_t, b_t, c_t) = (
        &proj[t * r..(t + 1) * r],
        &proj[h * r + t * r..h * r + (t + 1) * r],
        &proj[2 * h * r + t * q..][..q],
    );
    let (qb, rest) = query.split_at_mut(r);
    let (qa, qc) = rest.split_at_mut(r);
    for (o, &v) in qb.iter_mut().zip(b_t) {
        *o = -v;
    }
    qa.copy_from_slice(a_t);
    for (o, &v) in qc.iter_mut().zip(c_t) {
        *o = -v;
    }
}

/// `proj = a [U | V | C]` (`n x h (2r + q)`, the three blocks side by side), as three products into
/// column ranges: the same sums in the same order as the model's one wide product.
fn sd_projections<T: Scalar>(
    shape: &ModelShape<'_>,
    block: &BlockParams<'_, T>,
    n: usize,
    a: &[T],
    proj: &mut [T],
    r: usize,
    q: usize,
) {
    let (d, h) = (shape.d_model, shape.n_heads);
    let wide = h * (2 * r + q);
    let (u, rest) = block.theta.split_at(d * h * r);
    let (v, c) = rest.split_at(d * h * r);
    for (weights, cols, offset) in [(u, h * r, 0), (v, h * r, h * r), (c, h * q, 2 * h * r)] {
        if cols > 0 {
            gemm_rows(n, d, cols, T::one(), a, d, weights, cols, &mut proj[offset..], wide, false);
        }
    }
}

/// Projections of a prompt for a softmax or S-D layer into head-major queries `qh` and keys `kh`
/// (`h` blocks of `n x w`), as the model's attention sub-layer computes them.
fn project_prefill<T: Scalar>(
    shape: &ModelShape<'_>,
    block: &BlockParams<'_, T>,
    n: usize,
    a: &[T],
    proj: &mut [T],
    qh: &mut [T],
    kh: &mut [T],
) {
    let (d, h, dh) = (shape.d_model, shape.n_heads, shape.d_head);
    let w = qk_width(block.kind, dh);
    match block.kind {
        AttentionKind::Sd { routing_rank: r, filtering_rank: q } => {
            let wide = h * w;
            sd_projections(shape, block, n, a, proj, r, q);
            for t in 0..h {
                let (pa, pb, pc) =
                    (Cols::of(wide, t * r), Cols::of(wide, h * r + t * r), Cols::of(wide, 2 * h * r + t * q));
                let head = t * n * w..(t + 1) * n * w;
                sd_assemble(
                    n,
                    r,
                    q,
                    (&*proj, pa),
                    (&*proj, pb),
                    (&*proj, pc),
                    &mut qh[head.clone()],
                    &mut kh[head],
                );
            }
        }
        _ => {
            let hw = shape.d_heads();
            let packed = &mut proj[..n * hw];
            for (block_index, out) in [(0, qh), (1, kh)] {
                let weights = &block.theta[block_index * d * hw..(block_index + 1) * d * hw];
                product_rows(n, d, hw, a, weights, packed, Update::Overwrite);
                for t in 0..h {
                    gather(n, hw, t * w, w, packed, &mut out[t * n * w..(t + 1) * n * w]);
                }
            }
        }
    }
}

/// The rest of a block after the attention mix `o`: `m = x + o W_O`, `x = m + MLP(norm2(m))`
/// (over `x.len() / d` rows; `a`, `y`, the MLP cache and `stats` are scratch).
#[allow(clippy::too_many_arguments)]
fn finish_block<T: Scalar>(
    shape: &ModelShape<'_>,
    block: &BlockParams<'_, T>,
    x: &mut [T],
    a: &mut [T],
    m: &mut [T],
    y: &mut [T],
    o: &[T],
    mlp_cache: &mut [T],
    stats: &mut [T],
) -> Result<()> {
    let (d, hw) = (shape.d_model, shape.d_heads());
    let n = x.len() / d;
    m.copy_from_slice(x);
    product_rows(n, hw, d, o, block.w_o, m, Update::Accumulate);
    norm_forward(shape.norm, n, d, block.norm2, m, a, stats)?;
    let mlp = MlpParams { w_1: block.w_1, b_1: block.b_1, w_2: block.w_2, b_2: block.b_2 };
    mlp_forward(n, d, shape.d_mlp, mlp, a, y, mlp_cache)?;
    for ((xo, &mi), &yi) in x.iter_mut().zip(m.iter()).zip(y.iter()) {
        *xo = mi + yi;
    }
    Ok(())
}

/// `logits = f W_U` for one row: `W_U = E^T` (tied: each logit the dot product `E[v] . f`, its sum
/// split over vector lanes) or the untied `d x 256` matrix.
fn unembed<T: Scalar>(shape: &ModelShape<'_>, embedding: &[T], unembedding: &[T], f: &[T], logits: &mut [T]) {
    let d = shape.d_model;
    if shape.tied_unembedding {
        dot_rows(VOCAB, d, T::one(), embedding, d, f, logits);
    } else {
        product_rows(1, d, VOCAB, f, unembedding, logits, Update::Overwrite);
    }
}
