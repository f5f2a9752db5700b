"""The Ray backend against a real local Ray cluster that these tests start themselves.

One cluster per module (``proxylab.sweep.ray_executor.local_cluster``: ``ray start --head
--block`` on 127.0.0.1, free ports, its own temp dir, 2 CPUs), stopped at the end by ending
the process group it was started in. Its workers
get tests/ on PYTHONPATH so that the crashing target below can be imported there.
"""

from __future__ import annotations

import functools
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow     # a real cluster and driver processes: `make test`, not test-fast

from proxylab.config import ConfigError, load_config  # noqa: E402
from proxylab.store import Store  # noqa: E402
from proxylab.sweep.driver import run_sweep  # noqa: E402
from proxylab.sweep.executors import InlineExecutor, execute_one, make_executor  # noqa: E402
from proxylab.sweep.ray_executor import RayExecutor, local_cluster  # noqa: E402
from proxylab.sweep.spec import spec_from_dict  # noqa: E402

BIN = Path(sys.executable).parent
TINY = {"model.width": 16, "model.depth": 1, "model.heads": 2, "task.seq_len": 16,
        "train.batch_size": 2, "train.steps": 12, "train.eval_every": 6, "train.eval_batches": 1}
TIMING = ("wall_s",)        # metrics that measure time, not training: they may differ
CRASH_LR = 0.0077


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """(address, None) of a 2-CPU Ray cluster on 127.0.0.1, up for this module."""
    log = tmp_path_factory.mktemp("ray") / "ray-start.log"
    env = {"PYTHONPATH": os.pathsep.join([str(Path(__file__).parent),
                                          os.environ.get("PYTHONPATH", "")])}
    try:
        with local_cluster(num_cpus=2, log_path=str(log), extra_env=env) as address:
            RayExecutor(address=address).connect(tries=5)  # this process joins as a driver
            deadline = time.time() + 60
            while ray.cluster_resources().get("CPU", 0) < 2 and time.time() < deadline:
                time.sleep(0.5)
            try:
                yield address, None
            finally:
                ray.shutdown()
    except RuntimeError as e:
        if "ray start" not in str(e):
            raise
        pytest.skip(str(e))


def spec(name: str, lrs, **base):
    return spec_from_dict({"name": name, "base": {**TINY, **base}, "grid": {"optim.lr": lrs}})


def comparable(store: Store) -> dict:
    m = store.metrics()
    m = m[~m["key"].isin(TIMING)]
    return {(r, s, k): v for r, s, k, v in zip(m["run_id"], m["step"], m["key"], m["value"])}


def same_values(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        (math.isnan(a[k]) and math.isnan(b[k])) or a[k] == b[k] for k in a)


def wait_cpus_free(n: float = 2, timeout: float = 60) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if ray.available_resources().get("CPU", 0) >= n:
            return True
        time.sleep(0.5)
    return False


def crash_target(marker_dir: str, cfg, emit):
    """Kills its worker process for CRASH_LR (every attempt, after it started); trains the
    others. Each attempt leaves a file, so the test can count Ray's retries."""
    if cfg.optim.lr == CRASH_LR:
        Path(marker_dir, f"attempt-{os.getpid()}").touch()
        emit(("started", cfg.id, {}))
        emit(("metrics", cfg.id, [(0, "train/loss", 9.0)]))
        time.sleep(0.6)                        # let the rows reach the driver first
        os._exit(1)
    execute_one(cfg, emit)


def test_ray_sweep_matches_the_local_pool(cluster, tmp_path):
    address, _ = cluster
    s = spec("same", [1e-3, 3e-3, 1e-2])
    ray_store, local_store = Store(tmp_path / "ray.db"), Store(tmp_path / "local.db")
    out = run_sweep(s, ray_store, make_executor(1, backend="ray", address=address),
                    show_progress=False)
    run_sweep(s, local_store, InlineExecutor(threads=1), show_progress=False)
    assert set(out.statuses.values()) == {"done"}
    a, b = ray_store.runs().set_index("run_id"), local_store.runs().set_index("run_id")
    assert sorted(a.index) == sorted(b.index)                     # same run ids
    assert (a["status"] == b.loc[a.index, "status"]).all()
    assert same_values(comparable(ray_store), comparable(local_store))   # bit for bit on CPU
    assert all(ray_store.run(r)["meta"]["threads"] == 1 for r in a.index)   # the CPUs it holds
    # started again: nothing to redo
    again = run_sweep(s, ray_store, RayExecutor(address=address), show_progress=False)
    assert again.skipped == 3 and not again.statuses


def test_checkpoints_land_next_to_the_driver_s_store(cluster, tmp_path):
    from proxylab.train.checkpoint import list_steps

    address, _ = cluster
    store = Store(tmp_path / "c.db")
    run_sweep(spec("ckpt", [1e-3], **{"train.checkpoint_every": 6}), store,
              RayExecutor(address=address), show_progress=False)
    rid = store.runs()["run_id"].iloc[0]
    assert list_steps(rid, tmp_path / "c.db")           # not in the Ray worker's own folder


def test_crashing_worker_is_retried_then_failed(cluster, tmp_path):
    address, _ = cluster
    markers = tmp_path / "attempts"
    markers.mkdir()
    store = Store(tmp_path / "crash.db")
    ex = RayExecutor(address=address, max_retries=1,
                     target=functools.partial(crash_target, str(markers)))
    out = run_sweep(spec("crash", [1e-3, CRASH_LR, 1e-2]), store, ex, show_progress=False)
    runs = store.runs().set_index("optim.lr")
    assert runs.loc[CRASH_LR, "status"] == "failed"
    assert "retries" in runs.loc[CRASH_LR, "error"]
    assert len(list(markers.iterdir())) == 2              # the first attempt and one retry
    assert set(runs.loc[[1e-3, 1e-2], "status"]) == {"done"}   # the sweep went on
    assert sorted(out.statuses.values()) == ["done", "done", "failed"]
    assert wait_cpus_free()


def _store_state(path: Path) -> dict:
    with Store(path) as s:
        return s.status_of(s.runs()["run_id"].tolist()) if len(s.runs()) else {}


def test_kill_9_of_the_driver_then_resume_redoes_only_unfinished_runs(cluster, tmp_path):
    address, _ = cluster
    sweep_file = tmp_path / "kill.toml"
    base = {**TINY, "train.steps": 250, "train.eval_every": 50}
    sweep_file.write_text('name = "kill"\n[base]\n' + "".join(
        f'"{k}" = {v!r}\n'.replace("'", '"') for k, v in base.items())
        + '[grid]\n"optim.lr" = [0.001, 0.002, 0.003, 0.004]\n')
    db = tmp_path / "kill.db"
    cmd = [str(BIN / "proxylab"), "sweep", str(sweep_file), "--db", str(db), "--backend", "ray",
           "--address", address, "--quiet"]
    driver = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, state = time.time() + 240, {}
    while time.time() < deadline and driver.poll() is None:
        state = _store_state(db) if db.exists() else {}
        running = [r for r, st in state.items() if st == "running"]
        if "done" in state.values() and running:
            with Store(db) as s:       # rows of a run still training: streamed while it runs
                if len(s.metrics(run_ids=running, keys=["train/loss"])):
                    break
        time.sleep(0.2)
    driver.kill()                                          # kill -9
    driver.wait()
    assert "done" in state.values() and "running" in state.values(), state
    with Store(db) as s:
        before = s.runs().set_index("run_id")
        rows_before = len(s.metrics())
    assert rows_before > 0
    assert wait_cpus_free(), "the dead driver's tasks still hold the cluster's CPUs"
    done_before = set(before.index[before["status"] == "done"])
    assert subprocess.run(cmd, capture_output=True, timeout=300).returncode == 0
    with Store(db) as s:
        after = s.runs().set_index("run_id")
        assert set(after["status"]) == {"done"}
        # finished runs were not redone; interrupted ones were, once, from the start
        assert all(after.loc[r, "attempt"] == 1 for r in done_before)
        assert all(after.loc[r, "attempt"] == 2 for r in after.index
                   if before.loc[r, "status"] == "running")
        m = s.metrics(keys=["train/loss", "val/loss"])
    for rid, g in m.groupby("run_id"):
        loss = g[g["key"] == "train/loss"]["step"]
        assert loss.is_unique and len(loss) >= 1                 # nothing doubled
        assert 250 in set(g[g["key"] == "val/loss"]["step"])    # nothing lost at the end


def test_ctrl_c_cancels_every_task(cluster, tmp_path):
    address, _ = cluster
    sweep_file = tmp_path / "int.toml"
    sweep_file.write_text('name = "int"\n[base]\n"model.width" = 16\n"model.depth" = 1\n'
                          '"model.heads" = 2\n"task.seq_len" = 16\n"train.batch_size" = 2\n'
                          '"train.steps" = 5000\n"train.eval_every" = 1000\n'
                          '[grid]\n"optim.lr" = [0.001, 0.002, 0.003]\n')
    db = tmp_path / "int.db"
    driver = subprocess.Popen([str(BIN / "proxylab"), "sweep", str(sweep_file), "--db", str(db),
                               "--backend", "ray", "--address", address, "--quiet"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and not (db.exists() and "running" in _store_state(db).values()):
        time.sleep(0.2)
    assert "running" in _store_state(db).values()
    driver.send_signal(signal.SIGINT)
    assert driver.wait(timeout=60) == 130
    assert wait_cpus_free(timeout=30), "a task is still running after Ctrl-C"


def test_cuda_runs_on_ray_need_gpus_per_run(cluster):
    address, _ = cluster
    cfg = load_config(sets=[f"{k}={v}" for k, v in TINY.items()] + ["train.device=cuda"])
    with pytest.raises(ConfigError, match="--gpus-per-run"):
        RayExecutor(address=address).run([cfg], lambda e: None)


def test_bad_ray_options_are_bad_input():
    with pytest.raises(ConfigError, match="--gpus-per-run"):
        RayExecutor(gpus_per_run=1.5)
    with pytest.raises(ConfigError, match="--cpus-per-run"):
        RayExecutor(cpus_per_run=0)


# a tiny study (lr-width's sweeps, verdicts and figures on very short runs)
NAME = "lr-width"
CLAIM = "lr-width on tiny runs, for the Ray study test"


def sweeps(size):
    from dataclasses import replace

    from proxylab.studies import lr_width

    spec = lr_width.sweeps("smoke")[0]
    base = {**spec.base, "train.steps": 6, "train.eval_every": 3, "train.eval_batches": 1,
            "task.seq_len": 16, "train.batch_size": 4, "model.base_width": 8, "model.heads": 2}
    return [replace(spec, name="ray-tiny", base=base, grid={**spec.grid, "model.width": [8, 16]})]


def verdicts(store, specs):
    from proxylab.studies import lr_width

    return lr_width.verdicts(store, specs)


def test_a_study_on_ray_gives_the_local_pool_s_verdicts(cluster, tmp_path, monkeypatch):
    import json

    from proxylab import studies

    address, _ = cluster
    monkeypatch.setitem(studies.STUDIES, "ray-tiny", __name__)
    path, counts = studies.run_study("ray-tiny", smoke=True, out=tmp_path / "ray", workers=1,
                                     show_progress=False, backend="ray", address=address)
    assert counts == {"done": 12}
    on_ray = json.loads(Path(path).read_text())
    local = Store(tmp_path / "local.db")                 # the same sweep, inline, no report
    run_sweep(sweeps("smoke")[0], local, InlineExecutor(threads=1), show_progress=False)
    assert on_ray["verdicts"] == json.loads(json.dumps(verdicts(local, sweeps("smoke"))))
    assert same_values(comparable(Store(tmp_path / "ray" / "proxylab.db")), comparable(local))
