"""Writes data/gpt2-synthetic.safetensors: a tiny GPT-2-layout checkpoint (2 layers, d_model 48,
4 heads of d_head 12, vocabulary 10) with the tensor names and shapes of Hugging Face GPT-2:
Conv1D weights stored [in, out], the fused h.{l}.attn.c_attn.weight [d_model, 3 d_model] holding
Q | K | V. No GPT-2-style decoder checkpoint ships inside a PyPI package that we could find, so
the census's GPT-2 mapping is tested on this file (seeded, reproducible):

    python3 tests/reference/make_gpt2_synthetic.py data/gpt2-synthetic.safetensors

Layer 0 has K = Q + small noise (mostly filtering, rho near 0); layer 1 is random (rho near 1/2).
"""
import sys

import numpy as np
from safetensors.numpy import save_file


def main():
    rng = np.random.default_rng(20261124)
    d, vocab, n_layers = 48, 10, 2
    tensors = {
        "wte.weight": rng.normal(0, 0.02, (vocab, d)).astype(np.float32),
        "wpe.weight": rng.normal(0, 0.01, (16, d)).astype(np.float32),
    }
    for layer in range(n_layers):
        q = rng.normal(0, 0.2, (d, d))
        k = q + rng.normal(0, 0.02, (d, d)) if layer == 0 else rng.normal(0, 0.2, (d, d))
        v = rng.normal(0, 0.2, (d, d))
        p = f"h.{layer}."
        tensors[p + "attn.c_attn.weight"] = np.concatenate([q, k, v], axis=1).astype(np.float32)
        tensors[p + "attn.c_attn.bias"] = np.zeros(3 * d, np.float32)
        tensors[p + "attn.c_proj.weight"] = rng.normal(0, 0.02, (d, d)).astype(np.float32)
        tensors[p + "ln_1.weight"] = np.ones(d, np.float32)
    save_file(tensors, sys.argv[1], metadata={"format": "pt", "note": "synthetic GPT-2 layout for tests"})


if __name__ == "__main__":
    main()
