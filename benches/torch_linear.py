"""PyTorch CPU baseline for benches/linear_attention.rs, and the side-by-side ratio table.

Runs the usual cumulative-sum implementation of causal ELU+1 linear attention
(phi(k_j) v_j^T materialized per token, cumsum over tokens; Katharopoulos et al. 2020) in float32 on
one thread (torch.set_num_threads(1)), d_k = d_v = 64, n = 128, 512, 2048, 4096: the forward under
no_grad, and forward+backward with autograd (gradients of sum(d_out * out) w.r.t. q, k, v); for
context also a chunked torch implementation (masked 64 x 64 blocks plus prefix state, batched
matmuls), which is not the target's baseline. It also
times one recurrent step of the same size written in torch. Then it reads the criterion medians of
the Rust bench from target/criterion/<group>/<n>/new/estimates.json and prints both with their ratio.

    cargo bench --bench linear_attention
    python3 benches/torch_linear.py

Flop counts are the recurrent-form counts the Rust bench uses (forward 4 n d^2, backward 8 n d^2,
step 4 d^2). Times are medians over repeated runs after a warm-up.

A Python with torch (numpy, safetensors) runs it; make one with
`python3 -m venv .venv && .venv/bin/pip install -r benches/requirements.txt` and call it as
`.venv/bin/python` in place of `python3` above.
"""
import json
import os
import statistics
import time

import torch

D = 64
SIZES = [128, 512, 2048, 4096]
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def phi(x):
    return torch.nn.functional.elu(x) + 1.0


def causal_linear_attention(q, k, v, eps=1e-6):
    fq, fk = phi(q), phi(k)
    kv = torch.einsum("nd,ne->nde", fk, v).cumsum(0)
    z = fk.cumsum(0)
    num = torch.einsum("nd,nde->ne", fq, kv)
    den = (fq * z).sum(-1, keepdim=True) + eps
    return num / den


def causal_linear_attention_chunked(q, k, v, eps=1e-6, chunk=64):
    """The same in chunks (n a multiple of chunk): masked blocks inside, prefix state across.
    Not the target's baseline; printed for context, since it is much faster than the cumsum form."""
    n, d = q.shape
    fq, fk = phi(q).view(n // chunk, chunk, d), phi(k).view(n // chunk, chunk, d)
    vc = v.view(n // chunk, chunk, -1)
    kv = fk.transpose(1, 2) @ vc                       # per chunk: d_k x d_v
    s_prev = kv.cumsum(0) - kv                           # state of the earlier chunks
    z_prev = (fk.sum(1).cumsum(0) - fk.sum(1)).unsqueeze(-1)
    mask = torch.ones(chunk, chunk).tril()
    weights = (fq @ fk.transpose(1, 2)) * mask
    num = fq @ s_prev + weights @ vc
    den = fq @ z_prev + weights.sum(-1, keepdim=True) + eps
    return (num / den).view(n, -1)


def median_seconds(run, min_reps=5, budget=2.0):
    for _ in range(2):
        run()
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or (time.perf_counter() - start < budget and len(times) < 200):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def criterion_median(group, ident):
    path = os.path.join(ROOT, "target", "criterion", group, str(ident), "new", "estimates.json")
    try:
        with open(path) as f:
            return json.load(f)["median"]["point_estimate"] * 1e-9
    except OSError:
        return None


def fmt_ms(seconds):
    return "      -" if seconds is None else f"{seconds * 1e3:9.3f}"


def gflops(flops, seconds):
    return "     -" if seconds is None else f"{flops / seconds * 1e-9:6.2f}"


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, float32, d_k = d_v = {D}")
    header = (f"{'bench':>8} {'n':>5} | {'ours ms':>9} {'GF/s':>6} | {'torch ms':>9} {'GF/s':>6} |"
              f" {'torch/ours':>10} | {'chunked ms':>10} {'chunked/ours':>12}")
    print(header)
    print("-" * len(header))
    for label, group, factor in [("fwd", "linear_causal_fwd", 4), ("fwd+bwd", "linear_causal_fwd_bwd", 12)]:
        for n in SIZES:
            q, k, v, d_out = (torch.rand(n, D) * 2 - 1 for _ in range(4))
            def runner(implementation):
                if label == "fwd":
                    def run():
                        with torch.no_grad():
                            implementation(q, k, v)
                else:
                    qg, kg, vg = (t.clone().requires_grad_(True) for t in (q, k, v))

                    def run():
                        for t in (qg, kg, vg):
                            t.grad = None
                        implementation(qg, kg, vg).backward(d_out)
                return run
            theirs = median_seconds(runner(causal_linear_attention))
            chunked = median_seconds(runner(causal_linear_attention_chunked))
            ours = criterion_median(group, n)
            flops = factor * n * D * D
            ratio = "         -" if ours is None else f"{theirs / ours:9.2f}x"
            chunked_ratio = "           -" if ours is None else f"{chunked / ours:11.2f}x"
            print(f"{label:>8} {n:>5} | {fmt_ms(ours)} {gflops(flops, ours)} | {fmt_ms(theirs)} "
                  f"{gflops(flops, theirs)} | {ratio} | {fmt_ms(chunked):>10} {chunked_ratio}")
    # One recurrent step, d_k = d_v = 64.
    s, z = torch.zeros(D, D), torch.zeros(D)
    q, k, v = (torch.rand(D) * 2 - 1 for _ in range(3))

    def step():
        with torch.no_grad():
            fk, fq = phi(k), phi(q)
            s.add_(torch.outer(fk, v))
            z.add_(fk)
            (fq @ s) / (fq @ z + 1e-6)
    theirs = median_seconds(step, min_reps=1000, budget=1.0)
    ours = criterion_median("linear_recurrent_step", "64x64")
    ratio = "         -" if ours is None else f"{theirs / ours:9.2f}x"
    print(f"{'step':>8} {'1':>5} | {'-' if ours is None else f'{ours * 1e6:7.3f}us':>9} "
          f"{gflops(4 * D * D, ours)} | {theirs * 1e6:7.3f}us {gflops(4 * D * D, theirs)} | {ratio}")


if __name__ == "__main__":
    main()
