"""Learning-rate curves, the optimal LR and LR sensitivity (Wortsman et al. 2023, §2.2).

The pipeline is ``final_metrics -> lr_curves -> optimal_lr / lr_sensitivity``; every step
is a pure function of a DataFrame.

Conventions (recorded here because the literature differs):

- A run that diverged, or whose final validation loss is NaN/inf, counts as the loss at
  initialization ℓ0 of that run; a finite final loss above ℓ0 is also capped at ℓ0. This is
  the ``min(ℓ(η), ℓ0)`` of Wortsman et al., applied per run *before* averaging seeds.
- Seeds are averaged with the plain mean; ``loss_std`` is the sample standard deviation
  (ddof = 1), NaN for a single seed.
- LR sensitivity is E_η[min(ℓ(η), ℓ0) − ℓ*] with E the mean over the n grid points that
  have a finite loss, i.e. the sum divided by **n** (the paper's "mean over 7 points");
  flxst's reproduction divides by n − 1, available as ``denominator="n-1"``.
- With an LR range [a, b], both ℓ* and E are taken over the grid points inside it, as the
  paper defines them (ℓ* = min over η ∈ [a, b]): a grid optimum outside the range does not
  count. The paper's advice "shift [a, b] if the optimum moves" relies on exactly this.
- A group in which every LR diverged scores 0 (the metric's known blind spot): the row
  says so in ``all_diverged``; always look at the LR curve next to the number.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from proxylab.analysis.runs import FINISHED, LR_KEY, config_columns, varied_axes
from proxylab.config import ConfigError

CURVE_STATS = ["loss_mean", "loss_std", "n", "n_diverged", "n_capped", "init_loss"]


def iter_groups(df: pd.DataFrame, keys: list[str]):
    """(key dict, sub-frame) per group; one group holding everything when keys is empty."""
    if not keys:
        yield {}, df
        return
    for vals, sub in df.groupby(keys, sort=True, dropna=False):
        vals = vals if isinstance(vals, tuple) else (vals,)
        yield dict(zip(keys, vals)), sub


def _group_keys(curves: pd.DataFrame, lr_key: str) -> list[str]:
    if lr_key not in curves.columns:
        raise ConfigError(f"{lr_key}: not a column of the LR curves; columns: {list(curves.columns)}")
    return [c for c in config_columns(curves) if c != lr_key]


def capped_loss(final_df: pd.DataFrame) -> pd.Series:
    """Per-run final val loss with Wortsman's cap: diverged/NaN -> ℓ0, else min(ℓ, ℓ0).

    Where a run has no ℓ0 of its own (step 0 not logged) the loss is left uncapped unless it
    diverged, in which case it stays NaN (``lr_curves`` fills ℓ0 from the group first).
    """
    loss = final_df["final_val_loss"].astype(float)
    l0 = final_df["init_loss"].astype(float)
    bad = final_df["diverged"].astype(bool) | ~np.isfinite(loss)
    capped = np.where(np.isfinite(l0), np.minimum(loss, l0), loss)
    return pd.Series(np.where(bad, l0, capped), index=final_df.index, dtype=float)


def lr_curves(final_df: pd.DataFrame, lr_key: str = LR_KEY,
              group_keys: list[str] | None = None,
              statuses: tuple[str, ...] = FINISHED) -> pd.DataFrame:
    """Final validation loss against LR, seeds averaged, one row per (group, LR).

    ``group_keys`` defaults to the other varied axes of ``final_df`` (seeds excluded). Only
    runs whose status is in ``statuses`` count (pending, running and crashed runs have no
    final loss to speak of). Columns: the group keys, ``lr_key``, ``loss_mean``,
    ``loss_std`` (ddof 1), ``n`` (seeds), ``n_diverged`` (diverged or NaN runs, counted at
    ℓ0), ``n_capped`` (runs whose loss was replaced by ℓ0, diverged ones included),
    ``init_loss`` (mean ℓ0).
    """
    if lr_key not in final_df.columns:
        raise ConfigError(f"{lr_key}: no such config column in the runs; "
                          f"config columns: {config_columns(final_df)}")
    if group_keys is None:
        group_keys = [a for a in varied_axes(final_df) if a != lr_key]
    df = final_df
    if "status" in df.columns:
        df = df[df["status"].isin(statuses)]
    df = df.copy()
    # a run without its own ℓ0 borrows the mean ℓ0 of its group (same init, other seed/LR)
    for _, sub in iter_groups(df, group_keys):
        fill = sub["init_loss"].mean()
        df.loc[sub.index, "init_loss"] = sub["init_loss"].fillna(fill)
    df["_capped"] = capped_loss(df)
    df["_div"] = df["diverged"].astype(bool) | ~np.isfinite(df["final_val_loss"].astype(float))
    df["_cap"] = df["_capped"].ne(df["final_val_loss"].astype(float))
    rows = []
    for key, sub in iter_groups(df, [*group_keys, lr_key]):
        vals = sub["_capped"].dropna()
        rows.append({**key,
                     "loss_mean": float(vals.mean()) if len(vals) else math.nan,
                     "loss_std": float(vals.std(ddof=1)) if len(vals) > 1 else math.nan,
                     "n": int(len(sub)),
                     "n_diverged": int(sub["_div"].sum()),
                     "n_capped": int(sub["_cap"].sum()),
                     "init_loss": float(sub["init_loss"].mean())})
    return pd.DataFrame(rows, columns=[*group_keys, lr_key, *CURVE_STATS])


def metric_vs_lr(final_df: pd.DataFrame, column: str, lr_key: str = LR_KEY,
                 group_keys: list[str] | None = None,
                 statuses: tuple[str, ...] = FINISHED) -> pd.DataFrame:
    """Any per-run number of ``final_df`` (e.g. ``max_attn_logit``) against LR, seeds
    averaged without capping: group keys, ``lr_key``, ``mean``, ``std`` (ddof 1), ``n``
    (runs with a finite value), ``n_runs``. Diverged runs count; their number is the point.
    """
    if lr_key not in final_df.columns:
        raise ConfigError(f"{lr_key}: no such config column in the runs; "
                          f"config columns: {config_columns(final_df)}")
    if group_keys is None:
        group_keys = [a for a in varied_axes(final_df) if a != lr_key]
    df = final_df[final_df["status"].isin(statuses)] if "status" in final_df.columns else final_df
    rows = []
    for key, sub in iter_groups(df, [*group_keys, lr_key]):
        vals = sub[column].astype(float)
        vals = vals[np.isfinite(vals)]
        rows.append({**key, "mean": float(vals.mean()) if len(vals) else math.nan,
                     "std": float(vals.std(ddof=1)) if len(vals) > 1 else math.nan,
                     "n": int(len(vals)), "n_runs": int(len(sub))})
    return pd.DataFrame(rows, columns=[*group_keys, lr_key, "mean", "std", "n", "n_runs"])


def _convex_parabola(x: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    """Coefficients (a, b, c) of the parabola through three points; None unless a > 0."""
    coef = np.polyfit(x, y, 2)
    return coef if coef[0] > 0 and np.isfinite(coef).all() else None


def optimal_lr(curves: pd.DataFrame, lr_key: str = LR_KEY) -> pd.DataFrame:
    """Best LR per group: the grid argmin, refined by a parabola in log(LR).

    The parabola goes through the argmin and its two neighbours (the three lowest or
    highest grid points when the argmin is at an edge); its vertex, clamped to the group's
    LR range, is ``lr_opt`` and its value there ``loss_opt``. ``lr_opt`` is the argmin
    (``method`` says which) with fewer than three points, a non-convex fit, or a window
    holding a point where some run was capped at ℓ0 (``n_capped`` > 0): a capped loss is a
    floor, not a measurement, and would drag the vertex. ``at_edge`` flags an argmin at the
    end of the grid: the true optimum may lie outside it.
    """
    keys = _group_keys(curves, lr_key)
    rows = []
    for key, sub in iter_groups(curves, keys):
        sub = sub[np.isfinite(sub["loss_mean"].astype(float))].sort_values(lr_key)
        lr = sub[lr_key].to_numpy(dtype=float)
        loss = sub["loss_mean"].to_numpy(dtype=float)
        if not len(lr):
            rows.append({**key, "lr_argmin": math.nan, "loss_min": math.nan, "lr_opt": math.nan,
                         "loss_opt": math.nan, "method": "none", "at_edge": False, "n_lr": 0})
            continue
        i = int(np.argmin(loss))
        row = {**key, "lr_argmin": float(lr[i]), "loss_min": float(loss[i]),
               "lr_opt": float(lr[i]), "loss_opt": float(loss[i]), "method": "argmin",
               "at_edge": len(lr) > 1 and i in (0, len(lr) - 1), "n_lr": int(len(lr))}
        if len(lr) >= 3:
            j = min(max(i - 1, 0), len(lr) - 3)
            x = np.log10(lr)
            capped = sub["n_capped"].to_numpy() if "n_capped" in sub.columns else np.zeros(len(lr))
            coef = None if capped[j:j + 3].any() else _convex_parabola(x[j:j + 3], loss[j:j + 3])
            if coef is not None:
                xv = min(max(-coef[1] / (2 * coef[0]), x[0]), x[-1])  # vertex, clamped
                row.update(lr_opt=float(10 ** xv), loss_opt=float(np.polyval(coef, xv)),
                           method="parabola")
        rows.append(row)
    return pd.DataFrame(rows, columns=[*keys, "lr_argmin", "loss_min", "lr_opt", "loss_opt",
                                       "method", "at_edge", "n_lr"])


def lr_sensitivity(curves: pd.DataFrame, lr_key: str = LR_KEY,
                   lr_range: tuple[float, float] | None = None,
                   denominator: str = "n") -> pd.DataFrame:
    """Wortsman et al.'s LR sensitivity per group: E_η[min(ℓ(η), ℓ0) − ℓ*].

    ℓ(η) is ``loss_mean`` of :func:`lr_curves` (already capped per run), ℓ0 the group's
    mean loss at initialization over the points in range, and both ℓ* (the smallest
    min(ℓ(η), ℓ0)) and E (the mean) run over the grid points in ``lr_range`` (inclusive,
    with a 1e-9 relative slack; the whole grid when None) that have a finite loss: a grid
    optimum outside the range is not ℓ* (Wortsman et al. §2.2: ℓ* = min over η ∈ [a, b]). ``denominator="n"`` (default, the paper) or ``"n-1"`` (flxst). Columns: group keys,
    ``lr_sensitivity``, ``best_loss`` (ℓ*), ``lr_best``, ``init_loss`` (ℓ0), ``n_lr``,
    ``n_lr_diverged`` (points where every seed diverged), ``all_diverged``, ``lr_min``,
    ``lr_max``, ``denominator``.
    """
    if denominator not in ("n", "n-1"):
        raise ConfigError(f"denominator: {denominator!r} is not allowed; choose 'n' or 'n-1'")
    keys = _group_keys(curves, lr_key)
    rows = []
    for key, sub in iter_groups(curves, keys):
        if lr_range is not None:
            lo, hi = lr_range
            sub = sub[(sub[lr_key] >= lo * (1 - 1e-9)) & (sub[lr_key] <= hi * (1 + 1e-9))]
        sub = sub[np.isfinite(sub["loss_mean"].astype(float))].sort_values(lr_key)
        n = len(sub)
        # ℓ0 of the group: mean over its runs (each grid point weighted by its seed count)
        w = sub["n"].to_numpy(dtype=float)
        l0s = sub["init_loss"].to_numpy(dtype=float)
        ok = np.isfinite(l0s)
        l0 = float(np.sum(w[ok] * l0s[ok]) / np.sum(w[ok])) if ok.any() and w[ok].sum() else math.nan
        loss = sub["loss_mean"].to_numpy(dtype=float)
        capped = np.minimum(loss, l0) if math.isfinite(l0) else loss
        all_div = bool(n) and bool((sub["n_diverged"] >= sub["n"]).all())
        row = {**key, "lr_sensitivity": math.nan, "best_loss": math.nan, "lr_best": math.nan,
               "init_loss": l0, "n_lr": n,
               "n_lr_diverged": int((sub["n_diverged"] >= sub["n"]).sum()),
               "all_diverged": all_div,
               "lr_min": float(sub[lr_key].min()) if n else math.nan,
               "lr_max": float(sub[lr_key].max()) if n else math.nan,
               "denominator": denominator}
        div = n if denominator == "n" else n - 1
        if n and div > 0:
            i = int(np.argmin(capped))
            row.update(best_loss=float(capped[i]), lr_best=float(sub[lr_key].iloc[i]),
                       lr_sensitivity=float(np.sum(capped - capped[i]) / div))
        rows.append(row)
    return pd.DataFrame(rows, columns=[*keys, "lr_sensitivity", "best_loss", "lr_best",
                                       "init_loss", "n_lr", "n_lr_diverged", "all_diverged",
                                       "lr_min", "lr_max", "denominator"])
