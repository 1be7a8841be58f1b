"""Reference spectra for tests/exact_lapack.rs: singular values of S and eigenvalues of D of
softmax heads, computed by LAPACK through numpy (float64) on the formed d_model x d_model matrices:
`numpy.linalg.svd(S, compute_uv=False)` (gesdd) and `numpy.linalg.eigvalsh(D)` (syevd).

The factors are not stored: both sides generate them from SplitMix64 (the crate's
`sd_attention::rng::SplitMix64`, ported below bit for bit) with uniform entries in [-1, 1), and
build the structured kinds with exact operations only (products by small integers, sign
changes, powers of two), so the Rust test sees the same bits.

Kinds: random; rank-deficient (W_K's columns in the span of two columns of W_Q, last one zero);
repeated (W_K a signed permutation of W_Q's columns: values of equal magnitude); graded (column j
of both factors scaled by 2^-floor(40 j / d_head), twelve decades).

Output: tests/reference/fixtures/exact_spectra.txt, one line per array:
`name rows cols values...` with names `<case>.sigma_s` (the k = min(d_model, 2 d_head) largest
singular values, descending) and `<case>.lambda_d` (the k eigenvalues of largest magnitude,
ascending), and `<case>.shape` (d_model, d_head, kind, seed).

Run: python3 tests/reference/exact_spectra.py
"""
import os
import numpy as np

MASK = (1 << 64) - 1


class SplitMix64:
    def __init__(self, seed):
        self.state = seed & MASK

    def next_u64(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def next_f64(self):
        return float(self.next_u64() >> 11) * (1.0 / float(1 << 53))

    def uniform(self, low, high):
        return low + (high - low) * self.next_f64()


KINDS = ["random", "rank_deficient", "repeated", "graded"]


def factors(d_model, d_head, kind, seed):
    rng = SplitMix64(seed)
    w_q = np.array([rng.uniform(-1.0, 1.0) for _ in range(d_model * d_head)]).reshape(d_model, d_head)
    w_k = np.array([rng.uniform(-1.0, 1.0) for _ in range(d_model * d_head)]).reshape(d_model, d_head)
    if kind == "rank_deficient":
        second = 1 % d_head
        for j in range(d_head):
            w_k[:, j] = 0.0 if j + 1 == d_head else float(j + 1) * w_q[:, 0] - w_q[:, second]
    elif kind == "repeated":
        for j in range(d_head):
            sign = 1.0 if j % 2 == 0 else -1.0
            w_k[:, j] = sign * w_q[:, (j + 1) % d_head]
    elif kind == "graded":
        for j in range(d_head):
            scale = 2.0 ** -((40 * j) // d_head)
            w_q[:, j] *= scale
            w_k[:, j] *= scale
    return w_q, w_k


CASES = [(d_model, d_head, kind, 100 + 10 * i + j)
         for i, (d_model, d_head) in enumerate([(768, 64), (256, 32), (97, 13), (40, 24)])
         for j, kind in enumerate(KINDS)]


def main():
    lines = ["# sigma of S (descending, top k) and lambda of D (k of largest |lambda|, ascending) by numpy/LAPACK float64; see exact_spectra.py"]
    for d_model, d_head, kind, seed in CASES:
        w_q, w_k = factors(d_model, d_head, kind, seed)
        m = w_q @ w_k.T
        s = (m - m.T) / 2
        d = (m + m.T) / 2
        k = min(d_model, 2 * d_head)
        sigma = np.linalg.svd(s, compute_uv=False)[:k]
        lam = np.linalg.eigvalsh(d)
        lam = np.sort(lam[np.argsort(-np.abs(lam), kind="stable")[:k]])
        case = f"{kind}_{d_model}x{d_head}"
        lines.append(f"{case}.shape 1 4 {d_model} {d_head} {KINDS.index(kind)} {seed}")
        lines.append(f"{case}.sigma_s 1 {k} " + " ".join(repr(float(v)) for v in sigma))
        lines.append(f"{case}.lambda_d 1 {k} " + " ".join(repr(float(v)) for v in lam))
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "exact_spectra.txt")
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {len(CASES)} cases to {out} (numpy {np.__version__})")


if __name__ == "__main__":
    main()
