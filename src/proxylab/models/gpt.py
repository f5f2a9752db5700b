"""GPT: a pre-LN decoder-only Transformer, the model of Wortsman et al. 2023.

    tokens -> token embedding (+ learned positions) -> depth x Block -> final norm -> head
    Block:  x = x + attn(norm1(x));  x = x + mlp(norm2(x))

The paper's defaults, every one a ModelConfig field: pre-LN, LayerNorm eps 1e-6, no biases,
GELU MLP of 4*width, untied head, qk-layernorm (off by default here: it is the intervention),
RoPE (``pos="rope"``; learned absolute positions by default). No dropout and no residual
down-scaling: the paper has neither. Init and muP rules live in param.py.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from proxylab.models import param
from proxylab.models.bitlinear import quantize_model
from proxylab.models.scale_inv import make_scale_invariant
from proxylab.models.layers import MLP, CausalSelfAttention, Norm


class Block(nn.Module):
    def __init__(self, cfg, max_len: int):
        super().__init__()
        self.norm1 = Norm(cfg.width, cfg.norm, cfg.bias)
        self.attn = CausalSelfAttention(cfg, max_len)
        self.norm2 = Norm(cfg.width, cfg.norm, cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class GPT(nn.Module):
    def __init__(self, cfg, *, vocab_size: int, seq_len: int):
        super().__init__()
        self.cfg, self.vocab_size, self.seq_len = cfg, vocab_size, seq_len
        self.tok_emb = nn.Embedding(vocab_size, cfg.width)
        # learned absolute positions, or none here when RoPE rotates q and k inside attention
        self.pos_emb = nn.Embedding(seq_len, cfg.width) if cfg.pos == "learned" else None
        self.blocks = nn.ModuleList(Block(cfg, seq_len) for _ in range(cfg.depth))
        quantize_model(cfg, self.blocks)  # model.quant: BitLinear in the blocks' matrices only
        make_scale_invariant(cfg, self.blocks)  # model.scale_inv: unit-norm weight rows
        self.norm_f = Norm(cfg.width, cfg.norm, cfg.bias)
        self.head = nn.Linear(cfg.width, vocab_size, bias=cfg.bias)  # untied from tok_emb
        param.init_weights(self, cfg)

    def embed(self, x: Tensor) -> Tensor:
        T = x.shape[1]
        if T > self.seq_len:
            raise ValueError(f"sequence of {T} tokens, but the model was built for seq_len={self.seq_len}")
        h = self.tok_emb(x)
        if self.pos_emb is not None:
            h = h + self.pos_emb.weight[:T]
        return h

    def forward(self, x: Tensor) -> Tensor:
        """LongTensor[B, T] -> float32 logits [B, T, V] (float32 also under bf16 autocast)."""
        h = self.embed(x)
        record, self._record = getattr(self, "_record", False), False
        for i, block in enumerate(self.blocks):
            h = block(h)
            if record:   # the residual stream after each block (Wortsman et al. Fig. C.1)
                with torch.no_grad():
                    hf = h.detach().float()
                    self._probes[f"resid_rms/l{i}"] = float(hf.pow(2).mean().sqrt())
                    self._probes[f"resid_l1/l{i}"] = float(hf.abs().mean())   # mup's coord check
        return self.head(self.norm_f(h)).float()

    def probe_next_forward(self) -> None:
        """Record per-layer probes during the next forward pass (read them with pop_probes)."""
        self._record, self._probes = True, {}
        for block in self.blocks:
            block.attn.record = True

    def pop_probes(self) -> dict[str, float]:
        """attn/<stat>/l<i> for every layer (see layers.attention_stats), resid_rms/l<i> and
        resid_l1/l<i> from the last probed forward pass; empty if none was probed."""
        out = dict(getattr(self, "_probes", {}))
        for i, block in enumerate(self.blocks):
            out.update({f"attn/{k}/l{i}": v for k, v in block.attn.stats.items()})
            block.attn.stats = {}
        self._probes = {}
        return out

    def param_roles(self) -> dict[str, str]:
        return param.param_roles(self)

    def lr_scales(self) -> dict[str, float]:
        return param.lr_scales(self, self.cfg)

    def max_attention_logit(self, x: Tensor) -> float:
        """Layer-0 max pre-softmax logit scale*q.k over (batch, heads, i, j <= i)."""
        block = self.blocks[0]
        with torch.no_grad():
            return block.attn.max_logit(block.norm1(self.embed(x)))
