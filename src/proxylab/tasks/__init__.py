"""Data for proxy runs: ``build_task(cfg, seed=...)`` returns a :class:`Task`.

``task.name = "text"``: next-byte (or next-token) prediction on the built-in corpus, a text
file or folder, or nanoGPT-style ``.bin`` token files (:mod:`proxylab.tasks.text`).
``task.name = "modular"``: ``a OP b mod p`` with loss on the answer only
(:mod:`proxylab.tasks.modular`). ``task.name = "digits"``: image classification on
scikit-learn's 8x8 digits or MNIST-format / .npz files (:mod:`proxylab.tasks.digits`).
``task.name = "sparse_parity"``: the XOR of k hidden bits of n (:mod:`proxylab.tasks.parity`).
``task.name = "s5"``: composition in the permutation group S5 (:mod:`proxylab.tasks.groups`).
The interface is fixed in docs/internals.md.
"""

from __future__ import annotations

from proxylab.config import ConfigError, TaskConfig
from proxylab.tasks.base import IGNORE, Task
from proxylab.tasks.digits import DigitsTask
from proxylab.tasks.groups import S5Task
from proxylab.tasks.modular import ModularTask, modular_answer
from proxylab.tasks.parity import SparseParityTask
from proxylab.tasks.text import TextTask, build_text_task
from proxylab.tasks.tokenfile import open_token_file, write_token_file

__all__ = ["DigitsTask", "IGNORE", "ModularTask", "S5Task", "SEEDED_TASKS", "SparseParityTask", "Task",
           "TextTask", "build_task", "modular_answer", "open_token_file", "write_token_file"]

# tasks whose data (split, relevant bits) depends on the run seed
SEEDED_TASKS = ("modular", "sparse_parity", "s5")


def build_task(cfg: TaskConfig, *, seed: int) -> Task:
    """The task ``cfg`` describes. ``seed`` only matters where the data split is random
    (SEEDED_TASKS); text splits are fixed so that every run of a sweep sees the same data."""
    if cfg.name == "text":
        return build_text_task(cfg)
    if cfg.name == "modular":
        return ModularTask(cfg, seed=seed)
    if cfg.name == "digits":
        return DigitsTask(cfg, seed=seed)
    if cfg.name == "sparse_parity":
        return SparseParityTask(cfg, seed=seed)
    if cfg.name == "s5":
        return S5Task(cfg, seed=seed)
    raise ConfigError(f"task.name: {cfg.name!r} is not allowed; choose one of 'text', 'modular', "
                      "'digits', 'sparse_parity', 's5'")
