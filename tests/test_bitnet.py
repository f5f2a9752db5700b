"""BitLinear (BitNet b1.58): quantizers against hand-computed values, STE gradients,
three-valued weights, 8-bit activation levels, placement in the model families, probes,
and the ``optim.wd_until`` switch."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from proxylab.config import ConfigError, ModelConfig, from_flat, run_id
from proxylab.models import build_model
from proxylab.models.bitlinear import (BitLinear, act_quant_error, act8_ste, bitlinear_probes,
                                       param_free_norm, quantize_activations, ternary_levels,
                                       weight_scale)

# every value is a dyadic rational, so W/γ is exact and the ties really are ties
W = torch.tensor([[0.5, -0.5, 1.5, -1.5],
                  [0.0, 0.0, 0.0, 0.0],          # an all-zero row
                  [3.0, -2.5, 0.25, -2.25]])


def test_absmean_scale_and_levels_by_hand():
    g = weight_scale(W, "absmean")
    assert float(g) == 1.0  # (0.5+0.5+1.5+1.5 + 0 + 3+2.5+0.25+2.25) / 12
    lv = ternary_levels(W, g)
    # ties round to even: ±0.5 -> 0, ±1.5 -> ±2 -> clipped ±1; -2.5 -> -2 -> -1
    assert lv.tolist() == [[0, 0, 1, -1], [0, 0, 0, 0], [1, -1, 0, -1]]


def test_absmedian_scale_and_levels_by_hand():
    g = weight_scale(W, "absmedian")
    # |W| sorted: 0,0,0,0,.25,.5,.5,1.5,1.5,2.25,2.5,3 -> torch's median is the lower middle
    assert float(g) == 0.5
    lv = ternary_levels(W, g)
    # W/γ: [1,-1,3,-3], zeros, [6,-5,0.5 (tie -> 0),-4.5]
    assert lv.tolist() == [[1, -1, 1, -1], [0, 0, 0, 0], [1, -1, 0, -1]]


def test_all_zero_tensor_is_clamped_not_nan():
    z = torch.zeros(3, 5)
    for kind in ("absmean", "absmedian"):
        g = weight_scale(z, kind)
        assert float(g) == pytest.approx(1e-5)
        assert ternary_levels(z, g).abs().sum() == 0
    layer = BitLinear(5, 3, scale="absmedian")
    with torch.no_grad():
        layer.weight.zero_()
    y = layer(torch.randn(2, 5))
    assert torch.isfinite(y).all() and y.abs().sum() == 0


def test_scale_kind_is_checked():
    with pytest.raises(ValueError, match="absmedian"):
        weight_scale(W, "absmax")
    with pytest.raises(ValueError):
        BitLinear(4, 4, scale="mean")


def test_activation_levels_by_hand():
    x = torch.tensor([[1.0, -0.5, 0.25, 0.0],
                      [0.0, 0.0, 0.0, 0.0],
                      [-2.0, 1.0, 0.5, 0.015625]])
    q, s = quantize_activations(x)
    # row 0: s = 127; -63.5 is a tie -> -64 (even); 31.75 -> 32
    assert q[0].tolist() == [127, -64, 32, 0] and float(s[0]) == 127.0
    # all-zero token: max clamped at 1e-5, levels 0, no nan
    assert q[1].tolist() == [0, 0, 0, 0] and torch.isfinite(s[1]).all()
    # row 2: s = 63.5: -127, 63.5 -> 64 (tie, even), 31.75 -> 32, 0.9921875 -> 1
    assert q[2].tolist() == [-127, 64, 32, 1]


def test_activations_take_at_most_255_levels_per_token():
    torch.manual_seed(0)
    x = torch.randn(6, 4096) * torch.logspace(-3, 3, 6)[:, None]
    y = act8_ste(x)
    scale = 127.0 / x.abs().amax(-1, keepdim=True)
    levels = y * scale
    assert torch.allclose(levels, levels.round(), atol=1e-3)        # integers
    assert levels.round().min() >= -128 and levels.round().max() <= 127
    assert (levels.round().abs().amax(-1) == 127).all()            # max|x| -> ±127
    for row in levels.round():
        assert len(row.unique()) <= 255
    # relative error of absmax 8-bit: at most half a level, 0.5/127 of max|x|, per element
    assert ((y - x).abs() <= 0.5 / scale + 1e-6 * x.abs()).all()


def test_forward_equals_quantized_linear_and_three_values():
    torch.manual_seed(1)
    layer = BitLinear(16, 8, bias=True, scale="absmean")
    opt = torch.optim.AdamW(layer.parameters(), lr=1e-2)
    for _ in range(5):  # after some training the forward still uses three values
        loss = layer(torch.randn(4, 16)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    wq = layer.ternary_weight()
    g = float(weight_scale(layer.weight))
    vals = set(wq.unique().tolist())
    assert vals <= {-g, 0.0, g} and len(vals) == 3
    x = torch.randn(3, 5, 16)
    ref = F.linear(act8_ste(param_free_norm(x)), wq, layer.bias)
    assert torch.allclose(layer(x), ref, atol=1e-6)
    assert layer.levels().dtype == torch.int8


def test_ste_gradients_match_detach_formulation():
    """The autograd.Function STE against the reference x + (q(x) - x).detach() form."""
    torch.manual_seed(2)
    for scale, norm in (("absmean", "layernorm"), ("absmedian", "rmsnorm")):
        layer = BitLinear(12, 7, bias=False, scale=scale, norm=norm)
        x = torch.randn(5, 12, requires_grad=True)
        c = torch.randn(5, 7)
        (layer(x) * c).sum().backward()

        w = layer.weight.detach().clone().requires_grad_(True)
        x2 = x.detach().clone().requires_grad_(True)
        g = weight_scale(w, scale)
        wq = w + (ternary_levels(w, g) * g - w).detach()
        xn = param_free_norm(x2, norm)
        qx, s = quantize_activations(xn)
        xq = xn + (qx / s - xn).detach()
        (F.linear(xq, wq) * c).sum().backward()
        assert torch.allclose(layer.weight.grad, w.grad, atol=1e-5)
        assert torch.allclose(x.grad, x2.grad, atol=1e-5)
        # the weight gradient is exactly that of a linear layer at the quantized input
        assert torch.allclose(layer.weight.grad, c.T @ (qx / s), atol=1e-5)


def test_act_quant_error_known_values():
    assert act_quant_error(torch.zeros(3, 4)) == 0.0
    x = torch.tensor([[1.0, -1.0, 0.5, 0.0]])  # 0.5 -> 63.5 levels: a tie, rounded to 64
    q, s = quantize_activations(x)
    err = ((x - q / s) ** 2).mean().sqrt() / (x**2).mean().sqrt()
    assert act_quant_error(x) == pytest.approx(float(err))
    exact = torch.tensor([[127.0, -64.0, 1.0, 0.0]])  # already on the 8-bit grid
    assert act_quant_error(exact) == pytest.approx(0.0, abs=1e-7)


def test_probes_fractions_flips_and_aggregates():
    layer = BitLinear(4, 3)
    with torch.no_grad():
        layer.weight.copy_(W)
    model = nn.Sequential(layer)
    model(torch.randn(2, 4))             # first forward: flip rates count from here
    p = bitlinear_probes(model)
    assert p["quant/frac_zero/0"] == pytest.approx(7 / 12)
    assert p["quant/frac_pos/0"] == pytest.approx(2 / 12)
    assert p["quant/frac_neg/0"] == pytest.approx(3 / 12)
    assert p["quant/gamma/0"] == 1.0 and p["quant/flip_rate/0"] == 0.0
    with torch.no_grad():
        layer.weight[0, 0] = -3.0        # γ = 15.5/12; W/γ = -2.32 -> -1 ; one flip (0 -> -1)
    assert bitlinear_probes(model)["quant/flip_rate/0"] == pytest.approx(1 / 12)
    assert bitlinear_probes(model)["quant/flip_rate/0"] == 0.0   # since the last probe
    assert p["quant/frac_zero"] == p["quant/frac_zero/0"]        # one layer: aggregate = it
    assert bitlinear_probes(nn.Linear(2, 2)) == {}


# ----------------------------------------------------------------------------------
# placement in the model families and config


def _quant_cfg(name, **kw):
    return ModelConfig(name=name, width=32, depth=2, heads=4, quant="bitnet158", **kw)


def test_gpt_blocks_quantized_embeddings_and_head_full_precision():
    m = build_model(_quant_cfg("gpt", quant_scale="absmedian"), vocab_size=50, seq_len=8)
    bits = {n for n, mod in m.named_modules() if isinstance(mod, BitLinear)}
    assert bits == {f"blocks.{i}.{k}" for i in range(2)
                    for k in ("attn.qkv", "attn.proj", "mlp.fc", "mlp.proj")}
    assert type(m.head) is nn.Linear and type(m.tok_emb) is nn.Embedding
    assert all(mod.scale == "absmedian" for mod in m.modules() if isinstance(mod, BitLinear))
    assert set(m.param_roles().values()) <= {"embedding", "hidden", "head", "norm"}
    assert m(torch.randint(50, (2, 8))).shape == (2, 8, 50)
    plain = build_model(ModelConfig(name="gpt", width=32, depth=2, heads=4), vocab_size=50, seq_len=8)
    assert not any(isinstance(mod, BitLinear) for mod in plain.modules())


def test_mlp_and_cnn_quantized_layers():
    m = build_model(_quant_cfg("mlp"), vocab_size=12, seq_len=4)
    assert all(isinstance(layer, BitLinear) for layer in m.layers) and type(m.head) is nn.Linear
    img = build_model(_quant_cfg("mlp"), vocab_size=10, seq_len=1, input_shape=(1, 8, 8))
    assert img.layers[0].in_features == 64 and img(torch.rand(3, 1, 8, 8)).shape == (3, 1, 10)
    cnn = build_model(_quant_cfg("cnn"), vocab_size=10, seq_len=1, input_shape=(1, 8, 8))
    assert isinstance(cnn.fc, BitLinear) and type(cnn.head) is nn.Linear
    assert cnn(torch.rand(3, 1, 8, 8)).shape == (3, 1, 10)


def test_config_keys_and_run_ids():
    base = from_flat({})
    assert base.model.quant == "none" and base.model.quant_scale == "absmean"
    assert base.optim.wd_until == 1.0
    # added keys at their default leave the id alone; set, they change it
    assert run_id(base) == run_id(from_flat({"model.quant": "none", "optim.wd_until": 1.0}))
    assert run_id(base) != run_id(from_flat({"model.quant": "bitnet158"}))
    with pytest.raises(ConfigError, match="model.quant"):
        from_flat({"model.quant": "int4"})
    with pytest.raises(ConfigError, match="model.quant_scale"):
        from_flat({"model.quant_scale": "absmax"})
    with pytest.raises(ConfigError, match="optim.wd_until"):
        from_flat({"optim.wd_until": 1.5})


def test_cnn_needs_images():
    with pytest.raises(ConfigError, match="cnn"):
        build_model(ModelConfig(name="cnn"), vocab_size=10, seq_len=4)
    with pytest.raises(ConfigError, match="cannot take images"):
        build_model(ModelConfig(name="gpt"), vocab_size=10, seq_len=1, input_shape=(1, 8, 8))


# ----------------------------------------------------------------------------------
# the loop: probes recorded, weight decay switched off


def _run(flat):
    from proxylab.train.loop import MemoryReporter, train  # noqa: PLC0415

    rep = MemoryReporter()
    res = train(from_flat(flat), rep)
    return res, rep.rows


def test_loop_records_quant_probes_at_log_every():
    res, rows = _run({"task.name": "digits", "model.name": "mlp", "model.width": 16,
                      "model.quant": "bitnet158", "train.steps": 6, "train.log_every": 3,
                      "train.batch_size": 8, "train.threads": 1})
    assert res.status == "done"
    steps = {s for s, k, _ in rows if k == "quant/frac_zero"}
    assert steps == {3, 6}
    shares = {k: v for s, k, v in rows if s == 6 and k in ("quant/frac_neg", "quant/frac_zero",
                                                            "quant/frac_pos")}
    assert sum(shares.values()) == pytest.approx(1.0)
    assert any(k == "quant/flip_rate/layers.0" for _, k, _ in rows)


def test_wd_until_switches_decay_off(monkeypatch):
    """Decay applies to the first wd_until * steps updates and none after (BitNet FAQ)."""
    import proxylab.train.loop as loop  # noqa: PLC0415

    seen = []
    build = loop.build_optimizer

    def spying_build(model, cfg):
        opt = build(model, cfg)
        opt.register_step_pre_hook(lambda o, args, kw: seen.append(
            max(float(g["weight_decay"]) for g in o.param_groups)))
        return opt

    monkeypatch.setattr(loop, "build_optimizer", spying_build)
    _run({"task.name": "digits", "model.name": "mlp", "model.width": 8, "train.steps": 8,
          "train.batch_size": 4, "optim.weight_decay": 0.1, "optim.wd_until": 0.5,
          "train.threads": 1})
    assert seen == [0.1] * 4 + [0.0] * 4


# ----------------------------------------------------------------------------------
# analysis/quant.py: known answers on hand-built frames


def _frame(rows):
    import pandas as pd  # noqa: PLC0415

    cols = ["v", "optim.lr", "train.seed", "final_val_loss", "init_loss", "final_val_acc",
            "diverged", "status", "optim.weight_decay"]
    return pd.DataFrame([dict(zip(cols, r)) for r in rows])


def test_best_scores_gaps_and_caps():
    from proxylab.analysis import quant  # noqa: PLC0415

    nan = float("nan")
    df = _frame([
        # v,  lr,  seed, loss, l0,  acc, diverged
        ("a", 1e-3, 0, 2.0, 5.0, 0.50, False, "done", 0.0),
        ("a", 1e-3, 1, 2.2, 5.0, 0.70, False, "done", 0.0),   # lr 1e-3: loss 2.1, acc 0.6
        ("a", 1e-2, 0, 1.5, 5.0, 0.90, False, "done", 0.0),
        ("a", 1e-2, 1, 1.7, 5.0, 0.80, False, "done", 0.0),   # lr 1e-2: loss 1.6, acc 0.85
        ("b", 1e-3, 0, 1.9, 5.0, 0.60, False, "done", 0.0),
        ("b", 1e-3, 1, 1.9, 5.0, 0.60, False, "done", 0.0),   # 1.9
        ("b", 1e-2, 0, nan, 5.0, nan, True, "diverged", 0.0),  # capped at l0 = 5 / acc 0
        ("b", 1e-2, 1, 9.0, 5.0, 0.10, False, "done", 0.0),   # capped at 5 -> mean 5.0
    ])
    a, b = quant.select(df, {"v": "a"}), quant.select(df, {"v": "b"})
    assert quant.best_score(a) == pytest.approx(1.6) and quant.best_lr(a) == 1e-2
    assert quant.best_score(b) == pytest.approx(1.9) and quant.best_lr(b) == 1e-3
    assert quant.score_vs_lr(b)[1e-2] == pytest.approx(5.0)
    assert quant.best_score(a, "acc") == pytest.approx(0.85)
    assert quant.score_vs_lr(b, "acc")[1e-2] == pytest.approx(0.05)   # (0 + 0.1) / 2
    assert quant.best_gap(df, {"v": "b"}, {"v": "a"}) == pytest.approx(0.3)
    assert quant.best_gap(df, {"v": "b"}, {"v": "a"}, "acc") == pytest.approx(0.6 - 0.85)
    assert quant.mean_best_gap(df, [({"v": "b"}, {"v": "a"}), ({"v": "a"}, {"v": "a"})]) \
        == pytest.approx(0.15)
    # Wortsman sensitivity of b: capped losses {1.9, 5.0}, best 1.9 -> mean excess 3.1 / 2
    assert quant.sensitivity(b) == pytest.approx(1.55)
    with pytest.raises(ValueError):
        quant.run_scores(df, "f1")


def test_lr_opt_shift_is_the_parabola_vertex_difference():
    from proxylab.analysis import quant  # noqa: PLC0415

    rows = []
    # loss = (log10 lr - c)^2 + 1 on a grid: the parabola through 3 points is exact
    for v, c in (("a", -2.5), ("b", -2.0)):
        for lr in (1e-3, 3e-3, 1e-2, 3e-2):
            x = float(torch.log10(torch.tensor(lr, dtype=torch.float64)))
            rows.append((v, lr, 0, (x - c) ** 2 + 1.0, 10.0, 0.0, False, "done", 0.0))
    df = _frame(rows)
    assert quant.log10_lr_opt(quant.select(df, {"v": "a"})) == pytest.approx(-2.5, abs=1e-9)
    assert quant.lr_opt_shift(df, {"v": "b"}, {"v": "a"}) == pytest.approx(0.5, abs=1e-9)


def test_weight_decay_benefit_and_table():
    from proxylab.analysis import quant  # noqa: PLC0415

    df = _frame([
        ("fp", 1e-3, 0, 2.0, 5.0, 0.0, False, "done", 0.0),
        ("fp", 1e-3, 0, 1.8, 5.0, 0.0, False, "done", 0.1),   # decay helps fp by 0.2
        ("bit", 1e-3, 0, 2.5, 5.0, 0.0, False, "done", 0.0),
        ("bit", 1e-3, 0, 2.6, 5.0, 0.0, False, "done", 0.1),  # decay hurts bit by 0.1
    ])
    assert quant.wd_benefit(df, {"v": "fp"}, 0.1) == pytest.approx(0.2)
    assert quant.wd_benefit(df, {"v": "bit"}, 0.1) == pytest.approx(-0.1)
    assert quant.wd_benefit_gap(df, {"v": "bit"}, {"v": "fp"}, 0.1) == pytest.approx(0.3)
    t = quant.wd_table(df, {"v": "fp"})
    assert t["best_loss"].tolist() == pytest.approx([2.0, 1.8])
    assert t["lr_sensitivity"].tolist() == [0.0, 0.0]     # one LR: no excess
    h = quant.heatmap(df, "optim.weight_decay", "v")
    assert h.loc[0.1, "bit"] == pytest.approx(2.6)


def test_ternary_shares_imbalance_and_last_probe():
    import pandas as pd  # noqa: PLC0415

    from proxylab.analysis import quant  # noqa: PLC0415

    uniform = pd.DataFrame({"frac_neg": [1 / 3], "frac_zero": [1 / 3], "frac_pos": [1 / 3]})
    assert quant.ternary_imbalance(uniform) == pytest.approx(0.0)
    skew = pd.DataFrame({"frac_neg": [0.2, 0.3], "frac_zero": [0.6, 0.4], "frac_pos": [0.2, 0.3]})
    # means 0.25 / 0.5 / 0.25 -> max |share - 1/3| = 1/6
    assert quant.ternary_imbalance(skew) == pytest.approx(1 / 6)
    assert quant.ternary_shares(skew)["frac_zero"] == pytest.approx(0.5)
    m = pd.DataFrame([("r1", 10, "quant/frac_zero", 0.5), ("r1", 20, "quant/frac_zero", 0.4),
                      ("r1", 20, "quant/frac_zero/blocks.0.mlp.fc", 0.9),
                      ("r1", 20, "quant/flip_rate", 0.01), ("r2", 10, "quant/frac_zero", 0.3),
                      ("r2", 10, "val/loss", 2.0)], columns=["run_id", "step", "key", "value"])
    lp = quant.last_probe(m).set_index("run_id")
    assert lp.loc["r1", "frac_zero"] == 0.4 and lp.loc["r1", "step"] == 20
    assert lp.loc["r1", "flip_rate"] == 0.01 and lp.loc["r2", "frac_zero"] == 0.3
    h = quant.probe_history(m, "frac_zero")
    assert h["value"].tolist() == [0.5, 0.4, 0.3]
