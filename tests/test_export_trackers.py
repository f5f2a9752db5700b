"""Exports into TensorBoard and MLflow, read back with each tool's own reader."""

from __future__ import annotations

import math
import sqlite3
import sys

import pytest

from proxylab.cli import main
from proxylab.config import ConfigError, load_config
from proxylab.store import Store, export
from proxylab.sweep.driver import run_sweep
from proxylab.sweep.executors import InlineExecutor
from proxylab.sweep.spec import spec_from_dict

TINY = {"model.width": 16, "model.depth": 1, "model.heads": 2, "task.seq_len": 16,
        "train.batch_size": 2, "train.steps": 6, "train.eval_every": 3, "train.eval_batches": 1}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("trackers") / "proxylab.db"
    s = Store(path)
    spec = spec_from_dict({"name": "tiny", "base": TINY, "grid": {"optim.lr": [1e-3, 3e-3]}})
    run_sweep(spec, s, InlineExecutor(threads=1), show_progress=False)
    # a failed run and a lone run outside any sweep are exported too
    lone = load_config(sets=[f"{k}={v}" for k, v in TINY.items()] + ["optim.lr=0.01"])
    s.add_runs(None, [(lone.id, lone.to_dict())])
    s.start_run(lone.id, {})
    s.log_metrics(lone.id, [(0, "train/loss", 5.0), (1, "train/loss", float("nan"))])
    s.finish_run(lone.id, "failed", {}, error="boom")
    return s


def expected(store):
    runs, metrics = store.runs(), store.metrics()
    return runs, {rid: {(int(st), k): v for st, k, v in zip(g["step"], g["key"], g["value"])}
                  for rid, g in metrics.groupby("run_id")}


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-7)


def test_tensorboard_reads_back_every_run_metric_and_hparam(store, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    out = tmp_path / "tb"
    assert main(["export", "--db", str(store.path), "--format", "tensorboard", "--out", str(out)]) == 0
    runs, by_run = expected(store)
    assert sorted(p.name for p in out.iterdir()) == sorted(runs["run_id"])
    for _, row in runs.iterrows():
        acc = EventAccumulator(str(out / row["run_id"]), size_guidance={"scalars": 0})
        acc.Reload()
        got = {(e.step, tag): e.value for tag in acc.Tags()["scalars"] if not tag.startswith("summary/")
               for e in acc.Scalars(tag)}
        want = by_run[row["run_id"]]
        assert set(got) == set(want)
        assert all(same(got[k], want[k]) for k in want)
        if row["status"] == "done":
            assert same(acc.Scalars("summary/final_val_loss")[-1].value, row["final_val_loss"])
        content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
        info = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
        hp = {k: v for k, v in info.hparams.items()}
        assert hp["optim.lr"].number_value == pytest.approx(row["optim.lr"])
        assert hp["model.name"].string_value == row["model.name"]
        assert hp["status"].string_value == row["status"]
    # exporting again replaces each run's folder: still one event file per run
    assert main(["export", "--db", str(store.path), "--format", "tensorboard", "--out", str(out)]) == 0
    assert all(len(list((out / rid).iterdir())) == 1 for rid in runs["run_id"])


@pytest.mark.parametrize("as_uri", [False, True])
def test_mlflow_reads_back_every_run_and_is_idempotent(store, tmp_path, as_uri):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    out = f"sqlite:///{tmp_path / 'ml.db'}" if as_uri else str(tmp_path / "ml")
    for _ in range(2):   # the second export changes nothing
        assert main(["export", "--db", str(store.path), "--format", "mlflow", "--out", out]) == 0
    uri = out if as_uri else f"sqlite:///{tmp_path / 'ml' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("proxylab")
    mruns = client.search_runs([exp.experiment_id], max_results=100)
    runs, by_run = expected(store)
    assert sorted(r.data.tags["proxylab.run_id"] for r in mruns) == sorted(runs["run_id"])
    for r in mruns:
        row = runs.set_index("run_id").loc[r.data.tags["proxylab.run_id"]]
        assert r.data.tags["status"] == row["status"]
        assert r.data.tags["sweep"] == (row["sweep"] if isinstance(row["sweep"], str) else "")
        assert float(r.data.params["optim.lr"]) == pytest.approx(row["optim.lr"])
        assert r.data.params["model.width"] == "16"
        assert r.info.status == ("FAILED" if row["status"] == "failed" else "FINISHED")
        want = by_run[row.name]
        got = {}
        for key in {k for _, k in want}:
            hist = client.get_metric_history(r.info.run_id, key)
            assert len(hist) == len({s for s, k in want if k == key})   # no duplicates
            got.update({(m.step, key): m.value for m in hist})
        assert set(got) == set(want)
        assert all(same(got[k], want[k]) for k in want)
    # a run that changes (redone) is replaced, not duplicated (on a copy of the module's store)
    copy = tmp_path / "copy.db"
    with sqlite3.connect(store.path) as src, sqlite3.connect(copy) as dst:
        src.backup(dst)
    changed = Store(copy)
    rid = runs["run_id"].iloc[0]
    changed.start_run(rid, {})
    changed.log_metrics(rid, [(0, "train/loss", 1.25)])
    changed.finish_run(rid, "done", {"final_val_loss": 1.5})
    export(changed, out, "mlflow")
    mine = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags["proxylab.run_id"] == rid]
    assert len(mine) == 1
    assert [m.value for m in client.get_metric_history(mine[0].info.run_id, "train/loss")] == [1.25]
    assert len(client.search_runs([exp.experiment_id])) == len(runs)


def test_missing_extra_is_named(store, tmp_path, monkeypatch):
    for fmt, mod in (("tensorboard", "tensorboard"), ("mlflow", "mlflow")):
        monkeypatch.setitem(sys.modules, mod, None)   # import fails as if not installed
        with pytest.raises(ConfigError, match=rf"pip install 'proxylab\[{fmt}\]'"):
            export(store, tmp_path / fmt, fmt)
        assert not (tmp_path / fmt).exists()


def test_unknown_sweep_writes_nothing(store, tmp_path):
    with pytest.raises(ConfigError, match="nope"):
        export(store, tmp_path / "tb", "tensorboard", sweep="nope")
    assert not (tmp_path / "tb").exists()
