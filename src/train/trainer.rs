//! One training step: a batch of random windows, forward, backward, global-norm clipping, AdamW at
//! the scheduled learning rate; evaluation on held-out text; checkpoints that resume exactly.
//!
//! Determinism: the batch of step `s` is drawn by a [`BatchSampler`] seeded with
//! `SplitMix64(seed ^ (s * 0x9E3779B97F4A7C15)).next_u64()`, so it depends only on the seed and the
//! step count, and a run resumed from a checkpoint (which stores the step count) continues with
//! the very batches, and bit for bit the very parameters, of an uninterrupted run.

use super::adamw::{AdamW, AdamWConfig};
use super::checkpoint::{Checkpoint, OptimizerState};
use super::clip::clip_global_norm;
use super::corpus::{eval_windows, BatchSampler};
use super::schedule::WarmupCosine;
use crate::model::transformer::{Activations, Model};
use crate::rng::SplitMix64;
use crate::{Error, Result, Scalar};
use alloc::vec;
use alloc::vec::Vec;

/// Settings of a training run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainConfig {
    /// Sequences per batch.
    pub batch: usize,
    /// Tokens per sequence (`<= context_len`).
    pub seq: usize,
    /// Learning rate per step.
    pub schedule: WarmupCosine,
    /// Optimizer hyperparameters.
    pub adamw: AdamWConfig,
    /// Global gradient-norm threshold.
    pub clip_norm: f64,
    /// Seed of the initialization and of the batch stream.
    pub seed: u64,
}

/// What one step did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepStats {
    /// Steps completed after this one.
    pub step: u64,
    /// Mean cross-entropy of the batch before the update (nats per byte).
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Learning rate used.
    pub lr: f64,
}

/// A model with its parameters, gradients, optimizer and buffers.
pub struct Trainer<T: Scalar> {
    model: Model<T>,
    config: TrainConfig,
    params: Vec<T>,
    grads: Vec<T>,
    optimizer: AdamW<T>,
    state: Activations<T>,
    eval_state: Activations<T>,
    tokens: Vec<u8>,
    targets: Vec<u8>,
}

impl<T: Scalar> core::fmt::Debug for Trainer<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Trainer")
            .field("config", &self.config)
            .field("step", &self.optimizer.step)
            .finish_non_exhaustive()
    }
}

fn step_seed(seed: u64, step: u64) -> u64 {
    SplitMix64::new(seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15)).next_u64()
}

impl<T: Scalar> Trainer<T> {
    /// A fresh run: parameters initialized by [`Model::init_params`] from `config.seed`.
    pub fn new(model: Model<T>, config: TrainConfig) -> Result<Self> {
        let mut params = vec![T::zero(); model.param_len()];
        model.init_params(config.seed, &mut params)?;
        let optimizer = AdamW::new(config.adamw, params.len())?;
        Self::assemble(model, config, params, optimizer)
    }

    /// A run resumed from `checkpoint`, whose config must equal the model's. Without optimizer
    /// state the optimizer starts fresh at step 0.
    pub fn from_checkpoint(model: Model<T>, config: TrainConfig, checkpoint: Checkpoint<T>) -> Result<Self> {
        if checkpoint.config != *model.config() {
            return Err(Error::InvalidParameter { what: "checkpoint", expected: "the model's config" });
        }
        let mut optimizer = AdamW::new(config.adamw, checkpoint.params.len())?;
        if let Some(o) = checkpoint.optimizer {
            optimizer.step = o.step;
            optimizer.m = o.m;
            optimizer.v = o.v;
        }
        Self::assemble(model, config, checkpoint.params, optimizer)
    }

    fn assemble(model: Model<T>, config: TrainConfig, params: Vec<T>, optimizer: AdamW<T>) -> Result<Self> {
        if !(config.clip_norm.is_finite() && config.clip_norm > 0.0) {
            return Err(Error::InvalidParameter { what: "clip_norm", expected: "finite and > 0" });
        }
        let state = model.activations(config.batch, config.seq)?;
        let eval_state = model.activations(1, config.seq)?;
        let rows = config.batch * config.seq;
        let grads = vec![T::zero(); params.len()];
        Ok(Trainer {
            model,
            config,
            params,
            grads,
            optimizer,
            state,
            eval_state,
            tokens: vec![0; rows],
            targets: vec![0; rows],
        })
    }

    /// One step on a batch drawn from `text` (see the module docs for which batch). If the
    /// gradient holds NaN or infinity the step is not applied and [`Error::NonFinite`] is returned.
    pub fn step(&mut self, text: &[u8]) -> Result<StepStats> {
        // The whole step on one worker of the pool (with `parallel`), so that its parallel regions
        // are forked from inside the pool (see `parallel::on_pool`).
        crate::parallel::on_pool(|| self.step_here(text))
    }

    fn step_here(&mut self, text: &[u8]) -> Result<StepStats> {
        let step = self.optimizer.step;
        let lr = self.config.schedule.lr(step);
        BatchSampler::new(step_seed(self.config.seed, step)).fill(
            text,
            self.config.seq,
            &mut self.tokens,
            &mut self.targets,
        )?;
        let loss = self.model.forward(&self.params, &self.tokens, &self.targets, &mut self.state)?;
        self.model.backward(&self.params, &mut self.state, &mut self.grads)?;
        let grad_norm = clip_global_norm(&mut self.grads, T::of_f64(self.config.clip_norm))?;
        self.optimizer.step(self.model.layout(), lr, &mut self.params, &self.grads)?;
        Ok(StepStats { step: self.optimizer.step, loss: loss.as_f64(), grad_norm: grad_norm.as_f64(), lr })
    }

    /// Mean cross-entropy (nats per byte) over the first `max_windows` consecutive windows of
    /// `seq` bytes of `text` (all of them if fewer); perplexity is its `exp`. Errors if no window fits.
    pub fn evaluate(&mut self, text: &[u8], max_windows: usize) -> Result<f64> {
        // On one worker of the pool, as `step`.
        crate::parallel::on_pool(|| self.evaluate_here(text, max_windows))
    }

    fn evaluate_here(&mut self, text: &[u8], max_windows: usize) -> Result<f64> {
        let (mut total, mut count) = (0.0, 0usize);
        for (tokens, targets) in eval_windows(text, self.config.seq).take(max_windows) {
            total += self.model.forward(&self.params, tokens, targets, &mut self.eval_state)?.as_f64();
            count += 1;
        }
        if count == 0 {
            return Err(Error::Empty { what: "text" });
        }
        Ok(total / count as f64)
    }

    /// The current parameters, laid out by [`Model::layout`].
    pub fn params(&self) -> &[T] {
        &self.params
    }

    /// The model.
    pub fn model(&self) -> &Model<T> {
        &self.model
    }

    /// Steps completed.
    pub fn steps_done(&self) -> u64 {
        self.optimizer.step
    }

    /// A checkpoint of the parameters and optimizer state.
    pub fn checkpoint(&self) -> Checkpoint<T> {
        Checkpoint {
            config: self.model.config().clone(),
            params: self.params.clone(),
            optimizer: Some(OptimizerState {
                step: self.optimizer.step,
                m: self.optimizer.m.clone(),
                v: self.optimizer.v.clone(),
            }),
        }
    }
}
