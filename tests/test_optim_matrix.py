"""Matrix kernels, Muon and LAWN against oracles and the installed references.

Reference Newton–Schulz runs in bf16 (Keller's muon.py and torch.optim.Muon hard-code
``.bfloat16()``). bf16 rounding moves the NS output by ~2-4% (Frobenius, measured), so an
fp32 implementation can only match it loosely. The optimizer-level comparisons therefore
run the references' own code with ``Tensor.bfloat16`` patched to an fp32 copy: everything
(momentum, Nesterov, NS, scales, decay, aux AdamW) is then compared at fp32 precision; the
bf16 path itself is checked separately at the tolerance it allows.
"""

import copy

import muon as keller
import pytest
import torch
import torch.nn.functional as F

from proxylab.config import ConfigError
from proxylab.optim import linalg
from proxylab.optim.lawn import LAWN
from proxylab.optim.muon import Muon

D64 = torch.float64


@pytest.fixture
def fp32_reference_ns(monkeypatch):
    monkeypatch.setattr(torch.Tensor, "bfloat16",
                        lambda self, *a, **k: self.to(torch.float32, copy=True))


# ---- kernels ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(24, 40), (40, 24), (3, 16, 16)])
def test_newton_schulz_vs_svd_polar_factor(shape):
    torch.manual_seed(0)
    G = torch.randn(shape)
    X = linalg.newton_schulz(G)
    s = torch.linalg.svdvals(X)
    assert s.min() > 0.6 and s.max() < 1.4
    # same singular vectors as G: U^T X V is diagonal
    U, _, Vh = torch.linalg.svd(G, full_matrices=False)
    core = U.mT @ X @ Vh.mT
    off = core - torch.diag_embed(torch.diagonal(core, dim1=-2, dim2=-1))
    assert off.norm() / core.norm() < 1e-4
    polar = U @ Vh
    assert (X - polar).norm() / polar.norm() < 0.3


def test_newton_schulz_bf16_vs_references():
    from torch.optim._muon import _zeropower_via_newtonschulz as torch_ns

    torch.manual_seed(1)
    G = torch.randn(16, 32)
    ours32 = linalg.newton_schulz(G)
    ours16 = linalg.newton_schulz(G, dtype=torch.bfloat16)
    kj = keller.zeropower_via_newtonschulz5(G, 5).float()
    tt = torch_ns(G, linalg.NS_COEFFS, 5, 1e-7).float()
    rel = lambda a, b: float((a - b).norm() / b.norm())  # noqa: E731
    # bf16 (8 mantissa bits) through 5 quintic steps: ~2-4% in Frobenius norm
    for ref in (kj, tt):
        assert rel(ours16, ref) < 5e-2 and rel(ours32, ref) < 5e-2
    assert rel(kj, tt) < 5e-2


def test_inverse_root_and_eigh_fallback(monkeypatch):
    torch.manual_seed(2)
    A = torch.randn(3, 5, 5, dtype=D64)
    A = A @ A.mT
    U, S, _ = torch.linalg.svd(A + 1e-3 * torch.eye(5, dtype=D64))
    want = (U * S.pow(-0.25).unsqueeze(-2)) @ U.mT
    assert torch.allclose(linalg.inverse_root(A, 4, 1e-3)[0], want, atol=1e-10)

    real = torch.linalg.eigh

    def flaky(x, *a, **k):  # fails in float32, as cusolver does on ill-conditioned input
        if x.dtype == torch.float32:
            raise torch.linalg.LinAlgError("no convergence")
        return real(x, *a, **k)

    monkeypatch.setattr(torch.linalg, "eigh", flaky)
    rep = linalg.EighReport()
    R, _, ok = linalg.inverse_root(A.float(), 4, 1e-3, rep)
    assert R.dtype == torch.float32 and rep.fallbacks.tolist() == [1, 1, 1]
    assert rep.failures == 0
    assert torch.allclose(R.double(), want, rtol=1e-4, atol=1e-5) and bool(ok.all())
    bad = A.clone()
    bad[0, 0, 0] = float("nan")  # one bad matrix: flagged, the others unaffected
    R, _, ok = linalg.inverse_root(bad, 4, 1e-3, linalg.EighReport())
    assert ok.tolist() == [False, True, True] and torch.allclose(R[1:], want[1:], atol=1e-10)
    monkeypatch.setattr(torch.linalg, "eigh", lambda *a, **k: (_ for _ in ()).throw(
        torch.linalg.LinAlgError("no convergence")))
    rep = linalg.EighReport()
    assert linalg.inverse_root(A, 4, 1e-3, rep) is None and rep.failures.tolist() == [1, 1, 1]


def test_power_qr_refresh_keeps_an_exact_eigenbasis():
    torch.manual_seed(3)
    Q0 = torch.linalg.qr(torch.randn(2, 6, 6, dtype=D64))[0]
    lam = torch.tensor([1.0, 5.0, 3.0, 0.5, 2.0, 4.0], dtype=D64)
    A = (Q0 * lam) @ Q0.mT
    Qn, order, ok = linalg.power_qr_refresh(A, Q0)
    assert bool(ok.all())
    assert order[0].tolist() == [1, 5, 2, 4, 0, 3]           # descending Rayleigh quotients
    sorted_q = torch.gather(Q0, -1, order.unsqueeze(-2).expand_as(Q0))
    assert torch.allclose((Qn * sorted_q).sum(-2).abs(), torch.ones(2, 6, dtype=D64))
    assert float(linalg.basis_drift(Q0, Qn).abs().max()) < 1e-12
    x = torch.randn(2, 3, 6, dtype=D64)
    assert torch.equal(linalg.permute_mode(x, order, 1, nbatch=1)[1], x[1][:, order[1]])


# ---- Muon -----------------------------------------------------------------------------


def _mlp():
    torch.manual_seed(4)
    return torch.nn.Sequential(torch.nn.Embedding(16, 12), torch.nn.Flatten(),
                               torch.nn.Linear(48, 32), torch.nn.ReLU(),
                               torch.nn.Linear(32, 24), torch.nn.ReLU(), torch.nn.Linear(24, 10))


ROLES = {"0.weight": "embedding", "2.weight": "hidden", "2.bias": "bias",
         "4.weight": "hidden", "4.bias": "bias", "6.weight": "head", "6.bias": "bias"}


def _train(model, opt, steps=20, check_grad=False):
    torch.manual_seed(5)
    x, y = torch.randint(0, 16, (64, 4)), torch.randint(0, 10, (64,))
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        grads = [p.grad.clone() for p in model.parameters()] if check_grad else None
        opt.step()
        if check_grad:  # p.grad is never mutated (Keller's Nesterov lerps into it)
            assert all(torch.equal(g, p.grad) for g, p in zip(grads, model.parameters()))


def _role_groups(model):
    groups = {}
    for n, p in model.named_parameters():
        groups.setdefault(ROLES[n], []).append(p)
    return [dict(params=v, role=k) for k, v in groups.items()]


def _assert_close_models(a, b, rtol):
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert (p - q).abs().max() <= rtol * q.abs().max(), n


def test_muon_matches_keller_with_aux_adam(fp32_reference_ns):
    ours_m, ref_m = _mlp(), _mlp()
    ours = Muon(_role_groups(ours_m), lr=0.02, weight_decay=0.1,   # aux: (0.9, 0.95), 1e-10
                adam_lr=3e-4)                                      # Keller's aux lr
    hid = [p for n, p in ref_m.named_parameters() if ROLES[n] == "hidden"]
    rest = [p for n, p in ref_m.named_parameters() if ROLES[n] != "hidden"]
    ref = keller.SingleDeviceMuonWithAuxAdam([
        dict(params=hid, lr=0.02, weight_decay=0.1, use_muon=True),
        dict(params=rest, lr=3e-4, weight_decay=0.1, use_muon=False)])
    _train(ours_m, ours, check_grad=True)
    _train(ref_m, ref)
    # the 2-D embedding and head went to AdamW by role: they moved like Adam, not like Muon
    _assert_close_models(ours_m, ref_m, 1e-5)


@pytest.mark.parametrize("scale,adjust,nesterov", [("keller", "original", True),
                                                    ("moonlight", "match_rms_adamw", False)])
def test_muon_matches_torch_muon(fp32_reference_ns, scale, adjust, nesterov):
    ours_m, ref_m = _mlp(), _mlp()
    hidden = lambda m: [p for n, p in m.named_parameters() if ROLES[n] == "hidden"]  # noqa: E731
    for m in (ours_m, ref_m):  # torch.optim.Muon takes 2-D only: freeze the rest
        for n, p in m.named_parameters():
            p.requires_grad_(ROLES[n] == "hidden")
    ours = Muon([dict(params=hidden(ours_m), role="hidden")], lr=0.01, weight_decay=0.1,
                scale=scale, nesterov=nesterov)
    ref = torch.optim.Muon(hidden(ref_m), lr=0.01, weight_decay=0.1, nesterov=nesterov,
                           adjust_lr_fn=adjust)
    _train(ours_m, ours)
    _train(ref_m, ref)
    _assert_close_models(ours_m, ref_m, 1e-5)


def test_muon_bf16_step_within_bf16_tolerance():
    torch.manual_seed(6)
    W = torch.randn(16, 32)
    g = torch.randn(16, 32)
    a, b = W.clone().requires_grad_(), W.clone().requires_grad_()
    a.grad, b.grad = g.clone(), g.clone()
    Muon([a], lr=0.1).step()
    keller.SingleDeviceMuon([b], lr=0.1).step()       # real bf16 NS
    rel = float((a - b).detach().norm() / (b - W).detach().norm())
    assert rel < 5e-2                                  # bf16 NS noise, see the module doc
    c = W.clone().requires_grad_()
    c.grad = g.clone()
    with pytest.warns(UserWarning, match="bfloat16"):  # allowed on CPU, but slow: warned
        Muon([c], lr=0.1, ns_dtype="bfloat16").step()
    assert float((c - b).detach().norm() / (b - W).detach().norm()) < 5e-2


def test_muon_stacked_members_equal_separate_runs():
    torch.manual_seed(7)
    M = 4
    W0, b0, c0 = torch.randn(M, 6, 10, dtype=D64), torch.randn(M, 6, dtype=D64), \
        torch.randn(M, 5, 2, 3, dtype=D64)
    lrs = torch.tensor([0.01, 0.02, 0.03, 0.04], dtype=D64)
    moms = torch.tensor([0.9, 0.95, 0.8, 0.5], dtype=D64)
    kw = dict(ns_dtype="float64", weight_decay=0.1, scale="moonlight")
    W, b, c = (x.clone().requires_grad_() for x in (W0, b0, c0))
    stacked = Muon([dict(params=[W, c], role="hidden", stacked=True),
                    dict(params=[b], role="bias", stacked=True)], lr=lrs, momentum=moms, **kw)
    sep = []
    for i in range(M):
        ps = [x[i].clone().requires_grad_() for x in (W0, c0, b0)]
        sep.append((ps, Muon([dict(params=ps[:2], role="hidden"), dict(params=ps[2:], role="bias")],
                             lr=float(lrs[i]), momentum=float(moms[i]), **kw)))
    for _ in range(5):
        gW, gb, gc = torch.randn_like(W0), torch.randn_like(b0), torch.randn_like(c0)
        W.grad, b.grad, c.grad = gW, gb, gc
        stacked.probe_next_step()
        stacked.step()
        for i, (ps, opt) in enumerate(sep):
            ps[0].grad, ps[1].grad, ps[2].grad = gW[i], gc[i], gb[i]
            opt.step()
    for i, (ps, _) in enumerate(sep):
        for x, y in ((W, ps[0]), (c, ps[1]), (b, ps[2])):
            torch.testing.assert_close(x[i], y, rtol=1e-12, atol=1e-12)
    ratios = stacked.last_member_stats["opt/muon_sv_ratio"]
    assert len(ratios) == M and all(1 <= r < 2.5 for r in ratios)


def test_muon_conv_reshape_routing_and_stats():
    torch.manual_seed(8)
    conv = torch.randn(8, 3, 3, 3, requires_grad=True)
    emb = torch.randn(10, 8, requires_grad=True)
    opt = Muon([dict(params=[conv], role="hidden"), dict(params=[emb], role="embedding")],
               lr=0.1, nesterov=False, momentum=0.0)
    assert [g["use_muon"] for g in opt.param_groups] == [True, False]
    assert opt.param_groups[1]["lr"] == pytest.approx(3e-3)     # re-based aux lr (adam_lr)
    conv.grad, emb.grad = torch.randn_like(conv), torch.randn_like(emb)
    before = conv.detach().clone()
    opt.probe_next_step()
    opt.step()
    want = linalg.newton_schulz(conv.grad.reshape(8, -1)).reshape_as(conv)
    torch.testing.assert_close(before - conv, 0.1 * want, rtol=1e-5, atol=1e-6)
    assert 1.0 <= opt.last_stats["opt/muon_sv_ratio"] < 2.5
    assert opt.last_stats["opt/muon_frac_sv_below_half"] == 0.0


def test_muon_bad_input():
    p = [torch.zeros(4, 4, requires_grad=True)]
    with pytest.raises(ConfigError, match="optim.extra.ns_dtype"):
        Muon(p, ns_dtype="half")
    with pytest.raises(ConfigError, match="optim.extra.scale"):
        Muon(p, scale="huge")
    with pytest.raises(ConfigError, match="optim.extra.nsteps"):
        Muon.validate_extra({"nsteps": 5})
    with pytest.raises(ConfigError, match="optim.extra.momentum"):
        Muon.validate_extra({"momentum": 1.5})
    Muon.validate_extra({"ns_dtype": "bfloat16", "ns_steps": 3})   # device unknown: allowed


# ---- LAWN -----------------------------------------------------------------------------


def _lawn_model():
    torch.manual_seed(9)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))
    return model.double()


def _lawn_groups(model):  # the head weight shares its group with the head bias (a mixed group)
    return [dict(params=[model[0].weight, model[0].bias], role="hidden"),
            dict(params=[model[2].weight], role="head"), dict(params=[model[2].bias], role="bias")]


def _lawn_run(model, opt, steps, probe=False):
    torch.manual_seed(10)
    x, y = torch.randn(32, 8, dtype=D64), torch.randint(0, 4, (32,))
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        if probe:
            opt.probe_next_step()
        opt.step()


@pytest.mark.parametrize("remove_radial", [False, True])
def test_lawn_free_phase_then_exact_norms(remove_radial):
    from proxylab.optim.soap import SOAP

    a, b = _lawn_model(), _lawn_model()
    base = SOAP(_lawn_groups(a), lr=1e-2, weight_decay=0.1, precondition_frequency=2)
    plain = SOAP(_lawn_groups(b), lr=1e-2, weight_decay=0.1, precondition_frequency=2)
    opt = LAWN(base, free_steps=4, remove_radial=remove_radial)
    _lawn_run(a, opt, 4)
    _lawn_run(b, plain, 4)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))  # bitwise
    assert opt.active and float(opt.c[0]) == float(a[2].weight.detach().norm())
    head_group = [g for g in base.param_groups if any(p is a[2].weight for p in g["params"])]
    assert head_group[0]["weight_decay"] == 0.0
    c = float(opt.c[0])
    w_before = a[2].weight.detach().clone()
    _lawn_run(a, opt, 6, probe=True)
    assert abs(float(a[2].weight.detach().norm()) - c) <= 1e-14 * c
    assert not torch.equal(a[2].weight, w_before)
    assert opt.last_stats["opt/lawn_c/g1.p0"] == pytest.approx(c, rel=1e-14)
    assert "opt/update_rms" in opt.last_stats


def test_lawn_mixed_group_split_state_dict_scheduler_and_stacked():
    model, twin = _lawn_model(), _lawn_model()
    groups = [dict(params=list(model.parameters()), role="head")]
    base = torch.optim.AdamW(groups, lr=1e-2, weight_decay=0.1)
    opt = LAWN(base, params_to_constrain=[model[2].weight], free_steps=2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    _lawn_run(twin, torch.optim.AdamW(twin.parameters(), lr=1e-2, weight_decay=0.1), 1)
    _lawn_run(model, opt, 1)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), twin.parameters()))
    assert len(base.param_groups) == 2 and base.param_groups[1]["weight_decay"] == 0.1
    sched.step()
    for _ in range(2):
        _lawn_run(model, opt, 1)
        sched.step()
    assert [g["weight_decay"] for g in base.param_groups] == [0.1, 0.0]
    assert base.param_groups[1]["params"] == [model[2].weight]
    assert base.param_groups[1]["lr"] == base.param_groups[0]["lr"] < 1e-2
    sd = copy.deepcopy(opt.state_dict())
    model2 = copy.deepcopy(model)
    opt2 = LAWN(torch.optim.AdamW([dict(params=list(model2.parameters()), role="head")],
                                  lr=1e-2, weight_decay=0.1),
                params_to_constrain=[model2[2].weight], free_steps=2)
    opt2.load_state_dict(sd)
    _lawn_run(model, opt, 2)
    _lawn_run(model2, opt2, 2)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), model2.parameters()))
    # stacked: one c per member
    W = torch.randn(3, 4, 5, dtype=D64, requires_grad=True)
    lawn = LAWN(Muon([dict(params=[W], role="head", stacked=True)], lr=0.1, adam_lr=0.1),
                free_steps=0)
    c = W.detach().flatten(1).norm(dim=1)
    for _ in range(3):
        W.grad = torch.randn_like(W)
        lawn.step()
    torch.testing.assert_close(W.detach().flatten(1).norm(dim=1), c, rtol=1e-14, atol=0)
    with pytest.raises(ConfigError, match="optim.name: LAWN needs"):
        LAWN(torch.optim.SGD([W], lr=0.1))
    with pytest.raises(ConfigError, match="free_steps"):
        LAWN.validate_extra({"free_steps": -1})
