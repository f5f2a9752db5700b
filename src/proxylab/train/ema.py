"""Exponential weight average (EWA), evaluated beside the raw weights (``train.ema_decay``).

Zhang et al. 2024 ("How does critical batch size scale in pre-training?") train with a
constant LR after warmup and evaluate an exponential average of the weights,

    w̄_t = τ w̄_{t−1} + (1 − τ) w_t,  w̄_0 = 0,  read as w̄_t / (1 − τ^t)  (bias-corrected),

so that steps-to-target does not depend on where a decaying schedule would end. The loop
calls :meth:`WeightAverage.update` after every optimizer step and records
:meth:`WeightAverage.metrics` (``val_ema/loss``, ``val_ema/acc``) at every evaluation, on a
copy of the model holding the averaged weights; the raw ``val/*`` metrics are unchanged.

Sharp edge: the average is not part of a checkpoint, so a run resumed from one restarts it
(``train.checkpoint_every`` and ``train.ema_decay`` together are refused).
"""

from __future__ import annotations

import copy
from typing import Callable

import torch

from proxylab.config import ConfigError, RunConfig


class WeightAverage:
    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.decay, self.t = decay, 0
        self.model = model
        self.params = [p for p in model.parameters() if p.dtype.is_floating_point]
        self.shadow = [torch.zeros_like(p, dtype=torch.float32) for p in self.params]
        self._copy: torch.nn.Module | None = None

    @classmethod
    def from_config(cls, cfg: RunConfig, model: torch.nn.Module) -> "WeightAverage | None":
        """The run's weight average, or None when ``train.ema_decay`` is 0 (the default)."""
        if cfg.train.ema_decay == 0.0:
            return None
        if cfg.train.checkpoint_every > 0:
            raise ConfigError("train.ema_decay: the weight average is not checkpointed; "
                              "use it with train.checkpoint_every = 0")
        return cls(model, cfg.train.ema_decay)

    @torch.no_grad()
    def update(self) -> None:
        """w̄ ← τ w̄ + (1 − τ) w, after an optimizer step."""
        self.t += 1
        torch._foreach_lerp_(self.shadow, [p.detach().float() for p in self.params],
                             1.0 - self.decay)

    @torch.no_grad()
    def averaged(self) -> list[torch.Tensor]:
        """The bias-corrected average w̄_t / (1 − τ^t); the raw weights before any update."""
        if self.t == 0:
            return [p.detach().float().clone() for p in self.params]
        c = 1.0 - self.decay ** self.t
        return [s / c for s in self.shadow]

    @torch.no_grad()
    def averaged_model(self) -> torch.nn.Module:
        """A copy of the model (made once, reused) holding the averaged weights and the
        model's current buffers."""
        if self._copy is None:
            self._copy = copy.deepcopy(self.model)
        dst = [p for p in self._copy.parameters() if p.dtype.is_floating_point]
        for q, w in zip(dst, self.averaged()):
            q.copy_(w)
        for qb, b in zip(self._copy.buffers(), self.model.buffers()):
            qb.copy_(b)
        self._copy.train(self.model.training)
        return self._copy

    def metrics(self, evaluate: Callable[[torch.nn.Module], dict]) -> dict[str, float]:
        """``val_ema/loss`` (and ``val_ema/acc``) from ``evaluate(model) -> {"val/loss", ...}``
        run on the averaged weights."""
        ev = evaluate(self.averaged_model())
        return {k.replace("val/", "val_ema/"): v for k, v in ev.items() if k.startswith("val/")}
