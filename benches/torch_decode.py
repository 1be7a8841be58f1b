#!/usr/bin/env python3
"""PyTorch eager peer of benches/decode.rs: the same model, read from the same checkpoint
(target/cascade.ckpt, the format of src/train/checkpoint.rs), decoded with a cache in eager mode on
one thread (torch.set_num_threads(1)), with the same protocol:

* per-token decode latency: after a 16-byte prompt (prefill, not timed), 112 single-token steps up
  to the full context of 128, timed together, divided by 112;
* prefill of 128 bytes.

Times are the thread's CPU time (time.thread_time(); with one thread, torch computes in the
calling thread), as the Rust bench measures it: the machine may be shared.

Caches: softmax layers keep keys and values, S-D layers the assembled keys [b | -a | -c] and the
values, linear layers the running (S, z). Prints a checksum of the logits after the prompt (the
Rust bench prints the same number) and checks that the cached steps give the full forward's
logits.

usage: python3 benches/torch_decode.py [--load target/cascade.ckpt] [--repeats 15]
"""
import argparse
import math
import struct
import sys
import time
import zlib

import torch

torch.set_num_threads(1)

TEXT = (b"ROMEO:\nBut, soft! what light through yonder window breaks?\nIt is the east, and Juliet is the sun.\n"
        b"Arise, fair sun, and kill the envious moon,\nWho is already sick and pale with grief")
PROMPT = 16


def read_checkpoint(path):
    data = open(path, "rb").read()
    if data[:8] != b"SDATCKPT":
        sys.exit(f"error: {path}: not a checkpoint")
    if zlib.crc32(data[:-4]) != struct.unpack_from("<I", data, len(data) - 4)[0]:
        sys.exit(f"error: {path}: checksum mismatch")
    version, width = struct.unpack_from("<II", data, 8)
    if version != 1 or width != 4:
        sys.exit(f"error: {path}: need version 1, f32")
    d, n_layers, h, dh, d_mlp, ctx, norm, positions, tied = struct.unpack_from("<9I", data, 16)
    kinds = []
    at = 52
    for _ in range(n_layers):
        tag, r, q = struct.unpack_from("<3I", data, at)
        kinds.append(("softmax", "sd", "linear")[tag] if tag < 3 else None)
        kinds[-1] = (kinds[-1], r, q)
        at += 12
    at += 12  # step, buffer count
    (count,) = struct.unpack_from("<Q", data, at)
    at += 8
    params = torch.frombuffer(bytearray(data[at:at + 4 * count]), dtype=torch.float32)
    cfg = dict(d=d, h=h, dh=dh, d_mlp=d_mlp, ctx=ctx, norm=norm, learned=positions == 0, tied=tied == 1,
               kinds=kinds)
    return cfg, params


class Model:
    def __init__(self, cfg, params):
        self.cfg = cfg
        d, h, dh, d_mlp, ctx = cfg["d"], cfg["h"], cfg["dh"], cfg["d_mlp"], cfg["ctx"]
        hw = h * dh
        norm_len = (0, d, 2 * d)[cfg["norm"]]
        self.at = 0

        def take(*shape):
            n = math.prod(shape)
            t = params[self.at:self.at + n].reshape(shape)
            self.at += n
            return t

        self.embedding = take(256, d)
        if cfg["learned"]:
            self.positions = take(ctx, d)
        else:
            p = torch.arange(ctx, dtype=torch.float64)[:, None]
            j = torch.arange(d)
            angle = p * torch.pow(10000.0, -(j - j % 2).double() / d)
            self.positions = torch.where(j % 2 == 0, torch.sin(angle), torch.cos(angle)).float()
        self.layers = []
        for kind, r, q in cfg["kinds"]:
            L = dict(kind=kind, r=r, q=q, norm1=take(norm_len))
            if kind == "sd":
                L["w_qk"] = take(d, h * (2 * r + q))  # [U | V | C] side by side below
                u = L["w_qk"].flatten()[:d * h * r].reshape(d, h * r)
                v = L["w_qk"].flatten()[d * h * r:2 * d * h * r].reshape(d, h * r)
                c = L["w_qk"].flatten()[2 * d * h * r:].reshape(d, h * q)
                L["w_qk"] = torch.cat([u, v, c], dim=1)
            else:
                L["w_q"], L["w_k"] = take(d, hw), take(d, hw)
            L["w_v"], L["w_o"] = take(d, hw), take(hw, d)
            L["norm2"] = take(norm_len)
            L["w_1"], L["b_1"], L["w_2"], L["b_2"] = take(d, d_mlp), take(d_mlp), take(d_mlp, d), take(d)
            self.layers.append(L)
        self.final_norm = take(norm_len)
        self.unembedding = self.embedding.t().contiguous() if cfg["tied"] else take(d, 256)
        assert self.at == params.numel(), (self.at, params.numel())

    def norm(self, g, x):
        kind = self.cfg["norm"]
        if kind == 0:
            return x
        d = self.cfg["d"]
        if kind == 2:
            x = x - x.mean(-1, keepdim=True)
        r = torch.rsqrt((x * x).mean(-1, keepdim=True) + 1e-5)
        y = x * r * g[:d]
        return y + g[d:] if kind == 2 else y

    @staticmethod
    def gelu(u):
        return torch.nn.functional.gelu(u, approximate="tanh")

    @staticmethod
    def phi(x):
        return torch.nn.functional.elu(x) + 1.0

    def heads(self, x, w):
        return x.view(x.shape[0], self.cfg["h"], w).transpose(0, 1)  # (h, n, w)

    def qk(self, L, a):
        h = self.cfg["h"]
        if L["kind"] == "sd":
            r, q = L["r"], L["q"]
            p = a @ L["w_qk"]
            n = a.shape[0]
            A = p[:, :h * r].view(n, h, r)
            B = p[:, h * r:2 * h * r].view(n, h, r)
            C = p[:, 2 * h * r:].view(n, h, q)
            queries = torch.cat([A, B, C], dim=-1).transpose(0, 1)
            keys = torch.cat([B, -A, -C], dim=-1).transpose(0, 1)
            return queries, keys, 1.0 / math.sqrt(2 * r + q)
        dh = self.cfg["dh"]
        return self.heads(a @ L["w_q"], dh), self.heads(a @ L["w_k"], dh), 1.0 / math.sqrt(dh)

    def new_cache(self):
        h, dh, ctx = self.cfg["h"], self.cfg["dh"], self.cfg["ctx"]
        cache = []
        for L in self.layers:
            if L["kind"] == "linear":
                cache.append(dict(S=torch.zeros(h, dh, dh), z=torch.zeros(h, dh)))
            else:
                w = 2 * L["r"] + L["q"] if L["kind"] == "sd" else dh
                cache.append(dict(K=torch.zeros(h, ctx, w), V=torch.zeros(h, ctx, dh)))
        return cache

    def forward(self, tokens, cache, start=0):
        """Logits of every position of `tokens` placed at `start`; fills the cache."""
        n = len(tokens)
        dh = self.cfg["dh"]
        x = self.embedding[tokens] + self.positions[start:start + n]
        for L, c in zip(self.layers, cache):
            a = self.norm(L["norm1"], x)
            v = self.heads(a @ L["w_v"], dh)
            if L["kind"] == "linear":
                q, k = self.phi(self.heads(a @ L["w_q"], dh)), self.phi(self.heads(a @ L["w_k"], dh))
                if n == 1:
                    c["S"] += k[:, 0, :, None] * v[:, 0, None, :]
                    c["z"] += k[:, 0]
                    o = (torch.einsum("hp,hpv->hv", q[:, 0], c["S"]) /
                         (torch.einsum("hp,hp->h", q[:, 0], c["z"]) + 1e-6)[:, None])[:, None]
                else:
                    weights = torch.tril(q @ k.transpose(1, 2))
                    o = (weights @ v) / (weights.sum(-1, keepdim=True) + 1e-6)
                    c["S"] += k.transpose(1, 2) @ v
                    c["z"] += k.sum(1)
            else:
                q, k, scale = self.qk(L, a)
                c["K"][:, start:start + n] = k
                c["V"][:, start:start + n] = v
                keys, values = c["K"][:, :start + n], c["V"][:, :start + n]
                logits = (q @ keys.transpose(1, 2)) * scale
                if n > 1:
                    mask = torch.ones(n, start + n, dtype=torch.bool).tril(start)
                    logits = logits.masked_fill(~mask, float("-inf"))
                o = torch.softmax(logits, dim=-1) @ values
            o = o.transpose(0, 1).reshape(n, -1)
            m = x + o @ L["w_o"]
            hn = self.norm(L["norm2"], m)
            x = m + self.gelu(hn @ L["w_1"] + L["b_1"]) @ L["w_2"] + L["b_2"]
        return self.norm(self.final_norm, x) @ self.unembedding


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--load", default="target/cascade.ckpt")
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    cfg, params = read_checkpoint(args.load)
    model = Model(cfg, params)
    ctx = cfg["ctx"]
    tokens = torch.tensor(list((TEXT * 4)[:ctx]), dtype=torch.long)
    with torch.inference_mode():
        cache = model.new_cache()
        logits = model.forward(tokens[:PROMPT], cache)
        print(f"torch: checksum of the logits after the {PROMPT}-byte prompt: {logits[-1].double().sum().item():.6f}")
        # The cached steps against the full forward.
        full = model.forward(tokens, model.new_cache())
        stepped = [model.forward(tokens[i:i + 1], cache, start=i)[0] for i in range(PROMPT, ctx)]
        err = (torch.stack(stepped) - full[PROMPT:]).abs().max().item() / full.abs().max().item()
        print(f"torch: cached steps vs full forward, max relative difference {err:.2e}")
        step_times, prefill_times = [], []
        for _ in range(args.repeats):
            cache = model.new_cache()
            model.forward(tokens[:PROMPT], cache)
            t = time.thread_time()
            for i in range(PROMPT, ctx):
                model.forward(tokens[i:i + 1], cache, start=i)
            step_times.append((time.thread_time() - t) / (ctx - PROMPT))
            t = time.thread_time()
            model.forward(tokens, model.new_cache())
            prefill_times.append(time.thread_time() - t)
    step_times.sort()
    prefill_times.sort()
    step, prefill = step_times[len(step_times) // 2], prefill_times[len(prefill_times) // 2]
    print(f"torch {torch.__version__}, 1 thread, CPU time: decode step median {step * 1e6:.1f} us/token "
          f"({1 / step:.0f} tokens/s); prefill {ctx} median {prefill * 1e3:.3f} ms")


if __name__ == "__main__":
    main()
