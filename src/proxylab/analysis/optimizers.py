"""Comparing optimizers (Zhao et al. 2024 "Deconstructing"; Vyas et al. 2024 SOAP; AlgoPerf).

Pure functions on numbers and DataFrames; nothing here trains or draws.

- :func:`aligned_curves`: loss-vs-LR curves shifted so each arm's optimum sits at 0 on a
  log10(LR / LR*) axis, losses as the gap to the arm's best (Zhao et al. Fig. 1).
- :func:`basin_width`: the width, in decades, of the LR range whose loss is within
  ``margin`` of the best, crossings interpolated linearly on the log-LR grid; a basin that
  reaches the end of the grid is a lower bound and says so (``open_lo`` / ``open_hi``).
- :func:`strip`: a 1-D sensitivity strip (β1, β2, ε or WD around the default): the loss at
  each value and its gap to the loss at the default.
- :func:`first_crossing`: the first x (step, seconds, FLOPs) at which an eval curve reaches
  a target, interpolated linearly between evaluations, never extrapolated (NaN = miss).
- :func:`performance_profile` / :func:`profile_score`: AlgoPerf's ρ(τ), the fraction of
  workloads on which an optimizer's time to target is within τ× the best, and the
  normalised area under ρ over [1, τ_max] (ratios beyond τ_max count as misses).
- FLOP counts: :func:`model_flops` (≈ 6·N·tokens) and the optimizer's own FLOPs per step
  (:func:`newton_schulz_flops`, :func:`shampoo_flops`, :func:`soap_flops`,
  :func:`optimizer_flops_per_step`), so compute-to-target counts both.

FLOP conventions (stated because they decide the Muon/SOAP ratios): a matmul of (m×k)(k×n)
is 2·m·k·n; a symmetric eigendecomposition with eigenvectors of an n×n matrix is
``EIGH_FLOPS·n³`` (9n³, Golub & Van Loan's count for tridiagonalisation + implicit QR with
vectors); a Householder QR of an n×n matrix with Q formed is ``QR_FLOPS·n³`` (8/3·n³);
elementwise work is ``ELEMENTWISE_FLOPS[name]`` per parameter per step.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

EIGH_FLOPS = 9.0          # × n³: eigh with eigenvectors
QR_FLOPS = 8.0 / 3.0      # × n³: Householder QR with Q formed
# elementwise FLOPs per parameter per step (moments, normalisation, sign, weight decay)
ELEMENTWISE_FLOPS = {"sgd": 4, "signum": 5, "lion": 8, "adamw": 12, "factored-adam": 12,
                     "adalayer": 10, "adalayer-sgd": 8, "muon": 12, "shampoo": 16, "soap": 16}


# ------------------------------------------------------------------------------------
# LR curves: alignment and basin width


def aligned_curves(curves: pd.DataFrame, group_keys: list[str], lr_key: str = "optim.lr",
                   loss_col: str = "loss_mean") -> pd.DataFrame:
    """``curves`` (one row per group and LR) plus ``lr_best``, ``log10_lr_rel`` =
    log10(LR / LR*) and ``loss_gap`` = loss − best loss, per group (argmin of ``loss_col``
    over its finite points; a group without one keeps NaN)."""
    out = curves.copy()
    out["lr_best"] = math.nan
    out["best_loss"] = math.nan
    for _, sub in out.groupby(group_keys, sort=False, dropna=False) if group_keys else [(None, out)]:
        loss = sub[loss_col].astype(float)
        if not np.isfinite(loss).any():
            continue
        i = loss.idxmin()
        out.loc[sub.index, "lr_best"] = float(sub.loc[i, lr_key])
        out.loc[sub.index, "best_loss"] = float(loss[i])
    out["log10_lr_rel"] = np.log10(out[lr_key].astype(float) / out["lr_best"])
    out["loss_gap"] = out[loss_col].astype(float) - out["best_loss"]
    return out


def basin_width(lrs: Sequence[float], losses: Sequence[float], margin: float) -> dict:
    """Width in decades of the LR basin: the contiguous run of grid points around the
    argmin with loss <= best + ``margin``, extended to where the straight line (in log10 LR)
    between the last point inside and the first outside crosses best + margin.

    Non-finite losses (diverged runs) count as outside. A basin that reaches an end of the
    grid stops there and is flagged open on that side (its width is a lower bound).
    Returns ``width``, ``lr_lo``, ``lr_hi``, ``open_lo``, ``open_hi``, ``best_loss``, ``lr_best``.
    """
    x = np.log10(np.asarray(lrs, dtype=float))
    y = np.asarray(losses, dtype=float)
    order = np.argsort(x)
    x, y = x[order], y[order]
    nan = {"width": math.nan, "lr_lo": math.nan, "lr_hi": math.nan, "open_lo": False,
           "open_hi": False, "best_loss": math.nan, "lr_best": math.nan}
    ok = np.isfinite(y)
    if not ok.any():
        return nan
    y = np.where(ok, y, np.inf)
    i = int(np.argmin(y))
    level = y[i] + margin

    def edge(step: int) -> tuple[float, bool]:
        j = i
        while 0 <= j + step < len(x) and y[j + step] <= level:
            j += step
        k = j + step
        if not 0 <= k < len(x):
            return float(x[j]), True
        if not np.isfinite(y[k]):          # diverged neighbour: the basin ends at the last good point
            return float(x[j]), False
        t = (level - y[j]) / (y[k] - y[j])
        return float(x[j] + t * (x[k] - x[j])), False

    lo, open_lo = edge(-1)
    hi, open_hi = edge(+1)
    return {"width": hi - lo, "lr_lo": 10 ** lo, "lr_hi": 10 ** hi, "open_lo": open_lo,
            "open_hi": open_hi, "best_loss": float(y[i]), "lr_best": float(10 ** x[i])}


def basin_widths(final_df: pd.DataFrame, group_keys: list[str], margin: float,
                 lr_key: str = "optim.lr", loss_col: str = "loss",
                 seed_key: str = "train.seed") -> pd.DataFrame:
    """Per group: the basin width of the seed-mean curve and of each seed's own curve.

    ``final_df`` holds one row per run with ``loss_col`` (capped/diverged already handled by
    the caller). Columns: group keys, ``width`` (mean curve), ``width_seed_mean``,
    ``width_seed_std`` (ddof 1; NaN with one seed), ``n_seeds``, ``open`` (either side),
    ``best_loss``, ``lr_best``, ``lr_lo``, ``lr_hi``.
    """
    rows = []
    for key, sub in final_df.groupby(group_keys, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        mean = sub.groupby(lr_key)[loss_col].mean()
        b = basin_width(mean.index.to_numpy(), mean.to_numpy(), margin)
        per_seed = [basin_width(s[lr_key].to_numpy(), s[loss_col].to_numpy(), margin)["width"]
                    for _, s in sub.groupby(seed_key)] if seed_key in sub else []
        per_seed = np.asarray(per_seed, dtype=float)
        rows.append({**dict(zip(group_keys, key)), "width": b["width"],
                     "width_seed_mean": float(np.nanmean(per_seed)) if len(per_seed) else math.nan,
                     "width_seed_std": float(np.nanstd(per_seed, ddof=1)) if len(per_seed) > 1 else math.nan,
                     "n_seeds": int(len(per_seed)), "open": b["open_lo"] or b["open_hi"],
                     "best_loss": b["best_loss"], "lr_best": b["lr_best"],
                     "lr_lo": b["lr_lo"], "lr_hi": b["lr_hi"]})
    return pd.DataFrame(rows)


def best_per_group(final_df: pd.DataFrame, group_keys: list[str], lr_key: str = "optim.lr",
                   loss_col: str = "loss") -> pd.DataFrame:
    """Per group: the LR whose seed-mean loss is lowest, that mean, the seed std there (ddof 1)
    and the number of seeds. The best LR is chosen on the same seeds it is scored on."""
    rows = []
    for key, sub in final_df.groupby(group_keys, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        by_lr = sub.groupby(lr_key)[loss_col]
        mean = by_lr.mean()
        if not np.isfinite(mean.to_numpy(dtype=float)).any():
            lr, m, s, n = math.nan, math.nan, math.nan, 0
        else:
            lr = float(mean.idxmin())
            vals = sub.loc[sub[lr_key] == lr, loss_col].astype(float)
            m, n = float(vals.mean()), int(len(vals))
            s = float(vals.std(ddof=1)) if n > 1 else math.nan
        rows.append({**dict(zip(group_keys, key)), "lr_best": lr, "best_loss": m,
                     "seed_std": s, "n_seeds": n})
    return pd.DataFrame(rows)


def strip(final_df: pd.DataFrame, axis: str, default: float, loss_col: str = "loss") -> pd.DataFrame:
    """1-D sensitivity strip along ``axis``: per value, ``loss_mean``, ``loss_std`` (ddof 1),
    ``n`` and ``gap`` = loss_mean − loss_mean at ``default`` (NaN when the default was not run)."""
    g = final_df.groupby(axis)[loss_col]
    out = pd.DataFrame({"loss_mean": g.mean(), "loss_std": g.std(ddof=1), "n": g.size()})
    out = out.reset_index().sort_values(axis, ignore_index=True)
    at = out.loc[np.isclose(out[axis].astype(float), default, rtol=1e-9, atol=0), "loss_mean"]
    out["gap"] = out["loss_mean"] - (float(at.iloc[0]) if len(at) else math.nan)
    return out


# ------------------------------------------------------------------------------------
# time to target and performance profiles


def first_crossing(x: Sequence[float], loss: Sequence[float], target: float) -> float:
    """The first x at which ``loss`` reaches ``target`` (<=), interpolated linearly between
    the two evaluations that bracket it; the first x if the first evaluation already does;
    NaN if no evaluation does (a miss: never extrapolated). Non-finite losses never count."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(loss, dtype=float)
    for k in range(len(y)):
        if np.isfinite(y[k]) and y[k] <= target:
            if k == 0 or not np.isfinite(y[k - 1]):
                return float(x[k])
            t = (y[k - 1] - target) / (y[k - 1] - y[k])
            return float(x[k - 1] + t * (x[k] - x[k - 1]))
    return math.nan


def to_target(runs: pd.DataFrame, curves: dict, target: float, lr_key: str = "optim.lr",
              loss_col: str = "loss") -> dict:
    """One optimizer's runs (all LRs and seeds) against a target loss.

    The LR with the lowest seed-mean ``loss_col`` is taken; its runs' eval curves
    (``curves[run_id] = (steps, losses)``) are averaged step by step (steps a run lacks, e.g.
    after divergence, are left out of that step's mean) and :func:`first_crossing` gives
    ``steps`` (NaN = missed). Also ``run_steps`` (the last eval step), ``lr`` and ``n_runs``.
    """
    nan = {"steps": math.nan, "run_steps": math.nan, "lr": math.nan, "n_runs": 0}
    if runs.empty:
        return nan
    lr = best_per_group(runs.assign(_g=0), ["_g"], lr_key, loss_col)["lr_best"].iloc[0]
    ids = [r for r in runs.loc[runs[lr_key] == lr, "run_id"] if r in curves]
    if not ids:
        return {**nan, "lr": float(lr)}
    first = np.asarray(curves[ids[0]][0], dtype=float)
    if all(np.array_equal(np.asarray(curves[r][0], dtype=float), first) for r in ids):
        x, y = first, np.mean([np.asarray(curves[r][1], dtype=float) for r in ids], axis=0)
    else:                                       # ragged (a run stopped early): align on steps
        mean = pd.concat([pd.Series(curves[r][1], index=curves[r][0]) for r in ids],
                         axis=1).mean(axis=1).sort_index()
        x, y = mean.index.to_numpy(float), mean.to_numpy(float)
    return {"steps": first_crossing(x, y, target), "run_steps": float(x.max()), "lr": float(lr),
            "n_runs": len(ids)}


def cost_ratio(arm: dict, ref: dict, arm_cost_per_step: float = 1.0,
               ref_cost_per_step: float = 1.0) -> float:
    """(arm steps × its cost per step) / (reference steps × its cost per step), from two
    :func:`to_target` results. A miss of the arm is censored at its run length, so the ratio
    is then a lower bound; a miss of the reference gives NaN."""
    steps = arm["steps"] if math.isfinite(arm["steps"]) else arm["run_steps"]
    den = ref["steps"] * ref_cost_per_step
    return float(steps * arm_cost_per_step / den) if math.isfinite(den) and den > 0 else math.nan


def performance_profile(times: pd.DataFrame, taus: Sequence[float], max_ratio: float = 4.0) -> pd.DataFrame:
    """AlgoPerf performance profiles from ``times`` (index: workload, columns: optimizer;
    NaN/inf = missed the target). Per workload r = t / min over optimizers; r > ``max_ratio``
    counts as a miss. Returns index τ, one column per optimizer: ρ(τ) = share of workloads
    with r <= τ. A workload nobody solved counts against everyone."""
    t = times.astype(float).replace([np.inf, -np.inf], np.nan)
    best = t.min(axis=1)
    ratio = t.div(best, axis=0)
    ratio = ratio.where(ratio <= max_ratio)
    n = len(t)
    rho = {opt: [float((ratio[opt] <= tau).sum()) / n if n else math.nan for tau in taus]
           for opt in t.columns}
    return pd.DataFrame(rho, index=pd.Index(list(taus), name="tau"))


def profile_score(times: pd.DataFrame, max_ratio: float = 4.0) -> pd.Series:
    """AlgoPerf's score: ∫₁^τmax ρ(τ) dτ / (τmax − 1), exactly (ρ is a step function)."""
    t = times.astype(float).replace([np.inf, -np.inf], np.nan)
    ratio = t.div(t.min(axis=1), axis=0)
    n = len(t)
    out = {}
    for opt in t.columns:
        r = ratio[opt].to_numpy()
        r = r[np.isfinite(r) & (r <= max_ratio)]
        out[opt] = float(np.sum(max_ratio - r) / ((max_ratio - 1) * n)) if n else math.nan
    return pd.Series(out)


# ------------------------------------------------------------------------------------
# FLOPs: the model's and the optimizer's own


def model_flops(n_params: float, tokens: float) -> float:
    """Training FLOPs of a dense model ≈ 6·N·tokens (forward 2N, backward 4N per token)."""
    return 6.0 * float(n_params) * float(tokens)


def newton_schulz_flops(rows: int, cols: int, steps: int = 5) -> float:
    """Matmul FLOPs of ``steps`` quintic Newton–Schulz iterations on a rows×cols matrix.

    With X (m×n), m = min(rows, cols): A = XXᵀ (2m²n), A·A (2m³), (bA + cA²)·X (2m²n) per
    iteration: steps·(4m²n + 2m³)."""
    m, n = min(rows, cols), max(rows, cols)
    return float(steps * (4 * m * m * n + 2 * m ** 3))


def _matrix_dims(shape: Sequence[int]) -> list[int]:
    return [int(d) for d in shape]


def shampoo_flops(shape: Sequence[int], frequency: int) -> float:
    """Shampoo's matrix FLOPs per step for one tensor (no blocking; every mode preconditioned).

    For each mode i of size d_i (P = numel): the Gram update G_(i)G_(i)ᵀ (2·d_i·P), the mode
    product with the root (2·d_i·P), and every ``frequency`` steps an eigh (EIGH_FLOPS·d_i³)
    plus forming Q·diag·Qᵀ (2·d_i³)."""
    p = math.prod(shape)
    return float(sum(4 * d * p + (EIGH_FLOPS + 2) * d ** 3 / frequency for d in _matrix_dims(shape)))


def soap_flops(shape: Sequence[int], frequency: int) -> float:
    """SOAP's matrix FLOPs per step for one ≥2-D tensor (1-D tensors get Adam: 0 here).

    Per mode of size d (P = numel): projection to and from the eigenbasis (2·2·d·P), the Gram
    update (2·d·P); every ``frequency`` steps a power step L·Q (2d³), QR (QR_FLOPS·d³), the
    Rayleigh quotients QᵀLQ (4d³) and m rotated back and forth (4·d·P)."""
    if len(shape) < 2:
        return 0.0
    p = math.prod(shape)
    return float(sum(6 * d * p + ((6 + QR_FLOPS) * d ** 3 + 4 * d * p) / frequency
                     for d in _matrix_dims(shape)))


def optimizer_flops_per_step(name: str, tensors: Sequence[tuple[Sequence[int], str]],
                             frequency: int = 1, ns_steps: int = 5) -> float:
    """The optimizer's own FLOPs per step over ``tensors`` = [(shape, role), ...].

    Elementwise work ``ELEMENTWISE_FLOPS[name]``·P for every tensor, plus: Muon,
    Newton–Schulz on each hidden ≥2-D tensor viewed as (out, −1); Shampoo,
    :func:`shampoo_flops` on every tensor; SOAP, :func:`soap_flops` on every ≥2-D tensor.
    Unknown names raise KeyError (count them before comparing them)."""
    total = 0.0
    for shape, role in tensors:
        p = math.prod(shape)
        total += ELEMENTWISE_FLOPS[name] * p
        if name == "muon" and role == "hidden" and len(shape) >= 2:
            total += newton_schulz_flops(shape[0], p // shape[0], ns_steps)
        elif name == "shampoo":
            total += shampoo_flops(shape, frequency)
        elif name == "soap":
            total += soap_flops(shape, frequency)
    return total
