"""answer_tf: the one-layer transformer of the grokking progress-measures paper (Nanda et al. 2023),
computed only at the answer position.

    tokens [B, T] -> token + learned position embedding -> 1 attention layer -> ReLU MLP -> head
    no LayerNorm; attention and MLP add to the residual stream; untied head; MLP biases

With one layer, the logits at the last position depend on the other positions only through
that position's attention, so computing keys and values everywhere but the query, the MLP
and the head only at the last position is exact. Further, before the attention every
position's residual is ``tok_emb[token] + pos_emb[position]``: a function of (position,
token) alone. Keys and values are therefore computed once per (position, vocabulary entry)
— a table of T*V rows, far fewer than the B*T of a full batch — and gathered per example.
``forward_full`` is the straightforward implementation (every position, causal mask), kept
as the reference that tests and benchmarks/grokking_speed.py compare against.

Sizes: ``model.width`` = d_model, ``model.heads``, ``model.mlp_ratio`` * width = d_mlp
(Nanda: 128, 4, 4 -> 512). Init as in Nanda's ``transformers.py``: every matrix N(0, 1/fan)
with the embeddings, W_Q/K/V/O and W_in at 1/sqrt(d_model), W_out at 1/sqrt(d_mlp) and the
head at 1/sqrt(vocab), MLP biases 0; ``model.init_scale`` multiplies every std (the α of
Lyu et al.). Parameter roles follow param.py (embedding, hidden, head, bias).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from proxylab.models import param


class AnswerTransformer(nn.Module):
    def __init__(self, cfg, *, vocab_size: int, seq_len: int):
        super().__init__()
        if cfg.width % cfg.heads:
            from proxylab.config import ConfigError  # noqa: PLC0415

            raise ConfigError(f"model.heads: {cfg.heads} must divide model.width={cfg.width}")
        self.cfg, self.vocab_size, self.seq_len = cfg, vocab_size, seq_len
        d, d_mlp = cfg.width, cfg.mlp_ratio * cfg.width
        self.heads, self.d_head = cfg.heads, d // cfg.heads
        self.tok_emb = nn.Embedding(vocab_size, d)
        self.pos_emb = nn.Embedding(seq_len, d)
        self.q = nn.Linear(d, d, bias=False)
        self.k = nn.Linear(d, d, bias=False)
        self.v = nn.Linear(d, d, bias=False)
        self.o = nn.Linear(d, d, bias=False)
        self.mlp_in = nn.Linear(d, d_mlp)            # Nanda's W_in, b_in
        self.mlp_out = nn.Linear(d_mlp, d)           # W_out, b_out
        self.head = nn.Linear(d, vocab_size, bias=False)  # W_U, untied
        self._init(cfg.init_scale)

    @torch.no_grad()
    def _init(self, scale: float) -> None:
        d, d_mlp = self.cfg.width, self.cfg.mlp_ratio * self.cfg.width
        for w, fan in ((self.tok_emb.weight, d), (self.pos_emb.weight, d), (self.q.weight, d),
                       (self.k.weight, d), (self.v.weight, d), (self.o.weight, d),
                       (self.mlp_in.weight, d), (self.mlp_out.weight, d_mlp),
                       (self.head.weight, self.vocab_size)):
            w.normal_(0.0, scale / math.sqrt(fan))
        self.mlp_in.bias.zero_()
        self.mlp_out.bias.zero_()

    # ---- the fast path: answer position only, keys/values from (position, token) tables ----
    def forward(self, x: Tensor) -> Tensor:
        """LongTensor[B, T] -> float32 logits [B, 1, V] at the last position."""
        B, T = x.shape
        if T > self.seq_len:
            raise ValueError(f"sequence of {T} tokens, but the model was built for seq_len={self.seq_len}")
        V, H, dh = self.vocab_size, self.heads, self.d_head
        table = (self.tok_emb.weight[None] + self.pos_emb.weight[:T, None]).flatten(0, 1)  # [T*V, d]
        flat = x + torch.arange(T, device=x.device) * V                                 # [B, T]
        k = self.k(table)[flat].view(B, T, H, dh)
        v = self.v(table)[flat].view(B, T, H, dh)
        resid = table[flat[:, -1]]                                                     # [B, d]
        q = self.q(table[(T - 1) * V:])[x[:, -1]].view(B, 1, H, dh)
        scores = (q * k).sum(-1) / math.sqrt(dh)                  # [B, T, H]; the last sees all
        attn = scores.softmax(dim=1)
        z = (attn[..., None] * v).sum(1).reshape(B, H * dh)
        resid = resid + self.o(z)
        resid = resid + self.mlp_out(F.relu(self.mlp_in(resid)))
        return self.head(resid)[:, None, :].float()

    # ---- the reference: every position, causal attention --------------------------------
    def forward_full(self, x: Tensor) -> Tensor:
        """The same model computed the straightforward way; logits [B, T, V] at every position."""
        B, T = x.shape
        H, dh = self.heads, self.d_head
        h = self.tok_emb(x) + self.pos_emb.weight[:T]
        q, k, v = (f(h).view(B, T, H, dh).transpose(1, 2) for f in (self.q, self.k, self.v))
        z = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        h = h + self.o(z.transpose(1, 2).reshape(B, T, H * dh))
        h = h + self.mlp_out(F.relu(self.mlp_in(h)))
        return self.head(h).float()

    def hidden(self, x: Tensor) -> Tensor:
        """The MLP's ReLU activations at the answer position [B, d_mlp] (for analyses)."""
        B, T = x.shape
        with torch.no_grad():
            h = self.tok_emb(x) + self.pos_emb.weight[:T]
            q = self.q(h[:, -1:]).view(B, 1, self.heads, self.d_head).transpose(1, 2)
            k, v = (f(h).view(B, T, self.heads, self.d_head).transpose(1, 2) for f in (self.k, self.v))
            z = F.scaled_dot_product_attention(q, k, v)
            resid = h[:, -1] + self.o(z.transpose(1, 2).reshape(B, -1))
            return F.relu(self.mlp_in(resid))

    def param_roles(self) -> dict[str, str]:
        return param.param_roles(self)

    def lr_scales(self) -> dict[str, float]:
        return param.lr_scales(self, self.cfg)

    def max_attention_logit(self, x: Tensor) -> float:
        """Max pre-softmax logit q.k/sqrt(d_head) of the answer position over (batch, head, key)."""
        B, T = x.shape
        with torch.no_grad():
            h = self.tok_emb(x) + self.pos_emb.weight[:T]
            q = self.q(h[:, -1:]).view(B, 1, self.heads, self.d_head)
            k = self.k(h).view(B, T, self.heads, self.d_head)
            return float(((q * k).sum(-1) / math.sqrt(self.d_head)).max())
