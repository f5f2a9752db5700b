"""Checkpoints: atomic files, retention, loading by (run id, step), and a resume after kill -9
whose metrics equal an uninterrupted run's bit for bit."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import proxylab as pl
from proxylab.config import ConfigError, load_config
from proxylab.store import Store
from proxylab.train.checkpoint import Checkpointer, checkpoint_root, list_steps, run_dir
from proxylab.train.loop import MemoryReporter, train

SMALL = ["task.name=modular", "task.p=23", "task.train_frac=0.5", "task.full_batch=true",
         "model.name=mlp", "model.width=32", "model.depth=1", "optim.lr=3e-3",
         "optim.weight_decay=0.5", "schedule.warmup=5", "train.eval_every=10",
         "train.log_every=5", "train.threads=1",
         "train.diverge_factor=1e6"]   # memorizing drives val loss far above its initial value
TIMING = {"wall_s"}


def _rows(rows):
    return {(s, k): v for s, k, v in rows if k not in TIMING}


class Collect(MemoryReporter):
    """Rows (MemoryReporter), the run's meta, and an optional interruption after a step."""

    def __init__(self, stop_at=None):
        super().__init__()
        self.meta, self.stop_at = None, stop_at

    def started(self, meta):
        self.meta = meta

    def progress(self, step, total):
        if self.stop_at is not None and step == self.stop_at:
            raise KeyboardInterrupt   # an interruption between two steps


def test_checkpoint_root_sits_next_to_the_store(tmp_path):
    assert checkpoint_root(tmp_path / "a.db") == tmp_path / "a.db-checkpoints"
    assert run_dir("abc", tmp_path / "a.db") == tmp_path / "a.db-checkpoints" / "abc"


def test_off_by_default_keeps_run_ids(tmp_path, monkeypatch):
    cfg = load_config(sets=SMALL)
    assert cfg.train.checkpoint_every == 0
    # added keys: at their defaults they leave the id alone (set, they are part of it)
    assert load_config(sets=SMALL + ["train.checkpoint_every=0", "train.checkpoint_keep=2"]).id == cfg.id
    assert load_config(sets=SMALL + ["train.checkpoint_every=10"]).id != cfg.id
    monkeypatch.setenv("PROXYLAB_CHECKPOINT_DIR", str(tmp_path / "ck"))
    train(cfg.replace(**{"train.steps": 20}), Collect())
    assert not (tmp_path / "ck").exists()


def test_in_process_resume_is_bit_identical_and_retention_holds(tmp_path, monkeypatch):
    monkeypatch.setenv("PROXYLAB_CHECKPOINT_DIR", str(tmp_path / "ck"))
    cfg = load_config(sets=SMALL + ["train.steps=120", "train.checkpoint_every=10",
                                    "train.checkpoint_keep=2", "train.checkpoint_keep_every=50"])
    ref = Collect()
    monkeypatch.setenv("PROXYLAB_CHECKPOINT_DIR", str(tmp_path / "ref"))
    res_ref = train(cfg, ref)
    # retention: the newest two plus multiples of 50
    assert list_steps(cfg.id, None) == [50, 100, 110, 120]
    assert not [f for f in (tmp_path / "ref" / cfg.id).iterdir() if f.name.endswith(".tmp")]

    monkeypatch.setenv("PROXYLAB_CHECKPOINT_DIR", str(tmp_path / "ck"))
    with pytest.raises(KeyboardInterrupt):
        train(cfg, Collect(stop_at=37))       # dies after step 37: newest checkpoint is 30
    assert list_steps(cfg.id, None)[-1] == 30
    rep = Collect()
    res = train(cfg, rep)
    assert rep.meta["resumed_from_step"] == 30
    assert _rows(rep.rows) == _rows(ref.rows)
    assert len(rep.rows) == len(ref.rows)      # each row once: no gap, no duplicate
    for k in ("final_train_loss", "final_val_loss", "final_val_acc", "tokens", "best_val_loss"):
        assert res.summary[k] == res_ref.summary[k], k


def test_load_checkpoint_by_run_and_step(tmp_path, monkeypatch):
    monkeypatch.setenv("PROXYLAB_CHECKPOINT_DIR", "")   # pl.run points it at its store; undone after
    db = tmp_path / "s.db"
    cfg = load_config(sets=SMALL + ["train.steps=40", "train.checkpoint_every=20",
                                    "train.checkpoint_keep_every=20"])
    pl.run(cfg, db=db)
    assert pl.checkpoint_steps(cfg.id, db=db) == [20, 40]
    ck = pl.load_checkpoint(cfg.id, 20, db=db)
    assert ck.step == 20 and ck.config == cfg
    model = ck.model()
    task = ck.task()
    x, y = task.val_batches(4096, 1)[0]
    with torch.no_grad():
        acc = float((model(x)[:, -1].argmax(-1) == y[:, -1]).double().mean())
    stored = Store(db).curves(cfg.id, keys=["val/acc"]).loc[(cfg.id, 20), "val/acc"]
    assert acc == pytest.approx(stored, abs=1e-12)
    assert pl.load_checkpoint(cfg.id, db=db).step == 40
    with pytest.raises(ConfigError, match="stored steps: 20, 40"):
        pl.load_checkpoint(cfg.id, 30, db=db)
    with pytest.raises(ConfigError, match="no checkpoints"):
        pl.load_checkpoint("feedbeef0000", db=db)


def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(tmp_path, monkeypatch):
    monkeypatch.setenv("PROXYLAB_CHECKPOINT_DIR", str(tmp_path / "ck"))
    cfg = load_config(sets=SMALL + ["train.steps=30", "train.checkpoint_every=10"])
    with pytest.raises(KeyboardInterrupt):
        train(cfg, Collect(stop_at=25))
    (tmp_path / "ck" / cfg.id / "step_00000020.pt").write_bytes(b"torn")
    ck = Checkpointer(cfg, "x", Collect())
    assert ck.restore(*_dummy(cfg)) is None         # another data fingerprint: start over
    rep = Collect()
    train(cfg, rep)
    assert rep.meta["resumed_from_step"] == 10


def _dummy(cfg):
    from proxylab.models import build_model
    from proxylab.optim import build_optimizer
    m = build_model(cfg.model, vocab_size=25, seq_len=4)
    return m, build_optimizer(m, cfg.optim), torch.Generator(), "cpu"


def _cli(*args, **kw):
    return [sys.executable, "-m", "proxylab.cli", *map(str, args)]


@pytest.mark.slow
def test_resume_after_kill_9_is_bit_identical(tmp_path):
    """A real `proxylab run` process is killed with SIGKILL mid-run; run again, it resumes from
    its last checkpoint and its stored metrics equal an uninterrupted run's."""
    sets = SMALL + ["task.p=59", "model.width=128", "train.steps=600",
                    "train.checkpoint_every=50"]
    args = [a for s in sets for a in ("--set", s)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref_db, db = tmp_path / "ref.db", tmp_path / "run.db"
    subprocess.run(_cli("run", *args, "--db", ref_db), env=env, check=True, capture_output=True,
                   timeout=600)
    cfg = load_config(sets=sets)
    proc = subprocess.Popen(_cli("run", *args, "--db", db), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while True:
        steps = list_steps(cfg.id, db)
        if steps and steps[-1] >= 200:
            break
        if proc.poll() is not None:
            pytest.fail(f"the run ended before it could be killed: {proc.stderr.read()!r}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("no checkpoint appeared")
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = list_steps(cfg.id, db)[-1]
    assert killed_at < 600
    assert Store(db).status_of([cfg.id])[cfg.id] == "running"
    subprocess.run(_cli("run", *args, "--db", db), env=env, check=True, capture_output=True,
                   timeout=600)
    s, r = Store(db), Store(ref_db)
    assert s.status_of([cfg.id])[cfg.id] == "done"
    assert s.run(cfg.id)["meta"]["resumed_from_step"] >= killed_at
    a = s.metrics(cfg.id)
    b = r.metrics(cfg.id)
    a, b = a[~a.key.isin(TIMING)].reset_index(drop=True), b[~b.key.isin(TIMING)].reset_index(drop=True)
    assert len(a) == len(b) and a.equals(b)     # exact float equality, NaN positions included
    sa, sb = s.run(cfg.id)["summary"], r.run(cfg.id)["summary"]
    for k in ("final_train_loss", "final_val_loss", "final_val_acc", "tokens"):
        assert sa[k] == sb[k], k


def test_stop_at_val_acc_ends_at_the_first_evaluation_past_the_goal(tmp_path, monkeypatch):
    monkeypatch.setenv("PROXYLAB_CHECKPOINT_DIR", str(tmp_path / "ck"))
    # digits: validation accuracy climbs from chance (~0.1) past 0.5 within a few dozen steps
    base = load_config(sets=["task.name=digits", "model.name=mlp", "model.width=32",
                             "train.batch_size=32", "optim.lr=3e-3", "train.steps=80",
                             "train.eval_every=10", "train.threads=1", "train.checkpoint_every=33"])
    full = Collect()
    train(base, full)
    acc = {s: v for s, k, v in full.rows if k == "val/acc"}
    goal = 0.5
    first = min(s for s, v in acc.items() if v >= goal)
    assert 0 < first < 80 and first % 33        # not a checkpoint step: the stop saves one
    cfg = base.replace(**{"train.stop_at_val_acc": goal})
    assert cfg.id != base.id
    rep = Collect()
    res = train(cfg, rep)
    assert res.status == "done" and res.summary["stopped_early"]
    assert res.summary["steps_done"] == first
    assert res.summary["final_val_acc"] == acc[first]
    # the stopped run's rows are the uninterrupted run's rows up to that step
    assert _rows(rep.rows) == {k: v for k, v in _rows(full.rows).items() if k[0] <= first}
    assert list_steps(cfg.id, None)[-1] == first                  # its last weights are on disk
    # run again (as after a kill -9 between that save and the store's "done"): it resumes at
    # its stop and trains no further
    again = Collect()
    res2 = train(cfg, again)
    assert again.meta["resumed_from_step"] == first and res2.summary["stopped_early"]
    assert res2.summary["steps_done"] == first and _rows(again.rows) == _rows(rep.rows)
    assert res2.summary["final_val_acc"] == acc[first]
    assert not train(base.replace(**{"train.steps": 20, "train.checkpoint_every": 0}),
                     Collect()).summary["stopped_early"]
    with pytest.raises(ConfigError, match="stop_at_val_acc"):
        load_config(sets=SMALL + ["train.stop_at_val_acc=1.5"])
    with pytest.raises(ConfigError, match="stop_at_val_acc: task 'text' records no accuracy"):
        load_config(sets=["task.name=text", "train.stop_at_val_acc=0.9"])
