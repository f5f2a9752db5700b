"""Probe arithmetic on the host, for the optimizer shell's instrumentation (base.py).

A probed step makes about ten numbers per tensor. Aggregated as tensors they cost a
tensor op (a few µs of dispatch) per addition, thousands per step: more than the step.
Instead every probe value reaches the host once (``to_host``) and the arithmetic runs
on python floats, float64 like the tensors it replaces, at ~50 ns an operation. A value
is a list of floats: one, or one per member. The reported numbers keep their bits:
+ - * / round the same in python and torch; the two places where they do not (torch's
float64 sqrt and its summation order) stay with torch, batched (``sqrt_all``,
``pooled_sums``). The other helpers give what python lacks: torch's answers for x/0
and for NaN in max, and broadcasting a one-value list (a [1] tensor) against M members.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def to_host(values: list) -> list[list[float]]:
    """Each value (a number or a tensor) as the list of its values, flattened, python floats.

    Tensors of one (device, dtype, shape) cross in one stacked copy, not one per value: on
    CPU that saves the dispatch of a conversion per value, on a GPU a sync per value.
    Integer and bool tensors (counts) become floats as ``.to(float64)`` would.
    """
    out: list = [None] * len(values)
    groups: dict[tuple, list[int]] = {}
    for i, x in enumerate(values):
        if isinstance(x, Tensor):
            groups.setdefault((x.device, x.dtype, x.shape), []).append(i)
        else:
            out[i] = [float(x)]
    for (_, dtype, shape), idx in groups.items():
        flat = torch.stack([values[i] for i in idx]).view(-1).tolist()  # step: no_grad
        if not dtype.is_floating_point:
            flat = [float(v) for v in flat]
        k = shape.numel()
        for j, i in enumerate(idx):
            out[i] = flat[j * k:(j + 1) * k]
    return out


def pooled_sums(vectors: list[list[float]]) -> list[float]:
    """The sum of each vector (members pooled), by torch in float64: its summation order is
    not python's left to right, and the probes keep torch's bits. One tensor op per
    distinct length (each row sums as its own 1-D tensor would)."""
    out = [v[0] for v in vectors]
    by_len: dict[int, list[int]] = {}
    for i, v in enumerate(vectors):
        if len(v) > 1:
            by_len.setdefault(len(v), []).append(i)
    for idx in by_len.values():
        rows = torch.tensor([vectors[i] for i in idx], dtype=torch.float64)
        for i, s in zip(idx, rows.sum(dim=1).tolist()):
            out[i] = s
    return out


def sqrt_all(values: list[float]) -> list[float]:
    """Square roots by torch: its float64 sqrt on CPU is not correctly rounded and differs
    from math.sqrt in the last bit for ~1% of inputs; the probes keep torch's bits."""
    if not values:
        return []
    return torch.tensor(values, dtype=torch.float64).sqrt_().tolist()


def div_like_torch(a: float, b: float) -> float:
    """a / b as float64 tensors divide: x/0 is ±inf, 0/0 and nan/0 are nan (python raises)."""
    try:
        return a / b
    except ZeroDivisionError:
        if a != a or a == 0.0:
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)


def max_like_torch(a: float, b: float) -> float:
    return a if a != a or a >= b else b             # torch.maximum: a nan on either side wins


def bcast(a: list[float], b: list[float]) -> tuple[list[float], list[float]]:
    """A one-value list repeated to the other's length (a [1] tensor against [M])."""
    if len(a) != len(b):
        if len(a) == 1:
            a = a * len(b)
        elif len(b) == 1:
            b = b * len(a)
        else:
            raise ValueError(f"probe values of {len(a)} and {len(b)} members do not broadcast")
    return a, b


def vsum(vectors: list[list[float]]) -> list[float]:
    """Elementwise sum, left to right."""
    acc = vectors[0]
    for v in vectors[1:]:
        acc = [x + y for x, y in zip(*bcast(acc, v))]
    return acc


def vmax(vectors: list[list[float]]) -> list[float]:
    """Elementwise max (nan wins)."""
    acc = vectors[0]
    for v in vectors[1:]:
        acc = [max_like_torch(x, y) for x, y in zip(*bcast(acc, v))]
    return acc


def vdiv(num: list[float], den: list[float]) -> list[float]:
    return [div_like_torch(a, b) for a, b in zip(*bcast(num, den))]
