"""The muP-transfer verdict on hand-built runs whose optimal LRs are known in closed form."""

import math

import numpy as np
import pandas as pd
import pytest

from proxylab.analysis.transfer import lr_shift, transfer_verdict
from proxylab.config import ConfigError

LRS = [2.0 ** k for k in range(-12, -3)]   # a log2-spaced grid wide enough for every optimum


def runs(sp_opt, mup_opt, widths=(32, 64, 128), seeds=(0,), noise=0.0, extra=None):
    """Final losses that are parabolas in log2(LR) with their vertex at the given optima."""
    rng = np.random.default_rng(0)
    rows = []
    for param, opts in (("sp", sp_opt), ("mup", mup_opt)):
        for w, opt in zip(widths, opts):
            for lr in LRS:
                for s in seeds:
                    loss = 2.0 + 0.1 * (math.log2(lr) - math.log2(opt)) ** 2
                    rows.append({"model.param": param, "model.width": w, "optim.lr": lr,
                                 "train.seed": s, "final_val_loss": loss + noise * rng.normal(),
                                 "init_loss": 10.0, "diverged": False, "status": "done",
                                 **(extra or {})})
    return pd.DataFrame(rows)


def test_slope_is_exact_for_power_laws():
    df = pd.DataFrame({"model.width": [32, 64, 128], "lr_opt": [1e-2, 5e-3, 2.5e-3]})
    assert lr_shift(df)["slope_log2lr_per_log2width"] == pytest.approx(-1)
    df["lr_opt"] = 1e-2
    assert lr_shift(df)["slope_log2lr_per_log2width"] == pytest.approx(0)


SP_MOVES = [2.0 ** -6, 2.0 ** -7, 2.0 ** -8]      # slope -1
PINNED = [2.0 ** -7] * 3                        # slope 0


def test_reproduced_when_sp_moves_and_mup_is_pinned():
    v = transfer_verdict(runs(SP_MOVES, PINNED, seeds=(0, 1, 2), noise=0.002))
    assert v["status"] == "reproduced", v
    assert v["evidence"]["estimate"] == pytest.approx(1.0, abs=0.05)
    assert v["evidence"]["n"] == 3 and v["evidence"]["bootstrap_unit"] == "train.seed"
    lo, hi = v["evidence"]["interval"]
    assert 0.3 < lo <= hi


def test_not_reproduced_when_mup_moves_as_much_as_sp():
    v = transfer_verdict(runs(SP_MOVES, SP_MOVES, seeds=(0, 1, 2), noise=0.002))
    assert v["status"] == "not_reproduced", v
    assert v["evidence"]["interval"][1] < 0.3


def test_symmetric_when_neither_moves():
    # SP 0, muP 0: the effect is 0 with a tight interval, short of the 0.3 margin
    v = transfer_verdict(runs(PINNED, PINNED, seeds=(0, 1, 2), noise=0.001))
    assert v["status"] == "not_reproduced", v
    assert v["evidence"]["estimate"] == pytest.approx(0.0, abs=0.05)


def test_inconclusive_when_the_interval_straddles_the_margin():
    # a noisy effect near the margin: seed noise moves the optima by about a grid step
    v = transfer_verdict(runs([2.0 ** -7, 2.0 ** -7.2, 2.0 ** -7.6], PINNED, seeds=(0, 1, 2, 3),
                              noise=0.08))
    lo, hi = v["evidence"]["interval"]
    assert lo < 0.3 < hi and v["status"] == "inconclusive", v


def test_one_seed_bootstraps_over_lr_grid_points():
    v = transfer_verdict(runs(SP_MOVES, PINNED))
    assert v["evidence"]["bootstrap_unit"] == "optim.lr"
    assert v["evidence"]["n"] == len(LRS)
    assert v["status"] == "reproduced", v


def test_edge_optimum_is_inconclusive():
    edge = [2.0 ** -6, 2.0 ** -7, 2.0 ** -20]   # beyond the grid's low end at width 128
    v = transfer_verdict(runs(edge, PINNED, seeds=(0, 1)))
    assert v["status"] == "inconclusive" and v["evidence"]["sp_edge"] == 1
    assert "edge" in v["reason"]


def test_missing_parameterization_is_inconclusive():
    df = runs(SP_MOVES, PINNED, seeds=(0, 1))
    v = transfer_verdict(df[df["model.param"] == "sp"])
    assert v["status"] == "inconclusive"


def test_another_varied_axis_is_refused():
    a = runs(SP_MOVES, PINNED, extra={"model.depth": 2})
    b = runs(SP_MOVES, PINNED, extra={"model.depth": 4})
    with pytest.raises(ConfigError, match="model.depth"):
        transfer_verdict(pd.concat([a, b], ignore_index=True))
