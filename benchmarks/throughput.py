"""Training throughput of proxylab's GPT on this machine's CPU, against a matmul peak and a
plain nanoGPT-style baseline written below. A script that prints a table, not a test.

    .venv/bin/python benchmarks/throughput.py [--widths 64 128 256] [--rounds 7] [--threads N]
                                              [--no-qk-rope]

One training step = forward + cross-entropy + backward + torch.optim.AdamW step, fp32.
Columns: tokens/s, achieved GFLOP/s (proxylab.models.flops_per_token x tokens/s), share of
the fp32 matmul peak (best of several 2048^3 matmuls), and proxylab / baseline.
The two models are timed in alternating rounds so that load from other processes hits both
alike; best and median over rounds are printed (the machine may be shared: read the median).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from proxylab.config import ModelConfig
from proxylab.models import build_model, flops_per_token

SEQ_LEN = 128  # the research brief's proxy context
VOCAB = 256  # byte-level text
DEPTH = 2  # the smallest proxies of the research brief
HEAD_DIM = 32  # heads = width / 32, as in the brief's size ladder
BATCH = {64: 64, 128: 32, 256: 16}  # sequences per step: ~70-170 ms per step on 2 idle cores


# ----------------------------------------------------------------------------------
# a straightforward nanoGPT-style implementation of the same model (untied head, no bias)


class NanoAttention(nn.Module):
    def __init__(self, d, n_head):
        super().__init__()
        self.n_head = n_head
        self.c_attn = nn.Linear(d, 3 * d, bias=False)
        self.c_proj = nn.Linear(d, d, bias=False)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class NanoBlock(nn.Module):
    def __init__(self, d, n_head):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d, bias=False)
        self.attn = NanoAttention(d, n_head)
        self.ln_2 = nn.LayerNorm(d, bias=False)
        self.c_fc = nn.Linear(d, 4 * d, bias=False)
        self.c_proj = nn.Linear(4 * d, d, bias=False)
        self.gelu = nn.GELU()

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.c_proj(self.gelu(self.c_fc(self.ln_2(x))))


class NanoGPT(nn.Module):
    def __init__(self, d, n_layer, n_head, vocab, block_size):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(block_size, d)
        self.h = nn.ModuleList(NanoBlock(d, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d, bias=False)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, idx):
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


# ----------------------------------------------------------------------------------
# timing


class MatmulProbe:
    """fp32 GEMM speed of an n^3 square matmul; ``best`` is the machine's peak seen so far."""

    def __init__(self, n: int = 2048):
        self.a, self.b, self.n, self.best = torch.randn(n, n), torch.randn(n, n), n, 0.0
        self.a @ self.b  # warm-up

    def __call__(self, repeats: int = 1) -> float:
        t = min(_timed(lambda: self.a @ self.b) for _ in range(repeats))
        gflops = 2 * self.n**3 / t / 1e9
        self.best = max(self.best, gflops)
        return gflops


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def make_step(model, batch):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.0)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, VOCAB, (batch, SEQ_LEN), generator=gen)
    y = torch.randint(0, VOCAB, (batch, SEQ_LEN), generator=gen)

    def step():
        opt.zero_grad(set_to_none=True)
        logits = model(x)
        loss = F.cross_entropy(logits.view(-1, VOCAB), y.view(-1))
        loss.backward()
        opt.step()

    return step


def time_steps(step, n: int) -> float:
    return _timed(lambda: [step() for _ in range(n)]) / n


def bench_width(width, rounds, steps_per_round, variant, probe) -> dict:
    """Alternating rounds of (matmul probe, proxylab steps, nanogpt-style steps)."""
    cfg = ModelConfig(width=width, depth=DEPTH, heads=width // HEAD_DIM, **variant)
    batch = BATCH.get(width, 16)
    torch.manual_seed(0)
    ours = make_step(build_model(cfg, vocab_size=VOCAB, seq_len=SEQ_LEN), batch)
    base = make_step(NanoGPT(width, DEPTH, width // HEAD_DIM, VOCAB, SEQ_LEN), batch)
    for step in (ours, base):  # warm-up: allocator, optimizer state, kernel selection
        time_steps(step, 3)
    r = {"cfg": cfg, "batch": batch, "tokens": batch * SEQ_LEN, "ours": [], "base": [], "probe": [],
         "flops_per_token": flops_per_token(cfg, SEQ_LEN, VOCAB)}
    for _ in range(rounds):
        r["probe"].append(probe())
        r["ours"].append(time_steps(ours, steps_per_round))
        r["base"].append(time_steps(base, steps_per_round))
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=5, help="steps per timed round")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--no-qk-rope", action="store_true", help="skip the qk_norm + rope rows")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    probe = MatmulProbe()
    probe(repeats=7)
    load = os.getloadavg()[0]
    print(f"torch {torch.__version__}, {args.threads} threads, load average {load:.1f} at start")
    print(f"GPT depth {DEPTH}, head dim {HEAD_DIM}, seq {SEQ_LEN}, vocab {VOCAB}, untied, no bias; "
          f"AdamW; {args.rounds} alternating rounds x {args.steps} steps\n")
    hdr = (f"{'model':<22}{'width':>6}{'batch':>6}{'ms/step med':>12}{'tok/s best':>11}{'tok/s med':>10}"
           f"{'GFLOP/s best':>13}{'GFLOP/s med':>12}{'%peak best':>11}{'%probe med':>11}{'vs nano':>8}")
    lines = []
    variants = [("proxylab", {})] + ([] if args.no_qk_rope else
                                     [("proxylab qk_norm+rope", {"qk_norm": True, "pos": "rope"})])
    for width in args.widths:
        for label, variant in variants:
            r = bench_width(width, args.rounds, args.steps, variant, probe)
            rows = [(label, r["ours"])] + ([("nanogpt-style", r["base"])] if not variant else [])
            for name, times in rows:
                lines.append((name, width, r, times))
    peak = probe.best  # the hardware's peak: the fastest matmul seen in the whole run
    print(f"fp32 matmul peak (2048^3, best over the run): {peak:.1f} GFLOP/s\n")
    print(hdr)
    print("-" * len(hdr))
    for name, width, r, times in lines:
        best, med = min(times), statistics.median(times)
        gf = [r["tokens"] / t * r["flops_per_token"] / 1e9 for t in times]
        # load-normalised: this round's GFLOP/s over the matmul probe run just before it
        of_probe = statistics.median(g / p for g, p in zip(gf, r["probe"]))
        ratio = "-" if name == "nanogpt-style" else f"{statistics.median(r['base']) / med:.2f}"
        print(f"{name:<22}{width:>6}{r['batch']:>6}{1e3 * med:>12.1f}{r['tokens'] / best:>11.0f}"
              f"{r['tokens'] / med:>10.0f}{max(gf):>13.1f}{statistics.median(gf):>12.1f}"
              f"{100 * max(gf) / peak:>10.1f}%{100 * of_probe:>10.1f}%{ratio:>8}")
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end.")
    print("GFLOP/s = tokens/s x flops_per_token = 6*N + 6*L*T*d (N: non-embedding matmul weights, head\n"
          "included). %peak best: best round / best matmul of the run. %probe med: median over rounds of\n"
          "(round GFLOP/s / matmul probe timed just before it), robust to load from other processes.\n"
          "vs nano: nanogpt-style median step time / this row's (> 1: proxylab faster); each proxylab\n"
          "row is timed against its own interleaved nanogpt-style run.")


if __name__ == "__main__":
    main()
