"""Factored second moments: FactoredAdam (Adam-like, as used by "Deconstructing") and the
paper-faithful Adafactor (Shazeer & Stern, arXiv 1804.04235). research/optimizers.md §2.4.

Tensors with ≥2 logical dims factor their last two dims: row and column means of g²
(means, not the paper's sums: the estimate R·C/mean(R) is the same).

Adafactor vs torch.optim.Adafactor (they coincide for beta1=None, relative_step=True,
scale_parameter=True, decoupled decay, and agree to ~eps1 otherwise):
* eps1 is added to g² (paper); torch clamps the estimate at eps1² and mean(R) at eps1.
* beta1 (momentum on the clipped update Û), relative_step and scale_parameter can be
  turned off here; torch has none of these switches.
* lr is the cap of the relative step ρ_t = min(lr, t^-½) (torch's convention; the paper
  hard-codes 1e-2), so a schedule multiplies the cap; decay uses lr, not α_t (as torch).
"""

from __future__ import annotations

import torch
from torch import Tensor

from proxylab.optim.adam import _betas_group, _eps_stat, adam_direction, ema_
from proxylab.optim.base import ProxyOptimizer, check_hparam, host_scalar, tensor_rms


def factored_second_moment_(state: dict, g: Tensor, weight, eps1: float, stacked: bool):
    """EMA (lerp by ``weight`` = 1-β₂) of g²+eps1; not bias-corrected.

    ≥2 logical dims: returns (r, c) with the estimate V̂ = r·c (r = R/mean(R) per row,
    c = C per column, both broadcastable to g); fewer: returns the full V.
    """
    if g.ndim - stacked >= 2:
        if "exp_avg_sq_row" not in state:
            state["exp_avg_sq_row"] = torch.zeros_like(g[..., :1])
            state["exp_avg_sq_col"] = torch.zeros_like(g[..., :1, :])
        row, col, g2 = state["exp_avg_sq_row"], state["exp_avg_sq_col"], g * g
        row.lerp_(g2.mean(dim=-1, keepdim=True).add_(eps1), weight)
        col.lerp_(g2.mean(dim=-2, keepdim=True).add_(eps1), weight)
        return row / row.mean(dim=-2, keepdim=True), col
    if "exp_avg_sq" not in state:
        state["exp_avg_sq"] = torch.zeros_like(g)
    return state["exp_avg_sq"].lerp_(torch.mul(g, g).add_(eps1), weight)


class FactoredAdam(ProxyOptimizer):
    """Adam with an Adafactor-factored second moment and momentum on g.

    m ← β₁m + (1-β₁)g; V̂ factored EMA of g² (β₂); u = m̂/(sqrt(V̂/(1-β₂ᵗ)) + ε).
    No update clipping, no relative step: a drop-in Adam with O(n+m) second-moment memory.
    1-D tensors are plain Adam.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 wd_mode="decoupled", *, eps1=1e-30):
        check_hparam("extra.eps1", eps1)
        super().__init__(params, _betas_group(lr, betas, eps, weight_decay, wd_mode, eps1=eps1))

    def direction(self, p, g, state, hp):
        if "exp_avg" not in state:
            state["exp_avg"] = torch.zeros_like(g)
        m = ema_(state["exp_avg"], g, hp["beta1"])
        v = factored_second_moment_(state, g, 1 - hp["beta2"], hp["eps1"], hp["stacked"])
        if isinstance(v, tuple):
            v = v[0] * v[1]
        if self.probing:
            _eps_stat(self, v.expand_as(g), state["step"], hp["beta2"], hp["eps"], hp["stacked"])
        return adam_direction(m, v, state["step"], hp["beta1"], hp["beta2"], hp["eps"])


class Adafactor(ProxyOptimizer):
    """Adafactor as in the paper (Algorithms 4-5 with update clipping and relative step).

    β̂₂ₜ = 1 - t^beta2_decay; U = g/sqrt(V̂); Û = U / max(1, RMS(U)/d);
    optional momentum m ← β₁m + (1-β₁)Û (beta1=None: off, the paper default);
    step α_t = max(eps2, RMS(θ_{t-1}))·ρ_t with ρ_t = min(lr, t^-½) (relative_step) or
    ρ_t = lr; without scale_parameter α_t = ρ_t.
    """

    def __init__(self, params, lr=1e-2, beta1=None, weight_decay=0.0, wd_mode="decoupled", *,
                 beta2_decay=-0.8, eps1=1e-30, eps2=1e-3, d=1.0, relative_step=True,
                 scale_parameter=True):
        if beta1 is not None:
            check_hparam("beta1", beta1, 0.0, 1.0, hi_open=True)
        check_hparam("extra.beta2_decay", -beta2_decay)
        check_hparam("extra.eps1", eps1)
        check_hparam("extra.eps2", eps2)
        check_hparam("extra.d", d, 1.0)
        super().__init__(params, dict(
            lr=lr, beta1=beta1, weight_decay=weight_decay, wd_mode=wd_mode,
            beta2_decay=beta2_decay, eps1=eps1, eps2=eps2, d=d,
            relative_step=bool(relative_step), scale_parameter=bool(scale_parameter)))

    def direction(self, p, g, state, hp):
        t, stacked = state["step"], hp["stacked"]
        v = factored_second_moment_(state, g, t ** hp["beta2_decay"], hp["eps1"], stacked)
        if isinstance(v, tuple):  # g / sqrt(r·c) without forming r·c
            u = torch.mul(g, v[0].rsqrt()).mul_(v[1].rsqrt())
        else:
            u = torch.div(g, v.sqrt())
        rms = host_scalar(tensor_rms(u, stacked), stacked)
        if isinstance(rms, float):
            clip = max(1.0, rms / hp["d"])
            if clip > 1.0:
                u.div_(clip)
        else:
            clip = (rms / hp["d"]).clamp_min(1.0)
            u.div_(clip)
        if self.probing:
            self.stat("frac_clipped", torch.as_tensor(clip > 1.0, dtype=torch.float64).sum(),
                      torch.as_tensor(clip).numel())
        if hp["beta1"] is not None:
            if "exp_avg" not in state:
                state["exp_avg"] = torch.zeros_like(g)
            u = ema_(state["exp_avg"], u, hp["beta1"])
        return u

    def step_size(self, p, state, hp):
        lr, t = hp["lr"], state["step"]
        if hp["relative_step"]:
            lr = torch.clamp(lr, max=t ** -0.5) if isinstance(lr, Tensor) else min(lr, t ** -0.5)
        if hp["scale_parameter"]:
            rms = host_scalar(tensor_rms(p, hp["stacked"]), hp["stacked"])
            lr = (max(rms, hp["eps2"]) if isinstance(rms, float) else rms.clamp_min(hp["eps2"])) * lr
        return lr
