"""PyTorch CPU eager baseline for benches/train.rs: the cascade demo's training step, side by side.

Usage (from the repository root):

    cargo bench --bench train                       # writes target/criterion/train/sd_demo_step/new/estimates.json
    python3 benches/torch_train.py                  # times PyTorch, prints both and the ratio

`--run-cargo` runs the cargo bench first, so that both sides come from one run of this script.
`--kind linear` times the same model with ELU+1 linear attention in every layer instead (per head
W_Q, W_K of 64 x 16, phi = elu + 1 on the raw projections, causal, eps 1e-6, in the chunked form:
masked 64 x 64 blocks plus the prefix state, batched over batch and heads), against criterion's
`train/linear_demo_step`.

The same model and step as examples/cascade.rs (defaults) and benches/train.rs: byte embedding
(256 x 64, tied unembedding), learned positions (128 x 64), 6 blocks WITHOUT norm of
  S-D attention: per head U, V (64 x 8), C (64 x 8); Q = [AU | AV | AC], K = [AV | -AU | -AC],
  causal softmax with scale 1/sqrt(2r + q) = 1/sqrt(24) (scaled_dot_product_attention), values
  A W_V (4 heads x 16), output W_O; MLP W_2 gelu_tanh(W_1 m + b_1) + b_2 (d_mlp 256);
mean next-byte cross-entropy; backward; global-norm clipping at 1; AdamW (0.9, 0.95, eps 1e-8,
decay 0.1 on matrices only). float32, torch.set_num_threads(1), batch 16 x 128 random windows of
the training plays. Times are medians of per-step wall times; ratio = torch / ours (> 1: we are
faster).

A Python with torch (numpy, safetensors) runs it; make one with
`python3 -m venv .venv && .venv/bin/pip install -r benches/requirements.txt` and call it as
`.venv/bin/python` in place of `python3` above.
"""
import json
import math
import pathlib
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

ROOT = pathlib.Path(__file__).resolve().parent.parent
D, L, H, DH, DMLP, R, Q, CTX, BATCH = 64, 6, 4, 16, 256, 8, 8, 128, 16


class SdModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        n = lambda *shape, std=0.02: torch.nn.Parameter(torch.randn(*shape, generator=g) * std)
        self.emb = n(256, D)
        self.pos = n(CTX, D)
        res = 0.02 / math.sqrt(2 * L)
        self.u = torch.nn.ParameterList([n(D, H * R) for _ in range(L)])
        self.v = torch.nn.ParameterList([n(D, H * R) for _ in range(L)])
        self.c = torch.nn.ParameterList([n(D, H * Q) for _ in range(L)])
        self.wv = torch.nn.ParameterList([n(D, H * DH) for _ in range(L)])
        self.wo = torch.nn.ParameterList([n(H * DH, D, std=res) for _ in range(L)])
        self.w1 = torch.nn.ParameterList([n(D, DMLP) for _ in range(L)])
        self.b1 = torch.nn.ParameterList([torch.nn.Parameter(torch.zeros(DMLP)) for _ in range(L)])
        self.w2 = torch.nn.ParameterList([n(DMLP, D, std=res) for _ in range(L)])
        self.b2 = torch.nn.ParameterList([torch.nn.Parameter(torch.zeros(D)) for _ in range(L)])

    def forward(self, tokens, targets):
        b, n = tokens.shape
        x = self.emb[tokens] + self.pos[:n]
        scale = 1.0 / math.sqrt(2 * R + Q)
        for l in range(L):
            a = x  # no norm
            pu = (a @ self.u[l]).view(b, n, H, R).transpose(1, 2)
            pv = (a @ self.v[l]).view(b, n, H, R).transpose(1, 2)
            pc = (a @ self.c[l]).view(b, n, H, Q).transpose(1, 2)
            q = torch.cat([pu, pv, pc], dim=-1)
            k = torch.cat([pv, -pu, -pc], dim=-1)
            v = (a @ self.wv[l]).view(b, n, H, DH).transpose(1, 2)
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
            m = x + o.transpose(1, 2).reshape(b, n, H * DH) @ self.wo[l]
            x = m + F.gelu(m @ self.w1[l] + self.b1[l], approximate="tanh") @ self.w2[l] + self.b2[l]
        logits = x @ self.emb.t()
        return F.cross_entropy(logits.reshape(-1, 256), targets.reshape(-1))


class LinearModel(SdModel):
    """The same model with ELU+1 linear attention: Q = A W_Q, K = A W_K per head (no scale)."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(2)
        n = lambda *shape: torch.nn.Parameter(torch.randn(*shape, generator=g) * 0.02)
        del self.u, self.v, self.c
        self.wq = torch.nn.ParameterList([n(D, H * DH) for _ in range(L)])
        self.wk = torch.nn.ParameterList([n(D, H * DH) for _ in range(L)])

    def forward(self, tokens, targets):
        b, n = tokens.shape
        x = self.emb[tokens] + self.pos[:n]
        for l in range(L):
            a = x  # no norm
            heads = lambda w: (a @ w).view(b, n, H, DH).transpose(1, 2)
            o = linear_attention_chunked(heads(self.wq[l]), heads(self.wk[l]), heads(self.wv[l]))
            m = x + o.transpose(1, 2).reshape(b, n, H * DH) @ self.wo[l]
            x = m + F.gelu(m @ self.w1[l] + self.b1[l], approximate="tanh") @ self.w2[l] + self.b2[l]
        logits = x @ self.emb.t()
        return F.cross_entropy(logits.reshape(-1, 256), targets.reshape(-1))


def linear_attention_chunked(q, k, v, eps=1e-6, chunk=64):
    """Causal ELU+1 linear attention over (..., n, d) with n a multiple of chunk: masked blocks
    inside each chunk, the prefix state of the earlier chunks across them."""
    *batch, n, d = q.shape
    fq = (F.elu(q) + 1).reshape(*batch, n // chunk, chunk, d)
    fk = (F.elu(k) + 1).reshape(*batch, n // chunk, chunk, d)
    vc = v.reshape(*batch, n // chunk, chunk, v.shape[-1])
    kv = fk.transpose(-1, -2) @ vc
    s_prev = kv.cumsum(-3) - kv
    ksum = fk.sum(-2)
    z_prev = (ksum.cumsum(-2) - ksum).unsqueeze(-1)
    weights = (fq @ fk.transpose(-1, -2)) * torch.ones(chunk, chunk).tril()
    num = fq @ s_prev + weights @ vc
    den = fq @ z_prev + weights.sum(-1, keepdim=True) + eps
    return (num / den).reshape(*batch, n, -1)


def main():
    linear = "--kind" in sys.argv and sys.argv[sys.argv.index("--kind") + 1] == "linear"
    if "--run-cargo" in sys.argv:
        subprocess.run(["cargo", "bench", "--bench", "train"], cwd=ROOT, check=True)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    text = torch.frombuffer(bytearray((ROOT / "data/shakespeare/train.txt").read_bytes()), dtype=torch.uint8)
    model = LinearModel() if linear else SdModel()
    decay = [p for name, p in model.named_parameters() if name not in ("emb", "pos") and not name.startswith("b")]
    no_decay = [p for name, p in model.named_parameters() if name in ("emb", "pos") or name.startswith("b")]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=3e-3, betas=(0.9, 0.95), eps=1e-8,
    )
    gen = torch.Generator().manual_seed(1)

    def step():
        starts = torch.randint(0, len(text) - CTX - 1, (BATCH,), generator=gen)
        idx = starts[:, None] + torch.arange(CTX + 1)[None, :]
        window = text[idx].long()
        opt.zero_grad(set_to_none=True)
        loss = model(window[:, :-1], window[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.item()

    for _ in range(3):
        step()
    times = []
    for _ in range(20):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    torch_step = statistics.median(times)
    tokens = BATCH * CTX
    est = ROOT / f"target/criterion/train/{'linear' if linear else 'sd'}_demo_step/new/estimates.json"
    model_name = "ELU+1 linear" if linear else f"S-D (r {R}, q {Q})"
    print(f"training step, {model_name} demo model (d {D}, {L} layers x {H} heads), batch {BATCH} x {CTX}, f32, 1 thread")
    print(f"{'':<22}{'ms/step':>10}{'tokens/s':>12}")
    print(f"{'PyTorch eager':<22}{torch_step * 1e3:>10.1f}{tokens / torch_step:>12.0f}   (median of {len(times)} steps, torch {torch.__version__})")
    if est.exists():
        ours = json.loads(est.read_text())["median"]["point_estimate"] * 1e-9
        print(f"{'sd-attention (ours)':<22}{ours * 1e3:>10.1f}{tokens / ours:>12.0f}   (criterion median)")
        print(f"ratio (torch time / ours): {torch_step / ours:.2f}x")
    else:
        print(f"no {est}: run `cargo bench --bench train` first (or pass --run-cargo)")


if __name__ == "__main__":
    main()
