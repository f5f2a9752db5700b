"""Ray backend overhead: the same 16-run sweep on a local Ray cluster and on the local pool,
both on the same 2 cores (Ray: a 2-CPU cluster, one CPU per run; pool: 2 workers, 1 thread).

Each side is a `proxylab sweep` command timed from outside, as a user runs it: process
start-up, (for Ray) joining the cluster, cold workers that import torch, every run, the
store writes. The cluster itself is started before the clock runs (its start-up is printed
separately: on a real cluster it is paid once, not per sweep).

Fairness on a shared Linux machine: with CFS autogroups (``/proc/sys/kernel/
sched_autogroup_enabled``) each session is scheduled as one group, and ``ray start`` puts the
cluster in a session of its own. So both commands run in sessions of their own too;
otherwise the pool would share its CPU slice with everything else in this session.

Prints both wall times, the overhead ratio (ray - pool) / pool, and each side's time
outside its runs (wall - the runs' own summed time / 2). Target (issue 14): <= 15%.

Usage: python benchmarks/ray_overhead.py [--runs 16] [--steps 150] [--width 64] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from proxylab.store import Store
from proxylab.sweep.ray_executor import import_ray, local_cluster

PROXYLAB = str(Path(sys.executable).parent / "proxylab")


def sweep_file(folder: Path, runs: int, steps: int, width: int) -> Path:
    base = {"model.width": width, "model.depth": 2, "model.heads": 4, "task.seq_len": 64,
            "train.batch_size": 8, "train.steps": steps, "train.eval_every": steps,
            "train.eval_batches": 2}
    lrs = [round(1e-3 * (1 + i), 6) for i in range(runs)]
    path = folder / "ray-overhead.toml"
    path.write_text('name = "ray-overhead"\n[base]\n'
                    + "".join(f'"{k}" = {json.dumps(v)}\n' for k, v in base.items())
                    + f'[grid]\n"optim.lr" = {json.dumps(lrs)}\n')
    return path


def timed(sweep: Path, db: Path, extra: list[str]) -> tuple[float, float]:
    """(wall seconds, the runs' own summed wall seconds) of one cold sweep into a new store."""
    cmd = [PROXYLAB, "sweep", str(sweep), "--db", str(db), "--quiet", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RAY_ADDRESS", None)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, start_new_session=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stdout}\n{p.stderr}")
    with Store(db) as s:
        runs = s.runs()
    assert set(runs["status"]) == {"done"}, runs["status"].value_counts()
    return wall, float(runs["wall_s"].sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=16)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    import_ray()
    print(f"{args.runs} runs x {args.steps} steps (GPT width {args.width}, depth 2), 2 cores; "
          f"machine load {os.getloadavg()[0]:.1f} at start")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sweep = sweep_file(folder, args.runs, args.steps, args.width)
        t0 = time.perf_counter()
        with local_cluster(num_cpus=2) as address:
            print(f"ray cluster start-up (not in the ratio): {time.perf_counter() - t0:.1f} s")
            sides = [("pool", ["--workers", "2", "--threads", "1"]),
                     ("ray", ["--backend", "ray", "--address", address, "--cpus-per-run", "1"])]
            ratios = []
            for rep in range(args.repeats):
                res = {}
                # alternate the order so a drifting machine load does not favour one side
                for name, extra in (sides if rep % 2 == 0 else sides[::-1]):
                    res[name] = timed(sweep, folder / f"{name}-{rep}.db", extra)
                ratio = (res["ray"][0] - res["pool"][0]) / res["pool"][0]
                ratios.append(ratio)
                # wall time not spent inside runs: start-up, scheduling, idle slots
                out = {k: w - busy / 2 for k, (w, busy) in res.items()}
                print(f"repeat {rep}: pool {res['pool'][0]:.1f} s (runs' own time "
                      f"{res['pool'][1]:.1f} s, outside runs {out['pool']:.1f} s), ray "
                      f"{res['ray'][0]:.1f} s (runs' own time {res['ray'][1]:.1f} s, outside runs "
                      f"{out['ray']:.1f} s); overhead {100 * ratio:+.1f}% of the pool's wall time",
                      flush=True)
    print(f"overhead ratio (ray - pool) / pool: {100 * min(ratios):+.1f}% best, "
          f"{100 * sorted(ratios)[len(ratios) // 2]:+.1f}% median over {len(ratios)} repeat(s); "
          f"machine load {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
