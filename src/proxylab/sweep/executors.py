"""Executors: where runs execute. The driver that owns the store consumes their events.

Every executor turns a list of configs into a stream of events, delivered to the driver's
``handle(event)`` in the driver's process:

    ("started",  run_id, meta)          the worker built the run; meta has the data fingerprint
    ("metrics",  run_id, rows)          [(step, key, value), ...]
    ("progress", run_id, (step, total))
    ("finished", run_id, RunResult)     done or diverged
    ("failed",   run_id, traceback_text)
    ("abandoned", run_id, reason)       never started (e.g. the pool broke); stays pending

Workers never touch the store, so parallel workers cannot corrupt or duplicate anything:
the driver is the single writer (see ``proxylab.sweep.driver``). A Ray backend implements
the same ``run(configs, handle)`` method (planned).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_mod
import signal
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Protocol

from proxylab.config import ConfigError, RunConfig

Event = tuple[str, str, object]
Handle = Callable[[Event], None]


class Executor(Protocol):
    def run(self, configs: list[RunConfig], handle: Handle) -> None: ...


class EventReporter:
    """A train-loop Reporter that turns callbacks into executor events."""

    def __init__(self, run_id: str, emit: Callable[[Event], None], parent_pid: int | None = None):
        self.run_id, self.emit, self.parent_pid = run_id, emit, parent_pid

    def started(self, meta):
        self.emit(("started", self.run_id, meta))

    def metrics(self, rows):
        self.emit(("metrics", self.run_id, rows))

    def progress(self, step, total):
        # A worker whose driver was killed (kill -9) stops instead of training on as an orphan.
        if self.parent_pid is not None and os.getppid() != self.parent_pid:
            os._exit(3)
        self.emit(("progress", self.run_id, (step, total)))


def execute_one(cfg: RunConfig, emit: Callable[[Event], None], parent_pid: int | None = None) -> None:
    """Run one config and emit its events; failures become a 'failed' event, never a raise."""
    from proxylab.train.loop import train  # noqa: PLC0415 (keeps the sweep room importable without torch)

    rid = cfg.id
    try:
        result = train(cfg, EventReporter(rid, emit, parent_pid))
    except Exception:  # noqa: BLE001 -- any failure of one run is recorded; the sweep goes on
        emit(("failed", rid, traceback.format_exc(limit=20)))
    else:
        emit(("finished", rid, result))


class InlineExecutor:
    """Runs configs one after another in this process (tests, debugging, `proxylab run`)."""

    def __init__(self, threads: int = 0):
        self.threads = threads

    def run(self, configs: list[RunConfig], handle: Handle) -> None:
        import torch  # noqa: PLC0415

        if self.threads > 0:
            torch.set_num_threads(self.threads)
        for cfg in configs:
            execute_one(cfg, handle)


# ----------------------------------------------------------------------------------
# local process pool

_QUEUE = None
_PARENT = None


def _init_worker(q, threads: int, parent_pid: int) -> None:
    global _QUEUE, _PARENT
    _QUEUE, _PARENT = q, parent_pid
    # Ctrl-C goes to the whole process group; the driver alone decides what happens.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch  # noqa: PLC0415

    torch.set_num_threads(threads)     # never oversubscribe: one thread per worker by default
    torch.set_num_interop_threads(1)


def _worker_run(cfg: RunConfig) -> None:
    execute_one(cfg, _QUEUE.put, _PARENT)


class LocalExecutor:
    """A pool of `workers` spawned processes with `threads` torch threads each."""

    def __init__(self, workers: int, threads: int = 1):
        self.workers, self.threads = workers, max(1, threads)

    def run(self, configs: list[RunConfig], handle: Handle) -> None:
        if not configs:
            return
        ctx = mp.get_context("spawn")
        events = ctx.Queue()
        pending_ids = {c.id for c in configs}
        self._started: set[str] = set()
        pool = ProcessPoolExecutor(max_workers=min(self.workers, len(configs)), mp_context=ctx,
                                   initializer=_init_worker,
                                   initargs=(events, self.threads, os.getpid()))
        try:
            futures = {pool.submit(_worker_run, c): c.id for c in configs}
            self._loop(futures, events, handle, pending_ids)
        except BaseException:
            # Ctrl-C or a store error: stop the workers now; their runs stay 'running' in the
            # store and are redone on the next start (as after kill -9).
            for proc in list(getattr(pool, "_processes", {}).values()):
                proc.kill()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)

    def _loop(self, futures, events, handle: Handle, pending_ids: set[str]) -> None:
        while futures or pending_ids:
            self._drain(events, handle, pending_ids, timeout=0.2)
            done, _ = wait(list(futures), timeout=0, return_when=FIRST_COMPLETED)
            for f in done:
                rid = futures.pop(f)
                exc = f.exception()
                if exc is not None and rid in pending_ids:
                    # the worker process died (BrokenProcessPool) or could not run it
                    self._drain(events, handle, pending_ids, timeout=0.5)
                    if rid in pending_ids:
                        pending_ids.discard(rid)
                        # a run that never started stays pending for the next attempt
                        kind = "failed" if rid in self._started else "abandoned"
                        handle((kind, rid, f"worker error: {exc!r}"))
            if not futures and pending_ids:
                # all futures returned; their final events may still be in flight
                self._drain(events, handle, pending_ids, timeout=2.0)
                for rid in list(pending_ids):
                    pending_ids.discard(rid)
                    kind = "failed" if rid in self._started else "abandoned"
                    handle((kind, rid, "worker ended without reporting a result"))

    def _drain(self, events, handle: Handle, pending_ids: set[str], timeout: float) -> None:
        try:
            ev = events.get(timeout=timeout)
        except (queue_mod.Empty, EOFError, OSError, BrokenProcessPool):
            return
        while True:
            if ev[0] in ("finished", "failed"):
                pending_ids.discard(ev[1])
            elif ev[0] == "started":
                self._started.add(ev[1])
            handle(ev)
            try:
                ev = events.get_nowait()
            except (queue_mod.Empty, EOFError, OSError):
                return


def make_executor(workers: int, threads: int = 0, backend: str = "local") -> Executor:
    if backend == "ray":
        # The Ray backend implements this same Executor protocol; it is not built yet.
        raise ConfigError("--backend ray: not available in this version; use --backend local "
                          "(one process per run, --workers N)")
    if workers <= 1:
        return InlineExecutor(threads=threads)
    return LocalExecutor(workers, threads=max(1, threads))
