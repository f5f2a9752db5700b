"""Ray backend overhead: the same 16-run sweep on a local Ray cluster and on the local pool,
both on the same 2 cores (Ray: a 2-CPU cluster, one CPU per run; pool: 2 workers, 1 thread).

Each side starts cold (its worker processes import torch), as a user's sweep does; the
cluster itself is started before the clock runs (its start-up is printed separately: on a
real cluster it is paid once, not per sweep). Prints both wall times and the overhead ratio
(ray - pool) / pool, and each side's time outside its runs (wall - the runs' own summed
time / 2), which shows orchestration cost even when other jobs slow the runs themselves.
Target (issue 14): <= 15% of the sweep's wall time.

Usage: python benchmarks/ray_overhead.py [--runs 16] [--steps 150] [--width 64] [--repeats 1]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

from proxylab.store import Store
from proxylab.sweep.driver import run_sweep
from proxylab.sweep.executors import LocalExecutor
from proxylab.sweep.ray_executor import RayExecutor, import_ray, local_cluster
from proxylab.sweep.spec import spec_from_dict


def sweep(name: str, runs: int, steps: int, width: int):
    lrs = [round(1e-3 * (1 + i), 6) for i in range(runs)]
    return spec_from_dict({"name": name, "base": {
        "model.width": width, "model.depth": 2, "model.heads": 4, "task.seq_len": 64,
        "train.batch_size": 8, "train.steps": steps, "train.eval_every": steps,
        "train.eval_batches": 2}, "grid": {"optim.lr": lrs}})


def timed(spec, executor, folder: Path) -> tuple[float, float]:
    """(wall seconds, summed run wall seconds) of one cold sweep into a fresh store."""
    store = Store(folder / f"{spec.name}-{time.time_ns()}.db")
    t0 = time.perf_counter()
    out = run_sweep(spec, store, executor, show_progress=False)
    wall = time.perf_counter() - t0
    assert set(out.statuses.values()) == {"done"}, out.statuses
    busy = float(store.runs()["wall_s"].sum()) if "wall_s" in store.runs() else float("nan")
    return wall, busy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=16)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    ray = import_ray()
    spec = sweep("ray-overhead", args.runs, args.steps, args.width)
    print(f"{args.runs} runs x {args.steps} steps (GPT width {args.width}, depth 2), 2 cores; "
          f"machine load {os.getloadavg()[0]:.1f} at start")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        with local_cluster(num_cpus=2) as address:
            start_s = time.perf_counter() - t0
            ex = RayExecutor(address=address, cpus_per_run=1)
            ex.connect(tries=5)
            print(f"ray cluster start-up (not in the ratio): {start_s:.1f} s")
            ratios = []
            for rep in range(args.repeats):
                # alternate the order so a drifting machine load does not favour one side
                sides = [("pool", LocalExecutor(2, threads=1)), ("ray", ex)]
                res = {}
                for name, executor in (sides if rep % 2 == 0 else sides[::-1]):
                    res[name] = timed(spec, executor, Path(tmp))
                ratio = (res["ray"][0] - res["pool"][0]) / res["pool"][0]
                ratios.append(ratio)
                # wall time not spent inside runs (start-up, scheduling, idle slots), which
                # CPU contention from other jobs on a shared machine affects far less
                idle = {k: w - busy / 2 for k, (w, busy) in res.items()}
                print(f"repeat {rep}: pool {res['pool'][0]:.1f} s (runs' own time "
                      f"{res['pool'][1]:.1f} s, outside runs {idle['pool']:.1f} s), ray "
                      f"{res['ray'][0]:.1f} s (runs' own time {res['ray'][1]:.1f} s, outside runs "
                      f"{idle['ray']:.1f} s); overhead {100 * ratio:+.1f}% of the pool's wall time")
            ray.shutdown()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"overhead ratio (ray - pool) / pool: {100 * min(ratios):+.1f}% best, "
          f"{100 * sorted(ratios)[len(ratios) // 2]:+.1f}% median over {len(ratios)} repeat(s); "
          f"machine load {os.getloadavg()[0]:.1f} at end; children CPU "
          f"{usage.ru_utime + usage.ru_stime:.0f} s")


if __name__ == "__main__":
    main()
