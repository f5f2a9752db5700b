"""CNN: a small convolutional classifier for image tasks (``task.name = "digits"``).

    images [B, C, H, W] -> depth x (3x3 conv, padding 1, ReLU) -> 2x2 max-pool -> flatten
                        -> fc (width) -> ReLU -> head (classes)

Shaped like the MNIST example of Reloaded's ``bitlinear`` package (two 3x3 convs, a max-pool,
one hidden fully connected layer, a linear classifier), without dropout. ``model.width`` is
the number of channels of every conv and the fc width; ``model.depth`` the number of convs.

With ``model.quant = "bitnet158"`` the fc layer becomes a BitLinear, as ``bitlinearize`` does
in that example (it swaps nn.Linear only, so the convs stay full precision); the head stays
full precision as in every other family. Its logits are [B, 1, classes] (one "position"),
like the MLP's, so the training loop's loss and accuracy apply unchanged.

Roles: convs and fc are "hidden" (fan_in = C_in·k·k for a conv), the classifier is "head";
init and LR scales follow param.py's rules for those roles.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from proxylab.models import param
from proxylab.models.bitlinear import quantized


class CNN(nn.Module):
    def __init__(self, cfg, *, vocab_size: int, seq_len: int, input_shape: tuple | None = None):
        super().__init__()
        if input_shape is None or len(input_shape) != 3:
            from proxylab.config import ConfigError  # noqa: PLC0415

            raise ConfigError("model.name: 'cnn' takes images [C, H, W]; use an image task "
                              "(task.name = 'digits')")
        c, h, w = input_shape
        if h < 2 or w < 2:
            raise ValueError(f"cnn: images of {h}x{w} are too small to pool")
        self.cfg, self.vocab_size, self.seq_len = cfg, vocab_size, seq_len
        chans = [c] + [cfg.width] * cfg.depth
        self.convs = nn.ModuleList(nn.Conv2d(i, o, 3, padding=1, bias=cfg.bias)
                                   for i, o in zip(chans, chans[1:]))
        self.fc = nn.Linear(cfg.width * (h // 2) * (w // 2), cfg.width, bias=cfg.bias)
        self.head = nn.Linear(cfg.width, vocab_size, bias=cfg.bias)
        self.fc = quantized(cfg, self.fc)  # model.quant: a BitLinear fc; convs and head stay fp
        self._init(cfg)

    @torch.no_grad()
    def _init(self, cfg) -> None:
        for name, p in self.named_parameters():
            role = self.param_roles()[name]
            if role == "bias":
                p.zero_()
            else:
                fan_in = math.prod(p.shape[1:])  # conv: C_in * k * k
                param.trunc_normal_(p, param.init_std(role, fan_in, cfg))

    def forward(self, x: Tensor) -> Tensor:
        """float images [B, C, H, W] -> float32 logits [B, 1, classes]."""
        for conv in self.convs:
            x = F.relu(conv(x))
        x = F.max_pool2d(x, 2).flatten(1)
        return self.head(F.relu(self.fc(x)))[:, None, :].float()

    def param_roles(self) -> dict[str, str]:
        return {n: "bias" if n.endswith("bias") else "head" if n.startswith("head.") else "hidden"
                for n, _ in self.named_parameters()}

    def lr_scales(self) -> dict[str, float]:
        mup = self.cfg.param == "mup"
        return {n: (1.0 / param.width_mult(self.cfg) if mup and role in ("hidden", "head") else 1.0)
                for n, role in self.param_roles().items()}

    def max_attention_logit(self, x: Tensor) -> float:
        return float("nan")  # no attention
