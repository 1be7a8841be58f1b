"""Thread scaling, ours against PyTorch CPU eager at the same thread counts.

For each thread count t (default 1, 2, 4, 8, 16) it times, in PyTorch (float32,
torch.set_num_threads(t)):
  * the training step of benches/torch_train.py (the cascade demo's S-D model, batch 16 x 128);
  * causal softmax attention forward + backward, 8 heads of 64 at n = 2048
    (scaled_dot_product_attention on 1 x 8 x 2048 x 64);
  * causal ELU+1 linear attention forward + backward, the same shapes, in torch's chunked form
    (masked 64 x 64 blocks plus prefix state, batched over heads; faster in torch than the cumsum
    form of benches/torch_linear.py);
and, with `--bench-dir DIR` (the crate's bench binaries, built with
`cargo bench --no-run --features parallel --bench train --bench attention --bench linear_attention`,
copied into DIR as train, attention, linear_attention), runs the same three on our side with
RAYON_NUM_THREADS=t and reads criterion's medians. Prints one table; `--json FILE` also writes
the numbers. `--rounds R` repeats the whole sweep R times (thread counts in turn each round, so
slow phases of a shared or virtual host spread over all of them) and reports each cell's median
over the rounds, with every round's 2-thread speed-up. benches/scaling.sh runs it with the bench
binaries found in target/.

    python3 benches/torch_scaling.py --threads 1,2 --bench-dir target/release/deps-copies
"""
import argparse
import json
import math
import os
import pathlib
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import torch_train as tt  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
N, H, DH = 2048, 8, 64


def median_seconds(run, min_reps=5, budget=2.0, warmup=2):
    for _ in range(warmup):
        run()
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or (time.perf_counter() - start < budget and len(times) < 100):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def train_step_fn(corpus):
    torch.manual_seed(0)
    text = torch.frombuffer(bytearray((pathlib.Path(corpus) / "train.txt").read_bytes()), dtype=torch.uint8)
    model = tt.SdModel()
    decay = [p for name, p in model.named_parameters() if name not in ("emb", "pos") and not name.startswith("b")]
    no_decay = [p for name, p in model.named_parameters() if name in ("emb", "pos") or name.startswith("b")]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=3e-3, betas=(0.9, 0.95), eps=1e-8,
    )
    gen = torch.Generator().manual_seed(1)

    def step():
        starts = torch.randint(0, len(text) - tt.CTX - 1, (tt.BATCH,), generator=gen)
        idx = starts[:, None] + torch.arange(tt.CTX + 1)[None, :]
        window = text[idx].long()
        opt.zero_grad(set_to_none=True)
        loss = model(window[:, :-1], window[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.item()

    return step


def softmax_fn():
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, H, N, DH, generator=g).requires_grad_() for _ in range(3))
    d_out = torch.randn(1, H, N, DH, generator=g)

    def run():
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        out.backward(d_out)
        q.grad = k.grad = v.grad = None

    return run


def phi(x):
    return F.elu(x) + 1.0


def linear_chunked(q, k, v, eps=1e-6, chunk=64):
    h, n, d = q.shape
    fq, fk = phi(q).view(h, n // chunk, chunk, d), phi(k).view(h, n // chunk, chunk, d)
    vc = v.view(h, n // chunk, chunk, -1)
    kv = fk.transpose(-1, -2) @ vc
    s_prev = kv.cumsum(1) - kv
    fks = fk.sum(2)
    z_prev = (fks.cumsum(1) - fks).unsqueeze(-1)
    mask = torch.ones(chunk, chunk).tril()
    weights = (fq @ fk.transpose(-1, -2)) * mask
    num = fq @ s_prev + weights @ vc
    den = fq @ z_prev + weights.sum(-1, keepdim=True) + eps
    return (num / den).view(h, n, -1)


def linear_cumsum(q, k, v, eps=1e-6):
    """The cumulative-sum form of benches/torch_linear.py, batched over heads."""
    fq, fk = phi(q), phi(k)
    kv = torch.einsum("hnd,hne->hnde", fk, v).cumsum(1)
    z = fk.cumsum(1)
    num = torch.einsum("hnd,hnde->hne", fq, kv)
    den = (fq * z).sum(-1, keepdim=True) + eps
    return num / den


def linear_fn(form=None):
    form = form or linear_chunked
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(H, N, DH, generator=g).requires_grad_() for _ in range(3))
    d_out = torch.randn(H, N, DH, generator=g)

    def run():
        out = form(q, k, v)
        out.backward(d_out)
        q.grad = k.grad = v.grad = None

    return run


def torch_parts(corpus, budget):
    """The training step's forward, and forward + backward, in torch (to compare with the parts
    benches/train.rs times: sd_demo_forward, sd_demo_forward_backward)."""
    text = torch.frombuffer(bytearray((pathlib.Path(corpus) / "train.txt").read_bytes()), dtype=torch.uint8)
    model = tt.SdModel()
    window = text[: tt.BATCH * (tt.CTX + 1)].long().view(tt.BATCH, tt.CTX + 1)
    tokens, targets = window[:, :-1], window[:, 1:]

    def forward():
        with torch.no_grad():
            model(tokens, targets)

    def forward_backward():
        model.zero_grad(set_to_none=True)
        model(tokens, targets).backward()

    return {"torch_forward": median_seconds(forward, budget=budget),
            "torch_forward_backward": median_seconds(forward_backward, budget=budget)}


def ours(bench_dir, out_dir, threads, binary, filt, args):
    """Runs one of our criterion bench binaries with RAYON_NUM_THREADS; returns its median (s)."""
    home = pathlib.Path(out_dir) / f"criterion-t{threads}"
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), CRITERION_HOME=str(home))
    cmd = [str(pathlib.Path(bench_dir) / binary), "--bench", filt, "--noplot"] + args
    done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)}: exit {done.returncode}\n{done.stderr[-2000:]}")
    found = [p for p in home.rglob("new/estimates.json") if filt.split("/")[0] in str(p)]
    if not found:
        return None
    latest = max(found, key=lambda p: p.stat().st_mtime)
    return json.loads(latest.read_text())["median"]["point_estimate"] * 1e-9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", default="1,2,4,8,16")
    ap.add_argument("--bench-dir", default=None)
    ap.add_argument("--out-dir", default="target/scaling")
    ap.add_argument("--corpus", default=str(ROOT / "data/shakespeare"))
    ap.add_argument("--criterion-args", default="--warm-up-time 1 --measurement-time 3")
    ap.add_argument("--budget", type=float, default=2.0, help="seconds of torch timing per cell")
    ap.add_argument("--json", default=None)
    ap.add_argument("--cumsum", action="store_true",
                    help="also time the cumsum form of linear attention (slow: the documented peer of torch_linear.py)")
    ap.add_argument("--rounds", type=int, default=1, help="sweeps over the thread counts; cells are medians")
    ap.add_argument("--parts", action="store_true",
                    help="also time torch's forward and forward+backward of the training step at the first thread count")
    a = ap.parse_args()
    threads = [int(t) for t in a.threads.split(",")]
    crit = a.criterion_args.split()
    sweeps = []
    for rnd in range(a.rounds):
        sweeps.append(sweep(a, threads, crit, parts=a.parts and rnd == 0))
    rows = []
    for i, t in enumerate(threads):
        row = {"threads": t}
        for key in sweeps[0][i]:
            values = [s[i][key] for s in sweeps if s[i].get(key) is not None]
            row[key] = statistics.median(values) if values and key != "threads" else sweeps[0][i][key]
        rows.append(row)
    report(a, rows, sweeps)


def sweep(a, threads, crit, parts):
    """One pass over the thread counts; returns one row of seconds per thread count."""
    rows = []
    for t in threads:
        torch.set_num_threads(t)
        row = {"threads": t}
        row["torch_train"] = median_seconds(train_step_fn(a.corpus), budget=a.budget)
        row["torch_softmax"] = median_seconds(softmax_fn(), budget=a.budget)
        row["torch_linear"] = median_seconds(linear_fn(), budget=a.budget)
        if a.cumsum:
            # Seconds per call at n = 2048 x 8 heads: one warm-up call and one timed.
            row["torch_linear_cumsum"] = median_seconds(linear_fn(linear_cumsum), min_reps=1, budget=0, warmup=1)
        if a.bench_dir:
            os.environ["SDA_CORPUS"] = a.corpus
            row["ours_train"] = ours(a.bench_dir, a.out_dir, t, "train", "sd_demo_step", crit)
            row["ours_softmax"] = ours(a.bench_dir, a.out_dir, t, "attention", "multihead_softmax_causal_f32", crit)
            row["ours_linear"] = ours(a.bench_dir, a.out_dir, t, "linear_attention", "linear_multihead_causal_f32", crit)
        if parts and t == threads[0]:
            row.update(torch_parts(a.corpus, a.budget))
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def report(a, rows, sweeps):
    """Prints the tables of `rows` (medians over `sweeps`)."""
    print(f"\ntorch {torch.__version__}; float32; times in ms (medians); ratio = torch / ours (> 1: we are faster)")
    for part, label in [("train", "training step, S-D demo, batch 16 x 128"),
                        ("softmax", "causal softmax attention fwd+bwd, 8 x 64 heads, n 2048"),
                        ("linear", "causal ELU+1 linear attention fwd+bwd, 8 x 64 heads, n 2048 (torch chunked)")]:
        print(f"\n{label}\n| threads | ours ms | torch ms | ratio | ours speed-up vs 1 thread |\n|---|---|---|---|---|")
        base = rows[0].get(f"ours_{part}")
        for r in rows:
            o, tt_ = r.get(f"ours_{part}"), r[f"torch_{part}"]
            if o:
                print(f"| {r['threads']} | {o * 1e3:.2f} | {tt_ * 1e3:.2f} | {tt_ / o:.2f}x | {base / o:.2f}x |")
            else:
                print(f"| {r['threads']} | - | {tt_ * 1e3:.2f} | - | - |")
    if len(sweeps) > 1 and len(rows) > 1 and rows[1]["threads"] == 2 and rows[0]["threads"] == 1:
        print("\n2 threads against 1, every round (ours train: 1t/2t; ours train 2t / torch 2t ratio):")
        for k, s in enumerate(sweeps):
            o1, o2, t2 = s[0].get("ours_train"), s[1].get("ours_train"), s[1]["torch_train"]
            if o1 and o2:
                print(f"  round {k + 1}: speed-up {o1 / o2:.2f}x, torch/ours at 2 threads {t2 / o2:.2f}x")
    if a.cumsum:
        print("\nlinear attention, torch cumsum form (one timed call)\n| threads | ours ms | torch cumsum ms | ratio |\n|---|---|---|---|")
        for r in rows:
            o = r.get("ours_linear")
            print(f"| {r['threads']} | {o * 1e3 if o else float('nan'):.2f} | {r['torch_linear_cumsum'] * 1e3:.1f} | "
                  f"{r['torch_linear_cumsum'] / o if o else float('nan'):.1f}x |")
    if "torch_forward" in rows[0]:
        r = rows[0]
        print(f"\nparts at {r['threads']} thread(s), torch ms: forward (no_grad) {r['torch_forward'] * 1e3:.2f}, "
              f"forward+backward {r['torch_forward_backward'] * 1e3:.2f}, step {r['torch_train'] * 1e3:.2f}")
    if a.json:
        pathlib.Path(a.json).write_text(json.dumps({"medians": rows, "rounds": sweeps}, indent=1))


if __name__ == "__main__":
    main()
