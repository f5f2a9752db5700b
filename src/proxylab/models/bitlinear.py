"""BitLinear: the ternary-weight, 8-bit-activation linear layer of BitNet b1.58.

    y = RoundClip(W / γ, −1, 1)·γ  applied to  Q8(norm(x))

- **Weights** (Ma et al. 2024, arXiv 2402.17764): one scale per tensor, γ = mean|W|
  (``absmean``, the BitNet form) or median|W| (``absmedian``, Nielsen & Schneider-Kamp 2024,
  "BitNet b1.58 Reloaded"), clamped ≥ 1e-5; RoundClip(x) = max(−1, min(1, round(x))), so the
  forward pass uses values in {−γ, 0, +γ}. ``round`` is torch's: ties go to the even integer
  (W/γ = ±0.5 → 0, ±1.5 → ±2 → clipped to ±1), as in both reference codes. The latent
  weights stay full precision and get the full gradient (straight-through estimator).
- **Activations**: a parameter-free norm over the feature dimension (LayerNorm as in
  Reloaded's ``torch.layer_norm``, or RMSNorm as in the BitNet FAQ — the model's
  ``model.norm`` picks), then per token (each row of the last dimension) absmax 8-bit:
  s = 127 / max|x| (max clamped ≥ 1e-5), Q8(x) = clamp(round(x·s), −128, 127) / s; the
  gradient passes straight through (absmax scaling never clips, so the STE is exact identity).
- Quantization runs in float32 (under bf16 autocast too) so the 255 levels are exact.

Placement (see ``swap_linears``): every ``nn.Linear`` of the blocks becomes a BitLinear;
embeddings and the output head stay full precision. The blocks keep their own pre-norms, as
Reloaded's ``bitlinearize`` does; the BitNet paper deletes them instead (the gain of a
pre-norm only reweights channels before BitLinear's own norm).

All ops are whole-tensor (no Python loops over rows). ``bitlinear_probes(model)`` reports,
per layer, the shares of weights at −1/0/+1, γ, the flip rate since the last probe and the
activation quantization error, at a cost paid only when it is called.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

SCALE_EPS = 1e-5      # γ and max|x| are clamped to at least this (both references)
ACT_LEVELS = 127.0    # 8-bit absmax: max|x| maps to ±127 (BitNet; Reloaded uses 128)
NORM_EPS = 1e-6       # same eps as the model's own norms (layers.NORM_EPS)
SCALES = ("absmean", "absmedian")


# ----------------------------------------------------------------------------------
# the quantizers (pure functions; the layer wraps them in straight-through estimators)


def weight_scale(w: Tensor, kind: str = "absmean") -> Tensor:
    """γ of a whole tensor: mean|W| or median|W| (torch's median: the lower middle value
    for an even count), clamped ≥ 1e-5; a 0-dim tensor, no gradient."""
    a = w.detach().abs().float()
    if kind == "absmean":
        g = a.mean()
    elif kind == "absmedian":
        g = a.flatten().median()
    else:
        raise ValueError(f"weight scale {kind!r}: choose one of {SCALES}")
    return g.clamp(min=SCALE_EPS)


def ternary_levels(w: Tensor, gamma: Tensor) -> Tensor:
    """RoundClip(W/γ, −1, 1): integers in {−1, 0, 1} (as float)."""
    return (w.detach().float() / gamma).round_().clamp_(-1.0, 1.0)


def quantize_activations(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-token absmax 8-bit: (integer levels in [−128, 127] as float, scale s [..., 1]).

    clamp(round(x·s), −128, 127) needs no clamp here: |x| ≤ max|x| gives |x·s| ≤ 127 (up to
    one ulp, which rounds back to 127), so the levels are in [−127, 127] by construction.
    """
    x = x.float()
    s = ACT_LEVELS / x.abs().amax(dim=-1, keepdim=True).clamp_(min=SCALE_EPS)
    return (x * s).round_(), s


class _TernarySTE(torch.autograd.Function):
    """forward: γ·RoundClip(W/γ, −1, 1) exactly; backward: identity to the latent W."""

    @staticmethod
    def forward(ctx, w: Tensor, gamma: Tensor) -> Tensor:
        return ternary_levels(w, gamma).mul_(gamma).to(w.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad, None


class _Act8STE(torch.autograd.Function):
    """forward: Q8(x) per token; backward: identity."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        q, s = quantize_activations(x)
        return q.mul_(1.0 / s).to(x.dtype)  # 1/s per token: a [N, 1] division, not [N, in]

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad


def ternary_ste(w: Tensor, kind: str = "absmean") -> Tensor:
    """The weight a BitLinear forward pass uses, with the straight-through gradient."""
    return _TernarySTE.apply(w, weight_scale(w, kind))


def act8_ste(x: Tensor) -> Tensor:
    """Per-token 8-bit absmax fake quantization with the straight-through gradient."""
    return _Act8STE.apply(x)


def param_free_norm(x: Tensor, kind: str = "layernorm") -> Tensor:
    """LayerNorm or RMSNorm over the last dimension with no gain and no bias."""
    shape = x.shape[-1:]
    if kind == "layernorm":
        return F.layer_norm(x, shape, None, None, NORM_EPS)
    if hasattr(F, "rms_norm"):  # torch >= 2.4
        return F.rms_norm(x, shape, None, NORM_EPS)
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + NORM_EPS)


# ----------------------------------------------------------------------------------
# the layer


class BitLinear(nn.Linear):
    """nn.Linear with BitNet b1.58 quantization-aware training (see the module docstring).

    ``scale``: ``absmean`` | ``absmedian``; ``norm``: ``layernorm`` | ``rmsnorm`` (the
    parameter-free norm before activation quantization).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False, *,
                 scale: str = "absmean", norm: str = "layernorm", device=None, dtype=None):
        if scale not in SCALES:
            raise ValueError(f"BitLinear scale {scale!r}: choose one of {SCALES}")
        if norm not in ("layernorm", "rmsnorm"):
            raise ValueError(f"BitLinear norm {norm!r}: choose 'layernorm' or 'rmsnorm'")
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.scale, self.norm = scale, norm
        self._last_input: Tensor | None = None    # normed input of the last forward (probes)
        self._probe_levels: Tensor | None = None  # int8 levels at the previous probe

    def forward(self, x: Tensor) -> Tensor:
        xn = param_free_norm(x, self.norm)
        self._last_input = xn.detach()  # a reference only: no copy, no compute
        if self._probe_levels is None:  # flip rates count from the first forward (the init)
            self._probe_levels = self.levels()
        return F.linear(act8_ste(xn), ternary_ste(self.weight, self.scale), self.bias)

    @torch.no_grad()
    def gamma(self) -> Tensor:
        return weight_scale(self.weight, self.scale)

    @torch.no_grad()
    def levels(self) -> Tensor:
        """The ternary weights as int8 in {−1, 0, 1}."""
        return ternary_levels(self.weight, self.gamma()).to(torch.int8)

    @torch.no_grad()
    def ternary_weight(self) -> Tensor:
        """The weight the forward pass multiplies by: γ·RoundClip(W/γ, −1, 1)."""
        g = self.gamma()
        return (ternary_levels(self.weight, g) * g).to(self.weight.dtype)

    @torch.no_grad()
    def probe(self) -> dict[str, float]:
        """Shares of weights at −1/0/+1, γ, flip rate since the previous probe (or the first
        forward), and RMS(x − Q8(x)) / RMS(x) of the last forward's normed input."""
        lv = self.levels()
        n = lv.numel()
        out = {"frac_neg": float((lv < 0).sum()) / n, "frac_zero": float((lv == 0).sum()) / n,
               "frac_pos": float((lv > 0).sum()) / n, "gamma": float(self.gamma())}
        prev = self._probe_levels
        out["flip_rate"] = float((lv != prev).sum()) / n if prev is not None else float("nan")
        self._probe_levels = lv
        out["act_err"] = act_quant_error(self._last_input) if self._last_input is not None \
            else float("nan")
        return out

    def extra_repr(self) -> str:
        return super().extra_repr() + f", scale={self.scale}, norm={self.norm}"


@torch.no_grad()
def act_quant_error(x: Tensor) -> float:
    """RMS(x − Q8(x)) / RMS(x) over a whole tensor (0 for an all-zero tensor)."""
    x = x.float()
    q, s = quantize_activations(x)
    err = (x - q / s).pow(2).mean().sqrt()
    ref = x.pow(2).mean().sqrt()
    return float(err / ref) if float(ref) > 0 else 0.0


# ----------------------------------------------------------------------------------
# placing it in a model, and probing it


def swap_linears(module: nn.Module, *, scale: str = "absmean", norm: str = "layernorm") -> int:
    """Replace every ``nn.Linear`` inside ``module`` (recursively) by a BitLinear of the
    same shape and bias; returns how many. Call it BEFORE initialising the weights."""
    count = 0
    for name, child in module.named_children():
        if isinstance(child, nn.Linear) and not isinstance(child, BitLinear):
            setattr(module, name, BitLinear(child.in_features, child.out_features,
                                            bias=child.bias is not None, scale=scale, norm=norm,
                                            device=child.weight.device, dtype=child.weight.dtype))
            count += 1
        else:
            count += swap_linears(child, scale=scale, norm=norm)
    return count


def _quant_on(model_cfg) -> bool:
    quant = getattr(model_cfg, "quant", "none")
    if quant not in ("none", "bitnet158"):
        raise ValueError(f"model.quant {quant!r}: choose 'none' or 'bitnet158'")
    return quant == "bitnet158"


def quantize_model(model_cfg, *modules: nn.Module) -> None:
    """Apply ``model.quant`` / ``model.quant_scale`` of a ModelConfig to every nn.Linear
    inside ``modules`` (nothing when ``model.quant = "none"``)."""
    if _quant_on(model_cfg):
        for m in modules:
            swap_linears(m, scale=getattr(model_cfg, "quant_scale", "absmean"),
                         norm=getattr(model_cfg, "norm", "layernorm"))


def quantized(model_cfg, linear: nn.Linear) -> nn.Linear:
    """``linear`` itself, or a BitLinear of its shape when ``model.quant = "bitnet158"``."""
    if not _quant_on(model_cfg):
        return linear
    return BitLinear(linear.in_features, linear.out_features, bias=linear.bias is not None,
                     scale=getattr(model_cfg, "quant_scale", "absmean"),
                     norm=getattr(model_cfg, "norm", "layernorm"))


def bitlinear_probes(model: nn.Module) -> dict[str, float]:
    """``quant/<stat>/<layer>`` for every BitLinear, plus ``quant/<stat>`` aggregated over
    layers (weight shares and flip rate weighted by size; γ and act_err plain means).
    Empty for a model without BitLinear layers."""
    per: dict[str, dict[str, float]] = {name: m.probe() for name, m in model.named_modules()
                                        if isinstance(m, BitLinear)}
    if not per:
        return {}
    sizes = {name: m.weight.numel() for name, m in model.named_modules() if isinstance(m, BitLinear)}
    total = sum(sizes.values())
    out = {f"quant/{k}/{name}": v for name, stats in per.items() for k, v in stats.items()}
    for k in ("frac_neg", "frac_zero", "frac_pos", "flip_rate"):
        out[f"quant/{k}"] = sum(per[n][k] * sizes[n] for n in per) / total
    for k in ("gamma", "act_err"):
        out[f"quant/{k}"] = sum(per[n][k] for n in per) / len(per)
    return out
