"""MLP: an embedding-based multilayer perceptron for algorithmic tasks (modular arithmetic).

    tokens [B, T] -> embed each -> concat [B, T*width] -> depth x (Linear, ReLU) -> head

It predicts one token, the target at the LAST position (the answer of ``a op b =``), so its
logits are [B, 1, V], aligned with the last position of y. No norms, no attention
(``max_attention_logit`` is nan). Roles, init and muP LR scales follow param.py, except the
embedding: with no norm after it, a 1/sqrt(width) table would make every activation shrink
with width, so it is N(0, 1) (torch's default, and muP's O(1) coordinates) times init_scale.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from proxylab.models import param
from proxylab.models.bitlinear import quantize_model
from proxylab.models.scale_inv import make_scale_invariant


class MLPModel(nn.Module):
    def __init__(self, cfg, *, vocab_size: int, seq_len: int, input_shape: tuple | None = None):
        super().__init__()
        self.cfg, self.vocab_size, self.seq_len = cfg, vocab_size, seq_len
        # images (input_shape, e.g. (1, 8, 8)): the pixels are the first layer's input
        self.tok_emb = nn.Embedding(vocab_size, cfg.width) if input_shape is None else None
        n_in = seq_len * cfg.width if input_shape is None else math.prod(input_shape)
        dims = [n_in] + [cfg.width] * cfg.depth  # first layer sees all tokens (or pixels)
        self.layers = nn.ModuleList(nn.Linear(i, o, bias=cfg.bias) for i, o in zip(dims, dims[1:]))
        quantize_model(cfg, self.layers)  # model.quant: BitLinear hidden layers, fp head
        make_scale_invariant(cfg, self.layers)  # model.scale_inv: unit-norm weight rows
        self.head = nn.Linear(cfg.width, vocab_size, bias=cfg.bias)
        param.init_weights(self, cfg, embedding_std=1.0 * cfg.init_scale)

    def forward(self, x: Tensor) -> Tensor:
        """LongTensor[B, seq_len] -> float32 logits [B, 1, V] for the last position."""
        if self.tok_emb is None:  # images [B, C, H, W]
            h = x.flatten(1)
        elif x.shape[1] != self.seq_len:
            raise ValueError(f"the mlp takes exactly seq_len={self.seq_len} tokens, got {x.shape[1]}")
        else:
            h = self.tok_emb(x).flatten(1)
        for layer in self.layers:
            h = F.relu(layer(h))  # ReLU: the usual choice for grokking MLPs
        return self.head(h)[:, None, :].float()

    def param_roles(self) -> dict[str, str]:
        return param.param_roles(self)

    def lr_scales(self) -> dict[str, float]:
        return param.lr_scales(self, self.cfg)

    def max_attention_logit(self, x: Tensor) -> float:
        return float("nan")  # no attention
