"""Built-in studies end to end in their --quick form (slow; `make test` runs them)."""

import json

import pytest

from proxylab.cli import main


@pytest.mark.slow
def test_lr_width_quick_study(tmp_path, capsys):
    out = tmp_path / "study"
    assert main(["study", "lr-width", "--quick", "--out", str(out), "--workers", "2"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["study"] == "lr-width" and summary["quick"] is True
    assert summary["sweeps"] == ["lr-width-quick"]
    (v,) = summary["verdicts"]
    ev = v["evidence"]
    assert len(ev["sp_lr_opt"]) == 2 and len(ev["mup_lr_opt"]) == 2
    # Seeded and single-threaded per run, the quick form reproduces the claim on this CPU
    # with a wide margin (measured: SP slope -1.08, muP +0.05 in log2 LR per log2 width).
    assert v["status"] == "reproduced", ev
    assert ev["sp_slope_log2lr_per_log2width"] < -0.5 < ev["mup_slope_log2lr_per_log2width"]
    assert (out / "index.html").exists() and (out / "optimal_lr_vs_width.png").exists()
    assert (out / "lr-width-quick" / "loss_vs_lr.png").exists()
    assert "study report:" in capsys.readouterr().out
    # started again, the study finds every run done and only redraws
    assert main(["study", "lr-width", "--quick", "--out", str(out), "--workers", "2"]) == 0
    assert json.loads((out / "summary.json").read_text())["verdicts"] == summary["verdicts"]


def test_unknown_study_is_bad_input(tmp_path, capsys):
    assert main(["study", "nope", "--out", str(tmp_path / "x")]) == 2
    assert "lr-width" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
