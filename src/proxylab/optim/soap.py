"""SOAP: Adam in the eigenbasis of Shampoo's preconditioner (Vyas et al., arXiv 2409.11321).

Follows the reference nikhilvyas/SOAP ``soap.py`` (optimizers.md §2.6):

* First call for a tensor: L_i = (1-β_s)·G_(i)G_(i)ᵀ per mode, Q_i = eigh(L_i + jitter·I)
  with columns by descending eigenvalue. **No parameter update, no weight decay, and the
  call does not count as a step** (t = 1 on the second call), as in the reference.
* Step t: G' = G ×_i Q_i (forward projection), m ← β₁m + (1-β₁)G', v ← β₂v + (1-β₂)G'²
  (both kept in the rotated basis), N = (m/(√v + ε)) ×_i Q_iᵀ,
  u = N·√(1-β₂ᵗ)/(1-β₁ᵗ)  (optionally N/RMS(N) first). The shell applies θ ← θ - lr·u - D.
* After the step (so the current gradient never enters its own projection, SOAP#6):
  L_i ← β_sL_i + (1-β_s)G_(i)G_(i)ᵀ; if t % f == 0: m is rotated back, each Q_i is
  refreshed by one power iteration + QR (columns first sorted by the Rayleigh quotients
  diag(QᵀLQ), and v permuted the same way along that mode), m is re-projected.
* Modes longer than ``max_precond_dim`` keep an identity rotation; 1-D tensors get plain
  Adam (reference ε placement: √v + ε before bias correction) unless ``precondition_1d``.

eigh jitter: the reference adds 1e-30·I, which is numerically a no-op in float32 (ulp of
1.0 is 1.2e-7) and float64 for any factor with O(1e-15) entries or more. Near-singular
factors (dead units, rank-deficient early statistics) can then make eigh fail — reported
as "input matrix contains NaN" / non-convergence on CUDA (nikhilvyas/SOAP#14); users raise
the jitter to 1e-20 or more. Here a failed eigh is retried in float64 (a *fallback*); if
that fails too the tensor keeps an identity basis (a *failure*). Both are counted and
reported as rates (``opt/eigh_fallback_rate``, ``opt/eigh_failure_rate``), with
``opt/basis_drift`` (see linalg.basis_drift) from the latest refresh.

Stacked members (group ``stacked=True``, dim 0): batched eigh/QR/matmul; a stacked run
equals separate runs to roundoff. One caveat, inherent to SOAP rather than to batching:
while a factor is rank-deficient (fewer gradients seen than its size), the QR refresh
completes the null-space columns of the basis from roundoff, so ulp-level differences
(batched vs single matmul) can give members a different — equally valid — basis there.

Differences from the reference: weight decay is the shared shell's (evaluated on θ_{t-1};
the reference decays the already-updated θ, an O(lr²λ) difference); QR runs in the
parameter dtype (the references cast to float32 even for float64 parameters); no
``merge_dims`` (every mode of an order-k tensor is rotated separately).
"""

from __future__ import annotations

import torch

from proxylab.optim.base import ProxyOptimizer, check_hparam, tensor_rms
from proxylab.optim.linalg import (EighReport, basis_drift, check_bool, check_int,
                                   decomposition_stats, decomposition_totals,
                                   descending_eigenbasis, identity_like, keep_where,
                                   member_view,
                                   mode_gram, mode_product, permute_mode, power_qr_refresh,
                                   validate_extra)


def project(x, Qs, nb: int, back: bool = False):
    """Rotate every mode that has a basis: forward G ×_i Q_i, back with Q_iᵀ."""
    for i, Q in enumerate(Qs):
        if Q is not None:
            x = mode_product(x, Q, i, nb, transpose=back)
    return x


class SOAP(ProxyOptimizer):
    """Adam in Shampoo's eigenbasis. Defaults are the reference's."""

    EXTRA_DEFAULTS = {
        "shampoo_beta": -1.0, "precondition_frequency": 10, "max_precond_dim": 10000,
        "precondition_1d": False, "normalize_grads": False, "correct_bias": True,
        "eigh_jitter": 1e-30,
    }

    def __init__(self, params, lr=3e-3, betas=(0.95, 0.95), eps=1e-8, weight_decay=0.01,
                 wd_mode="decoupled", *, shampoo_beta=-1.0, precondition_frequency=10,
                 max_precond_dim=10000, precondition_1d=False, normalize_grads=False,
                 correct_bias=True, eigh_jitter=1e-30):
        if not (isinstance(shampoo_beta, (int, float)) and shampoo_beta == -1):
            check_hparam("extra.shampoo_beta", shampoo_beta, 0.0, 1.0, hi_open=True)
        check_int("extra.precondition_frequency", precondition_frequency, 1)
        check_int("extra.max_precond_dim", max_precond_dim, 0)
        check_bool("extra.precondition_1d", precondition_1d)
        check_bool("extra.normalize_grads", normalize_grads)
        check_bool("extra.correct_bias", correct_bias)
        check_hparam("extra.eigh_jitter", eigh_jitter)
        super().__init__(params, dict(
            lr=lr, beta1=betas[0], beta2=betas[1], eps=eps, weight_decay=weight_decay,
            wd_mode=wd_mode, shampoo_beta=shampoo_beta,
            precondition_frequency=precondition_frequency, max_precond_dim=max_precond_dim,
            precondition_1d=precondition_1d, normalize_grads=normalize_grads,
            correct_bias=correct_bias, eigh_jitter=float(eigh_jitter)))

    validate_extra = classmethod(validate_extra)

    # ---- the skipped first call ---------------------------------------------------------
    @torch.no_grad()
    def step(self, closure=None):
        """Initialise new tensors (no update for them), then the shell's step for the rest.

        The shell has no "skip this tensor" signal, so tensors being initialised have their
        .grad detached from the optimizer for the duration of the shell's step (restored
        afterwards, never modified).
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        fresh = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None and "Q" not in self.state[p]:
                    hp = self._hparams(group, p.ndim)
                    g = p.grad
                    if group["wd_mode"] == "l2" and not _is_zero(hp["weight_decay"]):
                        g = g + hp["weight_decay"] * p
                    self._init_tensor(g, self.state[p], hp)
                    fresh.append((p, p.grad))
        try:
            for p, _ in fresh:
                p.grad = None
            super().step()
        finally:
            for p, grad in fresh:
                p.grad = grad
        return loss

    def _modes(self, g, hp):
        """Which modes get a rotation (True) and which stay identity (False)."""
        nb = 1 if hp["stacked"] else 0
        dims = g.shape[nb:]
        if len(dims) == 1 and not hp["precondition_1d"]:
            return [False]
        return [d <= hp["max_precond_dim"] for d in dims]

    def _shampoo_beta(self, hp, ndim):
        sb = hp["shampoo_beta"]
        if not isinstance(sb, torch.Tensor) and sb == -1:
            sb = hp["beta2"]
        return member_view(sb, ndim)

    def _init_tensor(self, g, state, hp):
        nb = 1 if hp["stacked"] else 0
        report = EighReport()
        state["exp_avg"] = torch.zeros_like(g)       # rotated basis
        state["exp_avg_sq"] = torch.zeros_like(g)
        state["GG"], state["Q"] = [], []
        sb = self._shampoo_beta(hp, nb + 2)
        for i, on in enumerate(self._modes(g, hp)):
            if not on:
                state["GG"].append(None)
                state["Q"].append(None)
                continue
            gram = mode_gram(g, i, nb)
            L = torch.zeros_like(gram).lerp_(gram, 1 - sb)
            res = descending_eigenbasis(L, hp["eigh_jitter"], report)
            # a failed decomposition leaves that matrix (member) with an identity rotation
            Q = keep_where(res[1], res[0], None) if res is not None else identity_like(L)
            state["GG"].append(L)
            state["Q"].append(Q)
        report.add_to(state)
        state["basis_drift"] = None

    # ---- one step ----------------------------------------------------------------------
    def direction(self, p, g, state, hp):
        nb = 1 if hp["stacked"] else 0
        t, b1, b2 = state["step"], hp["beta1"], hp["beta2"]
        Qs = state["Q"]
        gp = project(g, Qs, nb)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m.lerp_(gp, 1 - b1)
        v.lerp_(gp * gp, 1 - b2)
        u = project(m / (v.sqrt() + hp["eps"]), Qs, nb, back=True)
        if hp["normalize_grads"]:
            u = u / (tensor_rms(u, hp["stacked"]) + 1e-30)
        if hp["correct_bias"]:
            u = u * ((1 - b2 ** t) ** 0.5 / (1 - b1 ** t))
        self._update_preconditioner(g, state, hp, t)
        if self.probing:
            self._stats(state, g, hp)
        return u

    def _update_preconditioner(self, g, state, hp, t):
        nb = 1 if hp["stacked"] else 0
        sb = self._shampoo_beta(hp, nb + 2)
        for i, L in enumerate(state["GG"]):
            if L is not None:
                L.lerp_(mode_gram(g, i, nb), 1 - sb)
        if t % hp["precondition_frequency"] or all(L is None for L in state["GG"]):
            return
        m = project(state["exp_avg"], state["Q"], nb, back=True)
        v = state["exp_avg_sq"]
        drifts, report = [], EighReport()
        for i, (L, Q) in enumerate(zip(state["GG"], state["Q"])):
            if L is None:
                continue
            Qn, order, ok = power_qr_refresh(L, Q)     # NaN factors keep their basis
            report.count("decomps", torch.ones_like(ok))
            report.count("failures", ~ok)
            v = permute_mode(v, order, i, nb)
            drifts.append(basis_drift(Q, Qn))
            state["Q"][i] = Qn
        report.add_to(state)
        state["exp_avg_sq"].copy_(v)
        state["exp_avg"].copy_(project(m, state["Q"], nb))
        if drifts:
            state["basis_drift"] = torch.stack(drifts).mean(dim=0)

    def _stats(self, state, g, hp):
        decomposition_stats(self.stat, state)
        if state["basis_drift"] is not None:
            d = state["basis_drift"].double()
            self.stat("basis_drift", d, torch.ones_like(d))

    def eigh_counts(self) -> dict[str, int]:
        """Totals over all tensors: decompositions (eigh at the first call, power iteration
        + QR at refreshes, per matrix), float64 eigh fallbacks, failures."""
        return decomposition_totals(self.state.values())

def _is_zero(v) -> bool:
    return not isinstance(v, torch.Tensor) and v == 0
