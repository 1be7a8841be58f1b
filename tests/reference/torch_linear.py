"""PyTorch autograd reference for ELU+1 linear attention (docs/math.md section 6), written as fixtures.

For a few fixed cases (causal and not, one and two packed heads) it draws inputs in float64,
computes the output with the usual cumulative-sum formulation (independent of the crate's chunked
kernels), and the gradients of sum(d_out * out) with autograd. Everything goes into
tests/reference/fixtures/linear_attention.safetensors, read by tests/linear_torch.rs. Per case
`<name>`: tensors `<name>.params` = [n, d_k, d_v, n_heads, causal, eps] and `<name>.{q,k,v,d_out,
out,d_q,d_k,d_v}` (row-major, packed heads: n x (n_heads d)).

Regenerate (needs torch and safetensors; CPU is enough):

    python3 tests/reference/torch_linear.py

The inputs come from torch.manual_seed, so a rerun reproduces the file up to torch's rounding.
"""
import os

import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
TARGET = os.path.join(HERE, "fixtures", "linear_attention.safetensors")

# name, n, d_k, d_v, n_heads, causal, eps
CASES = [
    ("causal_small", 7, 4, 3, 1, True, 1e-6),
    ("bidirectional_small", 7, 4, 3, 1, False, 1e-6),
    ("causal_odd", 33, 8, 5, 1, True, 1e-3),
    ("bidirectional_odd", 33, 8, 5, 1, False, 1e-3),
    ("causal_two_heads", 20, 4, 6, 2, True, 1e-6),
    ("causal_one_token", 1, 3, 2, 1, True, 0.5),
]


def phi(x):
    return torch.nn.functional.elu(x) + 1.0


def linear_attention(q, k, v, causal, eps):
    """q, k: n x h x d_k, v: n x h x d_v -> n x h x d_v."""
    fq, fk = phi(q), phi(k)
    if causal:
        kv = torch.einsum("nhd,nhe->nhde", fk, v).cumsum(0)
        z = fk.cumsum(0)
        num = torch.einsum("nhd,nhde->nhe", fq, kv)
    else:
        kv = torch.einsum("nhd,nhe->hde", fk, v)
        z = fk.sum(0, keepdim=True)
        num = torch.einsum("nhd,hde->nhe", fq, kv)
    den = (fq * z).sum(-1, keepdim=True) + eps
    return num / den


def main() -> None:
    torch.manual_seed(20261124)
    tensors = {}
    for name, n, d_k, d_v, heads, causal, eps in CASES:
        q = (2 * torch.rand(n, heads, d_k, dtype=torch.float64) - 1) * 2
        k = (2 * torch.rand(n, heads, d_k, dtype=torch.float64) - 1) * 2
        v = 2 * torch.rand(n, heads, d_v, dtype=torch.float64) - 1
        d_out = 2 * torch.rand(n, heads, d_v, dtype=torch.float64) - 1
        q.requires_grad_(True)
        k.requires_grad_(True)
        v.requires_grad_(True)
        out = linear_attention(q, k, v, causal, eps)
        (out * d_out).sum().backward()
        packed = lambda t: t.detach().reshape(n, -1).contiguous()
        tensors[f"{name}.params"] = torch.tensor([n, d_k, d_v, heads, float(causal), eps], dtype=torch.float64)
        for key, value in [("q", q), ("k", k), ("v", v), ("d_out", d_out), ("out", out),
                           ("d_q", q.grad), ("d_k", k.grad), ("d_v", v.grad)]:
            tensors[f"{name}.{key}"] = packed(value)
    os.makedirs(os.path.dirname(TARGET), exist_ok=True)
    save_file(tensors, TARGET, metadata={"generator": "tests/reference/torch_linear.py",
                                         "torch": torch.__version__})
    print(f"wrote {len(CASES)} cases to {TARGET}")


if __name__ == "__main__":
    main()
