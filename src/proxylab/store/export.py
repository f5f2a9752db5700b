"""Export a store (or one sweep of it) to Parquet or CSV for other tools, or into TensorBoard
and MLflow (``proxylab.store.trackers``; optional extras).

Layout: two tables, joined by ``run_id``.
- ``OUT`` (e.g. ``results.parquet``): the runs table, exactly ``Store.runs(sweep)``: one row
  per run with status, times, every config key as a dotted column and every summary key.
- ``OUT``'s sibling ``<stem>.metrics<suffix>`` (``results.metrics.parquet``): the metrics in
  long form, exactly ``Store.metrics(sweep=sweep)``: ``run_id, step, key, value``.

``OUT`` without a suffix gets ``.parquet`` / ``.csv``; a suffix that does not match the
format is an error. Both tables are read in one snapshot, written to hidden temporary files
in the same folder, flushed to disk, and only then renamed into place (``os.replace``), so
a reader never sees a half-written file.

Reading CSV back: pass ``dtype={"run_id": str}`` (an id such as ``"123456789012"`` or
``"12e456789012"`` would otherwise be parsed as a number) and ``parse_dates=["created",
"started", "finished"]``; NaN values are empty cells.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

from proxylab.config import ConfigError
from proxylab.store.db import Store
from proxylab.store.schema import dumps

if TYPE_CHECKING:
    import pandas as pd

FORMATS = ("parquet", "csv", "tensorboard", "mlflow")
TRACKERS = ("tensorboard", "mlflow")   # written by proxylab.store.trackers
SUFFIXES = {"parquet": (".parquet", ".pq"), "csv": (".csv",)}


def export_paths(out_path: str | os.PathLike, fmt: str) -> tuple[Path, Path]:
    """``(runs_path, metrics_path)`` that :func:`export` writes for ``out_path``."""
    check_format(fmt)
    out = Path(out_path)
    if out.is_dir():
        raise ConfigError(f"--out {out}: is a directory; give a file name such as {out / ('runs.' + fmt)}")
    if not out.suffix:
        out = out.with_name(f"{out.name}.{fmt}")
    elif out.suffix.lower() not in SUFFIXES[fmt]:
        raise ConfigError(f"--out {out}: suffix {out.suffix!r} does not match --format {fmt} "
                          f"(use {' or '.join(SUFFIXES[fmt])}, or no suffix)")
    return out, out.with_name(f"{out.stem}.metrics{out.suffix}")


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r} is not supported; choose one of {', '.join(FORMATS)}")


def _arrow_safe(df: pd.DataFrame) -> pd.DataFrame:
    """Columns mixing value types (a summary key that is a number in one run and text in
    another) become JSON text, which Parquet can hold; uniform columns stay as they are."""
    out = df.copy()
    for col in out.columns:
        if out[col].dtype != object:
            continue
        kinds = {type(v) for v in out[col] if v is not None and not (isinstance(v, float) and math.isnan(v))}
        if len(kinds) > 1 and not kinds <= {int, float}:
            out[col] = [v if v is None or isinstance(v, str) else dumps(v) for v in out[col]]
    return out


def _write(df: pd.DataFrame, path: Path, fmt: str) -> Path:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if fmt == "parquet":
            _arrow_safe(df).to_parquet(tmp, index=False)
        else:
            df.to_csv(tmp, index=False)
        with open(tmp, "rb") as f:  # on disk before the rename makes it visible
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def export(store: Store, out_path: str | os.PathLike, fmt: str = "parquet",
           sweep: str | None = None) -> dict[str, Path]:
    """Write the runs and metrics tables (see the module doc); -> ``{"runs": p, "metrics": p}``.

    ``tensorboard`` and ``mlflow`` write into a folder or tracking URI instead and return
    ``{"runs": folder or URI}`` (see :mod:`proxylab.store.trackers`).
    Bad input (format, suffix, unknown sweep, a missing extra) raises :class:`ConfigError`
    before anything is written.
    """
    check_format(fmt)
    if fmt in TRACKERS:
        from proxylab.store import trackers  # noqa: PLC0415

        if sweep is not None:
            store.sweep_spec(sweep)            # an unknown sweep: ConfigError, nothing written
        return getattr(trackers, f"export_{fmt}")(store, out_path, sweep=sweep)
    runs_path, metrics_path = export_paths(out_path, fmt)
    with store.snapshot():  # both tables from one consistent state
        runs = store.runs(sweep=sweep)
        metrics = store.metrics(sweep=sweep)
    runs_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_metrics = _write(metrics, metrics_path, fmt)
    try:
        tmp_runs = _write(runs, runs_path, fmt)
    except BaseException:
        tmp_metrics.unlink(missing_ok=True)
        raise
    os.replace(tmp_metrics, metrics_path)
    os.replace(tmp_runs, runs_path)
    return {"runs": runs_path, "metrics": metrics_path}
