"""Weight-decay analyses: the LR × λ optimum, rotational equilibrium, rare-token losses,
loss curves aligned at the LR decay. Pure functions of numbers and DataFrames.

Equilibrium formulas (phenomena.md §4.2-4.3), for a weight row w (a neuron, fan-in C)
that is scale-invariant (its gradient is orthogonal to w and scales like 1/‖w‖), at a
constant LR η and weight decay λ applied as w ← (1 - ηλ)w (torch's decoupled form):

- AdamW (Kosson et al. 2024, random-walk model): the Adam update has per-element RMS ≈ 1
  over the long run, so ‖Δw‖² ≈ η²C per step and decay removes 2ηλ‖w‖²:
      ‖w‖* = sqrt(ηC / (2λ))
  The *one-step* angle is smaller with momentum β₁: an EMA of independent unit-variance
  gradients has variance (1-β₁)/(1+β₁), so
      angle* = sqrt(2ηλ (1-β₁)/(1+β₁))          (= sqrt(2ηλ) at β₁ = 0)
  (the brief quotes sqrt(2ηλ); the momentum factor is our derivation in the same model and,
  to our reading, Kosson et al.'s Table 1 — [verify] against the paper).
- SGD without momentum (van Laarhoven 2017), ∇f = g̃/‖w‖ with ‖g̃‖ = G:
      ‖w‖*⁴ = ηG²/(2λ)  and  angle* = sqrt(2ηλ);  with momentum α the angle is
      sqrt(2ηλ/(1+α)) (Kosson et al.). Exactly, the SGD recurrence
      ‖w‖²_{t+1} = (1-ηλ)²‖w‖²_t + η²G²/‖w‖²_t has the fixed point
      ‖w‖*⁴ = ηG² / (λ(2 - ηλ)), which the formula approximates to O(ηλ).
- Relaxation time: τ = 1/(ηλ) steps (decay alone shrinks ‖w‖ by e⁻¹ in τ steps).

Under ``wd_mode="independent"`` the decay per step is s_t·λ instead of η_t·λ: pass
``lam = λ/η_peak`` to use the formulas (optimizers.md §1 conversion).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

# ----------------------------------------------------------------------------------
# equilibrium (closed forms)


def equilibrium_norm_adamw(lr: float, wd: float, fan_in: int) -> float:
    """Per-neuron equilibrium norm sqrt(ηC/(2λ)) of a scale-invariant row under AdamW."""
    return math.sqrt(lr * fan_in / (2.0 * wd))


def equilibrium_angle_adamw(lr: float, wd: float, beta1: float = 0.0) -> float:
    """One-step equilibrium angle sqrt(2ηλ(1-β₁)/(1+β₁)) under AdamW, radians."""
    return math.sqrt(2.0 * lr * wd * (1.0 - beta1) / (1.0 + beta1))


def equilibrium_norm_sgd(lr: float, wd: float, grad_norm: float) -> float:
    """Equilibrium norm (η‖g̃‖²/(2λ))^(1/4) under plain SGD; ‖g̃‖ is the gradient norm
    times ‖w‖ (the scale-free gradient)."""
    return (lr * grad_norm ** 2 / (2.0 * wd)) ** 0.25


def equilibrium_angle_sgd(lr: float, wd: float, momentum: float = 0.0) -> float:
    """One-step equilibrium angle sqrt(2ηλ/(1+α)) under SGD with momentum α, radians."""
    return math.sqrt(2.0 * lr * wd / (1.0 + momentum))


def relaxation_time(lr: float, wd: float) -> float:
    """τ = 1/(ηλ): the steps decay alone takes to shrink a norm by e."""
    return 1.0 / (lr * wd)


def fit_relaxation(steps: Sequence[float], values: Sequence[float],
                   taus: Sequence[float] | None = None) -> tuple[float, float, float]:
    """Fit v(t) = v_inf + A·exp(-t/τ) by least squares: (v_inf, A, τ).

    τ is searched on a log grid (``taus``; default 200 points from 1 step to 10× the span),
    (v_inf, A) solved exactly for each τ; the τ with the smallest residual wins.
    """
    t = np.asarray(steps, dtype=float)
    v = np.asarray(values, dtype=float)
    keep = np.isfinite(t) & np.isfinite(v)
    t, v = t[keep], v[keep]
    if len(t) < 3:
        return math.nan, math.nan, math.nan
    t0 = t - t.min()
    span = max(float(t0.max()), 1.0)
    grid = np.geomspace(1.0, 10 * span, 200) if taus is None else np.asarray(taus, float)
    best = (math.inf, math.nan, math.nan, math.nan)
    for tau in grid:
        X = np.stack([np.ones_like(t0), np.exp(-t0 / tau)], axis=1)
        coef, *_ = np.linalg.lstsq(X, v, rcond=None)
        r = float(((X @ coef - v) ** 2).sum())
        if r < best[0]:
            best = (r, float(coef[0]), float(coef[1]), float(tau))
    return best[1], best[2], best[3]


def tail_ratio(steps: Sequence[float], measured: Sequence[float], predicted: float,
               start: float) -> float:
    """mean(measured[t >= start]) / predicted: how close a trajectory sits to its
    predicted equilibrium once ``start`` steps have passed (nan when none have)."""
    t = np.asarray(steps, dtype=float)
    m = np.asarray(measured, dtype=float)
    sel = (t >= start) & np.isfinite(m)
    if not sel.any() or not predicted > 0:
        return math.nan
    return float(m[sel].mean() / predicted)


# ----------------------------------------------------------------------------------
# LR × λ grid


def optimal_wd_grid(lams: Sequence[float], loss) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Numpy core of :func:`optimal_wd`: ``loss[i, j]`` at LR i and λ = ``lams[j]`` (λ > 0,
    ascending; nan = diverged) -> (λ*, loss at λ*, at-the-grid-edge) per LR (λ* nan where
    a whole row is nan)."""
    x = np.log(np.asarray(lams, dtype=float))
    loss = np.atleast_2d(np.asarray(loss, dtype=float))
    n = loss.shape[0]
    wd_opt, loss_opt, edge = np.full(n, np.nan), np.full(n, np.nan), np.zeros(n, bool)
    for r in range(n):
        y = np.where(np.isfinite(loss[r]), loss[r], np.inf)
        if not np.isfinite(y).any():
            continue
        i = int(np.argmin(y))
        edge[r] = i == 0 or i == len(x) - 1
        xo, yo = x[i], y[i]
        if not edge[r] and np.isfinite(y[i - 1:i + 2]).all():
            x0, x1, x2 = x[i - 1:i + 2]
            y0, y1, y2 = y[i - 1:i + 2]
            # the parabola through the three points (Lagrange form, no lstsq)
            d = (x0 - x1) * (x0 - x2) * (x1 - x2)
            a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / d
            b = (x2**2 * (y0 - y1) + x1**2 * (y2 - y0) + x0**2 * (y1 - y2)) / d
            if a > 0:
                xo = float(np.clip(-b / (2 * a), x0, x2))
                yo = float(y1 + a * (xo - x1) * (xo - x1) + (2 * a * x1 + b) * (xo - x1))
        wd_opt[r], loss_opt[r] = math.exp(xo), yo
    return wd_opt, loss_opt, edge


def optimal_wd(df: pd.DataFrame, *, lr: str = "optim.lr", wd: str = "optim.weight_decay",
               loss: str = "loss") -> pd.DataFrame:
    """Per LR: the loss-optimal λ over the grid (λ > 0 only; the loss averaged over any
    other rows, e.g. seeds, first).

    Columns ``lr, wd_opt, loss_opt, edge``. ``wd_opt`` refines the grid argmin with a
    parabola in log λ through it and its two neighbours (exact for a loss quadratic in
    log λ), kept within those neighbours; at a grid end it is the end point and ``edge``
    is True (the true optimum may lie beyond the grid).
    """
    cols = ["lr", "wd_opt", "loss_opt", "edge"]
    d = df[df[wd] > 0].groupby([lr, wd])[loss].mean().unstack(wd).sort_index(axis=1)
    if not len(d):
        return pd.DataFrame(columns=cols)
    w, l, e = optimal_wd_grid(d.columns.to_numpy(float), d.to_numpy(float))
    out = pd.DataFrame({"lr": d.index.to_numpy(float), "wd_opt": w, "loss_opt": l, "edge": e})
    return out[np.isfinite(out["wd_opt"])].reset_index(drop=True)


def log_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of log y against log x (nan with fewer than 2 usable points)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = (x > 0) & (y > 0) & np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 2 or np.ptp(np.log(x[keep])) == 0:
        return math.nan
    return float(np.polyfit(np.log(x[keep]), np.log(y[keep]), 1)[0])


def interior_slope(lrs: Sequence[float], wd_opt: Sequence[float], edge: Sequence[bool]) -> float:
    """:func:`log_slope` of λ* against η over the LRs whose optimum is inside the λ grid
    (an optimum at a grid end only bounds λ*); nan with fewer than 2 such LRs."""
    keep = ~np.asarray(edge, dtype=bool)
    return log_slope(np.asarray(lrs, float)[keep], np.asarray(wd_opt, float)[keep])


def best_loss(df: pd.DataFrame, *, keys: Sequence[str], loss: str = "loss") -> float:
    """The lowest seed-averaged loss over the grid points ``keys``."""
    return float(df.groupby(list(keys))[loss].mean().min())


# ----------------------------------------------------------------------------------
# token-frequency buckets


def bucket_gap(df: pd.DataFrame, *, wd: str = "optim.weight_decay", seed: str = "train.seed",
               rare: str = "b0", frequent: str = "b3") -> pd.DataFrame:
    """Per seed and λ > 0: the loss change from λ = 0 on the rarest and on the most frequent
    bucket, and their difference ``gap = d_rare - d_frequent`` (> 0: decay costs the rare
    tokens more). ``df`` has one row per run with columns ``wd``, ``seed``, ``rare``,
    ``frequent`` (bucket losses, nats); runs are paired by seed."""
    base = df[df[wd] == 0].set_index(seed)
    rows = []
    for (lam, s), r in df[df[wd] > 0].groupby([wd, seed]):
        if s not in base.index:
            continue
        b = base.loc[s]
        d_rare = float(r[rare].mean() - b[rare])
        d_freq = float(r[frequent].mean() - b[frequent])
        rows.append({wd: lam, seed: s, "d_rare": d_rare, "d_frequent": d_freq,
                     "gap": d_rare - d_freq})
    return pd.DataFrame(rows, columns=[wd, seed, "d_rare", "d_frequent", "gap"])


# ----------------------------------------------------------------------------------
# loss curves around the LR decay


def aligned_gap(steps: Sequence[float], loss_wd: Sequence[float], loss_0: Sequence[float],
                decay_step: float) -> pd.DataFrame:
    """The loss of a run with decay minus the loss without it, against steps since the LR
    decay began (both curves sampled at the same steps). Columns ``t, gap``."""
    t = np.asarray(steps, float)
    g = np.asarray(loss_wd, float) - np.asarray(loss_0, float)
    return pd.DataFrame({"t": t - decay_step, "gap": g})


def crossing_step(t: Sequence[float], gap: Sequence[float]) -> float:
    """The first t from which the gap stays below 0 to the end (nan if it ends >= 0):
    when weight decay starts to win for good."""
    t, g = np.asarray(t, float), np.asarray(gap, float)
    if len(g) == 0 or not g[-1] < 0:
        return math.nan
    nonneg = np.nonzero(~(g < 0))[0]
    return float(t[nonneg[-1] + 1]) if len(nonneg) else float(t[0])


def decay_start(steps: Sequence[float], lr_mult: Sequence[float], tol: float = 1e-6) -> float:
    """The first step after the peak at which the LR multiplier falls below its maximum
    (the end of warmup for cosine, the start of the cool-down for wsd; nan if constant)."""
    s, m = np.asarray(steps, float), np.asarray(lr_mult, float)
    if len(m) == 0:
        return math.nan
    peak = int(np.argmax(m))
    below = np.nonzero(m[peak:] < m[peak] - tol)[0]
    return float(s[peak + below[0]]) if len(below) else math.nan


def tail_mean(steps: Sequence[float], values: Sequence[float], frac: float = 0.1) -> float:
    """Mean of ``values`` over the last ``frac`` of the step range (at least one point)."""
    s, v = np.asarray(steps, float), np.asarray(values, float)
    if len(s) == 0:
        return math.nan
    cut = s.max() - frac * (s.max() - s.min())
    sel = s >= cut
    return float(np.nanmean(v[sel]))
