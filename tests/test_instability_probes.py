"""Per-layer instability probes, the kappa transplant, mup-simple and the loss scale, on
hand-built inputs with known answers."""

import math

import pytest
import torch

from proxylab.config import RunConfig, from_flat
from proxylab.models import build_model
from proxylab.models.layers import attention_stats
from proxylab.train.loop import MemoryReporter, train


def test_attention_stats_on_hand_built_q_k():
    # one head, T = 2, D = 2: q0 = (1, 0), q1 = (0, 2); k0 = (3, 0), k1 = (0, 1); scale 1
    q = torch.tensor([[[[1.0, 0.0], [0.0, 2.0]]]])
    k = torch.tensor([[[[3.0, 0.0], [0.0, 1.0]]]])
    s = attention_stats(q, k, 1.0)
    # causal pairs: (0,0): 3, (1,0): 0, (1,1): 2 -> max 3
    assert s["max_logit"] == pytest.approx(3.0)
    # |q_i||k_j| over the pairs: 1*3, 2*3, 2*1 -> mean 11/3; cosines 1, 0, 1 -> 2/3
    assert s["qk_norm"] == pytest.approx(11 / 3)
    assert s["qk_cos"] == pytest.approx(2 / 3)
    # row 1: softmax(0, 2) -> entropy / log 2
    p = torch.softmax(torch.tensor([0.0, 2.0]), 0)
    h = float(-(p * p.log()).sum()) / math.log(2)
    assert s["entropy"] == pytest.approx(h, rel=1e-5)


def test_uniform_attention_has_entropy_one_and_scale_applies():
    q = torch.zeros(2, 3, 5, 4)
    k = torch.randn(2, 3, 5, 4)
    s = attention_stats(q, k, 0.5)
    assert s["entropy"] == pytest.approx(1.0, abs=1e-6) and s["max_logit"] == 0.0
    q = torch.ones(1, 1, 3, 4)
    k = 2 * torch.ones(1, 1, 3, 4)
    s = attention_stats(q, k, 0.5)
    assert s["max_logit"] == pytest.approx(0.5 * 8) and s["qk_cos"] == pytest.approx(1.0)


def small(**kw):
    base = {"model.width": 32, "model.heads": 2, "model.depth": 2, "task.seq_len": 16}
    return from_flat({**base, **kw})


def test_gpt_probes_every_layer_from_one_forward():
    cfg = small()
    torch.manual_seed(0)
    model = build_model(cfg.model, vocab_size=256, seq_len=16)
    x = torch.randint(0, 256, (4, 16))
    model.probe_next_forward()
    model(x)
    probes = model.pop_probes()
    for i in range(2):
        for stat in ("max_logit", "qk_norm", "qk_cos", "entropy"):
            assert f"attn/{stat}/l{i}" in probes
        assert probes[f"resid_rms/l{i}"] > 0 and probes[f"resid_l1/l{i}"] > 0
    # layer 0's max logit equals the explicit computation the eval probe uses
    assert probes["attn/max_logit/l0"] == pytest.approx(model.max_attention_logit(x), rel=1e-5)
    # the flag lasts one pass: the next forward records nothing
    model(x)
    assert model.pop_probes() == {}


def test_kappa_transplant_imposes_the_logit_scale():
    kappa = 100.0
    cfg = small(**{"model.qk_kappa": kappa})
    model = build_model(cfg.model, vocab_size=256, seq_len=16)
    q, k, _ = model.blocks[0].attn.qkv_heads(torch.randn(3, 16, 32))
    d_h = 16
    # every q and k vector has squared norm kappa * d_h (RMS sqrt(kappa))
    assert q.norm(dim=-1).pow(2).mean().item() == pytest.approx(kappa * d_h, rel=1e-4)
    assert k.norm(dim=-1).std().item() < 1e-3 * math.sqrt(kappa * d_h)


def test_mup_simple_scales_hidden_lrs_only():
    cfg = small(**{"model.param": "mup-simple", "model.base_width": 16})
    model = build_model(cfg.model, vocab_size=256, seq_len=16)
    scales, roles = model.lr_scales(), model.param_roles()
    for name, scale in scales.items():
        assert scale == (0.5 if roles[name] == "hidden" else 1.0), name
    # sp init and sp attention scale: identical init to sp under the same seed
    torch.manual_seed(0)
    a = build_model(cfg.model, vocab_size=256, seq_len=16)
    torch.manual_seed(0)
    b = build_model(small(**{"model.base_width": 16}).model, vocab_size=256, seq_len=16)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert a.blocks[0].attn.scale == b.blocks[0].attn.scale


def test_new_keys_at_default_keep_run_ids():
    cfg = RunConfig()
    assert cfg.id == small().replace(**{"model.width": 128, "model.heads": 4, "model.depth": 2,
                                        "task.seq_len": 128}).id
    assert cfg.replace(**{"model.qk_kappa": 10.0}).id != cfg.id
    assert cfg.replace(**{"train.loss_scale": 1.0}).id == cfg.id


def test_loss_scale_scales_gradients_not_reported_losses():
    # Adam with a negligible eps is invariant to the gradient scale (up to rounding): same losses,
    # gradients 1e-3 as large
    runs = {}
    for scale in (1.0, 1e-3):
        r = MemoryReporter()
        train(small(**{"train.steps": 6, "train.log_every": 3, "train.eval_every": 6,
                       "train.loss_scale": scale, "optim.eps": 1e-30, "train.grad_clip": 0.0,
                       "train.threads": 1}), r)
        runs[scale] = r
    assert runs[1e-3].last("train/loss") == pytest.approx(runs[1.0].last("train/loss"), rel=1e-4)
    g1 = runs[1.0].last("opt/grad_rms/blocks.0.mlp.fc.weight")
    g2 = runs[1e-3].last("opt/grad_rms/blocks.0.mlp.fc.weight")
    assert g2 == pytest.approx(1e-3 * g1, rel=1e-3)
