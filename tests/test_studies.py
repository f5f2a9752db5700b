"""Built-in studies end to end in their --smoke form (slow; `make test` runs them).

The smoke form checks the plumbing (sweeps run, verdicts are computed from the stored runs
with the shared rule, figures and pages are written), not the claims: a smoke-sized run is
too small for a verdict to mean anything, so no test pins a verdict's status. The quick and
full forms' measured verdicts are in the README.
"""

import json

import pytest

from proxylab.analysis.verdict import STATUSES
from proxylab.cli import main


def check_summary(summary: dict, name: str, n_verdicts: int) -> None:
    assert summary["study"] == name and summary["size"] == "smoke"
    assert len(summary["verdicts"]) == n_verdicts
    for v in summary["verdicts"]:
        assert v["status"] in STATUSES and v["claim"] and v["reason"]
        # a claim of several parts carries each part's evidence (see verdict.combine)
        for ev in v["evidence"].get("parts", {"": v["evidence"]}).values():
            assert {"estimate", "interval", "margin", "direction", "n"} <= set(ev), ev


@pytest.mark.slow
def test_lr_width_smoke_study(tmp_path, capsys):
    out = tmp_path / "study"
    assert main(["study", "lr-width", "--smoke", "--out", str(out), "--workers", "2"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    check_summary(summary, "lr-width", 1)
    assert summary["sweeps"] == ["lr-width-smoke"]
    ev = summary["verdicts"][0]["evidence"]
    assert len(ev["sp_lr_opt"]) == 2 and len(ev["mup_lr_opt"]) == 2
    assert ev["bootstrap_unit"] == "optim.lr" and ev["n"] == 3
    assert (out / "index.html").exists() and (out / "optimal_lr_vs_width.png").exists()
    assert (out / "lr-width-smoke" / "loss_vs_lr.png").exists()
    assert "study report:" in capsys.readouterr().out
    # started again, the study finds every run done and only redraws
    assert main(["study", "lr-width", "--smoke", "--out", str(out), "--workers", "2"]) == 0
    assert json.loads((out / "summary.json").read_text())["verdicts"] == summary["verdicts"]


def test_unknown_study_is_bad_input(tmp_path, capsys):
    assert main(["study", "nope", "--out", str(tmp_path / "x")]) == 2
    assert "lr-width" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_quick_and_smoke_together_are_bad_input(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["study", "lr-width", "--quick", "--smoke", "--out", str(tmp_path / "x")])
    assert e.value.code == 2
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_instability_smoke_study(tmp_path):
    out = tmp_path / "study"
    assert main(["study", "instability", "--smoke", "--out", str(out), "--workers", "2"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    check_summary(summary, "instability", 11)
    assert summary["sweeps"] == [f"instability-{s}-smoke" for s in ("qk", "zloss", "mup", "kappa", "eps")]
    # claims that need the full form's sweeps say so instead of guessing
    for i in (3, 4, 6, 10):
        v = summary["verdicts"][i]
        assert v["status"] == "inconclusive" and "full form" in v["reason"], v
    from proxylab.report.instability_figures import FIGURES
    for png in FIGURES:
        assert (out / png).stat().st_size > 0, png


@pytest.mark.slow
def test_bitnet_smoke_study(tmp_path):
    out = tmp_path / "study"
    # one worker: the smoke runs are tiny, and four pools of fresh processes would cost more
    assert main(["study", "bitnet", "--smoke", "--out", str(out), "--workers", "1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    check_summary(summary, "bitnet", 8)
    assert summary["sweeps"] == ["bitnet-lm-smoke", "bitnet-wd-smoke", "bitnet-mlp-smoke",
                                 "bitnet-cnn-smoke"]
    tags = [v["claim"].split("]")[0] + "]" for v in summary["verdicts"]]
    assert tags == ["[1a]", "[1b]", "[2a]", "[2b]", "[3]", "[4]", "[5]", "[6]"]
    for v in summary["verdicts"]:
        assert v["evidence"]["estimate"] is not None, v      # every claim was measured
    shares = summary["verdicts"][-1]["evidence"]["lm shares (-1, 0, +1)"]
    assert sum(shares) == pytest.approx(1.0, abs=1e-3)
    for png in ("lm_loss_vs_lr.png", "digits_acc_vs_lr.png", "lr_wd_heatmap.png",
                "ternary_over_training.png"):
        assert (out / png).exists(), png


@pytest.mark.slow
def test_grokking_smoke_study(tmp_path):
    out = tmp_path / "study"
    assert main(["study", "grokking", "--smoke", "--out", str(out), "--workers", "2"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    check_summary(summary, "grokking", 6)
    assert summary["sweeps"] == [f"grokking-{s}-smoke" for s in ("wd", "tickets", "corrupt", "delay",
                                                                   "data")]
    assert [v["claim"].split(".")[0] for v in summary["verdicts"]] == ["1", "2", "3", "4", "5", "6"]
    # claims 1, 3, 4 and 6 are measured even in the smoke form (3 from stored checkpoints)
    for i in (0, 2, 3, 5):
        for part in summary["verdicts"][i]["evidence"]["parts"].values():
            assert part["n"] == 2, part
    assert summary["verdicts"][4]["evidence"]["n"] == 2            # tickets, paired by seed
    assert (out / "proxylab.db-checkpoints").is_dir()
    for png in ("grokking_curves.png", "progress_measures.png", "corruption.png", "delay_law.png"):
        assert (out / png).stat().st_size > 0, png


@pytest.mark.slow
def test_batch_size_smoke_study(tmp_path):
    out = tmp_path / "study"
    # one worker: the smoke runs are tiny and a process pool would cost more than they do
    assert main(["study", "batch-size", "--smoke", "--out", str(out), "--workers", "1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    check_summary(summary, "batch-size", 5)
    assert summary["sweeps"] == ["batch-size-text-w16-smoke", "batch-size-digits-w32-smoke"]
    for v in summary["verdicts"]:
        for name, part in v["evidence"]["parts"].items():
            # two seeds: a measured part bootstraps over both; a part not measured (one width
            # in this form, or an optimal LR censored at the grid's edge) says why
            if part["n"] == 0:
                assert "one width" in v["reason"] or "top of the grid" in v["reason"], (name, v)
            else:
                assert part["n"] == 2 and not name.endswith("_width"), (name, part)
    scaling = summary["verdicts"][0]["evidence"]["parts"]["text_fit"]
    assert scaling["batch"] == [4, 16, 32] and len(scaling["steps_best_over_lr"]) == 3
    from proxylab.report.batch_size_figures import QUESTIONS
    for png in QUESTIONS:
        assert (out / png).stat().st_size > 0, png


@pytest.mark.slow
def test_weight_decay_smoke_study(tmp_path):
    out = tmp_path / "study"
    # one worker: the smoke runs are tiny and a process pool would cost more than they do
    assert main(["study", "weight-decay", "--smoke", "--out", str(out), "--workers", "1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    check_summary(summary, "weight-decay", 5)
    assert summary["sweeps"] == [f"weight-decay-{k}-smoke" for k in ("grid", "lm", "eq", "lawn")]
    assert [v["claim"].split("]")[0] + "]" for v in summary["verdicts"]] == [
        "[1]", "[2]", "[3]", "[4]", "[5]"]
    for v in summary["verdicts"]:               # two seeds: every part went through its bootstrap
        for name, part in v["evidence"].get("parts", {"": v["evidence"]}).items():
            assert part["n"] == 2, (v["claim"], part)
            # the λ* slope needs two LRs with an optimum inside the λ grid: not in smoke
            assert part["estimate"] is not None or name == "slope", (v["claim"], part)
    for png in ("heatmaps", "equilibrium", "lm_curves", "buckets", "lawn_logits"):
        assert (out / f"weight_decay_{png}.png").stat().st_size > 0, png
    assert set(summary["figures"]) == {f"weight_decay_{p}.png" for p in (
        "heatmaps", "equilibrium", "lm_curves", "buckets", "lawn_logits")}


@pytest.mark.slow
def test_optimizers_smoke_study(tmp_path):
    out = tmp_path / "study"
    # one worker: the smoke runs are tiny and a process pool would cost more than they do
    assert main(["study", "optimizers", "--smoke", "--out", str(out), "--workers", "1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    check_summary(summary, "optimizers", 6)
    assert summary["sweeps"] == [f"optimizers-{k}-smoke" for k in (
        "lr", "precond", "muon", "gpt-m", "digits", "strips")]
    assert [v["claim"].split(".")[0] for v in summary["verdicts"]] == ["1", "2", "3", "4", "5", "6"]
    for v in summary["verdicts"]:               # every part states its margin and its seeds
        for part in v["evidence"]["parts"].values():
            assert part["margin"] is not None and part["seeds"] == [0], (v["claim"], part)
    # claim 6 counts FLOPs per step with the optimizer's own: Muon's exceed AdamW's
    muon = summary["verdicts"][5]["evidence"]["parts"]["gpt-s flops"]
    assert muon["flops_per_step"] > muon["adamw_flops_per_step"] > 0
    from proxylab.report.optimizers_figures import FIGURES
    assert set(summary["figures"]) == set(FIGURES)
    for png in FIGURES:
        assert (out / png).stat().st_size > 0, png
