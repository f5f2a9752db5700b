"""Built-in studies: a sweep, its analyses, its figures and verdicts, end to end.

Each study module defines ``NAME``, ``CLAIM``, ``sweeps(size) -> list[SweepSpec]`` (size one
of ``SIZES``: ``smoke`` for the tests, ``quick`` for a first look, ``full``) and
``verdicts(store, sweeps) -> list[dict]``; optionally ``figures(store, out_dir)``.
`run_study` runs the sweeps (resuming whatever is already in the store), writes the report
of each sweep and a study-level ``summary.json`` with the DESIGN.md fields.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from proxylab.config import ConfigError

STUDIES = {"lr-width": "proxylab.studies.lr_width", "weight-decay": "proxylab.studies.weight_decay",
           "instability": "proxylab.studies.instability", "bitnet": "proxylab.studies.bitnet",
           "grokking": "proxylab.studies.grokking",
           "batch-size": "proxylab.studies.batch_size",
           "optimizers": "proxylab.studies.optimizers"}
SIZES = ("smoke", "quick", "full")


def get_study(name: str):
    if name not in STUDIES:
        raise ConfigError(f"study {name!r}: unknown; available: {', '.join(sorted(STUDIES))}")
    return importlib.import_module(STUDIES[name])


def run_study(name: str, *, quick: bool = False, smoke: bool = False,
              out: str | Path | None = None,
              db: str | Path | None = None, workers: int = 1,
              show_progress: bool = True, backend: str = "local",
              **ray_options) -> tuple[Path, dict[str, int]]:
    """Run a built-in study; returns the path of its summary.json and the run counts of
    this invocation by status (``failed`` > 0 means some runs failed)."""
    from proxylab.report import make_report  # noqa: PLC0415
    from proxylab.report import write_json_atomic  # noqa: PLC0415
    from proxylab.store import Store  # noqa: PLC0415
    from proxylab.sweep.driver import preflight, run_sweep  # noqa: PLC0415
    from proxylab.sweep.executors import make_executor  # noqa: PLC0415

    if quick and smoke:
        raise ConfigError("study: choose --quick or --smoke, not both")
    size = "smoke" if smoke else "quick" if quick else "full"
    study = get_study(name)
    out = Path(out or Path("reports") / (name + ("" if size == "full" else f"-{size}")))
    specs = study.sweeps(size)
    fingerprints = {}
    for spec in specs:
        fingerprints.update(preflight(spec.expand(), ray_gpus=ray_options.get("gpus_per_run", 0.0)
                                      if backend == "ray" else None))
    executor = make_executor(workers, threads=0 if workers <= 1 else 1, backend=backend,
                             **ray_options)   # address, cpus_per_run, gpus_per_run
    out.mkdir(parents=True, exist_ok=True)
    store = Store(db or out / "proxylab.db")
    counts: dict[str, int] = {}
    for spec in specs:
        outcome = run_sweep(spec, store, executor, show_progress=show_progress,
                            fingerprints=fingerprints)
        for k, v in outcome.counts().items():
            counts[k] = counts.get(k, 0) + v
    for spec in specs:
        make_report(store, spec.name, out / spec.name)
    from proxylab.report.html import study_figures  # noqa: PLC0415

    # figures(...) may return {file: caption or {"question", "detail", "numbers"}}
    figures = study_figures(out, study.figures(store, specs, out) if hasattr(study, "figures")
                            else None)
    summary = {
        "study": name,
        "quick": quick,
        "size": size,
        "sweeps": [s.name for s in specs],
        "verdicts": study.verdicts(store, specs),
        "reports": {s.name: f"{s.name}/index.html" for s in specs},   # each with its summary.json
        "figures": figures,          # file -> the question it answers and the numbers behind it
    }
    write_json_atomic(out / "summary.json", summary)
    _write_index(out, study, summary)
    return out / "summary.json", counts


def _write_index(out: Path, study, summary: dict) -> None:
    from proxylab.report.html import render_study_index  # noqa: PLC0415

    page = render_study_index(study.NAME, summary["size"], study.__doc__ or "", summary,
                              summary.get("figures") or {})
    tmp = out / ".index.html.tmp"
    tmp.write_text(page)
    os.replace(tmp, out / "index.html")
