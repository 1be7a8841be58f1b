//! The byte-level transformer language model: assembly of the pieces of [`super`] into pre-norm
//! blocks, forward pass to the mean cross-entropy, and the hand-written backward pass into one flat
//! gradient buffer.
//!
//! For tokens `t_1..t_n` (one sequence; a batch is `batch` sequences of `seq` tokens):
//!
//! ```text
//! x_0 = E[t] + P                                         (embedding, positions)
//! for l in 0..L:
//!     a   = norm1_l(x_l)
//!     m_l = x_l + mix_l(a, a W_V) W_O                    (attention sub-layer, `docs/math.md` sections 4-6)
//!     x_{l+1} = m_l + MLP_l(norm2_l(m_l))
//! logits = norm_f(x_L) W_U          (W_U = E^T when tied)
//! loss = mean_i CE(logits_i, t_{i+1})
//! ```
//!
//! The attention kernels `mix_l` are [`AttentionSublayer`] objects (one per layer):
//! [`Model::with_attention`] plugs in the crate's ([`super::attention::AttentionMixer`]), and
//! [`Model::new`] takes any; everything else is here. Parameters and gradients are single flat slices laid out by
//! [`ParamLayout`]; activations live in an [`Activations`] value sized once per `(batch, seq)` and
//! reused across steps.

use super::config::{ModelConfig, ParamCounts, PositionKind};
use super::embedding::{embed_backward, embed_forward, sinusoidal_positions, VOCAB};
use super::layout::ParamLayout;
use super::linear::{linear_backward, linear_forward, product_rows, product_tn};
#[cfg(not(feature = "parallel"))]
use super::loss::cross_entropy;
use super::mlp::{mlp_backward, mlp_cache_len, mlp_forward, mlp_workspace_len, MlpGrads, MlpParams};
use super::norm::{norm_backward, norm_forward, norm_stats_len, NormKind};
use super::sublayer::{AttentionSublayer, SublayerDims};
use crate::error::check_len;
use crate::linalg::dense::Update;
use crate::linalg::kernel;
use crate::rng::SplitMix64;
use crate::workspace::Req;
use crate::{Error, Result, Scalar};
use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;

/// Standard deviation of the normal initialization of embeddings and weight matrices.
pub const INIT_STD: f64 = 0.02;

/// A model: its config, parameter layout and attention sub-layers. It holds no parameters: those
/// are a flat slice of [`ParamLayout::total`] elements owned by the caller (trainer, checkpoint).
pub struct Model<T: Scalar> {
    config: ModelConfig,
    layout: ParamLayout,
    counts: ParamCounts,
    sublayers: Vec<Box<dyn AttentionSublayer<T>>>,
    sinusoid: Vec<T>,
}

impl<T: Scalar> core::fmt::Debug for Model<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Model").field("config", &self.config).finish_non_exhaustive()
    }
}

/// Everything the forward pass keeps for the backward pass, and the backward pass's scratch, for a
/// batch of `batch` sequences of `seq` tokens (`rows = batch seq`). Made by [`Model::activations`].
#[derive(Clone, Debug)]
pub struct Activations<T> {
    batch: usize,
    seq: usize,
    tokens: Vec<u8>,
    /// Residual stream `x_0..x_L`, each `rows x d_model`.
    resid: Vec<T>,
    /// After attention `m_l`.
    mid: Vec<T>,
    /// Attention input `a_l = norm1(x_l)` (empty without norm: `a_l` is `x_l`, read from `resid`).
    attn_in: Vec<T>,
    /// MLP input `norm2(m_l)` (empty without norm: read from `mid`).
    mlp_in: Vec<T>,
    stats1: Vec<T>,
    stats2: Vec<T>,
    /// Values `a W_V` and mixed outputs, `rows x n_heads d_head` per layer.
    values: Vec<T>,
    mixed: Vec<T>,
    mixer_cache: Vec<Vec<T>>,
    mlp_cache: Vec<T>,
    final_out: Vec<T>,
    final_stats: Vec<T>,
    logits: Vec<T>,
    d_logits: Vec<T>,
    /// Each row's loss term, summed in row order (`parallel` only).
    #[cfg(feature = "parallel")]
    row_loss: Vec<T>,
    // Scratch.
    row_tmp: Vec<T>,
    d_resid: Vec<T>,
    d_tmp: Vec<T>,
    d_heads: Vec<T>,
    d_values: Vec<T>,
    /// A transposed weight (`W_O^T`, `W_V^T` or `E^T`) for the unpacked products.
    weight_t: Vec<T>,
    mlp_workspace: Vec<T>,
    mixer_workspace: Vec<T>,
}

impl<T> Activations<T> {
    /// Logits of the last forward pass, `batch seq x 256`.
    pub fn logits(&self) -> &[T] {
        &self.logits
    }
    /// Sequences per batch.
    pub fn batch(&self) -> usize {
        self.batch
    }
    /// Tokens per sequence.
    pub fn seq(&self) -> usize {
        self.seq
    }
}

impl<T: Scalar> Model<T> {
    /// A model of `config` with one attention sub-layer per layer. Each sub-layer must have the
    /// dimensions of the config ([`SublayerDims`]) and exactly
    /// [`ModelConfig::attention_kernel_len`] parameters.
    pub fn new(config: ModelConfig, sublayers: Vec<Box<dyn AttentionSublayer<T>>>) -> Result<Self> {
        let layout = ParamLayout::new(&config)?;
        let counts = config.param_counts()?;
        check_len("sublayers", sublayers.len(), config.n_layers)?;
        let dims = SublayerDims { d_model: config.d_model, n_heads: config.n_heads, d_head: config.d_head };
        for (l, s) in sublayers.iter().enumerate() {
            if s.dims() != dims {
                return Err(Error::InvalidParameter {
                    what: "sublayers",
                    expected: "the config's d_model, n_heads, d_head",
                });
            }
            check_len("sublayer param_len", s.param_len(), config.attention_kernel_len(l)?)?;
        }
        let mut sinusoid = Vec::new();
        if config.positions == PositionKind::Sinusoidal {
            let len = config
                .context_len
                .checked_mul(config.d_model)
                .ok_or(Error::DimensionOverflow { what: "positions" })?;
            sinusoid = vec![T::zero(); len];
            sinusoidal_positions(config.context_len, config.d_model, &mut sinusoid)?;
        }
        Ok(Model { config, layout, counts, sublayers, sinusoid })
    }

    /// A model of `config` with the crate's attention kernels
    /// ([`super::attention::AttentionMixer`], one per layer, of the layer's kind).
    ///
    /// ```
    /// use sd_attention::model::config::{AttentionKind, ModelConfig, PositionKind};
    /// use sd_attention::model::norm::NormKind;
    /// use sd_attention::model::transformer::Model;
    /// let sd = AttentionKind::Sd { routing_rank: 2, filtering_rank: 1 };
    /// let config = ModelConfig::uniform(16, 2, 2, 8, 32, 8, sd, NormKind::None, PositionKind::Learned, true);
    /// let model = Model::<f64>::with_attention(config)?;
    /// let mut params = vec![0.0; model.param_len()];
    /// model.init_params(1, &mut params)?;
    /// let mut state = model.activations(1, 8)?;
    /// let loss = model.forward(&params, b"To be, o", b"o be, or", &mut state)?;
    /// assert!((loss - 256f64.ln()).abs() < 0.01); // small initial logits: close to uniform
    /// let mut grads = vec![0.0; model.param_len()];
    /// model.backward(&params, &mut state, &mut grads)?;
    /// # Ok::<(), sd_attention::Error>(())
    /// ```
    pub fn with_attention(config: ModelConfig) -> Result<Self> {
        let sublayers = super::attention::mixers(&config)?;
        Self::new(config, sublayers)
    }

    /// The config.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Where each tensor lives in the flat parameter buffer.
    pub fn layout(&self) -> &ParamLayout {
        &self.layout
    }

    /// Parameter count per part.
    pub fn param_counts(&self) -> ParamCounts {
        self.counts
    }

    /// Length of the flat parameter (and gradient) buffer.
    pub fn param_len(&self) -> usize {
        self.layout.total
    }

    /// Initializes `params` deterministically from `seed` (SplitMix64, tensors in buffer order):
    /// embeddings, positions, `W_V`, `W_1` and an untied unembedding `N(0, 0.02^2)`; the residual
    /// outputs `W_O`, `W_2` `N(0, (0.02 / sqrt(2 L))^2)`; norm gains 1 and biases 0; MLP biases 0;
    /// attention kernels by their sub-layer's `init_params`.
    pub fn init_params(&self, seed: u64, params: &mut [T]) -> Result<()> {
        check_len("params", params.len(), self.layout.total)?;
        let mut rng = SplitMix64::new(seed);
        let std = T::of_f64(INIT_STD);
        let residual_std = T::of_f64(INIT_STD / libm::sqrt(2.0 * self.config.n_layers.max(1) as f64));
        let d = self.config.d_model;
        for t in &self.layout.tensors {
            let p = &mut params[t.range.clone()];
            match t.name {
                "embedding" | "positions" | "w_v" | "w_1" | "unembedding" => rng.fill_normal(std, p),
                "w_o" | "w_2" => rng.fill_normal(residual_std, p),
                "norm1" | "norm2" | "final_norm" => {
                    p.fill(T::zero());
                    let gain = d.min(p.len());
                    p[..gain].fill(T::one());
                }
                "attention" => self.sublayers[t.layer.unwrap_or(0)].init_params(&mut rng, p),
                _ => p.fill(T::zero()),
            }
        }
        Ok(())
    }

    /// Buffers for batches of `batch` sequences of `seq` tokens (`1 <= seq <= context_len`).
    pub fn activations(&self, batch: usize, seq: usize) -> Result<Activations<T>> {
        if seq == 0 || seq > self.config.context_len {
            return Err(Error::InvalidParameter { what: "seq", expected: "1 <= seq <= context_len" });
        }
        if batch == 0 {
            return Err(Error::InvalidParameter { what: "batch", expected: "at least 1" });
        }
        let c = &self.config;
        let overflow = Error::DimensionOverflow { what: "activations" };
        let rows = batch.checked_mul(seq).ok_or(overflow)?;
        let l = c.n_layers;
        let size = |a: usize, b: usize, k: usize| Req::array(a, b).times(k).len("activations");
        let rd = size(rows, c.d_model, 1)?;
        let rh = size(rows, c.d_heads(), 1)?;
        let zeros = |len: usize| vec![T::zero(); len];
        let mut mixer_cache = Vec::with_capacity(l);
        let mut mixer_ws = 0;
        for s in &self.sublayers {
            mixer_cache.push(zeros(size(s.cache_len(seq), batch, 1)?));
            mixer_ws = mixer_ws.max(s.batch_workspace_len(batch, seq));
        }
        Ok(Activations {
            batch,
            seq,
            tokens: vec![0; rows],
            resid: zeros(size(rd, l + 1, 1)?),
            mid: zeros(size(rd, l, 1)?),
            attn_in: zeros(if c.norm == NormKind::None { 0 } else { size(rd, l, 1)? }),
            mlp_in: zeros(if c.norm == NormKind::None { 0 } else { size(rd, l, 1)? }),
            stats1: zeros(size(norm_stats_len(rows), l, 1)?),
            stats2: zeros(size(norm_stats_len(rows), l, 1)?),
            values: zeros(size(rh, l, 1)?),
            mixed: zeros(size(rh, l, 1)?),
            mixer_cache,
            mlp_cache: zeros(size(mlp_cache_len(rows, c.d_mlp), l, 1)?),
            final_out: zeros(rd),
            final_stats: zeros(norm_stats_len(rows)),
            logits: zeros(size(rows, VOCAB, 1)?),
            d_logits: zeros(size(rows, VOCAB, 1)?),
            #[cfg(feature = "parallel")]
            row_loss: zeros(rows),
            row_tmp: zeros(rd),
            d_resid: zeros(rd),
            d_tmp: zeros(rd),
            d_heads: zeros(rh),
            d_values: zeros(rh),
            weight_t: zeros(size(c.d_model, c.d_heads().max(VOCAB), 1)?),
            mlp_workspace: zeros(mlp_workspace_len(rows, c.d_model, c.d_mlp)),
            mixer_workspace: zeros(mixer_ws),
        })
    }

    /// Forward pass: mean cross-entropy (nats per token) of predicting `targets[i]` from
    /// `tokens[..=i]` within each sequence. `tokens`, `targets` hold `batch seq` bytes (sequence `b`
    /// at `b seq .. (b + 1) seq`); `state` keeps what [`Self::backward`] needs. A NaN loss means
    /// the parameters or activations hold non-finite values (not rejected, see
    /// [`cross_entropy`](super::loss::cross_entropy)).
    pub fn forward(
        &self,
        params: &[T],
        tokens: &[u8],
        targets: &[u8],
        state: &mut Activations<T>,
    ) -> Result<T> {
        let c = &self.config;
        let (d, dh, n, batch) = (c.d_model, c.d_heads(), state.seq, state.batch);
        let rows = n * batch;
        check_len("params", params.len(), self.layout.total)?;
        check_len("tokens", tokens.len(), rows)?;
        check_len("targets", targets.len(), rows)?;
        if state.resid.len() != rows * d * (c.n_layers + 1) || state.mixer_cache.len() != c.n_layers {
            return Err(Error::InvalidParameter {
                what: "state",
                expected: "made by this model's activations()",
            });
        }
        state.tokens.copy_from_slice(tokens);
        let (rd, rh, rs) = (rows * d, rows * dh, norm_stats_len(rows));
        let positions: &[T] = match c.positions {
            PositionKind::Learned => {
                &params[self.layout.positions.start..self.layout.positions.start + n * d]
            }
            PositionKind::Sinusoidal => &self.sinusoid[..n * d],
        };
        let embedding = &params[self.layout.embedding.clone()];
        for b in 0..batch {
            embed_forward(
                d,
                &tokens[b * n..(b + 1) * n],
                embedding,
                Some(positions),
                &mut state.resid[b * n * d..(b + 1) * n * d],
            )?;
        }
        let mlp_cl = mlp_cache_len(rows, c.d_mlp);
        let skip_norm = c.norm == NormKind::None;
        for (l, (off, sub)) in self.layout.layers.iter().zip(&self.sublayers).enumerate() {
            let (x_l, rest) = state.resid[l * rd..].split_at_mut(rd);
            let x_next = &mut rest[..rd];
            let stats1 = &mut state.stats1[l * rs..(l + 1) * rs];
            let a: &[T] = if skip_norm {
                x_l
            } else {
                let a = &mut state.attn_in[l * rd..(l + 1) * rd];
                norm_forward(c.norm, rows, d, &params[off.norm1.clone()], x_l, a, stats1)?;
                a
            };
            let v = &mut state.values[l * rh..(l + 1) * rh];
            linear_forward(rows, d, dh, a, &params[off.w_v.clone()], None, v)?;
            let o = &mut state.mixed[l * rh..(l + 1) * rh];
            let cache = &mut state.mixer_cache[l];
            let cl = sub.cache_len(n);
            let theta = &params[off.attention.clone()];
            sub.forward_batch(
                batch,
                n,
                theta,
                a,
                v,
                o,
                &mut cache[..batch * cl],
                &mut state.mixer_workspace,
            )?;
            // m = x_l + o W_O: the residual copied in, the product accumulated onto it.
            let m = &mut state.mid[l * rd..(l + 1) * rd];
            crate::parallel::zip_each(m, x_l, |a, &b| *a = b);
            product_rows(rows, dh, d, o, &params[off.w_o.clone()], m, Update::Accumulate);
            let m = &state.mid[l * rd..(l + 1) * rd];
            let h: &[T] = if skip_norm {
                m
            } else {
                let h = &mut state.mlp_in[l * rd..(l + 1) * rd];
                norm_forward(
                    c.norm,
                    rows,
                    d,
                    &params[off.norm2.clone()],
                    m,
                    h,
                    &mut state.stats2[l * rs..(l + 1) * rs],
                )?;
                h
            };
            let mlp = MlpParams {
                w_1: &params[off.w_1.clone()],
                b_1: &params[off.b_1.clone()],
                w_2: &params[off.w_2.clone()],
                b_2: &params[off.b_2.clone()],
            };
            mlp_forward(
                rows,
                d,
                c.d_mlp,
                mlp,
                h,
                &mut state.row_tmp,
                &mut state.mlp_cache[l * mlp_cl..(l + 1) * mlp_cl],
            )?;
            let y = &state.row_tmp;
            crate::parallel::chunks(x_next, crate::parallel::ELEMENT_CHUNK, |i, xo| {
                let at = i * crate::parallel::ELEMENT_CHUNK;
                for ((xo, &mi), &yi) in xo.iter_mut().zip(&m[at..]).zip(&y[at..]) {
                    *xo = mi + yi;
                }
            });
        }
        let x_last = &state.resid[c.n_layers * rd..];
        norm_forward(
            c.norm,
            rows,
            d,
            &params[self.layout.final_norm.clone()],
            x_last,
            &mut state.final_out,
            &mut state.final_stats,
        )?;
        if c.tied_unembedding {
            // logits = F E^T, with E^T laid out once (unpacked product).
            let e_t = &mut state.weight_t[..d * VOCAB];
            kernel::transpose(VOCAB, d, embedding, e_t);
            product_rows(rows, d, VOCAB, &state.final_out, e_t, &mut state.logits, Update::Overwrite);
        } else {
            linear_forward(
                rows,
                d,
                VOCAB,
                &state.final_out,
                &params[self.layout.unembedding.clone()],
                None,
                &mut state.logits,
            )?;
        }
        #[cfg(feature = "parallel")]
        return super::loss::cross_entropy_rows(
            VOCAB,
            &state.logits,
            targets,
            &mut state.d_logits,
            &mut state.row_loss,
        );
        #[cfg(not(feature = "parallel"))]
        cross_entropy(VOCAB, &state.logits, targets, &mut state.d_logits)
    }

    /// Backward pass of the last [`Self::forward`] on `state`: writes `dL/dparams` into `grads`
    /// (overwritten; same layout as the parameters).
    pub fn backward(&self, params: &[T], state: &mut Activations<T>, grads: &mut [T]) -> Result<()> {
        let c = &self.config;
        let (d, dh, n, batch) = (c.d_model, c.d_heads(), state.seq, state.batch);
        let rows = n * batch;
        check_len("params", params.len(), self.layout.total)?;
        check_len("grads", grads.len(), self.layout.total)?;
        if state.resid.len() != rows * d * (c.n_layers + 1) || state.mixer_cache.len() != c.n_layers {
            return Err(Error::InvalidParameter {
                what: "state",
                expected: "made by this model's activations()",
            });
        }
        crate::parallel::chunks(grads, crate::parallel::ELEMENT_CHUNK, |_, g| g.fill(T::zero()));
        let (rd, rh, rs) = (rows * d, rows * dh, norm_stats_len(rows));
        let emb = self.layout.embedding.clone();
        // Unembedding.
        if c.tied_unembedding {
            product_tn(
                VOCAB,
                rows,
                d,
                &state.d_logits,
                &state.final_out,
                &mut grads[emb.clone()],
                Update::Accumulate,
            );
            product_rows(
                rows,
                VOCAB,
                d,
                &state.d_logits,
                &params[emb.clone()],
                &mut state.d_tmp,
                Update::Overwrite,
            );
        } else {
            let un = self.layout.unembedding.clone();
            linear_backward(
                rows,
                d,
                VOCAB,
                &state.final_out,
                &params[un.clone()],
                &state.d_logits,
                Some(&mut state.d_tmp),
                Update::Overwrite,
                &mut grads[un],
                None,
            )?;
        }
        let fnorm = self.layout.final_norm.clone();
        let x_last = &state.resid[c.n_layers * rd..];
        norm_backward(
            c.norm,
            rows,
            d,
            &params[fnorm.clone()],
            x_last,
            &state.final_stats,
            &state.d_tmp,
            &mut state.d_resid,
            Update::Overwrite,
            &mut grads[fnorm],
        )?;
        let mlp_cl = mlp_cache_len(rows, c.d_mlp);
        let skip_norm = c.norm == NormKind::None;
        for (l, (off, sub)) in self.layout.layers.iter().zip(&self.sublayers).enumerate().rev() {
            // MLP: d_resid holds dL/dx_{l+1}.
            let mlp = MlpParams {
                w_1: &params[off.w_1.clone()],
                b_1: &params[off.b_1.clone()],
                w_2: &params[off.w_2.clone()],
                b_2: &params[off.b_2.clone()],
            };
            let g = &mut grads[off.w_1.start..off.b_2.end];
            let (g_w1, g) = g.split_at_mut(off.w_1.len());
            let (g_b1, g) = g.split_at_mut(off.b_1.len());
            let (g_w2, g_b2) = g.split_at_mut(off.w_2.len());
            let mlp_grads = MlpGrads { w_1: g_w1, b_1: g_b1, w_2: g_w2, b_2: g_b2 };
            mlp_backward(
                rows,
                d,
                c.d_mlp,
                mlp,
                if skip_norm {
                    &state.mid[l * rd..(l + 1) * rd]
                } else {
                    &state.mlp_in[l * rd..(l + 1) * rd]
                },
                &state.mlp_cache[l * mlp_cl..(l + 1) * mlp_cl],
                &state.d_resid,
                &mut state.d_tmp,
                Update::Overwrite,
                mlp_grads,
                &mut state.mlp_workspace,
            )?;
            norm_backward(
                c.norm,
                rows,
                d,
                &params[off.norm2.clone()],
                &state.mid[l * rd..(l + 1) * rd],
                &state.stats2[l * rs..(l + 1) * rs],
                &state.d_tmp,
                &mut state.d_resid,
                Update::Accumulate,
                &mut grads[off.norm2.clone()],
            )?;
            // Attention: d_resid holds dL/dm_l.
            // dO = dm W_O^T (W_O^T laid out once, unpacked product), dW_O += O^T dm.
            let o = &state.mixed[l * rh..(l + 1) * rh];
            let w_t = &mut state.weight_t[..dh * d];
            kernel::transpose(dh, d, &params[off.w_o.clone()], w_t);
            product_rows(rows, d, dh, &state.d_resid, w_t, &mut state.d_heads, Update::Overwrite);
            linear_backward(
                rows,
                dh,
                d,
                o,
                &params[off.w_o.clone()],
                &state.d_resid,
                None,
                Update::Overwrite,
                &mut grads[off.w_o.clone()],
                None,
            )?;
            let a = if skip_norm {
                &state.resid[l * rd..(l + 1) * rd]
            } else {
                &state.attn_in[l * rd..(l + 1) * rd]
            };
            let v = &state.values[l * rh..(l + 1) * rh];
            let cache = &state.mixer_cache[l];
            let cl = sub.cache_len(n);
            let theta = &params[off.attention.clone()];
            crate::parallel::chunks(&mut state.d_tmp, crate::parallel::ELEMENT_CHUNK, |_, g| {
                g.fill(T::zero())
            });
            sub.backward_batch(
                batch,
                n,
                theta,
                a,
                v,
                &cache[..batch * cl],
                &state.d_heads,
                &mut state.d_tmp,
                &mut state.d_values,
                &mut grads[off.attention.clone()],
                &mut state.mixer_workspace,
            )?;
            // dA += dV W_V^T, dW_V += A^T dV.
            let w_t = &mut state.weight_t[..d * dh];
            kernel::transpose(d, dh, &params[off.w_v.clone()], w_t);
            product_rows(rows, dh, d, &state.d_values, w_t, &mut state.d_tmp, Update::Accumulate);
            linear_backward(
                rows,
                d,
                dh,
                a,
                &params[off.w_v.clone()],
                &state.d_values,
                None,
                Update::Accumulate,
                &mut grads[off.w_v.clone()],
                None,
            )?;
            norm_backward(
                c.norm,
                rows,
                d,
                &params[off.norm1.clone()],
                &state.resid[l * rd..(l + 1) * rd],
                &state.stats1[l * rs..(l + 1) * rs],
                &state.d_tmp,
                &mut state.d_resid,
                Update::Accumulate,
                &mut grads[off.norm1.clone()],
            )?;
        }
        // Embedding and positions: d_resid holds dL/dx_0.
        let (g_emb, g_rest) = grads.split_at_mut(emb.end);
        let learned = c.positions == PositionKind::Learned;
        for b in 0..batch {
            let d_pos = if learned {
                let p = self.layout.positions.start - emb.end;
                Some(&mut g_rest[p..p + n * d])
            } else {
                None
            };
            embed_backward(
                d,
                &state.tokens[b * n..(b + 1) * n],
                &state.d_resid[b * n * d..(b + 1) * n * d],
                &mut g_emb[emb.clone()],
                d_pos,
            )?;
        }
        Ok(())
    }
}
