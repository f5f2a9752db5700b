"""Two drivers on one store never run the same run twice; a dead driver's runs are taken over.

The end-to-end tests start two real `proxylab sweep` processes on one store; the store's
``meta.pid`` of each run says which driver ran it, ``attempt`` how often it was started.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from proxylab.config import load_config
from proxylab.store import Store
from proxylab.store.lease import owner_alive, owner_id

BIN = Path(sys.executable).parent
TINY = {"model.width": 16, "model.depth": 1, "model.heads": 2, "task.seq_len": 16,
        "train.batch_size": 2, "train.eval_batches": 1}


def sweep_file(path: Path, steps: int, lrs) -> Path:
    base = {**TINY, "train.steps": steps, "train.eval_every": steps}
    path.write_text('name = "two"\n[base]\n' + "".join(f'"{k}" = {v}\n' for k, v in base.items())
                    + f'[grid]\n"optim.lr" = {list(lrs)}\n')
    return path


def driver(sweep: Path, db: Path, lease_s: float = 5.0, quiet: bool = True) -> subprocess.Popen:
    env = {**os.environ, "PROXYLAB_LEASE_S": str(lease_s), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([str(BIN / "proxylab"), "sweep", str(sweep), "--db", str(db),
                             "--workers", "1", "--threads", "1"] + ["--quiet"] * quiet, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def runs(db: Path):
    with Store(db) as s:
        df = s.runs(sweep="two").set_index("run_id")
        pids = {rid: (s.run(rid)["meta"] or {}).get("pid") for rid in df.index}
    return df, pids


def configs(n: int):
    return [load_config(sets=[f"optim.lr={0.001 * (i + 1)}"]) for i in range(n)]


# ---- the claim itself ------------------------------------------------------------------
def test_claims_are_exclusive_until_the_owner_dies_or_its_lease_lapses(db_path):
    store = Store(db_path)
    cfgs = configs(3)
    store.add_runs(None, [(c.id, c.to_dict()) for c in cfgs])
    ids = [c.id for c in cfgs]
    me, other_host = owner_id(), "elsewhere.example:123:abcd"
    assert store.claim(ids[:2], me, 60) == ids[:2]
    assert store.claim(ids, other_host, 60) == ids[2:]        # held ones are not taken
    assert store.claim(ids, me, 60) == ids[:2]                # a live owner re-claims its own
    store.renew_claims(other_host, -1)                        # its lease lapses
    assert store.claim(ids, me, 60) == ids                    # ...so it is taken over
    store.start_run(ids[0])
    store.finish_run(ids[0], "done", {})
    assert store.claim(ids, other_host, 60) == []             # finished runs: never again
    store.release_claims(me)
    assert store.claim(ids, other_host, 60) == ids[1:]


def test_a_dead_local_owner_needs_no_lease_to_lapse(db_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = owner_id().split(":")[0]
    ghost = f"{host}:{dead.pid}:0000"
    assert not owner_alive(ghost) and owner_alive(owner_id())
    store = Store(db_path)
    cfg = configs(1)[0]
    store.add_runs(None, [(cfg.id, cfg.to_dict())])
    assert store.claim([cfg.id], ghost, 3600) == [cfg.id]
    assert store.claim([cfg.id], owner_id(), 60) == [cfg.id]


# ---- two real drivers --------------------------------------------------------------------
@pytest.mark.slow
def test_two_drivers_started_together_run_every_run_once(tmp_path):
    sweep, db = sweep_file(tmp_path / "s.toml", 20, [0.001, 0.002, 0.003, 0.004]), tmp_path / "p.db"
    a, b = driver(sweep, db), driver(sweep, db)
    out = [p.communicate(timeout=300)[0] for p in (a, b)]
    assert a.returncode == 0 and b.returncode == 0, out
    df, pids = runs(db)
    assert set(df["status"]) == {"done"}
    assert set(df["attempt"]) == {1}, df["attempt"]           # nobody ran a run twice
    assert set(pids.values()) <= {a.pid, b.pid}


def _first_state(db: Path, want, timeout: float = 240):
    """The sweep's runs (indexed by run id) once `want(df)` holds; None on timeout."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if db.exists():
            with Store(db) as s:
                df = s.runs(sweep="two") if s.sweeps()["name"].eq("two").any() else None
            if df is not None and want(df):
                return df.set_index("run_id")
        time.sleep(0.2)
    return None


@pytest.mark.slow
def test_kill_9_of_one_driver_the_other_takes_over(tmp_path):
    sweep, db = sweep_file(tmp_path / "s.toml", 800, [0.001, 0.002, 0.003]), tmp_path / "p.db"
    a = driver(sweep, db, lease_s=600)    # a long lease: only the dead pid frees its runs early
    assert _first_state(db, lambda df: (df["status"] == "running").any()) is not None
    b = driver(sweep, db, lease_s=600, quiet=False)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(b.stdout), daemon=True)
    reader.start()
    deadline = time.time() + 120
    while not any("held by another driver" in ln for ln in lines) and time.time() < deadline:
        assert b.poll() is None, lines
        time.sleep(0.1)
    assert any("held by another driver" in ln for ln in lines), "B never waited on A"
    state = _first_state(db, lambda df: (df["status"] == "done").any()
                         and (df["status"] == "running").any())
    assert state is not None, "driver A never had a run done and one running"
    with Store(db) as s:
        assert (s.runs(sweep="two")["attempt"] <= 1).all()   # B has not touched A's runs
    a.kill()                              # kill -9
    a.wait()
    assert b.wait(timeout=300) == 0, lines
    reader.join(timeout=10)
    assert state.loc[state["status"] == "done"].shape[0] < 3    # A left work behind
    df, pids = runs(db)
    assert set(df["status"]) == {"done"}
    done_by_a = [r for r in state.index if state.loc[r, "status"] == "done"]
    assert all(df.loc[r, "attempt"] == 1 and pids[r] == a.pid for r in done_by_a)
    for r in df.index:
        if r not in done_by_a:
            assert pids[r] == b.pid                       # B took over the rest
            assert df.loc[r, "attempt"] == (2 if state.loc[r, "status"] == "running" else 1)


@pytest.mark.parametrize("value", ["soon", "-"])
def test_bad_lease_setting_is_bad_input(tmp_path, value):
    sweep, db = sweep_file(tmp_path / "s.toml", 2, [0.001]), tmp_path / "p.db"
    env = {**os.environ, "PROXYLAB_LEASE_S": value}
    r = subprocess.run([str(BIN / "proxylab"), "sweep", str(sweep), "--db", str(db), "--quiet"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "PROXYLAB_LEASE_S" in r.stderr
    assert not db.exists()
