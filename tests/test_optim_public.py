"""The public optimizer surface: every registered class importable by name, role-tagged
param groups for any nn.Module, Muon.from_model, unknown roles rejected."""

from __future__ import annotations

import importlib
import warnings

import pytest
import torch
from torch import nn

import proxylab.optim as po
from proxylab.config import ConfigError, OptimConfig
from proxylab.optim import REGISTRY, Muon, param_groups


def test_every_registered_optimizer_is_importable_by_class_name():
    from proxylab.optim import LAWN, SOAP, Muon as M, Shampoo  # noqa: F401 (the README's promise)

    for name, entry in REGISTRY.items():
        module, cls_name = entry.target.split(":")
        cls = getattr(importlib.import_module(module), cls_name)
        assert getattr(po, cls_name) is cls, name
        assert cls_name in po.__all__, cls_name
    assert po.LAWN is importlib.import_module("proxylab.optim.lawn").LAWN


def test_a_class_registered_later_is_importable_too(monkeypatch):
    monkeypatch.setitem(REGISTRY, "my-sgd", po.Entry("proxylab.optim.sgd:SGD", 0.1))
    monkeypatch.setitem(REGISTRY, "my-opt", po.Entry("torch.optim:Adagrad", 0.1))
    assert po.Adagrad is torch.optim.Adagrad
    with pytest.raises(AttributeError, match="NoSuchOpt"):
        po.NoSuchOpt  # noqa: B018


class Plain(nn.Module):
    """No param_roles(): roles must be inferred."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(11, 8)
        self.fc1 = nn.Linear(8, 16)
        self.ln = nn.LayerNorm(16)
        self.fc2 = nn.Linear(16, 8, bias=False)
        self.gain = nn.Parameter(torch.ones(8))
        self.out = nn.Linear(8, 11, bias=False)

    def forward(self, x):
        h = self.fc2(self.ln(torch.relu(self.fc1(self.emb(x))))) * self.gain
        return self.out(h)


def test_infer_roles_of_a_plain_module():
    assert po.infer_roles(Plain()) == {
        "emb.weight": "embedding", "fc1.weight": "hidden", "fc1.bias": "bias",
        "ln.weight": "norm", "ln.bias": "bias", "fc2.weight": "hidden", "gain": "norm",
        "out.weight": "head"}


def test_param_groups_tags_roles_and_masks_decay():
    groups = param_groups(Plain(), lr=0.01, weight_decay=0.1)
    by_role = {g["role"]: g for g in groups}
    assert set(by_role) == {"embedding", "hidden", "bias", "norm", "head"}
    assert all(g["lr"] == 0.01 for g in groups)
    assert {r: g["weight_decay"] for r, g in by_role.items()} == {
        "embedding": 0.0, "hidden": 0.1, "bias": 0.0, "norm": 0.0, "head": 0.1}
    assert by_role["hidden"]["names"] == ["fc1.weight", "fc2.weight"]
    # settings left out stay the optimizer's: no lr in the groups
    bare = param_groups(Plain())
    assert all("lr" not in g for g in bare)
    assert {g["role"]: g.get("weight_decay") for g in bare}["hidden"] is None
    opt = po.AdamW(bare, lr=0.005)
    assert all(g["lr"] == 0.005 for g in opt.param_groups)


def test_muon_from_model_routes_by_role_and_uses_the_documented_aux_lr():
    model = Plain()
    opt = Muon.from_model(model, lr=0.05)
    muon_names = sorted(n for g in opt.param_groups if g["use_muon"] for n in g["names"])
    assert muon_names == ["fc1.weight", "fc2.weight"]          # hidden matrices only
    aux = [g for g in opt.param_groups if not g["use_muon"]]
    assert {n for g in aux for n in g["names"]} >= {"emb.weight", "out.weight", "gain"}
    assert all(g["lr"] == pytest.approx(Muon.EXTRA_DEFAULTS["adam_lr"]) for g in aux)
    assert Muon.EXTRA_DEFAULTS["adam_lr"] == 3e-3
    # and it trains: one step changes every tensor
    before = [p.detach().clone() for p in model.parameters()]
    model(torch.randint(0, 11, (4, 3))).square().mean().backward()
    opt.step()
    assert all(not torch.equal(a, p) for a, p in zip(before, model.parameters()))


def test_muon_from_model_default_lr_is_the_class_default():
    opt = Muon.from_model(Plain())
    assert {g["lr"] for g in opt.param_groups if g["use_muon"]} == {0.02}


def test_muon_on_model_parameters_warns():
    with pytest.warns(UserWarning, match="from_model"):
        Muon(Plain().parameters())
    with warnings.catch_warnings():                 # hidden matrices alone: Keller's usage
        warnings.simplefilter("error")
        Muon([Plain().fc1.weight])


@pytest.mark.parametrize("cls", [Muon, po.AdamW, po.AdalayerSGD])
def test_unknown_role_is_rejected(cls):
    w = torch.zeros(3, 3, requires_grad=True)
    with pytest.raises(ConfigError, match="'hiden' is not a role.*hidden"):
        cls([{"params": [w], "role": "hiden"}])


def test_param_groups_role_overrides_are_checked():
    model = Plain()
    groups = param_groups(model, lr=0.01, roles={"fc2.weight": "head", "out.weight": "hidden"})
    assert {g["role"]: g["names"] for g in groups}["head"] == ["fc2.weight"]
    with pytest.raises(ConfigError, match="'heads' is not a role"):
        param_groups(model, roles={"out.weight": "heads"})
    with pytest.raises(ConfigError, match="'nope.weight' is not a trainable parameter"):
        param_groups(model, roles={"nope.weight": "head"})
    with pytest.raises(ConfigError, match="unknown setting.*betas"):
        param_groups(model, betas=(0.9, 0.9))


def test_from_model_matches_the_training_loops_groups_on_the_gpt():
    from proxylab.config import load_config
    from proxylab.models import build_model

    cfg = load_config(sets=["model.width=32", "model.heads=2", "model.depth=1",
                            "optim.name=muon", "optim.lr=0.02"])
    model = build_model(cfg.model, vocab_size=256, seq_len=16)
    loop = po.build_optimizer(model, cfg.optim)
    mine = Muon.from_model(model, lr=0.02, eps=cfg.optim.eps)
    shape = lambda o: sorted((g["role"], g["use_muon"], tuple(g["names"]), g["lr"])  # noqa: E731
                             for g in o.param_groups)
    assert shape(mine) == shape(loop)
    assert OptimConfig().lr == 3e-3
