"""Muon: momentum orthogonalised by Newton–Schulz, plus an auxiliary AdamW (optimizers.md §2.7).

Hidden matrices (role "hidden", ≥2-D per member):
    m ← β·m + (1-β)·g                        (lerp, as Keller's muon.py and torch.optim.Muon)
    u₀ = (1-β)·g + β·m  (Nesterov)  or  m
    u  = NS₅(u₀ viewed as (out, -1))         (quintic (3.4445, -4.7750, 2.0315), fp32 on CPU)
    θ ← θ - lr·c·u - D(θ),  c = √max(1, rows/cols)  (scale="keller")
                           or  0.2·√max(rows, cols) (scale="moonlight": RMS(c·u) ≈ 0.2)
Everything else (embedding, head, norm gains, biases — routed by the group's ROLE, never
by ndim; groups without a role fall back to ndim ≥ 2) uses AdamW with its own lr, betas
and ε, in Keller's form u = m̂/(√v̂ + ε). Decay of every tensor uses its own group's lr,
as in Keller's SingleDeviceMuonWithAuxAdam.

Routing happens in ``add_param_group``: a group is split into a Muon part and an AdamW
part (flag ``use_muon``). The AdamW part's lr is re-based, lr_aux = adam_lr·(group lr /
Muon lr), so per-group multipliers (muP) carry over and the loop's schedule
``lr = peak_lr·s_t`` moves both. A group that already carries ``use_muon`` (Keller's API,
or a group re-added by LAWN) is taken as is, lr included.

Differences from the references, all deliberate: NS runs in ``ns_dtype`` (float32 by
default; the references hard-code bf16, which is ~100x slower on AVX2 CPUs — allowed
there with a warning, as the device is unknown when configs are validated); p.grad is
never mutated (Keller's Nesterov path lerps into p.grad); a conv weight's Keller scale
uses its flattened (out, in·kh·kw) shape (Keller reads the unflattened last two dims).
"""

from __future__ import annotations

import math
import warnings

import torch

from proxylab.optim.base import ProxyOptimizer, check_hparam
from proxylab.optim.linalg import (DTYPES, NS_COEFFS, check_bool, check_int, choice,
                                   config_error, newton_schulz,
                                   validate_extra)

SCALES = ("keller", "moonlight")
AUX_ROLES = ("embedding", "head", "norm", "bias")


def muon_scale(rows: int, cols: int, scale: str) -> float:
    if scale == "keller":
        return math.sqrt(max(1.0, rows / cols))
    return 0.2 * math.sqrt(max(rows, cols))


def routes_to_muon(p: torch.Tensor, role: str, stacked: bool) -> bool:
    ndim = p.ndim - (1 if stacked else 0)
    if role:
        return role == "hidden" and ndim >= 2
    return ndim >= 2


class Muon(ProxyOptimizer):
    """Muon for hidden matrices + auxiliary AdamW for the rest, in one optimizer.

    ``betas``/``eps`` are the auxiliary AdamW's (Muon itself has only ``momentum``);
    defaults follow optimizers.md: Keller's lr 0.02, momentum 0.95, Nesterov, 5 NS steps;
    aux AdamW β (0.9, 0.95), ε 1e-10. Through the registry, optim.beta1/beta2/eps feed the
    aux AdamW (so its ε is optim.eps) and the momentum is optim.extra.momentum.

    The aux AdamW's lr is ``adam_lr`` = 3e-3 (optim.extra.adam_lr), AdamW's default on the
    GPT proxy, not Keller's 3e-4: with 3e-4 the embeddings and head barely move in a short
    proxy run (val loss after 100 steps at width 32: 3.59 vs AdamW's 2.79; with 3e-3:
    2.68; width 128, 200 steps: 2.31 vs 2.39, with 3e-3: 2.21; one seed, 16 eval batches).

    Tensors are routed by their group's ``role``: use ``Muon.from_model(model)`` or
    ``proxylab.optim.param_groups(model, lr=...)``; a plain ``model.parameters()`` has no
    roles, so every >= 2-D tensor (embeddings and head too) would go to Muon (warned).
    """

    EXTRA_DEFAULTS = {
        "momentum": 0.95, "nesterov": True, "ns_steps": 5, "ns_coefficients": NS_COEFFS,
        "ns_eps": 1e-7, "ns_dtype": "float32", "scale": "keller", "adam_lr": 3e-3,
    }

    def __init__(self, params, lr=0.02, betas=(0.9, 0.95), eps=1e-10, weight_decay=0.0,
                 wd_mode="decoupled", *, momentum=0.95, nesterov=True, ns_steps=5,
                 ns_coefficients=NS_COEFFS, ns_eps=1e-7, ns_dtype="float32", scale="keller",
                 adam_lr=3e-3):
        check_hparam("extra.momentum", momentum, 0.0, 1.0, hi_open=True)
        check_bool("extra.nesterov", nesterov)
        check_int("extra.ns_steps", ns_steps, 1)
        coeffs = tuple(ns_coefficients) if isinstance(ns_coefficients, (list, tuple)) else ()
        if len(coeffs) != 3 or not all(isinstance(c, (int, float)) and math.isfinite(c)
                                       and not isinstance(c, bool) for c in coeffs):
            raise config_error(f"optim.extra.ns_coefficients: expected three numbers (a, b, c), "
                               f"got {ns_coefficients!r}")
        check_hparam("extra.ns_eps", ns_eps)
        choice("extra.ns_dtype", ns_dtype, tuple(DTYPES))
        choice("extra.scale", scale, SCALES)
        check_hparam("extra.adam_lr", adam_lr)
        super().__init__(params, dict(
            lr=lr, beta1=betas[0], beta2=betas[1], eps=eps, weight_decay=weight_decay,
            wd_mode=wd_mode, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps,
            ns_coefficients=tuple(float(c) for c in coeffs), ns_eps=ns_eps,
            ns_dtype=ns_dtype, scale=scale, adam_lr=adam_lr))

    validate_extra = classmethod(validate_extra)

    # ---- routing ------------------------------------------------------------------------
    def add_param_group(self, param_group):
        if "use_muon" in param_group:
            return super().add_param_group(param_group)
        group = dict(param_group)
        params = group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        names = group.get("names")
        role = group.get("role", self.defaults.get("role", ""))
        stacked = group.get("stacked", self.defaults.get("stacked", False))
        flags = [routes_to_muon(p, role, stacked) for p in params]
        if not role and any(flags) and not all(flags) and not self.__dict__.get("_warned_roles"):
            self._warned_roles = True       # matrices and gains together: model.parameters()?
            warnings.warn(
                "Muon got a param group without a 'role': every >= 2-D tensor in it goes to "
                "Muon, embeddings and the output head included. Use Muon.from_model(model) "
                "or Muon(proxylab.optim.param_groups(model, lr=...)) so that they go to the "
                "auxiliary AdamW", stacklevel=3)
        if not params:
            return super().add_param_group({**group, "use_muon": role == "hidden"})
        for use_muon in (True, False):
            idx = [i for i, f in enumerate(flags) if f == use_muon]
            if not idx:
                continue
            part = {**group, "params": [params[i] for i in idx], "use_muon": use_muon}
            if names is not None:
                part["names"] = [names[i] for i in idx]
            if not use_muon:
                self._rebase_lr(group, part)
            super().add_param_group(part)

    def _rebase_lr(self, group, part):
        """lr_aux = adam_lr · (group lr / Muon lr); plain adam_lr when the Muon lr is 0."""
        base_lr, adam_lr = self.defaults["lr"], self.defaults["adam_lr"]
        zero = not isinstance(base_lr, torch.Tensor) and base_lr == 0
        for key in ("lr", "peak_lr"):
            if key in group or key == "lr":
                lr = group.get(key, base_lr)
                part[key] = adam_lr if zero else lr * (adam_lr / base_lr)

    def _ns_dtype(self, x, name):
        """bf16 NS is the references' GPU choice; on CPU it is ~100x slower (still correct)."""
        if name == "bfloat16" and x.device.type == "cpu" and not self.__dict__.get("_warned"):
            self._warned = True
            warnings.warn("optim.extra.ns_dtype='bfloat16' on CPU: bf16 matmul is ~100x slower "
                          "than float32 on AVX2 CPUs; use 'float32' there", stacklevel=3)
        return DTYPES[name]

    # ---- directions -------------------------------------------------------------------
    def direction(self, p, g, state, hp):
        if not hp["use_muon"]:
            return self._adam(g, state, hp)
        nb = 1 if hp["stacked"] else 0
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(g)
        buf, beta = state["momentum_buffer"], hp["momentum"]
        buf.lerp_(g, 1 - beta)
        u0 = g.lerp(buf, beta) if hp["nesterov"] else buf   # a new tensor: g stays intact
        shape = u0.shape
        mat = u0.reshape(*shape[:nb + 1], -1)                 # conv (out, in, kh, kw) -> (out, -1)
        X = newton_schulz(mat, hp["ns_steps"], hp["ns_coefficients"], hp["ns_eps"],
                          self._ns_dtype(mat, hp["ns_dtype"]))
        if self.probing:
            # σ_max/σ_min of the orthogonalised update. A rank-deficient momentum (small
            # batches) keeps σ ≈ 0 on its null space, so the ratio can be huge; the
            # fraction of σ < 0.5 says how many directions NS left un-orthogonalised.
            s = torch.linalg.svdvals(X.detach().double())
            smax, smin = s[..., 0], s[..., -1]
            ratio = smax / smin.clamp_min(1e-300)
            one = torch.ones_like(ratio)                      # one count per member
            self.stat("muon_sv_ratio", ratio, agg="max")      # worst over tensors
            self.stat("muon_sv_ratio_mean", ratio, one)
            self.stat("muon_sv_max", smax, agg="max")
            self.stat("muon_sv_min_mean", smin, one)
            self.stat("muon_frac_sv_below_half", (s < 0.5).sum(-1).double(),
                      torch.full_like(ratio, s.shape[-1]))
        return X.reshape(shape)

    @staticmethod
    def _adam(g, state, hp):
        if "exp_avg" not in state:
            state["exp_avg"] = torch.zeros_like(g)
            state["exp_avg_sq"] = torch.zeros_like(g)
        m, v, t = state["exp_avg"], state["exp_avg_sq"], state["step"]
        b1, b2 = hp["beta1"], hp["beta2"]
        m.lerp_(g, 1 - b1)
        v.lerp_(g * g, 1 - b2)
        return (m / (1 - b1 ** t)) / ((v / (1 - b2 ** t)).sqrt() + hp["eps"])

    def step_size(self, p, state, hp):
        if not hp["use_muon"]:
            return hp["lr"]
        nb = 1 if hp["stacked"] else 0
        rows = p.shape[nb]
        cols = p[(0,) * (nb + 1)].numel() if p.ndim > nb + 1 else 1
        return hp["lr"] * muon_scale(rows, cols, hp["scale"])
