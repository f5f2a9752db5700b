"""Registry, build_optimizer (roles, masks, muP scales), bad input, instrumentation."""

import io
import math
import re

import pytest
import torch
from torch import nn

import proxylab.optim as po
from proxylab.config import ConfigError, ModelConfig, OptimConfig, from_flat

MINE = ["adamw", "sgd", "lion", "signum", "adalayer", "adalayer-sgd", "factored-adam",
        "adafactor", "adam-atan2", "novograd", "lamb", "lars"]


class Tiny(nn.Module):
    """A model with every role and a muP-like LR scale on the hidden weights."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(7, 4)
        self.fc = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.head = nn.Linear(4, 7, bias=False)

    def forward(self, x):
        return self.head(self.norm(torch.relu(self.fc(self.emb(x)))))

    def param_roles(self):
        return {"emb.weight": "embedding", "fc.weight": "hidden", "fc.bias": "bias",
                "norm.weight": "norm", "norm.bias": "bias", "head.weight": "head"}

    def lr_scales(self):
        return {n: (0.5 if n == "fc.weight" else 1.0) for n in self.param_roles()}


def loss_of(model):
    x = torch.arange(7).repeat(3)
    return nn.functional.cross_entropy(model(x), (x + 1) % 7)


# ---- registry and build_optimizer -----------------------------------------------------------


def test_available_lists_every_in_house_optimizer():
    names = po.available()
    assert set(MINE) <= set(names)
    for n in MINE:
        assert po.default_lr(n) > 0


def test_groups_follow_roles_masks_and_lr_scales():
    model = Tiny()
    cfg = OptimConfig(name="adamw", lr=1e-2, weight_decay=0.1, decay_embeddings=False,
                      decay_head=True)
    opt = po.build_optimizer(model, cfg)
    by_name = {n: g for g in opt.param_groups for n in g["names"]}
    assert by_name["fc.weight"]["lr"] == pytest.approx(5e-3)
    assert by_name["fc.weight"]["peak_lr"] == pytest.approx(5e-3)
    assert by_name["fc.weight"]["weight_decay"] == 0.1
    assert by_name["head.weight"]["weight_decay"] == 0.1
    assert by_name["emb.weight"]["weight_decay"] == 0.0
    for n in ("norm.weight", "norm.bias", "fc.bias"):
        assert by_name[n]["weight_decay"] == 0.0
    assert {g["role"] for g in opt.param_groups} == {"embedding", "hidden", "bias", "norm", "head"}
    opt2 = po.build_optimizer(model, OptimConfig(name="adamw", weight_decay=0.1,
                                                 decay_embeddings=True, decay_head=False))
    by_name = {n: g for g in opt2.param_groups for n in g["names"]}
    assert by_name["emb.weight"]["weight_decay"] == 0.1 and by_name["head.weight"]["weight_decay"] == 0


@pytest.mark.parametrize("name", MINE)
def test_every_optimizer_builds_from_config_and_steps(name):
    torch.manual_seed(0)
    model = Tiny()
    cfg = from_flat({"optim.name": name, "optim.lr": po.default_lr(name), "optim.weight_decay": 0.01}).optim
    opt = po.build_optimizer(model, cfg)
    assert isinstance(opt, torch.optim.Optimizer)
    before = loss_of(model).item()
    for _ in range(30):
        opt.zero_grad()
        loss_of(model).backward()
        opt.step()
    after = loss_of(model).item()
    assert math.isfinite(after) and after < before


def test_gpt_proxy_groups():
    from proxylab.models import build_model

    model = build_model(ModelConfig(width=32, depth=1, heads=2), vocab_size=16, seq_len=8)
    opt = po.build_optimizer(model, OptimConfig(name="lion", weight_decay=0.1))
    names = [n for g in opt.param_groups for n in g["names"]]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())
    heads = [g for g in opt.param_groups if g["role"] == "head"]
    assert heads and all(g["weight_decay"] == 0.1 for g in heads)


# ---- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize("flat,needle", [
    ({"optim.name": "adamz"}, "optim.name"),
    ({"optim.name": "lawn-nope"}, "optim.name"),
    ({"optim.name": "adam"}, "optim.wd_mode='l2'"),
    ({"optim.name": "lion", "optim.extra.eps1": 1e-30}, "optim.extra.eps1"),
    ({"optim.name": "adamw", "optim.extra.betas": [0.9, 0.9]}, "optim.extra.betas"),
    ({"optim.name": "adalayer", "optim.extra.blocks": "columns"}, "optim.extra.blocks"),
    ({"optim.name": "adafactor", "optim.extra.d": 0.5}, "optim.extra.d"),
    ({"optim.lr": -1e-3}, "optim.lr"),
    ({"optim.beta1": 1.0}, "optim.beta1"),
    ({"optim.beta2": -0.1}, "optim.beta2"),
    ({"optim.wd_mode": "fixed"}, "optim.wd_mode"),
])
def test_bad_config_is_a_config_error_naming_the_key(flat, needle):
    with pytest.raises(ConfigError, match=re.escape(needle)):
        from_flat(flat)


def test_validate_directly_and_allowed_values_in_message():
    with pytest.raises(ConfigError, match="decoupled.*independent.*l2.*none"):
        po.validate_optim_config(OptimConfig(wd_mode="constant"))
    with pytest.raises(ConfigError, match="allowed:.*trust_coefficient"):
        po.validate_optim_config(OptimConfig(name="lars", extra={"trust": 1.0}))
    with pytest.raises(ConfigError, match="optim.beta1"):
        po.validate_optim_config(OptimConfig(beta1=1.5))
    with pytest.raises(ConfigError, match="'adamw'"):
        po.validate_optim_config(OptimConfig(name="nope"))
    po.validate_optim_config(OptimConfig(name="lars", extra={"trust_coefficient": 1e-2}))


@pytest.mark.parametrize("kw,needle", [({"lr": -1.0}, "lr"), ({"betas": (1.0, 0.9)}, "beta1"),
                                       ({"betas": (0.9, -0.5)}, "beta2"),
                                       ({"wd_mode": "fixed"}, "wd_mode"),
                                       ({"weight_decay": -1.0}, "weight_decay")])
def test_constructor_rejects_bad_hyperparameters(kw, needle):
    with pytest.raises(ConfigError, match=needle):
        po.AdamW([torch.zeros(2, requires_grad=True)], **kw)


# ---- instrumentation ------------------------------------------------------------------------


@pytest.mark.parametrize("name", MINE)
@pytest.mark.parametrize("wd_mode", ["decoupled", "l2"])
def test_grad_is_never_mutated_and_probe_keys(name, wd_mode):
    torch.manual_seed(0)
    model = Tiny()
    cfg = OptimConfig(name=name, lr=po.default_lr(name), weight_decay=0.1, wd_mode=wd_mode)
    opt = po.build_optimizer(model, cfg)
    for step in range(3):
        opt.zero_grad()
        loss_of(model).backward()
        grads = [p.grad.clone() for p in model.parameters()]
        if step == 2:
            opt.probe_next_step()
        opt.step()
        for p, g in zip(model.parameters(), grads):
            assert torch.equal(p.grad, g)
        if step < 2:
            assert opt.last_stats == {}
    for key in ("update_rms", "applied_rms", "decay_rms", "rel_change", "cos_update_grad"):
        assert math.isfinite(opt.last_stats[f"opt/{key}"]), key
    assert set(opt.last_tensor_stats) == {n for n, _ in model.named_parameters()}
    assert not opt.probing


def test_probe_values_for_sgd_and_decay():
    p = torch.tensor([3.0, -4.0], requires_grad=True)
    opt = po.SGD([p], lr=0.1, weight_decay=0.5)
    p.grad = torch.tensor([1.0, 1.0])
    opt.probe_next_step()
    opt.step()
    s = opt.last_stats
    assert s["opt/update_rms"] == pytest.approx(1.0)
    assert s["opt/applied_rms"] == pytest.approx(0.1)
    assert s["opt/decay_rms"] == pytest.approx(0.1 * 0.5 * math.sqrt(12.5))
    assert s["opt/cos_update_grad"] == pytest.approx(1.0)
    delta = torch.tensor([3.0, -4.0]) * 0.05 + 0.1
    assert s["opt/rel_change"] == pytest.approx(float(delta.norm() / 5.0))
    assert p.detach().tolist() == pytest.approx([3 * 0.95 - 0.1, -4 * 0.95 - 0.1])


def test_adam_eps_fraction_and_lion_bound_stats():
    p = torch.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
    opt = po.AdamW([p], lr=0.1, eps=1.0, weight_decay=0.0)
    p.grad = torch.tensor([1e-3, 1e-3, 10.0, 10.0])
    opt.probe_next_step()
    opt.step()
    assert opt.last_stats["opt/frac_v_below_eps"] == pytest.approx(0.5)
    # Lion radius 1/λ = 2: two of four coordinates sit at |θ| = 2
    q = torch.tensor([2.0, -2.0, 0.5, 1.0], requires_grad=True)
    lion = po.Lion([q], lr=1e-9, weight_decay=0.5)
    q.grad = torch.ones(4)
    lion.probe_next_step()
    lion.step()
    assert lion.last_stats["opt/frac_at_linf_bound"] == pytest.approx(0.5)
    assert lion.last_stats["opt/max_abs_over_radius"] == pytest.approx(1.0)
    assert lion.last_stats["opt/update_rms"] == pytest.approx(1.0)
    # independent decay: radius peak_lr/λ
    lion2 = po.Lion([q], lr=1e-9, weight_decay=0.5e-9, wd_mode="independent")
    lion2.probe_next_step()
    lion2.step()
    assert lion2.last_stats["opt/max_abs_over_radius"] == pytest.approx(1.0, rel=1e-6)


def test_stat_values_of_every_kind_aggregate_by_hand():
    """stat() takes python numbers, 0-d tensors, integer counts and per-member [M, 1]
    tensors; a key given twice adds up, agg="max" takes the max and a NaN wins it (so a
    diverged member shows), and the subclass's keys come before the shell's."""
    from proxylab.optim.base import ProxyOptimizer, tensor_numel, tensor_sum

    class Probe(ProxyOptimizer):  # u = g, plus three probes of its own
        def __init__(self, params):
            super().__init__(params, dict(lr=0.1))

        def direction(self, p, g, state, hp):
            st = hp["stacked"]
            if self.probing:
                self.stat("frac_pos", tensor_sum(g > 0, st), tensor_numel(g, st))  # int64 count
                self.stat("twice", 1.0, 2)
                self.stat("twice", torch.tensor(float(tensor_numel(g, st))), 6.0)
                dims = tuple(range(1, g.ndim)) if st else tuple(range(g.ndim))
                self.stat("peak", g.abs().amax(dim=dims, keepdim=st), 2.0, agg="max")
            return g

    a, b = torch.zeros(3, requires_grad=True), torch.zeros(1, 2, requires_grad=True)
    opt = Probe([dict(params=[a, b], names=["a", "b"])])
    a.grad, b.grad = torch.tensor([1.0, -2.0, 3.0]), torch.tensor([[-1.0, 4.0]])
    opt.probe_next_step()
    opt.step()
    per, s = opt.last_tensor_stats, opt.last_stats
    assert list(per["a"])[:4] == ["frac_pos", "twice", "peak", "update_rms"]
    assert per["a"]["frac_pos"] == pytest.approx(2 / 3)
    assert per["b"]["frac_pos"] == pytest.approx(1 / 2)
    assert per["a"]["twice"] == pytest.approx(4 / 8) and per["b"]["twice"] == pytest.approx(3 / 8)
    assert per["a"]["peak"] == pytest.approx(1.5) and per["b"]["peak"] == pytest.approx(2.0)
    assert s["opt/frac_pos"] == pytest.approx(3 / 5)
    assert s["opt/twice"] == pytest.approx(7 / 16)
    assert s["opt/peak"] == pytest.approx(2.0)
    assert s["opt/update_rms"] == pytest.approx(math.sqrt((14 + 17) / 5))
    assert opt.last_member_stats == {}

    c, d = torch.zeros(2, 2, requires_grad=True), torch.zeros(2, 3, requires_grad=True)
    opt = Probe([dict(params=[c, d], stacked=True)])
    c.grad = torch.tensor([[1.0, 1.0], [-1.0, 5.0]])
    d.grad = torch.tensor([[-1.0, -1.0, -1.0], [2.0, 2.0, float("nan")]])
    opt.probe_next_step()
    opt.step()
    m = opt.last_member_stats
    assert m["opt/frac_pos"] == pytest.approx([2 / 5, 3 / 5])
    assert m["opt/update_rms"][0] == pytest.approx(1.0)        # sqrt((2 + 3) / (2 + 3))
    assert m["opt/cos_update_grad"][0] == pytest.approx(1.0)
    assert m["opt/peak"][0] == pytest.approx(0.5) and math.isnan(m["opt/peak"][1])
    assert math.isnan(opt.last_stats["opt/peak"])


@pytest.mark.parametrize("cls", [po.Lion, po.AdamW])
def test_usable_as_plain_torch_optimizer_with_scheduler_and_state_dict(cls):
    model = Tiny()
    opt = cls(model.parameters(), lr=1e-3, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=5)
    for _ in range(3):
        opt.zero_grad()
        loss_of(model).backward()
        opt.step()
        sched.step()
    buf = io.BytesIO()  # through bytes, as a checkpoint would (state_dict() holds references)
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf)
    model2 = Tiny()
    model2.load_state_dict(model.state_dict())
    opt2 = cls(model2.parameters(), lr=1e-3)
    opt2.load_state_dict(sd)
    assert opt2.param_groups[0]["peak_lr"] == 1e-3
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"] < 1e-3
    assert opt2.param_groups[0]["weight_decay"] == 0.1  # from the state dict, not the call
    # the moment buffers came along: same tensors, nonzero after three steps
    for p, p2 in zip(model.parameters(), model2.parameters()):
        st, st2 = opt.state[p], opt2.state[p2]
        bufs = [k for k, v in st.items() if isinstance(v, torch.Tensor) and v.numel() > 1]
        assert bufs and set(st2) == set(st)
        for k in bufs:
            assert st[k].abs().sum() > 0 and torch.equal(st2[k], st[k]), k
    # and the next step from the restored optimizer is the same step
    for m, o in ((model, opt), (model2, opt2)):
        o.zero_grad()
        loss_of(m).backward()
        o.step()
    for p, p2 in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, p2)


def test_shell_checks_and_texts_found_by_mutants():
    """Edges of optim/base.py reached by no other test (surviving mutants, docs/testing.md)."""
    from proxylab.optim.base import check_hparam

    check_hparam("beta1", 1.0, 0.0, 1.0)                       # closed at hi by default
    with pytest.raises(ConfigError, match=re.escape("optim.beta1: 1.0 is out of range; "
                                                    "allowed [0.0, 1.0)")):
        check_hparam("beta1", 1.0, 0.0, 1.0, hi_open=True)
    with pytest.raises(ConfigError, match=re.escape("optim.eps: nan is out of range; "
                                                    "allowed [0.0, inf]")):
        check_hparam("eps", float("nan"))
    with pytest.raises(ConfigError, match=re.escape(
            "param group role: 'rows' is not a role; use one of embedding, hidden, head, norm, "
            "bias (proxylab.optim.param_groups(model) tags them for you)")):
        po.AdamW([{"params": [nn.Parameter(torch.zeros(2))], "role": "rows"}])
    for key, match in (("lr", "optim.lr: -1.0"), ("weight_decay", "optim.weight_decay: -1.0"),
                       ("eps", "optim.eps: -1.0")):
        with pytest.raises(ConfigError, match=re.escape(match)):
            po.AdamW([{"params": [nn.Parameter(torch.zeros(2))], key: -1.0}])
    # a group that brings its own peak_lr keeps it (a schedule already applied to lr)
    opt = po.AdamW([{"params": [nn.Parameter(torch.zeros(2))], "lr": 1e-3, "peak_lr": 1e-2}])
    assert opt.param_groups[0]["peak_lr"] == 1e-2
    fresh = po.AdamW([nn.Parameter(torch.zeros(2))])
    assert (fresh.last_stats, fresh.last_tensor_stats, fresh.last_member_stats) == ({}, {}, {})
    # from_model: the lr given reaches every role-tagged group
    opt = po.AdamW.from_model(Tiny(), lr=0.25)
    assert max(g["lr"] for g in opt.param_groups) == 0.25  # (Tiny scales fc.weight by 0.5)
