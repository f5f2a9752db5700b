"""Model families: ``build_model(cfg, vocab_size=, seq_len=)`` and FLOP/parameter counts.

Each model has ``param_roles()``, ``lr_scales()`` and ``max_attention_logit(x)`` (see
docs/internals.md); the sp/muP rules behind them are in ``param.py``.
"""

from __future__ import annotations

import torch.nn as nn

from proxylab.models.answer_tf import AnswerTransformer
from proxylab.models.cnn import CNN
from proxylab.models.gpt import GPT
from proxylab.models.mlp import MLPModel
from proxylab.models.quad_mlp import QuadMLP
from proxylab.models.param import count_params, flops_per_token, matmul_params

__all__ = ["CNN", "GPT", "MLPModel", "build_model", "count_params", "flops_per_token", "matmul_params"]

FAMILIES = {"gpt": GPT, "mlp": MLPModel, "cnn": CNN, "answer_tf": AnswerTransformer,
            "quad_mlp": QuadMLP}
IMAGE_FAMILIES = ("mlp", "cnn")  # families that take ``input_shape`` (image tasks)


def build_model(cfg, *, vocab_size: int, seq_len: int, input_shape: tuple | None = None) -> nn.Module:
    """The model ``cfg.name`` names, initialised from the global torch RNG (seed it first).

    ``input_shape`` ([C, H, W]) is given for image tasks (the task's ``input_shape``)."""
    from proxylab.config import ConfigError  # noqa: PLC0415

    if cfg.name not in FAMILIES:
        raise ConfigError(f"model.name: {cfg.name!r} is not allowed; choose one of {', '.join(FAMILIES)}")
    if input_shape is not None:
        if cfg.name not in IMAGE_FAMILIES:
            raise ConfigError(f"model.name: {cfg.name!r} cannot take images; for an image task "
                              f"choose one of {', '.join(IMAGE_FAMILIES)}")
        return FAMILIES[cfg.name](cfg, vocab_size=vocab_size, seq_len=seq_len, input_shape=input_shape)
    return FAMILIES[cfg.name](cfg, vocab_size=vocab_size, seq_len=seq_len)
