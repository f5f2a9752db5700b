"""The gradient noise scale B_simple = tr(Σ) / |G|² (McCandlish, Kaplan, Amodei 2018).

G is the true (expected) gradient and Σ the per-example gradient covariance, so a batch of
B examples has E|G_B|² = |G|² + tr(Σ)/B. Two batch sizes B_small < B_big give unbiased
estimates of both terms (paper, appendix A.1):

    |G|²_est = (B_big |G_big|² − B_small |G_small|²) / (B_big − B_small)
    S_est    = (|G_small|² − |G_big|²) / (1/B_small − 1/B_big)

Each single estimate is very noisy (and may be negative), so numerator and denominator are
smoothed as two SEPARATE bias-corrected EMAs and B_simple = EMA(S) / EMA(|G|²); an EMA of
the ratio would be biased.

:class:`NoiseScaleProbe` is the training-time probe (``train.noise_scale_every``): on a
probe step it reads |G_big|² from the gradient the training batch just produced (before
clipping), and takes one extra forward/backward on the first ``B_small`` examples of that
batch for |G_small|². Both are means over i.i.d. draws, so each estimate stays unbiased
(the overlap of the two batches only adds variance); the extra pass touches neither
``p.grad`` nor the random generator, so turning the probe on leaves training unchanged.

:func:`exact_noise_scale` is the per-example reference for small models (``torch.func``
per-sample gradients): |G|² and tr(Σ) of a finite set of examples, exactly.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Callable, Sequence

import torch
from torch import Tensor

from proxylab.config import ConfigError, RunConfig

Rows = list[tuple[int, str, float]]


def two_batch_estimates(g_small_sq: float, g_big_sq: float, b_small: float,
                        b_big: float) -> tuple[float, float]:
    """(|G|²_est, S_est = tr(Σ)_est) from the squared norms of two batch-mean gradients."""
    if not 0 < b_small < b_big:
        raise ValueError(f"need 0 < b_small < b_big, got {b_small}, {b_big}")
    g2 = (b_big * g_big_sq - b_small * g_small_sq) / (b_big - b_small)
    s = (g_small_sq - g_big_sq) / (1.0 / b_small - 1.0 / b_big)
    return g2, s


class BiasCorrectedEMA:
    """m_t = d m_{t-1} + (1 - d) x_t from m_0 = 0, read as m_t / (1 - d^t) (Adam's correction):
    the first reading is the first value, not a value shrunk toward zero."""

    def __init__(self, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay, self.raw, self.n = decay, 0.0, 0

    def update(self, x: float) -> float:
        self.n += 1
        self.raw = self.decay * self.raw + (1.0 - self.decay) * x
        return self.value

    @property
    def value(self) -> float:
        return self.raw / (1.0 - self.decay ** self.n) if self.n else math.nan


def sq_norm(tensors: Sequence[Tensor | None], scale: float = 1.0) -> float:
    """Σ |t|² over the tensors (None skipped), of ``t / scale``."""
    ts = [t.detach().float() for t in tensors if t is not None]
    if not ts:
        return 0.0
    return float(torch.stack(torch._foreach_norm(ts)).pow(2).sum()) / scale ** 2


class NoiseScaleProbe:
    """Two-batch estimates every ``every`` steps, smoothed into B_simple.

    Metric keys (all per probe step): ``noise/g_small_sq``, ``noise/g_big_sq`` (the raw
    squared norms), ``noise/g2_est``, ``noise/s_est`` (this step's unbiased estimates),
    ``noise/g2_ema``, ``noise/s_ema`` (their bias-corrected EMAs) and
    ``noise/b_simple`` = s_ema / g2_ema (in examples: sequences for text, images for digits).
    """

    def __init__(self, *, every: int, b_small: int, b_big: int, decay: float):
        if not 0 < b_small < b_big:
            raise ConfigError(f"train.noise_scale_small: {b_small} must be >= 1 and smaller "
                              f"than train.batch_size = {b_big}")
        self.every, self.b_small, self.b_big = every, b_small, b_big
        self.g2 = BiasCorrectedEMA(decay)
        self.s = BiasCorrectedEMA(decay)

    @classmethod
    def from_config(cls, cfg: RunConfig) -> "NoiseScaleProbe | None":
        """The probe of a run, or None when ``train.noise_scale_every`` is 0 (the default)."""
        tc = cfg.train
        if tc.noise_scale_every == 0:
            return None
        b_small = tc.noise_scale_small or max(1, tc.batch_size // 8)
        return cls(every=tc.noise_scale_every, b_small=b_small, b_big=tc.batch_size,
                   decay=tc.noise_scale_ema)

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def record(self, step: int, g_small_sq: float, g_big_sq: float) -> Rows:
        """Fold one pair of squared norms into the EMAs; the rows to log."""
        g2, s = two_batch_estimates(g_small_sq, g_big_sq, self.b_small, self.b_big)
        g2_ema, s_ema = self.g2.update(g2), self.s.update(s)
        b_simple = s_ema / g2_ema if g2_ema > 0 else math.nan
        return [(step, "noise/g_small_sq", g_small_sq), (step, "noise/g_big_sq", g_big_sq),
                (step, "noise/g2_est", g2), (step, "noise/s_est", s),
                (step, "noise/g2_ema", g2_ema), (step, "noise/s_ema", s_ema),
                (step, "noise/b_simple", b_simple)]

    def measure(self, step: int, model, params: list[Tensor], x: Tensor, y: Tensor,
                loss_fn: Callable[[Tensor, Tensor], Tensor], *, autocast=None,
                grad_scale: float = 1.0) -> Rows:
        """Call after the training batch's backward, before clipping: ``p.grad`` holds the
        gradient of the B_big-mean loss times ``grad_scale`` (``train.loss_scale``).
        ``loss_fn(logits, y)`` is the training objective (a mean over the batch)."""
        g_big_sq = sq_norm([p.grad for p in params], grad_scale)
        xs, ys = x[:self.b_small], y[:self.b_small]
        ctx = autocast() if autocast is not None else nullcontext()
        with ctx:
            loss = loss_fn(model(xs), ys)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        return self.record(step, sq_norm(grads), g_big_sq)


# ----------------------------------------------------------------------------------
# the exact reference: per-example gradients


def per_example_grads(model, loss_fn: Callable[[Tensor, Tensor], Tensor], x: Tensor,
                      y: Tensor, chunk: int = 256) -> Tensor:
    """[N, P] float64 matrix of per-example gradients of ``loss_fn(model(x_i), y_i)`` with
    respect to the trainable parameters (``torch.func.vmap`` over ``grad``)."""
    from torch.func import functional_call, grad, vmap  # noqa: PLC0415

    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    buffers = {n: b.detach() for n, b in model.named_buffers()}

    def one(p, xi, yi):
        logits = functional_call(model, (p, buffers), (xi.unsqueeze(0),))
        return loss_fn(logits, yi.unsqueeze(0))

    per = vmap(grad(one), in_dims=(None, 0, 0))
    out = []
    for i in range(0, len(x), chunk):
        g = per(params, x[i:i + chunk], y[i:i + chunk])
        out.append(torch.cat([g[n].reshape(g[n].shape[0], -1) for n in names], 1).double())
    return torch.cat(out, 0)


def exact_noise_scale(model, loss_fn: Callable[[Tensor, Tensor], Tensor], x: Tensor,
                      y: Tensor) -> dict[str, float]:
    """|G|², tr(Σ) and B_simple of the finite set (x, y), exactly.

    G = mean_i g_i and tr(Σ) = mean_i |g_i − G|² (the population covariance of the set),
    so a batch of B examples drawn from the set WITH replacement has
    E|G_B|² = |G|² + tr(Σ)/B exactly: the identity the two-batch estimator inverts.
    """
    g = per_example_grads(model, loss_fn, x, y)
    mean = g.mean(0)
    g2 = float(mean.pow(2).sum())
    trace = float((g - mean).pow(2).sum(1).mean())
    return {"g2": g2, "trace_sigma": trace, "b_simple": trace / g2 if g2 > 0 else math.nan,
            "n": int(len(x))}
