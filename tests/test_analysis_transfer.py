"""Fast known-answer checks of analysis/transfer.py (few bootstrap draws), so that mutation
testing (`make mutate`) can judge every transfer mutant in seconds. The verdict's full
behaviour, with the default bootstrap, is tested in test_transfer.py."""

import math

import pandas as pd
import pytest

from proxylab.analysis.transfer import TRANSFER_CLAIM, lr_shift, transfer_verdict
from proxylab.config import ConfigError

LRS = [2.0 ** k for k in range(-9, -4)]   # -6, -7, -8 are interior points
N_BOOT = 6  # exact, noise-free optima: every resample gives the same slopes


def runs(opts_by_param, widths=(32, 64, 128), seeds=(0, 1), lrs=LRS):
    """Noise-free losses 2 + 0.1·(log2 lr − log2 opt)², so each optimum is exact."""
    return pd.DataFrame([
        {"model.param": p, "model.width": w, "optim.lr": lr, "train.seed": s,
         "final_val_loss": 2.0 + 0.1 * (math.log2(lr) - math.log2(opt)) ** 2,
         "init_loss": 10.0, "diverged": False, "status": "done"}
        for p, opts in opts_by_param.items() for w, opt in zip(widths, opts)
        for lr in lrs for s in seeds])


SP = [2.0 ** -6, 2.0 ** -7, 2.0 ** -8]   # the optimum halves per doubling: slope -1
PIN = [2.0 ** -7] * 3                   # slope 0


def test_lr_shift_slope_widths_and_edges():
    df = pd.DataFrame({"model.width": [128, 32, 64, 256], "lr_opt": [2.5e-3, 1e-2, 5e-3, math.nan],
                       "at_edge": [False, True, False, True]})
    s = lr_shift(df)
    assert s["slope_log2lr_per_log2width"] == pytest.approx(-1.0)
    assert s["widths"] == [32, 64, 128] and s["lr_opt"] == pytest.approx([1e-2, 5e-3, 2.5e-3])
    assert s["edge"] == 1  # the NaN row (also at the edge) is dropped first
    # a quarter per doubling: slope -2; another column name; no at_edge column
    s = lr_shift(pd.DataFrame({"w": [16, 32], "best": [4e-2, 1e-2]}), width_key="w", lr_col="best")
    assert s["slope_log2lr_per_log2width"] == pytest.approx(-2.0) and s["edge"] == 0
    assert math.isnan(lr_shift(df.iloc[:1])["slope_log2lr_per_log2width"])


def test_reproduced_with_the_exact_effect_over_seeds():
    v = transfer_verdict(runs({"sp": SP, "mup": PIN}), n_boot=N_BOOT)
    assert v["status"] == "reproduced", v
    ev = v["evidence"]
    assert ev["estimate"] == pytest.approx(1.0, abs=1e-6)
    assert ev["interval"] == pytest.approx([1.0, 1.0], abs=1e-6)
    assert (ev["n"], ev["bootstrap_unit"]) == (2, "train.seed")
    assert ev["sp_slope_log2lr_per_log2width"] == pytest.approx(-1.0, abs=1e-6)
    assert ev["mup_slope_log2lr_per_log2width"] == pytest.approx(0.0, abs=1e-6)
    assert ev["sp_widths"] == [32, 64, 128] and ev["sp_edge"] == ev["mup_edge"] == 0
    assert v["claim"] == TRANSFER_CLAIM.text and "2 seeds" in v["reason"]


def test_not_reproduced_when_both_move_and_mup_simple_is_named():
    v = transfer_verdict(runs({"sp": SP, "mup-simple": SP}), mup="mup-simple", n_boot=N_BOOT)
    assert v["status"] == "not_reproduced", v
    assert v["evidence"]["estimate"] == pytest.approx(0.0, abs=1e-6)
    # |slope| on both sides: muP moving the other way (+1) is as bad as SP's -1
    up = [2.0 ** -8, 2.0 ** -7, 2.0 ** -6]
    v = transfer_verdict(runs({"sp": SP, "mup": up}), n_boot=N_BOOT)
    assert v["evidence"]["estimate"] == pytest.approx(0.0, abs=1e-6)
    v = transfer_verdict(runs({"sp": up, "mup": PIN}), n_boot=N_BOOT)  # SP moving up moves too
    assert v["evidence"]["estimate"] == pytest.approx(1.0, abs=1e-6)


def test_one_seed_bootstraps_over_lr_points():
    v = transfer_verdict(runs({"sp": SP, "mup": PIN}, seeds=(0,)), n_boot=N_BOOT)
    assert v["evidence"]["bootstrap_unit"] == "optim.lr" and v["evidence"]["n"] == len(LRS)
    assert "LR grid points" in v["reason"]


def test_edge_optimum_forces_inconclusive_and_says_why():
    v = transfer_verdict(runs({"sp": [2.0 ** -6, 2.0 ** -7, 2.0 ** -20], "mup": PIN}),
                         n_boot=N_BOOT)
    assert v["status"] == "inconclusive" and v["evidence"]["sp_edge"] == 1
    assert v["reason"].endswith("widen the grid") and "1 optimum/optima on the edge" in v["reason"]


def test_missing_parameterization_and_other_axes():
    df = runs({"sp": SP, "mup": PIN})
    v = transfer_verdict(df[df["model.param"] == "sp"], n_boot=N_BOOT)
    assert v["status"] == "inconclusive"
    other = pd.concat([df.assign(**{"model.depth": d}) for d in (2, 4)], ignore_index=True)
    with pytest.raises(ConfigError, match=r"transfer_verdict: the runs also vary \['model.depth'\]"):
        transfer_verdict(other, n_boot=N_BOOT)


def test_other_column_names_no_seed_column_and_exact_texts():
    df = runs({"sp": SP, "mup": PIN}, seeds=(0,)).drop(columns="train.seed")
    renamed = df.rename(columns={"model.width": "model.d", "optim.lr": "optim.peak_lr",
                                 "model.param": "model.p"})
    v = transfer_verdict(renamed, param_key="model.p", width_key="model.d",
                         lr_key="optim.peak_lr", n_boot=N_BOOT)
    assert v["evidence"]["bootstrap_unit"] == "optim.peak_lr" and v["evidence"]["n"] == len(LRS)
    assert v["evidence"]["sp_slope_log2lr_per_log2width"] == pytest.approx(-1.0, abs=1e-6)
    assert v["reason"].startswith(TRANSFER_CLAIM.effect)
    assert v["reason"].endswith(f"bootstrap over {len(LRS)} LR grid points")
    edge = transfer_verdict(runs({"sp": [2.0 ** -6, 2.0 ** -7, 2.0 ** -20], "mup": PIN}),
                            n_boot=N_BOOT)
    assert edge["reason"].startswith(TRANSFER_CLAIM.effect)  # the edge note is appended
    other = pd.concat([df.assign(**{"model.depth": d}) for d in (2, 4)], ignore_index=True)
    with pytest.raises(ConfigError) as e:
        transfer_verdict(other, n_boot=N_BOOT)
    assert str(e.value) == ("transfer_verdict: the runs also vary ['model.depth']; select one "
                            "value of each before asking how the optimal LR moves with width")


def test_seed_reaches_the_bootstrap():
    # one seed: the bootstrap redraws LR grid points, so its interval depends on the seed
    df = runs({"sp": SP, "mup": PIN}, seeds=(0,), lrs=[2.0 ** k for k in range(-10, -3)])
    a = transfer_verdict(df, n_boot=N_BOOT)["evidence"]["interval"]
    assert a == transfer_verdict(df, n_boot=N_BOOT)["evidence"]["interval"]
    assert a != transfer_verdict(df, n_boot=N_BOOT, seed=3)["evidence"]["interval"]
