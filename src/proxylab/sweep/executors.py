"""Executors: where runs execute. The driver that owns the store consumes their events.

Every executor turns a list of configs into a stream of events, delivered to the driver's
``handle(event)`` in the driver's process:

    ("started",  run_id, meta)          the worker built the run; meta has the data fingerprint
    ("metrics",  run_id, rows)          [(step, key, value), ...]
    ("progress", run_id, (step, total))
    ("finished", run_id, RunResult)     done or diverged
    ("failed",   run_id, traceback_text)
    ("abandoned", run_id, reason)       never started and given up on; stays pending

Workers never touch the store, so parallel workers cannot corrupt or duplicate anything:
the driver is the single writer (see ``proxylab.sweep.driver``). The Ray backend
(``proxylab.sweep.ray_executor``) implements the same ``run(configs, handle)`` method.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
import traceback
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.connection import wait as wait_any
from typing import Callable, Protocol

from proxylab.config import ConfigError, RunConfig

Event = tuple[str, str, object]
Handle = Callable[[Event], None]


class Executor(Protocol):
    def run(self, configs: list[RunConfig], handle: Handle) -> None: ...


class EventReporter:
    """A train-loop Reporter that turns callbacks into executor events."""

    def __init__(self, run_id: str, emit: Callable[[Event], None]):
        self.run_id, self.emit = run_id, emit

    def started(self, meta):
        self.emit(("started", self.run_id, meta))

    def metrics(self, rows):
        self.emit(("metrics", self.run_id, rows))

    def progress(self, step, total):
        self.emit(("progress", self.run_id, (step, total)))


def execute_one(cfg: RunConfig, emit: Callable[[Event], None]) -> None:
    """Run one config and emit its events; failures become a 'failed' event, never a raise."""
    from proxylab.train.loop import train  # noqa: PLC0415 (keeps the sweep room importable without torch)

    rid = cfg.id
    try:
        result = train(cfg, EventReporter(rid, emit))
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
#
# Why it is built this way:
# * Events go over a plain pipe that the worker writes synchronously (mp.Queue hands them to a
#   feeder thread instead), so a run's last event is in the pipe before its future completes.
#   The driver still waits up to RESULT_GRACE_S after a future completes for the run's
#   finished/failed event (a target may emit from a thread) before it gives the run up.
# * One worker that dies (OOM kill, segfault, os._exit) breaks a ProcessPoolExecutor as a
#   whole. The pool's unfinished runs are then suspects: each is re-run alone in a 1-worker
#   pool, and the one that kills its own worker is recorded failed; the others finish normally
#   (re-running emits 'started' again and the driver's start_run drops the earlier metrics).
#   At most `workers` runs are submitted at a time, so unsubmitted runs are never suspects.
# * Each pool has its own pipe and lock: a killed worker may leave the lock held or a message
#   half-written. Once the pool's workers are all dead, the driver closes its own copy of the
#   write end and reads to EOF, so a half-written message ends the read instead of hanging it.
#   The healthy workers of a broken pool are killed at once: their runs are re-run anyway.

_PIPE = _LOCK = None


def _init_worker(pipe, lock, threads: int, parent_pid: int) -> None:
    global _PIPE, _LOCK
    _PIPE, _LOCK = pipe, lock
    # Ctrl-C goes to the whole process group; the driver alone decides what happens.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A worker whose driver was killed (kill -9) exits instead of training on as an orphan;
    # a thread, so that idle workers notice too.
    threading.Thread(target=_exit_when_orphaned, args=(parent_pid,), daemon=True).start()
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch  # noqa: PLC0415

    torch.set_num_threads(threads)     # never oversubscribe: one thread per worker by default
    torch.set_num_interop_threads(1)


def _exit_when_orphaned(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os._exit(3)


def _emit(event: Event) -> None:
    """Send one event to the driver; it is in the pipe when this returns."""
    try:
        with _LOCK:                    # two workers' messages above PIPE_BUF would interleave
            _PIPE.send(event)
    except OSError:                    # the driver is gone (kill -9): nobody reads results
        os._exit(3)


def _worker_run(cfg: RunConfig) -> None:
    execute_one(cfg, _emit)


def _death(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"exit code {code} (killed by {signal.Signals(-code).name})"
        except ValueError:
            pass
    return f"exit code {code}"


class LocalExecutor:
    """A pool of `workers` spawned processes with `threads` torch threads each.

    `target(cfg)` runs one config in a worker (default `_worker_run`); it must be a
    module-level function so that spawned workers can import it.
    """

    RESULT_GRACE_S = 60.0   # after a run's future completed, how long its last event may lag

    def __init__(self, workers: int, threads: int = 1,
                 target: Callable[[RunConfig], None] | None = None):
        self.workers, self.threads = workers, max(1, threads)
        self.target = target or _worker_run

    def run(self, configs: list[RunConfig], handle: Handle) -> None:
        self._handle, self._started = handle, set()
        todo, suspects = deque(configs), deque()
        while todo or suspects:
            if suspects:
                # One suspect at a time, alone: a pool that breaks now was broken by its run.
                culprits, exitcodes = self._run_pool(suspects, 1)
                for cfg in culprits:
                    handle(("failed", cfg.id, f"worker process died: {_death(exitcodes[-1])}"))
            else:
                suspects.extend(self._run_pool(todo, self.workers)[0])

    def _run_pool(self, todo: deque, n: int) -> tuple[list[RunConfig], list[int | None]]:
        """Run configs popped from `todo` on a fresh pool of `n` workers until `todo` is empty
        and every submitted run has its finished/failed event. If a worker dies, return the
        submitted runs that have none (the suspects) and the workers' exit codes instead."""
        ctx = mp.get_context("spawn")
        reader, writer = ctx.Pipe(duplex=False)
        pool = ProcessPoolExecutor(max_workers=min(n, len(todo)), mp_context=ctx,
                                   initializer=_init_worker,
                                   initargs=(writer, ctx.Lock(), self.threads, os.getpid()))
        procs: dict = {}      # pid -> Process, every worker this pool started
        open_runs: dict[str, RunConfig] = {}          # submitted, no terminal event yet
        busy: dict = {}       # future -> run id, for runs a worker is on
        grace: dict[str, tuple[float, str]] = {}     # future completed: (deadline, reason)
        try:
            broken = False
            while not broken and (todo or open_runs):
                while todo and len(busy) < n:
                    cfg = todo.popleft()
                    try:
                        busy[pool.submit(self.target, cfg)] = cfg.id
                    except BrokenProcessPool:
                        todo.appendleft(cfg)
                        broken = True
                        break
                    open_runs[cfg.id] = cfg
                    procs.update(getattr(pool, "_processes", None) or {})   # spawned on submit
                self._read(reader, open_runs, timeout=0.1)
                now = time.monotonic()
                for f in [f for f in busy if f.done()]:
                    rid, exc = busy.pop(f), f.exception()
                    if isinstance(exc, BrokenProcessPool):
                        broken = True
                    elif rid in open_runs and exc is None:
                        grace[rid] = (now + self.RESULT_GRACE_S,
                                      "worker ended without reporting a result")
                    elif rid in open_runs:     # the target raised: no terminal event is coming
                        grace[rid] = (now + 2.0, f"worker error: {exc!r}")
                for rid, (deadline, reason) in list(grace.items()):
                    if rid not in open_runs:
                        del grace[rid]
                    elif now > deadline:
                        del grace[rid]
                        self._give_up(rid, open_runs, reason)
                # The pool itself can miss a death until its next result: CPython 3.11 wakes
                # its manager thread *before* spawning the worker a submit() asks for, so that
                # worker's sentinel may go unwatched. Watch them here (without reaping them).
                if wait_any([p.sentinel for p in procs.values()], timeout=0):
                    broken = True
            if not broken:
                pool.shutdown(wait=True)
                return [], []
            # A worker died and the pool is lost: stop the others now. Whatever they sent is
            # already in the pipe (sends are synchronous); read it up to EOF.
            procs.update(getattr(pool, "_processes", None) or {})
            for p in procs.values():
                p.kill()                   # a no-op for the dead ones
            pool.shutdown(wait=True)       # its manager thread reaps them: exit codes are known
            writer.close()
            self._read(reader, open_runs, timeout=0)
            return list(open_runs.values()), [p.exitcode for p in procs.values()]
        except BaseException:
            # Ctrl-C or a store error: stop the workers now; their runs stay 'running' in the
            # store and are redone on the next start (as after kill -9).
            procs.update(getattr(pool, "_processes", None) or {})
            for p in procs.values():
                p.kill()
            pool.shutdown(wait=False, cancel_futures=True)
            for p in procs.values():
                p.join(timeout=1.0)
            raise
        finally:
            writer.close()
            reader.close()

    def _read(self, reader, open_runs: dict[str, RunConfig], timeout: float) -> None:
        """Hand the driver every event waiting in the pipe, waiting up to `timeout` for one."""
        while True:
            try:
                if not reader.poll(timeout):
                    return
                kind, rid, payload = reader.recv()
            except (EOFError, OSError):   # every writer is gone: nothing more can come
                return
            timeout = 0
            if rid not in open_runs:
                continue                  # a late event of a run already given up on
            if kind == "started":
                self._started.add(rid)
            elif kind in ("finished", "failed"):
                del open_runs[rid]
            self._handle((kind, rid, payload))

    def _give_up(self, rid: str, open_runs: dict[str, RunConfig], reason: str) -> None:
        del open_runs[rid]
        # a run that never started stays pending for the next attempt
        self._handle(("failed" if rid in self._started else "abandoned", rid, reason))


def make_executor(workers: int, threads: int = 0, backend: str = "local", *,
                  address: str | None = None, cpus_per_run: float = 1.0,
                  gpus_per_run: float = 0.0) -> Executor:
    """`address`, `cpus_per_run` and `gpus_per_run` are for ``backend="ray"`` (one Ray task
    per run; see proxylab.sweep.ray_executor); `workers` and `threads` for the local ones."""
    if backend == "ray":
        from proxylab.sweep.ray_executor import RayExecutor  # noqa: PLC0415 (ray is an extra)

        return RayExecutor(address=address, cpus_per_run=cpus_per_run, gpus_per_run=gpus_per_run)
    if backend != "local":
        raise ConfigError(f"--backend {backend!r}: choose local or ray")
    if workers <= 1:
        return InlineExecutor(threads=threads)
    return LocalExecutor(workers, threads=max(1, threads))
