"""Muon / SOAP / Shampoo / LAWN through the registry on the GPT proxy: routing by role,
config errors naming the key, finite steps with probes."""

import math

import pytest
import torch

from proxylab.config import ConfigError, load_config
from proxylab.models import build_model
from proxylab.optim import build_optimizer

BASE = ["model.width=32", "model.depth=1", "model.heads=2", "task.seq_len=16"]


def _setup(*sets):
    cfg = load_config(None, [*BASE, *sets])
    torch.manual_seed(0)
    model = build_model(cfg.model, vocab_size=64, seq_len=16)
    return model, build_optimizer(model, cfg.optim)


def _steps(model, opt, n=3):
    x = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(1))
    for _ in range(n):
        opt.zero_grad()
        logits = model(x)
        y = x[:, -logits.shape[1]:].flatten()
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), y).backward()
        opt.probe_next_step()
        opt.step()
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())
    return opt.last_stats


def test_muon_routes_by_role_through_the_registry():
    model, opt = _setup("optim.name=muon", "optim.lr=0.02", "optim.extra.adam_lr=0.001")
    for g in opt.param_groups:
        assert g["use_muon"] == (g["role"] == "hidden")
        assert g["lr"] == pytest.approx(0.02 if g["use_muon"] else 0.001)
        assert g["peak_lr"] == pytest.approx(g["lr"])
    roles = {g["role"] for g in opt.param_groups if not g["use_muon"]}
    assert {"embedding", "head"} <= roles
    stats = _steps(model, opt)
    assert stats["opt/muon_sv_max"] < 1.4 and "opt/update_rms" in stats


@pytest.mark.parametrize("name", ["soap", "shampoo"])
def test_preconditioned_optimizers_step_with_stats(name):
    model, opt = _setup(f"optim.name={name}", "optim.extra.precondition_frequency=2")
    stats = _steps(model, opt, 4)
    assert stats["opt/eigh_failure_rate"] == 0.0
    assert 0.0 <= stats["opt/basis_drift"] <= 1.0


def test_lawn_muon_conserves_the_head_norm():
    model, opt = _setup("optim.name=lawn-muon", "optim.extra.free_steps=1",
                        "optim.weight_decay=0.1", "optim.extra.remove_radial=true")
    _steps(model, opt, 1)
    head = [p for g in opt.param_groups if g["role"] == "head" for p in g["params"]]
    c = [float(p.detach().norm()) for p in head]
    stats = _steps(model, opt, 3)
    for p, ci in zip(head, c):
        assert math.isclose(float(p.detach().norm()), ci, rel_tol=1e-6)
    assert stats["opt/lawn_active"] == 1.0
    assert all(g["weight_decay"] == 0.0 for g in opt.param_groups if g["role"] == "head")


@pytest.mark.parametrize("sets,key", [
    (["optim.name=muon", "optim.extra.scale=huge"], "optim.extra.scale"),
    (["optim.name=muon", "optim.extra.ns_steps=0"], "optim.extra.ns_steps"),
    (["optim.name=soap", "optim.extra.precondition_freq=3"], "optim.extra.precondition_freq"),
    (["optim.name=shampoo", "optim.extra.graft_beta2=2.0"], "optim.extra.graft_beta2"),
    (["optim.name=lawn-soap", "optim.extra.free_steps=-1"], "optim.extra.free_steps"),
])
def test_bad_extras_name_the_key(sets, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [*BASE, *sets])
