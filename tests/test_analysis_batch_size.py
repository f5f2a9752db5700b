"""Known answers for the critical-batch-size analyses (analysis/batch_size.py)."""

import math

import numpy as np
import pandas as pd
import pytest

from proxylab.analysis.batch_size import (b_simple_at_loss, b_star_from_law, best_curve, best_over_lr,
                                          critical_batch_20pct, fit_steps_law, log_ratio,
                                          lr_trend, parabola_argmin, run_targets, steps_law,
                                          steps_to_target, targets_at_budgets, tradeoff_curve,
                                          value_at)


def test_steps_to_target_interpolates_and_never_extrapolates():
    steps, loss = [0, 10, 20, 30], [4.0, 3.0, 2.0, 1.5]
    assert steps_to_target(steps, loss, 2.5) == pytest.approx(15.0)
    assert steps_to_target(steps, loss, 2.0) == pytest.approx(20.0)      # exactly on a point
    assert steps_to_target(steps, loss, 1.75) == pytest.approx(25.0)
    assert math.isnan(steps_to_target(steps, loss, 1.0))                  # a miss
    assert steps_to_target(steps, loss, 5.0) == 0.0                       # reached at the start
    # the FIRST crossing counts, even if the curve goes back up afterwards
    assert steps_to_target([0, 10, 20, 30], [4.0, 2.0, 3.0, 1.0], 2.5) == pytest.approx(7.5)
    # unsorted input and NaN points (a diverged tail)
    assert steps_to_target([20, 0, 10], [2.0, 4.0, 3.0], 3.5) == pytest.approx(5.0)
    assert math.isnan(steps_to_target([0, 10], [4.0, math.nan], 1.0))


def test_value_at():
    assert value_at([0, 10], [1.0, 3.0], 2.5) == pytest.approx(1.5)
    assert math.isnan(value_at([0, 10], [1.0, 3.0], 11))
    assert math.isnan(value_at([0, 10], [1.0, 3.0], math.nan))


def test_run_targets_counts_steps_examples_tokens_and_misses():
    runs = pd.DataFrame({"run_id": ["a", "b"], "train.batch_size": [4, 16], "optim.lr": [1e-3, 1e-3]})
    metrics = pd.DataFrame({"run_id": ["a"] * 3 + ["b"] * 3, "step": [0, 10, 20] * 2,
                            "key": ["val_ema/loss"] * 6, "value": [4, 3, 2, 4, 3.5, 3.2]})
    t = run_targets(runs, metrics, {"hi": 3.0, "lo": 2.5}, tokens_per_example=32)
    a = t[(t.run_id == "a")].set_index("target")
    assert a.loc["hi", "steps"] == 10 and a.loc["lo", "steps"] == 15
    assert a.loc["lo", "examples"] == 60 and a.loc["lo", "tokens"] == 60 * 32
    b = t[(t.run_id == "b")].set_index("target")
    assert not b.loc["hi", "reached"] and math.isnan(b.loc["hi", "examples"])
    assert b.loc["hi", "last_step"] == 20 and a.loc["lo", "target_loss"] == 2.5


def test_parabola_argmin():
    f = lambda x: 3 * (x - 0.7) ** 2 + 1  # noqa: E731
    assert parabola_argmin([0, 1, 2], [f(0), f(1), f(2)]) == pytest.approx(0.7)
    assert parabola_argmin([0, 1, 2], [1, 1, 1]) == 1          # flat: the middle point
    assert parabola_argmin([0, 1, 2], [0, 1, 0]) == 1          # opens downward


def test_best_over_lr_averages_seeds_then_takes_the_minimum():
    # log10 steps = 2 + (log10 lr + 2.3)^2 at B = 8: the optimum is lr = 10^-2.3; the two
    # seeds are 10% below and above, so their mean is the curve itself
    lrs = [1e-3, 1e-2, 1e-1]
    rows = [{"B": 8, "optim.lr": lr, "seed": s, "steps": 10 ** (2 + (math.log10(lr) + 2.3) ** 2) * f}
            for lr in lrs for s, f in ((0, 0.9), (1, 1.1))]
    # at B = 64 the best grid point is the largest LR (an edge); one seed of lr 1e-2 missed
    rows += [{"B": 64, "optim.lr": lr, "seed": s, "steps": v}
             for lr, v0 in zip(lrs, [90.0, 50.0, 40.0]) for s, v in ((0, v0), (1, v0))]
    df = pd.DataFrame(rows)
    df.loc[(df.B == 64) & (df["optim.lr"] == 1e-2) & (df.seed == 1), "steps"] = math.nan
    out = best_over_lr(df, ["B"]).set_index("B")
    assert out.loc[8, "lr_best"] == 1e-2 and out.loc[8, "steps"] == pytest.approx(10 ** 2.09)
    assert out.loc[8, "lr_opt"] == pytest.approx(10 ** -2.3, rel=1e-9)
    assert not out.loc[8, "at_edge"] and out.loc[8, "n_lrs"] == 3
    assert out.loc[64, "lr_best"] == 1e-1 and out.loc[64, "at_edge"] and out.loc[64, "steps"] == 40
    # all missed: NaN, not an error
    allmiss = best_over_lr(df.assign(steps=math.nan), ["B"])
    assert allmiss["steps"].isna().all()


def test_fit_recovers_the_law_exactly_and_reports_r2():
    b = np.array([4, 8, 16, 32, 64, 128, 256.0])
    fit = fit_steps_law(b, steps_law(b, 120.0, 40.0))
    assert fit["s_min"] == pytest.approx(120.0, rel=1e-6) and fit["b_crit"] == pytest.approx(40.0, rel=1e-6)
    assert fit["r2"] == pytest.approx(1.0) and fit["n"] == 7
    lo, hi = fit["b_crit_interval"]
    assert lo <= 40.0 <= hi and hi / lo < 1.001        # no noise: a (near) zero-width interval


def test_fit_interval_covers_the_truth_under_noise():
    """With 5% multiplicative noise the 90% covariance interval covers B_crit in roughly
    90% of repeats (checked loosely: at least 75 of 100)."""
    rng = np.random.default_rng(0)
    b = np.array([4, 8, 16, 32, 64, 128, 256, 512.0])
    cover, r2s, widths = 0, [], []
    for _ in range(100):
        s = steps_law(b, 100.0, 50.0) * np.exp(rng.normal(0, 0.05, b.size))
        fit = fit_steps_law(b, s)
        lo, hi = fit["b_crit_interval"]
        cover += lo <= 50.0 <= hi
        r2s.append(fit["r2"])
        widths.append(hi / lo)
    assert 75 <= cover <= 100 and np.median(r2s) > 0.98
    assert np.median(widths) < 1.6                      # and the interval is not vacuous


def test_fit_needs_three_points():
    fit = fit_steps_law([4, 8, math.nan], [10, 5, 3])
    assert fit["n"] == 2 and math.isnan(fit["b_crit"])


def test_twenty_percent_batch_matches_the_law():
    b = np.arange(1, 401, dtype=float) * 4          # fine grid; r(B) is linear in B
    s = steps_law(b, 50.0, 100.0)
    assert critical_batch_20pct(b, s) == pytest.approx(b_star_from_law(100.0, 4.0))
    assert b_star_from_law(100.0, 4.0) == pytest.approx(1.2 * 4 + 20)
    # coarse powers of two: the linear interpolation is still exact under the law
    b2 = 2.0 ** np.arange(2, 10)
    assert critical_batch_20pct(b2, steps_law(b2, 50.0, 100.0)) == pytest.approx(24.8)
    # perfect scaling everywhere: never 20% over, NaN
    assert math.isnan(critical_batch_20pct(b2, 1000.0 / b2))


def test_tradeoff_product_is_one_under_the_law():
    b = np.array([2, 8, 32, 128.0])
    t = tradeoff_curve(b, steps_law(b, 30.0, 16.0), 30.0, 16.0)
    assert np.allclose(t["product"], 1.0)
    assert np.allclose(t["E"], b * steps_law(b, 30.0, 16.0))
    assert np.allclose(t["S_over_smin"], 1 + 16.0 / b) and np.allclose(t["E_over_emin"], 1 + b / 16.0)


def test_lr_trend_shapes():
    b = [8, 16, 32, 64, 128]
    assert lr_trend(b, [1e-3, 2e-3, 4e-3, 2e-3, 1e-3])["shape"] == "rise-then-fall"
    t = lr_trend(b, [1e-3, 2e-3, 4e-3, 2e-3, 1e-3])
    assert t["peak_batch"] == 32 and t["rise"] == pytest.approx(math.log10(4))
    assert t["fall"] == pytest.approx(math.log10(4))
    assert lr_trend(b, [1e-3, 2e-3, 4e-3, 8e-3, 8e-3])["shape"] == "increasing"
    assert lr_trend(b, [8e-3, 4e-3, 2e-3, 1e-3, 1e-3])["shape"] == "decreasing"
    assert lr_trend(b, [1e-3, 1.1e-3, 1e-3, 1e-3, 1.05e-3])["shape"] == "flat"
    assert lr_trend([8], [1e-3])["shape"] == "unknown"


def test_b_simple_at_loss_and_log_ratio():
    # the loss reaches 2.5 at step 15; B_simple is 10 at step 10 and 30 at step 20 -> 20
    assert b_simple_at_loss([10, 20], [10.0, 30.0], [0, 10, 20], [4, 3, 2], 2.5) == pytest.approx(20.0)
    assert math.isnan(b_simple_at_loss([10, 20], [10.0, 30.0], [0, 10, 20], [4, 3, 2], 1.0))
    assert log_ratio(100, 10) == pytest.approx(1.0) and math.isnan(log_ratio(-1, 10))


def test_best_curve_is_the_pointwise_minimum():
    m = pd.DataFrame({"run_id": ["a"] * 4 + ["b"], "step": [0, 0, 10, 10, 0],
                      "key": ["val/loss", "val_ema/loss"] * 2 + ["val/loss"],
                      "value": [4.0, 4.0, 3.0, 2.5, 5.0]})
    out = best_curve(m).set_index(["run_id", "step"])["value"]
    assert out[("a", 0)] == 4.0 and out[("a", 10)] == 2.5 and out[("b", 0)] == 5.0
    assert set(best_curve(m)["key"]) == {"val_best/loss"}


def test_targets_at_budgets_use_the_smallest_batch_best_lr_seed_mean():
    runs = pd.DataFrame({"run_id": ["a0", "a1", "b0", "c0"], "train.batch_size": [4, 4, 4, 16],
                         "optim.lr": [1e-3, 1e-3, 1e-2, 1e-3]})
    rows = []
    # lr 1e-3, two seeds: loss 4 -> 2 and 4 -> 3 over 100 steps (400 examples); lr 1e-2 worse
    for rid, end in (("a0", 2.0), ("a1", 3.0), ("b0", 3.9), ("c0", 0.0)):
        rows += [(rid, 0, "val_best/loss", 4.0), (rid, 100, "val_best/loss", end)]
    m = pd.DataFrame(rows, columns=["run_id", "step", "key", "value"])
    t = targets_at_budgets(runs, m, {"D1": 200.0, "D2": 400.0, "beyond": 800.0})
    # at 200 examples (step 50): seeds at 3.0 and 3.5 -> 3.25; lr 1e-2 at 3.95
    assert t["D1"] == pytest.approx(3.25) and t["D2"] == pytest.approx(2.5)
    assert math.isnan(t["beyond"])                # never extrapolated; B = 16 is not the reference


def _surge_table(opt_lr_by_batch, lrs=(1e-3, 3e-3, 1e-2, 3e-2), seeds=(0, 1, 2)):
    """Steps to target D1 with log10 steps = 2 - log10(B)/2 + (log10 lr - log10 opt)^2."""
    rows = []
    for b, opt in opt_lr_by_batch.items():
        for lr in lrs:
            for s in seeds:
                steps = 10 ** (2 - math.log10(b) / 2 + (math.log10(lr) - math.log10(opt)) ** 2)
                rows.append({"train.batch_size": b, "optim.lr": lr, "train.seed": s, "target": "D1",
                             "steps": steps * (1 + 0.01 * s), "b_simple": math.nan})
    return pd.DataFrame(rows)


def test_surge_verdict_reads_a_rise_and_fall_and_refuses_a_censored_optimum():
    from proxylab.studies.batch_size import claim_surge

    rise_fall = _surge_table({4: 2e-3, 16: 8e-3, 64: 4e-3, 256: 2e-3})
    part = claim_surge({"t": {"table": rise_fall}})["evidence"]["parts"]["t"]
    assert part["status"] == "reproduced" and part["shape"] == "rise-then-fall"
    assert part["estimate"] == pytest.approx(math.log10(8e-3 / 2e-3), abs=1e-6)
    monotone = _surge_table({4: 2e-3, 16: 4e-3, 64: 8e-3, 256: 1.2e-2})
    part = claim_surge({"t": {"table": monotone}})["evidence"]["parts"]["t"]
    assert part["status"] == "not_reproduced" and part["shape"] == "increasing"
    # every batch from 16 up has its best LR at the top of the grid: not measured
    censored = _surge_table({4: 2e-3, 16: 0.1, 64: 0.2, 256: 0.1})
    part = claim_surge({"t": {"table": censored}})["evidence"]["parts"]["t"]
    assert part["status"] == "inconclusive" and part["n"] == 0
    assert "top of the grid" in claim_surge({"t": {"table": censored}})["reason"]
