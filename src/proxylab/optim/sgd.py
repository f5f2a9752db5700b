"""SGD (heavy-ball / Nesterov momentum, torch convention) and LARS (You et al. 2017)."""

from __future__ import annotations

import torch

from proxylab.optim.adam import sgd_momentum_
from proxylab.optim.base import ProxyOptimizer, check_hparam, host_scalar, ratio_or_one, tensor_norm


class SGD(ProxyOptimizer):
    """SGD with momentum. torch.optim.SGD(weight_decay=λ) is wd_mode="l2" here."""

    def __init__(self, params, lr=1e-3, momentum=0.0, weight_decay=0.0, wd_mode="decoupled",
                 *, dampening=0.0, nesterov=False):
        check_hparam("beta1", momentum, 0.0, 1.0, hi_open=True)
        check_hparam("extra.dampening", dampening, 0.0, 1.0)
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      nesterov=bool(nesterov), weight_decay=weight_decay,
                                      wd_mode=wd_mode))

    def direction(self, p, g, state, hp):
        return sgd_momentum_(state, g, hp["momentum"], hp["dampening"], hp["nesterov"])


class LARS(SGD):
    """LARS: momentum SGD on trust·g with trust = η‖θ‖/‖g‖ per tensor (1 where a norm is 0).

    Under wd_mode="l2" the trust ratio is the paper's η‖θ‖/(‖∇L‖ + λ‖θ‖) applied to
    ∇L + λθ (= pytorch_optimizer.LARS); under the other modes the decay is applied by the
    shell and the trust ratio sees the plain gradient. Every tensor is a layer, as in the
    paper; skip_1d=True exempts 1-D tensors (gains, biases: plain momentum SGD at the full
    LR), the SimCLR / pytorch_optimizer convention. The LR multiplies the momentum buffer
    (torch style), not the gradient before it (the paper's form); they agree for a
    constant LR.
    """

    def __init__(self, params, lr=1.0, momentum=0.9, weight_decay=0.0, wd_mode="decoupled",
                 *, trust_coefficient=1e-3, dampening=0.0, nesterov=False, skip_1d=False):
        check_hparam("extra.trust_coefficient", trust_coefficient)
        check_hparam("beta1", momentum, 0.0, 1.0, hi_open=True)
        check_hparam("extra.dampening", dampening, 0.0, 1.0)
        ProxyOptimizer.__init__(self, params, dict(
            lr=lr, momentum=momentum, dampening=dampening, nesterov=bool(nesterov),
            weight_decay=weight_decay, wd_mode=wd_mode, trust_coefficient=trust_coefficient,
            skip_1d=bool(skip_1d)))

    def direction(self, p, g, state, hp):
        stacked = hp["stacked"]
        if p.ndim - stacked > 1 or not hp["skip_1d"]:
            w_norm = host_scalar(tensor_norm(p, stacked), stacked)
            if hp["wd_mode"] == "l2":
                den = host_scalar(tensor_norm(p.grad, stacked), stacked) + hp["weight_decay"] * w_norm
            else:
                den = host_scalar(tensor_norm(g, stacked), stacked)
            trust = ratio_or_one(hp["trust_coefficient"] * w_norm, den)
            if self.probing:
                self.stat("trust_ratio", trust, torch.ones_like(trust) if torch.is_tensor(trust) else 1.0)
            g = g * trust
        return super().direction(p, g, state, hp)
