"""proxylab.models: shapes, causality, qk-norm, RoPE, the max-logit probe, init and muP rules."""

import math

import pytest
import torch
import torch.nn.functional as F

from proxylab.config import ModelConfig
from proxylab.models import build_model, count_params, flops_per_token, matmul_params
from proxylab.models.layers import Rotary
from proxylab.models.param import ROLES, TRUNC_STD

V, T = 37, 12  # a small odd vocabulary and context keep the whole file fast

VARIANTS = {
    "default": {},
    "qk_rope": {"qk_norm": True, "pos": "rope"},
    "rms_bias": {"norm": "rmsnorm", "bias": True, "qk_norm": True},
    "mup_rope": {"param": "mup", "pos": "rope", "qk_norm": True, "base_width": 16},
}


def gpt(width=32, depth=2, heads=4, seed=0, seq_len=T, **kw):
    torch.manual_seed(seed)
    cfg = ModelConfig(name="gpt", width=width, depth=depth, heads=heads, **kw)
    return build_model(cfg, vocab_size=V, seq_len=seq_len)


def tokens(B=3, t=T, seed=1):
    return torch.randint(0, V, (B, t), generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------
# shapes, dtype, causality


@pytest.mark.parametrize("variant", VARIANTS)
def test_gpt_shapes_and_backward(variant):
    model = gpt(**VARIANTS[variant])
    logits = model(tokens())
    assert logits.shape == (3, T, V) and logits.dtype == torch.float32
    logits.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert model(tokens(t=5)).shape == (3, 5, V)  # shorter sequences are fine
    with pytest.raises(ValueError, match="seq_len"):
        model(tokens(t=T + 1))


def test_logits_are_float32_under_bf16_autocast():
    model = gpt()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(tokens()).dtype == torch.float32


@pytest.mark.parametrize("variant", ["default", "qk_rope"])
def test_causality(variant):
    model = gpt(**VARIANTS[variant])
    x = tokens()
    t = 7
    x2 = x.clone()
    x2[:, t] = (x[:, t] + 1) % V
    with torch.no_grad():
        a, b = model(x), model(x2)
    torch.testing.assert_close(a[:, :t], b[:, :t], rtol=0, atol=1e-6)
    assert (a[:, t:] - b[:, t:]).abs().amax(-1).min() > 1e-4  # every later position sees it


def test_same_seed_same_model():
    a, b = gpt(seed=3), gpt(seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


# ----------------------------------------------------------------------------------
# qk-norm and positions


def test_qk_norm_gains_are_per_head_dim_and_shared():
    model = gpt(width=48, heads=4, qk_norm=True)  # d_h = 12
    attn = model.blocks[0].attn
    assert attn.q_norm.weight.shape == (12,) and attn.k_norm.weight.shape == (12,)
    qk_params = [n for n in model.param_roles() if "q_norm" in n or "k_norm" in n]
    assert len(qk_params) == 2 * 2  # q and k gains in each of 2 blocks, nothing per head
    # normalised per head: with unit gains every head's q has mean 0 and unit RMS
    x = model.blocks[0].norm1(model.embed(tokens()))
    q, k, _ = attn.qkv_heads(x)  # [B, H, T, D]
    torch.testing.assert_close(q.mean(-1), torch.zeros_like(q.mean(-1)), atol=1e-5, rtol=0)
    torch.testing.assert_close(k.pow(2).mean(-1), torch.ones_like(k.mean(-1)), atol=1e-3, rtol=0)
    # the one gain vector scales coordinate d of every head alike
    with torch.no_grad():
        attn.q_norm.weight.copy_(torch.arange(1.0, 13.0))
    q2, _, _ = attn.qkv_heads(x)
    torch.testing.assert_close(q2, q * torch.arange(1.0, 13.0))


def test_rope_and_learned_positions():
    learned, rope = gpt(pos="learned"), gpt(pos="rope")
    assert learned.pos_emb is not None and rope.pos_emb is None
    assert "pos_emb.weight" in learned.param_roles()
    # RoPE: q.k depends only on the offset i - j
    rot = Rotary(head_dim=8, max_len=20)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)

    def dot(i, j):
        qs = rot(q.expand(1, 20, 1, 8).contiguous())[0, i, 0]
        ks = rot(k.expand(1, 20, 1, 8).contiguous())[0, j, 0]
        return (qs * ks).sum()

    torch.testing.assert_close(dot(5, 2), dot(15, 12))
    assert not torch.allclose(dot(5, 2), dot(5, 3))


# ----------------------------------------------------------------------------------
# the layer-0 max attention logit against a float64 recomputation from the weights


def naive_max_logit(model, x):
    cfg = model.cfg
    W = {n: p.detach().double() for n, p in model.named_parameters()}
    B, t = x.shape
    C, H = cfg.width, cfg.heads
    D = C // H

    def norm(z, name):
        if cfg.norm == "layernorm":
            z = z - z.mean(-1, keepdim=True)
        z = z / torch.sqrt(z.pow(2).mean(-1, keepdim=True) + 1e-6)
        return z * W[name + ".weight"] + W.get(name + ".bias", 0.0)

    def rope(z):  # z [B, t, H, D]; rotate pairs (m, m + D/2) by angle pos * 10000^(-2m/D)
        pos = torch.arange(t, dtype=torch.float64)[:, None]
        ang = pos * 10000.0 ** (-torch.arange(0, D // 2, dtype=torch.float64) * 2 / D)
        c, s = ang.cos()[None, :, None, :], ang.sin()[None, :, None, :]
        a, b = z[..., : D // 2], z[..., D // 2:]
        return torch.cat([a * c - b * s, a * s + b * c], -1)

    h = W["tok_emb.weight"][x]
    if cfg.pos == "learned":
        h = h + W["pos_emb.weight"][:t]
    qkv = norm(h, "blocks.0.norm1") @ W["blocks.0.attn.qkv.weight"].T
    qkv = qkv + W.get("blocks.0.attn.qkv.bias", 0.0)
    q, k = qkv[..., :C].view(B, t, H, D), qkv[..., C: 2 * C].view(B, t, H, D)
    if cfg.qk_norm:
        q, k = norm(q, "blocks.0.attn.q_norm"), norm(k, "blocks.0.attn.k_norm")
    if cfg.pos == "rope":
        q, k = rope(q), rope(k)
    scale = 1 / D if cfg.param == "mup" else 1 / math.sqrt(D)
    best = -math.inf
    for i in range(t):
        for j in range(i + 1):
            best = max(best, (scale * (q[:, i] * k[:, j]).sum(-1)).max().item())
    return best


@pytest.mark.parametrize("variant", VARIANTS)
def test_max_attention_logit_matches_float64(variant):
    model = gpt(**VARIANTS[variant], init_scale=3.0)  # larger weights: larger, spikier logits
    x = tokens()
    got = model.max_attention_logit(x)
    assert isinstance(got, float)
    assert got == pytest.approx(naive_max_logit(model, x), rel=1e-5, abs=1e-6)


# ----------------------------------------------------------------------------------
# init rules (param.py docstring) and parameter roles


def rule_std(name, cfg, fan_in):
    mup = cfg.param == "mup"
    if "emb" in name:
        return 1 / math.sqrt(cfg.base_width if mup else cfg.width)
    if name == "head.weight" and mup:
        return math.sqrt(cfg.base_width) / cfg.width
    return 1 / math.sqrt(fan_in)


@pytest.mark.parametrize("param,init_scale", [("sp", 1.0), ("sp", 2.0), ("mup", 1.0), ("mup", 0.5)])
def test_init_std_follows_the_documented_rule(param, init_scale):
    model = gpt(width=256, depth=1, heads=8, param=param, init_scale=init_scale, base_width=64)
    cfg = model.cfg
    checked = 0
    for name, p in model.named_parameters():
        if p.ndim != 2:
            assert torch.all(p == 1.0)  # norm gains
            continue
        fan_in = p.shape[1]
        want = rule_std(name, cfg, fan_in) * init_scale
        assert p.std().item() == pytest.approx(want, rel=0.1), name
        if "emb" not in name:  # truncated at +-2 (corrected) std
            assert p.abs().max().item() <= 2 * want / TRUNC_STD * (1 + 1e-6), name
        checked += 1
    assert checked == 7  # tok_emb, pos_emb, qkv, attn proj, fc, mlp proj, head


@pytest.mark.parametrize("variant", VARIANTS)
def test_param_roles_cover_every_parameter_once(variant):
    model = gpt(**VARIANTS[variant])
    roles = model.param_roles()
    assert list(roles) == [n for n, _ in model.named_parameters()]
    assert set(roles.values()) <= set(ROLES)
    assert roles["tok_emb.weight"] == "embedding" and roles["head.weight"] == "head"
    assert roles["blocks.0.attn.qkv.weight"] == roles["blocks.1.mlp.proj.weight"] == "hidden"
    assert roles["norm_f.weight"] == "norm"
    if model.cfg.qk_norm:
        assert roles["blocks.0.attn.q_norm.weight"] == "norm"
    for name, role in roles.items():
        assert (role == "bias") == name.endswith(".bias")


def test_lr_scales_sp_and_mup():
    assert set(gpt().lr_scales().values()) == {1.0}
    model = gpt(width=64, param="mup", base_width=16, bias=True)
    roles, scales = model.param_roles(), model.lr_scales()
    for name, role in roles.items():
        assert scales[name] == (0.25 if role in ("hidden", "head") else 1.0), name


def test_count_params_and_flops():
    model = gpt(width=32, depth=2, pos="learned")
    n_all = sum(p.numel() for p in model.parameters())
    n_emb = model.tok_emb.weight.numel() + model.pos_emb.weight.numel()
    assert count_params(model, exclude_embeddings=False) == n_all
    assert count_params(model) == n_all - n_emb
    assert count_params(model, exclude_head=True) == n_all - n_emb - 32 * V
    n_norm = sum(p.numel() for n, p in model.named_parameters() if p.ndim == 1)
    assert matmul_params(model.cfg, T, V) == count_params(model) - n_norm
    assert flops_per_token(model.cfg, T, V) == 6 * (count_params(model) - n_norm) + 6 * 2 * T * 32


# ----------------------------------------------------------------------------------
# muP: what is (and is not) width-independent


def one_step_logit_change(param, width, lr=1e-3):
    model = gpt(width=width, depth=2, heads=4, param=param, base_width=64, seq_len=16)
    x, y = tokens(B=8, t=16, seed=2), tokens(B=8, t=16, seed=3)
    scales = model.lr_scales()
    groups = [{"params": [p], "lr": lr * scales[n]} for n, p in model.named_parameters()]
    opt = torch.optim.AdamW(groups, betas=(0.9, 0.95), weight_decay=0.0)
    with torch.no_grad():
        before = model(x)
    F.cross_entropy(model(x).flatten(0, 1), y.flatten()).backward()
    opt.step()
    with torch.no_grad():
        after = model(x)
    rms = lambda z: z.pow(2).mean().sqrt().item()  # noqa: E731
    return rms(before), rms(after - before)


def test_mup_logits_across_widths():
    sp = {w: one_step_logit_change("sp", w) for w in (64, 256)}
    mup = {w: one_step_logit_change("mup", w) for w in (64, 256)}
    # at init: sp logits are O(1) at every width; muP's readout (a+b = 1) makes them shrink like
    # sqrt(base_width / width), equal to sp at the base width (64 here)
    assert sp[256][0] / sp[64][0] == pytest.approx(1.0, abs=0.15)
    assert mup[64][0] == pytest.approx(sp[64][0], rel=0.05)
    assert mup[64][0] / mup[256][0] == pytest.approx(2.0, rel=0.15)
    # what muP buys: one Adam step at the same LR moves the logits by a width-independent
    # amount; in sp the move grows with width (x5-7 here for 4x the width)
    assert 0.5 < mup[256][1] / mup[64][1] < 1.5
    assert sp[256][1] / sp[64][1] > 3.0


# ----------------------------------------------------------------------------------
# the MLP family


def test_mlp_family():
    torch.manual_seed(0)
    cfg = ModelConfig(name="mlp", width=64, depth=2, param="mup", base_width=32, bias=True)
    model = build_model(cfg, vocab_size=V, seq_len=4)
    x = tokens(B=5, t=4)
    logits = model(x)
    assert logits.shape == (5, 1, V) and logits.dtype == torch.float32
    logits.sum().backward()
    assert math.isnan(model.max_attention_logit(x))
    roles = model.param_roles()
    assert list(roles) == [n for n, _ in model.named_parameters()]
    assert roles == {"tok_emb.weight": "embedding", "layers.0.weight": "hidden", "layers.0.bias": "bias",
                     "layers.1.weight": "hidden", "layers.1.bias": "bias", "head.weight": "head",
                     "head.bias": "bias"}
    assert model.lr_scales()["layers.0.weight"] == 0.5 and model.lr_scales()["tok_emb.weight"] == 1.0
    assert model.layers[0].weight.shape == (64, 4 * 64)  # all four tokens feed the first layer
    assert count_params(model) == matmul_params(cfg, 4, V) + 64 + 64 + V
    with pytest.raises(ValueError, match="seq_len"):
        model(tokens(t=3))
    # init_scale multiplies every init std (embedding std 1 here: no norm follows it)
    torch.manual_seed(0)
    big = build_model(ModelConfig(name="mlp", width=64, depth=2, init_scale=2.0), vocab_size=V, seq_len=4)
    assert big.tok_emb.weight.std().item() == pytest.approx(2.0, rel=0.1)
    assert big.layers[1].weight.std().item() == pytest.approx(2.0 / 8, rel=0.1)


def test_unknown_family_is_a_config_error():
    from proxylab.config import ConfigError

    with pytest.raises(ConfigError, match="model.name"):
        build_model(ModelConfig(name="rnn"), vocab_size=V, seq_len=T)
