"""How every study decides a verdict: an effect, a direction and a margin stated in advance.

A claim such as "qk-layernorm lowers LR sensitivity by at least 0.02 nats" is a
:class:`Claim` (``direction="greater"``, ``margin=0.02`` on the effect "sensitivity without
qk-LN minus sensitivity with it"). A study estimates the effect with an uncertainty
interval (:func:`bootstrap`, over seeds or over LR grid points where there is one seed) and
:func:`decide` turns (estimate, interval) into a status, symmetrically:

- ``reproduced``: the whole interval lies beyond the margin in the claimed direction;
- ``not_reproduced``: the interval excludes the claimed effect (it lies entirely on the
  wrong side of the margin: the wrong direction, or short of the margin);
- ``inconclusive``: the interval straddles the margin, or there is no uncertainty to speak
  of (fewer than two independent samples), or the estimate is not finite.

``direction="within"`` states an equivalence ("AdamW and Lion reach best losses within
0.05 nats of each other"): reproduced when the interval lies inside [-margin, margin],
not_reproduced when it lies entirely outside, inconclusive otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

DIRECTIONS = ("greater", "less", "within")
STATUSES = ("reproduced", "not_reproduced", "inconclusive")


@dataclass(frozen=True, kw_only=True)
class Claim:
    """A claim to test: the measured ``effect`` should lie beyond ``margin`` in ``direction``.

    ``greater``: effect > margin; ``less``: effect < margin (give a negative margin for
    "lower by at least x"); ``within``: |effect| <= margin.
    """

    text: str             # the claim as the paper states it, with the paper named
    effect: str           # what the number is, e.g. "sens(no qk-LN) - sens(qk-LN)"
    direction: str        # one of DIRECTIONS
    margin: float         # stated in advance, in the effect's unit
    unit: str = ""

    def __post_init__(self):
        if self.direction not in DIRECTIONS:
            raise ValueError(f"Claim.direction: {self.direction!r}; choose one of {DIRECTIONS}")
        if self.direction == "within" and not self.margin >= 0:
            raise ValueError("Claim.margin: a 'within' claim needs a margin >= 0")


def bootstrap(stat: Callable[..., float], *groups: Sequence[float], n_boot: int = 2000,
              level: float = 0.9, seed: int = 0) -> tuple[float, float, float]:
    """(estimate, lo, hi): ``stat(*groups)`` and its percentile bootstrap interval.

    Each group is resampled with replacement independently of the others (groups are
    independent samples, e.g. the seeds of two arms). Pass paired data as one group of
    per-pair differences. Resamples whose statistic is not finite are dropped; if fewer
    than half survive the interval is (nan, nan).
    """
    arrays = [np.asarray(g, dtype=float) for g in groups]
    if not arrays or any(a.size == 0 for a in arrays):
        return math.nan, math.nan, math.nan
    estimate = float(stat(*arrays))
    rng = np.random.default_rng(seed)
    draws = np.empty(n_boot)
    for b in range(n_boot):
        draws[b] = stat(*(a[rng.integers(0, a.size, a.size)] for a in arrays))
    draws = draws[np.isfinite(draws)]
    if draws.size < n_boot / 2:
        return estimate, math.nan, math.nan
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(draws, [alpha, 1.0 - alpha])
    return estimate, float(lo), float(hi)


def mean_difference(a: Sequence[float], b: Sequence[float], **kw) -> tuple[float, float, float]:
    """mean(a) - mean(b) with its bootstrap interval (a and b resampled independently)."""
    return bootstrap(lambda x, y: x.mean() - y.mean(), a, b, **kw)


def status_of(claim: Claim, lo: float, hi: float) -> str:
    """The symmetric decision on an interval (see the module docstring)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "inconclusive"
    lo, hi = min(lo, hi), max(lo, hi)
    m = claim.margin
    if claim.direction == "greater":
        return "reproduced" if lo > m else "not_reproduced" if hi < m else "inconclusive"
    if claim.direction == "less":
        return "reproduced" if hi < m else "not_reproduced" if lo > m else "inconclusive"
    m = abs(m)
    if -m <= lo and hi <= m:
        return "reproduced"
    return "not_reproduced" if hi < -m or lo > m else "inconclusive"


def decide(claim: Claim, estimate: float, lo: float, hi: float, *, n: int,
           evidence: dict[str, Any] | None = None, reason_extra: str = "",
           level: float = 0.9) -> dict:
    """The verdict dict a study's summary.json carries for ``claim``.

    ``n`` is the number of independent samples behind the interval; with n < 2 there is
    no uncertainty estimate and the verdict is ``inconclusive`` whatever the point says.
    """
    status = status_of(claim, lo, hi) if n >= 2 else "inconclusive"
    if not math.isfinite(estimate):
        status = "inconclusive"
    side = {"greater": f"> {claim.margin:g}", "less": f"< {claim.margin:g}",
            "within": f"within ±{abs(claim.margin):g}"}[claim.direction]
    unit = f" {claim.unit}" if claim.unit else ""
    interval = f"[{lo:.4g}, {hi:.4g}]" if math.isfinite(lo) and math.isfinite(hi) else "[n/a]"
    why = {"reproduced": f"the {level:.0%} interval {interval}{unit} lies {side}",
           "not_reproduced": f"the {level:.0%} interval {interval}{unit} excludes {side}",
           "inconclusive": (f"only n={n} sample(s): no uncertainty estimate" if n < 2 else
                            "no finite bootstrap interval" if interval == "[n/a]" else
                            f"the {level:.0%} interval {interval}{unit} straddles the margin "
                            f"({side})")}[status]
    reason = f"{claim.effect} = {estimate:.4g}{unit}; {why}"
    if reason_extra:
        reason += f"; {reason_extra}"
    return {
        "claim": claim.text,
        "status": status,
        "reason": reason,
        "evidence": {
            "effect": claim.effect, "estimate": _num(estimate),
            "interval": [_num(lo), _num(hi)], "level": level,
            "direction": claim.direction, "margin": claim.margin, "unit": claim.unit,
            "n": int(n), **(evidence or {}),
        },
    }


def combine(text: str, parts: dict[str, dict]) -> dict:
    """One verdict for a claim made of several parts, each decided by :func:`decide`:
    ``reproduced`` when every part is, ``not_reproduced`` when any part is, else
    ``inconclusive``. The evidence keeps each part's verdict under its name."""
    statuses = [p["status"] for p in parts.values()]
    status = ("reproduced" if all(s == "reproduced" for s in statuses) else
              "not_reproduced" if "not_reproduced" in statuses else "inconclusive")
    reason = "; ".join(f"[{name}: {p['status']}] {p['reason']}" for name, p in parts.items())
    return {"claim": text, "status": status, "reason": reason,
            "evidence": {"parts": {name: {"effect_claim": p["claim"], "status": p["status"],
                                          **p["evidence"]} for name, p in parts.items()}}}


def not_measured(claim: Claim, why: str, evidence: dict[str, Any] | None = None) -> dict:
    """An ``inconclusive`` verdict for a claim the data at hand cannot answer, with why."""
    return {"claim": claim.text, "status": "inconclusive", "reason": why,
            "evidence": {"effect": claim.effect, "estimate": None, "interval": [None, None],
                         "direction": claim.direction, "margin": claim.margin,
                         "unit": claim.unit, "n": 0, **(evidence or {})}}


def _num(x: float) -> float | None:
    """JSON-safe: nan/inf become None."""
    x = float(x)
    return x if math.isfinite(x) else None


def bootstrap_runs(runs, stat: Callable[[Any], float], *, unit: str, n_boot: int = 500,
                   level: float = 0.9, seed: int = 0) -> tuple[float, float, float, int]:
    """(estimate, lo, hi, n) of ``stat(runs)`` resampling the values of column ``unit``.

    ``runs`` is a per-run DataFrame (e.g. :func:`~proxylab.analysis.final_metrics`). Each
    bootstrap draw picks ``n`` values of ``unit`` with replacement (n = its distinct
    values) and keeps every run with a picked value, once per pick, so the seeds of one
    draw are shared by every arm (their pairing is kept). ``unit`` is ``train.seed`` where
    there are seeds, or the LR column where there is one seed per point ("a bootstrap over
    grid points"; a draw then sees a subset of the grid).
    """
    import pandas as pd  # noqa: PLC0415

    values = np.array(sorted(runs[unit].dropna().unique()))
    n = len(values)
    estimate = float(stat(runs))
    if n < 2:
        return estimate, math.nan, math.nan, n
    rng = np.random.default_rng(seed)
    by_value = {v: runs[runs[unit] == v] for v in values}
    draws = []
    for _ in range(n_boot):
        picked = values[rng.integers(0, n, n)]
        draws.append(stat(pd.concat([by_value[v] for v in picked], ignore_index=True)))
    draws = np.asarray(draws, dtype=float)
    draws = draws[np.isfinite(draws)]
    if draws.size < n_boot / 2:
        return estimate, math.nan, math.nan, n
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(draws, [alpha, 1.0 - alpha])
    return estimate, float(lo), float(hi), n
