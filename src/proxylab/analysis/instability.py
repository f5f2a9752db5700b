"""Analyses of Wortsman et al. (2023), "Small-scale proxies for large-scale Transformer
training instabilities": per-run probe summaries, growth laws, the coord check, the
early-warning extrapolation and the zero-layer bigram baseline.

Every function is pure: DataFrames (the store's long ``metrics`` frame and the per-run
``final_metrics`` frame) or arrays in, DataFrames or numbers out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd

from proxylab.analysis.lr import lr_curves, lr_sensitivity, optimal_lr
from proxylab.analysis.runs import FINISHED, LR_KEY

HOW = ("max", "first", "last", "tail_mean", "at")


# ----------------------------------------------------------------------------------
# per-run summaries of a probe's trajectory


def run_stat(metrics: pd.DataFrame, key: str, how: str = "last", *, tail: float = 0.2,
             step: int | None = None) -> pd.Series:
    """One number per run (indexed by run_id) from the trajectory of metric ``key``.

    ``max``: the largest finite value; ``first``/``last``: the value at the first/last
    logged step; ``tail_mean``: the mean over the last ``tail`` share of the run's logged
    steps (at least one point); ``at``: the value at the first logged step >= ``step``.
    Runs without a finite value of ``key`` are absent.
    """
    if how not in HOW:
        raise ValueError(f"how: {how!r}; choose one of {HOW}")
    m = metrics[(metrics["key"] == key) & np.isfinite(metrics["value"].astype(float))]
    out = {}
    for rid, sub in m.groupby("run_id", sort=False):
        sub = sub.sort_values("step")
        v = sub["value"].to_numpy(dtype=float)
        s = sub["step"].to_numpy()
        if how == "max":
            out[rid] = v.max()
        elif how == "first":
            out[rid] = v[0]
        elif how == "last":
            out[rid] = v[-1]
        elif how == "tail_mean":
            out[rid] = v[s >= s[-1] - tail * s[-1]].mean()
        else:
            later = np.nonzero(s >= step)[0]
            if len(later):
                out[rid] = v[later[0]]
    return pd.Series(out, dtype=float, name=key)


def add_run_stats(final_df: pd.DataFrame, metrics: pd.DataFrame,
                  columns: dict[str, tuple]) -> pd.DataFrame:
    """``final_df`` with one more column per ``name: (key, how[, kwargs])`` of run_stat."""
    out = final_df.copy()
    for name, spec in columns.items():
        key, how, kw = spec[0], spec[1], (spec[2] if len(spec) > 2 else {})
        out[name] = out["run_id"].map(run_stat(metrics, key, how, **kw))
    return out


# ----------------------------------------------------------------------------------
# LR sensitivity and growth laws


def sensitivity(final_df: pd.DataFrame, *, lr_key: str = LR_KEY) -> float:
    """Wortsman's LR sensitivity of one group of runs (all rows are one curve).

    The same number as ``lr_sensitivity(lr_curves(final_df, group_keys=[]))`` (a test
    holds them equal), in plain numpy because bootstraps call it thousands of times: each
    finished run's loss capped at its ℓ0 (diverged or NaN: ℓ0; a missing ℓ0: the group's
    mean), seeds averaged per LR, capped again at the group's ℓ0, then the mean excess
    over the best LR point (denominator n).
    """
    df = final_df[final_df["status"].isin(FINISHED)] if "status" in final_df else final_df
    if df.empty:
        return math.nan
    l0 = df["init_loss"].to_numpy(dtype=float)
    l0 = np.where(np.isfinite(l0), l0, np.nanmean(l0) if np.isfinite(l0).any() else np.nan)
    loss = df["final_val_loss"].to_numpy(dtype=float)
    bad = df["diverged"].to_numpy(dtype=bool) | ~np.isfinite(loss)
    capped = np.where(bad, l0, np.minimum(loss, l0))
    _, inv = np.unique(df[lr_key].to_numpy(dtype=float), return_inverse=True)
    per_lr = np.bincount(inv, weights=capped) / np.bincount(inv)
    per_lr = np.minimum(per_lr[np.isfinite(per_lr)], np.mean(l0))
    return float(np.mean(per_lr - per_lr.min())) if per_lr.size else math.nan


def sensitivity_gap(final_df: pd.DataFrame, arm_key: str, a, b, *,
                    lr_key: str = LR_KEY) -> float:
    """sensitivity(arm a) − sensitivity(arm b), arms being values of column ``arm_key``."""
    sa = sensitivity(final_df[final_df[arm_key] == a], lr_key=lr_key)
    sb = sensitivity(final_df[final_df[arm_key] == b], lr_key=lr_key)
    return sa - sb


def loglog_slope(x: Iterable[float], y: Iterable[float]) -> float:
    """Least-squares slope of log10(y) against log10(x) over the finite positive pairs."""
    x, y = np.asarray(list(x), dtype=float), np.asarray(list(y), dtype=float)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if ok.sum() < 2 or np.ptp(np.log10(x[ok])) == 0:
        return math.nan
    return float(np.polyfit(np.log10(x[ok]), np.log10(y[ok]), 1)[0])


def mean_by(df: pd.DataFrame, keys: list[str], column: str) -> pd.DataFrame:
    """Seed-averaged ``column`` per value of ``keys`` (mean of the finite values)."""
    sub = df[np.isfinite(df[column].astype(float))]
    return sub.groupby(keys, as_index=False)[column].mean()


def log_ratio(df: pd.DataFrame, column: str, arm_key: str, a, b, *, over: str = LR_KEY,
              where=None) -> float:
    """Mean over the values of ``over`` of log10(column | arm a) − log10(column | arm b),
    each seed-averaged first; ``where`` optionally filters the rows (a boolean Series)."""
    if where is not None:
        df = df[where]
    m = mean_by(df, [arm_key, over], column)
    pa = m[m[arm_key] == a].set_index(over)[column]
    pb = m[m[arm_key] == b].set_index(over)[column]
    both = pa.index.intersection(pb.index)
    if not len(both):
        return math.nan
    return float(np.mean(np.log10(pa[both].to_numpy()) - np.log10(pb[both].to_numpy())))


def norm_share(df: pd.DataFrame, *, logit: str = "logit", norm: str = "qk_norm",
               lr_key: str = LR_KEY) -> float:
    """Share of the max-logit growth from the lowest to the highest LR that the growth of
    the mean ‖q‖‖k‖ accounts for: Δlog10(norm) / Δlog10(logit) (seed-averaged per LR).

    1 means the norms explain all of it (the cosine stays put); 0 means none of it.
    """
    m = df.groupby(lr_key)[[logit, norm]].mean().sort_index()
    m = m[(m[logit] > 0) & (m[norm] > 0)]
    if len(m) < 2:
        return math.nan
    d_logit = math.log10(m[logit].iloc[-1] / m[logit].iloc[0])
    d_norm = math.log10(m[norm].iloc[-1] / m[norm].iloc[0])
    return d_norm / d_logit if d_logit > 0 else math.nan


# ----------------------------------------------------------------------------------
# the coord check (as microsoft/mup does it): activation size against width


def coord_check(df: pd.DataFrame, *, width_key: str = "model.width",
                param_key: str = "model.param", layer_cols: list[str]) -> pd.DataFrame:
    """Per parameterization, the log-log slope of the mean |activation| of every layer
    against width (seeds and LRs averaged): ≈ 0 when activations stay width-independent.

    ``df`` holds one row per run with ``layer_cols`` (e.g. resid_l1/l0 at an early step).
    Columns: param, layer, slope, and the per-width values.
    """
    rows = []
    for param, sub in df.groupby(param_key):
        for col in layer_cols:
            m = sub.groupby(width_key)[col].mean().sort_index()
            rows.append({param_key: param, "layer": col,
                         "slope": loglog_slope(m.index, m.to_numpy()),
                         "widths": [int(w) for w in m.index],
                         "values": [float(v) for v in m.to_numpy()]})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------
# early warning: predict the next size's unstable runs from the smaller sizes


def unstable_runs(df: pd.DataFrame, *, size_key: str, delta: float,
                  lr_key: str = LR_KEY) -> pd.Series:
    """Which runs are unstable: diverged, or above their size's optimal LR with a capped
    final loss more than ``delta`` nats worse than the size's best.

    At 0.1M parameters the logit blow-up degrades the loss rather than making it NaN
    (research brief §9), so instability is judged by the loss. Runs below the optimal LR
    are never unstable: their excess loss is under-training, not instability.
    """
    curves = lr_curves(df, lr_key=lr_key, group_keys=[size_key])
    opt = optimal_lr(curves, lr_key=lr_key).set_index(size_key)
    capped = np.minimum(df["final_val_loss"].astype(float).fillna(np.inf),
                        df["init_loss"].astype(float))
    best = df[size_key].map(opt["loss_min"])
    lr_best = df[size_key].map(opt["lr_argmin"])
    out = df["diverged"].astype(bool) | ((df[lr_key] > lr_best) & (capped - best > delta))
    return out.rename("unstable")


def best_threshold(score: np.ndarray, label: np.ndarray) -> tuple[float, float]:
    """(threshold, balanced accuracy) of the rule "score > threshold ⇒ label": the cut
    between consecutive sorted scores that maximises balanced accuracy (ties: the lowest).
    With a single class present the threshold sits beyond every score of the other side."""
    score, label = np.asarray(score, dtype=float), np.asarray(label, dtype=bool)
    xs = np.unique(score)
    cuts = np.concatenate([[xs[0] - 1.0], (xs[:-1] + xs[1:]) / 2, [xs[-1] + 1.0]])
    best = (-1.0, math.nan)
    for c in cuts:
        pred = score > c
        ba = balanced_accuracy(pred, label)
        if ba > best[0] + 1e-12:
            best = (ba, float(c))
    return best[1], best[0]


def balanced_accuracy(pred: np.ndarray, label: np.ndarray) -> float:
    """Mean of the true-positive and true-negative rates (a class that is absent counts 1)."""
    pred, label = np.asarray(pred, dtype=bool), np.asarray(label, dtype=bool)
    tpr = (pred & label).sum() / label.sum() if label.any() else 1.0
    tnr = (~pred & ~label).sum() / (~label).sum() if (~label).any() else 1.0
    return float((tpr + tnr) / 2)


def precision_recall(pred: np.ndarray, label: np.ndarray) -> tuple[float, float]:
    """(precision, recall) of boolean predictions; NaN where undefined (0/0)."""
    pred, label = np.asarray(pred, dtype=bool), np.asarray(label, dtype=bool)
    tp = float((pred & label).sum())
    prec = tp / pred.sum() if pred.any() else math.nan
    rec = tp / label.sum() if label.any() else math.nan
    return prec, rec


def early_warning(df: pd.DataFrame, *, size_key: str = "n_params", score: str = "early_logit",
                  label: str = "unstable", lr_key: str = LR_KEY, degree: int = 2) -> dict:
    """Fit log10(``score``) against log10(size) per LR on every size but the largest
    (a polynomial of ``degree``, at most n_sizes − 1), predict the largest size's score,
    and call a run unstable when the prediction exceeds the threshold calibrated on the
    smaller sizes (:func:`best_threshold` on log10 score). Seeds are averaged per (size,
    LR) for the fit; a (size, LR) point is unstable when most of its seeds are.

    Returns the threshold, its balanced accuracy on the small sizes, and for the largest
    size: per-LR predicted and observed scores, predicted and observed labels, precision,
    recall and balanced accuracy of the prediction.
    """
    g = df.groupby([size_key, lr_key]).agg(score=(score, "mean"),
                                          unstable=(label, "mean")).reset_index()
    g["log_score"] = np.log10(g["score"].clip(lower=1e-12))
    g["unstable"] = g["unstable"] > 0.5
    sizes = sorted(g[size_key].unique())
    if len(sizes) < 2:
        raise ValueError("early_warning: needs at least two sizes")
    small, target = g[g[size_key].isin(sizes[:-1])], g[g[size_key] == sizes[-1]]
    thr, ba_fit = best_threshold(small["log_score"].to_numpy(), small["unstable"].to_numpy())
    deg = min(degree, len(sizes) - 2)
    rows = []
    for lr, sub in small.groupby(lr_key):
        obs = target[target[lr_key] == lr]
        if obs.empty or len(sub) < deg + 1:
            continue
        coef = np.polyfit(np.log10(sub[size_key].to_numpy(dtype=float)), sub["log_score"], deg)
        pred = float(np.polyval(coef, math.log10(sizes[-1])))
        rows.append({lr_key: float(lr), "predicted_log_score": pred,
                     "observed_log_score": float(obs["log_score"].iloc[0]),
                     "predicted_unstable": pred > thr,
                     "observed_unstable": bool(obs["unstable"].iloc[0])})
    table = pd.DataFrame(rows)
    pred = table["predicted_unstable"].to_numpy(dtype=bool) if len(table) else np.array([], bool)
    obs = table["observed_unstable"].to_numpy(dtype=bool) if len(table) else np.array([], bool)
    prec, rec = precision_recall(pred, obs)
    return {"threshold_log10": thr, "fit_balanced_accuracy": ba_fit, "degree": deg,
            "sizes": [float(s) for s in sizes], "table": table,
            "precision": prec, "recall": rec,
            "balanced_accuracy": balanced_accuracy(pred, obs) if len(table) else math.nan}


# ----------------------------------------------------------------------------------
# the zero-layer bigram baseline (what the kappa transplant is compared with)


def bigram_counts(batches: Iterable[tuple], vocab: int) -> np.ndarray:
    """[vocab, vocab] counts of (previous token, next token) pairs over (x, y) batches,
    counting every position whose target is not -100 (y is x shifted by one)."""
    counts = np.zeros((vocab, vocab), dtype=np.float64)
    for x, y in batches:
        x, y = np.asarray(x).reshape(-1), np.asarray(y).reshape(-1)
        keep = y != -100
        np.add.at(counts, (x[keep], y[keep]), 1.0)
    return counts


def bigram_loss(train_counts: np.ndarray, val_batches: Iterable[tuple],
                alpha: float = 0.1) -> float:
    """Cross-entropy (nats per token) on ``val_batches`` of the bigram model fitted to
    ``train_counts`` with add-``alpha`` smoothing: the best a zero-layer model (embedding
    straight into the head) can do, up to the smoothing."""
    probs = (train_counts + alpha) / (train_counts + alpha).sum(axis=1, keepdims=True)
    logp = np.log(probs)
    total, n = 0.0, 0
    for x, y in val_batches:
        x, y = np.asarray(x).reshape(-1), np.asarray(y).reshape(-1)
        keep = y != -100
        total -= logp[x[keep], y[keep]].sum()
        n += int(keep.sum())
    return total / n
