"""Sparse parity: the label is the XOR of k hidden bits of an n-bit string.

``task.name = "sparse_parity"`` with ``task.parity_n`` = n bits, of which ``task.parity_k`` = k
are relevant (Barak et al. 2022, "Hidden progress in deep learning: SGD learns parities near
the computational limit"). Small networks trained on a finite sample of it show the grokking
pattern too: a long plateau at chance, then a sudden jump.

Tokens: each example is ``x = [b_0, ..., b_{n-1}, EQ]`` with bits as tokens 0 and 1 and
EQ = 2 (vocab 3), and ``y = [-100, ..., -100, label]`` with ``label = (Σ_{i∈S} b_i) mod 2``
(tokens 0 / 1), so loss and accuracy count only the answer — the layout of the modular task,
which every sequence model (``gpt``, ``answer_tf``, the one-hot ``mlp``) takes unchanged.

Everything comes from one generator seeded with the run seed, in this order:

1. the relevant set S: the first k entries of a random permutation of 0..n-1, sorted;
2. the inputs: ``task.parity_samples`` DISTINCT bit strings, uniformly at random — or all
   2^n of them (in random order) when 2^n <= parity_samples;
3. the split: the first ``task.train_frac`` of them train, the rest are the validation set
   (so train and validation never share an input).

Chance accuracy is 1/2 on a balanced sample (any sample with k >= 1 is balanced in
expectation; the exact shares are in ``describe()``).
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import Tensor

from proxylab.config import ConfigError, TaskConfig
from proxylab.tasks.base import IGNORE
from proxylab.tasks.heldout import HeldOutTask, answer_targets

ENUMERATE_BITS = 20   # n <= 20: draw inputs as a permutation of all 2^n codes (<= 1M ints)
EQ = 2                # the answer-position token


def parity_labels(bits: Tensor, relevant: Tensor | list[int]) -> Tensor:
    """``(Σ_{i in relevant} bits[:, i]) mod 2`` for a 0/1 tensor ``bits`` [N, n]."""
    return bits[:, torch.as_tensor(relevant, dtype=torch.long)].sum(1) % 2


def relevant_bits(n: int, k: int, gen: torch.Generator) -> Tensor:
    """The k relevant bit positions: the first k of a random permutation of 0..n-1, sorted."""
    return torch.randperm(n, generator=gen)[:k].sort().values


def sample_inputs(n: int, count: int, gen: torch.Generator) -> Tensor:
    """``min(count, 2^n)`` distinct n-bit strings (LongTensor of 0/1, [N, n]) in random order."""
    if n <= ENUMERATE_BITS:
        codes = torch.randperm(1 << n, generator=gen)[:count]
        return (codes[:, None] >> torch.arange(n)) & 1            # bit i of the code
    rows = torch.empty(0, n, dtype=torch.long)
    while len(rows) < count:         # 2^n > 1M here: collisions are rare, one round suffices
        rows = torch.cat([rows, torch.randint(0, 2, (count - len(rows), n), generator=gen)])
        uniq, inv = torch.unique(rows, dim=0, return_inverse=True)
        first = torch.full((len(uniq),), len(rows)).scatter_reduce(
            0, inv, torch.arange(len(rows)), "amin")          # first draw of each distinct row
        rows = rows[first.sort().values]                       # kept in draw order
    return rows


class SparseParityTask(HeldOutTask):
    vocab_size = 3

    def __init__(self, cfg: TaskConfig, *, seed: int):
        n, k = cfg.parity_n, cfg.parity_k
        if not 1 <= k <= n:
            raise ConfigError(f"task.parity_k: {k} relevant bits is not allowed with "
                              f"task.parity_n = {n}; choose 1 <= parity_k <= parity_n")
        if cfg.corrupt_frac:
            raise ConfigError("task.corrupt_frac: label corruption exists for task.name = "
                              "'modular' only; set it to 0 for 'sparse_parity'")
        self.n, self.k, self.full_batch = n, k, cfg.full_batch
        self.seq_len = n + 1
        gen = torch.Generator().manual_seed(seed)
        self.relevant = relevant_bits(n, k, gen)
        bits = sample_inputs(n, cfg.parity_samples, gen)
        x = torch.cat([bits, torch.full((len(bits), 1), EQ)], dim=1)
        self._split(x, answer_targets(x, parity_labels(bits, self.relevant), IGNORE),
                    cfg.train_frac, f"{len(bits)} inputs of {n} bits")
        h = hashlib.sha256(f"proxylab-sparse-parity\0{n}\0{self.relevant.tolist()}\0".encode())
        for part in (self._x_train, self._x_val):   # each split as a SET of inputs (sorted)
            h.update(torch.unique(part, dim=0).numpy().astype("<i1").tobytes() + b"\0")
        self.fingerprint = h.hexdigest()

    def describe(self) -> dict[str, Any]:
        return {"task": "sparse_parity", "source": "sparse_parity", "n_bits": self.n,
                "k_relevant": self.k, "relevant_bits": self.relevant.tolist(),
                "vocab_size": self.vocab_size, "seq_len": self.seq_len,
                "n_train_examples": len(self._x_train), "n_val_examples": len(self._x_val),
                "train_label_one_share": float(self._y_train[:, -1].float().mean()),
                "val_label_one_share": float(self._y_val[:, -1].float().mean()),
                "full_batch": self.full_batch, "fingerprint": self.fingerprint}
