"""LocalExecutor: one terminal event per run, crash isolation, late final events, Ctrl-C.

The worker targets below live at module level so that workers can import them (a worker
gets the driver's sys.path, and pytest puts tests/ on it).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from proxylab.config import load_config
from proxylab.sweep import executors as ex
from proxylab.sweep.executors import LocalExecutor

TINY = ["model.width=16", "model.depth=1", "model.heads=2", "task.seq_len=16",
        "train.batch_size=2", "train.steps=5", "train.eval_every=5", "train.eval_batches=1"]
CRASH_LR = 0.0077       # the config with this learning rate kills its worker...
NEIGHBOUR_LR = 0.0033   # ...while the one with this learning rate runs beside it
LATE_LR = 0.0055        # the config with this learning rate sends its final event late
TERMINAL = ("finished", "failed", "abandoned")


def configs(lrs, steps=5):
    return [load_config(sets=[*TINY, f"train.steps={steps}", f"train.eval_every={steps}",
                              f"optim.lr={lr}"]) for lr in lrs]


def wait_for(path, timeout=10.0):
    deadline = time.time() + timeout
    while not os.path.exists(path) and time.time() < deadline:
        time.sleep(0.05)


def crash_beside_neighbour(cfg):
    """CRASH_LR kills its worker (as the OOM killer would) while NEIGHBOUR_LR is mid-run.

    Files order the two: the neighbour gets going, the crasher dies, and the neighbour then
    finishes in its own worker, untouched by its neighbour's death.
    """
    running = os.path.join(os.environ["EXECUTOR_TEST_DIR"], "neighbour-running")
    died = os.path.join(os.environ["EXECUTOR_TEST_DIR"], "crasher-died")
    if cfg.optim.lr == CRASH_LR:
        wait_for(running)
        open(died, "w").close()
        os._exit(1)
    if cfg.optim.lr != NEIGHBOUR_LR or os.path.exists(running):
        return ex._worker_run(cfg)

    def emit(ev):
        ex._emit(ev)
        if ev[0] == "progress" and ev[2][0] == 1:     # after 'started', metrics and a step
            open(running, "w").close()
            wait_for(died)
    ex.execute_one(cfg, emit)


def late_final_event(cfg):
    """Sends the run's finished/failed event from a thread 3 s after the future completed."""
    if cfg.optim.lr != LATE_LR:
        return ex._worker_run(cfg)

    def emit(ev):
        if ev[0] in ("finished", "failed"):
            threading.Thread(target=lambda: (time.sleep(3.0), ex._emit(ev))).start()
        else:
            ex._emit(ev)
    ex.execute_one(cfg, emit)


def terminal_events(events):
    out: dict[str, list] = {}
    for kind, rid, payload in events:
        if kind in TERMINAL:
            out.setdefault(rid, []).append((kind, payload))
    return out


def children():
    """This process's live child processes (zombies are dead: they do not count)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue                   # gone meanwhile
        if int(fields[1]) == os.getpid() and fields[0] != "Z":
            out.append(stat.parent.name)
    return out


def assert_no_children(timeout=5.0):
    deadline = time.time() + timeout
    while children() and time.time() < deadline:
        time.sleep(0.1)
    assert children() == []


def test_two_workers_one_finished_event_per_run():
    cfgs = configs([1e-3, 2e-3, 3e-3, 4e-3])
    events = []
    LocalExecutor(2).run(cfgs, events.append)
    term = terminal_events(events)
    assert set(term) == {c.id for c in cfgs}
    assert all([k for k, _ in evs] == ["finished"] for evs in term.values()), term
    for c in cfgs:      # the terminal event is each run's last
        assert [e[0] for e in events if e[1] == c.id][-1] == "finished"
    assert_no_children()


def test_crashing_worker_fails_only_its_own_run(tmp_path, monkeypatch):
    monkeypatch.setenv("EXECUTOR_TEST_DIR", str(tmp_path))     # spawned workers inherit it
    cfgs = configs([NEIGHBOUR_LR, CRASH_LR, 3e-3, 4e-3])
    crasher = cfgs[1].id
    events = []
    LocalExecutor(2, target=crash_beside_neighbour).run(cfgs, events.append)
    term = terminal_events(events)
    assert set(term) == {c.id for c in cfgs}
    assert all(len(evs) == 1 for evs in term.values()), term
    assert {rid: evs[0][0] for rid, evs in term.items()} == \
        {c.id: "failed" if c.id == crasher else "finished" for c in cfgs}
    assert "worker process died: exit code 1" in term[crasher][0][1]
    # the neighbour finished in its own worker: it was neither killed nor re-run
    kinds = [e[0] for e in events if e[1] == cfgs[0].id]
    assert kinds.count("started") == 1 and kinds[-1] == "finished"
    assert_no_children()


def test_late_final_event_is_still_recorded():
    cfgs = configs([1e-3, LATE_LR])
    events = []
    LocalExecutor(2, target=late_final_event).run(cfgs, events.append)
    term = terminal_events(events)
    assert term == {c.id: [("finished", term[c.id][0][1])] for c in cfgs}, term
    assert_no_children()


def test_keyboard_interrupt_in_handler_stops_workers_at_once():
    cfgs = configs([1e-3, 2e-3, 3e-3], steps=5000)     # minutes of work if nothing stops it
    raised_at = []

    def handle(ev):
        if ev[0] == "progress":
            raised_at.append(time.time())
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        LocalExecutor(2).run(cfgs, handle)
    assert time.time() - raised_at[0] < 5.0
    assert_no_children(timeout=3.0)


def test_a_worker_that_cannot_start_stops_the_sweep_with_a_clear_error(monkeypatch):
    from proxylab.sweep import worker as worker_mod

    monkeypatch.setattr(worker_mod, "COMMAND", "import sys; sys.exit(7)")
    events = []
    t0 = time.time()
    with pytest.raises(ex.WorkerStartError, match="died before it could take a run: exit code 7"):
        LocalExecutor(2).run(configs([1e-3, 2e-3, 3e-3]), events.append)
    assert time.time() - t0 < 30
    assert events == []                # no run was charged with the failure: all stay pending
    assert_no_children()


def test_optimizers_registered_in_the_driver_reach_the_workers(monkeypatch):
    from proxylab import optim

    monkeypatch.setitem(optim.REGISTRY, "my-sgd", optim.Entry("proxylab.optim.sgd:SGD", 0.1))
    cfgs = [load_config(sets=[*TINY, "optim.name=my-sgd", f"optim.lr={lr}"]) for lr in (0.1, 0.2)]
    events = []
    LocalExecutor(2).run(cfgs, events.append)
    term = terminal_events(events)
    assert {rid: evs[0][0] for rid, evs in term.items()} == {c.id: "finished" for c in cfgs}, term
    assert_no_children()
