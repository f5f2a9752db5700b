"""The Python verbs: ``import proxylab as pl; pl.run(...)``, ``pl.sweep(...)``, ``pl.load(db)``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from proxylab.config import RunConfig, from_flat, load_config
from proxylab.sweep.driver import preflight
from proxylab.sweep.spec import SweepSpec, load_sweep, spec_from_dict


def _as_config(config: RunConfig | Mapping[str, Any] | str | Path | None) -> RunConfig:
    if isinstance(config, RunConfig):
        return config
    if isinstance(config, Mapping):  # dotted keys, e.g. {"optim.lr": 3e-3}
        return from_flat(dict(config))
    return load_config(config)


def run(config: RunConfig | Mapping[str, Any] | str | Path | None = None, *, db=None):
    """Train one run (in this process) and store it. Returns the RunResult."""
    from proxylab.store import Store, default_db_path  # noqa: PLC0415
    from proxylab.sweep.driver import run_one  # noqa: PLC0415

    cfg = _as_config(config)
    fingerprints = preflight([cfg])
    result, status, _ = run_one(cfg, Store(db or default_db_path()), fingerprints=fingerprints)
    if result is None:
        raise RuntimeError(f"run {cfg.id} failed; see `proxylab show {cfg.id}`")
    return result


def sweep(spec: SweepSpec | Mapping[str, Any] | str | Path, *, db=None, workers: int = 1,
          threads: int = 0, show_progress: bool = False):
    """Run (or resume) a sweep. Returns a SweepOutcome."""
    from proxylab.store import Store, default_db_path  # noqa: PLC0415
    from proxylab.sweep.driver import run_sweep  # noqa: PLC0415
    from proxylab.sweep.executors import make_executor  # noqa: PLC0415

    if isinstance(spec, Mapping):
        spec = spec_from_dict(spec)
    elif not isinstance(spec, SweepSpec):
        spec = load_sweep(spec)
    fingerprints = preflight(spec.expand())
    executor = make_executor(workers, threads=threads or (0 if workers <= 1 else 1))
    return run_sweep(spec, Store(db or default_db_path()), executor, show_progress=show_progress,
                     fingerprints=fingerprints)


def load_checkpoint(run_id: str, step: int | None = None, *, db=None):
    """A run's checkpoint at ``step`` (None = newest): ``.model()``, ``.config``, ``.rows``.
    ``checkpoint_steps(run_id)`` lists the stored steps (see proxylab.train.checkpoint)."""
    from proxylab.store import default_db_path  # noqa: PLC0415
    from proxylab.train.checkpoint import load_checkpoint as _load  # noqa: PLC0415

    return _load(run_id, step, db=db or default_db_path())


def checkpoint_steps(run_id: str, *, db=None) -> list[int]:
    """Steps at which ``run_id`` has a stored checkpoint, ascending."""
    from proxylab.store import default_db_path  # noqa: PLC0415
    from proxylab.train.checkpoint import list_steps  # noqa: PLC0415

    return list_steps(run_id, db or default_db_path())


def load(db=None):
    """The store, for reading: ``pl.load().runs()`` / ``.metrics()`` return DataFrames."""
    from proxylab.store import load as load_store  # noqa: PLC0415

    return load_store(db)
