"""Shampoo, blocked, with eigh inverse roots and Adam grafting (optimizers.md §2.5).

Per tensor, split into blocks of at most ``max_precond_dim`` along every dim
(DistributedShampoo's blocking); for a block G of order k (k dims), per mode i:

    L_i ← β₂·L_i + (1-β₂)·G_(i)G_(i)ᵀ        (β₂ = 1: AdaGrad sum L_i ← L_i + G_(i)G_(i)ᵀ)
    R_i = (L_i/(1-β₂ᵗ) + ε·I)^(-1/(2k))       every ``precondition_frequency`` steps (eigh;
                                              ε added before the decomposition; float64
                                              retry on failure; if that fails too the
                                              previous R_i is kept; all counted)
    G̃  ← β₁·G̃ + (1-β₁)·G,  Ĝ = G̃/(1-β₁ᵗ)     (first-moment filtering; β₁ = 0: Ĝ = G)
    P  = Ĝ ×_1 R_1 ... ×_k R_k

Grafting ("adam"): A = Ĝ/(√(v/(1-β_gᵗ)) + ε_g) with v ← β_g·v + (1-β_g)·G² (β_g = 1: AdaGrad);
each block's direction is P·‖A‖_F/(‖P‖_F + 1e-16). Before ``start_preconditioning_step``
(-1: = precondition_frequency) the direction is A alone; without grafting it is Ĝ (the
roots start as identity). Roots are computed at t = start and at every t > start with
t % precondition_frequency == 0 — DistributedShampoo's schedule.

Defaults are DistributedShampoo's (lr 1e-2, betas (0.9, 1.0), ε 1e-12, blocks 1024,
frequency 1) except ``grafting="adam"``: Meta's docstring calls grafting the key
ingredient, and it makes Adam's lr transfer. Weight decay is the shared shell's. The
stats report eigh fallback/failure rates and ``opt/basis_drift`` (linalg.basis_drift)
between consecutive eigenbases of each factor.
"""

from __future__ import annotations

import itertools

import torch

from proxylab.optim.base import ProxyOptimizer, check_hparam, tensor_norm
from proxylab.optim.linalg import (EighReport, basis_drift, check_bool, check_int, choice,
                                   config_error, decomposition_stats, decomposition_totals,
                                   inverse_root, keep_where, member_view,
                                   mode_gram, mode_product, validate_extra)

GRAFTINGS = ("adam", "none")


def blocks_of(shape, max_dim: int) -> list[tuple[slice, ...]]:
    """Every block of a tensor cut into pieces of at most max_dim along each dim."""
    ranges = [[slice(s, min(s + max_dim, d)) for s in range(0, d, max_dim)] for d in shape]
    return list(itertools.product(*ranges))


def ema_weights(beta):
    """(decay, weight) of s ← decay·s + weight·x: (β, 1-β), or (1, 1) for β = 1 (a sum)."""
    if isinstance(beta, torch.Tensor):
        return beta, torch.where(beta == 1, torch.ones_like(beta), 1 - beta)
    return (1.0, 1.0) if beta == 1 else (beta, 1 - beta)


def bias_correction(beta, t: int):
    """1-βᵗ, or 1 for a sum (β = 1)."""
    if isinstance(beta, torch.Tensor):
        return torch.where(beta == 1, torch.ones_like(beta), 1 - beta ** t)
    return 1.0 if beta == 1 else 1 - beta ** t


class Shampoo(ProxyOptimizer):
    """Blocked Shampoo with grafting. ``eps`` is the ε added to each factor before eigh;
    ``betas[1]`` (group key ``shampoo_beta2``) may be 1 (AdaGrad sum), unlike Adam's β₂.
    Per-member tensors are accepted for every float hyperparameter."""

    EXTRA_DEFAULTS = {
        "max_precond_dim": 1024, "precondition_frequency": 1, "start_preconditioning_step": -1,
        "use_bias_correction": True, "grafting": "adam", "graft_beta2": 0.999,
        "graft_eps": 1e-8,
    }

    def __init__(self, params, lr=1e-2, betas=(0.9, 1.0), eps=1e-12, weight_decay=0.0,
                 wd_mode="decoupled", *, max_precond_dim=1024, precondition_frequency=1,
                 start_preconditioning_step=-1, use_bias_correction=True, grafting="adam",
                 graft_beta2=0.999, graft_eps=1e-8):
        check_hparam("beta2", betas[1], 0.0, 1.0)      # β₂ = 1 is allowed: AdaGrad sum
        check_int("extra.max_precond_dim", max_precond_dim, 1)
        check_int("extra.precondition_frequency", precondition_frequency, 1)
        if start_preconditioning_step != -1:
            check_int("extra.start_preconditioning_step", start_preconditioning_step, 1)
        check_bool("extra.use_bias_correction", use_bias_correction)
        choice("extra.grafting", grafting, GRAFTINGS)
        check_hparam("extra.graft_beta2", graft_beta2, 0.0, 1.0)
        check_hparam("extra.graft_eps", graft_eps)
        if isinstance(eps, (int, float)) and not eps > 0:
            raise config_error(f"optim.eps: Shampoo needs ε > 0 (it regularises the inverse "
                               f"roots), got {eps!r}")
        super().__init__(params, dict(
            lr=lr, beta1=betas[0], shampoo_beta2=betas[1], eps=eps, weight_decay=weight_decay,
            wd_mode=wd_mode, max_precond_dim=max_precond_dim,
            precondition_frequency=precondition_frequency,
            start_preconditioning_step=(precondition_frequency if start_preconditioning_step == -1
                                        else start_preconditioning_step),
            use_bias_correction=use_bias_correction, grafting=grafting,
            graft_beta2=graft_beta2, graft_eps=graft_eps))

    validate_extra = classmethod(validate_extra)

    def _init_state(self, g, state, nb, max_dim):
        state["blocks"] = blocks_of(g.shape[nb:], max_dim)
        state["L"], state["R"], state["Q"] = [], [], []
        for blk in state["blocks"]:
            sizes = [s.stop - s.start for s in blk]
            state["L"].append([g.new_zeros(*g.shape[:nb], d, d) for d in sizes])
            state["R"].append([None] * len(sizes))          # None = identity until computed
            state["Q"].append([None] * len(sizes))
        state["basis_drift"] = None

    def direction(self, p, g, state, hp):
        nb = 1 if hp["stacked"] else 0
        pre = (slice(None),) * nb
        t = state["step"]
        if "blocks" not in state:
            self._init_state(g, state, nb, hp["max_precond_dim"])
        use_bc = hp["use_bias_correction"]
        # 1. factor statistics from the raw gradient (plus λθ under l2)
        decay, weight = ema_weights(member_view(hp["shampoo_beta2"], nb + 2))
        for blk, Ls in zip(state["blocks"], state["L"]):
            gb = g[pre + blk]
            for i, L in enumerate(Ls):
                if not (isinstance(decay, float) and decay == 1.0):
                    L.mul_(decay)
                L.add_(weight * mode_gram(gb, i, nb))
        # 2. inverse roots on DistributedShampoo's schedule
        f, start = hp["precondition_frequency"], hp["start_preconditioning_step"]
        if t == start or (t > start and t % f == 0):
            bc2 = bias_correction(member_view(hp["shampoo_beta2"], nb + 2), t) if use_bc else 1.0
            self._compute_roots(state, bc2, hp["eps"], nb)
        # 3. first-moment filtering
        b1 = hp["beta1"]
        if isinstance(b1, torch.Tensor) or b1 != 0:
            if "filtered_grad" not in state:
                state["filtered_grad"] = torch.zeros_like(g)
            gt = state["filtered_grad"].lerp_(g, 1 - b1)
            gt = gt / (1 - b1 ** t) if use_bc else gt
        else:
            gt = g
        # 4. grafting direction
        graft = None
        if hp["grafting"] == "adam":
            if "graft_v" not in state:
                state["graft_v"] = torch.zeros_like(g)
            gd, gw = ema_weights(hp["graft_beta2"])
            v = state["graft_v"].mul_(gd).add_(gw * g * g)
            vbc = bias_correction(hp["graft_beta2"], t) if use_bc else 1.0
            graft = gt / ((v / vbc).sqrt() + hp["graft_eps"])
        if self.probing:
            self._stats(state, g, hp)
        if graft is not None and t < start:
            return graft
        # 5. precondition each block, graft its norm
        u = torch.empty_like(g)
        for blk, Rs in zip(state["blocks"], state["R"]):
            pb = gt[pre + blk]
            for i, R in enumerate(Rs):
                if R is not None:
                    pb = mode_product(pb, R, i, nb)
            if graft is not None:
                ab = graft[pre + blk]
                st = hp["stacked"]
                pb = pb * (tensor_norm(ab, st) / (tensor_norm(pb, st) + 1e-16))
            u[pre + blk] = pb
        return u

    def _compute_roots(self, state, bc2, eps, nb):
        eps = member_view(eps, nb + 2)
        drifts = []
        for Ls, Rs, Qs in zip(state["L"], state["R"], state["Q"]):
            for i, L in enumerate(Ls):
                report = EighReport()
                res = inverse_root(L / bc2, 2 * len(Ls), eps, report)
                report.add_to(state)
                if res is None:
                    continue                     # keep the previous root (identity at first)
                R, Q, ok = res                   # per member: a NaN factor keeps its old root
                Q = keep_where(ok, Q, Qs[i])
                if Qs[i] is not None:
                    drifts.append(basis_drift(Qs[i], Q).double())
                Rs[i], Qs[i] = keep_where(ok, R, Rs[i]), Q
        if drifts:
            state["basis_drift"] = torch.stack(drifts).mean(dim=0)

    def _stats(self, state, g, hp):
        decomposition_stats(self.stat, state)
        d = state["basis_drift"]
        if d is not None:
            self.stat("basis_drift", d, torch.ones_like(d))

    def eigh_counts(self) -> dict[str, int]:
        """Totals over all tensors: eigh decompositions (per matrix), float64 fallbacks,
        failures (previous root kept)."""
        return decomposition_totals(self.state.values())
