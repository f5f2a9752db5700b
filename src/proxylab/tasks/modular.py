"""Modular arithmetic ``a OP b mod p``: the grokking task (Power et al. 2022).

Every pair (a, b) is one example: ``x = [a, OP, b, EQ]`` with the tokens OP = p and EQ = p+1
(vocab p + 2), and ``y = [-100, -100, -100, c]`` so loss and accuracy count only the answer.
All pairs are enumerated, shuffled by a generator seeded with the run seed, and the first
``train_frac`` of them train; the rest are the validation set, which ``val_batches`` always
returns whole so validation accuracy is exact.

Label corruption (``task.corrupt_frac`` = ξ, Doshi et al. 2024): the first round(ξ·N_train)
training pairs (in the seeded order) get a wrong label drawn uniformly from the p−1 others,
from a generator of its own, so the split is the same for every ξ. ``eval_sets()`` then
names the training subsets the loop evaluates beside validation (whole, at every eval):
``train_clean`` (clean pairs), ``train_corrupt`` (corrupted pairs, their WRONG labels: the
memorized share) and ``train_corrupt_true`` (the same pairs with the TRUE rule's answer).
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from proxylab.config import ConfigError, TaskConfig
from proxylab.tasks.base import IGNORE, Batch
from proxylab.tasks.heldout import HeldOutTask, answer_targets

OPS = ("+", "-", "*", "/", "x2+y2")


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % k for k in range(2, int(n**0.5) + 1))


def modular_answer(a: torch.Tensor, b: torch.Tensor, p: int, op: str) -> torch.Tensor:
    """``a OP b mod p`` elementwise for int64 tensors (b != 0 for division, p prime)."""
    if op == "+":
        return (a + b) % p
    if op == "-":
        return (a - b) % p
    if op == "*":
        return (a * b) % p
    if op == "/":
        # b^-1 = b^(p-2) mod p (Fermat); a table of p inverses is cheap next to p^2 pairs
        inv = torch.tensor([0] + [pow(v, p - 2, p) for v in range(1, p)], dtype=torch.long)
        return (a * inv[b]) % p
    if op == "x2+y2":
        return (a * a + b * b) % p
    raise ConfigError(f"task.op: {op!r} is not allowed; choose one of {', '.join(map(repr, OPS))}")


class ModularTask(HeldOutTask):
    seq_len = 4

    def __init__(self, cfg: TaskConfig, *, seed: int):
        p, op = cfg.p, cfg.op
        if op not in OPS:
            raise ConfigError(f"task.op: {op!r} is not allowed; choose one of "
                              f"{', '.join(map(repr, OPS))}")
        if op == "/" and not _is_prime(p):
            raise ConfigError(f"task.p: division needs a prime modulus, got {p}")
        self.p, self.op, self.full_batch = p, op, cfg.full_batch
        self.vocab_size = p + 2
        a = torch.arange(p).repeat_interleave(p)
        b = torch.arange(p).repeat(p)
        if op == "/":
            keep = b != 0
            a, b = a[keep], b[keep]
        gen = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(a), generator=gen)
        c = modular_answer(a, b, p, op)
        x = torch.stack([a, torch.full_like(a, p), b, torch.full_like(a, p + 1)], dim=1)
        self._split(x[order], answer_targets(x, c, IGNORE)[order], cfg.train_frac,
                    f"pairs, p={p}, op={op!r}")
        n_train = len(self._x_train)
        self.corrupt_frac = cfg.corrupt_frac
        self.n_corrupt = round(cfg.corrupt_frac * n_train)
        if self.n_corrupt:
            cgen = torch.Generator().manual_seed(seed * 7919 + 104729)   # its own stream
            shift = torch.randint(1, p, (self.n_corrupt,), generator=cgen)  # never 0: wrong
            self._y_true_corrupt = self._y_train[:self.n_corrupt].clone()
            self._y_train = self._y_train.clone()
            self._y_train[:self.n_corrupt, 3] = (self._y_true_corrupt[:, 3] + shift) % p
        # the data is the SET of training pairs (sorted), whatever order they were drawn in
        pair_ids = (self._x_train[:, 0] * p + self._x_train[:, 2]).sort().values
        h = hashlib.sha256(f"proxylab-modular\0{p}\0{op}\0".encode())
        h.update(pair_ids.numpy().astype("<i8").tobytes())
        if self.n_corrupt:   # the labels are data too
            h.update(b"corrupt\0" + (self._x_train[:, 0] * p + self._x_train[:, 2]).numpy()
                     .astype("<i8").tobytes() + self._y_train[:, 3].numpy().astype("<i8").tobytes())
        self.fingerprint = h.hexdigest()

    def describe(self) -> dict[str, Any]:
        return {"task": "modular", "source": "modular", "p": self.p, "op": self.op,
                "vocab_size": self.vocab_size, "seq_len": self.seq_len,
                "n_train_examples": len(self._x_train), "n_val_examples": len(self._x_val),
                "full_batch": self.full_batch, "fingerprint": self.fingerprint,
                **({"corrupt_frac": self.corrupt_frac, "n_corrupt": self.n_corrupt}
                   if self.n_corrupt else {})}

    def eval_sets(self) -> dict[str, list[Batch]]:
        """Training subsets evaluated beside validation (with corruption only; see above)."""
        if not self.n_corrupt:
            return {}
        k = self.n_corrupt
        return {"train_clean": [(self._x_train[k:], self._y_train[k:])],
                "train_corrupt": [(self._x_train[:k], self._y_train[:k])],
                "train_corrupt_true": [(self._x_train[:k], self._y_true_corrupt)]}
