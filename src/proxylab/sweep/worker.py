"""A pool worker process (started by LocalExecutor as ``python -c ... FD PARENT_PID``).

Workers are plain subprocesses, not multiprocessing children: nothing re-imports the user's
``__main__`` (a script that calls ``pl.sweep(..., workers=2)`` without an
``if __name__ == "__main__":`` guard works), and no named semaphores exist that a killed
driver could leak. The driver and the worker talk over one socket (FD, a
``multiprocessing.connection.Connection``), pickled messages:

    driver -> worker   ("sys_path", [...])       the driver's sys.path, first (targets import)
                       ("init", {"threads", "target", "registry"})
                       ("run", RunConfig)        one at a time; the next after "task_done"
                       ("stop",)                 or EOF: exit
    worker -> driver   ("ready", pid, None)      after init (torch imported)
                       (kind, run_id, payload)   the executor events (see executors.py)
                       ("task_done", run_id, error or None)   the target returned (or raised)
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback


def _exit_when_orphaned(parent_pid: int) -> None:
    """A worker whose driver was killed (kill -9) exits instead of training on as an orphan."""
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os._exit(3)


def main(argv: list[str]) -> None:
    # Ctrl-C goes to the whole process group; the driver alone decides what happens.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    fd, parent_pid = int(argv[0]), int(argv[1])
    threading.Thread(target=_exit_when_orphaned, args=(parent_pid,), daemon=True).start()
    from multiprocessing.connection import Connection  # noqa: PLC0415

    conn = Connection(fd)
    try:
        kind, path = conn.recv()
        sys.path[:] = path             # where the driver finds modules (a test's targets, ...)
        kind, init = conn.recv()
    except (EOFError, OSError):
        os._exit(3)
    import torch  # noqa: PLC0415

    torch.set_num_threads(init["threads"])   # never oversubscribe: one thread per worker
    torch.set_num_interop_threads(1)
    from proxylab.sweep import executors  # noqa: PLC0415

    executors._PIPE, executors._LOCK = conn, threading.Lock()
    if init.get("registry"):           # optimizers registered in the driver's process
        from proxylab import optim  # noqa: PLC0415

        for name, entry in init["registry"].items():
            optim.REGISTRY.setdefault(name, entry)
    target = init["target"]
    executors._emit(("ready", os.getpid(), None))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):    # the driver is gone or closed our socket
            os._exit(0)
        if msg[0] != "run":
            os._exit(0)
        cfg = msg[1]
        error = None
        try:
            target(cfg)
        except BaseException:  # noqa: BLE001 -- reported; the driver decides what it means
            error = traceback.format_exc(limit=20)
        executors._emit(("task_done", cfg.id, error))


# how LocalExecutor starts a worker: the folder holding proxylab comes first until main()
# puts the driver's own sys.path in place
COMMAND = "import sys; sys.path.insert(0, sys.argv[3]); from proxylab.sweep.worker import main; main(sys.argv[1:3])"
