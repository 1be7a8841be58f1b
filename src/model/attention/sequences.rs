//! The batched passes of the softmax and linear kinds with one task per sequence (the `parallel`
//! feature): each task runs one sequence's forward or backward in its own slice of the workspace
//! with a partial parameter gradient, and the partials are summed in task order afterwards, so the
//! result does not depend on the number of threads.

use super::AttentionMixer;
use crate::error::{check_len, check_matrix, check_workspace};
use crate::model::sublayer::AttentionSublayer;
use crate::model::sublayer::{backward_each, forward_each};
use crate::{Error, Result, Scalar};

impl AttentionMixer {
    /// One task's scratch in [`Self::forward_sequences`] / [`Self::backward_sequences`]: one
    /// sequence's workspace and a partial parameter gradient.
    pub(super) fn sequence_task_len<T: Scalar>(&self, n: usize) -> usize {
        AttentionSublayer::<T>::workspace_len(self, n).saturating_add(self.param_len_checked())
    }

    /// The softmax and linear kinds' batched forward with one task per sequence (`parallel`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn forward_sequences<T: Scalar>(
        &self,
        batch: usize,
        n: usize,
        params: &[T],
        input: &[T],
        values: &[T],
        out: &mut [T],
        cache: &mut [T],
        workspace: &mut [T],
    ) -> Result<()> {
        let rows = batch.checked_mul(n).ok_or(Error::DimensionOverflow { what: "batch" })?;
        self.check(rows, params, input, values)?;
        let (d, hw) = (self.dims.d_model, self.heads_width());
        check_matrix("out", out.len(), rows, hw)?;
        let cl = AttentionSublayer::<T>::cache_len(self, n);
        check_workspace(
            cache.len(),
            cl.checked_mul(batch).ok_or(Error::DimensionOverflow { what: "cache" })?,
        )?;
        let task = self.sequence_task_len::<T>(n);
        check_workspace(workspace.len(), AttentionSublayer::<T>::batch_workspace_len(self, batch, n))?;
        if rows == 0 || hw == 0 || cl == 0 {
            return forward_each(self, batch, n, params, input, values, out, cache, workspace);
        }
        let (out, cache, workspace) =
            (&mut out[..rows * hw], &mut cache[..batch * cl], &mut workspace[..batch * task]);
        crate::parallel::try_chunks3(out, n * hw, cache, cl, workspace, task, |b, out_b, cache_b, ws| {
            let (x, v) = (&input[b * n * d..(b + 1) * n * d], &values[b * n * hw..(b + 1) * n * hw]);
            AttentionSublayer::<T>::forward(self, n, params, x, v, out_b, cache_b, ws)
        })
    }

    /// The softmax and linear kinds' batched backward with one task per sequence (`parallel`):
    /// each writes its rows of `d_input`, `d_values` and its own partial `dL/dtheta`; the partials
    /// are then added to `d_params` in sequence order.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn backward_sequences<T: Scalar>(
        &self,
        batch: usize,
        n: usize,
        params: &[T],
        input: &[T],
        values: &[T],
        cache: &[T],
        d_out: &[T],
        d_input: &mut [T],
        d_values: &mut [T],
        d_params: &mut [T],
        workspace: &mut [T],
    ) -> Result<()> {
        let rows = batch.checked_mul(n).ok_or(Error::DimensionOverflow { what: "batch" })?;
        self.check(rows, params, input, values)?;
        let (d, hw) = (self.dims.d_model, self.heads_width());
        check_matrix("d_out", d_out.len(), rows, hw)?;
        check_matrix("d_input", d_input.len(), rows, d)?;
        check_matrix("d_values", d_values.len(), rows, hw)?;
        check_len("d_params", d_params.len(), params.len())?;
        let cl = AttentionSublayer::<T>::cache_len(self, n);
        check_workspace(
            cache.len(),
            cl.checked_mul(batch).ok_or(Error::DimensionOverflow { what: "cache" })?,
        )?;
        check_workspace(workspace.len(), AttentionSublayer::<T>::batch_workspace_len(self, batch, n))?;
        let task = self.sequence_task_len::<T>(n);
        let p = params.len();
        if rows == 0 || d == 0 || hw == 0 {
            return backward_each(
                self, batch, n, params, input, values, cache, d_out, d_input, d_values, d_params, workspace,
            );
        }
        let (d_input, d_values, workspace) =
            (&mut d_input[..rows * d], &mut d_values[..rows * hw], &mut workspace[..batch * task]);
        crate::parallel::try_chunks3(
            d_input,
            n * d,
            d_values,
            n * hw,
            workspace,
            task,
            |b, d_in, d_v, ws| {
                let (partial, ws) = ws.split_at_mut(p);
                partial.fill(T::zero());
                let (x, v) = (&input[b * n * d..(b + 1) * n * d], &values[b * n * hw..(b + 1) * n * hw]);
                let (c, g) = (&cache[b * cl..(b + 1) * cl], &d_out[b * n * hw..(b + 1) * n * hw]);
                AttentionSublayer::<T>::backward(self, n, params, x, v, c, g, d_in, d_v, partial, ws)
            },
        )?;
        // d_params += partial_b, b in order, for every element (elements split across tasks).
        let workspace = &*workspace;
        crate::parallel::chunks(d_params, crate::parallel::PARTIAL_CHUNK, |i, dst| {
            let start = i * crate::parallel::PARTIAL_CHUNK;
            for task_ws in workspace.chunks_exact(task) {
                let len = dst.len();
                for (x, &y) in dst.iter_mut().zip(&task_ws[start..start + len]) {
                    *x += y;
                }
            }
        });
        Ok(())
    }
}
