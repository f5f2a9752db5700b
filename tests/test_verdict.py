"""The shared verdict rule on constructed intervals: every branch, both directions."""

import math

import numpy as np
import pandas as pd
import pytest

from proxylab.analysis.verdict import (Claim, bootstrap, bootstrap_runs, decide,
                                       mean_difference, not_measured, status_of)

GREATER = Claim(text="A beats B (Paper 2023)", effect="loss(B) - loss(A)", direction="greater",
                margin=0.02, unit="nats")
LESS = Claim(text="A lowers x", effect="x(A) - x(B)", direction="less", margin=-0.02)
WITHIN = Claim(text="A and B are comparable", effect="loss(A) - loss(B)", direction="within",
               margin=0.05)


@pytest.mark.parametrize("claim,lo,hi,status", [
    (GREATER, 0.03, 0.10, "reproduced"),
    (GREATER, 0.01, 0.10, "inconclusive"),       # straddles the margin
    (GREATER, -0.05, 0.01, "not_reproduced"),    # entirely short of the margin
    (GREATER, -0.20, -0.10, "not_reproduced"),   # wrong direction
    (GREATER, 0.02, 0.05, "inconclusive"),       # touching the margin is not beyond it
    (LESS, -0.10, -0.03, "reproduced"),
    (LESS, -0.03, 0.00, "inconclusive"),
    (LESS, -0.01, 0.10, "not_reproduced"),
    (WITHIN, -0.04, 0.04, "reproduced"),
    (WITHIN, -0.04, 0.08, "inconclusive"),
    (WITHIN, 0.06, 0.20, "not_reproduced"),
    (WITHIN, -0.30, -0.06, "not_reproduced"),
    (GREATER, math.nan, 0.1, "inconclusive"),
])
def test_status_branches(claim, lo, hi, status):
    assert status_of(claim, lo, hi) == status
    # the order of the interval's ends does not matter
    assert status_of(claim, hi, lo) == status


def test_mirror_symmetry():
    # a "less" claim is the "greater" claim of the negated effect
    mirrored = Claim(text="t", effect="-e", direction="less", margin=-GREATER.margin)
    for lo, hi in [(0.03, 0.1), (0.01, 0.1), (-0.2, -0.1), (-0.05, 0.01)]:
        assert status_of(GREATER, lo, hi) == status_of(mirrored, -hi, -lo)


def test_decide_records_the_evidence_and_a_reason():
    v = decide(GREATER, 0.06, 0.03, 0.09, n=3, evidence={"seeds": [0, 1, 2]})
    assert v["claim"] == GREATER.text and v["status"] == "reproduced"
    ev = v["evidence"]
    assert ev["estimate"] == 0.06 and ev["interval"] == [0.03, 0.09] and ev["margin"] == 0.02
    assert ev["n"] == 3 and ev["seeds"] == [0, 1, 2] and ev["direction"] == "greater"
    assert "0.06" in v["reason"] and "> 0.02" in v["reason"]


def test_one_sample_is_inconclusive_however_large_the_effect():
    v = decide(GREATER, 5.0, 5.0, 5.0, n=1)
    assert v["status"] == "inconclusive" and "n=1" in v["reason"]


def test_nan_estimate_is_inconclusive_and_json_safe():
    v = decide(GREATER, math.nan, math.nan, math.nan, n=4)
    assert v["status"] == "inconclusive"
    assert v["evidence"]["estimate"] is None and v["evidence"]["interval"] == [None, None]


def test_not_measured():
    v = not_measured(GREATER, "needs depth runs")
    assert v["status"] == "inconclusive" and v["reason"] == "needs depth runs"


def test_claim_rejects_unknown_direction():
    with pytest.raises(ValueError, match="direction"):
        Claim(text="t", effect="e", direction="bigger", margin=0.0)


def test_bootstrap_mean_difference_matches_the_normal_approximation():
    rng = np.random.default_rng(1)
    a, b = rng.normal(1.0, 1.0, 400), rng.normal(0.0, 1.0, 400)
    est, lo, hi = mean_difference(a, b, n_boot=2000, level=0.9)
    assert est == pytest.approx(a.mean() - b.mean())
    se = math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    # percentile interval of a mean difference ~ est ± 1.645 se for n this large
    assert lo == pytest.approx(est - 1.645 * se, abs=0.25 * se)
    assert hi == pytest.approx(est + 1.645 * se, abs=0.25 * se)


def test_bootstrap_of_constant_samples_is_a_point():
    est, lo, hi = bootstrap(np.mean, [2.0, 2.0, 2.0])
    assert est == lo == hi == 2.0


def test_bootstrap_runs_keeps_pairing_across_arms():
    # the arms differ by exactly 0.1 on every seed while seeds differ wildly:
    # resampling seeds jointly keeps the paired difference exact
    rows = [{"train.seed": s, "arm": arm, "loss": 10.0 * s + (0.1 if arm == "b" else 0.0)}
            for s in range(5) for arm in "ab"]
    df = pd.DataFrame(rows)

    def diff(d):
        return d[d.arm == "b"].loss.mean() - d[d.arm == "a"].loss.mean()

    est, lo, hi, n = bootstrap_runs(df, diff, unit="train.seed", n_boot=200)
    assert n == 5 and est == pytest.approx(0.1)
    assert lo == pytest.approx(0.1) and hi == pytest.approx(0.1)


def test_bootstrap_runs_with_one_unit_has_no_interval():
    df = pd.DataFrame({"train.seed": [0, 0], "loss": [1.0, 2.0]})
    est, lo, hi, n = bootstrap_runs(df, lambda d: d.loss.mean(), unit="train.seed")
    assert n == 1 and est == 1.5 and math.isnan(lo) and math.isnan(hi)


def test_combine_needs_every_part():
    yes = decide(GREATER, 0.06, 0.03, 0.09, n=3)
    maybe = decide(GREATER, 0.03, 0.01, 0.05, n=3)
    no = decide(GREATER, -0.1, -0.2, 0.0, n=3)
    from proxylab.analysis.verdict import combine
    assert combine("c", {"a": yes, "b": yes})["status"] == "reproduced"
    assert combine("c", {"a": yes, "b": maybe})["status"] == "inconclusive"
    both = combine("c", {"a": yes, "b": maybe, "x": no})
    assert both["status"] == "not_reproduced"
    assert both["evidence"]["parts"]["x"]["status"] == "not_reproduced"
    assert "[b: inconclusive]" in both["reason"]
