"""Edges of analysis/verdict.py that test_verdict.py does not reach, each found by a mutant
that survived `make mutate` (docs/testing.md): exact reason texts, the JSON shape of the
evidence, the bootstrap's defaults, its quantiles and its finite-draw rule."""

import math

import numpy as np
import pytest

from proxylab.analysis.verdict import (Claim, bootstrap, combine, decide, mean_difference,
                                       not_measured)

GREATER = Claim(text="T (Paper, 2024)", effect="a - b", direction="greater", margin=0.02,
                unit="nats")
LESS = Claim(text="L", effect="d", direction="less", margin=-0.5)
WITHIN = Claim(text="W", effect="gap", direction="within", margin=0.05, unit="nats")


def test_reason_texts_name_side_unit_level_and_interval():
    v = decide(GREATER, 0.1, 0.05, 0.2, n=3)
    assert v["reason"] == "a - b = 0.1 nats; the 90% interval [0.05, 0.2] nats lies > 0.02"
    v = decide(LESS, 0.3, 0.1, 0.4, n=4, level=0.8, reason_extra="bootstrap over 4 seeds")
    assert v["status"] == "not_reproduced"
    assert v["reason"] == ("d = 0.3; the 80% interval [0.1, 0.4] excludes < -0.5; "
                           "bootstrap over 4 seeds")
    v = decide(WITHIN, 0.01, -0.04, 0.1, n=5)
    assert v["reason"] == ("gap = 0.01 nats; the 90% interval [-0.04, 0.1] nats straddles the "
                           "margin (within ±0.05)")
    v = decide(WITHIN, 0.01, math.nan, math.nan, n=5)
    assert v["reason"] == "gap = 0.01 nats; no finite bootstrap interval"
    assert v["evidence"]["level"] == 0.9 and v["evidence"]["interval"] == [None, None]


def test_not_measured_is_fully_specified():
    assert not_measured(WITHIN, "one arm missing", {"arm": "lion"}) == {
        "claim": "W", "status": "inconclusive", "reason": "one arm missing",
        "evidence": {"effect": "gap", "estimate": None, "interval": [None, None],
                     "direction": "within", "margin": 0.05, "unit": "nats", "n": 0,
                     "arm": "lion"}}


def test_combine_reason_and_part_evidence():
    a, b = decide(GREATER, 0.1, 0.05, 0.2, n=3), decide(LESS, 0.3, 0.1, 0.4, n=3)
    v = combine("both", {"a": a, "b": b})
    assert v["reason"] == f"[a: reproduced] {a['reason']}; [b: not_reproduced] {b['reason']}"
    assert v["evidence"]["parts"]["a"]["effect_claim"] == "T (Paper, 2024)"
    assert v["evidence"]["parts"]["b"]["status"] == "not_reproduced"


def test_within_claim_margin_rules():
    assert Claim(text="x", effect="e", direction="within", margin=0.0).margin == 0.0
    assert Claim(text="x", effect="e", direction="within", margin=0.5).margin == 0.5
    with pytest.raises(ValueError, match=r"^Claim.margin: a 'within' claim needs a margin >= 0$"):
        Claim(text="x", effect="e", direction="within", margin=-0.1)


def test_bootstrap_defaults_are_reproducible_and_documented():
    data = [0.3, 1.2, -0.4, 2.2, 0.9]
    a = bootstrap(np.mean, data)
    assert a == bootstrap(np.mean, data)                       # seeded, not random
    assert a == bootstrap(np.mean, data, n_boot=2000, level=0.9, seed=0)
    assert a != bootstrap(np.mean, data, seed=1)
    kw = dict(n_boot=300, level=0.8, seed=3)
    assert mean_difference(data, [0.0, 1.0], **kw) == bootstrap(
        lambda x, y: x.mean() - y.mean(), data, [0.0, 1.0], **kw)


def test_bootstrap_quantiles_and_every_index_drawn():
    # stat = the first element of the resample: uniform over 0..99, so the 90% interval is
    # the 5% and 95% quantiles of a uniform on 0..99
    est, lo, hi = bootstrap(lambda a: a[0], np.arange(100.0), n_boot=20000)
    assert est == 0.0 and lo == pytest.approx(4.95, abs=0.7) and hi == pytest.approx(94.05, abs=0.7)
    # index 0 must be drawable: with [10, 0] the mean of a resample is 10 a quarter of the time
    assert bootstrap(np.mean, [10.0, 0.0]) == (5.0, 0.0, 10.0)


def test_bootstrap_small_and_empty_groups():
    assert bootstrap(np.mean, [3.0]) == (3.0, 3.0, 3.0)        # one value: a point, not nan
    assert bootstrap(np.mean, [1, 2, 3], n_boot=50)[0] == 2.0  # ints are fine
    for groups in ([[]], [[1.0, 2.0], []]):
        out = bootstrap(lambda *g: float(np.min(g[-1])), *groups)  # min of nothing raises
        assert all(math.isnan(x) for x in out)
    assert all(math.isnan(x) for x in bootstrap(np.min))       # no group at all


class Flaky:
    """A statistic that is finite on ``finite`` of every ``period`` calls after the first
    (the point estimate), NaN otherwise."""

    def __init__(self, finite, period):
        self.calls, self.finite, self.period = 0, finite, period

    def __call__(self, a):
        self.calls += 1
        if self.calls == 1:
            return float(a.mean())
        return float(a.mean()) if (self.calls - 2) % self.period < self.finite else math.nan


def test_bootstrap_needs_half_the_draws_finite():
    data = [1.0, 2.0, 4.0]
    est, lo, hi = bootstrap(Flaky(1, 2), data, n_boot=100)      # exactly half: kept
    assert est == pytest.approx(7 / 3) and math.isfinite(lo) and math.isfinite(hi)
    est, lo, hi = bootstrap(Flaky(2, 5), data, n_boot=100)      # 40%: dropped
    assert est == pytest.approx(7 / 3) and math.isnan(lo) and math.isnan(hi)


def test_decide_evidence_is_fully_specified_and_n_two_is_enough():
    v = decide(GREATER, 0.1, -0.1, 0.3, n=2, evidence={"seeds": [0, 1]})
    assert v["status"] == "inconclusive"
    assert v["reason"] == ("a - b = 0.1 nats; the 90% interval [-0.1, 0.3] nats straddles the "
                           "margin (> 0.02)")
    assert v["evidence"] == {"effect": "a - b", "estimate": 0.1, "interval": [-0.1, 0.3],
                             "level": 0.9, "direction": "greater", "margin": 0.02,
                             "unit": "nats", "n": 2, "seeds": [0, 1]}
    assert decide(GREATER, 0.1, 0.05, 0.2, n=1)["reason"].endswith(
        "only n=1 sample(s): no uncertainty estimate")


@pytest.mark.parametrize("claim, lo, hi, status", [
    (GREATER, 0.02, 0.5, "inconclusive"),      # touching the margin is not beyond it
    (GREATER, -0.5, 0.02, "inconclusive"),     # nor entirely short of it
    (LESS, -0.9, -0.5, "inconclusive"),
    (LESS, -0.5, 0.3, "inconclusive"),
    (WITHIN, -0.05, 0.05, "reproduced"),       # the closed interval [-m, m]
    (WITHIN, -0.2, -0.05, "inconclusive"),
    (WITHIN, 0.05, 0.2, "inconclusive"),
])
def test_status_at_the_margin_exactly(claim, lo, hi, status):
    assert decide(claim, (lo + hi) / 2, lo, hi, n=3)["status"] == status


def test_bootstrap_runs_draws_whole_units_with_defaults_pinned():
    import pandas as pd

    from proxylab.analysis.verdict import bootstrap_runs

    # units 0, 1, 2 hold 1, 2 and 4 runs: a draw of 3 units holds between 3 and 12 runs
    runs = pd.DataFrame({"train.seed": [0] + [1] * 2 + [2] * 4, "x": range(7)})
    size = lambda r: float(len(r))  # noqa: E731
    est, lo, hi, n = bootstrap_runs(runs, size, unit="train.seed")
    assert (est, n) == (7.0, 3) and 3.0 <= lo <= 7.0 <= hi <= 12.0
    # seeded, with the documented defaults (a continuous statistic tells seeds apart)
    runs = pd.DataFrame({"u": range(8), "x": [0.3, 1.9, -0.7, 2.2, 0.1, 1.4, -1.1, 0.8]})
    mean_x = lambda r: float(r["x"].mean())  # noqa: E731
    a = bootstrap_runs(runs, mean_x, unit="u")
    assert a == bootstrap_runs(runs, mean_x, unit="u")
    assert a == bootstrap_runs(runs, mean_x, unit="u", n_boot=500, level=0.9, seed=0)
    assert a != bootstrap_runs(runs, mean_x, unit="u", seed=1)
    assert a != bootstrap_runs(runs, mean_x, unit="u", n_boot=501)


def test_bootstrap_runs_quantiles_index_zero_and_finite_rule():
    import pandas as pd

    from proxylab.analysis.verdict import bootstrap_runs

    # stat = the unit of the first run of the draw: uniform over 0..20, so the 50% interval
    # is its 25% and 75% quantiles, 5 and 15 (a divisor 3 in alpha would give about 2 and 18)
    runs = pd.DataFrame({"u": np.arange(21.0)})
    first = lambda r: float(r["u"].iloc[0])  # noqa: E731
    est, lo, hi, n = bootstrap_runs(runs, first, unit="u", n_boot=1000, level=0.5)
    assert (est, n) == (0.0, 21)
    assert lo == pytest.approx(5, abs=1) and hi == pytest.approx(15, abs=1)
    # unit 0 must be drawable: with units {0: x=10, 1: x=0} the draws' mean reaches 10
    two = pd.DataFrame({"u": [0, 1], "x": [10.0, 0.0]})
    assert bootstrap_runs(two, lambda r: float(r["x"].mean()), unit="u") == (5.0, 0.0, 10.0, 2)
    # at least half of the draws must be finite (exactly half is enough)
    for finite, period, ok in ((1, 2, True), (2, 5, False)):
        flaky = Flaky(finite, period)
        _, lo, hi, _ = bootstrap_runs(runs.iloc[:5], lambda r: flaky(r["u"].to_numpy()),
                                      unit="u", n_boot=100)
        assert math.isfinite(lo) == ok and math.isfinite(hi) == ok


def test_half_finite_interval_and_combined_claim_text():
    v = decide(GREATER, 0.1, math.nan, 0.2, n=3)
    assert v["status"] == "inconclusive" and v["reason"].endswith("no finite bootstrap interval")
    a = decide(GREATER, 0.1, 0.05, 0.2, n=3)
    assert combine("both parts (Paper, 2024)", {"a": a})["claim"] == "both parts (Paper, 2024)"
