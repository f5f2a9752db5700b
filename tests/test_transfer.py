"""The muP-transfer verdict on hand-made optima (closed-form slopes)."""

import pandas as pd
import pytest

from proxylab.analysis.transfer import lr_shift, transfer_verdict


def optima(sp_lrs, mup_lrs, widths=(32, 64, 128), edge=()):
    rows = []
    for param, lrs in (("sp", sp_lrs), ("mup", mup_lrs)):
        for w, lr in zip(widths, lrs):
            rows.append({"model.param": param, "model.width": w, "lr_opt": lr,
                         "at_edge": (param, w) in edge})
    return pd.DataFrame(rows)


def test_slope_is_exact_for_power_laws():
    df = optima([1e-2, 5e-3, 2.5e-3], [1e-2] * 3)
    assert lr_shift(df[df["model.param"] == "sp"])["slope_log2lr_per_log2width"] == pytest.approx(-1)
    assert lr_shift(df[df["model.param"] == "mup"])["slope_log2lr_per_log2width"] == pytest.approx(0)


def test_reproduced_not_reproduced_inconclusive():
    assert transfer_verdict(optima([1e-2, 5e-3, 2.5e-3], [1e-2, 1.1e-2, 1e-2]))["status"] == "reproduced"
    # muP moves as much as SP
    assert transfer_verdict(optima([1e-2, 5e-3, 2.5e-3], [1e-2, 5e-3, 2.5e-3]))["status"] == "not_reproduced"
    # SP barely moves: no contrast to speak of
    assert transfer_verdict(optima([1e-2, 9e-3, 8e-3], [1e-2] * 3))["status"] == "inconclusive"
    # an optimum at the grid's edge makes the slope a bound, whatever the numbers say
    edge = transfer_verdict(optima([1e-2, 5e-3, 2.5e-3], [1e-2] * 3, edge={("sp", 128)}))
    assert edge["status"] == "inconclusive" and edge["evidence"]["sp_edge"] == 1
    assert transfer_verdict(optima([1e-2] * 3, [1e-2] * 3, edge={("sp", 32), ("mup", 32)}))["status"] == "inconclusive"


def test_missing_parameterization_is_inconclusive():
    df = optima([1e-2, 5e-3, 2.5e-3], [1e-2] * 3)
    assert transfer_verdict(df[df["model.param"] == "sp"])["status"] == "inconclusive"
