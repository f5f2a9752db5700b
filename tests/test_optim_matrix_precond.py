"""Shampoo and SOAP against a naive float64 oracle, Adam, and pytorch_optimizer.SOAP.

pytorch_optimizer 4.1.0's SOAP counts the skipped first call in its group step but uses
``step - 1`` for bias correction and the refresh phase, i.e. it is aligned with the
nikhilvyas reference (the off-by-one noted in optimizers.md was in 3.9.0); an offset
would show up here as O(1) differences. Its QR refresh casts to float32 even for float64
parameters, so the exact comparison swaps its ``torch.float32`` for float64.
"""

import pytest
import pytorch_optimizer.optimizer.soap as ref_soap
import torch

from proxylab.config import ConfigError
from proxylab.optim.shampoo import Shampoo
from proxylab.optim.soap import SOAP

D64 = torch.float64


def _sequence(shapes, steps, seed=0):
    torch.manual_seed(seed)
    init = [torch.randn(s, dtype=D64) for s in shapes]
    return init, [[torch.randn(s, dtype=D64) for s in shapes] for _ in range(steps)]


def _run(opt_fn, init, grads, probe=False):
    ps = [x.clone().requires_grad_() for x in init]
    opt = opt_fn(ps)
    for gs in grads:
        for p, g in zip(ps, gs):
            p.grad = g.clone()
        if probe:
            opt.probe_next_step()
        opt.step()
    return ps, opt


def _rel(ps, qs, init):
    return max(float((p - q).detach().norm() / (q - x).detach().norm().clamp_min(1e-300))
               for p, q, x in zip(ps, qs, init))


# ---- Shampoo: a naive oracle written from the paper equations ---------------------------


def _spd_power(A, r):  # via SVD, independent of the eigh path under test
    U, S, _ = torch.linalg.svd(A)
    return (U * S.pow(r)) @ U.mT


def naive_shampoo(W0, grads, lr, b1, b2, eps, maxd, f, start, graft):
    """Blocked matrix Shampoo: L += GGᵀ (or EMA, bias-corrected), root (L̂+εI)^-1/4 on the
    schedule, filtered gradient, per-block Adam grafting (β 0.999, ε 1e-8)."""
    W = W0.clone()
    blocks = [(slice(a, min(a + maxd, W.shape[0])), slice(b, min(b + maxd, W.shape[1])))
              for a in range(0, W.shape[0], maxd) for b in range(0, W.shape[1], maxd)]
    eye = lambda n: torch.eye(n, dtype=D64)  # noqa: E731
    L = [torch.zeros(r.stop - r.start, r.stop - r.start, dtype=D64) for r, _ in blocks]
    R = [torch.zeros(c.stop - c.start, c.stop - c.start, dtype=D64) for _, c in blocks]
    PL = [eye(len(x)) for x in L]
    PR = [eye(len(x)) for x in R]
    m, v = torch.zeros_like(W), torch.zeros_like(W)
    for t, G in enumerate(grads, 1):
        w, bc2 = (1.0, 1.0) if b2 == 1 else (1 - b2, 1 - b2 ** t)
        for k, (r, c) in enumerate(blocks):
            L[k] = (b2 if b2 < 1 else 1) * L[k] + w * G[r, c] @ G[r, c].T
            R[k] = (b2 if b2 < 1 else 1) * R[k] + w * G[r, c].T @ G[r, c]
            if t == start or (t > start and t % f == 0):
                PL[k] = _spd_power(L[k] / bc2 + eps * eye(len(L[k])), -0.25)
                PR[k] = _spd_power(R[k] / bc2 + eps * eye(len(R[k])), -0.25)
        m = b1 * m + (1 - b1) * G
        Gh = m / (1 - b1 ** t) if b1 else G
        v = 0.999 * v + 0.001 * G * G
        A = Gh / ((v / (1 - 0.999 ** t)).sqrt() + 1e-8)
        U = torch.zeros_like(W)
        for k, (r, c) in enumerate(blocks):
            P = PL[k] @ Gh[r, c] @ PR[k]
            U[r, c] = (A[r, c] if t < start else P * A[r, c].norm() / P.norm()) if graft else P
        W = W - lr * U
    return W


@pytest.mark.parametrize("b1,b2,maxd,f,start,graft", [
    (0.0, 1.0, 100, 1, -1, False),     # Gupta et al.: AdaGrad sum, no grafting
    (0.0, 1.0, 4, 1, -1, True),        # blocked, Adam grafting
    (0.9, 0.95, 4, 3, -1, True),       # filtering, EMA factors, stale roots, graft-only warmup
    (0.5, 0.99, 5, 2, 3, False),       # identity roots until step 3
])
def test_shampoo_matches_naive_oracle(b1, b2, maxd, f, start, graft):
    init, grads = _sequence([(6, 10)], 7)
    (p,), _ = _run(lambda ps: Shampoo(ps, lr=0.1, betas=(b1, b2), eps=1e-3, max_precond_dim=maxd,
                                      precondition_frequency=f, start_preconditioning_step=start,
                                      grafting="adam" if graft else "none"), init, grads)
    want = naive_shampoo(init[0], [g[0] for g in grads], 0.1, b1, b2, 1e-3, maxd, f,
                         f if start == -1 else start, graft)
    assert _rel([p], [want], init) < 1e-10


def test_shampoo_order3_and_vector_exponents():
    init, grads = _sequence([(3, 4, 2), (5,)], 3)
    (T, v), _ = _run(lambda ps: Shampoo(ps, lr=0.1, betas=(0.0, 1.0), eps=1e-3, grafting="none"),
                     init, grads)
    Ls = [torch.zeros(d, d, dtype=D64) for d in (3, 4, 2)]
    Lv = torch.zeros(5, 5, dtype=D64)
    T0, v0 = init[0].clone(), init[1].clone()
    for G, g in grads:
        Ls[0] += torch.einsum("aij,bij->ab", G, G)
        Ls[1] += torch.einsum("iaj,ibj->ab", G, G)
        Ls[2] += torch.einsum("ija,ijb->ab", G, G)
        Lv += torch.outer(g, g)
        R = [_spd_power(L + 1e-3 * torch.eye(len(L), dtype=D64), -1 / 6) for L in Ls]  # -1/(2k)
        T0 -= 0.1 * torch.einsum("abc,ai,bj,ck->ijk", G, *R)
        v0 -= 0.1 * _spd_power(Lv + 1e-3 * torch.eye(5, dtype=D64), -0.5) @ g
    assert _rel([T, v], [T0, v0], init) < 1e-10


def test_shampoo_stacked_members_and_fallbacks(monkeypatch):
    M = 4
    init, grads = _sequence([(M, 6, 5), (M, 7)], 5)
    b1 = torch.tensor([0.0, 0.5, 0.9, 0.8], dtype=D64)
    kw = dict(lr=0.05, eps=1e-4, max_precond_dim=4, precondition_frequency=2)
    (W, b), opt = _run(lambda ps: Shampoo([dict(params=ps, stacked=True)],
                                          betas=(b1, 0.99), **kw), init, grads, probe=True)
    for i in range(M):
        sep, _ = _run(lambda ps: Shampoo(ps, betas=(float(b1[i]), 0.99), **kw),
                      [x[i] for x in init], [[g[i] for g in gs] for gs in grads])
        assert _rel(sep, [W[i], b[i]], [x[i] for x in init]) < 1e-12
    assert opt.last_stats["opt/eigh_fallback_rate"] == 0.0
    assert 0.0 <= opt.last_stats["opt/basis_drift"] < 1.0

    real = torch.linalg.eigh
    monkeypatch.setattr(torch.linalg, "eigh", lambda A, *a, **k: (_ for _ in ()).throw(
        torch.linalg.LinAlgError("boom")) if A.dtype == torch.float32 else real(A, *a, **k))
    ps, opt = _run(lambda ps: Shampoo(ps, eps=1e-4), [x[0].float() for x in init],
                   [[g[0].float() for g in gs] for gs in grads[:2]], probe=True)
    assert opt.last_stats["opt/eigh_fallback_rate"] == 1.0
    assert opt.last_stats["opt/eigh_failure_rate"] == 0.0


# ---- SOAP -------------------------------------------------------------------------------


class _TorchWithF64QR:
    """pytorch_optimizer's soap module sees torch.float32 as float64 (its QR cast)."""
    float32 = torch.float64

    def __getattr__(self, name):
        return getattr(torch, name)


SOAP_SHAPES = [(6, 5), (7,), (3, 4, 2), (12, 3)]   # 12 > max_precond_dim: identity there


@pytest.mark.parametrize("exact_qr", [True, False])
def test_soap_matches_pytorch_optimizer(monkeypatch, exact_qr):
    if exact_qr:
        monkeypatch.setattr(ref_soap, "torch", _TorchWithF64QR())
    init, grads = _sequence(SOAP_SHAPES, 14)
    kw = dict(lr=0.01, betas=(0.9, 0.95), weight_decay=0.0, eps=1e-8, precondition_frequency=3)
    ours, _ = _run(lambda ps: SOAP(ps, max_precond_dim=10, **kw), init, grads)
    ref, _ = _run(lambda ps: ref_soap.SOAP(ps, max_precondition_dim=10, **kw), init, grads)
    # float32 QR inside the reference limits the unpatched run to ~1e-7
    assert _rel(ours, ref, init) < (1e-12 if exact_qr else 1e-6)


def test_soap_identity_basis_is_adam_after_the_skipped_step():
    init, grads = _sequence([(5, 4), (6,)], 8)
    kw = dict(lr=0.01, betas=(0.9, 0.95), eps=0.0, weight_decay=0.0)
    # max_precond_dim=0: every mode keeps the identity rotation; 1-D is plain Adam anyway
    ours, opt = _run(lambda ps: SOAP(ps, max_precond_dim=0, **kw), init, grads)
    adam, _ = _run(lambda ps: torch.optim.Adam(ps, **kw), init, grads[1:])   # step 1 skipped
    assert _rel(ours, adam, init) < 1e-12
    assert all(s["step"] == len(grads) - 1 for s in opt.state.values())


def test_soap_first_call_only_initialises():
    init, grads = _sequence([(4, 3), (3,)], 1)
    ps, opt = _run(lambda ps: SOAP(ps, weight_decay=0.5, lr=0.1), init, grads)
    assert all(torch.equal(p.detach(), x) for p, x in zip(ps, init))      # no step, no decay
    assert all(torch.equal(p.grad, g) for p, g in zip(ps, grads[0]))      # grads restored
    L, Q = opt.state[ps[0]]["GG"][0], opt.state[ps[0]]["Q"][0]
    torch.testing.assert_close(L, 0.05 * grads[0][0] @ grads[0][0].T)     # (1-β_s)GGᵀ
    ev = torch.diagonal(Q.T @ L @ Q)
    assert bool((ev[:-1] >= ev[1:]).all())                                # descending


def test_soap_stacked_members_equal_separate_runs():
    """Shapes are chosen so every factor has full rank at the first refresh: the QR of a
    rank-deficient L·Q completes its null-space columns from roundoff, so ulp-level
    differences between batched and single matmuls would legitimately split the runs."""
    M = 4
    init, grads = _sequence([(M, 5, 4), (M, 3), (M, 2, 3, 3)], 9)
    b2 = torch.tensor([0.95, 0.99, 0.9, 0.999], dtype=D64)
    kw = dict(lr=0.02, eps=1e-8, weight_decay=0.0, precondition_frequency=2,
              precondition_1d=True, normalize_grads=True)
    stacked, opt = _run(lambda ps: SOAP([dict(params=ps, stacked=True)], betas=(0.9, b2), **kw),
                        init, grads, probe=True)
    for i in range(M):
        sep, _ = _run(lambda ps: SOAP(ps, betas=(0.9, float(b2[i])), **kw),
                      [x[i] for x in init], [[g[i] for g in gs] for gs in grads])
        assert _rel(sep, [x[i] for x in stacked], [x[i] for x in init]) < 1e-12
    drift = opt.last_member_stats["opt/basis_drift"]
    assert len(drift) == M and all(0.0 <= d < 1.0 for d in drift)


def test_soap_eigh_fallback_and_failure_are_counted(monkeypatch):
    real = torch.linalg.eigh
    monkeypatch.setattr(torch.linalg, "eigh", lambda A, *a, **k: (_ for _ in ()).throw(
        torch.linalg.LinAlgError("boom")) if A.dtype == torch.float32 else real(A, *a, **k))
    init, grads = _sequence([(4, 3)], 3)
    ps, opt = _run(lambda ps: SOAP(ps, precondition_frequency=2), [init[0].float()],
                   [[g[0].float()] for g in grads], probe=True)
    # 2 eigh at the first call (both fell back to float64), 2 QR refreshes at t = 2
    assert opt.eigh_counts() == {"eigh_decomps": 4, "eigh_fallbacks": 2, "eigh_failures": 0}
    assert opt.last_stats["opt/eigh_fallback_rate"] == 0.5
    bad = grads[0][0].float().clone()
    bad[0, 0] = float("nan")
    ps, opt = _run(lambda ps: SOAP(ps), [init[0].float()], [[bad]])
    assert opt.eigh_counts()["eigh_failures"] == 2
    assert torch.equal(opt.state[ps[0]]["Q"][0], torch.eye(4))            # identity kept


def test_bad_extra_hyperparameters_name_the_key():
    with pytest.raises(ConfigError, match="optim.extra.precondition_freq"):
        SOAP.validate_extra({"precondition_freq": 10})
    with pytest.raises(ConfigError, match="optim.extra.precondition_frequency"):
        SOAP.validate_extra({"precondition_frequency": 0})
    with pytest.raises(ConfigError, match="optim.extra.eigh_jitter"):
        SOAP.validate_extra({"eigh_jitter": -1.0})
    with pytest.raises(ConfigError, match="optim.extra.grafting"):
        Shampoo.validate_extra({"grafting": "sgd"})
    with pytest.raises(ConfigError, match="optim.extra.start_preconditioning_step"):
        Shampoo.validate_extra({"start_preconditioning_step": 0})
    with pytest.raises(ConfigError, match="optim.eps"):
        Shampoo([torch.zeros(2, 2, requires_grad=True)], eps=0.0)
    SOAP.validate_extra({"eigh_jitter": 1e-20, "max_precond_dim": 512})
    Shampoo.validate_extra(dict(Shampoo.EXTRA_DEFAULTS))


@pytest.mark.parametrize("cls", [SOAP, Shampoo])
def test_a_nan_member_does_not_touch_the_others(cls):
    M = 4
    init, grads = _sequence([(M, 4, 3)], 5)
    for gs in grads:
        gs[0][0, 0, 0] = float("nan")                     # member 0 diverged
    kw = dict(precondition_frequency=2, weight_decay=0.0)
    (W,), opt = _run(lambda ps: cls([dict(params=ps, stacked=True)], **kw), init, grads,
                     probe=True)
    for i in range(1, M):
        sep, _ = _run(lambda ps: cls(ps, **kw), [init[0][i]], [[gs[0][i]] for gs in grads])
        assert _rel(sep, [W[i]], [init[0][i]]) < 1e-12
    rates = opt.last_member_stats["opt/eigh_failure_rate"]
    assert rates[0] > 0 and rates[1:] == [0.0] * (M - 1)
