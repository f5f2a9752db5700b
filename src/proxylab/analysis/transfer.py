"""Hyperparameter transfer across width: how far the optimal LR moves (muP vs SP).

μP's claim (Yang et al. 2022; Wortsman et al. 2023 §3.2 "μParam simple") is that the
loss-optimal LR stays put as width grows, while under standard parameterization (SP) with
Adam it shrinks roughly like 1/width. The numbers here come from :func:`optimal_lr` rows.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from proxylab.analysis.lr import lr_curves, optimal_lr
from proxylab.analysis.runs import LR_KEY, varied_axes
from proxylab.analysis.verdict import Claim, bootstrap_runs, decide
from proxylab.config import ConfigError


def lr_shift(opt: pd.DataFrame, *, width_key: str = "model.width",
             lr_col: str = "lr_opt") -> dict:
    """Slope of log2(optimal LR) against log2(width), with the per-width optima.

    -1 means the optimum halves each time width doubles (SP-like); 0 means it is pinned.
    ``edge`` counts widths whose optimum sits at the end of the LR grid (then the slope is
    a bound, not a measurement).
    """
    sub = opt[np.isfinite(opt[lr_col].astype(float))].sort_values(width_key)
    w = sub[width_key].to_numpy(dtype=float)
    lr = sub[lr_col].to_numpy(dtype=float)
    slope = float(np.polyfit(np.log2(w), np.log2(lr), 1)[0]) if len(w) >= 2 else math.nan
    return {"slope_log2lr_per_log2width": slope,
            "widths": [int(x) for x in w], "lr_opt": [float(x) for x in lr],
            "edge": int(sub["at_edge"].sum()) if "at_edge" in sub else 0}


TRANSFER_CLAIM = Claim(
    text="muP keeps the loss-optimal Adam LR fixed across width; SP's optimum shrinks with "
         "width (Yang et al. 2022; Wortsman et al. 2023 §3.2)",
    effect="|slope SP| - |slope muP| of log2(optimal LR) per doubling of width",
    direction="greater", margin=0.3, unit="log2 LR per doubling")


def transfer_verdict(final_df: pd.DataFrame, *, param_key: str = "model.param",
                     width_key: str = "model.width", lr_key: str = LR_KEY,
                     mup: str = "mup", claim: Claim = TRANSFER_CLAIM, n_boot: int = 300, seed: int = 0) -> dict:
    """Verdict on "μP pins the optimal LR across width; SP moves it", via :func:`decide`.

    The effect is |SP slope| − |μP slope| (slopes of log2 optimal LR against log2 width,
    one per parameterization; ``mup`` names the μP variant, ``mup`` or ``mup-simple``; every
    other varied axis must be absent). The interval is a
    bootstrap over seeds, or over LR grid points with one seed. An optimum on the edge of
    the LR grid makes its slope a bound, not a measurement: the verdict is then
    inconclusive whatever the interval says.
    """
    other = [a for a in varied_axes(final_df) if a not in (param_key, width_key, lr_key)]
    if other:
        raise ConfigError(f"transfer_verdict: the runs also vary {other}; select one value "
                          "of each before asking how the optimal LR moves with width")

    def slopes(runs: pd.DataFrame) -> dict[str, dict]:
        opt = optimal_lr(lr_curves(runs, lr_key=lr_key, group_keys=[param_key, width_key]),
                         lr_key=lr_key)
        return {p: lr_shift(opt[opt[param_key] == p], width_key=width_key)
                for p in sorted(set(opt[param_key]))}

    def effect(runs: pd.DataFrame) -> float:
        s = slopes(runs)
        if "sp" not in s or mup not in s:
            return math.nan
        return abs(s["sp"]["slope_log2lr_per_log2width"]) - abs(s[mup]["slope_log2lr_per_log2width"])

    seeds = final_df["train.seed"].nunique() if "train.seed" in final_df else 1
    unit = "train.seed" if seeds >= 2 else lr_key
    est, lo, hi, n = bootstrap_runs(final_df, effect, unit=unit, n_boot=n_boot, seed=seed)
    shifts = slopes(final_df)
    evidence = {f"{p}_{k}": v for p, s in shifts.items() for k, v in s.items()}
    evidence["bootstrap_unit"] = unit
    verdict = decide(claim, est, lo, hi, n=n, evidence=evidence,
                     reason_extra=f"bootstrap over {n} {'seeds' if unit != lr_key else 'LR grid points'}")
    edges = sum(s["edge"] for s in shifts.values())
    if edges:
        verdict["status"] = "inconclusive"
        verdict["reason"] += (f"; {edges} optimum/optima on the edge of the LR grid, so a slope "
                              "is only a bound: widen the grid")
    return verdict
