"""Weight-decay probes (train/wd_probes.py) and scale-invariant layers (models/scale_inv.py)."""

import math

import numpy as np
import pytest
import torch

from proxylab.config import ConfigError, from_flat, run_id
from proxylab.models.scale_inv import RowNormLinear, make_scale_invariant, scale_invariant_names
from proxylab.train.loop import MemoryReporter, train
from proxylab.train.wd_probes import angle, bucket_mean_losses, frequency_buckets

TINY_LM = {"task.name": "text", "task.seq_len": 16, "model.name": "gpt", "model.width": 16,
           "model.depth": 1, "model.heads": 2, "train.batch_size": 4, "train.steps": 10,
           "train.log_every": 5, "train.eval_every": 10, "train.eval_batches": 2,
           "train.threads": 1}


def test_frequency_buckets_by_hand():
    # sorted by count: ids 0 (0), 1 (1), 2 (1), 3 (2), 4 (6); mass midpoints .0 .05 .15 .3 .7
    assert frequency_buckets([0, 1, 1, 2, 6], 2).tolist() == [0, 0, 0, 0, 1]
    # 4 buckets: midpoints x4 = 0, .2, .6, 1.2, 2.8 -> 0 0 0 1 2 (bucket 3 empty: id 4 is heavy)
    assert frequency_buckets([0, 1, 1, 2, 6], 4).tolist() == [0, 0, 0, 1, 2]
    assert frequency_buckets([5, 5, 5, 5], 4).tolist() == [0, 1, 2, 3]
    assert frequency_buckets([0, 0], 3).tolist() == [0, 0]
    with pytest.raises(ValueError):
        frequency_buckets([1], 0)


def test_bucket_mean_losses_by_hand():
    bucket_of = np.array([0, 0, 1, 2])
    means, shares = bucket_mean_losses([1.0, 3.0, 2.0, 5.0, 7.0], [0, 1, 2, 2, -100],
                                       bucket_of, 3)
    assert means[:2].tolist() == pytest.approx([2.0, 3.5]) and math.isnan(means[2])
    assert shares.tolist() == pytest.approx([0.5, 0.5, 0.0])


def test_angle_is_exact_for_small_and_large_angles():
    for a in (1e-7, 1e-3, 0.5, 2.0):
        u = torch.tensor([1.0, 0.0, 0.0])
        v = torch.tensor([math.cos(a), math.sin(a), 0.0]) * 3.0
        assert float(angle(u, v)) == pytest.approx(a, rel=1e-6)
    rows_a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    rows_b = torch.tensor([[1.0, 1.0], [0.0, 5.0]])
    assert angle(rows_a, rows_b, dim=1).tolist() == pytest.approx([math.pi / 4, 0.0])


def test_row_norm_linear_is_scale_invariant_row_by_row():
    torch.manual_seed(0)
    lin = torch.nn.Sequential(torch.nn.Linear(6, 4, bias=False))
    make_scale_invariant(type("C", (), {"scale_inv": True})(), lin)
    layer = lin[0]
    assert isinstance(layer, RowNormLinear) and scale_invariant_names(lin) == ["0.weight"]
    x = torch.randn(3, 6)
    y = lin(x)
    with torch.no_grad():
        layer.weight[1] *= 7.0
    assert torch.allclose(lin(x), y, atol=1e-6)
    lin(x).pow(2).sum().backward()                   # gradient ⊥ every row
    dots = (layer.weight.grad * layer.weight).sum(1)
    assert dots.abs().max() < 1e-5
    off = torch.nn.Sequential(torch.nn.Linear(6, 4))
    make_scale_invariant(type("C", (), {"scale_inv": False})(), off)
    assert type(off[0]) is torch.nn.Linear


def test_probes_off_by_default_and_ids_unchanged():
    base = from_flat(TINY_LM)
    assert run_id(base) == run_id(from_flat({**TINY_LM, "train.wd_probes": False,
                                            "train.freq_buckets": 0, "model.scale_inv": False}))
    rep = MemoryReporter()
    train(base, rep)
    assert not any(k.startswith(("wd/", "val_bucket/")) for _, k, _ in rep.rows)


def test_probes_in_the_loop():
    cfg = from_flat({**TINY_LM, "train.wd_probes": True, "train.freq_buckets": 3,
                     "model.scale_inv": True, "optim.weight_decay": 0.1,
                     "schedule.name": "constant", "schedule.warmup": 0})
    rep = MemoryReporter()
    train(cfg, rep)
    name = "blocks.0.mlp.fc.weight"
    at = {k: v for s, k, v in rep.rows if s == 10}
    # effective LR of a scale-invariant row: η / mean ‖W_i‖² (rows of a [64, 16] matrix)
    assert at[f"wd/eff_lr/{name}"] > 0
    assert at[f"wd/norm/{name}"] ** 2 / 64 == pytest.approx(
        cfg.optim.lr / at[f"wd/eff_lr/{name}"], rel=1e-6)
    assert 0 < at[f"wd/angle/{name}"] < 0.1 and 0 < at[f"wd/angle_k/{name}"] < 0.1
    assert at["wd/head_norm"] == pytest.approx(at["wd/norm/head.weight"])
    assert at["wd/logit_max"] > 0
    assert "wd/eff_lr/head.weight" not in at          # the head is not scale-invariant
    # the buckets' share-weighted losses add up to the validation loss of the same model
    total = sum(at[f"val_bucket/share/b{j}"] * at[f"val_bucket/loss/b{j}"] for j in range(3)
                if at[f"val_bucket/share/b{j}"] > 0)
    assert sum(at[f"val_bucket/share/b{j}"] for j in range(3)) == pytest.approx(1.0)
    assert total == pytest.approx(at["val/loss"], rel=1e-5)


def test_freq_buckets_need_a_text_task():
    cfg = from_flat({"task.name": "digits", "model.name": "mlp", "model.width": 8,
                     "train.steps": 2, "train.freq_buckets": 4, "train.threads": 1})
    with pytest.raises(ConfigError, match="train.freq_buckets"):
        train(cfg, MemoryReporter())
