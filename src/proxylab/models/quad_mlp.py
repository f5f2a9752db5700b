"""quad_mlp: the one-hidden-layer network with quadratic activation of Doshi et al. 2024
("To grok or not to grok"), for ``a OP b mod p`` tasks.

    h = (U[:, a] + V[:, b])²      (one-hot (a, b) input: the first layer is a column gather)
    logits = W h                   no biases

U, V: [N, p] and W: [V_out, N] with N = ``model.width``. The operands are the tokens at
positions 0 and 2 of the modular task's ``[a, OP, b, EQ]`` (the other two are constant).
Init N(0, σ²) with Doshi's σ = 0.5 / (2N)^(1/3) for every matrix (``utils/models.py:fcn``),
times ``model.init_scale``. Per-neuron weights over the residues (``U[j]``, ``V[j]``,
``W[:, j]``) are what the IPR analysis reads (``analysis.grokking.ipr``).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from proxylab.models import param


class QuadMLP(nn.Module):
    def __init__(self, cfg, *, vocab_size: int, seq_len: int):
        super().__init__()
        self.cfg, self.vocab_size, self.seq_len = cfg, vocab_size, seq_len
        n = cfg.width
        self.u = nn.Linear(vocab_size, n, bias=False)   # weight [N, V]: column a = U[:, a]
        self.v = nn.Linear(vocab_size, n, bias=False)
        self.head = nn.Linear(n, vocab_size, bias=False)
        sigma = 0.5 / (2 * n) ** (1 / 3) * cfg.init_scale
        with torch.no_grad():
            for w in (self.u.weight, self.v.weight, self.head.weight):
                w.normal_(0.0, sigma)

    def hidden(self, x: Tensor) -> Tensor:
        """Hidden activations [B, N] for inputs [B, T] (operands at positions 0 and 2)."""
        pre = self.u.weight.t()[x[:, 0]] + self.v.weight.t()[x[:, 2]]   # gathers, no one-hot
        return pre * pre

    def forward(self, x: Tensor) -> Tensor:
        """LongTensor[B, 4] -> float32 logits [B, 1, V] for the answer."""
        if x.shape[1] < 3:
            raise ValueError(f"quad_mlp reads operands at positions 0 and 2; got {x.shape[1]} tokens")
        return self.head(self.hidden(x))[:, None, :].float()

    def param_roles(self) -> dict[str, str]:
        return param.param_roles(self)

    def lr_scales(self) -> dict[str, float]:
        return param.lr_scales(self, self.cfg)

    def max_attention_logit(self, x: Tensor) -> float:
        return float("nan")  # no attention
