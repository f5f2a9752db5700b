"""A finite table of examples split once into a training set and a held-out set.

The shared machinery of the algorithmic tasks (``modular``, ``sparse_parity``, ``s5``): the
subclass builds every example as ``x = tokens, y = [-100, ..., -100, answer]``
in an order drawn from the run seed, and :meth:`HeldOutTask._split` keeps the first
``train_frac`` of them for training and the rest for validation. As in the modular task,
``train_batch`` draws training examples with replacement (or returns the whole training set
with ``task.full_batch``), and ``val_batches`` always returns the WHOLE validation set, so
validation loss and accuracy are exact rather than estimated.
"""

from __future__ import annotations

import torch
from torch import Tensor

from proxylab.config import ConfigError
from proxylab.tasks.base import Batch, Task


class HeldOutTask(Task):
    has_accuracy = True
    full_batch = False

    def _split(self, x: Tensor, y: Tensor, train_frac: float, what: str) -> None:
        """Keep the first ``train_frac`` of the (already seeded-order) rows for training."""
        n = len(x)
        n_train = int(train_frac * n)
        if not 1 <= n_train < n:
            raise ConfigError(
                f"task.train_frac: {train_frac} gives {n_train} training examples of {n} "
                f"({what}); both train and validation need at least one")
        self._x_train, self._y_train = x[:n_train], y[:n_train]
        self._x_val, self._y_val = x[n_train:], y[n_train:]
        self._val_cache: dict[int, list[Batch]] = {}

    def eval_sets(self) -> dict[str, list[Batch]]:
        return {}

    def train_batch(self, batch_size: int, gen: torch.Generator) -> Batch:
        """Examples drawn with replacement; with ``full_batch`` the whole training set (the
        same tensors every step: do not modify them in place)."""
        if self.full_batch:
            return self._x_train, self._y_train
        idx = torch.randint(len(self._x_train), (batch_size,), generator=gen)
        return self._x_train[idx], self._y_train[idx]

    def val_batches(self, batch_size: int, n: int) -> list[Batch]:
        """The WHOLE validation set in chunks of ``batch_size``; ``n`` is ignored."""
        if batch_size not in self._val_cache:
            self._val_cache[batch_size] = [
                (self._x_val[i:i + batch_size], self._y_val[i:i + batch_size])
                for i in range(0, len(self._x_val), batch_size)]
        return list(self._val_cache[batch_size])


def answer_targets(x: Tensor, answer: Tensor, ignore: int) -> Tensor:
    """``y`` for inputs ``x`` [N, T]: ``ignore`` everywhere except the answer at the last position."""
    y = torch.full_like(x, ignore)
    y[:, -1] = answer
    return y
