"""Step-time cost of the gradient-noise-scale probe (train.noise_scale_every): the same run
with the probe off and on, side by side (interleaved repeats) in one process, on the batch-size
study's two proxies at one batch size each.

The probe adds one forward/backward at B_small = B/8 every N steps, so its cost is about
cost(B/8) / (N cost(B)); on tiny models a small batch costs nearly as much as a big one (fixed
per-call overhead), hence the default interval of 25 used by `proxylab study batch-size`.
Target (issue 13): <= 5% of step time. Usage:
    python benchmarks/noise_scale_overhead.py [--every 25] [--steps 300] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics

import torch

from proxylab.config import from_flat
from proxylab.train.loop import NullReporter, train

PROXIES = {
    "gpt text (w32, B=32)": {"task.name": "text", "task.seq_len": 32, "model.name": "gpt",
                             "model.width": 32, "model.depth": 2, "model.heads": 2,
                             "train.batch_size": 32},
    "mlp digits (w64, B=64)": {"task.name": "digits", "model.name": "mlp", "model.width": 64,
                               "model.depth": 1, "train.batch_size": 64},
}


def step_seconds(cfg) -> float:
    """Seconds spent in training steps (the loop's train_time_s: evaluation excluded)."""
    return train(cfg, NullReporter()).summary["train_time_s"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--every", type=int, default=25)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(1)
    for name, base in PROXIES.items():
        common = {**base, "schedule.name": "constant", "train.steps": a.steps,
                  "train.eval_every": a.steps, "train.threads": 1}
        off = from_flat(common)
        on = from_flat({**common, "train.noise_scale_every": a.every})
        step_seconds(off)                              # warm-up (allocator, data cache)
        t_off, t_on = [], []
        for _ in range(a.repeats):
            t_off.append(step_seconds(off))
            t_on.append(step_seconds(on))
        base_s, on_s = statistics.median(t_off), statistics.median(t_on)
        print(f"{name}, {a.steps} steps, probe every {a.every} (B_small = B/8), 1 thread")
        print(f"  probe off: {base_s:.3f} s   {['%.3f' % t for t in t_off]}")
        print(f"  probe on:  {on_s:.3f} s   {['%.3f' % t for t in t_on]}")
        print(f"  noise-scale probe overhead: {100 * (on_s - base_s) / base_s:+.2f}% of step time "
              f"(ratio {on_s / base_s:.3f}; target <= 5%)")


if __name__ == "__main__":
    main()
