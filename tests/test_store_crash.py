"""proxylab.store across processes: kill -9 mid-write, readers during writes, two writers."""

import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from proxylab.store import Store

# A writer process: logs one step of N_KEYS metrics per transaction, forever (STEPS < 0) or
# STEPS times, pausing PAUSE seconds between steps.
WRITER = """
import sys, time
from proxylab.store import Store
path, run_id, n_keys, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
pause = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
store = Store(path)
step = 0
while steps < 0 or step < steps:
    store.log_metrics(run_id, [(step, f"k{i:04d}", step + i / n_keys) for i in range(n_keys)])
    if step == 2:
        print("ready", flush=True)
    step += 1
    time.sleep(pause)
"""

# Holds one transaction open with its pages spilled to the WAL (tiny page cache), then waits
# to be killed: the torn transaction must leave no trace.
HALF_WRITER = """
import sys, time
from proxylab.store import Store
store = Store(sys.argv[1])
store.log_metrics("r0", [(0, "whole", 1.0)])
with store._write() as c:
    c.execute("PRAGMA cache_size = 2")
    c.executemany("INSERT INTO metrics VALUES ('r0', ?, 'torn', 0.5)", [(s,) for s in range(1, 20000)])
    print("mid", flush=True)
    time.sleep(60)
"""


def spawn(script, *args):
    return subprocess.Popen([sys.executable, "-c", script, *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(proc, word):
    line = proc.stdout.readline()
    if word not in line:
        proc.kill()
        pytest.fail(f"writer did not start: {line!r} {proc.communicate()[1]}")


def kill9(proc):
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL


def prepared(db_path, *run_ids):
    with Store(db_path) as s:
        s.add_runs("crash", [(rid, {"train": {"seed": i}}) for i, rid in enumerate(run_ids)])
        for rid in run_ids:
            s.start_run(rid)


def steps_are_whole(store, run_id, n_keys):
    """Every stored step has all its keys and steps run 0..max without holes; -> #steps."""
    m = store.metrics(run_ids=run_id)
    per_step = m.groupby("step").size()
    assert (per_step == n_keys).all(), per_step[per_step != n_keys]
    assert list(per_step.index) == list(range(len(per_step)))
    return len(per_step)


def integrity_ok(db_path):
    with sqlite3.connect(db_path) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_sigkill_during_metric_writes_keeps_whole_transactions(db_path):
    n_keys = 1500  # large transactions: the kill most likely lands inside one
    prepared(db_path, "r0")
    proc = spawn(WRITER, db_path, "r0", n_keys, -1)
    wait_for(proc, "ready")
    time.sleep(0.3)
    kill9(proc)
    assert db_path.with_name(db_path.name + "-wal").exists()  # recovery goes through the WAL
    assert integrity_ok(db_path)
    with Store(db_path) as store:
        assert steps_are_whole(store, "r0", n_keys) >= 3
        assert store.interrupted() == ["r0"]  # the crashed run is visible as such


def test_sigkill_inside_an_open_transaction_leaves_no_trace(db_path):
    prepared(db_path, "r0")
    proc = spawn(HALF_WRITER, db_path)
    wait_for(proc, "mid")
    assert db_path.with_name(db_path.name + "-wal").stat().st_size > 100_000  # torn frames on disk
    kill9(proc)
    assert integrity_ok(db_path)
    with Store(db_path) as store:
        m = store.metrics()
        assert list(m.key) == ["whole"]
        store.log_metrics("r0", [(1, "after", 2.0)])  # the store is writable again
        assert len(store.metrics()) == 2


def test_reader_sees_consistent_snapshots_while_writer_writes(db_path):
    n_keys = 50
    prepared(db_path, "r0")
    proc = spawn(WRITER, db_path, "r0", n_keys, -1, 0.002)  # paced: the store stays small
    try:
        wait_for(proc, "ready")
        reader = Store(db_path)
        seen = []
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            seen.append(steps_are_whole(reader, "r0", n_keys))
            assert len(reader.runs()) == 1
        assert seen == sorted(seen) and len(set(seen)) > 1  # the writer was never blocked
        with reader.snapshot():  # an open read transaction does not block the writer either
            before = steps_are_whole(reader, "r0", n_keys)
            time.sleep(0.3)
            assert steps_are_whole(reader, "r0", n_keys) == before  # snapshot isolation
        assert steps_are_whole(reader, "r0", n_keys) > before
        reader.close()
    finally:
        kill9(proc)


@pytest.mark.timeout(60)
def test_two_writer_processes_lose_nothing(db_path):
    n_keys, steps = 50, 150
    prepared(db_path, "r0", "r1")
    procs = [spawn(WRITER, db_path, rid, n_keys, steps, 0.001) for rid in ("r0", "r1")]
    for p in procs:
        _, err = p.communicate(timeout=50)
        assert p.returncode == 0, err
    with Store(db_path) as store:
        assert steps_are_whole(store, "r0", n_keys) == steps
        assert steps_are_whole(store, "r1", n_keys) == steps
        assert len(store.metrics()) == 2 * steps * n_keys
