"""Per-run numbers from the store's two DataFrames: which axes a sweep varies, and the
final metrics of every run (one row each).

Both functions take the frames that :meth:`proxylab.store.Store.runs` and
:meth:`~proxylab.store.Store.metrics` return (see ``docs/internals.md``) and nothing else,
so they can be tested on hand-built frames.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

# config columns are dotted keys whose first part is one of the config sections
CONFIG_SECTIONS = ("task.", "model.", "optim.", "schedule.", "train.")
SEED_KEY = "train.seed"
LR_KEY = "optim.lr"
# statuses whose final loss means something for an LR curve (a diverged run is a result)
FINISHED = ("done", "diverged")

# summary columns that may carry throughput, most specific first
_TOKENS_PER_S_COLUMNS = ("tokens_per_s", "summary.tokens_per_s", "tok_per_s", "throughput")

FINAL_COLUMNS = [
    "final_val_loss", "best_val_loss", "init_loss", "final_train_loss", "final_val_acc",
    "steps_done", "tokens_per_s", "max_attn_logit", "diverged",
]


def config_columns(df: pd.DataFrame) -> list[str]:
    """Columns of ``df`` that hold config keys (``optim.lr``, ``model.width``, ...)."""
    return [c for c in df.columns if isinstance(c, str) and c.startswith(CONFIG_SECTIONS)]


def _is_seed(col: str) -> bool:
    last = col.rsplit(".", 1)[-1]
    return last == "seed" or last.endswith("_seed")


def _hashable(v):
    """Dict/list config values (``optim.extra``) compared through canonical JSON."""
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True, default=str)
    if isinstance(v, float) and math.isnan(v):
        return None  # one "missing" value, however it is spelled
    return v


def varied_axes(runs_df: pd.DataFrame) -> list[str]:
    """Config columns that take more than one value across ``runs_df``.

    Seed columns (``train.seed``) are left out on purpose: analyses average over seeds
    rather than treating them as an axis. Ids, status and summary columns are never axes.
    A value missing in some runs (e.g. an ``optim.extra`` key only one optimizer has)
    counts as one of the values.
    """
    out = []
    for col in config_columns(runs_df):
        if _is_seed(col):
            continue
        if runs_df[col].map(_hashable).nunique(dropna=False) > 1:
            out.append(col)
    return out


def _finite(x) -> bool:
    return x is not None and isinstance(x, (int, float, np.number)) and math.isfinite(float(x))


def _series(m: pd.DataFrame, key: str) -> pd.Series:
    """value indexed by step for one key of one run's long-form metrics, sorted by step."""
    s = m.loc[m["key"] == key, ["step", "value"]].sort_values("step", kind="stable")
    return pd.Series(s["value"].to_numpy(dtype=float), index=s["step"].to_numpy())


def _last(s: pd.Series) -> float:
    return float(s.iloc[-1]) if len(s) else math.nan


def _tokens_per_s(run: pd.Series, m: pd.DataFrame) -> float:
    for col in _TOKENS_PER_S_COLUMNS:
        if col in run.index and _finite(run[col]):
            return float(run[col])
    tokens, wall = _last(_series(m, "tokens")), _last(_series(m, "wall_s"))
    if _finite(tokens) and _finite(wall) and wall > 0:
        return tokens / wall
    return math.nan


def _run_numbers(run: pd.Series, m: pd.DataFrame) -> dict:
    val, train = _series(m, "val/loss"), _series(m, "train/loss")
    attn = _series(m, "attn_logit_max_l0")
    # loss at initialization: val/loss at step 0, else train/loss at step 0
    init = val.get(0, math.nan) if 0 in val.index else train.get(0, math.nan)
    if isinstance(init, pd.Series):  # duplicated step 0 rows: keep the last
        init = init.iloc[-1]
    finite_val = val[np.isfinite(val.to_numpy())]
    losses = np.concatenate([val.to_numpy(), train.to_numpy()])
    nonfinite_loss = bool(len(losses)) and not np.isfinite(losses).all()
    finite_attn = attn[np.isfinite(attn.to_numpy())]
    return {
        "final_val_loss": _last(val),
        "best_val_loss": float(finite_val.min()) if len(finite_val) else math.nan,
        "init_loss": float(init),
        "final_train_loss": _last(train),
        "final_val_acc": _last(_series(m, "val/acc")),
        "steps_done": int(m["step"].max()) if len(m) else 0,
        "tokens_per_s": _tokens_per_s(run, m),
        "max_attn_logit": float(finite_attn.max()) if len(finite_attn) else math.nan,
        "diverged": str(run.get("status")) == "diverged" or nonfinite_loss,
    }


def final_metrics(runs_df: pd.DataFrame, metrics_df: pd.DataFrame) -> pd.DataFrame:
    """One row per run: ``run_id, status``, its varied config columns (plus ``train.seed``
    and ``optim.lr`` whenever present), and

    - ``final_val_loss``: the last ``val/loss``; ``best_val_loss``: the smallest finite one
    - ``init_loss``: ``val/loss`` at step 0 (``train/loss`` at step 0 when no val at 0)
    - ``final_train_loss``: the last ``train/loss``; ``final_val_acc``: the last ``val/acc``
      (NaN where the task has no accuracy); ``steps_done``: the last logged step
    - ``tokens_per_s``: a summary column when the run has one, else last ``tokens`` /
      last ``wall_s``
    - ``max_attn_logit``: the largest finite ``attn_logit_max_l0`` over training
    - ``diverged``: status ``diverged``, or any NaN/inf train or val loss

    Missing numbers are NaN (a pending run has no losses). Row order follows ``runs_df``.
    """
    axes = varied_axes(runs_df)
    keep = [c for c in (SEED_KEY, LR_KEY) if c in runs_df.columns and c not in axes]
    cols = ["run_id", "status", *axes, *keep]
    by_run = dict(tuple(metrics_df.groupby("run_id", sort=False))) if len(metrics_df) else {}
    empty = metrics_df.iloc[0:0] if len(metrics_df.columns) else pd.DataFrame(
        columns=["run_id", "step", "key", "value"])
    rows = []
    for _, run in runs_df.iterrows():
        m = by_run.get(run["run_id"], empty)
        rows.append({**{c: run.get(c) for c in cols}, **_run_numbers(run, m)})
    out = pd.DataFrame(rows, columns=cols + FINAL_COLUMNS)
    out["diverged"] = out["diverged"].astype(bool)
    out["steps_done"] = out["steps_done"].astype(int)
    return out
