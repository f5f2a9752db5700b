"""The sweep driver: the single writer of the store.

`run_sweep` expands the spec (all validation happens before anything is written), registers
the sweep and its runs, skips runs that are already finished, and feeds the rest to an
executor whose events it writes to the store. Killing the driver at any moment leaves whole
transactions only: finished runs stay finished, an interrupted run is left `running` and is
redone from scratch next time (`start_run` drops the metrics of the earlier attempt), and
metric rows are keyed by (run, step, key) so nothing is ever duplicated.

Two drivers on one store (the same study started in two terminals, several drivers on a
cluster's shared disk) never run the same run twice: a driver claims the runs it is about to
run in one transaction (``Store.claim``), keeps the leases alive from a thread while it works
and drops them when it is done. A second driver runs whatever it could claim, then waits for
the runs another live driver holds; when that driver dies (its process is gone on this host,
or its lease lapsed, ``PROXYLAB_LEASE_S``, default 60 s) it claims and redoes them. A run the
other driver finished, or recorded as failed, while this one waited is not run again.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from dataclasses import dataclass, field

from proxylab.config import ConfigError, RunConfig
from proxylab.sweep.executors import Event, Executor
from proxylab.sweep.progress import Progress
from proxylab.sweep.progress import run_label as progress_label
from proxylab.sweep.spec import SweepSpec

FINISHED = ("done", "diverged")


def run_label(cfg: RunConfig, axes: list[str]) -> str:
    """The run's axis values, each labelled by its shortest unambiguous key suffix."""
    return progress_label(cfg, axes)


@dataclass
class SweepOutcome:
    name: str
    total: int
    skipped: int
    statuses: dict[str, str] = field(default_factory=dict)   # run_id -> status of this attempt

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.statuses.values():
            out[s] = out.get(s, 0) + 1
        return out


class StoreWriter:
    """Turns executor events into store writes (and progress updates)."""

    def __init__(self, store, progress: Progress | None = None):
        self.store, self.progress = store, progress
        self.statuses: dict[str, str] = {}
        self.results: dict[str, object] = {}

    def handle(self, event: Event) -> None:
        kind, rid, payload = event
        if kind == "started":
            self.store.start_run(rid, payload)
            if self.progress:
                self.progress.started(rid)
        elif kind == "metrics":
            self.store.log_metrics(rid, payload)
        elif kind == "progress":
            if self.progress:
                self.progress.step(rid, *payload)
        elif kind == "finished":
            self.store.finish_run(rid, payload.status, payload.summary)
            self.statuses[rid] = payload.status
            self.results[rid] = payload
            if self.progress:
                v = payload.summary.get("final_val_loss")
                note = (f"val {v:.4f}" if v is not None and math.isfinite(v) else
                        f"at step {payload.summary.get('diverged_step')}")
                self.progress.finished(rid, payload.status, note)
        elif kind == "failed":
            self.store.finish_run(rid, "failed", {}, error=str(payload))
            self.statuses[rid] = "failed"
            if self.progress:
                self.progress.finished(rid, "failed", str(payload).strip().splitlines()[-1][:60])
        elif kind == "abandoned":
            self.store.mark_pending([rid])
            self.statuses[rid] = "pending"
        else:  # pragma: no cover - a programming error, not user input
            raise ValueError(f"unknown executor event {kind!r}")


def preflight(configs: list[RunConfig], *, ray_gpus: float | None = None) -> dict[str, str]:
    """Check what validation cannot: every distinct data source opens (a missing or corrupt
    file is bad input, exit 2, nothing written) and a requested CUDA device exists: here,
    or with ``ray_gpus`` (``--gpus-per-run`` of ``--backend ray``, whose runs train on the
    cluster's GPU nodes) that each run holds a GPU share.
    Returns each run's data fingerprint by run id."""
    from proxylab.tasks import SEEDED_TASKS, build_task  # noqa: PLC0415

    lease_seconds()                                   # a bad PROXYLAB_LEASE_S: exit 2 here
    if ray_gpus is not None:
        from proxylab.sweep.ray_executor import check_gpus  # noqa: PLC0415

        check_gpus(configs, ray_gpus)
    elif any(c.train.device == "cuda" for c in configs):
        import torch  # noqa: PLC0415

        if not torch.cuda.is_available():
            raise ConfigError("train.device: 'cuda' was asked for but torch sees no CUDA device "
                              "(use 'auto' or 'cpu')")
    by_task: dict = {}
    out = {}
    for cfg in configs:
        key = (cfg.task, cfg.train.seed if cfg.task.name in SEEDED_TASKS else 0)
        if key not in by_task:
            by_task[key] = build_task(cfg.task, seed=cfg.train.seed).fingerprint
        out[cfg.id] = by_task[key]
    return out


def check_fingerprints(store, status: dict[str, str], fingerprints: dict[str, str]) -> None:
    """A finished run whose data has changed since (same path, new content; another Python's
    built-in corpus) is not "already done": refuse rather than mix the two."""
    for rid, st in status.items():
        if st in FINISHED and rid in fingerprints:
            old = (store.run(rid).get("meta") or {}).get("data_fingerprint")
            if old and old != fingerprints[rid]:
                raise ConfigError(
                    f"run {rid} in {store.path} was trained on data with fingerprint {old[:12]}, "
                    f"but its task.path now gives {fingerprints[rid][:12]}. A store holds one "
                    "result per config: to keep both, use another --db, or put the new data at "
                    "another path (task.path is part of the run id); `proxylab run ... --force` "
                    "retrains a single run on the new data, replacing the stored one")


def plan(spec: SweepSpec, store) -> tuple[list[RunConfig], dict[str, str]]:
    """The sweep's runs and their current status in the store ('new' when absent)."""
    configs = spec.expand()
    known = store.status_of([c.id for c in configs]) if store is not None else {}
    return configs, {c.id: known.get(c.id) or "new" for c in configs}


def run_sweep(spec: SweepSpec, store, executor: Executor, *, show_progress: bool = True,
              stream=None, fingerprints: dict[str, str] | None = None) -> SweepOutcome:
    """Run what is not finished yet. Callers that must not create a store on bad input run
    :func:`preflight` before opening it and pass its ``fingerprints``."""
    configs, status = plan(spec, store)           # raises ConfigError before any write
    check_fingerprints(store, status, fingerprints or preflight(configs))
    unlinked = store.set_sweep(spec.name, spec.to_dict(), [(c.id, c.to_dict()) for c in configs])
    todo = [c for c in configs if status[c.id] not in FINISHED]
    skipped = len(configs) - len(todo)
    stream = stream or sys.stdout
    if unlinked and show_progress:
        print(f"sweep {spec.name!r} changed: {unlinked} earlier runs are no longer part of it "
              "(they stay in the store)", file=stream)
    progress = Progress({c.id: run_label(c, spec.axes) for c in todo},
                        {c.id: c.train.steps for c in todo},
                        stream=stream, enabled=show_progress, skipped=skipped)
    writer = StoreWriter(store, progress)
    use_checkpoints_of(store)
    try:
        run_claimed(todo, store, executor, writer.handle, stream=stream, verbose=show_progress)
    finally:
        progress.close()
    return SweepOutcome(spec.name, len(configs), skipped, writer.statuses)


def lease_seconds() -> float:
    try:
        return max(1.0, float(os.environ.get("PROXYLAB_LEASE_S", "60")))
    except ValueError:
        raise ConfigError(f"PROXYLAB_LEASE_S={os.environ['PROXYLAB_LEASE_S']!r}: expected a "
                          "number of seconds") from None


class Lease:
    """Keeps this driver's claims alive (a daemon thread renews them every lease/4) and drops
    them on exit; a driver killed with -9 simply stops renewing."""

    def __init__(self, store, owner: str, lease_s: float):
        self.store, self.owner, self.lease_s = store, owner, lease_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name="proxylab-lease")

    def _beat(self) -> None:
        while not self._stop.wait(self.lease_s / 4):
            try:
                self.store.renew_claims(self.owner, self.lease_s)
            except Exception:  # noqa: BLE001 -- a busy store: try again on the next beat
                pass

    def __enter__(self) -> "Lease":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.store.release_claims(self.owner)


def run_claimed(todo: list[RunConfig], store, executor: Executor, handle, *, stream=None,
                verbose: bool = True) -> None:
    """Run `todo` on `executor`, each run only once this driver holds its claim (see the
    module doc); waits for runs that another live driver holds."""
    from proxylab.store.lease import owner_id  # noqa: PLC0415

    owner, lease_s = owner_id(), lease_seconds()
    waiting = {c.id: c for c in todo}
    attempt0 = _attempts(store, list(waiting))
    told = False
    with Lease(store, owner, lease_s):
        while waiting:
            mine = store.claim(list(waiting), owner, lease_s)
            if mine:
                executor.run([waiting.pop(rid) for rid in mine], handle)
                store.release_claims(owner, mine)
                continue
            # the rest are another driver's: drop what it has finished (or failed) meanwhile
            for rid, (status, attempt) in _attempts(store, list(waiting)).items():
                if status in ("done", "diverged") or (status == "failed" and attempt > attempt0[rid]):
                    del waiting[rid]
            if waiting:
                if verbose and not told:
                    print(f"{len(waiting)} runs are held by another driver on {store.path}; "
                          "waiting for them to finish (or for that driver to die)",
                          file=stream or sys.stdout)
                    told = True
                time.sleep(min(2.0, lease_s / 4))


def _attempts(store, run_ids: list[str]) -> dict[str, tuple[str, int]]:
    """{run_id: (status, attempt)}."""
    with store.snapshot():
        return {rid: (info["status"], info["attempt"])
                for rid, info in ((r, store.run(r)) for r in run_ids)}


def use_checkpoints_of(store) -> None:
    """Runs started from here on (and workers spawned from here) keep their checkpoints
    (train.checkpoint_every) next to this store; see proxylab.train.checkpoint."""
    from proxylab.train.checkpoint import use_store  # noqa: PLC0415

    use_store(store.path)


def run_one(cfg: RunConfig, store, *, force: bool = False,
            fingerprints: dict[str, str] | None = None):
    """Train one config in this process, writing to the store.

    Returns ``(RunResult or None, status, trained)``; a run already finished in the store is
    not trained again unless ``force`` (its stored result is returned, ``trained`` False).
    """
    from proxylab.sweep.executors import InlineExecutor  # noqa: PLC0415
    from proxylab.train.loop import RunResult  # noqa: PLC0415

    fingerprints = fingerprints or preflight([cfg])
    status = store.status_of([cfg.id]).get(cfg.id)
    if status in FINISHED and not force:
        check_fingerprints(store, {cfg.id: status}, fingerprints)
        info = store.run(cfg.id)
        return RunResult(cfg.id, status, info.get("summary") or {}), status, False
    store.add_runs(None, [(cfg.id, cfg.to_dict())])
    writer = StoreWriter(store)
    use_checkpoints_of(store)
    InlineExecutor().run([cfg], writer.handle)
    return writer.results.get(cfg.id), writer.statuses.get(cfg.id), True
