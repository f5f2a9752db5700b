"""proxylab.store in one process: round trips, idempotence, attempts, errors, exports."""

import math
import os
import sqlite3

import pandas as pd
import pytest

from proxylab.config import ConfigError, OptimConfig, RunConfig, TrainConfig
from proxylab.store import Store, default_db_path, export, load
from proxylab.store.schema import SCHEMA_VERSION


def cfg(lr=1e-3, seed=0, **extra):
    # dataclasses directly: no cross-field validation, so these tests need no other room
    return RunConfig(optim=OptimConfig(lr=lr, extra=extra), train=TrainConfig(seed=seed))


def assert_same(got, want):
    """Equal contents; missing cells compare equal whatever the format calls them (None/NaN)."""
    def norm(df):
        return df.astype(object).where(df.notna(), None)

    pd.testing.assert_frame_equal(norm(got), norm(want), check_dtype=False)


@pytest.fixture
def store(db_path):
    with Store(db_path) as s:
        yield s


@pytest.fixture
def filled(store):
    """Sweep 'lr' with three runs (one also in 'seeds'): done, diverged, pending."""
    a, b, c = cfg(1e-3), cfg(1e-2, ns_steps=5), cfg(1e-3, seed=1)
    store.add_sweep("lr", {"grid": {"optim.lr": [1e-3, 1e-2]}})
    assert store.add_runs("lr", [(a.id, a), (b.id, b), (c.id, c)]) == [a.id, b.id, c.id]
    store.add_runs("seeds", [(c.id, c), (a.id, a)])
    store.start_run(a.id, {"device": "cpu", "threads": 1, "data_fingerprint": "f00"})
    store.log_metrics(a.id, [(0, "train/loss", 5.5), (0, "val/loss", 5.6), (10, "train/loss", 4.0)])
    store.finish_run(a.id, "done", {"final_val_loss": 4.1, "grokked": False})
    store.start_run(b.id, {})
    store.log_metrics(b.id, [(0, "train/loss", 5.5), (5, "train/loss", float("nan"))])
    store.finish_run(b.id, "diverged", {"final_val_loss": float("inf"), "diverged_step": 5})
    return store, a, b, c


def test_round_trip_runs(filled):
    store, a, b, c = filled
    df = store.runs(sweep="lr")
    assert list(df.run_id) == [a.id, b.id, c.id]  # sweep order
    assert list(df.columns[:8]) == ["run_id", "sweep", "status", "attempt", "created", "started",
                                    "finished", "error"]
    assert list(df.status) == ["done", "diverged", "pending"]
    assert list(df.attempt) == [1, 1, 0]
    assert set(df.sweep) == {"lr"}
    assert list(df["optim.lr"]) == [1e-3, 1e-2, 1e-3]
    assert list(df["train.seed"]) == [0, 0, 1]
    assert list(df["optim.extra"]) == ["{}", '{"ns_steps": 5}', "{}"]
    assert set(cfg().flat()) - {"optim.extra"} <= set(df.columns)
    assert df["final_val_loss"].iloc[0] == 4.1 and math.isinf(df["final_val_loss"].iloc[1])
    assert math.isnan(df["final_val_loss"].iloc[2])
    assert df["started"].iloc[0] <= df["finished"].iloc[0] and pd.isna(df["started"].iloc[2])
    assert str(df["created"].dt.tz) == "UTC"
    # without a sweep filter: every run once, sweeps joined
    all_runs = store.runs()
    assert len(all_runs) == 3 and dict(zip(all_runs.run_id, all_runs.sweep)) == {
        a.id: "lr,seeds", b.id: "lr", c.id: "lr,seeds"}
    assert list(store.runs(status=["done", "diverged"]).run_id) == [a.id, b.id]
    assert list(store.runs(sweep="seeds", status="pending").run_id) == [c.id]


def test_round_trip_metrics_and_run(filled):
    store, a, b, c = filled
    m = store.metrics()
    assert list(m.columns) == ["run_id", "step", "key", "value"]
    assert len(m) == 5 and m.equals(m.sort_values(["run_id", "step", "key"]).reset_index(drop=True))
    mine = store.metrics(run_ids=a.id)
    assert list(zip(mine.step, mine.key, mine.value)) == [
        (0, "train/loss", 5.5), (0, "val/loss", 5.6), (10, "train/loss", 4.0)]
    nan_row = store.metrics(run_ids=[b.id], keys=["train/loss"]).iloc[-1]
    assert nan_row.step == 5 and math.isnan(nan_row.value)  # NaN survives as NaN
    assert len(store.metrics(sweep="seeds")) == 3 and len(store.metrics(keys="val/loss")) == 1
    assert store.metrics(run_ids=[]).empty and store.metrics().step.dtype == "int64"
    wide = store.curves(run_ids=a.id)
    assert list(wide.columns) == ["train/loss", "val/loss"] and wide.loc[(a.id, 10), "train/loss"] == 4.0
    r = store.run(a.id)
    assert r["config"] == a.to_dict() and r["status"] == "done" and r["attempt"] == 1
    assert r["summary"] == {"final_val_loss": 4.1, "grokked": False}
    assert r["meta"]["device"] == "cpu" and r["meta"]["data_fingerprint"] == "f00"
    assert {"proxylab_version", "torch_version", "git_commit", "host"} <= set(r["meta"])
    assert r["sweeps"] == ["lr", "seeds"]
    assert store.status_of([a.id, c.id, "nope"]) == {a.id: "done", c.id: "pending"}
    assert store.resolve_id(a.id[:6]) == a.id
    sw = store.sweeps().set_index("name")
    assert sw.loc["lr", "n_runs"] == 3 and sw.loc["lr", "n_done"] == 1 and sw.loc["lr", "n_pending"] == 1
    assert store.sweep_spec("lr") == {"grid": {"optim.lr": [1e-3, 1e-2]}} and store.sweep_spec("seeds") == {}


def test_reopen_and_load_see_the_same(filled, db_path):
    store, *_ = filled
    expected_runs, expected_metrics = store.runs(), store.metrics()
    store.close()
    again = load(db_path)
    pd.testing.assert_frame_equal(again.runs(), expected_runs)
    pd.testing.assert_frame_equal(again.metrics(), expected_metrics)


def test_log_metrics_is_idempotent(store):
    a = cfg()
    store.add_runs(None, [(a.id, a)])
    store.add_runs(None, [(a.id, a)])  # re-adding is a no-op
    store.start_run(a.id)
    rows = [(s, k, float(s)) for s in range(3) for k in ("train/loss", "lr")]
    store.log_metrics(a.id, rows)
    store.log_metrics(a.id, rows)
    assert len(store.metrics()) == 6
    store.log_metrics(a.id, [(2, "lr", 9.0)])  # a replay with a new value replaces
    m = store.metrics(keys="lr")
    assert len(m) == 3 and m.value.iloc[-1] == 9.0


def test_start_run_again_drops_earlier_attempt(filled):
    store, a, *_ = filled
    assert store.start_run(a.id, {"device": "cpu"}) == 2
    assert store.metrics(run_ids=a.id).empty
    r = store.run(a.id)
    assert r["status"] == "running" and r["summary"] == {} and r["finished"] is None
    store.log_metrics(a.id, [(0, "train/loss", 1.0)])
    store.finish_run(a.id, "failed", {}, error="Traceback: boom")
    assert len(store.metrics(run_ids=a.id)) == 1
    row = store.runs().set_index("run_id").loc[a.id]
    assert row.status == "failed" and row.attempt == 2 and row.error == "Traceback: boom"


def test_interrupted_and_mark_pending(filled):
    store, a, b, c = filled
    store.start_run(c.id)
    store.log_metrics(c.id, [(0, "train/loss", 3.0)])
    assert store.interrupted() == [c.id] and store.interrupted([a.id]) == []
    assert store.mark_pending(store.interrupted()) == 1
    assert store.status_of(c.id) == {c.id: "pending"} and store.interrupted() == []
    assert len(store.metrics(run_ids=c.id)) == 1  # partial metrics stay until the next attempt


def test_write_errors(store):
    with pytest.raises(KeyError, match="add_runs"):
        store.start_run("missing")
    with pytest.raises(KeyError):
        store.log_metrics("missing", [(0, "x", 1.0)])
    a = cfg()
    store.add_runs(None, [(a.id, a)])
    with pytest.raises(ValueError, match="done, diverged, failed"):
        store.finish_run(a.id, "ok", {})
    with pytest.raises(ConfigError, match="'nope'.*stored sweeps"):
        store.runs(sweep="nope")
    with pytest.raises(ConfigError, match="status 'ok'"):
        store.runs(status="ok")
    assert store.status_of(a.id) == {a.id: "pending"}  # nothing half-applied


def test_fork_child_writes_through_its_own_connection(store):
    a = cfg()
    store.add_runs(None, [(a.id, a)])
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            store.log_metrics(a.id, [(1, "train/loss", 2.0)])
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.metrics().value.tolist() == [2.0]


def test_not_a_store_is_a_config_error(tmp_path, monkeypatch):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database at all, just text\n" * 200)
    with pytest.raises(ConfigError, match="junk.db"):
        Store(junk)
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE t (x)")
    with pytest.raises(ConfigError, match="foreign.db.*not a proxylab store"):
        Store(foreign)
    newer = tmp_path / "newer.db"
    Store(newer).close()
    with sqlite3.connect(newer) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(ConfigError, match="newer.db.*schema version"):
        Store(newer)
    with pytest.raises(ConfigError, match="is a directory"):
        Store(tmp_path)
    with pytest.raises(ConfigError, match="missing.db: no such store"):
        load(tmp_path / "missing.db")
    assert not (tmp_path / "missing.db").exists()
    monkeypatch.setenv("PROXYLAB_DB", str(tmp_path / "env.db"))
    assert default_db_path() == tmp_path / "env.db"
    with pytest.raises(ConfigError, match="env.db: no such store"):
        load()  # load() follows $PROXYLAB_DB and does not create it
    Store().close()  # env path is used and created
    assert (tmp_path / "env.db").exists()
    with load() as s:
        assert s.path == tmp_path / "env.db"
    monkeypatch.delenv("PROXYLAB_DB")
    assert str(default_db_path()) == "proxylab.db"


def test_export_parquet_round_trip(filled, tmp_path):
    store, *_ = filled
    paths = export(store, tmp_path / "out" / "results", "parquet")
    assert paths == {"runs": tmp_path / "out" / "results.parquet",
                     "metrics": tmp_path / "out" / "results.metrics.parquet"}
    assert_same(pd.read_parquet(paths["runs"]), store.runs())
    pd.testing.assert_frame_equal(pd.read_parquet(paths["metrics"]), store.metrics())
    one = export(store, tmp_path / "seeds.parquet", "parquet", sweep="seeds")
    assert_same(pd.read_parquet(one["runs"]), store.runs(sweep="seeds"))
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [
        "proxylab.db", "proxylab.db-shm", "proxylab.db-wal", "results.metrics.parquet",
        "results.parquet", "seeds.metrics.parquet", "seeds.parquet"]  # no temp files left


def test_export_csv_round_trip(filled, tmp_path):
    store, *_ = filled
    paths = export(store, tmp_path / "results.csv", "csv")
    times = ["created", "started", "finished"]
    back = pd.read_csv(paths["runs"], dtype={"run_id": str}, parse_dates=times)
    want = store.runs().replace("", float("nan"))  # CSV cannot tell '' from missing
    assert_same(back, want)
    metrics = pd.read_csv(paths["metrics"], dtype={"run_id": str})
    pd.testing.assert_frame_equal(metrics, store.metrics(), check_dtype=False)


def test_export_bad_input_writes_nothing(filled, tmp_path):
    store, *_ = filled
    with pytest.raises(ConfigError, match="--format 'xlsx'.*parquet, csv"):
        export(store, tmp_path / "r.xlsx", "xlsx")
    with pytest.raises(ConfigError, match="--out .*'.csv' does not match --format parquet"):
        export(store, tmp_path / "r.csv", "parquet")
    with pytest.raises(ConfigError, match="sweep 'nope'"):
        export(store, tmp_path / "r.csv", "csv", sweep="nope")
    assert not list(tmp_path.glob("r*"))
