"""Gradient-noise-scale probe and exponential weight average: known answers, an exact
per-example reference, and their hooks in the training loop."""

import math

import numpy as np
import pytest
import torch

from proxylab.config import ConfigError, ScheduleConfig, canonical_json, from_flat
from proxylab.models import build_model
from proxylab.tasks import build_task
from proxylab.train.ema import WeightAverage
from proxylab.train.loop import MemoryReporter, lm_loss, train
from proxylab.train.noise_scale import (BiasCorrectedEMA, NoiseScaleProbe, exact_noise_scale,
                                        per_example_grads, two_batch_estimates)
from proxylab.train.schedules import lr_multiplier


def ce(logits, y):
    return lm_loss(logits, y, 0.0)[0]          # the training objective, as the loop has it


def ce_plain(logits, y):
    """The same cross-entropy written without boolean masks (vmap-able), for the reference."""
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())


# ----------------------------------------------------------------------------------
# the estimator on hand-built numbers


def test_two_batch_estimates_invert_the_expectation():
    # |G|^2 = 2, tr(Sigma) = 40: E|G_B|^2 = 2 + 40 / B -> 12 at B = 4, 3.25 at B = 32
    g2, s = two_batch_estimates(12.0, 3.25, 4, 32)
    assert g2 == pytest.approx(2.0, rel=1e-12) and s == pytest.approx(40.0, rel=1e-12)
    # noise-free (tr Sigma = 0): both norms equal |G|^2
    assert two_batch_estimates(5.0, 5.0, 8, 128) == pytest.approx((5.0, 0.0))
    with pytest.raises(ValueError):
        two_batch_estimates(1.0, 1.0, 8, 8)


def test_bias_corrected_ema():
    e = BiasCorrectedEMA(0.9)
    assert math.isnan(e.value)
    assert e.update(3.0) == pytest.approx(3.0)          # first reading: the value itself
    assert e.update(3.0) == pytest.approx(3.0)          # a constant stays constant
    e = BiasCorrectedEMA(0.5)
    e.update(1.0)
    # m2 = 0.5 * 0.5 + 0.5 * 3 = 1.75; / (1 - 0.25) = 7/3
    assert e.update(3.0) == pytest.approx(7.0 / 3.0)


def test_probe_smooths_numerator_and_denominator_separately():
    p = NoiseScaleProbe(every=1, b_small=1, b_big=2, decay=0.5)
    # pairs chosen so that the per-step ratios are 1 and 9: (g2, s) = (4, 4), (1, 9)
    # g2 = 2 g_big - g_small, s = (g_small - g_big) * 2
    rows1 = dict((k, v) for _, k, v in p.record(1, 6.0, 5.0))
    rows2 = dict((k, v) for _, k, v in p.record(2, 5.5, 3.25))
    assert rows1["noise/g2_est"] == pytest.approx(4.0) and rows1["noise/s_est"] == pytest.approx(2.0)
    assert rows2["noise/g2_est"] == pytest.approx(1.0) and rows2["noise/s_est"] == pytest.approx(4.5)
    g2_ema = (0.25 * 4.0 + 0.5 * 1.0) / 0.75
    s_ema = (0.25 * 2.0 + 0.5 * 4.5) / 0.75
    assert rows2["noise/g2_ema"] == pytest.approx(g2_ema)
    assert rows2["noise/b_simple"] == pytest.approx(s_ema / g2_ema)
    # not the EMA of the per-step ratios (0.5, 4.5)
    assert rows2["noise/b_simple"] != pytest.approx((0.25 * 0.5 + 0.5 * 4.5) / 0.75)


# ----------------------------------------------------------------------------------
# the exact per-example reference


def test_per_example_grads_match_a_loop_in_float64():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3)).double()
    x, y = torch.randn(9, 5, dtype=torch.float64), torch.randint(0, 3, (9,))

    def loss_fn(logits, t):
        return torch.nn.functional.cross_entropy(logits, t)

    g = per_example_grads(model, loss_fn, x, y, chunk=4)
    rows = []
    for i in range(9):
        grads = torch.autograd.grad(loss_fn(model(x[i:i + 1]), y[i:i + 1]), list(model.parameters()))
        rows.append(torch.cat([t.reshape(-1) for t in grads]))
    ref = torch.stack(rows)
    assert torch.allclose(g, ref, atol=1e-12)
    ex = exact_noise_scale(model, loss_fn, x, y)
    mean = ref.mean(0)
    assert ex["g2"] == pytest.approx(float(mean @ mean), rel=1e-10)
    assert ex["trace_sigma"] == pytest.approx(float(((ref - mean) ** 2).sum(1).mean()), rel=1e-10)


def _digits_model(seed=0):
    cfg = from_flat({"task.name": "digits", "model.name": "mlp", "model.width": 32,
                     "model.depth": 1, "train.seed": seed})
    task = build_task(cfg.task, seed=seed)
    torch.manual_seed(seed)
    model = build_model(cfg.model, vocab_size=task.vocab_size, seq_len=task.seq_len,
                        input_shape=task.input_shape)
    return task, model


def test_two_batch_probe_agrees_with_the_exact_noise_scale():
    """The probe's code path, at fixed weights, on batches drawn with replacement from the
    digits training set, against per-example gradients over that whole set. Tolerance:
    the mean of the unbiased estimates within 4 standard errors of the exact value (a
    false alarm ~1e-4), and B_simple from the means within 15%."""
    task, model = _digits_model()
    x_all, y_all = task._x_train, task._y_train
    exact = exact_noise_scale(model, ce_plain, x_all, y_all)
    params = [p for p in model.parameters() if p.requires_grad]
    probe = NoiseScaleProbe(every=1, b_small=8, b_big=64, decay=0.9)
    gen = torch.Generator().manual_seed(1)
    g2s, ss = [], []
    for step in range(400):
        x, y = task.train_batch(64, gen)
        model.zero_grad(set_to_none=True)
        ce(model(x), y).backward()
        rows = dict((k, v) for _, k, v in probe.measure(step, model, params, x, y, ce))
        g2s.append(rows["noise/g2_est"])
        ss.append(rows["noise/s_est"])
    for est, ref in ((np.array(g2s), exact["g2"]), (np.array(ss), exact["trace_sigma"])):
        se = est.std(ddof=1) / math.sqrt(len(est))
        assert se < 0.1 * abs(ref)                       # the check has power
        assert abs(est.mean() - ref) < 4 * se, (est.mean(), ref, se)
    assert np.mean(ss) / np.mean(g2s) == pytest.approx(exact["b_simple"], rel=0.15)


# ----------------------------------------------------------------------------------
# the weight average


def test_weight_average_is_the_bias_corrected_ema():
    model = torch.nn.Linear(2, 1, bias=False)
    ema = WeightAverage(model, decay=0.8)
    assert torch.equal(ema.averaged()[0], model.weight.detach())   # before any update
    ws = [torch.tensor([[1.0, -2.0]]), torch.tensor([[3.0, 0.0]]), torch.tensor([[-1.0, 5.0]])]
    for w in ws:
        with torch.no_grad():
            model.weight.copy_(w)
        ema.update()
    tau, t = 0.8, 3
    ref = sum(tau ** (t - 1 - k) * (1 - tau) * w for k, w in enumerate(ws)) / (1 - tau ** t)
    assert torch.allclose(ema.averaged()[0], ref, atol=1e-6)
    avg = ema.averaged_model()
    assert torch.allclose(avg.weight, ref, atol=1e-6) and avg is not model
    assert torch.equal(model.weight.detach(), ws[-1])                # raw weights untouched


def test_constant_schedule_warms_up_then_stays_flat():
    cfg = ScheduleConfig(name="constant", warmup=0.25)
    s = [lr_multiplier(cfg, i, 100) for i in range(100)]
    assert s[0] == pytest.approx(1 / 26) and s[24] == pytest.approx(25 / 26)
    assert all(a < b for a, b in zip(s[:25], s[1:26]))
    assert s[25:] == [1.0] * 75


# ----------------------------------------------------------------------------------
# in the training loop

BASE = {"task.name": "digits", "model.name": "mlp", "model.width": 32, "model.depth": 1,
        "schedule.name": "constant", "train.steps": 30, "train.batch_size": 32,
        "train.eval_every": 10, "train.threads": 1}


def _rows(cfg):
    rep = MemoryReporter()
    res = train(cfg, rep)
    return res, rep


def test_new_keys_keep_run_ids_at_their_defaults():
    text = canonical_json(from_flat(BASE))
    for key in ("noise_scale_every", "noise_scale_small", "noise_scale_ema", "ema_decay"):
        assert key not in text
    assert "noise_scale_every" in canonical_json(from_flat({**BASE, "train.noise_scale_every": 5}))


def test_probe_logs_without_changing_training():
    _, off = _rows(from_flat(BASE))
    _, on = _rows(from_flat({**BASE, "train.noise_scale_every": 5}))
    loss = lambda rep: [(s, v) for s, k, v in rep.rows if k in ("train/loss", "val/loss")]  # noqa: E731
    assert loss(on) == loss(off)
    b = [(s, v) for s, k, v in on.rows if k == "noise/b_simple"]
    assert [s for s, _ in b] == [5, 10, 15, 20, 25, 30]
    assert all(math.isfinite(v) for _, v in b)
    assert not any(k.startswith("noise/") for _, k, _ in off.rows)


def test_probe_rejects_a_small_batch_not_below_the_batch():
    with pytest.raises(ConfigError, match="train.noise_scale_small"):
        train(from_flat({**BASE, "train.noise_scale_every": 5, "train.noise_scale_small": 32}))


def test_weight_average_evaluated_beside_the_raw_weights():
    _, off = _rows(from_flat(BASE))
    _, on = _rows(from_flat({**BASE, "train.ema_decay": 0.9}))
    val = lambda rep, key: {s: v for s, k, v in rep.rows if k == key}  # noqa: E731
    assert val(on, "val/loss") == val(off, "val/loss")               # raw curve unchanged
    ema = val(on, "val_ema/loss")
    assert sorted(ema) == [0, 10, 20, 30] and set(val(on, "val_ema/acc")) == set(ema)
    assert ema[0] == val(on, "val/loss")[0]                           # no update yet: same weights
    assert ema[30] != val(on, "val/loss")[30]
    with pytest.raises(ConfigError, match="train.ema_decay"):
        train(from_flat({**BASE, "train.ema_decay": 0.9, "train.checkpoint_every": 10}))
