"""End to end: the real `proxylab` command on real files, including kill -9 and resume."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

TINY = ["--set", "model.width=32", "--set", "model.depth=1", "--set", "model.heads=2",
        "--set", "task.seq_len=32", "--set", "train.batch_size=4", "--set", "train.eval_batches=2"]


def proxylab(*args, db=None, check=True, timeout=300, **kw):
    cmd = [sys.executable, "-m", "proxylab.cli", *map(str, args)]
    if db is not None:
        cmd += ["--db", str(db)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"{cmd} -> {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def write_sweep(path: Path, name="e2e", lrs=(1e-3, 3e-3, 1e-2, 3e-2), steps=60):
    path.write_text(f"""
name = "{name}"
[base]
"model.width" = 32
"model.depth" = 1
"model.heads" = 2
"task.seq_len" = 32
"train.batch_size" = 4
"train.steps" = {steps}
"train.eval_every" = 20
"train.log_every" = 10
"train.eval_batches" = 2
[grid]
"optim.lr" = {list(lrs)}
""")
    return path


def test_run_prints_id_losses_and_throughput(db_path):
    p = proxylab("run", *TINY, "--set", "train.steps=20", "--set", "optim.lr=3e-3", db=db_path)
    assert "run " in p.stdout and "val loss" in p.stdout and "tokens/s" in p.stdout
    rid = p.stdout.split()[1]
    show = json.loads(proxylab("show", rid, "--json", db=db_path).stdout)
    assert show["status"] == "done"
    for key in ("proxylab_version", "torch_version", "device", "threads", "data_fingerprint"):
        assert show.get(f"meta.{key}") not in (None, ""), key
    assert "meta.git_commit" in show
    # the same config again is recognised by its id (content hash) and not trained again
    again = proxylab("run", *TINY, "--set", "train.steps=20", "--set", "optim.lr=3e-3", db=db_path)
    assert again.stdout.split()[1] == rid and "already in the store" in again.stdout
    assert json.loads(proxylab("show", rid[:6], "--json", db=db_path).stdout)["attempt"] == 1
    forced = proxylab("run", *TINY, "--set", "train.steps=20", "--set", "optim.lr=3e-3", "--force",
                      db=db_path)
    assert "already" not in forced.stdout
    assert json.loads(proxylab("show", rid, "--json", db=db_path).stdout)["attempt"] == 2


def _db_rows(db, sql):
    con = sqlite3.connect(db)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_sweep_survives_sigkill_and_resumes(tmp_path, db_path):
    spec = write_sweep(tmp_path / "s.toml", steps=120)
    cmd = [sys.executable, "-m", "proxylab.cli", "sweep", str(spec), "--workers", "2",
           "--db", str(db_path), "--quiet"]
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    # kill the driver once at least one run is finished and another is mid-way
    while time.time() < deadline:
        time.sleep(0.3)
        if proc.poll() is not None:
            pytest.fail(f"sweep ended before it could be killed: {proc.stderr.read()}")
        if not db_path.exists():
            continue
        try:
            st = dict(_db_rows(db_path, "select status, count(*) from runs group by status"))
        except sqlite3.OperationalError:
            continue
        if st.get("done", 0) + st.get("diverged", 0) >= 1 and st.get("running", 0) >= 1:
            break
    else:
        pytest.fail("the sweep never reached a state worth killing")
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=60)   # EOF once the orphaned workers have exited too
    assert "leaked" not in err and "Traceback" not in err, err
    before = {r[0]: r[1:] for r in _db_rows(db_path, "select run_id, status, finished from runs")}
    finished_before = {k: v for k, v in before.items() if v[0] in ("done", "diverged")}
    assert any(v[0] == "running" for v in before.values())

    dry = proxylab("sweep", spec, "--dry-run", db=db_path).stdout
    assert f"{len(finished_before)} already finished" in dry

    proxylab("sweep", spec, "--workers", "2", "--quiet", db=db_path)
    runs = pd.DataFrame(_db_rows(db_path, "select run_id, status, finished, attempt from runs"),
                        columns=["run_id", "status", "finished", "attempt"])
    assert len(runs) == 4 and set(runs.status) <= {"done", "diverged"}
    for rid, (status, finished) in finished_before.items():   # finished runs were not redone
        row = runs[runs.run_id == rid].iloc[0]
        assert row.finished == finished and row.attempt == 1
    # the interrupted runs were redone from scratch: their stored curves equal a fresh,
    # uninterrupted run of the same config (same seed, one thread, as in a pool worker)
    from proxylab.config import from_dict
    from proxylab.train.loop import MemoryReporter, train

    interrupted = [rid for rid, v in before.items() if v[0] == "running"]
    for rid in interrupted[:1]:
        (cfg_json,) = _db_rows(db_path, f"select config_json from runs where run_id='{rid}'")[0]
        fresh = MemoryReporter()
        train(from_dict(json.loads(cfg_json)), fresh)
        want = {(s, k): v for s, k, v in fresh.rows if k in ("val/loss", "train/loss")}
        got = {(s, k): v for s, k, v in _db_rows(
            db_path, f"select step, key, value from metrics where run_id='{rid}' "
                     "and key in ('val/loss', 'train/loss')")}
        assert got.keys() == want.keys()
        for key, v in want.items():
            assert got[key] == pytest.approx(v, rel=1e-5), key
    for rid, status in zip(runs.run_id, runs.status):
        steps = sorted(s for (s,) in _db_rows(
            db_path, f"select step from metrics where run_id='{rid}' and key='val/loss'"))
        if status == "done":
            assert steps == [0, 20, 40, 60, 80, 100, 120], (rid, steps)
        tl = sorted(s for (s,) in _db_rows(
            db_path, f"select step from metrics where run_id='{rid}' and key='train/loss'"))
        if status == "done":
            assert tl == list(range(10, 121, 10)), (rid, tl)
    # a third start has nothing to do
    out = proxylab("sweep", spec, "--quiet", db=db_path).stdout
    assert "4 already finished" in out


def test_ls_show_export_report(tmp_path, db_path):
    spec = write_sweep(tmp_path / "s.toml", name="small", lrs=(1e-3, 1e-2), steps=20)
    proxylab("sweep", spec, "--quiet", db=db_path)
    ls = proxylab("ls", "--sweep", "small", db=db_path).stdout
    assert ls.count("done") == 2
    runs = json.loads(proxylab("ls", "--json", db=db_path).stdout)
    assert len(runs) == 2
    out = tmp_path / "x.parquet"
    proxylab("export", "--format", "parquet", "--out", out, db=db_path)
    assert out.exists()
    rep = tmp_path / "rep"
    proxylab("report", "small", "--out", rep, db=db_path)
    summary = json.loads((rep / "summary.json").read_text())
    assert summary and (rep / "index.html").exists()
    assert list(rep.glob("*.png"))


BAD_INPUTS = [
    (["run", "--set", "train.device=cuda"], "train.device"),
    (["sweep", "examples/lr.toml", "--backend", "ray", "--cpus-per-run", "0"], "--cpus-per-run"),
    (["sweep", "examples/lr.toml", "--backend", "ray", "--cpus-per-run", "0", "--dry-run"],
     "--cpus-per-run"),                  # a dry run checks the backend the same way
    (["sweep", "examples/lr.toml", "--workers", "-3"], "--workers"),
    (["run", "--set", "optim.lrr=1"], "optim.lrr"),
    (["run", "--set", "train.steps=ten"], "train.steps"),
    (["run", "--set", "optim.lr=-1"], "optim.lr"),
    (["run", "--set", "optim.name=adamz"], "optim.name"),
    (["run", "--set", "task.path=/nonexistent/corpus.txt"], "/nonexistent/corpus.txt"),
]


@pytest.mark.parametrize("args, needle", BAD_INPUTS)
def test_bad_input_exit_2_and_nothing_written(db_path, args, needle):
    if "train.device=cuda" in args:
        import torch
        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    p = proxylab(*args, db=db_path, check=False, cwd=Path(__file__).parents[1])
    assert p.returncode == 2, p.stderr
    assert needle in p.stderr
    assert not db_path.exists()


def test_corrupt_token_file_is_bad_input(tmp_path, db_path):
    bad = tmp_path / "train.bin"
    bad.write_bytes(b"\x00" * 7)          # an odd number of bytes cannot be uint16 tokens
    p = proxylab("run", "--set", f"task.path={bad}", db=db_path, check=False)
    assert p.returncode == 2 and str(bad) in p.stderr
    assert not db_path.exists()


def test_bad_sweeps_exit_2_store_unchanged(tmp_path, db_path):
    good = write_sweep(tmp_path / "good.toml", name="good", lrs=(1e-3,), steps=5)
    proxylab("sweep", good, "--quiet", db=db_path)
    before = _db_rows(db_path, "select run_id, status from runs order by run_id")
    for name, body, needle in [
        ("axis.toml", 'name = "b"\n[grid]\n"optim.lrr" = [1e-3]\n', "optim.lrr"),
        ("empty.toml", 'name = "b"\n[grid]\n"optim.lr" = []\n', "empty"),
        ("syntax.toml", 'name = "b"\n[grid\n', "not valid TOML"),
    ]:
        f = tmp_path / name
        f.write_text(body)
        p = proxylab("sweep", f, db=db_path, check=False)
        assert p.returncode == 2, (name, p.stderr)
        assert needle in p.stderr and name in p.stderr
    p = proxylab("sweep", tmp_path / "missing.toml", db=db_path, check=False)
    assert p.returncode == 2 and "missing.toml" in p.stderr
    assert _db_rows(db_path, "select run_id, status from runs order by run_id") == before
    assert _db_rows(db_path, "select name from sweeps") == [("good",)]


def test_ctrl_c_stops_workers_at_once(tmp_path, db_path):
    spec = write_sweep(tmp_path / "c.toml", name="ctrlc", lrs=(1e-3, 1e-2, 3e-2), steps=3000)
    proc = subprocess.Popen([sys.executable, "-m", "proxylab.cli", "sweep", str(spec),
                             "--workers", "2", "--db", str(db_path), "--quiet"],
                            start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while time.time() < deadline:          # wait until both workers are training
        time.sleep(0.3)
        try:
            if _db_rows(db_path, "select count(*) from runs where status='running'")[0][0] >= 2:
                break
        except sqlite3.OperationalError:
            pass
    os.killpg(proc.pid, signal.SIGINT)    # what a terminal's Ctrl-C does
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "resume" in err
    time.sleep(0.5)
    alive = subprocess.run(["ps", "-o", "pid=,stat=,args=", "-g", str(proc.pid)], capture_output=True, text=True).stdout
    running = [ln for ln in alive.splitlines() if ln.split()[1][0] != "Z"]  # zombies are dead
    assert running == [], f"workers left behind: {alive}"
    # the interrupted runs are left 'running' for the next start to redo (see the kill -9 test)
    statuses = dict(_db_rows(db_path, "select run_id, status from runs"))
    assert sorted(statuses.values()) == ["pending", "running", "running"]


def test_changed_data_behind_a_path_is_refused(tmp_path, db_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 200)
    args = ["run", *TINY, "--set", "train.steps=5", "--set", f"task.path={corpus}"]
    proxylab(*args, db=db_path)
    corpus.write_text("pack my box with five dozen liquor jugs! " * 200)
    p = proxylab(*args, db=db_path, check=False)
    assert p.returncode == 2 and "fingerprint" in p.stderr
    # the advice fits a `run` user too: there is no sweep name to change
    assert "sweep name" not in p.stderr and "--db" in p.stderr and "--force" in p.stderr


def test_changed_sweep_spec_relinks_runs(tmp_path, db_path):
    spec = write_sweep(tmp_path / "s.toml", name="grow", lrs=(1e-3, 1e-2), steps=5)
    proxylab("sweep", spec, "--quiet", db=db_path)
    write_sweep(spec, name="grow", lrs=(1e-2, 3e-2), steps=5)
    p = proxylab("sweep", spec, db=db_path)
    assert "1 earlier runs are no longer part of it" in p.stdout
    runs = json.loads(proxylab("ls", "--sweep", "grow", "--json", db=db_path).stdout)
    assert sorted(r["optim.lr"] for r in runs) == [1e-2, 3e-2]
    assert len(json.loads(proxylab("ls", "--json", db=db_path).stdout)) == 3   # nothing deleted


# ----------------------------------------------------------------------------------
# output conventions (issue 7): one per format


def test_output_formats_are_consistent(tmp_path, db_path):
    spec = write_sweep(tmp_path / "s.toml", name="fmt", lrs=(1e-3,), steps=5)
    proxylab("sweep", spec, "--quiet", db=db_path)
    solo = proxylab("run", *TINY, "--set", "train.steps=5", db=db_path).stdout.split()[1]
    # --json: flat records, ISO 8601 times, null (not NaN) for a standalone run's sweep
    runs = json.loads(proxylab("ls", "--json", db=db_path).stdout)
    by_id = {r["run_id"]: r for r in runs}
    assert by_id[solo]["sweep"] is None
    for r in runs:
        assert r["created"].endswith("+00:00") and "T" in r["created"]
        assert r["finished"].endswith("+00:00")
        assert "optim.lr" in r and "final_val_loss" in r
        assert not any(isinstance(v, dict) for v in r.values())
    show = json.loads(proxylab("show", solo, "--json", db=db_path).stdout)
    assert not any(isinstance(v, dict) for v in show.values())
    # the same keys and values as its ls record (show adds meta.* and the error text)
    assert {k: v for k, v in show.items() if k in by_id[solo]} == by_id[solo]
    assert show["created"] == by_id[solo]["created"] and show["meta.device"] == "cpu"
    # text: no NaN, whole tokens/s, "-" for no sweep
    ls = proxylab("ls", db=db_path).stdout
    assert "NaN" not in ls and "nan" not in ls
    row = next(ln for ln in ls.splitlines() if ln.startswith(solo))
    assert row.split()[1] == "-"
    assert row.split()[-1].isdigit()                       # tokens/s as a whole number
    text = proxylab("show", solo, db=db_path).stdout
    assert not text.lstrip().startswith("{")              # no JSON block: `key  value` lines
    lines = dict(ln.split(None, 1) for ln in text.splitlines() if ln.strip())
    assert set(lines) == set(show)                        # the same flat keys as --json
    assert lines["status"] == "done" and lines["optim.lr"] == "0.003"
    assert lines["created"] == show["created"]
    assert lines["tokens_per_s"].isdigit()


def test_labels_name_each_axis_without_ambiguity(tmp_path, db_path):
    spec = tmp_path / "names.toml"
    spec.write_text('name = "names"\n[base]\n"train.steps" = 2\n[grid]\n'
                    '"optim.name" = ["adamw", "lion"]\n"schedule.name" = ["cosine", "wsd"]\n'
                    '"optim.lr" = [1e-3]\n')
    out = proxylab("sweep", spec, "--dry-run", db=db_path).stdout
    assert "optim.name=lion schedule.name=wsd lr=0.001" in out
    assert " name=" not in out


def test_export_says_what_it_wrote(tmp_path, db_path):
    spec = write_sweep(tmp_path / "s.toml", name="ex", lrs=(1e-3, 3e-3), steps=5)
    proxylab("sweep", spec, "--quiet", db=db_path)
    out = proxylab("export", "--format", "csv", "--out", tmp_path / "lr", "--sweep", "ex",
                   db=db_path).stdout
    assert "exported 2 runs (sweep 'ex') as csv" in out
    assert f"runs (one row per run" in out and str(tmp_path / "lr.csv") in out
    assert "metrics (long form" in out and str(tmp_path / "lr.metrics.csv") in out
    assert "{" not in out and "PosixPath" not in out
    assert (tmp_path / "lr.csv").exists() and (tmp_path / "lr.metrics.csv").exists()


def test_keys_are_aligned_and_list_the_optimizers():
    out = proxylab("keys").stdout
    table = out.split("\n\n")[0].splitlines()
    starts = {ln.index(ln.split()[1]) for ln in table}       # the default column
    assert len(starts) == 1, starts
    assert "optim.extra" in out
    from proxylab.optim import REGISTRY
    for name in REGISTRY:
        assert f"\n  {name} " in out, name
    assert "adam_lr=0.003" in out and "free_steps=100" in out


def test_help_states_defaults_and_choices():
    study = proxylab("study", "--help").stdout
    from proxylab.studies import STUDIES
    assert all(name in study for name in STUDIES)
    assert "OUT/proxylab.db" in study and "--quick" in study and "default 2" in study
    sweep = proxylab("sweep", "--help").stdout
    assert "default 1" in sweep and "./proxylab.db" in sweep


def test_task_path_is_stored_absolute(tmp_path, db_path):
    (tmp_path / "a").mkdir()
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 200)
    args = ["run", *TINY, "--set", "train.steps=2"]
    first = proxylab(*args, "--set", "task.path=corpus.txt", db=db_path, cwd=tmp_path).stdout
    again = proxylab(*args, "--set", "task.path=../corpus.txt", db=db_path,
                     cwd=tmp_path / "a").stdout
    rid = first.split()[1]
    assert again.split()[1] == rid and "already in the store" in again
    show = json.loads(proxylab("show", rid, "--json", db=db_path).stdout)
    assert show["task.path"] == str(corpus.resolve())
    # the built-in corpus keeps its path "" and its id
    from proxylab.config import load_config
    assert load_config(sets=["task.path="]).id == load_config().id


def test_worker_pool_in_a_script_without_a_main_guard(tmp_path):
    """Pool workers never re-import the user's script: no __main__ guard is needed."""
    script = tmp_path / "user_script.py"
    script.write_text(
        "import proxylab as pl\n"
        "print('script body ran', flush=True)\n"
        "out = pl.sweep({'name': 'g', 'base': {'model.width': 16, 'model.depth': 1,\n"
        "    'model.heads': 2, 'task.seq_len': 16, 'train.batch_size': 2, 'train.steps': 3,\n"
        "    'train.eval_batches': 1}, 'grid': {'optim.lr': [1e-3, 3e-3]}}, db='x.db', workers=2)\n"
        "print('counts', out.counts())\n")
    p = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("script body ran") == 1          # run once, by python, not by workers
    assert "counts {'done': 2}" in p.stdout
    assert "Traceback" not in p.stderr
