"""Adam family: AdamW, Adam (+L2), AdamAtan2, Adalayer and its "adaptive last layer + norms,
SGD elsewhere" variant. Equations: research/optimizers.md §2.1 and §2.3.

The directions are plain functions of (g, state, hyperparameters); hyperparameters may be
floats or per-member tensors broadcast as ``[M, 1, ...]`` (see ``base.py``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from proxylab.optim.base import ProxyOptimizer, check_hparam, tensor_dims, tensor_sum

# ----------------------------------------------------------------------------------
# directions on plain tensors


def ema_(buf: Tensor, x: Tensor, beta) -> Tensor:
    """buf ← β·buf + (1-β)·x in place (β a float or a broadcast tensor)."""
    return buf.lerp_(x, 1 - beta)


def adam_moments_(state: dict, g: Tensor, beta1, beta2) -> tuple[Tensor, Tensor]:
    if "exp_avg" not in state:
        state["exp_avg"] = torch.zeros_like(g)
        state["exp_avg_sq"] = torch.zeros_like(g)
    m, v = state["exp_avg"], state["exp_avg_sq"]
    ema_(m, g, beta1)
    v.mul_(beta2).addcmul_(g, g, value=1 - beta2) if not isinstance(beta2, Tensor) \
        else v.mul_(beta2).add_((1 - beta2) * g * g)
    return m, v


def adam_direction(m: Tensor, v: Tensor, t: int, beta1, beta2, eps) -> Tensor:
    """u = m̂ / (sqrt(v̂) + ε), ε after bias correction (torch's placement).

    Computed as m / ((sqrt(v)/sqrt(bc₂) + ε)·bc₁): four passes, one temporary.
    """
    bc1, bc2_root = 1 - beta1 ** t, (1 - beta2 ** t) ** 0.5
    denom = v.sqrt().mul_(bc1 / bc2_root).add_(eps * bc1)
    return torch.div(m, denom, out=denom) if denom.shape == m.shape else m / denom


def atan2_direction(m: Tensor, v: Tensor, t: int, beta1, beta2, a: float, b: float) -> Tensor:
    """Adam-atan2 (Everett et al. 2024): u = a·atan2(m̂, b·sqrt(v̂)); no ε, bounded by a·π/2.

    atan2(m/bc₁, b·sqrt(v)/sqrt(bc₂)) = atan2(m, b·sqrt(v)·bc₁/sqrt(bc₂)) as bc₁ > 0.
    """
    bc1, bc2_root = 1 - beta1 ** t, (1 - beta2 ** t) ** 0.5
    den = v.sqrt().mul_(b * bc1 / bc2_root)
    return torch.atan2(m, den, out=den).mul_(a)


def block_mean_sq(g: Tensor, blocks: str, stacked: bool) -> Tensor:
    """Mean of g² over each Adalayer block, kept broadcastable to g.

    blocks: "tensor" (one block per tensor), "row" (one per output row, i.e. per index of
    the first logical dim; 1-D tensors stay one block) or "element" (Adam).
    """
    g2 = g * g
    if blocks == "element":
        return g2
    dims = tensor_dims(g, stacked)
    if blocks == "row" and len(dims) >= 2:
        dims = dims[1:]
    if not dims:
        return g2
    return g2.mean(dim=dims, keepdim=True)


def sgd_momentum_(state: dict, g: Tensor, momentum, dampening, nesterov: bool) -> Tensor:
    """torch.optim.SGD's momentum: buf₁ = g; buf ← μ·buf + (1-dampening)·g; Nesterov g + μ·buf."""
    if isinstance(momentum, float) and momentum == 0:
        return g
    buf = state.get("momentum_buffer")
    if buf is None:
        buf = state["momentum_buffer"] = g.clone()
    elif isinstance(dampening, Tensor):
        buf.mul_(momentum).add_((1 - dampening) * g)
    else:
        buf.mul_(momentum).add_(g, alpha=1 - dampening)
    return g + momentum * buf if nesterov else buf


def _betas_group(lr, betas, eps, weight_decay, wd_mode, **kw) -> dict:
    return dict(lr=lr, beta1=betas[0], beta2=betas[1], eps=eps, weight_decay=weight_decay,
                wd_mode=wd_mode, **kw)


def _eps_stat(opt: ProxyOptimizer, v: Tensor, t: int, beta2, eps, stacked: bool) -> None:
    """Fraction of coordinates whose sqrt(v̂) < ε (the update silently shrinks there),
    tested as v < ε²·(1 − β2ᵗ): the same set without a sqrt and a division per probe."""
    below = v < (eps * eps) * (1 - beta2 ** t)
    n = v[0].numel() if stacked else v.numel()
    opt.stat("frac_v_below_eps", tensor_sum(below.to(v.dtype), stacked), n)


# ----------------------------------------------------------------------------------
# optimizers


class AdamW(ProxyOptimizer):
    """Adam with the shared weight decay (decoupled by default: torch.optim.AdamW)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 wd_mode="decoupled"):
        super().__init__(params, _betas_group(lr, betas, eps, weight_decay, wd_mode))

    def direction(self, p, g, state, hp):
        m, v = adam_moments_(state, g, hp["beta1"], hp["beta2"])
        if self.probing:
            _eps_stat(self, v, state["step"], hp["beta2"], hp["eps"], hp["stacked"])
        return adam_direction(m, v, state["step"], hp["beta1"], hp["beta2"], hp["eps"])


class Adam(AdamW):
    """Adam with L2 regularisation (g += λθ before the moments): torch.optim.Adam."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 wd_mode="l2"):
        super().__init__(params, lr, betas, eps, weight_decay, wd_mode)


class AdamAtan2(ProxyOptimizer):
    """Adam-atan2 (Everett et al. 2024, arXiv 2407.05872): ε-free, u = a·atan2(m̂, b·sqrt(v̂))."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), weight_decay=1e-2,
                 wd_mode="decoupled", *, a=1.27, b=1.0):
        check_hparam("extra.a", a)
        check_hparam("extra.b", b)
        super().__init__(params, _betas_group(lr, betas, 0.0, weight_decay, wd_mode, a=a, b=b))

    def direction(self, p, g, state, hp):
        m, v = adam_moments_(state, g, hp["beta1"], hp["beta2"])
        return atan2_direction(m, v, state["step"], hp["beta1"], hp["beta2"], hp["a"], hp["b"])


BLOCKS = ("layer", "row", "element")


class Adalayer(ProxyOptimizer):
    """Adam with one second moment per block (Zhao et al., arXiv 2407.07972).

    m per coordinate; v_b ← β₂v_b + (1-β₂)·mean_{i∈b} g_i²; u = m̂ / (sqrt(v̂_b) + ε).
    blocks="layer": each tensor is a block, except the LM head (role "head"), split per
    output row (token), as in the paper. blocks="row": every ≥2-D tensor per row.
    blocks="element": one block per coordinate, which is exactly Adam (the test oracle).
    block_reduce="sum" uses Σ instead of mean (the paper text is ambiguous, §2.3 [verify]):
    it changes each block's step by sqrt(|b|).
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 wd_mode="decoupled", *, blocks="layer", block_reduce="mean"):
        _choice("extra.blocks", blocks, BLOCKS)
        _choice("extra.block_reduce", block_reduce, ("mean", "sum"))
        super().__init__(params, _betas_group(lr, betas, eps, weight_decay, wd_mode,
                                              blocks=blocks, block_reduce=block_reduce))

    def block_second_moment(self, state, g, hp) -> tuple[Tensor, Tensor]:
        blocks = hp["blocks"]
        if blocks == "layer":
            blocks = "row" if hp["role"] == "head" else "layer"
        if blocks == "layer":
            blocks = "tensor"
        sq = block_mean_sq(g, blocks, hp["stacked"])
        if hp["block_reduce"] == "sum" and sq.numel() != g.numel():
            sq = sq * (g.numel() / sq.numel())
        if "exp_avg" not in state:
            state["exp_avg"] = torch.zeros_like(g)
            state["exp_avg_sq"] = torch.zeros_like(sq)
        ema_(state["exp_avg"], g, hp["beta1"])
        ema_(state["exp_avg_sq"], sq, hp["beta2"])
        return state["exp_avg"], state["exp_avg_sq"]

    def direction(self, p, g, state, hp):
        m, v = self.block_second_moment(state, g, hp)
        if self.probing:
            _eps_stat(self, v.expand_as(g), state["step"], hp["beta2"], hp["eps"], hp["stacked"])
        return adam_direction(m, v, state["step"], hp["beta1"], hp["beta2"], hp["eps"])


class AdalayerSGD(Adalayer):
    """Adaptive last layer + norms, SGD elsewhere (the Deconstructing ablation, §2.3).

    Groups with role "head" or "norm" use the Adalayer direction; every other group uses
    SGD with heavy-ball momentum (torch convention, μ = beta1) at lr·sgd_lr_mult: plain
    SGD needs a much larger step than an adaptive method.
    """

    ADAPTIVE_ROLES = ("head", "norm")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 wd_mode="decoupled", *, blocks="layer", block_reduce="mean",
                 sgd_lr_mult=30.0, nesterov=False):
        check_hparam("extra.sgd_lr_mult", sgd_lr_mult)
        _choice("extra.blocks", blocks, BLOCKS)
        _choice("extra.block_reduce", block_reduce, ("mean", "sum"))
        ProxyOptimizer.__init__(self, params, _betas_group(
            lr, betas, eps, weight_decay, wd_mode, blocks=blocks, block_reduce=block_reduce,
            sgd_lr_mult=sgd_lr_mult, nesterov=nesterov))

    def direction(self, p, g, state, hp):
        if hp["role"] in self.ADAPTIVE_ROLES:
            return super().direction(p, g, state, hp)
        return sgd_momentum_(state, g, hp["beta1"], 0.0, hp["nesterov"])

    def step_size(self, p, state, hp):
        if hp["role"] in self.ADAPTIVE_ROLES:
            return hp["lr"]
        return hp["lr"] * hp["sgd_lr_mult"]


def _choice(key: str, value, allowed) -> None:
    if value not in allowed:
        from proxylab.config import ConfigError  # noqa: PLC0415

        raise ConfigError(f"optim.{key}: {value!r} is not allowed; choose one of "
                          f"{', '.join(map(repr, allowed))}")
