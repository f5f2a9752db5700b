"""Grokking analyses: pure functions from curves, weights or logits to numbers.

- :func:`first_step_at` / :func:`grokking_steps`: memorization step (train acc >= 99%),
  generalization step (val acc >= 99%) and the delay between them (Power et al. 2022).
- :func:`norm_summary`: the weight-norm trajectory around the jump (Nanda et al. 2023: the
  total norm falls during cleanup; Liu et al. 2023, Omnigrok).
- :func:`corruption_phase`: coexistence / inversion / memorization / confusion from the
  clean, corrupted and test accuracies (Doshi et al. 2024).
- :func:`fourier_norms`, :func:`key_frequencies`, :func:`gini`: the embedding's spectrum over
  the residues 0..p-1 (Nanda et al.: a few key frequencies carry the embedding).
- :func:`restricted_excluded_loss`: Nanda's progress measures from the logits on the full
  (a, b) grid: keep (restricted) or remove (excluded) the key-frequency directions
  cos/sin(w_k (a+b)).
- :func:`ipr`: inverse participation ratio of each neuron's weights in Fourier space
  (Doshi et al.): near 1 for a periodic (generalizing) neuron, small for a memorizing one.
- :func:`delay_law_fit`: generalization step against ln(α)/(ηλ) (Lyu et al. 2024), least
  squares slope, intercept and R².
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

THRESHOLD = 0.99


# ----------------------------------------------------------------------------------
# steps


def first_step_at(steps: Sequence[float], values: Sequence[float], threshold: float = THRESHOLD,
                  *, stay: bool = False) -> float:
    """The first logged step whose value is >= ``threshold`` (nan when none).

    ``stay=True``: the first step from which every later logged value stays >= threshold.
    """
    s, v = np.asarray(steps, dtype=float), np.asarray(values, dtype=float)
    order = np.argsort(s, kind="stable")
    s, v = s[order], v[order]
    ok = np.where(np.isnan(v), False, v >= threshold)
    if not ok.any():
        return math.nan
    if not stay:
        return float(s[np.argmax(ok)])
    if not ok[-1]:
        return math.nan
    bad = np.nonzero(~ok)[0]
    return float(s[bad[-1] + 1]) if bad.size else float(s[0])


def grokking_steps(steps, train_acc, val_acc, threshold: float = THRESHOLD) -> dict[str, float]:
    """memorization_step, generalization_step (first crossings of ``threshold``) and
    delay = generalization - memorization; nan where a threshold is never reached.

    ``train_acc`` and ``val_acc`` are aligned with ``steps`` (nan where not logged)."""
    mem = first_step_at(steps, train_acc, threshold)
    gen = first_step_at(steps, val_acc, threshold)
    return {"memorization_step": mem, "generalization_step": gen, "delay": gen - mem,
            "delay_ratio": gen / mem if mem > 0 else math.nan}


def norm_summary(steps, norms, generalization_step: float = math.nan) -> dict[str, float]:
    """Peak norm and its step, the final norm, the norm at the generalization step (nearest
    logged step) and the relative drop from the peak to the end."""
    s, n = np.asarray(steps, dtype=float), np.asarray(norms, dtype=float)
    keep = np.isfinite(n)
    s, n = s[keep], n[keep]
    if not len(n):
        return {"norm_peak": math.nan, "norm_peak_step": math.nan, "norm_final": math.nan,
                "norm_at_generalization": math.nan, "norm_drop_frac": math.nan}
    i = int(np.argmax(n))
    at_gen = (float(n[int(np.argmin(np.abs(s - generalization_step)))])
              if math.isfinite(generalization_step) else math.nan)
    return {"norm_peak": float(n[i]), "norm_peak_step": float(s[i]), "norm_final": float(n[-1]),
            "norm_at_generalization": at_gen, "norm_drop_frac": float(1 - n[-1] / n[i])}


# ----------------------------------------------------------------------------------
# label corruption


def corruption_phase(test_acc: float, corrupt_acc: float, corrupt_true_acc: float,
                     clean_acc: float, *, hi: float = 0.9, lo: float = 0.5) -> str:
    """Doshi et al.'s phases from final accuracies (test, corrupted labels as given,
    corrupted pairs scored against the TRUE rule, clean training pairs).

    coexistence   test >= hi and the wrong labels memorized (corrupt_acc >= lo)
    inversion     test >= hi and the corrupted pairs answered by the rule (corrupt_true >= lo)
    memorization  train fitted (clean >= hi, corrupt >= lo) but test < lo
    confusion     otherwise (neither fits nor generalizes)
    """
    if test_acc >= hi and corrupt_acc >= lo:
        return "coexistence"
    if test_acc >= hi and corrupt_true_acc >= lo:
        return "inversion"
    if clean_acc >= hi and corrupt_acc >= lo and test_acc < lo:
        return "memorization"
    return "confusion"


# ----------------------------------------------------------------------------------
# Fourier structure


def fourier_basis(p: int) -> tuple[np.ndarray, np.ndarray]:
    """Orthonormal real Fourier basis over Z_p as rows [p, p] and each row's frequency.

    Row 0 is the constant; then cos and sin of w_k x, w_k = 2πk/p, for k = 1..(p-1)//2
    (and the cosine alone at k = p/2 for even p)."""
    x = np.arange(p)
    rows, freq = [np.full(p, 1 / math.sqrt(p))], [0]
    for k in range(1, p // 2 + 1):
        c = np.cos(2 * math.pi * k * x / p)
        rows.append(c / np.linalg.norm(c))
        freq.append(k)
        if 2 * k != p:
            s = np.sin(2 * math.pi * k * x / p)
            rows.append(s / np.linalg.norm(s))
            freq.append(k)
    return np.stack(rows), np.asarray(freq)


def fourier_norms(embedding: np.ndarray, p: int | None = None) -> np.ndarray:
    """Norm of the embedding's component at each frequency k = 0..p//2 (cos and sin together).

    ``embedding`` is [p, d] (one row per residue; extra rows such as operator tokens are
    dropped when ``p`` is given)."""
    w = np.asarray(embedding, dtype=float)
    p = p or w.shape[0]
    basis, freq = fourier_basis(p)
    coef = basis @ w[:p]                                   # [p, d]
    sq = np.zeros(p // 2 + 1)
    np.add.at(sq, freq, (coef**2).sum(axis=1))
    return np.sqrt(sq)


def key_frequencies(norms: np.ndarray, max_keys: int = 10) -> list[int]:
    """The key frequencies, found automatically: rank k >= 1 by norm and cut at the largest
    ratio between consecutive norms among the top ``max_keys`` + 1."""
    n = np.asarray(norms, dtype=float)[1:]                  # the constant is not a frequency
    order = np.argsort(-n)
    top = n[order[:max_keys + 1]]
    ratios = top[:-1] / np.maximum(top[1:], 1e-30)
    cut = int(np.argmax(ratios)) + 1
    return sorted(int(k) + 1 for k in order[:cut])


def gini(values: Sequence[float]) -> float:
    """Gini coefficient of non-negative values: 0 all equal, (n-1)/n all mass on one."""
    x = np.sort(np.asarray(values, dtype=float))
    n, total = len(x), x.sum()
    if n == 0 or total <= 0:
        return math.nan
    i = np.arange(1, n + 1)
    return float((2 * (i * x).sum()) / (n * total) - (n + 1) / n)


def _ce(logits: np.ndarray, labels: np.ndarray) -> float:
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(labels)), labels].mean())


def restricted_excluded_loss(logits: np.ndarray, p: int, keys: Sequence[int],
                             train_mask: np.ndarray) -> dict[str, float]:
    """Nanda et al.'s progress measures from logits on the whole grid.

    ``logits`` [p, p, C]: row (a, b) holds the logits for ``a + b mod p`` (C >= p classes;
    the first p are the residues). For each key frequency the directions cos(w_k(a+b)) and
    sin(w_k(a+b)) over the (a, b) grid are orthonormal; ``restricted`` keeps only them (plus
    the mean over the grid) and is scored on ALL pairs; ``excluded`` removes them and is
    scored on the TRAINING pairs (``train_mask`` [p, p] bool). Also returns the plain
    train and test losses of the same logits."""
    L = np.asarray(logits, dtype=float).reshape(p * p, -1)
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    s = (a + b).ravel()
    labels = s % p
    dirs = []
    for k in keys:
        for f in (np.cos, np.sin):
            u = f(2 * math.pi * k * s / p)
            dirs.append(u / np.linalg.norm(u))
    U = np.stack(dirs, axis=1) if dirs else np.zeros((p * p, 0))   # [p², 2K], orthonormal
    mean = L.mean(axis=0, keepdims=True)
    key_part = U @ (U.T @ (L - mean))
    restricted = mean + key_part
    excluded = L - key_part
    m = np.asarray(train_mask, dtype=bool).ravel()
    return {"restricted_loss": _ce(restricted, labels), "excluded_loss": _ce(excluded[m], labels[m]),
            "train_loss": _ce(L[m], labels[m]), "test_loss": _ce(L[~m], labels[~m])}


def ipr(weights: np.ndarray, r: int = 2) -> np.ndarray:
    """Inverse participation ratio per row: ν = |rfft(u)| / ‖rfft(u)‖, IPR = Σ ν^(2r).

    ``weights`` [N, p]: one row per neuron, its weights over the p residues. A pure
    sinusoid gives 1; a spectrum flat over F bins gives F^(1-r)."""
    w = np.asarray(weights, dtype=float)
    spec = np.abs(np.fft.rfft(w, axis=1))
    nu = spec / np.maximum(np.linalg.norm(spec, axis=1, keepdims=True), 1e-30)
    return (nu ** (2 * r)).sum(axis=1)


# ----------------------------------------------------------------------------------
# the delay law


def delay_law_fit(gen_steps, alphas, lrs, wds, *, offset: bool = False) -> dict[str, float]:
    """Least-squares fit gen_step = intercept + slope · ln(α)/(ηλ) (Lyu et al. 2024).

    ``offset=True`` adds a term ``offset · 1/(ηλ)``: the Omnigrok form ln(α w₀ / w_c)/(ηλ),
    in which even α = 1 waits for the norm to decay from w₀ to w_c. Points whose
    generalization step is not finite (never generalized) are dropped; returns slope,
    intercept, r2, n (the points used) and, with ``offset``, the offset coefficient."""
    g = np.asarray(gen_steps, dtype=float)
    inv = 1.0 / (np.asarray(lrs, dtype=float) * np.asarray(wds, dtype=float))
    x = np.log(np.asarray(alphas, dtype=float)) * inv
    keep = np.isfinite(g) & np.isfinite(x)
    g, x, inv = g[keep], x[keep], inv[keep]
    n = int(keep.sum())
    cols = [np.ones_like(x), x] + ([inv] if offset else [])
    A = np.stack(cols, axis=1)
    nan = {"slope": math.nan, "intercept": math.nan, "r2": math.nan, "n": n,
           **({"offset": math.nan} if offset else {})}
    if n < A.shape[1] or np.ptp(x) == 0 or np.linalg.matrix_rank(A) < A.shape[1]:
        return nan
    coef, *_ = np.linalg.lstsq(A, g, rcond=None)
    resid = g - A @ coef
    ss_tot = ((g - g.mean()) ** 2).sum()
    r2 = 1 - (resid**2).sum() / ss_tot if ss_tot > 0 else math.nan
    out = {"slope": float(coef[1]), "intercept": float(coef[0]), "r2": float(r2), "n": n}
    if offset:
        out["offset"] = float(coef[2])
    return out
