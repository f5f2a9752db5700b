"""Model families: ``build_model(cfg, vocab_size=, seq_len=)`` and FLOP/parameter counts.

Each model has ``param_roles()``, ``lr_scales()`` and ``max_attention_logit(x)`` (see
docs/internals.md); the sp/muP rules behind them are in ``param.py``.
"""

from __future__ import annotations

import torch.nn as nn

from proxylab.models.gpt import GPT
from proxylab.models.mlp import MLPModel
from proxylab.models.param import count_params, flops_per_token, matmul_params

__all__ = ["GPT", "MLPModel", "build_model", "count_params", "flops_per_token", "matmul_params"]

FAMILIES = {"gpt": GPT, "mlp": MLPModel}


def build_model(cfg, *, vocab_size: int, seq_len: int) -> nn.Module:
    """The model ``cfg.name`` names, initialised from the global torch RNG (seed it first)."""
    if cfg.name not in FAMILIES:
        from proxylab.config import ConfigError  # noqa: PLC0415

        raise ConfigError(f"model.name: {cfg.name!r} is not allowed; choose one of {', '.join(FAMILIES)}")
    return FAMILIES[cfg.name](cfg, vocab_size=vocab_size, seq_len=seq_len)
