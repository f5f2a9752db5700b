"""BitLinear training step time against nn.Linear at the same shapes (target <= 1.5x).

    OMP_NUM_THREADS=1 python benchmarks/bitlinear_step.py [--reps 50] [--threads 1]

A "step" is forward + backward (+ zero_grad) of one layer on a fixed input; the optimizer
step is the same for both and left out. The two layers are timed interleaved, round by round
(so drift in machine load hits both alike); reported is the median thread CPU time per step
(robust when other processes share the cores), the ratio BitLinear / nn.Linear, and the same
for the whole GPT-proxy training step (forward, backward, AdamW) at width 64 and 128, the
shapes the bitnet study trains.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn as nn

from proxylab.config import from_flat
from proxylab.models import build_model
from proxylab.models.bitlinear import BitLinear
from proxylab.optim import build_optimizer

# (tokens, in, out): GPT proxy width 64 / 128 at batch 16 x seq 64 (qkv, fc, proj of the MLP),
# and the digits MLP (batch 64, 64 pixels -> width 64)
SHAPES = [(1024, 64, 192), (1024, 64, 256), (1024, 256, 64),
          (1024, 128, 384), (1024, 128, 512), (1024, 512, 128), (64, 64, 64)]


def layer_step(layer: nn.Module, x: torch.Tensor, c: torch.Tensor) -> None:
    layer.zero_grad(set_to_none=True)
    (layer(x) * c).sum().backward()


def time_pair(fns, reps: int) -> list[float]:
    """Median thread CPU seconds per call of each fn, interleaved round by round."""
    for f in fns:  # warm-up
        f()
    times = [[] for _ in fns]
    for _ in range(reps):
        for t, f in zip(times, fns):
            t0 = time.thread_time()
            f()
            t.append(time.thread_time() - t0)
    return [statistics.median(t) for t in times]


def gpt_step_fn(quant: str, width: int, norm: str):
    torch.manual_seed(0)
    cfg = from_flat({"model.name": "gpt", "model.width": width, "model.depth": 2, "model.norm": norm,
                     "model.heads": 4, "model.quant": quant, "optim.lr": 1e-3})
    model = build_model(cfg.model, vocab_size=256, seq_len=64)
    opt = build_optimizer(model, cfg.optim)
    x = torch.randint(256, (16, 64))
    y = torch.randint(256, (16, 64))

    def step():
        loss = nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), median thread CPU time of "
          f"{args.reps} interleaved steps (forward + backward)\n")
    print(f"{'tokens x in -> out':>22} {'nn.Linear ms':>13} {'BitLinear ms':>13} {'ratio':>6}"
          f" {'BitLinear ms':>13} {'ratio':>6}")
    print(f"{'':>22} {'':>13} {'(rmsnorm)':>13} {'':>6} {'(layernorm)':>13}")
    ratios: dict[str, list[float]] = {"rmsnorm": [], "layernorm": []}
    for n, i, o in SHAPES:
        torch.manual_seed(0)
        lin = nn.Linear(i, o, bias=False)
        bits = [BitLinear(i, o, bias=False, norm=k) for k in ratios]
        x, c = torch.randn(n, i, requires_grad=True), torch.randn(n, o)
        t_lin, *t_bits = time_pair([lambda: layer_step(lin, x, c)]
                                   + [lambda b=b: layer_step(b, x, c) for b in bits], args.reps)
        line = f"{n:>8} x {i:>4} -> {o:<5} {t_lin * 1e3:>13.3f}"
        for k, t in zip(ratios, t_bits):
            ratios[k].append(t / t_lin)
            line += f" {t * 1e3:>13.3f} {t / t_lin:>6.2f}"
        print(line)
    gm = {k: statistics.geometric_mean(v) for k, v in ratios.items()}
    print(f"{'geometric mean':>22} {'':>13} {'':>13} {gm['rmsnorm']:>6.2f} {'':>13} "
          f"{gm['layernorm']:>6.2f}   (target <= 1.5)\n")
    print(f"{'GPT proxy step (AdamW)':>22} {'16-bit ms':>13} {'1.58-bit ms':>13} {'ratio':>6}")
    for width in (64, 128):
        for norm in ratios:
            t_fp, t_q = time_pair([gpt_step_fn("none", width, norm),
                                   gpt_step_fn("bitnet158", width, norm)], max(args.reps // 5, 5))
            print(f"{f'width {width}, {norm}':>22} {t_fp * 1e3:>13.2f} {t_q * 1e3:>13.2f} "
                  f"{t_q / t_fp:>6.2f}")


if __name__ == "__main__":
    main()
