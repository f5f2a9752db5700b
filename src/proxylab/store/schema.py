"""The store's schema, its version, and the small conversions shared by its readers and writers."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

SCHEMA_VERSION = 1  # PRAGMA user_version; bump together with a migration in _init_schema
APPLICATION_ID = 0x50584C42  # "PXLB" in PRAGMA application_id marks a proxylab store
BUSY_TIMEOUT_MS = 30_000  # how long a writer waits for another one before giving up
STATUSES = ("pending", "running", "done", "diverged", "failed")
FINAL_STATUSES = ("done", "diverged", "failed")
RUN_COLUMNS = ("run_id", "sweep", "status", "attempt", "created", "started", "finished", "error")

SCHEMA = [
    """CREATE TABLE sweeps (
        name      TEXT PRIMARY KEY,
        spec_json TEXT NOT NULL,
        created   REAL NOT NULL)""",
    f"""CREATE TABLE runs (
        run_id       TEXT PRIMARY KEY,
        config_json  TEXT NOT NULL,
        status       TEXT NOT NULL DEFAULT 'pending' CHECK (status IN {STATUSES}),
        attempt      INTEGER NOT NULL DEFAULT 0,
        created      REAL NOT NULL,
        started      REAL,
        finished     REAL,
        meta_json    TEXT,
        summary_json TEXT,
        error        TEXT)""",
    "CREATE INDEX runs_status ON runs(status)",
    """CREATE TABLE sweep_runs (
        sweep  TEXT NOT NULL REFERENCES sweeps(name),
        run_id TEXT NOT NULL REFERENCES runs(run_id),
        pos    INTEGER NOT NULL,  -- order of the run in its sweep's expansion
        PRIMARY KEY (sweep, run_id)) WITHOUT ROWID""",
    "CREATE INDEX sweep_runs_run ON sweep_runs(run_id)",
    """CREATE TABLE metrics (
        run_id TEXT NOT NULL REFERENCES runs(run_id),
        step   INTEGER NOT NULL,
        key    TEXT NOT NULL,
        value  REAL,  -- NULL = NaN
        PRIMARY KEY (run_id, step, key)) WITHOUT ROWID""",
]


def default_db_path() -> Path:
    """``$PROXYLAB_DB`` when set, else ``./proxylab.db``."""
    return Path(os.environ.get("PROXYLAB_DB") or "proxylab.db")


def json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def dumps(obj: Any, *, sort_keys: bool = False) -> str:
    """JSON text; key order kept (it becomes column order) unless ``sort_keys``."""
    return json.dumps(obj, sort_keys=sort_keys, default=json_default)


def loads(text: str | None) -> Any:
    return {} if text is None else json.loads(text)


def real(value: Any) -> float | None:
    if value is None:
        return None
    v = float(value)
    return None if math.isnan(v) else v


def cell(value: Any) -> Any:
    """A DataFrame cell: scalars as they are, dicts and lists as canonical JSON text."""
    return dumps(value, sort_keys=True) if isinstance(value, (dict, list, tuple)) else value


def config_dict(cfg: Any) -> dict:
    if hasattr(cfg, "to_dict"):  # a RunConfig
        return cfg.to_dict()
    if isinstance(cfg, Mapping):
        return dict(cfg)
    raise TypeError(f"a run config must be a RunConfig or a dict, got {type(cfg).__name__}")


def flat_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Nested ``RunConfig.to_dict()`` (or already dotted keys) -> ``{"optim.lr": ...}``.

    Dict-valued keys such as ``optim.extra`` become one column holding canonical JSON.
    """
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        if isinstance(value, Mapping) and "." not in key:
            out.update({f"{key}.{k}": cell(v) for k, v in value.items()})
        else:
            out[key] = cell(value)
    return out


def as_list(values: str | Iterable[str]) -> list[str]:
    return [values] if isinstance(values, str) else [str(v) for v in values]
