"""Metric-logging overhead: the same run with the default probe interval vs probes only at
the end, measured side by side (interleaved repeats) in one process.

Target (issue 2): < 3% of step time at the default probe interval (train.log_every=10).
Usage: python benchmarks/logging_overhead.py [--width 128] [--steps 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics

import torch

from proxylab.config import load_config
from proxylab.train.loop import train


class Sink:
    """Stands in for the store writer: keeps rows, as the driver does."""

    def __init__(self):
        self.n = 0

    def started(self, meta):
        pass

    def metrics(self, rows):
        self.n += len(rows)

    def progress(self, step, total):
        pass


def seconds(cfg) -> tuple[float, int]:
    sink = Sink()
    res = train(cfg, sink)
    return res.summary["wall_s"], sink.n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="0 = all cores")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    common = [f"model.width={a.width}", f"train.steps={a.steps}", f"train.eval_every={a.steps}"]
    default = load_config(sets=common)                           # log_every = 10
    off = load_config(sets=common + [f"train.log_every={a.steps}"])
    seconds(off)                                                 # warm-up (allocator, data cache)
    t_on, t_off = [], []
    for _ in range(a.repeats):
        t_off.append(seconds(off)[0])
        s, n_rows = seconds(default)
        t_on.append(s)
    on, base = statistics.median(t_on), statistics.median(t_off)
    print(f"GPT width {a.width}, {a.steps} steps, threads {torch.get_num_threads()}, "
          f"probe interval {default.train.log_every} steps ({n_rows} metric rows per run)")
    print(f"  probes off (end only): {base:.3f} s   median of {a.repeats}: {t_off}")
    print(f"  default probes:        {on:.3f} s   median of {a.repeats}: {t_on}")
    print(f"  logging overhead:      {100 * (on - base) / base:+.2f}% of step time (target < 3%)")


if __name__ == "__main__":
    main()
