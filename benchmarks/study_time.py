"""Wall time, runs per minute and CPU utilisation of a built-in study on this machine.

Runs ``proxylab study NAME [--quick|--smoke]`` in a fresh store and prints, from the
process's own accounting (this process and every worker it waited for):
  wall time, runs finished, runs per minute, CPU seconds, and CPU utilisation =
  CPU seconds / (wall seconds x cores used), the share of the cores the study kept busy.
Run it on an otherwise idle machine: a shared machine's wall time says nothing about the
study. Usage: python benchmarks/study_time.py instability --quick [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def cpu_seconds() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name")
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true")
    size.add_argument("--smoke", action="store_true")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    out = Path(tempfile.mkdtemp(prefix=f"bench-{args.name}-"))
    cmd = [sys.executable, "-m", "proxylab.cli", "study", args.name, "--out", str(out),
           "--workers", str(args.workers)]
    cmd += ["--quick"] if args.quick else ["--smoke"] if args.smoke else []
    c0, t0 = cpu_seconds(), time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    summary = json.loads((out / "summary.json").read_text())
    import sqlite3  # noqa: PLC0415

    with sqlite3.connect(out / "proxylab.db") as db:
        runs = db.execute("SELECT COUNT(*) FROM runs WHERE status IN ('done', 'diverged')").fetchone()[0]
    cores = min(args.workers, os.cpu_count() or 1)
    form = "quick" if args.quick else "smoke" if args.smoke else "full"
    print(f"study {args.name} ({form}), {args.workers} workers on {os.cpu_count()} cores")
    print(f"  wall time        {wall / 60:8.2f} min")
    print(f"  runs finished    {runs:8d}   ({runs / (wall / 60):.1f} runs/min)")
    print(f"  CPU time         {cpu / 60:8.2f} min")
    print(f"  CPU utilisation  {cpu / (wall * cores):8.0%}   of {cores} cores")
    print("  verdicts         " + ", ".join(v["status"] for v in summary["verdicts"]))


if __name__ == "__main__":
    main()
