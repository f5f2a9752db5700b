"""Scale-invariant hidden matrices (``model.scale_inv``): each neuron's weight row is
normalised to unit norm in the forward pass.

    y = x · (W_i / ‖W_i‖)ᵀ   for every output neuron i

so f(α_i W_i) = f(W_i) for any α_i > 0, row by row. This is the setting of van Laarhoven
(2017) and Kosson et al. (2024, "Rotational equilibrium"): for such a weight the gradient is
orthogonal to each row (∇_{W_i} f ⊥ W_i) and shrinks like 1/‖W_i‖, so L2 / weight decay only
sets the effective LR η/‖W_i‖², and the norm settles where decay and update balance.
It is the per-neuron form of a normalisation after the linear map (BatchNorm-like, or
Weight Standardization without centring); a LayerNorm after the map would make only the
whole matrix scale-invariant. Unit rows match the standard 1/sqrt(fan_in) init in scale,
so the function at initialisation is nearly unchanged.

The parameter stays ``.weight`` (same names, roles, init and optimizer groups); BitLinear
layers (``model.quant``) are left as they are.
"""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor


class RowNormLinear(nn.Linear):
    """nn.Linear whose weight rows are normalised to unit norm in the forward pass."""

    scale_invariant = True   # read by the weight-decay probes (train/wd_probes.py)

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight
        return F.linear(x, w / w.norm(dim=1, keepdim=True).clamp_min(1e-12), self.bias)


def make_scale_invariant(model_cfg, *modules: nn.Module) -> None:
    """Swap every plain nn.Linear inside ``modules`` for a RowNormLinear sharing its
    parameters, when ``model.scale_inv`` is on (nothing otherwise)."""
    if not getattr(model_cfg, "scale_inv", False):
        return
    for root in modules:
        for parent in list(root.modules()):
            for name, child in list(parent.named_children()):
                if type(child) is nn.Linear:
                    new = RowNormLinear(child.in_features, child.out_features,
                                        bias=child.bias is not None, device=child.weight.device,
                                        dtype=child.weight.dtype)
                    new.weight, new.bias = child.weight, child.bias
                    setattr(parent, name, new)


def scale_invariant_names(model: nn.Module) -> list[str]:
    """Names of the weights that are scale-invariant row by row (``<module>.weight``)."""
    return [f"{n}.weight" if n else "weight" for n, m in model.named_modules()
            if getattr(m, "scale_invariant", False)]
