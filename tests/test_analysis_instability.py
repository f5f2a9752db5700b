"""Known-answer tests of the instability analyses on hand-built runs."""

import math

import numpy as np
import pandas as pd
import pytest

from proxylab.analysis.instability import (add_run_stats, balanced_accuracy, best_threshold,
                                           bigram_counts, bigram_loss, coord_check,
                                           early_warning, log_ratio, loglog_slope, norm_share,
                                           precision_recall, run_stat, sensitivity,
                                           sensitivity_gap, unstable_runs)


def long(rows):
    return pd.DataFrame(rows, columns=["run_id", "step", "key", "value"])


METRICS = long([("a", 10, "x", 1.0), ("a", 20, "x", 5.0), ("a", 30, "x", 3.0),
                ("a", 40, "x", 7.0), ("a", 50, "x", 9.0), ("a", 30, "y", 2.0),
                ("b", 10, "x", float("nan")), ("b", 20, "x", 4.0)])


@pytest.mark.parametrize("how,kw,a,b", [
    ("max", {}, 9.0, 4.0), ("first", {}, 1.0, 4.0), ("last", {}, 9.0, 4.0),
    # tail 0.2 of a run logged to step 50: steps >= 40 -> mean(7, 9)
    ("tail_mean", {"tail": 0.2}, 8.0, 4.0),
    ("at", {"step": 25}, 3.0, None),
])
def test_run_stat(how, kw, a, b):
    s = run_stat(METRICS, "x", how, **kw)
    assert s["a"] == a
    assert (s.get("b") if b is None else s["b"]) == b


def test_add_run_stats_maps_by_run_id():
    df = pd.DataFrame({"run_id": ["b", "a", "c"]})
    out = add_run_stats(df, METRICS, {"peak": ("x", "max"), "y": ("y", "last")})
    assert out["peak"].tolist()[:2] == [4.0, 9.0] and math.isnan(out["peak"].iloc[2])
    assert out["y"].iloc[1] == 2.0


def curve(arm, losses, lrs=(1e-3, 1e-2, 1e-1), seed=0, l0=6.0, **extra):
    return [{"arm": arm, "optim.lr": lr, "train.seed": seed, "final_val_loss": loss,
             "init_loss": l0, "diverged": loss is None or not math.isfinite(loss),
             "status": "done", **extra} for lr, loss in zip(lrs, losses)]


def test_sensitivity_and_gap_match_hand_computation():
    # arm a: losses 3, 2, 7 (capped at l0 = 6) -> best 2, mean excess (1 + 0 + 4) / 3
    # arm b: 2.5, 2, 2.5 -> 1/3
    df = pd.DataFrame(curve("a", [3.0, 2.0, 7.0]) + curve("b", [2.5, 2.0, 2.5]))
    assert sensitivity(df[df.arm == "a"]) == pytest.approx(5 / 3)
    assert sensitivity_gap(df, "arm", "a", "b") == pytest.approx(5 / 3 - 1 / 3)


def test_fast_sensitivity_equals_the_lr_module():
    from proxylab.analysis.lr import lr_curves, lr_sensitivity
    rng = np.random.default_rng(3)
    rows = []
    for seed in range(3):
        losses = list(2 + rng.random(5))
        losses[4] = float("nan") if seed == 0 else 9.0          # diverged / above l0
        rows += curve("a", losses, lrs=(1e-4, 1e-3, 1e-2, 1e-1, 1.0), seed=seed,
                      l0=6.0 + 0.1 * seed)
    df = pd.DataFrame(rows)
    df.loc[3, "init_loss"] = float("nan")                     # a run without its own l0
    df.loc[7, "status"] = "failed"                            # not a finished run
    ref = lr_sensitivity(lr_curves(df, group_keys=[]))["lr_sensitivity"].iloc[0]
    assert sensitivity(df) == pytest.approx(ref, rel=1e-12)


def test_loglog_slope_is_exact_for_a_power_law():
    x = np.array([1e-3, 1e-2, 1e-1])
    assert loglog_slope(x, 7 * x ** 1.5) == pytest.approx(1.5)
    assert math.isnan(loglog_slope([1.0], [2.0]))
    assert loglog_slope([1, 10, 100, 1000], [1, 10, np.nan, 0]) == pytest.approx(1.0)


def test_log_ratio_averages_over_lrs_after_seed_means():
    rows = []
    for seed, k in ((0, 1.0), (1, 3.0)):     # seed means: arm a = 2 * 100 (LR1), 2 * 10 (LR2)
        rows += [{"arm": "a", "optim.lr": 1, "train.seed": seed, "v": 100 * k},
                 {"arm": "a", "optim.lr": 2, "train.seed": seed, "v": 10 * k},
                 {"arm": "b", "optim.lr": 1, "train.seed": seed, "v": 2.0},
                 {"arm": "b", "optim.lr": 2, "train.seed": seed, "v": 2.0}]
    df = pd.DataFrame(rows)
    assert log_ratio(df, "v", "arm", "a", "b") == pytest.approx(1.5)   # mean(log10 100, log10 10)
    assert log_ratio(df, "v", "arm", "a", "b", where=df["optim.lr"] == 2) == pytest.approx(1.0)


def test_norm_share():
    # the logit grows 1000x; the norm product 100x: two thirds of the growth (in decades)
    df = pd.DataFrame({"optim.lr": [1e-3, 1e-2, 1e-1], "logit": [1.0, 30.0, 1000.0],
                       "qk_norm": [2.0, 20.0, 200.0]})
    assert norm_share(df) == pytest.approx(2 / 3)


def test_coord_check_slopes():
    rows = []
    for w in (32, 64, 128):
        rows.append({"model.param": "sp", "model.width": w, "l0": w ** 0.5, "l1": 1.0})
        rows.append({"model.param": "mup", "model.width": w, "l0": 2.0, "l1": 3.0})
    cc = coord_check(pd.DataFrame(rows), layer_cols=["l0", "l1"]).set_index(["model.param", "layer"])
    assert cc.loc[("sp", "l0"), "slope"] == pytest.approx(0.5)
    assert cc.loc[("mup", "l0"), "slope"] == pytest.approx(0.0)
    assert cc.loc[("sp", "l0"), "widths"] == [32, 64, 128]


def test_unstable_runs_only_above_the_optimum():
    # size 1: optimum at LR 1e-2 (loss 2); LR 1e-3 is 1 nat worse (under-trained, stable),
    # LR 1e-1 is 0.5 worse (unstable at delta 0.2); a diverged run is always unstable
    rows = (curve("x", [3.0, 2.0, 2.5], **{"model.width": 32})
            + curve("x", [2.8, 1.9, float("nan")], **{"model.width": 64}))
    df = pd.DataFrame(rows)
    flags = unstable_runs(df, size_key="model.width", delta=0.2).tolist()
    assert flags == [False, False, True, False, False, True]


def test_best_threshold_and_scores():
    score = np.array([1.0, 2.0, 3.0, 10.0, 20.0])
    label = np.array([False, False, False, True, True])
    thr, ba = best_threshold(score, label)
    assert thr == pytest.approx(6.5) and ba == 1.0
    assert balanced_accuracy([True, False, False, True], [True, True, False, False]) == 0.5
    assert precision_recall([True, True, False], [True, False, True]) == (0.5, 0.5)
    p, r = precision_recall([False, False], [True, False])
    assert math.isnan(p) and r == 0.0


def test_early_warning_extrapolates_a_quadratic_law():
    # log10 early logit = 0.5 * log10(N)^2 - 3 * log10(N) + log10(LR) + 8: exact for a
    # quadratic in log N; a run is unstable when its log10 logit exceeds 2
    rows = []
    for n in (1e4, 3e4, 1e5, 3e5):
        for lr in (1e-3, 1e-2, 1e-1, 1.0):
            ln = math.log10(n)
            log_logit = 0.5 * ln ** 2 - 3 * ln + math.log10(lr) + 8
            rows.append({"n_params": n, "optim.lr": lr, "early_logit": 10 ** log_logit,
                         "unstable": log_logit > 2})
    ew = early_warning(pd.DataFrame(rows))
    t = ew["table"]
    assert np.allclose(t["predicted_log_score"], t["observed_log_score"])
    assert (t["predicted_unstable"] == t["observed_unstable"]).all()
    assert ew["precision"] == 1.0 and ew["recall"] == 1.0 and ew["balanced_accuracy"] == 1.0
    assert ew["degree"] == 2 and ew["fit_balanced_accuracy"] == 1.0


def test_bigram_loss_known_answer():
    # tokens alternate 0 1 0 1 ...: after 0 always 1, after 1 always 0 -> with no smoothing
    # the loss is 0; with alpha, exactly -log((n + a) / (n + 2a)) per token
    x = np.array([[0, 1, 0, 1]])
    y = np.array([[1, 0, 1, 0]])
    counts = bigram_counts([(x, y)], vocab=2)
    assert counts.tolist() == [[0, 2], [2, 0]]
    a = 0.5
    assert bigram_loss(counts, [(x, y)], alpha=a) == pytest.approx(-math.log(2.5 / 3))
    # ignored targets do not count
    y2 = np.array([[1, -100, 1, -100]])
    assert bigram_counts([(x, y2)], vocab=2).tolist() == [[0, 2], [0, 0]]
