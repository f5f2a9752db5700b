"""make_report end to end on a synthetic store: files, JSON numbers, atomicity, errors."""

import json
import math

import numpy as np
import pytest

from proxylab.analysis import (final_metrics, lr_curves, lr_sensitivity, metric_vs_lr,
                               optimal_lr)
from proxylab.config import ConfigError
from matplotlib.figure import Figure

from proxylab.report import figures, json_safe, make_report, sweep_summary
from proxylab.store.db import Store

LRS = [1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
L0 = math.log(256)  # byte-level loss at init


def _curve(lr, width, seed, steps=200):
    """Synthetic losses: the optimum near 1e-2, wider is better, width 128 blows up at 1e-1."""
    rng = np.random.default_rng(seed)
    floor = 1.6 + 0.35 * (math.log10(lr) + 2) ** 2 - 0.1 * (width == 128) + 0.02 * seed
    rate = 20 * lr
    diverge_at = 120 if (width == 128 and lr >= 1e-1) else None
    rows = []
    for t in range(0, steps + 1, 10):
        if diverge_at is not None and t > diverge_at:
            break
        loss = floor + (L0 - floor) * math.exp(-rate * t)
        if diverge_at is not None and t >= 80:
            loss = L0 * (1 + (t - 70) / 10)
        rows.append((t, "train/loss", loss + 0.05 * rng.standard_normal() * (t > 0)))
        if t % 50 == 0 or t == steps:
            rows.append((t, "val/loss", loss + 0.03))
        rows.append((t, "attn_logit_max_l0", 3 + 400 * lr * (width / 64) * t / steps))
        rows.append((t, "tokens", 512.0 * t))
        rows.append((t, "wall_s", 0.01 * t))
    if diverge_at is not None:
        rows.append((rows[-1][0], "val/loss", float("nan")))
    return rows, ("diverged" if diverge_at is not None else "done")


def build_store(path, seeds=(0, 1)):
    store = Store(path)
    spec = {"name": "lr-width", "grid": {"optim.lr": LRS, "model.width": [64, 128]},
            "seeds": list(seeds)}
    store.add_sweep("lr-width", spec)
    store.add_sweep("other", {})
    runs = [(f"r{i:03d}", {"optim": {"lr": lr}, "model": {"width": w}, "train": {"seed": s,
                                                                                 "steps": 200}})
            for i, (lr, w, s) in enumerate((lr, w, s) for w in (64, 128) for lr in LRS
                                           for s in seeds)]
    store.add_runs("lr-width", runs)
    for rid, cfg in runs[:-1]:  # the last run stays pending
        store.start_run(rid)
        rows, status = _curve(cfg["optim"]["lr"], cfg["model"]["width"], cfg["train"]["seed"])
        store.log_metrics(rid, rows)
        store.finish_run(rid, status, {"steps": rows[-1][0]})
    return store


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rep")
    store = build_store(tmp / "p.db")
    out = tmp / "out"
    summary = make_report(store, "lr-width", out)
    return store, out, summary


def test_files_written(report):
    _, out, summary = report
    names = {"loss_curves", "loss_vs_lr", "attn_logit_vs_step", "attn_logit_vs_lr"}
    assert set(summary["figures"]) == names
    for name in names:
        png = (out / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    html = (out / "index.html").read_text()
    for name in names:
        assert f"src='{name}.png'" in html
    assert "r000" in html and "diverged" in html and "&quot;seeds&quot;" in html
    assert not [p for p in out.parent.iterdir() if ".tmp-" in p.name]


def test_summary_json_equals_analysis(report):
    store, out, summary = report
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == summary
    runs = store.runs(sweep="lr-width")
    final = final_metrics(runs, store.metrics(sweep="lr-width"))
    curves = lr_curves(final)
    assert on_disk["runs"] == json_safe(final)
    assert on_disk["lr_curves"] == json_safe(curves)
    assert on_disk["optimal_lr"] == json_safe(optimal_lr(curves))
    assert on_disk["lr_sensitivity"] == json_safe(lr_sensitivity(curves))
    assert on_disk["attn_logit_vs_lr"] == json_safe(metric_vs_lr(final, "max_attn_logit"))
    assert on_disk["counts"] == {"pending": 1, "running": 0, "done": 18, "diverged": 1,
                                 "failed": 0}
    assert on_disk["varied_axes"] == ["optim.lr", "model.width"]
    assert on_disk["group_keys"] == ["model.width"]
    assert on_disk["spec"]["seeds"] == [0, 1]


def test_summary_numbers_make_sense(report):
    _, _, summary = report
    opt = {r["model.width"]: r for r in summary["optimal_lr"]}
    assert opt[64]["lr_argmin"] == 1e-2 and opt[64]["method"] == "parabola"
    sens = {r["model.width"]: r for r in summary["lr_sensitivity"]}
    assert sens[128]["n_lr_diverged"] == 1 and sens[128]["lr_sensitivity"] > 0
    top = [r for r in summary["lr_curves"] if r["model.width"] == 128 and r["optim.lr"] == 1e-1]
    assert top[0]["n"] == 1 and top[0]["n_diverged"] == 1  # the pending seed is not counted
    assert top[0]["loss_mean"] == pytest.approx(L0 + 0.03) and top[0]["loss_std"] is None
    pending = [r for r in summary["runs"] if r["status"] == "pending"][0]
    assert pending["final_val_loss"] is None  # NaN -> null
    done = [r for r in summary["runs"] if r["status"] == "done"][0]
    assert done["tokens_per_s"] == pytest.approx(51200.0)


def expected_val_loss(lr, width, seeds=(0, 1)):
    """The synthetic final val loss of ``_curve`` in closed form, seeds averaged (the
    pending and diverged runs excepted by the caller): floor + (ℓ0 - floor)·e^(-20·lr·200)
    + 0.03, with floor = 1.6 + 0.35·(log10 lr + 2)² - 0.1·[width 128] + 0.02·seed."""
    vals = []
    for seed in seeds:
        floor = 1.6 + 0.35 * (math.log10(lr) + 2) ** 2 - 0.1 * (width == 128) + 0.02 * seed
        vals.append(floor + (L0 - floor) * math.exp(-20 * lr * 200) + 0.03)
    return sum(vals) / len(vals)


def test_summary_numbers_equal_the_synthetic_closed_form(report):
    """The curve's floor is a parabola in log10(lr) with its vertex at lr = 1e-2 and value
    1.6 (+0.01 mean seed offset, +0.03 val offset, -0.1 at width 128); at lr >= 3e-3 the
    transient e^(-4000·lr) is below 1e-5, so the fit through 3e-3, 1e-2, 3e-2 recovers it."""
    _, _, summary = report
    l0 = L0 + 0.03  # val loss at step 0
    curves = {(r["model.width"], r["optim.lr"]): r for r in summary["lr_curves"]}
    for (w, lr), r in curves.items():
        if w == 128 and lr == 1e-1:
            assert r["loss_mean"] == pytest.approx(l0)  # the one finished seed diverged: ℓ0
        else:
            assert r["loss_mean"] == pytest.approx(expected_val_loss(lr, w), rel=1e-9), (w, lr)
    opt = {r["model.width"]: r for r in summary["optimal_lr"]}
    for w, floor in ((64, 1.64), (128, 1.54)):
        assert opt[w]["lr_opt"] == pytest.approx(1e-2, rel=1e-3), w
        assert opt[w]["loss_opt"] == pytest.approx(floor, abs=1e-4), w
    # Wortsman's sensitivity: mean over the grid of min(ℓ(η), ℓ0) - ℓ*
    sens = {r["model.width"]: r for r in summary["lr_sensitivity"]}
    for w in (64, 128):
        losses = [min(l0 if (w == 128 and lr == 1e-1) else expected_val_loss(lr, w), l0)
                  for lr in LRS]
        want = sum(x - min(losses) for x in losses) / len(LRS)
        assert sens[w]["lr_sensitivity"] == pytest.approx(want, rel=1e-9), w
        assert sens[w]["best_loss"] == pytest.approx(min(losses), rel=1e-9)
        assert sens[w]["lr_best"] == 1e-2


def test_rewrite_keeps_foreign_files_and_drops_stale_ones(report, tmp_path):
    store, _, _ = report
    out = tmp_path / "r"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "attn_logit_vs_lr.png").write_bytes(b"old")
    (out / "summary.json").write_text("old")
    store.add_runs("other", [("x1", {"optim": {"lr": 1e-3}})])
    store.start_run("x1")
    store.log_metrics("x1", [(0, "val/loss", 5.0), (10, "val/loss", 3.0),
                             (0, "train/loss", 5.0), (10, "train/loss", 3.0)])
    store.finish_run("x1", "done", {})
    summary = make_report(store, "other", out)
    assert set(summary["figures"]) == {"loss_curves"}  # one LR, no attention: one figure
    assert (out / "notes.txt").read_text() == "mine"
    assert not (out / "attn_logit_vs_lr.png").exists()
    assert json.loads((out / "summary.json").read_text())["runs"][0]["final_val_loss"] == 3.0


def test_unknown_sweep_names_it_and_lists_the_stored_ones(report, tmp_path):
    store, _, _ = report
    with pytest.raises(ConfigError, match=r"'nope'.*lr-width.*other|'nope'.*other.*lr-width"):
        make_report(store, "nope", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_failure_leaves_nothing_half_written(report, tmp_path, monkeypatch):
    store, _, _ = report
    import proxylab.report.build as build

    def boom(*a, **k):
        raise RuntimeError("renderer died")

    monkeypatch.setattr(build, "_figures", lambda *a: {"loss_curves": Figure()})  # fast
    monkeypatch.setattr(build, "render_index", boom)  # fails after a PNG was written
    out = tmp_path / "r"
    out.mkdir()
    (out / "summary.json").write_text("previous")
    with pytest.raises(RuntimeError):
        make_report(store, "lr-width", out)
    assert (out / "summary.json").read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]
    assert sorted(p.name for p in out.iterdir()) == ["summary.json"]


class FakeStore:
    """The reading API only (runs/metrics/sweeps), as another backend might offer it."""

    def __init__(self, store):
        self._s = store

    def sweeps(self):
        return ["lr-width"]

    def runs(self, sweep=None):
        return self._s.runs(sweep=sweep)

    def metrics(self, run_ids=None, keys=None, sweep=None):
        return self._s.metrics(run_ids=run_ids, keys=keys, sweep=sweep)


def test_works_with_a_minimal_store_object(report):
    store, _, summary = report
    s2, frames = sweep_summary(FakeStore(store), "lr-width")
    assert s2["spec"] == {} and s2["lr_sensitivity"] == summary["lr_sensitivity"]
    with pytest.raises(ConfigError, match="'x'.*lr-width"):
        sweep_summary(FakeStore(store), "x")


def test_empty_sweep_gives_a_report_without_figures(tmp_path):
    store = Store(tmp_path / "e.db")
    store.add_sweep("empty", {"grid": {"optim.lr": [1e-3]}})
    summary = make_report(store, "empty", tmp_path / "out")
    assert summary["n_runs"] == 0 and summary["figures"] == {} and summary["runs"] == []
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["index.html", "summary.json"]


def test_figure_functions_return_figures(report):
    store, _, _ = report
    final = final_metrics(store.runs(sweep="lr-width"), store.metrics(sweep="lr-width"))
    curves = lr_curves(final)
    figs = [figures.loss_curves(store.metrics(sweep="lr-width"), final, group_keys=[]),
            figures.loss_vs_lr(curves),
            figures.attn_logit_vs_lr(metric_vs_lr(final, "max_attn_logit"))]
    assert all(isinstance(f, Figure) for f in figs)
    ax = figs[0].axes[0]  # one group: train and val side by side, coloured by LR
    assert ax.get_xlabel() == "step" and ax.get_ylabel() == "loss (nats/token)"
    assert len(figs[0].axes) == 2 and len(ax.lines) >= 19
    assert figs[1].axes[0].get_xscale() == "log"


def test_write_json_atomic_is_strict_json(tmp_path):
    from proxylab.report.html import write_json_atomic  # where the studies import it from

    p = write_json_atomic(tmp_path / "a" / "s.json", {"x": float("nan"), "y": np.float32(1.5),
                                                      "z": [np.int64(2), float("inf")]})
    assert json.loads(p.read_text()) == {"x": None, "y": 1.5, "z": [2, None]}
    assert [q.name for q in p.parent.iterdir()] == ["s.json"]
