//! The mixer's scratch and cache lengths are the closed forms their documents state.

use super::*;
use alloc::format;

/// `workspace_len`, `cache_len` and `batch_workspace_len` of every kind against their closed
/// forms in saturating arithmetic (a length that overflows is `usize::MAX`), over a sweep of
/// dimensions, sequence lengths and batches, huge ones included.
#[test]
fn lengths_are_their_closed_forms() {
    let kinds = [
        AttentionKind::Softmax,
        AttentionKind::Linear,
        AttentionKind::Sd { routing_rank: 1, filtering_rank: 0 },
        AttentionKind::Sd { routing_rank: 3, filtering_rank: 2 },
    ];
    let dims = [(1, 1, 1), (8, 2, 4), (24, 3, 8), (64, 4, 16)];
    let lengths = [0, 1, 2, 7, 128, 500, 1 << 40, usize::MAX / 2, usize::MAX];
    for kind in kinds {
        for (d_model, n_heads, d_head) in dims {
            let mixer = AttentionMixer::new(SublayerDims { d_model, n_heads, d_head }, kind).unwrap();
            let (w, hw, wide, d) = (mixer.qk_width(), n_heads * d_head, mixer.packed_qk(), d_model);
            let (cols, _) = mixer.blocks();
            let weight_t = match kind {
                AttentionKind::Sd { .. } => d.saturating_mul(wide).saturating_mul(2),
                _ => d.saturating_mul(cols[0].max(cols[1]).max(cols[2])),
            };
            for n in lengths {
                let s = mixer.softmax::<f64>();
                let heads = n.saturating_mul(w.saturating_mul(2).saturating_add(hw.saturating_mul(3)));
                let sd_len = |batch: usize| {
                    let all_rows = batch.saturating_mul(n).saturating_mul(wide);
                    if crate::parallel::ENABLED {
                        // One task per sequence, each with its own head scratch.
                        let task = n.saturating_mul(hw).saturating_add(s.forward_workspace_len(n));
                        let forward = d
                            .saturating_mul(wide)
                            .saturating_add(all_rows)
                            .saturating_add(batch.saturating_mul(task));
                        let heads = heads.saturating_add(s.backward_workspace_len(n));
                        return forward
                            .max(all_rows.saturating_add(batch.saturating_mul(heads).max(weight_t)));
                    }
                    let forward = d
                        .saturating_mul(wide)
                        .saturating_add(all_rows)
                        .saturating_add(n.saturating_mul(hw))
                        .saturating_add(s.forward_workspace_len(n));
                    let heads = heads.saturating_add(s.backward_workspace_len(n));
                    forward.max(all_rows.saturating_add(heads.max(weight_t)))
                };
                let qk = n.saturating_mul(wide);
                let cache = match kind {
                    k if k.is_linear() => qk.saturating_mul(2),
                    _ => qk
                        .saturating_add(qk)
                        .saturating_add(n.saturating_mul(hw))
                        .saturating_add(n.saturating_mul(n_heads)),
                };
                let workspace = match kind {
                    AttentionKind::Sd { .. } => sd_len(1),
                    _ => {
                        let projection =
                            if kind == AttentionKind::Softmax { n.saturating_mul(wide) } else { 0 };
                        let (forward, backward) = if kind.is_linear() {
                            let l = mixer.linear::<f64>();
                            (l.forward_workspace_len(n), l.backward_workspace_len(n))
                        } else {
                            (
                                n.saturating_mul(hw).saturating_add(s.forward_workspace_len(n)),
                                heads.saturating_add(s.backward_workspace_len(n)),
                            )
                        };
                        let grads = n.saturating_mul(cols[0] + cols[1] + cols[2]);
                        forward
                            .max(projection)
                            .max(grads.saturating_add(backward.max(projection).max(weight_t)))
                    }
                };
                let what = format!("{kind:?} {d_model} {n_heads} {d_head} n={n}");
                assert_eq!(AttentionSublayer::<f64>::cache_len(&mixer, n), cache, "{what}");
                assert_eq!(AttentionSublayer::<f64>::workspace_len(&mixer, n), workspace, "{what}");
                for batch in [1, 3, 1 << 30, usize::MAX] {
                    let expected = match kind {
                        AttentionKind::Sd { .. } => sd_len(batch),
                        // With `parallel`, one sequence's scratch and a partial gradient per task.
                        _ if crate::parallel::ENABLED => {
                            batch.saturating_mul(workspace.saturating_add(mixer.param_len_checked()))
                        }
                        _ => workspace,
                    };
                    let got = AttentionSublayer::<f64>::batch_workspace_len(&mixer, batch, n);
                    assert_eq!(got, expected, "{what} batch={batch}");
                }
            }
        }
    }
}
