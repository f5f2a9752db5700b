"""Known-answer tests of proxylab.analysis.optimizers (hand-computed numbers)."""

import math

import numpy as np
import pandas as pd
import pytest

from proxylab.analysis.optimizers import (aligned_curves, basin_width, basin_widths,
                                          best_per_group, first_crossing, model_flops,
                                          newton_schulz_flops, optimizer_flops_per_step,
                                          performance_profile, profile_score, shampoo_flops,
                                          soap_flops, strip)


def test_basin_width_interpolates_both_edges_on_log_lr():
    # best 2.0 at 1e-3, level 2.2: left crossing 20% of the way to 1e-4 (x = -3.2); right:
    # 2.1 is inside, then 20% of the way from 1e-2 to 1e-1 (x = -1.8) -> 1.4 decades
    b = basin_width([1e-4, 1e-3, 1e-2, 1e-1], [3.0, 2.0, 2.1, 2.6], margin=0.2)
    assert b["width"] == pytest.approx(1.4)
    assert b["lr_lo"] == pytest.approx(10 ** -3.2) and b["lr_hi"] == pytest.approx(10 ** -1.8)
    assert not b["open_lo"] and not b["open_hi"]
    assert b["best_loss"] == 2.0 and b["lr_best"] == pytest.approx(1e-3)


def test_basin_width_unsorted_input_open_edge_and_diverged_neighbour():
    b = basin_width([1e-2, 1e-1, 1e-3], [2.1, 3.0, 2.0], margin=0.2)   # order must not matter
    assert b["open_lo"] and not b["open_hi"]
    assert b["width"] == pytest.approx(1 + 0.1 / 0.9)
    # a diverged neighbour ends the basin at the last good point (no interpolation into NaN)
    b = basin_width([1e-3, 1e-2, 1e-1], [2.0, 2.05, float("nan")], margin=0.2)
    assert b["width"] == pytest.approx(1.0) and b["open_lo"] and not b["open_hi"]
    # a margin of 0 and a sharp minimum: zero width; all NaN: NaN
    assert basin_width([1e-3, 1e-2, 1e-1], [3.0, 2.0, 3.0], 0.0)["width"] == 0.0
    assert math.isnan(basin_width([1e-3, 1e-2], [math.nan, math.inf], 0.1)["width"])


def test_basin_widths_mean_curve_and_per_seed_spread():
    lrs = [1e-3, 1e-2, 1e-1]
    df = pd.DataFrame({"opt": ["a"] * 6, "optim.lr": lrs * 2, "train.seed": [0] * 3 + [1] * 3,
                       "loss": [3.0, 2.0, 3.0, 2.5, 2.0, 2.5]})
    out = basin_widths(df, ["opt"], margin=0.25).iloc[0]
    # seed 0: level 2.25, crossings at 0.25 decade each side -> 0.5; seed 1: 0.5 each -> 1.0
    assert out["width_seed_mean"] == pytest.approx(0.75)
    assert out["width_seed_std"] == pytest.approx(np.std([0.5, 1.0], ddof=1))
    # mean curve 2.75, 2.0, 2.75: crossings at 1/3 decade -> 2/3
    assert out["width"] == pytest.approx(2 / 3) and out["n_seeds"] == 2 and not out["open"]


def test_best_per_group_picks_lowest_seed_mean():
    df = pd.DataFrame({"opt": ["a"] * 4, "optim.lr": [1e-3, 1e-3, 1e-2, 1e-2],
                       "loss": [2.0, 2.4, 2.1, 2.1]})
    row = best_per_group(df, ["opt"]).iloc[0]
    assert row["lr_best"] == 1e-2 and row["best_loss"] == pytest.approx(2.1)
    assert row["seed_std"] == pytest.approx(0.0) and row["n_seeds"] == 2


def test_aligned_curves_shift_to_each_optimum():
    curves = pd.DataFrame({"opt": ["a", "a", "a", "b", "b"],
                           "optim.lr": [1e-3, 1e-2, 1e-1, 1e-4, 1e-3],
                           "loss_mean": [2.5, 2.0, 2.2, 3.0, 3.5]})
    out = aligned_curves(curves, ["opt"])
    assert out["log10_lr_rel"].tolist() == pytest.approx([-1, 0, 1, 0, 1])
    assert out["loss_gap"].tolist() == pytest.approx([0.5, 0, 0.2, 0, 0.5])


def test_strip_gap_to_default():
    df = pd.DataFrame({"optim.beta1": [0.8, 0.8, 0.9, 0.9, 0.95], "loss": [2.2, 2.4, 2.0, 2.0, 2.5]})
    s = strip(df, "optim.beta1", default=0.9)
    assert s["optim.beta1"].tolist() == [0.8, 0.9, 0.95]
    assert s["gap"].tolist() == pytest.approx([0.3, 0.0, 0.5])
    assert s["n"].tolist() == [2, 2, 1] and math.isnan(s["loss_std"].iloc[2])
    assert strip(df, "optim.beta1", default=0.99)["gap"].isna().all()


def test_first_crossing_interpolates_and_never_extrapolates():
    x, y = [0, 100, 200], [5.0, 3.0, 1.0]
    assert first_crossing(x, y, 2.0) == pytest.approx(150.0)
    assert first_crossing(x, y, 3.0) == pytest.approx(100.0)
    assert first_crossing(x, y, 6.0) == 0.0
    assert math.isnan(first_crossing(x, y, 0.5))            # a miss, not 250
    # a NaN evaluation is skipped; the one after it counts at its own x
    assert first_crossing(x, [5.0, math.nan, 1.0], 2.0) == 200.0
    # first crossing, not the last: a curve that dips and comes back
    assert first_crossing([0, 10, 20, 30], [4.0, 2.0, 3.0, 1.0], 2.5) == pytest.approx(7.5)


def test_performance_profile_and_score_hand_computed():
    times = pd.DataFrame({"X": [10.0, math.nan], "Y": [20.0, 5.0]}, index=["A", "B"])
    rho = performance_profile(times, [1.0, 2.0, 4.0])
    assert rho["X"].tolist() == [0.5, 0.5, 0.5] and rho["Y"].tolist() == [0.5, 1.0, 1.0]
    # beyond max_ratio is a miss
    assert performance_profile(times, [2.0], max_ratio=1.5)["Y"].tolist() == [0.5]
    score = profile_score(times)
    assert score["X"] == pytest.approx(0.5) and score["Y"] == pytest.approx(5 / 6)
    # the exact area equals a fine Riemann sum of rho
    taus = np.linspace(1, 4, 30001)
    area = performance_profile(times, taus).mean()   # mean over a uniform grid ≈ area/(4-1)
    assert score["Y"] == pytest.approx(area["Y"], abs=1e-3)
    # inf spelled as inf is a miss too
    assert performance_profile(times.fillna(math.inf), [4.0])["X"].tolist() == [0.5]


def test_flop_counts_hand_computed():
    assert model_flops(1000, 256) == 6 * 1000 * 256
    # m = 32, n = 128: 5 * (4*32^2*128 + 2*32^3) = 2,949,120; orientation does not matter
    assert newton_schulz_flops(32, 128) == 2_949_120
    assert newton_schulz_flops(128, 32, steps=1) == 2_949_120 / 5
    # shape (4, 6), f = 2, P = 24: mode 4: 4*4*24 + 11*64/2 = 736; mode 6: 576 + 11*216/2 = 1764
    assert shampoo_flops((4, 6), 2) == pytest.approx(2500.0)
    # mode 4: 6*4*24 + ((6 + 8/3)*64 + 4*4*24)/2; mode 6: 6*6*24 + ((6 + 8/3)*216 + 4*6*24)/2
    assert soap_flops((4, 6), 2) == pytest.approx(576 + (26 / 3 * 64 + 384) / 2 + 864 + (1872 + 576) / 2)
    assert soap_flops((7,), 1) == 0.0                     # 1-D tensors get Adam
    tensors = [((32, 128), "hidden"), ((256, 32), "embedding"), ((32,), "norm")]
    assert optimizer_flops_per_step("muon", tensors) == 12 * (4096 + 8192 + 32) + 2_949_120
    assert optimizer_flops_per_step("adamw", tensors) == 12 * 12320
    # every tensor preconditioned by Shampoo, 1-D ones too (no special case in optim/shampoo.py)
    assert optimizer_flops_per_step("shampoo", tensors, frequency=10) == pytest.approx(
        16 * 12320 + shampoo_flops((32, 128), 10) + shampoo_flops((256, 32), 10) + shampoo_flops((32,), 10))
    # less often is cheaper, and the interval only divides the decomposition part
    assert shampoo_flops((64, 64), 100) < shampoo_flops((64, 64), 10) < shampoo_flops((64, 64), 1)
    with pytest.raises(KeyError):
        optimizer_flops_per_step("nonesuch", tensors)


def test_to_target_best_lr_mean_curve_and_cost_ratio():
    from proxylab.analysis.optimizers import cost_ratio, to_target
    runs = pd.DataFrame({"run_id": ["a0", "a1", "b0", "b1"], "optim.lr": [1e-3, 1e-3, 1e-2, 1e-2],
                         "loss": [2.0, 2.2, 2.5, 2.5]})
    curves = {"a0": ([0, 10, 20], [4.0, 3.0, 2.0]), "a1": ([0, 10, 20], [4.0, 2.0, 2.2]),
              "b0": ([0, 10, 20], [4.0, 1.0, 2.5]), "b1": ([0, 10, 20], [4.0, 1.0, 2.5])}
    # best LR 1e-3 (mean 2.1); mean curve 4.0, 2.5, 2.1: target 3.0 crossed 2/3 of the way to 10
    r = to_target(runs, curves, 3.0)
    assert r["lr"] == 1e-3 and r["steps"] == pytest.approx(20 / 3) and r["run_steps"] == 20
    assert r["n_runs"] == 2
    miss = to_target(runs, curves, 2.0)          # the mean curve never reaches 2.0
    assert math.isnan(miss["steps"])
    # ratio: (20/3 * 2 FLOPs) / (10 * 1) ; a miss is censored at its run length (20)
    assert cost_ratio(r, {"steps": 10.0, "run_steps": 20.0}, 2.0, 1.0) == pytest.approx(4 / 3)
    assert cost_ratio(miss, {"steps": 10.0, "run_steps": 20.0}) == pytest.approx(2.0)
    assert math.isnan(cost_ratio(r, miss))       # the reference missed: no ratio
    assert math.isnan(to_target(runs.iloc[0:0], curves, 3.0)["steps"])


def test_to_target_ragged_curves_align_on_steps():
    from proxylab.analysis.optimizers import to_target
    runs = pd.DataFrame({"run_id": ["a", "b"], "optim.lr": [1e-3, 1e-3], "loss": [2.0, 2.0]})
    # b stopped after step 10: step 20's mean is a's value alone
    curves = {"a": ([0, 10, 20], [4.0, 3.0, 2.0]), "b": ([0, 10], [4.0, 2.0])}
    r = to_target(runs, curves, 2.25)
    assert r["steps"] == pytest.approx(15.0) and r["run_steps"] == 20.0   # mean 4.0, 2.5, 2.0
    assert to_target(runs, curves, 2.5)["steps"] == pytest.approx(10.0)
