"""Grokking: the answer-position transformer, label corruption, and the analyses (known answers)."""

import math

import numpy as np
import pytest
import torch

from proxylab.analysis.grokking import (corruption_phase, delay_law_fit, first_step_at,
                                        fourier_basis, fourier_norms, gini, grokking_steps, ipr,
                                        key_frequencies, norm_summary, restricted_excluded_loss)
from proxylab.config import ConfigError, TaskConfig, load_config
from proxylab.models import build_model
from proxylab.tasks import build_task

# ----------------------------------------------------------------------------------
# model


def _tf(**kw):
    sets = ["model.name=answer_tf", "model.width=32", "model.heads=4", "model.mlp_ratio=4"]
    sets += [f"model.{k}={v}" for k, v in kw.items()]
    torch.manual_seed(0)
    return build_model(load_config(sets=sets).model, vocab_size=25, seq_len=4)


def test_answer_position_equals_the_full_sequence_model():
    m = _tf()
    x = torch.randint(0, 25, (64, 4))
    fast = m(x)
    assert fast.shape == (64, 1, 25)
    full = m.forward_full(x)
    torch.testing.assert_close(fast[:, 0], full[:, -1], atol=1e-5, rtol=1e-5)
    # and gradients agree: the tables are an exact rewrite, not an approximation
    y = torch.randint(0, 25, (64,))
    g1 = torch.autograd.grad(torch.nn.functional.cross_entropy(m(x)[:, 0], y), list(m.parameters()))
    g2 = torch.autograd.grad(torch.nn.functional.cross_entropy(m.forward_full(x)[:, -1], y),
                             list(m.parameters()))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_answer_tf_init_and_roles():
    m = _tf(width=64, init_scale=3.0)
    # Nanda's init: N(0, 1/d_model) embeddings (times the init scale alpha)
    assert m.tok_emb.weight.std().item() == pytest.approx(3.0 / 8.0, rel=0.1)
    assert m.mlp_out.weight.std().item() == pytest.approx(3.0 / 16.0, rel=0.1)
    roles = m.param_roles()
    assert roles["tok_emb.weight"] == "embedding" and roles["head.weight"] == "head"
    assert roles["mlp_in.bias"] == "bias" and roles["q.weight"] == "hidden"
    assert not any("norm" in n for n in roles)             # no LayerNorm
    with pytest.raises(ConfigError, match="model.heads"):
        _tf(width=30, heads=4)


# ----------------------------------------------------------------------------------
# label corruption


def test_corruption_changes_exactly_xi_of_the_training_labels():
    clean = build_task(TaskConfig(name="modular", p=31, train_frac=0.5), seed=3)
    bad = build_task(TaskConfig(name="modular", p=31, train_frac=0.5, corrupt_frac=0.2), seed=3)
    assert torch.equal(clean._x_train, bad._x_train)        # the same split for every xi
    changed = (clean._y_train[:, 3] != bad._y_train[:, 3])
    n_train = len(clean._x_train)
    assert int(changed.sum()) == round(0.2 * n_train) == bad.n_corrupt
    assert changed[:bad.n_corrupt].all() and not changed[bad.n_corrupt:].any()
    sets = bad.eval_sets()
    (xc, yc), = sets["train_corrupt"]
    (xt, yt), = sets["train_corrupt_true"]
    assert torch.equal(xc, xt) and (yc[:, 3] != yt[:, 3]).all()
    a, b = xt[:, 0], xt[:, 2]
    assert torch.equal(yt[:, 3], (a + b) % 31)               # the rule's answers
    (xk, yk), = sets["train_clean"]
    assert len(xk) + len(xc) == n_train and torch.equal(yk[:, 3], (xk[:, 0] + xk[:, 2]) % 31)
    assert clean.eval_sets() == {} and bad.fingerprint != clean.fingerprint
    assert build_task(TaskConfig(name="modular", p=31, train_frac=0.5, corrupt_frac=0.2),
                      seed=3).fingerprint == bad.fingerprint


def test_corrupted_runs_record_clean_and_corrupted_accuracy():
    from proxylab.train.loop import MemoryReporter, train

    rep = MemoryReporter()
    cfg = load_config(sets=["task.name=modular", "task.p=23", "task.corrupt_frac=0.25",
                            "task.full_batch=true", "model.name=mlp", "model.width=32",
                            "model.depth=1", "train.steps=20", "train.eval_every=10",
                            "train.diverge_factor=1e6"])
    train(cfg, rep)
    keys = {k for _, k, _ in rep.rows}
    for k in ("train_clean/acc", "train_corrupt/acc", "train_corrupt_true/acc", "train_corrupt/loss"):
        assert k in keys
    assert {s for s, k, _ in rep.rows if k == "train_corrupt/acc"} == {0, 10, 20}


# ----------------------------------------------------------------------------------
# analyses: steps, norms, phases


def test_first_step_and_grokking_steps():
    steps = [0, 100, 200, 300, 400, 500]
    train = [0.0, 0.5, 0.995, 1.0, 1.0, 1.0]
    val = [0.0, 0.0, 0.1, 0.995, 0.98, 1.0]
    g = grokking_steps(steps, train, val)
    assert g["memorization_step"] == 200 and g["generalization_step"] == 300
    assert g["delay"] == 100 and g["delay_ratio"] == 1.5
    assert first_step_at(steps, val, stay=True) == 500
    assert math.isnan(first_step_at(steps, [0.1] * 6))
    assert math.isnan(grokking_steps(steps, train, [0.5] * 6)["delay"])
    assert first_step_at([300, 100, 200], [1.0, 0.0, 1.0]) == 200   # unsorted input


def test_norm_summary():
    ns = norm_summary([0, 10, 20, 30], [5.0, 8.0, 6.0, 4.0], generalization_step=21)
    assert ns == {"norm_peak": 8.0, "norm_peak_step": 10.0, "norm_final": 4.0,
                  "norm_at_generalization": 6.0, "norm_drop_frac": 0.5}


@pytest.mark.parametrize("accs,phase", [
    ((1.0, 0.9, 0.0, 1.0), "coexistence"),
    ((1.0, 0.01, 0.98, 1.0), "inversion"),
    ((0.05, 1.0, 0.0, 1.0), "memorization"),
    ((0.3, 0.1, 0.3, 0.5), "confusion"),
])
def test_corruption_phase(accs, phase):
    assert corruption_phase(*accs) == phase


# ----------------------------------------------------------------------------------
# analyses: Fourier, Gini, IPR, progress measures


def test_fourier_basis_is_orthonormal():
    for p in (7, 8, 113):
        B, freq = fourier_basis(p)
        np.testing.assert_allclose(B @ B.T, np.eye(p), atol=1e-10)
        assert freq.max() == p // 2 and (freq == 0).sum() == 1


def test_fourier_norms_find_the_built_in_frequencies():
    p, d = 113, 64
    rng = np.random.default_rng(0)
    x = np.arange(p)[:, None]
    keys = [14, 35, 41, 42, 52]
    emb = 0.01 * rng.standard_normal((p + 2, d))            # + two operator rows, ignored
    for k in keys:
        a, b = rng.standard_normal((2, d))
        emb[:p] += np.cos(2 * np.pi * k * x / p) * a + np.sin(2 * np.pi * k * x / p) * b
    norms = fourier_norms(emb, p)
    assert norms.shape == (p // 2 + 1,)
    assert key_frequencies(norms) == keys
    # Parseval: the spectrum holds the whole (residue rows') norm
    assert np.sqrt((norms**2).sum()) == pytest.approx(np.linalg.norm(emb[:p]))
    # concentrated spectrum: high Gini; white noise: low
    assert gini(norms[1:]) > 0.85
    assert gini(fourier_norms(rng.standard_normal((p, d)))[1:]) < 0.2


def test_gini_known_values():
    assert gini([1, 1, 1, 1]) == pytest.approx(0.0)
    assert gini([0, 0, 0, 5]) == pytest.approx(0.75)
    assert gini([1, 3]) == pytest.approx(0.25)   # mean abs difference / (2 mean) = 1 / 4


def test_ipr_known_values():
    p = 97
    x = np.arange(p)
    w = np.stack([np.cos(2 * np.pi * 5 * x / p),                      # one frequency
                  np.eye(p)[0],                                        # flat spectrum
                  np.cos(2 * np.pi * 5 * x / p) + np.cos(2 * np.pi * 9 * x / p)])  # two equal
    v = ipr(w)
    n_bins = p // 2 + 1
    assert v[0] == pytest.approx(1.0, abs=1e-12)
    assert v[1] == pytest.approx(1 / n_bins)
    assert v[2] == pytest.approx(0.5)


def test_restricted_and_excluded_loss_on_a_perfect_fourier_circuit():
    p, keys = 23, [3, 7]
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    c = np.arange(p)
    # Nanda's readout: logit(c) = sum_k cos(w_k (a + b - c)), scaled
    logits = sum(np.cos(2 * np.pi * k * (a[..., None] + b[..., None] - c) / p) for k in keys) * 8
    mask = np.random.default_rng(0).random((p, p)) < 0.3
    out = restricted_excluded_loss(logits, p, keys, mask)
    # the logits ARE the key-frequency part: restricting changes nothing, excluding leaves
    # logits constant over c on every pair: log p
    assert out["restricted_loss"] == pytest.approx(out["train_loss"], abs=1e-9)
    assert out["excluded_loss"] == pytest.approx(math.log(p), abs=1e-9)
    assert out["test_loss"] < 0.1
    # with no key frequencies, restricted logits are the grid mean: uninformative
    assert restricted_excluded_loss(logits, p, [], mask)["restricted_loss"] == pytest.approx(
        math.log(p), abs=1e-6)


# ----------------------------------------------------------------------------------
# the delay law


def test_delay_law_fit_recovers_a_line():
    alphas = np.array([1, 2, 4, 8, 1, 2, 4, 8], dtype=float)
    wds = np.array([1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5])
    lrs = np.full(8, 1e-3)
    x = np.log(alphas) / (lrs * wds)
    fit = delay_law_fit(300 + 0.8 * x, alphas, lrs, wds)
    assert fit["slope"] == pytest.approx(0.8) and fit["intercept"] == pytest.approx(300)
    assert fit["r2"] == pytest.approx(1.0) and fit["n"] == 8
    # noisy: matches numpy's polyfit; never-generalized points are dropped
    rng = np.random.default_rng(1)
    g = 300 + 0.8 * x + rng.normal(0, 50, 8)
    g[3] = np.nan
    fit = delay_law_fit(g, alphas, lrs, wds)
    keep = np.isfinite(g)
    slope, icpt = np.polyfit(x[keep], g[keep], 1)
    assert fit["slope"] == pytest.approx(slope) and fit["intercept"] == pytest.approx(icpt)
    r = np.corrcoef(x[keep], g[keep])[0, 1]
    assert fit["r2"] == pytest.approx(r**2) and fit["n"] == 7
    assert math.isnan(delay_law_fit([1.0], [2.0], [1e-3], [1.0])["slope"])


def test_delay_law_fit_with_the_omnigrok_offset():
    alphas = np.array([1, 2, 4, 1, 2, 4, 1, 2, 4], dtype=float)
    wds = np.repeat([0.5, 1.0, 2.0], 3)
    lrs = np.full(9, 3e-3)
    inv = 1 / (lrs * wds)
    g = 100 + 0.7 * np.log(alphas) * inv + 0.4 * inv        # ln(alpha w0/w_c) with ln(w0/w_c) ~ 0.4/0.7
    fit = delay_law_fit(g, alphas, lrs, wds, offset=True)
    assert fit["slope"] == pytest.approx(0.7) and fit["offset"] == pytest.approx(0.4)
    assert fit["intercept"] == pytest.approx(100) and fit["r2"] == pytest.approx(1.0)
    assert delay_law_fit(g, alphas, lrs, wds)["r2"] < 0.95   # the plain law misses the offset


# ----------------------------------------------------------------------------------
# Doshi et al.'s quadratic MLP and the MSE objective


def test_quad_mlp_is_the_one_hot_quadratic_network():
    cfg = load_config(sets=["model.name=quad_mlp", "model.width=16"])
    torch.manual_seed(0)
    m = build_model(cfg.model, vocab_size=13, seq_len=4)
    x = torch.tensor([[3, 11, 7, 12], [0, 11, 10, 12]])
    one_hot = torch.cat([torch.nn.functional.one_hot(x[:, 0], 13), torch.nn.functional.one_hot(x[:, 2], 13)], 1).float()
    W1 = torch.cat([m.u.weight, m.v.weight], 1)              # [N, 2V]: Doshi's first layer
    expect = (one_hot @ W1.T) ** 2 @ m.head.weight.T
    torch.testing.assert_close(m(x)[:, 0], expect)
    assert m.u.weight.std().item() == pytest.approx(0.5 / 32 ** (1 / 3), rel=0.15)   # sigma, N=16
    assert set(m.param_roles().values()) == {"hidden", "head"}


def test_mse_objective():
    from proxylab.train.loop import lm_loss

    logits = torch.randn(5, 1, 7)
    y = torch.full((5, 4), -100)
    y[:, 3] = torch.tensor([0, 3, 6, 2, 2])
    _, mse, _ = lm_loss(logits, y, 0.0, "mse")
    target = torch.zeros(5, 7)
    target[torch.arange(5), y[:, 3]] = 1.0
    assert float(mse) == pytest.approx(float(((logits[:, 0] - target) ** 2).mean()))
    _, ce, _ = lm_loss(logits, y, 0.0)
    assert float(ce) == pytest.approx(float(torch.nn.functional.cross_entropy(logits[:, 0], y[:, 3])))
    with pytest.raises(ConfigError, match="train.loss"):
        load_config(sets=["train.loss=hinge"])


def test_fp64_loss_keeps_a_fitted_example_s_loss_and_gradient():
    """A margin of 20 nats: CE = log(1 + 2e^-20) ≈ 4.1e-9, which float32 rounds to 0, and the
    gradient on the right answer (p - 1) with it; train.loss_dtype = fp64 keeps both, to the
    closed form."""
    from proxylab.train.loop import lm_loss

    y = torch.tensor([[-100, 1]])
    e = math.exp(-20.0)
    exact = math.log1p(2 * e)
    p_other = e / (1 + 2 * e)                                         # softmax minus one-hot
    want = torch.tensor([p_other, -2 * p_other, p_other], dtype=torch.float64)
    grads = {}
    for dt in ("fp32", "fp64"):
        logits = torch.tensor([[[0.0, 20.0, 0.0]]], requires_grad=True)
        _, ce, _ = lm_loss(logits, y, 0.0, dtype=dt)
        (grads[dt],) = torch.autograd.grad(ce, logits)
        if dt == "fp32":
            assert float(ce.detach()) == 0.0
        else:
            assert ce.dtype == torch.float64 and float(ce.detach()) == pytest.approx(exact, rel=1e-12)
    assert float(grads["fp32"][0, 0, 1]) == 0.0
    assert grads["fp64"].dtype == torch.float32      # back in the model's dtype
    torch.testing.assert_close(grads["fp64"][0, 0].double(), want, rtol=1e-6, atol=0)
    cfg = load_config(sets=["train.loss_dtype=fp64"])
    assert cfg.train.loss_dtype == "fp64" and cfg.id != load_config().id
    assert load_config(sets=["train.loss_dtype=fp32"]).id == load_config().id
    with pytest.raises(ConfigError, match="train.loss_dtype"):
        load_config(sets=["train.loss_dtype=fp16"])


def test_an_fp64_loss_run_trains(tmp_path):
    from proxylab.train.loop import MemoryReporter, train

    sets = ["task.name=modular", "task.p=23", "task.full_batch=true", "model.name=mlp",
            "model.width=32", "model.depth=1", "train.steps=30", "train.threads=1",
            "train.diverge_factor=1e6"]
    runs = {}
    for dt in ("fp32", "fp64"):
        rep = MemoryReporter()
        res = train(load_config(sets=sets + [f"train.loss_dtype={dt}"]), rep)
        assert res.status == "done"
        runs[dt] = rep.last("train/loss")
    # the same run up to rounding: the objective differs only in precision
    assert runs["fp64"] == pytest.approx(runs["fp32"], rel=1e-3)


# ----------------------------------------------------------------------------------
# lottery tickets


def test_magnitude_masks_prune_the_smallest_globally():
    from proxylab.train.tickets import magnitude_masks

    state = {"a.weight": torch.tensor([[0.1, -5.0], [0.3, 2.0]]), "a.bias": torch.tensor([0.0, 0.0]),
             "b.weight": torch.tensor([[-0.2, 4.0, 0.05]])}
    m = magnitude_masks(state, 3 / 7)
    assert "a.bias" not in m                                  # biases are never pruned
    assert m["a.weight"].tolist() == [[0.0, 1.0], [1.0, 1.0]]
    assert m["b.weight"].tolist() == [[0.0, 1.0, 0.0]]


def test_a_ticket_run_keeps_its_mask(tmp_path, monkeypatch):
    from proxylab.train.checkpoint import load_checkpoint
    from proxylab.train.loop import NullReporter, train

    monkeypatch.setenv("PROXYLAB_CHECKPOINT_DIR", str(tmp_path / "ck"))
    sets = ["task.name=modular", "task.p=23", "task.full_batch=true", "model.name=answer_tf",
            "model.width=32", "train.steps=20", "train.diverge_factor=1e6", "train.checkpoint_every=10"]
    dense = load_config(sets=sets)
    with pytest.raises(ConfigError, match="no checkpoints"):
        train(load_config(sets=sets + [f"train.ticket_from={dense.id}"]), NullReporter())
    train(dense, NullReporter())
    ticket = load_config(sets=sets + [f"train.ticket_from={dense.id}", "train.ticket_sparsity=0.5"])
    train(ticket, NullReporter())
    final = load_checkpoint(ticket.id, 20, db=None).model_state
    n_zero = sum(int((v == 0).sum()) for k, v in final.items() if v.ndim >= 2)
    n_all = sum(v.numel() for k, v in final.items() if v.ndim >= 2)
    assert n_zero == round(0.5 * n_all)                      # pruned weights stayed at zero
