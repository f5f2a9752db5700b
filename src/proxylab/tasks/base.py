"""The Task interface and the window sampler shared by every token-stream task.

A token stream is one or more 1-D integer arrays (``segments``: an in-memory byte buffer, or
``np.memmap`` views of token files). A training example is a window of ``seq_len + 1``
consecutive tokens inside one segment; ``x`` is its first ``seq_len`` tokens and ``y`` the
last ``seq_len`` (next-token targets). Windows never straddle two segments, because two
shards are two unrelated token sequences.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch
from torch import Tensor

IGNORE = -100  # the target value that carries no loss (torch cross_entropy's ignore_index)

Batch = tuple[Tensor, Tensor]


class Task:
    """What the training loop needs from a data set (see docs/internals.md).

    ``train_batch`` draws all its randomness from the generator it is given, so a run is a
    pure function of its seed; ``val_batches`` uses no randomness at all, so every
    evaluation of every run sees the same examples.
    """

    vocab_size: int
    seq_len: int
    fingerprint: str
    has_accuracy: bool = False

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError

    def train_batch(self, batch_size: int, gen: torch.Generator) -> Batch:
        raise NotImplementedError

    def val_batches(self, batch_size: int, n: int) -> list[Batch]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"


class TokenStream:
    """Fixed-length windows over a list of token segments, addressed by one global index."""

    def __init__(self, segments: list[np.ndarray], seq_len: int):
        self.seq_len = seq_len
        self.n_tokens = int(sum(len(s) for s in segments))
        # segments too short for a single window contribute nothing (and cannot be indexed)
        self.segments = [s for s in segments if len(s) > seq_len]
        counts = [len(s) - seq_len for s in self.segments]
        self.starts = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int64)
        self.n_windows = int(self.starts[-1])

    def gather(self, idx: np.ndarray) -> Batch:
        """Windows number ``idx`` (int64 array of global window indices) as (x, y)."""
        idx = np.asarray(idx, dtype=np.int64)
        seg = np.searchsorted(self.starts, idx, side="right") - 1
        off = idx - self.starts[seg]
        span = np.arange(self.seq_len + 1, dtype=np.int64)
        out = np.empty((len(idx), self.seq_len + 1), dtype=np.int64)
        for s in np.unique(seg):
            rows = np.nonzero(seg == s)[0]
            # fancy indexing a memmap reads just these tokens, never the whole file
            out[rows] = self.segments[s][off[rows, None] + span]
        t = torch.from_numpy(out)
        return t[:, :-1].contiguous(), t[:, 1:].contiguous()

    def random_batch(self, batch_size: int, gen: torch.Generator) -> Batch:
        idx = torch.randint(self.n_windows, (batch_size,), generator=gen)
        return self.gather(idx.numpy())

    def spread_batches(self, batch_size: int, n: int) -> list[Batch]:
        """``n`` batches whose windows are spread evenly from the first to the last window."""
        m = batch_size * n
        idx = (np.arange(m, dtype=np.int64) * (self.n_windows - 1)) // max(m - 1, 1)
        return [self.gather(idx[i * batch_size:(i + 1) * batch_size]) for i in range(n)]


def hash_tokens(h: "hashlib._Hash", arr: np.ndarray, chunk: int = 1 << 24) -> None:
    """Feed ``arr`` to ``h`` as little-endian uint32, chunk by chunk.

    One canonical dtype makes the fingerprint a property of the tokens, not of the file
    format that stored them (raw uint16 and headered files with equal tokens hash alike);
    chunking keeps memory flat on multi-GB memmaps.
    """
    for i in range(0, len(arr), chunk):
        h.update(np.ascontiguousarray(arr[i:i + chunk], dtype="<u4").tobytes())
