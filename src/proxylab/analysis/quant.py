"""Analyses for quantization-aware training (BitNet b1.58): best scores over the LR grid,
gaps between variants, optimal-LR ratios, weight-decay effects and ternary weight shares.

Every function takes per-run DataFrames (:func:`proxylab.analysis.final_metrics`, plus the
config columns the caller selects on) and returns numbers or DataFrames; nothing draws.

Conventions:
- A *variant* is a dict of config values (``{"model.quant": "bitnet158",
  "model.quant_scale": "absmean", "model.width": 64}``); :func:`select` picks its runs.
- ``metric="loss"``: the final validation loss with Wortsman's cap (a diverged/NaN run counts
  as its loss at initialization, a loss above it is capped), seeds averaged per LR, and the
  best is the minimum over the LR grid. ``metric="acc"``: the final validation accuracy, a
  diverged or NaN run counting as 0, seeds averaged per LR, best = the maximum.
- "best over the LR grid" is the grid point, not a fitted vertex, so it is a number some
  runs really reached.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from proxylab.analysis.lr import capped_loss, lr_curves, lr_sensitivity, optimal_lr
from proxylab.analysis.runs import LR_KEY

TERNARY = ("frac_neg", "frac_zero", "frac_pos")


def select(df: pd.DataFrame, variant: dict) -> pd.DataFrame:
    """The rows of ``df`` whose columns equal every value of ``variant``."""
    keep = np.ones(len(df), dtype=bool)
    for k, v in variant.items():
        if k not in df.columns:
            raise KeyError(f"{k}: not a column; columns: {list(df.columns)}")
        keep &= (df[k] == v).to_numpy()
    return df[keep]


def run_scores(df: pd.DataFrame, metric: str = "loss") -> pd.Series:
    """Per-run score: capped final val loss (``loss``) or final val accuracy (``acc``)."""
    if metric == "loss":
        return capped_loss(df)
    if metric == "acc":
        acc = df["final_val_acc"].astype(float)
        bad = df["diverged"].astype(bool) | ~np.isfinite(acc)
        return pd.Series(np.where(bad, 0.0, acc), index=df.index, dtype=float)
    raise ValueError(f"metric {metric!r}: choose 'loss' or 'acc'")


def score_vs_lr(df: pd.DataFrame, metric: str = "loss", lr_key: str = LR_KEY) -> pd.Series:
    """Seed-averaged score per LR (index: LR, sorted)."""
    s = run_scores(df, metric)
    return s.groupby(df[lr_key].to_numpy()).mean().sort_index()


def best_score(df: pd.DataFrame, metric: str = "loss", lr_key: str = LR_KEY) -> float:
    """The best seed-averaged score over the LR grid (min loss / max accuracy); NaN if empty."""
    curve = score_vs_lr(df, metric, lr_key)
    if not len(curve):
        return math.nan
    return float(curve.min() if metric == "loss" else curve.max())


def best_lr(df: pd.DataFrame, metric: str = "loss", lr_key: str = LR_KEY) -> float:
    """The grid LR with the best seed-averaged score."""
    curve = score_vs_lr(df, metric, lr_key)
    if not len(curve):
        return math.nan
    return float(curve.idxmin() if metric == "loss" else curve.idxmax())


def best_gap(df: pd.DataFrame, a: dict, b: dict, metric: str = "loss") -> float:
    """best_score(a) − best_score(b): in nats for loss (positive: a is worse), in accuracy
    for acc (positive: a is better)."""
    return best_score(select(df, a), metric) - best_score(select(df, b), metric)


def mean_best_gap(df: pd.DataFrame, pairs: list[tuple[dict, dict]], metric: str = "loss") -> float:
    """The mean of :func:`best_gap` over several (a, b) pairs (e.g. one per width)."""
    gaps = [best_gap(df, a, b, metric) for a, b in pairs]
    return float(np.mean(gaps)) if gaps else math.nan


def log10_lr_opt(df: pd.DataFrame, lr_key: str = LR_KEY) -> float:
    """log10 of the loss-optimal LR of one variant's runs: the parabola vertex in log LR of
    :func:`~proxylab.analysis.lr.optimal_lr` (the grid argmin where no convex fit holds)."""
    if not len(df):
        return math.nan
    curves = lr_curves(df, lr_key=lr_key, group_keys=[])
    opt = optimal_lr(curves, lr_key=lr_key)
    v = float(opt["lr_opt"].iloc[0]) if len(opt) else math.nan
    return math.log10(v) if v > 0 else math.nan


def lr_opt_shift(df: pd.DataFrame, a: dict, b: dict, lr_key: str = LR_KEY) -> float:
    """log10 lr_opt(a) − log10 lr_opt(b): > 0 when a's loss-optimal LR is higher."""
    return log10_lr_opt(select(df, a), lr_key) - log10_lr_opt(select(df, b), lr_key)


def sensitivity(df: pd.DataFrame, lr_key: str = LR_KEY) -> float:
    """Wortsman et al.'s LR sensitivity E_η[min(ℓ(η), ℓ0) − ℓ*] of one variant's runs."""
    if not len(df):
        return math.nan
    s = lr_sensitivity(lr_curves(df, lr_key=lr_key, group_keys=[]), lr_key=lr_key)
    return float(s["lr_sensitivity"].iloc[0]) if len(s) else math.nan


def wd_benefit(df: pd.DataFrame, variant: dict, wd: float, wd_key: str = "optim.weight_decay",
               metric: str = "loss") -> float:
    """How much weight decay ``wd`` improves the best loss over no decay:
    best(wd = 0) − best(wd) in nats (positive: decay helps)."""
    base = best_score(select(df, {**variant, wd_key: 0.0}), metric)
    with_wd = best_score(select(df, {**variant, wd_key: wd}), metric)
    return base - with_wd if metric == "loss" else with_wd - base


def wd_benefit_gap(df: pd.DataFrame, a: dict, b: dict, wd: float,
                   wd_key: str = "optim.weight_decay") -> float:
    """wd_benefit(b) − wd_benefit(a): > 0 when decay helps b more than a (nats)."""
    return wd_benefit(df, b, wd, wd_key) - wd_benefit(df, a, wd, wd_key)


def wd_table(df: pd.DataFrame, variant: dict, wd_key: str = "optim.weight_decay",
             lr_key: str = LR_KEY) -> pd.DataFrame:
    """Per weight decay value: best loss, its LR, and the LR sensitivity of ``variant``."""
    sub = select(df, variant)
    rows = []
    for wd in sorted(sub[wd_key].unique()):
        s = sub[sub[wd_key] == wd]
        rows.append({wd_key: float(wd), "best_loss": best_score(s, "loss", lr_key),
                     "best_lr": best_lr(s, "loss", lr_key), "lr_sensitivity": sensitivity(s, lr_key)})
    return pd.DataFrame(rows, columns=[wd_key, "best_loss", "best_lr", "lr_sensitivity"])


def heatmap(df: pd.DataFrame, row_key: str, col_key: str, metric: str = "loss") -> pd.DataFrame:
    """Seed-averaged score on a (row_key × col_key) grid, e.g. weight decay × LR."""
    s = run_scores(df, metric)
    t = pd.DataFrame({row_key: df[row_key].to_numpy(), col_key: df[col_key].to_numpy(),
                      "score": s.to_numpy()})
    return t.pivot_table(index=row_key, columns=col_key, values="score", aggfunc="mean")


# ----------------------------------------------------------------------------------
# ternary weights


def ternary_shares(shares: pd.DataFrame) -> dict[str, float]:
    """Mean share of weights at −1, 0, +1 over the rows of ``shares`` (columns frac_neg,
    frac_zero, frac_pos: one row per run, e.g. its last probe)."""
    return {k: float(shares[k].mean()) if len(shares) else math.nan for k in TERNARY}


def ternary_imbalance(shares: pd.DataFrame) -> float:
    """max over {−1, 0, +1} of |mean share − 1/3|: 0 for a perfectly uniform split, 2/3 when
    every weight sits on one value."""
    m = ternary_shares(shares)
    if any(not math.isfinite(v) for v in m.values()):
        return math.nan
    return float(max(abs(v - 1.0 / 3.0) for v in m.values()))


def last_probe(metrics: pd.DataFrame, prefix: str = "quant/") -> pd.DataFrame:
    """One row per run: the aggregate quant probes (``quant/<stat>``, layer-less keys) at the
    run's last probed step, columns named by ``<stat>`` (frac_neg, ..., flip_rate, act_err)."""
    m = metrics[metrics["key"].str.startswith(prefix)]
    m = m[m["key"].str.count("/") == 1]
    if not len(m):
        return pd.DataFrame(columns=["run_id", "step"])
    last = m.groupby("run_id")["step"].transform("max")
    m = m[m["step"] == last]
    out = m.pivot_table(index=["run_id", "step"], columns="key", values="value", aggfunc="last")
    out.columns = [c[len(prefix):] for c in out.columns]
    return out.reset_index()


def probe_history(metrics: pd.DataFrame, stat: str, prefix: str = "quant/") -> pd.DataFrame:
    """Long form (run_id, step, value) of one aggregate probe ``quant/<stat>`` over training."""
    m = metrics[metrics["key"] == f"{prefix}{stat}"]
    return m[["run_id", "step", "value"]].sort_values(["run_id", "step"]).reset_index(drop=True)
