"""Analysis functions against hand-computed numbers on small synthetic frames."""

import math

import numpy as np
import pandas as pd
import pytest

from proxylab.analysis import (capped_loss, final_metrics, lr_curves, lr_sensitivity,
                               metric_vs_lr, optimal_lr, varied_axes)
from proxylab.config import ConfigError


def make_runs(points):
    """points: list of (run_id, status, lr, width, seed, [val losses at steps 0, 50, 100])."""
    runs = pd.DataFrame([{"run_id": r, "sweep": "s", "status": st, "optim.lr": lr,
                          "model.width": w, "train.seed": sd, "train.steps": 100,
                          "optim.extra": {"k": 1}, "final_loss": 0.0}
                         for r, st, lr, w, sd, _ in points])
    rows = []
    for r, _, _, _, _, vals in points:
        for step, v in zip((0, 50, 100), vals):
            rows += [(r, step, "val/loss", v), (r, step, "train/loss", v + 0.1)]
    return runs, pd.DataFrame(rows, columns=["run_id", "step", "key", "value"])


NAN = math.nan
# ℓ0 = 5 everywhere; width 64 is the worked example, width 128 diverges at every LR
POINTS = [
    ("a", "done", 1e-3, 64, 0, [5.0, 4.0, 3.0]),
    ("b", "done", 1e-3, 64, 1, [5.0, 4.0, 3.2]),
    ("c", "done", 1e-2, 64, 0, [5.0, 3.0, 2.0]),
    ("d", "done", 1e-2, 64, 1, [5.0, 3.0, 2.2]),
    ("e", "diverged", 1e-1, 64, 0, [5.0, 9.0, NAN]),
    ("f", "done", 1e-1, 64, 1, [5.0, 3.0, 2.8]),
    ("g", "diverged", 1e-3, 128, 0, [5.0, 20.0, NAN]),
    ("h", "diverged", 1e-2, 128, 0, [5.0, 20.0, 30.0]),
    ("i", "pending", 1e-1, 128, 0, []),
]


@pytest.fixture
def final():
    return final_metrics(*make_runs(POINTS))


def test_varied_axes_skips_seed_constants_and_summaries():
    runs, _ = make_runs(POINTS)
    assert varied_axes(runs) == ["optim.lr", "model.width"]
    runs["optim.extra"] = [{"k": i % 2} for i in range(len(runs))]  # dicts compare by value
    assert varied_axes(runs) == ["optim.lr", "model.width", "optim.extra"]


def test_final_metrics_per_run(final):
    assert list(final["run_id"]) == list("abcdefghi")
    assert {"optim.lr", "model.width", "train.seed"} <= set(final.columns)
    a = final.set_index("run_id").loc["a"]
    assert (a.final_val_loss, a.best_val_loss, a.init_loss) == (3.0, 3.0, 5.0)
    assert a.final_train_loss == pytest.approx(3.1)
    assert a.steps_done == 100 and not a.diverged
    e = final.set_index("run_id").loc["e"]
    assert math.isnan(e.final_val_loss) and e.best_val_loss == 5.0 and e.diverged
    i = final.set_index("run_id").loc["i"]  # pending: nothing yet, not diverged
    assert math.isnan(i.final_val_loss) and i.steps_done == 0 and not i.diverged


def test_final_metrics_throughput_attn_and_nan_flag():
    runs, metrics = make_runs(POINTS[:2])
    extra = [("a", 100, "tokens", 6400.0), ("a", 100, "wall_s", 3.2),
             ("a", 0, "attn_logit_max_l0", 2.0), ("a", 50, "attn_logit_max_l0", 7.5),
             ("a", 100, "attn_logit_max_l0", NAN), ("b", 100, "val/loss", NAN)]
    metrics = pd.concat([metrics[~((metrics.run_id == "b") & (metrics.step == 100)
                                   & (metrics.key == "val/loss"))],
                         pd.DataFrame(extra, columns=metrics.columns)])
    runs["tokens_per_s"] = [NAN, 1234.0]  # a summary column wins where present
    f = final_metrics(runs, metrics).set_index("run_id")
    assert f.loc["a", "tokens_per_s"] == pytest.approx(2000.0)
    assert f.loc["b", "tokens_per_s"] == 1234.0
    assert f.loc["a", "max_attn_logit"] == 7.5 and math.isnan(f.loc["b", "max_attn_logit"])
    assert f.loc["b", "diverged"]  # status "done" but a NaN loss
    assert not f.loc["a", "diverged"]


def test_capped_loss():
    df = pd.DataFrame({"final_val_loss": [3.0, 6.0, NAN, 2.0, 2.0],
                       "init_loss": [5.0, 5.0, 5.0, 5.0, NAN],
                       "diverged": [False, False, False, True, False]})
    np.testing.assert_array_equal(capped_loss(df), [3.0, 5.0, 5.0, 5.0, 2.0])


def test_lr_curves_seed_mean_std_and_capping(final):
    c = lr_curves(final)
    assert list(c.columns[:2]) == ["model.width", "optim.lr"]
    w64 = c[c["model.width"] == 64].set_index("optim.lr")
    assert w64.loc[1e-3, "loss_mean"] == pytest.approx(3.1)
    assert w64.loc[1e-3, "loss_std"] == pytest.approx(math.sqrt(0.02))  # ddof 1
    assert w64.loc[1e-2, "loss_mean"] == pytest.approx(2.1)
    # seed 0 diverged -> counted at ℓ0 = 5; seed 1 = 2.8
    assert w64.loc[1e-1, "loss_mean"] == pytest.approx(3.9)
    assert w64.loc[1e-1, "loss_std"] == pytest.approx(np.std([5.0, 2.8], ddof=1))
    assert (w64.loc[1e-1, "n"], w64.loc[1e-1, "n_diverged"]) == (2, 1)
    w128 = c[c["model.width"] == 128].set_index("optim.lr")
    assert list(w128.index) == [1e-3, 1e-2]  # the pending run is not on the curve
    assert (w128["loss_mean"] == 5.0).all() and (w128["n_diverged"] == 1).all()
    assert w128["loss_std"].isna().all()  # one seed: no spread


def test_lr_curves_caps_finite_loss_above_init_and_fills_missing_init():
    final = pd.DataFrame({"run_id": list("xyz"), "status": ["done"] * 3,
                          "optim.lr": [1e-2, 1e-2, 1e-1], "train.seed": [0, 1, 0],
                          "final_val_loss": [2.0, 4.0, 7.0], "init_loss": [3.0, NAN, 5.0],
                          "diverged": [False] * 3})
    c = lr_curves(final).set_index("optim.lr")
    # y has no ℓ0 of its own: it borrows the group mean (3+5)/2 = 4, so 4.0 stays 4.0
    assert c.loc[1e-2, "loss_mean"] == pytest.approx(3.0)
    assert c.loc[1e-1, "loss_mean"] == 5.0
    assert (c.loc[1e-1, "n_capped"], c.loc[1e-1, "n_diverged"]) == (1, 0)


def test_lr_curves_unknown_lr_key(final):
    with pytest.raises(ConfigError, match="optim.nope"):
        lr_curves(final, lr_key="optim.nope")


def curve(losses, n_capped=0):
    lrs = [1e-3, 1e-2, 1e-1, 1.0][:len(losses)]
    return pd.DataFrame({"optim.lr": lrs, "loss_mean": losses, "loss_std": NAN, "n": 1,
                         "n_diverged": 0, "n_capped": n_capped, "init_loss": 10.0})


def test_optimal_lr_parabola_in_log_lr():
    o = optimal_lr(curve([3.1, 2.1, 3.9])).iloc[0]
    # x = log10 lr = -3, -2, -1; y = 3.1, 2.1, 3.9 -> a = 1.4, b = 0.4 (centred at -2)
    # vertex at -2 - 0.4 / 2.8 = -2 - 1/7; value 2.1 - 0.4**2 / (4 * 1.4)
    assert o["lr_argmin"] == 1e-2 and o["method"] == "parabola"
    assert o["lr_opt"] == pytest.approx(10 ** (-2 - 1 / 7))
    assert o["loss_opt"] == pytest.approx(2.1 - 0.16 / 5.6)
    assert not o["at_edge"] and o["n_lr"] == 3


def test_optimal_lr_does_not_fit_through_capped_points(final):
    # width 64: the same losses, but the 1e-1 point holds a diverged seed counted at ℓ0
    o = optimal_lr(lr_curves(final)).set_index("model.width")
    assert o.loc[64, "method"] == "argmin" and o.loc[64, "lr_opt"] == 1e-2
    assert o.loc[64, "loss_opt"] == pytest.approx(2.1)
    assert o.loc[128, "method"] == "argmin" and o.loc[128, "n_lr"] == 2


def test_optimal_lr_edges_and_concave():
    # convex with the vertex left of the grid -> clamped to the smallest LR
    o = optimal_lr(curve([1.0, 3.0, 6.0, 9.0])).iloc[0]
    assert o["at_edge"] and o["method"] == "parabola" and o["lr_opt"] == pytest.approx(1e-3)
    # y = 1, 2, 2.5 over the lowest three points is concave -> plain argmin
    o = optimal_lr(curve([1.0, 2.0, 2.5])).iloc[0]
    assert o["method"] == "argmin" and o["lr_opt"] == 1e-3


def test_lr_sensitivity_wortsman_mean_over_n(final):
    s = lr_sensitivity(lr_curves(final)).set_index("model.width")
    # ℓ* = 2.1; E = ((3.1 - 2.1) + 0 + (3.9 - 2.1)) / 3
    assert s.loc[64, "lr_sensitivity"] == pytest.approx(2.8 / 3)
    assert (s.loc[64, "best_loss"], s.loc[64, "lr_best"]) == (pytest.approx(2.1), 1e-2)
    assert s.loc[64, "init_loss"] == 5.0 and s.loc[64, "n_lr"] == 3
    assert s.loc[64, "denominator"] == "n" and not s.loc[64, "all_diverged"]
    # every LR diverged: the metric's blind spot is 0 and is flagged
    assert s.loc[128, "lr_sensitivity"] == 0.0 and s.loc[128, "all_diverged"]
    assert s.loc[128, "n_lr_diverged"] == 2


def test_lr_sensitivity_conventions_and_range(final):
    c = lr_curves(final)
    s = lr_sensitivity(c, denominator="n-1").set_index("model.width")
    assert s.loc[64, "lr_sensitivity"] == pytest.approx(2.8 / 2)
    s = lr_sensitivity(c, lr_range=(1e-3, 1e-2)).set_index("model.width")
    assert s.loc[64, "lr_sensitivity"] == pytest.approx(1.0 / 2)
    with pytest.raises(ConfigError, match="denominator"):
        lr_sensitivity(c, denominator="n+1")


def test_lr_sensitivity_range_excluding_the_grid_optimum_takes_best_within_range():
    # grid optimum 2.1 at 1e-2 lies outside [1e-1, 1]: ℓ* = 3.9 (the best inside the range),
    # E = ((3.9 - 3.9) + (5.0 - 3.9)) / 2 = 0.55; with ℓ* over the grid it would be 2.35
    s = lr_sensitivity(curve([3.1, 2.1, 3.9, 5.0]), lr_range=(1e-1, 1.0)).iloc[0]
    assert s["lr_sensitivity"] == pytest.approx(0.55)
    assert (s["best_loss"], s["lr_best"], s["n_lr"]) == (3.9, 1e-1, 2)
    assert (s["lr_min"], s["lr_max"]) == (1e-1, 1.0)
    # the bounds are inclusive (to 1e-9 relative: 1e-1 given as 0.1 * (1 + 1e-12) still counts)
    s = lr_sensitivity(curve([3.1, 2.1, 3.9, 5.0]), lr_range=(0.1 * (1 + 1e-12), 0.99)).iloc[0]
    assert (s["n_lr"], s["lr_sensitivity"]) == (1, 0.0)
    # a range holding no grid point: nothing to average
    s = lr_sensitivity(curve([3.1, 2.1, 3.9, 5.0]), lr_range=(2e-3, 5e-3)).iloc[0]
    assert s["n_lr"] == 0 and math.isnan(s["lr_sensitivity"])


def test_no_group_axes_gives_one_group():
    final = pd.DataFrame({"run_id": list("pq"), "status": ["done", "done"],
                          "optim.lr": [1e-3, 1e-2], "final_val_loss": [3.0, 2.0],
                          "init_loss": [4.0, 4.0], "diverged": [False, False]})
    s = lr_sensitivity(lr_curves(final))
    assert len(s) == 1 and s["lr_sensitivity"].iloc[0] == pytest.approx(0.5)


def test_metric_vs_lr_averages_seeds_without_capping():
    final = pd.DataFrame({"run_id": list("pqrs"), "status": ["done", "diverged", "done", "pending"],
                          "optim.lr": [1e-2, 1e-2, 1e-1, 1e-1], "train.seed": [0, 1, 0, 1],
                          "max_attn_logit": [10.0, 1000.0, NAN, 5.0]})
    m = metric_vs_lr(final, "max_attn_logit").set_index("optim.lr")
    assert m.loc[1e-2, "mean"] == 505.0 and m.loc[1e-2, "std"] == pytest.approx(np.std([10, 1000], ddof=1))
    assert (m.loc[1e-1, "n"], m.loc[1e-1, "n_runs"]) == (0, 1) and math.isnan(m.loc[1e-1, "mean"])


def test_lr_edges_found_by_mutants():
    """Edges reached by no test above, each found by a surviving mutant (docs/testing.md)."""
    # a loss above ℓ0 borrowed from the group is capped at it: (2.0 + min(4.5, 4.0)) / 2
    final = pd.DataFrame({"run_id": list("xyz"), "status": ["done"] * 3,
                          "optim.lr": [1e-2, 1e-2, 1e-1], "train.seed": [0, 1, 0],
                          "final_val_loss": [2.0, 4.5, 7.0], "init_loss": [3.0, NAN, 5.0],
                          "diverged": [False] * 3})
    c = lr_curves(final).set_index("optim.lr")
    assert c.loc[1e-2, "loss_mean"] == pytest.approx(3.0) and c.loc[1e-2, "n_capped"] == 1
    assert c.loc[1e-2, "init_loss"] == pytest.approx(3.5)  # mean of 3 and the borrowed 4
    # right edge: convex, vertex right of the grid -> clamped to the largest LR
    o = optimal_lr(curve([9.0, 6.0, 3.5, 2.0])).iloc[0]
    assert o["at_edge"] and o["method"] == "parabola" and o["lr_opt"] == pytest.approx(1.0)
    # one LR: the argmin, not an edge; no finite loss: a fully specified empty row
    o = optimal_lr(curve([2.5])).iloc[0]
    assert (o["method"], bool(o["at_edge"]), o["n_lr"]) == ("argmin", False, 1)
    o = optimal_lr(curve([NAN, NAN])).iloc[0]
    assert (o["method"], o["at_edge"], o["n_lr"]) == ("none", False, 0)
    assert math.isnan(o["lr_opt"]) and math.isnan(o["loss_opt"])
    assert list(optimal_lr(curve([1.0]).iloc[:0]).columns) == [
        "lr_argmin", "loss_min", "lr_opt", "loss_opt", "method", "at_edge", "n_lr"]
    # no ℓ0 anywhere: the losses are used uncapped
    nol0 = curve([3.1, 2.1, 3.9]).assign(init_loss=NAN)
    assert lr_sensitivity(nol0).iloc[0]["lr_sensitivity"] == pytest.approx(2.8 / 3)
    # one point and the n - 1 convention: nothing to average, no best either
    s = lr_sensitivity(curve([2.0]), denominator="n-1").iloc[0]
    assert math.isnan(s["lr_sensitivity"]) and math.isnan(s["best_loss"]) and s["n_lr"] == 1
    with pytest.raises(ConfigError, match=r"^optim.nope: not a column of the LR curves; columns: "):
        optimal_lr(curve([1.0]), lr_key="optim.nope")
    with pytest.raises(ConfigError, match=r"^optim.nope: no such config column in the runs; "
                                          r"config columns: \['optim.lr'"):
        metric_vs_lr(curve([1.0]).assign(**{"optim.x": 1}), "loss_mean", lr_key="optim.nope")


def test_capped_loss_keeps_the_index_and_nan_group_keys_stay():
    df = pd.DataFrame({"final_val_loss": [3.0, 9.0], "init_loss": [5.0, 5.0],
                       "diverged": [False, False]}, index=[10, 11])
    pd.testing.assert_series_equal(capped_loss(df), pd.Series([3.0, 5.0], index=[10, 11]))
    # a run whose group key is missing (NaN) is its own group, not dropped
    final = pd.DataFrame({"run_id": list("pqr"), "status": ["done"] * 3,
                          "optim.lr": [1e-2, 1e-2, 1e-2], "model.width": [64, NAN, 32],
                          "final_val_loss": [2.0, 3.0, 4.0], "init_loss": [5.0] * 3,
                          "diverged": [False] * 3})
    c = lr_curves(final)
    assert len(c) == 3 and sorted(c["loss_mean"]) == [2.0, 3.0, 4.0]


def test_final_metrics_edges_found_by_mutants():
    runs = pd.DataFrame({"run_id": ["a", "b"], "status": ["done", "pending"],
                         "optim.lr": [1e-2, 1e-2], "model.width": [64, NAN]})
    metrics = pd.DataFrame([("a", 0, "train/loss", 6.0), ("a", 10, "val/loss", 3.0),
                            ("a", 10, "val/acc", 0.25), ("a", 0, "val/acc", 0.0),
                            ("a", 10, "tokens", 100.0), ("a", 10, "wall_s", 0.0)],
                           columns=["run_id", "step", "key", "value"])
    f = final_metrics(runs, metrics).set_index("run_id")
    assert list(f.columns[:2]) == ["status", "model.width"]  # a width vs NaN still varies
    a = f.loc["a"]
    assert a["init_loss"] == 6.0          # no val/loss at step 0: train/loss at step 0
    assert a["final_val_acc"] == 0.25 and a["steps_done"] == 10
    assert math.isnan(a["tokens_per_s"])  # wall time 0: no rate, not inf
    assert f["diverged"].dtype == bool and f["steps_done"].dtype.kind == "i"
    assert list(f.reset_index().columns) == [
        "run_id", "status", "model.width", "optim.lr", "final_val_loss", "best_val_loss",
        "init_loss", "final_train_loss", "final_val_acc", "steps_done", "tokens_per_s",
        "max_attn_logit", "diverged"]
    # a metrics frame without columns (nothing logged anywhere) still gives one row per run
    g = final_metrics(runs, pd.DataFrame())
    assert list(g["run_id"]) == ["a", "b"] and g["final_val_loss"].isna().all()
    assert (g["steps_done"] == 0).all() and not g["diverged"].any()
