//! The mixer's batched S-D path (all rows projected at once, then head by head) and the per-head
//! path shared by the softmax and S-D kinds.

use super::*;

impl AttentionMixer {
    /// Scratch of the S-D paths for `batch` sequences of `n`: forward the side-by-side weights
    /// (`d_model w_h`, `w_h = h (2r + q)`), the wide product of all rows (`batch n w_h`), one
    /// sequence's head-major values and the softmax forward's workspace; backward the projection
    /// gradients of all rows (`batch n w_h`) and the larger of one sequence's head scratch (plus the
    /// softmax backward's workspace) and [`Self::weight_t_len`].
    pub(super) fn sd_workspace_len<T: Scalar>(&self, batch: usize, n: usize) -> usize {
        let s = self.softmax::<T>();
        let (d, wide) = (self.dims.d_model, self.packed_qk());
        let all_rows = Req::array(batch, n).times(wide);
        let heads = self.head_scratch(n).and(Req::new(s.backward_workspace_len(n)));
        if crate::parallel::ENABLED {
            // One task per sequence, each with its own head scratch (see `sd_forward`).
            let task = Req::array(n, self.heads_width()).and(Req::new(s.forward_workspace_len(n)));
            let forward = Req::all_of([Req::array(d, wide), all_rows, task.times(batch)]);
            let backward = all_rows.and(heads.times(batch).or(self.weight_t_len()));
            return forward.or(backward).saturating();
        }
        let forward = Req::all_of([
            Req::array(d, wide),
            all_rows,
            Req::array(n, self.heads_width()),
            Req::new(s.forward_workspace_len(n)),
        ]);
        let backward = all_rows.and(heads.or(self.weight_t_len()));
        forward.or(backward).saturating()
    }

    /// The S-D forward of `batch` validated sequences (see `forward_batch`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn sd_forward<T: Scalar>(
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
        let AttentionKind::Sd { routing_rank: r, filtering_rank: f } = self.kind else {
            return Err(Error::InvalidParameter { what: "kind", expected: "S-D" });
        };
        let (d, wide, hw, w) = (self.dims.d_model, self.packed_qk(), self.heads_width(), self.qk_width());
        let (cols, _) = self.blocks();
        let cl = AttentionSublayer::<T>::cache_len(self, n);
        let cache_parts = self.cache_parts(n).map(Req::saturating);
        // proj = A [U | V | C] over all rows, the three weight blocks laid side by side; each
        // head's a, b, c are then read in place.
        let lens = [Req::array(d, wide), Req::array(batch, n).times(wide)].map(Req::saturating);
        let ([w_wide, proj], rest) = carve(workspace, lens)?;
        self.side_by_side(params, w_wide);
        product_rows(batch * n, d, wide, input, w_wide, proj, Update::Overwrite);
        let proj = &*proj;
        // One sequence: its heads' queries and keys assembled into its cache, then its heads.
        let sequence = |b: usize, cache_b: &mut [T], out_b: &mut [T], scratch: &mut [T]| {
            let ([q, k, out_cache, lse], _) = carve(cache_b, cache_parts)?;
            let proj_b = &proj[b * n * wide..(b + 1) * n * wide];
            for t in 0..self.dims.n_heads {
                let (a, bb) = ((proj_b, Cols::of(wide, t * r)), (proj_b, Cols::of(wide, cols[0] + t * r)));
                let c = (proj_b, Cols::of(wide, cols[0] + cols[1] + t * f));
                let head = t * n * w..(t + 1) * n * w;
                sd_assemble(n, r, f, a, bb, c, &mut q[head.clone()], &mut k[head]);
            }
            let rows = b * n * hw..(b + 1) * n * hw;
            self.heads_forward(n, q, k, &values[rows], out_b, out_cache, lse, scratch)
        };
        let (cache, out) = (&mut cache[..batch * cl], &mut out[..batch * n * hw]);
        if crate::parallel::ENABLED {
            // One task per sequence, each with its own scratch (`sd_workspace_len`).
            let task = n * hw + self.softmax::<T>().forward_workspace_len(n);
            let rest = &mut rest[..batch * task];
            return crate::parallel::try_chunks3(cache, cl, out, n * hw, rest, task, sequence);
        }
        for (b, (cache_b, out_b)) in cache.chunks_exact_mut(cl).zip(out.chunks_exact_mut(n * hw)).enumerate()
        {
            sequence(b, cache_b, out_b, rest)?;
        }
        Ok(())
    }

    /// The S-D backward of `batch` validated sequences (see `backward_batch`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn sd_backward<T: Scalar>(
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
        let (wide, hw) = (self.packed_qk(), self.heads_width());
        let cl = AttentionSublayer::<T>::cache_len(self, n);
        let [lq, lk, lo, ll] = self.cache_parts(n).map(Req::saturating);
        let ([d_all], scratch) = carve(workspace, [Req::array(batch, n).times(wide).saturating()])?;
        // One sequence's heads, into its rows of the projection gradients and of `d_values`.
        let sequence = |b: usize, d_blocks: &mut [T], d_values_b: &mut [T], scratch: &mut [T]| {
            let (q, rest_c) = cache[b * cl..(b + 1) * cl].split_at(lq);
            let (k, rest_c) = rest_c.split_at(lk);
            let (out, rest_c) = rest_c.split_at(lo);
            let lse = &rest_c[..ll];
            let rows = b * n * hw..(b + 1) * n * hw;
            self.heads_backward(
                n,
                (q, k, out, lse),
                &values[rows.clone()],
                &d_out[rows],
                d_values_b,
                d_blocks,
                scratch,
            )
        };
        let d_values = &mut d_values[..batch * n * hw];
        if crate::parallel::ENABLED {
            // One task per sequence, each with its own scratch (`sd_workspace_len`).
            let task = self
                .head_scratch(n)
                .and(Req::new(self.softmax::<T>().backward_workspace_len(n)))
                .saturating();
            let tasks = &mut scratch[..batch * task];
            crate::parallel::try_chunks3(d_all, n * wide, d_values, n * hw, tasks, task, sequence)?;
        } else {
            let blocks = d_all.chunks_exact_mut(n * wide).zip(d_values.chunks_exact_mut(n * hw));
            for (b, (d_blocks, d_values_b)) in blocks.enumerate() {
                sequence(b, d_blocks, d_values_b, &mut *scratch)?;
            }
        }
        self.project_backward(batch * n, params, input, d_all, d_input, d_params, scratch)
    }

    /// The heads of one sequence of a softmax kind, forward: values split head-major once, each
    /// head's causal softmax into the cache's head-major output (and `lse`), merged into the packed
    /// `out` once.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn heads_forward<T: Scalar>(
        &self,
        n: usize,
        q: &[T],
        k: &[T],
        values: &[T],
        out: &mut [T],
        out_cache: &mut [T],
        lse: &mut [T],
        workspace: &mut [T],
    ) -> Result<()> {
        let (h, w, dh, hw) = (self.dims.n_heads, self.qk_width(), self.dims.d_head, self.heads_width());
        let attention = self.softmax();
        let ([v_heads], rest) = carve(workspace, [Req::array(n, hw).saturating()])?;
        split_heads(n, h, dh, values, v_heads);
        for t in 0..h {
            let (qk, o) = (t * n * w..(t + 1) * n * w, t * n * dh..(t + 1) * n * dh);
            attention.forward(
                n,
                &q[qk.clone()],
                &k[qk],
                &v_heads[o.clone()],
                None,
                &mut out_cache[o],
                &mut lse[t * n..(t + 1) * n],
                rest,
            )?;
        }
        merge_heads(n, h, dh, out_cache, out);
        Ok(())
    }

    /// The heads of one sequence of a softmax kind, backward: each head's softmax backward, its
    /// `dQ_t, dK_t` mapped into `d_blocks` (S-D: the adjoint of the assembly into the packed
    /// `n x h (2r + q)` gradient; softmax: scattered into `[dQ | dK]`), `dV` merged into `d_values`.
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    pub(super) fn heads_backward<T: Scalar>(
        &self,
        n: usize,
        (q, k, out, lse): (&[T], &[T], &[T], &[T]),
        values: &[T],
        d_out: &[T],
        d_values: &mut [T],
        d_blocks: &mut [T],
        workspace: &mut [T],
    ) -> Result<()> {
        let (h, w, dh) = (self.dims.n_heads, self.qk_width(), self.dims.d_head);
        let (cols, _) = self.blocks();
        let attention = self.softmax();
        let parts = self.head_parts(n).map(Req::saturating);
        let ([d_q_t, d_k_t, v_heads, d_out_heads, d_v_heads], rest) = carve(workspace, parts)?;
        split_heads(n, h, dh, values, v_heads);
        split_heads(n, h, dh, d_out, d_out_heads);
        for t in 0..h {
            let (qk, o) = (t * n * w..(t + 1) * n * w, t * n * dh..(t + 1) * n * dh);
            let d_v_t = &mut d_v_heads[o.clone()];
            let grads = SoftmaxGrads { d_q: &mut *d_q_t, d_k: &mut *d_k_t, d_v: d_v_t };
            attention.backward(
                n,
                &q[qk.clone()],
                &k[qk],
                &v_heads[o.clone()],
                None,
                &out[o.clone()],
                &lse[t * n..(t + 1) * n],
                &d_out_heads[o],
                grads,
                rest,
            )?;
            match self.kind {
                AttentionKind::Sd { routing_rank: r, filtering_rank: f } => {
                    // One n x h (2r + q) matrix [d(AU) | d(AV) | d(AC)] (see project_backward).
                    let wide = self.packed_qk();
                    let (da, db) = (Cols::of(wide, t * r), Cols::of(wide, cols[0] + t * r));
                    let dc = Cols::of(wide, cols[0] + cols[1] + t * f);
                    sd_assemble_adjoint(n, r, f, d_q_t, d_k_t, d_blocks, da, db, dc);
                }
                _ => {
                    let (pq, pk) = d_blocks.split_at_mut(n * cols[0]);
                    scatter(n, cols[0], t * w, w, d_q_t, pq);
                    scatter(n, cols[1], t * w, w, d_k_t, pk);
                }
            }
        }
        merge_heads(n, h, dh, d_v_heads, d_values);
        Ok(())
    }
}
