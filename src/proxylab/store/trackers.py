"""Export a store into the experiment trackers people already use: TensorBoard and MLflow.

Both are written after the fact from the store (never a live dependency of training) and both
are optional extras, imported here only when asked for:

- TensorBoard (``pip install 'proxylab[tensorboard]'``): ``OUT/<run_id>/`` holds one run's
  event file: every stored metric as a scalar under its own key (``train/loss``, ``val/loss``,
  ``opt/...``) at its step, the final summary numbers under ``summary/<key>``, and the flat
  config in the hparams plugin (in the same folder, so the HParams tab and the scalars match;
  ``add_hparams`` would make a sub-run per call). Exporting again replaces each run's folder.
- MLflow (``pip install 'proxylab[mlflow]'``): ``OUT`` is a tracking URI (``sqlite:///x.db``,
  ``http://...``) or a folder, which gets ``OUT/mlflow.db`` (SQLite, MLflow's default store)
  and ``OUT/artifacts``. One MLflow run per proxylab run in the experiment ``proxylab``:
  params = the flat config (``optim.lr``), metrics with their steps, tags = ``status``,
  ``sweep`` (comma-separated when a run is in several) and ``proxylab.run_id``. Exporting
  again is idempotent: an unchanged run is left alone, a changed one (resumed, redone) is
  replaced, so the experiment always holds exactly one MLflow run per proxylab run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

from proxylab.config import ConfigError
from proxylab.store.schema import RUN_COLUMNS

EXPERIMENT = "proxylab"
_SUMMARY_SKIP = set(RUN_COLUMNS)


def _require(module: str, extra: str):
    import importlib  # noqa: PLC0415

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ConfigError(f"--format {extra}: needs the optional package {e.name!r}; install it "
                          f"with: pip install 'proxylab[{extra}]'") from None


def _runs_and_metrics(store, sweep):
    with store.snapshot():  # one consistent state
        runs = store.runs(sweep=sweep)
        metrics = store.metrics(sweep=sweep)
    return runs, metrics


def _unix(ts) -> float | None:
    try:
        return None if ts is None or ts != ts else ts.timestamp()
    except (AttributeError, ValueError):
        return None


def _config_columns(runs) -> list[str]:
    return [c for c in runs.columns if c not in _SUMMARY_SKIP and "." in c
            and not c.startswith("summary.")]


def _summary_numbers(row, config_cols) -> dict[str, float]:
    out = {}
    for k, v in row.items():
        if k in _SUMMARY_SKIP or k in config_cols:
            continue
        if isinstance(v, bool):
            v = float(v)
        if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)):
            out[k] = float(v)
    return out


def _param_value(v: Any) -> Any:
    """hparams take bool, int, float or str; None and everything else become text."""
    if isinstance(v, (bool, int, float, str)) and not (isinstance(v, float) and math.isnan(v)):
        return v
    return "none" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


def _sweep(row) -> str:
    v = row["sweep"]
    return v if isinstance(v, str) else ""      # None / NaN: a run in no sweep


def _wall_by_step(metrics_of_run) -> dict[int, float]:
    wall = metrics_of_run[metrics_of_run["key"] == "wall_s"]
    return dict(zip(wall["step"].astype(int), wall["value"].astype(float)))


# ---- TensorBoard ----------------------------------------------------------------------
def export_tensorboard(store, out_dir: str | os.PathLike, sweep: str | None = None) -> dict[str, Path]:
    """One folder per run under ``out_dir`` (see the module doc); -> ``{"runs": out_dir}``."""
    _require("tensorboard", "tensorboard")
    from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415
    from torch.utils.tensorboard.summary import hparams  # noqa: PLC0415

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder (TensorBoard writes one "
                          "folder per run)")
    runs, metrics = _runs_and_metrics(store, sweep)
    out.mkdir(parents=True, exist_ok=True)
    config_cols = _config_columns(runs)
    by_run = dict(tuple(metrics.groupby("run_id", sort=False))) if len(metrics) else {}
    for _, row in runs.iterrows():
        rid = row["run_id"]
        m = by_run.get(rid, metrics.iloc[:0])
        start = _unix(row["started"]) or _unix(row["created"]) or 0.0
        wall = _wall_by_step(m)
        tmp = out / f".{rid}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        w = SummaryWriter(log_dir=str(tmp), flush_secs=3600)
        try:
            for step, key, value in zip(m["step"].astype(int), m["key"], m["value"].astype(float)):
                w.add_scalar(key, value, int(step), walltime=start + wall.get(int(step), 0.0))
            last = int(m["step"].max()) if len(m) else 0
            summary = _summary_numbers(row, config_cols)
            end = _unix(row["finished"]) or start
            for k, v in summary.items():
                w.add_scalar(f"summary/{k}", v, last, walltime=end)
            hp = {c: _param_value(row[c]) for c in config_cols}
            hp.update(status=str(row["status"]), sweep=_sweep(row), run_id=rid)
            for s in hparams(hp, {f"summary/{k}": v for k, v in summary.items()}):
                w.file_writer.add_summary(s, walltime=start)
        finally:
            w.close()
        shutil.rmtree(out / rid, ignore_errors=True)   # exporting again replaces the run
        os.replace(tmp, out / rid)
    return {"runs": out}


# ---- MLflow ---------------------------------------------------------------------------
_BAD_KEY = re.compile(r"[^A-Za-z0-9_\-. /:]")


def _key(k: str) -> str:
    """MLflow keys allow letters, digits, ``_ - . / :`` and spaces."""
    return _BAD_KEY.sub("_", str(k))[:250]


def tracking_uri(out: str | os.PathLike) -> tuple[str, str | None]:
    """(tracking URI, artifact location or None) for ``--out``: a URI as it is, a folder
    as ``sqlite:///FOLDER/mlflow.db`` with artifacts in ``FOLDER/artifacts``."""
    text = str(out)
    if "://" in text:
        return text, None
    folder = Path(text).resolve()
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--out {text}: exists and is not a folder; give a folder or a "
                          "tracking URI such as sqlite:///path/mlflow.db")
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}", (folder / "artifacts").as_uri()


def export_mlflow(store, out: str | os.PathLike, sweep: str | None = None) -> dict[str, str]:
    """One MLflow run per proxylab run (see the module doc); -> ``{"runs": tracking URI}``."""
    _require("mlflow", "mlflow")
    for mod in ("sqlalchemy", "alembic"):   # the SQLite tracking store needs these two
        _require(mod, "mlflow")
    from mlflow.entities import Metric, Param, RunTag  # noqa: PLC0415
    from mlflow.tracking import MlflowClient  # noqa: PLC0415

    for name in ("mlflow", "alembic"):      # table creation and migrations log at INFO
        logging.getLogger(name).setLevel(logging.WARNING)
    uri, artifacts = tracking_uri(out)
    runs, metrics = _runs_and_metrics(store, sweep)
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    exp_id = exp.experiment_id if exp else client.create_experiment(EXPERIMENT, artifact_location=artifacts)
    existing: dict[str, list] = {}
    for r in _all_runs(client, exp_id):
        existing.setdefault(r.data.tags.get("proxylab.run_id"), []).append(r)
    config_cols = _config_columns(runs)
    by_run = dict(tuple(metrics.groupby("run_id", sort=False))) if len(metrics) else {}
    for _, row in runs.iterrows():
        rid = row["run_id"]
        m = by_run.get(rid, metrics.iloc[:0])
        sig = hashlib.sha256(json.dumps(
            [str(row["status"]), int(row["attempt"]), str(row["finished"]), _sweep(row),
             len(m), float(m["value"].fillna(0).sum()) if len(m) else 0.0]).encode()).hexdigest()[:16]
        old = existing.get(rid, [])
        if len(old) == 1 and old[0].data.tags.get("proxylab.signature") == sig:
            continue                                   # already exported as it is now
        for r in old:
            client.delete_run(r.info.run_id)
        start = _unix(row["started"]) or _unix(row["created"]) or 0.0
        wall = _wall_by_step(m)
        tags = {"status": str(row["status"]), "sweep": _sweep(row),
                "proxylab.run_id": rid, "proxylab.attempt": str(int(row["attempt"])),
                "proxylab.signature": sig}
        run = client.create_run(exp_id, start_time=int(start * 1000), tags=tags, run_name=rid)
        mid = run.info.run_id
        params = [Param(_key(c), str(_param_value(row[c]))[:6000]) for c in config_cols]
        for i in range(0, len(params), 100):
            client.log_batch(mid, params=params[i:i + 100], synchronous=True)
        rows = [Metric(_key(k), float(v), int((start + wall.get(int(s), 0.0)) * 1000), int(s))
                for s, k, v in zip(m["step"].astype(int), m["key"], m["value"].astype(float))]
        end = _unix(row["finished"]) or start
        last = int(m["step"].max()) if len(m) else 0
        rows += [Metric(_key(f"summary/{k}"), v, int(end * 1000), last)
                 for k, v in _summary_numbers(row, config_cols).items()]
        for i in range(0, len(rows), 1000):
            client.log_batch(mid, metrics=rows[i:i + 1000], synchronous=True)
        if row["status"] in ("done", "diverged", "failed"):
            client.set_terminated(mid, "FAILED" if row["status"] == "failed" else "FINISHED",
                                  end_time=int(end * 1000))
        elif row["status"] == "pending":
            client.update_run(mid, status="SCHEDULED")
    return {"runs": uri}


def _all_runs(client, exp_id: str) -> list:
    out, token = [], None
    while True:
        page = client.search_runs([exp_id], max_results=1000, page_token=token)
        out.extend(page)
        token = page.token
        if not token:
            return out
