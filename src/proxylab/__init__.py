"""proxylab: a laboratory for the science of training dynamics.

``import proxylab as pl``: ``pl.run(config)``, ``pl.sweep(spec)``, ``pl.load(db).runs()``;
configs are :class:`pl.RunConfig`; optimizers live in :mod:`proxylab.optim`.
"""

__version__ = "0.1.0"

from proxylab.config import ConfigError, RunConfig, load_config  # noqa: E402
from proxylab.api import checkpoint_steps, load, load_checkpoint, run, sweep  # noqa: E402

__all__ = ["ConfigError", "RunConfig", "checkpoint_steps", "load", "load_checkpoint", "load_config",
           "run", "sweep", "__version__",
           "analysis", "optim", "report", "store"]


def __getattr__(name: str):
    """``pl.analysis``, ``pl.optim``, ``pl.report``, ``pl.store``: imported on first use."""
    if name in ("analysis", "optim", "report", "store", "studies"):
        import importlib  # noqa: PLC0415

        return importlib.import_module(f"proxylab.{name}")
    raise AttributeError(f"module 'proxylab' has no attribute {name!r}")
