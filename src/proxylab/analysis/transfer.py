"""Hyperparameter transfer across width: how far the optimal LR moves (muP vs SP).

μP's claim (Yang et al. 2022; Wortsman et al. 2023 §3.2 "μParam simple") is that the
loss-optimal LR stays put as width grows, while under standard parameterization (SP) with
Adam it shrinks roughly like 1/width. The numbers here come from :func:`optimal_lr` rows.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


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


def transfer_verdict(opt: pd.DataFrame, *, param_key: str = "model.param",
                     width_key: str = "model.width", margin: float = 0.3) -> dict:
    """Verdict on "μP pins the optimal LR across width; SP does not".

    reproduced: the SP slope is below -margin and |μP slope| is smaller than |SP slope| by
    at least margin; not_reproduced: the μP optimum moves at least as much as SP's;
    inconclusive otherwise (including optima on the grid's edge, or missing groups).
    """
    shifts = {p: lr_shift(opt[opt[param_key] == p], width_key=width_key)
              for p in sorted(set(opt[param_key]))}
    sp, mup = shifts.get("sp"), shifts.get("mup")
    evidence = {f"{p}_{k}": v for p, s in shifts.items() for k, v in s.items()}
    if sp is None or mup is None or math.isnan(sp["slope_log2lr_per_log2width"]) \
            or math.isnan(mup["slope_log2lr_per_log2width"]):
        return {"status": "inconclusive", "evidence": evidence}
    s_sp, s_mup = sp["slope_log2lr_per_log2width"], mup["slope_log2lr_per_log2width"]
    if sp["edge"] or mup["edge"]:
        status = "inconclusive"       # an optimum on the grid's edge: the slope is only a bound
    elif abs(s_mup) >= abs(s_sp):
        status = "not_reproduced"
    elif s_sp < -margin and abs(s_mup) + margin <= abs(s_sp):
        status = "reproduced"
    else:
        status = "inconclusive"
    return {"status": status, "evidence": evidence}
