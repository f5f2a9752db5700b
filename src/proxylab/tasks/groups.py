"""Composition in the permutation group S5: the non-abelian grokking task.

``task.name = "s5"`` (Power et al. 2022 list S5 among their tasks; Morwani et al. show that
margin maximization learns its irreducible representations, as it learns Fourier features
for modular addition).

The 120 permutations of {0, 1, 2, 3, 4} are indexed in lexicographic order of their
one-line form ``(σ(0), ..., σ(4))`` (``itertools.permutations(range(5))``), so index 0 is the
identity and index 119 is the reversal (4, 3, 2, 1, 0).

Composition convention: ``a∘b`` is "b first, then a", i.e. ``(a∘b)(i) = a(b(i))``; in the
one-line form ``(a∘b)[i] = a[b[i]]``.

Every ordered pair (a, b) is one example: ``x = [a, OP, b, EQ]`` with OP = 120 and EQ = 121
(vocab 122) and ``y = [-100, -100, -100, index(a∘b)]`` — the layout of the modular task, so
``gpt``, ``answer_tf``, ``mlp`` and ``quad_mlp`` (operands at positions 0 and 2) all take it.
All 120² = 14,400 pairs are shuffled by a generator seeded with the run seed; the first
``task.train_frac`` train and the rest are the (whole) validation set.
"""

from __future__ import annotations

import hashlib
import itertools
from typing import Any

import torch
from torch import Tensor

from proxylab.config import ConfigError, TaskConfig
from proxylab.tasks.base import IGNORE
from proxylab.tasks.heldout import HeldOutTask, answer_targets


def permutations(n: int = 5) -> Tensor:
    """All n! permutations of 0..n-1 in one-line form, lexicographic order: LongTensor [n!, n]."""
    return torch.tensor(list(itertools.permutations(range(n))), dtype=torch.long)


def composition_table(perms: Tensor) -> Tensor:
    """``table[a, b]`` = index of a∘b, where ``(a∘b)[i] = perms[a][perms[b][i]]`` (b first)."""
    m, n = perms.shape
    index = {tuple(p): i for i, p in enumerate(perms.tolist())}
    composed = perms[:, None, :].expand(m, m, n).gather(2, perms[None, :, :].expand(m, m, n))
    return torch.tensor([index[tuple(row)] for row in composed.reshape(m * m, n).tolist()],
                        dtype=torch.long).view(m, m)


class S5Task(HeldOutTask):
    order = 120                  # |S5|
    seq_len = 4
    vocab_size = order + 2       # permutations, OP, EQ

    def __init__(self, cfg: TaskConfig, *, seed: int):
        if cfg.corrupt_frac:
            raise ConfigError("task.corrupt_frac: label corruption exists for task.name = "
                              "'modular' only; set it to 0 for 's5'")
        self.full_batch = cfg.full_batch
        m = self.order
        self.table = composition_table(permutations(5))
        a = torch.arange(m).repeat_interleave(m)
        b = torch.arange(m).repeat(m)
        order = torch.randperm(m * m, generator=torch.Generator().manual_seed(seed))
        a, b = a[order], b[order]
        x = torch.stack([a, torch.full_like(a, m), b, torch.full_like(a, m + 1)], dim=1)
        self._split(x, answer_targets(x, self.table[a, b], IGNORE), cfg.train_frac,
                    f"{m * m} pairs of S5")
        # the data is the SET of training pairs (sorted), whatever order they were drawn in
        pair_ids = (self._x_train[:, 0] * m + self._x_train[:, 2]).sort().values
        h = hashlib.sha256(b"proxylab-s5\0a.b=a[b[i]]\0")
        h.update(pair_ids.numpy().astype("<i8").tobytes())
        self.fingerprint = h.hexdigest()

    def describe(self) -> dict[str, Any]:
        return {"task": "s5", "source": "s5", "group_order": self.order,
                "composition": "(a∘b)[i] = a[b[i]] (b first)", "vocab_size": self.vocab_size,
                "seq_len": self.seq_len, "n_train_examples": len(self._x_train),
                "n_val_examples": len(self._x_val), "full_batch": self.full_batch,
                "fingerprint": self.fingerprint}
