"""Critical batch size: steps to a target loss against batch size, and the laws fitted to it.

Pure functions on numbers and DataFrames (no store, no plotting); each has a known-answer
test in ``tests/test_analysis_batch_size.py``. The literature (research brief §2):

- Shallue et al. 2019: the metric is the number of steps S(B) to reach a fixed target
  loss, with the learning rate re-tuned per batch size (the best over LR per B).
- McCandlish et al. 2018: S(B) = S_min (1 + B_crit / B); the examples E = B S then obey
  (S/S_min − 1)(E/E_min − 1) = 1 with E_min = S_min B_crit; B_crit ≈ B_simple up to O(1).
- Zhang et al. 2024: the critical batch size B* is where S exceeds the linear-scaling
  extrapolation from the smallest batch B_0 by 20%: S(B*) B* = 1.2 S(B_0) B_0. Under the
  law above this is B* = 1.2 B_0 + 0.2 B_crit (B_crit / 5 as B_0 → 0; the research brief's
  "B_crit / 4" is an arithmetic slip: 1 + B/B_crit = 1.2 gives B = 0.2 B_crit).
- Li et al. 2024 ("Surge"): for Adam the optimal LR rises, then falls with B.

Conventions: a curve reaches a target at the first evaluation at or below it, linearly
interpolated with the evaluation before (never extrapolated: a run that ends above the
target is a miss, NaN); steps are optimizer steps, examples = steps × batch size.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

Z90 = 1.6448536269514722          # two-sided 90% normal quantile


# ----------------------------------------------------------------------------------
# steps to a target


def steps_to_target(steps: Sequence[float], losses: Sequence[float], target: float) -> float:
    """The (fractional) step at which the curve first reaches ``target``; NaN when it never
    does. Linear interpolation between the evaluation that reaches the target and the one
    before it; a curve at or below the target at its first evaluation gives that step."""
    s = np.asarray(steps, dtype=float)
    y = np.asarray(losses, dtype=float)
    order = np.argsort(s, kind="stable")
    s, y = s[order], y[order]
    hit = np.nonzero(np.isfinite(y) & (y <= target))[0]
    if not hit.size:
        return math.nan
    i = int(hit[0])
    if i == 0 or not math.isfinite(y[i - 1]):
        return float(s[i])
    frac = (y[i - 1] - target) / (y[i - 1] - y[i])
    return float(s[i - 1] + frac * (s[i] - s[i - 1]))


def value_at(x: Sequence[float], y: Sequence[float], at: float) -> float:
    """``y`` linearly interpolated at ``at`` (x increasing); NaN outside [x_0, x_last]."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if not x.size or not math.isfinite(at) or at < x[0] or at > x[-1]:
        return math.nan
    return float(np.interp(at, x, y))


def run_targets(runs: pd.DataFrame, metrics: pd.DataFrame, targets: dict[str, float], *,
                key: str = "val_ema/loss", batch_key: str = "train.batch_size",
                tokens_per_example: float = 1.0) -> pd.DataFrame:
    """One row per (run, target): the run's config columns, ``target`` (its name),
    ``target_loss``, ``steps`` (NaN = missed), ``examples`` = steps × B, ``tokens`` =
    examples × ``tokens_per_example``, ``reached`` and ``last_step`` (the last evaluation).

    ``runs`` has ``run_id`` and config columns; ``metrics`` is the store's long form
    (``run_id, step, key, value``)."""
    by_run = dict(tuple(metrics[metrics["key"] == key].groupby("run_id"))) if len(metrics) else {}
    rows = []
    for _, run in runs.iterrows():
        m = by_run.get(run["run_id"])
        steps = m["step"].to_numpy(dtype=float) if m is not None else np.array([])
        loss = m["value"].to_numpy(dtype=float) if m is not None else np.array([])
        for name, t in targets.items():
            s = steps_to_target(steps, loss, t) if steps.size else math.nan
            b = float(run[batch_key])
            rows.append({**run.to_dict(), "target": name, "target_loss": float(t), "steps": s,
                         "examples": s * b, "tokens": s * b * tokens_per_example,
                         "reached": math.isfinite(s),
                         "last_step": float(steps.max()) if steps.size else math.nan})
    return pd.DataFrame(rows)


def best_curve(metrics: pd.DataFrame, keys: Sequence[str] = ("val/loss", "val_ema/loss"),
               name: str = "val_best/loss") -> pd.DataFrame:
    """Long-form rows (``run_id, step, key, value``) of the pointwise minimum over ``keys``
    at each (run, step) that logs any of them: the raw and the weight-averaged evaluation
    of the same weights, i.e. the averaging constant tuned over {0, tau} per evaluation."""
    m = metrics[metrics["key"].isin(list(keys))]
    if not len(m):
        return pd.DataFrame(columns=["run_id", "step", "key", "value"])
    out = m.groupby(["run_id", "step"], as_index=False)["value"].min()
    out["key"] = name
    return out[["run_id", "step", "key", "value"]]


def targets_at_budgets(runs: pd.DataFrame, metrics: pd.DataFrame, budgets: dict[str, float], *,
                       key: str = "val_best/loss", batch_key: str = "train.batch_size",
                       lr_key: str = "optim.lr") -> dict[str, float]:
    """Target losses for data budgets (Zhang et al.: the loss at 1x and 4x a token budget):
    for each budget D (examples), the loss the SMALLEST batch size reaches after D examples
    (its curve interpolated at steps x B = D), averaged over seeds per LR, best over LR.
    NaN when no LR's runs all cover D."""
    b0 = runs[batch_key].min()
    ref = runs[runs[batch_key] == b0]
    curves = dict(tuple(metrics[metrics["key"] == key].groupby("run_id"))) if len(metrics) else {}
    out = {}
    for name, d in budgets.items():
        per_lr: dict[float, list[float]] = {}
        for _, run in ref.iterrows():
            c = curves.get(run["run_id"])
            v = (value_at(c["step"].to_numpy(dtype=float) * float(b0), c["value"].to_numpy(dtype=float), d)
                 if c is not None else math.nan)
            per_lr.setdefault(float(run[lr_key]), []).append(v)
        means = [float(np.mean(v)) for v in per_lr.values() if np.isfinite(v).all()]
        out[name] = min(means) if means else math.nan
    return out


# ----------------------------------------------------------------------------------
# best over LR, optimal LR


def parabola_argmin(x: Sequence[float], y: Sequence[float]) -> float:
    """The minimiser of the parabola through three points (x increasing); the middle x when
    the three are collinear or the parabola opens downward."""
    x0, x1, x2 = (float(v) for v in x)
    y0, y1, y2 = (float(v) for v in y)
    denom = (x0 - x1) * (x0 - x2) * (x1 - x2)
    a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / denom
    b = (x2 ** 2 * (y0 - y1) + x1 ** 2 * (y2 - y0) + x0 ** 2 * (y1 - y2)) / denom
    if not a > 0:
        return x1
    return float(np.clip(-b / (2 * a), x0, x2))


def best_over_lr(table: pd.DataFrame, group_keys: list[str], *, lr_key: str = "optim.lr",
                 value: str = "steps") -> pd.DataFrame:
    """Per group: the smallest ``value`` over LR (seed rows averaged first; a (group, LR)
    point with any NaN seed is NaN: a miss is not averaged away), the LR that gives it
    (``lr_best``), the fitted optimum ``lr_opt`` (a parabola in log LR – log value through
    the best point and its two neighbours; the grid point itself at an edge or next to a
    miss), ``at_edge`` (the best LR is the smallest or largest of the grid) and ``n_lrs``."""
    mean = (table.groupby([*group_keys, lr_key], dropna=False)[value]
            .agg(lambda v: v.mean() if v.notna().all() else math.nan).reset_index())
    rows = []
    for keys, sub in mean.groupby(group_keys, dropna=False, sort=True):
        keys = keys if isinstance(keys, tuple) else (keys,)
        sub = sub.sort_values(lr_key)
        lrs, vals = sub[lr_key].to_numpy(dtype=float), sub[value].to_numpy(dtype=float)
        row = dict(zip(group_keys, keys))
        if not np.isfinite(vals).any():
            rows.append({**row, value: math.nan, "lr_best": math.nan, "lr_opt": math.nan,
                         "at_edge": False, "n_lrs": len(lrs)})
            continue
        i = int(np.nanargmin(vals))
        edge = i in (0, len(lrs) - 1)
        lr_opt = lrs[i]
        if not edge and np.isfinite(vals[i - 1:i + 2]).all() and (vals[i - 1:i + 2] > 0).all():
            lr_opt = 10 ** parabola_argmin(np.log10(lrs[i - 1:i + 2]), np.log10(vals[i - 1:i + 2]))
        rows.append({**row, value: float(vals[i]), "lr_best": float(lrs[i]), "lr_opt": float(lr_opt),
                     "at_edge": bool(edge), "n_lrs": len(lrs)})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------
# the laws


def fit_steps_law(batch: Sequence[float], steps: Sequence[float], level: float = 0.9) -> dict:
    """Least squares of log S = log S_min + log(1 + B_crit / B) (``scipy.optimize.curve_fit``
    in log space: the noise on steps is multiplicative). Returns ``s_min``, ``b_crit``, their
    ``level`` intervals from the fit's covariance (normal in log parameters),
    ``r2`` (of log S) and ``n`` (finite points). Fewer than three points: NaNs."""
    from scipy.optimize import curve_fit  # noqa: PLC0415

    b = np.asarray(batch, dtype=float)
    s = np.asarray(steps, dtype=float)
    ok = np.isfinite(b) & np.isfinite(s) & (b > 0) & (s > 0)
    b, s = b[ok], s[ok]
    out = {"s_min": math.nan, "b_crit": math.nan, "s_min_interval": [math.nan, math.nan],
           "b_crit_interval": [math.nan, math.nan], "r2": math.nan, "n": int(b.size)}
    if b.size < 3:
        return out
    # start from the linear fit S = a + c / B (a = S_min, c = S_min B_crit)
    a, c = np.linalg.lstsq(np.stack([np.ones_like(b), 1 / b], 1), s, rcond=None)[0]
    a = a if a > 0 else s.min()
    c = c if c > 0 else a * np.median(b)

    def model(bb, log_smin, log_bcrit):
        return log_smin + np.log1p(np.exp(log_bcrit) / bb)

    try:
        p, cov = curve_fit(model, b, np.log(s), p0=[math.log(a), math.log(c / a)], maxfev=20000)
    except (RuntimeError, ValueError):
        return out
    resid = np.log(s) - model(b, *p)
    ss_tot = float(((np.log(s) - np.log(s).mean()) ** 2).sum())
    z = _z(level)
    se = np.sqrt(np.clip(np.diag(cov), 0, None)) if np.isfinite(cov).all() else [math.nan] * 2
    out.update(s_min=float(math.exp(p[0])), b_crit=float(math.exp(p[1])),
               s_min_interval=[float(math.exp(p[0] - z * se[0])), float(math.exp(p[0] + z * se[0]))],
               b_crit_interval=[float(math.exp(p[1] - z * se[1])), float(math.exp(p[1] + z * se[1]))],
               r2=1.0 - float((resid ** 2).sum()) / ss_tot if ss_tot > 0 else math.nan)
    return out


def _z(level: float) -> float:
    if abs(level - 0.9) < 1e-12:
        return Z90
    from scipy.stats import norm  # noqa: PLC0415

    return float(norm.ppf(0.5 + level / 2))


def steps_law(batch, s_min: float, b_crit: float) -> np.ndarray:
    """S(B) = S_min (1 + B_crit / B)."""
    return s_min * (1.0 + b_crit / np.asarray(batch, dtype=float))


def critical_batch_20pct(batch: Sequence[float], steps: Sequence[float],
                         excess: float = 0.2) -> float:
    """Zhang et al.'s B*: the batch size at which S(B) B exceeds the linear-scaling
    extrapolation S(B_0) B_0 from the smallest batch B_0 by ``excess`` (20%).

    r(B) = S(B) B / (S(B_0) B_0) is interpolated linearly in B between the grid points that
    bracket its first crossing of 1 + excess (exact under the McCandlish law, where r is
    linear in B). NaN when no grid point crosses (B* beyond the grid) or B_0 has no S."""
    b = np.asarray(batch, dtype=float)
    s = np.asarray(steps, dtype=float)
    order = np.argsort(b)
    b, s = b[order], s[order]
    if not b.size or not math.isfinite(s[0]):
        return math.nan
    r = s * b / (s[0] * b[0])
    level = 1.0 + excess
    for i in range(1, b.size):
        if math.isfinite(r[i]) and r[i] >= level:
            prev = i - 1
            while prev > 0 and not math.isfinite(r[prev]):
                prev -= 1
            return float(b[prev] + (level - r[prev]) / (r[i] - r[prev]) * (b[i] - b[prev]))
    return math.nan


def b_star_from_law(b_crit: float, b0: float, excess: float = 0.2) -> float:
    """B* implied by S = S_min(1 + B_crit/B): (B* + B_crit)/(B_0 + B_crit) = 1 + excess."""
    return (1.0 + excess) * b0 + excess * b_crit


def tradeoff_curve(batch: Sequence[float], steps: Sequence[float], s_min: float,
                   b_crit: float) -> pd.DataFrame:
    """The E–S trade-off of McCandlish et al.: per batch size ``B, S, E = B S,
    S_over_smin, E_over_emin`` (E_min = S_min B_crit) and ``product`` =
    (S/S_min − 1)(E/E_min − 1), which the law sets to 1."""
    b = np.asarray(batch, dtype=float)
    s = np.asarray(steps, dtype=float)
    e = b * s
    e_min = s_min * b_crit
    out = pd.DataFrame({"B": b, "S": s, "E": e, "S_over_smin": s / s_min, "E_over_emin": e / e_min})
    out["product"] = (out["S_over_smin"] - 1) * (out["E_over_emin"] - 1)
    return out


# ----------------------------------------------------------------------------------
# the optimal LR against batch size, and the noise scale at a loss


def lr_trend(batch: Sequence[float], lr_opt: Sequence[float], tol: float = 0.1) -> dict:
    """The shape of the optimal LR against batch size (Surge: Adam rises then falls).

    ``rise`` = log10(peak / value at the smallest B), ``fall`` = log10(peak / value at the
    largest B) over the finite points; a change counts when it exceeds ``tol`` decades.
    ``shape``: ``rise-then-fall`` (both), ``increasing`` (rise only), ``decreasing``
    (no rise, the largest B below the smallest), ``flat`` (neither), plus ``peak_batch``."""
    b = np.asarray(batch, dtype=float)
    y = np.asarray(lr_opt, dtype=float)
    ok = np.isfinite(b) & np.isfinite(y) & (y > 0)
    b, y = b[ok], np.log10(y[ok])
    if b.size < 2:
        return {"shape": "unknown", "rise": math.nan, "fall": math.nan, "peak_batch": math.nan}
    order = np.argsort(b)
    b, y = b[order], y[order]
    k = int(np.argmax(y))
    rise, fall = float(y[k] - y[0]), float(y[k] - y[-1])
    if rise > tol and fall > tol:
        shape = "rise-then-fall"
    elif rise > tol:
        shape = "increasing"
    elif y[0] - y[-1] > tol:
        shape = "decreasing"
    else:
        shape = "flat"
    return {"shape": shape, "rise": rise, "fall": fall, "peak_batch": float(b[k])}


def b_simple_at_loss(noise_steps: Sequence[float], b_simple: Sequence[float],
                     eval_steps: Sequence[float], losses: Sequence[float], target: float) -> float:
    """B_simple where the run reaches ``target``: the noise-scale trajectory interpolated
    at the (interpolated) step of :func:`steps_to_target`; NaN if the run misses it or the
    step lies outside the probed steps."""
    return value_at(noise_steps, b_simple, steps_to_target(eval_steps, losses, target))


def log_ratio(a: float, b: float) -> float:
    """log10(a / b); NaN unless both are positive and finite."""
    if not (math.isfinite(a) and math.isfinite(b) and a > 0 and b > 0):
        return math.nan
    return math.log10(a / b)
