"""What a run records about the software and machine that produced it (``runs.meta_json``).

:func:`environment_meta` gathers what the store can learn without importing torch; the
training loop adds what only it knows (device, threads, data fingerprint) and its values
win. Everything here is computed once per process.
"""

from __future__ import annotations

import functools
import getpass
import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path

import proxylab


def _version(dist: str) -> str | None:
    module = sys.modules.get(dist)  # an imported module knows its exact (local) version
    if module is not None and getattr(module, "__version__", None):
        return str(module.__version__)
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(args: list[str], cwd: Path) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(["git", "--no-optional-locks", *args], cwd=cwd, capture_output=True,
                              text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None


@functools.lru_cache(maxsize=1)
def git_state() -> dict[str, object]:
    """Commit of the proxylab source tree (editable installs) and whether tracked files differ."""
    src = Path(proxylab.__file__).resolve().parent
    # only a repository that tracks proxylab itself (an editable install), not one that
    # merely encloses a site-packages folder
    tracked = _git(["ls-files", "--error-unmatch", "--", "__init__.py"], src)
    head = _git(["rev-parse", "HEAD"], src) if tracked is not None and tracked.returncode == 0 else None
    if head is None or head.returncode != 0:
        return {"git_commit": None, "git_dirty": None}
    diff = _git(["diff", "--quiet", "HEAD", "--", "."], src)
    dirty = None if diff is None else diff.returncode != 0
    return {"git_commit": head.stdout.strip(), "git_dirty": dirty}


@functools.lru_cache(maxsize=1)
def _static_meta() -> dict[str, object]:
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 (no passwd entry in some containers)
        user = None
    return {
        "proxylab_version": proxylab.__version__,
        **git_state(),
        "torch_version": _version("torch"),
        "numpy_version": _version("numpy"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "user": user,
        "cpu_count": os.cpu_count(),
    }


def environment_meta() -> dict[str, object]:
    """Versions, git commit, host, ... plus the pid of the calling process."""
    return {**_static_meta(), "pid": os.getpid()}
