"""A stacked step (leading member dim M = 4, per-member hyperparameter tensors) equals four
separate steps, for every in-house optimizer and weight-decay mode. No exceptions: every
direction reduces only within a member (base.tensor_sum / tensor_norm / tensor_rms)."""

import pytest
import torch

import proxylab.optim as po

M, STEPS = 4, 6
F64 = torch.float64
SHAPES = {"w": ((5, 3), "hidden"), "cube": ((2, 3, 4), "hidden"), "gain": ((5,), "norm"),
          "head": ((6, 3), "head")}
LR = [1e-2, 2e-2, 5e-3, 1e-2]
WD = [0.0, 0.1, 0.2, 0.05]
B1 = [0.9, 0.8, 0.95, 0.5]
B2 = [0.99, 0.95, 0.999, 0.9]

# name -> (class, constructor kwargs, per-member group hyperparameters)
CASES = {
    "adamw": (po.AdamW, {}, {"beta1": B1, "beta2": B2, "eps": [1e-8, 1e-3, 1e-6, 1e-8]}),
    "adam_atan2": (po.AdamAtan2, {}, {"beta1": B1, "beta2": B2}),
    "adalayer": (po.Adalayer, {}, {"beta1": B1, "beta2": B2}),
    "adalayer_sum": (po.Adalayer, {"block_reduce": "sum"}, {"beta1": B1}),
    "adalayer_sgd": (po.AdalayerSGD, {"nesterov": True}, {"beta1": B1, "beta2": B2,
                                                         "sgd_lr_mult": [1.0, 5.0, 10.0, 2.0]}),
    "sgd": (po.SGD, {"momentum": 0.9, "nesterov": True}, {"momentum": B1}),
    "sgd_damp": (po.SGD, {"momentum": 0.9}, {"momentum": B1, "dampening": [0.0, 0.1, 0.5, 0.2]}),
    "lars": (po.LARS, {"lr": 1.0}, {"momentum": B1, "trust_coefficient": [1e-3, 1e-2, 1e-3, 0.1]}),
    "lion": (po.Lion, {}, {"beta1": B1, "beta2": B2}),
    "signum": (po.Signum, {}, {"beta1": B1, "beta2": B1}),
    "novograd": (po.NovoGrad, {"grad_averaging": True}, {"beta1": B1, "beta2": B2}),
    "lamb": (po.LAMB, {}, {"beta1": B1, "beta2": B2}),
    "factored_adam": (po.FactoredAdam, {}, {"beta1": B1, "beta2": B2}),
    "adafactor": (po.Adafactor, {}, {}),
    "adafactor_momentum": (po.Adafactor, {"beta1": 0.9, "relative_step": False}, {"beta1": B1}),
}


def make_groups(tensors, hps, member=None):
    """One group per role; ``member=None`` -> stacked with [M] hyperparameter tensors."""
    groups = []
    for role in ("hidden", "norm", "head"):
        ps = [tensors[n] for n, (_, r) in SHAPES.items() if r == role]
        g = {"params": ps, "role": role}
        for k, vals in hps.items():
            g[k] = torch.tensor(vals, dtype=F64) if member is None else vals[member]
        g["stacked"] = member is None
        groups.append(g)
    return groups


def run(name, wd_mode, probe=False):
    cls, kw, member_hps = CASES[name]
    hps = {"lr": LR, "weight_decay": WD, **member_hps}
    gen = torch.Generator().manual_seed(0)
    init = {n: torch.randn(M, *s, generator=gen, dtype=F64) for n, (s, _) in SHAPES.items()}
    stacked = {n: t.clone().requires_grad_() for n, t in init.items()}
    members = [{n: t[i].clone().requires_grad_() for n, t in init.items()} for i in range(M)]
    opt_s = cls(make_groups(stacked, hps), wd_mode=wd_mode, **kw)
    opts = [cls(make_groups(members[i], hps, i), wd_mode=wd_mode, **kw) for i in range(M)]
    for t in range(STEPS):
        s_t = min(1.0, (t + 1) / 3) * (1 - 0.1 * t)  # schedule: lr = peak_lr * s_t
        for o in [opt_s, *opts]:
            for g in o.param_groups:
                g["lr"] = g["peak_lr"] * s_t
        grads = {n: torch.randn(M, *s, generator=gen, dtype=F64) for n, (s, _) in SHAPES.items()}
        for n, p in stacked.items():
            p.grad = grads[n].clone()
        for i in range(M):
            for n, p in members[i].items():
                p.grad = grads[n][i].clone()
        if probe and t == STEPS - 1:
            for o in [opt_s, *opts]:
                o.probe_next_step()
        opt_s.step()
        for o in opts:
            o.step()
    return stacked, members, opt_s, opts, init


def close(a, b, tol=1e-9):
    return float((a - b).norm()) <= tol * max(1.0, float(b.norm()))


@pytest.mark.parametrize("wd_mode", ["decoupled", "independent", "l2"])
@pytest.mark.parametrize("name", list(CASES))
def test_stacked_step_equals_separate_steps(name, wd_mode):
    stacked, members, opt_s, opts, init = run(name, wd_mode)
    for n, p in stacked.items():
        ref = torch.stack([members[i][n] for i in range(M)])
        assert close(p.detach(), ref.detach()), n
        # every member moved: an optimizer that skips a member (or every step) fails here
        moved = (p.detach() - init[n]).flatten(1).norm(dim=1)
        assert (moved > 1e-6 * init[n].flatten(1).norm(dim=1)).all(), (n, moved)
        st = opt_s.state[p]
        tensors = {k: v for k, v in st.items() if isinstance(v, torch.Tensor)}
        assert tensors, (n, list(st))  # every case keeps per-member state: compare it
        for key, val in tensors.items():
            ref_state = torch.stack([torch.as_tensor(opts[i].state[members[i][n]][key],
                                                     dtype=F64).reshape(-1) for i in range(M)])
            assert close(val.reshape(M, -1), ref_state), (n, key)


@pytest.mark.parametrize("name", ["adamw", "lion", "lamb"])
def test_member_stats_equal_separate_stats(name):
    _, _, opt_s, opts, _ = run(name, "decoupled", probe=True)
    for key in ("opt/update_rms", "opt/applied_rms", "opt/decay_rms", "opt/rel_change",
                "opt/cos_update_grad"):
        per_member = opt_s.last_member_stats[key]
        assert len(per_member) == M
        for i in range(M):
            assert per_member[i] == pytest.approx(opts[i].last_stats[key], rel=1e-9), key


def test_aggregated_stats_pool_members_like_one_big_tensor():
    """Aggregates over a stacked group divide by M per-member counts: with every member's
    Lion update at exactly |u| = 1, update_rms is 1 (not sqrt(M))."""
    p = torch.nn.Parameter(torch.randn(M, 5, 3, dtype=F64))
    p.grad = torch.randn_like(p)
    opt = po.Lion([{"params": [p], "stacked": True, "role": "hidden"}], lr=1e-3)
    opt.probe_next_step()
    opt.step()
    assert opt.last_stats["opt/update_rms"] == pytest.approx(1.0)
    assert opt.last_member_stats["opt/update_rms"] == pytest.approx([1.0] * M)
