"""Building blocks shared by the model families: norms, rotary positions, attention, MLP.

Conventions (Wortsman et al. 2023 defaults unless a ModelConfig field says otherwise):
- norms have a gain and no bias (a bias only with ``cfg.bias``; RMSNorm never has one), eps 1e-6;
- attention is causal, runs through ``F.scaled_dot_product_attention`` (flash kernels on CPU and
  CUDA) and projects q, k, v with ONE fused linear layer;
- qk-layernorm normalises each head's d_h-vector, with one d_h-sized gain shared by all heads;
- RoPE rotates q and k AFTER the qk-norm (the logits are those the model really uses);
- ``qk_kappa > 0`` imposes the logit scale (Wortsman et al. §3.4, the "transplant"): q and k
  pass through g(z) = sqrt(kappa) * z / RMS(z) per head, after the qk-norm, before RoPE.

Weights are initialised by the model that owns them (see ``param.init_weights``); the
``nn.Linear`` / ``nn.Embedding`` defaults here are overwritten.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

NORM_EPS = 1e-6  # Flax's LayerNorm default, as in the paper (torch's 1e-5 would differ)
ROPE_BASE = 10_000.0  # the usual RoPE wavelength base


class Norm(nn.Module):
    """LayerNorm or RMSNorm over the last dimension, gain initialised to 1."""

    def __init__(self, dim: int, kind: str = "layernorm", bias: bool = False, eps: float = NORM_EPS):
        super().__init__()
        if kind not in ("layernorm", "rmsnorm"):
            raise ValueError(f"norm kind {kind!r}: choose 'layernorm' or 'rmsnorm'")
        self.kind, self.eps = kind, eps
        self.weight = nn.Parameter(torch.ones(dim))
        # RMSNorm has no mean to shift back, so it never gets a bias
        self.bias = nn.Parameter(torch.zeros(dim)) if bias and kind == "layernorm" else None

    def forward(self, x: Tensor) -> Tensor:
        shape = self.weight.shape
        if self.kind == "layernorm":
            return F.layer_norm(x, shape, self.weight, self.bias, self.eps)
        if hasattr(F, "rms_norm"):  # torch >= 2.4
            return F.rms_norm(x, shape, self.weight, self.eps)
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, kind={self.kind}, eps={self.eps}"


class Rotary(nn.Module):
    """Rotary position embedding ("rotate-half" layout: pairs are (i, i + d/2)) for [B, T, H, D]."""

    def __init__(self, head_dim: int, max_len: int, base: float = ROPE_BASE):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rope needs an even head dimension, got {head_dim}")
        inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
        angles = torch.outer(torch.arange(max_len, dtype=torch.float64), inv_freq)  # [T, D/2]
        # non-persistent: derived from the config, so kept out of checkpoints
        self.register_buffer("cos", angles.cos().float(), persistent=False)
        self.register_buffer("sin", angles.sin().float(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        T = x.shape[1]
        cos = self.cos[:T, None, :].to(x.dtype)  # broadcast over batch and heads
        sin = self.sin[:T, None, :].to(x.dtype)
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with optional per-head qk-norm and RoPE.

    ``scale`` multiplies q.k: 1/sqrt(d_h) in sp, 1/d_h in muP (q and k become correlated
    during training, so their dot product grows like d_h, not sqrt(d_h)).
    """

    def __init__(self, cfg, max_len: int):
        super().__init__()
        if cfg.width % cfg.heads:
            raise ValueError(f"heads={cfg.heads} must divide width={cfg.width}")
        self.heads = cfg.heads
        self.head_dim = cfg.width // cfg.heads
        self.scale = 1.0 / self.head_dim if cfg.param == "mup" else self.head_dim**-0.5
        self.qkv = nn.Linear(cfg.width, 3 * cfg.width, bias=cfg.bias)  # fused: one GEMM, not three
        self.proj = nn.Linear(cfg.width, cfg.width, bias=cfg.bias)
        # qk-norm: same norm kind as the rest of the model; gains of size d_h shared by heads
        self.q_norm = Norm(self.head_dim, cfg.norm, cfg.bias) if cfg.qk_norm else None
        self.k_norm = Norm(self.head_dim, cfg.norm, cfg.bias) if cfg.qk_norm else None
        self.rotary = Rotary(self.head_dim, max_len) if cfg.pos == "rope" else None
        self.kappa = getattr(cfg, "qk_kappa", 0.0)
        self.record = False       # set for one forward pass: then `stats` holds its probes
        self.stats: dict[str, float] = {}

    def qkv_heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """q, k, v as [B, H, T, D], after qk-norm and RoPE: exactly what the softmax sees."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, self.head_dim).unbind(2)  # [B, T, H, D]
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.kappa > 0:
            q, k = _impose_rms(q, self.kappa), _impose_rms(k, self.kappa)
        if self.rotary is not None:
            q, k = self.rotary(q), self.rotary(k)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv_heads(x)
        if self.record:
            self.stats, self.record = attention_stats(q, k, self.scale), False
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))

    @torch.no_grad()
    def max_logit(self, x: Tensor) -> float:
        """Max of scale * q_i.k_j over batch, heads and j <= i, computed explicitly (no SDPA)."""
        q, k, _ = self.qkv_heads(x)
        logits = (q.float() @ k.float().transpose(-2, -1)) * self.scale  # [B, H, T, T]
        T = logits.shape[-1]
        causal = torch.ones(T, T, dtype=torch.bool, device=logits.device).tril()
        return logits.masked_fill(~causal, -math.inf).amax().item()


def _impose_rms(z: Tensor, kappa: float) -> Tensor:
    """g(z) = sqrt(kappa) * z / RMS(z) over the head dimension (the kappa transplant)."""
    return z * torch.rsqrt(z.pow(2).mean(-1, keepdim=True) + NORM_EPS) * math.sqrt(kappa)


@torch.no_grad()
def attention_stats(q: Tensor, k: Tensor, scale: float) -> dict[str, float]:
    """Probes of one attention layer from its q, k [B, H, T, D] (what the softmax sees).

    Over the causal pairs (j <= i) of every batch row and head:
      max_logit     max of scale * q_i.k_j
      qk_norm       mean of scale * |q_i| |k_j|   (the logit's size if q and k were aligned)
      qk_cos        mean cosine of q_i and k_j     (logit = qk_norm-like size * cosine)
      entropy       mean over heads and queries i >= 1 of H(softmax row i) / log(i + 1),
                    so 1 = uniform over the visible keys and 0 = one key (query 0 sees
                    only itself and is left out)
    """
    q, k = q.float(), k.float()
    T = q.shape[-2]
    causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    logits = (q @ k.transpose(-2, -1)) * scale                      # [B, H, T, T]
    norms = q.norm(dim=-1)[..., :, None] * k.norm(dim=-1)[..., None, :] * scale
    n_pairs = causal.sum() * logits.shape[0] * logits.shape[1]
    cos = torch.where(causal, logits / norms.clamp_min(1e-30), 0.0)
    logp = torch.log_softmax(logits.masked_fill(~causal, -math.inf), dim=-1)
    ent = -(logp.exp() * logp.masked_fill(~causal, 0.0)).sum(-1)    # [B, H, T]
    visible = torch.log(torch.arange(1, T + 1, device=q.device, dtype=torch.float32))
    out = {"max_logit": logits.masked_fill(~causal, -math.inf).amax(),
           "qk_norm": torch.where(causal, norms, 0.0).sum() / n_pairs,
           "qk_cos": cos.sum() / n_pairs}
    if T > 1:
        out["entropy"] = (ent[..., 1:] / visible[1:]).mean()
    return {name: float(v) for name, v in out.items()}


class MLP(nn.Module):
    """width -> mlp_ratio * width -> GELU -> width."""

    def __init__(self, cfg):
        super().__init__()
        hidden = cfg.mlp_ratio * cfg.width
        self.fc = nn.Linear(cfg.width, hidden, bias=cfg.bias)
        self.proj = nn.Linear(hidden, cfg.width, bias=cfg.bias)

    def forward(self, x: Tensor) -> Tensor:
        # exact (erf) GELU: faster on CPU than the tanh form that Flax (the paper) defaults to,
        # and within 1e-3 of it
        return self.proj(F.gelu(self.fc(x)))
