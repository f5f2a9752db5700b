"""Who holds a claim on a run: owner ids of driver processes, and whether one is still alive.

See :meth:`proxylab.store.db.Store.claim`. An owner id is ``host:pid:random``; a driver on
this host is known dead the moment its process is gone, one on another host only once its
lease has lapsed (a shared disk says nothing about another machine's processes).
"""

from __future__ import annotations

import os
def owner_id() -> str:
    """A claim owner for this process: ``host:pid:random`` (unique even when a pid is reused)."""
    import socket  # noqa: PLC0415
    import uuid  # noqa: PLC0415

    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_alive(owner: str) -> bool:
    """False only when ``owner`` is a process of this host that no longer exists (its lease
    need not run out); a process of another host counts as alive until its lease lapses."""
    import socket  # noqa: PLC0415

    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:       # exists, another user's
        return True
    return not _is_zombie(int(pid))


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False
