"""PyTorch CPU baseline for benches/attention.rs, printed side by side with our criterion medians.

Usage (from the repository root):

    cargo bench --bench attention                         # writes target/criterion/<group>/<id>/new/estimates.json
    python3 benches/torch_softmax_sd.py                   # times PyTorch, prints the table

`--run-cargo` runs the cargo bench first, so that both sides come from one run of this script.
`--only softmax` (or `sd`) restricts both sides to one kernel family, `--sizes 512,2048` to some n
(short runs while iterating; the cargo bench gets the matching criterion filter).
PyTorch runs single-threaded (torch.set_num_threads(1)), float32, d = 64:
- softmax: torch.nn.functional.scaled_dot_product_attention on (1, 1, n, 64), bidirectional;
- S-D (r = q = rank, d_model = d_v = 64): projections X U, X V, X C, X W_V, concatenated queries
  [XU, XV, XC] and keys [XV, -XU, -XC], then scaled_dot_product_attention with scale 1/sqrt(3 rank),
  i.e. the same factorization as src/attention/sd.rs; the backward gives gradients for X, U, V, C, W_V.
Flop counts are the ones the Rust bench reports. Times are medians; ratio = torch median / ours
median (> 1: we are faster).

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

D = 64
SIZES = [128, 512, 2048, 4096]
ROOT = pathlib.Path(__file__).resolve().parent.parent


def softmax_flops(n, d_k, d_v):
    fwd = 2 * n * n * (d_k + d_v)
    bwd = 2 * n * n * (3 * d_k + 2 * d_v)
    return fwd, fwd + bwd


def sd_flops(n, rank):
    width = 3 * rank
    projection = 2 * n * D * (width + D)
    fwd_attn, total_attn = softmax_flops(n, width, D)
    fwd = fwd_attn + projection
    return fwd, total_attn + 4 * projection


def median_time(fn, n):
    reps = 30 if n <= 512 else 10 if n <= 2048 else 5
    for _ in range(2):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def torch_softmax(n):
    gen = torch.Generator().manual_seed(n)
    q, k, v = (torch.rand(1, 1, n, D, generator=gen) * 2 - 1 for _ in range(3))
    d_out = torch.rand(1, 1, n, D, generator=gen) * 2 - 1
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def fwd():
        with torch.no_grad():
            sdpa(q, k, v)

    qg, kg, vg = (t.clone().requires_grad_(True) for t in (q, k, v))

    def fwd_bwd():
        for t in (qg, kg, vg):
            t.grad = None
        sdpa(qg, kg, vg).backward(d_out)

    return median_time(fwd, n), median_time(fwd_bwd, n)


def torch_sd(n, rank):
    gen = torch.Generator().manual_seed(n + rank)
    x = torch.rand(n, D, generator=gen) * 2 - 1
    u, v, c = (0.2 * (torch.rand(D, rank, generator=gen) * 2 - 1) for _ in range(3))
    w_v = 0.2 * (torch.rand(D, D, generator=gen) * 2 - 1)
    d_out = torch.rand(n, D, generator=gen) * 2 - 1
    scale = 1.0 / math.sqrt(3 * rank)

    def head(x, u, v, c, w_v):
        a, b, cc = x @ u, x @ v, x @ c
        qh = torch.cat([a, b, cc], dim=1)
        kh = torch.cat([b, -a, -cc], dim=1)
        return torch.nn.functional.scaled_dot_product_attention(
            qh[None, None], kh[None, None], (x @ w_v)[None, None], scale=scale
        )[0, 0]

    def fwd():
        with torch.no_grad():
            head(x, u, v, c, w_v)

    leaves = [t.clone().requires_grad_(True) for t in (x, u, v, c, w_v)]

    def fwd_bwd():
        for t in leaves:
            t.grad = None
        head(*leaves).backward(d_out)

    return median_time(fwd, n), median_time(fwd_bwd, n)


def ours(group, bench_id, n):
    path = ROOT / "target" / "criterion" / group / bench_id / str(n) / "new" / "estimates.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())["median"]["point_estimate"] * 1e-9


def option(name):
    if name in sys.argv:
        return sys.argv[sys.argv.index(name) + 1]
    return None


def main():
    only = option("--only")
    sizes = [int(s) for s in option("--sizes").split(",")] if option("--sizes") else SIZES
    if "--run-cargo" in sys.argv:
        groups = {"softmax": "softmax_f32", "sd": "sd_r[0-9]+_f32"}.get(only, ".*")
        sizes_re = "|".join(str(n) for n in sizes)
        filter_re = f"^{groups}/[a-z_]+/({sizes_re})$"
        subprocess.run(["cargo", "bench", "--bench", "attention", "--", filter_re], cwd=ROOT, check=True)
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, float32, d = {D}")
    header = f"{'kernel':<14}{'pass':<9}{'n':>6}{'ours ms':>11}{'ours GF/s':>11}{'torch ms':>11}{'torch GF/s':>12}{'torch/ours':>12}"
    print(header)
    print("-" * len(header))
    rows = []
    for n in sizes:
        if only in (None, "softmax"):
            t_fwd, t_fb = torch_softmax(n)
            f_fwd, f_fb = softmax_flops(n, D, D)
            rows.append(("softmax", "softmax_f32", n, [("fwd", t_fwd, f_fwd), ("fwd_bwd", t_fb, f_fb)]))
        for rank in (8, 32) if only in (None, "sd") else ():
            t_fwd, t_fb = torch_sd(n, rank)
            f_fwd, f_fb = sd_flops(n, rank)
            rows.append((f"sd r={rank}", f"sd_r{rank}_f32", n, [("fwd", t_fwd, f_fwd), ("fwd_bwd", t_fb, f_fb)]))
    rows.sort(key=lambda r: (r[0], r[2]))
    for name, group, n, passes in rows:
        for bench_id, t_torch, flops in passes:
            t_ours = ours(group, bench_id, n)
            ours_ms = f"{t_ours * 1e3:11.3f}" if t_ours else f"{'-':>11}"
            ours_gf = f"{flops / t_ours * 1e-9:11.1f}" if t_ours else f"{'-':>11}"
            ratio = f"{t_torch / t_ours:12.2f}" if t_ours else f"{'-':>12}"
            print(f"{name:<14}{bench_id:<9}{n:>6}{ours_ms}{ours_gf}{t_torch * 1e3:11.3f}{flops / t_torch * 1e-9:12.1f}{ratio}")


if __name__ == "__main__":
    main()
