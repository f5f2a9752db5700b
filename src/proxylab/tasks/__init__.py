"""Data for proxy runs: ``build_task(cfg, seed=...)`` returns a :class:`Task`.

``task.name = "text"``: next-byte (or next-token) prediction on the built-in corpus, a text
file or folder, or nanoGPT-style ``.bin`` token files (:mod:`proxylab.tasks.text`).
``task.name = "modular"``: ``a OP b mod p`` with loss on the answer only
(:mod:`proxylab.tasks.modular`). ``task.name = "digits"``: image classification on
scikit-learn's 8x8 digits or MNIST-format / .npz files (:mod:`proxylab.tasks.digits`). The interface is fixed in docs/internals.md.
"""

from __future__ import annotations

from proxylab.config import ConfigError, TaskConfig
from proxylab.tasks.base import IGNORE, Task
from proxylab.tasks.digits import DigitsTask
from proxylab.tasks.modular import ModularTask, modular_answer
from proxylab.tasks.text import TextTask, build_text_task
from proxylab.tasks.tokenfile import open_token_file, write_token_file

__all__ = ["DigitsTask", "IGNORE", "ModularTask", "Task", "TextTask", "build_task", "modular_answer",
           "open_token_file", "write_token_file"]


def build_task(cfg: TaskConfig, *, seed: int) -> Task:
    """The task ``cfg`` describes. ``seed`` only matters where the data split is random
    (modular); text splits are fixed so that every run of a sweep sees the same data."""
    if cfg.name == "text":
        return build_text_task(cfg)
    if cfg.name == "modular":
        return ModularTask(cfg, seed=seed)
    if cfg.name == "digits":
        return DigitsTask(cfg, seed=seed)
    raise ConfigError(f"task.name: {cfg.name!r} is not allowed; choose one of 'text', 'modular', 'digits'")
