"""Grokking speed: proxylab's answer-position transformer (``model.name = "answer_tf"``)
against a straightforward full-sequence implementation of the same model, side by side, and
the time of Nanda et al.'s configuration to 99% validation accuracy. A script, not a test.

    .venv/bin/python benchmarks/grokking_speed.py [--threads 2] [--rounds 7] [--skip-nanda]
                                                  [--max-steps 12000]

Part 1: one full-batch training step (forward, cross-entropy at the answer, backward, AdamW)
on Nanda's data (p = 113, 30% of the pairs: 3,830 examples), d_model 128, 4 heads, d_mlp 512,
in milliseconds. The baseline is written below the way the progress-measures code does it:
every position, causal attention by einsum and masked softmax, MLP and unembedding at every
position, loss at the last one. Its weights are copied from the answer_tf model and its
logits checked equal before timing. Rounds alternate so that load from other processes hits
both alike; best and median are printed (read the median on a shared machine), with the CPU
seconds per step (process time), which other processes do not inflate.

Part 2: the Nanda configuration (AdamW lr 1e-3, wd 1, β2 0.98, 10-step warmup, full batch)
trained by proxylab's loop until validation accuracy first reaches 99% (evaluated every 100
steps): the step, the wall time and the CPU time.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from proxylab.config import from_flat
from proxylab.models import build_model
from proxylab.tasks import build_task

NANDA = {"task.name": "modular", "task.p": 113, "task.op": "+", "task.train_frac": 0.3,
         "task.full_batch": True, "model.name": "answer_tf", "model.width": 128, "model.heads": 4,
         "model.mlp_ratio": 4, "optim.name": "adamw", "optim.lr": 1e-3, "optim.weight_decay": 1.0,
         "optim.beta1": 0.9, "optim.beta2": 0.98, "optim.decay_embeddings": True,
         "schedule.name": "constant", "schedule.warmup": 10, "train.grad_clip": 0.0,
         "train.diverge_factor": 1e9, "train.eval_every": 100, "train.log_every": 100}


class FullSequenceTransformer(nn.Module):
    """The same 1-layer model, every position computed (the straightforward way)."""

    def __init__(self, vocab: int, n_ctx: int, d: int, heads: int, d_mlp: int):
        super().__init__()
        self.W_E = nn.Parameter(torch.zeros(vocab, d))
        self.W_pos = nn.Parameter(torch.zeros(n_ctx, d))
        self.W_Q, self.W_K, self.W_V = (nn.Parameter(torch.zeros(heads, d // heads, d)) for _ in range(3))
        self.W_O = nn.Parameter(torch.zeros(d, d))
        self.W_in, self.b_in = nn.Parameter(torch.zeros(d_mlp, d)), nn.Parameter(torch.zeros(d_mlp))
        self.W_out, self.b_out = nn.Parameter(torch.zeros(d, d_mlp)), nn.Parameter(torch.zeros(d))
        self.W_U = nn.Parameter(torch.zeros(vocab, d))
        self.register_buffer("mask", torch.tril(torch.ones(n_ctx, n_ctx)))
        self.d_head = d // heads

    def copy_from(self, m) -> "FullSequenceTransformer":
        H, dh = self.W_Q.shape[:2]
        with torch.no_grad():
            self.W_E.copy_(m.tok_emb.weight)
            self.W_pos.copy_(m.pos_emb.weight)
            for mine, lin in ((self.W_Q, m.q), (self.W_K, m.k), (self.W_V, m.v)):
                mine.copy_(lin.weight.view(H, dh, -1))
            self.W_O.copy_(m.o.weight)
            self.W_in.copy_(m.mlp_in.weight)
            self.b_in.copy_(m.mlp_in.bias)
            self.W_out.copy_(m.mlp_out.weight)
            self.b_out.copy_(m.mlp_out.bias)
            self.W_U.copy_(m.head.weight)
        return self

    def forward(self, x):
        T = x.shape[1]
        h = self.W_E[x] + self.W_pos[:T]                                   # [B, T, d]
        q = torch.einsum("ihd,bpd->biph", self.W_Q, h)
        k = torch.einsum("ihd,bpd->biph", self.W_K, h)
        v = torch.einsum("ihd,bpd->biph", self.W_V, h)
        scores = torch.einsum("biph,biqh->biqp", k, q) / math.sqrt(self.d_head)
        scores = scores.masked_fill(self.mask[:T, :T] == 0, float("-inf"))
        z = torch.einsum("biph,biqp->biqh", v, scores.softmax(dim=-1))       # [B, H, T, dh]
        z = z.permute(0, 2, 1, 3).reshape(x.shape[0], T, -1)
        h = h + z @ self.W_O.T
        h = h + F.relu(h @ self.W_in.T + self.b_in) @ self.W_out.T + self.b_out
        return h @ self.W_U.T                                               # [B, T, V]


def time_steps(model, x, y, last_only: bool, rounds: int, reps: int = 3):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1.0, betas=(0.9, 0.98))

    def step():
        logits = model(x)
        loss = F.cross_entropy((logits[:, 0] if last_only else logits[:, -1]), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    wall, cpu = [], []
    for _ in range(rounds):
        t, c = time.perf_counter(), time.process_time()
        for _ in range(reps):
            step()
        wall.append((time.perf_counter() - t) / reps * 1e3)
        cpu.append((time.process_time() - c) / reps * 1e3)
        yield wall[-1], cpu[-1]


def side_by_side(rounds: int) -> None:
    cfg = from_flat(NANDA)
    task = build_task(cfg.task, seed=0)
    x, y = task.train_batch(0, torch.Generator())
    y = y[:, -1]
    torch.manual_seed(0)
    fast = build_model(cfg.model, vocab_size=task.vocab_size, seq_len=task.seq_len)
    full = FullSequenceTransformer(task.vocab_size, task.seq_len, 128, 4, 512).copy_from(fast)
    with torch.no_grad():
        err = float((fast(x)[:, 0] - full(x)[:, -1]).abs().max())
    print(f"p=113, {len(x)} training pairs, d=128, 4 heads, d_mlp=512; max |logit difference| = {err:.2e}")
    gens = {"answer_tf": time_steps(fast, x, y, True, rounds),
            "full-sequence": time_steps(full, x, y, False, rounds)}
    res = {k: [] for k in gens}
    for _ in range(rounds):                                   # alternate the two
        for k, g in gens.items():
            res[k].append(next(g))
    print(f"{'model':<15}{'best ms':>10}{'median ms':>11}{'median CPU ms':>15}")
    for k, v in res.items():
        print(f"{k:<15}{min(w for w, _ in v):>10.1f}{statistics.median(w for w, _ in v):>11.1f}"
              f"{statistics.median(c for _, c in v):>15.1f}")
    med = {k: statistics.median(w for w, _ in v) for k, v in res.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in res.items()}
    print(f"speed-up (median wall): {med['full-sequence'] / med['answer_tf']:.2f}x; "
          f"(median CPU): {cpu['full-sequence'] / cpu['answer_tf']:.2f}x  (target >= 2.5x)")


class StopAt99(Exception):
    pass


class Watch:
    def __init__(self):
        self.t0, self.c0, self.hit = time.perf_counter(), time.process_time(), None
        self.train99 = None

    def started(self, meta):
        pass

    def metrics(self, rows):
        for step, key, value in rows:
            if key == "train/acc" and value >= 0.99 and self.train99 is None:
                self.train99 = step
            if key == "val/acc" and value >= 0.99 and step > 0:
                self.hit = (step, time.perf_counter() - self.t0, time.process_time() - self.c0)
                raise StopAt99

    def progress(self, step, total):
        pass


def nanda_to_99(max_steps: int, threads: int) -> None:
    from proxylab.train.loop import train  # noqa: PLC0415

    cfg = from_flat({**NANDA, "train.steps": max_steps, "train.threads": threads})
    w = Watch()
    try:
        train(cfg, w)
    except StopAt99:
        pass
    if w.hit is None:
        print(f"Nanda config: no 99% validation accuracy within {max_steps} steps "
              f"({time.perf_counter() - w.t0:.0f} s)")
        return
    step, wall, cpu = w.hit
    print(f"Nanda config ({threads} threads): train >= 99% at step {w.train99}, validation >= 99% at "
          f"step {step}: {wall:.0f} s wall ({wall / 60:.1f} min), {cpu:.0f} s CPU, "
          f"{1e3 * wall / step:.1f} ms/step incl. evaluation  (target <= 3 min on 2 cores)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--max-steps", type=int, default=12000)
    ap.add_argument("--skip-nanda", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s)")
    side_by_side(args.rounds)
    if not args.skip_nanda:
        nanda_to_99(args.max_steps, args.threads)


if __name__ == "__main__":
    main()
