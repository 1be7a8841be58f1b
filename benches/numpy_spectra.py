"""LAPACK (through numpy, float64, one thread) beside the crate's exact and Lanczos spectra of one
attention head, d_model 768, d_head 64 by default: values and times side by side.

numpy's routes, each timed as the minimum and median wall time of repeated runs, and as the
thread's CPU time per run over the whole series (which leaves out waits for a core on a shared
machine; the crate's side reads it from /proc/thread-self/schedstat, which the kernel updates at
scheduler ticks, so only series are timed that way):
  * form S = (W_Q W_K^T - W_K W_Q^T)/2, dense SVD (gesdd), values only;
  * the same plus D = (W_Q W_K^T + W_K W_Q^T)/2 and eigvalsh(D) (syevd): S and D together;
  * eigvalsh(S^T S) (the squares of the singular values of S);
  * thin QR of A = [W_Q W_K] (geqrf, `mode="r"`), then the SVD of the 2 d_head x 2 d_head skew core
    R J_s R^T (and eigvalsh of R J_d R^T for D): the route of docs/math.md section 9 in LAPACK.
The crate's times come from `examples/spectra_timing.rs` run on the same factors (written to a
temporary file): the exact path for S and D together, its thin QR alone, and Lanczos. The values
check: the crate's singular values of S and eigenvalues of D against LAPACK's dense ones, relative
to the largest, and the entropy effective ranks of each route.

One thread: OPENBLAS_NUM_THREADS / OMP_NUM_THREADS / MKL_NUM_THREADS are set to 1 before numpy is
imported, and threadpoolctl limits the BLAS pools as well. OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are
removed from this process's environment, so OpenBLAS picks its kernel by CPU detection; the kernel
it runs (threadpoolctl's "architecture") is printed.

    cargo build --release --example spectra_timing
    python3 benches/numpy_spectra.py [--d-model 768] [--d-head 64] [--reps 50] [--binary PATH]

Needs numpy; threadpoolctl (`pip install numpy threadpoolctl`) to report and pin the BLAS pool.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
    os.environ.pop(name, None)
for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[name] = "1"

import contextlib  # noqa: E402

import numpy as np  # noqa: E402  (after the environment is set)

try:
    from threadpoolctl import threadpool_info, threadpool_limits
except ImportError:  # the environment variables above already ask for one thread
    def threadpool_info():
        return [{"internal_api": "unknown (threadpoolctl not installed)"}]

    def threadpool_limits(limits):
        return contextlib.nullcontext()


def timed(reps, f):
    """(wall minimum, wall median, thread CPU time per run over the series) in milliseconds."""
    f()
    wall = []
    cpu_start = time.thread_time()
    for _ in range(reps):
        start = time.perf_counter()
        f()
        wall.append((time.perf_counter() - start) * 1e3)
    cpu_mean = (time.thread_time() - cpu_start) * 1e3 / reps
    wall.sort()
    return wall[0], wall[len(wall) // 2], cpu_mean


def erank(sigma):
    sigma = np.abs(np.asarray(sigma, dtype=np.float64))
    total = sigma.sum()
    if total == 0.0:
        return 0.0
    p = sigma[sigma > 0] / total
    return float(np.exp(-(p * np.log(p)).sum()))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d-model", type=int, default=768)
    parser.add_argument("--d-head", type=int, default=64)
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--binary", default=None, help="spectra_timing binary (default: target/release/examples/spectra_timing)")
    args = parser.parse_args()
    d_model, d_head, reps = args.d_model, args.d_head, args.reps
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    binary = args.binary or os.path.join(root, "target", "release", "examples", "spectra_timing")
    if not os.path.exists(binary):
        sys.exit(f"error: {binary}: not built (cargo build --release --example spectra_timing)")

    rng = np.random.default_rng(1)
    w_q = rng.standard_normal((d_model, d_head)) / np.sqrt(d_model)
    w_k = rng.standard_normal((d_model, d_head)) / np.sqrt(d_model)
    k = min(d_model, 2 * d_head)
    h = d_head

    def dense_s():
        m = w_q @ w_k.T
        return np.linalg.svd((m - m.T) / 2, compute_uv=False)

    def dense_s_and_d():
        m = w_q @ w_k.T
        return np.linalg.svd((m - m.T) / 2, compute_uv=False), np.linalg.eigvalsh((m + m.T) / 2)

    def gram_s():
        m = w_q @ w_k.T
        s = (m - m.T) / 2
        return np.sqrt(np.abs(np.linalg.eigvalsh(s.T @ s)))

    def qr_core(with_d):
        r = np.linalg.qr(np.hstack([w_q, w_k]), mode="r")
        core = r[:, :h] @ r[:, h:].T
        sigma = np.linalg.svd((core - core.T) / 2, compute_uv=False)
        if with_d:
            return sigma, np.linalg.eigvalsh((core + core.T) / 2)
        return sigma

    with threadpool_limits(limits=1):
        blas = [
            {key: info.get(key) for key in ("internal_api", "version", "architecture", "num_threads", "threading_layer")}
            for info in threadpool_info()
        ]
        sigma_ref, lambda_ref = dense_s_and_d()
        sigma_ref = sigma_ref[:k]
        lambda_ref = np.sort(lambda_ref[np.argsort(-np.abs(lambda_ref), kind="stable")[:k]])
        sigma_qr, lambda_qr = qr_core(True)
        times = {
            "numpy: form S, dense SVD": timed(reps, dense_s),
            "numpy: form S and D, SVD(S) + eigvalsh(D)": timed(reps, dense_s_and_d),
            "numpy: eigvalsh(S^T S)": timed(reps, gram_s),
            "numpy: QR of [W_Q W_K] + SVD of the core (S)": timed(reps, lambda: qr_core(False)),
            "numpy: QR + SVD(S core) + eigvalsh(D core)": timed(reps, lambda: qr_core(True)),
        }

    with tempfile.TemporaryDirectory() as tmp:
        factors = os.path.join(tmp, "factors.bin")
        values = os.path.join(tmp, "values.txt")
        np.concatenate([w_q.ravel(), w_k.ravel()]).astype("<f8").tofile(factors)
        out = subprocess.run(
            [binary, "--d-model", str(d_model), "--d-head", str(d_head), "--reps", str(4 * reps),
             "--factors", factors, "--values", values],
            check=True, capture_output=True, text=True,
            env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
        ).stdout
        with open(values) as f:
            ours_sigma, ours_lambda = (np.array([float(v) for v in line.split()]) for line in f.read().splitlines()[:2])
    ours = {}
    for line in out.splitlines():
        fields = line.split()
        if fields and fields[0] == "time":
            ours[fields[1]] = tuple(float(fields[i]) for i in (3, 5, 7))
    labels = {
        "exact_s_and_d": "ours: exact, S and D (QR + two cores + eranks)",
        "qr_only": "ours: thin QR of [W_Q W_K] alone",
        "lanczos_s_and_d": "ours: Lanczos, S and D",
        "lanczos_s": "ours: Lanczos, erank of S",
    }
    for key, label in labels.items():
        times[label] = ours[key]

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print(f"CPU: {cpu}; numpy {np.__version__}; BLAS: {blas}")
    print(f"head d_model {d_model}, d_head {d_head}, float64, one thread; numpy {reps} runs, ours {4 * reps}")
    print()
    print(f"| {'method':<50} | {'min ms':>8} | {'median ms':>9} | {'CPU ms':>8} |")
    print(f"|{'-' * 52}|{'-' * 10}|{'-' * 11}|{'-' * 10}|")
    for label, (low, median, cpu_mean) in times.items():
        print(f"| {label:<50} | {low:8.3f} | {median:9.3f} | {cpu_mean:8.3f} |")
    exact = times[labels["exact_s_and_d"]]
    print()
    print("ratios peer / ours exact (wall min, wall median, thread CPU per run):")
    for peer in ("numpy: form S, dense SVD", "numpy: form S and D, SVD(S) + eigvalsh(D)",
                 "numpy: QR of [W_Q W_K] + SVD of the core (S)", "numpy: QR + SVD(S core) + eigvalsh(D core)",
                 labels["lanczos_s_and_d"]):
        t = times[peer]
        print(f"  {peer}: {t[0] / exact[0]:.1f}x, {t[1] / exact[1]:.1f}x, {t[2] / exact[2]:.1f}x")
    print()
    scale_s, scale_d = sigma_ref[0], np.abs(lambda_ref).max()
    print("values against LAPACK's dense SVD / eigvalsh, relative to the largest:")
    print(f"  ours exact:  sigma(S) {np.abs(ours_sigma - sigma_ref).max() / scale_s:.1e}, "
          f"lambda(D) {np.abs(ours_lambda - lambda_ref).max() / scale_d:.1e}")
    print(f"  numpy QR route: sigma(S) {np.abs(sigma_qr - sigma_ref).max() / scale_s:.1e}, "
          f"lambda(D) {np.abs(np.sort(lambda_qr) - lambda_ref).max() / scale_d:.1e}")
    pairs = np.abs(ours_sigma[0::2] - ours_sigma[1::2]).max() / scale_s
    pairs_lapack = np.abs(sigma_ref[0::2] - sigma_ref[1::2]).max() / scale_s
    print(f"  pairs sigma_2i - sigma_2i+1: ours {pairs:.1e}, LAPACK {pairs_lapack:.1e}")
    print(f"  erank S: LAPACK {erank(sigma_ref):.12f}, ours {erank(ours_sigma):.12f}")
    print(f"  erank D: LAPACK {erank(lambda_ref):.12f}, ours {erank(ours_lambda):.12f}")
    print()
    print(out.strip())


if __name__ == "__main__":
    main()
