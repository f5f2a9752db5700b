"""In-house optimizers vs reference implementations (float64, 20 steps on a small MLP).

Parameters and optimizer state must match to 1e-6 relative. Where a reference's convention
differs (research/optimizers.md §1-2) the mapping is stated next to the test.
"""

import copy
import math

import pytest
import torch
from torch import nn

import proxylab.optim as po

STEPS = 20
F64 = torch.float64


class Net(nn.Module):
    """MLP plus a 3-D tensor (exercises factoring of the last two dims)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(6, 8, dtype=F64), nn.Linear(8, 5, dtype=F64)
        self.cube = nn.Parameter(torch.randn(2, 3, 4, dtype=F64) * 0.5)

    def forward(self, x):
        h = torch.tanh(self.fc1(x))
        z = torch.einsum("bi,kij->bkj", x[:, :3], self.cube).flatten(1)
        z = z[:, :5] + z[:, 3:]
        return self.fc2(h) + 0.1 * torch.tanh(z)


def make_net(seed=0):
    torch.manual_seed(seed)
    return Net()


def groups(net, lr, wd, split=True, **kw):
    """2-D weights decayed, 1-D and the cube's group separately (different lr)."""
    mats = [net.fc1.weight, net.fc2.weight]
    vecs = [net.fc1.bias, net.fc2.bias]
    if not split:
        return [{"params": mats + vecs + [net.cube], "lr": lr, "weight_decay": wd, **kw}]
    return [{"params": mats, "lr": lr, "weight_decay": wd, **kw},
            {"params": vecs, "lr": lr, "weight_decay": 0.0, **kw},
            {"params": [net.cube], "lr": lr * 0.5, "weight_decay": wd, **kw}]


def schedule(t):  # warmup then decay, so decay-vs-lr coupling matters
    return min(1.0, (t + 1) / 5) * (1 - 0.5 * t / STEPS)


def train(net, opt, steps=STEPS, sched=None, grad_hook=None):
    gen = torch.Generator().manual_seed(123)
    peaks = [g["lr"] for g in opt.param_groups]
    for t in range(steps):
        x = torch.randn(16, 6, generator=gen, dtype=F64)
        y = torch.randn(16, 5, generator=gen, dtype=F64)
        if sched is not None:
            for g, pk in zip(opt.param_groups, peaks):
                g["lr"] = pk * sched(t)
        opt.zero_grad()
        ((net(x) - y) ** 2).mean().backward()
        if grad_hook:
            grad_hook(net)
        opt.step()


def rel(a, b):
    a, b = torch.as_tensor(a).detach(), torch.as_tensor(b).detach()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def assert_params_close(a, b, tol=1e-6):
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert rel(p.detach(), q.detach()) < tol, n


def assert_state_close(opt_a, net_a, opt_b, net_b, keys, tol=1e-6):
    n = 0
    for p, q in zip(net_a.parameters(), net_b.parameters()):
        for ka, kb in keys.items():
            if opt_b.state[q].get(kb) is not None:
                a, b = opt_a.state[p][ka], opt_b.state[q][kb]
                assert rel(torch.as_tensor(a).reshape(-1), torch.as_tensor(b).reshape(-1)) < tol, (ka, kb)
                n += 1
    assert n > 0, "state was not compared"


def compare(ours, ref, keys=None, sched=schedule, tol=1e-6):
    net_a, net_b = make_net(), make_net()
    opt_a, opt_b = ours(net_a), ref(net_b)
    train(net_a, opt_a, sched=sched)
    train(net_b, opt_b, sched=sched)
    assert_params_close(net_a, net_b, tol)
    assert rel(torch.cat([p.flatten() for p in net_a.parameters()]),
               torch.cat([p.flatten() for p in make_net().parameters()])) > 1e-3  # it moved
    if keys:
        assert_state_close(opt_a, net_a, opt_b, net_b, keys, tol)


ADAM_KEYS = {"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq"}


# ---- Adam family ----------------------------------------------------------------------


def test_adamw_matches_torch_adamw():
    compare(lambda n: po.AdamW(groups(n, 1e-2, 0.1), betas=(0.9, 0.95)),
            lambda n: torch.optim.AdamW(groups(n, 1e-2, 0.1), betas=(0.9, 0.95)), ADAM_KEYS)


def test_adam_l2_matches_torch_adam():
    compare(lambda n: po.Adam(groups(n, 1e-2, 0.1)),
            lambda n: torch.optim.Adam(groups(n, 1e-2, 0.1)), ADAM_KEYS)
    compare(lambda n: po.AdamW(groups(n, 1e-2, 0.1), wd_mode="l2"),
            lambda n: torch.optim.Adam(groups(n, 1e-2, 0.1)), ADAM_KEYS)


def test_independent_decay_is_torch_adamw_with_wd_over_peak_lr():
    lam = 1e-3  # Wortsman λ_ind; torch needs λ_ind / γ_peak per group (peaks differ)

    def ref(n):
        gs = groups(n, 1e-2, lam)
        for g in gs:
            g["weight_decay"] = g["weight_decay"] / g["lr"]
        return torch.optim.AdamW(gs)

    compare(lambda n: po.AdamW(groups(n, 1e-2, lam), wd_mode="independent"), ref, ADAM_KEYS)


def test_wd_mode_none_ignores_weight_decay():
    compare(lambda n: po.AdamW(groups(n, 1e-2, 0.5), wd_mode="none"),
            lambda n: torch.optim.AdamW(groups(n, 1e-2, 0.0)), ADAM_KEYS)


def test_adalayer_with_element_blocks_is_adam():
    compare(lambda n: po.Adalayer(groups(n, 1e-2, 0.1), blocks="element"),
            lambda n: torch.optim.AdamW(groups(n, 1e-2, 0.1)), ADAM_KEYS)


def test_adalayer_blocks_match_oracle():
    """One v per tensor; the head (role 'head') one v per output row."""
    net_a, net_b = make_net(), make_net()
    head = [net_a.fc2.weight]
    rest = [p for p in net_a.parameters() if p is not net_a.fc2.weight]
    opt = po.Adalayer([{"params": rest, "role": "hidden"}, {"params": head, "role": "head"}],
                      lr=1e-2, betas=(0.9, 0.95), weight_decay=0.0)
    train(net_a, opt)
    state = {}

    def oracle_step(net):
        for p in net.parameters():
            g = p.grad
            is_head = p is net.fc2.weight
            sq = (g * g).mean(dim=1, keepdim=True) if is_head else (g * g).mean()
            s = state.setdefault(p, {"m": torch.zeros_like(g), "v": torch.zeros_like(sq), "t": 0})
            s["t"] += 1
            s["m"] = 0.9 * s["m"] + 0.1 * g
            s["v"] = 0.95 * s["v"] + 0.05 * sq
            m_hat, v_hat = s["m"] / (1 - 0.9 ** s["t"]), s["v"] / (1 - 0.95 ** s["t"])
            with torch.no_grad():
                p -= 1e-2 * m_hat / (v_hat.sqrt() + 1e-8)
            p.grad = None

    train(net_b, torch.optim.SGD(net_b.parameters(), lr=0.0), grad_hook=oracle_step)
    assert_params_close(net_a, net_b)
    assert opt.state[net_a.fc2.weight]["exp_avg_sq"].shape == (5, 1)


@pytest.mark.parametrize("nesterov", [False, True])
def test_adalayer_sgd_matches_float64_oracle(nesterov):
    """Adaptive head + norms, SGD elsewhere (Zhao et al. 2024, arXiv 2407.07972, §2.3 of
    research/optimizers.md), written here from the formulas in float64:
      head (role "head"): Adalayer with one v per output row; norm (role "norm"): one v per
        tensor; m̂ / (sqrt(v̂_b) + ε) at step lr;
      hidden / bias: heavy-ball momentum, torch convention (buf₁ = g, buf ← μ·buf + g,
        Nesterov g + μ·buf, μ = β₁) at step lr·sgd_lr_mult;
      decoupled decay θ ← θ − lr·λ·θ on θ_{t−1}, with the group's plain lr (not × mult).
    A schedule moves lr, so a mult applied to the decay, or a missed one, shows."""
    b1, b2, eps, lr, lam, mult = 0.9, 0.95, 1e-8, 1e-2, 0.1, 7.0
    net_a, net_b = make_net(), make_net()

    def role_groups(net):
        return [{"params": [net.fc2.weight], "role": "head"},
                {"params": [net.fc1.bias], "role": "norm"},
                {"params": [net.fc1.weight, net.cube], "role": "hidden"},
                {"params": [net.fc2.bias], "role": "bias", "weight_decay": 0.0}]

    opt = po.AdalayerSGD(role_groups(net_a), lr=lr, betas=(b1, b2), eps=eps,
                         weight_decay=lam, sgd_lr_mult=mult, nesterov=nesterov)
    train(net_a, opt, sched=schedule)

    roles = {id(p): g["role"] for g in role_groups(net_b) for p in g["params"]}
    state, clock = {}, {"t": 0}

    def oracle_step(net):
        lr_t = lr * schedule(clock["t"])
        clock["t"] += 1
        for p in net.parameters():
            g, role, s = p.grad, roles[id(p)], state.setdefault(p, {"k": 0})
            s["k"] += 1
            if role in ("head", "norm"):
                sq = (g * g).mean(dim=1, keepdim=True) if role == "head" else (g * g).mean()
                s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
                s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * sq
                u = (s["m"] / (1 - b1 ** s["k"])) / ((s["v"] / (1 - b2 ** s["k"])).sqrt() + eps)
                step = lr_t
            else:
                s["buf"] = g.clone() if s["k"] == 1 else b1 * s["buf"] + g
                u = g + b1 * s["buf"] if nesterov else s["buf"]
                step = lr_t * mult
            decay = 0.0 if role == "bias" else lr_t * lam
            with torch.no_grad():
                p.copy_(p - decay * p - step * u)
            p.grad = None

    train(net_b, torch.optim.SGD(net_b.parameters(), lr=0.0), grad_hook=oracle_step)
    assert clock["t"] == STEPS
    assert_params_close(net_a, net_b, tol=1e-10)
    assert opt.state[net_a.fc2.weight]["exp_avg_sq"].shape == (5, 1)
    assert opt.state[net_a.fc1.bias]["exp_avg_sq"].numel() == 1
    assert "momentum_buffer" in opt.state[net_a.fc1.weight]
    assert rel(opt.state[net_a.fc1.weight]["momentum_buffer"], state[net_b.fc1.weight]["buf"]) < 1e-10


def test_adam_atan2_matches_oracle():
    def hook(net, state={}):  # noqa: B006 (per-test oracle state)
        for p in net.parameters():
            s = state.setdefault(p, {"m": torch.zeros_like(p), "v": torch.zeros_like(p), "t": 0})
            s["t"] += 1
            s["m"] = 0.9 * s["m"] + 0.1 * p.grad
            s["v"] = 0.99 * s["v"] + 0.01 * p.grad ** 2
            mh, vh = s["m"] / (1 - 0.9 ** s["t"]), s["v"] / (1 - 0.99 ** s["t"])
            with torch.no_grad():
                p.mul_(1 - 1e-2 * 0.1)
                p -= 1e-2 * 1.27 * torch.atan2(mh, vh.sqrt())
            p.grad = None

    net_a, net_b = make_net(), make_net()
    train(net_a, po.AdamAtan2(groups(net_a, 1e-2, 0.1, split=False), betas=(0.9, 0.99)))
    train(net_b, torch.optim.SGD(net_b.parameters(), lr=0.0), grad_hook=hook)
    assert_params_close(net_a, net_b)


# ---- SGD / LARS ---------------------------------------------------------------------------


@pytest.mark.parametrize("nesterov,dampening", [(False, 0.0), (True, 0.0), (False, 0.3)])
def test_sgd_matches_torch_sgd(nesterov, dampening):
    # torch SGD's weight_decay is L2: wd_mode="l2"
    compare(lambda n: po.SGD(groups(n, 0.1, 0.01), momentum=0.9, wd_mode="l2",
                             nesterov=nesterov, dampening=dampening),
            lambda n: torch.optim.SGD(groups(n, 0.1, 0.01), momentum=0.9, nesterov=nesterov,
                                      dampening=dampening),
            {"momentum_buffer": "momentum_buffer"})


@pytest.mark.parametrize("wd,nesterov", [(0.0, False), (0.01, False), (0.01, True)])
def test_lars_matches_pytorch_optimizer(wd, nesterov):
    from pytorch_optimizer import LARS

    # pytorch_optimizer: trust ratio + L2 only on ≥2-D tensors; ours: wd_mode="l2",
    # 1-D tensors in a no-decay group (as build_optimizer masks them)
    compare(lambda n: po.LARS(groups(n, 0.5, wd), momentum=0.9, wd_mode="l2", nesterov=nesterov,
                              skip_1d=True),
            lambda n: LARS(groups(n, 0.5, wd), momentum=0.9, nesterov=nesterov, foreach=False),
            {"momentum_buffer": "momentum_buffer"})


# ---- sign methods ----------------------------------------------------------------------


def test_lion_matches_lion_pytorch_decoupled():
    from lion_pytorch import Lion

    compare(lambda n: po.Lion(groups(n, 1e-3, 0.5), betas=(0.9, 0.99)),
            lambda n: Lion(groups(n, 1e-3, 0.5), betas=(0.9, 0.99)), {"exp_avg": "exp_avg"})


def test_lion_independent_matches_lion_pytorch_wd_over_init_lr():
    """lion-pytorch decoupled_weight_decay=True divides wd by the *constructor* lr: with one
    group that is exactly independent decay (s_t·λ). With several groups it is not."""
    from lion_pytorch import Lion

    compare(lambda n: po.Lion(n.parameters(), lr=1e-3, weight_decay=1e-3, wd_mode="independent"),
            lambda n: Lion(n.parameters(), lr=1e-3, weight_decay=1e-3, decoupled_weight_decay=True),
            {"exp_avg": "exp_avg"})


def test_lion_with_equal_betas_is_signum():
    """Oracle: Lion(β, β) = Signum, both against pytorch_optimizer.SignSGD (lerp momentum,
    sign, weight_decouple=True = our decoupled decay)."""
    from pytorch_optimizer import SignSGD

    def ref(n):
        return SignSGD(groups(n, 1e-3, 0.1), momentum=0.8, weight_decouple=True, foreach=False)

    compare(lambda n: po.Lion(groups(n, 1e-3, 0.1), betas=(0.8, 0.8)), ref,
            {"exp_avg": "momentum_buffer"})
    compare(lambda n: po.Signum(groups(n, 1e-3, 0.1), momentum=0.8), ref,
            {"exp_avg": "momentum_buffer"})


# ---- layer-wise ----------------------------------------------------------------------------


@pytest.mark.parametrize("grad_averaging", [False, True])
def test_novograd_matches_pytorch_optimizer(grad_averaging):
    from pytorch_optimizer import NovoGrad

    # pytorch_optimizer divides p.grad in place: it trains its own copy of the net, and its
    # weight_decouple=True is our decoupled decay (its default, λ inside m, is not offered)
    compare(lambda n: po.NovoGrad(groups(n, 1e-2, 0.1), betas=(0.95, 0.98),
                                  grad_averaging=grad_averaging),
            lambda n: NovoGrad(groups(n, 1e-2, 0.1), betas=(0.95, 0.98), weight_decouple=True,
                               grad_averaging=grad_averaging, foreach=False),
            {"grads_ema": "grads_ema", "moments": "moments"})


def test_lamb_matches_paper_oracle():
    """pytorch_optimizer.Lamb does not bias-correct v and scales by 1/(1-β₁ᵗ) outside the
    trust ratio, so the reference is Algorithm 2 of the paper written out here, with our
    decoupled decay outside the trust ratio."""
    lr, wd, b1, b2, eps = 1e-2, 0.1, 0.9, 0.99, 1e-6

    def hook(net, state={}):  # noqa: B006
        for p in net.parameters():
            s = state.setdefault(p, {"m": torch.zeros_like(p), "v": torch.zeros_like(p), "t": 0})
            s["t"] += 1
            s["m"] = b1 * s["m"] + (1 - b1) * p.grad
            s["v"] = b2 * s["v"] + (1 - b2) * p.grad ** 2
            r = (s["m"] / (1 - b1 ** s["t"])) / ((s["v"] / (1 - b2 ** s["t"])).sqrt() + eps)
            trust = min(float(p.detach().norm()), 10.0) / float(r.norm())
            with torch.no_grad():
                p.mul_(1 - lr * wd)
                p -= lr * trust * r
            p.grad = None

    net_a, net_b = make_net(), make_net()
    train(net_a, po.LAMB(net_a.parameters(), lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd))
    train(net_b, torch.optim.SGD(net_b.parameters(), lr=0.0), grad_hook=hook)
    assert_params_close(net_a, net_b)


# ---- Adafactor ------------------------------------------------------------------------------


def test_adafactor_matches_torch_adafactor():
    """Paper Adafactor with β₁ off, relative step and parameter scale = torch's (ε₁ differs
    only in placement: added to g² here, a clamp there)."""
    compare(lambda n: po.Adafactor(groups(n, 1e-2, 0.1)),
            lambda n: torch.optim.Adafactor(groups(n, 1e-2, 0.1)),
            {"exp_avg_sq_row": "row_var", "exp_avg_sq_col": "col_var", "exp_avg_sq": "variance"})


def test_adafactor_momentum_and_absolute_step_match_oracle():
    lr, b1, d = 1e-2, 0.9, 1.0

    def hook(net, state={}):  # noqa: B006
        for p in net.parameters():
            g = p.grad
            g2 = g * g + 1e-30  # the paper's ε₁
            s = state.setdefault(p, {"t": 0, "m": 0 * g})
            s["t"] += 1
            w = s["t"] ** -0.8
            if g.ndim >= 2:
                r = g2.mean(-1, keepdim=True)
                c = g2.mean(-2, keepdim=True)
                s["r"] = (1 - w) * s.get("r", 0 * r) + w * r
                s["c"] = (1 - w) * s.get("c", 0 * c) + w * c
                v = s["r"] * s["c"] / s["r"].mean(-2, keepdim=True)
            else:
                s["v"] = (1 - w) * s.get("v", 0 * g) + w * g2
                v = s["v"]
            u = g / v.sqrt()
            u = u / max(1.0, float(u.pow(2).mean().sqrt()) / d)
            s["m"] = b1 * s["m"] + (1 - b1) * u
            with torch.no_grad():
                p -= lr * s["m"]
            p.grad = None

    net_a, net_b = make_net(), make_net()
    train(net_a, po.Adafactor(net_a.parameters(), lr=lr, beta1=b1, relative_step=False,
                              scale_parameter=False))
    train(net_b, torch.optim.SGD(net_b.parameters(), lr=0.0), grad_hook=hook)
    assert_params_close(net_a, net_b)


def test_factored_adam_matches_oracle_and_is_adam_on_rank_one_squares():
    # gradients g_t = c_t·a bᵀ make g² rank one, where the factored estimate is exact
    a, b = torch.randn(5, 1, dtype=F64), torch.randn(1, 4, dtype=F64)
    p1, p2 = (torch.ones(5, 4, dtype=F64, requires_grad=True) for _ in range(2))
    o1 = po.FactoredAdam([p1], lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    o2 = torch.optim.AdamW([p2], lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    for t in range(STEPS):
        c = math.sin(t + 1.0) + 1.5
        p1.grad, p2.grad = c * a * b, c * a * b
        o1.step()
        o2.step()
    assert rel(p1.detach(), p2.detach()) < 1e-6
    # 1-D tensors are plain Adam
    compare(lambda n: po.FactoredAdam([n.fc1.bias, n.fc2.bias], lr=1e-2),
            lambda n: torch.optim.AdamW([n.fc1.bias, n.fc2.bias], lr=1e-2), ADAM_KEYS)
