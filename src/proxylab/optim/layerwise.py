"""Layer-wise normalised methods: NovoGrad (Ginsburg et al., arXiv 1905.11286) and LAMB
(You et al., arXiv 1904.00962). One scalar per tensor (per member when stacked)."""

from __future__ import annotations

import torch
from torch import Tensor

from proxylab.optim.adam import _betas_group, _eps_stat, adam_direction, adam_moments_
from proxylab.optim.base import (ProxyOptimizer, check_hparam, host_scalar, ratio_or_one,
                                 tensor_norm, tensor_sum)


def novograd_direction_(state: dict, g: Tensor, beta1, beta2, eps, grad_averaging: bool,
                        stacked: bool) -> Tensor:
    """v ← β₂v + (1-β₂)‖g‖² (v₁ = ‖g₁‖²); m ← β₁m + c·g/(sqrt(v)+ε) (m₁ = g₁/(sqrt(v₁)+ε));
    c = 1-β₁ with grad_averaging, else 1. No bias correction (the paper has none)."""
    n2 = tensor_sum(g * g, stacked)
    if "grads_ema" not in state:
        state["grads_ema"] = n2.clone()
    else:
        state["grads_ema"].lerp_(n2, 1 - beta2)
    g_hat = g / (state["grads_ema"].sqrt() + eps)
    if "moments" not in state:
        state["moments"] = g_hat
    else:
        if grad_averaging:
            g_hat = g_hat * (1 - beta1)
        state["moments"].mul_(beta1).add_(g_hat)
    return state["moments"]


def trust_ratio(p: Tensor, r: Tensor, stacked: bool, clip: float):
    """φ(‖θ‖)/‖r‖ with φ(z) = min(z, clip); 1 where either norm is 0. Float or tensor."""
    w = host_scalar(tensor_norm(p, stacked), stacked)
    n = host_scalar(tensor_norm(r, stacked), stacked)
    w = min(w, clip) if isinstance(w, float) else w.clamp_max(clip)
    return ratio_or_one(w, n)


class NovoGrad(ProxyOptimizer):
    """NovoGrad with the shared weight decay.

    The paper (and pytorch_optimizer with weight_decouple=False) adds dθ *inside* the
    momentum after the layer normalisation; here decay is the shared applier (decoupled
    by default = pytorch_optimizer weight_decouple=True), and l2 adds λθ before the norm.
    """

    def __init__(self, params, lr=1e-3, betas=(0.95, 0.98), eps=1e-8, weight_decay=0.0,
                 wd_mode="decoupled", *, grad_averaging=False):
        super().__init__(params, _betas_group(lr, betas, eps, weight_decay, wd_mode,
                                              grad_averaging=bool(grad_averaging)))

    def direction(self, p, g, state, hp):
        return novograd_direction_(state, g, hp["beta1"], hp["beta2"], hp["eps"],
                                   hp["grad_averaging"], hp["stacked"])


class LAMB(ProxyOptimizer):
    """LAMB: r = m̂/(sqrt(v̂)+ε) (Adam, bias-corrected), step lr·φ(‖θ‖)/‖r‖ · r per tensor.

    The trust ratio is a per-tensor scale of the step (like Muon's shape scale), so the
    probes' ``update_rms`` is RMS(r) and ``applied_rms`` includes the trust ratio.

    Differences from the paper (Algorithm 2): decay is the shared applier outside the
    trust ratio (the paper normalises r + λθ together), so under decoupled decay the
    step is θ(1-γλ) - γ·trust·r.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0,
                 wd_mode="decoupled", *, trust_clip=10.0):
        check_hparam("extra.trust_clip", trust_clip)
        super().__init__(params, _betas_group(lr, betas, eps, weight_decay, wd_mode,
                                              trust_clip=trust_clip))

    def direction(self, p, g, state, hp):
        m, v = adam_moments_(state, g, hp["beta1"], hp["beta2"])
        if self.probing:
            _eps_stat(self, v, state["step"], hp["beta2"], hp["eps"], hp["stacked"])
        r = adam_direction(m, v, state["step"], hp["beta1"], hp["beta2"], hp["eps"])
        state["trust_ratio"] = trust = trust_ratio(p, r, hp["stacked"], hp["trust_clip"])
        if self.probing:
            self.stat("trust_ratio", trust, torch.ones_like(trust) if isinstance(trust, Tensor) else 1.0)
        return r

    def step_size(self, p, state, hp):
        return hp["lr"] * state["trust_ratio"]
