"""Step-time cost of the gradient-noise-scale probe (train.noise_scale_every): the same run
with the probe off and on, side by side (interleaved repeats) in one process, on the batch-size
study's two proxies at one batch size each. Time is this process's CPU time per training step
(``time.process_time``, one thread; a one-step run subtracted for the set-up), so that other
processes on a shared machine do not enter the ratio the way they enter wall time.

The probe adds one forward/backward at B_small = B/8 every N steps, so its cost is about
cost(B/8) / (N cost(B)); on tiny models a small batch costs nearly as much as a big one (fixed
per-call overhead), hence the default interval of 25 used by `proxylab study batch-size`.
Target (issue 13): <= 5% of step time. Usage:
    python benchmarks/noise_scale_overhead.py [--every 25] [--steps 300] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

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


def cpu_seconds(cfg) -> float:
    """CPU seconds of one whole run in this process."""
    t0 = time.process_time()
    train(cfg, NullReporter())
    return time.process_time() - t0


def step_seconds(cfg) -> float:
    """CPU seconds per training step: the run minus a one-step run of the same config."""
    one = cpu_seconds(cfg.replace(**{"train.steps": 1}))
    return (cpu_seconds(cfg) - one) / (cfg.train.steps - 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--every", type=int, default=25)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(1)
    for name, base in PROXIES.items():
        common = {**base, "schedule.name": "constant", "train.steps": a.steps,
                  "train.eval_every": 10 ** 6, "train.threads": 1}      # evaluation: step 0 and the end
        off = from_flat(common)
        on = from_flat({**common, "train.noise_scale_every": a.every})
        step_seconds(off)                              # warm-up (allocator, data cache)
        t_off, t_on = [], []
        for _ in range(a.repeats):
            t_off.append(step_seconds(off))
            t_on.append(step_seconds(on))
        base_s, on_s = statistics.median(t_off), statistics.median(t_on)
        print(f"{name}, {a.steps} steps, probe every {a.every} (B_small = B/8), 1 thread")
        print(f"  probe off: {1e3 * base_s:.2f} ms CPU/step   {['%.2f' % (1e3 * t) for t in t_off]}")
        print(f"  probe on:  {1e3 * on_s:.2f} ms CPU/step   {['%.2f' % (1e3 * t) for t in t_on]}")
        print(f"  noise-scale probe overhead: {100 * (on_s - base_s) / base_s:+.2f}% of step time "
              f"(ratio {on_s / base_s:.3f}; target <= 5%)")


if __name__ == "__main__":
    main()
