"""Sign methods: Lion and Signum (research/optimizers.md §2.2).

Lion with decoupled weight decay λ solves min f s.t. ‖θ‖∞ ≤ 1/λ (Chen et al., arXiv
2310.05898); under ``independent`` decay the radius is peak_lr/λ. Probes report the fraction
of coordinates at that bound and max|θ|/radius.
"""

from __future__ import annotations

import torch
from torch import Tensor

from proxylab.optim.base import ProxyOptimizer, tensor_numel, tensor_sum


def lion_direction_(m: Tensor, g: Tensor, beta1, beta2) -> Tensor:
    """u = sign(β₁m + (1-β₁)g); then m ← β₂m + (1-β₂)g. β₁ = β₂ is Signum."""
    u = torch.lerp(m, g, 1 - beta1).sign_()
    m.lerp_(g, 1 - beta2)
    return u


def linf_radius(hp: dict):
    """1/λ (decoupled) or peak_lr/λ (independent); None when decay does not bound θ."""
    lam = hp["weight_decay"]
    if hp["wd_mode"] not in ("decoupled", "independent") or (not isinstance(lam, Tensor) and lam == 0):
        return None
    return 1 / lam if hp["wd_mode"] == "decoupled" else hp["peak_lr"] / lam


def bound_stats(opt: ProxyOptimizer, p: Tensor, hp: dict, tol: float = 1e-2) -> None:
    """Fraction of coordinates with |θ| ≥ (1 - tol)·radius, and max|θ|/radius."""
    radius = linf_radius(hp)
    if radius is None:
        return
    stacked = hp["stacked"]
    a = p.abs()
    at = (a >= (1 - tol) * radius).to(p.dtype)
    opt.stat("frac_at_linf_bound", tensor_sum(at, stacked), tensor_numel(p, stacked))
    amax = a.amax(dim=tuple(range(1, p.ndim)), keepdim=True) if stacked and p.ndim > 1 else a.max()
    opt.stat("max_abs_over_radius", amax / radius, agg="max")


class Lion(ProxyOptimizer):
    """Lion (Chen et al., arXiv 2302.06675). Use a ~3-10× smaller lr than AdamW."""

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0,
                 wd_mode="decoupled"):
        super().__init__(params, dict(lr=lr, beta1=betas[0], beta2=betas[1],
                                      weight_decay=weight_decay, wd_mode=wd_mode))

    def direction(self, p, g, state, hp):
        if "exp_avg" not in state:
            state["exp_avg"] = torch.zeros_like(g)
        u = lion_direction_(state["exp_avg"], g, hp["beta1"], hp["beta2"])
        if self.probing:
            bound_stats(self, p, hp)
            agree = (u * g.sign() > 0).to(g.dtype)
            self.stat("sign_agreement", tensor_sum(agree, hp["stacked"]), tensor_numel(g, hp["stacked"]))
        return u


class Signum(Lion):
    """Signum (Bernstein et al. 2018): m ← βm + (1-β)g, u = sign(m). Lion with β₁ = β₂."""

    def __init__(self, params, lr=1e-4, momentum=0.9, weight_decay=0.0, wd_mode="decoupled"):
        super().__init__(params, lr, (momentum, momentum), weight_decay, wd_mode)
