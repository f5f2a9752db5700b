"""The run store: SQLite (WAL) for sweeps, runs and their metrics; DataFrame readers; exports.

```python
from proxylab.store import Store, load, export
store = Store("proxylab.db")             # created when missing
store.add_runs("lr", [(cfg.id, cfg)])    # pending
store.start_run(cfg.id, {"device": "cpu"}); store.log_metrics(cfg.id, [(0, "train/loss", 5.5)])
store.finish_run(cfg.id, "done", {"final_val_loss": 3.2})
load("proxylab.db").runs(sweep="lr")     # DataFrame: status, config columns, summary columns
```
"""

from __future__ import annotations

import os

from proxylab.store.db import Store
from proxylab.store.export import FORMATS, export, export_paths
from proxylab.store.meta import environment_meta
from proxylab.store.schema import FINAL_STATUSES, SCHEMA_VERSION, STATUSES, default_db_path, flat_config

__all__ = ["FINAL_STATUSES", "FORMATS", "SCHEMA_VERSION", "STATUSES", "Store", "default_db_path",
           "environment_meta", "export", "export_paths", "flat_config", "load"]


def load(path: str | os.PathLike | None = None) -> Store:
    """Open an existing store for reading (``$PROXYLAB_DB`` or ``./proxylab.db`` by default).

    Unlike ``Store(path)`` it does not create a missing file: a mistyped path is a
    :class:`~proxylab.config.ConfigError`, not a new empty store.
    """
    return Store(path, create=False)
