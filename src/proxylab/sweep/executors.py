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

import os
import signal
import subprocess
import sys
import time
import traceback
from collections import deque
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_any
from pathlib import Path
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
# * Workers are plain subprocesses running proxylab.sweep.worker (not multiprocessing
#   children): they never re-import the user's __main__, so a script that calls
#   pl.sweep(..., workers=2) needs no `if __name__ == "__main__":` guard, and there are no
#   named semaphores for a killed driver to leak.
# * Each worker has its own socket and holds one run at a time, so a worker that dies (OOM
#   kill, segfault, os._exit) is known to have died on exactly that run: it is recorded
#   failed, a fresh worker takes the worker's place, and the other workers go on untouched.
#   A half-written message from a dying worker ends only that worker's stream.
# * Sends are synchronous, so a run's last event is in the socket before its "task_done".
#   The driver still waits up to RESULT_GRACE_S after "task_done" for the run's
#   finished/failed event (a target may emit from a thread) before it gives the run up.
# * A worker that dies before it is ready (cannot import torch, ...) stops the sweep with
#   WorkerStartError instead of failing every run in turn.

_PIPE = _LOCK = None        # set in a worker process by proxylab.sweep.worker


class WorkerStartError(RuntimeError):
    """A pool worker died before it could take a run (its error output precedes this)."""


def _emit(event: Event) -> None:
    """Send one event to the driver; it is in the socket when this returns."""
    try:
        with _LOCK:                    # a run may emit from a thread beside the main one
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


class _Worker:
    """One worker subprocess, its end of the socket, and the runs it holds."""

    def __init__(self, threads: int, target, registry: dict):
        import socket  # noqa: PLC0415

        from proxylab.sweep.worker import COMMAND  # noqa: PLC0415

        mine, theirs = socket.socketpair()
        src = str(Path(__file__).resolve().parents[2])      # the folder holding proxylab
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", COMMAND, str(theirs.fileno()), str(os.getpid()), src],
                pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL)
        finally:
            theirs.close()
        self.conn = Connection(mine.detach())
        self.ready = False
        self.current: str | None = None      # the run it is on (no "task_done" yet)
        self.held: set[str] = set()          # runs sent to it without a terminal event
        self.conn.send(("sys_path", list(sys.path)))
        self.conn.send(("init", {"threads": threads, "target": target, "registry": registry}))

    def give(self, cfg: RunConfig) -> None:
        self.conn.send(("run", cfg))
        self.current = cfg.id
        self.held.add(cfg.id)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()

    def close(self, timeout: float) -> int | None:
        """Ask it to exit (EOF), wait up to `timeout`, then kill it; -> exit code."""
        self.conn.close()
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def _registry_to_send(configs: list[RunConfig]) -> dict:
    """Optimizers registered in this process (a user's own) travel to the workers; one defined
    in the script itself cannot be imported there."""
    if "proxylab.optim" not in sys.modules:
        return {}
    from proxylab import optim  # noqa: PLC0415

    for cfg in configs:
        target = optim._entry(cfg.optim.name).target
        if target.split(":")[0] == "__main__":
            raise ConfigError(
                f"optim.name: {cfg.optim.name!r} is a class defined in your script ({target}); "
                "pool workers do not import your script: move the class into a module of its "
                "own (e.g. my_optim.py beside the script) and register it from there, or use "
                "--workers 1")
    return dict(optim.REGISTRY)


class LocalExecutor:
    """A pool of `workers` subprocesses with `threads` torch threads each.

    `target(cfg)` runs one config in a worker (default `_worker_run`); it must be a
    module-level function of an importable module (not of the script being run).
    """

    RESULT_GRACE_S = 60.0   # after a run's target returned, how long its last event may lag
    START_GRACE_S = 2.0     # after a target raised: no terminal event is coming

    def __init__(self, workers: int, threads: int = 1,
                 target: Callable[[RunConfig], None] | None = None):
        if os.name == "nt":    # workers get their socket by fd inheritance (pass_fds): POSIX
            raise ConfigError("--workers N > 1 needs Linux or macOS; use --workers 1 (or "
                              "--backend ray) on Windows")
        self.workers, self.threads = workers, max(1, threads)
        self.target = target or _worker_run
        if getattr(self.target, "__module__", None) == "__main__":
            raise ValueError("LocalExecutor target: define it in an importable module; pool "
                             "workers do not import the running script")

    def run(self, configs: list[RunConfig], handle: Handle) -> None:
        self._handle, self._started = handle, set()
        registry = _registry_to_send(configs)
        todo: deque[RunConfig] = deque(configs)
        open_runs: dict[str, RunConfig] = {}          # sent to a worker, no terminal event
        grace: dict[str, tuple[float, str]] = {}      # target returned: (deadline, reason)
        pool: list[_Worker] = []
        try:
            while todo or open_runs:
                while todo and len(pool) < self.workers and \
                        len(pool) < len(todo) + sum(w.current is not None for w in pool):
                    pool.append(_Worker(self.threads, self.target, registry))
                for w in pool:
                    if w.ready and w.current is None and todo:
                        cfg = todo.popleft()
                        open_runs[cfg.id] = cfg
                        w.give(cfg)
                for conn in wait_any([w.conn for w in pool], timeout=0.2):
                    w = next(w for w in pool if w.conn is conn)
                    if not self._read(w, open_runs, grace):
                        pool.remove(w)
                        self._bury(w, open_runs, grace)
                now = time.monotonic()
                for rid, (deadline, reason) in list(grace.items()):
                    if rid not in open_runs:
                        del grace[rid]
                    elif now > deadline:
                        del grace[rid]
                        self._give_up(rid, open_runs, reason)
            for w in pool:
                w.close(timeout=5.0)
        except BaseException:
            # Ctrl-C or a store error: stop the workers now; their runs stay 'running' in the
            # store and are redone on the next start (as after kill -9).
            for w in pool:
                w.kill()
            for w in pool:
                w.close(timeout=1.0)
            raise

    def _read(self, w: _Worker, open_runs: dict, grace: dict) -> bool:
        """Hand the driver every event waiting from `w`; False when `w` is gone (EOF)."""
        while True:
            try:
                if not w.conn.poll(0):
                    return True
                kind, rid, payload = w.conn.recv()
            except (EOFError, OSError):   # the worker died (or exited): nothing more can come
                return False
            if kind == "ready":
                w.ready = True
                continue
            if kind == "task_done":
                w.current = None
                if rid in open_runs:
                    grace[rid] = ((time.monotonic() + self.RESULT_GRACE_S,
                                   "worker ended without reporting a result") if payload is None
                                  else (time.monotonic() + self.START_GRACE_S,
                                        f"worker error: {payload.strip().splitlines()[-1]}"))
                continue
            if rid not in open_runs:
                continue                  # a late event of a run already given up on
            if kind == "started":
                self._started.add(rid)
            elif kind in ("finished", "failed"):
                del open_runs[rid]
                w.held.discard(rid)
            self._handle((kind, rid, payload))

    def _bury(self, w: _Worker, open_runs: dict, grace: dict) -> None:
        """`w` is gone: the runs it held without a result died with it."""
        code = w.close(timeout=5.0)
        if not w.ready:
            raise WorkerStartError(
                f"a sweep worker ({sys.executable}) died before it could take a run: "
                f"{_death(code)}; its error output is above. Runs not yet started stay pending.")
        for rid in sorted(w.held):
            if rid in open_runs:
                del open_runs[rid]
                grace.pop(rid, None)
                self._handle(("failed", rid, f"worker process died: {_death(code)}"))

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
