"""PyTorch CPU peers for benches/linear_attention.rs, run alternately with it, and the ratio table.

Two torch implementations of causal ELU+1 linear attention in float32 on one thread
(torch.set_num_threads(1)), d_k = d_v = 64, n = 512, 2048, 4096: the chunked form (masked 64 x 64
blocks plus prefix state, batched matmuls; the stronger peer) and the usual cumulative-sum form
(phi(k_j) v_j^T materialized per token, cumsum over tokens; Katharopoulos et al. 2020). Each is timed
for the forward under no_grad and for forward+backward with autograd (gradients of sum(d_out * out)
w.r.t. q, k, v), and one recurrent step of the same size. Each round first runs the Rust side
(`cargo bench --bench linear_attention -- --times`, one process), then torch, so that a busy machine
affects both sides of a round alike; every round is printed, then the medians of the per-round ratios.
Times are wall-clock medians of repeated calls; thread-CPU medians are printed next to them as a
cross-check (on a shared machine the wall time includes time the thread was not running).

    python3 benches/torch_linear.py --rounds 5

GF/s use the recurrent-form counts (forward 4 n d^2, forward+backward 12 n d^2, step 4 d^2);
'exec' is ours in the flops the chunked kernels execute (see `executed_flops` in the bench) per thread-CPU
second, 'min' ours in the least thread-CPU time of the repeated calls, 'cpu' the ratio of thread-CPU medians.

A Python with torch (numpy, safetensors) runs it; make one with
`python3 -m venv .venv && .venv/bin/pip install -r benches/requirements.txt` and call it as
`.venv/bin/python` in place of `python3` above.
"""
import json
import os
import statistics
import subprocess
import sys
import time

import torch

D = 64
SIZES = [512, 2048, 4096]
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
    """Median wall and thread-CPU seconds of repeated runs after two warm-up runs."""
    for _ in range(2):
        run()
    walls, cpus = [], []
    start = time.perf_counter()
    while len(walls) < min_reps or (time.perf_counter() - start < budget and len(walls) < 200):
        t0, c0 = time.perf_counter(), time.thread_time()
        run()
        cpus.append(time.thread_time() - c0)
        walls.append(time.perf_counter() - t0)
    return statistics.median(walls), statistics.median(cpus)


def runner(implementation, label, q, k, v, d_out):
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


def ours_times():
    """One run of the Rust side: `cargo bench --bench linear_attention -- --times`."""
    result = subprocess.run(["cargo", "bench", "-q", "--bench", "linear_attention", "--", "--times"],
                            cwd=ROOT, check=True, capture_output=True, text=True)
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return {row["n"]: row for row in rows if "n" in row}, next(row for row in rows if "step_wall" in row)


def torch_times():
    times = {}
    for n in SIZES:
        q, k, v, d_out = (torch.rand(n, D) * 2 - 1 for _ in range(4))
        for label in ("fwd", "fwd+bwd"):
            for name, implementation, budget in (("chunked", causal_linear_attention_chunked, 2.0),
                                                 ("cumsum", causal_linear_attention, 1.0)):
                times[(n, label, name)] = median_seconds(runner(implementation, label, q, k, v, d_out),
                                                         budget=budget)
    return times


def torch_step():
    s, z = torch.zeros(D, D), torch.zeros(D)
    q, k, v = (torch.rand(D) * 2 - 1 for _ in range(3))

    def step():
        with torch.no_grad():
            fk, fq = phi(k), phi(q)
            s.add_(torch.outer(fk, v))
            z.add_(fk)
            (fq @ s) / (fq @ z + 1e-6)
    return median_seconds(step, min_reps=1000, budget=1.0)


def main() -> None:
    rounds = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else 3
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 "unknown CPU")
    print(f"{model}; torch {torch.__version__}, threads {torch.get_num_threads()}, float32, d_k = d_v = {D}")
    print(f"{rounds} rounds, each: ours (cargo bench --times), then torch; times are medians of repeated calls")
    print("(wall ms; thread-CPU ms in brackets). GF/s in the recurrent-form count (fwd 4 n d^2, fwd+bwd 12 n d^2);")
    print("'min' is ours in the least thread-CPU ms of the repeated calls; 'exec' is ours in the flops the chunked")
    print("kernels execute per thread-CPU second; 'cpu' is the ratio of thread-CPU medians.")
    all_rounds = []
    for index in range(rounds):
        ours, step = ours_times()
        theirs = torch_times()
        all_rounds.append((ours, theirs))
        print(f"\nround {index + 1}")
        header = (f"{'bench':>8} {'n':>5} | {'ours ms':>15} {'min':>6} {'GF/s':>6} {'exec':>6} | {'chunked ms':>15}"
                  f" {'ratio':>6} {'cpu':>6} | {'cumsum ms':>15} {'ratio':>6}")
        print(header)
        print("-" * len(header))
        for label, key, factor in (("fwd", "fwd", 4), ("fwd+bwd", "both", 12)):
            for n in SIZES:
                wall, cpu = ours[n][f"{key}_wall"], ours[n][f"{key}_cpu"]
                executed = ours[n][f"executed_{key}"]
                chunked, cumsum = theirs[(n, label, "chunked")], theirs[(n, label, "cumsum")]
                least = ours[n][f"{key}_cpu_min"]
                print(f"{label:>8} {n:>5} | {wall * 1e3:7.3f} [{cpu * 1e3:6.3f}] {least * 1e3:6.3f}"
                      f" {factor * n * D * D / wall * 1e-9:6.1f} {executed / cpu * 1e-9:6.1f} |"
                      f" {chunked[0] * 1e3:7.3f} [{chunked[1] * 1e3:6.3f}] {chunked[0] / wall:5.2f}x {chunked[1] / cpu:5.2f}x |"
                      f" {cumsum[0] * 1e3:7.3f} [{cumsum[1] * 1e3:6.3f}] {cumsum[0] / wall:5.2f}x")
        theirs_step = torch_step()
        print(f"{'step':>8} {'1':>5} | {step['step_wall'] * 1e6:7.3f}us [{step['step_cpu'] * 1e6:.3f}us] |"
              f" torch {theirs_step[0] * 1e6:7.3f}us [{theirs_step[1] * 1e6:.3f}us]")
    print("\nmedians over rounds (wall; ratios of each round's own pair, then their median, min and max)")
    for label, key in (("fwd", "fwd"), ("fwd+bwd", "both")):
        for n in SIZES:
            ours = [r[0][n][f"{key}_wall"] for r in all_rounds]
            ratios = [r[1][(n, label, "chunked")][0] / r[0][n][f"{key}_wall"] for r in all_rounds]
            cpu_ratios = [r[1][(n, label, "chunked")][1] / r[0][n][f"{key}_cpu"] for r in all_rounds]
            print(f"{label:>8} {n:>5}: ours {statistics.median(ours) * 1e3:7.3f} ms; vs chunked torch: median"
                  f" {statistics.median(ratios):.2f}x, min {min(ratios):.2f}x, max {max(ratios):.2f}x;"
                  f" thread-CPU ratio median {statistics.median(cpu_ratios):.2f}x, min {min(cpu_ratios):.2f}x")


if __name__ == "__main__":
    main()
