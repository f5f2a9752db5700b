"""Parameterization rules (sp / muP): parameter roles, init stds, per-parameter LR scales.

Every parameter has one role:
  "embedding"  token and position tables (a lookup: fan_in is the vocabulary, finite)
  "hidden"     2-D weights whose fan_in and fan_out both grow with width
  "head"       the output (readout / unembedding) matrix
  "norm"       norm gains, qk-norm gains included
  "bias"       every bias

Init (Wortsman et al. 2023, §2.1), every std multiplied by ``cfg.init_scale``:
  embedding  N(0, std):  sp: 1/sqrt(width)   mup: 1/sqrt(base_width)
             The paper writes N(0, 1/sqrt(d)); we read the second argument as the std, as
             Flax's ``normal(stddev)`` takes it. Under muP it must not shrink with width, so
             it is frozen at its base-width value. (The MLP family overrides this: no norm
             follows its embedding, so it uses std 1, see mlp.py.)
  hidden     truncated normal (at +-2 std), std 1/sqrt(fan_in); the truncation is corrected
             for (as Flax's variance_scaling does) so the REALISED std is 1/sqrt(fan_in)
  head       truncated normal: sp: std 1/sqrt(fan_in)
             mup: std sqrt(base_fan_in)/fan_in (= the sp value at base width, then falling
             like 1/width: Wortsman's "intermediate" head). Logits at init therefore shrink
             like sqrt(base_width/width): that is muP (readout a+b = 1), and it is what lets
             the logits' CHANGE per step stay width-independent.
  norm       gains 1;  bias  0

LR scales (muP for Adam; ``lr_scales()``): hidden and head weights get
base_fan_in/fan_in = base_width/width; embeddings, norms and biases keep 1.0; sp is 1.0
everywhere. ``mup-simple`` (Wortsman et al. §3.2 "μParam simple") is sp in every respect
except that hidden matrices get base_width/width: the head, the init and the attention
scale stay as in sp. Together with the attention scale 1/d_h (layers.py) this is Wortsman's "full"
muP WITHOUT its zero-initialised queries (with qk-norm a zero query sits at the norm's
singular point; Lingle 2024 finds zero-query makes little difference).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from proxylab.models.layers import Norm

ROLES = ("embedding", "hidden", "head", "norm", "bias")
TRUNC_STD = 0.87962566103423978  # std of a unit normal truncated to [-2, 2] (Flax's constant)


def param_roles(model: nn.Module) -> dict[str, str]:
    """Parameter name -> role, from the module that owns each parameter."""
    roles: dict[str, str] = {}
    for mname, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            name = f"{mname}.{pname}" if mname else pname
            if pname == "bias":
                roles[name] = "bias"
            elif isinstance(module, nn.Embedding):
                roles[name] = "embedding"
            elif isinstance(module, Norm):
                roles[name] = "norm"
            elif module is getattr(model, "head", None):
                roles[name] = "head"
            elif p.ndim == 2:
                roles[name] = "hidden"
            else:
                raise TypeError(f"no parameter role for {name} (shape {tuple(p.shape)})")
    return roles


def width_mult(cfg) -> float:
    """width / base_width: how far this model is from the width where sp and muP agree."""
    return cfg.width / cfg.base_width


def lr_scales(model: nn.Module, cfg) -> dict[str, float]:
    """Per-parameter LR multiplier: base_fan_in/fan_in on hidden and head weights under muP."""
    scaled = {"mup": ("hidden", "head"), "mup-simple": ("hidden",)}.get(cfg.param, ())
    return {name: (1.0 / width_mult(cfg) if role in scaled else 1.0)
            for name, role in param_roles(model).items()}


def init_std(role: str, fan_in: int, cfg) -> float:
    """The documented init std of a weight (see the module docstring), init_scale included."""
    mup = cfg.param == "mup"
    if role == "embedding":
        std = 1.0 / math.sqrt(cfg.base_width if mup else cfg.width)
    elif role == "hidden" or (role == "head" and not mup):
        std = 1.0 / math.sqrt(fan_in)
    elif role == "head":
        std = math.sqrt(fan_in / width_mult(cfg)) / fan_in  # sqrt(base_fan_in) / fan_in
    else:
        raise ValueError(f"no init std for role {role!r}")
    return std * cfg.init_scale


def trunc_normal_(w: torch.Tensor, std: float) -> torch.Tensor:
    """Truncated normal at +-2 (corrected) std whose realised std is ``std``."""
    s = std / TRUNC_STD
    return nn.init.trunc_normal_(w, mean=0.0, std=s, a=-2 * s, b=2 * s)


@torch.no_grad()
def init_weights(model: nn.Module, cfg, embedding_std: float | None = None) -> None:
    """Initialise every parameter of ``model`` by its role (uses the global torch RNG)."""
    roles = param_roles(model)
    for name, p in model.named_parameters():
        role = roles[name]
        if role == "norm":
            p.fill_(1.0)
        elif role == "bias":
            p.zero_()
        elif role == "embedding":
            std = init_std(role, p.shape[0], cfg) if embedding_std is None else embedding_std
            p.normal_(0.0, std)  # the paper's embeddings are plain (untruncated) normal
        else:
            trunc_normal_(p, init_std(role, p.shape[1], cfg))  # nn.Linear: [fan_out, fan_in]


def count_params(model: nn.Module, exclude_embeddings: bool = True, exclude_head: bool = False) -> int:
    """Number of parameters; by default without the embedding tables (Kaplan's N).

    ``exclude_head=True`` as well gives the N that Wortsman et al. report.
    """
    roles = param_roles(model)
    skip = {"embedding"} if exclude_embeddings else set()
    skip |= {"head"} if exclude_head else set()
    return sum(p.numel() for n, p in model.named_parameters() if roles[n] not in skip)


def matmul_params(cfg, seq_len: int, vocab_size: int) -> int:
    """Weights that take part in a matmul (embedding lookups, norms and biases excluded)."""
    d = cfg.width
    if cfg.name == "gpt":
        per_block = 4 * d * d + 2 * cfg.mlp_ratio * d * d  # qkv 3d^2 + proj d^2 + MLP 2*r*d^2
        return cfg.depth * per_block + d * vocab_size
    if cfg.name == "mlp":
        return seq_len * d * d + (cfg.depth - 1) * d * d + d * vocab_size
    raise ValueError(f"unknown model family {cfg.name!r}")


def flops_per_token(cfg, seq_len: int, vocab_size: int) -> float:
    """Training FLOPs (forward + backward) per input token.

    gpt: 6*N + 6*L*T*d, with N = matmul_params (non-embedding weights, head included). 6N is
    2 (multiply-add) x 3 (forward, two backward matmuls) per weight; the attention term counts
    q.k and attn@v (2 * 2*d flops per (query, key) pair) over the causal half, T/2 keys on
    average, times 3 for the backward. Norms, GELU, softmax, the loss and the optimizer step
    are not counted (they are O(d) per token, not O(d^2)).
    mlp: one forward pass per sequence, so 6*N / seq_len per input token.
    """
    n = matmul_params(cfg, seq_len, vocab_size)
    if cfg.name == "gpt":
        return 6.0 * n + 6.0 * cfg.depth * seq_len * cfg.width
    return 6.0 * n / seq_len
